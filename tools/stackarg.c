/*
 * The tool's defaults in stack strings. The scan follows the grammar of
 * core/stack.c (transport up to the first '|' outside quotes, transport
 * options in "(...)" at its end, filters with "(key=value, ...)"; in
 * double quotes only \" and \\ escape) just far enough to find where an
 * option goes and whether the string already sets it. Anything it does
 * not understand stops the insertions there; the library's parser, which
 * runs next, reports the error, and stackarg_fix_error() turns its
 * positions back into the string the user typed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stackarg.h"

struct scan {
	const char *s;
	struct stackarg *a;
	char *out;
	size_t len, cap;
	size_t copied; /* bytes of s already in out */
	int nomem;
};

static int
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int
is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	    c == '_';
}

static int
is_key_char(char c)
{
	return is_name_char(c) || (c >= 'A' && c <= 'Z') || c == '.';
}

static int
is_escape(const char *s, size_t i, char q)
{
	return q == '"' && s[i] == '\\' &&
	    (s[i + 1] == '"' || s[i + 1] == '\\');
}

static size_t
skip_ws(const char *s, size_t i)
{
	while (is_ws(s[i]))
		i++;
	return i;
}

static void
append(struct scan *c, const char *p, size_t n)
{
	char *grown;

	if (c->nomem)
		return;
	if (!c->out || c->len + n + 1 > c->cap) {
		size_t cap = (c->len + n + 1) * 2;
		if (!(grown = realloc(c->out, cap))) {
			c->nomem = 1;
			return;
		}
		c->out = grown;
		c->cap = cap;
	}
	memcpy(c->out + c->len, p, n);
	c->len += n;
	c->out[c->len] = 0;
}

/* Put @p text before s[pos] (pos at or after what is copied). */
static void
insert(struct scan *c, size_t pos, const char *text)
{
	struct stackarg *a = c->a;

	if (a->n == STACKARG_MAX_INSERTS)
		return;
	append(c, c->s + c->copied, pos - c->copied);
	c->copied = pos;
	a->at[a->n] = c->len;
	a->len[a->n] = strlen(text);
	a->n++;
	append(c, text, strlen(text));
}

/* A quoted value at s[*i]; -1 if unterminated. */
static int
scan_quoted(const char *s, size_t *i)
{
	char q = s[*i];
	size_t end;

	for (end = *i + 1; s[end] && s[end] != q; end++)
		if (is_escape(s, end, q))
			end++;
	if (s[end] != q)
		return -1;
	*i = end + 1;
	return 0;
}

static int
scan_bare(const char *s, size_t *i)
{
	size_t start = *i, end;

	while (s[*i] && !strchr(",()|\"'", s[*i]))
		(*i)++;
	end = *i;
	while (end > start && is_ws(s[end - 1]))
		end--;
	return end > start ? 0 : -1;
}

/*
 * The option list at s[*p] (on its '('): *has says whether it sets @p key,
 * *empty whether it is "()". *p ends after the ')'. -1 if malformed.
 */
static int
scan_options(const char *s, size_t *p, const char *key, int *has, int *empty)
{
	size_t i = skip_ws(s, *p + 1), k;

	*has = 0;
	if ((*empty = s[i] == ')')) {
		*p = i + 1;
		return 0;
	}
	for (;;) {
		k = i = skip_ws(s, i);
		while (is_key_char(s[i]))
			i++;
		if (i == k)
			return -1;
		if (i - k == strlen(key) && !strncmp(s + k, key, i - k))
			*has = 1;
		i = skip_ws(s, i);
		if (s[i++] != '=')
			return -1;
		i = skip_ws(s, i);
		if ((s[i] == '"' || s[i] == '\'') ? scan_quoted(s, &i) < 0
						  : scan_bare(s, &i) < 0)
			return -1;
		i = skip_ws(s, i);
		if (s[i] == ',') {
			i++;
			continue;
		}
		if (s[i] != ')')
			return -1;
		*p = i + 1;
		return 0;
	}
}

/* Add @p key=@p ms to the list at s[paren] or, with no list, at @p at. */
static void
add_option(struct scan *c, size_t at, long paren, const char *key,
    uint64_t ms)
{
	char text[80];
	size_t i;
	int has, empty;

	if (paren < 0) {
		snprintf(text, sizeof(text), "(%s=%llums)", key,
		    (unsigned long long)ms);
		insert(c, at, text);
		return;
	}
	i = (size_t)paren;
	if (scan_options(c->s, &i, key, &has, &empty) < 0 || has)
		return;
	snprintf(text, sizeof(text), "%s=%llums%s", key,
	    (unsigned long long)ms, empty ? "" : ", ");
	insert(c, (size_t)paren + 1, text);
}

/* Where the transport from s[start] ends: its first '|' outside quotes,
 * or the end of the string; (size_t)-1 if a quote is not closed. */
static size_t
transport_end(const char *s, size_t start)
{
	size_t i = start;
	char q = 0;

	for (; s[i]; i++) {
		if (q) {
			if (s[i] == q)
				q = 0;
			else if (is_escape(s, i, q))
				i++;
		} else if (s[i] == '"' || s[i] == '\'')
			q = s[i];
		else if (s[i] == '|')
			break;
	}
	return q ? (size_t)-1 : i;
}

/* The transport: timeout= if it is tcp and connects; returns its end. */
static size_t
scan_transport(struct scan *c, size_t start, int connecting, uint64_t ms)
{
	const char *s = c->s;
	size_t i = transport_end(s, start), end, j;
	long paren = -1;

	if (i == (size_t)-1)
		return i;
	end = i;
	while (end > start && is_ws(s[end - 1]))
		end--;
	if (!connecting || !ms || end - start < 4 || strncmp(s + start, "tcp:",
	    4))
		return i;
	if (s[end - 1] == ')') {
		for (j = end; j > start; j--)
			if (s[j - 1] == '(') {
				paren = (long)(j - 1);
				break;
			}
		if (paren < 0)
			return i;
		j = (size_t)paren;
		{
			int has, empty;
			if (scan_options(s, &j, "timeout", &has, &empty) < 0 ||
			    j != end)
				return i;
		}
	}
	add_option(c, end, paren, "timeout", ms);
	return i;
}

/* Filters from s[i] on (just after a '|'). */
static void
scan_filters(struct scan *c, size_t i, uint64_t ms)
{
	const char *s = c->s;
	size_t name, name_end, j;
	int has, empty;

	for (;;) {
		name = i = skip_ws(s, i);
		while (is_name_char(s[i]))
			i++;
		if (i == name)
			return;
		name_end = i;
		i = skip_ws(s, i);
		j = i;
		if (s[i] == '(' && scan_options(s, &j, "", &has, &empty) < 0)
			return;
		if (ms && name_end - name == 3 && !strncmp(s + name, "tls", 3))
			add_option(c, name_end, s[i] == '(' ? (long)i : -1,
			    "handshake-timeout", ms);
		i = skip_ws(s, j);
		if (s[i] != '|')
			return;
		i++;
	}
}

int
stackarg_init(struct stackarg *a, const char *orig, int connecting,
    uint64_t connect_ms, uint64_t handshake_ms)
{
	struct scan c = {.s = orig, .a = a};
	size_t end;

	memset(a, 0, sizeof(*a));
	a->orig = orig;
	end = scan_transport(&c, skip_ws(orig, 0), connecting, connect_ms);
	if (end != (size_t)-1 && orig[end] == '|')
		scan_filters(&c, end + 1, handshake_ms);
	append(&c, orig + c.copied, strlen(orig + c.copied));
	if (c.nomem) {
		free(c.out);
		return -1;
	}
	a->s = c.out;
	return 0;
}

const char *
stackarg_filters(const struct stackarg *a)
{
	size_t end = transport_end(a->s, skip_ws(a->s, 0));

	return end != (size_t)-1 && a->s[end] == '|' ? a->s + end + 1 : NULL;
}

void
stackarg_clear(struct stackarg *a)
{
	free(a->s);
	a->s = NULL;
}

/* A position in a->s as a position in a->orig. */
static size_t
map_pos(const struct stackarg *a, size_t pos)
{
	size_t shift = 0, i;

	for (i = 0; i < a->n; i++) {
		if (pos >= a->at[i] + a->len[i])
			shift += a->len[i];
		else if (pos >= a->at[i])
			shift += pos - a->at[i];
	}
	return pos - shift;
}

/* The parser's "(near '...')": 16 bytes of the string, controls as '?'. */
static void
near_text(const char *s, size_t pos, char *buf, size_t len)
{
	char shown[20];
	size_t n = 0;

	if (pos >= strlen(s)) {
		snprintf(buf, len, " (end of string)");
		return;
	}
	while (n < 16 && s[pos + n] && s[pos + n] != '\n') {
		unsigned char ch = (unsigned char)s[pos + n];
		shown[n] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
		n++;
	}
	shown[n] = 0;
	snprintf(buf, len, " (near '%s')", shown);
}

void
stackarg_fix_error(const struct stackarg *a, size_t offset,
    struct strata_error *err)
{
	static const char word[] = "position ";
	char out[STRATA_ERROR_MAX], *near;
	const char *m = err->message;
	size_t n = 0, k = strlen(word);

	if (!a->n && !offset)
		return;
	err->position = map_pos(a, err->position + offset);
	while (*m && n + 1 < sizeof(out)) {
		if (!strncmp(m, word, k) && m[k] >= '0' && m[k] <= '9') {
			char *end;
			unsigned long long p = strtoull(m + k, &end, 10);
			n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%zu",
			    word, map_pos(a, (size_t)p + offset));
			m = end;
			continue;
		}
		out[n++] = *m++;
	}
	out[n < sizeof(out) ? n : sizeof(out) - 1] = 0;
	near = strstr(out, " (near '");
	if (!near)
		near = strstr(out, " (end of string)");
	if (near)
		near_text(a->orig, err->position, near,
		    sizeof(out) - (size_t)(near - out));
	snprintf(err->message, sizeof(err->message), "%s", out);
}
