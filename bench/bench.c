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
 *  4. Bulk throughput over loopback TCP and unix sockets, writer and reader
 *     in two threads: strata_listen + strata_connect stacks against plain
 *     socket bufferevents with libevent's defaults and a blocking
 *     read/write loop.
 *  5. Memory per idle TCP connection (RSS and heap, each end in a fresh
 *     process of its own) against plain socket bufferevents.
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
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "internal.h"

#include "common.h"

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
	int idle_conns;
	int no_pin; /* -P: let the scheduler place the threads */
	int verbose;
};

/* Wall-clock and process CPU time of one timed run, in seconds. */
struct timing {
	double wall, cpu;
};

static struct timing
timing_now(void)
{
	struct timing t = {
	    bench_clock_s(CLOCK_MONOTONIC), bench_clock_s(CLOCK_PROCESS_CPUTIME_ID)};

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

/* Median of the wall (or, with @p cpu, CPU) times of @p n runs. */
static double
median(const struct timing *v, int n, int cpu)
{
	double s[MAX_RUNS] = {0};
	int i;

	for (i = 0; i < n; i++)
		s[i] = cpu ? v[i].cpu : v[i].wall;
	return bench_median(s, n);
}

static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "strata-bench: %s%s%s\n", what, detail ? ": " : "",
	    detail ? detail : "");
	exit(1);
}

/* ---- the text: real-looking lines of 10..200 bytes ---- */

static void
text_make(struct bench_text *t, size_t want)
{
	if (bench_text_make(t, want) < 0)
		die("out of memory", NULL);
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
	const struct bench_text *text;
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
stream_run(const struct bench_text *text, size_t total, const struct variant *v)
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
stream_section(const struct opts *o, const struct bench_text *text)
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
stream_one(const struct opts *o, const struct bench_text *text, const char *name)
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
pieces_make(struct pieces *p, const struct bench_text *t, size_t piece)
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
consume_memchr(const struct bench_text *t, struct count *c)
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
lines_run(enum method m, const struct bench_text *t, size_t piece, int verify)
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
lines_layout(const struct opts *o, const struct bench_text *t, size_t piece,
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
lines_section(const struct opts *o, const struct bench_text *t)
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

/* ---- 4. bulk throughput over loopback sockets ---- */

/*
 * A writer and a reader over a real loopback connection, each in its own
 * thread (the writer in the calling thread, the reader in a second one), so
 * that every variant gets the same two cores: the blocking read/write loop
 * needs two threads, and the event-loop variants get one event loop per end.
 */

enum sock_kind { SK_TCP, SK_UNIX };
enum sock_how { SH_BLOCKING, SH_PLAIN, SH_STRATA };

struct sock_variant {
	const char *name; /* for -x */
	const char *label;
	enum sock_kind kind;
	enum sock_how how;
	const char *filters; /* SH_STRATA: appended to the address */
	unsigned flags;	     /* V_LINES, V_TUNED (SH_PLAIN), S_* */
	double target_plain; /* ratio to the plain row, 0: none */
	double target_block; /* ratio to the blocking row, 0: none */
};

#define S_PLAIN_BASE 0x100 /* the plain libevent row of its kind */
#define S_BLOCK_BASE 0x200 /* the blocking read/write row of its kind */
#define S_NODELAY 0x400	   /* TCP_NODELAY on both sockets (SH_BLOCKING) */

#define BLOCK_IO (256 * 1024) /* the blocking loop's write and read size */

static const struct sock_variant sock_variants[] = {
    {"tcp-block", "blocking read/write loop, 256 KiB", SK_TCP, SH_BLOCKING,
	NULL, S_BLOCK_BASE, 0, 0},
    {"tcp-plain", "plain bufferevents, libevent defaults", SK_TCP, SH_PLAIN,
	NULL, S_PLAIN_BASE, 0, 0},
    {"tcp-strata", "strata \"tcp://\"", SK_TCP, SH_STRATA, "", 0, 1.5, 0.75},
    {"tcp-lines", "strata \"tcp:// | lines\"", SK_TCP, SH_STRATA, " | lines",
	V_LINES, 0, 0},
    {"tcp-zlib", "strata \"tcp:// | zlib\" (level 1)", SK_TCP, SH_STRATA,
	" | zlib", 0, 0, 0},
    {"tcp-nodelay-no", "ref: strata \"tcp://(nodelay=no)\"", SK_TCP, SH_STRATA,
	"(nodelay=no)", 0, 0, 0},
    {"tcp-plain-tuned", "ref: plain + strata_socket_tune()", SK_TCP, SH_PLAIN,
	NULL, V_TUNED, 0, 0},
    {"tcp-block-nodelay", "ref: blocking loop + TCP_NODELAY", SK_TCP,
	SH_BLOCKING, NULL, S_NODELAY, 0, 0},
    {"unix-block", "blocking read/write loop, 256 KiB", SK_UNIX, SH_BLOCKING,
	NULL, S_BLOCK_BASE, 0, 0},
    {"unix-plain", "plain bufferevents, libevent defaults", SK_UNIX, SH_PLAIN,
	NULL, S_PLAIN_BASE, 0, 0},
    {"unix-strata", "strata \"unix:\"", SK_UNIX, SH_STRATA, "", 0, 0, 0},
    {"unix-lines", "strata \"unix: | lines\"", SK_UNIX, SH_STRATA, " | lines",
	V_LINES, 0, 0},
};

#define N_SOCK_VARIANTS STRATA_ARRAY_LEN(sock_variants)

/* A fresh loopback address: TCP port 0 (the kernel picks), or a unique
 * abstract unix name. */
static socklen_t
sock_addr(enum sock_kind kind, struct sockaddr_storage *ss)
{
	static unsigned seq;

	memset(ss, 0, sizeof(*ss));
	if (kind == SK_TCP) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*in);
	} else {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		int n;
		un->sun_family = AF_UNIX;
		n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1,
		    "strata-bench-%ld-%u", (long)getpid(), seq++);
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				   (size_t)n);
	}
}

/* A connected pair over @p kind: *cfd connected, *afd accepted. Blocking. */
static void
sock_pair(enum sock_kind kind, int *cfd, int *afd)
{
	struct sockaddr_storage ss;
	socklen_t len = sock_addr(kind, &ss);
	int fam = kind == SK_TCP ? AF_INET : AF_UNIX;
	int l = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&ss, len) < 0 ||
	    listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&ss, &len) < 0)
		die("listen", strerror(errno));
	if ((*cfd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(*cfd, (struct sockaddr *)&ss, len) < 0 ||
	    (*afd = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0)
		die("connect", strerror(errno));
	close(l);
}

/* The reader's thread: its own event loop, or a blocking read loop. */
struct sock_reader {
	struct flow f;
	int fd; /* blocking loop only */
	int blocking;
};

/*
 * Pin the writer and the reader to two different cores. Unpinned, the
 * scheduler sometimes ran both threads on one core for a whole run (MB/s
 * equal to MB/cpu-s), and a run's rate then depended on where the threads
 * landed (tcp | lines at half its rate, the blocking loop faster).
 */
static int pin_cpu[2] = {-1, -1};

static void
pin_init(void)
{
	cpu_set_t set;
	int c, k = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return;
	for (c = 0; c < CPU_SETSIZE && k < 2; c++)
		if (CPU_ISSET(c, &set))
			pin_cpu[k++] = c;
	if (k < 2)
		pin_cpu[0] = pin_cpu[1] = -1;
}

/* Pin the calling thread to @p cpu, if pinning is on. */
static void
pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *
sock_reader_main(void *arg)
{
	struct sock_reader *r = arg;
	char *buf;

	pin_to(pin_cpu[1]);

	if (!r->blocking) {
		while (!r->f.done && !r->f.failed)
			event_base_loop(r->f.base, EVLOOP_ONCE);
		return NULL;
	}
	if (!(buf = malloc(BLOCK_IO)))
		die("out of memory", NULL);
	while (r->f.got < r->f.total) {
		ssize_t n = read(r->fd, buf, BLOCK_IO);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		r->f.got += (size_t)n;
	}
	free(buf);
	return NULL;
}

static void
block_write(int fd, const struct bench_text *text, size_t total)
{
	size_t sent = 0, off = 0;

	while (sent < total) {
		size_t n = BLOCK_IO;
		ssize_t w;
		if (n > total - sent)
			n = total - sent;
		if (n > text->len - off)
			n = text->len - off;
		w = write(fd, text->buf + off, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("blocking write", strerror(errno));
		sent += (size_t)w;
		off = (off + (size_t)w) % text->len;
	}
}

/* The writer's event loop is done when everything left its process. */
static int
writer_idle(const struct flow *f, struct bufferevent *w)
{
	return f->sent == f->total &&
	       !evbuffer_get_length(bufferevent_get_output(w)) &&
	       (!strata_is_stack(w) || !strata_unsent(w));
}

/* Setup of a strata pair: the connecting end's events, the accepted top. */
struct sock_setup {
	struct bufferevent *accepted;
	int connected, failed;
};

static void
setup_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct sock_setup *s = arg;

	(void)l;
	if (s->accepted)
		die("strata_listen: a second connection", NULL);
	s->accepted = top;
}

static void
setup_event(struct bufferevent *bev, short what, void *arg)
{
	struct sock_setup *s = arg;

	if (what & BEV_EVENT_CONNECTED)
		s->connected = 1;
	else {
		fprintf(stderr, "strata-bench: connect: event 0x%x: %s\n", what,
		    strata_last_error(bev) ? strata_last_error(bev) : "-");
		s->failed = 1;
	}
}

static void
sock_reader_event(struct bufferevent *bev, short what, void *arg)
{
	if (what == BEV_EVENT_CONNECTED) /* an accepted stack announces */
		return;
	stream_event(bev, what, arg);
}

/* strata_listen + strata_connect over @p v's transport: *w connected,
 * *r accepted. */
static void
strata_pair(const struct sock_variant *v, struct event_base *wb,
    struct event_base *rb, struct bufferevent **w, struct bufferevent **r)
{
	struct sock_setup s = {NULL, 0, 0};
	struct strata_listener *l;
	struct strata_error err;
	char addr[160], stack[256];

	if (v->kind == SK_TCP)
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:0");
	else {
		struct sockaddr_storage ss;
		socklen_t len = sock_addr(SK_UNIX, &ss);
		snprintf(addr, sizeof(addr), "unix:@%.*s",
		    (int)(len - offsetof(struct sockaddr_un, sun_path) - 1),
		    ((struct sockaddr_un *)&ss)->sun_path + 1);
	}
	snprintf(stack, sizeof(stack), "%s%s", addr, v->filters);
	if (!(l = strata_listen(
		  rb, stack, BEV_OPT_CLOSE_ON_FREE, setup_accept, &s, &err)))
		die("strata_listen", err.message);
	if (v->kind == SK_TCP)
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d",
		    strata_listener_port(l));
	snprintf(stack, sizeof(stack), "%s%s", addr, v->filters);
	if (!(*w = strata_connect(
		  wb, NULL, stack, BEV_OPT_CLOSE_ON_FREE, &err)))
		die("strata_connect", err.message);
	bufferevent_setcb(*w, NULL, NULL, setup_event, &s);
	while (!s.failed && (!s.connected || !s.accepted)) {
		event_base_loop(wb, EVLOOP_NONBLOCK);
		event_base_loop(rb, EVLOOP_NONBLOCK);
	}
	if (s.failed)
		die("strata pair setup failed", v->label);
	strata_listener_free(l);
	*r = s.accepted;
}

/* One transfer of @p total bytes from the connecting end to the accepted
 * end, timed from the first write until the reader has every byte. */
static struct timing
sock_run(const struct bench_text *text, size_t total, const struct sock_variant *v)
{
	struct event_base *wb = NULL, *rb = NULL;
	struct bufferevent *w = NULL, *r = NULL;
	struct timeval tmo = {STREAM_TIMEOUT_S, 0};
	struct event *wguard = NULL, *rguard = NULL;
	struct sock_reader rd;
	struct flow wf;
	struct timing t;
	pthread_t th;
	cpu_set_t all_cpus;
	int cfd = -1, afd = -1;

	sched_getaffinity(0, sizeof(all_cpus), &all_cpus);
	memset(&wf, 0, sizeof(wf));
	memset(&rd, 0, sizeof(rd));
	wf.text = text;
	wf.total = rd.f.total = total;
	if (v->how == SH_BLOCKING) {
		sock_pair(v->kind, &cfd, &afd);
		if (v->flags & S_NODELAY) {
			int one = 1;
			setsockopt(
			    cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			setsockopt(
			    afd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		rd.blocking = 1;
		rd.fd = afd;
	} else {
		if (!(wb = event_base_new()) || !(rb = event_base_new()))
			die("event_base_new failed", NULL);
		wf.base = wb;
		rd.f.base = rb;
		if (v->how == SH_PLAIN) {
			sock_pair(v->kind, &cfd, &afd);
			if (evutil_make_socket_nonblocking(cfd) < 0 ||
			    evutil_make_socket_nonblocking(afd) < 0)
				die("nonblocking", strerror(errno));
			w = bufferevent_socket_new(
			    wb, cfd, BEV_OPT_CLOSE_ON_FREE);
			r = bufferevent_socket_new(
			    rb, afd, BEV_OPT_CLOSE_ON_FREE);
			if (!w || !r)
				die("bufferevent_socket_new failed", NULL);
			if ((v->flags & V_TUNED) &&
			    (strata_socket_tune(w, -1) < 0 ||
				strata_socket_tune(r, -1) < 0))
				die("strata_socket_tune failed", NULL);
		} else
			strata_pair(v, wb, rb, &w, &r);
		bufferevent_setcb(w, NULL, stream_write, stream_event, &wf);
		bufferevent_setcb(
		    r, stream_read, NULL, sock_reader_event, &rd.f);
		bufferevent_setwatermark(w, EV_WRITE, STREAM_LOW, 0);
		bufferevent_enable(w, EV_WRITE);
		bufferevent_enable(r, EV_READ);
		wguard = evtimer_new(wb, stream_timeout, &wf);
		rguard = evtimer_new(rb, stream_timeout, &rd.f);
		if (!wguard || !rguard)
			die("evtimer_new failed", NULL);
		evtimer_add(wguard, &tmo);
		evtimer_add(rguard, &tmo);
	}
	if (pthread_create(&th, NULL, sock_reader_main, &rd))
		die("pthread_create failed", NULL);

	pin_to(pin_cpu[0]);
	t = timing_now();
	if (v->how == SH_BLOCKING)
		block_write(cfd, text, total);
	else {
		stream_write(w, &wf);
		while (!wf.failed && !writer_idle(&wf, w))
			event_base_loop(wb, EVLOOP_ONCE);
	}
	pthread_join(th, NULL);
	t = timing_since(t);
	if (pin_cpu[0] >= 0) /* the main thread runs the other sections */
		pthread_setaffinity_np(
		    pthread_self(), sizeof(all_cpus), &all_cpus);

	if (wf.failed || rd.f.failed || rd.f.got != total ||
	    (v->how != SH_BLOCKING && wf.sent != total))
		die("sockets: transfer failed", v->label);
	if (v->how == SH_STRATA) {
		/* the wire carries what the writer's transport sent (all of
		 * it, compressed by zlib rows) and the reader's received */
		struct strata_layer_stats sr[2], sw[2];
		int compressed = strstr(v->label, "zlib") != NULL;
		if (strata_stats(r, sr, 2) < 1 || strata_stats(w, sw, 2) < 1 ||
		    sr[0].read_in != sw[0].write_out ||
		    (!compressed && sr[0].read_in != total))
			die("sockets: wrong wire byte count", v->label);
	}
	if (v->flags & V_LINES) {
		unsigned long long want =
		    (unsigned long long)(total / text->len * text->lines);
		if (stack_lines(r) != want || rd.f.cut)
			die("sockets: lines: wrong line count or a cut line",
			    v->label);
	}
	if (wguard)
		event_free(wguard);
	if (rguard)
		event_free(rguard);
	if (w)
		bufferevent_free(w);
	if (r)
		bufferevent_free(r);
	if (v->how == SH_BLOCKING) {
		close(cfd);
		close(afd);
	}
	if (wb)
		event_base_free(wb);
	if (rb)
		event_base_free(rb);
	return t;
}

/* A ratio cell, blank without a baseline. */
static void
ratio_cell(double r, double base)
{
	if (base > 0)
		printf(" %6.3fx", r / base);
	else
		printf(" %7s", "");
}

/* "ok" or "MISS" for a ratio and its lower bound, with the ratio. */
static void
verdict(const char *what, double r, double target)
{
	printf("%s %.2fx %s", what, r, r >= target ? "ok" : "MISS");
}

/* The rows of one socket kind, [i, j), and their targets. */
static void
sock_group(const struct opts *o, struct timing (*tm)[MAX_RUNS], size_t i,
    size_t j, double total)
{
	const struct sock_variant *v = sock_variants;
	struct rate plain = {0, 0}, block = {0, 0}, r;
	size_t k;

	for (k = i; k < j; k++) {
		r = rate_of(tm[k], o->runs, total);
		if (v[k].flags & S_PLAIN_BASE)
			plain = r;
		if (v[k].flags & S_BLOCK_BASE)
			block = r;
	}
	printf("\n   %-42s %8s %8s   %-16s %s\n   %-42s %8s %8s %7s %7s "
	       " %7s %7s\n",
	    v[i].kind == SK_TCP ? "TCP over 127.0.0.1"
				: "unix socket (abstract name)",
	    "MB/s", "MB/cpu-s", "ratio to plain", "ratio to blocking", "", "",
	    "", "wall", "cpu", "wall", "cpu");
	for (k = i; k < j; k++) {
		r = rate_of(tm[k], o->runs, total);
		printf("   %-42s %8.1f %8.1f", v[k].label, r.wall / 1e6,
		    r.cpu / 1e6);
		ratio_cell(r.wall, plain.wall);
		ratio_cell(r.cpu, plain.cpu);
		printf(" ");
		ratio_cell(r.wall, block.wall);
		ratio_cell(r.cpu, block.cpu);
		printf("\n");
		if (o->verbose)
			print_runs(v[k].label, tm[k], o->runs, total);
	}
	for (k = i; k < j; k++) {
		r = rate_of(tm[k], o->runs, total);
		if (v[k].target_plain > 0) {
			printf("   target: %s >= %.2fx plain:", v[k].label,
			    v[k].target_plain);
			verdict(
			    " wall", r.wall / plain.wall, v[k].target_plain);
			verdict(", cpu", r.cpu / plain.cpu, v[k].target_plain);
			printf("\n");
		}
		if (v[k].target_block > 0) {
			printf("   target: %s >= %.2fx blocking:", v[k].label,
			    v[k].target_block);
			verdict(
			    " wall", r.wall / block.wall, v[k].target_block);
			verdict(", cpu", r.cpu / block.cpu, v[k].target_block);
			printf("\n");
		}
	}
}

static void
sock_section(const struct opts *o, const struct bench_text *text)
{
	const struct sock_variant *v = sock_variants;
	struct timing tm[N_SOCK_VARIANTS][MAX_RUNS];
	size_t reps = (o->stream_mib * MIB + text->len - 1) / text->len;
	size_t total = reps * text->len, i, j;
	int run;

	if (!o->no_pin)
		pin_init();
	for (i = 0; i < N_SOCK_VARIANTS; i++) /* warm-up */
		sock_run(text, text->len, &v[i]);
	for (run = 0; run < o->runs; run++)
		for (i = 0; i < N_SOCK_VARIANTS; i++)
			tm[i][run] = sock_run(text, total, &v[i]);

	printf("\n4. Bulk throughput over loopback sockets, writer and reader "
	       "in two threads of one process\n   %.1f MB per run, event "
	       "loops: %d KiB chunks topped up below %d KiB, reader drains;\n"
	       "   blocking loop: write(2) and read(2) of %d KiB; strata "
	       "stacks: strata_listen + strata_connect\n",
	    (double)total / 1e6, STREAM_CHUNK / 1024, STREAM_FILL / 1024,
	    BLOCK_IO / 1024);
	for (i = 0; i < N_SOCK_VARIANTS; i = j) {
		for (j = i; j < N_SOCK_VARIANTS && v[j].kind == v[i].kind; j++)
			;
		sock_group(o, tm, i, j, (double)total);
	}
}

/* ---- 5. memory per idle TCP connection ---- */

/*
 * Each end runs in a process of its own, started fresh (fork + exec of this
 * program with -Z), so that the parent's warm heap, already resident, does
 * not hide the pages the connections take, and so that each process needs
 * only one fd per connection. The parent starts the server, then the
 * client, and reads one result line from each.
 */

#define MEM_BATCH 256 /* connects in flight at a time (accept backlog) */

struct mem_variant {
	const char *name; /* passed to the children */
	const char *label;
	const char *filters; /* NULL: plain libevent bufferevents */
	int raw;	     /* plain, with a libevent filter bev on top */
	double target;	     /* RSS ratio to plain, 0: none */
};

static const struct mem_variant mem_variants[] = {
    {"plain", "plain socket bufferevents (baseline)", NULL, 0, 0},
    {"tcp", "strata \"tcp://127.0.0.1:PORT\"", "", 0, 0},
    {"lines", "strata \"tcp://127.0.0.1:PORT | lines\"", " | lines", 0, 2.0},
    {"filter", "ref: libevent filter bev over a socket bev", NULL, 1, 0},
};

#define N_MEM_VARIANTS STRATA_ARRAY_LEN(mem_variants)

/* Resident set and heap in use, in bytes. */
struct mem_use {
	double rss, heap;
};

static struct mem_use
mem_now(void)
{
	struct mem_use m = {0, (double)heap_used()};
	long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2)
		die("cannot read /proc/self/statm", NULL);
	fclose(f);
	m.rss = (double)resident * (double)sysconf(_SC_PAGESIZE);
	return m;
}

/* Raise the soft fd limit to @p want (and the hard one, as root, if
 * needed). Returns how many fds may be open. */
static long
nofile_raise(long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_max != RLIM_INFINITY && (long)rl.rlim_max < want) {
		struct rlimit hard = {(rlim_t)want, (rlim_t)want};
		if (setrlimit(RLIMIT_NOFILE, &hard) == 0)
			return want;
	}
	if ((long)rl.rlim_cur < want) {
		rl.rlim_cur =
		    rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max > want
			? (rlim_t)want
			: rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	return (long)rl.rlim_cur;
}

/* One end of the memory run: its connections and counters. */
struct mem_end {
	struct event_base *base;
	struct bufferevent **b;
	int n, made, ready;
	const char *filters;
	int raw;
};

static void
mem_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
mem_event(struct bufferevent *bev, short what, void *arg)
{
	struct mem_end *m = arg;

	if (what & BEV_EVENT_CONNECTED) {
		m->ready++;
		return;
	}
	fprintf(stderr, "strata-bench: memory: event 0x%x: %s\n", what,
	    strata_last_error(bev) ? strata_last_error(bev) : "-");
	exit(1);
}

static void
mem_keep(struct mem_end *m, struct bufferevent *bev)
{
	if (m->raw && !(bev = bufferevent_filter_new(bev, pass_filter,
			    pass_filter, BEV_OPT_CLOSE_ON_FREE, NULL, NULL)))
		die("bufferevent_filter_new failed", NULL);
	if (m->made >= m->n)
		die("memory: more connections than expected", NULL);
	m->b[m->made++] = bev;
	bufferevent_setcb(bev, mem_read, NULL, mem_event, m);
	bufferevent_enable(bev, EV_READ);
}

static void
mem_accept_strata(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	(void)l;
	mem_keep(arg, top);
}

static void
mem_accept_plain(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct mem_end *m = arg;
	struct bufferevent *bev =
	    bufferevent_socket_new(m->base, fd, BEV_OPT_CLOSE_ON_FREE);

	(void)l;
	(void)sa;
	(void)salen;
	if (!bev)
		die("bufferevent_socket_new failed", NULL);
	mem_keep(m, bev);
}

/* Print this end's bytes per connection, then wait for the parent to close
 * our stdin: the connections stay up until both ends have measured. */
static void
mem_report(struct mem_end *m, struct mem_use before)
{
	struct mem_use after;
	char c;
	int i;

	for (i = 0; i < 4; i++) /* deferred callbacks, announce events */
		event_base_loop(m->base, EVLOOP_NONBLOCK);
	after = mem_now();
	printf("%d %.1f %.1f\n", m->made, (after.rss - before.rss) / m->made,
	    (after.heap - before.heap) / m->made);
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	/* Reset instead of a FIN: tens of thousands of sockets in TIME_WAIT
	 * slowed the next minute of loopback TCP (their timers expiring). */
	for (i = 0; i < m->made; i++) {
		struct linger lg = {1, 0};
		setsockopt(bufferevent_getfd(m->b[i]), SOL_SOCKET, SO_LINGER,
		    &lg, sizeof(lg));
	}
	exit(0);
}

static void
mem_end_init(struct mem_end *m, const char *variant, int n)
{
	size_t i;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < N_MEM_VARIANTS; i++)
		if (!strcmp(mem_variants[i].name, variant))
			break;
	if (i == N_MEM_VARIANTS)
		die("memory: unknown variant", variant);
	m->filters = mem_variants[i].filters;
	m->raw = mem_variants[i].raw;
	m->n = n;
	if (!(m->base = event_base_new()) ||
	    !(m->b = calloc((size_t)n, sizeof(*m->b))))
		die("out of memory", NULL);
	if (nofile_raise(n + 64) < n + 64)
		die("memory: not enough file descriptors", NULL);
}

/* -Z server:VARIANT:N */
static void
mem_server(const char *variant, int n)
{
	struct sockaddr_in sin;
	struct mem_end m;
	struct strata_error err;
	struct mem_use before;
	int port;

	mem_end_init(&m, variant, n);
	if (m.filters) {
		char stack[128];
		struct strata_listener *l;
		snprintf(
		    stack, sizeof(stack), "tcp://127.0.0.1:0%s", m.filters);
		if (!(l = strata_listen(m.base, stack, BEV_OPT_CLOSE_ON_FREE,
			  mem_accept_strata, &m, &err)))
			die("strata_listen", err.message);
		port = strata_listener_port(l);
	} else {
		struct evconnlistener *l;
		socklen_t len = sizeof(sin);
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (!(l = evconnlistener_new_bind(m.base, mem_accept_plain, &m,
			  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 511,
			  (struct sockaddr *)&sin, sizeof(sin))) ||
		    getsockname(evconnlistener_get_fd(l),
			(struct sockaddr *)&sin, &len) < 0)
			die("listen", strerror(errno));
		port = ntohs(sin.sin_port);
	}
	before = mem_now();
	printf("%d\n", port);
	fflush(stdout);
	while (m.made < n)
		event_base_loop(m.base, EVLOOP_ONCE);
	mem_report(&m, before);
}

/* -Z client:VARIANT:N:PORT */
static void
mem_client(const char *variant, int n, int port)
{
	struct sockaddr_in sin;
	struct mem_end m;
	struct strata_error err;
	struct mem_use before;
	char stack[128];

	mem_end_init(&m, variant, n);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d%s", port,
	    m.filters ? m.filters : "");
	before = mem_now();
	while (m.made < n) {
		int k;
		for (k = 0; k < MEM_BATCH && m.made < n; k++) {
			struct bufferevent *bev;
			if (m.filters) {
				bev = strata_connect(m.base, NULL, stack,
				    BEV_OPT_CLOSE_ON_FREE, &err);
				if (!bev)
					die("strata_connect", err.message);
				mem_keep(&m, bev);
				continue;
			}
			bev = bufferevent_socket_new(
			    m.base, -1, BEV_OPT_CLOSE_ON_FREE);
			if (!bev)
				die("bufferevent_socket_new failed", NULL);
			mem_keep(&m, bev);
			if (bufferevent_socket_connect(
				bev, (struct sockaddr *)&sin, sizeof(sin)) < 0)
				die("bufferevent_socket_connect failed", NULL);
		}
		while (m.ready < m.made)
			event_base_loop(m.base, EVLOOP_ONCE);
	}
	mem_report(&m, before);
}

/* Run one end as a child process: -Z @p spec. Its stdin and stdout are
 * pipes to us. */
struct child {
	pid_t pid;
	FILE *out;
	int in;
};

static void
child_start(struct child *c, const char *spec)
{
	int to[2], from[2];

	if (pipe(to) < 0 || pipe(from) < 0)
		die("pipe", strerror(errno));
	fflush(stdout);
	if ((c->pid = fork()) < 0)
		die("fork", strerror(errno));
	if (c->pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		close(to[0]);
		close(to[1]);
		close(from[0]);
		close(from[1]);
		execl(
		    "/proc/self/exe", "strata-bench", "-Z", spec, (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	c->in = to[1];
	if (!(c->out = fdopen(from[0], "r")))
		die("fdopen", strerror(errno));
}

static void
child_line(struct child *c, char *buf, size_t len)
{
	if (!fgets(buf, (int)len, c->out))
		die("memory: a child process failed", NULL);
}

static void
child_end(struct child *c)
{
	int st;

	close(c->in);
	fclose(c->out);
	waitpid(c->pid, &st, 0);
}

struct mem_result {
	int n;
	double rss, heap;
};

static void
mem_parse(const char *line, struct mem_result *r)
{
	if (sscanf(line, "%d %lf %lf", &r->n, &r->rss, &r->heap) != 3)
		die("memory: bad result line", line);
}

static void
mem_cells(const struct mem_result *r, const struct mem_result *base)
{
	printf(" %7.0f %7.0f %6.2fx %6.2fx", r->rss, r->heap,
	    r->rss / base->rss, r->heap / base->heap);
}

static void
mem_target(const char *end, const struct mem_result *r,
    const struct mem_result *base, double target)
{
	printf("%s: RSS %.2fx %s, heap %.2fx %s", end, r->rss / base->rss,
	    r->rss / base->rss <= target ? "ok" : "MISS", r->heap / base->heap,
	    r->heap / base->heap <= target ? "ok" : "MISS");
}

static void
mem_section(const struct opts *o)
{
	struct mem_result cl[N_MEM_VARIANTS], sv[N_MEM_VARIANTS];
	char spec[128], line[128];
	size_t i;
	int n = o->idle_conns;
	long fds = nofile_raise(n + 64); /* the children inherit it */

	if (fds < n + 64)
		n = (int)fds - 64;
	if (n < 1)
		die("memory: not enough file descriptors", NULL);
	for (i = 0; i < N_MEM_VARIANTS; i++) {
		struct child srv, cli;
		int port;
		snprintf(spec, sizeof(spec), "server:%s:%d",
		    mem_variants[i].name, n);
		child_start(&srv, spec);
		child_line(&srv, line, sizeof(line));
		port = atoi(line);
		snprintf(spec, sizeof(spec), "client:%s:%d:%d",
		    mem_variants[i].name, n, port);
		child_start(&cli, spec);
		child_line(&cli, line, sizeof(line));
		mem_parse(line, &cl[i]);
		child_line(&srv, line, sizeof(line));
		mem_parse(line, &sv[i]);
		child_end(&cli);
		child_end(&srv);
		if (cl[i].n != n || sv[i].n != n)
			die("memory: wrong connection count", NULL);
	}
	printf("\n5. Memory per idle TCP connection over 127.0.0.1: %d "
	       "connections, reading enabled;\n   each end in a fresh "
	       "process of its own; bytes per connection, (after - before) / "
	       "%d\n",
	    n, n);
	if (n < o->idle_conns)
		printf("   (%d connections asked for: the fd limit allows %ld "
		       "per process)\n",
		    o->idle_conns, fds);
	printf("\n   %-42s %-32s %s\n", "", "client (connecting) end",
	    "server (accepting) end");
	printf("   %-42s %7s %7s %7s %7s %7s %7s %7s %7s\n", "stack", "RSS",
	    "heap", "RSS", "heap", "RSS", "heap", "RSS", "heap");
	for (i = 0; i < N_MEM_VARIANTS; i++) {
		printf("   %-42s", mem_variants[i].label);
		mem_cells(&cl[i], &cl[0]);
		mem_cells(&sv[i], &sv[0]);
		printf("\n");
	}
	for (i = 0; i < N_MEM_VARIANTS; i++) {
		if (mem_variants[i].target <= 0)
			continue;
		printf("   target: %s <= %.1fx plain:\n          ",
		    mem_variants[i].label, mem_variants[i].target);
		mem_target("client", &cl[i], &cl[0], mem_variants[i].target);
		printf("; ");
		mem_target("server", &sv[i], &sv[0], mem_variants[i].target);
		printf("\n");
	}
}

/* -Z ROLE:VARIANT:N[:PORT]: one end of a memory run (see mem_section). */
static void
mem_child(const char *spec)
{
	char role[16], variant[32];
	int n = 0, port = 0;

	if (sscanf(spec, "%15[^:]:%31[^:]:%d:%d", role, variant, &n, &port) <
		3 ||
	    n < 1)
		die("bad -Z", spec);
	if (!strcmp(role, "server"))
		mem_server(variant, n);
	else if (!strcmp(role, "client") && port > 0)
		mem_client(variant, n, port);
	die("bad -Z", spec);
}

/* For profilers: one socket variant only (by its -x name), no warm-up. */
static int
sock_one(const struct opts *o, const struct bench_text *text, const char *name)
{
	size_t reps = (o->stream_mib * MIB + text->len - 1) / text->len;
	size_t total = reps * text->len, i;
	int run;

	for (i = 0; i < N_SOCK_VARIANTS; i++)
		if (!strcmp(sock_variants[i].name, name))
			break;
	if (i == N_SOCK_VARIANTS)
		return 0;
	if (!o->no_pin)
		pin_init();
	for (run = 0; run < o->runs; run++) {
		struct timing t = sock_run(text, total, &sock_variants[i]);
		printf("%s: %.1f MB/s (%.1f per CPU second)\n", name,
		    (double)total / t.wall / 1e6, (double)total / t.cpu / 1e6);
	}
	return 1;
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
	size_t i;

	fprintf(stderr,
	    "usage: strata-bench [-s MIB] [-t MIB] [-r RUNS] [-n STACKS] "
	    "[-c CONNS] [-M] [-P] [-v]\n"
	    "                    [-S SECTIONS] [-x VARIANT]\n"
	    "  -s  bytes per stream run in MiB (default 512; sections 1, 4)\n"
	    "  -t  size of the generated text in MiB (default 64)\n"
	    "  -r  runs per variant, median reported (default 7, max %d)\n"
	    "  -n  idle stacks for section 3 (default 1000)\n"
	    "  -c  idle TCP connections for section 5 (default 10000)\n"
	    "  -S  sections to run, e.g. 45 (default 12345)\n"
	    "  -x  VARIANT: run only this one, for profilers, no warm-up:\n"
	    "      section 1: plain, rawN (N libevent filters) or a filter\n"
	    "      list, prefix tuned: for strata_socket_tune(); section 4:",
	    MAX_RUNS);
	for (i = 0; i < N_SOCK_VARIANTS; i++)
		fprintf(stderr, "%s %s", i % 4 ? "" : "\n     ",
		    sock_variants[i].name);
	fprintf(stderr,
	    "\n"
	    "  -M  keep glibc's malloc trim/mmap heuristics (see README)\n"
	    "  -P  do not pin section 4's writer and reader to two cores\n"
	    "  -v  print every run to stderr\n"
	    "  (-Z ROLE:VARIANT:N[:PORT] runs one end of section 5; "
	    "internal)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct opts o = {0, 512, 64, 7, 1000, 10000, 0, 0};
	const char *sections = "12345", *only = NULL;
	struct strata_error err;
	struct bench_text text;
	char date[64];
	time_t now = time(NULL);
	int c;

	while ((c = getopt(argc, argv, "MPs:t:r:n:c:S:x:Z:v")) != -1) {
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
		case 'c':
			o.idle_conns = atoi(optarg);
			break;
		case 'Z':
			mem_child(optarg);
			break;
		case 'S':
			sections = optarg;
			break;
		case 'M':
			o.malloc_default = 1;
			break;
		case 'P':
			o.no_pin = 1;
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
	    o.idle_stacks < 2 || o.idle_conns < 1)
		usage();
	if (!o.malloc_default)
		malloc_pin();

	if (strata_register_filter(&pass_type, &err) < 0)
		die("register pass", err.message);
	text_make(&text, o.text_mib * MIB);
	if (only) {
		if (!sock_one(&o, &text, only))
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
	if (strchr(sections, '4'))
		sock_section(&o, &text);
	if (strchr(sections, '5'))
		mem_section(&o);
	if (machine_busy)
		printf(
		    "\nnote: wall clock lagged CPU time by over 10%% in some "
		    "rows: the machine was busy;\n      compare the cpu "
		    "ratios.\n");
	free(text.buf);
	return 0;
}
