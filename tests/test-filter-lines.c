/*
 * The lines filter.
 *
 * First as pure functions: strata_lines_filter_.input/.output called
 * directly, input fed in chunks of 1, 2, 3, 7, 64, 4096 bytes, whole, and
 * (for short inputs) split at every position, in every flush mode; every
 * run must give the same bytes as a hand-written expectation and as a small
 * reference model of the spec (checked against the hand-written cases, then
 * against random inputs). Contexts that may hit an error path are created
 * inside a real stack (over a bufferevent_pair) so strata_layer_fail() has a
 * layer; the others use create() with no layer.
 *
 * Then inside stacks: over a socketpair and over a pipe pair (a writer stack
 * on the write end, a reader stack on the read end), with error events,
 * EOF policies, truncation, watermarks and a 10 MB stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h"

#define LINES (&strata_lines_filter_)
#define ERRLEN (STRATA_ERROR_MAX + 64)
#define MAX_CUTS 8192

static const size_t chunk_sizes[] = {1, 2, 3, 7, 64, 4096, 0 /* whole */};
static const enum bufferevent_flush_mode all_modes[] = {BEV_NORMAL,
    BEV_FLUSH, BEV_FINISHED};

static const char *
mode_name(enum bufferevent_flush_mode m)
{
	return m == BEV_NORMAL ? "NORMAL" : m == BEV_FLUSH ? "FLUSH"
							    : "FINISHED";
}

/* Printable form of bytes for failure messages (truncated). */
static const char *
esc(const void *p, size_t n, char *out, size_t outlen)
{
	const unsigned char *s = p;
	size_t i, o = 0;

	for (i = 0; i < n && o + 8 < outlen; i++) {
		if (s[i] == '\n')
			o += (size_t)snprintf(out + o, outlen - o, "\\n");
		else if (s[i] == '\r')
			o += (size_t)snprintf(out + o, outlen - o, "\\r");
		else if (s[i] < 32 || s[i] > 126)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x",
			    s[i]);
		else
			out[o++] = (char)s[i];
	}
	if (i < n)
		o += (size_t)snprintf(out + o, outlen - o, "...(%zu)", n);
	out[o] = 0;
	return out;
}

/* ---- options ---- */

/* The spec, for the reference model. */
struct mopts {
	int eol; /* 0 lf, 1 crlf, 2 any */
	size_t max;
	int truncate;
	int tail_error;
};

static void
mopts_parse(struct mopts *m, const char *s)
{
	struct th_optlist l;
	size_t i;

	m->eol = 0;
	m->max = 65536;
	m->truncate = 0;
	m->tail_error = 0;
	th_optlist_parse(&l, s);
	for (i = 0; i < l.n; i++) {
		const char *k = l.o[i].key, *v = l.o[i].value;
		if (!strcmp(k, "eol"))
			m->eol = !strcmp(v, "crlf") ? 1 : !strcmp(v, "any") * 2;
		else if (!strcmp(k, "max")) {
			char *end;
			m->max = strtoull(v, &end, 10);
			m->max <<= *end == 'k' ? 10 : *end == 'M' ? 20 : 0;
		}
		else if (!strcmp(k, "overflow"))
			m->truncate = !strcmp(v, "truncate");
		else if (!strcmp(k, "tail"))
			m->tail_error = !strcmp(v, "error");
	}
}

/* ---- the reference model ---- */

/* One line's content: deliver it, cut it, or fail. */
static int
model_line(const struct mopts *m, const unsigned char *p, size_t content,
    size_t start, struct evbuffer *out, char *err)
{
	if (content > m->max && !m->truncate) {
		snprintf(err, ERRLEN, "lines: line longer than %zu bytes at "
		    "offset %zu", m->max, start);
		return -1;
	}
	evbuffer_add(out, p, content > m->max ? m->max : content);
	evbuffer_add(out, "\n", 1);
	return 0;
}

/*
 * What the input side must deliver for @p in (all of it received), and the
 * error it must raise ("" for none). Without @p finished the last
 * unterminated line is waited for, unless it is already too long.
 */
static void
model_input(const struct mopts *m, const unsigned char *in, size_t n,
    int finished, struct evbuffer *out, char *err)
{
	size_t start = 0, i, tail, slack = m->eol ? 1 : 0;
	int long_tail;

	err[0] = 0;
	for (i = 0; i < n; i++) {
		int cr = i > start && in[i - 1] == '\r';
		if (in[i] != '\n' || (m->eol == 1 && !cr))
			continue;
		if (model_line(m, in + start, i - start - (m->eol && cr),
			start, out, err) < 0)
			return;
		start = i + 1;
	}
	tail = n - start;
	long_tail = tail > m->max + slack || (finished && tail > m->max);
	if (long_tail && model_line(m, in + start, tail, start, out, err) < 0)
		return;
	if (!finished || !tail)
		return;
	if (m->tail_error)
		snprintf(err, ERRLEN, "lines: stream ended inside a line (%zu "
		    "bytes without a terminator at offset %zu)", tail, start);
	else if (!long_tail)
		model_line(m, in + start, tail, start, out, err);
}

/* What the output side must write for @p in. */
static void
model_output(const struct mopts *m, const unsigned char *in, size_t n,
    int finished, struct evbuffer *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (in[i] == '\n' && m->eol == 1)
			evbuffer_add(out, "\r\n", 2);
		else
			evbuffer_add(out, in + i, 1);
	}
	if (finished && n && in[n - 1] != '\n')
		evbuffer_add(out, m->eol == 1 ? "\r\n" : "\n",
		    m->eol == 1 ? 2 : 1);
}

/* ---- driving a filter function (contexts: th_direct, th_held) ---- */

/*
 * Call @p fn the way the engine does: again while it returns BEV_OK, until
 * its input is gone (BEV_NORMAL) or @p lim is used up. Checks the contract
 * on every call. Returns 0, or -1 on BEV_ERROR.
 */
static int
drive(bufferevent_filter_cb fn, void *ctx, struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim, enum bufferevent_flush_mode mode)
{
	int calls;

	for (calls = 0; calls < 1000000; calls++) {
		size_t s0 = evbuffer_get_length(src);
		size_t d0 = evbuffer_get_length(dst);
		enum bufferevent_filter_result r = fn(src, dst, lim, mode, ctx);
		size_t s1 = evbuffer_get_length(src);
		size_t d1 = evbuffer_get_length(dst);

		if (r == BEV_ERROR)
			return -1;
		ck_assert_msg(s1 <= s0 && d1 >= d0,
		    "filter added to src or took from dst");
		ck_assert_msg(r == BEV_NEED_MORE || s1 != s0 || d1 != d0,
		    "BEV_OK without progress (%s)", mode_name(mode));
		if (r != BEV_OK)
			return 0;
		if (lim >= 0 && (lim -= (ev_ssize_t)(d1 - d0)) <= 0)
			return 0;
		if (!s1 && mode == BEV_NORMAL)
			return 0;
	}
	ck_abort_msg("the filter kept returning BEV_OK");
	return -1;
}

/* Piece boundaries: ends[i] is where piece i ends; the last is @p len. */
struct plan {
	size_t ends[MAX_CUTS];
	size_t n;
	char name[48];
};

static void
plan_chunks(struct plan *p, size_t len, size_t chunk)
{
	size_t off = 0;

	p->n = 0;
	if (!chunk || chunk > len)
		chunk = len ? len : 1;
	while (off < len && p->n < MAX_CUTS - 1) {
		off += len - off < chunk ? len - off : chunk;
		p->ends[p->n++] = off;
	}
	if (off < len)
		p->ends[p->n++] = len; /* the rest in one piece */
	snprintf(p->name, sizeof(p->name), "chunks of %zu", chunk);
}

static void
plan_split(struct plan *p, size_t len, size_t at)
{
	p->n = 0;
	if (at)
		p->ends[p->n++] = at;
	if (at < len)
		p->ends[p->n++] = len;
	snprintf(p->name, sizeof(p->name), "split at %zu", at);
}

static void
plan_random(struct plan *p, size_t len, uint32_t (*rnd)(void))
{
	size_t off = 0;

	p->n = 0;
	while (off < len && p->n < MAX_CUTS - 1) {
		off += 1 + rnd() % 9;
		if (off > len)
			off = len;
		p->ends[p->n++] = off;
	}
	snprintf(p->name, sizeof(p->name), "random pieces");
}

struct outcome {
	struct evbuffer *out;
	int failed;
	char error[ERRLEN];
	size_t held; /* most input left waiting after a call */
};

/*
 * Feed @p in to the input side piece by piece: every piece with @p mode
 * (BEV_NORMAL for BEV_FINISHED), then one last call with @p mode.
 */
static void
feed(bufferevent_filter_cb fn, void *ctx, struct bufferevent *top,
    const void *in, size_t len, const struct plan *p,
    enum bufferevent_flush_mode mode, struct outcome *o)
{
	enum bufferevent_flush_mode step =
	    mode == BEV_FINISHED ? BEV_NORMAL : mode;
	struct evbuffer *src = evbuffer_new();
	size_t i, off = 0;
	int r = 0;

	o->failed = 0;
	o->error[0] = 0;
	o->held = 0;
	for (i = 0; i < p->n && r == 0; i++) {
		evbuffer_add(src, (const char *)in + off, p->ends[i] - off);
		off = p->ends[i];
		r = drive(fn, ctx, src, o->out, -1, step);
		if (evbuffer_get_length(src) > o->held)
			o->held = evbuffer_get_length(src);
	}
	if (r == 0)
		r = drive(fn, ctx, src, o->out, -1, mode);
	if (r < 0) {
		o->failed = 1;
		snprintf(o->error, sizeof(o->error), "%s",
		    top && strata_last_error(top) ? strata_last_error(top)
						  : "(no message)");
	}
	evbuffer_free(src);
}

/* Run one plan on the input side with a fresh stack-made context and
 * compare with @p want / @p want_err. */
static void
check_input_plan(struct event_base *base, const char *opts, const void *in,
    size_t len, const struct plan *p, enum bufferevent_flush_mode mode,
    struct evbuffer *want, const char *want_err)
{
	char e1[200], e2[200], e3[200], terr[ERRLEN + 1];
	struct outcome o;
	struct th_held h;
	struct mopts m;

	/* the layer is "tlines": its messages start so */
	snprintf(terr, sizeof(terr), "%s%s", *want_err ? "t" : "", want_err);
	want_err = terr;
	mopts_parse(&m, opts);
	th_held_open(&h, base, opts);
	o.out = evbuffer_new();
	feed(LINES->input, h.ctx, h.top, in, len, p, mode, &o);
	ck_assert_msg(th_buf_eq(o.out, evbuffer_pullup(want, -1),
			  evbuffer_get_length(want)),
	    "lines(%s) input '%s' %s %s: got '%s', want '%s'", opts,
	    esc(in, len, e1, sizeof(e1)), mode_name(mode), p->name,
	    esc(evbuffer_pullup(o.out, -1), evbuffer_get_length(o.out), e2,
		sizeof(e2)),
	    esc(evbuffer_pullup(want, -1), evbuffer_get_length(want), e3,
		sizeof(e3)));
	ck_assert_msg(o.failed == !!want_err[0] && !strcmp(o.error, want_err),
	    "lines(%s) input '%s' %s %s: error '%s', want '%s'", opts,
	    esc(in, len, e1, sizeof(e1)), mode_name(mode), p->name,
	    o.error, want_err);
	/* never more than max bytes plus a terminator wait for a line end */
	ck_assert_msg(o.failed || o.held <= m.max + (m.eol ? 1 : 0),
	    "lines(%s) %s: %zu bytes held", opts, p->name, o.held);
	if (o.failed) {
		ck_assert_str_eq(strata_last_error(h.top), want_err);
		event_base_loop(base, EVLOOP_NONBLOCK);
	} else if (m.eol == 0) {
		/* with eol=lf every line delivered ends in the one "\n" it
		 * holds: the layer's count must match */
		char st[512], key[64];
		const unsigned char *w = evbuffer_pullup(want, -1);
		size_t lf = 0, i;

		for (i = 0; i < evbuffer_get_length(want); i++)
			lf += w[i] == '\n';
		snprintf(key, sizeof(key), " lines=%zu", lf);
		ck_assert_int_gt(strata_stats_format(h.top, st, sizeof(st)), 0);
		ck_assert_msg(strstr(st, key) != NULL,
		    "lines(%s) %s: want%s in '%s'", opts, p->name, key, st);
	}
	evbuffer_free(o.out);
	th_held_close(&h);
}

/* Every chunking (and every split point of short inputs) must give the
 * same result. */
static void
check_input_all(const char *opts, const void *in, size_t len,
    enum bufferevent_flush_mode mode, struct evbuffer *want,
    const char *want_err)
{
	struct event_base *base = event_base_new();
	struct plan *p = malloc(sizeof(*p));
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(chunk_sizes); i++) {
		plan_chunks(p, len, chunk_sizes[i]);
		check_input_plan(base, opts, in, len, p, mode, want, want_err);
	}
	for (i = 0; len <= 64 && i <= len; i++) {
		plan_split(p, len, i);
		check_input_plan(base, opts, in, len, p, mode, want, want_err);
	}
	free(p);
	event_base_free(base);
}

/*
 * The input side on @p in, in @p mode, must give exactly @p want and raise
 * @p want_err (NULL: none); the reference model must agree.
 */
static void
expect_input(const char *opts, const void *in, size_t len,
    enum bufferevent_flush_mode mode, const void *want, size_t wantlen,
    const char *want_err)
{
	struct evbuffer *w = evbuffer_new(), *mo = evbuffer_new();
	char merr[ERRLEN], e1[200], e2[200];
	struct mopts m;

	if (!want_err)
		want_err = "";
	mopts_parse(&m, opts);
	model_input(&m, in, len, mode == BEV_FINISHED, mo, merr);
	ck_assert_msg(th_buf_eq(mo, want, wantlen) && !strcmp(merr, want_err),
	    "model disagrees for lines(%s) '%s': '%s' / '%s'", opts,
	    esc(in, len, e1, sizeof(e1)),
	    esc(evbuffer_pullup(mo, -1), evbuffer_get_length(mo), e2,
		sizeof(e2)),
	    merr);
	evbuffer_add(w, want, wantlen);
	check_input_all(opts, in, len, mode, w, want_err);
	evbuffer_free(w);
	evbuffer_free(mo);
}

/* String-literal forms (sizeof keeps embedded NULs). */
#define EXPECT_IN(opts, in, mode, want, err)                                  \
	expect_input(opts, in, sizeof(in) - 1, mode, want, sizeof(want) - 1,  \
	    err)

/* The same expectation in NORMAL and FLUSH (tail waits), and FINISHED. */
#define EXPECT_IN3(opts, in, want_wait, err_wait, want_fin, err_fin)          \
	do {                                                                  \
		EXPECT_IN(opts, in, BEV_NORMAL, want_wait, err_wait);         \
		EXPECT_IN(opts, in, BEV_FLUSH, want_wait, err_wait);          \
		EXPECT_IN(opts, in, BEV_FINISHED, want_fin, err_fin);         \
	} while (0)

/* ---- pure input side ---- */

START_TEST(in_empty)
{
	static const char *const opts[] = {"", "eol=crlf", "eol=any",
	    "tail=error", "max=1,overflow=truncate"};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(opts); i++)
		EXPECT_IN3(opts[i], "", "", NULL, "", NULL);
}
END_TEST

START_TEST(in_lf_lines)
{
	EXPECT_IN3("", "a\nbb\n\nccc", "a\nbb\n\n", NULL, "a\nbb\n\nccc\n",
	    NULL);
	/* in lf mode a CR is content */
	EXPECT_IN3("eol=lf", "a\r\nb\r", "a\r\n", NULL, "a\r\nb\r\n", NULL);
	EXPECT_IN3("eol=lf", "one\n", "one\n", NULL, "one\n", NULL);
}
END_TEST

START_TEST(in_empty_lines)
{
	EXPECT_IN3("", "\n\n\n", "\n\n\n", NULL, "\n\n\n", NULL);
	EXPECT_IN3("eol=crlf", "\r\n\r\n", "\n\n", NULL, "\n\n", NULL);
	EXPECT_IN3("eol=any", "\n\r\n\n\r\n", "\n\n\n\n", NULL, "\n\n\n\n",
	    NULL);
	EXPECT_IN3("eol=crlf", "a\r\n\r\nb\r\n", "a\n\nb\n", NULL,
	    "a\n\nb\n", NULL);
}
END_TEST

START_TEST(in_crlf)
{
	EXPECT_IN3("eol=crlf", "one\r\ntwo\r\nthr", "one\ntwo\n", NULL,
	    "one\ntwo\nthr\n", NULL);
	/* a bare CR is content */
	EXPECT_IN3("eol=crlf", "a\rb\r\n\rc\r\n", "a\rb\n\rc\n", NULL,
	    "a\rb\n\rc\n", NULL);
	/* CR LF CR LF: one empty line after "x" */
	EXPECT_IN3("eol=crlf", "x\r\n\r\n", "x\n\n", NULL, "x\n\n", NULL);
	/* a CR as the last byte waits for its LF (every split point puts
	 * it at a chunk boundary) */
	EXPECT_IN3("eol=crlf", "ab\r", "", NULL, "ab\r\n", NULL);
	EXPECT_IN3("eol=crlf", "ab\r\ncd\r", "ab\n", NULL, "ab\ncd\r\n",
	    NULL);
}
END_TEST

START_TEST(in_any)
{
	EXPECT_IN3("eol=any", "a\r\nb\nc\r\nd", "a\nb\nc\n", NULL,
	    "a\nb\nc\nd\n", NULL);
	EXPECT_IN3("eol=any", "a\r\r\n\r", "a\r\n", NULL, "a\r\n\r\n", NULL);
	EXPECT_IN3("eol=any", "\r\n\n", "\n\n", NULL, "\n\n", NULL);
}
END_TEST

START_TEST(in_nul_bytes)
{
	EXPECT_IN3("", "a\0b\n\0\n\0", "a\0b\n\0\n", NULL, "a\0b\n\0\n\0\n",
	    NULL);
	EXPECT_IN3("eol=crlf", "\0\r\n\0\r\0\r\n", "\0\n\0\r\0\n", NULL,
	    "\0\n\0\r\0\n", NULL);
	EXPECT_IN3("eol=any,max=3", "\0\0\0\r\n\0\0\0\n", "\0\0\0\n\0\0\0\n",
	    NULL, "\0\0\0\n\0\0\0\n", NULL);
}
END_TEST

START_TEST(in_max_exact)
{
	/* a line of exactly max bytes is accepted, whatever its terminator */
	EXPECT_IN3("max=4", "abcd\nx\n", "abcd\nx\n", NULL, "abcd\nx\n",
	    NULL);
	EXPECT_IN3("max=4,eol=crlf", "abcd\r\nx\r\n", "abcd\nx\n", NULL,
	    "abcd\nx\n", NULL);
	EXPECT_IN3("max=4,eol=any", "abcd\r\nabcd\n", "abcd\nabcd\n", NULL,
	    "abcd\nabcd\n", NULL);
	/* and as an unterminated tail at EOF */
	EXPECT_IN3("max=4", "x\nabcd", "x\n", NULL, "x\nabcd\n", NULL);
	EXPECT_IN3("max=4,eol=crlf", "abcd", "", NULL, "abcd\n", NULL);
	EXPECT_IN3("max=1", "a\n\nb\n", "a\n\nb\n", NULL, "a\n\nb\n", NULL);
}
END_TEST

START_TEST(in_max_plus_one_error)
{
	const char *e0 = "lines: line longer than 4 bytes at offset 0";
	const char *e2 = "lines: line longer than 4 bytes at offset 2";

	EXPECT_IN3("max=4", "abcde\n", "", e0, "", e0);
	/* the complete lines before the long one are delivered first */
	EXPECT_IN3("max=4", "x\nabcde\ny\n", "x\n", e2, "x\n", e2);
	EXPECT_IN3("max=4,eol=crlf", "x\r\nabcde\r\n", "x\n",
	    "lines: line longer than 4 bytes at offset 3", "x\n",
	    "lines: line longer than 4 bytes at offset 3");
	EXPECT_IN3("max=4,eol=any", "x\nabcde\r\n", "x\n", e2, "x\n", e2);
	EXPECT_IN3("max=4,eol=any", "abcd\r\nabcde\n", "abcd\n",
	    "lines: line longer than 4 bytes at offset 6", "abcd\n",
	    "lines: line longer than 4 bytes at offset 6");
	/* found before its end arrives: max + 1 bytes without a terminator */
	EXPECT_IN3("max=4", "x\nabcde", "x\n", e2, "x\n", e2);
	/* crlf waits for one more byte (it may be the CR) ... */
	EXPECT_IN3("max=4,eol=crlf", "abcd\r", "", NULL, "", e0);
	EXPECT_IN3("max=4,eol=crlf", "abcdef", "", e0, "", e0);
	/* ... but an unterminated tail of max + 1 bytes is still too long */
	EXPECT_IN3("max=4,eol=crlf", "abcde", "", NULL, "", e0);
	EXPECT_IN3("max=4,eol=any", "abcde", "", NULL, "", e0);
	/* a bare LF does not end a crlf line: its length counts on */
	EXPECT_IN3("max=4,eol=crlf", "ab\ncd\r\n", "", e0, "", e0);
	EXPECT_IN3("max=5,eol=crlf", "ab\ncd\r\n", "ab\ncd\n", NULL,
	    "ab\ncd\n", NULL);
}
END_TEST

START_TEST(in_max_plus_one_truncate)
{
	EXPECT_IN3("max=4,overflow=truncate", "abcde\nxy\n", "abcd\nxy\n",
	    NULL, "abcd\nxy\n", NULL);
	EXPECT_IN3("max=3,overflow=truncate", "abcdefghij\nk\n", "abc\nk\n",
	    NULL, "abc\nk\n", NULL);
	EXPECT_IN3("max=4,overflow=truncate,eol=crlf",
	    "abcde\r\nxy\r\n", "abcd\nxy\n", NULL, "abcd\nxy\n", NULL);
	/* the rest of a cut crlf line runs to its CRLF, not to a bare LF */
	EXPECT_IN3("max=3,overflow=truncate,eol=crlf",
	    "abcdef\nxy\r\nok\r\n", "abc\nok\n", NULL, "abc\nok\n", NULL);
	/* ... also with the CR and the LF in different pieces */
	EXPECT_IN3("max=2,overflow=truncate,eol=crlf", "abcd\r\nef\r\n",
	    "ab\nef\n", NULL, "ab\nef\n", NULL);
	EXPECT_IN3("max=4,overflow=truncate,eol=any", "abcde\r\nx\n",
	    "abcd\nx\n", NULL, "abcd\nx\n", NULL);
	/* an over-long tail is cut at EOF too, and the rest dropped */
	EXPECT_IN3("max=3,overflow=truncate", "a\nbcdefg", "a\nbcd\n", NULL,
	    "a\nbcd\n", NULL);
	EXPECT_IN3("max=3,overflow=truncate,eol=crlf", "a\r\nbcde", "a\n",
	    NULL, "a\nbcd\n", NULL);
}
END_TEST

START_TEST(in_tail_policy)
{
	EXPECT_IN3("tail=deliver", "a\nbc", "a\n", NULL, "a\nbc\n", NULL);
	EXPECT_IN3("tail=error", "a\nbc", "a\n", NULL, "a\n",
	    "lines: stream ended inside a line (2 bytes without a "
	    "terminator at offset 2)");
	EXPECT_IN3("tail=error,eol=crlf", "a\r\nb\r", "a\n", NULL, "a\n",
	    "lines: stream ended inside a line (2 bytes without a "
	    "terminator at offset 3)");
	/* a terminated stream is fine */
	EXPECT_IN3("tail=error", "a\nbc\n", "a\nbc\n", NULL, "a\nbc\n",
	    NULL);
	/* a cut line that never ended is still a stream ended mid-line */
	EXPECT_IN3("tail=error,max=3,overflow=truncate", "a\nbcdefg",
	    "a\nbcd\n", NULL, "a\nbcd\n",
	    "lines: stream ended inside a line (6 bytes without a "
	    "terminator at offset 2)");
}
END_TEST

START_TEST(in_default_max)
{
	/* default max is 65536: exactly that is accepted, one more is not */
	size_t n = 65536 + 1;
	char *in = malloc(n + 2), *want = malloc(n + 2);

	memset(in, 'q', n);
	in[65536] = '\n';
	memcpy(want, in, 65537);
	expect_input("", in, 65537, BEV_FINISHED, want, 65537, NULL);
	in[65536] = 'q';
	in[65537] = '\n';
	expect_input("", in, 65538, BEV_NORMAL, "", 0,
	    "lines: line longer than 65536 bytes at offset 0");
	expect_input("overflow=truncate", in, 65538, BEV_FINISHED, want,
	    65537, NULL);
	free(in);
	free(want);
}
END_TEST

/* ---- random inputs against the model ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

static void
random_opts(char *buf, size_t len)
{
	static const char *const eols[] = {"lf", "crlf", "any"};

	snprintf(buf, len, "eol=%s,max=%u,overflow=%s,tail=%s",
	    eols[rnd() % 3], 1 + rnd() % 6,
	    rnd() % 2 ? "truncate" : "error", rnd() % 2 ? "error" : "deliver");
}

static size_t
random_input(unsigned char *buf, size_t cap)
{
	static const unsigned char alpha[] = "aaaab\r\r\n\n\n\n";
	size_t n = rnd() % cap, i;

	for (i = 0; i < n; i++)
		buf[i] = rnd() % 13 ? alpha[rnd() % (sizeof(alpha) - 1)] : 0;
	return n;
}

START_TEST(in_random_vs_model)
{
	struct event_base *base = event_base_new();
	struct plan *p = malloc(sizeof(*p));
	unsigned char in[64];
	char opts[128], err[ERRLEN];
	int c, k;
	size_t mi, i, n;

	for (c = 0; c < 400; c++) {
		struct mopts m;
		random_opts(opts, sizeof(opts));
		mopts_parse(&m, opts);
		n = random_input(in, sizeof(in));
		for (mi = 0; mi < 3; mi++) {
			struct evbuffer *want = evbuffer_new();
			model_input(&m, in, n, all_modes[mi] == BEV_FINISHED,
			    want, err);
			for (i = 0; i < STRATA_ARRAY_LEN(chunk_sizes); i++) {
				plan_chunks(p, n, chunk_sizes[i]);
				check_input_plan(base, opts, in, n, p,
				    all_modes[mi], want, err);
			}
			for (k = 0; k < 3; k++) {
				plan_random(p, n, rnd);
				check_input_plan(base, opts, in, n, p,
				    all_modes[mi], want, err);
			}
			evbuffer_free(want);
		}
	}
	free(p);
	event_base_free(base);
}
END_TEST

/*
 * Longer inputs (12 KiB of lines of 0 to 150 bytes) with a max from 20 to
 * the default: extents that hold many whole lines, so eol=lf takes its
 * batch path (one memrchr, a vector count) as well as the line-by-line
 * one, and both must agree with the model, line counts included.
 */
START_TEST(in_long_vs_model)
{
	static const unsigned maxes[] = {20, 100, 1000, 65536};
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyz \r\t";
	struct event_base *base = event_base_new();
	struct plan *p = malloc(sizeof(*p));
	size_t cap = 12 * 1024, n, i, line;
	unsigned char *in = malloc(cap);
	char opts[128], err[ERRLEN];
	int c, k;

	for (c = 0; c < 8; c++) {
		struct evbuffer *want = evbuffer_new();
		struct mopts m;

		snprintf(opts, sizeof(opts), "eol=%s,max=%u,overflow=%s,"
		    "tail=deliver", c % 4 == 3 ? "any" : "lf",
		    maxes[c % 4], rnd() % 2 ? "truncate" : "error");
		mopts_parse(&m, opts);
		for (n = 0; n < cap;) {
			line = rnd() % 151;
			for (i = 0; i < line && n < cap; i++)
				in[n++] = rnd() % 97 ? (unsigned char)alpha[
				    rnd() % (sizeof(alpha) - 1)] : 0;
			if (n < cap)
				in[n++] = '\n';
		}
		model_input(&m, in, n, 0, want, err);
		for (i = 0; i < STRATA_ARRAY_LEN(chunk_sizes); i++) {
			plan_chunks(p, n, chunk_sizes[i]);
			check_input_plan(base, opts, in, n, p, BEV_NORMAL,
			    want, err);
		}
		for (k = 0; k < 2; k++) {
			plan_random(p, n, rnd);
			check_input_plan(base, opts, in, n, p, BEV_NORMAL,
			    want, err);
		}
		evbuffer_free(want);
	}
	free(in);
	free(p);
	event_base_free(base);
}
END_TEST

/* A slow peer sending a long line a byte at a time must not make the
 * filter rescan the line on every call (quadratic time). */
static double
trickle_seconds(size_t linelen)
{
	struct th_direct d;
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	enum bufferevent_filter_result r;
	char opts[64];
	clock_t t0;
	size_t off;
	int bad = 0;

	snprintf(opts, sizeof(opts), "max=%zu", linelen);
	th_direct_open(&d, LINES, opts);
	t0 = clock();
	for (off = 0; off < linelen; off++) {
		evbuffer_add(src, "z", 1);
		r = LINES->input(src, dst, -1, BEV_NORMAL, d.ctx);
		bad += r != BEV_NEED_MORE;
	}
	evbuffer_add(src, "\n", 1);
	r = LINES->input(src, dst, -1, BEV_NORMAL, d.ctx);
	t0 = clock() - t0;
	ck_assert_int_eq(bad, 0);
	ck_assert_int_eq(r, BEV_OK);
	ck_assert_uint_eq(evbuffer_get_length(dst), linelen + 1);
	th_direct_close(&d);
	evbuffer_free(src);
	evbuffer_free(dst);
	return (double)t0 / CLOCKS_PER_SEC;
}

START_TEST(in_trickle_linear)
{
	double small = trickle_seconds(32 * 1024);
	double big = trickle_seconds(256 * 1024);

	/* 8 times the bytes: linear takes ~8 times as long, quadratic ~64 */
	ck_assert_msg(big < 24 * small + 0.1,
	    "32 KiB line: %.3f s, 256 KiB line: %.3f s (quadratic?)", small,
	    big);
}
END_TEST

/* ---- the input side under dst_limit ---- */

static size_t
count_lf(const unsigned char *p, size_t n)
{
	size_t i, c = 0;

	for (i = 0; i < n; i++)
		c += p[i] == '\n';
	return c;
}

/*
 * Call the input side in rounds of at most @p lim bytes; between rounds
 * the "user" empties dst. A line is never split, and a round only exceeds
 * the limit with a single line put into an empty dst.
 */
static void
expect_input_limited(const char *opts, const char *in, size_t len,
    ev_ssize_t lim, enum bufferevent_flush_mode mode, const char *want,
    size_t wantlen)
{
	struct event_base *base = event_base_new();
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	struct evbuffer *got = evbuffer_new();
	char e1[200];
	struct th_held h;
	int rounds;

	th_held_open(&h, base, opts);
	evbuffer_add(src, in, len);
	for (rounds = 0; rounds < 10000; rounds++) {
		ev_ssize_t left = lim;
		size_t s0 = evbuffer_get_length(src);
		enum bufferevent_filter_result r;
		do {
			size_t d0 = evbuffer_get_length(dst), added;
			const unsigned char *p;
			r = LINES->input(src, dst, left, mode, h.ctx);
			ck_assert_int_ne(r, BEV_ERROR);
			added = evbuffer_get_length(dst) - d0;
			if (!added)
				continue;
			p = evbuffer_pullup(dst, -1);
			ck_assert_msg(p[d0 + added - 1] == '\n',
			    "lines(%s) lim %zd: a line was split", opts, lim);
			ck_assert_msg((ev_ssize_t)added <= left ||
				(d0 == 0 && count_lf(p, added) == 1),
			    "lines(%s) lim %zd: %zu bytes into %zu with %zd "
			    "left", opts, lim, added, d0, left);
			left -= (ev_ssize_t)added;
		} while (r == BEV_OK && left > 0);
		if (!evbuffer_get_length(dst) &&
		    evbuffer_get_length(src) == s0)
			break;
		evbuffer_add_buffer(got, dst);
	}
	ck_assert_msg(th_buf_eq(got, want, wantlen), "lines(%s) lim %zd %s: got "
	    "'%s'", opts, lim, mode_name(mode),
	    esc(evbuffer_pullup(got, -1), evbuffer_get_length(got), e1,
		sizeof(e1)));
	evbuffer_free(src);
	evbuffer_free(dst);
	evbuffer_free(got);
	th_held_close(&h);
	event_base_free(base);
}

START_TEST(in_limit_rounds)
{
	static const ev_ssize_t lims[] = {0, 1, 2, 3, 4, 5, 7, 8, 100};
	static const char lf[] = "aaaa\nbb\ncccccc\n\nd\ne";
	static const char crlf[] = "aaaa\r\nbb\r\ncccccc\r\n\r\nd\r\ne";
	static const char any[] = "aaaa\r\nbb\ncccccc\r\n\nd\r\ne";
	static const char cut[] = "aaaaaaa\nbb\ncccccc\r\n\nd\r\ne";
	size_t i, m;

	for (i = 0; i < STRATA_ARRAY_LEN(lims); i++) {
		for (m = 0; m < 2; m++) {
			enum bufferevent_flush_mode mode = m ? BEV_FLUSH
							     : BEV_NORMAL;
			expect_input_limited("", lf, sizeof(lf) - 1, lims[i],
			    mode, "aaaa\nbb\ncccccc\n\nd\n", 18);
			expect_input_limited("eol=crlf", crlf,
			    sizeof(crlf) - 1, lims[i], mode,
			    "aaaa\nbb\ncccccc\n\nd\n", 18);
			expect_input_limited("eol=any", any, sizeof(any) - 1,
			    lims[i], mode, "aaaa\nbb\ncccccc\n\nd\n", 18);
			expect_input_limited("eol=any,max=3,overflow=truncate",
			    cut, sizeof(cut) - 1, lims[i], mode,
			    "aaa\nbb\nccc\n\nd\n", 14);
		}
		expect_input_limited("", lf, sizeof(lf) - 1, lims[i],
		    BEV_FINISHED, "aaaa\nbb\ncccccc\n\nd\ne\n", 20);
		expect_input_limited("eol=crlf", crlf, sizeof(crlf) - 1,
		    lims[i], BEV_FINISHED, "aaaa\nbb\ncccccc\n\nd\ne\n", 20);
		expect_input_limited("eol=any", any, sizeof(any) - 1,
		    lims[i], BEV_FINISHED, "aaaa\nbb\ncccccc\n\nd\ne\n", 20);
		expect_input_limited("eol=any,max=3,overflow=truncate", cut,
		    sizeof(cut) - 1, lims[i], BEV_FINISHED,
		    "aaa\nbb\nccc\n\nd\ne\n", 16);
	}
}
END_TEST

START_TEST(in_limit_full_dst)
{
	/* dst already holds data: a line that does not fit waits, intact */
	struct th_direct d;
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	static const char *const opts[] = {"", "eol=crlf",
	    "max=2,overflow=truncate"};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(opts); i++) {
		th_direct_open(&d, LINES, opts[i]);
		evbuffer_drain(src, evbuffer_get_length(src));
		evbuffer_drain(dst, evbuffer_get_length(dst));
		evbuffer_add(dst, "old\n", 4);
		evbuffer_add(src, i == 1 ? "abcd\r\n" : "abcd\n", i == 1 ? 6
									: 5);
		ck_assert_int_eq(LINES->input(src, dst, 2, BEV_NORMAL, d.ctx),
		    BEV_NEED_MORE);
		ck_assert_int_eq(LINES->input(src, dst, 2, BEV_FINISHED,
				     d.ctx), BEV_NEED_MORE);
		ck_assert(th_buf_eq(dst, "old\n", 4));
		ck_assert_uint_eq(evbuffer_get_length(src), i == 1 ? 6 : 5);
		/* once the user read, it goes */
		evbuffer_drain(dst, 4);
		ck_assert_int_eq(LINES->input(src, dst, 2, BEV_NORMAL, d.ctx),
		    BEV_OK);
		ck_assert(th_buf_eq(dst, i == 2 ? "ab\n" : "abcd\n", i == 2 ? 3
									: 5));
		th_direct_close(&d);
	}
	evbuffer_free(src);
	evbuffer_free(dst);
}
END_TEST

/* ---- the output side ---- */

static void
feed_output(void *ctx, const void *in, size_t len, const struct plan *p,
    enum bufferevent_flush_mode mode, struct evbuffer *out)
{
	enum bufferevent_flush_mode step =
	    mode == BEV_FINISHED ? BEV_NORMAL : mode;
	struct evbuffer *src = evbuffer_new();
	size_t i, off = 0;

	for (i = 0; i < p->n; i++) {
		evbuffer_add(src, (const char *)in + off, p->ends[i] - off);
		off = p->ends[i];
		ck_assert_int_eq(drive(LINES->output, ctx, src, out, -1, step),
		    0);
		ck_assert_uint_eq(evbuffer_get_length(src), 0);
	}
	ck_assert_int_eq(drive(LINES->output, ctx, src, out, -1, mode), 0);
	ck_assert_uint_eq(evbuffer_get_length(src), 0);
	evbuffer_free(src);
}

static void
expect_output(const char *opts, const void *in, size_t len,
    enum bufferevent_flush_mode mode, const void *want, size_t wantlen)
{
	struct evbuffer *out = evbuffer_new();
	struct plan *p = malloc(sizeof(*p));
	char e1[200], e2[200];
	struct mopts m;
	struct th_direct d;
	size_t k;

	mopts_parse(&m, opts);
	model_output(&m, in, len, mode == BEV_FINISHED, out);
	ck_assert_msg(th_buf_eq(out, want, wantlen), "model disagrees");
	for (k = 0; k < STRATA_ARRAY_LEN(chunk_sizes) + len + 1; k++) {
		if (k < STRATA_ARRAY_LEN(chunk_sizes))
			plan_chunks(p, len, chunk_sizes[k]);
		else if (len <= 64)
			plan_split(p, len, k - STRATA_ARRAY_LEN(chunk_sizes));
		else
			break;
		evbuffer_drain(out, evbuffer_get_length(out));
		th_direct_open(&d, LINES, opts);
		feed_output(d.ctx, in, len, p, mode, out);
		th_direct_close(&d);
		ck_assert_msg(th_buf_eq(out, want, wantlen),
		    "lines(%s) output '%s' %s %s: got '%s'", opts,
		    esc(in, len, e1, sizeof(e1)), mode_name(mode), p->name,
		    esc(evbuffer_pullup(out, -1), evbuffer_get_length(out),
			e2, sizeof(e2)));
	}
	free(p);
	evbuffer_free(out);
}

#define EXPECT_OUT(opts, in, mode, want)                                      \
	expect_output(opts, in, sizeof(in) - 1, mode, want, sizeof(want) - 1)

#define EXPECT_OUT3(opts, in, want, want_fin)                                 \
	do {                                                                  \
		EXPECT_OUT(opts, in, BEV_NORMAL, want);                       \
		EXPECT_OUT(opts, in, BEV_FLUSH, want);                        \
		EXPECT_OUT(opts, in, BEV_FINISHED, want_fin);                 \
	} while (0)

START_TEST(out_lf)
{
	EXPECT_OUT3("", "a\nb", "a\nb", "a\nb\n");
	EXPECT_OUT3("eol=lf", "a\n\nb\n", "a\n\nb\n", "a\n\nb\n");
	/* any reads both; it writes lf */
	EXPECT_OUT3("eol=any", "a\nb", "a\nb", "a\nb\n");
	EXPECT_OUT3("", "", "", "");
	EXPECT_OUT3("", "\n", "\n", "\n");
	EXPECT_OUT3("", "a\r\n", "a\r\n", "a\r\n");
}
END_TEST

START_TEST(out_crlf)
{
	EXPECT_OUT3("eol=crlf", "a\nb", "a\r\nb", "a\r\nb\r\n");
	EXPECT_OUT3("eol=crlf", "\n\n", "\r\n\r\n", "\r\n\r\n");
	EXPECT_OUT3("eol=crlf", "", "", "");
	EXPECT_OUT3("eol=crlf", "one line\n", "one line\r\n",
	    "one line\r\n");
	/* every "\n" the user writes becomes the terminator */
	EXPECT_OUT3("eol=crlf", "a\r\n", "a\r\r\n", "a\r\r\n");
	EXPECT_OUT3("eol=crlf", "x\r", "x\r", "x\r\r\n");
}
END_TEST

START_TEST(out_nul_bytes)
{
	EXPECT_OUT3("eol=crlf", "a\0\nb\0", "a\0\r\nb\0", "a\0\r\nb\0\r\n");
	EXPECT_OUT3("", "\0\n\0", "\0\n\0", "\0\n\0\n");
}
END_TEST

START_TEST(out_random_vs_model)
{
	static const char *const eols[] = {"eol=lf", "eol=crlf", "eol=any"};
	unsigned char in[64];
	struct evbuffer *want = evbuffer_new();
	int c;
	size_t mi, n;

	for (c = 0; c < 300; c++) {
		const char *opts = eols[rnd() % 3];
		struct mopts m;
		mopts_parse(&m, opts);
		n = random_input(in, sizeof(in));
		for (mi = 0; mi < 3; mi++) {
			evbuffer_drain(want, evbuffer_get_length(want));
			model_output(&m, in, n, all_modes[mi] == BEV_FINISHED,
			    want);
			expect_output(opts, in, n, all_modes[mi],
			    evbuffer_pullup(want, -1),
			    evbuffer_get_length(want));
		}
	}
	evbuffer_free(want);
}
END_TEST

/* Output in rounds of at most @p lim bytes (a CRLF only goes over it into
 * an empty dst). */
static void
expect_output_limited(const char *opts, const char *in, size_t len,
    ev_ssize_t lim, enum bufferevent_flush_mode mode, const char *want,
    size_t wantlen)
{
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	struct evbuffer *got = evbuffer_new();
	struct th_direct d;
	char e1[200];
	int rounds;

	th_direct_open(&d, LINES, opts);
	evbuffer_add(src, in, len);
	for (rounds = 0; rounds < 10000; rounds++) {
		ev_ssize_t left = lim;
		size_t s0 = evbuffer_get_length(src);
		enum bufferevent_filter_result r;
		do {
			size_t d0 = evbuffer_get_length(dst), added;
			r = LINES->output(src, dst, left, mode, d.ctx);
			ck_assert_int_ne(r, BEV_ERROR);
			added = evbuffer_get_length(dst) - d0;
			ck_assert_msg((ev_ssize_t)added <= left ||
				(d0 == 0 && added == 2),
			    "lines(%s) lim %zd: %zu bytes into %zu with %zd "
			    "left", opts, lim, added, d0, left);
			left -= (ev_ssize_t)added;
		} while (r == BEV_OK && left > 0);
		if (!evbuffer_get_length(dst) &&
		    evbuffer_get_length(src) == s0)
			break;
		evbuffer_add_buffer(got, dst);
	}
	ck_assert_msg(th_buf_eq(got, want, wantlen), "lines(%s) lim %zd %s: got "
	    "'%s'", opts, lim, mode_name(mode),
	    esc(evbuffer_pullup(got, -1), evbuffer_get_length(got), e1,
		sizeof(e1)));
	th_direct_close(&d);
	evbuffer_free(src);
	evbuffer_free(dst);
	evbuffer_free(got);
}

START_TEST(out_limit_rounds)
{
	static const ev_ssize_t lims[] = {1, 2, 3, 4, 5, 100};
	static const char in[] = "ab\ncd\n\n\nefg";
	size_t i, m;

	for (i = 0; i < STRATA_ARRAY_LEN(lims); i++) {
		for (m = 0; m < 2; m++) {
			enum bufferevent_flush_mode mode = m ? BEV_FLUSH
							     : BEV_NORMAL;
			expect_output_limited("eol=crlf", in, sizeof(in) - 1,
			    lims[i], mode, "ab\r\ncd\r\n\r\n\r\nefg", 15);
			expect_output_limited("", in, sizeof(in) - 1,
			    lims[i], mode, "ab\ncd\n\n\nefg", 11);
		}
		expect_output_limited("eol=crlf", in, sizeof(in) - 1, lims[i],
		    BEV_FINISHED, "ab\r\ncd\r\n\r\n\r\nefg\r\n", 17);
		expect_output_limited("", in, sizeof(in) - 1, lims[i],
		    BEV_FINISHED, "ab\ncd\n\n\nefg\n", 12);
	}
}
END_TEST

/* ---- options ---- */

START_TEST(opt_every_value)
{
	static const char *const good[] = {"eol=lf", "eol=crlf", "eol=any",
	    "max=1", "max=65536", "max=64k", "max=67108864", "max=64M",
	    "overflow=error", "overflow=truncate", "tail=deliver",
	    "tail=error", "eol=crlf,max=10,overflow=truncate,tail=error"};
	struct th_direct d;
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(good); i++) {
		th_direct_open(&d, LINES, good[i]);
		th_direct_close(&d);
	}
	/* what each value does: max with a suffix */
	{
		size_t n = 64 * 1024;
		char *in = malloc(n + 2);
		memset(in, 'k', n + 1);
		in[n] = '\n';
		expect_input("max=64k", in, n + 1, BEV_NORMAL, in, n + 1,
		    NULL);
		in[n] = 'k';
		in[n + 1] = '\n';
		expect_input("max=64k", in, n + 2, BEV_NORMAL, "", 0,
		    "lines: line longer than 65536 bytes at offset 0");
		free(in);
	}
	/* eol, overflow, tail: each value against the other's behaviour */
	EXPECT_IN("eol=lf", "a\r\n", BEV_NORMAL, "a\r\n", NULL);
	EXPECT_IN("eol=crlf", "a\r\nb\nc\r\n", BEV_NORMAL, "a\nb\nc\n", NULL);
	EXPECT_IN("eol=any", "a\r\nb\n", BEV_NORMAL, "a\nb\n", NULL);
	EXPECT_IN("max=2,overflow=error", "abc\n", BEV_NORMAL, "",
	    "lines: line longer than 2 bytes at offset 0");
	EXPECT_IN("max=2,overflow=truncate", "abc\n", BEV_NORMAL, "ab\n",
	    NULL);
	EXPECT_IN("tail=deliver", "ab", BEV_FINISHED, "ab\n", NULL);
	EXPECT_IN("tail=error", "ab", BEV_FINISHED, "",
	    "lines: stream ended inside a line (2 bytes without a "
	    "terminator at offset 0)");
}
END_TEST

START_TEST(opt_defaults)
{
	struct strata_error err;
	struct evbuffer *src = evbuffer_new(), *dst = evbuffer_new();
	void *cfg = NULL, *ctx;
	size_t n = 65536;
	char *in = malloc(n + 1);

	/* no options: lf, max 65536, overflow error, tail deliver */
	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(LINES->config(&cfg, NULL, 0, &err), 0);
	ck_assert_ptr_nonnull(cfg);
	LINES->config_free(cfg);
	memset(in, 'd', n);
	in[n] = '\n';
	expect_input("", in, n + 1, BEV_NORMAL, in, n + 1, NULL);
	EXPECT_IN("", "a\r\nb", BEV_FINISHED, "a\r\nb\n", NULL);
	EXPECT_OUT("", "a\nb", BEV_FINISHED, "a\nb\n");
	/* create() without a configuration uses the same defaults */
	ctx = LINES->create(NULL, NULL, &err);
	ck_assert_ptr_nonnull(ctx);
	evbuffer_add(src, in, n + 1);
	evbuffer_add(src, "x\r\ny", 4);
	ck_assert_int_eq(drive(LINES->input, ctx, src, dst, -1, BEV_FINISHED),
	    0);
	ck_assert_uint_eq(evbuffer_get_length(dst), n + 1 + 5);
	ck_assert(!memcmp(evbuffer_pullup(dst, -1) + n + 1, "x\r\ny\n", 5));
	LINES->destroy(ctx);
	free(in);
	evbuffer_free(src);
	evbuffer_free(dst);
}
END_TEST

START_TEST(opt_bad_values)
{
	static const struct {
		const char *opts;
		const char *msg;
	} bad[] = {
		{"eol=cr", "lines: bad value 'cr' for eol: expected one of "
		    "lf, crlf, any"},
		{"eol=", "lines: bad value '' for eol"},
		{"eol=LF", "lines: bad value 'LF' for eol"},
		{"max=0", "lines: bad value '0' for max: expected an integer "
		    "from 1 to 67108864"},
		{"max=67108865", "lines: bad value '67108865' for max"},
		{"max=65M", "lines: bad value '65M' for max"},
		{"max=-1", "lines: bad value '-1' for max"},
		{"max=12x", "lines: bad value '12x' for max"},
		{"overflow=drop", "lines: bad value 'drop' for overflow: "
		    "expected one of error, truncate"},
		{"tail=keep", "lines: bad value 'keep' for tail: expected one "
		    "of deliver, error"},
		{"eol=lf,tail=no", "lines: bad value 'no' for tail"},
		{"colour=red", "lines: unknown option 'colour'"},
	};
	struct strata_error err;
	struct th_optlist l;
	void *cfg;
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(bad); i++) {
		memset(&err, 0, sizeof(err));
		th_optlist_parse(&l, bad[i].opts);
		cfg = NULL;
		ck_assert_msg(LINES->config(&cfg, l.o, l.n, &err) < 0,
		    "'%s' accepted", bad[i].opts);
		ck_assert_ptr_null(cfg);
		ck_assert_int_eq(err.code, STRATA_ERR_OPTION);
		ck_assert_msg(!strncmp(err.message, bad[i].msg,
				  strlen(bad[i].msg)),
		    "'%s': message '%s'", bad[i].opts, err.message);
		/* the position is the offending option's */
		ck_assert_uint_eq(err.position, l.o[l.n - 1].position);
	}
}
END_TEST

START_TEST(opt_stack_strings)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct bufferevent *pair[2], *top;

	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	memset(&err, 0, sizeof(err));
	top = strata_push(pair[0], "lines(colour=red)", 0, &err);
	ck_assert_ptr_null(top);
	ck_assert_int_eq(err.code, STRATA_ERR_OPTION);
	ck_assert_str_eq(err.message, "lines: unknown option 'colour' at "
	    "position 6 (known: eol, max, overflow, tail)");
	top = strata_push(pair[0], "lines(max=0)", 0, &err);
	ck_assert_ptr_null(top);
	ck_assert_ptr_nonnull(strstr(err.message,
	    "lines: bad value '0' for max"));
	ck_assert_uint_eq(err.position, 6);
	top = strata_push(pair[0],
	    "lines(eol=crlf, max=1k, overflow=truncate, tail=error)",
	    BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	bufferevent_free(top);
	bufferevent_free(pair[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}
END_TEST

/* ---- stacks: fixture ---- */

struct sfx {
	struct event_base *base;
	struct bufferevent *top;  /* the reader stack */
	struct bufferevent *wtop; /* pipe tests: the writer stack */
	struct bufferevent *pbev; /* the raw peer, for big writes */
	int peer;		  /* socketpair: the raw other end */
	struct evbuffer *got;	  /* lines read, each + "\n" */
	int lines, events, errors, eof;
	int partial;		  /* input left after readln */
	int late;		  /* data after EOF or an error */
	int lines_at_event;	  /* lines read when the event came */
	size_t unread_at_event;	  /* bytes left in the top's input then */
	short last_what;
	char error[ERRLEN];
};

static void
sfx_read(struct bufferevent *bev, void *arg)
{
	struct sfx *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *l;

	if (f->eof || f->errors)
		f->late++;
	while ((l = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		evbuffer_add(f->got, l, n);
		evbuffer_add(f->got, "\n", 1);
		f->lines++;
		free(l);
	}
	if (evbuffer_get_length(in))
		f->partial++;
}

static void
sfx_event(struct bufferevent *bev, short what, void *arg)
{
	struct sfx *f = arg;
	const char *e = strata_last_error(bev);

	f->events++;
	f->last_what = what;
	f->lines_at_event = f->lines;
	f->unread_at_event = evbuffer_get_length(bufferevent_get_input(bev));
	if (what & BEV_EVENT_ERROR) {
		f->errors++;
		snprintf(f->error, sizeof(f->error), "%s", e ? e : "(none)");
	}
	if (what & BEV_EVENT_EOF)
		f->eof++;
}

static struct bufferevent *
stack_on_fd(struct event_base *base, int fd, const char *filters)
{
	struct strata_error err;
	struct bufferevent *t, *top;

	memset(&err, 0, sizeof(err));
	t = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(t);
	top = strata_push(t, filters, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "push '%s': %s", filters, err.message);
	return top;
}

static void
sfx_init(struct sfx *f)
{
	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	f->got = evbuffer_new();
	f->peer = -1;
}

/* A reader stack over one end of a socketpair; the test is the peer. */
static void
sfx_socket(struct sfx *f, const char *filters)
{
	int fds[2];

	sfx_init(f);
	th_socketpair(fds);
	f->top = stack_on_fd(f->base, fds[0], filters);
	f->peer = fds[1];
	bufferevent_setcb(f->top, sfx_read, NULL, sfx_event, f);
	bufferevent_enable(f->top, EV_READ | EV_WRITE);
}

/* A writer stack over a pipe's write end, a reader over its read end. */
static void
sfx_pipe(struct sfx *f, const char *writer, const char *reader)
{
	int p[2];

	sfx_init(f);
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(p[0]), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(p[1]), 0);
	f->top = stack_on_fd(f->base, p[0], reader);
	f->wtop = stack_on_fd(f->base, p[1], writer);
	bufferevent_setcb(f->top, sfx_read, NULL, sfx_event, f);
	bufferevent_enable(f->top, EV_READ);
	bufferevent_enable(f->wtop, EV_WRITE);
}

/* A writer stack and a reader stack on the two ends of a socketpair. */
static void
sfx_sockets(struct sfx *f, const char *writer, const char *reader)
{
	int fds[2];

	sfx_init(f);
	th_socketpair(fds);
	f->top = stack_on_fd(f->base, fds[0], reader);
	f->wtop = stack_on_fd(f->base, fds[1], writer);
	bufferevent_setcb(f->top, sfx_read, NULL, sfx_event, f);
	bufferevent_enable(f->top, EV_READ | EV_WRITE);
	bufferevent_enable(f->wtop, EV_READ | EV_WRITE);
}

static void
sfx_free(struct sfx *f)
{
	if (f->top)
		bufferevent_free(f->top);
	if (f->wtop)
		bufferevent_free(f->wtop);
	if (f->pbev)
		bufferevent_free(f->pbev);
	if (f->peer >= 0)
		close(f->peer);
	th_run_for(f->base, 5);
	evbuffer_free(f->got);
	event_base_free(f->base);
}

static void
peer_write(struct sfx *f, const void *s, size_t n)
{
	ck_assert_int_eq(write(f->peer, s, n), (ssize_t)n);
}

static int
out_empty(struct bufferevent *bev)
{
	return !evbuffer_get_length(bufferevent_get_output(bev));
}

/* Big writes from the peer, with back-pressure, through a bufferevent. */
static void
peer_send(struct sfx *f, const void *s, size_t n)
{
	int waited;

	if (!f->pbev)
		f->pbev = bufferevent_socket_new(f->base, f->peer, 0);
	bufferevent_write(f->pbev, s, n);
	for (waited = 0; !out_empty(f->pbev) && waited < 5000; waited += 10)
		th_run_for(f->base, 10);
	ck_assert_msg(out_empty(f->pbev), "timed out sending %zu bytes", n);
}

/* The writer stack's output reached the kernel. */
static int
drained(struct bufferevent *top)
{
	return out_empty(top) && out_empty(strata_transport(top));
}

static void
run_until_drained(struct event_base *base, struct bufferevent *top, int ms)
{
	int waited;

	for (waited = 0; !drained(top) && waited < ms; waited += 10)
		th_run_for(base, 10);
	ck_assert_msg(drained(top), "timed out after %d ms waiting for the "
	    "writer to drain", ms);
}

/* Read from the raw peer until @p want bytes or EOF; returns the count. */
static size_t
peer_read(struct sfx *f, char *buf, size_t want, int *eof, int ms)
{
	size_t got = 0;
	int waited = 0;
	ssize_t n;

	*eof = 0;
	while (got < want + 1 && waited < ms) {
		n = read(f->peer, buf + got, want + 1 - got);
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n == 0) {
			*eof = 1;
			break;
		}
		ck_assert_int_eq(errno, EAGAIN);
		if (got == want && waited > 50)
			break;
		th_run_for(f->base, 10);
		waited += 10;
	}
	return got;
}

static int
got_is(struct sfx *f, const void *s, size_t n)
{
	return th_buf_eq(f->got, s, n);
}

/* ---- stacks over a socketpair ---- */

START_TEST(sock_overflow_error_default)
{
	/* the spec's example: default max, a long line after 1 MiB */
	size_t good = 1u << 20, i;
	char *buf = malloc(good + 65537 + 16);
	struct strata_error err;
	struct sfx f;

	for (i = 0; i < good; i += 64) {
		memset(buf + i, 'a' + (int)(i / 64 % 26), 63);
		buf[i + 63] = '\n';
	}
	memset(buf + good, 'x', 65537);
	memcpy(buf + good + 65537, "\nmore\n", 6);
	sfx_socket(&f, "lines");
	peer_send(&f, buf, good + 65537 + 6);
	th_run_until(f.base, &f.errors, 5000, "the overflow error");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_str_eq(f.error,
	    "lines: line longer than 65536 bytes at offset 1048576");
	ck_assert_str_eq(strata_last_error(f.top), f.error);
	ck_assert_int_eq(strata_get_error(f.top, &err), 1);
	ck_assert_int_eq(err.code, STRATA_ERR_FILTER);
	/* every line before the long one was read, intact */
	ck_assert_int_eq(f.lines, (int)(good / 64));
	ck_assert(got_is(&f, buf, good));
	ck_assert_int_eq(f.partial, 0);
	/* more data and EOF raise nothing more */
	peer_write(&f, "again\n", 6);
	shutdown(f.peer, SHUT_WR);
	th_run_for(f.base, 50);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.lines, (int)(good / 64));
	free(buf);
	sfx_free(&f);
}
END_TEST

START_TEST(sock_overflow_error_same_read)
{
	/* the lines before the long one arrive in the same read */
	struct sfx f;

	sfx_socket(&f, "lines(max=8)");
	peer_write(&f, "one\ntwo\nxxxxxxxxxxxxxxxxxxxx\n", 29);
	th_run_until(f.base, &f.errors, 2000, "the overflow error");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_str_eq(f.error,
	    "lines: line longer than 8 bytes at offset 8");
	ck_assert_msg(f.lines_at_event == 2,
	    "%d lines read before the error event, %zu bytes left unread "
	    "in the top's input", f.lines_at_event, f.unread_at_event);
	ck_assert(got_is(&f, "one\ntwo\n", 8));
	sfx_free(&f);
}
END_TEST

START_TEST(sock_tail_error)
{
	struct strata_error err;
	struct sfx f;

	sfx_socket(&f, "lines(tail=error)");
	peer_write(&f, "a\nb", 3);
	th_run_until(f.base, &f.lines, 2000, "the first line");
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &f.events, 2000, "the EOF error");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.eof, 0);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_str_eq(f.error, "lines: stream ended inside a line (1 "
	    "bytes without a terminator at offset 2)");
	ck_assert_str_eq(strata_last_error(f.top), f.error);
	ck_assert_int_eq(strata_get_error(f.top, &err), 1);
	ck_assert_int_eq(err.code, STRATA_ERR_TRUNCATED);
	ck_assert(got_is(&f, "a\n", 2));
	ck_assert_int_eq(f.partial, 0);
	sfx_free(&f);
}
END_TEST

START_TEST(sock_tail_error_terminated_is_eof)
{
	struct sfx f;

	sfx_socket(&f, "lines(tail=error,eol=crlf)");
	peer_write(&f, "a\r\nb\r\n", 6);
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &f.events, 2000, "EOF");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.eof, 1);
	ck_assert_ptr_null(strata_last_error(f.top));
	ck_assert(got_is(&f, "a\nb\n", 4));
	sfx_free(&f);
}
END_TEST

START_TEST(sock_tail_deliver)
{
	struct sfx f;

	sfx_socket(&f, "lines(tail=deliver)");
	peer_write(&f, "a\n\0b", 4);
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &f.eof, 2000, "EOF");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.errors, 0);
	/* the last line was read before EOF came, and nothing after */
	ck_assert_int_eq(f.lines_at_event, 2);
	ck_assert_int_eq(f.unread_at_event, 0);
	ck_assert_int_eq(f.late, 0);
	ck_assert(got_is(&f, "a\n\0b\n", 5));
	sfx_free(&f);
}
END_TEST

START_TEST(sock_truncate)
{
	static const char in[] = "short\r\n"
				 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
				 "xxxxxxxxxxxxxxxxxxxxxxxxxxxx\nstill\r\n"
				 "after\r\nyyyyyyyyyyyyyy";
	char text[128];
	size_t off;
	struct sfx f;

	sfx_socket(&f, "lines(eol=crlf,max=10,overflow=truncate)");
	/* trickle it in, 7 bytes per loop turn */
	for (off = 0; off < sizeof(in) - 1; off += 7) {
		size_t n = sizeof(in) - 1 - off < 7 ? sizeof(in) - 1 - off : 7;
		peer_write(&f, in + off, n);
		th_run_for(f.base, 2);
	}
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &f.eof, 2000, "EOF");
	ck_assert_int_eq(f.errors, 0);
	ck_assert_msg(got_is(&f, "short\nxxxxxxxxxx\nafter\nyyyyyyyyyy\n", 34),
	    "got %zu bytes", evbuffer_get_length(f.got));
	ck_assert_int_gt(strata_layer_describe(f.top, 1, text, sizeof(text)),
	    0);
	ck_assert_str_eq(text, "eol=crlf lines=4 truncated=2");
	sfx_free(&f);
}
END_TEST

START_TEST(sock_crlf_both_ways)
{
	char buf[64];
	int eof;
	struct sfx f;

	sfx_socket(&f, "lines(eol=crlf)");
	/* a CR at the end of one read, its LF in the next */
	peer_write(&f, "ab\r", 3);
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.lines, 0);
	peer_write(&f, "\n\0c\r", 4);
	th_run_for(f.base, 20);
	peer_write(&f, "\n", 1);
	th_run_until(f.base, &f.lines, 2000, "two lines");
	th_run_for(f.base, 20);
	ck_assert(got_is(&f, "ab\n\0c\n", 6));
	ck_assert_int_eq(f.partial, 0);
	/* output: "\n" goes out as CRLF, BEV_FINISHED ends the last line
	 * and then the stream */
	bufferevent_write(f.top, "x\n\ny", 4);
	bufferevent_flush(f.top, EV_WRITE, BEV_FINISHED);
	ck_assert_uint_eq(peer_read(&f, buf, 8, &eof, 2000), 8);
	ck_assert(!memcmp(buf, "x\r\n\r\ny\r\n", 8));
	ck_assert_uint_eq(peer_read(&f, buf, 0, &eof, 2000), 0);
	ck_assert_int_eq(eof, 1);
	ck_assert_int_eq(f.errors, 0);
	sfx_free(&f);
}
END_TEST

START_TEST(sock_read_watermark)
{
	/* a read high watermark below the line length: lines arrive whole */
	struct evbuffer *want = evbuffer_new();
	char line[64];
	int i, n;
	struct sfx f;

	sfx_socket(&f, "lines(eol=any)");
	bufferevent_setwatermark(f.top, EV_READ, 0, 8);
	for (i = 0; i < 50; i++) {
		n = snprintf(line, sizeof(line), "line %02d of the stream%s", i,
		    i % 2 ? "\r\n" : "\n");
		peer_write(&f, line, (size_t)n);
		evbuffer_add_printf(want, "line %02d of the stream\n", i);
	}
	shutdown(f.peer, SHUT_WR);
	th_run_until(f.base, &f.eof, 2000, "EOF");
	ck_assert_int_eq(f.lines, 50);
	ck_assert_int_eq(f.partial, 0);
	ck_assert(got_is(&f, evbuffer_pullup(want, -1),
	    evbuffer_get_length(want)));
	evbuffer_free(want);
	sfx_free(&f);
}
END_TEST

/* ---- a 10 MB stream of random-length lines ---- */

struct feeder {
	const unsigned char *data;
	size_t len, off;
	int done;
};

static void
feeder_write(struct bufferevent *bev, void *arg)
{
	struct feeder *w = arg;
	struct evbuffer *out = bufferevent_get_output(bev);

	while (w->off < w->len && evbuffer_get_length(out) < 256 * 1024) {
		size_t n = 1 + rnd() % 65536;
		const unsigned char *p = w->data + w->off;
		if (n > w->len - w->off)
			n = w->len - w->off;
		/* advance first: on a filter bufferevent the write may call
		 * this callback again from inside bufferevent_write() */
		w->off += n;
		bufferevent_write(bev, p, n);
	}
	if (w->off == w->len)
		w->done = 1;
}

/* Lines of 0..@p maxlen random bytes (never "\n"; "\r" and NUL included),
 * some of exactly @p maxlen, the last one unterminated. */
static unsigned char *
random_lines(size_t total, size_t maxlen, size_t *len, int *nlines)
{
	unsigned char *d = malloc(total + maxlen + 8);
	size_t off = 0, i, n;

	*nlines = 0;
	while (off < total) {
		n = *nlines % 97 == 0 ? maxlen : rnd() % (maxlen + 1);
		for (i = 0; i < n; i++) {
			unsigned char c = (unsigned char)rnd();
			d[off + i] = c == '\n' ? '\r' : c;
		}
		off += n;
		d[off++] = '\n';
		++*nlines;
	}
	memcpy(d + off, "end", 3); /* unterminated */
	*len = off + 3;
	++*nlines;
	return d;
}

/* Send 10 MB through the writer stack; the reader must get it intact. */
static void
ten_mb(struct sfx *f, int is_pipe)
{
	struct feeder w = {0};
	size_t len;
	int nlines;
	unsigned char *d = random_lines(10u << 20, 4096, &len, &nlines);

	w.data = d;
	w.len = len;
	bufferevent_setcb(f->wtop, NULL, feeder_write, NULL, &w);
	bufferevent_setwatermark(f->wtop, EV_WRITE, 64 * 1024, 0);
	bufferevent_enable(f->wtop, EV_WRITE);
	feeder_write(f->wtop, &w);
	th_run_until(f->base, &w.done, 30000, "the writer to queue 10 MB");
	bufferevent_flush(f->wtop, EV_WRITE, BEV_FINISHED);
	run_until_drained(f->base, f->wtop, 30000);
	if (is_pipe) {
		/* a pipe has no half-close: closing the write end is EOF */
		bufferevent_free(f->wtop);
		f->wtop = NULL;
	}
	th_run_until(f->base, &f->eof, 30000, "EOF after 10 MB");
	ck_assert_int_eq(f->errors, 0);
	ck_assert_int_eq(f->partial, 0);
	ck_assert_int_eq(f->late, 0);
	ck_assert_int_eq(f->lines, nlines);
	ck_assert_uint_eq(evbuffer_get_length(f->got), len + 1);
	ck_assert(!memcmp(evbuffer_pullup(f->got, -1), d, len));
	ck_assert(!memcmp(evbuffer_pullup(f->got, -1) + len, "\n", 1));
	free(d);
}

START_TEST(sock_ten_mb)
{
	struct sfx f;

	sfx_sockets(&f, "lines(eol=crlf)", "lines(eol=crlf,max=4096)");
	ten_mb(&f, 0);
	sfx_free(&f);
}
END_TEST

/* ---- stacks over a pipe pair ---- */

START_TEST(pipe_roundtrip_finished)
{
	struct sfx f;

	sfx_pipe(&f, "lines(eol=crlf)", "lines(eol=crlf)");
	bufferevent_write(f.wtop, "a\n\nb\0c\nlast", 11);
	bufferevent_flush(f.wtop, EV_WRITE, BEV_FINISHED);
	run_until_drained(f.base, f.wtop, 2000);
	bufferevent_free(f.wtop);
	f.wtop = NULL;
	th_run_until(f.base, &f.eof, 2000, "EOF");
	ck_assert_int_eq(f.errors, 0);
	ck_assert_int_eq(f.lines, 4);
	ck_assert(got_is(&f, "a\n\nb\0c\nlast\n", 12));
	sfx_free(&f);
}
END_TEST

START_TEST(pipe_overflow_error)
{
	char line[128];
	struct sfx f;

	memset(line, 'z', sizeof(line));
	line[100] = '\n';
	sfx_pipe(&f, "lines", "lines(max=50)");
	bufferevent_write(f.wtop, "ok\n", 3);
	bufferevent_write(f.wtop, line, 101);
	bufferevent_write(f.wtop, "after\n", 6);
	th_run_until(f.base, &f.errors, 2000, "the overflow error");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_str_eq(f.error,
	    "lines: line longer than 50 bytes at offset 3");
	ck_assert_str_eq(strata_last_error(f.top), f.error);
	/* "ok" came in the same read as the long line */
	ck_assert_msg(f.lines_at_event == 1,
	    "%d lines read before the error event, %zu bytes left unread "
	    "in the top's input", f.lines_at_event, f.unread_at_event);
	ck_assert(got_is(&f, "ok\n", 3));
	/* EOF after the error raises nothing more */
	bufferevent_free(f.wtop);
	f.wtop = NULL;
	th_run_for(f.base, 50);
	ck_assert_int_eq(f.events, 1);
	sfx_free(&f);
}
END_TEST

/* The writer stops mid-line (no BEV_FINISHED) and closes. */
static void
pipe_cut_mid_line(struct sfx *f)
{
	bufferevent_write(f->wtop, "a\nb", 3);
	run_until_drained(f->base, f->wtop, 2000);
	bufferevent_free(f->wtop);
	f->wtop = NULL;
}

START_TEST(pipe_tail_error)
{
	struct sfx f;

	sfx_pipe(&f, "lines", "lines(tail=error)");
	pipe_cut_mid_line(&f);
	th_run_until(f.base, &f.events, 2000, "the EOF error");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.eof, 0);
	ck_assert_int_eq(f.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_str_eq(f.error, "lines: stream ended inside a line (1 "
	    "bytes without a terminator at offset 2)");
	ck_assert_str_eq(strata_last_error(f.top), f.error);
	ck_assert(got_is(&f, "a\n", 2));
	sfx_free(&f);
}
END_TEST

START_TEST(pipe_tail_deliver)
{
	struct sfx f;

	sfx_pipe(&f, "lines", "lines");
	pipe_cut_mid_line(&f);
	th_run_until(f.base, &f.eof, 2000, "EOF");
	th_run_for(f.base, 20);
	ck_assert_int_eq(f.events, 1);
	ck_assert_int_eq(f.errors, 0);
	ck_assert_int_eq(f.lines_at_event, 2);
	ck_assert_int_eq(f.late, 0);
	ck_assert(got_is(&f, "a\nb\n", 4));
	sfx_free(&f);
}
END_TEST

START_TEST(pipe_truncate)
{
	struct sfx f;

	sfx_pipe(&f, "lines(eol=crlf)",
	    "lines(eol=any,max=4,overflow=truncate)");
	bufferevent_write(f.wtop, "abcdefgh\nij\nklmn\nopqrstu", 24);
	bufferevent_flush(f.wtop, EV_WRITE, BEV_FINISHED);
	run_until_drained(f.base, f.wtop, 2000);
	bufferevent_free(f.wtop);
	f.wtop = NULL;
	th_run_until(f.base, &f.eof, 2000, "EOF");
	ck_assert_int_eq(f.errors, 0);
	ck_assert(got_is(&f, "abcd\nij\nklmn\nopqr\n", 18));
	sfx_free(&f);
}
END_TEST

START_TEST(pipe_ten_mb)
{
	struct sfx f;

	sfx_pipe(&f, "lines(eol=crlf)", "lines(eol=crlf,max=4096)");
	ten_mb(&f, 1);
	sfx_free(&f);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("lines");
	TCase *tc;
	SRunner *sr;
	int failed;

	if (th_capture_register(LINES, "tlines") < 0) {
		fprintf(stderr, "could not register the test filter\n");
		return 1;
	}

	tc = tcase_create("options");
	tcase_add_test(tc, opt_every_value);
	tcase_add_test(tc, opt_defaults);
	tcase_add_test(tc, opt_bad_values);
	tcase_add_test(tc, opt_stack_strings);
	suite_add_tcase(s, tc);

	tc = tcase_create("input");
	tcase_add_test(tc, in_empty);
	tcase_add_test(tc, in_lf_lines);
	tcase_add_test(tc, in_empty_lines);
	tcase_add_test(tc, in_crlf);
	tcase_add_test(tc, in_any);
	tcase_add_test(tc, in_nul_bytes);
	tcase_add_test(tc, in_max_exact);
	tcase_add_test(tc, in_max_plus_one_error);
	tcase_add_test(tc, in_max_plus_one_truncate);
	tcase_add_test(tc, in_tail_policy);
	tcase_add_test(tc, in_default_max);
	tcase_add_test(tc, in_random_vs_model);
	tcase_add_test(tc, in_long_vs_model);
	tcase_add_test(tc, in_trickle_linear);
	suite_add_tcase(s, tc);

	tc = tcase_create("output");
	tcase_add_test(tc, out_lf);
	tcase_add_test(tc, out_crlf);
	tcase_add_test(tc, out_nul_bytes);
	tcase_add_test(tc, out_random_vs_model);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, in_limit_rounds);
	tcase_add_test(tc, in_limit_full_dst);
	tcase_add_test(tc, out_limit_rounds);
	suite_add_tcase(s, tc);

	tc = tcase_create("socketpair");
	tcase_add_test(tc, sock_overflow_error_default);
	tcase_add_test(tc, sock_overflow_error_same_read);
	tcase_add_test(tc, sock_tail_error);
	tcase_add_test(tc, sock_tail_error_terminated_is_eof);
	tcase_add_test(tc, sock_tail_deliver);
	tcase_add_test(tc, sock_truncate);
	tcase_add_test(tc, sock_crlf_both_ways);
	tcase_add_test(tc, sock_read_watermark);
	tcase_add_test(tc, sock_ten_mb);
	suite_add_tcase(s, tc);

	tc = tcase_create("pipe");
	tcase_add_test(tc, pipe_roundtrip_finished);
	tcase_add_test(tc, pipe_overflow_error);
	tcase_add_test(tc, pipe_tail_error);
	tcase_add_test(tc, pipe_tail_deliver);
	tcase_add_test(tc, pipe_truncate);
	tcase_add_test(tc, pipe_ten_mb);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
