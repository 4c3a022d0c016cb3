/*
 * The stack string parser (DESIGN section 6).
 *
 *   stack  := [ transport "|" ] filter ( "|" filter )*
 *   filter := name [ "(" [ key "=" value ( "," key "=" value )* ] ")" ]
 *   value  := bare | "double quoted \" \\" | 'single quoted'
 *
 * In double quotes only \" and \\ are escapes; any other backslash is kept
 * as written (so "C:\dir\ca.pem" survives). Single quotes are literal.
 *
 * Parsing happens once per stack string; options are validated by the
 * filter's config() here, never on the data path. Every error names the
 * position (0-based byte offset) and what was expected.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_FILTERS 32
#define MAX_OPTIONS 32
/* Longest piece of the stack string echoed in a message, so the rest of
 * the message (key, position, what was expected) always fits. */
#define CLIP_MAX 40

struct parser {
	const char *s;
	size_t pos;
	struct strata_error *err;
	/* options of the filter being parsed; strings are heap copies */
	struct strata_option opt[MAX_OPTIONS];
	size_t nopt;
};

static int
is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/*
 * Copy @p len bytes of @p s for an error message: at most CLIP_MAX of them,
 * then "...", with control characters shown as '?' (messages go to
 * terminals and logs).
 */
static const char *
clip(const char *s, size_t len, char buf[CLIP_MAX + 4])
{
	size_t i, n = len < CLIP_MAX ? len : CLIP_MAX;

	for (i = 0; i < n; i++)
		buf[i] = is_ctl((unsigned char)s[i]) ? '?' : s[i];
	if (n < len) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = 0;
	return buf;
}

static int
fail(struct parser *p, size_t pos, enum strata_error_code code,
    const char *what)
{
	char near[CLIP_MAX + 4];
	size_t n = 0;

	while (n < 16 && p->s[pos + n] && p->s[pos + n] != '\n')
		n++;
	clip(p->s + pos, n, near);
	if (p->s[pos])
		strata_error_set(p->err, code,
		    "stack string: %s at position %zu (near '%s')", what, pos,
		    near);
	else
		strata_error_set(p->err, code,
		    "stack string: %s at position %zu (end of string)", what,
		    pos);
	if (p->err)
		p->err->position = pos;
	return -1;
}

static int
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void
skip_ws(struct parser *p)
{
	while (is_ws(p->s[p->pos]))
		p->pos++;
}

/* ASCII ranges, not <ctype.h>: names must not depend on the locale. */
static int
is_name_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	    c == '_';
}

static int
is_key_char(int c)
{
	return is_name_char(c) || (c >= 'A' && c <= 'Z') || c == '.';
}

/* Is s[i] a backslash that escapes the next byte inside quote @p q? */
static int
is_escape(const char *s, size_t i, char q)
{
	return q == '"' && s[i] == '\\' &&
	    (s[i + 1] == '"' || s[i + 1] == '\\');
}

static void
options_clear(struct parser *p)
{
	size_t i;

	for (i = 0; i < p->nopt; i++) {
		strata_free_((char *)p->opt[i].key);
		strata_free_((char *)p->opt[i].value);
	}
	p->nopt = 0;
}

/* A quoted value; p->pos is on the opening quote. Find the closing quote
 * first, so the copy is exactly as long as the value. */
static char *
parse_quoted(struct parser *p)
{
	char q = p->s[p->pos], *out;
	size_t start = p->pos, end, n = 0;

	for (end = start + 1; p->s[end] && p->s[end] != q; end++)
		if (is_escape(p->s, end, q))
			end++;
	if (p->s[end] != q) {
		fail(p, start, STRATA_ERR_SYNTAX,
		    q == '"' ? "unterminated \" quote"
			     : "unterminated ' quote");
		return NULL;
	}
	if (!(out = strata_malloc_(end - start))) {
		fail(p, start, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	for (p->pos = start + 1; p->pos < end; p->pos++) {
		if (is_escape(p->s, p->pos, q))
			p->pos++;
		out[n++] = p->s[p->pos];
	}
	out[n] = 0;
	p->pos = end + 1;
	return out;
}

/* A bare value: up to ',', ')' or '|', trailing blanks trimmed; quote a
 * value that needs those. */
static char *
parse_bare(struct parser *p)
{
	size_t start = p->pos, end;
	char *out;

	while (p->s[p->pos] && !strchr(",()|\"'", p->s[p->pos]))
		p->pos++;
	end = p->pos;
	while (end > start && is_ws(p->s[end - 1]))
		end--;
	if (end == start) {
		fail(p, start, STRATA_ERR_SYNTAX, "expected a value");
		return NULL;
	}
	out = strata_strndup_(p->s + start, end - start);
	if (!out)
		fail(p, start, STRATA_ERR_NOMEM, "out of memory");
	return out;
}

static int
parse_option(struct parser *p, const char *filter)
{
	size_t kpos = p->pos, i;
	struct strata_option *o;
	char *key, *value, shown[CLIP_MAX + 4];

	while (is_key_char((unsigned char)p->s[p->pos]))
		p->pos++;
	if (p->pos == kpos)
		return fail(p, kpos, STRATA_ERR_SYNTAX,
		    "expected an option name");
	if (!(key = strata_strndup_(p->s + kpos, p->pos - kpos)))
		return fail(p, kpos, STRATA_ERR_NOMEM, "out of memory");
	skip_ws(p);
	if (p->s[p->pos] != '=') {
		strata_free_(key);
		return fail(p, p->pos, STRATA_ERR_SYNTAX,
		    "expected '=' after the option name");
	}
	p->pos++;
	skip_ws(p);
	if (p->s[p->pos] == '"' || p->s[p->pos] == '\'')
		value = parse_quoted(p);
	else
		value = parse_bare(p);
	if (!value) {
		strata_free_(key);
		return -1;
	}
	for (i = 0; i < p->nopt; i++)
		if (!strcmp(p->opt[i].key, key))
			break;
	if (i < p->nopt || p->nopt == MAX_OPTIONS) {
		strata_error_set(p->err, STRATA_ERR_OPTION,
		    i < p->nopt ? "%s: option '%s' given twice at position %zu"
				: "%s: too many options (at '%s', position "
				  "%zu)",
		    filter, clip(key, strlen(key), shown), kpos);
		if (p->err)
			p->err->position = kpos;
		strata_free_(key);
		strata_free_(value);
		return -1;
	}
	o = &p->opt[p->nopt++];
	o->key = key;
	o->value = value;
	o->position = kpos;
	return 0;
}

static int
parse_option_list(struct parser *p, const char *filter)
{
	p->pos++; /* '(' */
	skip_ws(p);
	if (p->s[p->pos] == ')') {
		p->pos++;
		return 0;
	}
	for (;;) {
		skip_ws(p);
		if (parse_option(p, filter) < 0)
			return -1;
		skip_ws(p);
		if (p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->s[p->pos] == ')') {
			p->pos++;
			return 0;
		}
		return fail(p, p->pos, STRATA_ERR_SYNTAX,
		    "expected ',' or ')' after an option");
	}
}

static void
list_known_keys(const struct strata_option_doc *docs, char *buf, size_t len)
{
	const struct strata_option_doc *d;
	size_t n = 0;

	buf[0] = 0;
	for (d = docs; d && d->key && n < len; d++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "",
		    d->key);
	if (!n)
		snprintf(buf, len, "none");
}

/* Every key must be one the type documents. */
static int
check_keys(struct parser *p, const char *owner,
    const struct strata_option_doc *docs)
{
	const struct strata_option_doc *d;
	char known[160], shown[CLIP_MAX + 4];
	size_t i;

	for (i = 0; i < p->nopt; i++) {
		for (d = docs; d && d->key; d++)
			if (!strcmp(d->key, p->opt[i].key))
				break;
		if (d && d->key)
			continue;
		list_known_keys(docs, known, sizeof(known));
		strata_error_set(p->err, STRATA_ERR_OPTION,
		    "%s: unknown option '%s' at position %zu (known: %s)",
		    owner,
		    clip(p->opt[i].key, strlen(p->opt[i].key), shown),
		    p->opt[i].position, known);
		if (p->err)
			p->err->position = p->opt[i].position;
		return -1;
	}
	return 0;
}

/* "a, b, c": the names of registered types (both start with a name). */
static void
list_names(const void *const *types, size_t n, char *buf, size_t len)
{
	size_t i, off = 0;

	buf[0] = 0;
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i ? ", " : "", *(const char *const *)types[i]);
}

static void
list_known_filters(char *buf, size_t len)
{
	const struct strata_filter_type *t[80];
	size_t n = strata_list_filters(t, 80);

	list_names((const void *const *)t, n < 80 ? n : 80, buf, len);
}

static int
parse_filter(struct parser *p, struct strata_spec_filter *f)
{
	size_t npos = p->pos;
	const struct strata_filter_type *t;
	char known[160], shown[CLIP_MAX + 4];
	int rc;

	while (is_name_char((unsigned char)p->s[p->pos]))
		p->pos++;
	if (p->pos == npos)
		return fail(p, npos, STRATA_ERR_SYNTAX,
		    "expected a filter name");
	t = strata_find_filter_n_(p->s + npos, p->pos - npos);
	if (!t && p->s[p->pos] == ':' &&
	    strata_find_transport_n_(p->s + npos, p->pos - npos))
		return fail(p, npos, STRATA_ERR_SYNTAX,
		    "a transport is not allowed here (expected a filter "
		    "list)");
	if (!t) {
		list_known_filters(known, sizeof(known));
		strata_error_set(p->err, STRATA_ERR_UNKNOWN,
		    "unknown filter '%s' at position %zu (known: %s)",
		    clip(p->s + npos, p->pos - npos, shown), npos, known);
		if (p->err)
			p->err->position = npos;
		return -1;
	}
	skip_ws(p);
	if (p->s[p->pos] == '(' && parse_option_list(p, t->name) < 0)
		return -1;
	if (check_keys(p, t->name, t->options) < 0)
		return -1;
	f->type = t;
	f->cfg = NULL;
	if (!t->config) {
		options_clear(p);
		return 0;
	}
	/* config() errors point at the filter unless they name a key */
	if (p->err)
		p->err->position = npos;
	rc = t->config(&f->cfg, p->opt, p->nopt, p->err);
	if (rc >= 0 && p->err)
		p->err->position = 0;
	if (rc < 0 && p->err) {
		if (!p->err->message[0])
			strata_error_set(p->err, STRATA_ERR_OPTION,
			    "bad options");
		strata_error_prefix_(p->err, t->name);
	}
	options_clear(p);
	return rc < 0 ? -1 : 0;
}

/* The transport part: everything up to the first '|' outside quotes. */
static int
parse_transport(struct parser *p, struct strata_spec *spec)
{
	size_t start = p->pos, qpos = 0, end;
	char q = 0;

	for (; p->s[p->pos]; p->pos++) {
		char c = p->s[p->pos];
		if (q) {
			if (c == q)
				q = 0;
			else if (is_escape(p->s, p->pos, q))
				p->pos++;
		} else if (c == '"' || c == '\'') {
			q = c;
			qpos = p->pos;
		} else if (c == '|')
			break;
	}
	if (q)
		return fail(p, qpos, STRATA_ERR_SYNTAX,
		    "unterminated quote in the transport");
	end = p->pos;
	while (end > start && is_ws(p->s[end - 1]))
		end--;
	if (end == start || !memchr(p->s + start, ':', end - start))
		return fail(p, start, STRATA_ERR_SYNTAX,
		    "expected a transport (tcp://host:port, unix:path, "
		    "pipe:..., exec:...)");
	spec->transport = strata_strndup_(p->s + start, end - start);
	spec->transport_pos = start;
	if (!spec->transport)
		return fail(p, start, STRATA_ERR_NOMEM, "out of memory");
	return 0;
}

static int
parse_filters(struct parser *p, struct strata_spec *spec, int need_one)
{
	skip_ws(p);
	if (!p->s[p->pos] && !need_one)
		return 0;
	for (;;) {
		skip_ws(p);
		if (spec->n == MAX_FILTERS)
			return fail(p, p->pos, STRATA_ERR_SYNTAX,
			    "too many filters (at most 32)");
		if (parse_filter(p, &spec->f[spec->n]) < 0)
			return -1;
		spec->n++;
		skip_ws(p);
		if (!p->s[p->pos])
			return 0;
		if (p->s[p->pos] != '|')
			return fail(p, p->pos, STRATA_ERR_SYNTAX,
			    "expected '|' or the end after a filter");
		p->pos++;
	}
}

struct strata_spec *
strata_spec_parse_(const char *s, int want_transport,
    struct strata_error *err)
{
	struct parser p = {.s = s, .err = err};
	struct strata_spec *spec, *shrunk;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!s) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "stack string: NULL");
		return NULL;
	}
	spec = strata_calloc_(1, sizeof(*spec) +
		MAX_FILTERS * sizeof(struct strata_spec_filter));
	if (!spec) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	spec->refcnt = 1;
	skip_ws(&p);
	if (want_transport) {
		if (parse_transport(&p, spec) < 0)
			goto fail;
		if (p.s[p.pos] == '|') {
			p.pos++;
			if (parse_filters(&p, spec, 1) < 0)
				goto fail;
		}
	} else if (parse_filters(&p, spec, 1) < 0)
		goto fail;
	/* Each connection made from a string keeps its spec: give back the
	 * unused filter slots (most stacks have one to three filters). */
	if ((shrunk = strata_realloc_(spec, sizeof(*spec) +
		 spec->n * sizeof(struct strata_spec_filter))) != NULL)
		spec = shrunk;
	return spec;
fail:
	options_clear(&p);
	strata_spec_unref_(spec);
	return NULL;
}

void
strata_spec_ref_(struct strata_spec *spec)
{
	__atomic_add_fetch(&spec->refcnt, 1, __ATOMIC_RELAXED);
}

void
strata_spec_unref_(struct strata_spec *spec)
{
	size_t i;

	if (!spec || __atomic_sub_fetch(&spec->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	for (i = 0; i < spec->n; i++)
		if (spec->f[i].type->config_free && spec->f[i].cfg)
			spec->f[i].type->config_free(spec->f[i].cfg);
	strata_free_(spec->transport);
	strata_free_(spec);
}

/* ---- the transport part ---- */

static void
list_known_transports(char *buf, size_t len)
{
	const struct strata_transport_type *t[80];
	size_t n = strata_list_transports(t, 80);

	list_names((const void *const *)t, n < 80 ? n : 80, buf, len);
}

/* "(key=value, ...)" at the end of the address, for types with options. */
static int
transport_options(struct parser *p, const struct strata_transport_type *t,
    size_t *addr_end)
{
	const char *open;
	size_t len = strlen(p->s);

	*addr_end = len;
	if (!t->options || !len || p->s[len - 1] != ')')
		return 0;
	if (!(open = strrchr(p->s, '(')))
		return fail(p, len - 1, STRATA_ERR_SYNTAX,
		    "unmatched ')' after the address");
	p->pos = (size_t)(open - p->s);
	*addr_end = p->pos;
	while (*addr_end && is_ws(p->s[*addr_end - 1]))
		(*addr_end)--;
	if (parse_option_list(p, t->name) < 0)
		return -1;
	if (p->s[p->pos])
		return fail(p, p->pos, STRATA_ERR_SYNTAX,
		    "expected the end of the transport after its options");
	return check_keys(p, t->name, t->options);
}

static int
transport_config(struct parser *p, const struct strata_transport_type **tp,
    void **cfg)
{
	const struct strata_transport_type *t;
	size_t sl = strcspn(p->s, ":"), end;
	char known[160], *addr;
	int rc;

	t = strata_find_transport_n_(p->s, sl);
	if (!t) {
		list_known_transports(known, sizeof(known));
		strata_error_set(p->err, STRATA_ERR_UNKNOWN,
		    "unknown transport '%.*s' at position %zu (known: %s)",
		    (int)(sl > CLIP_MAX ? CLIP_MAX : sl), p->s, p->pos, known);
		return -1;
	}
	if (transport_options(p, t, &end) < 0)
		return -1;
	if (!(addr = strata_strndup_(p->s + sl + 1, end - sl - 1)))
		return fail(p, 0, STRATA_ERR_NOMEM, "out of memory");
	rc = t->config(cfg, addr, p->opt, p->nopt, p->err);
	strata_free_(addr);
	if (rc < 0) {
		if (p->err && !p->err->message[0])
			strata_error_set(p->err, STRATA_ERR_SYNTAX,
			    "bad address");
		strata_error_prefix_(p->err, t->name);
		return -1;
	}
	*tp = t;
	return 0;
}

int
strata_transport_config_(const struct strata_spec *spec,
    const struct strata_transport_type **tp, void **cfg,
    struct strata_error *err)
{
	struct parser p = {.s = spec->transport, .err = err};
	int rc;

	*cfg = NULL;
	if (!spec->transport) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "stack string: expected a transport");
		return -1;
	}
	rc = transport_config(&p, tp, cfg);
	options_clear(&p);
	if (rc < 0 && err)
		err->position += spec->transport_pos;
	return rc;
}
