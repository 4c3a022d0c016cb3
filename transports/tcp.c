/*
 * tcp: tcp://host:port with host an IPv4 literal, an [IPv6] literal or a
 * name resolved asynchronously through evdns; each resolved address is
 * tried in turn. Listening takes an empty host, 0.0.0.0, [::] or a literal;
 * port 0 picks a free port.
 *
 * Options: nodelay (TCP_NODELAY, default yes: Nagle's algorithm delays the
 * small writes interactive and TLS traffic make), keepalive (default yes),
 * timeout (connect, default 30s), backlog (listen, default 511),
 * reuseport (listen, default no).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "internal.h"

struct tcp_cfg {
	char host[256];
	char port[8];
	int literal;	/* host is an IP literal or empty */
	int nodelay, keepalive, reuseport;
	int backlog;
	uint64_t timeout_ms;
};

struct tcp_state;

/* What only connecting needs, freed once connected: a connected stack
 * keeps about 110 bytes of transport state instead of about 750 (the
 * config copy with its 256-byte host, the addresses, the connect timer). */
struct tcp_connect {
	struct tcp_cfg cfg;
	struct tcp_state *st;	/* NULL: the stack is gone and the lookup's
				   callback, still due, frees this */
	struct evutil_addrinfo *ai, *cur;
	struct evdns_getaddrinfo_request *req;
	struct event *timer;
	struct event *retry;	/* out of fds: try again shortly */
	int last_err, attempts;
	short enabled;	/* what the engine enabled on bev, for retries */
};

struct tcp_state {
	struct strata_conn *c;
	struct bufferevent *bev;
	struct tcp_connect *cn;	/* while connecting (and after a failure) */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	socklen_t peerlen;
	unsigned connecting : 1;
	unsigned nodelay : 1;
	char *host;	/* the host asked for (connecting stacks), or NULL */
};

static const struct strata_option_doc tcp_options[] = {
	{"nodelay", "yes", "TCP_NODELAY: send small writes at once"},
	{"keepalive", "yes", "SO_KEEPALIVE on the connection"},
	{"timeout", "30s", "connect timeout (all addresses together)"},
	{"backlog", "511", "listen backlog"},
	{"reuseport", "no", "SO_REUSEPORT on the listening socket"},
	{NULL, NULL, NULL},
};

/* ---- address and options ---- */

static int
tcp_split(struct tcp_cfg *c, const char *a, struct strata_error *err)
{
	const char *colon, *hend, *h = a;
	char *end;
	unsigned long port;

	if (a[0] == '[') {
		if (!(hend = strchr(a, ']'))) {
			strata_error_set(err, STRATA_ERR_SYNTAX,
			    "'%s': unclosed '[' in an IPv6 address", a);
			return -1;
		}
		h = a + 1;
		colon = hend + 1;
		if (*colon != ':')
			colon = NULL;
	} else {
		colon = strrchr(a, ':');
		hend = colon;
		if (colon && memchr(a, ':', (size_t)(colon - a))) {
			strata_error_set(err, STRATA_ERR_SYNTAX,
			    "'%s': an IPv6 address needs brackets: "
			    "tcp://[::1]:port", a);
			return -1;
		}
	}
	if (!colon || !colon[1]) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "'%s': expected host:port (the port is missing)", a);
		return -1;
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end || errno || port > 65535 || colon[1] == '-' ||
	    colon[1] == '+') {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "'%s': bad port '%s' (expected 0 to 65535)", a, colon + 1);
		return -1;
	}
	if ((size_t)(hend - h) >= sizeof(c->host)) {
		strata_error_set(err, STRATA_ERR_SYNTAX, "host name too long");
		return -1;
	}
	memcpy(c->host, h, (size_t)(hend - h));
	c->host[hend - h] = 0;
	snprintf(c->port, sizeof(c->port), "%lu", port);
	return 0;
}

static int
tcp_is_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return !host[0] || evutil_inet_pton(AF_INET, host, &a4) == 1 ||
	    evutil_inet_pton(AF_INET6, host, &a6) == 1;
}

static int
tcp_option(struct tcp_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	uint64_t v;

	if (!strcmp(o->key, "nodelay"))
		return strata_opt_bool("tcp", o, &c->nodelay, err);
	if (!strcmp(o->key, "keepalive"))
		return strata_opt_bool("tcp", o, &c->keepalive, err);
	if (!strcmp(o->key, "reuseport"))
		return strata_opt_bool("tcp", o, &c->reuseport, err);
	if (!strcmp(o->key, "timeout"))
		return strata_opt_msec("tcp", o, 1, 3600000, &c->timeout_ms,
		    err);
	if (strata_opt_uint("tcp", o, 1, 65535, 0, &v, err) < 0)
		return -1;
	c->backlog = (int)v;
	return 0;
}

static int
tcp_config(void **cfgp, const char *address, const struct strata_option *o,
    size_t n, struct strata_error *err)
{
	struct tcp_cfg *c = strata_calloc_(1, sizeof(*c));
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->nodelay = c->keepalive = 1;
	c->backlog = 511;
	c->timeout_ms = 30000;
	if (strncmp(address, "//", 2)) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "expected tcp://host:port");
		goto fail;
	}
	if (tcp_split(c, address + 2, err) < 0)
		goto fail;
	c->literal = tcp_is_literal(c->host);
	for (i = 0; i < n; i++)
		if (tcp_option(c, &o[i], err) < 0)
			goto fail;
	*cfgp = c;
	return 0;
fail:
	strata_free_(c);
	return -1;
}

/* ---- socket options ---- */

static void
tcp_sockopts(const struct tcp_cfg *c, evutil_socket_t fd)
{
	int one = 1;

	if (c->nodelay)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->keepalive)
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

/* ---- connecting: each address in turn ---- */

static void tcp_try_next(struct tcp_state *st);

static void
tcp_fail(struct tcp_state *st, int e, const char *what)
{
	const struct tcp_cfg *cfg = &st->cn->cfg;

	st->connecting = 0;
	evtimer_del(st->cn->timer);
	if (st->cn->retry)
		evtimer_del(st->cn->retry);
	strata_conn_fail(st->c, e, "connect to %s%s%s:%s %s%s%s",
	    strchr(cfg->host, ':') ? "[" : "", cfg->host,
	    strchr(cfg->host, ':') ? "]" : "", cfg->port, what,
	    e ? ": " : "", e ? strerror(e) : "");
}

/* Connected: drop what only connecting needed. */
static void
tcp_connect_done(struct tcp_state *st)
{
	struct tcp_connect *cn = st->cn;

	st->connecting = 0;
	st->cn = NULL;
	event_free(cn->timer);
	if (cn->retry)
		event_free(cn->retry);
	if (cn->ai)
		evutil_freeaddrinfo(cn->ai);
	strata_free_(cn);
}

static void
tcp_drop_socket(struct tcp_state *st)
{
	evutil_socket_t fd = bufferevent_getfd(st->bev);

	if (fd >= 0) {
		/* a direct stack's enabled flags are the user's */
		if (!strata_bev_is_direct_(st->bev))
			bufferevent_disable(st->bev, EV_READ | EV_WRITE);
		bufferevent_setfd(st->bev, -1);
		evutil_closesocket(fd);
	}
}

static void
tcp_retry(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_state *st = arg;

	(void)fd;
	(void)what;
	if (st->connecting)
		tcp_try_next(st);
}

/*
 * Out of file descriptors: one may be free a moment later (a server that
 * refuses a flood closes what it accepted), so try the same address
 * again in RETRY_MS, within the connect timeout, rather than fail a
 * connection that needs a single fd. 0 if no timer could be had.
 */
#define RETRY_MS 20

static int
tcp_retry_later(struct tcp_state *st)
{
	struct tcp_connect *cn = st->cn;
	struct timeval tv = {0, RETRY_MS * 1000};

	if (!cn->retry &&
	    !(cn->retry = evtimer_new(strata_conn_base(st->c), tcp_retry, st)))
		return 0;
	return evtimer_add(cn->retry, &tv) == 0;
}

static void
tcp_try_next(struct tcp_state *st)
{
	struct tcp_connect *cn = st->cn;

	for (; cn->cur; cn->cur = cn->cur->ai_next) {
		struct evutil_addrinfo *a = cn->cur;
		evutil_socket_t fd = socket(a->ai_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			cn->last_err = errno;
			if ((errno == EMFILE || errno == ENFILE) &&
			    tcp_retry_later(st))
				return;
			continue;
		}
		tcp_sockopts(&cn->cfg, fd);
		bufferevent_setfd(st->bev, fd);
		/* a failed attempt disabled reading and writing (here and in
		 * the read path): give the next socket what the first had */
		if (!strata_bev_is_direct_(st->bev))
			bufferevent_enable(st->bev, cn->enabled);
		cn->attempts++;
		if (a->ai_addrlen <= sizeof(st->peer) &&
		    strata_socket_connect_(st->c, st->bev, a->ai_addr,
			(int)a->ai_addrlen) == 0) {
			memcpy(&st->peer, a->ai_addr, a->ai_addrlen);
			st->peerlen = (socklen_t)a->ai_addrlen;
			cn->cur = a->ai_next;
			return;
		}
		cn->last_err = errno;
		tcp_drop_socket(st);
	}
	tcp_fail(st, cn->last_err, "failed");
}

static void
tcp_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct tcp_connect *cn = arg;
	struct tcp_state *st = cn->st;

	cn->req = NULL;
	if (!st || !st->connecting) {
		/* the stack is gone (this was the last use of cn), or the
		 * connect timed out while resolving */
		if (res)
			evutil_freeaddrinfo(res);
		if (!st)
			strata_free_(cn);
		return;
	}
	if (result) {
		strata_conn_fail(st->c, 0, "cannot resolve '%s': %s",
		    cn->cfg.host, evutil_gai_strerror(result));
		return;
	}
	cn->ai = cn->cur = res;
	tcp_try_next(st);
}

static void
tcp_start(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_state *st = arg;
	struct tcp_connect *cn = st->cn;
	const struct tcp_cfg *cfg = &cn->cfg;
	struct evutil_addrinfo hints;
	struct timeval tv;
	int r;

	(void)fd;
	if (st->connecting) { /* the timer: connect timeout */
		tcp_drop_socket(st);
		if (cn->retry && evtimer_pending(cn->retry, NULL))
			tcp_fail(st, cn->last_err,
			    "failed: no free file descriptor before the timeout");
		else
			tcp_fail(st, ETIMEDOUT, "timed out");
		return;
	}
	st->connecting = 1;
	cn->enabled = bufferevent_get_enabled(st->bev);
	tv.tv_sec = (time_t)(cfg->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(cfg->timeout_ms % 1000) * 1000;
	evtimer_add(cn->timer, &tv);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	if (cfg->literal) {
		struct evutil_addrinfo *ai = NULL;
		hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
		r = evutil_getaddrinfo(cfg->host[0] ? cfg->host : "127.0.0.1",
		    cfg->port, &hints, &ai);
		tcp_resolved(r, ai, cn);
		return;
	}
	if (!strata_conn_dns(st->c)) {
		tcp_fail(st, 0, "failed: no DNS resolver available");
		return;
	}
	cn->req = evdns_getaddrinfo(strata_conn_dns(st->c), cfg->host,
	    cfg->port, &hints, tcp_resolved, cn);
	(void)what;
}

/* Events of the bottom bufferevent while connecting. */
static int
tcp_event(void *state, short what)
{
	struct tcp_state *st = state;
	int e;

	if (!st->connecting)
		return 0;
	if (what & BEV_EVENT_CONNECTED) {
		tcp_connect_done(st);
		return 0;
	}
	if (!(what & BEV_EVENT_ERROR))
		return 0;
	e = EVUTIL_SOCKET_ERROR();
	if (!e) {
		socklen_t len = sizeof(e);
		getsockopt(bufferevent_getfd(st->bev), SOL_SOCKET, SO_ERROR,
		    &e, &len);
	}
	st->cn->last_err = e ? e : ECONNREFUSED;
	tcp_drop_socket(st);
	tcp_try_next(st);
	return 1;
}

static struct tcp_state *
tcp_state_new(const struct tcp_cfg *cfg, struct strata_conn *c,
    struct bufferevent *bev)
{
	struct tcp_state *st = strata_calloc_(1, sizeof(*st));

	if (!st)
		return NULL;
	st->nodelay = !!cfg->nodelay;
	st->c = c;
	st->bev = bev;
	return st;
}

static struct bufferevent *
tcp_connect(const void *cfgv, struct strata_conn *c, void **state,
    struct strata_error *err)
{
	const struct tcp_cfg *cfg = cfgv;
	struct event_base *base = strata_conn_base(c);
	int opts = strata_conn_options(c) &
	    (BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE);
	struct bufferevent *bev = bufferevent_socket_new(base, -1,
	    opts | BEV_OPT_CLOSE_ON_FREE | strata_conn_bev_options_(c));
	struct tcp_state *st = bev ? tcp_state_new(cfg, c, bev) : NULL;
	struct tcp_connect *cn = st ? strata_calloc_(1, sizeof(*cn)) : NULL;

	if (!cfg->host[0] || !strcmp(cfg->port, "0")) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "connect needs a host and a port other than 0");
		goto fail;
	}
	if (!cn || !(cn->timer = evtimer_new(base, tcp_start, st))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		goto fail;
	}
	cn->cfg = *cfg;
	cn->st = st;
	st->cn = cn;
	if (!(st->host = strata_strdup_(cfg->host))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* Start from the loop: the resolver may answer at once, before the
	 * engine exists. */
	event_active(cn->timer, EV_TIMEOUT, 1);
	*state = st;
	return bev;
fail:
	if (cn && cn->timer)
		event_free(cn->timer);
	strata_free_(cn);
	if (st)
		strata_free_(st->host);
	strata_free_(st);
	if (bev)
		bufferevent_free(bev);
	return NULL;
}

static void
tcp_destroy(void *state)
{
	struct tcp_state *st = state;
	struct tcp_connect *cn = st->cn;

	if (cn) {
		event_free(cn->timer);
		if (cn->retry)
			event_free(cn->retry);
		cn->retry = NULL;
		if (cn->ai)
			evutil_freeaddrinfo(cn->ai);
		if (cn->req) {
			/* the lookup's callback still runs once and frees
			 * cn */
			cn->st = NULL;
			strata_conn_dns_abandon_(st->c, cn->req);
		} else
			strata_free_(cn);
	}
	strata_free_(st->host);
	strata_free_(st);
}

/* ---- accepting ---- */

static struct bufferevent *
tcp_accept(const void *cfgv, evutil_socket_t fd, struct strata_conn *c,
    void **state, struct strata_error *err)
{
	int opts = strata_conn_options(c) & BEV_OPT_THREADSAFE;
	struct bufferevent *bev;
	struct tcp_state *st;

	tcp_sockopts(cfgv, fd);
	bev = bufferevent_socket_new(strata_conn_base(c), fd,
	    opts | BEV_OPT_CLOSE_ON_FREE | strata_conn_bev_options_(c));
	st = bev ? tcp_state_new(cfgv, c, bev) : NULL;
	if (!st) {
		if (bev)
			bufferevent_free(bev);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	st->peerlen = sizeof(st->peer);
	getpeername(fd, &st->peer.sa, &st->peerlen);
	strata_socket_tune(bev, -1);
	*state = st;
	return bev;
}

/* ---- listening ---- */

static evutil_socket_t
tcp_listen(const void *cfgv, void **lstate, struct strata_error *err)
{
	const struct tcp_cfg *c = cfgv;
	struct evutil_addrinfo hints, *ai = NULL;
	evutil_socket_t fd = -1;
	int one = 1, r;

	(void)lstate;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICSERV;
	r = evutil_getaddrinfo(c->host[0] ? c->host : NULL, c->port, &hints,
	    &ai);
	if (r) {
		strata_error_set(err, STRATA_ERR_SYSTEM, "cannot resolve '%s': %s",
		    c->host, evutil_gai_strerror(r));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		goto syserr;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (c->reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto syserr;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, c->backlog) < 0)
		goto syserr;
	evutil_freeaddrinfo(ai);
	return fd;
syserr:
	strata_error_set(err, STRATA_ERR_SYSTEM, "cannot listen on %s%s%s:%s: %s",
	    strchr(c->host, ':') ? "[" : "", c->host,
	    strchr(c->host, ':') ? "]" : "", c->port, strerror(errno));
	if (err)
		err->sys_errno = errno;
	if (fd >= 0)
		evutil_closesocket(fd);
	evutil_freeaddrinfo(ai);
	return -1;
}

/* ---- queries ---- */

static int
tcp_peer(void *state, char *buf, size_t len, struct sockaddr *sa,
    int *salen)
{
	struct tcp_state *st = state;

	if (!st->peerlen || st->connecting)
		return -1;
	return strata_sockaddr_out_((struct sockaddr *)&st->peer, st->peerlen,
	    buf, len, sa, salen);
}

static void
tcp_stats(const void *state, struct strata_stats_sink *sink)
{
	const struct tcp_state *st = state;
	char peer[80];

	if (st->peerlen && !st->connecting) {
		strata_format_sockaddr_((const struct sockaddr *)&st->peer,
		    st->peerlen, peer, sizeof(peer));
		strata_stat(sink, "peer", "%s", peer);
	}
	strata_stat(sink, "nodelay", "%s", st->nodelay ? "yes" : "no");
}

static const char *
tcp_host(void *state)
{
	const struct tcp_state *st = state;

	return st->host && st->host[0] ? st->host : NULL;
}

const struct strata_transport_type strata_tcp_transport_ = {
	.name = "tcp",
	.summary = "TCP over IPv4 and IPv6; names resolved through evdns",
	.options = tcp_options,
	.config = tcp_config,
	.config_free = free,
	.connect = tcp_connect,
	.listen = tcp_listen,
	.accept = tcp_accept,
	.event = tcp_event,
	.peer = tcp_peer,
	.destroy = tcp_destroy,
	.stats = tcp_stats,
	.host = tcp_host,
};
