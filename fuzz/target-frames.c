/*
 * fuzz target "frames": the length-prefixed frames example filter
 * (examples/frames.c), against a reference reading of the same bytes.
 *
 * Input: three option bytes, then the bytes the filter reads.
 *   byte 0: mode=stream (bit 0), the input side through a real stack too
 *           (bit 1), max-frame (bits 2-4: 1 2 4 16 100 1000 65536 1M),
 *           the output side instead of the input side (bit 5)
 *   byte 1: dst_limit of each call (bits 0-3: none, 1, 2, 3, 4, 5, 7, 8,
 *           64, 100, 1000, 4096, 65536, none...), when the layer above
 *           takes what came up (bits 4-5: after every call, once dst
 *           holds 100 bytes, once it holds 5000)
 *   byte 2: feed size (0: everything at once, N: pieces of 1..N bytes)
 *
 * The filter functions are called directly with a context made without a
 * layer, as strata's engine calls them (BEV_FINISHED without a limit),
 * and the contract is checked on every call. The result must be what the
 * reference gives: whole frames (message mode) or their payloads (stream
 * mode, input side), all of them before the end, an error at a length
 * over max-frame (after the frames before it) and at a stream that ends
 * inside a frame. The output side in stream mode must cut its input into
 * frames of 1..max-frame bytes that give the input back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"
#include "fuzz.h"

struct opts {
	int stream, output;
	uint32_t max;
};

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/*
 * What the input side (or the output side in message mode) must pass on
 * for @p d; 1 if it must fail. Without @p eof more may follow.
 */
static int
ref_frames(const struct opts *o, const uint8_t *d, size_t len, int eof,
    struct evbuffer *out)
{
	size_t pos = 0;

	while (len - pos >= FRAMES_HEADER) {
		uint32_t plen = be32(d + pos);
		size_t have = len - pos - FRAMES_HEADER;

		if (plen > o->max)
			return 1;
		if (have < plen) {
			if (o->stream)
				evbuffer_add(
				    out, d + pos + FRAMES_HEADER, have);
			return eof;
		}
		evbuffer_add(out, o->stream ? d + pos + FRAMES_HEADER : d + pos,
		    o->stream ? plen : FRAMES_HEADER + plen);
		pos += FRAMES_HEADER + plen;
	}
	return eof && pos < len;
}

/* ---- the filter functions, called directly ---- */

struct direct {
	const struct opts *o;
	void *cfg, *ctx;
	bufferevent_filter_cb fn;
	struct evbuffer *src, *dst, *out;
	ev_ssize_t lim;
	size_t keep; /* dst is taken once it holds this much */
	int failed;
	unsigned long calls;
};

static void
take_dst(struct direct *x, size_t keep)
{
	if (evbuffer_get_length(x->dst) >= keep)
		evbuffer_add_buffer(x->out, x->dst);
}

static void
direct_run(struct direct *x, enum bufferevent_flush_mode mode)
{
	/* strata's engine calls flushes without a limit */
	ev_ssize_t lim = mode == BEV_NORMAL ? x->lim : -1;
	int strict = x->o->stream && !x->o->output, retried = 0;

	while (!x->failed) {
		size_t s0 = evbuffer_get_length(x->src), s1;
		size_t d0 = evbuffer_get_length(x->dst), d1, most;
		enum bufferevent_filter_result r;

		FZ_CHECK(++x->calls < 10000000, "the filter never stops");
		r = x->fn(x->src, x->dst, lim, mode, x->ctx);
		s1 = evbuffer_get_length(x->src);
		d1 = evbuffer_get_length(x->dst);
		FZ_CHECK(s1 <= s0, "src grew");
		FZ_CHECK(d1 >= d0, "dst shrank");
		/* a whole frame (message mode) or a header and its payload
		 * (stream output) may go over the limit into an empty dst;
		 * stream input cuts at the limit */
		most = (size_t)lim;
		if (!strict && !d0)
			most += FRAMES_HEADER + (size_t)x->o->max;
		FZ_CHECK(lim < 0 || d1 - d0 <= most,
		    "appended %zu bytes, dst_limit %zd, dst held %zu", d1 - d0,
		    lim, d0);
		FZ_CHECK(r != BEV_OK || s1 != s0 || d1 != d0,
		    "BEV_OK without progress");
		take_dst(x, x->keep);
		if (r == BEV_ERROR) {
			x->failed = 1;
			break;
		}
		if (r == BEV_OK) {
			retried = 0;
			continue;
		}
		/* no room: the layer above takes what it has, then the engine
		 * runs this layer again (bytes wait below it) */
		if (d1 && s1 && !retried) {
			take_dst(x, 0);
			retried = 1;
			continue;
		}
		break;
	}
}

/* Stream-mode output: frames of 1..max bytes whose payloads are @p in. */
static void
check_wrapped(const struct opts *o, struct evbuffer *wire, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(wire), pos = 0;
	const uint8_t *w = evbuffer_pullup(wire, -1);
	struct evbuffer *payload = evbuffer_new();

	while (pos < len) {
		uint32_t plen;

		FZ_CHECK(len - pos >= FRAMES_HEADER, "output ends in a header");
		plen = be32(w + pos);
		FZ_CHECK(plen >= 1 && plen <= o->max,
		    "output frame of %u bytes, max-frame %u", plen, o->max);
		FZ_CHECK(len - pos - FRAMES_HEADER >= plen,
		    "output ends inside a frame");
		evbuffer_add(payload, w + pos + FRAMES_HEADER, plen);
		pos += FRAMES_HEADER + plen;
	}
	FZ_CHECK(fz_equal(payload, in),
	    "stream output carries %zu bytes of "
	    "the %zu written",
	    evbuffer_get_length(payload), evbuffer_get_length(in));
	evbuffer_free(payload);
}

static void
compare(const char *what, struct evbuffer *got, int failed,
    struct evbuffer *want, int ref_err)
{
	fz_log("%s: got %zu bytes%s; reference %zu bytes%s", what,
	    evbuffer_get_length(got), failed ? ", failed" : "",
	    evbuffer_get_length(want), ref_err ? ", fails" : "");
	FZ_CHECK(failed == ref_err, "%s: the filter %s, the reference %s", what,
	    failed ? "failed" : "did not fail", ref_err ? "fails" : "does not");
	FZ_CHECK(fz_equal(got, want), "%s: got %zu bytes, the reference %zu",
	    what, evbuffer_get_length(got), evbuffer_get_length(want));
}

static void
run_direct(const struct opts *o, const struct strata_option *opt, size_t n,
    ev_ssize_t lim, size_t keep, unsigned feed, const uint8_t *d, size_t len)
{
	struct direct x;
	struct strata_error err;
	struct fz_rng rng = {len};
	struct evbuffer *want = evbuffer_new(), *fed = evbuffer_new();
	size_t off = 0;
	int ref_err;

	memset(&x, 0, sizeof(x));
	x.o = o;
	x.lim = lim;
	x.keep = keep;
	x.fn = o->output ? frames_filter.output : frames_filter.input;
	FZ_CHECK(
	    frames_filter.config(&x.cfg, opt, n, &err) == 0, "%s", err.message);
	x.ctx = frames_filter.create(x.cfg, NULL, &err);
	FZ_CHECK(x.ctx != NULL, "%s", err.message);
	x.src = evbuffer_new();
	x.dst = evbuffer_new();
	x.out = evbuffer_new();
	while (off < len && !x.failed) {
		size_t k = feed ? fz_chunk(&rng, len - off, feed) : len - off;
		evbuffer_add(x.src, d + off, k);
		evbuffer_add(fed, d + off, k);
		off += k;
		direct_run(&x, BEV_NORMAL);
	}
	take_dst(&x, 0);
	if (o->output && o->stream) {
		/* everything written goes out, cut into frames */
		FZ_CHECK(!x.failed && !evbuffer_get_length(x.src),
		    "stream output kept %zu bytes", evbuffer_get_length(x.src));
		check_wrapped(o, x.out, fed);
	} else {
		ref_err = ref_frames(o, d, len, 0, want);
		compare("direct", x.out, x.failed, want, ref_err);
		direct_run(&x, BEV_FINISHED);
		take_dst(&x, 0);
		evbuffer_drain(want, evbuffer_get_length(want));
		ref_err = ref_frames(o, d, len, 1, want);
		compare("direct at the end", x.out, x.failed, want, ref_err);
	}
	frames_filter.destroy(x.ctx);
	frames_filter.config_free(x.cfg);
	evbuffer_free(x.src);
	evbuffer_free(x.dst);
	evbuffer_free(x.out);
	evbuffer_free(want);
	evbuffer_free(fed);
}

/* ---- the input side in a stack ---- */

/* Message mode: the top's input only ever holds whole frames. */
static void
check_whole_frames(struct fz_stack *s, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(s->top);
	size_t len = evbuffer_get_length(in), pos = 0;
	const uint8_t *p;

	(void)arg;
	if (!len)
		return;
	p = evbuffer_pullup(in, -1);
	while (pos < len) {
		FZ_CHECK(len - pos >= FRAMES_HEADER &&
			     len - pos - FRAMES_HEADER >= be32(p + pos),
		    "the top's input (%zu bytes) ends inside a frame", len);
		pos += FRAMES_HEADER + be32(p + pos);
	}
}

static void
run_stack(const struct opts *o, unsigned feed, const uint8_t *d, size_t len)
{
	struct fz_stack s;
	struct fz_rng rng = {len};
	struct evbuffer *want = evbuffer_new();
	char filters[128];
	size_t off = 0;

	snprintf(filters, sizeof(filters), "frames(max-frame=%u, mode=%s)",
	    o->max, o->stream ? "stream" : "message");
	FZ_CHECK(
	    fz_stack_open(&s, filters, 0) == 0, "%s: %s", filters, s.errmsg);
	if (!o->stream)
		s.on_read = check_whole_frames;
	while (off < len && !s.error) {
		size_t k = feed ? fz_chunk(&rng, len - off, feed) : len - off;
		fz_stack_feed(&s, d + off, k);
		off += k;
	}
	compare("stack", s.got, s.error, want, ref_frames(o, d, len, 0, want));
	evbuffer_drain(want, evbuffer_get_length(want));
	fz_stack_peer_eof(&s);
	compare("stack at EOF", s.got, s.error, want,
	    ref_frames(o, d, len, 1, want));
	FZ_CHECK(s.error || s.eof, "stack: neither EOF nor an error");
	if (s.error)
		fz_log("stack: %s", s.errmsg);
	evbuffer_free(want);
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
	static const uint32_t maxes[] = {
	    1, 2, 4, 16, 100, 1000, 65536, 1u << 20};
	static const ev_ssize_t lims[] = {
	    -1, 1, 2, 3, 4, 5, 7, 8, 64, 100, 1000, 4096, 65536, -1, -1, -1};
	static const size_t keeps[] = {0, 100, 5000, 0};
	struct fz_in in = {data, size};
	uint8_t b0 = fz_u8(&in), b1 = fz_u8(&in), feed = fz_u8(&in);
	struct opts o = {b0 & 1, !!(b0 & 32), maxes[(b0 >> 2) & 7]};
	struct strata_option opt[2];
	char max[16];

	if (in.n > 1 << 16)
		return 0;
	snprintf(max, sizeof(max), "%u", o.max);
	opt[0] = (struct strata_option){"max-frame", max, 0};
	opt[1] =
	    (struct strata_option){"mode", o.stream ? "stream" : "message", 0};
	fz_log("frames(max-frame=%s, mode=%s) %s side, %zu bytes, dst_limit "
	       "%zd, keep %zu, feed %u",
	    max, opt[1].value, o.output ? "output" : "input", in.n,
	    lims[b1 & 15], keeps[(b1 >> 4) & 3], feed);
	run_direct(
	    &o, opt, 2, lims[b1 & 15], keeps[(b1 >> 4) & 3], feed, in.p, in.n);
	if ((b0 & 2) && !o.output)
		run_stack(&o, feed, in.p, in.n);
	return 0;
}
