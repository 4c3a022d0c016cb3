/*
 * lines: line framing.
 *
 * Input side: the layer above only ever receives complete lines, each
 * terminated by "\n" whatever the wire used, so evbuffer_readln(...,
 * EVBUFFER_EOL_LF) on the top always finds a whole line. Lines are found
 * with memchr over evbuffer_peek extents and moved with
 * evbuffer_remove_buffer, in batches: no allocation per line.
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
	uint64_t lines_in;	/* lines delivered up */
	uint64_t truncated;	/* lines cut by overflow=truncate */
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
lines_config(void **cfgp, const struct strata_option *opts, size_t n,
    struct strata_error *err)
{
	static const char *const eols[] = {"lf", "crlf", "any", NULL};
	static const char *const ovf[] = {"error", "truncate", NULL};
	static const char *const tails[] = {"deliver", "error", NULL};
	struct lines_cfg *c = calloc(1, sizeof(*c));
	uint64_t max;
	int v = 0, rc = 0;
	size_t i;

	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	c->max = LINES_MAX_DEFAULT;
	for (i = 0; i < n && rc == 0; i++) {
		const struct strata_option *o = &opts[i];
		if (!strcmp(o->key, "eol") &&
		    !(rc = strata_opt_enum("lines", o, eols, &v, err)))
			c->eol = (enum lines_eol)v;
		else if (!strcmp(o->key, "max") &&
		    !(rc = strata_opt_uint("lines", o, 1, LINES_MAX_LIMIT, 1,
			  &max, err)))
			c->max = (size_t)max;
		else if (!strcmp(o->key, "overflow") &&
		    !(rc = strata_opt_enum("lines", o, ovf, &v, err)))
			c->overflow = (enum lines_overflow)v;
		else if (!strcmp(o->key, "tail") &&
		    !(rc = strata_opt_enum("lines", o, tails, &v, err)))
			c->tail = (enum lines_tail)v;
	}
	if (rc < 0) {
		free(c);
		return -1;
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
	struct lines *l = calloc(1, sizeof(*l));

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
	free(ctx);
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
		n = evbuffer_peek(src, (ev_ssize_t)(span - seen), &ptr, v,
		    PEEK_EXTENTS);
		if (n <= 0)
			return -1;
		if (n > PEEK_EXTENTS)
			n = PEEK_EXTENTS;
		for (i = 0; i < n && seen < span; i++) {
			size_t len = v[i].iov_len;
			const char *hit;
			if (len > span - seen)
				len = span - seen;
			hit = memchr(v[i].iov_base, '\n', len);
			if (hit)
				return (ev_ssize_t)(from + seen +
				    (size_t)(hit - (const char *)v[i].iov_base));
			seen += len;
		}
		if (evbuffer_ptr_set(src, &ptr, from + seen,
			EVBUFFER_PTR_SET) < 0)
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

/* Length of the terminator ending at @p lf (1 or 2), or 0 if the "\n" at
 * @p lf is not a terminator under the configured eol. */
static size_t
eol_len(const struct lines *l, struct evbuffer *src, size_t lf)
{
	int cr = lf > 0 && byte_at(src, lf - 1) == '\r';

	switch (l->cfg->eol) {
	case EOL_LF:
		return 1;
	case EOL_CRLF:
		return cr ? 2 : 0;
	default:
		return cr ? 2 : 1;
	}
}

static enum bufferevent_filter_result
lines_overflow(struct lines *l, struct evbuffer *src, struct evbuffer *dst)
{
	if (l->cfg->overflow == OVERFLOW_ERROR) {
		strata_layer_fail(l->layer, STRATA_ERR_FILTER,
		    "line longer than %zu bytes at offset %llu", l->cfg->max,
		    (unsigned long long)l->offset);
		return BEV_ERROR;
	}
	evbuffer_remove_buffer(src, dst, l->cfg->max);
	evbuffer_add(dst, "\n", 1);
	l->offset += l->cfg->max;
	l->truncated++;
	l->lines_in++;
	l->discarding = 1;
	return BEV_OK;
}

/* Drop the rest of a truncated line, through its terminator. */
static int
lines_discard(struct lines *l, struct evbuffer *src)
{
	size_t len = evbuffer_get_length(src);
	ev_ssize_t lf = find_lf(src, 0, len);
	size_t drop = lf < 0 ? len : (size_t)lf + 1;

	evbuffer_drain(src, drop);
	l->offset += drop;
	if (lf >= 0)
		l->discarding = 0;
	return drop > 0;
}

/* Deliver an unterminated last line at EOF, or report it. */
static enum bufferevent_filter_result
lines_finish_tail(struct lines *l, struct evbuffer *src, struct evbuffer *dst)
{
	size_t rest = evbuffer_get_length(src);

	if (l->cfg->tail == TAIL_ERROR) {
		strata_layer_fail(l->layer, STRATA_ERR_TRUNCATED,
		    "stream ended inside a line (%zu bytes without a "
		    "terminator at offset %llu)", rest,
		    (unsigned long long)l->offset);
		return BEV_ERROR;
	}
	evbuffer_remove_buffer(src, dst, rest);
	evbuffer_add(dst, "\n", 1);
	l->offset += rest;
	l->lines_in++;
	return BEV_OK;
}

/*
 * Move whole lines from @p src to @p dst, at most @p lim bytes unless dst is
 * empty (a line is never split). Lines that end in a bare "\n" move in
 * batches with one evbuffer_remove_buffer; a "\r\n" is rewritten to "\n".
 */
static enum bufferevent_filter_result
lines_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct lines *l = ctx;
	const size_t max = l->cfg->max;
	const size_t slack = l->cfg->eol == EOL_LF ? 0 : 1;
	size_t len, start = 0, scan = 0, batch = 0;
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim;
	int progress = 0;

	if (l->discarding)
		progress = lines_discard(l, src);
	len = evbuffer_get_length(src);
	while (!l->discarding && scan < len) {
		size_t want = start + max + 1 + slack;
		size_t span = (want < len ? want : len) - scan;
		ev_ssize_t lf = find_lf(src, scan, span);
		size_t tl, content, linelen;

		if (lf < 0) {
			if (len - start > max + slack)
				goto overflow;
			break;
		}
		linelen = (size_t)lf + 1 - start;
		if (!(tl = eol_len(l, src, (size_t)lf))) {
			/* crlf mode: a bare "\n" is line content */
			scan = (size_t)lf + 1;
			continue;
		}
		content = linelen - tl;
		if (content > max)
			goto overflow;
		if (batch + content + 1 > budget &&
		    (batch || evbuffer_get_length(dst)))
			break;
		l->lines_in++;
		if (tl == 1) {
			batch += linelen;
			start = scan = (size_t)lf + 1;
			continue;
		}
		/* move the batch and this line's content, rewrite the eol */
		evbuffer_remove_buffer(src, dst, batch + content);
		evbuffer_drain(src, 2);
		evbuffer_add(dst, "\n", 1);
		l->offset += batch + linelen;
		if (budget != SIZE_MAX)
			budget -= budget < batch + content + 1 ? budget
			    : batch + content + 1;
		len -= batch + linelen;
		batch = start = scan = 0;
		progress = 1;
	}
	if (batch) {
		evbuffer_remove_buffer(src, dst, batch);
		l->offset += batch;
		progress = 1;
	}
	if (mode == BEV_FINISHED && !l->discarding &&
	    evbuffer_get_length(src))
		return lines_finish_tail(l, src, dst);
	return progress ? BEV_OK : BEV_NEED_MORE;
overflow:
	if (batch) {
		/* the complete lines before the long one go first */
		evbuffer_remove_buffer(src, dst, batch);
		l->offset += batch;
		return BEV_OK;
	}
	return lines_overflow(l, src, dst);
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
		if (lf >= 0) {
			evbuffer_drain(src, 1);
			evbuffer_add(dst, "\r\n", 2);
			l->out_mid_line = 0;
			moved++;
			len--;
			budget = budget == SIZE_MAX ? budget
			    : budget > 2 ? budget - 2 : 0;
		}
	}
	if (mode == BEV_FINISHED && !len && l->out_mid_line) {
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
