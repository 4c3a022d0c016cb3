/*
 * Transports: strata_connect(), strata_listen(), the connection handle the
 * transport plugins use, and the socket tuning every built-in transport
 * shares (large reads, large writes, a separate write fd for pipe pairs).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <pthread.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

#include "internal.h"

/* Largest single read and write of a tuned socket. */
#define IO_MAX (256 * 1024)
/* Smallest read reservation (FIONREAD may say 0 on EOF or error). */
#define IO_MIN 4096
/* Pause after an accept error such as EMFILE. */
#define ACCEPT_PAUSE_MS 100

/* ---- the fast read path ---- */

static int read_into(struct evbuffer *in, evutil_socket_t fd,
    ev_ssize_t howmuch);

int
strata_wire_read_(struct evbuffer *in, evutil_socket_t fd, ev_ssize_t howmuch)
{
	int avail = 0;

	if (ioctl(fd, FIONREAD, &avail) < 0 || avail < IO_MIN)
		avail = IO_MIN;
	if (howmuch > avail)
		howmuch = avail;
	return read_into(in, fd, howmuch);
}

static int
read_some(struct bufferevent *bev, evutil_socket_t fd, ev_ssize_t howmuch)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	int n;

	/* a socket bufferevent keeps its input's end frozen outside reads */
	evbuffer_unfreeze(in, 0);
	n = strata_wire_read_(in, fd, howmuch);
	evbuffer_freeze(in, 0);
	return n;
}

static int
read_into(struct evbuffer *in, evutil_socket_t fd, ev_ssize_t howmuch)
{
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	int n, i;
	ssize_t r;

	n = evbuffer_reserve_space(in, howmuch, v, 2);
	if (n <= 0)
		return -1;
	/* the reservation may be larger than asked (a whole chain's free
	 * space): read no more than howmuch, which carries the read limit,
	 * the high watermark and the rate limit */
	for (i = 0; i < n; i++) {
		size_t left = (size_t)howmuch - (i ? iov[0].iov_len : 0);
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
	}
	if (n == 2 && iov[0].iov_len >= (size_t)howmuch)
		n = 1;
	do
		r = readv(fd, iov, n);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		evbuffer_commit_space(in, v, 0);
		return (int)r;
	}
	for (i = 0; i < n; i++) {
		size_t take = (size_t)r < v[i].iov_len ? (size_t)r : v[i].iov_len;
		v[i].iov_len = take;
		r -= (ssize_t)take;
	}
	evbuffer_commit_space(in, v, n);
	return 1;
}

/*
 * Replacement for libevent's socket read callback: libevent reads at most
 * 4 KiB per call (EVBUFFER_MAX_READ in buffer.c), with an ioctl and a trip
 * through epoll for each; this reads what is there, up to IO_MAX, and keeps
 * libevent's semantics (watermarks, rate limits, timeouts, events).
 */
static void
fast_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *bev = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	ev_ssize_t howmuch = bufferevent_get_max_to_read(bev);
	size_t before = evbuffer_get_length(in), low, high;
	ev_ssize_t cap;
	int r, err;

	bufferevent_incref(bev);
	bufferevent_lock(bev);
	if (what == EV_TIMEOUT) {
		bufferevent_disable(bev, EV_READ);
		bufferevent_trigger_event(bev,
		    BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
		goto out;
	}
	bufferevent_getwatermark(bev, EV_READ, &low, &high);
	if (high && (ev_ssize_t)(high - before) < howmuch)
		howmuch = high > before ? (ev_ssize_t)(high - before) : 0;
	if ((cap = strata_transport_read_cap_(bev)) >= 0 && cap < howmuch)
		howmuch = cap;
	if (howmuch <= 0)
		goto out;
	r = read_some(bev, fd, howmuch);
	err = errno;
	if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
		goto out;
	if (r <= 0) {
		bufferevent_disable(bev, EV_READ);
		if (r < 0)
			EVUTIL_SET_SOCKET_ERROR(err);
		bufferevent_trigger_event(bev, BEV_EVENT_READING |
		    (r == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), 0);
		goto out;
	}
	if (bufferevent_get_token_bucket_cfg(bev))
		bufferevent_decrement_read_limit(bev,
		    (ev_ssize_t)(evbuffer_get_length(in) - before));
	strata_transport_read_charged_(bev,
	    (ev_ssize_t)(evbuffer_get_length(in) - before));
	bufferevent_trigger(bev, EV_READ, 0);
out:
	bufferevent_unlock(bev);
	bufferevent_decref(bev);
}

int
strata_socket_tune(struct bufferevent *bev, evutil_socket_t wfd)
{
	struct event_base *base = bufferevent_get_base(bev);
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct timeval tv;
	int pending;

	if (fd < 0)
		return -1;
	bufferevent_lock(bev);
	bufferevent_set_max_single_read(bev, IO_MAX);
	bufferevent_set_max_single_write(bev, IO_MAX);
	if (strata_bev_is_direct_(bev)) { /* the engine's read path already */
		bufferevent_unlock(bev);
		return 0;
	}
	pending = event_pending(&bev->ev_read, EV_READ, NULL);
	event_del(&bev->ev_read);
	event_assign(&bev->ev_read, base, fd, EV_READ | EV_PERSIST |
	    EV_FINALIZE, fast_readcb, bev);
	if (pending) {
		tv = bev->timeout_read;
		event_add(&bev->ev_read, evutil_timerisset(&tv) ? &tv : NULL);
	}
	if (wfd >= 0 && wfd != fd) {
		event_callback_fn wcb = event_get_callback(&bev->ev_write);
		pending = event_pending(&bev->ev_write, EV_WRITE, NULL);
		event_del(&bev->ev_write);
		event_assign(&bev->ev_write, base, wfd, EV_WRITE | EV_PERSIST |
		    EV_FINALIZE, wcb, bev);
		if (pending) {
			tv = bev->timeout_write;
			event_add(&bev->ev_write,
			    evutil_timerisset(&tv) ? &tv : NULL);
		}
	}
	bufferevent_unlock(bev);
	return 0;
}

/* ---- connect ---- */

/* A parsed connecting stack: the spec and the transport's configuration,
 * shared by every connection made from it (strata_stack_connect()). */
struct strata_stack {
	int refs;
	struct strata_spec *spec;
	const struct strata_transport_type *t;
	void *cfg;
};

struct strata_stack *
strata_stack_new(const char *stack, struct strata_error *err)
{
	struct strata_stack *s;

	if (!stack) {
		strata_error_set(err, STRATA_ERR_INVALID, "no stack string");
		return NULL;
	}
	if (!(s = strata_calloc_(1, sizeof(*s)))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	s->refs = 1;
	if (!(s->spec = strata_spec_parse_(stack, 1, err)) ||
	    strata_transport_config_(s->spec, &s->t, &s->cfg, err) < 0) {
		strata_stack_free(s);
		return NULL;
	}
	if (!s->t->connect) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "%s: this transport cannot connect", s->t->name);
		strata_stack_free(s);
		return NULL;
	}
	/* configured: each connection's layers keep the spec, not this */
	strata_free_(s->spec->transport);
	s->spec->transport = NULL;
	return s;
}

void
strata_stack_ref(struct strata_stack *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void
strata_stack_free(struct strata_stack *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (s->cfg && s->t && s->t->config_free)
		s->t->config_free(s->cfg);
	strata_spec_unref_(s->spec);
	strata_free_(s);
}

struct bufferevent *
strata_stack_connect(struct strata_stack *s, struct event_base *base,
    struct evdns_base *dns, int options, struct strata_error *err)
{
	struct strata_engine *e;
	struct bufferevent *bev, *top;
	struct strata_build b = {.role = STRATA_ROLE_CLIENT,
	    .own_transport = 1};

	if (!base || !s) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "connect: no base or no stack");
		return NULL;
	}
	if (!(e = strata_engine_alloc_(base, dns, options))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	strata_engine_allow_direct_(e, s->t);
	b.tport = s->t;
	if (!(bev = s->t->connect(s->cfg, strata_engine_conn_(e), &b.tstate,
		  err))) {
		strata_error_prefix_(err, s->t->name);
		strata_engine_discard_(e);
		return NULL;
	}
	/* each layer holds its own reference to the spec */
	if (!(top = strata_engine_build_(e, bev, s->spec, &b, err))) {
		if (s->t->destroy && b.tstate)
			s->t->destroy(b.tstate);
		bufferevent_free(bev);
	}
	return top;
}

struct bufferevent *
strata_connect(struct event_base *base, struct evdns_base *dns,
    const char *stack, int options, struct strata_error *err)
{
	struct strata_stack *s;
	struct bufferevent *top;

	if (!base) {
		strata_error_set(err, STRATA_ERR_INVALID, "connect: no base");
		return NULL;
	}
	if (!(s = strata_stack_new(stack, err)))
		return NULL;
	top = strata_stack_connect(s, base, dns, options, err);
	strata_stack_free(s);
	return top;
}

/* ---- listen ---- */

/*
 * A listener is reference counted: its user holds one reference, and each
 * connection being handed to a worker's loop (strata_listener_spread())
 * holds one, so the transport's configuration outlives a
 * strata_listener_free() that races with a hand-over. Everything but the
 * spec and the closed flag is fixed once strata_listen() returns.
 */
struct strata_listener {
	struct evconnlistener *lev;
	struct event_base *base;
	char *stack;	/* the stack string, parsed again on reload */
	pthread_mutex_t lock; /* guards spec */
	struct strata_spec *spec;
	const struct strata_transport_type *t;
	void *cfg;
	void *lstate;
	evutil_socket_t fd;
	int options;
	strata_accept_fn cb;
	void *arg;
	struct event *resume;
	int warned;
	int refs;	/* atomic */
	int closed;	/* atomic: strata_listener_free() was called */
	struct event_base **workers;
	size_t nworkers, next;
};

/* An accepted fd on its way to a worker's loop. */
struct handoff {
	struct strata_listener *l;
	struct strata_spec *spec;
	evutil_socket_t fd;
	struct event *ev;
};

static void
listener_unref(struct strata_listener *l)
{
	if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (l->t && l->t->config_free && l->cfg)
		l->t->config_free(l->cfg);
	strata_spec_unref_(l->spec);
	pthread_mutex_destroy(&l->lock);
	strata_free_(l->workers);
	strata_free_(l->stack);
	strata_free_(l);
}

/* The spec new connections are built with, with a reference. */
static struct strata_spec *
listener_spec(struct strata_listener *l)
{
	struct strata_spec *spec;

	pthread_mutex_lock(&l->lock);
	spec = l->spec;
	strata_spec_ref_(spec);
	pthread_mutex_unlock(&l->lock);
	return spec;
}

/* Wrap an accepted fd in a stack in @p base and give it to the user. */
static void
listener_build(struct strata_listener *l, struct event_base *base,
    evutil_socket_t fd, struct strata_spec *spec)
{
	struct strata_engine *e;
	struct bufferevent *bev, *top;
	struct strata_build b = {.role = STRATA_ROLE_SERVER, .connected = 1,
	    .announce = 1, .own_transport = 1, .tport = l->t};
	struct strata_error err;

	if (!(e = strata_engine_alloc_(base, NULL, l->options))) {
		evutil_closesocket(fd);
		return;
	}
	strata_engine_allow_direct_(e, l->t);
	bev = l->t->accept(l->cfg, fd, strata_engine_conn_(e), &b.tstate,
	    &err);
	if (!bev) {
		strata_warn_("%s: accept: %s", l->t->name, err.message);
		strata_engine_discard_(e);
		evutil_closesocket(fd);
		return;
	}
	if (!(top = strata_engine_build_(e, bev, spec, &b, &err))) {
		strata_warn_("accept: %s", err.message);
		if (l->t->destroy && b.tstate)
			l->t->destroy(b.tstate);
		bufferevent_free(bev);
		return;
	}
	bufferevent_incref(top); /* valid after the callback, even freed */
	l->cb(l, top, l->arg);
	strata_engine_accepted_(top);
	bufferevent_decref(top);
}

/* In the worker's loop: build the stack there, unless the listener was
 * freed meanwhile (then the connection is closed, as those still in the
 * kernel's accept queue are). */
static void
handoff_run(evutil_socket_t unused, short what, void *arg)
{
	struct handoff *h = arg;
	struct event_base *base = event_get_base(h->ev);

	(void)unused;
	(void)what;
	event_free(h->ev);
	if (__atomic_load_n(&h->l->closed, __ATOMIC_ACQUIRE))
		evutil_closesocket(h->fd);
	else
		listener_build(h->l, base, h->fd, h->spec);
	strata_spec_unref_(h->spec);
	listener_unref(h->l);
	strata_free_(h);
}

/* Hand @p fd to the next worker in turn; takes over @p spec's reference. */
static void
listener_handoff(struct strata_listener *l, evutil_socket_t fd,
    struct strata_spec *spec)
{
	struct event_base *base = l->workers[l->next++ % l->nworkers];
	struct handoff *h = strata_calloc_(1, sizeof(*h));

	if (!h || !(h->ev = event_new(base, -1, 0, handoff_run, h))) {
		strata_warn_("%s: accept: out of memory", l->t->name);
		strata_free_(h);
		evutil_closesocket(fd);
		strata_spec_unref_(spec);
		return;
	}
	h->l = l;
	h->spec = spec;
	h->fd = fd;
	__atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED);
	event_active(h->ev, EV_TIMEOUT, 1);
}

static void
listener_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct strata_listener *l = arg;
	struct strata_spec *spec = listener_spec(l);

	(void)lev;
	(void)sa;
	(void)salen;
	if (l->nworkers) {
		listener_handoff(l, fd, spec);
		return;
	}
	listener_build(l, l->base, fd, spec);
	strata_spec_unref_(spec);
}

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct strata_listener *l = arg;

	(void)fd;
	(void)what;
	if (evconnlistener_enable(l->lev) < 0) { /* out of memory: later */
		struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
		evtimer_add(l->resume, &tv);
	}
}

/* EMFILE and friends: pause briefly instead of spinning or dying. */
static void
listener_error(struct evconnlistener *lev, void *arg)
{
	struct strata_listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};

	if (!l->warned) {
		l->warned = 1;
		strata_warn_("%s listener: accept failed: %s; pausing %d ms "
			     "(logged once)", l->t->name,
		    evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
	}
	evconnlistener_disable(lev);
	evtimer_add(l->resume, &tv);
}

static struct strata_listener *
listener_alloc(struct event_base *base, const char *stack, int options,
    strata_accept_fn cb, void *arg, struct strata_error *err)
{
	struct strata_listener *l;

	if (!base || !cb || !stack) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "listen: needs a base, a stack string and a callback");
		return NULL;
	}
	if (!(l = strata_calloc_(1, sizeof(*l))) ||
	    !(l->stack = strata_strdup_(stack))) {
		strata_free_(l);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&l->lock, NULL);
	l->refs = 1;
	l->fd = -1;
	l->base = base;
	l->options = options;
	l->cb = cb;
	l->arg = arg;
	return l;
}

struct strata_listener *
strata_listen(struct event_base *base, const char *stack, int options,
    strata_accept_fn cb, void *arg, struct strata_error *err)
{
	struct strata_listener *l;
	unsigned lopts = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
	    LEV_OPT_DISABLED;

	if (!(l = listener_alloc(base, stack, options, cb, arg, err)))
		return NULL;
	if (!(l->spec = strata_spec_parse_(stack, 1, err)) ||
	    strata_transport_config_(l->spec, &l->t, &l->cfg, err) < 0)
		goto fail;
	if (!l->t->listen || !l->t->accept) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "%s: this transport cannot listen", l->t->name);
		goto fail;
	}
	if ((l->fd = l->t->listen(l->cfg, &l->lstate, err)) < 0) {
		strata_error_prefix_(err, l->t->name);
		goto fail;
	}
	if (options & BEV_OPT_THREADSAFE)
		lopts |= LEV_OPT_THREADSAFE;
	l->resume = evtimer_new(base, listener_resume, l);
	/* backlog 0: the transport already listens with its backlog option;
	 * -1 would make libevent call listen(fd, 128) again over it */
	l->lev = l->resume ? evconnlistener_new(base, listener_accept, l,
	    lopts, 0, l->fd) : NULL;
	if (!l->lev) {
		strata_error_set(err, STRATA_ERR_NOMEM,
		    "%s: cannot create the listener", l->t->name);
		goto fail;
	}
	evconnlistener_set_error_cb(l->lev, listener_error);
	/* evconnlistener_new() ignores a failing event_add() of its own
	 * enable: a listener that never accepts. Enable it here instead. */
	if (evconnlistener_enable(l->lev) < 0) {
		strata_error_set(err, STRATA_ERR_NOMEM,
		    "%s: cannot watch the listening socket", l->t->name);
		goto fail;
	}
	return l;
fail:
	strata_listener_free(l);
	return NULL;
}

int
strata_listener_reload(struct strata_listener *l, struct strata_error *err)
{
	struct strata_spec *spec, *old;

	if (!l) {
		strata_error_set(err, STRATA_ERR_INVALID, "reload: no listener");
		return -1;
	}
	/* the transport part is parsed too (and ignored: the socket stays);
	 * each filter's config() runs again, and reads its files again */
	if (!(spec = strata_spec_parse_(l->stack, 1, err)))
		return -1;
	pthread_mutex_lock(&l->lock);
	old = l->spec;
	l->spec = spec;
	pthread_mutex_unlock(&l->lock);
	strata_spec_unref_(old);
	return 0;
}

int
strata_listener_spread(struct strata_listener *l,
    struct event_base *const *bases, size_t n, struct strata_error *err)
{
	struct event_base **copy = NULL;

	if (!l || (n && !bases)) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "spread: no listener or no bases");
		return -1;
	}
	if (n && !(copy = strata_calloc_(n, sizeof(*copy)))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	if (n)
		memcpy(copy, bases, n * sizeof(*copy));
	strata_free_(l->workers);
	l->workers = copy;
	l->nworkers = n;
	l->next = 0;
	return 0;
}

void
strata_listener_free(struct strata_listener *l)
{
	if (!l)
		return;
	__atomic_store_n(&l->closed, 1, __ATOMIC_RELEASE);
	if (l->t && l->t->unlisten && l->fd >= 0)
		l->t->unlisten(l->lstate);
	if (l->lev)
		evconnlistener_free(l->lev); /* closes the fd */
	else if (l->fd >= 0)
		evutil_closesocket(l->fd);
	l->lev = NULL;
	l->fd = -1;
	if (l->resume)
		event_free(l->resume);
	l->resume = NULL;
	listener_unref(l);
}

/* ---- addresses ---- */

int
strata_format_sockaddr_(const struct sockaddr *sa, socklen_t len, char *buf,
    size_t buflen)
{
	char host[INET6_ADDRSTRLEN];
	const struct sockaddr_un *un = (const void *)sa;
	size_t plen;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		return snprintf(buf, buflen, "%s:%u", host,
		    (unsigned)ntohs(in->sin_port));
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host,
		    sizeof(host));
		return snprintf(buf, buflen, "[%s]:%u", host,
		    (unsigned)ntohs(in6->sin6_port));
	}
	if (sa->sa_family != AF_UNIX)
		return snprintf(buf, buflen, "family %d", sa->sa_family);
	plen = len > offsetof(struct sockaddr_un, sun_path)
	    ? len - offsetof(struct sockaddr_un, sun_path) : 0;
	if (!plen)
		return snprintf(buf, buflen, "unix:(unnamed)");
	if (un->sun_path[0] == 0)
		return snprintf(buf, buflen, "unix:@%.*s", (int)plen - 1,
		    un->sun_path + 1);
	return snprintf(buf, buflen, "unix:%.*s",
	    (int)strnlen(un->sun_path, plen), un->sun_path);
}

int
strata_sockaddr_out_(const struct sockaddr *ss, socklen_t sl, char *buf,
    size_t len, struct sockaddr *sa, int *salen)
{
	if (sa && salen) {
		if ((socklen_t)*salen < sl)
			return -1;
		memcpy(sa, ss, sl);
		*salen = (int)sl;
	}
	return strata_format_sockaddr_(ss, sl, buf, len);
}

int
strata_listener_address(struct strata_listener *l, char *buf, size_t len,
    struct sockaddr *sa, int *salen)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl = sizeof(ss);

	if (!l || getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	return strata_sockaddr_out_((struct sockaddr *)&ss, sl, buf, len, sa,
	    salen);
}

int
strata_listener_port(struct strata_listener *l)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl = sizeof(ss);

	if (!l || getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}
