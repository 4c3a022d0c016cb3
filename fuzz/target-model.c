/*
 * fuzz target "model": two stacks with the same filter list, connected by
 * a bufferevent pair or a socketpair, driven by a random sequence of
 * operations; what one end writes must reach the other unchanged.
 *
 * The filter list (from the wire up) is 1 to 4 layers from pass(chunk=N),
 * zlib (random format, level, window, memlevel, strategy, flush policy)
 * and frames(mode=stream, max-frame=N), optionally topped by lines (random
 * eol, max, tail) or frames in message mode: both ends use the same list,
 * so each is the other's inverse and the application data must come out
 * as it went in (lines: a "\n" ends an unterminated last line, and with
 * eol=any a CR before a LF is part of the terminator; the written data
 * keeps lines within max).
 *
 * Input: a header (layers, options, transport, callback options), then
 * operations, each an opcode byte and its arguments, on either end:
 * write (generated data of a given size and kind; whole frames for a
 * message-mode top), bufferevent_flush(EV_WRITE) with BEV_NORMAL,
 * BEV_FLUSH or BEV_FINISHED, run the loop, the reader drains N bytes (or
 * frames), enable/disable EV_READ and EV_WRITE, a read high watermark,
 * reading in the callback or not, bufferevent_flush(EV_READ), an abrupt
 * bufferevent_free, a graceful strata_close (socketpairs only).
 *
 * Checks, while running: the reader's data is always a prefix of what was
 * written (as transformed above); a lines top holds whole lines only, a
 * message-mode frames top whole frames only. At the end every end still
 * open finishes its output and reads everything: unless an end was freed
 * abruptly, no error anywhere, each reader got exactly what the other end
 * wrote, all of it before EOF; a strata_close'd end's data arrives whole
 * too, and its close completes. After an abrupt free only the prefix
 * checks hold (truncation errors are then expected).
 *
 * Work is bounded: at most 300 operations and 256 KiB written per input
 * (16 KiB when a layer moves a few bytes per call, and less when the
 * layers could make more than about 256 KiB of it on the wire).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frames.h"
#include "fuzz.h"

#define MAX_OPS 300
/* Bytes written per input, all ends together; far less when a layer
 * moves a few bytes per call (pass(chunk=1), frames of 1 byte). */
#define MAX_WRITTEN (256u << 10)
#define MAX_WRITTEN_SLOW (16u << 10)
/* ... and so that the wire carries at most about this much: a sync
 * flush per byte and 1-byte frames multiply the bytes (up to 400 times
 * with both, twice). */
#define MAX_WIRE (256u << 10)

enum top_kind { TOP_NONE, TOP_LINES, TOP_FRAMES };
enum { EOL_LF, EOL_CRLF, EOL_ANY };

struct end {
	struct model *m;
	int idx;
	struct bufferevent *top;
	struct evbuffer *sent;	/* all the application wrote */
	struct evbuffer *exp;	/* what the other end must read of it */
	struct evbuffer *got;	/* all the application read */
	size_t checked;		/* bytes of `got` already compared */
	size_t nl_scan, nl_end; /* before_last_line(): searched, found */
	size_t line_len;	/* bytes of the current line in `sent` */
	int cr_pending;		/* eol=any: a CR not yet in `exp` */
	size_t eof_len;		/* got + unread input when EOF came */
	int auto_read;		/* read everything in the read callback */
	int finished, freed, closing, closed, close_delivered;
	int eof, error, connected;
	char errmsg[STRATA_ERROR_MAX];
};

struct model {
	struct event_base *base;
	struct end e[2];
	int sockets;
	int direct;	/* sockets through strata_connect("pipe:...") */
	enum top_kind top;
	int eol;
	size_t line_max;
	uint32_t frame_max;
	int relaxed; /* an end was freed abruptly */
	size_t written, budget;
	unsigned expand; /* how many wire bytes a byte may become */
	uint64_t events;
	struct fz_rng rng;
	char filters[512];
};

/* ---- building the filter list ---- */

static void
add_layer(struct model *m, struct fz_in *in, size_t *n)
{
	static const char *const formats[] = {"zlib", "gzip", "raw", "zlib"};
	static const char *const strategies[] = {"default", "filtered",
	    "huffman", "rle", "fixed", "default", "default", "default"};
	static const char *const flushes[] = {"auto", "none", "every:1",
	    "every:100", "every:4096", "auto", "auto", "auto"};
	static const unsigned chunks[] = {0, 1, 3, 1000};
	static const unsigned fmax[] = {1, 7, 100, 65536};
	uint8_t k = fz_u8(in), a = fz_u8(in), b = fz_u8(in);
	size_t len = sizeof(m->filters);

	switch (k % 3) {
	case 0:
		*n += (size_t)snprintf(m->filters + *n, len - *n,
		    "pass(chunk=%u) | ", chunks[a & 3]);
		if (chunks[a & 3] && chunks[a & 3] < 100)
			m->budget = MAX_WRITTEN_SLOW;
		break;
	case 1:
		*n += (size_t)snprintf(m->filters + *n, len - *n,
		    "zlib(format=%s, level=%d, window=%d, memlevel=%d, "
		    "strategy=%s, flush=%s) | ",
		    formats[a & 3], (a >> 2) % 10, 9 + (b & 7) % 7,
		    1 + (b >> 3) % 9,
		    strategies[(a >> 6) & 3 ? (a >> 6) & 7 : 0],
		    flushes[(b >> 5) & 7]);
		if (((b >> 5) & 7) == 2 || ((b >> 5) & 7) == 3)
			m->budget = MAX_WRITTEN_SLOW; /* a flush per byte */
		/* a stored block and a sync marker per byte: 12 */
		m->expand *= ((b >> 5) & 7) == 2 ? 12 : 2;
		break;
	default:
		*n += (size_t)snprintf(m->filters + *n, len - *n,
		    "frames(mode=stream, max-frame=%u) | ", fmax[a & 3]);
		if (fmax[a & 3] < 100)
			m->budget = MAX_WRITTEN_SLOW;
		m->expand *= fmax[a & 3] == 1 ? 5 : 2;
	}
}

static void
build_filters(struct model *m, struct fz_in *in)
{
	static const size_t lmax[] = {1, 3, 100, 65536};
	static const uint32_t fmax[] = {1, 5, 1000, 65536};
	static const char *const eols[] = {"lf", "crlf", "any"};
	uint8_t h = fz_u8(in), t = fz_u8(in);
	size_t n = 0, layers = 1 + (h & 3), i;

	m->budget = MAX_WRITTEN;
	m->expand = 1;
	for (i = 0; i < layers; i++)
		add_layer(m, in, &n);
	if (m->budget > MAX_WIRE / m->expand)
		m->budget = MAX_WIRE / m->expand;
	m->top = (enum top_kind)((h >> 2) % 3);
	if (m->top == TOP_LINES) {
		m->eol = (t & 3) % 3;
		m->line_max = lmax[(t >> 2) & 3];
		snprintf(m->filters + n, sizeof(m->filters) - n,
		    "lines(eol=%s, max=%zu, tail=%s)", eols[m->eol],
		    m->line_max, (t & 16) ? "error" : "deliver");
	} else if (m->top == TOP_FRAMES) {
		m->frame_max = fmax[(t >> 2) & 3];
		snprintf(m->filters + n, sizeof(m->filters) - n,
		    "frames(max-frame=%u)", m->frame_max);
	} else
		m->filters[n - 3] = 0; /* the last " | " */
}

/* ---- what a reader must get ---- */

/*
 * Append what end @p w wrote to what the other end must read: the same
 * bytes, except that with a lines top and eol=any a CR before a LF is part
 * of the terminator (held in cr_pending until the next byte tells).
 */
static void
exp_add(struct model *m, struct end *w, const uint8_t *p, size_t len)
{
	size_t i;

	if (m->top != TOP_LINES || m->eol != EOL_ANY) {
		evbuffer_add(w->exp, p, len);
		return;
	}
	for (i = 0; i < len; i++) {
		if (w->cr_pending && p[i] != '\n')
			evbuffer_add(w->exp, "\r", 1);
		w->cr_pending = p[i] == '\r';
		if (!w->cr_pending)
			evbuffer_add(w->exp, p + i, 1);
	}
}

/* With a lines top: the last line written has no terminator yet (the
 * writer's lines layer adds one when it finishes). */
static int
line_open(const struct model *m, struct end *w)
{
	size_t n = evbuffer_get_length(w->exp);
	struct evbuffer_ptr p;
	char last = '\n';

	if (m->top != TOP_LINES)
		return 0;
	if (w->cr_pending)
		return 1;
	if (n) {
		evbuffer_ptr_set(w->exp, &p, n - 1, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(w->exp, &p, &last, 1);
	}
	return last != '\n';
}

/* Are bytes [from, to) of @p a and @p b the same? */
static int
same_range(struct evbuffer *a, struct evbuffer *b, size_t from, size_t to)
{
	uint8_t x[4096], y[4096];
	struct evbuffer_ptr pa, pb;

	while (from < to) {
		size_t n = to - from < sizeof(x) ? to - from : sizeof(x);
		evbuffer_ptr_set(a, &pa, from, EVBUFFER_PTR_SET);
		evbuffer_ptr_set(b, &pb, from, EVBUFFER_PTR_SET);
		if (evbuffer_copyout_from(a, &pa, x, n) != (ev_ssize_t)n ||
		    evbuffer_copyout_from(b, &pb, y, n) != (ev_ssize_t)n ||
		    memcmp(x, y, n))
			return 0;
		from += n;
	}
	return 1;
}

/*
 * Bytes of what @p r read before its last line (a line the reader may have
 * got cut short, its tail delivered at an abrupt EOF). Found as it comes:
 * only the bytes read since the last call are searched.
 */
static size_t
before_last_line(struct end *r)
{
	size_t len = evbuffer_get_length(r->got);
	struct evbuffer_ptr p, q;

	/* a "\n" as the very last byte ends the last line: not yet */
	while (len && r->nl_scan + 1 < len) {
		evbuffer_ptr_set(r->got, &p, r->nl_scan, EVBUFFER_PTR_SET);
		q = evbuffer_search_range(r->got, "\n", 1, &p, NULL);
		if (q.pos < 0 || (size_t)q.pos + 1 >= len) {
			r->nl_scan = len - 1;
			break;
		}
		r->nl_end = (size_t)q.pos + 1;
		r->nl_scan = r->nl_end;
	}
	return r->nl_end;
}

/*
 * What end @p r read so far fits what the other end wrote: a prefix of it
 * (plus the terminator a lines writer adds at its end). Compared as it
 * comes: both only grow.
 */
static void
check_prefix(struct model *m, struct end *r)
{
	struct end *w = &m->e[!r->idx];
	size_t g = evbuffer_get_length(r->got);
	size_t x = evbuffer_get_length(w->exp), upto = g < x ? g : x;

	if (m->relaxed && m->top == TOP_LINES) {
		/* after an abrupt end, lines may deliver a cut line at EOF
		 * (in the read callback before the EOF event): the lines
		 * before it must still be right */
		size_t n = before_last_line(r);
		FZ_CHECK(
		    n <= x && (n <= r->checked ||
				  same_range(r->got, w->exp, r->checked, n)),
		    "%s: end %d read lines that end %d did not write",
		    m->filters, r->idx, w->idx);
		if (n > r->checked)
			r->checked = n;
		return;
	}
	FZ_CHECK(same_range(r->got, w->exp, r->checked, upto),
	    "%s: end %d read %zu bytes that are not what end %d wrote "
	    "(differs within bytes %zu to %zu)",
	    m->filters, r->idx, g, w->idx, r->checked, upto);
	r->checked = upto;
	if (g > x) {
		struct evbuffer_ptr p;
		char last = 0;
		evbuffer_ptr_set(r->got, &p, g - 1, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(r->got, &p, &last, 1);
		FZ_CHECK(g == x + 1 && last == '\n' && w->finished &&
			     line_open(m, w),
		    "%s: end %d read %zu bytes, end %d wrote %zu", m->filters,
		    r->idx, g, w->idx, x);
	}
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* A lines top holds whole lines only, a frames top whole frames only. */
static void
check_top_input(struct model *m, struct end *r)
{
	struct evbuffer *in = bufferevent_get_input(r->top);
	size_t len = evbuffer_get_length(in), pos = 0;
	const uint8_t *p;

	if (!len || m->top == TOP_NONE)
		return;
	p = evbuffer_pullup(in, -1);
	if (m->top == TOP_LINES) {
		FZ_CHECK(p[len - 1] == '\n',
		    "%s: end %d's input (%zu bytes) "
		    "ends inside a line",
		    m->filters, r->idx, len);
		return;
	}
	while (pos < len) {
		FZ_CHECK(len - pos >= FRAMES_HEADER &&
			     len - pos - FRAMES_HEADER >= be32(p + pos),
		    "%s: end %d's input (%zu bytes) ends inside a frame",
		    m->filters, r->idx, len);
		pos += FRAMES_HEADER + be32(p + pos);
	}
}

/* The reader takes up to @p n bytes (a frames top: whole frames). */
static void
take(struct end *r, size_t n)
{
	struct evbuffer *in = bufferevent_get_input(r->top);

	check_top_input(r->m, r);
	if (r->m->top != TOP_FRAMES) {
		/* copied, not moved: under a read high watermark of 2 the
		 * input comes a byte at a time, and moving each chain made
		 * `got` a list of thousands of tiny chains that every check
		 * walks from the start (a fuzzer timeout, in the harness) */
		char buf[4096];
		while (n) {
			int k = evbuffer_remove(in, buf,
			    n < sizeof(buf) ? n : sizeof(buf));
			if (k <= 0)
				break;
			evbuffer_add(r->got, buf, (size_t)k);
			n -= (size_t)k;
		}
		return;
	}
	while (n--) {
		size_t before = evbuffer_get_length(in);
		uint32_t plen;
		unsigned char h[FRAMES_HEADER];
		if (evbuffer_copyout(in, h, sizeof(h)) < FRAMES_HEADER)
			break;
		plen = be32(h);
		if (before < FRAMES_HEADER + (size_t)plen)
			break;
		evbuffer_remove_buffer(in, r->got, FRAMES_HEADER + plen);
	}
}

/* ---- callbacks ---- */

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct end *r = arg;

	(void)bev;
	r->m->events++;
	check_top_input(r->m, r);
	if (r->auto_read)
		take(r, (size_t)-1);
	check_prefix(r->m, r);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct end *r = arg;

	r->m->events++;
	if (what & BEV_EVENT_CONNECTED)
		r->connected = 1;
	if ((what & BEV_EVENT_EOF) && !r->eof) {
		r->eof = 1;
		r->eof_len = evbuffer_get_length(r->got) +
			     evbuffer_get_length(bufferevent_get_input(bev));
	}
	if ((what & BEV_EVENT_ERROR) && !r->error) {
		const char *msg = strata_last_error(bev);
		r->error = 1;
		snprintf(
		    r->errmsg, sizeof(r->errmsg), "%s", msg ? msg : "(none)");
		fz_check_text(r->m->filters, r->errmsg);
		fz_log("end %d: error: %s", r->idx, r->errmsg);
	}
}

static void
on_closed(int delivered, void *arg)
{
	struct end *r = arg;

	r->m->events++;
	r->closed = 1;
	r->close_delivered = delivered;
}

static uint64_t
model_sig(void *arg)
{
	struct model *m = arg;
	uint64_t v = m->events * 1000003u;
	int i;

	for (i = 0; i < 2; i++) {
		struct end *r = &m->e[i];
		v += evbuffer_get_length(r->got) * (7u + (unsigned)i);
		if (r->top && r->closing && !r->closed)
			v += fz_stack_progress(r->top) * 37;
		if (r->top && !r->closing)
			v +=
			    fz_stack_progress(r->top) * 31 +
			    evbuffer_get_length(bufferevent_get_input(r->top)) *
				13 +
			    evbuffer_get_length(
				bufferevent_get_output(r->top)) *
				17;
	}
	return v;
}

static void
pump(struct model *m)
{
	int i;

	fz_pump(m->base, 200, model_sig, m);
	for (i = 0; i < 2; i++)
		if (m->e[i].top && !m->e[i].closing)
			check_top_input(m, &m->e[i]);
}

/* ---- operations ---- */

static int
live(const struct end *r)
{
	return r->top && !r->freed && !r->closing;
}

/* Generated application data: @p kind picks random bytes, text lines,
 * runs, or CR/LF-heavy text. */
static void
gen(struct model *m, uint8_t kind, uint8_t *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint32_t r = fz_rng_next(&m->rng);
		switch (kind & 3) {
		case 0:
			buf[i] = (uint8_t)r;
			break;
		case 1:
			buf[i] = r % 40 == 0 ? '\n' : (uint8_t)('a' + r % 26);
			break;
		case 2:
			buf[i] = i && r % 64 ? buf[i - 1] : (uint8_t)(r >> 8);
			break;
		default:
			buf[i] = "\r\na"[r % 3];
		}
	}
}

/* Keep every line within max (the reader would fail it). */
static void
fit_lines(struct model *m, struct end *w, uint8_t *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] != '\n' && w->line_len >= m->line_max)
			buf[i] = '\n';
		w->line_len = buf[i] == '\n' ? 0 : w->line_len + 1;
	}
}

static void
op_write(struct model *m, struct end *w, unsigned size, uint8_t kind)
{
	static uint8_t buf[65536];
	size_t len = 1 + size % sizeof(buf);

	if (!live(w) || w->finished || m->written + len > m->budget)
		return;
	if (m->top == TOP_FRAMES) {
		/* one whole frame, as frames_write makes it */
		len = m->frame_max < 4096 ? size % (m->frame_max + 1)
					  : size % 4097;
		gen(m, kind, buf, len);
		FZ_CHECK(frames_write(w->top, buf, (uint32_t)len) == 0,
		    "frames_write failed");
		{
			unsigned char h[FRAMES_HEADER] = {
			    (unsigned char)(len >> 24),
			    (unsigned char)(len >> 16),
			    (unsigned char)(len >> 8), (unsigned char)len};
			evbuffer_add(w->sent, h, sizeof(h));
			exp_add(m, w, h, sizeof(h));
		}
	} else {
		gen(m, kind, buf, len);
		if (m->top == TOP_LINES)
			fit_lines(m, w, buf, len);
		bufferevent_write(w->top, buf, len);
	}
	evbuffer_add(w->sent, buf, len);
	exp_add(m, w, buf, len);
	m->written += len;
}

/* A pair has no shutdown(): once an end has finished its output, its EOF
 * goes to the other end as a socket's FIN would. */
static void
pair_eof(struct model *m, struct end *w)
{
	struct bufferevent *t;

	if (m->sockets || w->error || !(t = strata_transport(w->top)))
		return;
	bufferevent_flush(t, EV_WRITE, BEV_FINISHED);
}

static void
op_flush(struct model *m, struct end *w, uint8_t how)
{
	static const enum bufferevent_flush_mode modes[] = {
	    BEV_NORMAL, BEV_FLUSH, BEV_FINISHED, BEV_FLUSH};
	enum bufferevent_flush_mode mode = modes[how & 3];

	if (!live(w) || w->finished)
		return;
	bufferevent_flush(w->top, EV_WRITE, mode);
	if (mode == BEV_FINISHED) {
		w->finished = 1;
		pair_eof(m, w);
	}
}

static void
op_free(struct model *m, struct end *r)
{
	if (!live(r))
		return;
	check_prefix(m, r);
	bufferevent_free(r->top);
	r->top = NULL;
	r->freed = 1;
	m->relaxed = 1;
}

static void
op_close(struct model *m, struct end *r)
{
	/* long enough never to end a close that makes progress, even
	 * under ASan on a loaded machine */
	struct timeval linger = {5, 0};

	if (!live(r))
		return;
	if (!m->sockets) {
		/* strata_close needs a transport that can shut down */
		op_flush(m, r, 2);
		return;
	}
	check_prefix(m, r);
	r->closing = 1;
	r->finished = 1;
	FZ_CHECK(strata_close(r->top, &linger, on_closed, r) == 0,
	    "strata_close failed");
}

static void
run_op(struct model *m, struct fz_in *in)
{
	static const size_t highs[] = {0, 2, 64, 4096};
	static const size_t drains[] = {1, 10, 1000, (size_t)-1};
	uint8_t op = fz_u8(in), arg = fz_u8(in);
	struct end *r = &m->e[op & 1];

	fz_log("op %u on end %d, arg %u%s%s", (op >> 1) % 12, op & 1, arg,
	    r->error ? " (failed: " : "", r->error ? r->errmsg : "");
	switch ((op >> 1) % 12) {
	case 0:
	case 1:
		op_write(m, r, fz_u16(in), arg);
		break;
	case 2:
		op_flush(m, r, arg);
		break;
	case 3:
		pump(m);
		break;
	case 4:
		if (live(r))
			take(r, drains[arg & 3]);
		break;
	case 5:
		if (!live(r))
			break;
		if (arg & 1)
			bufferevent_enable(r->top, EV_READ);
		else
			bufferevent_disable(r->top, EV_READ);
		break;
	case 6:
		if (!live(r))
			break;
		if (arg & 1)
			bufferevent_enable(r->top, EV_WRITE);
		else
			bufferevent_disable(r->top, EV_WRITE);
		break;
	case 7:
		if (live(r))
			bufferevent_setwatermark(
			    r->top, EV_READ, 0, highs[arg & 3]);
		break;
	case 8:
		r->auto_read = arg & 1;
		break;
	case 9:
		if (live(r))
			bufferevent_flush(r->top, EV_READ,
			    (arg & 1) ? BEV_FLUSH : BEV_NORMAL);
		break;
	case 10:
		if ((arg & 7) == 0)
			op_free(m, r);
		else
			pump(m);
		break;
	default:
		if ((arg & 3) == 0)
			op_close(m, r);
		else
			pump(m);
	}
}

/* ---- setting up and ending ---- */

static void
open_ends(struct model *m, int defer)
{
	struct bufferevent *t[2] = {NULL, NULL};
	struct strata_error err;
	int i, fds[2];

	if (m->sockets && m->direct) {
		/* strata_connect over each fd: direct stacks, whose top is
		 * the socket's own bufferevent */
		FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0,
		    "socketpair failed");
	} else if (m->sockets) {
		FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0,
		    "socketpair failed");
		for (i = 0; i < 2; i++) {
			evutil_make_socket_nonblocking(fds[i]);
			t[i] = bufferevent_socket_new(
			    m->base, fds[i], BEV_OPT_CLOSE_ON_FREE);
		}
	} else
		FZ_CHECK(bufferevent_pair_new(
			     m->base, BEV_OPT_CLOSE_ON_FREE, t) == 0,
		    "bufferevent_pair_new failed");
	for (i = 0; i < 2; i++) {
		struct end *r = &m->e[i];
		r->m = m;
		r->idx = i;
		r->auto_read = 1;
		r->sent = evbuffer_new();
		r->exp = evbuffer_new();
		r->got = evbuffer_new();
		if (m->sockets && m->direct) {
			char stack[600];
			snprintf(stack, sizeof(stack), "pipe:%d,%d | %s",
			    fds[i], fds[i], m->filters);
			r->top = strata_connect(m->base, NULL, stack,
			    BEV_OPT_CLOSE_ON_FREE |
				((defer >> i) & 1 ? BEV_OPT_DEFER_CALLBACKS
						  : 0),
			    &err);
		} else {
			FZ_CHECK(t[i] != NULL, "no transport");
			r->top = strata_push(t[i], m->filters,
			    BEV_OPT_CLOSE_ON_FREE |
				((defer >> i) & 1 ? BEV_OPT_DEFER_CALLBACKS
						  : 0),
			    &err);
		}
		FZ_CHECK(r->top != NULL, "%s: %s", m->filters, err.message);
		bufferevent_setcb(r->top, on_read, NULL, on_event, r);
		bufferevent_enable(r->top, EV_READ | EV_WRITE);
	}
}

/* Every end still open finishes and reads everything; closes complete. */
static void
finish_all(struct model *m)
{
	int i, round, waited;

	for (i = 0; i < 2; i++) {
		struct end *r = &m->e[i];
		if (!live(r))
			continue;
		r->auto_read = 1;
		bufferevent_setwatermark(r->top, EV_READ, 0, 0);
		bufferevent_enable(r->top, EV_READ | EV_WRITE);
		take(r, (size_t)-1);
	}
	pump(m);
	for (i = 0; i < 2; i++)
		op_flush(m, &m->e[i], 2);
	/* as long as anything moves (the volume is bounded: see budget) */
	for (round = 0, waited = 0; round < 5000; round++) {
		uint64_t before = model_sig(m);
		int pending = (m->e[0].closing && !m->e[0].closed) ||
			      (m->e[1].closing && !m->e[1].closed);
		struct timespec tick = {0, 20 * 1000 * 1000};

		for (i = 0; i < 2; i++)
			if (live(&m->e[i]))
				take(&m->e[i], (size_t)-1);
		pump(m);
		if (model_sig(m) != before) {
			waited = 0;
			continue;
		}
		/* nothing moves: done, unless a close is pending, which
		 * only its linger (5 s) can end now, undelivered (check_end
		 * says so) */
		if (!pending || waited > 6000)
			break;
		nanosleep(&tick, NULL);
		waited += 20;
	}
	for (i = 0; i < 2; i++)
		FZ_CHECK(!m->e[i].closing || m->e[i].closed,
		    "%s: strata_close of end %d never completed", m->filters,
		    i);
}

/* The strict checks of a run without an abrupt free. */
static void
check_end(struct model *m, struct end *r)
{
	struct end *w = &m->e[!r->idx];
	size_t want;

	if (r->freed)
		return;
	if (r->closing) {
		/* its data went out whole; it reads nothing more */
		FZ_CHECK(m->relaxed || r->close_delivered,
		    "%s: strata_close of end %d did not deliver", m->filters,
		    r->idx);
		return;
	}
	check_prefix(m, r);
	if (m->relaxed)
		return;
	FZ_CHECK(
	    !r->error, "%s: end %d failed: %s", m->filters, r->idx, r->errmsg);
	want = evbuffer_get_length(w->exp) + (size_t)line_open(m, w);
	FZ_CHECK(evbuffer_get_length(r->got) == want,
	    "%s: end %d read %zu "
	    "bytes, end %d wrote %zu",
	    m->filters, r->idx, evbuffer_get_length(r->got), w->idx, want);
	FZ_CHECK(r->eof, "%s: end %d got no EOF", m->filters, r->idx);
	FZ_CHECK(r->eof_len == want,
	    "%s: end %d had %zu of %zu bytes when "
	    "EOF came",
	    m->filters, r->idx, r->eof_len, want);
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
	struct fz_in in = {data, size};
	struct model m;
	uint8_t opts;
	int i, ops = 0;

	memset(&m, 0, sizeof(m));
	fz_init();
	m.rng.s = size;
	build_filters(&m, &in);
	opts = fz_u8(&in);
	m.sockets = opts & 1;
	m.direct = !!(opts & 8);
	m.base = fz_base_new();
	open_ends(&m, opts >> 1);
	fz_log("model: %s over a %s", m.filters,
	    m.sockets ? m.direct ? "socketpair (direct stacks)" : "socketpair"
		      : "bufferevent pair");
	pump(&m);
	while (in.n && ops++ < MAX_OPS)
		run_op(&m, &in);
	finish_all(&m);
	for (i = 0; i < 2; i++) {
		struct end *r = &m.e[i];
		fz_log("end %d: wrote %zu, read %zu%s%s%s%s", i,
		    evbuffer_get_length(r->sent), evbuffer_get_length(r->got),
		    r->eof ? ", EOF" : "", r->freed ? ", freed" : "",
		    r->closing ? ", closed" : "", r->error ? ", error" : "");
	}
	for (i = 0; i < 2; i++)
		check_end(&m, &m.e[i]);
	for (i = 0; i < 2; i++) {
		struct end *r = &m.e[i];
		if (r->top && !r->freed && !r->closing)
			bufferevent_free(r->top);
		evbuffer_free(r->sent);
		evbuffer_free(r->exp);
		evbuffer_free(r->got);
	}
	fz_loop_once(m.base);
	event_base_free(m.base);
	return 0;
}
