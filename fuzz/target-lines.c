/*
 * fuzz target "lines": the input side of the lines filter, in a real
 * stack over a bufferevent pair, against a reference decoder.
 *
 * Input: three option bytes, then the wire bytes.
 *   byte 0: eol (bits 0-1: lf, crlf, any), overflow=truncate (bit 2),
 *           tail=error (bit 3), BEV_OPT_DEFER_CALLBACKS (bit 4),
 *           how the reader reads (bits 5-6: all in the read callback,
 *           nothing there and a drain of N bytes after each feed, one
 *           line per callback)
 *   byte 1: max (bits 0-2: 1 2 3 5 8 16 100 65536), the top's read high
 *           watermark (bits 3-4: none, 1, 2, 4096), drain size (5-7)
 *   byte 2: feed size (0: everything at once, N: pieces of 1..N bytes)
 *
 * Checks: the top's input only ever holds whole lines (it is empty or
 * ends in "\n"); at the end, what the reader got and whether the stack
 * failed are exactly what a straightforward reading of the options over
 * the whole input gives (ref_lines).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

enum { EOL_LF, EOL_CRLF, EOL_ANY };

struct opts {
	int eol, truncate, tail_error;
	size_t max;
};

/*
 * The lines a reader must get from @p d, and whether the stream is an
 * error (1) or not (0). With @p eof the stream ended after @p d; without,
 * more may come, and only a partial line already longer than a line can
 * be (max, and one more byte for a CR when CRLF counts) is judged.
 */
static int
ref_lines(const struct opts *o, const uint8_t *d, size_t len, int eof,
    struct evbuffer *out)
{
	size_t pos = 0;

	while (pos < len) {
		size_t i, tl = 0, content, rest;

		for (i = pos; i < len; i++) {
			if (d[i] != '\n')
				continue;
			if (o->eol == EOL_LF)
				tl = 1;
			else if (i > pos && d[i - 1] == '\r')
				tl = 2;
			else if (o->eol == EOL_ANY)
				tl = 1;
			if (tl)
				break;
		}
		if (tl) {
			content = i + 1 - tl - pos;
			if (content > o->max) {
				if (!o->truncate)
					return 1;
				content = o->max;
			}
			evbuffer_add(out, d + pos, content);
			evbuffer_add(out, "\n", 1);
			pos = i + 1;
			continue;
		}
		/* an unterminated tail */
		rest = len - pos;
		if (!eof) {
			if (rest <= o->max + (o->eol != EOL_LF))
				return 0;
			if (!o->truncate)
				return 1;
			evbuffer_add(out, d + pos, o->max);
			evbuffer_add(out, "\n", 1);
			return 0;
		}
		if (rest > o->max) {
			if (!o->truncate)
				return 1;
			evbuffer_add(out, d + pos, o->max);
			evbuffer_add(out, "\n", 1);
			return o->tail_error;
		}
		if (o->tail_error)
			return 1;
		evbuffer_add(out, d + pos, rest);
		evbuffer_add(out, "\n", 1);
		return 0;
	}
	return 0;
}

struct run {
	struct fz_stack s;
	int read_mode;
	size_t drain;
};

static void
check_whole_lines(struct fz_stack *s)
{
	struct evbuffer *in = bufferevent_get_input(s->top);
	size_t n = evbuffer_get_length(in);
	struct evbuffer_ptr p;
	char last;

	if (!n)
		return;
	evbuffer_ptr_set(in, &p, n - 1, EVBUFFER_PTR_SET);
	evbuffer_copyout_from(in, &p, &last, 1);
	FZ_CHECK(last == '\n',
	    "the top's input (%zu bytes) ends inside a "
	    "line",
	    n);
}

static void
on_read(struct fz_stack *s, void *arg)
{
	struct run *r = arg;
	struct evbuffer *in = bufferevent_get_input(s->top);
	struct evbuffer_ptr p;

	check_whole_lines(s);
	if (r->read_mode != 2)
		return;
	/* one line per callback, as a line protocol reads */
	p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
	if (p.pos >= 0)
		evbuffer_remove_buffer(in, s->got, (size_t)p.pos + 1);
}

/* The reader takes @p n bytes (all: (size_t)-1) from the top. */
static void
drain(struct run *r, size_t n)
{
	struct evbuffer *in = bufferevent_get_input(r->s.top);

	evbuffer_remove_buffer(in, r->s.got, n);
}

/* The reader takes everything, for as long as more comes (with a small
 * watermark, a line per round: the rounds are bounded by the output, at
 * most twice the input). */
static void
reader_takes_all(struct run *r)
{
	int i;

	for (i = 0; i < (1 << 20); i++) {
		size_t before = evbuffer_get_length(r->s.got);
		check_whole_lines(&r->s);
		drain(r, (size_t)-1);
		fz_stack_pump(&r->s);
		if (evbuffer_get_length(r->s.got) == before &&
		    !evbuffer_get_length(bufferevent_get_input(r->s.top)))
			break;
	}
}

static void
compare(struct run *r, const struct opts *o, const char *filters,
    struct evbuffer *want, int ref_err, const char *when)
{
	size_t got = evbuffer_get_length(r->s.got);
	size_t n = evbuffer_get_length(want);

	(void)o;
	fz_log("%s: got %zu bytes%s%s (reference: %zu bytes%s)", when, got,
	    r->s.error ? ", error: " : "", r->s.error ? r->s.errmsg : "", n,
	    ref_err ? ", error" : "");
	FZ_CHECK(r->s.error == ref_err,
	    "%s, %s: the stack %s, the reference "
	    "%s (%s)",
	    filters, when, r->s.error ? "failed" : "did not fail",
	    ref_err ? "fails" : "does not", r->s.errmsg);
	FZ_CHECK(fz_equal(r->s.got, want),
	    "%s, %s: the reader got %zu bytes, the reference %zu", filters,
	    when, got, n);
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
	static const size_t maxes[] = {1, 2, 3, 5, 8, 16, 100, 65536};
	static const size_t highs[] = {0, 1, 2, 4096};
	static const size_t drains[] = {
	    1, 2, 7, 64, 1000, 4096, 65536, (size_t)-1};
	static const char *const eols[] = {"lf", "crlf", "any", "lf"};
	struct fz_in in = {data, size};
	uint8_t b0 = fz_u8(&in), b1 = fz_u8(&in), feed = fz_u8(&in);
	struct opts o = {
	    (b0 & 3) == 3 ? 0 : b0 & 3, !!(b0 & 4), !!(b0 & 8), maxes[b1 & 7]};
	struct fz_rng rng = {size};
	struct run r;
	struct evbuffer *want;
	char filters[128];
	size_t off = 0, high = highs[(b1 >> 3) & 3];
	int ref_err;

	if (in.n > 1 << 16)
		return 0;
	memset(&r, 0, sizeof(r));
	r.read_mode = (b0 >> 5) & 3;
	if (r.read_mode == 3)
		r.read_mode = 0;
	r.drain = drains[b1 >> 5];
	snprintf(filters, sizeof(filters),
	    "lines(eol=%s, max=%zu, overflow=%s, tail=%s)", eols[o.eol], o.max,
	    o.truncate ? "truncate" : "error",
	    o.tail_error ? "error" : "deliver");
	if (fz_stack_open(
		&r.s, filters, (b0 & 16) ? BEV_OPT_DEFER_CALLBACKS : 0) < 0)
		FZ_CHECK(0, "%s: %s", filters, r.s.errmsg);
	r.s.read_all = r.read_mode == 0;
	r.s.on_read = on_read;
	r.s.arg = &r;
	if (high)
		bufferevent_setwatermark(r.s.top, EV_READ, 0, high);
	while (off < in.n) {
		size_t n = in.n - off;
		if (feed)
			n = fz_chunk(&rng, n, feed);
		fz_stack_feed(&r.s, in.p + off, n);
		off += n;
		check_whole_lines(&r.s);
		if (r.read_mode == 1) {
			drain(&r, r.drain);
			fz_stack_pump(&r.s);
		}
	}
	/* Before the end: every whole line must reach a reader that keeps
	 * reading; none may wait in the stack (DESIGN trap 3). */
	reader_takes_all(&r);
	want = evbuffer_new();
	ref_err = ref_lines(&o, in.p, in.n, 0, want);
	compare(&r, &o, filters, want, ref_err, "before EOF");
	evbuffer_drain(want, evbuffer_get_length(want));
	fz_stack_peer_eof(&r.s);
	reader_takes_all(&r);
	ref_err = ref_lines(&o, in.p, in.n, 1, want);
	compare(&r, &o, filters, want, ref_err, "at EOF");
	fz_log("%s, %zu wire bytes, high=%zu, read mode %d", filters, in.n,
	    high, r.read_mode);
	FZ_CHECK(r.s.error || r.s.eof, "%s: no EOF and no error", filters);
	evbuffer_free(want);
	fz_stack_close(&r.s);
	return 0;
}
