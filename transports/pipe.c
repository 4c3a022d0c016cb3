/*
 * pipe and exec: streams over two one-way file descriptors.
 *
 *   pipe:stdio      standard input and output
 *   pipe:R,W        two inherited fds (R == W for one duplex fd)
 *   exec:cmd args   a child process's stdin and stdout (no shell: the
 *                   command is split on blanks, '...' and "..." quote)
 *
 * One socket bufferevent carries both directions: it reads the read fd and
 * its write event is moved to the write fd (strata_socket_tune). Finishing
 * the output closes the write fd only (the peer or child sees EOF); EOF on
 * the read fd is EOF. An exec child is reaped and its exit status kept; an
 * abrupt free sends it SIGTERM, then SIGKILL if it lingers.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "internal.h"

#define EXEC_MAX_ARGS 64
#define REAP_GRACE_MS 50 /* SIGTERM to SIGKILL, in ms */

struct pipe_cfg {
	int rfd, wfd;		/* pipe: */
	char *argv[EXEC_MAX_ARGS + 1]; /* exec: (argv[0] NULL for pipe:) */
	char *words;		/* storage for argv */
	char label[64];
};

struct pipe_state {
	char label[64];		/* the cfg is freed once the stack is built */
	struct strata_conn *c;
	struct bufferevent *bev;
	evutil_socket_t rfd, wfd;
	int own_fds;
	pid_t pid;
	int status;		/* waitpid status, -1 while running */
	int wfd_closed;
	struct event *ready;	/* raises BEV_EVENT_CONNECTED from the loop */
};

/* ---- configuration ---- */

/* "R,W": two fds in 0..65535 */
static int
pipe_fds(const char *s, int *rfd, int *wfd)
{
	char *end;
	long r, w;

	errno = 0;
	r = strtol(s, &end, 10);
	if (errno || end == s || *end != ',' || r < 0 || r > 65535)
		return -1;
	s = end + 1;
	w = strtol(s, &end, 10);
	if (errno || end == s || *end || w < 0 || w > 65535)
		return -1;
	*rfd = (int)r;
	*wfd = (int)w;
	return 0;
}

static int
pipe_config(void **cfgp, const char *address, const struct strata_option *o,
    size_t n, struct strata_error *err)
{
	struct pipe_cfg *c = strata_calloc_(1, sizeof(*c));

	(void)o;
	(void)n;
	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	if (!strcmp(address, "stdio")) {
		c->rfd = 0;
		c->wfd = 1;
	} else if (pipe_fds(address, &c->rfd, &c->wfd) < 0) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "expected pipe:stdio or pipe:R,W with fds 0 to 65535, "
		    "got 'pipe:%s'", address);
		strata_free_(c);
		return -1;
	}
	snprintf(c->label, sizeof(c->label), "pipe:%s", address);
	*cfgp = c;
	return 0;
}

/* Split a command line: blanks separate words, quotes group them. */
static int
exec_split(struct pipe_cfg *c, const char *cmd, struct strata_error *err)
{
	size_t argc = 0;
	char *out, q = 0;
	const char *p = cmd;

	if (!(c->words = out = strata_malloc_(strlen(cmd) + 1))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		if (argc == EXEC_MAX_ARGS) {
			strata_error_set(err, STRATA_ERR_SYNTAX,
			    "more than %d arguments", EXEC_MAX_ARGS);
			return -1;
		}
		c->argv[argc++] = out;
		for (; *p && (q || (*p != ' ' && *p != '\t')); p++) {
			if (q && *p == q)
				q = 0;
			else if (!q && (*p == '\'' || *p == '"'))
				q = *p;
			else if (q == '"' && *p == '\\' && p[1])
				*out++ = *++p;
			else
				*out++ = *p;
		}
		*out++ = 0;
	}
	if (q) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "unterminated %c quote in the command", q);
		return -1;
	}
	if (!argc) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "empty command (expected exec:command args...)");
		return -1;
	}
	return 0;
}

static void
pipe_config_free(void *cfgv)
{
	struct pipe_cfg *c = cfgv;

	if (!c)
		return;
	strata_free_(c->words);
	strata_free_(c);
}

static int
exec_config(void **cfgp, const char *address, const struct strata_option *o,
    size_t n, struct strata_error *err)
{
	struct pipe_cfg *c = strata_calloc_(1, sizeof(*c));

	(void)o;
	(void)n;
	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->rfd = c->wfd = -1;
	if (exec_split(c, address, err) < 0) {
		pipe_config_free(c);
		return -1;
	}
	snprintf(c->label, sizeof(c->label), "exec:%s", c->argv[0]);
	*cfgp = c;
	return 0;
}

/* ---- the child process ---- */

/*
 * Fork and exec; *rfd reads the child's stdout, *wfd writes its stdin.
 * The exec error, if any, comes back through a close-on-exec pipe, so a
 * missing command is an error now rather than an EOF later.
 */
static pid_t
exec_spawn(const struct pipe_cfg *c, int *rfd, int *wfd,
    struct strata_error *err)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, st[2] = {-1, -1}, e = 0;
	pid_t pid = -1;
	ssize_t r;

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
	    pipe2(st, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		e = errno;
		goto fail;
	}
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
			_exit(127);
		execvp(c->argv[0], c->argv);
		e = errno;
		if (write(st[1], &e, sizeof(e)) < 0)
			_exit(126);
		_exit(127);
	}
	close(st[1]);
	st[1] = -1;
	do
		r = read(st[0], &e, sizeof(e));
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof(e)) {
		waitpid(pid, NULL, 0);
		goto fail;
	}
	e = 0;
	close(st[0]);
	close(in[0]);
	close(out[1]);
	*rfd = out[0];
	*wfd = in[1];
	return pid;
fail:
	strata_error_set(err, STRATA_ERR_SYSTEM, "cannot run '%s': %s",
	    c->argv[0], strerror(e));
	if (err)
		err->sys_errno = e;
	for (r = 0; r < 2; r++) {
		if (in[r] >= 0)
			close(in[r]);
		if (out[r] >= 0)
			close(out[r]);
		if (st[r] >= 0)
			close(st[r]);
	}
	return -1;
}

static void
exec_reap(struct pipe_state *st, int flags)
{
	int status;

	if (st->pid > 0 && st->status < 0 &&
	    waitpid(st->pid, &status, flags) == st->pid)
		st->status = status;
}

/*
 * After an abrupt free: SIGTERM, a short grace, then SIGKILL, and reap.
 * Done here, not from a timer: the stack's destroy runs as a libevent
 * finalizer, also from inside event_base_free(), where adding a timer
 * aborts (event.c:930) and where a pending one would leak with the base.
 */
static void
exec_abandon(struct pipe_state *st)
{
	int i;

	kill(st->pid, SIGTERM);
	for (i = 0; i < REAP_GRACE_MS; i++) {
		if (waitpid(st->pid, NULL, WNOHANG) == st->pid)
			return;
		usleep(1000);
	}
	kill(st->pid, SIGKILL);
	waitpid(st->pid, NULL, 0);
}

/* ---- the transport ---- */

/*
 * Pipes are ready at once, but the engine takes the bufferevent's callbacks
 * only after connect() returns, and libevent drops an event raised while a
 * bufferevent has no event callback: say "connected" from the loop.
 */
static void
pipe_ready(evutil_socket_t fd, short what, void *arg)
{
	struct pipe_state *st = arg;

	(void)fd;
	(void)what;
	strata_conn_event_(st->c, BEV_EVENT_CONNECTED);
}

static struct bufferevent *
pipe_open(const struct pipe_cfg *cfg, struct strata_conn *c, int rfd,
    int wfd, pid_t pid, void **state, struct strata_error *err)
{
	int opts = strata_conn_options(c) &
	    (BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE);
	struct pipe_state *st = strata_calloc_(1, sizeof(*st));
	struct bufferevent *bev;

	if (pid > 0) /* the child's pipes are ours alone */
		opts |= BEV_OPT_CLOSE_ON_FREE;
	opts |= strata_conn_bev_options_(c);
	if (!st) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	evutil_make_socket_nonblocking(rfd);
	evutil_make_socket_nonblocking(wfd);
	st->ready = event_new(strata_conn_base(c), -1, 0, pipe_ready, st);
	bev = st->ready ? bufferevent_socket_new(strata_conn_base(c), rfd,
	    opts) : NULL;
	if (!bev) {
		if (st->ready)
			event_free(st->ready);
		strata_free_(st);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	memcpy(st->label, cfg->label, sizeof(st->label));
	st->c = c;
	st->bev = bev;
	st->rfd = rfd;
	st->wfd = wfd;
	st->pid = pid;
	st->status = -1;
	st->own_fds = pid > 0 || (opts & BEV_OPT_CLOSE_ON_FREE);
	strata_socket_tune(bev, wfd);
	event_active(st->ready, EV_TIMEOUT, 1);
	*state = st;
	return bev;
}

static int
fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* epoll refuses regular files and devices such as /dev/null (EPERM): say
 * so instead of a libevent warning and a stack that never moves. */
static int
fd_pollable(struct strata_conn *c, int fd, struct strata_error *err)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int ep, ok;

	if (strcmp(event_base_get_method(strata_conn_base(c)), "epoll"))
		return 1;
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return 1;
	ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0 || errno != EPERM;
	close(ep);
	if (!ok)
		strata_error_set(err, STRATA_ERR_INVALID,
		    "fd %d is a file or device epoll cannot watch (use an "
		    "event base without epoll: event_config_avoid_method(cfg, "
		    "\"epoll\"))", fd);
	return ok;
}

static struct bufferevent *
pipe_connect(const void *cfgv, struct strata_conn *c, void **state,
    struct strata_error *err)
{
	const struct pipe_cfg *cfg = cfgv;

	if (!fd_open(cfg->rfd) || !fd_open(cfg->wfd)) {
		strata_error_set(err, STRATA_ERR_SYSTEM, "fd %d is not open",
		    fd_open(cfg->rfd) ? cfg->wfd : cfg->rfd);
		if (err)
			err->sys_errno = EBADF;
		return NULL;
	}
	if (!fd_pollable(c, cfg->rfd, err) || !fd_pollable(c, cfg->wfd, err))
		return NULL;
	return pipe_open(cfg, c, cfg->rfd, cfg->wfd, 0, state, err);
}

static struct bufferevent *
exec_connect(const void *cfgv, struct strata_conn *c, void **state,
    struct strata_error *err)
{
	const struct pipe_cfg *cfg = cfgv;
	struct bufferevent *bev;
	int rfd, wfd;
	pid_t pid = exec_spawn(cfg, &rfd, &wfd, err);

	if (pid < 0)
		return NULL;
	bev = pipe_open(cfg, c, rfd, wfd, pid, state, err);
	if (!bev) {
		close(rfd);
		close(wfd);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return bev;
}

static int
pipe_event(void *state, short what)
{
	struct pipe_state *st = state;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		exec_reap(st, WNOHANG);
	return 0;
}

/* Half-close: the write fd goes; reading continues. */
static int
pipe_shutdown_write(void *state)
{
	struct pipe_state *st = state;

	if (st->wfd_closed)
		return 0;
	st->wfd_closed = 1;
	if (st->wfd == st->rfd)
		return shutdown(st->wfd, SHUT_WR) < 0 && errno != ENOTSOCK
		    ? -1 : 0;
	/* Closing is how a pipe says "end of stream", even for an fd we
	 * were only lent (stdout): the reader downstream sees EOF. */
	event_del(&st->bev->ev_write);
	return close(st->wfd);
}

static void
pipe_destroy(void *state)
{
	struct pipe_state *st = state;

	event_free(st->ready);
	if (!st->wfd_closed && st->wfd != st->rfd && st->own_fds)
		close(st->wfd);
	if (st->pid > 0) {
		exec_reap(st, WNOHANG);
		if (st->status < 0)
			exec_abandon(st);
	}
	strata_free_(st);
}

static int
pipe_peer(void *state, char *buf, size_t len, struct sockaddr *sa,
    int *salen)
{
	struct pipe_state *st = state;

	(void)sa;
	if (salen)
		*salen = 0;
	if (st->pid > 0)
		return snprintf(buf, len, "%s (pid %d)", st->label,
		    (int)st->pid);
	return snprintf(buf, len, "%s", st->label);
}

static void
pipe_stats(const void *state, struct strata_stats_sink *sink)
{
	const struct pipe_state *st = state;

	if (st->pid <= 0)
		return;
	strata_stat(sink, "pid", "%d", (int)st->pid);
	if (st->status >= 0 && WIFEXITED(st->status))
		strata_stat(sink, "exit", "%d", WEXITSTATUS(st->status));
	else if (st->status >= 0 && WIFSIGNALED(st->status))
		strata_stat(sink, "signal", "%d", WTERMSIG(st->status));
}

const struct strata_transport_type strata_pipe_transport_ = {
	.name = "pipe",
	.summary = "two file descriptors: pipe:stdio or pipe:R,W",
	.config = pipe_config,
	.config_free = pipe_config_free,
	.connect = pipe_connect,
	.event = pipe_event,
	.shutdown_write = pipe_shutdown_write,
	.peer = pipe_peer,
	.destroy = pipe_destroy,
	.stats = pipe_stats,
};

const struct strata_transport_type strata_exec_transport_ = {
	.name = "exec",
	.summary = "a child process's stdin and stdout: exec:command args",
	.config = exec_config,
	.config_free = pipe_config_free,
	.connect = exec_connect,
	.event = pipe_event,
	.shutdown_write = pipe_shutdown_write,
	.peer = pipe_peer,
	.destroy = pipe_destroy,
	.stats = pipe_stats,
};

int
strata_exit_status(struct bufferevent *top)
{
	struct pipe_state *st =
	    strata_transport_state_(top, &strata_exec_transport_);

	if (!st)
		return -2;
	exec_reap(st, WNOHANG);
	return st->status;
}
