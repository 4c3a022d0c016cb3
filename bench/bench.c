/*
 * strata-bench: the numbers DESIGN section 8 asks for, in one run, as
 * ratios to the same work done by plain libevent.
 *
 *  1. Bulk stream over an AF_UNIX socketpair, one event loop, writer at one
 *     end and reader at the other: plain socket bufferevents against strata
 *     stacks ("pass", five "pass" layers, "lines") at both ends.
 *  2. The lines filter's input side alone, in memory, against an
 *     evbuffer_readln(EVBUFFER_EOL_LF) loop and a bare memchr scan.
 *  3. Heap per idle stack (mallinfo2 over many stacks).
 *
 * Every timed figure is the median of several runs; the variants of one
 * section run interleaved so that drift (other load, frequency) hits all of
 * them alike. bench/README.md says what each column measures.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
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

#include "internal.h"

#define MIB (1024u * 1024u)
#define STREAM_CHUNK (64 * 1024) /* what the writer adds at a time */
#define STREAM_FILL (256 * 1024) /* ... while its output is below this */
#define STREAM_LOW (128 * 1024)	 /* write low watermark on the top */
#define STREAM_TIMEOUT_S 120
#define RAW_WR_LOW (64 * 1024)	 /* the engine's transport watermarks, */
#define RAW_WR_HIGH (256 * 1024) /* for the libevent filter rows */
#define MAX_RUNS 31

struct opts {
	int malloc_default; /* keep glibc's trim/mmap heuristics */
	size_t stream_mib;  /* bytes per stream run, rounded to whole texts */
	size_t text_mib;    /* size of the generated text */
	int runs;
	int idle_stacks;
	int verbose;
};

/* Wall-clock and process CPU time of one timed run, in seconds. */
struct timing {
	double wall, cpu;
};

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timing
timing_now(void)
{
	struct timing t = {
	    clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_PROCESS_CPUTIME_ID)};

	return t;
}

static struct timing
timing_since(struct timing t0)
{
	struct timing t = timing_now();

	t.wall -= t0.wall;
	t.cpu -= t0.cpu;
	return t;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median of the wall (or, with @p cpu, CPU) times of @p n runs. */
static double
median(const struct timing *v, int n, int cpu)
{
	double s[MAX_RUNS];
	int i;

	for (i = 0; i < n; i++)
		s[i] = cpu ? v[i].cpu : v[i].wall;
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "strata-bench: %s%s%s\n", what, detail ? ": " : "",
	    detail ? detail : "");
	exit(1);
}

/* ---- the text: real-looking lines of 10..200 bytes ---- */

struct text {
	char *buf;
	size_t len;
	size_t lines;
};

static uint64_t
rnd(uint64_t *s)
{
	/* xorshift64*: deterministic, so every run sends the same text */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* clang-format off */
static const char *const words[] = {
	"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as",
	"was", "with", "be", "by", "on", "not", "he", "this", "are", "or",
	"his", "from", "at", "which", "but", "have", "an", "had", "they",
	"you", "were", "their", "one", "all", "we", "can", "her", "has",
	"there", "been", "if", "more", "when", "will", "would", "who", "so",
	"connection", "request", "GET", "POST", "/api/v1/users", "200", "404",
	"user_id=4711", "latency=12ms", "INFO", "WARN", "ERROR", "2024-05-17",
	"12:03:44.512", "server", "client", "session", "timeout", "bytes",
	"received", "sent", "retry", "cache", "miss", "hit", "upstream",
	"\"Mozilla/5.0\"", "-", "[worker:3]", "queue", "depth=17", "ok",
};
/* clang-format on */

/* Line length in bytes, "\n" included: half uniform over 10..200, half
 * skewed short, like a mix of log lines and chat/protocol lines. */
static size_t
line_len(uint64_t *s)
{
	uint64_t a = rnd(s) % 191, b = rnd(s) % 191;

	return 10 + (size_t)(rnd(s) & 1 ? a : a * b / 190);
}

static void
text_make(struct text *t, size_t want)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	size_t off = 0;

	t->buf = malloc(want + 256);
	if (!t->buf)
		die("out of memory", NULL);
	t->lines = 0;
	while (off < want) {
		size_t n = line_len(&s), w = 0;
		while (w + 1 < n) {
			const char *word =
			    words[rnd(&s) % STRATA_ARRAY_LEN(words)];
			size_t k = strlen(word);
			if (w)
				t->buf[off + w++] = ' ';
			if (k > n - 1 - w)
				k = n - 1 - w;
			memcpy(t->buf + off + w, word, k);
			w += k;
		}
		t->buf[off + n - 1] = '\n';
		off += n;
		t->lines++;
	}
	t->len = off;
}

/* ---- a pass-through filter, registered by the bench ---- */

static enum bufferevent_filter_result
pass_filter(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
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

static const struct strata_filter_type pass_type = {
    .name = "pass",
    .summary = "bench: pass-through, moves chains",
    .input = pass_filter,
    .output = pass_filter,
};

/* ---- 1. bulk stream over a socketpair ---- */

struct flow {
	struct event_base *base;
	const struct text *text;
	size_t total; /* bytes to move in this run */
	size_t sent, got, text_off;
	size_t cut; /* read callbacks that ended inside a line */
	int done, failed;
};

/* Keep the output topped up: 64 KiB chunks while it is below the mark. May
 * be re-entered (a filter top runs its write callback from evbuffer_add). */
static void
stream_write(struct bufferevent *bev, void *arg)
{
	struct flow *f = arg;
	struct evbuffer *out = bufferevent_get_output(bev);

	while (f->sent < f->total && evbuffer_get_length(out) < STREAM_FILL) {
		size_t off = f->text_off, n = STREAM_CHUNK;
		if (n > f->total - f->sent)
			n = f->total - f->sent;
		if (n > f->text->len - off)
			n = f->text->len - off;
		/* account first: evbuffer_add may call us again */
		f->sent += n;
		f->text_off = (off + n) % f->text->len;
		evbuffer_add(out, f->text->buf + off, n);
	}
}

static int
last_byte(struct evbuffer *in, size_t len)
{
	struct evbuffer_ptr p;
	struct evbuffer_iovec v;

	if (evbuffer_ptr_set(in, &p, len - 1, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_peek(in, 1, &p, &v, 1) < 1)
		return -1;
	return *(const unsigned char *)v.iov_base;
}

/* Drain everything; note whether the callback saw whole lines only. */
static void
stream_read(struct bufferevent *bev, void *arg)
{
	struct flow *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (!n)
		return;
	if (last_byte(in, n) != '\n')
		f->cut++;
	evbuffer_drain(in, n);
	f->got += n;
	if (f->got >= f->total) {
		f->done = 1;
		event_base_loopbreak(f->base);
	}
}

static void
stream_event(struct bufferevent *bev, short what, void *arg)
{
	struct flow *f = arg;

	fprintf(stderr, "strata-bench: stream: event 0x%x: %s\n", what,
	    strata_last_error(bev) ? strata_last_error(bev) : "-");
	f->failed = 1;
	event_base_loopbreak(f->base);
}

static void
stream_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct flow *f = arg;

	(void)fd;
	(void)what;
	fprintf(stderr,
	    "strata-bench: stream: timed out after %d s with "
	    "%zu of %zu bytes\n",
	    STREAM_TIMEOUT_S, f->got, f->total);
	f->failed = 1;
	event_base_loopbreak(f->base);
}

/* One stream variant: what sits on each end of the socketpair. */
struct variant {
	const char *label;
	const char *filters; /* strata stack, or NULL */
	int raw;	     /* else: libevent filter bufferevents nested */
	unsigned flags;	     /* V_* */
	double target;	     /* ratio to the group's baseline, 0: none */
};

#define V_BASE 0x1  /* the baseline of the rows that follow it */
#define V_LINES 0x2 /* text lines: check the lines layer's count */
#define V_TUNED 0x4 /* strata_socket_tune() on the socket bufferevents */
/* tuned rows move this many times the bytes: runs of similar length */
#define TUNED_SCALE 4

static struct bufferevent *
stream_end(struct event_base *base, int fd, const struct variant *v)
{
	struct strata_error err;
	struct bufferevent *bev;
	int i;

	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		die("bufferevent_socket_new failed", NULL);
	if ((v->flags & V_TUNED) && strata_socket_tune(bev, -1) < 0)
		die("strata_socket_tune failed", NULL);
	if (v->filters &&
	    !(bev = strata_push(bev, v->filters, BEV_OPT_CLOSE_ON_FREE, &err)))
		die("strata_push", err.message);
	for (i = 0; i < v->raw; i++) {
		/* bound what each filter pushes down, as strata does for its
		 * transport (only the underlying's high watermark does) */
		bufferevent_setwatermark(
		    bev, EV_WRITE, RAW_WR_LOW, RAW_WR_HIGH);
		if (!(bev = bufferevent_filter_new(bev, pass_filter,
			  pass_filter, BEV_OPT_CLOSE_ON_FREE, NULL, NULL)))
			die("bufferevent_filter_new failed", NULL);
	}
	return bev;
}

/* The lines layer's own count of lines delivered, from its stats. */
static unsigned long long
stack_lines(struct bufferevent *top)
{
	char desc[256];
	const char *p;

	if (strata_layer_describe(top, 1, desc, sizeof(desc)) < 0 ||
	    !(p = strstr(desc, "lines=")))
		return 0;
	return strtoull(p + 6, NULL, 10);
}

/* One transfer of @p total bytes, timed from the first write to the last
 * read. */
static struct timing
stream_run(const struct text *text, size_t total, const struct variant *v)
{
	struct event_base *base = event_base_new();
	struct bufferevent *w, *r;
	struct timeval tmo = {STREAM_TIMEOUT_S, 0};
	struct flow f;
	struct event *guard;
	struct timing t;
	int fds[2];

	if (!base || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0 ||
	    evutil_make_socket_nonblocking(fds[0]) < 0 ||
	    evutil_make_socket_nonblocking(fds[1]) < 0)
		die("stream setup failed", strerror(errno));
	memset(&f, 0, sizeof(f));
	f.base = base;
	f.text = text;
	f.total = total;
	w = stream_end(base, fds[0], v);
	r = stream_end(base, fds[1], v);
	bufferevent_setcb(w, NULL, stream_write, stream_event, &f);
	bufferevent_setcb(r, stream_read, NULL, stream_event, &f);
	bufferevent_setwatermark(w, EV_WRITE, STREAM_LOW, 0);
	bufferevent_enable(w, EV_WRITE);
	bufferevent_enable(r, EV_READ);
	guard = evtimer_new(base, stream_timeout, &f);
	evtimer_add(guard, &tmo);

	t = timing_now();
	stream_write(w, &f);
	while (!f.done && !f.failed)
		event_base_loop(base, EVLOOP_ONCE);
	t = timing_since(t);

	if (f.failed || f.got != total)
		die("stream: transfer failed", v->label);
	if (v->flags & V_LINES) {
		unsigned long long want =
		    (unsigned long long)(total / text->len * text->lines);
		if (stack_lines(r) != want || f.cut)
			die("stream: lines: wrong line count or a cut line",
			    NULL);
	}
	event_free(guard);
	bufferevent_free(w);
	bufferevent_free(r);
	event_base_free(base);
	return t;
}

#define PASS5 "pass | pass | pass | pass | pass"

static const struct variant variants[] = {
    {"plain bufferevents (baseline)", NULL, 0, V_BASE, 0},
    {"strata \"pass\"", "pass", 0, 0, 0.95},
    {"strata \"" PASS5 "\"", PASS5, 0, 0, 0.85},
    {"strata \"lines\"", "lines", 0, V_LINES, 0},
    {"ref: libevent filter bev, pass", NULL, 1, 0, 0},
    {"ref: 5 nested libevent filter bevs", NULL, 5, 0, 0},
    {"tuned: plain bufferevents (baseline)", NULL, 0, V_TUNED | V_BASE, 0},
    {"tuned: strata \"pass\"", "pass", 0, V_TUNED, 0},
    {"tuned: strata 5 x \"pass\"", PASS5, 0, V_TUNED, 0},
    {"tuned: strata \"lines\"", "lines", 0, V_TUNED | V_LINES, 0},
};

#define N_VARIANTS STRATA_ARRAY_LEN(variants)

/* Bytes a run of @p v moves, for @p total bytes per untuned run. */
static size_t
variant_bytes(const struct variant *v, size_t total)
{
	return v->flags & V_TUNED ? total * TUNED_SCALE : total;
}

/* Bytes per second of the median run, by wall clock and by CPU time. */
struct rate {
	double wall, cpu;
};

static struct rate
rate_of(const struct timing *t, int runs, double bytes)
{
	struct rate r = {
	    bytes / median(t, runs, 0), bytes / median(t, runs, 1)};

	return r;
}

static int machine_busy; /* a row's wall clock lagged its CPU time */

/*
 * One table row: MB/s by wall clock and by CPU time, optionally M lines/s
 * (CPU time), the two ratios to @p base, and the target if any. The
 * verdict uses the CPU-time ratio: the loop never sleeps, so on an idle
 * machine both clocks agree, and on a shared one CPU time is not inflated
 * by other processes taking the core.
 */
static void
row(const char *label, struct rate r, struct rate base, double lines_per_byte,
    double target)
{
	double ratio = r.cpu / base.cpu;

	if (r.wall < 0.9 * r.cpu)
		machine_busy = 1;
	printf("   %-42s %8.1f %8.1f", label, r.wall / 1e6, r.cpu / 1e6);
	if (lines_per_byte >= 0)
		printf(" %8.2f", r.cpu * lines_per_byte / 1e6);
	printf(" %6.3fx %6.3fx", r.wall / base.wall, ratio);
	if (target > 0)
		printf("  >= %.2f %s", target, ratio >= target ? "ok" : "MISS");
	printf("\n");
}

/* -v: every run, wall-clock MB/s (CPU-time MB/s). */
static void
print_runs(const char *label, const struct timing *t, int runs, double bytes)
{
	int i;

	fprintf(stderr, "  %-42s", label);
	for (i = 0; i < runs; i++)
		fprintf(stderr, " %.0f(%.0f)", bytes / t[i].wall / 1e6,
		    bytes / t[i].cpu / 1e6);
	fprintf(stderr, "\n");
}

static void
stream_section(const struct opts *o, const struct text *text)
{
	const struct variant *v = variants;
	struct timing tm[N_VARIANTS][MAX_RUNS];
	size_t reps = (o->stream_mib * MIB + text->len - 1) / text->len;
	size_t total = reps * text->len, i;
	struct rate base = {0, 0};
	int run;

	for (i = 0; i < N_VARIANTS; i++) /* warm-up: faults, malloc arenas */
		stream_run(text, total < 64 * MIB ? total : text->len, &v[i]);
	for (run = 0; run < o->runs; run++)
		for (i = 0; i < N_VARIANTS; i++)
			tm[i][run] = stream_run(
			    text, variant_bytes(&v[i], total), &v[i]);

	printf("\n1. Bulk stream, AF_UNIX socketpair, one event loop, the "
	       "same stack at both ends\n   %.1f MB per run (%zu lines; tuned "
	       "rows %dx), %d KiB chunks topped up below %d KiB,\n   reader "
	       "drains\n\n",
	    (double)total / 1e6, reps * text->lines, TUNED_SCALE,
	    STREAM_CHUNK / 1024, STREAM_FILL / 1024);
	printf("   %-42s %8s %8s %7s %7s  %s\n", "variant", "MB/s", "MB/cpu-s",
	    "ratio", "cpu", "target (cpu)");
	for (i = 0; i < N_VARIANTS; i++) {
		double bytes = (double)variant_bytes(&v[i], total);
		struct rate r = rate_of(tm[i], o->runs, bytes);
		if (v[i].flags & V_BASE) {
			base = r;
			if (i)
				printf("\n");
		}
		row(v[i].label, r, base, -1, v[i].target);
		if (o->verbose)
			print_runs(v[i].label, tm[i], o->runs, bytes);
	}
}

/*
 * For profilers: one stream variant only, no warm-up. @p name is "plain",
 * "rawN" (N nested libevent filter bufferevents) or a strata stack.
 */
static void
stream_one(const struct opts *o, const struct text *text, const char *name)
{
	size_t reps = (o->stream_mib * MIB + text->len - 1) / text->len;
	size_t total = reps * text->len;
	struct variant v = {
	    name, name, 0, strstr(name, "lines") ? V_LINES : 0, 0};
	int run;

	if (!strncmp(name, "tuned:", 6)) {
		v.flags |= V_TUNED;
		v.filters = name += 6;
	}
	if (!strcmp(name, "plain"))
		v.filters = NULL;
	else if (!strncmp(name, "raw", 3)) {
		v.filters = NULL;
		v.raw = atoi(name + 3);
	}
	total = variant_bytes(&v, total);
	for (run = 0; run < o->runs; run++) {
		struct timing t = stream_run(text, total, &v);
		printf("%s: %.1f MB/s (%.1f per CPU second)\n", name,
		    (double)total / t.wall / 1e6, (double)total / t.cpu / 1e6);
	}
}

/* ---- 2. the lines input side alone, in memory ---- */

/*
 * The text as a socket delivers it: one evbuffer per read of @p piece
 * bytes (libevent 2.1 reads at most 4096 bytes per read). Each consumer
 * gets the pieces appended to its source buffer one after the other
 * (evbuffer_add_buffer moves the chain, no copy), and takes what it can
 * after each, as it would after each read.
 */
struct pieces {
	struct evbuffer **v;
	size_t n;
};

static void
pieces_make(struct pieces *p, const struct text *t, size_t piece)
{
	size_t off, i;

	p->n = (t->len + piece - 1) / piece;
	p->v = calloc(p->n, sizeof(*p->v));
	if (!p->v)
		die("out of memory", NULL);
	for (i = 0, off = 0; i < p->n; i++, off += piece) {
		size_t len = t->len - off < piece ? t->len - off : piece;
		if (!(p->v[i] = evbuffer_new()) ||
		    evbuffer_add(p->v[i], t->buf + off, len) < 0)
			die("out of memory", NULL);
	}
}

static void
pieces_free(struct pieces *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		evbuffer_free(p->v[i]);
	free(p->v);
}

struct count {
	size_t lines, bytes;
};

static size_t
count_lf(struct evbuffer *b)
{
	struct evbuffer_iovec v[64];
	struct evbuffer_ptr p;
	size_t lines = 0;
	int n, i;

	evbuffer_ptr_set(b, &p, 0, EVBUFFER_PTR_SET);
	for (;;) {
		size_t seen = 0;
		n = evbuffer_peek(b, -1, &p, v, 64);
		if (n <= 0)
			break;
		for (i = 0; i < n && i < 64; i++) {
			const char *s = v[i].iov_base, *e = s + v[i].iov_len;
			while ((s = memchr(s, '\n', (size_t)(e - s))) != NULL) {
				lines++;
				s++;
			}
			seen += v[i].iov_len;
		}
		if (n <= 64 ||
		    evbuffer_ptr_set(b, &p, seen, EVBUFFER_PTR_ADD) < 0)
			break;
	}
	return lines;
}

static void
consume_memchr(const struct text *t, struct count *c)
{
	const char *s = t->buf, *e = t->buf + t->len, *lf;

	while ((lf = memchr(s, '\n', (size_t)(e - s))) != NULL) {
		c->lines++;
		c->bytes += (size_t)(lf - s) + 1;
		s = lf + 1;
	}
}

static void
readln_all(struct evbuffer *src, struct count *c)
{
	size_t n;
	char *line;

	while ((line = evbuffer_readln(src, &n, EVBUFFER_EOL_LF)) != NULL) {
		c->lines++;
		c->bytes += n + 1;
		free(line);
	}
}

enum method { M_MEMCHR, M_READLN, M_LINES, M_LINES_READLN, M_COUNT };

static const char *const method_label[M_COUNT] = {
    "memchr scan (flat array, no evbuffer)",
    "evbuffer_readln(EOL_LF) loop",
    "lines filter input (moves line batches)",
    "lines filter input + readln by the user",
};

/*
 * Feed the pieces one by one into src and let @p m take all complete lines
 * after each. With @p verify, the lines filter's output is counted (not
 * timed: the timed runs drain it as a user would).
 */
static struct timing
lines_run(enum method m, const struct text *t, size_t piece, int verify)
{
	const struct strata_filter_type *lt = &strata_lines_filter_;
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	struct strata_error err;
	struct count c = {0, 0};
	struct pieces p = {NULL, 0};
	void *ctx = NULL;
	struct timing tm;
	size_t i;

	if (!src || !dst)
		die("out of memory", NULL);
	if (m != M_MEMCHR)
		pieces_make(&p, t, piece);
	if ((m == M_LINES || m == M_LINES_READLN) &&
	    !(ctx = lt->create(NULL, NULL, &err)))
		die("lines create", err.message);

	tm = timing_now();
	if (m == M_MEMCHR)
		consume_memchr(t, &c);
	for (i = 0; i < p.n; i++) {
		evbuffer_add_buffer(src, p.v[i]);
		if (m == M_READLN) {
			readln_all(src, &c);
			continue;
		}
		if (lt->input(src, dst, -1, BEV_NORMAL, ctx) == BEV_ERROR)
			die("lines filter failed", NULL);
		if (m == M_LINES_READLN) {
			readln_all(dst, &c);
			continue;
		}
		if (verify)
			c.lines += count_lf(dst);
		c.bytes += evbuffer_get_length(dst);
		evbuffer_drain(dst, evbuffer_get_length(dst));
	}
	tm = timing_since(tm);

	if (evbuffer_get_length(src) || c.bytes != t->len ||
	    ((verify || m != M_LINES) && c.lines != t->lines))
		die("lines section: wrong count", method_label[m]);
	if (ctx)
		lt->destroy(ctx);
	pieces_free(&p);
	evbuffer_free(src);
	evbuffer_free(dst);
	return tm;
}

static void
lines_layout(const struct opts *o, const struct text *t, size_t piece,
    const char *layout)
{
	struct timing tm[M_COUNT][MAX_RUNS];
	double per_byte = (double)t->lines / (double)t->len;
	struct rate readln;
	int m, run;

	for (m = 0; m < M_COUNT; m++) /* warm-up, and the line-count check */
		lines_run((enum method)m, t, piece, 1);
	for (run = 0; run < o->runs; run++)
		for (m = 0; m < M_COUNT; m++)
			tm[m][run] = lines_run((enum method)m, t, piece, 0);
	printf("\n   %s\n", layout);
	readln = rate_of(tm[M_READLN], o->runs, (double)t->len);
	for (m = 0; m < M_COUNT; m++) {
		row(method_label[m], rate_of(tm[m], o->runs, (double)t->len),
		    readln, per_byte, m == M_LINES ? 2.5 : 0);
		if (o->verbose)
			print_runs(
			    method_label[m], tm[m], o->runs, (double)t->len);
	}
}

static void
lines_section(const struct opts *o, const struct text *t)
{
	char layout[128];

	printf("\n2. lines input side alone, in memory: %.1f MB of text, "
	       "%zu lines (mean %.1f bytes)\n\n",
	    (double)t->len / 1e6, t->lines, (double)t->len / (double)t->lines);
	printf("   %-42s %8s %8s %8s %7s %7s  %s\n",
	    "consumer (ratios to the readln loop)", "MB/s", "MB/cpu-s",
	    "Ml/cpu-s", "ratio", "cpu", "target (cpu)");
	lines_layout(o, t, 4096,
	    "fed in 4 KiB reads (what a libevent 2.1 socket read delivers)");
	snprintf(layout, sizeof(layout), "one buffer of %.1f MB in one chain",
	    (double)t->len / 1e6);
	lines_layout(o, t, t->len, layout);
}

/* ---- 3. heap per idle stack ---- */

static size_t
heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* Heap of @p n idle stacks (reading enabled, nothing in flight), per stack:
 * @p filters pushed with strata, or else @p raw libevent filters. */
static double
idle_heap(struct event_base *base, const int *fds, int n, const char *filters,
    int raw)
{
	struct bufferevent **b = calloc((size_t)n, sizeof(*b));
	struct strata_error err;
	size_t before;
	double per;
	int i;

	if (!b)
		die("out of memory", NULL);
	before = heap_used();
	for (i = 0; i < n; i++) {
		b[i] = bufferevent_socket_new(base, fds[i], 0);
		if (!b[i])
			die("bufferevent_socket_new failed", NULL);
		if (filters && !(b[i] = strata_push(b[i], filters,
				     BEV_OPT_CLOSE_ON_FREE, &err)))
			die("strata_push", err.message);
		if (raw &&
		    !(b[i] = bufferevent_filter_new(b[i], pass_filter,
			  pass_filter, BEV_OPT_CLOSE_ON_FREE, NULL, NULL)))
			die("bufferevent_filter_new failed", NULL);
		bufferevent_enable(b[i], EV_READ);
	}
	per = (double)(heap_used() - before) / n;
	for (i = 0; i < n; i++)
		bufferevent_free(b[i]);
	/* let the loop run the finalizers and apply the epoll changes */
	event_base_loop(base, EVLOOP_NONBLOCK);
	free(b);
	return per;
}

static void
memory_section(const struct opts *o)
{
	static const struct {
		const char *label, *filters;
		int raw;
	} v[] = {
	    {"plain socket bufferevent", NULL, 0},
	    {"strata \"pass\" over a socket bufferevent", "pass", 0},
	    {"strata \"lines\" over a socket bufferevent", "lines", 0},
	    {"ref: libevent filter bev over a socket bev", NULL, 1},
	};
	struct event_base *base = event_base_new();
	struct rlimit rl;
	int n = o->idle_stacks, *fds = calloc((size_t)n, sizeof(int));
	double per[STRATA_ARRAY_LEN(v)];
	size_t i;
	int k;

	if (!base || !fds)
		die("out of memory", NULL);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (k = 0; k < n; k += 2) {
		int sp[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
			die("socketpair (raise ulimit -n)", strerror(errno));
		evutil_make_socket_nonblocking(sp[0]);
		evutil_make_socket_nonblocking(sp[1]);
		fds[k] = sp[0];
		if (k + 1 < n)
			fds[k + 1] = sp[1];
		else
			close(sp[1]);
	}
	/* warm-up: the base's per-fd tables grow once, for every variant */
	idle_heap(base, fds, n, "pass", 0);
	for (i = 0; i < STRATA_ARRAY_LEN(v); i++)
		per[i] = idle_heap(base, fds, n, v[i].filters, v[i].raw);
	printf("\n3. Heap per idle stack (mallinfo2 over %d stacks, one per "
	       "socketpair end, reading enabled)\n\n",
	    n);
	printf("   %-42s %9s %8s\n", "stack", "bytes", "ratio");
	for (i = 0; i < STRATA_ARRAY_LEN(v); i++)
		printf("   %-42s %9.0f %7.2fx\n", v[i].label, per[i],
		    per[i] / per[0]);
	for (k = 0; k < n; k++)
		close(fds[k]);
	free(fds);
	event_base_free(base);
}

/* ---- main ---- */

/*
 * Pin glibc's trim and mmap thresholds. By default glibc returns the top of
 * the heap to the kernel whenever more than ~256 KiB is free there, so a
 * single connection moving 64 KiB chains refaults the same pages over and
 * over; how often depends on the order of frees (seen: 3k to 37k faults
 * per 1.3 GB for the same stack), not on the work done. A server with many
 * connections keeps a warm heap; so does this.
 */
static void
malloc_pin(void)
{
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: strata-bench [-s MIB] [-t MIB] [-r RUNS] [-n STACKS] "
	    "[-M] [-v] [-S SECTIONS] [-x STACK]\n"
	    "  -s  bytes per stream run in MiB (default 512)\n"
	    "  -t  size of the generated text in MiB (default 64)\n"
	    "  -r  runs per variant, median reported (default 7, max %d)\n"
	    "  -n  idle stacks for the memory row (default 1000)\n"
	    "  -S  sections to run, e.g. 13 (default 123)\n"
	    "  -x  NAME: run only this stream variant, for profilers: plain,\n"
	    "      rawN (N libevent filters) or a stack; prefix tuned: for\n"
	    "      strata_socket_tune()\n"
	    "  -M  keep glibc's malloc trim/mmap heuristics (see README)\n"
	    "  -v  print every run to stderr\n",
	    MAX_RUNS);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct opts o = {0, 512, 64, 7, 1000, 0};
	const char *sections = "123", *only = NULL;
	struct strata_error err;
	struct text text;
	char date[64];
	time_t now = time(NULL);
	int c;

	while ((c = getopt(argc, argv, "Ms:t:r:n:S:x:v")) != -1) {
		switch (c) {
		case 's':
			o.stream_mib = strtoul(optarg, NULL, 10);
			break;
		case 't':
			o.text_mib = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			o.runs = atoi(optarg);
			break;
		case 'n':
			o.idle_stacks = atoi(optarg);
			break;
		case 'S':
			sections = optarg;
			break;
		case 'M':
			o.malloc_default = 1;
			break;
		case 'x':
			only = optarg;
			break;
		case 'v':
			o.verbose = 1;
			break;
		default:
			usage();
		}
	}
	if (o.runs < 1 || o.runs > MAX_RUNS || !o.stream_mib || !o.text_mib ||
	    o.idle_stacks < 2)
		usage();
	if (!o.malloc_default)
		malloc_pin();
	if (strata_register_filter(&pass_type, &err) < 0)
		die("register pass", err.message);
	text_make(&text, o.text_mib * MIB);
	if (only) {
		stream_one(&o, &text, only);
		free(text.buf);
		return 0;
	}
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M", localtime(&now));
	printf("strata-bench %s  %s  libevent %s  median of %d runs  "
	       "malloc %s\n",
	    strata_version(), date, event_get_version(), o.runs,
	    o.malloc_default ? "glibc defaults (-M)" : "thresholds pinned");
	if (strchr(sections, '1'))
		stream_section(&o, &text);
	if (strchr(sections, '2'))
		lines_section(&o, &text);
	if (strchr(sections, '3'))
		memory_section(&o);
	if (machine_busy)
		printf(
		    "\nnote: wall clock lagged CPU time by over 10%% in some "
		    "rows: the machine was busy;\n      compare the cpu "
		    "ratios.\n");
	free(text.buf);
	return 0;
}
