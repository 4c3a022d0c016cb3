/*
 * frames: length-prefixed frames, a strata filter written against the
 * public plugin API only, the way a user writes one (see frames.h).
 *
 * Wire format: a 4-byte big-endian payload length, then the payload.
 *
 * mode=message (default): both sides pass whole frames, header included,
 * and nothing else. A length above max-frame is an error before any byte
 * of that frame moves; a stream that ends inside a frame is a truncation
 * error. Frames are never split to honour dst_limit: one that does not fit
 * waits, unless dst is empty (otherwise a frame larger than the limit could
 * never move).
 *
 * A partial frame is taken out of src into the side's own `held` buffer.
 * The buffers below a layer are capped (the engine stops filling one at
 * 256 KiB and the transport stops reading at 256 KiB), so a frame larger
 * than that cap could otherwise never become whole in src and the stack
 * would stall. `held` is bounded by max-frame, which is what the option is
 * for.
 *
 * mode=stream: the headers are stripped on input (the layer above sees one
 * byte stream) and the output is cut into frames of at most max-frame
 * bytes, so other filters can run on top.
 *
 * No allocation per frame: headers are read with evbuffer_copyout, data is
 * moved with evbuffer_remove_buffer / evbuffer_add_buffer, and pieces under
 * 4 KiB are copied into the destination's last chain (move_bytes).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"

#define FRAMES_MAX_DEFAULT (1u << 20)
#define FRAMES_MAX_LIMIT (1u << 30)
/* Pieces smaller than this are copied, not moved (move_bytes). */
#define FRAMES_COPY_BELOW 4096

enum frames_mode { MODE_MESSAGE, MODE_STREAM };

struct frames_cfg {
	uint32_t max_frame;
	enum frames_mode mode;
};

/* One direction of a layer. */
struct frames_side {
	struct evbuffer *held; /* message mode: the head of a partial frame */
	uint64_t offset;       /* stream bytes taken from src so far */
	uint64_t frame_off;    /* offset of the current partial frame */
	uint32_t frame_len;    /* its payload length */
	size_t missing;	       /* its bytes not yet taken; 0: between frames */
	uint64_t frames;       /* whole frames passed on */
	int output;	       /* names the side in error messages */
};

struct frames {
	const struct frames_cfg *cfg;
	struct strata_layer *layer; /* NULL when run outside strata */
	struct frames_side in, out;
	int failed; /* libevent alone calls again after BEV_ERROR */
};

static const struct strata_option_doc frames_options[] = {
    {"max-frame", "1M", "largest payload in bytes (k, M, G suffixes)"},
    {"mode", "message",
	"message: whole frames up and down; stream: "
	"payload bytes up, output cut into frames"},
    {NULL, NULL, NULL},
};

/* ---- options and context ---- */

static int
frames_option(struct frames_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	static const char *const modes[] = {"message", "stream", NULL};
	uint64_t v;
	int m;

	if (!strcmp(o->key, "max-frame")) {
		if (strata_opt_uint(
			"frames", o, 1, FRAMES_MAX_LIMIT, 1, &v, err) < 0)
			return -1;
		c->max_frame = (uint32_t)v;
		return 0;
	}
	if (!strcmp(o->key, "mode")) {
		if (strata_opt_enum("frames", o, modes, &m, err) < 0)
			return -1;
		c->mode = (enum frames_mode)m;
		return 0;
	}
	/* strata rejects unknown keys first; this covers direct callers */
	strata_error_set(
	    err, STRATA_ERR_OPTION, "frames: unknown option '%s'", o->key);
	return -1;
}

static int
frames_config(void **cfgp, const struct strata_option *opts, size_t n,
    struct strata_error *err)
{
	struct frames_cfg *c = calloc(1, sizeof(*c));
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->max_frame = FRAMES_MAX_DEFAULT;
	c->mode = MODE_MESSAGE;
	for (i = 0; i < n; i++) {
		if (frames_option(c, &opts[i], err) < 0) {
			free(c);
			return -1;
		}
	}
	*cfgp = c;
	return 0;
}

static void
frames_destroy(void *ctx)
{
	struct frames *f = ctx;

	if (!f)
		return;
	if (f->in.held)
		evbuffer_free(f->in.held);
	if (f->out.held)
		evbuffer_free(f->out.held);
	free(f);
}

static void *
frames_create(
    const void *cfg, struct strata_layer *layer, struct strata_error *err)
{
	static const struct frames_cfg dflt = {
	    FRAMES_MAX_DEFAULT, MODE_MESSAGE};
	struct frames *f = calloc(1, sizeof(*f));

	if (!f)
		goto out;
	f->cfg = cfg ? cfg : &dflt;
	f->layer = layer;
	f->out.output = 1;
	f->in.held = evbuffer_new();
	f->out.held = evbuffer_new();
	if (f->in.held && f->out.held)
		return f;
out:
	frames_destroy(f);
	strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
	return NULL;
}

/* ---- headers and errors ---- */

static uint32_t
get_be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static void
put_be32(unsigned char *b, uint32_t v)
{
	b[0] = (unsigned char)(v >> 24);
	b[1] = (unsigned char)(v >> 16);
	b[2] = (unsigned char)(v >> 8);
	b[3] = (unsigned char)v;
}

/* Read the length in the header at @p ptr (NULL: the front). Fails if
 * the 4 bytes are not there, or the buffer cannot be read from (libevent
 * refuses copyout on a buffer whose start is frozen). */
static int
peek_len(struct evbuffer *src, struct evbuffer_ptr *ptr, uint32_t *len)
{
	unsigned char h[FRAMES_HEADER];

	if (evbuffer_copyout_from(src, ptr, h, sizeof(h)) != FRAMES_HEADER)
		return -1;
	*len = get_be32(h);
	return 0;
}

static enum bufferevent_filter_result frames_fail(
    struct frames *f, enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fail for good; strata prefixes "frames: " and raises the event. */
static enum bufferevent_filter_result
frames_fail(struct frames *f, enum strata_error_code code, const char *fmt, ...)
{
	char msg[STRATA_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	f->failed = 1;
	if (f->layer)
		strata_layer_fail(f->layer, code, "%s", msg);
	return BEV_ERROR;
}

static enum bufferevent_filter_result
frames_too_big(
    struct frames *f, const struct frames_side *s, uint32_t len, uint64_t at)
{
	return frames_fail(f, STRATA_ERR_FILTER,
	    "frame of %" PRIu32 " bytes exceeds max-frame %" PRIu32
	    " at %soffset %" PRIu64,
	    len, f->cfg->max_frame, s->output ? "output " : "", at);
}

/* The stream (or, on the output side, the writer) ended mid-frame. */
static enum bufferevent_filter_result
frames_truncated(
    struct frames *f, const struct frames_side *s, struct evbuffer *src)
{
	const char *what = s->output ? "output" : "stream";
	const char *side = s->output ? "output " : "";
	uint64_t size = FRAMES_HEADER + (uint64_t)s->frame_len;

	if (!s->missing)
		return frames_fail(f, STRATA_ERR_TRUNCATED,
		    "%s ended inside a frame header (%zu of %d bytes at "
		    "%soffset %" PRIu64 ")",
		    what, evbuffer_get_length(src), FRAMES_HEADER, side,
		    s->offset);
	return frames_fail(f, STRATA_ERR_TRUNCATED,
	    "%s ended inside a frame (%" PRIu64 " of %" PRIu64 " bytes of "
	    "the frame at %soffset %" PRIu64 ")",
	    what, size - (uint64_t)s->missing, size, side, s->frame_off);
}

/*
 * Move @p n bytes from @p src to the end of @p dst. Small pieces are
 * copied into dst's last chain rather than moving src's chains: moving all
 * of src hands over its last chain too, and a peer that trickles a byte
 * per packet would then leave a whole chain (a kilobyte or more) per byte
 * wherever the bytes wait (our `held`, or a layer above holding a partial
 * line), a thousand times the memory max-frame or a line limit bounds.
 */
static void
move_bytes(struct evbuffer *src, struct evbuffer *dst, size_t n)
{
	struct evbuffer_iovec v;
	int got;

	if (!n)
		return;
	if (n >= FRAMES_COPY_BELOW ||
	    evbuffer_reserve_space(dst, (ev_ssize_t)n, &v, 1) < 1) {
		evbuffer_remove_buffer(src, dst, n);
		return;
	}
	got = evbuffer_remove(src, v.iov_base, n);
	v.iov_len = got > 0 ? (size_t)got : 0;
	evbuffer_commit_space(dst, &v, 1);
}

/* ---- message mode (both sides) ---- */

/*
 * Feed the held partial frame from @p src and pass it on once whole and
 * within *@p budget (or dst is empty). When the frame is whole but has no
 * room, its last byte stays in src: the engine re-runs a layer after the
 * user drains only while bytes wait below it, so that byte is what brings
 * this frame back. Returns 1 if it moved bytes.
 */
static int
held_feed(struct frames_side *s, struct evbuffer *src, struct evbuffer *dst,
    size_t *budget)
{
	size_t avail = evbuffer_get_length(src);
	size_t total = evbuffer_get_length(s->held) + s->missing;
	size_t take = s->missing;

	if (avail < take)
		take = avail;
	else if (total > *budget && evbuffer_get_length(dst))
		take--;
	move_bytes(src, s->held, take);
	s->offset += take;
	s->missing -= take;
	if (s->missing)
		return take > 0;
	evbuffer_add_buffer(dst, s->held);
	s->frames++;
	*budget -= total < *budget ? total : *budget;
	return 1;
}

/* What frames_scan found at the front of src. */
struct frames_scan {
	size_t whole;	   /* bytes of the whole frames that fit */
	uint64_t count;	   /* how many frames that is */
	int next;	   /* a complete header follows them */
	uint32_t next_len; /* its length */
	int blocked;	   /* the next frame is whole but does not fit */
};

/*
 * Measure the whole frames at the front of @p src that fit @p budget; the
 * first one goes even over budget when dst is empty (@p dst_len == 0).
 * Stops at a length above max-frame without judging it, so the frames
 * before a bad one are still delivered.
 */
static void
frames_scan(const struct frames *f, struct evbuffer *src, size_t dst_len,
    size_t budget, struct frames_scan *sc)
{
	size_t len = evbuffer_get_length(src);
	struct evbuffer_ptr p;

	memset(sc, 0, sizeof(*sc));
	if (evbuffer_ptr_set(src, &p, 0, EVBUFFER_PTR_SET) < 0)
		return;
	while (len - sc->whole >= FRAMES_HEADER) {
		uint32_t plen;
		size_t size;

		if (peek_len(src, &p, &plen) < 0)
			return;
		size = FRAMES_HEADER + (size_t)plen;
		sc->next = 1;
		sc->next_len = plen;
		if (plen > f->cfg->max_frame || len - sc->whole < size)
			return;
		if (sc->whole + size > budget && (sc->whole || dst_len)) {
			sc->blocked = 1;
			return;
		}
		sc->next = 0;
		sc->whole += size;
		sc->count++;
		/* moving by an offset from here does not rewalk the chain */
		if (evbuffer_ptr_set(src, &p, size, EVBUFFER_PTR_ADD) < 0)
			return;
	}
}

/* Take the partial frame that is all of @p src into s->held (see the top
 * of the file for why). */
static void
hold_partial(struct frames_side *s, struct evbuffer *src, uint32_t plen)
{
	size_t have = evbuffer_get_length(src);

	s->frame_off = s->offset;
	s->frame_len = plen;
	s->missing = FRAMES_HEADER + (size_t)plen - have;
	s->offset += have;
	move_bytes(src, s->held, have);
}

static enum bufferevent_filter_result
frames_pass(struct frames *f, struct frames_side *s, struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim, enum bufferevent_flush_mode mode)
{
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim;
	struct frames_scan sc = {0, 0, 0, 0, 0};
	int progress = 0;

	if (s->missing) {
		progress = held_feed(s, src, dst, &budget);
		/* still partial: src is empty, or the frame has no room */
		sc.blocked = s->missing && evbuffer_get_length(src);
		if (s->missing)
			goto out;
	}
	frames_scan(f, src, evbuffer_get_length(dst), budget, &sc);
	if (sc.whole) {
		move_bytes(src, dst, sc.whole);
		s->offset += sc.whole;
		s->frames += sc.count;
		progress = 1;
	}
	if (sc.next && sc.next_len > f->cfg->max_frame) {
		if (progress)
			return BEV_OK; /* deliver the good ones first */
		return frames_too_big(f, s, sc.next_len, s->offset);
	}
	if (sc.next && !sc.blocked) {
		hold_partial(s, src, sc.next_len);
		progress = 1;
	}
out:
	if (mode == BEV_FINISHED && !sc.blocked &&
	    (s->missing || evbuffer_get_length(src)))
		return frames_truncated(f, s, src);
	return progress ? BEV_OK : BEV_NEED_MORE;
}

/* ---- stream mode ---- */

/* Take the header at the front of @p src. Returns 1 if taken, 0 if it is
 * not all there yet, -1 on a length above max-frame. */
static int
take_header(struct frames *f, struct frames_side *s, struct evbuffer *src)
{
	uint32_t plen;

	if (peek_len(src, NULL, &plen) < 0)
		return 0;
	if (plen > f->cfg->max_frame) {
		frames_too_big(f, s, plen, s->offset);
		return -1;
	}
	evbuffer_drain(src, FRAMES_HEADER);
	s->frame_off = s->offset;
	s->frame_len = plen;
	s->missing = plen;
	s->offset += FRAMES_HEADER;
	if (!plen)
		s->frames++;
	return 1;
}

/*
 * Input: strip the headers and pass payload bytes up as they arrive. The
 * layer above sees a byte stream, so cutting it at dst_limit is fine.
 */
static enum bufferevent_filter_result
frames_unwrap(struct frames *f, struct frames_side *s, struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim, enum bufferevent_flush_mode mode)
{
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim;
	int progress = 0, blocked, r;

	for (;;) {
		size_t n = evbuffer_get_length(src);

		if (!s->missing) {
			if ((r = take_header(f, s, src)) < 0)
				return BEV_ERROR;
			if (!r)
				break;
			progress = 1;
			continue;
		}
		n = n < s->missing ? n : s->missing;
		n = n < budget ? n : budget;
		if (!n)
			break;
		move_bytes(src, dst, n);
		s->offset += n;
		s->missing -= n;
		budget -= n;
		s->frames += !s->missing;
		progress = 1;
	}
	/* a payload left in src for lack of room is not a truncation */
	blocked = s->missing && evbuffer_get_length(src) && !budget;
	if (mode == BEV_FINISHED && !blocked &&
	    (s->missing || evbuffer_get_length(src)))
		return frames_truncated(f, s, src);
	return progress ? BEV_OK : BEV_NEED_MORE;
}

/*
 * Output: cut what the layer above wrote into frames of at most max-frame
 * bytes, each as large as src and dst_limit allow (the header counts).
 * One frame per call; the engine calls again while src has bytes.
 */
static enum bufferevent_filter_result
frames_wrap(struct frames *f, struct frames_side *s, struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim)
{
	size_t n = evbuffer_get_length(src);
	unsigned char h[FRAMES_HEADER];

	if (n > f->cfg->max_frame)
		n = f->cfg->max_frame;
	if (!n)
		return BEV_NEED_MORE;
	if (lim >= 0 && (size_t)lim < FRAMES_HEADER + n) {
		if ((size_t)lim > FRAMES_HEADER)
			n = (size_t)lim - FRAMES_HEADER;
		else if (evbuffer_get_length(dst))
			return BEV_NEED_MORE;
	}
	put_be32(h, (uint32_t)n);
	evbuffer_add(dst, h, sizeof(h));
	move_bytes(src, dst, n);
	s->offset += n;
	s->frames++;
	return BEV_OK;
}

/* ---- the two filter functions ---- */

static enum bufferevent_filter_result
frames_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct frames *f = ctx;

	if (f->failed)
		return BEV_ERROR;
	if (f->cfg->mode == MODE_STREAM)
		return frames_unwrap(f, &f->in, src, dst, lim, mode);
	return frames_pass(f, &f->in, src, dst, lim, mode);
}

static enum bufferevent_filter_result
frames_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct frames *f = ctx;

	if (f->failed)
		return BEV_ERROR;
	if (f->cfg->mode == MODE_STREAM)
		return frames_wrap(f, &f->out, src, dst, lim);
	return frames_pass(f, &f->out, src, dst, lim, mode);
}

static void
frames_stats(const void *ctx, struct strata_stats_sink *sink)
{
	const struct frames *f = ctx;

	strata_stat(sink, "mode", "%s",
	    f->cfg->mode == MODE_STREAM ? "stream" : "message");
	strata_stat(sink, "frames_in", "%" PRIu64, f->in.frames);
	strata_stat(sink, "frames_out", "%" PRIu64, f->out.frames);
}

const struct strata_filter_type frames_filter = {
    .name = "frames",
    .summary = "length-prefixed frames (4-byte big-endian length)",
    .options = frames_options,
    .config = frames_config,
    .config_free = free,
    .create = frames_create,
    .destroy = frames_destroy,
    .input = frames_input,
    .output = frames_output,
    .stats = frames_stats,
};

/* ---- helpers for programs ---- */

int
frames_register(struct strata_error *err)
{
	if (strata_find_filter(frames_filter.name) == &frames_filter)
		return 0;
	return strata_register_filter(&frames_filter, err);
}

/* Copy @p len bytes into the extents @p v, from extent *@p i, byte *@p at. */
static void
iov_put(struct evbuffer_iovec *v, int *i, size_t *at, const void *p, size_t len)
{
	const unsigned char *b = p;

	while (len) {
		size_t room = v[*i].iov_len - *at;
		size_t k = len < room ? len : room;

		memcpy((unsigned char *)v[*i].iov_base + *at, b, k);
		b += k;
		len -= k;
		*at += k;
		if (len) {
			++*i;
			*at = 0;
		}
	}
}

int
frames_write(struct bufferevent *bev, const void *p, uint32_t len)
{
	struct evbuffer *out;
	struct evbuffer_iovec v[2];
	unsigned char h[FRAMES_HEADER];
	size_t at = 0;
	int i = 0, rc = -1;

	if (!bev || (len && !p))
		return -1;
	out = bufferevent_get_output(bev);
	put_be32(h, len);
	/* One reserve/commit is one append, so the filter below sees the
	 * whole frame at once; two bufferevent_write calls would run it on
	 * a lone header first. */
	bufferevent_lock(bev);
	if (evbuffer_reserve_space(out, FRAMES_HEADER + (ev_ssize_t)len, v, 2) >
	    0) {
		iov_put(v, &i, &at, h, sizeof(h));
		if (len)
			iov_put(v, &i, &at, p, len);
		v[i].iov_len = at;
		rc = evbuffer_commit_space(out, v, i + 1);
	}
	bufferevent_unlock(bev);
	return rc;
}

int
frames_read(struct evbuffer *in, struct evbuffer *payload_out)
{
	size_t len, before;
	uint32_t plen;

	if (!in || in == payload_out)
		return -1;
	if (evbuffer_get_length(in) < FRAMES_HEADER)
		return 0;
	if (peek_len(in, NULL, &plen) < 0)
		return -1;
	len = plen;
	if (evbuffer_get_length(in) - FRAMES_HEADER < len)
		return 0;
	evbuffer_drain(in, FRAMES_HEADER);
	if (!payload_out)
		return evbuffer_drain(in, len) == 0 ? 1 : -1;
	before = evbuffer_get_length(payload_out);
	evbuffer_remove_buffer(in, payload_out, len);
	return evbuffer_get_length(payload_out) - before == len ? 1 : -1;
}
