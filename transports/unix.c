/*
 * unix: unix:/path and the abstract namespace unix:@name.
 *
 * Listening on a path replaces an existing file only when it is a socket
 * nobody listens on (a stale socket from a crashed process), and refuses
 * anything else; mode= sets the socket file's permissions; the listener
 * removes its file when freed (if it is still the file it made). Accepted
 * and connected stacks can ask for the peer's pid, uid and gid.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "internal.h"

struct unix_cfg {
	struct sockaddr_un sun;
	socklen_t len;
	int abstract;
	int has_mode;
	mode_t mode;
	int backlog;
};

struct unix_state {
	struct strata_conn *c;
	struct sockaddr_un peer;
	socklen_t peerlen;
	struct ucred cred;
	int have_cred;
	int connecting;
};

/* What a listener made, so that free removes only its own file. */
struct unix_listen {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;
	ino_t ino;
};

static const struct strata_option_doc unix_options[] = {
	{"mode", "", "octal permissions of the socket file (listen)"},
	{"backlog", "511", "listen backlog"},
	{NULL, NULL, NULL},
};

static int
unix_config(void **cfgp, const char *address, const struct strata_option *o,
    size_t n, struct strata_error *err)
{
	struct unix_cfg *c = strata_calloc_(1, sizeof(*c));
	size_t len = strlen(address), i;
	uint64_t v;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->backlog = 511;
	c->sun.sun_family = AF_UNIX;
	c->abstract = address[0] == '@';
	if (!len || (c->abstract && len == 1)) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "empty socket path (expected unix:/path or unix:@name)");
		goto fail;
	}
	if (len > sizeof(c->sun.sun_path) - 1) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "socket path of %zu bytes is longer than the %zu "
		    "sun_path allows", len, sizeof(c->sun.sun_path) - 1);
		goto fail;
	}
	memcpy(c->sun.sun_path, address, len);
	if (c->abstract)
		c->sun.sun_path[0] = 0;
	c->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
	    (c->abstract ? 0 : 1));
	for (i = 0; i < n; i++) {
		if (!strcmp(o[i].key, "backlog")) {
			if (strata_opt_uint("unix", &o[i], 1, 65535, 0, &v,
				err) < 0)
				goto fail;
			c->backlog = (int)v;
			continue;
		}
		if (o[i].value[0] != '0' || strlen(o[i].value) < 2 ||
		    strspn(o[i].value, "01234567") != strlen(o[i].value) ||
		    strtoul(o[i].value, NULL, 8) > 07777) {
			strata_error_set(err, STRATA_ERR_OPTION,
			    "unix: bad value '%s' for mode: expected octal "
			    "permissions such as 0660", o[i].value);
			goto fail;
		}
		c->has_mode = 1;
		c->mode = (mode_t)strtoul(o[i].value, NULL, 8);
	}
	*cfgp = c;
	return 0;
fail:
	strata_free_(c);
	return -1;
}

static const char *
unix_name(const struct unix_cfg *c, char *buf, size_t len)
{
	strata_format_sockaddr_((const struct sockaddr *)&c->sun, c->len, buf,
	    len);
	return buf + 5; /* skip "unix:" */
}

static void
unix_read_cred(struct unix_state *st, evutil_socket_t fd)
{
	socklen_t len = sizeof(st->cred);

	st->have_cred = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &st->cred,
	    &len) == 0 && st->cred.pid > 0;
}

static int
unix_event(void *state, short what)
{
	struct unix_state *st = state;
	char name[128];
	int e;

	if (!st->connecting)
		return 0;
	st->connecting = 0;
	if (!(what & BEV_EVENT_ERROR))
		return 0;
	e = EVUTIL_SOCKET_ERROR();
	strata_format_sockaddr_((struct sockaddr *)&st->peer, st->peerlen,
	    name, sizeof(name));
	strata_conn_fail(st->c, e ? e : ECONNREFUSED,
	    "connect to %s failed: %s", name + 5,
	    strerror(e ? e : ECONNREFUSED));
	return 1;
}

static struct bufferevent *
unix_connect(const void *cfgv, struct strata_conn *c, void **state,
    struct strata_error *err)
{
	const struct unix_cfg *cfg = cfgv;
	/* the socket is strata's own: it goes with the stack, whatever
	 * the caller's options (as for tcp) */
	int opts = (strata_conn_options(c) & BEV_OPT_THREADSAFE) |
	    BEV_OPT_CLOSE_ON_FREE | strata_conn_bev_options_(c);
	struct unix_state *st = strata_calloc_(1, sizeof(*st));
	struct bufferevent *bev = NULL;
	evutil_socket_t fd = -1;
	char name[128];

	if (!st)
		goto nomem;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto nomem;
	/* A missing or refused path is known now: report it at once (and
	 * close the socket at once: freeing a bufferevent closes it only
	 * when the loop runs its finalizers). */
	if (connect(fd, (const struct sockaddr *)&cfg->sun, cfg->len) < 0 &&
	    errno != EINPROGRESS) {
		strata_error_set(err, STRATA_ERR_SYSTEM,
		    "connect to %s failed: %s",
		    unix_name(cfg, name, sizeof(name)), strerror(errno));
		if (err)
			err->sys_errno = errno;
		goto fail;
	}
	if (!(bev = bufferevent_socket_new(strata_conn_base(c), fd, opts)))
		goto nomem;
	st->c = c;
	st->peer = cfg->sun;
	st->peerlen = cfg->len;
	st->connecting = 1;
	unix_read_cred(st, fd);
	/* Report completion (CONNECTED or ERROR) from the loop. */
	if (strata_socket_connect_(c, bev, NULL, 0) < 0)
		goto nomem;
	*state = st;
	return bev;
nomem:
	strata_error_set(err, STRATA_ERR_SYSTEM, "connect: %s",
	    strerror(errno));
fail:
	if (bev)
		bufferevent_free(bev); /* closes fd */
	else if (fd >= 0)
		close(fd);
	strata_free_(st);
	return NULL;
}

static struct bufferevent *
unix_accept(const void *cfgv, evutil_socket_t fd, struct strata_conn *c,
    void **state, struct strata_error *err)
{
	int opts = (strata_conn_options(c) & BEV_OPT_THREADSAFE) |
	    BEV_OPT_CLOSE_ON_FREE | strata_conn_bev_options_(c);
	struct unix_state *st = strata_calloc_(1, sizeof(*st));
	struct bufferevent *bev = st ? bufferevent_socket_new(
	    strata_conn_base(c), fd, opts) : NULL;

	(void)cfgv;
	if (!bev) {
		strata_free_(st);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	st->c = c;
	st->peerlen = sizeof(st->peer);
	getsockname(fd, (struct sockaddr *)&st->peer, &st->peerlen);
	unix_read_cred(st, fd);
	strata_socket_tune(bev, -1);
	*state = st;
	return bev;
}

/* A socket file nobody listens on is stale: connect() is refused. */
static int
unix_is_stale(const struct unix_cfg *c)
{
	evutil_socket_t fd = socket(AF_UNIX,
	    SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int stale;

	if (fd < 0)
		return 0;
	stale = connect(fd, (const struct sockaddr *)&c->sun, c->len) < 0 &&
	    errno == ECONNREFUSED;
	close(fd);
	return stale;
}

static int
unix_clear_path(const struct unix_cfg *c, struct strata_error *err)
{
	const char *path = c->sun.sun_path;
	struct stat sb;

	if (c->abstract || lstat(path, &sb) < 0)
		return 0;
	if (!S_ISSOCK(sb.st_mode)) {
		strata_error_set(err, STRATA_ERR_SYSTEM,
		    "%s exists and is not a socket; not replacing it", path);
		return -1;
	}
	if (!unix_is_stale(c)) {
		strata_error_set(err, STRATA_ERR_SYSTEM,
		    "%s is in use by another listener", path);
		return -1;
	}
	unlink(path);
	return 0;
}

static evutil_socket_t
unix_listen(const void *cfgv, void **lstate, struct strata_error *err)
{
	const struct unix_cfg *c = cfgv;
	struct unix_listen *ul = NULL;
	evutil_socket_t fd = -1;
	struct stat sb;
	char name[128];

	if (unix_clear_path(c, err) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (const struct sockaddr *)&c->sun, c->len) < 0)
		goto syserr;
	if (!c->abstract) {
		if (c->has_mode && chmod(c->sun.sun_path, c->mode) < 0)
			goto unlink;
		if (!(ul = strata_calloc_(1, sizeof(*ul))) ||
		    stat(c->sun.sun_path, &sb) < 0)
			goto unlink;
		snprintf(ul->path, sizeof(ul->path), "%s", c->sun.sun_path);
		ul->dev = sb.st_dev;
		ul->ino = sb.st_ino;
	}
	if (listen(fd, c->backlog) < 0)
		goto unlink;
	*lstate = ul;
	return fd;
unlink:
	if (!c->abstract)
		unlink(c->sun.sun_path);
syserr:
	strata_error_set(err, STRATA_ERR_SYSTEM, "cannot listen on %s: %s",
	    unix_name(c, name, sizeof(name)), strerror(errno));
	if (err)
		err->sys_errno = errno;
	if (fd >= 0)
		close(fd);
	strata_free_(ul);
	return -1;
}

static void
unix_unlisten(void *lstate)
{
	struct unix_listen *ul = lstate;
	struct stat sb;

	if (!ul)
		return;
	if (lstat(ul->path, &sb) == 0 && sb.st_dev == ul->dev &&
	    sb.st_ino == ul->ino)
		unlink(ul->path);
	strata_free_(ul);
}

static int
unix_peer(void *state, char *buf, size_t len, struct sockaddr *sa,
    int *salen)
{
	struct unix_state *st = state;

	return strata_sockaddr_out_((struct sockaddr *)&st->peer, st->peerlen,
	    buf, len, sa, salen);
}

static void
unix_stats(const void *state, struct strata_stats_sink *sink)
{
	const struct unix_state *st = state;

	if (st->have_cred)
		strata_stat(sink, "peer-pid", "%d", (int)st->cred.pid);
}

const struct strata_transport_type strata_unix_transport_ = {
	.name = "unix",
	.summary = "Unix domain sockets: unix:/path or unix:@abstract",
	.options = unix_options,
	.config = unix_config,
	.config_free = free,
	.connect = unix_connect,
	.listen = unix_listen,
	.unlisten = unix_unlisten,
	.accept = unix_accept,
	.event = unix_event,
	.peer = unix_peer,
	.destroy = free,
	.stats = unix_stats,
};

int
strata_peer_credentials(struct bufferevent *top, int *pid, int *uid,
    int *gid)
{
	struct unix_state *st =
	    strata_transport_state_(top, &strata_unix_transport_);

	if (!st || !st->have_cred)
		return -1;
	if (pid)
		*pid = (int)st->cred.pid;
	if (uid)
		*uid = (int)st->cred.uid;
	if (gid)
		*gid = (int)st->cred.gid;
	return 0;
}
