/* Shared test helpers: socketpairs, bounded loops, byte patterns. */
#ifndef STRATA_TEST_HELPERS_H
#define STRATA_TEST_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/* A nonblocking AF_UNIX socketpair; aborts the test on failure. */
void th_socketpair(int fds[2]);

/* Run @p base until *done is nonzero or @p ms milliseconds passed; fails
 * the test with @p what if the time runs out. */
void th_run_until(struct event_base *base, const int *done, int ms,
    const char *what);

/* Run the loop for @p ms milliseconds. */
void th_run_for(struct event_base *base, int ms);

/* Fill @p buf with a deterministic pattern starting at stream offset @p off. */
void th_pattern(unsigned char *buf, size_t len, size_t off);

/* Whether the program runs under valgrind (its preload library is in
 * LD_PRELOAD): memcheck runs zlib and OpenSSL tens of times slower, so the
 * bulk tests move less there (every path is still crossed many times). */
int th_under_valgrind(void);

/* @p n, or @p small under valgrind. */
size_t th_scaled(size_t n, size_t small);

/* Count open file descriptors of this process. */
int th_count_fds(void);

/* Move up to @p lim bytes (all of them when @p lim is negative) from
 * @p src to @p dst, as a pass-through filter does: BEV_NEED_MORE when
 * there was nothing to move, else BEV_OK. */
enum bufferevent_filter_result th_move(struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim);

/* A filter function that passes its data on unchanged (th_move()). */
enum bufferevent_filter_result th_pass_fn(struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim, enum bufferevent_flush_mode mode,
    void *ctx);

/* Register the test filters once: "rot13" (both sides), "guard" (fails on
 * '!'), "spin" (returns BEV_OK without progress), "hold" (delivers input one
 * byte per call). */
void th_register_test_filters(void);

/* ---- driving one filter type directly (the filter tests) ---- */

/* @p b holds exactly the @p n bytes at @p s. */
int th_buf_eq(struct evbuffer *b, const void *s, size_t n);

/* "k=v,k=v" split into strata_options; position is the key's offset. */
struct th_optlist {
	char buf[256];
	struct strata_option o[10];
	size_t n;
};
void th_optlist_parse(struct th_optlist *l, const char *s);

/* A context of @p type made by create() with no layer: for paths that
 * cannot fail. */
struct th_direct {
	const struct strata_filter_type *type;
	void *cfg;
	void *ctx;
};
void th_direct_open(struct th_direct *d, const struct strata_filter_type *type,
    const char *opts);
void th_direct_close(struct th_direct *d);

/* Register a copy of @p type named @p name whose create() hands its
 * context to th_held_open(), so a filter's functions can be called with a
 * context that has a real layer (strata_layer_fail needs one). One per
 * program. */
int th_capture_register(const struct strata_filter_type *type,
    const char *name);

/* The captured type with @p opts pushed onto one end of a
 * bufferevent_pair in @p base; ctx is its context. */
struct th_held {
	struct event_base *base;
	struct bufferevent *top, *peer;
	void *ctx;
};
void th_held_open(struct th_held *h, struct event_base *base,
    const char *opts);
void th_held_close(struct th_held *h);

#endif
