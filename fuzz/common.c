/*
 * Shared pieces of the fuzz targets (see fuzz.h).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* RAND_METHOD: the one hook that          \
				       makes every OpenSSL draw ours */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/rand.h>

#include "frames.h"
#include "fuzz.h"

#ifndef FUZZ_DATA_DIR
#define FUZZ_DATA_DIR "fuzz/data"
#endif

void
fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: check failed: %s\n  ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void
fz_check_text(const char *what, const char *msg)
{
	const char *c;

	for (c = msg; *c; c++)
		FZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f,
		    "%s: control character 0x%02x in the message '%s'", what,
		    (unsigned char)*c, msg);
}

int
fz_verbose(void)
{
	static int v = -1;

	if (v < 0)
		v = getenv("FUZZ_VERBOSE") != NULL;
	return v;
}

void
fz_log(const char *fmt, ...)
{
	va_list ap;

	if (!fz_verbose())
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- reading the input ---- */

uint8_t
fz_u8(struct fz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

unsigned
fz_u16(struct fz_in *in)
{
	unsigned hi = fz_u8(in);

	return hi << 8 | fz_u8(in);
}

const uint8_t *
fz_bytes(struct fz_in *in, size_t max, size_t *len)
{
	const uint8_t *p = in->p;

	*len = max < in->n ? max : in->n;
	in->p += *len;
	in->n -= *len;
	return p;
}

uint32_t
fz_rng_next(struct fz_rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((z ^ (z >> 31)) >> 16);
}

size_t
fz_chunk(struct fz_rng *r, size_t left, size_t max)
{
	size_t n = max ? 1 + fz_rng_next(r) % max : left;

	return n < left ? n : left;
}

char *
fz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	FZ_CHECK(s != NULL, "out of memory");
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

int
fz_starts_with(struct evbuffer *a, struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);

	if (evbuffer_get_length(a) < n)
		return 0;
	return !n || !memcmp(evbuffer_pullup(a, (ev_ssize_t)n),
			 evbuffer_pullup(b, -1), n);
}

int
fz_is_prefix(struct evbuffer *a, struct evbuffer *b)
{
	return fz_starts_with(b, a);
}

int
fz_equal(struct evbuffer *a, struct evbuffer *b)
{
	return evbuffer_get_length(a) == evbuffer_get_length(b) &&
	       fz_starts_with(a, b);
}

const char *
fz_data_dir(void)
{
	const char *d = getenv("FUZZ_DATA_DIR");

	return d && *d ? d : FUZZ_DATA_DIR;
}

void
fz_tls_filters(int server, char *buf, size_t len)
{
	const char *d = fz_data_dir();

	if (server)
		snprintf(buf, len,
		    "tls(cert=%s/server.pem, key=%s/server.key, "
		    "verify=optional, ca=%s/ca.pem, alpn=h2;http/1.1)",
		    d, d, d);
	else
		snprintf(buf, len,
		    "tls(ca=%s/ca.pem, name=localhost, "
		    "cert=%s/client.pem, key=%s/client.key, resume=no, "
		    "alpn=h2;http/1.1)",
		    d, d, d);
}

/* ---- the "pass" filter: moves bytes unchanged, chunk=N at a time ---- */

struct pass_cfg {
	size_t chunk; /* 0: all there is */
};

static const struct strata_option_doc pass_options[] = {
    {"chunk", "0", "move at most this many bytes per call (0: all)"},
    {NULL, NULL, NULL},
};

static int
pass_config(void **cfgp, const struct strata_option *o, size_t n,
    struct strata_error *err)
{
	struct pass_cfg *c = calloc(1, sizeof(*c));
	uint64_t v;
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strata_opt_uint("pass", &o[i], 0, 1u << 20, 1, &v, err) <
		    0) {
			free(c);
			return -1;
		}
		c->chunk = (size_t)v;
	}
	*cfgp = c;
	return 0;
}

static void *
pass_create(
    const void *cfg, struct strata_layer *layer, struct strata_error *err)
{
	static const struct pass_cfg dflt = {0};

	(void)layer;
	(void)err;
	return (void *)(cfg ? cfg : &dflt);
}

static enum bufferevent_filter_result
pass_fn(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	const struct pass_cfg *c = ctx;
	size_t n = evbuffer_get_length(src);

	(void)mode;
	if (c->chunk && n > c->chunk)
		n = c->chunk;
	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, n);
	return BEV_OK;
}

static const struct strata_filter_type pass_type = {
    .name = "pass",
    .summary = "fuzz: pass-through, chunk=N bytes per call",
    .options = pass_options,
    .config = pass_config,
    .config_free = free,
    .create = pass_create,
    .input = pass_fn,
    .output = pass_fn,
};

static void
quiet_log(int severity, const char *msg)
{
	(void)severity;
	(void)msg;
}

void
fz_init(void)
{
	static int done;
	struct strata_error err;

	if (done)
		return;
	done = 1;
	signal(SIGPIPE, SIG_IGN);
	if (!fz_verbose())
		event_set_log_callback(quiet_log);
	FZ_CHECK(frames_register(&err) == 0, "%s", err.message);
	if (!strata_find_filter("pass"))
		FZ_CHECK(strata_register_filter(&pass_type, &err) == 0, "%s",
		    err.message);
}

/* ---- a deterministic RNG for OpenSSL ---- */

static struct fz_rng rand_state;

static int
fz_rand_bytes(unsigned char *buf, int num)
{
	int i;

	for (i = 0; i < num; i++)
		buf[i] = (unsigned char)fz_rng_next(&rand_state);
	return 1;
}

static int
fz_rand_status(void)
{
	return 1;
}

static const RAND_METHOD fz_rand_method = {
    NULL,
    fz_rand_bytes,
    NULL,
    NULL,
    fz_rand_bytes,
    fz_rand_status,
};

void
fz_rand_reset(void)
{
	static int set;

	if (!set) {
		FZ_CHECK(RAND_set_rand_method(&fz_rand_method) == 1,
		    "RAND_set_rand_method failed");
		set = 1;
	}
	rand_state.s = 0x5374726174614675ull; /* "StrataFu" */
}

/* ---- the loop ---- */

struct event_base *
fz_base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	FZ_CHECK(cfg != NULL, "out of memory");
	/* strata re-runs parked data from 1 us timers: with libevent's
	 * default coarse clock they would wait for its next tick */
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	FZ_CHECK(base != NULL, "event_base_new failed");
	return base;
}

static int
soonest_cb(const struct event_base *base, const struct event *ev, void *arg)
{
	struct timeval tv, *best = arg;

	(void)base;
	if ((event_pending(ev, EV_TIMEOUT, &tv) & EV_TIMEOUT) &&
	    (!evutil_timerisset(best) || evutil_timercmp(&tv, best, <)))
		*best = tv;
	return 0;
}

/*
 * Wait for the earliest timer if it is due within 5 ms (a strata hook, not
 * a handshake timeout); 0 if there is none. Sleeping, not EVLOOP_ONCE: a
 * read callback that leaves input over the high watermark is re-run by
 * libevent for ever (libevent #891), and EVLOOP_ONCE would never return.
 */
static int
wait_timer(struct event_base *base)
{
	struct timeval best = {0, 0}, now, limit = {0, 5000}, d;
	struct timespec ts;

	event_base_foreach_event(base, soonest_cb, &best);
	if (!evutil_timerisset(&best))
		return 0;
	gettimeofday(&now, NULL);
	evutil_timeradd(&now, &limit, &limit);
	if (!evutil_timercmp(&best, &limit, <))
		return 0;
	if (!evutil_timercmp(&best, &now, >))
		return 1;
	evutil_timersub(&best, &now, &d);
	if (d.tv_sec || d.tv_usec > 200) {
		ts.tv_sec = d.tv_sec;
		ts.tv_nsec = (long)d.tv_usec * 1000 + 1000;
		nanosleep(&ts, NULL);
		return 1;
	}
	/* a strata hook, 1 us away: a sleep would take the kernel's timer
	 * slack (50 us), so wait on the clock */
	do
		gettimeofday(&now, NULL);
	while (!evutil_timercmp(&now, &best, >));
	return 1;
}

void
fz_loop_once(struct event_base *base)
{
	/* EVLOOP_NONBLOCK alone returns only once nothing is active, and
	 * libevent re-activates a read callback that leaves the input over
	 * its high watermark (libevent #891): a loopexit ends the round. */
	event_base_loopexit(base, NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
}

void
fz_pump(
    struct event_base *base, int max_rounds, uint64_t (*sig)(void *), void *arg)
{
	uint64_t last = sig ? sig(arg) : 0, now;
	int quiet = 0, i;

	for (i = 0; i < max_rounds; i++) {
		if (quiet >= 3 && !wait_timer(base))
			break;
		fz_loop_once(base);
		now = sig ? sig(arg) : 0;
		if (now != last ||
		    event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE))
			quiet = 0;
		else
			quiet++;
		last = now;
	}
}

/* ---- a stack over a pair ---- */

uint64_t
fz_stack_progress(struct bufferevent *top)
{
	struct strata_layer_stats st[40];
	uint64_t v = 0;
	int n, i;

	if (!top || (n = strata_stats(top, st, 40)) < 0)
		return 0;
	for (i = 0; i < n && i < 40; i++)
		v += st[i].read_in + st[i].read_out * 3 + st[i].write_in * 5 +
		     st[i].write_out * 7;
	return v;
}

static uint64_t
stack_sig(void *arg)
{
	struct fz_stack *s = arg;
	uint64_t v = s->events * 1000003u;

	v += evbuffer_get_length(s->got) + evbuffer_get_length(s->wire) * 7;
	if (s->top)
		v += fz_stack_progress(s->top) * 29 +
		     evbuffer_get_length(bufferevent_get_input(s->top)) * 13 +
		     evbuffer_get_length(bufferevent_get_output(s->top)) * 17;
	if (s->pair[0])
		v += evbuffer_get_length(bufferevent_get_input(s->pair[0])) *
			 19 +
		     evbuffer_get_length(bufferevent_get_output(s->pair[0])) *
			 23;
	return v;
}

void
fz_stack_pump(struct fz_stack *s)
{
	fz_pump(s->base, 200, stack_sig, s);
}

static void
top_read(struct bufferevent *bev, void *arg)
{
	struct fz_stack *s = arg;

	s->events++;
	if (s->on_read)
		s->on_read(s, s->arg);
	if (s->read_all)
		evbuffer_add_buffer(s->got, bufferevent_get_input(bev));
}

static void
top_event(struct bufferevent *bev, short what, void *arg)
{
	struct fz_stack *s = arg;

	s->events++;
	if (what & BEV_EVENT_CONNECTED) {
		s->connected++;
		s->connected_late |= s->error;
	}
	if (what & BEV_EVENT_EOF)
		s->eof = 1;
	if (what & BEV_EVENT_ERROR) {
		const char *m = strata_last_error(bev);
		s->error = 1;
		snprintf(
		    s->errmsg, sizeof(s->errmsg), "%s", m ? m : "(no message)");
		fz_check_text("strata_last_error", s->errmsg);
	}
}

/* The stack's output reaches the peer end: keep the last MiB of it. */
static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct fz_stack *s = arg;

	s->events++;
	evbuffer_add_buffer(s->wire, bufferevent_get_input(bev));
	if (evbuffer_get_length(s->wire) > (1u << 20))
		evbuffer_drain(s->wire, evbuffer_get_length(s->wire) / 2);
}

int
fz_stack_open(struct fz_stack *s, const char *filters, int options)
{
	struct strata_error err;

	fz_init();
	memset(s, 0, sizeof(*s));
	s->read_all = 1;
	s->base = fz_base_new();
	s->got = evbuffer_new();
	s->wire = evbuffer_new();
	FZ_CHECK(s->base && s->got && s->wire, "out of memory");
	FZ_CHECK(
	    bufferevent_pair_new(s->base, BEV_OPT_CLOSE_ON_FREE, s->pair) == 0,
	    "bufferevent_pair_new failed");
	s->top = strata_push(
	    s->pair[1], filters, options | BEV_OPT_CLOSE_ON_FREE, &err);
	if (!s->top) {
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", err.message);
		bufferevent_free(s->pair[1]);
		s->pair[1] = NULL;
		fz_stack_close(s);
		return -1;
	}
	s->pair[1] = NULL; /* the stack owns it */
	bufferevent_setcb(s->top, top_read, NULL, top_event, s);
	bufferevent_enable(s->top, EV_READ | EV_WRITE);
	bufferevent_setcb(s->pair[0], peer_read, NULL, NULL, s);
	bufferevent_enable(s->pair[0], EV_READ | EV_WRITE);
	fz_stack_pump(s);
	return 0;
}

void
fz_stack_feed(struct fz_stack *s, const void *p, size_t len)
{
	if (len)
		bufferevent_write(s->pair[0], p, len);
	fz_stack_pump(s);
}

void
fz_stack_peer_eof(struct fz_stack *s)
{
	/* a pair has no shutdown(): BEV_FINISHED on one end raises EOF on
	 * the other, after moving what is still queued */
	bufferevent_flush(s->pair[0], EV_WRITE, BEV_FINISHED);
	fz_stack_pump(s);
}

void
fz_stack_close(struct fz_stack *s)
{
	if (s->top)
		bufferevent_free(s->top);
	if (s->pair[0])
		bufferevent_free(s->pair[0]);
	if (s->base) {
		/* let libevent run the finalizers of what was freed */
		fz_loop_once(s->base);
		event_base_free(s->base);
	}
	if (s->got)
		evbuffer_free(s->got);
	if (s->wire)
		evbuffer_free(s->wire);
	memset(s, 0, sizeof(*s));
}
