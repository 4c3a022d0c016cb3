/* Shared test helpers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- test filters ---- */

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
	size_t n = evbuffer_get_length(src);

	(void)mode;
	if (p.pos >= 0) {
		strata_layer_fail(ctx, STRATA_ERR_FILTER,
		    "found a '!' at byte %zd", p.pos);
		return BEV_ERROR;
	}
	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, n);
	return BEV_OK;
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

static enum bufferevent_filter_result
pass_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	size_t n = evbuffer_get_length(src);

	(void)mode;
	(void)ctx;
	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, n);
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
	.input = pass_fn, .output = pass_fn,
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
