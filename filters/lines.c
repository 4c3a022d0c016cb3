/*
 * lines: line framing.
 *
 * Input side: the layer above only ever receives complete lines, each
 * terminated by "\n" whatever the wire used, so evbuffer_readln(...,
 * EVBUFFER_EOL_LF) on the top always finds a whole line. Lines are found
 * with memchr over evbuffer_peek extents and moved with
 * evbuffer_remove_buffer, in batches: no allocation per line. With
 * eol=lf, an extent that cannot hold a line over max is not walked line
 * by line: one memrchr finds its last "\n" and a vector loop counts the
 * lines.
 *
 * Output side: each "\n" the user writes goes out as the configured
 * terminator; BEV_FINISHED terminates an unterminated last line.
 *
 * Options: eol=lf|crlf|any, max=BYTES (per line, terminator excluded),
 * overflow=error|truncate, tail=deliver|error.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "internal.h"

enum lines_eol { EOL_LF, EOL_CRLF, EOL_ANY };
enum lines_overflow { OVERFLOW_ERROR, OVERFLOW_TRUNCATE };
enum lines_tail { TAIL_DELIVER, TAIL_ERROR };

#define LINES_MAX_DEFAULT 65536
#define LINES_MAX_LIMIT (64u << 20)
#define PEEK_EXTENTS 16

struct lines_cfg {
	enum lines_eol eol;
	size_t max;
	enum lines_overflow overflow;
	enum lines_tail tail;
};

struct lines {
	const struct lines_cfg *cfg;
	struct strata_layer *layer;
	uint64_t offset;	/* input bytes consumed so far */
	uint64_t cut_at;	/* offset of the line being discarded */
	uint64_t lines_in;	/* lines delivered up */
	uint64_t truncated;	/* lines cut by overflow=truncate */
	/* Bytes at the start of src already searched without finding the
	 * end of the partial line there: src only grows between calls (this
	 * filter alone drains it), so a slow peer does not make every call
	 * rescan the whole line. */
	size_t scanned;
	int discarding;		/* dropping the rest of a truncated line */
	int out_mid_line;	/* last output byte was not a line end */
};

static const struct strata_option_doc lines_options[] = {
	{"eol", "lf", "line terminator: lf, crlf, or any (lf or crlf)"},
	{"max", "65536", "longest line in bytes, terminator excluded"},
	{"overflow", "error", "a longer line: error, or truncate to max"},
	{"tail", "deliver", "unterminated last line at EOF: deliver or error"},
	{NULL, NULL, NULL},
};

static int
lines_config_one(struct lines_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	static const char *const eols[] = {"lf", "crlf", "any", NULL};
	static const char *const ovf[] = {"error", "truncate", NULL};
	static const char *const tails[] = {"deliver", "error", NULL};
	uint64_t max;
	int v;

	if (!strcmp(o->key, "eol")) {
		if (strata_opt_enum("lines", o, eols, &v, err) < 0)
			return -1;
		c->eol = (enum lines_eol)v;
	} else if (!strcmp(o->key, "max")) {
		if (strata_opt_uint("lines", o, 1, LINES_MAX_LIMIT, 1, &max,
			err) < 0)
			return -1;
		c->max = (size_t)max;
	} else if (!strcmp(o->key, "overflow")) {
		if (strata_opt_enum("lines", o, ovf, &v, err) < 0)
			return -1;
		c->overflow = (enum lines_overflow)v;
	} else if (!strcmp(o->key, "tail")) {
		if (strata_opt_enum("lines", o, tails, &v, err) < 0)
			return -1;
		c->tail = (enum lines_tail)v;
	} else {
		/* the stack parser checks keys too; a direct caller may not */
		strata_error_set(err, STRATA_ERR_OPTION,
		    "lines: unknown option '%s'", o->key);
		if (err)
			err->position = o->position;
		return -1;
	}
	return 0;
}

static int
lines_config(void **cfgp, const struct strata_option *opts, size_t n,
    struct strata_error *err)
{
	struct lines_cfg *c = strata_calloc_(1, sizeof(*c));
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->max = LINES_MAX_DEFAULT;
	for (i = 0; i < n; i++) {
		if (lines_config_one(c, &opts[i], err) < 0) {
			strata_free_(c);
			return -1;
		}
	}
	*cfgp = c;
	return 0;
}

static void *
lines_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	static const struct lines_cfg dflt = {EOL_LF, LINES_MAX_DEFAULT,
	    OVERFLOW_ERROR, TAIL_DELIVER};
	struct lines *l = strata_calloc_(1, sizeof(*l));

	if (!l) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	l->cfg = cfg ? cfg : &dflt;
	l->layer = layer;
	return l;
}

static void
lines_destroy(void *ctx)
{
	strata_free_(ctx);
}

/*
 * Position of the first "\n" in @p src at or after @p from, looking at no
 * more than @p span bytes; -1 if none.
 */
static ev_ssize_t
find_lf(struct evbuffer *src, size_t from, size_t span)
{
	struct evbuffer_ptr ptr;
	struct evbuffer_iovec v[PEEK_EXTENTS];
	size_t seen = 0;
	int n, i;

	if (evbuffer_ptr_set(src, &ptr, from, EVBUFFER_PTR_SET) < 0)
		return -1;
	while (seen < span) {
		size_t round = 0;

		n = evbuffer_peek(src, (ev_ssize_t)(span - seen), &ptr, v,
		    PEEK_EXTENTS);
		if (n <= 0)
			return -1;
		if (n > PEEK_EXTENTS)
			n = PEEK_EXTENTS;
		for (i = 0; i < n && seen < span; i++) {
			const char *base = v[i].iov_base, *hit;
			size_t len = v[i].iov_len;
			if (len > span - seen)
				len = span - seen;
			hit = memchr(base, '\n', len);
			if (hit)
				return (ev_ssize_t)(from + seen +
				    (size_t)(hit - base));
			seen += len;
			round += len;
		}
		/* on from here: a SET would walk every chain before it
		 * again, quadratic in a buffer of many small chains */
		if (evbuffer_ptr_set(src, &ptr, round, EVBUFFER_PTR_ADD) < 0)
			return -1;
	}
	return -1;
}

static int
byte_at(struct evbuffer *src, size_t pos)
{
	struct evbuffer_ptr ptr;
	struct evbuffer_iovec v;

	if (evbuffer_ptr_set(src, &ptr, pos, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_peek(src, 1, &ptr, &v, 1) < 1)
		return -1;
	return *(unsigned char *)v.iov_base;
}

/*
 * The number of "\n" in @p n bytes at @p p: 16 bytes a step with the
 * compilers' vector extensions (SSE2 on x86-64, scalar code elsewhere),
 * the byte counters summed before they can wrap.
 */
static size_t
count_lf(const char *p, size_t n)
{
	typedef unsigned char v16 __attribute__((vector_size(16)));
	size_t c = 0, i = 0, k;

	while (n - i >= 16) {
		v16 acc = {0}, x;

		for (k = 0; k < 255 && n - i >= 16; k++, i += 16) {
			memcpy(&x, p + i, sizeof(x));
			acc -= (v16)(x == '\n');
		}
		for (k = 0; k < sizeof(acc); k++)
			c += acc[k];
	}
	for (; i < n; i++)
		c += p[i] == '\n';
	return c;
}

/* Length of the terminator ending at @p lf (1 or 2), or 0 if the "\n" at
 * @p lf is not a terminator under the configured eol. */
static size_t
eol_len(const struct lines *l, struct evbuffer *src, size_t lf)
{
	int cr;

	if (l->cfg->eol == EOL_LF)
		return 1;
	cr = lf > 0 && byte_at(src, lf - 1) == '\r';

	switch (l->cfg->eol) {
	case EOL_LF:
		return 1;
	case EOL_CRLF:
		return cr ? 2 : 0;
	default:
		return cr ? 2 : 1;
	}
}

/*
 * The line at the start of @p src is longer than max: fail, or deliver its
 * first max bytes as a line and drop the rest (up to @p budget: a cut line
 * waits while dst holds data it would not fit after).
 */
static enum bufferevent_filter_result
lines_long(struct lines *l, struct evbuffer *src, struct evbuffer *dst,
    size_t budget)
{
	if (l->cfg->overflow == OVERFLOW_ERROR) {
		strata_layer_fail(l->layer, STRATA_ERR_FILTER,
		    "line longer than %zu bytes at offset %llu", l->cfg->max,
		    (unsigned long long)l->offset);
		return BEV_ERROR;
	}
	if (evbuffer_get_length(dst) && l->cfg->max + 1 > budget)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, l->cfg->max);
	evbuffer_add(dst, "\n", 1);
	l->cut_at = l->offset;
	l->offset += l->cfg->max;
	l->truncated++;
	l->lines_in++;
	l->discarding = 1;
	l->scanned = 0;
	return BEV_OK;
}

/*
 * Drop the rest of a truncated line, through its terminator. In crlf mode
 * only a CRLF ends it, and a CR as the last byte stays in src: its LF may
 * be the next byte to arrive.
 */
static int
lines_discard(struct lines *l, struct evbuffer *src)
{
	size_t len = evbuffer_get_length(src), from = 0, drop;
	ev_ssize_t lf;

	while ((lf = find_lf(src, from, len - from)) >= 0 &&
	    !eol_len(l, src, (size_t)lf))
		from = (size_t)lf + 1;
	if (lf >= 0) {
		drop = (size_t)lf + 1;
		l->discarding = 0;
	} else {
		drop = len;
		if (drop && l->cfg->eol == EOL_CRLF &&
		    byte_at(src, len - 1) == '\r')
			drop--;
	}
	evbuffer_drain(src, drop);
	l->offset += drop;
	l->scanned = 0;
	return drop > 0;
}

/* Why lines_scan() stopped. */
enum scan_stop {
	STOP_PARTIAL, /* src holds nothing but the start of a line */
	STOP_FULL,    /* the next whole line does not fit the budget */
	STOP_LONG     /* src starts with a line longer than max */
};

/* Where lines_scan() is: the partial line starts at `start`, bytes before
 * `scan` were searched, `batch` bytes of whole LF lines wait to move. */
struct scan_pos {
	size_t start, scan, batch, len;
};

/* Move the batch of whole LF-terminated lines at the head of src. */
static void
lines_flush_batch(struct lines *l, struct evbuffer *src, struct evbuffer *dst,
    struct scan_pos *sp, size_t *budget, int *progress)
{
	if (!sp->batch)
		return;
	evbuffer_remove_buffer(src, dst, sp->batch);
	l->offset += sp->batch;
	*budget -= *budget < sp->batch ? *budget : sp->batch;
	sp->start -= sp->batch;
	sp->scan -= sp->batch;
	sp->len -= sp->batch;
	sp->batch = 0;
	*progress = 1;
}

/*
 * A line ends at @p lf with a terminator of @p tl bytes: queue it in the
 * batch (LF) or move it with its CRLF rewritten (which changes src; the
 * caller restarts its view). Returns the stop reason, or -1 to go on.
 */
static int
lines_take(struct lines *l, struct evbuffer *src, struct evbuffer *dst,
    struct scan_pos *sp, size_t lf, size_t tl, size_t *budget,
    int *progress)
{
	size_t content = lf + 1 - sp->start - tl;

	if (content > l->cfg->max)
		return STOP_LONG;
	if (sp->batch + content + 1 > *budget &&
	    (sp->batch || evbuffer_get_length(dst)))
		return STOP_FULL;
	l->lines_in++;
	if (tl == 1) {
		sp->batch += content + 1;
		sp->start = sp->scan = lf + 1;
		return -1;
	}
	evbuffer_remove_buffer(src, dst, sp->batch + content);
	evbuffer_drain(src, 2);
	evbuffer_add(dst, "\n", 1);
	l->offset += sp->batch + content + 2;
	*budget -= *budget < sp->batch + content + 1 ? *budget
						     : sp->batch + content + 1;
	sp->len -= sp->batch + content + 2;
	sp->batch = sp->start = sp->scan = 0;
	*progress = 1;
	return -1;
}

/*
 * Move whole lines from @p src to @p dst within *budget, which it lowers;
 * the first line may exceed it when dst is empty (a line is never split).
 * One forward walk over the peeked extents of src with memchr; lines that
 * end in a bare "\n" move in batches with one evbuffer_remove_buffer, a
 * "\r\n" is rewritten to "\n". Sets *progress if anything moved.
 */
static enum scan_stop
lines_scan(struct lines *l, struct evbuffer *src, struct evbuffer *dst,
    size_t *budget, int *progress)
{
	const size_t slack = l->cfg->eol == EOL_LF ? 0 : 1;
	const size_t limit = l->cfg->max + slack;
	struct evbuffer_iovec v[PEEK_EXTENTS];
	struct scan_pos sp = {0, 0, 0, evbuffer_get_length(src)};
	struct evbuffer_ptr ptr;
	int n, i, stop = -1, prev_cr;

	sp.scan = l->scanned < sp.len ? l->scanned : sp.len;
	l->scanned = 0;
restart:
	/* where the scan is: set once, then moved on (EVBUFFER_PTR_ADD)
	 * extent by extent; setting it from the start each round would walk
	 * every chain before it again, quadratic in a buffer of many small
	 * chains (tiny writes over a bufferevent_pair, a filter below that
	 * moves a few bytes at a time) */
	prev_cr = slack && sp.scan && byte_at(src, sp.scan - 1) == '\r';
	if (evbuffer_ptr_set(src, &ptr, sp.scan, EVBUFFER_PTR_SET) < 0)
		goto scanned;
	while (stop < 0 && sp.scan < sp.len) {
		size_t round = sp.scan;

		if ((n = evbuffer_peek(src, -1, &ptr, v, PEEK_EXTENTS)) <= 0)
			break;
		for (i = 0; i < n && i < PEEK_EXTENTS && stop < 0; i++) {
			const char *p = v[i].iov_base, *q = p, *hit;
			const char *e = p + v[i].iov_len;
			size_t at = sp.scan, span = at + v[i].iov_len - sp.start;

			/* eol=lf, no line here can be over max and all of it
			 * fits the budget: take every whole line at once */
			if (!slack && span <= limit &&
			    sp.batch + span <= *budget) {
				hit = memrchr(p, '\n', v[i].iov_len);
				if (hit) {
					l->lines_in += count_lf(p,
					    (size_t)(hit - p) + 1);
					sp.batch += at + (size_t)(hit - p) + 1 -
					    sp.start;
					sp.start = at + (size_t)(hit - p) + 1;
				}
				sp.scan = at + v[i].iov_len;
				continue;
			}

			while (stop < 0 &&
			    (hit = memchr(q, '\n', (size_t)(e - q)))) {
				int cr = hit > p ? hit[-1] == '\r' : prev_cr;
				size_t tl = cr && slack ? 2
				    : l->cfg->eol == EOL_CRLF ? 0 : 1;
				q = hit + 1;
				if (!tl) /* crlf mode: a bare "\n" is content */
					continue;
				stop = lines_take(l, src, dst, &sp,
				    at + (size_t)(hit - p), tl, budget, progress);
				if (stop < 0 && tl == 2)
					goto restart; /* src changed */
			}
			if (stop >= 0)
				break;
			sp.scan = at + v[i].iov_len;
			prev_cr = v[i].iov_len && e[-1] == '\r';
			if (sp.scan - sp.start > limit)
				stop = STOP_LONG;
		}
		if (stop < 0 && evbuffer_ptr_set(src, &ptr, sp.scan - round,
				    EVBUFFER_PTR_ADD) < 0)
			break;
	}
scanned:
	lines_flush_batch(l, src, dst, &sp, budget, progress);
	if (stop < 0)
		l->scanned = sp.scan - sp.start;
	return stop < 0 ? STOP_PARTIAL : (enum scan_stop)stop;
}

/*
 * BEV_FINISHED with no whole line left: what remains is one unterminated
 * line, or the rest of a cut one. Deliver it, cut it, or report it.
 */
static enum bufferevent_filter_result
lines_end(struct lines *l, struct evbuffer *src, struct evbuffer *dst,
    size_t budget)
{
	size_t rest = evbuffer_get_length(src);
	uint64_t start = l->discarding ? l->cut_at : l->offset;

	if (!rest && !l->discarding)
		return BEV_NEED_MORE;
	if (!l->discarding && rest > l->cfg->max)
		return lines_long(l, src, dst, budget);
	if (l->cfg->tail == TAIL_ERROR) {
		strata_layer_fail(l->layer, STRATA_ERR_TRUNCATED,
		    "stream ended inside a line (%llu bytes without a "
		    "terminator at offset %llu)",
		    (unsigned long long)(l->offset + rest - start),
		    (unsigned long long)start);
		return BEV_ERROR;
	}
	l->scanned = 0;
	if (l->discarding) {
		evbuffer_drain(src, rest);
		l->offset += rest;
		l->discarding = 0;
		return rest ? BEV_OK : BEV_NEED_MORE;
	}
	if (evbuffer_get_length(dst) && rest + 1 > budget)
		return BEV_NEED_MORE;
	evbuffer_remove_buffer(src, dst, rest);
	evbuffer_add(dst, "\n", 1);
	l->offset += rest;
	l->lines_in++;
	return BEV_OK;
}

/*
 * Input: whole lines up. Whatever moved in a call is reported (BEV_OK)
 * before a long line or the end of the stream is dealt with in the next
 * call, so a plain libevent filter bufferevent also sees the progress
 * before an error.
 */
static enum bufferevent_filter_result
lines_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct lines *l = ctx;
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim;
	enum scan_stop stop = STOP_PARTIAL;
	int progress = 0;

	if (l->discarding)
		progress = lines_discard(l, src);
	if (!l->discarding)
		stop = lines_scan(l, src, dst, &budget, &progress);
	if (progress || stop == STOP_FULL)
		return progress ? BEV_OK : BEV_NEED_MORE;
	if (stop == STOP_LONG)
		return lines_long(l, src, dst, budget);
	if (mode == BEV_FINISHED)
		return lines_end(l, src, dst, budget);
	return BEV_NEED_MORE;
}

/* Output: rewrite "\n" as the wire terminator; LF mode passes through. */
static enum bufferevent_filter_result
lines_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct lines *l = ctx;
	size_t len = evbuffer_get_length(src), moved = 0;
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim;
	int crlf = l->cfg->eol == EOL_CRLF;

	while (len && budget) {
		size_t span = len < budget ? len : budget;
		ev_ssize_t lf = crlf ? find_lf(src, 0, span) : -1;
		size_t seg = lf < 0 ? span : (size_t)lf;

		if (seg) {
			/* LF mode passes bytes through; remember whether the
			 * last one ended a line, for BEV_FINISHED */
			l->out_mid_line = crlf ||
			    byte_at(src, seg - 1) != '\n';
			evbuffer_remove_buffer(src, dst, seg);
		}
		moved += seg;
		len -= seg;
		budget = budget == SIZE_MAX ? budget : budget - seg;
		if (lf < 0)
			continue;
		/* a CRLF goes over a limit only into an empty dst */
		if (budget < 2 && evbuffer_get_length(dst))
			break;
		evbuffer_drain(src, 1);
		evbuffer_add(dst, "\r\n", 2);
		l->out_mid_line = 0;
		moved++;
		len--;
		budget = budget == SIZE_MAX ? budget
		    : budget > 2 ? budget - 2 : 0;
	}
	if (mode == BEV_FINISHED && !len && l->out_mid_line &&
	    (budget >= (crlf ? 2u : 1u) || !evbuffer_get_length(dst))) {
		evbuffer_add(dst, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
		l->out_mid_line = 0;
		moved++;
	}
	return moved ? BEV_OK : BEV_NEED_MORE;
}

static void
lines_stats(const void *ctx, struct strata_stats_sink *sink)
{
	const struct lines *l = ctx;
	static const char *const eols[] = {"lf", "crlf", "any"};

	strata_stat(sink, "eol", "%s", eols[l->cfg->eol]);
	strata_stat(sink, "lines", "%llu", (unsigned long long)l->lines_in);
	if (l->truncated)
		strata_stat(sink, "truncated", "%llu",
		    (unsigned long long)l->truncated);
}

const struct strata_filter_type strata_lines_filter_ = {
	.name = "lines",
	.summary = "line framing: whole lines up, terminators normalized",
	.options = lines_options,
	.config = lines_config,
	.config_free = free,
	.create = lines_create,
	.destroy = lines_destroy,
	.input = lines_input,
	.output = lines_output,
	.stats = lines_stats,
};
