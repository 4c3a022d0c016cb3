/*
 * The engine's contract and the libevent traps of DESIGN section 4 that
 * concern it. Each trap test fails without the engine's fix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "helpers.h"

#include <event2/bufferevent_struct.h>

/* ---- a recording pass-through filter: rec(id=N) ---- */

#define LOG_MAX 256
static char call_log[LOG_MAX][16];
static int log_n;
static int rec_created, rec_destroyed;

static void
log_call(int id, const char *what)
{
	if (log_n < LOG_MAX)
		snprintf(call_log[log_n++], sizeof(call_log[0]), "%d%s", id,
		    what);
}

static int
log_index(const char *entry)
{
	int i;

	for (i = 0; i < log_n; i++)
		if (!strcmp(call_log[i], entry))
			return i;
	return -1;
}

struct rec {
	int id;
};

static int
rec_config(void **cfg, const struct strata_option *o, size_t n,
    struct strata_error *err)
{
	uint64_t id = 0;

	if (n && strata_opt_uint("rec", &o[0], 0, 99, 0, &id, err) < 0)
		return -1;
	*cfg = (void *)(uintptr_t)id;
	return 0;
}

static void *
rec_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	struct rec *r = calloc(1, sizeof(*r));

	(void)layer;
	(void)err;
	r->id = (int)(uintptr_t)cfg;
	rec_created++;
	return r;
}

static void
rec_destroy(void *ctx)
{
	rec_destroyed++;
	free(ctx);
}

static enum bufferevent_filter_result
rec_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct rec *r = ctx;

	if (mode == BEV_FINISHED)
		log_call(r->id, "in-fin");
	return th_move(src, dst, lim);
}

static enum bufferevent_filter_result
rec_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct rec *r = ctx;

	if (mode == BEV_FINISHED)
		log_call(r->id, "out-fin");
	return th_move(src, dst, lim);
}

static const struct strata_option_doc rec_opts[] = {
	{"id", "0", "number written to the call log"},
	{NULL, NULL, NULL},
};

static const struct strata_filter_type rec_type = {
	.name = "rec",
	.summary = "test: pass-through that logs BEV_FINISHED calls",
	.options = rec_opts,
	.config = rec_config,
	.create = rec_create,
	.destroy = rec_destroy,
	.input = rec_input,
	.output = rec_output,
};

/* ---- fixture ---- */

struct fx {
	struct event_base *base;
	struct bufferevent *top;
	int peer;
	int fd;
	int opts;
	struct bufferevent *transport;
	int reads, events, eof, errors;
	short last_what;
	struct evbuffer *got;
	int drain;	 /* readcb drains everything it gets */
	int one_line;	 /* readcb takes one line per call */
};

static void
fx_read(struct bufferevent *bev, void *arg)
{
	struct fx *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	f->reads++;
	if (f->one_line) {
		size_t n;
		char *l = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
		if (l) {
			evbuffer_add(f->got, l, n);
			evbuffer_add(f->got, "\n", 1);
			free(l);
		}
	} else if (f->drain)
		evbuffer_add_buffer(f->got, in);
}

static void
fx_event(struct bufferevent *bev, short what, void *arg)
{
	struct fx *f = arg;

	(void)bev;
	f->events++;
	f->last_what = what;
	if (what & BEV_EVENT_EOF)
		f->eof++;
	if (what & BEV_EVENT_ERROR)
		f->errors++;
}

static void
fx_setup(struct fx *f, const char *stack, int opts)
{
	struct strata_error err;
	struct bufferevent *t;
	int fds[2];

	memset(f, 0, sizeof(*f));
	th_register_test_filters();
	strata_register_filter(&rec_type, NULL);
	f->base = event_base_new();
	f->got = evbuffer_new();
	f->drain = 1;
	th_socketpair(fds);
	f->fd = fds[0];
	f->peer = fds[1];
	t = bufferevent_socket_new(f->base, fds[0], opts);
	ck_assert_ptr_nonnull(t);
	f->opts = opts;
	f->transport = t;
	f->top = strata_push(t, stack, opts, &err);
	ck_assert_msg(f->top != NULL, "push failed: %s", err.message);
	bufferevent_setcb(f->top, fx_read, NULL, fx_event, f);
	bufferevent_enable(f->top, EV_READ | EV_WRITE);
}

static void
fx_teardown(struct fx *f)
{
	if (f->top)
		bufferevent_free(f->top);
	if (!(f->opts & BEV_OPT_CLOSE_ON_FREE) && f->transport) {
		/* without close-on-free the caller keeps the transport */
		bufferevent_free(f->transport);
		close(f->fd);
	}
	if (f->peer >= 0)
		close(f->peer);
	evbuffer_free(f->got);
	event_base_free(f->base);
}

static void
peer_write(struct fx *f, const char *s)
{
	size_t n = strlen(s);

	ck_assert_int_eq(write(f->peer, s, n), (ssize_t)n);
}

static size_t
peer_read_all(struct fx *f, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len && (n = read(f->peer, buf + got, len - got)) > 0)
		got += (size_t)n;
	return got;
}

static int
got_equals(struct fx *f, const char *s)
{
	return th_buf_eq(f->got, s, strlen(s));
}

/* ---- trap 1: plugin errors ---- */

START_TEST(error_input_raised_once)
{
	struct fx f;
	struct strata_error err;

	fx_setup(&f, "rot13 | guard | lines", 0);
	/* rot13 of "ok\n" and "bad!\n" and "more\n" */
	peer_write(&f, "bx\nonq!\nzber\n");
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.errors, 1);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_ptr_nonnull(strata_last_error(f.top));
	ck_assert_str_eq(strata_last_error(f.top),
	    "guard: found a '!' at byte 6");
	ck_assert_int_eq(strata_get_error(f.top, &err), 1);
	ck_assert_int_eq(err.code, STRATA_ERR_FILTER);
	/* more bytes and EOF after the error raise nothing more */
	peer_write(&f, "zber\n");
	shutdown(f.peer, SHUT_WR);
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.events, 1);
	fx_teardown(&f);
}
END_TEST

START_TEST(error_output_raised_once)
{
	struct fx f;

	fx_setup(&f, "rot13 | guard", 0);
	bufferevent_write(f.top, "ok\n", 3);
	bufferevent_write(f.top, "bad!\n", 5);
	/* raised from the loop, not inside bufferevent_write */
	ck_assert_int_eq(f.events, 0);
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.errors, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_WRITING);
	ck_assert_str_eq(strata_last_error(f.top),
	    "guard: found a '!' at byte 3");
	bufferevent_write(f.top, "more\n", 5);
	th_run_for(f.base, 50);
	ck_assert_int_eq(f.events, 1);
	fx_teardown(&f);
}
END_TEST

START_TEST(error_free_in_eventcb)
{
	/* freeing the top from the error callback is safe (ASan/valgrind) */
	struct fx f;

	fx_setup(&f, "guard | rec", 0);
	peer_write(&f, "x!");
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.errors, 1);
	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 10);
	fx_teardown(&f);
}
END_TEST

/* ---- trap 2: BEV_OK without progress ---- */

START_TEST(spin_input_detected)
{
	struct fx f;

	fx_setup(&f, "pass | spin", 0);
	peer_write(&f, "hello");
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.errors, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_ptr_nonnull(strstr(strata_last_error(f.top),
	    "spin: filter returned BEV_OK without progress"));
	fx_teardown(&f);
}
END_TEST

START_TEST(spin_output_detected)
{
	struct fx f;

	fx_setup(&f, "spin | pass", 0);
	bufferevent_write(f.top, "hello", 5);
	th_run_for(f.base, 100);
	ck_assert_int_eq(f.errors, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_WRITING);
	ck_assert_ptr_nonnull(strstr(strata_last_error(f.top),
	    "(output side)"));
	fx_teardown(&f);
}
END_TEST

/* ---- trap 3: parked data re-runs on drain and on re-enable ---- */

static void
fifty_lines(char *buf, size_t len)
{
	size_t off = 0;
	int i;

	buf[0] = 0;
	for (i = 0; i < 50; i++)
		off += (size_t)snprintf(buf + off, len - off, "line %04d\n", i);
}

START_TEST(parked_input_drain)
{
	struct fx f;
	char text[1024];
	int i;

	/* _i: 0 plain callbacks, 1 deferred */
	fx_setup(&f, "rec | lines", _i ? BEV_OPT_DEFER_CALLBACKS : 0);
	f.drain = 0;
	f.one_line = 1;
	/* room for about one line at a time in the top */
	bufferevent_setwatermark(f.top, EV_READ, 0, 12);
	fifty_lines(text, sizeof(text));
	peer_write(&f, text);
	for (i = 0; i < 100 && evbuffer_get_length(f.got) < strlen(text); i++)
		th_run_for(f.base, 10);
	ck_assert_msg(got_equals(&f, text), "got %zu of %zu bytes",
	    evbuffer_get_length(f.got), strlen(text));
	fx_teardown(&f);
}
END_TEST

START_TEST(parked_input_drain_later)
{
	/* the user drains from outside the read callback, much later */
	struct fx f;
	char text[1024];
	int i;

	fx_setup(&f, "rec | lines", 0);
	f.drain = 0;
	bufferevent_setwatermark(f.top, EV_READ, 0, 12);
	fifty_lines(text, sizeof(text));
	peer_write(&f, text);
	for (i = 0; i < 200 && evbuffer_get_length(f.got) < strlen(text);
	     i++) {
		th_run_for(f.base, 5);
		evbuffer_add_buffer(f.got, bufferevent_get_input(f.top));
	}
	ck_assert_msg(got_equals(&f, text), "got %zu of %zu bytes",
	    evbuffer_get_length(f.got), strlen(text));
	fx_teardown(&f);
}
END_TEST

static void
read_then_pause(struct bufferevent *bev, void *arg)
{
	fx_read(bev, arg);
	bufferevent_disable(bev, EV_READ);
}

START_TEST(parked_input_reenable)
{
	struct fx f;
	char text[1024];
	int i;

	fx_setup(&f, "rec | lines", 0);
	bufferevent_setcb(f.top, read_then_pause, NULL, fx_event, &f);
	bufferevent_setwatermark(f.top, EV_READ, 0, 12);
	fifty_lines(text, sizeof(text));
	peer_write(&f, text);
	/* the user takes a line and stops reading; the rest stays parked
	 * below the top */
	th_run_for(f.base, 50);
	ck_assert_uint_gt(evbuffer_get_length(f.got), 0);
	bufferevent_setcb(f.top, fx_read, NULL, fx_event, &f);
	ck_assert_uint_lt(evbuffer_get_length(f.got), strlen(text));
	bufferevent_enable(f.top, EV_READ);
	for (i = 0; i < 400 && evbuffer_get_length(f.got) < strlen(text); i++)
		th_run_for(f.base, 5);
	ck_assert_msg(got_equals(&f, text), "got %zu of %zu bytes",
	    evbuffer_get_length(f.got), strlen(text));
	fx_teardown(&f);
}
END_TEST

/* ---- trap 4: EOF ---- */

START_TEST(eof_finished_bottom_up)
{
	struct fx f;

	log_n = 0;
	fx_setup(&f, "rec(id=1) | rec(id=2) | lines", 0);
	peer_write(&f, "line1\nline2\npartial");
	shutdown(f.peer, SHUT_WR);
	th_run_for(f.base, 100);
	ck_assert_msg(got_equals(&f, "line1\nline2\npartial\n"),
	    "got %zu bytes", evbuffer_get_length(f.got));
	ck_assert_int_eq(f.eof, 1);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_ge(log_index("1in-fin"), 0);
	ck_assert_int_gt(log_index("2in-fin"), log_index("1in-fin"));
	fx_teardown(&f);
}
END_TEST

static void
order_read(struct bufferevent *bev, void *arg)
{
	struct fx *f = arg;

	fx_read(bev, arg);
	if (f->eof)
		f->errors += 100; /* data after EOF */
}

START_TEST(eof_data_before_event)
{
	struct fx f;

	fx_setup(&f, "rec | lines", BEV_OPT_DEFER_CALLBACKS);
	bufferevent_setcb(f.top, order_read, NULL, fx_event, &f);
	/* a read low watermark above the tail must not strand it */
	bufferevent_setwatermark(f.top, EV_READ, 100, 0);
	peer_write(&f, "a\nb\nc");
	shutdown(f.peer, SHUT_WR);
	th_run_for(f.base, 100);
	ck_assert(got_equals(&f, "a\nb\nc\n"));
	ck_assert_int_eq(f.eof, 1);
	ck_assert_int_eq(f.errors, 0);
	fx_teardown(&f);
}
END_TEST

START_TEST(eof_truncation_is_error)
{
	struct fx f;

	fx_setup(&f, "rec | lines(tail=error)", 0);
	peer_write(&f, "whole\npart");
	shutdown(f.peer, SHUT_WR);
	th_run_for(f.base, 100);
	ck_assert(got_equals(&f, "whole\n"));
	ck_assert_int_eq(f.eof, 0);
	ck_assert_int_eq(f.errors, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_ptr_nonnull(strstr(strata_last_error(f.top),
	    "lines: stream ended inside a line"));
	fx_teardown(&f);
}
END_TEST

/* ---- trap 9: bounded buffers below the top ---- */

START_TEST(write_bounded_below_top)
{
	struct fx f;
	struct strata_layer_stats st[8];
	static char chunk[65536];
	size_t i, total = 16u << 20, got = 0;
	int n, k;

	fx_setup(&f, "rec(id=1) | rec(id=2) | rec(id=3)", 0);
	for (i = 0; i < total; i += sizeof(chunk))
		bufferevent_write(f.top, chunk, sizeof(chunk));
	th_run_for(f.base, 100);
	n = strata_stats(f.top, st, 8);
	ck_assert_int_eq(n, 4);
	/* between layers: what one layer wrote down and the next took */
	for (k = 2; k < n; k++)
		ck_assert_uint_le(st[k].write_out - st[k - 1].write_in,
		    512 * 1024);
	ck_assert_uint_le(evbuffer_get_length(bufferevent_get_output(
			      strata_transport(f.top))), 512 * 1024);
	/* most of it still waits in the top's output */
	ck_assert_uint_gt(evbuffer_get_length(bufferevent_get_output(f.top)),
	    total / 2);
	/* once the peer reads, everything arrives */
	while (got < total) {
		char buf[65536];
		ssize_t r = read(f.peer, buf, sizeof(buf));
		if (r > 0)
			got += (size_t)r;
		else
			th_run_for(f.base, 1);
	}
	ck_assert_uint_eq(got, total);
	fx_teardown(&f);
}
END_TEST

/* ---- trap 7: re-enabling writes re-runs pending output ---- */

START_TEST(reenable_write_runs_output)
{
	struct fx f;
	char buf[16];

	fx_setup(&f, "rot13 | rec", 0);
	th_run_for(f.base, 20); /* let the start-up write event pass */
	bufferevent_disable(f.top, EV_WRITE);
	bufferevent_write(f.top, "abc", 3);
	th_run_for(f.base, 50);
	ck_assert_int_eq(read(f.peer, buf, sizeof(buf)), -1);
	ck_assert_int_eq(errno, EAGAIN);
	bufferevent_enable(f.top, EV_WRITE);
	th_run_for(f.base, 50);
	ck_assert_int_eq(read(f.peer, buf, sizeof(buf)), 3);
	ck_assert(!memcmp(buf, "nop", 3));
	fx_teardown(&f);
}
END_TEST

/* ---- ownership ---- */

START_TEST(free_destroys_each_context_once)
{
	struct fx f;
	int fd;

	rec_created = rec_destroyed = 0;
	fx_setup(&f, "rec | rec | rec", BEV_OPT_CLOSE_ON_FREE);
	fd = f.fd;
	ck_assert_int_eq(rec_created, 3);
	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 10);
	ck_assert_int_eq(rec_destroyed, 3);
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1); /* closed */
	fx_teardown(&f);
	ck_assert_int_eq(rec_destroyed, 3);
}
END_TEST

static void
plain_read(struct bufferevent *bev, void *arg)
{
	evbuffer_add_buffer(arg, bufferevent_get_input(bev));
}

START_TEST(free_without_close_hands_back_transport)
{
	struct fx f;
	struct bufferevent *t;
	struct evbuffer *plain = evbuffer_new();
	char buf[16];
	int i;

	fx_setup(&f, "rot13 | rec", 0);
	t = strata_transport(f.top);
	ck_assert_ptr_nonnull(t);
	bufferevent_free(f.top);
	f.top = NULL;
	/* bytes arriving between free and finalization must not reach the
	 * freed engine */
	peer_write(&f, "early");
	th_run_for(f.base, 20);
	ck_assert_int_ge(fcntl(f.fd, F_GETFD), 0); /* still open */
	bufferevent_setcb(t, plain_read, NULL, NULL, plain);
	bufferevent_enable(t, EV_READ | EV_WRITE);
	peer_write(&f, "late");
	for (i = 0; i < 50 && evbuffer_get_length(plain) < 9; i++)
		th_run_for(f.base, 5);
	ck_assert_uint_eq(evbuffer_get_length(plain), 9);
	ck_assert(!memcmp(evbuffer_pullup(plain, -1), "earlylate", 9));
	bufferevent_write(t, "raw", 3);
	th_run_for(f.base, 20);
	ck_assert_int_eq(read(f.peer, buf, sizeof(buf)), 3);
	evbuffer_free(plain);
	fx_teardown(&f);
}
END_TEST

START_TEST(interposition_detail_of_libevent)
{
	/* The engine relies on bufferevent_getcb() on the underlying
	 * returning the filter's callbacks with cbarg == the filter right
	 * after bufferevent_filter_new (libevent #1572): fail loudly if a
	 * libevent release changes that. */
	struct event_base *base = event_base_new();
	struct bufferevent *t, *flt;
	bufferevent_data_cb r = NULL, w = NULL;
	bufferevent_event_cb e = NULL;
	void *arg = NULL;
	int fds[2];

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	flt = bufferevent_filter_new(t, NULL, NULL, BEV_OPT_CLOSE_ON_FREE,
	    NULL, NULL);
	bufferevent_getcb(t, &r, &w, &e, &arg);
	ck_assert(r != NULL);
	ck_assert(w != NULL);
	ck_assert(e != NULL);
	ck_assert_ptr_eq(arg, flt);
	/* and the generic timeout events are the ones the engine hooks */
	ck_assert(event_initialized(&flt->ev_read));
	ck_assert(event_initialized(&flt->ev_write));
	bufferevent_free(flt);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

START_TEST(not_a_stack)
{
	struct event_base *base = event_base_new();
	struct bufferevent *t;
	int fds[2];

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_int_eq(strata_is_stack(t), 0);
	ck_assert_ptr_null(strata_transport(t));
	ck_assert_ptr_null(strata_last_error(t));
	ck_assert_int_eq(strata_stats(t, NULL, 0), -1);
	ck_assert_int_eq(strata_close(t, NULL, NULL, NULL), -1);
	ck_assert_int_eq(strata_set_timeouts(t, NULL, NULL), -1);
	ck_assert_int_eq(strata_priority_set(t, 0), -1);
	bufferevent_free(t);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

/* ---- priorities: the whole stack moves ---- */

struct prio_rec {
	char order[8];
	int n;
};

struct prio_side {
	struct prio_rec *rec;
	char tag;
	int connected;
};

static void
prio_read(struct bufferevent *bev, void *arg)
{
	struct prio_side *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	evbuffer_drain(in, evbuffer_get_length(in));
	if (s->rec->n < 7)
		s->rec->order[s->rec->n++] = s->tag;
}

static void
prio_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		((struct prio_side *)arg)->connected = 1;
}

/*
 * Two stacks, data for @p a's reader ready before @p b's. Without
 * priorities libevent reads them in that order; with @p a at 2 and @p b
 * at 0, b's read callback has to come first.
 */
START_TEST(priority_orders_stacks)
{
	int swap = _i;
	struct event_base *base = event_base_new();
	struct prio_rec rec = {{0}, 0};
	struct prio_side sa = {&rec, 'a', 0}, sb = {&rec, 'b', 0};
	struct bufferevent *a, *b;
	struct strata_error err;
	int fa[2], fb[2];

	ck_assert_int_eq(event_base_priority_init(base, 3), 0);
	strata_register_filter(&rec_type, NULL);
	th_socketpair(fa);
	th_socketpair(fb);
	a = strata_push(bufferevent_socket_new(base, fa[0],
	    BEV_OPT_CLOSE_ON_FREE), "rec", BEV_OPT_CLOSE_ON_FREE, &err);
	b = strata_push(bufferevent_socket_new(base, fb[0],
	    BEV_OPT_CLOSE_ON_FREE), "rec", BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	bufferevent_setcb(a, prio_read, NULL, NULL, &sa);
	bufferevent_setcb(b, prio_read, NULL, NULL, &sb);
	bufferevent_enable(a, EV_READ);
	bufferevent_enable(b, EV_READ);
	th_run_for(base, 20);
	if (swap) {
		ck_assert_int_eq(strata_priority_set(a, 2), 0);
		ck_assert_int_eq(strata_priority_set(b, 0), 0);
		ck_assert_int_eq(event_get_priority(
		    &strata_transport(a)->ev_read), 2);
		ck_assert_int_eq(event_get_priority(
		    &strata_transport(b)->ev_read), 0);
	}
	ck_assert_int_eq(strata_priority_set(a, 3), -1);
	ck_assert_int_eq(strata_priority_set(a, -1), -1);
	ck_assert_int_eq(write(fa[1], "x", 1), 1);
	ck_assert_int_eq(write(fb[1], "y", 1), 1);
	event_base_loop(base, EVLOOP_ONCE);
	th_run_for(base, 20);
	ck_assert_str_eq(rec.order, swap ? "ba" : "ab");
	bufferevent_free(a);
	bufferevent_free(b);
	close(fa[1]);
	close(fb[1]);
	event_base_free(base);
}
END_TEST

/* Connecting re-assigns the socket's events (libevent's setfd, the tuned
 * read path): the priority set before is still there once connected. */
START_TEST(priority_survives_connect)
{
	struct event_base *base = event_base_new();
	struct prio_rec rec = {{0}, 0};
	struct prio_side s = {&rec, 'c', 0};
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct strata_error err;
	struct bufferevent *top;
	char stack[64];
	int lfd;

	ck_assert_int_eq(event_base_priority_init(base, 3), 0);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(lfd, 4), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	snprintf(stack, sizeof(stack), "tcp://localhost:%d",
	    ntohs(sin.sin_port));
	top = strata_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	bufferevent_setcb(top, prio_read, NULL, prio_event, &s);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	ck_assert_int_eq(strata_priority_set(top, 0), 0);
	th_run_until(base, &s.connected, 5000, "connected");
	ck_assert_int_eq(event_get_priority(&strata_transport(top)->ev_read),
	    0);
	ck_assert_int_eq(event_get_priority(&strata_transport(top)->ev_write),
	    0);
	ck_assert_int_eq(event_get_priority(&top->ev_read), 0);
	bufferevent_free(top);
	close(lfd);
	event_base_free(base);
}
END_TEST

/* ---- push onto a live stack (STARTTLS) ---- */

static void
starttls_read(struct bufferevent *bev, void *arg)
{
	struct fx *f = arg;
	struct strata_error err;
	size_t n;
	char *l;

	while ((l = evbuffer_readln(bufferevent_get_input(bev), &n,
		    EVBUFFER_EOL_LF)) != NULL) {
		if (!strcmp(l, "STARTTLS")) {
			bufferevent_write(bev, "GO\n", 3);
			ck_assert_ptr_eq(strata_push(bev, "rot13", 0, &err),
			    bev);
		} else {
			evbuffer_add(f->got, l, n);
			evbuffer_add(f->got, "\n", 1);
		}
		free(l);
	}
}

START_TEST(push_live_midstream)
{
	struct fx f;
	struct strata_layer_stats st[4];
	char buf[64];
	size_t n;

	fx_setup(&f, "lines", 0);
	bufferevent_setcb(f.top, starttls_read, NULL, fx_event, &f);
	/* the command and the first protected bytes in one segment */
	peer_write(&f, "hello\nSTARTTLS\nfrperg\n");
	th_run_for(f.base, 100);
	ck_assert_msg(got_equals(&f, "hello\nsecret\n"), "got '%.*s'",
	    (int)evbuffer_get_length(f.got),
	    (char *)evbuffer_pullup(f.got, -1));
	bufferevent_write(f.top, "abc\n", 4);
	th_run_for(f.base, 50);
	n = peer_read_all(&f, buf, sizeof(buf));
	ck_assert_uint_eq(n, 7);
	ck_assert(!memcmp(buf, "GO\nnop\n", 7));
	ck_assert_int_eq(strata_stats(f.top, st, 4), 3);
	ck_assert_str_eq(st[1].name, "lines");
	ck_assert_str_eq(st[2].name, "rot13");
	fx_teardown(&f);
}
END_TEST

/* ---- strata_close ---- */

START_TEST(close_graceful_delivers_everything)
{
	struct fx f;
	struct th_close_res c = {0, -1};
	static unsigned char chunk[65536], buf[65536];
	size_t total = 4u << 20, got = 0, i;
	int saw_eof = 0;

	rec_created = rec_destroyed = 0;
	fx_setup(&f, "rec | rot13", BEV_OPT_CLOSE_ON_FREE);
	for (i = 0; i < total; i += sizeof(chunk))
		bufferevent_write(f.top, chunk, sizeof(chunk));
	ck_assert_int_eq(strata_close(f.top, NULL, th_on_closed, &c), 0);
	f.top = NULL;
	while (!saw_eof) {
		ssize_t r = read(f.peer, buf, sizeof(buf));
		if (r > 0)
			got += (size_t)r;
		else if (r == 0)
			saw_eof = 1;
		else
			th_run_for(f.base, 1);
	}
	ck_assert_uint_eq(got, total);
	ck_assert_int_eq(c.done, 0); /* waits for the peer's EOF */
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &c.done, 2000, "close callback");
	ck_assert_int_eq(c.delivered, 1);
	th_run_for(f.base, 10);
	ck_assert_int_eq(rec_destroyed, 1);
	fx_teardown(&f);
}
END_TEST

START_TEST(close_linger_expires)
{
	struct fx f;
	struct th_close_res c = {0, -1};
	static unsigned char chunk[65536];
	struct timeval linger = {0, 200000};
	size_t i;

	fx_setup(&f, "rec", BEV_OPT_CLOSE_ON_FREE);
	for (i = 0; i < (8u << 20); i += sizeof(chunk))
		bufferevent_write(f.top, chunk, sizeof(chunk));
	ck_assert_int_eq(strata_close(f.top, &linger, th_on_closed, &c), 0);
	f.top = NULL;
	th_run_until(f.base, &c.done, 2000, "close callback");
	ck_assert_int_eq(c.delivered, 0);
	fx_teardown(&f);
}
END_TEST

/* ---- statistics ---- */

START_TEST(stats_count_each_layer)
{
	struct fx f;
	struct strata_layer_stats st[4];
	char buf[64], text[512];

	fx_setup(&f, "rot13 | lines(eol=crlf)", 0);
	peer_write(&f, "nop\r\nqrs\r\n");
	bufferevent_write(f.top, "xyz\n", 4);
	th_run_for(f.base, 50);
	ck_assert_int_eq(peer_read_all(&f, buf, sizeof(buf)), 5);
	ck_assert_int_eq(strata_stats(f.top, st, 4), 3);
	ck_assert_str_eq(st[0].name, "transport");
	ck_assert_uint_eq(st[0].read_in, 10);
	ck_assert_uint_eq(st[0].write_out, 5);
	ck_assert_str_eq(st[1].name, "rot13");
	ck_assert_uint_eq(st[1].read_in, 10);
	ck_assert_uint_eq(st[1].read_out, 10);
	ck_assert_str_eq(st[2].name, "lines");
	ck_assert_uint_eq(st[2].read_in, 10);
	ck_assert_uint_eq(st[2].read_out, 8);
	ck_assert_uint_eq(st[2].write_in, 4);
	ck_assert_uint_eq(st[2].write_out, 5);
	ck_assert_int_gt(strata_layer_describe(f.top, 2, text, sizeof(text)),
	    0);
	ck_assert_ptr_nonnull(strstr(text, "lines=2"));
	/* snprintf rules: a short buffer gets the same length back */
	ck_assert_int_eq(strata_layer_describe(f.top, 2, buf, 4),
	    (int)strlen(text));
	ck_assert_uint_eq(strlen(buf), 3);
	ck_assert_int_gt(strata_stats_format(f.top, text, sizeof(text)), 0);
	ck_assert_ptr_nonnull(strstr(text, "rot13"));
	fx_teardown(&f);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("engine");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = tcase_create("errors");
	tcase_add_test(tc, error_input_raised_once);
	tcase_add_test(tc, error_output_raised_once);
	tcase_add_test(tc, error_free_in_eventcb);
	tcase_add_test(tc, spin_input_detected);
	tcase_add_test(tc, spin_output_detected);
	suite_add_tcase(s, tc);

	tc = tcase_create("parked");
	tcase_add_loop_test(tc, parked_input_drain, 0, 2);
	tcase_add_test(tc, parked_input_drain_later);
	tcase_add_test(tc, parked_input_reenable);
	tcase_add_test(tc, reenable_write_runs_output);
	tcase_add_test(tc, write_bounded_below_top);
	suite_add_tcase(s, tc);

	tc = tcase_create("eof");
	tcase_add_test(tc, eof_finished_bottom_up);
	tcase_add_test(tc, eof_data_before_event);
	tcase_add_test(tc, eof_truncation_is_error);
	suite_add_tcase(s, tc);

	tc = tcase_create("ownership");
	tcase_add_test(tc, free_destroys_each_context_once);
	tcase_add_test(tc, free_without_close_hands_back_transport);
	tcase_add_test(tc, interposition_detail_of_libevent);
	tcase_add_test(tc, not_a_stack);
	suite_add_tcase(s, tc);

	tc = tcase_create("priority");
	tcase_add_loop_test(tc, priority_orders_stacks, 0, 2);
	tcase_add_test(tc, priority_survives_connect);
	suite_add_tcase(s, tc);

	tc = tcase_create("push");
	tcase_add_test(tc, push_live_midstream);
	suite_add_tcase(s, tc);

	tc = tcase_create("close");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, close_graceful_delivers_everything);
	tcase_add_test(tc, close_linger_expires);
	suite_add_tcase(s, tc);

	tc = tcase_create("stats");
	tcase_add_test(tc, stats_count_each_layer);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
