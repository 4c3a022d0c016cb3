/*
 * fuzz target "zlib": the input side of the zlib filter (inflate), in
 * every format, against zlib itself.
 *
 * Input: three option bytes, then the compressed bytes.
 *   byte 0: format (bits 0-1: zlib, gzip, raw, zlib), tail=allow (bit 2),
 *           the input through a real stack too (bit 3), window 15 or
 *           9 + (byte 1 % 7) (bit 4), the caps (bits 5-6: max-output=64k;
 *           1M; max-output=1100k with max-ratio=200; 4k)
 *   byte 1: the window (see above); dst_limit of each call (bits 4-7:
 *           none, or 1, 2, 3, 7, 64, 100, 1000, 4096, 16384, ...)
 *   byte 2: feed size (0: everything at once, N: pieces of 1..N bytes)
 *
 * The filter functions are called directly, as the engine does (with a
 * context made without a layer), and the contract is checked on every
 * call: BEV_OK only with progress, never more than dst_limit appended.
 * Then the result is compared with one inflate over the whole input:
 * everything decodable is delivered before the end (nothing waits in
 * zlib), a clean stream ends without error and gives exactly zlib's
 * output, a truncated one fails only with tail=error, a corrupt one fails
 * after a prefix of zlib's output, a capped one fails at the cap.
 *
 * With bit 3 the same bytes also go through "zlib(...)" in a stack over a
 * bufferevent pair (errors through strata_layer_fail, BEV_FINISHED from a
 * real EOF), with the same comparison at the end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "internal.h"
#include "fuzz.h"

enum { FMT_ZLIB, FMT_GZIP, FMT_RAW };
enum ref_end { REF_END, REF_TRUNCATED, REF_CORRUPT };

struct opts {
	int format, tail_allow, window;
	int may_fail; /* zlib a byte at a time finds it corrupt (see
			 ref_inflate): the filter may fail too */
	uint64_t max_output, max_ratio;
};

/* Most bytes a reference run makes before it stops (over every cap). */
#define REF_MAX (2u << 20)

/*
 * Inflate @p d with zlib into @p out (up to REF_MAX bytes), gzip members
 * one after another, as the filter promises to: all at once, or (@p
 * strict) one byte at a time. zlib is not quite the same both ways: with
 * plenty of input and output its fast path takes a distance beyond a
 * window under 15 bits as long as the bytes are still in the output
 * buffer, which the slow path (a byte at a time) calls "invalid distance
 * too far back". The filter may fall either side, by how its input comes.
 */
static enum ref_end
ref_inflate(const struct opts *o, const uint8_t *d, size_t len, int strict,
    struct evbuffer *out)
{
	/* all at once: one call into room for everything, the most any
	 * buffer sizes can make zlib accept */
	static unsigned char buf[REF_MAX + 65536];
	size_t used = 0;
	z_stream s;
	int wbits = o->format == FMT_RAW    ? -o->window
		    : o->format == FMT_GZIP ? o->window + 16
					    : o->window;
	enum ref_end end = REF_END;
	size_t pos = 0;
	int r;

	if (!len)
		return REF_END;
	memset(&s, 0, sizeof(s));
	FZ_CHECK(inflateInit2(&s, wbits) == Z_OK, "inflateInit2 failed");
	for (;;) {
		size_t give = strict && len > pos ? 1 : len - pos;

		s.next_in = (unsigned char *)d + pos;
		s.avail_in = (uInt)give;
		s.next_out = buf + used;
		s.avail_out = (uInt)(sizeof(buf) - used);
		r = inflate(&s, Z_NO_FLUSH);
		pos += give - s.avail_in;
		used = sizeof(buf) - s.avail_out;
		if (used > REF_MAX)
			break;
		if (r == Z_STREAM_END) {
			if (pos == len)
				break;
			if (o->format != FMT_GZIP) {
				end = REF_CORRUPT; /* data after the end */
				break;
			}
			inflateReset(&s);
			continue;
		}
		if (r == Z_BUF_ERROR) {
			end = pos < len ? REF_CORRUPT : REF_TRUNCATED;
			break;
		}
		if (r != Z_OK) {
			end = REF_CORRUPT;
			break;
		}
	}
	inflateEnd(&s);
	evbuffer_add(out, buf, used);
	return end;
}

/* ---- the filter functions, called directly ---- */

struct direct {
	const struct strata_filter_type *t;
	void *cfg, *ctx;
	struct evbuffer *src, *dst, *out;
	ev_ssize_t lim;
	int failed;
	unsigned long calls;
};

/* Call input() until it stops making progress; checks the contract. */
static void
direct_run(struct direct *x, enum bufferevent_flush_mode mode)
{
	while (!x->failed) {
		size_t s0 = evbuffer_get_length(x->src);
		size_t d0 = evbuffer_get_length(x->dst), s1, d1;
		enum bufferevent_filter_result r;

		FZ_CHECK(++x->calls < 10000000, "the filter never stops");
		r = x->t->input(x->src, x->dst, x->lim, mode, x->ctx);
		s1 = evbuffer_get_length(x->src);
		d1 = evbuffer_get_length(x->dst);
		FZ_CHECK(x->lim < 0 || d1 - d0 <= (size_t)x->lim,
		    "appended %zu bytes, dst_limit %zd", d1 - d0, x->lim);
		FZ_CHECK(s1 <= s0, "src grew in an input call");
		FZ_CHECK(r != BEV_OK || s1 != s0 || d1 != d0,
		    "BEV_OK without progress");
		/* the layer above takes what came up */
		evbuffer_add_buffer(x->out, x->dst);
		if (r == BEV_ERROR) {
			x->failed = 1;
			break;
		}
		if (r == BEV_NEED_MORE)
			break;
	}
}

static void
compare(const struct opts *o, const char *what, struct evbuffer *got,
    int failed, struct evbuffer *want, enum ref_end end, int at_eof)
{
	size_t g = evbuffer_get_length(got), w = evbuffer_get_length(want);
	uint64_t cap = o->max_output;
	int capped = cap && w > cap;
	int ratio = o->max_ratio && w >= (1u << 20);

	fz_log("%s%s: got %zu bytes%s; zlib: %zu bytes, %s", what,
	    at_eof ? " at EOF" : "", g, failed ? ", failed" : "", w,
	    end == REF_END	   ? "ends"
	    : end == REF_TRUNCATED ? "truncated"
				   : "corrupt");
	FZ_CHECK(fz_is_prefix(got, want),
	    "%s: output (%zu bytes) is not a prefix of zlib's (%zu)", what, g,
	    w);
	if (failed && o->may_fail)
		return;
	if (capped || ratio) {
		/* the bomb guard: stops at the cap (the ratio check, which
		 * only starts at 1 MiB, stops earlier) */
		if (failed)
			FZ_CHECK(ratio || !at_eof || g == cap,
			    "%s: stopped at "
			    "%zu bytes, max-output %llu",
			    what, g, (unsigned long long)cap);
		else
			FZ_CHECK(!at_eof,
			    "%s: %zu bytes from a stream that "
			    "inflates to more than max-output %llu",
			    what, g, (unsigned long long)cap);
		return;
	}
	if (end == REF_CORRUPT) {
		FZ_CHECK(failed || !at_eof, "%s: corrupt input accepted", what);
		return;
	}
	FZ_CHECK(!failed || (at_eof && end == REF_TRUNCATED && !o->tail_allow),
	    "%s: failed on a stream zlib %s", what,
	    end == REF_END ? "decodes whole" : "finds only truncated");
	FZ_CHECK(g == w, "%s: %zu of the %zu decodable bytes delivered%s", what,
	    g, w, at_eof ? "" : " before the end");
	if (at_eof && end == REF_TRUNCATED && !o->tail_allow)
		FZ_CHECK(failed, "%s: a truncated stream ended cleanly", what);
}

static void
run_direct(const struct opts *o, const char *opts_text,
    const struct strata_option *opt, size_t nopt, ev_ssize_t lim, unsigned feed,
    const uint8_t *d, size_t len, struct evbuffer *want, enum ref_end end)
{
	struct direct x = {
	    &strata_zlib_filter_, NULL, NULL, NULL, NULL, NULL, lim, 0, 0};
	struct strata_error err;
	struct fz_rng rng = {len};
	size_t off = 0;

	FZ_CHECK(x.t->config(&x.cfg, opt, nopt, &err) == 0, "%s: %s", opts_text,
	    err.message);
	x.ctx = x.t->create(x.cfg, NULL, &err);
	FZ_CHECK(x.ctx != NULL, "%s", err.message);
	x.src = evbuffer_new();
	x.dst = evbuffer_new();
	x.out = evbuffer_new();
	while (off < len && !x.failed) {
		size_t n = len - off;
		if (feed)
			n = fz_chunk(&rng, n, feed);
		evbuffer_add(x.src, d + off, n);
		off += n;
		direct_run(&x, BEV_NORMAL);
	}
	compare(o, "direct", x.out, x.failed, want, end, 0);
	direct_run(&x, BEV_FINISHED);
	compare(o, "direct", x.out, x.failed, want, end, 1);
	x.t->destroy(x.ctx);
	x.t->config_free(x.cfg);
	evbuffer_free(x.src);
	evbuffer_free(x.dst);
	evbuffer_free(x.out);
}

static void
run_stack(const struct opts *o, const char *opts_text, unsigned feed,
    const uint8_t *d, size_t len, struct evbuffer *want, enum ref_end end)
{
	struct fz_stack s;
	struct fz_rng rng = {len};
	char filters[300];
	size_t off = 0;

	snprintf(filters, sizeof(filters), "zlib(%s)", opts_text);
	FZ_CHECK(
	    fz_stack_open(&s, filters, 0) == 0, "%s: %s", filters, s.errmsg);
	while (off < len && !s.error) {
		size_t n = len - off;
		if (feed)
			n = fz_chunk(&rng, n, feed);
		fz_stack_feed(&s, d + off, n);
		off += n;
	}
	compare(o, "stack", s.got, s.error, want, end, 0);
	fz_stack_peer_eof(&s);
	compare(o, "stack", s.got, s.error, want, end, 1);
	FZ_CHECK(s.error || s.eof, "stack: neither EOF nor an error");
	if (s.error)
		fz_log("stack: %s", s.errmsg);
	fz_stack_close(&s);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const formats[] = {"zlib", "gzip", "raw"};
	static const uint64_t outs[] = {65536, 1u << 20, 1100u << 10, 4096};
	static const ev_ssize_t lims[] = {-1, 1, 2, 3, 7, 64, 100, 1000, 4096,
	    16384, 65535, 65536, 65537, 200000, -1, -1};
	struct fz_in in = {data, size};
	uint8_t b0 = fz_u8(&in), b1 = fz_u8(&in), feed = fz_u8(&in);
	struct opts o;
	struct strata_option opt[6];
	char text[6][32], opts_text[256];
	struct evbuffer *want;
	enum ref_end end;
	size_t nopt = 0, i, n = 0;
	int caps = (b0 >> 5) & 3;

	if (in.n > 1 << 16)
		return 0;
	o.format = (b0 & 3) % 3;
	o.tail_allow = !!(b0 & 4);
	o.window = (b0 & 16) ? 9 + b1 % 7 : 15;
	o.max_output = outs[caps];
	o.max_ratio = caps == 2 ? 200 : 0;
	snprintf(text[0], sizeof(text[0]), "%s", formats[o.format]);
	snprintf(text[1], sizeof(text[1]), "%d", o.window);
	snprintf(
	    text[2], sizeof(text[2]), "%llu", (unsigned long long)o.max_output);
	snprintf(
	    text[3], sizeof(text[3]), "%llu", (unsigned long long)o.max_ratio);
	snprintf(
	    text[4], sizeof(text[4]), "%s", o.tail_allow ? "allow" : "error");
	opt[nopt++] = (struct strata_option){"format", text[0], 0};
	opt[nopt++] = (struct strata_option){"window", text[1], 0};
	opt[nopt++] = (struct strata_option){"max-output", text[2], 0};
	opt[nopt++] = (struct strata_option){"max-ratio", text[3], 0};
	opt[nopt++] = (struct strata_option){"tail", text[4], 0};
	for (i = 0; i < nopt; i++)
		n += (size_t)snprintf(opts_text + n, sizeof(opts_text) - n,
		    "%s%s=%s", i ? ", " : "", opt[i].key, opt[i].value);

	want = evbuffer_new();
	end = ref_inflate(&o, in.p, in.n, 0, want);
	o.may_fail = 0;
	if (o.window < 15 && end != REF_CORRUPT) {
		struct evbuffer *strict = evbuffer_new();
		o.may_fail = ref_inflate(&o, in.p, in.n, 1, strict) ==
		    REF_CORRUPT;
		evbuffer_free(strict);
	}
	fz_log("zlib(%s): %zu compressed bytes, dst_limit %zd, feed %u",
	    opts_text, in.n, lims[b1 >> 4], feed);
	run_direct(&o, opts_text, opt, nopt, lims[b1 >> 4], feed, in.p, in.n,
	    want, end);
	if (b0 & 8)
		run_stack(&o, opts_text, feed, in.p, in.n, want, end);
	evbuffer_free(want);
	return 0;
}
