/*
 * The pipe and exec transports: two one-way fds (pipe:R,W), standard input
 * and output of a child test process (pipe:stdio), and child commands
 * (exec:); half-close per direction, exit statuses, the fate of a child
 * whose stack is freed abruptly, stacks (lines, frames) over pipes, peer
 * addresses, and errors with their messages.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frames.h"
#include "frames-helpers.h"
#include "helpers.h"

/* Send @p text and wait until @p reply came back whole. */
static void
ask(struct event_base *base, struct th_peer *p, const char *text,
    const char *reply)
{
	p->want = strlen(reply);
	p->enough = 0;
	bufferevent_write(p->top, text, strlen(text));
	th_run_until(base, &p->enough, 3000, reply);
	ck_assert_msg(th_got_equals(p, reply), "got '%s', expected '%s'",
	    th_got_text(p), reply);
	evbuffer_drain(p->got, evbuffer_get_length(p->got));
	p->enough = 0;
}

static void
exchange_frames(struct event_base *base, struct th_peer *c)
{
	static unsigned char big[300000];
	const struct th_frame f[] = {{"four", 4}, {"", 0}, {big, sizeof(big)}};

	th_pattern(big, sizeof(big), 11);
	th_frames_echo(base, c, f, 3);
}

/* Half-close: the output ends (the read side goes on). */
static void
finish_output(struct th_peer *p)
{
	ck_assert_int_ge(bufferevent_flush(p->top, EV_WRITE, BEV_FINISHED), 0);
}

/* Run the loop until the exec child's status is known. */
static int
wait_exit_status(struct event_base *base, struct bufferevent *top, int ms)
{
	int st, i;

	for (i = 0; i < ms / 10; i++) {
		if ((st = strata_exit_status(top)) >= 0)
			return st;
		th_run_for(base, 10);
	}
	return strata_exit_status(top);
}

/* The exec child exits with status 0 (within 2 s). */
static void
expect_exit_0(struct event_base *base, struct th_peer *p)
{
	int status = wait_exit_status(base, p->top, 2000);

	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status 0x%x", status);
}

/* End cat's input: it ends its output, without an error, and exits 0. */
static void
end_cat(struct event_base *base, struct th_peer *p)
{
	finish_output(p);
	th_run_until(base, &p->eof, 3000, "EOF from cat");
	ck_assert_int_eq(p->errors, 0);
	expect_exit_0(base, p);
}

/* ---- pipe:R,W ---- */

/* Two stacks joined by two pipes: each reads what the other writes. */
static void
pipes_join(struct event_base *base, const char *filters, struct th_peer **a,
    struct th_peer **b)
{
	char stack[128];
	int ab[2], ba[2];

	ck_assert_int_eq(pipe(ab), 0);
	ck_assert_int_eq(pipe(ba), 0);
	snprintf(stack, sizeof(stack), "pipe:%d,%d%s", ba[0], ab[1], filters);
	*a = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	snprintf(stack, sizeof(stack), "pipe:%d,%d%s", ab[0], ba[1], filters);
	*b = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	(*b)->echo = 1;
}

START_TEST(pipe_pair_lines)
{
	struct event_base *base = event_base_new();
	struct th_peer *a, *b;
	int fds = th_count_fds();

	pipes_join(base, " | lines", &a, &b);
	bufferevent_write(a->top, "early\n", 6); /* before the loop runs */
	a->want = 6;
	th_run_until(base, &a->enough, 2000, "the early line");
	ck_assert(th_got_equals(a, "early\n"));
	evbuffer_drain(a->got, 6);
	ask(base, a, "hello\nstrata over pipes\n",
	    "hello\nstrata over pipes\n");
	/* a partial line waits in lines until its end comes */
	bufferevent_write(a->top, "no end yet", 10);
	th_run_for(base, 50);
	ck_assert_uint_eq(evbuffer_get_length(a->got), 0);
	ask(base, a, " - now\n", "no end yet - now\n");
	th_peer_free(a);
	th_peer_free(b);
	th_run_for(base, 10);
	ck_assert_int_eq(th_count_fds(), fds);
	event_base_free(base);
}
END_TEST

START_TEST(pipe_pair_connected)
{
	/* a pipe is ready at once: CONNECTED reaches both tops */
	struct event_base *base = event_base_new();
	struct th_peer *a, *b;

	pipes_join(base, " | lines", &a, &b);
	th_run_until(base, &a->connected, 1000, "CONNECTED on a pipe stack");
	th_run_until(base, &b->connected, 1000, "CONNECTED on a pipe stack");
	th_run_for(base, 20);
	ck_assert_int_eq(a->connected, 1);
	ck_assert_int_eq(b->connected, 1);
	th_peer_free(a);
	th_peer_free(b);
	event_base_free(base);
}
END_TEST

START_TEST(pipe_pair_frames)
{
	struct event_base *base = event_base_new();
	struct th_peer *a, *b;

	ck_assert_int_eq(frames_register(NULL), 0);
	pipes_join(base, " | frames", &a, &b);
	exchange_frames(base, a);
	th_peer_free(a);
	th_peer_free(b);
	event_base_free(base);
}
END_TEST

START_TEST(pipe_peer_address)
{
	struct event_base *base = event_base_new();
	struct th_peer *a, *b;
	char text[64], want[64];
	int salen = 99, rfd, wfd;

	pipes_join(base, "", &a, &b);
	ck_assert_int_gt(strata_peer_address(a->top, text, sizeof(text), NULL,
	    &salen), 0);
	ck_assert_int_eq(salen, 0); /* no sockaddr for a pipe */
	ck_assert_int_eq(sscanf(text, "pipe:%d,%d", &rfd, &wfd), 2);
	snprintf(want, sizeof(want), "pipe:%d,%d", rfd, wfd);
	ck_assert_str_eq(text, want);
	ck_assert_int_eq(bufferevent_getfd(strata_transport(a->top)), rfd);
	ck_assert_int_eq(strata_exit_status(a->top), -2);
	ck_assert_int_eq(strata_peer_credentials(a->top, NULL, NULL, NULL),
	    -1);
	th_peer_free(a);
	th_peer_free(b);
	event_base_free(base);
}
END_TEST

/* A stack on pipe:R,W whose other ends the test holds raw. */
struct raw {
	int to_stack;	/* write here: the stack reads it */
	int from_stack; /* read here: what the stack wrote */
};

static struct th_peer *
raw_join(struct event_base *base, struct raw *r, const char *filters)
{
	char stack[128];
	int in[2], out[2];

	ck_assert_int_eq(pipe(in), 0);
	ck_assert_int_eq(pipe(out), 0);
	r->to_stack = in[1];
	r->from_stack = out[0];
	ck_assert_int_eq(fcntl(out[0], F_SETFL, O_NONBLOCK), 0);
	snprintf(stack, sizeof(stack), "pipe:%d,%d%s", in[0], out[1],
	    filters);
	return th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
}

/* Read what the stack wrote, running the loop, until EOF or @p len bytes;
 * returns the count, *eof set if the write side was closed. */
static size_t
raw_read(struct event_base *base, struct raw *r, char *buf, size_t len,
    int *eof)
{
	size_t got = 0;
	int i;

	*eof = 0;
	for (i = 0; i < 200 && got < len && !*eof; i++) {
		ssize_t n = read(r->from_stack, buf + got, len - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			*eof = 1;
		else
			th_run_for(base, 10);
	}
	return got;
}

START_TEST(pipe_finish_output_keeps_reading)
{
	struct event_base *base = event_base_new();
	struct raw r;
	struct th_peer *p = raw_join(base, &r, " | lines");
	char buf[64];
	int eof;

	bufferevent_write(p->top, "one\n", 4);
	finish_output(p);
	/* the other end reads the data, then EOF */
	ck_assert_uint_eq(raw_read(base, &r, buf, sizeof(buf), &eof), 4);
	ck_assert(!memcmp(buf, "one\n", 4));
	ck_assert_int_eq(eof, 1);
	/* and the stack still reads */
	ck_assert_int_eq(write(r.to_stack, "two\n", 4), 4);
	p->want = 4;
	th_run_until(base, &p->enough, 2000, "data after the half-close");
	ck_assert(th_got_equals(p, "two\n"));
	ck_assert_int_eq(p->eof + p->errors, 0);
	/* until the other end closes too */
	close(r.to_stack);
	th_run_until(base, &p->eof, 2000, "EOF");
	ck_assert_int_eq(p->last_what, BEV_EVENT_EOF | BEV_EVENT_READING);
	ck_assert_int_eq(p->errors, 0);
	th_peer_free(p);
	close(r.from_stack);
	event_base_free(base);
}
END_TEST

START_TEST(pipe_read_eof_keeps_writing)
{
	struct event_base *base = event_base_new();
	struct raw r;
	struct th_peer *p = raw_join(base, &r, " | lines");
	char buf[64];
	int eof;

	ck_assert_int_eq(write(r.to_stack, "last\n", 5), 5);
	close(r.to_stack);
	th_run_until(base, &p->eof, 2000, "EOF on the read side");
	ck_assert_int_eq(p->last_what, BEV_EVENT_EOF | BEV_EVENT_READING);
	ck_assert_uint_eq(p->got_at_eof, 5); /* the data came first */
	/* the write side is still open */
	bufferevent_write(p->top, "after eof\n", 10);
	ck_assert_uint_eq(raw_read(base, &r, buf, 10, &eof), 10);
	ck_assert(!memcmp(buf, "after eof\n", 10));
	ck_assert_int_eq(eof, 0);
	finish_output(p);
	ck_assert_uint_eq(raw_read(base, &r, buf, sizeof(buf), &eof), 0);
	ck_assert_int_eq(eof, 1);
	ck_assert_int_eq(p->errors, 0);
	th_peer_free(p);
	close(r.from_stack);
	event_base_free(base);
}
END_TEST

/* ---- pipe:stdio, in a child test process ---- */

struct child {
	struct bufferevent *top;
	int done; /* 1: closed cleanly, 2: close not delivered, 3: error */
};

static void
child_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n, i;

	(void)arg;
	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		for (i = 0; i < n; i++)
			line[i] = (char)toupper((unsigned char)line[i]);
		bufferevent_write(bev, line, n);
		bufferevent_write(bev, "\n", 1);
		free(line);
	}
}

static void
child_closed(int delivered, void *arg)
{
	((struct child *)arg)->done = delivered ? 1 : 2;
}

static void
child_event(struct bufferevent *bev, short what, void *arg)
{
	struct child *c = arg;
	struct timeval linger = {2, 0};

	if (what & BEV_EVENT_ERROR) {
		c->done = 3;
		return;
	}
	if (what & BEV_EVENT_EOF)
		strata_close(bev, &linger, child_closed, c);
}

static void
child_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* The child: dup2 the pipes onto 0 and 1, serve "pipe:stdio | lines" with
 * upper-cased echoes until EOF, close gracefully, exit. No Check here. */
static void
stdio_child(int in, int out)
{
	struct event_base *base;
	struct event *tick;
	struct timeval slice = {0, 10000}, start, now;
	struct strata_error err;
	struct child c = {NULL, 0};
	char peer[64];
	int n, code;

	if (dup2(in, 0) < 0 || dup2(out, 1) < 0)
		_exit(10);
	close(in);
	close(out);
	base = event_base_new();
	c.top = strata_connect(base, NULL, "pipe:stdio | lines", 0, &err);
	if (!c.top)
		_exit(11);
	bufferevent_setcb(c.top, child_read, NULL, child_event, &c);
	bufferevent_enable(c.top, EV_READ | EV_WRITE);
	/* first line: how the child's stack names its peer */
	n = strata_peer_address(c.top, peer, sizeof(peer), NULL, NULL);
	if (n > 0) {
		bufferevent_write(c.top, "peer=", 5);
		bufferevent_write(c.top, peer, (size_t)n);
		bufferevent_write(c.top, "\n", 1);
	}
	tick = event_new(base, -1, EV_PERSIST, child_tick, base);
	event_add(tick, &slice);
	gettimeofday(&start, NULL);
	do {
		event_base_loop(base, EVLOOP_ONCE);
		gettimeofday(&now, NULL);
	} while (!c.done && now.tv_sec - start.tv_sec < 5);
	code = c.done == 1 ? 0 : 20 + c.done;
	if (c.done == 3)
		bufferevent_free(c.top);
	event_free(tick);
	event_base_free(base);
	_exit(code);
}

static int
wait_child(pid_t pid, int ms)
{
	int status = -1, i;

	for (i = 0; i < ms; i += 10) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return status;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

START_TEST(pipe_stdio_child)
{
	struct event_base *base;
	struct th_peer *p;
	char stack[64];
	int to[2], from[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe(to), 0);
	ck_assert_int_eq(pipe(from), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(to[1]);
		close(from[0]);
		stdio_child(to[0], from[1]);
	}
	/* made after the fork: the child owns nothing of ours (valgrind) */
	base = event_base_new();
	close(to[0]);
	close(from[1]);
	snprintf(stack, sizeof(stack), "pipe:%d,%d | lines", from[0], to[1]);
	p = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	p->want = 16;
	th_run_until(base, &p->enough, 3000, "the child's first line");
	ck_assert_msg(th_got_equals(p, "peer=pipe:stdio\n"), "got '%s'",
	    th_got_text(p));
	evbuffer_drain(p->got, 16);
	ask(base, p, "hello\nstrata pipes\n", "HELLO\nSTRATA PIPES\n");
	ask(base, p, "stdin and stdout\n", "STDIN AND STDOUT\n");
	/* our EOF ends the child's stream; its EOF ends ours */
	finish_output(p);
	th_run_until(base, &p->eof, 3000, "EOF from the child");
	ck_assert_int_eq(p->errors, 0);
	status = wait_child(pid, 3000);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "child status 0x%x", status);
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

/* ---- exec: ---- */

START_TEST(exec_cat_lines)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:cat | lines", 0);

	bufferevent_write(p->top, "queued\n", 7); /* before the loop */
	p->want = 7;
	th_run_until(base, &p->enough, 3000, "cat's echo");
	ck_assert(th_got_equals(p, "queued\n"));
	evbuffer_drain(p->got, 7);
	ask(base, p, "one\ntwo\n", "one\ntwo\n");
	ck_assert_int_eq(strata_exit_status(p->top), -1); /* cat waits */
	end_cat(base, p);
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

START_TEST(exec_connected)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:cat", 0);

	th_run_until(base, &p->connected, 1000, "CONNECTED on an exec stack");
	th_run_for(base, 20);
	ck_assert_int_eq(p->connected, 1);
	th_peer_free(p);
	th_run_for(base, 100); /* let the reaper finish */
	event_base_free(base);
}
END_TEST

START_TEST(exec_cat_frames)
{
	struct event_base *base = event_base_new();
	struct th_peer *p;

	ck_assert_int_eq(frames_register(NULL), 0);
	p = th_peer_connect(base, NULL, "exec:cat | frames",
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_frames(base, p);
	end_cat(base, p);
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

START_TEST(exec_tr_writes_at_eof)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:tr a-z A-Z", 0);

	bufferevent_write(p->top, "hello strata\n", 13);
	bufferevent_write(p->top, "half-close\n", 11);
	finish_output(p);
	th_run_until(base, &p->eof, 3000, "EOF from tr");
	ck_assert_int_eq(p->errors, 0);
	ck_assert_msg(th_got_equals(p, "HELLO STRATA\nHALF-CLOSE\n"),
	    "got '%s'", th_got_text(p));
	ck_assert_uint_eq(p->got_at_eof, 24); /* all data before EOF */
	expect_exit_0(base, p);
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

START_TEST(exec_exit_status)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:sh -c 'exit 3'",
	    0);
	int status;

	th_run_until(base, &p->eof, 3000, "EOF from sh");
	status = wait_exit_status(base, p->top, 2000);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 3,
	    "status 0x%x", status);
	ck_assert_int_eq(strata_exit_status(p->top), status); /* it stays */
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

START_TEST(exec_quoted_arguments)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL,
	    "exec:sh -c \"printf '%s|' \\\"a b\\\" 'c d'\" | lines", 0);

	th_run_until(base, &p->eof, 3000, "EOF from sh");
	ck_assert_msg(th_got_equals(p, "a b|c d|\n"), "got '%s'",
	    th_got_text(p));
	ck_assert_int_eq(wait_exit_status(base, p->top, 2000), 0);
	th_peer_free(p);
	event_base_free(base);
}
END_TEST

static pid_t
exec_pid(struct bufferevent *top, const char *name)
{
	char text[128], want[128];
	int pid = 0, salen = 99;

	ck_assert_int_gt(strata_peer_address(top, text, sizeof(text), NULL,
	    &salen), 0);
	ck_assert_int_eq(salen, 0); /* no sockaddr for a child */
	snprintf(want, sizeof(want), "exec:%s (pid %%d)", name);
	ck_assert_msg(sscanf(text, want, &pid) == 1, "peer '%s'", text);
	snprintf(want, sizeof(want), "exec:%s (pid %d)", name, pid);
	ck_assert_str_eq(text, want);
	return pid;
}

/* Free abruptly; the child must be gone (killed and reaped) in 1 s. */
static void
free_and_expect_gone(struct event_base *base, struct th_peer *p, pid_t pid)
{
	struct timeval start, now;
	long ms = 0;
	int gone = 0;

	gettimeofday(&start, NULL);
	th_peer_free(p);
	while (!gone && ms < 1000) {
		th_run_for(base, 20);
		gone = kill(pid, 0) < 0 && errno == ESRCH;
		gettimeofday(&now, NULL);
		ms = (now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_usec - start.tv_usec) / 1000;
	}
	if (!gone) { /* do not leave it behind */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	ck_assert_msg(gone, "child %d still exists after %ld ms", (int)pid,
	    ms);
}

START_TEST(exec_abrupt_free_kills_child)
{
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:sleep 30", 0);
	pid_t pid = exec_pid(p->top, "sleep");

	ck_assert_int_eq(kill(pid, 0), 0);
	th_run_for(base, 20);
	ck_assert_int_eq(strata_exit_status(p->top), -1);
	free_and_expect_gone(base, p, pid);
	event_base_free(base);
}
END_TEST

START_TEST(exec_abrupt_free_then_base_free)
{
	/* The program ends right after the free: no loop runs any more, and
	 * still no child, timer or memory may be left behind. */
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL, "exec:sleep 30", 0);
	pid_t pid = exec_pid(p->top, "sleep");
	int gone;

	th_run_for(base, 20);
	th_peer_free(p);
	event_base_free(base);
	gone = kill(pid, 0) < 0 && errno == ESRCH;
	if (!gone) { /* do not leave it behind */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	ck_assert_msg(gone, "child %d was not reaped", (int)pid);
}
END_TEST

START_TEST(exec_abrupt_free_kills_stubborn_child)
{
	/* SIGTERM ignored: SIGKILL follows */
	struct event_base *base = event_base_new();
	struct th_peer *p = th_peer_connect(base, NULL,
	    "exec:sh -c 'trap \"\" TERM; exec sleep 30'", 0);
	pid_t pid = exec_pid(p->top, "sh");

	th_run_for(base, 50); /* the trap is set */
	free_and_expect_gone(base, p, pid);
	event_base_free(base);
}
END_TEST

/* ---- errors ---- */

START_TEST(fd_not_open)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	int fds[2];

	close(50);
	close(51);
	ck_assert_ptr_null(strata_connect(base, NULL, "pipe:50,51 | lines", 0,
	    &err));
	ck_assert_str_eq(err.message, "pipe: fd 50 is not open");
	ck_assert_int_eq(err.sys_errno, EBADF);
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(dup2(fds[0], 50), 50);
	ck_assert_ptr_null(strata_connect(base, NULL, "pipe:50,51", 0, &err));
	ck_assert_str_eq(err.message, "pipe: fd 51 is not open");
	close(50);
	close(fds[0]);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

START_TEST(exec_missing_command)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	int fds = th_count_fds();

	ck_assert_ptr_null(strata_connect(base, NULL,
	    "exec:strata-no-such-command --flag | lines", 0, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_SYSTEM);
	ck_assert_int_eq(err.sys_errno, ENOENT);
	ck_assert_str_eq(err.message, "exec: cannot run "
	    "'strata-no-such-command': No such file or directory");
	ck_assert_ptr_null(strata_connect(base, NULL, "exec:/etc/passwd", 0,
	    &err));
	ck_assert_msg(strstr(err.message, "'/etc/passwd'") != NULL &&
	    strstr(err.message, "Permission denied") != NULL, "'%s'",
	    err.message);
	ck_assert_int_eq(th_count_fds(), fds);
	event_base_free(base);
}
END_TEST

struct bad_addr {
	const char *stack;
	const char *message;
};

static const struct bad_addr bad_addrs[] = {
	{"pipe:", "pipe: expected pipe:stdio or pipe:R,W with fds 0 to "
		  "65535, got 'pipe:'"},
	{"pipe:3", "pipe: expected pipe:stdio or pipe:R,W with fds 0 to "
		   "65535, got 'pipe:3'"},
	{"pipe:a,b", "pipe: expected pipe:stdio or pipe:R,W with fds 0 to "
		     "65535, got 'pipe:a,b'"},
	{"pipe:1,2,3", "pipe: expected pipe:stdio or pipe:R,W with fds 0 "
		       "to 65535, got 'pipe:1,2,3'"},
	{"pipe:-1,2", "pipe: expected pipe:stdio or pipe:R,W with fds 0 "
		      "to 65535, got 'pipe:-1,2'"},
	{"pipe:70000,1", "pipe: expected pipe:stdio or pipe:R,W with fds 0 "
			 "to 65535, got 'pipe:70000,1'"},
	{"exec:", "exec: empty command (expected exec:command args...)"},
	{"exec:   ", "exec: empty command (expected exec:command args...)"},
	{"exec:sh -c 'exit", "unterminated"},
};

START_TEST(malformed_addresses)
{
	struct event_base *base = event_base_new();
	const struct bad_addr *b = &bad_addrs[_i];
	struct strata_error err;

	memset(&err, 0, sizeof(err));
	ck_assert_msg(strata_connect(base, NULL, b->stack, 0, &err) == NULL,
	    "'%s' was accepted", b->stack);
	ck_assert_int_ne(err.code, STRATA_OK);
	ck_assert_msg(strstr(err.message, b->message) != NULL,
	    "'%s': message '%s' lacks '%s'", b->stack, err.message,
	    b->message);
	event_base_free(base);
}
END_TEST

static void
no_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	(void)l;
	(void)arg;
	bufferevent_free(top);
}

START_TEST(cannot_listen)
{
	struct event_base *base = event_base_new();
	struct strata_error err;

	ck_assert_ptr_null(strata_listen(base, "pipe:stdio", 0, no_accept,
	    NULL, &err));
	ck_assert_str_eq(err.message, "pipe: this transport cannot listen");
	ck_assert_ptr_null(strata_listen(base, "exec:cat", 0, no_accept, NULL,
	    &err));
	ck_assert_str_eq(err.message, "exec: this transport cannot listen");
	event_base_free(base);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("transport-pipe");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = tcase_create("pipe");
	tcase_add_test(tc, pipe_pair_lines);
	tcase_add_test(tc, pipe_pair_connected);
	tcase_add_test(tc, pipe_pair_frames);
	tcase_add_test(tc, pipe_peer_address);
	tcase_add_test(tc, pipe_finish_output_keeps_reading);
	tcase_add_test(tc, pipe_read_eof_keeps_writing);
	tcase_add_test(tc, pipe_stdio_child);
	suite_add_tcase(s, tc);

	tc = tcase_create("exec");
	tcase_add_test(tc, exec_cat_lines);
	tcase_add_test(tc, exec_connected);
	tcase_add_test(tc, exec_cat_frames);
	tcase_add_test(tc, exec_tr_writes_at_eof);
	tcase_add_test(tc, exec_exit_status);
	tcase_add_test(tc, exec_quoted_arguments);
	tcase_add_test(tc, exec_abrupt_free_kills_child);
	tcase_add_test(tc, exec_abrupt_free_then_base_free);
	tcase_add_test(tc, exec_abrupt_free_kills_stubborn_child);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, fd_not_open);
	tcase_add_test(tc, exec_missing_command);
	tcase_add_loop_test(tc, malformed_addresses, 0,
	    (int)(sizeof(bad_addrs) / sizeof(bad_addrs[0])));
	tcase_add_test(tc, cannot_listen);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
