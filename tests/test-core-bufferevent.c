/*
 * libevent's bufferevent API on the top of a strata stack (DESIGN section 1).
 *
 * Every test builds "rot13 | pass" (or rot13 under "holdout", a test filter
 * whose output side holds data until a flush) over an AF_UNIX socketpair:
 * fds[0] is the transport's fd, fds[1] is the peer, read and written with
 * plain read(2)/write(2). The user writes P and the peer reads rot13(P);
 * the peer writes rot13(P) and the user reads P. The tests assert what the
 * peer and the callbacks see, not return values alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "helpers.h"

#define STACK "rot13 | pass"
#define COF BEV_OPT_CLOSE_ON_FREE
#define KB 1024
#define MB (1024 * 1024)

/* ---- time ---- */

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static long
cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
	    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000L;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- a loop bounded by wall-clock time ---- */

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/*
 * Run @p base until pred(arg) holds or @p ms milliseconds of wall-clock time
 * passed, and fail with @p what if it never held. (th_run_until counts loop
 * passes as 10 ms each, which a busy transfer makes far shorter.)
 */
static void
run_while_not(struct event_base *base, int (*pred)(const void *),
    const void *arg, int ms, const char *what)
{
	struct timeval slice = {0, 10000};
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, base);
	long end = now_ms() + ms;

	event_add(tick, &slice);
	while (!pred(arg) && now_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	ck_assert_msg(pred(arg), "timed out after %d ms waiting for %s", ms,
	    what);
}

static int
flag_set(const void *p)
{
	return *(const volatile int *)p != 0;
}

static void
run_until_flag(struct event_base *base, const int *flag, int ms,
    const char *what)
{
	run_while_not(base, flag_set, flag, ms, what);
}

struct count_goal {
	const int *v;
	int n;
};

static int
count_ge(const void *arg)
{
	const struct count_goal *g = arg;

	return *(const volatile int *)g->v >= g->n;
}

/* Run until *v >= n. */
static void
run_until_count(struct event_base *base, const int *v, int n, int ms,
    const char *what)
{
	struct count_goal g = {v, n};

	run_while_not(base, count_ge, &g, ms, what);
}

/* ---- data ---- */

static void
rot13(unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = p[i];
		if (c >= 'a' && c <= 'z')
			p[i] = (unsigned char)('a' + (c - 'a' + 13) % 26);
		else if (c >= 'A' && c <= 'Z')
			p[i] = (unsigned char)('A' + (c - 'A' + 13) % 26);
	}
}

/* The pattern at stream offset @p off, in wire form (rot13) if @p wire. */
static void
pattern(unsigned char *buf, size_t len, size_t off, int wire)
{
	th_pattern(buf, len, off);
	if (wire)
		rot13(buf, len);
}

static unsigned char *
pattern_alloc(size_t len, int wire)
{
	unsigned char *p = malloc(len);

	ck_assert_ptr_nonnull(p);
	pattern(p, len, 0, wire);
	return p;
}

/* 1 + the index of the first byte of @p got that differs from the pattern
 * at stream offset @p off, or 0. */
static size_t
pattern_mismatch(const unsigned char *got, size_t len, size_t off, int wire)
{
	unsigned char want[4096];
	size_t done = 0, i;

	while (done < len) {
		size_t n = len - done < sizeof(want) ? len - done : sizeof(want);
		pattern(want, n, off + done, wire);
		for (i = 0; i < n; i++)
			if (want[i] != got[done + i])
				return done + i + 1;
		done += n;
	}
	return 0;
}

/* ---- the peer: the raw other end of the socketpair ---- */

struct peer {
	int fd;
	struct event *rd, *wr;
	size_t got;		/* bytes read */
	size_t want;		/* goal for peer_wait */
	size_t bad;		/* 1 + stream offset of the first wrong byte */
	int eof;
	int check;		/* compare with the wire pattern, keep nothing */
	struct evbuffer *data;	/* !check: everything read */
	size_t w_off, w_total;	/* wire pattern bytes written / to write */
};

static void
peer_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	unsigned char buf[64 * KB];
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			size_t bad = 0;
			if (p->check)
				bad = pattern_mismatch(buf, (size_t)n, p->got,
				    1);
			else
				evbuffer_add(p->data, buf, (size_t)n);
			if (bad && !p->bad)
				p->bad = p->got + bad;
			p->got += (size_t)n;
			continue;
		}
		if (n == 0) {
			p->eof = 1;
			event_del(p->rd);
		}
		break;
	}
}

static void
peer_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	unsigned char buf[64 * KB];

	while (p->w_off < p->w_total) {
		size_t n = p->w_total - p->w_off;
		ssize_t w;
		if (n > sizeof(buf))
			n = sizeof(buf);
		pattern(buf, n, p->w_off, 1);
		if ((w = write(fd, buf, n)) <= 0) {
			if (w < 0 && errno == EAGAIN)
				return;
			break; /* the stack closed its end */
		}
		p->w_off += (size_t)w;
	}
	event_del(p->wr);
}

static void
peer_init(struct peer *p, struct event_base *base, int fd, int check)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->check = check;
	p->data = evbuffer_new();
	p->rd = event_new(base, fd, EV_READ | EV_PERSIST, peer_read_cb, p);
	p->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, peer_write_cb, p);
	ck_assert_ptr_nonnull(p->data);
	ck_assert_ptr_nonnull(p->rd);
	ck_assert_ptr_nonnull(p->wr);
}

/* Read (and check) everything that arrives, from the loop. */
static void
peer_start_reading(struct peer *p)
{
	event_add(p->rd, NULL);
}

/* Write the wire pattern up to stream offset @p total, from the loop, as
 * fast as the socket takes it. */
static void
peer_write_pattern(struct peer *p, size_t total)
{
	p->w_total = total;
	event_add(p->wr, NULL);
}

static void
peer_free(struct peer *p)
{
	event_free(p->rd);
	event_free(p->wr);
	evbuffer_free(p->data);
}

static int
peer_done(const void *arg)
{
	const struct peer *p = arg;

	return p->got >= p->want || p->eof;
}

/* Run until the peer read @p n bytes (or saw EOF). */
static void
peer_wait(struct event_base *base, struct peer *p, size_t n, int ms,
    const char *what)
{
	p->want = n;
	run_while_not(base, peer_done, p, ms, what);
}

static int
peer_eof(const void *arg)
{
	return ((const struct peer *)arg)->eof;
}

/* Send the rot13 form of @p text from the peer, at once. */
static void
peer_send(int fd, const char *text)
{
	size_t n = strlen(text);
	unsigned char *b = malloc(n + 1);

	ck_assert_ptr_nonnull(b);
	memcpy(b, text, n);
	rot13(b, n);
	ck_assert_int_eq(write(fd, b, n), (ssize_t)n);
	free(b);
}

/* Read what is in the peer's socket now, decoded, NUL-terminated.
 * Returns the count, 0 on EOF, -1 if there is nothing (EAGAIN). */
static ssize_t
peer_recv(int fd, char *out, size_t cap)
{
	ssize_t n = read(fd, out, cap - 1);

	if (n < 0) {
		ck_assert_msg(errno == EAGAIN, "peer read: %s",
		    strerror(errno));
		out[0] = 0;
		return -1;
	}
	rot13((unsigned char *)out, (size_t)n);
	out[n] = 0;
	return n;
}

/* ---- the user's callbacks on the top ---- */

struct user {
	struct bufferevent *top;
	int reads, writes, events;
	short what;		/* last event */
	long t_event;		/* now_ms() at the last event */
	int drain;		/* the read callback takes everything */
	int disable_after;	/* disable EV_READ after this many reads */
	int check;		/* taking checks the plain pattern */
	struct evbuffer *data;	/* !check: what was taken */
	size_t got, want, bad;	/* check: bytes taken, goal, mismatch */
	size_t in_min, in_max;	/* input length seen by the read cb */
	size_t out_first, out_max; /* output length seen by the write cb */
	volatile int in_call;	/* set around bufferevent_write etc. */
	int cb_in_call;		/* a callback ran while in_call was set */
};

static void
user_init(struct user *u, struct bufferevent *top)
{
	memset(u, 0, sizeof(*u));
	u->top = top;
	u->data = evbuffer_new();
	u->in_min = (size_t)-1;
	ck_assert_ptr_nonnull(u->data);
}

static void
user_free(struct user *u)
{
	evbuffer_free(u->data);
}

/* Take everything from the top's input (checking the pattern). */
static void
user_take(struct user *u)
{
	unsigned char buf[16 * KB];
	size_t n;

	if (!u->check) {
		evbuffer_add_buffer(u->data, bufferevent_get_input(u->top));
		return;
	}
	while ((n = bufferevent_read(u->top, buf, sizeof(buf))) > 0) {
		size_t bad = pattern_mismatch(buf, n, u->got, 0);
		if (bad && !u->bad)
			u->bad = u->got + bad;
		u->got += n;
	}
}

static void
user_read(struct bufferevent *bev, void *arg)
{
	struct user *u = arg;
	size_t len = evbuffer_get_length(bufferevent_get_input(bev));

	u->reads++;
	if (u->in_call)
		u->cb_in_call = 1;
	if (len < u->in_min)
		u->in_min = len;
	if (len > u->in_max)
		u->in_max = len;
	if (u->drain)
		user_take(u);
	if (u->disable_after && u->reads == u->disable_after)
		bufferevent_disable(bev, EV_READ);
}

static void
user_write(struct bufferevent *bev, void *arg)
{
	struct user *u = arg;
	size_t len = evbuffer_get_length(bufferevent_get_output(bev));

	if (!u->writes)
		u->out_first = len;
	if (len > u->out_max)
		u->out_max = len;
	u->writes++;
	if (u->in_call)
		u->cb_in_call = 1;
}

static void
user_event(struct bufferevent *bev, short what, void *arg)
{
	struct user *u = arg;

	u->events++;
	u->what = what;
	u->t_event = now_ms();
	if (u->in_call)
		u->cb_in_call = 1;
}

static int
user_done(const void *arg)
{
	const struct user *u = arg;

	return u->got >= u->want;
}

/* Run until the user took @p n checked bytes. */
static void
user_wait(struct event_base *base, struct user *u, size_t n, int ms,
    const char *what)
{
	u->want = n;
	run_while_not(base, user_done, u, ms, what);
}

/* Move what the user took into a C string. */
static const char *
user_str(struct user *u, char *out, size_t cap)
{
	size_t n = evbuffer_get_length(u->data);

	if (n > cap - 1)
		n = cap - 1;
	evbuffer_remove(u->data, out, n);
	out[n] = 0;
	return out;
}

/* ---- the test filter "holdout" ---- */

/* Its output side keeps everything until BEV_FLUSH or BEV_FINISHED, as a
 * compressor does; its input side passes data through. */
struct holdout {
	struct evbuffer *held;
	int flushes, finishes;
};

static struct holdout *last_holdout;

static void *
holdout_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	struct holdout *h = calloc(1, sizeof(*h));

	if (!h || !(h->held = evbuffer_new())) {
		free(h);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	last_holdout = h;
	return h;
}

static void
holdout_destroy(void *ctx)
{
	struct holdout *h = ctx;

	if (last_holdout == h)
		last_holdout = NULL;
	evbuffer_free(h->held);
	free(h);
}

static enum bufferevent_filter_result
holdout_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct holdout *h = ctx;
	int moved = 0;

	if (evbuffer_get_length(src)) {
		evbuffer_add_buffer(h->held, src);
		moved = 1;
	}
	if (mode == BEV_FLUSH)
		h->flushes++;
	if (mode == BEV_FINISHED)
		h->finishes++;
	if (mode != BEV_NORMAL && evbuffer_get_length(h->held)) {
		evbuffer_add_buffer(dst, h->held);
		moved = 1;
	}
	return moved ? BEV_OK : BEV_NEED_MORE;
}

static const struct strata_filter_type holdout_type = {
	.name = "holdout",
	.summary = "test: holds output back until a flush",
	.create = holdout_create,
	.destroy = holdout_destroy,
	.input = th_pass_fn,
	.output = holdout_output,
};

static void
register_filters(void)
{
	th_register_test_filters();
	if (!strata_find_filter("holdout"))
		ck_assert_int_eq(strata_register_filter(&holdout_type, NULL), 0);
}

/* ---- the stack under test ---- */

struct fx {
	struct event_base *base;
	int fds[2];		/* [0]: the transport's fd, [1]: the peer */
	struct bufferevent *t, *top;
};

static void
watchdog(int sig)
{
	static const char m[] = "test-core-bufferevent: watchdog: a test "
				"hung for 8 s (deadlock?)\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(3);
	_exit(3);
}

/*
 * STRATA_TEST_DIRECT=1 (a second run of this program): every stack is made
 * by strata_connect() over "pipe:FD,FD", a direct stack whose top is its
 * own transport, instead of strata_push() onto a socket bufferevent.
 */
static int
fx_direct(void)
{
	return getenv("STRATA_TEST_DIRECT") != NULL;
}

/* What the transport's output holds below the top: a pushed stack's
 * transport is a bufferevent of its own; a direct stack's wire buffer is
 * the engine's (its bound shows in what stays in the top's output). */
static size_t
fx_below_out(struct fx *f)
{
	return fx_direct() ? 0 : evbuffer_get_length(
	    bufferevent_get_output(strata_transport(f->top)));
}

/*
 * Build @p filters over a socket bufferevent on fds[0] made with @p t_opts;
 * the top gets @p opts. Arms a watchdog so that a deadlock ends the program
 * (Check's timeout does not apply with CK_FORK=no).
 */
static void
fx_open_with(struct fx *f, const char *filters, int t_opts, int opts)
{
	struct strata_error err;

	signal(SIGALRM, watchdog);
	alarm(8);
	register_filters();
	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
	th_socketpair(f->fds);
	memset(&err, 0, sizeof(err));
	if (fx_direct()) {
		/* the same stack made by strata_connect over the duplex fd:
		 * a direct stack, whose top is its transport */
		char stack[256];
		snprintf(stack, sizeof(stack), "pipe:%d,%d | %s", f->fds[0],
		    f->fds[0], filters);
		f->top = strata_connect(f->base, NULL, stack, opts, &err);
		ck_assert_msg(f->top != NULL, "strata_connect: %s",
		    err.message);
		f->t = f->top;
		ck_assert(strata_is_stack(f->top));
		ck_assert_ptr_eq(strata_transport(f->top), f->top);
		ck_assert_ptr_null(bufferevent_get_underlying(f->top));
		/* its BEV_EVENT_CONNECTED comes from the loop: let it go by
		 * before the test sets callbacks, as a pushed stack has none */
		th_run_for(f->base, 5);
		return;
	}
	f->t = bufferevent_socket_new(f->base, f->fds[0], t_opts);
	ck_assert_ptr_nonnull(f->t);
	f->top = strata_push(f->t, filters, opts, &err);
	ck_assert_msg(f->top != NULL, "strata_push: %s", err.message);
	ck_assert(strata_is_stack(f->top));
	ck_assert_ptr_eq(strata_transport(f->top), f->t);
}

/* "rot13 | pass", close-on-free on both, plus @p opts. */
static void
fx_open(struct fx *f, int opts)
{
	fx_open_with(f, STACK, opts | COF, opts | COF);
}

/* Free the stack (if still there), let finalizers run, close the peer. */
static void
fx_close(struct fx *f)
{
	if (f->top)
		bufferevent_free(f->top);
	f->top = NULL;
	th_run_for(f->base, 5);
	event_base_free(f->base);
	if (f->fds[1] >= 0)
		close(f->fds[1]);
	alarm(0);
}

/* The usual wiring: user callbacks, reading and writing enabled. */
static void
fx_wire(struct fx *f, struct user *u)
{
	user_init(u, f->top);
	bufferevent_setcb(f->top, user_read, user_write, user_event, u);
	ck_assert_int_eq(bufferevent_enable(f->top, EV_READ | EV_WRITE), 0);
}

struct input_goal {
	struct bufferevent *bev;
	size_t n;
};

static int
input_ge(const void *arg)
{
	const struct input_goal *g = arg;

	return evbuffer_get_length(bufferevent_get_input(g->bev)) >= g->n;
}

/* Run until the top's input holds @p n bytes. */
static void
wait_input(struct event_base *base, struct bufferevent *top, size_t n,
    int ms, const char *what)
{
	struct input_goal g = {top, n};

	run_while_not(base, input_ge, &g, ms, what);
}

static int
fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

/* ================================================================ */
/* read and write callbacks */

START_TEST(callbacks_read_write)
{
	struct fx f;
	struct user u;
	char buf[64];
	int i;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.drain = 1;

	peer_send(f.fds[1], "hello");
	run_until_flag(f.base, &u.reads, 2000, "the read callback");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "hello");
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 0);

	u.writes = 0;
	ck_assert_int_eq(bufferevent_write(f.top, "world", 5), 0);
	run_until_flag(f.base, &u.writes, 2000, "the write callback");
	ck_assert_uint_eq(u.out_first, 0); /* low watermark 0: all moved */
	th_run_for(f.base, 20);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 5);
	ck_assert_str_eq(buf, "world");

	/* More rounds: one read callback per message, in order. */
	for (i = 0; i < 5; i++) {
		char msg[16];
		snprintf(msg, sizeof(msg), "msg%d;", i);
		peer_send(f.fds[1], msg);
		run_until_count(f.base, &u.reads, i + 2, 2000, "a message");
	}
	th_run_for(f.base, 30);
	ck_assert_int_eq(u.reads, 6);
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)),
	    "msg0;msg1;msg2;msg3;msg4;");
	ck_assert_int_eq(u.events, 0);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* read low watermark */

START_TEST(read_low_watermark)
{
	struct fx f;
	struct user u;
	char buf[64];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.drain = 1;
	bufferevent_setwatermark(f.top, EV_READ, 10, 0);

	peer_send(f.fds[1], "abcd");
	th_run_for(f.base, 150);
	ck_assert_int_eq(u.reads, 0);
	/* The bytes came up the stack; only the callback waits. */
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 4);

	peer_send(f.fds[1], "efghi");
	th_run_for(f.base, 100);
	ck_assert_int_eq(u.reads, 0); /* 9 < 10 */

	peer_send(f.fds[1], "jk");
	run_until_flag(f.base, &u.reads, 2000, "the read callback at 10 bytes");
	ck_assert_int_eq(u.reads, 1);
	ck_assert_uint_ge(u.in_min, 10);
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "abcdefghijk");
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* read high watermark: back-pressure into the kernel */

#define RD_HIGH 4096

START_TEST(read_high_watermark)
{
	struct fx f;
	struct user u;
	struct peer p;
	unsigned char chunk[64 * KB];
	size_t written = 0, tin, total;
	long end, cpu0, wall0, cpu_used;
	int stuck = 0, reads0;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.check = 1; /* not draining: u.drain stays 0 */
	bufferevent_setwatermark(f.top, EV_READ, 0, RD_HIGH);
	peer_init(&p, f.base, f.fds[1], 1);

	/* The peer writes until its socket is full and stays full. */
	end = now_ms() + 4000;
	while (stuck < 5 && now_ms() < end) {
		ssize_t n;
		pattern(chunk, sizeof(chunk), written, 1);
		n = write(f.fds[1], chunk, sizeof(chunk));
		if (n > 0) {
			written += (size_t)n;
			stuck = 0;
			continue;
		}
		ck_assert_msg(errno == EAGAIN, "peer write: %s",
		    strerror(errno));
		stuck++;
		th_run_for(f.base, 20);
		ck_assert_msg(written < 16 * MB,
		    "the peer wrote %zu bytes without back-pressure", written);
	}
	ck_assert_msg(stuck >= 5, "the peer never saw EAGAIN for long "
	    "(wrote %zu bytes)", written);

	/* Memory stays bounded. */
	ck_assert_uint_gt(evbuffer_get_length(bufferevent_get_input(f.top)), 0);
	ck_assert_uint_lt(evbuffer_get_length(bufferevent_get_input(f.top)),
	    RD_HIGH);
	ck_assert_uint_le(u.in_max, RD_HIGH);
	tin = evbuffer_get_length(bufferevent_get_input(strata_transport(f.top)));
	ck_assert_msg(tin <= 512 * KB, "transport input holds %zu bytes", tin);
	ck_assert_msg(written <= 4 * MB, "%zu bytes left the peer", written);

	/* No busy loop while the user does not drain. */
	reads0 = u.reads;
	cpu0 = cpu_ms();
	wall0 = now_ms();
	th_run_for(f.base, 300);
	cpu_used = cpu_ms() - cpu0;
	ck_assert_msg(u.reads - reads0 <= 1,
	    "%d read callbacks while nothing changed", u.reads - reads0);
	ck_assert_msg(cpu_used < (now_ms() - wall0) / 2,
	    "busy loop: %ld ms of CPU in %ld ms", cpu_used, now_ms() - wall0);
	pattern(chunk, 1, written, 1);
	ck_assert_int_eq(write(f.fds[1], chunk, 1), -1);
	ck_assert_int_eq(errno, EAGAIN);

	/* The user drains: reading resumes and everything arrives, in
	 * order, with more from the peer on top. */
	total = written + 256 * KB;
	p.w_off = written;
	peer_write_pattern(&p, total);
	u.drain = 1;
	user_take(&u);
	user_wait(f.base, &u, total, 5000, "all bytes after the drain");
	ck_assert_msg(!u.bad, "wrong byte at offset %zu", u.bad - 1);
	ck_assert_uint_eq(u.got, total);
	ck_assert_uint_le(u.in_max, RD_HIGH);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* write low watermark */

#define WR_LOW (256 * KB)
#define WR_TOTAL (4 * MB)

START_TEST(write_low_watermark)
{
	struct fx f;
	struct user u;
	struct peer p;
	unsigned char *data = pattern_alloc(WR_TOTAL, 0);

	fx_open(&f, 0);
	fx_wire(&f, &u);
	bufferevent_setwatermark(f.top, EV_WRITE, WR_LOW, 0);
	peer_init(&p, f.base, f.fds[1], 1);

	ck_assert_int_eq(bufferevent_write(f.top, data, WR_TOTAL), 0);
	ck_assert_int_eq(u.writes, 0); /* far above the low watermark */
	th_run_for(f.base, 50);
	ck_assert_int_eq(u.writes, 0); /* the peer is not reading */

	peer_start_reading(&p);
	run_until_flag(f.base, &u.writes, 3000, "the write callback");
	ck_assert_msg(u.out_first <= WR_LOW, "write callback with %zu bytes "
	    "pending, above the low watermark", u.out_first);
	/* It ran when the output dropped below the mark, not only once the
	 * output was empty (each pass moves at most the bounded room of the
	 * layers below). A direct stack's pass that takes the last 338 KiB
	 * at once is right to call it at 0. */
	ck_assert_msg(u.out_first > 0 || fx_direct(),
	    "write callback only at empty output");
	peer_wait(f.base, &p, WR_TOTAL, 5000, "all bytes at the peer");
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_uint_eq(p.got, WR_TOTAL);
	ck_assert_uint_le(u.out_max, WR_LOW);
	free(data);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/*
 * At the default low watermark of 0 the write callback means what a socket
 * bufferevent's means: everything written was handed to the fd. evhttp
 * shuts a "Connection: close" socket down and frees it from that callback;
 * any byte still inside the stack then would be lost.
 */
struct closer {
	struct fx *f;
	int calls;
	size_t pending;		/* transport output at the callback */
};

static void
closer_write(struct bufferevent *bev, void *arg)
{
	struct closer *c = arg;

	c->calls++;
	c->pending = evbuffer_get_length(bufferevent_get_output(bev)) +
	    evbuffer_get_length(bufferevent_get_output(strata_transport(bev)));
	/* what evhttp_connection_free does */
	shutdown(c->f->fds[0], SHUT_WR);
	bufferevent_free(bev);
	c->f->top = NULL;
}

#define CLOSE_TOTAL (2 * MB)

START_TEST(write_callback_means_handed_to_fd)
{
	struct fx f;
	struct peer p;
	struct closer c = {.f = &f};
	unsigned char *data = pattern_alloc(CLOSE_TOTAL, 0);

	fx_open(&f, 0);
	bufferevent_setcb(f.top, NULL, closer_write, NULL, &c);
	ck_assert_int_eq(bufferevent_enable(f.top, EV_WRITE), 0);
	peer_init(&p, f.base, f.fds[1], 1);

	ck_assert_int_eq(bufferevent_write(f.top, data, CLOSE_TOTAL), 0);
	th_run_for(f.base, 50);
	ck_assert_msg(!c.calls, "write callback while the peer reads nothing "
	    "(the socket cannot have taken %d bytes)", CLOSE_TOTAL);

	peer_start_reading(&p);
	peer_wait(f.base, &p, CLOSE_TOTAL + 1, 5000, "all bytes and EOF");
	ck_assert_int_eq(c.calls, 1);
	ck_assert_uint_eq(c.pending, 0);
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_uint_eq(p.got, CLOSE_TOTAL);
	ck_assert(p.eof);
	free(data);
	peer_free(&p);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* write high watermarks below the top */

#define BIG (10 * MB)

START_TEST(write_high_watermark_below)
{
	struct fx f;
	struct user u;
	struct peer p;
	unsigned char *data = pattern_alloc(BIG, 0);
	size_t tout, out;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	peer_init(&p, f.base, f.fds[1], 1);

	ck_assert_int_eq(bufferevent_write(f.top, data, BIG), 0);
	free(data);
	th_run_for(f.base, 200);
	tout = fx_below_out(&f);
	out = evbuffer_get_length(bufferevent_get_output(f.top));
	ck_assert_msg(tout <= 512 * KB, "transport output holds %zu", tout);
	ck_assert_msg(out >= BIG - 3 * MB, "only %zu bytes wait in the top's "
	    "output (transport output %zu)", out, tout);

	/* A little later nothing has grown. */
	th_run_for(f.base, 100);
	ck_assert_uint_le(fx_below_out(&f), 512 * KB);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(f.top)),
	    out);

	peer_start_reading(&p);
	peer_wait(f.base, &p, BIG, 8000, "10 MB at the peer");
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_uint_eq(p.got, BIG);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(f.top)), 0);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* BEV_OPT_CLOSE_ON_FREE */

START_TEST(close_on_free_closes)
{
	struct fx f;
	struct user u;
	char buf[16];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	ck_assert_int_eq(bufferevent_write(f.top, "bye", 3), 0);
	th_run_for(f.base, 20);
	ck_assert(fd_is_open(f.fds[0]));
	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 20);
	ck_assert_msg(!fd_is_open(f.fds[0]), "fd %d still open", f.fds[0]);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "bye");
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 0); /* EOF */
	user_free(&u);
	fx_close(&f);
}
END_TEST

static void
raw_read(struct bufferevent *bev, void *arg)
{
	evbuffer_add_buffer(arg, bufferevent_get_input(bev));
}

START_TEST(close_on_free_transport_survives)
{
	struct fx f;
	struct user u;
	struct evbuffer *raw = evbuffer_new();
	char buf[16];
	size_t n;

	/* The transport closes its fd on free; the top does not take it. */
	fx_open_with(&f, STACK, COF, 0);
	user_init(&u, f.top);
	bufferevent_setcb(f.top, user_read, user_write, user_event, &u);
	ck_assert_int_eq(bufferevent_enable(f.top, EV_WRITE), 0);
	ck_assert_int_eq(bufferevent_write(f.top, "via top", 7), 0);
	th_run_for(f.base, 20);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 7);
	ck_assert_str_eq(buf, "via top");

	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 20);
	ck_assert_msg(fd_is_open(f.fds[0]), "fd closed without close-on-free");
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1); /* no EOF */
	if (fx_direct()) { /* the top was the transport: nothing left */
		close(f.fds[0]);
		evbuffer_free(raw);
		user_free(&u);
		fx_close(&f);
		return;
	}

	/* The caller still has a working transport, without strata. */
	bufferevent_setcb(f.t, raw_read, NULL, NULL, raw);
	ck_assert_int_eq(bufferevent_enable(f.t, EV_READ | EV_WRITE), 0);
	ck_assert_int_eq(bufferevent_write(f.t, "plain", 5), 0);
	th_run_for(f.base, 20);
	ck_assert_int_eq(read(f.fds[1], buf, sizeof(buf)), 5);
	ck_assert(!memcmp(buf, "plain", 5)); /* no rot13 any more */
	ck_assert_int_eq(write(f.fds[1], "raw", 3), 3);
	th_run_for(f.base, 50);
	n = evbuffer_get_length(raw);
	ck_assert_msg(n == 3, "the transport read %zu bytes, not 3", n);
	evbuffer_remove(raw, buf, n);
	ck_assert(!memcmp(buf, "raw", 3));
	ck_assert_int_eq(u.reads, 0);

	bufferevent_free(f.t);
	th_run_for(f.base, 20);
	ck_assert(!fd_is_open(f.fds[0]));
	evbuffer_free(raw);
	user_free(&u);
	fx_close(&f);
}
END_TEST

START_TEST(close_on_free_not_without)
{
	struct fx f;
	struct user u;

	/* The top frees the transport, which does not own its fd (a direct
	 * stack's one bufferevent has one set of options). */
	fx_open_with(&f, STACK, 0, fx_direct() ? 0 : COF);
	fx_wire(&f, &u);
	ck_assert_int_eq(bufferevent_write(f.top, "x", 1), 0);
	th_run_for(f.base, 20);
	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 20);
	ck_assert_msg(fd_is_open(f.fds[0]), "fd closed without close-on-free");
	close(f.fds[0]);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* BEV_OPT_DEFER_CALLBACKS */

START_TEST(defer_callbacks)
{
	struct fx f;
	struct user u;
	char buf[32];

	fx_open(&f, BEV_OPT_DEFER_CALLBACKS);
	fx_wire(&f, &u);
	u.drain = 1;

	u.in_call = 1;
	ck_assert_int_eq(bufferevent_write(f.top, "abc", 3), 0);
	u.in_call = 0;
	ck_assert_int_eq(u.writes, 0);
	run_until_flag(f.base, &u.writes, 2000, "the deferred write callback");
	ck_assert(!u.cb_in_call);
	th_run_for(f.base, 20);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "abc");

	peer_send(f.fds[1], "xyz");
	run_until_flag(f.base, &u.reads, 2000, "the deferred read callback");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "xyz");

	/* Data parked below the top (read high watermark) reaches the user
	 * from the loop too, not inside the call that made room. */
	bufferevent_setwatermark(f.top, EV_READ, 0, 8);
	u.drain = 0;
	u.reads = 0;
	peer_send(f.fds[1], "0123456789abcdefghij");
	run_until_flag(f.base, &u.reads, 2000, "read callback");
	th_run_for(f.base, 20);
	u.reads = 0;
	u.in_call = 1;
	user_take(&u);
	u.in_call = 0;
	ck_assert_int_eq(u.reads, 0);
	ck_assert(!u.cb_in_call);
	run_until_flag(f.base, &u.reads, 2000, "read callback after drain");

	shutdown(f.fds[1], SHUT_WR);
	u.drain = 1;
	run_until_flag(f.base, &u.events, 2000, "EOF");
	ck_assert_int_eq(u.what, BEV_EVENT_EOF | BEV_EVENT_READING);
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)),
	    "0123456789abcdefghij");
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* BEV_OPT_THREADSAFE */

#define RECORDS 20000
#define RECORD_LEN 24

static void
record(char *out, unsigned i)
{
	/* 24 bytes: letters so rot13 changes them, a number, a newline */
	snprintf(out, RECORD_LEN + 1, "rec %08u abcdefghij\n", i);
}

struct writer {
	struct bufferevent *top;
	volatile int started;
	volatile int done;
	int failures;
};

static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	char rec[RECORD_LEN + 1];
	unsigned i;

	w->started = 1;
	for (i = 0; i < RECORDS; i++) {
		record(rec, i);
		if (bufferevent_write(w->top, rec, RECORD_LEN) != 0)
			w->failures++;
		if (i % 500 == 499)
			sleep_ms(1);
	}
	w->done = 1;
	return NULL;
}

START_TEST(threadsafe_writer_thread)
{
	struct fx f;
	struct user u;
	struct peer p;
	struct writer w = {0};
	pthread_t th;
	char *all, want[RECORD_LEN + 1];
	size_t n;
	unsigned i;

	fx_open(&f, BEV_OPT_THREADSAFE);
	fx_wire(&f, &u);
	peer_init(&p, f.base, f.fds[1], 0);
	peer_start_reading(&p);
	w.top = f.top;
	ck_assert_int_eq(pthread_create(&th, NULL, writer_main, &w), 0);
	peer_wait(f.base, &p, (size_t)RECORDS * RECORD_LEN, 8000,
	    "every record at the peer");
	pthread_join(th, NULL);
	ck_assert(w.done);
	ck_assert_int_eq(w.failures, 0);
	th_run_for(f.base, 20);
	n = evbuffer_get_length(p.data);
	ck_assert_uint_eq(n, (size_t)RECORDS * RECORD_LEN);
	all = (char *)evbuffer_pullup(p.data, -1);
	rot13((unsigned char *)all, n);
	for (i = 0; i < RECORDS; i++) {
		record(want, i);
		ck_assert_msg(!memcmp(all + (size_t)i * RECORD_LEN, want,
				  RECORD_LEN),
		    "record %u lost or out of order: '%.23s'", i,
		    all + (size_t)i * RECORD_LEN);
	}
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* BEV_OPT_UNLOCK_CALLBACKS */

/* A helper thread that tries to take the top's lock when asked. */
struct prober {
	struct bufferevent *top;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int asked, got_lock, quit;
};

static void *
prober_main(void *arg)
{
	struct prober *pr = arg;

	pthread_mutex_lock(&pr->mu);
	while (!pr->asked && !pr->quit)
		pthread_cond_wait(&pr->cv, &pr->mu);
	pthread_mutex_unlock(&pr->mu);
	if (pr->quit)
		return NULL;
	bufferevent_lock(pr->top);
	pthread_mutex_lock(&pr->mu);
	pr->got_lock = 1;
	pthread_cond_broadcast(&pr->cv);
	pthread_mutex_unlock(&pr->mu);
	bufferevent_unlock(pr->top);
	return NULL;
}

struct probe_user {
	struct prober *pr;
	int reads;
	int lock_free;	  /* the prober took the lock during the callback */
	int wait_ms;
};

static void
probe_read(struct bufferevent *bev, void *arg)
{
	struct probe_user *pu = arg;
	struct prober *pr = pu->pr;
	struct timespec until;

	pu->reads++;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
	if (pu->reads > 1)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += (long)pu->wait_ms * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&pr->mu);
	pr->asked = 1;
	pthread_cond_broadcast(&pr->cv);
	while (!pr->got_lock &&
	    pthread_cond_timedwait(&pr->cv, &pr->mu, &until) == 0)
		;
	pu->lock_free = pr->got_lock;
	pthread_mutex_unlock(&pr->mu);
}

/* Run a read callback that asks another thread to take the top's lock
 * and waits up to @p wait_ms for it; return whether it got the lock. */
static int
lock_free_in_callback(int opts, int wait_ms)
{
	struct fx f;
	struct prober pr;
	struct probe_user pu = {0};
	pthread_t th;

	fx_open(&f, opts);
	memset(&pr, 0, sizeof(pr));
	pthread_mutex_init(&pr.mu, NULL);
	pthread_cond_init(&pr.cv, NULL);
	pr.top = f.top;
	pu.pr = &pr;
	pu.wait_ms = wait_ms;
	ck_assert_int_eq(pthread_create(&th, NULL, prober_main, &pr), 0);
	bufferevent_setcb(f.top, probe_read, NULL, NULL, &pu);
	bufferevent_enable(f.top, EV_READ | EV_WRITE);
	peer_send(f.fds[1], "ping");
	run_until_flag(f.base, &pu.reads, 3000, "the read callback");
	pthread_mutex_lock(&pr.mu);
	pr.quit = 1;
	pthread_cond_broadcast(&pr.cv);
	pthread_mutex_unlock(&pr.mu);
	pthread_join(th, NULL);
	ck_assert(pr.got_lock); /* eventually, after the callback */
	pthread_mutex_destroy(&pr.mu);
	pthread_cond_destroy(&pr.cv);
	fx_close(&f);
	return pu.lock_free;
}

START_TEST(unlock_callbacks_lock_free)
{
	ck_assert_msg(lock_free_in_callback(BEV_OPT_THREADSAFE |
			  BEV_OPT_DEFER_CALLBACKS | BEV_OPT_UNLOCK_CALLBACKS,
			  2000),
	    "the read callback ran with the top's lock held");
}
END_TEST

/* Control for the probe: without UNLOCK_CALLBACKS the lock is held. */
START_TEST(unlock_callbacks_control_locked)
{
	ck_assert_msg(!lock_free_in_callback(BEV_OPT_THREADSAFE |
			   BEV_OPT_DEFER_CALLBACKS, 150),
	    "the read callback ran without the lock (THREADSAFE, no "
	    "UNLOCK_CALLBACKS)");
}
END_TEST

/* ================================================================ */
/* setcb / getcb */

START_TEST(setcb_getcb)
{
	struct fx f;
	struct user u1, u2;
	bufferevent_data_cb r = NULL, w = NULL;
	bufferevent_event_cb e = NULL;
	void *arg = NULL;
	char buf[16];

	fx_open(&f, 0);
	fx_wire(&f, &u1);
	user_init(&u2, f.top);
	u1.drain = u2.drain = 1;

	bufferevent_getcb(f.top, &r, &w, &e, &arg);
	ck_assert(r == user_read);
	ck_assert(w == user_write);
	ck_assert(e == user_event);
	ck_assert_ptr_eq(arg, &u1);
	arg = NULL;
	bufferevent_getcb(f.top, NULL, NULL, NULL, &arg); /* NULLs allowed */
	ck_assert_ptr_eq(arg, &u1);

	peer_send(f.fds[1], "one");
	run_until_flag(f.base, &u1.reads, 2000, "first read callback");

	/* New callbacks and argument; no write callback. */
	bufferevent_setcb(f.top, user_read, NULL, user_event, &u2);
	bufferevent_getcb(f.top, &r, &w, &e, &arg);
	ck_assert(r == user_read);
	ck_assert(w == NULL);
	ck_assert(e == user_event);
	ck_assert_ptr_eq(arg, &u2);

	peer_send(f.fds[1], "two");
	run_until_flag(f.base, &u2.reads, 2000, "read callback with new arg");
	ck_assert_int_eq(u1.reads, 1);
	ck_assert_str_eq(user_str(&u1, buf, sizeof(buf)), "one");
	ck_assert_str_eq(user_str(&u2, buf, sizeof(buf)), "two");

	u1.writes = 0;
	ck_assert_int_eq(bufferevent_write(f.top, "out", 3), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(u1.writes, 0);
	ck_assert_int_eq(u2.writes, 0);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);

	/* No read callback: data waits in the input. */
	bufferevent_setcb(f.top, NULL, NULL, user_event, &u2);
	peer_send(f.fds[1], "three");
	th_run_for(f.base, 50);
	ck_assert_int_eq(u2.reads, 1);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 5);

	shutdown(f.fds[1], SHUT_WR);
	run_until_flag(f.base, &u2.events, 2000, "EOF on the new event cb");
	ck_assert_int_eq(u2.what, BEV_EVENT_EOF | BEV_EVENT_READING);
	ck_assert_int_eq(u1.events, 0);
	user_free(&u1);
	user_free(&u2);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* enable / disable / get_enabled */

START_TEST(enable_disable)
{
	struct fx f;
	struct user u;
	char buf[32];

	fx_open(&f, 0);
	user_init(&u, f.top);
	u.drain = 1;
	bufferevent_setcb(f.top, user_read, user_write, user_event, &u);
	ck_assert_int_eq(bufferevent_enable(f.top, EV_READ | EV_WRITE), 0);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_READ | EV_WRITE);
	ck_assert_int_eq(bufferevent_disable(f.top, EV_READ), 0);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_WRITE);

	/* Disabled reading delivers nothing. */
	peer_send(f.fds[1], "while disabled");
	th_run_for(f.base, 150);
	ck_assert_int_eq(u.reads, 0);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 0);

	/* Re-enabling delivers it, without new bytes from the peer. */
	ck_assert_int_eq(bufferevent_enable(f.top, EV_READ), 0);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_READ | EV_WRITE);
	run_until_flag(f.base, &u.reads, 2000, "the read after re-enabling");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "while disabled");

	/* Disabled writing sends nothing; re-enabling sends it. */
	ck_assert_int_eq(bufferevent_disable(f.top, EV_WRITE), 0);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_READ);
	ck_assert_int_eq(bufferevent_write(f.top, "held", 4), 0);
	th_run_for(f.base, 150);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(f.top)), 4);
	ck_assert_int_eq(bufferevent_enable(f.top, EV_WRITE), 0);
	th_run_for(f.base, 100);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "held");

	ck_assert_int_eq(bufferevent_disable(f.top, EV_READ | EV_WRITE), 0);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), 0);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* Data already inside the stack (above the transport, below the top) when
 * reading is disabled stays there, and comes up on re-enable. */
START_TEST(enable_disable_parked)
{
	struct fx f;
	struct user u;
	struct peer p;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.check = 1;
	u.drain = 1;
	u.disable_after = 1;
	bufferevent_setwatermark(f.top, EV_READ, 0, 100);
	peer_init(&p, f.base, f.fds[1], 1);
	peer_write_pattern(&p, 1000);
	run_until_flag(f.base, &u.reads, 2000, "the first read");
	th_run_for(f.base, 150);
	ck_assert_int_eq(p.w_off, 1000); /* the peer sent everything */
	ck_assert_int_eq(u.reads, 1);
	ck_assert_uint_lt(u.got, 1000);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_WRITE);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 0);

	ck_assert_int_eq(bufferevent_enable(f.top, EV_READ), 0);
	user_wait(f.base, &u, 1000, 2000, "the rest after re-enabling");
	ck_assert_msg(!u.bad, "wrong byte at offset %zu", u.bad - 1);
	ck_assert_uint_eq(u.got, 1000);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* getfd */

START_TEST(getfd_transport_fd)
{
	struct fx f;

	fx_open(&f, 0);
	ck_assert_int_eq(bufferevent_getfd(f.top), f.fds[0]);
	ck_assert_int_eq(bufferevent_getfd(strata_transport(f.top)), f.fds[0]);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* bufferevent_lock / bufferevent_unlock */

struct locker {
	struct bufferevent *bev;
	volatile int holding, done;
	int hold_ms;
	int write;	/* write instead of holding the lock */
};

static void *
locker_main(void *arg)
{
	struct locker *l = arg;

	if (l->write) {
		bufferevent_write(l->bev, "late", 4);
		l->done = 1;
		return NULL;
	}
	bufferevent_lock(l->bev);
	l->holding = 1;
	sleep_ms(l->hold_ms);
	l->holding = 0;
	bufferevent_unlock(l->bev);
	l->done = 1;
	return NULL;
}

struct lock_user {
	struct locker *l;
	int reads, saw_holding;
};

static void
lock_read(struct bufferevent *bev, void *arg)
{
	struct lock_user *lu = arg;

	lu->reads++;
	if (lu->l->holding)
		lu->saw_holding = 1;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

START_TEST(lock_excludes_threads)
{
	struct fx f;
	struct locker l = {0}, wl = {0};
	struct lock_user lu = {0};
	pthread_t th;
	char buf[16];

	fx_open(&f, BEV_OPT_THREADSAFE);
	lu.l = &l;
	bufferevent_setcb(f.top, lock_read, NULL, NULL, &lu);
	bufferevent_enable(f.top, EV_READ | EV_WRITE);

	/* Another thread holds the lock: no callback runs meanwhile. */
	l.bev = f.top;
	l.hold_ms = 200;
	peer_send(f.fds[1], "data");
	ck_assert_int_eq(pthread_create(&th, NULL, locker_main, &l), 0);
	while (!l.holding && !l.done)
		sleep_ms(1);
	run_until_flag(f.base, &lu.reads, 3000, "read after the unlock");
	pthread_join(th, NULL);
	ck_assert(!lu.saw_holding);

	/* We hold it (recursively): another thread's write waits. */
	bufferevent_lock(f.top);
	bufferevent_lock(f.top);
	wl.bev = f.top;
	wl.write = 1;
	ck_assert_int_eq(pthread_create(&th, NULL, locker_main, &wl), 0);
	sleep_ms(100);
	ck_assert_msg(!wl.done, "bufferevent_write ran while the lock was "
	    "held by another thread");
	bufferevent_unlock(f.top);
	sleep_ms(50);
	ck_assert(!wl.done); /* still held once */
	bufferevent_unlock(f.top);
	pthread_join(th, NULL);
	ck_assert(wl.done);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "late");
	fx_close(&f);
}
END_TEST

START_TEST(lock_without_threadsafe)
{
	struct fx f;
	char buf[16];

	/* Without BEV_OPT_THREADSAFE lock/unlock are harmless no-ops. */
	fx_open(&f, 0);
	bufferevent_enable(f.top, EV_WRITE);
	bufferevent_lock(f.top);
	ck_assert_int_eq(bufferevent_write(f.top, "ok", 2), 0);
	bufferevent_unlock(f.top);
	th_run_for(f.base, 20);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 2);
	ck_assert_str_eq(buf, "ok");
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* get_input / get_output */

START_TEST(input_output_buffers)
{
	struct fx f;
	struct user u;
	struct evbuffer *in, *out;
	char buf[32];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	in = bufferevent_get_input(f.top);
	out = bufferevent_get_output(f.top);
	ck_assert_ptr_nonnull(in);
	ck_assert_ptr_nonnull(out);
	ck_assert_ptr_ne(in, out);
	if (!fx_direct()) {
		ck_assert_ptr_ne(in,
		    bufferevent_get_input(strata_transport(f.top)));
		ck_assert_ptr_ne(out,
		    bufferevent_get_output(strata_transport(f.top)));
	}

	/* Adding to the output buffer directly sends. */
	ck_assert_int_eq(evbuffer_add(out, "direct", 6), 0);
	ck_assert_int_eq(evbuffer_add_printf(out, "-%d", 42), 3);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 9);
	ck_assert_str_eq(buf, "direct-42");
	ck_assert_uint_eq(evbuffer_get_length(out), 0);

	/* The input buffer holds the decoded bytes. */
	peer_send(f.fds[1], "Decoded Input");
	run_until_flag(f.base, &u.reads, 2000, "the read callback");
	ck_assert_uint_eq(evbuffer_get_length(in), 13);
	ck_assert_int_eq(evbuffer_remove(in, buf, sizeof(buf)), 13);
	buf[13] = 0;
	ck_assert_str_eq(buf, "Decoded Input");
	ck_assert_ptr_eq(bufferevent_get_input(f.top), in); /* stable */
	ck_assert_ptr_eq(bufferevent_get_output(f.top), out);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* write / read: bytes and evbuffers */

START_TEST(write_read_bytes)
{
	struct fx f;
	struct user u;
	char buf[64];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	ck_assert_int_eq(bufferevent_write(f.top, "Hello, World", 12), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(read(f.fds[1], buf, sizeof(buf)), 12);
	ck_assert(!memcmp(buf, "Uryyb, Jbeyq", 12)); /* through rot13 */

	peer_send(f.fds[1], "Hello");
	run_until_flag(f.base, &u.reads, 2000, "the read callback");
	ck_assert_uint_eq(bufferevent_read(f.top, buf, 3), 3);
	ck_assert(!memcmp(buf, "Hel", 3));
	ck_assert_uint_eq(bufferevent_read(f.top, buf, sizeof(buf)), 2);
	ck_assert(!memcmp(buf, "lo", 2));
	ck_assert_uint_eq(bufferevent_read(f.top, buf, sizeof(buf)), 0);
	user_free(&u);
	fx_close(&f);
}
END_TEST

#define BUF_N (64 * KB)

START_TEST(write_read_evbuffers)
{
	struct fx f;
	struct user u;
	struct peer p;
	struct evbuffer *b = evbuffer_new();
	unsigned char *data = pattern_alloc(BUF_N, 0);
	size_t bad;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	peer_init(&p, f.base, f.fds[1], 1);
	peer_start_reading(&p);

	evbuffer_add(b, data, BUF_N);
	ck_assert_int_eq(bufferevent_write_buffer(f.top, b), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), 0); /* moved, not copied */
	peer_wait(f.base, &p, BUF_N, 3000, "the evbuffer at the peer");
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_uint_eq(p.got, BUF_N);
	event_del(p.rd);

	p.w_off = 0;
	peer_write_pattern(&p, BUF_N);
	wait_input(f.base, f.top, BUF_N, 3000, "the bytes in the input");
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)),
	    BUF_N);
	ck_assert_int_eq(bufferevent_read_buffer(f.top, b), 0);
	ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(f.top)), 0);
	ck_assert_uint_eq(evbuffer_get_length(b), BUF_N);
	bad = pattern_mismatch(evbuffer_pullup(b, -1), BUF_N, 0, 0);
	ck_assert_msg(!bad, "wrong byte at offset %zu", bad - 1);
	free(data);
	evbuffer_free(b);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* timeouts: strata_set_timeouts */

#define TMO_MS 200

START_TEST(timeout_read_silent_peer)
{
	struct fx f;
	struct user u;
	struct timeval rd = {0, TMO_MS * 1000};
	char buf[16];
	long t0, el;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.drain = 1;
	t0 = now_ms();
	ck_assert_int_eq(strata_set_timeouts(f.top, &rd, NULL), 0);
	run_until_flag(f.base, &u.events, 2000, "the read timeout");
	el = u.t_event - t0;
	ck_assert_int_eq(u.what, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	ck_assert_msg(el >= TMO_MS - 10 && el <= TMO_MS + 250,
	    "read timeout after %ld ms, set to %d", el, TMO_MS);
	ck_assert_int_eq(bufferevent_get_enabled(f.top) & EV_READ, 0);

	/* Reading stays off (no repeated timeouts) until enabled. */
	th_run_for(f.base, 2 * TMO_MS);
	ck_assert_int_eq(u.events, 1);
	peer_send(f.fds[1], "later");
	th_run_for(f.base, 50);
	ck_assert_int_eq(u.reads, 0);

	/* bufferevent_enable resumes reading; the timeout is armed again. */
	ck_assert_int_eq(bufferevent_enable(f.top, EV_READ), 0);
	run_until_flag(f.base, &u.reads, 2000, "the read after enable");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "later");
	ck_assert_int_eq(u.events, 1);
	t0 = now_ms();
	run_until_count(f.base, &u.events, 2, 2000, "a second read timeout");
	el = u.t_event - t0;
	ck_assert_int_eq(u.what, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	ck_assert_msg(el >= TMO_MS - 10 && el <= TMO_MS + 250,
	    "second timeout after %ld ms", el);
	user_free(&u);
	fx_close(&f);
}
END_TEST

static void
drip_cb(evutil_socket_t fd, short what, void *arg)
{
	peer_send(*(int *)arg, "d");
}

START_TEST(timeout_read_active_peer)
{
	struct fx f;
	struct user u;
	struct timeval rd = {0, TMO_MS * 1000}, every = {0, 50000};
	struct event *drip;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.drain = 1;
	ck_assert_int_eq(strata_set_timeouts(f.top, &rd, NULL), 0);
	drip = event_new(f.base, -1, EV_PERSIST, drip_cb, &f.fds[1]);
	event_add(drip, &every);
	th_run_for(f.base, 3 * TMO_MS);
	event_free(drip);
	ck_assert_msg(u.events == 0, "timeout (0x%x) while bytes arrived "
	    "every 50 ms", u.what);
	ck_assert_int_ge(u.reads, 5);
	user_free(&u);
	fx_close(&f);
}
END_TEST

START_TEST(timeout_idle_writer)
{
	struct fx f;
	struct user u;
	struct timeval wr = {0, 100000};
	char buf[16];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	ck_assert_int_eq(strata_set_timeouts(f.top, NULL, &wr), 0);
	th_run_for(f.base, 350); /* nothing to write */
	ck_assert_msg(u.events == 0, "event 0x%x with nothing to write",
	    u.what);
	ck_assert_int_eq(bufferevent_write(f.top, "tiny", 4), 0);
	th_run_for(f.base, 350); /* written at once, then idle */
	ck_assert_msg(u.events == 0, "event 0x%x after the output drained",
	    u.what);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 4);
	ck_assert_int_eq(bufferevent_get_enabled(f.top), EV_READ | EV_WRITE);
	user_free(&u);
	fx_close(&f);
}
END_TEST

#define STUCK (2 * MB)

START_TEST(timeout_write_stuck)
{
	struct fx f;
	struct user u;
	struct peer p;
	struct timeval wr = {0, TMO_MS * 1000};
	unsigned char *data = pattern_alloc(STUCK, 0);
	long t0, el;

	fx_open(&f, 0);
	fx_wire(&f, &u);
	peer_init(&p, f.base, f.fds[1], 1);
	ck_assert_int_eq(strata_set_timeouts(f.top, NULL, &wr), 0);
	t0 = now_ms();
	ck_assert_int_eq(bufferevent_write(f.top, data, STUCK), 0);
	free(data);
	run_until_flag(f.base, &u.events, 2000, "the write timeout");
	el = u.t_event - t0;
	ck_assert_int_eq(u.what, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
	ck_assert_msg(el >= TMO_MS - 10 && el <= TMO_MS + 300,
	    "write timeout after %ld ms, set to %d", el, TMO_MS);
	ck_assert_int_eq(bufferevent_get_enabled(f.top) & EV_WRITE, 0);

	ck_assert_int_eq(bufferevent_enable(f.top, EV_WRITE), 0);
	peer_start_reading(&p);
	peer_wait(f.base, &p, STUCK, 5000, "everything after the timeout");
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_uint_eq(p.got, STUCK);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* bufferevent_flush */

START_TEST(flush_normal)
{
	struct fx f;
	struct user u;
	char buf[16];

	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.drain = 1;
	ck_assert_int_eq(bufferevent_write(f.top, "abc", 3), 0);
	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_NORMAL), 0);
	ck_assert_int_ge(bufferevent_flush(f.top, EV_READ, BEV_NORMAL), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "abc");
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1); /* no EOF */
	ck_assert_int_eq(u.events, 0);

	/* The stream goes on both ways. */
	ck_assert_int_eq(bufferevent_write(f.top, "def", 3), 0);
	peer_send(f.fds[1], "in");
	run_until_flag(f.base, &u.reads, 2000, "the read callback");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "in");
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "def");
	user_free(&u);
	fx_close(&f);
}
END_TEST

START_TEST(flush_normal_keeps_held_data)
{
	struct fx f;
	struct user u;
	char buf[16];

	fx_open_with(&f, "rot13 | holdout", COF, COF);
	fx_wire(&f, &u);
	ck_assert_ptr_nonnull(last_holdout);
	ck_assert_int_eq(bufferevent_write(f.top, "abc", 3), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1);
	/* BEV_NORMAL: the layer may keep holding. */
	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_NORMAL), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1);
	ck_assert_int_eq(last_holdout->flushes, 0);
	ck_assert_int_eq(last_holdout->finishes, 0);
	user_free(&u);
	fx_close(&f);
}
END_TEST

START_TEST(flush_flush)
{
	struct fx f;
	struct user u;
	char buf[16];

	fx_open_with(&f, "rot13 | holdout", COF, COF);
	fx_wire(&f, &u);
	u.drain = 1;
	ck_assert_int_eq(bufferevent_write(f.top, "abc", 3), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1); /* held */

	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_FLUSH), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "abc");
	ck_assert_int_ge(last_holdout->flushes, 1);
	ck_assert_int_eq(last_holdout->finishes, 0);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), -1); /* no EOF */

	/* Not the end: more data, another flush. */
	ck_assert_int_eq(bufferevent_write(f.top, "def", 3), 0);
	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_FLUSH), 0);
	th_run_for(f.base, 30);
	ck_assert_int_eq(peer_recv(f.fds[1], buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "def");
	peer_send(f.fds[1], "back");
	run_until_flag(f.base, &u.reads, 2000, "the read callback");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "back");
	ck_assert_int_eq(u.events, 0);
	user_free(&u);
	fx_close(&f);
}
END_TEST

#define FIN_N (1 * MB)

START_TEST(flush_finished)
{
	struct fx f;
	struct user u;
	struct peer p;
	unsigned char *data = pattern_alloc(FIN_N, 0);
	char buf[32];

	fx_open_with(&f, "rot13 | holdout", COF, COF);
	fx_wire(&f, &u);
	u.drain = 1;
	peer_init(&p, f.base, f.fds[1], 1);
	ck_assert_int_eq(bufferevent_write(f.top, data, FIN_N), 0);
	free(data);
	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_FINISHED), 0);
	ck_assert_int_ge(last_holdout->finishes, 1);
	th_run_for(f.base, 50); /* the peer is not reading yet */

	peer_start_reading(&p);
	run_while_not(f.base, peer_eof, &p, 5000, "EOF at the peer");
	ck_assert_msg(p.got == FIN_N, "EOF after %zu of %d bytes", p.got,
	    FIN_N);
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);

	/* The other direction keeps working. */
	peer_send(f.fds[1], "still open");
	run_until_flag(f.base, &u.reads, 2000, "the read after FINISHED");
	ck_assert_str_eq(user_str(&u, buf, sizeof(buf)), "still open");
	ck_assert_int_eq(u.events, 0);
	shutdown(f.fds[1], SHUT_WR);
	run_until_flag(f.base, &u.events, 2000, "EOF at the user");
	ck_assert_int_eq(u.what, BEV_EVENT_EOF | BEV_EVENT_READING);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* FINISHED while output is backed up in the top (not in a plugin). */
START_TEST(flush_finished_backed_up)
{
	struct fx f;
	struct user u;
	struct peer p;
	unsigned char *data = pattern_alloc(FIN_N * 2, 0);

	fx_open(&f, 0);
	fx_wire(&f, &u);
	peer_init(&p, f.base, f.fds[1], 1);
	ck_assert_int_eq(bufferevent_write(f.top, data, FIN_N * 2), 0);
	free(data);
	th_run_for(f.base, 30);
	ck_assert_uint_gt(evbuffer_get_length(bufferevent_get_output(f.top)),
	    0);
	ck_assert_int_ge(bufferevent_flush(f.top, EV_WRITE, BEV_FINISHED), 0);
	peer_start_reading(&p);
	run_while_not(f.base, peer_eof, &p, 5000, "EOF at the peer");
	ck_assert_msg(p.got == FIN_N * 2, "EOF after %zu of %d bytes", p.got,
	    FIN_N * 2);
	ck_assert_msg(!p.bad, "wrong byte at offset %zu", p.bad - 1);
	ck_assert_int_eq(u.events, 0);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
}
END_TEST

/* ================================================================ */
/* token-bucket rate limits: strata_set_rate_limit */

#define TICK_MS 100
#define RD_PER_TICK 10000	/* 100 kB/s */
#define WR_PER_TICK 5000	/* 50 kB/s */
#define RATE_MS 2000

START_TEST(rate_limit_read_write)
{
	struct fx f;
	struct user u;
	struct peer p;
	struct timeval tick = {0, TICK_MS * 1000};
	struct ev_token_bucket_cfg *cfg;
	unsigned char *data = pattern_alloc(2 * MB, 0);
	double rd, wr, rd_want, wr_want;
	long t0, el;

	cfg = ev_token_bucket_cfg_new(RD_PER_TICK, RD_PER_TICK, WR_PER_TICK,
	    WR_PER_TICK, &tick);
	ck_assert_ptr_nonnull(cfg);
	fx_open(&f, 0);
	fx_wire(&f, &u);
	u.check = 1;
	u.drain = 1;
	peer_init(&p, f.base, f.fds[1], 1);
	ck_assert_int_eq(strata_set_rate_limit(f.top, cfg), 0);

	t0 = now_ms();
	ck_assert_int_eq(bufferevent_write(f.top, data, 2 * MB), 0);
	free(data);
	peer_start_reading(&p);
	peer_write_pattern(&p, 64 * MB);
	th_run_for(f.base, RATE_MS);
	el = now_ms() - t0;
	rd = (double)u.got * 1000.0 / (double)el;
	wr = (double)p.got * 1000.0 / (double)el;
	rd_want = RD_PER_TICK * 1000.0 / TICK_MS;
	wr_want = WR_PER_TICK * 1000.0 / TICK_MS;
	ck_assert_msg(!u.bad && !p.bad, "corrupted data under rate limits");
	ck_assert_msg(rd >= rd_want * 0.8 && rd <= rd_want * 1.2,
	    "read rate %.0f B/s, limit %.0f B/s", rd, rd_want);
	ck_assert_msg(wr >= wr_want * 0.8 && wr <= wr_want * 1.2,
	    "write rate %.0f B/s, limit %.0f B/s", wr, wr_want);
	bufferevent_free(f.top);
	f.top = NULL;
	th_run_for(f.base, 5);
	peer_free(&p);
	user_free(&u);
	fx_close(&f);
	ev_token_bucket_cfg_free(cfg); /* after the stack: libevent's rule */
}
END_TEST

/* ================================================================ */

static void
add(Suite *s, const char *name, const TTest *const *tests, size_t n)
{
	TCase *tc = tcase_create(name);
	size_t i;

	tcase_set_timeout(tc, 30);
	for (i = 0; i < n; i++)
		tcase_add_test(tc, tests[i]);
	suite_add_tcase(s, tc);
}

#define ADD(s, name, ...)                                                  \
	do {                                                               \
		const TTest *const t_[] = {__VA_ARGS__};                   \
		add(s, name, t_, sizeof(t_) / sizeof(t_[0]));              \
	} while (0)

int
main(void)
{
	Suite *s = suite_create("bufferevent");
	SRunner *sr;
	int failed;

	/* Before any event base exists: BEV_OPT_THREADSAFE needs it. */
	if (evthread_use_pthreads() != 0) {
		fprintf(stderr, "evthread_use_pthreads failed\n");
		return 1;
	}
	ADD(s, "callbacks", callbacks_read_write);
	ADD(s, "read_low_watermark", read_low_watermark);
	ADD(s, "read_high_watermark", read_high_watermark);
	ADD(s, "write_low_watermark", write_low_watermark);
	ADD(s, "write_callback_means_handed_to_fd",
	    write_callback_means_handed_to_fd);
	ADD(s, "write_high_watermark", write_high_watermark_below);
	ADD(s, "close_on_free", close_on_free_closes,
	    close_on_free_transport_survives, close_on_free_not_without);
	ADD(s, "defer_callbacks", defer_callbacks);
	ADD(s, "threadsafe", threadsafe_writer_thread);
	ADD(s, "unlock_callbacks", unlock_callbacks_lock_free,
	    unlock_callbacks_control_locked);
	ADD(s, "setcb_getcb", setcb_getcb);
	ADD(s, "enable_disable", enable_disable, enable_disable_parked);
	ADD(s, "getfd", getfd_transport_fd);
	ADD(s, "lock", lock_excludes_threads, lock_without_threadsafe);
	ADD(s, "buffers", input_output_buffers);
	ADD(s, "write_read", write_read_bytes, write_read_evbuffers);
	ADD(s, "timeouts", timeout_read_silent_peer, timeout_read_active_peer,
	    timeout_idle_writer, timeout_write_stuck);
	ADD(s, "flush", flush_normal, flush_normal_keeps_held_data,
	    flush_flush, flush_finished, flush_finished_backed_up);
	ADD(s, "rate_limit", rate_limit_read_write);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
