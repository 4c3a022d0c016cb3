/* Shared test helpers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "helpers.h"

void
th_socketpair(int fds[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(fds[0]), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(fds[1]), 0);
}

static void
loop_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

void
th_run_until(struct event_base *base, const int *done, int ms,
    const char *what)
{
	struct timeval slice = {0, 10000}, start, now;
	struct event *tick = event_new(base, -1, EV_PERSIST, loop_tick, base);
	long waited = 0;

	gettimeofday(&start, NULL);
	event_add(tick, &slice);
	while (!*done && waited < ms) {
		event_base_loop(base, EVLOOP_ONCE);
		gettimeofday(&now, NULL);
		waited = (now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_usec - start.tv_usec) / 1000;
	}
	event_free(tick);
	ck_assert_msg(*done, "timed out after %d ms waiting for %s", ms, what);
}

void
th_run_for(struct event_base *base, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

void
th_pattern(unsigned char *buf, size_t len, size_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)(((off + i) * 2654435761u) >> 13);
}

int
th_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

/* ---- loopback TCP ---- */

struct sockaddr_in
th_loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

int
th_free_port(void)
{
	struct sockaddr_in a = th_loopback(0);
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

int
th_tcp_connect(int port)
{
	struct sockaddr_in a = th_loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

int
th_tcp_listen(int backlog, int *port)
{
	struct sockaddr_in a = th_loopback(0);
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, backlog), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* ---- one end of a connection ---- */

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct th_peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (p->echo)
		bufferevent_write_buffer(bev, in);
	else
		evbuffer_add_buffer(p->got, in);
	if (p->want && evbuffer_get_length(p->got) >= p->want)
		p->enough = 1;
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct th_peer *p = arg;

	(void)bev;
	p->events++;
	p->last_what = what;
	if (what & BEV_EVENT_CONNECTED)
		p->connected++;
	if (what & BEV_EVENT_EOF) {
		p->eof++;
		p->got_at_eof = evbuffer_get_length(p->got);
	}
	if (what & BEV_EVENT_ERROR)
		p->errors++;
	if (p->free_on_end && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
		if (p->freed)
			(*p->freed)++;
		th_peer_free(p);
	}
}

struct th_peer *
th_peer_new(struct bufferevent *top, int echo)
{
	struct th_peer *p = calloc(1, sizeof(*p));

	ck_assert_ptr_nonnull(p);
	p->top = top;
	p->got = evbuffer_new();
	p->echo = echo;
	bufferevent_setcb(top, peer_read, NULL, peer_event, p);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	return p;
}

struct th_peer *
th_peer_connect(struct event_base *base, struct evdns_base *dns,
    const char *stack, int opts)
{
	struct strata_error err;
	struct bufferevent *top;

	top = strata_connect(base, dns, stack, opts, &err);
	ck_assert_msg(top != NULL, "connect '%s': %s", stack, err.message);
	return th_peer_new(top, 0);
}

void
th_peer_free(struct th_peer *p)
{
	if (!p)
		return;
	if (p->top)
		bufferevent_free(p->top);
	evbuffer_free(p->got);
	free(p);
}

int
th_got_equals(struct th_peer *p, const char *s)
{
	return th_buf_eq(p->got, s, strlen(s));
}

const char *
th_got_text(struct th_peer *p)
{
	static char buf[256];
	size_t n = evbuffer_get_length(p->got);

	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	evbuffer_copyout(p->got, buf, n);
	buf[n] = 0;
	return buf;
}

void
th_on_closed(int delivered, void *arg)
{
	struct th_close_res *r = arg;

	r->done = 1;
	r->delivered = delivered;
}

/* ---- a listener whose accepted stacks get peers ---- */

void
th_srv_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct th_server *s = arg;
	struct th_peer *p = th_peer_new(top, s->echo);

	(void)l;
	s->accepted++;
	if (s->free_on_end) {
		p->free_on_end = 1;
		p->freed = &s->freed;
	} else if (s->n < TH_MAX_PEERS)
		s->p[s->n++] = p;
	else
		th_peer_free(p);
}

void
th_srv_setup_opts(struct th_server *s, struct event_base *base,
    const char *stack, int echo, int opts)
{
	struct strata_error err;

	memset(s, 0, sizeof(*s));
	s->base = base;
	s->echo = echo;
	s->l = strata_listen(base, stack, opts, th_srv_accept, s, &err);
	ck_assert_msg(s->l != NULL, "listen '%s': %s", stack, err.message);
	ck_assert_int_gt(strata_listener_address(s->l, s->addr,
	    sizeof(s->addr), NULL, NULL), 0);
	s->port = strata_listener_port(s->l);
}

void
th_srv_setup(struct th_server *s, struct event_base *base, const char *stack,
    int echo)
{
	th_srv_setup_opts(s, base, stack, echo, BEV_OPT_CLOSE_ON_FREE);
}

void
th_srv_free_peers(struct th_server *s)
{
	int i;

	for (i = 0; i < s->n; i++)
		th_peer_free(s->p[i]);
	s->n = 0;
}

void
th_srv_teardown(struct th_server *s)
{
	th_srv_free_peers(s);
	strata_listener_free(s->l);
}

struct th_peer *
th_srv_wait_peer(struct th_server *s)
{
	th_run_until(s->base, &s->n, 2000, "an accepted connection");
	return s->p[0];
}

/* ---- test filters ---- */

enum bufferevent_filter_result
th_move(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim)
{
	size_t n = evbuffer_get_length(src);

	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, n);
	return BEV_OK;
}

enum bufferevent_filter_result
th_pass_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	(void)mode;
	(void)ctx;
	return th_move(src, dst, lim);
}

static enum bufferevent_filter_result
rot13_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	size_t n = evbuffer_get_length(src), i;
	struct evbuffer_iovec v;
	unsigned char *p;

	(void)mode;
	(void)ctx;
	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return BEV_NEED_MORE;
	if (evbuffer_reserve_space(dst, n, &v, 1) < 1)
		return BEV_ERROR;
	evbuffer_remove(src, v.iov_base, n);
	p = v.iov_base;
	for (i = 0; i < n; i++) {
		unsigned char c = p[i];
		if ((c >= 'a' && c <= 'z'))
			p[i] = (unsigned char)('a' + (c - 'a' + 13) % 26);
		else if (c >= 'A' && c <= 'Z')
			p[i] = (unsigned char)('A' + (c - 'A' + 13) % 26);
	}
	v.iov_len = n;
	evbuffer_commit_space(dst, &v, 1);
	return BEV_OK;
}

static void *
ctx_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	(void)cfg;
	(void)err;
	return layer;
}

static enum bufferevent_filter_result
guard_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct evbuffer_ptr p = evbuffer_search(src, "!", 1, NULL);

	(void)mode;
	if (p.pos >= 0) {
		strata_layer_fail(ctx, STRATA_ERR_FILTER,
		    "found a '!' at byte %zd", p.pos);
		return BEV_ERROR;
	}
	return th_move(src, dst, lim);
}

static enum bufferevent_filter_result
spin_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	(void)src;
	(void)dst;
	(void)lim;
	(void)mode;
	(void)ctx;
	return BEV_OK;
}

static const struct strata_filter_type rot13_type = {
	.name = "rot13", .summary = "test: rot13 both ways",
	.input = rot13_fn, .output = rot13_fn,
};
static const struct strata_filter_type guard_type = {
	.name = "guard", .summary = "test: fails on '!'",
	.create = ctx_create, .input = guard_fn, .output = guard_fn,
};
static const struct strata_filter_type spin_type = {
	.name = "spin", .summary = "test: BEV_OK without progress",
	.input = spin_fn, .output = spin_fn,
};
static const struct strata_filter_type pass_type = {
	.name = "pass", .summary = "test: pass-through",
	.input = th_pass_fn, .output = th_pass_fn,
};

void
th_register_test_filters(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	strata_register_filter(&rot13_type, NULL);
	strata_register_filter(&guard_type, NULL);
	strata_register_filter(&spin_type, NULL);
	strata_register_filter(&pass_type, NULL);
}

int
th_under_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");

	return pre && strstr(pre, "vgpreload") != NULL;
}

size_t
th_scaled(size_t n, size_t small)
{
	return th_under_valgrind() ? small : n;
}

int
th_buf_eq(struct evbuffer *b, const void *s, size_t n)
{
	return evbuffer_get_length(b) == n &&
	    (!n || !memcmp(evbuffer_pullup(b, -1), s, n));
}

void
th_optlist_parse(struct th_optlist *l, const char *s)
{
	char *p = l->buf;

	ck_assert_uint_lt(strlen(s), sizeof(l->buf));
	strcpy(l->buf, s);
	l->n = 0;
	while (*p) {
		char *end = p + strcspn(p, ",");
		char *eq = memchr(p, '=', (size_t)(end - p));
		int last = !*end;

		ck_assert_msg(eq && l->n < sizeof(l->o) / sizeof(l->o[0]),
		    "bad test options '%s'", s);
		*eq = 0;
		*end = 0;
		l->o[l->n].key = p;
		l->o[l->n].value = eq + 1;
		l->o[l->n].position = (size_t)(p - l->buf);
		l->n++;
		p = last ? end : end + 1;
	}
}

void
th_direct_open(struct th_direct *d, const struct strata_filter_type *type,
    const char *opts)
{
	struct strata_error err;
	struct th_optlist l;

	memset(&err, 0, sizeof(err));
	th_optlist_parse(&l, opts);
	d->type = type;
	d->cfg = NULL;
	ck_assert_msg(type->config(&d->cfg, l.o, l.n, &err) == 0,
	    "config '%s': %s", opts, err.message);
	d->ctx = type->create(d->cfg, NULL, &err);
	ck_assert_ptr_nonnull(d->ctx);
}

void
th_direct_close(struct th_direct *d)
{
	d->type->destroy(d->ctx);
	d->type->config_free(d->cfg);
}

static struct strata_filter_type capture_type;
static const struct strata_filter_type *capture_orig;
static void *captured_ctx;

static void *
capture_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	captured_ctx = capture_orig->create(cfg, layer, err);
	return captured_ctx;
}

int
th_capture_register(const struct strata_filter_type *type, const char *name)
{
	capture_orig = type;
	capture_type = *type;
	capture_type.name = name;
	capture_type.create = capture_create;
	return strata_register_filter(&capture_type, NULL);
}

void
th_held_open(struct th_held *h, struct event_base *base, const char *opts)
{
	struct bufferevent *pair[2];
	struct strata_error err;
	char spec[300];

	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	snprintf(spec, sizeof(spec), *opts ? "%s(%s)" : "%s",
	    capture_type.name, opts);
	captured_ctx = NULL;
	h->base = base;
	h->top = strata_push(pair[0], spec, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(h->top != NULL, "push '%s': %s", spec, err.message);
	h->peer = pair[1];
	h->ctx = captured_ctx;
	ck_assert_ptr_nonnull(h->ctx);
}

void
th_held_close(struct th_held *h)
{
	bufferevent_free(h->top);
	bufferevent_free(h->peer);
	/* let deferred error callbacks and finalizers run (never blocks) */
	event_base_loop(h->base, EVLOOP_NONBLOCK);
	event_base_loop(h->base, EVLOOP_NONBLOCK);
}
