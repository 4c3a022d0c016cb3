/*
 * bench-zlib: the zlib filter against zlib called directly, in one run.
 *
 *  1. Throughput at levels 1 and 6 over the same text: the filter's output
 *     side (strata_zlib_filter_.output called directly on evbuffers, the
 *     way the engine calls it) against deflate() with the same level and
 *     the same flush points (a sync flush every 64 KiB, Z_FINISH at the
 *     end); the input side against inflate() over the same compressed
 *     stream fed in 64 KiB pieces. Compressed sizes of both.
 *  2. Every level 0..9 through the filter: speed both ways and the ratio,
 *     the numbers behind the default level.
 *  3. Heap per connection (mallinfo2 over many socketpair stacks): idle
 *     and used `zlib` stacks (used: one compressed message each way).
 *
 * Timed figures are medians of several runs of CPU time; the variants of a
 * section run interleaved so drift hits all of them alike. The output of
 * both sides is checked (untimed) before anything is timed.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <zlib.h>

#include "internal.h"

#include "common.h"

#define ZL (&strata_zlib_filter_)
#define MIB (1024u * 1024u)
#define PIECE (64 * 1024) /* inflate input piece, default flush interval */
#define MAX_RUNS 31

struct opts {
	size_t text_mib;
	int runs;
	int stacks;
	const char *file;
	const char *sections;
	int only;  /* -x: run this variant alone */
	int level; /* -l: at this level */
};

static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-zlib: %s%s%s\n", what, detail ? ": " : "",
	    detail ? detail : "");
	exit(1);
}

static double
cpu_now(void)
{
	return bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* ---- the text: strata-bench's generator (log and protocol lines) ---- */

struct text {
	unsigned char *buf;
	size_t len;
	const char *name;
};

static void
text_make(struct text *t, size_t want)
{
	struct bench_text b;

	if (bench_text_make(&b, want) < 0)
		die("out of memory", NULL);
	t->buf = (unsigned char *)b.buf;
	t->len = b.len;
	t->name = "strata-bench's generated log/protocol lines";
}

static void
text_load(struct text *t, const char *path, size_t most)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		die(path, strerror(errno));
	if (!(t->buf = malloc(most)))
		die("out of memory", NULL);
	n = fread(t->buf, 1, most, f);
	fclose(f);
	if (!n)
		die(path, "empty");
	t->len = n;
	t->name = path;
}

/* ---- zlib directly ---- */

/* Plain bytes between sync flushes, in both deflate variants. */
static size_t flush_every = PIECE;

struct zout {
	unsigned char *buf; /* reused output space */
	size_t cap;
	size_t total;	    /* bytes produced */
	uint32_t crc;	    /* of everything produced, when checking */
	int check;
};

static void
zout_take(struct zout *o, size_t n)
{
	if (o->check)
		o->crc = (uint32_t)crc32(o->crc, o->buf, (uInt)n);
	o->total += n;
}

/* deflate() with a sync flush every flush_every bytes, Z_FINISH at the
 * end; the
 * output goes through one reused buffer (what a sender would write). */
static void
direct_deflate(const struct text *t, int level, struct zout *o)
{
	z_stream s;
	size_t off = 0;
	int r;

	memset(&s, 0, sizeof(s));
	if (deflateInit(&s, level) != Z_OK)
		die("deflateInit", NULL);
	while (off < t->len) {
		size_t n = t->len - off < flush_every ? t->len - off
						       : flush_every;
		int flush = off + n == t->len ? Z_FINISH : Z_SYNC_FLUSH;

		s.next_in = t->buf + off;
		s.avail_in = (uInt)n;
		do {
			s.next_out = o->buf;
			s.avail_out = (uInt)o->cap;
			r = deflate(&s, flush);
			zout_take(o, o->cap - s.avail_out);
		} while (s.avail_out == 0 ||
		    (flush == Z_FINISH && r != Z_STREAM_END));
		off += n;
	}
	deflateEnd(&s);
}

/* inflate() over @p z fed in PIECE-byte pieces. */
static void
direct_inflate(const unsigned char *z, size_t zl, struct zout *o)
{
	z_stream s;
	size_t off = 0;
	int r = Z_OK;

	memset(&s, 0, sizeof(s));
	if (inflateInit(&s) != Z_OK)
		die("inflateInit", NULL);
	while (off < zl && r != Z_STREAM_END) {
		size_t n = zl - off < PIECE ? zl - off : PIECE;

		s.next_in = (unsigned char *)(uintptr_t)(z + off);
		s.avail_in = (uInt)n;
		do {
			s.next_out = o->buf;
			s.avail_out = (uInt)o->cap;
			r = inflate(&s, Z_NO_FLUSH);
			if (r < 0 && r != Z_BUF_ERROR)
				die("inflate", s.msg);
			zout_take(o, o->cap - s.avail_out);
		} while (r != Z_STREAM_END && (s.avail_in || !s.avail_out));
		off += n;
	}
	inflateEnd(&s);
}

/* ---- the filter, called as the engine calls it ---- */

struct filt {
	void *cfg, *ctx;
};

static void
filt_open(struct filt *f, const char *opts_text)
{
	struct strata_option o[2];
	struct strata_error err;
	char k[32], v[32];
	size_t n = 0;

	if (opts_text && sscanf(opts_text, "%31[^=]=%31s", k, v) == 2) {
		o[0].key = k;
		o[0].value = v;
		o[0].position = 0;
		n = 1;
	}
	if (ZL->config(&f->cfg, o, n, &err) < 0)
		die("config", err.message);
	if (!(f->ctx = ZL->create(f->cfg, NULL, &err)))
		die("create", err.message);
}

static void
filt_close(struct filt *f)
{
	ZL->destroy(f->ctx);
	ZL->config_free(f->cfg);
}

/* Call @p fn until it stops (as the engine's layer_call does). */
static void
filt_drive(bufferevent_filter_cb fn, void *ctx, struct evbuffer *src,
    struct evbuffer *dst, enum bufferevent_flush_mode mode)
{
	enum bufferevent_filter_result r;

	do {
		r = fn(src, dst, -1, mode, ctx);
		if (r == BEV_ERROR)
			die("the filter failed", NULL);
	} while (r == BEV_OK && (mode != BEV_NORMAL ||
	    evbuffer_get_length(src)));
}

/* What the transport does with the filter's output: send it (here: take
 * it, and checksum it when checking). */
static void
sink(struct evbuffer *dst, struct zout *o)
{
	struct evbuffer_iovec v[64];
	int n, i;

	if (o->check) {
		n = evbuffer_peek(dst, -1, NULL, v, 64);
		for (i = 0; i < n && i < 64; i++)
			o->crc = (uint32_t)crc32(o->crc, v[i].iov_base,
			    (uInt)v[i].iov_len);
	}
	o->total += evbuffer_get_length(dst);
	evbuffer_drain(dst, evbuffer_get_length(dst));
}

/* The filter's output side: each flush_every bytes added by reference (no
 * copy), then
 * a BEV_FLUSH call (the filter's Z_SYNC_FLUSH), BEV_FINISHED at the end. */
static void
filter_deflate(const struct text *t, int level, struct zout *o)
{
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	char lv[16];
	struct filt f;
	size_t off = 0;

	snprintf(lv, sizeof(lv), "level=%d", level);
	filt_open(&f, lv);
	while (off < t->len) {
		size_t n = t->len - off < flush_every ? t->len - off
						       : flush_every;
		int last = off + n == t->len;

		evbuffer_add_reference(src, t->buf + off, n, NULL, NULL);
		filt_drive(ZL->output, f.ctx, src, dst,
		    last ? BEV_FINISHED : BEV_FLUSH);
		sink(dst, o);
		off += n;
	}
	filt_close(&f);
	evbuffer_free(src);
	evbuffer_free(dst);
}

/* The filter's input side over @p z fed in PIECE-byte pieces. */
static void
filter_inflate(const unsigned char *z, size_t zl, struct zout *o)
{
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	struct filt f;
	size_t off = 0;

	filt_open(&f, NULL); /* the defaults, bomb guard included */
	while (off < zl) {
		size_t n = zl - off < PIECE ? zl - off : PIECE;

		evbuffer_add_reference(src, z + off, n, NULL, NULL);
		filt_drive(ZL->input, f.ctx, src, dst, BEV_NORMAL);
		sink(dst, o);
		off += n;
	}
	filt_drive(ZL->input, f.ctx, src, dst, BEV_FINISHED);
	sink(dst, o);
	filt_close(&f);
	evbuffer_free(src);
	evbuffer_free(dst);
}

/* ---- 1. throughput against zlib ---- */

struct zbuf {
	unsigned char *buf;
	size_t len, cap;
};

/* The reference stream at @p level, kept for the inflate rows. */
static void
reference_stream(const struct text *t, int level, struct zbuf *z)
{
	z_stream s;
	size_t off = 0;
	int r;

	z->cap = deflateBound(NULL, (uLong)t->len) +
	    t->len / flush_every * 16 + 64;
	if (!(z->buf = malloc(z->cap)))
		die("out of memory", NULL);
	memset(&s, 0, sizeof(s));
	if (deflateInit(&s, level) != Z_OK)
		die("deflateInit", NULL);
	s.next_out = z->buf;
	s.avail_out = (uInt)z->cap;
	while (off < t->len) {
		size_t n = t->len - off < flush_every ? t->len - off
						       : flush_every;
		int flush = off + n == t->len ? Z_FINISH : Z_SYNC_FLUSH;

		s.next_in = t->buf + off;
		s.avail_in = (uInt)n;
		r = deflate(&s, flush);
		if (s.avail_in || (flush == Z_FINISH && r != Z_STREAM_END))
			die("reference deflate", "output space");
		off += n;
	}
	z->len = z->cap - s.avail_out;
	deflateEnd(&s);
}

enum { DEF_DIRECT, DEF_FILTER, INF_DIRECT, INF_FILTER, NVAR };

static const char *const var_names[NVAR] = {
	"deflate: zlib directly", "deflate: zlib filter",
	"inflate: zlib directly", "inflate: zlib filter",
};

/* One timed run of variant @p v; returns CPU seconds. */
static double
run_variant(int v, const struct text *t, int level, const struct zbuf *z,
    struct zout *o)
{
	double t0 = cpu_now();

	o->total = 0;
	switch (v) {
	case DEF_DIRECT:
		direct_deflate(t, level, o);
		break;
	case DEF_FILTER:
		filter_deflate(t, level, o);
		break;
	case INF_DIRECT:
		direct_inflate(z->buf, z->len, o);
		break;
	default:
		filter_inflate(z->buf, z->len, o);
	}
	return cpu_now() - t0;
}

/* Untimed: every variant's output is what it must be. Returns the
 * compressed sizes of the two deflate variants. */
static void
check_level(const struct text *t, int level, const struct zbuf *z,
    struct zout *o, size_t size[2], uint32_t crc[2])
{
	uint32_t want = (uint32_t)crc32(0, t->buf, (uInt)t->len);
	uint32_t zcrc = (uint32_t)crc32(0, z->buf, (uInt)z->len);
	int v;

	o->check = 1;
	for (v = 0; v < NVAR; v++) {
		o->crc = 0;
		run_variant(v, t, level, z, o);
		if (v >= INF_DIRECT && (o->total != t->len || o->crc != want))
			die(var_names[v], "wrong output");
		if (v < INF_DIRECT) {
			size[v] = o->total;
			crc[v] = o->crc;
		}
		if (v == DEF_DIRECT && (o->total != z->len || o->crc != zcrc))
			die("zlib directly", "not the reference stream");
	}
	o->check = 0;
}

static void
throughput_level(const struct opts *op, const struct text *t, int level,
    struct zout *o)
{
	double cpu[NVAR][MAX_RUNS], med[NVAR];
	size_t size[2];
	uint32_t crc[2];
	struct zbuf z;
	int v, r;

	reference_stream(t, level, &z);
	check_level(t, level, &z, o, size, crc);
	for (v = 0; v < NVAR; v++) /* warm-up */
		run_variant(v, t, level, &z, o);
	for (r = 0; r < op->runs; r++)
		for (v = 0; v < NVAR; v++)
			cpu[v][r] = run_variant(v, t, level, &z, o);
	for (v = 0; v < NVAR; v++)
		med[v] = bench_median(cpu[v], op->runs);
	if (flush_every == PIECE)
		printf("\n   level %d%s\n", level,
		    level == 1 ? " (the default)" : "");
	else
		printf("\n   level %d, a sync flush every %zu bytes (message-"
		       "sized writes, flush=auto)\n", level, flush_every);
	for (v = 0; v < NVAR; v++) {
		double base = med[v < INF_DIRECT ? DEF_DIRECT : INF_DIRECT];
		int filt = v == DEF_FILTER || v == INF_FILTER;
		printf("   %-28s %9.1f %8.3fx", var_names[v],
		    (double)t->len / 1e6 / med[v], base / med[v]);
		if (filt)
			printf("  %s", base / med[v] >= 0.95 ? ">= 0.95 ok"
							     : ">= 0.95 MISS");
		printf("\n");
	}
	printf("   %-28s %9zu bytes, ratio %.3f (plain/compressed)\n",
	    "size: zlib directly", size[0], (double)t->len / (double)size[0]);
	printf("   %-28s %9zu bytes, %+.3f%% %s\n", "size: zlib filter",
	    size[1], 100.0 * ((double)size[1] - (double)size[0]) /
		(double)size[0],
	    size[1] == size[0] && crc[1] == crc[0] ? "(the same bytes)" : "");
	free(z.buf);
}

static void
throughput_section(const struct opts *op, const struct text *t)
{
	struct zout o = {0};
	static const int lv[] = {1, 6};
	size_t i;

	o.cap = 64 * 1024;
	if (!(o.buf = malloc(o.cap)))
		die("out of memory", NULL);
	printf("\n1. zlib filter against zlib directly, in memory: %.1f MB of "
	       "text, a sync flush every 64 KiB\n"
	       "   (filter: strata_zlib_filter_.output/.input called as the "
	       "engine calls them; zlib: deflate()/inflate()\n"
	       "   with a reused 64 KiB output buffer; inflate input fed in "
	       "64 KiB pieces; CPU time, median of %d)\n\n",
	    (double)t->len / 1e6, op->runs);
	printf("   %-28s %9s %9s  %s\n", "variant", "MB/cpu-s", "ratio",
	    "target");
	for (i = 0; i < STRATA_ARRAY_LEN(lv); i++)
		throughput_level(op, t, lv[i], &o);
	flush_every = 256;
	throughput_level(op, t, 1, &o);
	flush_every = PIECE;
	free(o.buf);
}

/* ---- 2. every level through the filter ---- */

static void
levels_section(const struct opts *op, const struct text *t)
{
	struct zout o = {0};
	int level, r, runs = op->runs < 3 ? op->runs : 3;

	o.cap = 64 * 1024;
	if (!(o.buf = malloc(o.cap)))
		die("out of memory", NULL);
	printf("\n2. Levels through the filter (same text and flushes; "
	       "median of %d)\n\n", runs);
	printf("   %-6s %12s %12s %10s %8s\n", "level", "deflate MB/s",
	    "inflate MB/s", "bytes", "ratio");
	for (level = 0; level <= 9; level++) {
		double d[MAX_RUNS], in[MAX_RUNS];
		struct zbuf z;
		size_t size = 0;

		reference_stream(t, level, &z);
		for (r = 0; r < runs; r++) {
			d[r] = run_variant(DEF_FILTER, t, level, &z, &o);
			size = o.total;
			in[r] = run_variant(INF_FILTER, t, level, &z, &o);
		}
		printf("   %-6d %12.1f %12.1f %10zu %8.3f\n", level,
		    (double)t->len / 1e6 / bench_median(d, runs),
		    (double)t->len / 1e6 / bench_median(in, runs), size,
		    (double)t->len / (double)size);
		free(z.buf);
	}
	free(o.buf);
}

/* ---- 3. heap per connection ---- */

static size_t
heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void
drain_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t *got = arg;

	*got += evbuffer_get_length(in);
	evbuffer_drain(in, evbuffer_get_length(in));
}

/*
 * Heap of @p n stacks (one per socketpair end, reading enabled) per stack;
 * with @p used, every stack sends one compressed message and receives its
 * peer's, so both zlib states exist.
 */
static double
stack_heap(struct event_base *base, const int *fds, int n,
    const char *filters, int used)
{
	struct bufferevent **b = calloc((size_t)n, sizeof(*b));
	struct strata_error err;
	size_t before, got = 0;
	double per;
	int i, spins;

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
		bufferevent_setcb(b[i], drain_read, NULL, NULL, &got);
		bufferevent_enable(b[i], EV_READ | EV_WRITE);
	}
	if (used) {
		for (i = 0; i < n; i++) {
			bufferevent_write(b[i], "hello, peer\n", 12);
			bufferevent_flush(b[i], EV_WRITE, BEV_FLUSH);
		}
		for (spins = 0; got < (size_t)n * 12 && spins < 10000; spins++)
			event_base_loop(base, EVLOOP_NONBLOCK);
		if (got < (size_t)n * 12)
			die("stacks", "the messages did not arrive");
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	per = (double)(heap_used() - before) / n;
	for (i = 0; i < n; i++)
		bufferevent_free(b[i]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	free(b);
	return per;
}

static void
memory_section(const struct opts *op)
{
	static const struct {
		const char *label, *filters;
		int used;
	} v[] = {
	    {"plain socket bufferevent", NULL, 0},
	    {"strata \"lines\"", "lines", 0},
	    {"strata \"zlib\", idle", "zlib", 0},
	    {"strata \"zlib\", used", "zlib", 1},
	    {"strata \"zlib(level=1)\", used", "zlib(level=1)", 1},
	    {"strata \"zlib(window=12,memlevel=5)\", used",
		"zlib(window=12,memlevel=5)", 1},
	    {"strata \"zlib(window=9,memlevel=1)\", used",
		"zlib(window=9,memlevel=1)", 1},
	};
	struct event_base *base = event_base_new();
	int n = op->stacks, *fds = calloc((size_t)n, sizeof(int)), k;
	double per[STRATA_ARRAY_LEN(v)];
	struct rlimit rl;
	size_t i;

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
		fds[k + 1] = sp[1];
	}
	stack_heap(base, fds, n, "zlib", 1); /* warm-up */
	for (i = 0; i < STRATA_ARRAY_LEN(v); i++)
		per[i] = stack_heap(base, fds, n, v[i].filters, v[i].used);
	printf("\n3. Heap per connection (mallinfo2 over %d stacks, one per "
	       "socketpair end; used: one\n"
	       "   compressed message sent and one received by each)\n\n",
	    n);
	printf("   %-44s %9s %8s\n", "stack", "bytes", "ratio");
	for (i = 0; i < STRATA_ARRAY_LEN(v); i++)
		printf("   %-44s %9.0f %7.2fx\n", v[i].label, per[i],
		    per[i] / per[0]);
	for (k = 0; k < n; k++)
		close(fds[k]);
	free(fds);
	event_base_free(base);
}

/* ---- main ---- */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bench-zlib [-t MIB] [-f FILE] [-r RUNS] [-n STACKS] "
	    "[-S SECTIONS]\n"
	    "  -t  size of the generated text in MiB (default 32)\n"
	    "  -f  use (up to -t MiB of) this file as the text instead\n"
	    "  -r  runs per variant, median reported (default 7, max %d)\n"
	    "  -n  stacks for the memory rows, even (default 1000)\n"
	    "  -S  sections to run, e.g. 13 (default 123)\n"
	    "  -x  N: run only variant N of section 1, for profilers: 0\n"
	    "      deflate by zlib, 1 by the filter, 2 inflate by zlib, 3 by\n"
	    "      the filter; -l LEVEL picks the level (default 1), -F\n"
	    "      BYTES the flush interval (default 65536)\n",
	    MAX_RUNS);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct opts o = {32, 7, 1000, NULL, "123", -1, 1};
	struct text text;
	char date[64];
	time_t now = time(NULL);
	int c;

	while ((c = getopt(argc, argv, "t:f:r:n:S:x:l:F:")) != -1) {
		switch (c) {
		case 't':
			o.text_mib = strtoul(optarg, NULL, 10);
			break;
		case 'f':
			o.file = optarg;
			break;
		case 'r':
			o.runs = atoi(optarg);
			break;
		case 'n':
			o.stacks = atoi(optarg);
			break;
		case 'S':
			o.sections = optarg;
			break;
		case 'x':
			o.only = atoi(optarg);
			break;
		case 'l':
			o.level = atoi(optarg);
			break;
		case 'F':
			flush_every = strtoul(optarg, NULL, 10);
			break;
		default:
			usage();
		}
	}
	if (o.runs < 1 || o.runs > MAX_RUNS || !o.text_mib || o.stacks < 2 ||
	    o.stacks % 2 || o.only >= NVAR || o.level < 0 || o.level > 9 ||
	    !flush_every)
		usage();
	/* as strata-bench: a warm heap, not glibc's trim heuristics */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	if (o.file)
		text_load(&text, o.file, o.text_mib * MIB);
	else
		text_make(&text, o.text_mib * MIB);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M", localtime(&now));
	printf("bench-zlib %s  %s  zlib %s  libevent %s  median of %d runs\n"
	       "text: %s, %.1f MB\n",
	    strata_version(), date, zlibVersion(), event_get_version(), o.runs,
	    text.name, (double)text.len / 1e6);
	if (o.only >= 0) {
		/* one variant alone, for profilers */
		struct zout out = {0};
		struct zbuf z;
		int r;

		out.cap = 64 * 1024;
		if (!(out.buf = malloc(out.cap)))
			die("out of memory", NULL);
		reference_stream(&text, o.level, &z);
		for (r = 0; r < o.runs; r++)
			printf("%s, level %d: %.1f MB/cpu-s\n",
			    var_names[o.only], o.level, (double)text.len / 1e6 /
			    run_variant(o.only, &text, o.level, &z, &out));
		free(z.buf);
		free(out.buf);
		free(text.buf);
		return 0;
	}
	if (strchr(o.sections, '1'))
		throughput_section(&o, &text);
	if (strchr(o.sections, '2'))
		levels_section(&o, &text);
	if (strchr(o.sections, '3'))
		memory_section(&o);
	free(text.buf);
	return 0;
}
