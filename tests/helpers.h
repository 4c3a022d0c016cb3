/* Shared test helpers: socketpairs, bounded loops, byte patterns, loopback
 * TCP, and the peers and listeners that record what a connection does. */
#ifndef STRATA_TEST_HELPERS_H
#define STRATA_TEST_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <netinet/in.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "strata/plugin.h"
#include "strata/strata.h"

struct evdns_base;

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

/* A strata_close() callback and what it saw: th_on_closed() with a
 * struct th_close_res as arg sets done and records delivered. */
struct th_close_res {
	int done;
	int delivered;
};
void th_on_closed(int delivered, void *arg);

/* Register the test filters once: "rot13" (both sides), "guard" (fails on
 * '!'), "spin" (returns BEV_OK without progress), "hold" (delivers input one
 * byte per call). */
void th_register_test_filters(void);

/* ---- loopback TCP ---- */

/* 127.0.0.1:@p port. */
struct sockaddr_in th_loopback(int port);

/* A port on 127.0.0.1 where nothing listens (bound, then released). */
int th_free_port(void);

/* A blocking connect to 127.0.0.1:@p port; aborts the test on failure. */
int th_tcp_connect(int port);

/* A blocking listening socket on a free port of 127.0.0.1 with
 * @p backlog, its port in *port: for tests that play the server, or that
 * want one that never accepts. */
int th_tcp_listen(int backlog, int *port);

/* ---- one end of a connection: records events, may echo ---- */

struct th_peer {
	struct bufferevent *top;
	struct evbuffer *got;
	size_t want;		/* set `enough` once got holds this much */
	size_t got_at_eof;	/* bytes received when EOF arrived */
	int enough;
	int connected, eof, errors, events;
	short last_what;
	int echo;		/* write back everything that arrives */
	int free_on_end;	/* free top and peer at EOF or error */
	int *freed;		/* bumped when a free_on_end peer goes */
};

/* A peer that owns @p top and takes its callbacks; @p echo as above. */
struct th_peer *th_peer_new(struct bufferevent *top, int echo);

/* strata_connect() with @p opts, and a peer on the top; fails the test
 * with the error. */
struct th_peer *th_peer_connect(struct event_base *base,
    struct evdns_base *dns, const char *stack, int opts);

/* Free @p p and its top; NULL is a no-op. */
void th_peer_free(struct th_peer *p);

/* @p p received exactly the string @p s. */
int th_got_equals(struct th_peer *p, const char *s);

/* What @p p received, as a string for messages (the first 255 bytes). */
const char *th_got_text(struct th_peer *p);

/* ---- a listener whose accepted stacks get peers ---- */

#define TH_MAX_PEERS 8

/* The first TH_MAX_PEERS accepted peers are kept in p[] and freed by
 * th_srv_teardown(); with free_on_end set, each frees itself at its end
 * and counts in freed instead. */
struct th_server {
	struct event_base *base;
	struct strata_listener *l;
	struct th_peer *p[TH_MAX_PEERS];
	int n;
	int echo, free_on_end;
	int accepted, freed;
	char addr[160];
	int port;		/* -1 when not tcp */
};

/* strata_listen() on @p stack with @p opts for the accepted stacks;
 * their peers echo when @p echo is set. th_srv_setup() passes
 * BEV_OPT_CLOSE_ON_FREE. Fails the test with the error. */
void th_srv_setup_opts(struct th_server *s, struct event_base *base,
    const char *stack, int echo, int opts);
void th_srv_setup(struct th_server *s, struct event_base *base,
    const char *stack, int echo);

/* The accept callback th_srv_setup() gives its listener; arg is the
 * struct th_server (more listeners may feed the same one). */
void th_srv_accept(struct strata_listener *l, struct bufferevent *top,
    void *arg);

/* Free the kept peers (the listener goes on). */
void th_srv_free_peers(struct th_server *s);

/* Free the kept peers and the listener. */
void th_srv_teardown(struct th_server *s);

/* Wait for the first accepted peer. */
struct th_peer *th_srv_wait_peer(struct th_server *s);

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
