/*
 * zlib: deflate compression, zlib, gzip or raw framing.
 *
 * Output side (application -> wire): BEV_NORMAL feeds deflate with
 * Z_NO_FLUSH, BEV_FLUSH ends with Z_SYNC_FLUSH (all written so far becomes
 * decodable by the peer), BEV_FINISHED with Z_FINISH (end marker, gzip
 * trailer). A flush or finish is run until zlib has really emitted
 * everything it asks for, not merely until the input is used up. The flush
 * policy decides when a stream flushes on its own: `auto` sync-flushes once
 * when the writer goes idle (strata_layer_flush_later), `every:N` after
 * every N input bytes, `none` only when asked.
 *
 * Input side (wire -> application): inflate is drained completely on every
 * call (nothing is parked inside zlib waiting for bytes that may not come);
 * dst_limit is honoured by leaving compressed bytes in src; gzip members
 * follow one another as one stream; bytes after the end of a zlib or raw
 * stream, corrupt input, and a stream cut before its end marker are errors
 * naming the byte offset. The bomb guard stops inflating once the output
 * passes max-output bytes, or max-ratio times the compressed input (checked
 * once at least 1 MiB came out).
 *
 * Input is read with evbuffer_peek and output written into
 * evbuffer_reserve_space: no copy besides zlib's own. The deflate and
 * inflate states are made on first use: an idle stack costs only the
 * context.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <zlib.h>

#include "internal.h"

enum zlib_format { FMT_ZLIB, FMT_GZIP, FMT_RAW };
enum zlib_flush { FLUSH_AUTO, FLUSH_NONE, FLUSH_EVERY };
enum zlib_tail { TAIL_ERROR, TAIL_ALLOW };

/*
 * Defaults; bench/README.md ("## zlib") has the numbers behind them. Level
 * 1: on one core it deflates 124-136 MB/s of text (level 6: 16-38 MB/s,
 * less than a gigabit link carries) and keeps 91-93% of level 6's saving.
 * max-ratio 200 (Apache mod_deflate's default too): text compresses 3-5x,
 * repetitive logs and build files 10-16x, a run of zeros 1032x (deflate's
 * ceiling); a bomb is stopped after 1 MiB of output. max-output 1 GiB
 * bounds a stream that stays under the ratio.
 */
#define ZLIB_LEVEL_DEFAULT 1
#define ZLIB_MAX_RATIO_DEFAULT 200
#define ZLIB_MAX_OUTPUT_DEFAULT (1ull << 30)
/* The ratio cap applies once this much came out: short messages and
 * headers compress far beyond any sane ratio without being bombs. */
#define RATIO_FLOOR (1u << 20)
#define EVERY_MAX (1u << 30)
#define MAX_RATIO_LIMIT 1000000
#define MAX_OUTPUT_LIMIT (1ull << 50)

/* Output is written in pieces of at most this much reserved space, sized
 * so that the evbuffer chain holding one (with its header) is one 16 KiB
 * (deflate) or 64 KiB (inflate) block. bench-zlib has the numbers. */
#define OUT_CHUNK (16384 - 128)
#define INF_CHUNK (65536 - 128)
/* ... but a call's first inflate gets no more than four times its input or
 * this much: a short message needs no 64 KiB block. */
#define INF_SMALL (4096 - 128)
/* Slack in the first output space of a call (see def_call). */
#define FLUSH_ROOM 64
#define PEEK_EXTENTS 16

struct zlib_cfg {
	enum zlib_format format;
	int level, window, memlevel, strategy;
	enum zlib_flush flush;
	size_t every;
	uint64_t max_ratio;  /* 0: off */
	uint64_t max_output; /* 0: off */
	enum zlib_tail tail;
};

static const struct zlib_cfg zlib_defaults = {
	FMT_ZLIB, ZLIB_LEVEL_DEFAULT, 15, 8, Z_DEFAULT_STRATEGY, FLUSH_AUTO,
	0, ZLIB_MAX_RATIO_DEFAULT, ZLIB_MAX_OUTPUT_DEFAULT, TAIL_ERROR,
};

struct zlib {
	const struct zlib_cfg *cfg;
	struct strata_layer *layer;
	z_stream *def;		/* output side, made on first use */
	z_stream *inf;		/* input side, made on first use */
	/* output side */
	uint64_t def_in, def_out, flushes;
	size_t since_flush;	/* bytes fed since the last sync flush */
	size_t owed_in;		/* bytes of src before an unfinished flush */
	int owed;		/* that flush (Z_NO_FLUSH: none) */
	enum { SYNC_DATA, SYNC_MARK, SYNC_DRAIN } sync; /* see def_piece */
	unsigned dirty : 1;	/* fed since the last flush: data held back */
	unsigned def_ended : 1;	/* Z_STREAM_END written */
	/* input side */
	uint64_t inf_in, inf_out, members;
	unsigned inf_more : 1;	/* inflate may hold output (no space left) */
	unsigned inf_mid : 1;	/* inside a stream (or gzip member) */
	unsigned inf_ended : 1;	/* zlib/raw stream ended: nothing may follow */
	unsigned inf_failed : 1;
};

static const struct strata_option_doc zlib_options[] = {
	{"format", "zlib", "framing: zlib (RFC 1950), gzip (RFC 1952), raw "
	    "deflate (RFC 1951)"},
	{"level", "1", "compression level, 0 (store) to 9 (smallest)"},
	{"window", "15", "log2 of the history window, 9 to 15, both sides"},
	{"memlevel", "8", "deflate memory, 1 (least) to 9"},
	{"strategy", "default", "default, filtered, huffman, rle or fixed"},
	{"flush", "auto", "auto (sync flush when the writer goes idle), "
	    "none, or every:N bytes"},
	{"max-ratio", "200", "inflated/compressed bytes allowed once 1 MiB "
	    "came out; 0: off"},
	{"max-output", "1G", "most bytes one stream may inflate to; 0: off"},
	{"tail", "error", "stream ends without its end marker: error or "
	    "allow"},
	{NULL, NULL, NULL},
};

/* ---- options ---- */

static int
zlib_bad(const struct strata_option *o, const char *expected,
    struct strata_error *err)
{
	strata_error_set(err, STRATA_ERR_OPTION,
	    "zlib: bad value '%.40s' for %s: expected %s", o->value, o->key,
	    expected);
	if (err)
		err->position = o->position;
	return -1;
}

static int
zlib_config_flush(struct zlib_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	static const char expected[] = "auto, none or every:N (N from 1 to "
	    "1G bytes, k, M, G suffixes allowed)";
	struct strata_option n = *o;
	uint64_t every;

	if (!strcmp(o->value, "auto"))
		c->flush = FLUSH_AUTO;
	else if (!strcmp(o->value, "none"))
		c->flush = FLUSH_NONE;
	else if (!strncmp(o->value, "every:", 6)) {
		n.value = o->value + 6;
		if (strata_opt_uint("zlib", &n, 1, EVERY_MAX, 1, &every,
			NULL) < 0)
			return zlib_bad(o, expected, err);
		c->flush = FLUSH_EVERY;
		c->every = (size_t)every;
	} else
		return zlib_bad(o, expected, err);
	return 0;
}

static int
zlib_config_int(const struct strata_option *o, uint64_t min, uint64_t max,
    int *out, struct strata_error *err)
{
	uint64_t v;

	if (strata_opt_uint("zlib", o, min, max, 0, &v, err) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

static int
zlib_config_one(struct zlib_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	static const char *const formats[] = {"zlib", "gzip", "raw", NULL};
	static const char *const strategies[] = {"default", "filtered",
	    "huffman", "rle", "fixed", NULL};
	static const char *const tails[] = {"error", "allow", NULL};
	const char *k = o->key;
	int v;

	if (!strcmp(k, "format")) {
		if (strata_opt_enum("zlib", o, formats, &v, err) < 0)
			return -1;
		c->format = (enum zlib_format)v;
	} else if (!strcmp(k, "level"))
		return zlib_config_int(o, 0, 9, &c->level, err);
	else if (!strcmp(k, "window"))
		return zlib_config_int(o, 9, 15, &c->window, err);
	else if (!strcmp(k, "memlevel"))
		return zlib_config_int(o, 1, 9, &c->memlevel, err);
	else if (!strcmp(k, "strategy")) {
		/* the names in the order of Z_DEFAULT_STRATEGY .. Z_FIXED */
		if (strata_opt_enum("zlib", o, strategies, &v, err) < 0)
			return -1;
		c->strategy = v;
	} else if (!strcmp(k, "flush"))
		return zlib_config_flush(c, o, err);
	else if (!strcmp(k, "max-ratio"))
		return strata_opt_uint("zlib", o, 0, MAX_RATIO_LIMIT, 0,
		    &c->max_ratio, err);
	else if (!strcmp(k, "max-output"))
		return strata_opt_uint("zlib", o, 0, MAX_OUTPUT_LIMIT, 1,
		    &c->max_output, err);
	else if (!strcmp(k, "tail")) {
		if (strata_opt_enum("zlib", o, tails, &v, err) < 0)
			return -1;
		c->tail = (enum zlib_tail)v;
	} else {
		/* the stack parser checks keys too; a direct caller may not */
		strata_error_set(err, STRATA_ERR_OPTION,
		    "zlib: unknown option '%.40s'", k);
		if (err)
			err->position = o->position;
		return -1;
	}
	return 0;
}

static int
zlib_config(void **cfgp, const struct strata_option *opts, size_t n,
    struct strata_error *err)
{
	struct zlib_cfg *c = strata_malloc_(sizeof(*c));
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	*c = zlib_defaults;
	for (i = 0; i < n; i++) {
		if (zlib_config_one(c, &opts[i], err) < 0) {
			strata_free_(c);
			return -1;
		}
	}
	*cfgp = c;
	return 0;
}

static void *
zlib_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	struct zlib *z = strata_calloc_(1, sizeof(*z));

	if (!z) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	z->cfg = cfg ? cfg : &zlib_defaults;
	z->layer = layer;
	z->owed = Z_NO_FLUSH;
	return z;
}

static void
def_close(struct zlib *z)
{
	if (!z->def)
		return;
	deflateEnd(z->def);
	strata_free_(z->def);
	z->def = NULL;
}

static void
inf_close(struct zlib *z)
{
	if (!z->inf)
		return;
	inflateEnd(z->inf);
	strata_free_(z->inf);
	z->inf = NULL;
}

static void
zlib_destroy(void *ctx)
{
	struct zlib *z = ctx;

	def_close(z);
	inf_close(z);
	strata_free_(z);
}

/* Fail the layer (a context made without one, by a direct caller, just
 * returns BEV_ERROR). */
static enum bufferevent_filter_result
zlib_fail(struct zlib *z, enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum bufferevent_filter_result
zlib_fail(struct zlib *z, enum strata_error_code code, const char *fmt, ...)
{
	char msg[STRATA_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (z->layer)
		strata_layer_fail(z->layer, code, "%s", msg);
	return BEV_ERROR;
}

/* zlib's states come from strata's allocator too. */
static voidpf
zlib_alloc(voidpf opaque, uInt items, uInt size)
{
	(void)opaque;
	/* uninitialised, as zlib's own zcalloc gives it */
	if (size && items > (uInt)-1 / size)
		return Z_NULL;
	return strata_malloc_((size_t)items * size);
}

static void
zlib_free(voidpf opaque, voidpf p)
{
	(void)opaque;
	strata_free_(p);
}

static z_stream *
zstream_new(void)
{
	z_stream *zs = strata_calloc_(1, sizeof(*zs));

	if (zs) {
		zs->zalloc = zlib_alloc;
		zs->zfree = zlib_free;
	}
	return zs;
}

/* windowBits for deflateInit2/inflateInit2: the format picks the wrapper. */
static int
zlib_wbits(enum zlib_format f, int window)
{
	return f == FMT_RAW ? -window : f == FMT_GZIP ? window + 16 : window;
}

/* ---- output side ---- */

/*
 * Make the deflate state. An output side that never carried data and is
 * only being finished gets the smallest state (window 9, memlevel 1, a few
 * KB instead of ~260 KB): it emits an empty stream, valid for any peer.
 */
static int
def_open(struct zlib *z, int small)
{
	const struct zlib_cfg *c = z->cfg;
	int r;

	if (!(z->def = zstream_new()))
		return Z_MEM_ERROR;
	r = deflateInit2(z->def, c->level, Z_DEFLATED,
	    zlib_wbits(c->format, small ? 9 : c->window),
	    small ? 1 : c->memlevel, c->strategy);
	if (r != Z_OK) {
		strata_free_(z->def);
		z->def = NULL;
	}
	return r;
}

/*
 * One deflate() call into fresh space of dst: at most *budget bytes,
 * OUT_CHUNK, and @p want if not 0. Returns deflate's result; *budget goes
 * down by what was written.
 */
static int
def_call(struct zlib *z, struct evbuffer *dst, size_t *budget, int flush,
    size_t want)
{
	z_stream *s = z->def;
	struct evbuffer_iovec v;
	size_t room = *budget < OUT_CHUNK ? *budget : OUT_CHUNK, made;
	int r;

	if (want && room > want)
		room = want;
	if (evbuffer_reserve_space(dst, (ev_ssize_t)room, &v, 1) < 1)
		return Z_MEM_ERROR;
	s->next_out = v.iov_base;
	s->avail_out = (uInt)room;
	r = deflate(s, flush);
	made = room - s->avail_out;
	if (made) {
		v.iov_len = made;
		evbuffer_commit_space(dst, &v, 1);
		z->def_out += made;
		if (*budget != SIZE_MAX)
			*budget -= made;
	}
	return r;
}

/*
 * The space for a call's first deflate(): about what the input (and, for
 * a flush, what was fed since the last one) can come to, so small writes
 * get small chains; later calls get full room if zlib had more to say.
 * Sets *one_call if a sync flush surely fits (deflateBound over all that
 * was fed since the last flush, plus the marker and bit buffer).
 */
static size_t
def_first_room(struct zlib *z, size_t budget, int flush, int *one_call)
{
	z_stream *s = z->def;
	size_t fed = z->since_flush + s->avail_in, bound;

	*one_call = 0;
	if (flush == Z_NO_FLUSH)
		return (size_t)s->avail_in + FLUSH_ROOM * 4;
	if (flush == Z_SYNC_FLUSH && z->sync == SYNC_DATA && fed < OUT_CHUNK) {
		bound = deflateBound(s, (uLong)fed) + FLUSH_ROOM;
		*one_call = bound < OUT_CHUNK && bound <= budget;
		return bound;
	}
	return fed + fed / 8 + FLUSH_ROOM * 4;
}

/*
 * Feed one extent (s->next_in, s->avail_in) with @p flush and call deflate
 * until it is used and zlib has emitted everything the flush asks for.
 * Returns 1 when done, 0 when stopped by the budget, or a zlib error (< 0).
 *
 * zlib's manual says to repeat a Z_SYNC_FLUSH call that filled the output
 * space; but when the marker ended exactly at the end of that space, the
 * repeat writes a second one (how often depends on buffer sizes). So a
 * sync flush is one call when its output surely fits, and otherwise runs
 * in steps, remembered in z->sync across calls: Z_BLOCK until the data is
 * out (repeating it is harmless), Z_SYNC_FLUSH with nothing left to write
 * but the marker, Z_NO_FLUSH to drain what did not fit.
 */
static int
def_piece(struct zlib *z, struct evbuffer *dst, size_t *budget, int flush)
{
	z_stream *s = z->def;
	int r, zf, one_call = 0;
	size_t want;

	for (want = def_first_room(z, *budget, flush, &one_call);; want = 0) {
		if (!*budget)
			return 0;
		zf = flush != Z_SYNC_FLUSH || one_call ? flush
		    : z->sync == SYNC_DATA ? Z_BLOCK
		    : z->sync == SYNC_MARK ? Z_SYNC_FLUSH : Z_NO_FLUSH;
		r = def_call(z, dst, budget, zf, want);
		if (r == Z_STREAM_END)
			return 1;
		if (r == Z_BUF_ERROR && !s->avail_in)
			r = Z_OK; /* nothing left to do */
		if (r != Z_OK)
			return r;
		if (one_call && !s->avail_in && s->avail_out)
			return 1;
		one_call = 0; /* did not fit after all: go in steps */
		if (s->avail_in || flush == Z_FINISH)
			continue;
		if (flush == Z_NO_FLUSH)
			return 1;
		if (!s->avail_out && zf != Z_SYNC_FLUSH)
			continue;
		if (z->sync == SYNC_DATA)
			z->sync = SYNC_MARK;
		else if (z->sync == SYNC_MARK && !s->avail_out)
			z->sync = SYNC_DRAIN;
		else {
			z->sync = SYNC_DATA;
			return 1;
		}
	}
}

/*
 * Deflate the first @p seg bytes of src, the last of them with @p flush
 * (Z_NO_FLUSH, Z_SYNC_FLUSH or Z_FINISH; @p seg may be 0 for a flush
 * alone), and drain what was consumed. Returns 1 if the segment and its
 * flush are complete, 0 if the budget stopped it (an unfinished flush is
 * remembered in z->owed), or a zlib error (< 0).
 */
static int
def_segment(struct zlib *z, struct evbuffer *src, struct evbuffer *dst,
    size_t seg, int flush, size_t *budget)
{
	struct evbuffer_iovec v[PEEK_EXTENTS];
	z_stream *s = z->def;
	size_t fed = 0;
	int n = 0, i = 0, r = 1;

	if (seg)
		n = evbuffer_peek(src, (ev_ssize_t)seg, NULL, v, PEEK_EXTENTS);
	if (n > PEEK_EXTENTS)
		n = PEEK_EXTENTS;
	do {
		size_t len = i < n ? v[i].iov_len : 0;
		int last;

		if (len > seg - fed)
			len = seg - fed;
		last = fed + len == seg;
		s->next_in = len ? v[i].iov_base : NULL;
		s->avail_in = (uInt)len;
		r = def_piece(z, dst, budget, last ? flush : Z_NO_FLUSH);
		fed += len - s->avail_in;
		/* now: the last piece's flush sizes its space by it */
		z->since_flush += len - s->avail_in;
		s->next_in = NULL;
		s->avail_in = 0;
		if (r != 1 || last)
			break;
	} while (++i < n);
	evbuffer_drain(src, fed);
	z->def_in += fed;
	if (fed)
		z->dirty = 1;
	if (r == 1 && fed < seg)
		r = 0; /* more extents than one peek: the caller goes on */
	if (r == 1 && flush != Z_NO_FLUSH) {
		z->dirty = 0;
		z->since_flush = 0;
		z->flushes++;
	}
	z->owed = r == 0 && flush != Z_NO_FLUSH ? flush : Z_NO_FLUSH;
	z->owed_in = r == 0 ? seg - fed : 0;
	return r;
}

/* The next segment to deflate and its flush; 0 if there is nothing. */
static int
def_next(struct zlib *z, size_t len, enum bufferevent_flush_mode mode,
    size_t *seg, int *flush)
{
	const struct zlib_cfg *c = z->cfg;

	if (z->owed != Z_NO_FLUSH) {
		*seg = z->owed_in < len ? z->owed_in : len;
		*flush = z->owed;
	} else if (c->flush == FLUSH_EVERY &&
	    len >= c->every - z->since_flush) {
		*seg = c->every - z->since_flush;
		*flush = Z_SYNC_FLUSH;
	} else if (mode == BEV_FINISHED) {
		*seg = len;
		*flush = Z_FINISH;
	} else if (mode == BEV_FLUSH && (len || z->dirty)) {
		*seg = len;
		*flush = Z_SYNC_FLUSH;
	} else if (len) {
		*seg = len;
		*flush = Z_NO_FLUSH;
	} else
		return 0;
	return 1;
}

static enum bufferevent_filter_result
def_error(struct zlib *z, int r)
{
	if (r == Z_MEM_ERROR)
		return zlib_fail(z, STRATA_ERR_NOMEM,
		    "out of memory (deflate, after %llu bytes in)",
		    (unsigned long long)z->def_in);
	return zlib_fail(z, STRATA_ERR_FILTER, "deflate failed: %s (%d)",
	    z->def && z->def->msg ? z->def->msg : zError(r), r);
}

/*
 * Output: compress src into dst. BEV_NORMAL feeds what src holds (and
 * flushes every N bytes with flush=every:N); BEV_FLUSH ends with a sync
 * flush if anything was fed since the last one; BEV_FINISHED ends the
 * stream. With flush=auto, a BEV_NORMAL call that used up src asks the
 * engine for one BEV_FLUSH pass once the writer is idle.
 */
static enum bufferevent_filter_result
zlib_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct zlib *z = ctx;
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim, seg;
	uint64_t in0 = z->def_in, out0 = z->def_out, in1, out1;
	int flush, r;

	if (z->def_ended) {
		if (evbuffer_get_length(src))
			return zlib_fail(z, STRATA_ERR_STATE,
			    "data written after the end of the stream");
		return BEV_NEED_MORE;
	}
	while (def_next(z, evbuffer_get_length(src), mode, &seg, &flush)) {
		if (!z->def && (r = def_open(z, !seg && !z->def_in &&
				    flush == Z_FINISH)) != Z_OK)
			return def_error(z, r);
		in1 = z->def_in;
		out1 = z->def_out;
		r = def_segment(z, src, dst, seg, flush, &budget);
		if (r < 0)
			return def_error(z, r);
		if (!r && z->def_in == in1 && z->def_out == out1)
			break; /* stopped by the budget */
		if (r && flush == Z_FINISH) {
			z->def_ended = 1;
			def_close(z);
			break;
		}
	}
	if (mode == BEV_NORMAL && z->cfg->flush == FLUSH_AUTO && z->layer &&
	    z->def_in > in0 && z->dirty && !evbuffer_get_length(src))
		strata_layer_flush_later(z->layer);
	return z->def_in > in0 || z->def_out > out0 ? BEV_OK : BEV_NEED_MORE;
}

/* ---- input side ---- */

static int
inf_open(struct zlib *z)
{
	const struct zlib_cfg *c = z->cfg;
	int r;

	if (!(z->inf = zstream_new()))
		return Z_MEM_ERROR;
	r = inflateInit2(z->inf, zlib_wbits(c->format, c->window));
	if (r != Z_OK) {
		strata_free_(z->inf);
		z->inf = NULL;
	}
	return r;
}

static enum bufferevent_filter_result
inf_fail(struct zlib *z, enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum bufferevent_filter_result
inf_fail(struct zlib *z, enum strata_error_code code, const char *fmt, ...)
{
	char msg[STRATA_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	z->inf_failed = 1; /* the state is freed once the call is over */
	return zlib_fail(z, code, "%s", msg);
}

/* A zlib error from inflate(), at compressed byte @p at. */
static enum bufferevent_filter_result
inf_error(struct zlib *z, int r, uint64_t at)
{
	const char *m = z->inf && z->inf->msg ? z->inf->msg : zError(r);

	if (r == Z_MEM_ERROR)
		return inf_fail(z, STRATA_ERR_NOMEM,
		    "out of memory (inflate, at compressed byte %llu)",
		    (unsigned long long)at);
	if (r == Z_NEED_DICT)
		m = "the stream needs a preset dictionary (not supported)";
	return inf_fail(z, STRATA_ERR_FILTER,
	    "corrupt input at compressed byte %llu: %s",
	    (unsigned long long)at, m);
}

/*
 * Output space for the next inflate call: the budget, INF_CHUNK, a guess
 * for a call's first piece (@p first), and max-output (0 when it is
 * reached).
 */
static size_t
inf_room(const struct zlib *z, size_t budget, int first)
{
	uint64_t cap = z->cfg->max_output;
	size_t room = budget < INF_CHUNK ? budget : INF_CHUNK;
	size_t guess = (size_t)z->inf->avail_in * 4;

	if (guess < INF_SMALL)
		guess = INF_SMALL;
	if (first && room > guess)
		room = guess;
	if (cap && cap - z->inf_out < room)
		room = (size_t)(cap - z->inf_out);
	return room;
}

/* Did the output just pass max-ratio times the input? */
static int
inf_ratio_over(const struct zlib *z, uint64_t out, uint64_t in)
{
	uint64_t r = z->cfg->max_ratio;

	return r && out >= RATIO_FLOOR && in <= UINT64_MAX / r && out > r * in;
}

/* State of one pass over src. */
struct inf_pass {
	size_t budget;
	size_t used;	/* compressed bytes consumed in this call */
	size_t made;	/* bytes written to dst */
	uint64_t at;	/* offset of next_in in the whole compressed stream */
};

/* The stream (or a gzip member) ended. */
static void
inf_end(struct zlib *z)
{
	z->inf_mid = 0;
	z->inf_more = 0;
	z->members++;
	if (z->cfg->format == FMT_GZIP)
		inflateReset(z->inf); /* the next member may follow */
	else
		z->inf_ended = 1; /* freed once the pass is over */
}

/*
 * With max-output reached: does the stream have another byte for us? One
 * inflate call into a scratch byte tells (a trailer or a header may still
 * be consumed). Returns BEV_ERROR, BEV_OK (input used) or BEV_NEED_MORE.
 */
static enum bufferevent_filter_result
inf_probe_cap(struct zlib *z, struct inf_pass *p)
{
	z_stream *s = z->inf;
	unsigned char scratch;
	uInt before = s->avail_in;
	size_t used;
	int r;

	s->next_out = &scratch;
	s->avail_out = 1;
	r = inflate(s, Z_NO_FLUSH);
	used = before - s->avail_in;
	p->at += used;
	if ((r < 0 && r != Z_BUF_ERROR) || r == Z_NEED_DICT)
		return inf_error(z, r, p->at);
	if (!s->avail_out)
		return inf_fail(z, STRATA_ERR_FILTER,
		    "inflated output exceeds max-output=%llu bytes (at "
		    "compressed byte %llu)",
		    (unsigned long long)z->cfg->max_output,
		    (unsigned long long)p->at);
	p->used += used;
	z->inf_in += used;
	z->inf_more = 0;
	if (r == Z_STREAM_END) {
		inf_end(z);
		return BEV_OK;
	}
	return used ? BEV_OK : BEV_NEED_MORE;
}

/*
 * One inflate() call over the extent at s->next_in into fresh space of
 * dst. Returns BEV_OK (go on), BEV_NEED_MORE (nothing more from this
 * extent, or no room) or BEV_ERROR.
 */
static enum bufferevent_filter_result
inf_call(struct zlib *z, struct evbuffer *dst, struct inf_pass *p)
{
	z_stream *s = z->inf;
	struct evbuffer_iovec v;
	uInt before = s->avail_in;
	size_t room = inf_room(z, p->budget, !p->made), made, used;
	int r;

	if (before)
		z->inf_mid = 1;
	if (!room) /* the budget is used, or max-output reached */
		return p->budget ? inf_probe_cap(z, p) : BEV_NEED_MORE;
	if (evbuffer_reserve_space(dst, (ev_ssize_t)room, &v, 1) < 1)
		return inf_error(z, Z_MEM_ERROR, p->at);
	s->next_out = v.iov_base;
	s->avail_out = (uInt)room;
	r = inflate(s, Z_NO_FLUSH);
	made = room - s->avail_out;
	used = before - s->avail_in;
	p->at += used;
	/* a bomb's last piece is withheld; what zlib decoded before it saw
	 * corrupt input goes up, as it would have with other buffer sizes */
	if (inf_ratio_over(z, z->inf_out + made, z->inf_in + used))
		return inf_fail(z, STRATA_ERR_FILTER,
		    "inflated output exceeds max-ratio=%llu (%llu bytes from "
		    "%llu compressed, at compressed byte %llu)",
		    (unsigned long long)z->cfg->max_ratio,
		    (unsigned long long)(z->inf_out + made),
		    (unsigned long long)(z->inf_in + used),
		    (unsigned long long)p->at);
	if (made) {
		v.iov_len = made;
		evbuffer_commit_space(dst, &v, 1);
	}
	p->used += used;
	p->made += made;
	z->inf_in += used;
	z->inf_out += made;
	if (p->budget != SIZE_MAX)
		p->budget -= made;
	z->inf_more = !s->avail_out;
	if ((r < 0 && r != Z_BUF_ERROR) || r == Z_NEED_DICT)
		return inf_error(z, r, p->at);
	if (r == Z_STREAM_END) {
		inf_end(z);
		return BEV_NEED_MORE;
	}
	return made || used ? BEV_OK : BEV_NEED_MORE;
}

/*
 * Inflate one extent of src (@p len bytes at @p base, or none when only
 * output held in zlib is wanted) until zlib has nothing more to give for
 * it or the budget is used. Returns BEV_OK to go on to the next extent,
 * BEV_NEED_MORE to stop, BEV_ERROR.
 */
static enum bufferevent_filter_result
inf_extent(struct zlib *z, struct evbuffer *dst, struct inf_pass *p,
    void *base, size_t len)
{
	enum bufferevent_filter_result r;
	z_stream *s;

	for (;;) {
		if (z->inf_ended && len)
			return inf_fail(z, STRATA_ERR_FILTER,
			    "data after the end of the stream at compressed "
			    "byte %llu", (unsigned long long)p->at);
		if (!z->inf) {
			int zr = inf_open(z);
			if (zr != Z_OK)
				return inf_error(z, zr, p->at);
		}
		s = z->inf;
		s->next_in = base;
		s->avail_in = (uInt)len;
		r = inf_call(z, dst, p);
		if (len)
			base = (unsigned char *)base + (len - s->avail_in);
		len = s->avail_in;
		s->next_in = NULL;
		s->avail_in = 0;
		if (r == BEV_ERROR)
			return r;
		if (!p->budget)
			return BEV_NEED_MORE;
		/* a member or the stream ended with input left: go on */
		if (r == BEV_NEED_MORE && !(len && !z->inf_mid))
			return len ? BEV_NEED_MORE : BEV_OK;
		if (!len && !z->inf_more)
			return BEV_OK;
	}
}

/* Inflate what src holds (and what zlib holds) into dst. */
static enum bufferevent_filter_result
inf_run(struct zlib *z, struct evbuffer *src, struct evbuffer *dst,
    struct inf_pass *p)
{
	struct evbuffer_iovec v[PEEK_EXTENTS];
	enum bufferevent_filter_result r = BEV_OK;
	int n, i;

	p->at = z->inf_in;
	if (!evbuffer_get_length(src))
		return inf_extent(z, dst, p, NULL, 0);
	do {
		size_t before = p->used;

		n = evbuffer_peek(src, -1, NULL, v, PEEK_EXTENTS);
		if (n > PEEK_EXTENTS)
			n = PEEK_EXTENTS;
		for (i = 0; i < n && r == BEV_OK; i++) {
			size_t mark = p->used;
			r = inf_extent(z, dst, p, v[i].iov_base,
			    v[i].iov_len);
			/* stopped inside this extent: later ones wait */
			if (r == BEV_OK && p->used - mark < v[i].iov_len)
				r = BEV_NEED_MORE;
		}
		evbuffer_drain(src, p->used - before);
	} while (r == BEV_OK && evbuffer_get_length(src) && n);
	return r;
}

/* BEV_FINISHED with everything inflated: was the end marker there? */
static enum bufferevent_filter_result
inf_finish(struct zlib *z)
{
	if (!z->inf_mid || z->cfg->tail == TAIL_ALLOW)
		return BEV_NEED_MORE;
	return inf_fail(z, STRATA_ERR_TRUNCATED,
	    "stream ended without its end marker (truncated after %llu "
	    "compressed bytes)", (unsigned long long)z->inf_in);
}

/*
 * Input: inflate src into dst, draining zlib completely each call.
 * Progress is reported (BEV_OK) before the end of the stream is judged in
 * the next BEV_FINISHED call.
 */
static enum bufferevent_filter_result
zlib_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct zlib *z = ctx;
	struct inf_pass p = {lim < 0 ? SIZE_MAX : (size_t)lim, 0, 0, 0};

	if (z->inf_failed)
		return BEV_ERROR;
	if ((evbuffer_get_length(src) || z->inf_more) && p.budget)
		inf_run(z, src, dst, &p);
	if (z->inf_ended || z->inf_failed)
		inf_close(z);
	if (z->inf_failed)
		return BEV_ERROR;
	if (p.used || p.made)
		return BEV_OK;
	if (mode == BEV_FINISHED && !evbuffer_get_length(src))
		return inf_finish(z);
	return BEV_NEED_MORE;
}

/* ---- statistics ---- */

static void
zlib_stat_ratio(struct strata_stats_sink *sink, const char *key,
    uint64_t plain, uint64_t packed)
{
	if (packed)
		strata_stat(sink, key, "%.2f", (double)plain / (double)packed);
	else
		strata_stat(sink, key, "-");
}

static void
zlib_stats(const void *ctx, struct strata_stats_sink *sink)
{
	static const char *const formats[] = {"zlib", "gzip", "raw"};
	const struct zlib *z = ctx;

	strata_stat(sink, "format", "%s", formats[z->cfg->format]);
	strata_stat(sink, "level", "%d", z->cfg->level);
	strata_stat(sink, "deflate_in", "%llu",
	    (unsigned long long)z->def_in);
	strata_stat(sink, "deflate_out", "%llu",
	    (unsigned long long)z->def_out);
	zlib_stat_ratio(sink, "deflate_ratio", z->def_in, z->def_out);
	strata_stat(sink, "inflate_in", "%llu",
	    (unsigned long long)z->inf_in);
	strata_stat(sink, "inflate_out", "%llu",
	    (unsigned long long)z->inf_out);
	zlib_stat_ratio(sink, "inflate_ratio", z->inf_out, z->inf_in);
	strata_stat(sink, "flushes", "%llu", (unsigned long long)z->flushes);
	if (z->cfg->format == FMT_GZIP)
		strata_stat(sink, "members", "%llu",
		    (unsigned long long)z->members);
}

const struct strata_filter_type strata_zlib_filter_ = {
	.name = "zlib",
	.summary = "deflate compression: zlib, gzip or raw, with a bomb "
		   "guard",
	.options = zlib_options,
	.config = zlib_config,
	.config_free = free,
	.create = zlib_create,
	.destroy = zlib_destroy,
	.input = zlib_input,
	.output = zlib_output,
	.stats = zlib_stats,
};
