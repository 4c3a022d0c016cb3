/*
 * The stack string parser (DESIGN section 6).
 *
 *   stack  := [ transport "|" ] filter ( "|" filter )*
 *   filter := name [ "(" [ key "=" value ( "," key "=" value )* ] ")" ]
 *   value  := bare | "double quoted \" \\" | 'single quoted'
 *
 * Parsing happens once per stack string; options are validated by the
 * filter's config() here, never on the data path. Every error names the
 * position (0-based byte offset) and what was expected.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_FILTERS 32
#define MAX_OPTIONS 32

struct parser {
	const char *s;
	size_t pos;
	struct strata_error *err;
	/* options of the filter being parsed; strings are heap copies */
	struct strata_option opt[MAX_OPTIONS];
	size_t nopt;
};

static int
fail(struct parser *p, size_t pos, enum strata_error_code code,
    const char *what)
{
	char near[24];
	size_t n = strcspn(p->s + pos, "\n");

	if (n > 16)
		n = 16;
	memcpy(near, p->s + pos, n);
	near[n] = 0;
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

static void
skip_ws(struct parser *p)
{
	while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
	    p->s[p->pos] == '\n' || p->s[p->pos] == '\r')
		p->pos++;
}

static int
is_name_char(int c)
{
	return islower(c) || isdigit(c) || c == '-' || c == '_';
}

static int
is_key_char(int c)
{
	return is_name_char(c) || isupper(c) || c == '.';
}

static void
options_clear(struct parser *p)
{
	size_t i;

	for (i = 0; i < p->nopt; i++) {
		free((char *)p->opt[i].key);
		free((char *)p->opt[i].value);
	}
	p->nopt = 0;
}

/* A quoted value; p->pos is on the opening quote. */
static char *
parse_quoted(struct parser *p)
{
	char q = p->s[p->pos];
	size_t start = p->pos++, n = 0;
	char *out = malloc(strlen(p->s + p->pos) + 1);

	if (!out)
		return NULL;
	while (p->s[p->pos] && p->s[p->pos] != q) {
		if (q == '"' && p->s[p->pos] == '\\' && p->s[p->pos + 1])
			p->pos++;
		out[n++] = p->s[p->pos++];
	}
	if (p->s[p->pos] != q) {
		free(out);
		fail(p, start, STRATA_ERR_SYNTAX,
		    q == '"' ? "unterminated \" quote" : "unterminated ' quote");
		return NULL;
	}
	p->pos++;
	out[n] = 0;
	return out;
}

/* A bare value: up to ',' or ')', trailing blanks trimmed. */
static char *
parse_bare(struct parser *p)
{
	size_t start = p->pos, end;
	char *out;

	while (p->s[p->pos] && p->s[p->pos] != ',' && p->s[p->pos] != ')' &&
	    p->s[p->pos] != '(' && p->s[p->pos] != '"' &&
	    p->s[p->pos] != '\'')
		p->pos++;
	end = p->pos;
	while (end > start && isspace((unsigned char)p->s[end - 1]))
		end--;
	if (end == start) {
		fail(p, start, STRATA_ERR_SYNTAX, "expected a value");
		return NULL;
	}
	out = strndup(p->s + start, end - start);
	if (!out)
		fail(p, start, STRATA_ERR_NOMEM, "out of memory");
	return out;
}

static int
parse_option(struct parser *p, const char *filter)
{
	size_t kpos = p->pos, i;
	struct strata_option *o;
	char *key, *value;

	while (is_key_char((unsigned char)p->s[p->pos]))
		p->pos++;
	if (p->pos == kpos)
		return fail(p, kpos, STRATA_ERR_SYNTAX,
		    "expected an option name");
	key = strndup(p->s + kpos, p->pos - kpos);
	skip_ws(p);
	if (!key || p->s[p->pos] != '=') {
		free(key);
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
		free(key);
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
		    filter, key, kpos);
		if (p->err)
			p->err->position = kpos;
		free(key);
		free(value);
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
list_known_keys(const struct strata_filter_type *t, char *buf, size_t len)
{
	const struct strata_option_doc *d;
	size_t n = 0;

	buf[0] = 0;
	for (d = t->options; d && d->key && n < len; d++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "",
		    d->key);
	if (!n)
		snprintf(buf, len, "none");
}

/* Every key must be one the type documents. */
static int
check_keys(struct parser *p, const struct strata_filter_type *t)
{
	const struct strata_option_doc *d;
	char known[160];
	size_t i;

	for (i = 0; i < p->nopt; i++) {
		for (d = t->options; d && d->key; d++)
			if (!strcmp(d->key, p->opt[i].key))
				break;
		if (d && d->key)
			continue;
		list_known_keys(t, known, sizeof(known));
		strata_error_set(p->err, STRATA_ERR_OPTION,
		    "%s: unknown option '%s' at position %zu (known: %s)",
		    t->name, p->opt[i].key, p->opt[i].position, known);
		if (p->err)
			p->err->position = p->opt[i].position;
		return -1;
	}
	return 0;
}

static void
list_known_filters(char *buf, size_t len)
{
	const struct strata_filter_type *t[80];
	size_t n = strata_list_filters(t, 80), i, off = 0;

	buf[0] = 0;
	for (i = 0; i < n && i < 80 && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i ? ", " : "", t[i]->name);
}

static int
parse_filter(struct parser *p, struct strata_spec_filter *f)
{
	size_t npos = p->pos;
	const struct strata_filter_type *t;
	char known[160];
	int rc;

	while (is_name_char((unsigned char)p->s[p->pos]))
		p->pos++;
	if (p->pos == npos)
		return fail(p, npos, STRATA_ERR_SYNTAX,
		    "expected a filter name");
	t = strata_find_filter_n_(p->s + npos, p->pos - npos);
	if (!t) {
		list_known_filters(known, sizeof(known));
		strata_error_set(p->err, STRATA_ERR_UNKNOWN,
		    "unknown filter '%.*s' at position %zu (known: %s)",
		    (int)(p->pos - npos), p->s + npos, npos, known);
		if (p->err)
			p->err->position = npos;
		return -1;
	}
	skip_ws(p);
	if (p->s[p->pos] == '(' && parse_option_list(p, t->name) < 0)
		return -1;
	if (check_keys(p, t) < 0)
		return -1;
	f->type = t;
	f->cfg = NULL;
	if (!t->config) {
		options_clear(p);
		return 0;
	}
	rc = t->config(&f->cfg, p->opt, p->nopt, p->err);
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
	size_t start = p->pos, end;
	char q = 0;

	for (; p->s[p->pos]; p->pos++) {
		char c = p->s[p->pos];
		if (q) {
			if (c == q)
				q = 0;
			else if (q == '"' && c == '\\' && p->s[p->pos + 1])
				p->pos++;
		} else if (c == '"' || c == '\'')
			q = c;
		else if (c == '|')
			break;
	}
	if (q)
		return fail(p, start, STRATA_ERR_SYNTAX,
		    "unterminated quote in the transport");
	end = p->pos;
	while (end > start && isspace((unsigned char)p->s[end - 1]))
		end--;
	if (end == start || !memchr(p->s + start, ':', end - start))
		return fail(p, start, STRATA_ERR_SYNTAX,
		    "expected a transport (tcp://host:port, unix:path, "
		    "pipe:..., exec:...)");
	spec->transport = strndup(p->s + start, end - start);
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
	struct strata_spec *spec;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!s) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "stack string: NULL");
		return NULL;
	}
	spec = calloc(1, sizeof(*spec) +
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
	free(spec->transport);
	free(spec);
}
