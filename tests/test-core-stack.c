/*
 * The stack string parser, the filter registry and the option helpers
 * (DESIGN section 6, plugin.h).
 *
 * Parser tests call strata_spec_parse_() directly, with and without a
 * transport prefix; the strata_push() tests check that a refused stack
 * leaves the caller's bufferevent exactly as it was and still working.
 * Test filters count every config object and context they make and free,
 * so each error path is also a leak and double-free check.
 *
 * Runs with CK_FORK=no too: the test that fills the registry is the last one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h"

/* ---- test filters ---- */

/*
 * good: makes a config object and a context and counts both. Its options
 * steer failures: fail=msg|silent|prefixed makes config() fail (with a
 * message, without one, with one already prefixed "good: "); n goes
 * through strata_opt_uint; create=fail makes create() fail.
 */
#define GOOD_MAGIC 0x600dc0fu

struct good_cfg {
	unsigned magic;
	int create_fails;
};

static int good_configs, good_cfg_frees, good_creates, good_destroys;

static const struct strata_option_doc good_options[] = {
	{"a", "", "any text"},
	{"n", "1", "an integer from 1 to 100"},
	{"fail", "", "msg, silent or prefixed: config() fails so"},
	{"create", "ok", "fail: create() fails"},
	{NULL, NULL, NULL},
};

static int
good_config(void **cfgp, const struct strata_option *o, size_t n,
    struct strata_error *err)
{
	struct good_cfg *c;
	uint64_t v;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!strcmp(o[i].key, "fail")) {
			if (!strcmp(o[i].value, "msg"))
				strata_error_set(err, STRATA_ERR_OPTION,
				    "wanted to fail");
			else if (!strcmp(o[i].value, "prefixed"))
				strata_error_set(err, STRATA_ERR_OPTION,
				    "good: already prefixed");
			return -1;
		}
		if (!strcmp(o[i].key, "n") &&
		    strata_opt_uint("good", &o[i], 1, 100, 0, &v, err) < 0)
			return -1;
	}
	c = calloc(1, sizeof(*c));
	ck_assert_ptr_nonnull(c);
	c->magic = GOOD_MAGIC;
	for (i = 0; i < n; i++)
		if (!strcmp(o[i].key, "create") && !strcmp(o[i].value, "fail"))
			c->create_fails = 1;
	good_configs++;
	*cfgp = c;
	return 0;
}

static void
good_config_free(void *cfg)
{
	struct good_cfg *c = cfg;

	ck_assert_uint_eq(c->magic, GOOD_MAGIC);
	c->magic = 0;
	good_cfg_frees++;
	free(c);
}

static void *
good_create(const void *cfg, struct strata_layer *layer,
    struct strata_error *err)
{
	const struct good_cfg *c = cfg;
	int *ctx;

	(void)layer;
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->magic, GOOD_MAGIC);
	if (c->create_fails) {
		strata_error_set(err, STRATA_ERR_FILTER, "no luck");
		return NULL;
	}
	ctx = malloc(sizeof(*ctx));
	ck_assert_ptr_nonnull(ctx);
	good_creates++;
	return ctx;
}

static void
good_destroy(void *ctx)
{
	good_destroys++;
	free(ctx);
}

static const struct strata_filter_type good_type = {
	.name = "good", .summary = "test: counts configs and contexts",
	.options = good_options, .config = good_config,
	.config_free = good_config_free, .create = good_create,
	.destroy = good_destroy, .input = th_pass_fn, .output = th_pass_fn,
};

/* rec: config() records the options it received, as it received them. */
#define REC_MAX 40
#define K(n) {"k" #n, "", "test key"}

static const struct strata_option_doc rec_options[] = {
	{"a", "", ""}, {"b", "", ""}, {"c", "", ""}, {"d", "", ""},
	{"e", "", ""}, {"f", "", ""}, {"g", "", ""}, {"A.b", "", ""},
	{"x_y-z", "", ""},
	K(0), K(1), K(2), K(3), K(4), K(5), K(6), K(7), K(8), K(9), K(10),
	K(11), K(12), K(13), K(14), K(15), K(16), K(17), K(18), K(19), K(20),
	K(21), K(22), K(23), K(24), K(25), K(26), K(27), K(28), K(29), K(30),
	K(31), K(32),
	{NULL, NULL, NULL},
};

static struct {
	char *key, *value;
	size_t position;
} rec_opt[REC_MAX];
static size_t rec_n;
static int rec_calls;

static void
rec_clear(void)
{
	size_t i;

	for (i = 0; i < rec_n; i++) {
		free(rec_opt[i].key);
		free(rec_opt[i].value);
	}
	rec_n = 0;
}

static int
rec_config(void **cfgp, const struct strata_option *o, size_t n,
    struct strata_error *err)
{
	size_t i;

	(void)cfgp;
	(void)err;
	rec_clear();
	rec_calls++;
	ck_assert_uint_le(n, REC_MAX);
	for (i = 0; i < n; i++) {
		rec_opt[i].key = strdup(o[i].key);
		rec_opt[i].value = strdup(o[i].value);
		rec_opt[i].position = o[i].position;
		ck_assert(rec_opt[i].key && rec_opt[i].value);
	}
	rec_n = n;
	return 0;
}

static const struct strata_filter_type rec_type = {
	.name = "rec", .summary = "test: records its options",
	.options = rec_options, .config = rec_config,
	.input = th_pass_fn, .output = th_pass_fn,
};

/* nocfg: documents an option but has no config(). */
static const struct strata_option_doc nocfg_options[] = {
	{"a", "", ""},
	{NULL, NULL, NULL},
};

static const struct strata_filter_type nocfg_type = {
	.name = "nocfg", .summary = "test: options without config()",
	.options = nocfg_options, .input = th_pass_fn, .output = th_pass_fn,
};

/* The longest name allowed: 32 characters of [a-z0-9_-]. */
static const struct strata_filter_type long_name_type = {
	.name = "abcdefghijklmnopqrstuvwxyz_-0123",
	.input = th_pass_fn, .output = th_pass_fn,
};

static void
reg(const struct strata_filter_type *t)
{
	struct strata_error err;

	if (strata_find_filter(t->name) == t)
		return;
	ck_assert_msg(strata_register_filter(t, &err) == 0, "register %s: %s",
	    t->name, err.message);
}

static void
setup(void)
{
	/* rot13 first: the registry-full test counts built-ins as the
	 * types listed before it. */
	th_register_test_filters();
	reg(&good_type);
	reg(&rec_type);
	reg(&nocfg_type);
	good_configs = good_cfg_frees = good_creates = good_destroys = 0;
	rec_calls = 0;
	rec_clear();
}

static void
teardown(void)
{
	rec_clear();
}

/* Every config object made so far was freed, exactly once. */
static void
assert_configs_balanced(void)
{
	ck_assert_int_eq(good_cfg_frees, good_configs);
	ck_assert_int_eq(good_destroys, good_creates);
}

/* ---- helpers ---- */

static int
has_control_chars(const char *m)
{
	for (; *m; m++)
		if ((unsigned char)*m < 0x20 || *m == 0x7f)
			return 1;
	return 0;
}

static struct strata_spec *
parse_ok(const char *s, int transport)
{
	struct strata_error err;
	struct strata_spec *spec;

	memset(&err, 0x55, sizeof(err));
	spec = strata_spec_parse_(s, transport, &err);
	ck_assert_msg(spec != NULL, "'%.60s' refused: %s", s, err.message);
	ck_assert_int_eq(err.code, STRATA_OK);
	ck_assert_int_eq(spec->refcnt, 1);
	return spec;
}

static char *
repeat(const char *head, char c, size_t n, const char *tail)
{
	size_t h = strlen(head), t = strlen(tail);
	char *s = malloc(h + n + t + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, head, h);
	memset(s + h, c, n);
	memcpy(s + h + n, tail, t + 1);
	return s;
}

/* A refused stack string and what the error must say. */
struct bad {
	const char *s;
	int transport;
	enum strata_error_code code;
	size_t position;
	const char *msg1, *msg2; /* substrings of the message (or NULL) */
};

static void
expect_bad(const struct bad *b)
{
	struct strata_error err;
	char at[48];

	memset(&err, 0x55, sizeof(err));
	ck_assert_msg(strata_spec_parse_(b->s, b->transport, &err) == NULL,
	    "'%.60s' was accepted", b->s);
	ck_assert_msg(err.code == b->code, "'%.60s': code %d, expected %d (%s)",
	    b->s, (int)err.code, (int)b->code, err.message);
	ck_assert_msg(err.position == b->position,
	    "'%.60s': position %zu, expected %zu (%s)", b->s, err.position,
	    b->position, err.message);
	ck_assert_msg(memchr(err.message, 0, sizeof(err.message)) != NULL,
	    "message not terminated");
	ck_assert_msg(err.message[0], "'%.60s': empty message", b->s);
	ck_assert_msg(!has_control_chars(err.message),
	    "'%.60s': control characters in the message", b->s);
	if (b->msg1)
		ck_assert_msg(strstr(err.message, b->msg1),
		    "'%.60s': message '%s' lacks '%s'", b->s, err.message,
		    b->msg1);
	if (b->msg2)
		ck_assert_msg(strstr(err.message, b->msg2),
		    "'%.60s': message '%s' lacks '%s'", b->s, err.message,
		    b->msg2);
	if (b->code == STRATA_ERR_SYNTAX) {
		ck_assert_msg(!strncmp(err.message, "stack string: ", 14),
		    "'%.60s': '%s'", b->s, err.message);
		snprintf(at, sizeof(at), "at position %zu ", b->position);
		ck_assert_msg(strstr(err.message, at),
		    "'%.60s': '%s' lacks '%s'", b->s, err.message, at);
	}
	assert_configs_balanced();
}

/* ==== grammar: strings that parse ==== */

START_TEST(parse_single_filter)
{
	struct strata_spec *spec = parse_ok("rot13", 0);

	ck_assert_ptr_null(spec->transport);
	ck_assert_uint_eq(spec->n, 1);
	ck_assert_ptr_eq(spec->f[0].type, strata_find_filter("rot13"));
	ck_assert_ptr_null(spec->f[0].cfg);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(parse_order_is_wire_upwards)
{
	struct strata_spec *spec = parse_ok("rot13|pass|guard", 0);

	ck_assert_uint_eq(spec->n, 3);
	ck_assert_str_eq(spec->f[0].type->name, "rot13");
	ck_assert_str_eq(spec->f[1].type->name, "pass");
	ck_assert_str_eq(spec->f[2].type->name, "guard");
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(parse_whitespace_tolerated)
{
	static const char *const ok[] = {
		" \t\r\n rot13 \n|\tpass\r\n ",
		"lines ( eol = crlf , max = 10k )",
		"lines(\n\teol=crlf,\n\tmax=10\n)\n| rot13",
		"lines(eol='crlf'   ,max=\"5\")",
		"lines( )",
		"lines()",
		"lines",
	};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(ok); i++) {
		struct strata_spec *spec = parse_ok(ok[i], 0);
		ck_assert_uint_ge(spec->n, 1);
		strata_spec_unref_(spec);
	}
}
END_TEST

START_TEST(parse_config_called_without_options)
{
	struct strata_spec *spec = parse_ok("rec | rec()", 0);

	ck_assert_int_eq(rec_calls, 2);
	ck_assert_uint_eq(rec_n, 0);
	strata_spec_unref_(spec);
	/* lines gets a config object even without options */
	spec = parse_ok("lines", 0);
	ck_assert_ptr_nonnull(spec->f[0].cfg);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(parse_transport_prefix)
{
	struct strata_spec *spec;

	spec = parse_ok("tcp://example.com:443 | lines(max=8192) | rot13", 1);
	ck_assert_str_eq(spec->transport, "tcp://example.com:443");
	ck_assert_uint_eq(spec->transport_pos, 0);
	ck_assert_uint_eq(spec->n, 2);
	ck_assert_str_eq(spec->f[0].type->name, "lines");
	ck_assert_str_eq(spec->f[1].type->name, "rot13");
	strata_spec_unref_(spec);

	spec = parse_ok("  unix:/tmp/s  ", 1);
	ck_assert_str_eq(spec->transport, "unix:/tmp/s");
	ck_assert_uint_eq(spec->transport_pos, 2);
	ck_assert_uint_eq(spec->n, 0);
	strata_spec_unref_(spec);

	spec = parse_ok("tcp://[::1]:80|rot13", 1);
	ck_assert_str_eq(spec->transport, "tcp://[::1]:80");
	ck_assert_uint_eq(spec->n, 1);
	strata_spec_unref_(spec);

	spec = parse_ok("pipe:stdio", 1);
	ck_assert_str_eq(spec->transport, "pipe:stdio");
	ck_assert_uint_eq(spec->n, 0);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(parse_transport_quotes_hide_bars)
{
	struct strata_spec *spec;

	spec = parse_ok("exec:'ls | wc -l' | rot13", 1);
	ck_assert_str_eq(spec->transport, "exec:'ls | wc -l'");
	ck_assert_uint_eq(spec->n, 1);
	strata_spec_unref_(spec);

	spec = parse_ok("exec:\"echo \\\" | x\" | rot13", 1);
	ck_assert_str_eq(spec->transport, "exec:\"echo \\\" | x\"");
	ck_assert_uint_eq(spec->n, 1);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(parse_spec_refcount)
{
	struct strata_spec *spec = parse_ok("good(a=1) | good(a=2)", 0);

	ck_assert_int_eq(good_configs, 2);
	strata_spec_ref_(spec);
	ck_assert_int_eq(spec->refcnt, 2);
	strata_spec_unref_(spec);
	ck_assert_int_eq(good_cfg_frees, 0);
	strata_spec_unref_(spec);
	ck_assert_int_eq(good_cfg_frees, 2);
	strata_spec_unref_(NULL); /* a no-op */
}
END_TEST

/* ==== values: what config() receives ==== */

static const char *
rec_value(const char *key)
{
	size_t i;

	for (i = 0; i < rec_n; i++)
		if (!strcmp(rec_opt[i].key, key))
			return rec_opt[i].value;
	ck_abort_msg("config() did not receive '%s'", key);
	return NULL;
}

START_TEST(values_as_written)
{
	struct strata_spec *spec = parse_ok(
	    "rec(a=plain, b = spaced  out ,c=\"x, (y) | z\","
	    "d='back\\slash \"dq\"', e=\"q\\\"q \\\\ end\", f=\"\", g='',"
	    "A.b=k=v, x_y-z=http/1.1)",
	    0);

	ck_assert_int_eq(rec_calls, 1);
	ck_assert_uint_eq(rec_n, 9);
	ck_assert_str_eq(rec_value("a"), "plain");
	ck_assert_str_eq(rec_value("b"), "spaced  out");
	ck_assert_str_eq(rec_value("c"), "x, (y) | z");
	ck_assert_str_eq(rec_value("d"), "back\\slash \"dq\"");
	ck_assert_str_eq(rec_value("e"), "q\"q \\ end");
	ck_assert_str_eq(rec_value("f"), "");
	ck_assert_str_eq(rec_value("g"), "");
	ck_assert_str_eq(rec_value("A.b"), "k=v");
	ck_assert_str_eq(rec_value("x_y-z"), "http/1.1");
	/* in the order written */
	ck_assert_str_eq(rec_opt[0].key, "a");
	ck_assert_str_eq(rec_opt[8].key, "x_y-z");
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(values_only_two_escapes)
{
	/* In double quotes only \" and \\ are escapes; any other backslash
	 * is kept, so a Windows path survives double quotes. */
	struct strata_spec *spec =
	    parse_ok("rec(a=\"C:\\certs\\ca.pem\", b=\"\\n\\t\\\\\")", 0);

	ck_assert_str_eq(rec_value("a"), "C:\\certs\\ca.pem");
	ck_assert_str_eq(rec_value("b"), "\\n\\t\\");
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(values_key_positions)
{
	/*                         0123456789012345678901234 */
	struct strata_spec *spec = parse_ok("rot13 | rec(a=1,  b = 2)", 0);

	ck_assert_uint_eq(rec_n, 2);
	ck_assert_uint_eq(rec_opt[0].position, 12);
	ck_assert_uint_eq(rec_opt[1].position, 18);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(values_bytes_kept)
{
	struct strata_spec *spec =
	    parse_ok("rec(a=h\xc3\xa9llo, b='\xe2\x82\xac', c=-5, d=+0)", 0);

	ck_assert_str_eq(rec_value("a"), "h\xc3\xa9llo");
	ck_assert_str_eq(rec_value("b"), "\xe2\x82\xac");
	ck_assert_str_eq(rec_value("c"), "-5");
	ck_assert_str_eq(rec_value("d"), "+0");
	strata_spec_unref_(spec);
}
END_TEST

static char *
option_list(const char *filter, int n)
{
	char *s = malloc(32 + (size_t)n * 16);
	size_t len;
	int i;

	ck_assert_ptr_nonnull(s);
	len = (size_t)sprintf(s, "%s(", filter);
	for (i = 0; i < n; i++)
		len += (size_t)sprintf(s + len, "%sk%d=%d", i ? "," : "", i, i);
	strcpy(s + len, ")");
	return s;
}

START_TEST(values_32_options)
{
	char *s = option_list("rec", 32);
	struct strata_spec *spec = parse_ok(s, 0);

	ck_assert_uint_eq(rec_n, 32);
	ck_assert_str_eq(rec_value("k31"), "31");
	strata_spec_unref_(spec);
	free(s);
}
END_TEST

START_TEST(values_documented_without_config)
{
	struct strata_spec *spec = parse_ok("nocfg(a=1)", 0);

	ck_assert_ptr_null(spec->f[0].cfg);
	strata_spec_unref_(spec);
}
END_TEST

/* ==== errors ==== */

static const struct bad syntax_cases[] = {
	{"", 0, STRATA_ERR_SYNTAX, 0, "expected a filter name",
	    "end of string"},
	{"   ", 0, STRATA_ERR_SYNTAX, 3, "expected a filter name", NULL},
	{"rot13 |", 0, STRATA_ERR_SYNTAX, 7, "expected a filter name", NULL},
	{"rot13 | ", 0, STRATA_ERR_SYNTAX, 8, "expected a filter name", NULL},
	{"| rot13", 0, STRATA_ERR_SYNTAX, 0, "expected a filter name",
	    "near '| rot13'"},
	{"rot13 || pass", 0, STRATA_ERR_SYNTAX, 7, "expected a filter name",
	    NULL},
	{"rot13 |  | pass", 0, STRATA_ERR_SYNTAX, 9, "expected a filter name",
	    NULL},
	{"rot13 pass", 0, STRATA_ERR_SYNTAX, 6, "expected '|' or the end",
	    "near 'pass'"},
	{"rot13 | pass\n|", 0, STRATA_ERR_SYNTAX, 14, "expected a filter name",
	    NULL},
	{"lines(", 0, STRATA_ERR_SYNTAX, 6, "expected an option name", NULL},
	{"lines(max=10", 0, STRATA_ERR_SYNTAX, 12, "expected ',' or ')'",
	    "end of string"},
	/* a bare value ends at '|', so the missing ')' is found there */
	{"lines(max=10 | rot13", 0, STRATA_ERR_SYNTAX, 13,
	    "expected ',' or ')'", "near '| rot13'"},
	{"lines(max=10, ", 0, STRATA_ERR_SYNTAX, 14, "expected an option name",
	    NULL},
	{"lines(max=10,)", 0, STRATA_ERR_SYNTAX, 13, "expected an option name",
	    NULL},
	{"lines(max)", 0, STRATA_ERR_SYNTAX, 9, "expected '='", NULL},
	{"lines(max=)", 0, STRATA_ERR_SYNTAX, 10, "expected a value", NULL},
	{"lines(max=,eol=lf)", 0, STRATA_ERR_SYNTAX, 10, "expected a value",
	    NULL},
	{"lines(=10)", 0, STRATA_ERR_SYNTAX, 6, "expected an option name",
	    NULL},
	{"lines((", 0, STRATA_ERR_SYNTAX, 6, "expected an option name", NULL},
	{"lines(eol=l(f)", 0, STRATA_ERR_SYNTAX, 11, "expected ',' or ')'",
	    NULL},
	{"lines(eol=lf))", 0, STRATA_ERR_SYNTAX, 13, "expected '|' or the end",
	    NULL},
	{"lines(eol=\"lf)", 0, STRATA_ERR_SYNTAX, 10, "unterminated \" quote",
	    NULL},
	{"lines(eol='lf)", 0, STRATA_ERR_SYNTAX, 10, "unterminated ' quote",
	    NULL},
	{"lines(eol=\"lf\\\")", 0, STRATA_ERR_SYNTAX, 10,
	    "unterminated \" quote", NULL},
	{"lines(eol=\"lf\\", 0, STRATA_ERR_SYNTAX, 10, "unterminated \" quote",
	    NULL},
	{"lines(eol='lf' x)", 0, STRATA_ERR_SYNTAX, 15, "expected ',' or ')'",
	    NULL},
	{"lines(eol=lf\"x\")", 0, STRATA_ERR_SYNTAX, 12, "expected ',' or ')'",
	    NULL},
	{"LINES", 0, STRATA_ERR_SYNTAX, 0, "expected a filter name", NULL},
	{"rot13\x01", 0, STRATA_ERR_SYNTAX, 5, "expected '|' or the end", NULL},
	{"\x1b[31mrot13", 0, STRATA_ERR_SYNTAX, 0, "expected a filter name",
	    NULL},
	{"rot13 | \x7fpass", 0, STRATA_ERR_SYNTAX, 8, "expected a filter name",
	    NULL},
	{"lines(\x1b=1)", 0, STRATA_ERR_SYNTAX, 6, "expected an option name",
	    NULL},
	/* a transport where only filters are allowed */
	{"tcp://h:1 | rot13", 0, STRATA_ERR_SYNTAX, 0,
	    "a transport is not allowed here", NULL},
	/* with a transport prefix */
	{"", 1, STRATA_ERR_SYNTAX, 0, "expected a transport", NULL},
	{"  | rot13", 1, STRATA_ERR_SYNTAX, 2, "expected a transport", NULL},
	{"rot13 | pass", 1, STRATA_ERR_SYNTAX, 0, "expected a transport", NULL},
	{"tcp://h:1 |", 1, STRATA_ERR_SYNTAX, 11, "expected a filter name",
	    NULL},
	{"tcp://h:1 | rot13 |", 1, STRATA_ERR_SYNTAX, 19,
	    "expected a filter name", NULL},
	{"exec:'ls | wc", 1, STRATA_ERR_SYNTAX, 5, "unterminated quote", NULL},
	{"tcp://h:1 | lines(", 1, STRATA_ERR_SYNTAX, 18,
	    "expected an option name", NULL},
};

START_TEST(errors_syntax)
{
	expect_bad(&syntax_cases[_i]);
}
END_TEST

static const struct bad semantic_cases[] = {
	{"nosuch", 0, STRATA_ERR_UNKNOWN, 0, "unknown filter 'nosuch'",
	    "lines"},
	{"rot13 | nosuch(a=1)", 0, STRATA_ERR_UNKNOWN, 8,
	    "unknown filter 'nosuch' at position 8", "known: "},
	{"tcp://h:1 | nosuch", 1, STRATA_ERR_UNKNOWN, 12,
	    "unknown filter 'nosuch'", NULL},
	{"lines(colour=red)", 0, STRATA_ERR_OPTION, 6,
	    "lines: unknown option 'colour'", "eol"},
	{"rot13 | rot13(a=1)", 0, STRATA_ERR_OPTION, 14,
	    "rot13: unknown option 'a'", "known: none"},
	{"lines(max=0)", 0, STRATA_ERR_OPTION, 6,
	    "lines: bad value '0' for max", NULL},
	{"lines(eol=cr)", 0, STRATA_ERR_OPTION, 6,
	    "lines: bad value 'cr' for eol", "one of lf, crlf, any"},
	{"tcp://h:1 | lines(max=0)", 1, STRATA_ERR_OPTION, 18, "lines: ",
	    "for max"},
	{"lines(eol = 'lf' , max = 5 , tail=nope)", 0, STRATA_ERR_OPTION, 29,
	    "lines: bad value 'nope' for tail", NULL},
	{"lines(max=1, max=2)", 0, STRATA_ERR_OPTION, 13,
	    "lines: option 'max' given twice", NULL},
	{"rec(a=1, b=2, a=\"1\")", 0, STRATA_ERR_OPTION, 14,
	    "rec: option 'a' given twice", NULL},
	/* config() failures, prefixed with the filter's name */
	{"rot13 | good(fail=msg)", 0, STRATA_ERR_OPTION, 8,
	    "good: wanted to fail", NULL},
	{"rot13|good(fail=silent)", 0, STRATA_ERR_OPTION, 6,
	    "good: bad options", NULL},
	{"good(n=0)", 0, STRATA_ERR_OPTION, 5, "good: bad value '0' for n",
	    "expected an integer from 1 to 100"},
};

START_TEST(errors_semantic)
{
	expect_bad(&semantic_cases[_i]);
}
END_TEST

START_TEST(errors_prefix_not_doubled)
{
	struct strata_error err;

	ck_assert_ptr_null(strata_spec_parse_("good(fail=prefixed)", 0, &err));
	ck_assert_str_eq(err.message, "good: already prefixed");
	ck_assert_ptr_null(strata_spec_parse_("good(n=101)", 0, &err));
	ck_assert_str_eq(err.message,
	    "good: bad value '101' for n: expected an integer from 1 to 100");
}
END_TEST

START_TEST(errors_null_string)
{
	struct strata_error err;

	memset(&err, 0x55, sizeof(err));
	ck_assert_ptr_null(strata_spec_parse_(NULL, 0, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.message, "NULL"));
	ck_assert_ptr_null(strata_spec_parse_(NULL, 1, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
	/* and without an error structure */
	ck_assert_ptr_null(strata_spec_parse_(NULL, 0, NULL));
	ck_assert_ptr_null(strata_spec_parse_("nosuch", 0, NULL));
	ck_assert_ptr_null(strata_spec_parse_("good(fail=msg)", 0, NULL));
	ck_assert_ptr_null(strata_spec_parse_("good | (", 0, NULL));
	assert_configs_balanced();
}
END_TEST

static char *
filter_chain(const char *filter, int n)
{
	size_t fl = strlen(filter), len = 0;
	char *s = malloc((size_t)n * (fl + 3) + 1);
	int i;

	ck_assert_ptr_nonnull(s);
	for (i = 0; i < n; i++) {
		if (i) {
			memcpy(s + len, " | ", 3);
			len += 3;
		}
		memcpy(s + len, filter, fl);
		len += fl;
	}
	s[len] = 0;
	return s;
}

START_TEST(errors_too_many_filters)
{
	char *s = filter_chain("good", 32);
	struct strata_spec *spec = parse_ok(s, 0);
	struct bad b = {NULL, 0, STRATA_ERR_SYNTAX, 32 * 7,
	    "too many filters", NULL};

	ck_assert_uint_eq(spec->n, 32);
	strata_spec_unref_(spec);
	free(s);
	/* the 33rd filter starts at 32 * strlen("good | ") */
	b.s = s = filter_chain("good", 33);
	expect_bad(&b);
	ck_assert_int_eq(good_configs, 64);
	free(s);
}
END_TEST

START_TEST(errors_too_many_options)
{
	char *s = option_list("rec", 33);
	struct bad b = {NULL, 0, STRATA_ERR_OPTION, 0, "rec: too many options",
	    "k32"};

	b.s = s;
	b.position = (size_t)(strstr(s, "k32=") - s);
	expect_bad(&b);
	free(s);
}
END_TEST

START_TEST(errors_error_helpers)
{
	struct strata_error err;
	char long_msg[300];

	memset(&err, 0, sizeof(err));
	strata_error_set(NULL, STRATA_ERR_SYNTAX, "ignored %d", 1);
	strata_error_prefix_(NULL, "x");
	strata_error_set(&err, STRATA_ERR_FILTER, "%s", "");
	ck_assert_int_eq(err.code, STRATA_ERR_FILTER);
	ck_assert_str_eq(err.message, "error 4");
	strata_error_set(&err, STRATA_ERR_FILTER, "broke");
	strata_error_prefix_(&err, "zlib");
	ck_assert_str_eq(err.message, "zlib: broke");
	strata_error_prefix_(&err, "zlib");
	ck_assert_str_eq(err.message, "zlib: broke");
	strata_error_prefix_(&err, "zl");
	ck_assert_str_eq(err.message, "zl: zlib: broke");
	/* a full message stays terminated */
	memset(long_msg, 'm', sizeof(long_msg) - 1);
	long_msg[sizeof(long_msg) - 1] = 0;
	strata_error_set(&err, STRATA_ERR_FILTER, "%s", long_msg);
	ck_assert_uint_eq(strlen(err.message), STRATA_ERROR_MAX - 1);
	strata_error_prefix_(&err, "tls");
	ck_assert_uint_eq(strlen(err.message), STRATA_ERROR_MAX - 1);
	ck_assert(!strncmp(err.message, "tls: mmm", 8));
}
END_TEST

/* ==== config objects: made once, freed once ==== */

START_TEST(config_freed_when_later_filter_fails)
{
	static const char *const later[] = {
		"good(a=1) | nosuch",
		"good(a=1) | good(a=2) | (",
		"good | good(fail=msg)",
		"good | good(fail=silent)",
		"good | good(zzz=1)",
		"good | good(a=1, a=2)",
		"good | good(n=1000)",
		"good | good(a='x",
		"good | good |",
		"good(a=1) garbage",
	};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(later); i++) {
		struct strata_error err;
		int before = good_configs;

		ck_assert_msg(!strata_spec_parse_(later[i], 0, &err),
		    "'%s' accepted", later[i]);
		ck_assert_msg(good_configs > before, "'%s': no config made",
		    later[i]);
		ck_assert_msg(good_cfg_frees == good_configs,
		    "'%s': %d configs made, %d freed", later[i], good_configs,
		    good_cfg_frees);
	}
}
END_TEST

START_TEST(config_freed_with_transport_prefix)
{
	struct strata_error err;

	ck_assert_ptr_null(
	    strata_spec_parse_("tcp://h:1 | good | nosuch", 1, &err));
	ck_assert_int_eq(good_configs, 1);
	ck_assert_int_eq(good_cfg_frees, 1);
}
END_TEST

START_TEST(config_failed_is_not_freed_by_the_parser)
{
	struct strata_error err;

	ck_assert_ptr_null(strata_spec_parse_("good(fail=msg)", 0, &err));
	ck_assert_int_eq(good_configs, 0);
	ck_assert_int_eq(good_cfg_frees, 0);
}
END_TEST

START_TEST(config_lives_as_long_as_the_stack)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct bufferevent *t, *top;
	int fds[2];

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	top = strata_push(t, "good(a=1) | good", BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	ck_assert_int_eq(good_configs, 2);
	ck_assert_int_eq(good_creates, 2);
	ck_assert_int_eq(good_cfg_frees, 0);
	bufferevent_free(top);
	close(fds[1]);
	/* libevent finalizes a freed bufferevent from the loop */
	event_base_free(base);
	ck_assert_int_eq(good_cfg_frees, 2);
	ck_assert_int_eq(good_destroys, 2);
}
END_TEST

START_TEST(config_freed_when_create_fails)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct bufferevent *t;
	int fds[2];

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_null(strata_push(t, "good | good(create=fail) | good",
	    BEV_OPT_CLOSE_ON_FREE, &err));
	ck_assert_str_eq(err.message, "good: no luck");
	ck_assert_int_eq(good_configs, 3);
	ck_assert_int_eq(good_creates, 1);
	assert_configs_balanced();
	bufferevent_free(t);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

/* ==== strata_push: a refusal changes nothing ==== */

struct io {
	int reads, writes, events;
	char got[64];
	size_t ngot, want;
	int have, written;
};

static void
io_read(struct bufferevent *bev, void *arg)
{
	struct io *io = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	io->reads++;
	if (n > sizeof(io->got) - 1 - io->ngot)
		n = sizeof(io->got) - 1 - io->ngot;
	evbuffer_remove(in, io->got + io->ngot, n);
	io->ngot += n;
	io->got[io->ngot] = 0;
	if (io->ngot >= io->want)
		io->have = 1;
}

static void
io_write(struct bufferevent *bev, void *arg)
{
	struct io *io = arg;

	(void)bev;
	io->writes++;
	io->written = 1;
}

static void
io_event(struct bufferevent *bev, short what, void *arg)
{
	struct io *io = arg;

	(void)bev;
	(void)what;
	io->events++;
}

/* The peer's bytes reach @p bev's read callback as @p in_expect, and
 * bytes written on @p bev reach the peer as @p out_expect. */
static void
check_usable(struct event_base *base, struct bufferevent *bev, int peer,
    struct io *io, const char *in_expect, const char *out_expect)
{
	char buf[64];
	size_t got = 0;
	int tries;
	ssize_t n;

	io->ngot = 0;
	io->have = 0;
	io->want = strlen(in_expect);
	ck_assert_int_eq(write(peer, "ping", 4), 4);
	th_run_until(base, &io->have, 2000, "the peer's bytes");
	ck_assert_str_eq(io->got, in_expect);
	/* a socket bufferevent fires its write callback once after
	 * bufferevent_enable(EV_WRITE) even with nothing written */
	io->written = 0;
	ck_assert_int_eq(bufferevent_write(bev, "pong", 4), 0);
	th_run_until(base, &io->written, 2000, "the write callback");
	/* on a stack the write callback means "moved below", not "sent" */
	for (tries = 0; got < strlen(out_expect) && tries < 200; tries++) {
		n = read(peer, buf + got, sizeof(buf) - 1 - got);
		if (n > 0)
			got += (size_t)n;
		else
			th_run_for(base, 10);
	}
	buf[got] = 0;
	ck_assert_str_eq(buf, out_expect);
	ck_assert_int_eq(io->events, 0);
}

static char *
refused_push_string(size_t i)
{
	static const char *const refused[] = {
		"",
		"   ",
		"nosuch",
		"rot13 |",
		"rot13 | nosuch",
		"lines(max=0)",
		"lines(max=1, max=1)",
		"lines(eol='crlf",
		"rot13 | lines(",
		"tcp://h:1 | rot13",
		"good(a=1) | nosuch",
		"good(create=fail)",
		"rot13 | good | good(create=fail)",
		"\x1b]0;title\x07",
	};

	if (i < STRATA_ARRAY_LEN(refused))
		return strdup(refused[i]);
	if (i == STRATA_ARRAY_LEN(refused))
		return filter_chain("rot13", 33);
	return NULL;
}

START_TEST(push_refused_leaves_bev_untouched)
{
	struct event_base *base = event_base_new();
	struct bufferevent *bev, *top;
	bufferevent_data_cb r, w;
	bufferevent_event_cb e;
	struct strata_error err;
	struct io io = {0};
	size_t i, lo, hi;
	void *arg;
	int fds[2];
	char *s;

	th_socketpair(fds);
	bev = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, io_read, io_write, io_event, &io);
	bufferevent_setwatermark(bev, EV_READ, 0, 4096);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	check_usable(base, bev, fds[1], &io, "ping", "pong");
	for (i = 0; (s = refused_push_string(i)) != NULL; i++) {
		memset(&err, 0, sizeof(err));
		top = strata_push(bev, s, BEV_OPT_CLOSE_ON_FREE, &err);
		ck_assert_msg(top == NULL, "'%.40s' was pushed", s);
		ck_assert_msg(err.code != STRATA_OK && err.message[0],
		    "'%.40s': no error", s);
		ck_assert(!strata_is_stack(bev));
		bufferevent_getcb(bev, &r, &w, &e, &arg);
		ck_assert(r == io_read && w == io_write && e == io_event);
		ck_assert_ptr_eq(arg, &io);
		ck_assert_int_eq(bufferevent_get_enabled(bev),
		    EV_READ | EV_WRITE);
		ck_assert_int_eq(bufferevent_getwatermark(bev, EV_READ, &lo,
		    &hi), 0);
		ck_assert_uint_eq(lo, 0);
		ck_assert_uint_eq(hi, 4096);
		assert_configs_balanced();
		free(s);
	}
	/* NULL as the filter list */
	ck_assert_ptr_null(strata_push(bev, NULL, 0, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
	ck_assert_ptr_null(strata_push(bev, "nosuch", 0, NULL));
	ck_assert_ptr_null(strata_push(bev, "good(create=fail)", 0, NULL));
	check_usable(base, bev, fds[1], &io, "ping", "pong");
	ck_assert_int_eq(io.events, 0);
	assert_configs_balanced();
	bufferevent_free(bev);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

START_TEST(push_null_bev)
{
	struct strata_error err;

	ck_assert_ptr_null(strata_push(NULL, "rot13", 0, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
	ck_assert_ptr_null(strata_push(NULL, "good", 0, NULL));
	assert_configs_balanced();
}
END_TEST

START_TEST(push_refused_on_live_stack)
{
	struct event_base *base = event_base_new();
	struct bufferevent *t, *top;
	struct strata_error err;
	struct io io = {0};
	int fds[2];
	char *s;
	size_t i;

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	top = strata_push(t, "rot13", BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	bufferevent_setcb(top, io_read, io_write, io_event, &io);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	check_usable(base, top, fds[1], &io, "cvat", "cbat");
	for (i = 0; (s = refused_push_string(i)) != NULL; i++) {
		ck_assert_msg(strata_push(top, s, 0, &err) == NULL,
		    "'%.40s' was pushed", s);
		ck_assert(err.message[0]);
		ck_assert_int_eq(strata_stats(top, NULL, 0), 2);
		assert_configs_balanced();
		free(s);
	}
	check_usable(base, top, fds[1], &io, "cvat", "cbat");
	bufferevent_free(top);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

START_TEST(push_accepted_options)
{
	struct event_base *base = event_base_new();
	struct bufferevent *t, *top;
	struct strata_error err;
	struct io io = {0};
	int fds[2];

	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	top = strata_push(t,
	    " rot13 |\n good(a=\"x | y\") | lines(eol='crlf') ",
	    BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	bufferevent_setcb(top, io_read, io_write, io_event, &io);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	ck_assert_int_eq(write(fds[1], "cvat\r\n", 6), 6);
	io.want = 5;
	th_run_until(base, &io.have, 2000, "a line");
	ck_assert_str_eq(io.got, "ping\n");
	bufferevent_free(top);
	close(fds[1]);
	event_base_free(base);
	ck_assert_int_eq(good_configs, 1);
	assert_configs_balanced();
}
END_TEST

/* ==== option helpers ==== */

struct uint_case {
	const char *v;
	uint64_t min, max;
	int suffix, ok;
	uint64_t want;
};

static const struct uint_case uint_cases[] = {
	{"1", 1, 1000, 0, 1, 1},
	{"1000", 1, 1000, 0, 1, 1000},
	{"007", 1, 1000, 0, 1, 7}, /* decimal, never octal */
	{"0", 1, 1000, 0, 0, 0},
	{"1001", 1, 1000, 0, 0, 0},
	{"", 1, 1000, 0, 0, 0},
	{"+5", 1, 1000, 0, 0, 0},
	{"-5", 1, 1000, 0, 0, 0},
	{"-0", 0, 1000, 0, 0, 0},
	{" 5", 1, 1000, 0, 0, 0},
	{"5 ", 1, 1000, 0, 0, 0},
	{"5k", 1, 1000000, 0, 0, 0}, /* suffix not allowed */
	{"0x10", 0, 1000, 0, 0, 0},
	{"1e3", 0, 10000, 0, 0, 0},
	{"1.5", 0, 10000, 0, 0, 0},
	{"99999999999999999999", 0, UINT64_MAX, 0, 0, 0},
	{"99999999999999999999", 0, UINT64_MAX, 1, 0, 0},
	{"18446744073709551615", 0, UINT64_MAX, 0, 1, UINT64_MAX},
	{"18446744073709551616", 0, UINT64_MAX, 0, 0, 0},
	{"0", 0, 0, 0, 1, 0},
	{"1k", 0, UINT64_MAX, 1, 1, 1024},
	{"2M", 0, UINT64_MAX, 1, 1, 2u << 20},
	{"3G", 0, UINT64_MAX, 1, 1, (uint64_t)3 << 30},
	{"0k", 0, UINT64_MAX, 1, 1, 0},
	{"17179869183G", 0, UINT64_MAX, 1, 1, (((uint64_t)1 << 34) - 1) << 30},
	{"17179869184G", 0, UINT64_MAX, 1, 0, 0}, /* 2^64: overflow */
	{"18014398509481984k", 0, UINT64_MAX, 1, 0, 0},
	{"1k", 0, 1000, 1, 0, 0}, /* 1024 > max */
	{"1k", 1025, 4096, 1, 0, 0}, /* 1024 < min */
	{"1T", 0, UINT64_MAX, 1, 0, 0},
	{"1kk", 0, UINT64_MAX, 1, 0, 0},
	{"k", 0, UINT64_MAX, 1, 0, 0},
	{"1 k", 0, UINT64_MAX, 1, 0, 0},
	{"-1k", 0, UINT64_MAX, 1, 0, 0},
	{"+1k", 0, UINT64_MAX, 1, 0, 0},
};

START_TEST(opt_uint_cases)
{
	const struct uint_case *c = &uint_cases[_i];
	struct strata_option o = {"max", c->v, 17};
	struct strata_error err;
	uint64_t out = 12345;
	int rc;

	memset(&err, 0, sizeof(err));
	rc = strata_opt_uint("lines", &o, c->min, c->max, c->suffix, &out,
	    &err);
	if (c->ok) {
		ck_assert_msg(rc == 0, "'%s' refused: %s", c->v, err.message);
		ck_assert_msg(out == c->want, "'%s' gave %llu", c->v,
		    (unsigned long long)out);
		return;
	}
	ck_assert_msg(rc == -1, "'%s' accepted as %llu", c->v,
	    (unsigned long long)out);
	ck_assert_msg(out == 12345, "'%s': output written on failure", c->v);
	ck_assert_int_eq(err.code, STRATA_ERR_OPTION);
	ck_assert_uint_eq(err.position, 17);
	ck_assert_msg(!strncmp(err.message, "lines: bad value '", 18) &&
		strstr(err.message, "' for max: expected an integer from "),
	    "'%s': %s", c->v, err.message);
	ck_assert_msg(!strstr(err.message, "suffix") == !c->suffix, "%s",
	    err.message);
	/* a NULL error structure is fine */
	ck_assert_int_eq(strata_opt_uint("lines", &o, c->min, c->max,
	    c->suffix, &out, NULL), -1);
}
END_TEST

START_TEST(opt_uint_message)
{
	struct strata_option o = {"max", "5k", 3};
	struct strata_error err;
	uint64_t out;

	ck_assert_int_eq(strata_opt_uint("lines", &o, 1, 1000, 0, &out, &err),
	    -1);
	ck_assert_str_eq(err.message,
	    "lines: bad value '5k' for max: expected an integer from 1 to "
	    "1000");
	ck_assert_int_eq(strata_opt_uint("lines", &o, 1, 1000, 1, &out, &err),
	    -1);
	ck_assert_str_eq(err.message,
	    "lines: bad value '5k' for max: expected an integer from 1 to "
	    "1000 (k, M, G suffixes allowed)");
}
END_TEST

START_TEST(opt_enum_cases)
{
	static const char *const eols[] = {"lf", "crlf", "any", NULL};
	static const char *const refused[] = {"CRLF", "", "lf ", " lf", "crl",
	    "crlf2", "l"};
	struct strata_option o = {"eol", "crlf", 9};
	struct strata_error err;
	int out = -1;
	size_t i;

	ck_assert_int_eq(strata_opt_enum("lines", &o, eols, &out, &err), 0);
	ck_assert_int_eq(out, 1);
	o.value = "any";
	ck_assert_int_eq(strata_opt_enum("lines", &o, eols, &out, &err), 0);
	ck_assert_int_eq(out, 2);
	for (i = 0; i < STRATA_ARRAY_LEN(refused); i++) {
		out = -1;
		o.value = refused[i];
		ck_assert_int_eq(strata_opt_enum("lines", &o, eols, &out, &err),
		    -1);
		ck_assert_int_eq(out, -1);
		ck_assert_int_eq(err.code, STRATA_ERR_OPTION);
		ck_assert_uint_eq(err.position, 9);
		ck_assert_ptr_nonnull(strstr(err.message, "lines: "));
		ck_assert_ptr_nonnull(strstr(err.message, " for eol: "));
		ck_assert_ptr_nonnull(
		    strstr(err.message, "expected one of lf, crlf, any"));
	}
	ck_assert_int_eq(strata_opt_enum("lines", &o, eols, &out, NULL), -1);
}
END_TEST

START_TEST(opt_enum_long_list)
{
	static const char *names[40];
	static char text[40][24];
	struct strata_option o = {"k", "nope", 0};
	struct strata_error err;
	int out, i;

	for (i = 0; i < 39; i++) {
		snprintf(text[i], sizeof(text[i]), "a-rather-long-name-%02d",
		    i);
		names[i] = text[i];
	}
	names[39] = NULL;
	ck_assert_int_eq(strata_opt_enum("f", &o, names, &out, &err), -1);
	ck_assert_ptr_nonnull(memchr(err.message, 0, sizeof(err.message)));
	ck_assert_ptr_nonnull(strstr(err.message, "a-rather-long-name-00"));
	o.value = "a-rather-long-name-38";
	ck_assert_int_eq(strata_opt_enum("f", &o, names, &out, &err), 0);
	ck_assert_int_eq(out, 38);
}
END_TEST

START_TEST(opt_bool_cases)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	static const char *const refused[] = {"", "2", "Yes", "TRUE", "y", "n",
	    "enabled", "01", " on"};
	struct strata_option o = {"verify", NULL, 4};
	struct strata_error err;
	int out;
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(yes); i++) {
		o.value = yes[i];
		out = 0;
		ck_assert_int_eq(strata_opt_bool("tls", &o, &out, &err), 0);
		ck_assert_msg(out == 1, "%s", yes[i]);
		o.value = no[i];
		out = 1;
		ck_assert_int_eq(strata_opt_bool("tls", &o, &out, &err), 0);
		ck_assert_msg(out == 0, "%s", no[i]);
	}
	for (i = 0; i < STRATA_ARRAY_LEN(refused); i++) {
		o.value = refused[i];
		out = 7;
		ck_assert_int_eq(strata_opt_bool("tls", &o, &out, &err), -1);
		ck_assert_int_eq(out, 7);
		ck_assert_ptr_nonnull(strstr(err.message, "tls: bad value"));
		ck_assert_ptr_nonnull(strstr(err.message, "for verify"));
		ck_assert_ptr_nonnull(strstr(err.message, "yes"));
		ck_assert_ptr_nonnull(strstr(err.message, "off"));
	}
}
END_TEST

/* ==== registry ==== */

START_TEST(registry_rejects_bad_types)
{
	static const char *const names[] = {"", "Upper", "has space",
	    "dot.ted", "tab\t", "caf\xc3\xa9", "semi;", "pipe|", "paren(",
	    "abcdefghijklmnopqrstuvwxyz_-01234"}; /* 33 characters */
	static struct strata_filter_type t[STRATA_ARRAY_LEN(names)];
	struct strata_filter_type no_in = {.name = "no-input",
	    .output = th_pass_fn};
	struct strata_filter_type no_out = {.name = "no-output",
	    .input = th_pass_fn};
	struct strata_filter_type no_name = {.input = th_pass_fn,
	    .output = th_pass_fn};
	struct strata_error err;
	size_t i, total = strata_list_filters(NULL, 0);

	for (i = 0; i < STRATA_ARRAY_LEN(names); i++) {
		t[i].name = names[i];
		t[i].input = t[i].output = th_pass_fn;
		memset(&err, 0, sizeof(err));
		ck_assert_msg(strata_register_filter(&t[i], &err) == -1,
		    "'%s' registered", names[i]);
		ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
		ck_assert(err.message[0]);
		ck_assert_ptr_null(strata_find_filter(names[i]));
		ck_assert_int_eq(strata_register_filter(&t[i], NULL), -1);
	}
	ck_assert_int_eq(strata_register_filter(NULL, &err), -1);
	ck_assert_int_eq(strata_register_filter(&no_name, &err), -1);
	ck_assert_int_eq(strata_register_filter(&no_in, &err), -1);
	ck_assert_int_eq(strata_register_filter(&no_out, &err), -1);
	ck_assert_ptr_null(strata_find_filter("no-input"));
	ck_assert_ptr_null(strata_find_filter("no-output"));
	ck_assert_uint_eq(strata_list_filters(NULL, 0), total);
}
END_TEST

START_TEST(registry_longest_name)
{
	struct strata_spec *spec;

	reg(&long_name_type);
	ck_assert_ptr_eq(strata_find_filter(long_name_type.name),
	    &long_name_type);
	spec = parse_ok("rot13 | abcdefghijklmnopqrstuvwxyz_-0123", 0);
	ck_assert_ptr_eq(spec->f[1].type, &long_name_type);
	strata_spec_unref_(spec);
}
END_TEST

START_TEST(registry_rejects_duplicates)
{
	struct strata_filter_type copy = good_type;
	struct strata_filter_type lines = {.name = "lines",
	    .input = th_pass_fn, .output = th_pass_fn};
	struct strata_error err;
	size_t total = strata_list_filters(NULL, 0);

	ck_assert_int_eq(strata_register_filter(&good_type, &err), -1);
	ck_assert_ptr_nonnull(strstr(err.message, "'good'"));
	ck_assert_int_eq(strata_register_filter(&copy, &err), -1);
	ck_assert_int_eq(strata_register_filter(&lines, &err), -1);
	ck_assert_ptr_nonnull(strstr(err.message, "'lines'"));
	ck_assert_ptr_eq(strata_find_filter("lines"), &strata_lines_filter_);
	ck_assert_ptr_eq(strata_find_filter("good"), &good_type);
	ck_assert_uint_eq(strata_list_filters(NULL, 0), total);
}
END_TEST

START_TEST(registry_find)
{
	ck_assert_ptr_eq(strata_find_filter("lines"), &strata_lines_filter_);
	ck_assert_ptr_eq(strata_find_filter("rec"), &rec_type);
	ck_assert_ptr_null(strata_find_filter(NULL));
	ck_assert_ptr_null(strata_find_filter(""));
	ck_assert_ptr_null(strata_find_filter("line"));
	ck_assert_ptr_null(strata_find_filter("lines2"));
	ck_assert_ptr_null(strata_find_filter("lines "));
	ck_assert_ptr_null(strata_find_filter("LINES"));
	ck_assert_ptr_null(strata_find_filter("re"));
	ck_assert_ptr_eq(strata_find_filter_n_("lines(max=1)", 5),
	    &strata_lines_filter_);
	ck_assert_ptr_null(strata_find_filter_n_("lines", 4));
}
END_TEST

static size_t
index_of(const struct strata_filter_type **list, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i]->name, name))
			return i;
	ck_abort_msg("'%s' not listed", name);
	return n;
}

START_TEST(registry_list_builtins_first)
{
	const struct strata_filter_type *list[128], *sentinel = &good_type;
	size_t total = strata_list_filters(NULL, 0), i, j, lines;

	ck_assert_uint_ge(total, 8);
	ck_assert_uint_le(total, 128);
	ck_assert_uint_eq(strata_list_filters(list, 128), total);
	lines = index_of(list, total, "lines");
	ck_assert_ptr_eq(list[lines], &strata_lines_filter_);
	/* every built-in before the first user type */
	ck_assert_uint_lt(lines, index_of(list, total, "rot13"));
	ck_assert_uint_lt(index_of(list, total, "rot13"),
	    index_of(list, total, "good"));
	for (i = 0; i < total; i++)
		for (j = i + 1; j < total; j++)
			ck_assert_ptr_ne(list[i], list[j]);
	/* a short array gets only what fits */
	list[2] = sentinel;
	ck_assert_uint_eq(strata_list_filters(list, 2), total);
	ck_assert_ptr_eq(list[2], sentinel);
}
END_TEST

/* ==== robustness ==== */

#define MEG (1024 * 1024)

START_TEST(robust_megabyte_of_whitespace)
{
	char *s = repeat("", ' ', MEG, "rot13");
	char *t = repeat("rot13 |", '\t', MEG, "pass   ");
	struct strata_spec *spec;

	spec = parse_ok(s, 0);
	ck_assert_uint_eq(spec->n, 1);
	strata_spec_unref_(spec);
	spec = parse_ok(t, 0);
	ck_assert_uint_eq(spec->n, 2);
	strata_spec_unref_(spec);
	free(s);
	free(t);
}
END_TEST

START_TEST(robust_megabyte_name)
{
	char *s = repeat("rot13 | ", 'a', MEG, "");
	struct bad b = {NULL, 0, STRATA_ERR_UNKNOWN, 8, "unknown filter 'aaa",
	    "at position 8"};

	b.s = s;
	expect_bad(&b);
	free(s);
	/* 33 characters: a name no filter can have */
	s = repeat("", 'x', 33, "");
	b.s = s;
	b.position = 0;
	b.msg1 = "unknown filter 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'";
	b.msg2 = "at position 0";
	expect_bad(&b);
	free(s);
}
END_TEST

START_TEST(robust_megabyte_values)
{
	char *q = repeat("rec(a='", 'v', MEG, "', b=\"x\")");
	char *bare = repeat("rec(a=", 'w', MEG, " )");
	struct strata_spec *spec;

	spec = parse_ok(q, 0);
	ck_assert_uint_eq(strlen(rec_value("a")), MEG);
	ck_assert_str_eq(rec_value("b"), "x");
	strata_spec_unref_(spec);
	spec = parse_ok(bare, 0);
	ck_assert_uint_eq(strlen(rec_value("a")), MEG);
	strata_spec_unref_(spec);
	free(q);
	free(bare);
}
END_TEST

START_TEST(robust_long_text_in_messages)
{
	/* The message still names the key and the position when the
	 * offending text is long. */
	char *v = repeat("rot13 | lines(eol='", 'z', 300, "')");
	char *k = repeat("rot13 | lines(", 'k', MEG, "=1)");
	char *dup = repeat("rec(", 'k', 300, "=1, ");
	char *d2 = NULL;
	struct bad b = {NULL, 0, STRATA_ERR_OPTION, 14, "lines: bad value 'zzz",
	    " for eol: expected one of lf, crlf, any"};

	b.s = v;
	expect_bad(&b);
	b.s = k;
	b.msg1 = "lines: unknown option 'kkk";
	b.msg2 = "at position 14";
	expect_bad(&b);
	d2 = malloc(strlen(dup) + 310);
	ck_assert_ptr_nonnull(d2);
	sprintf(d2, "%s%s)", dup, dup + 4);
	b.s = d2;
	b.position = 308; /* "rec(" + 300 + "=1, " */
	b.msg1 = "rec: option 'kkk";
	b.msg2 = "given twice at position 308";
	expect_bad(&b);
	free(v);
	free(k);
	free(dup);
	free(d2);
}
END_TEST

START_TEST(robust_megabyte_of_filters)
{
	char *s = filter_chain("good(a=1)", 100000);
	struct bad b = {NULL, 0, STRATA_ERR_SYNTAX, 32 * 12, "too many filters",
	    NULL};

	ck_assert_uint_ge(strlen(s), MEG);
	b.s = s;
	expect_bad(&b);
	ck_assert_int_eq(good_configs, 32);
	free(s);
}
END_TEST

START_TEST(robust_megabyte_unterminated)
{
	char *dq = repeat("rot13 | rec(a=\"", 'q', MEG, "");
	char *sq = repeat("rot13 | rec(a='", '\\', MEG, "");
	char *tr = repeat("exec:\"", '|', MEG, "");
	char *par = repeat("rec(a=", '(', MEG, "");
	struct bad b = {NULL, 0, STRATA_ERR_SYNTAX, 14, "unterminated", NULL};

	b.s = dq;
	expect_bad(&b);
	b.s = sq;
	expect_bad(&b);
	b.s = tr;
	b.transport = 1;
	b.position = 5;
	expect_bad(&b);
	b.s = par;
	b.transport = 0;
	b.position = 6;
	b.msg1 = "expected a value";
	expect_bad(&b);
	free(dq);
	free(sq);
	free(tr);
	free(par);
}
END_TEST

START_TEST(robust_megabyte_transport)
{
	char *s = repeat("tcp://", 'h', MEG, ":1 | rot13");
	struct strata_spec *spec = parse_ok(s, 1);

	ck_assert_uint_eq(strlen(spec->transport), MEG + 8);
	ck_assert_uint_eq(spec->n, 1);
	strata_spec_unref_(spec);
	free(s);
}
END_TEST

START_TEST(robust_every_byte)
{
	/* Each byte value in each place: parses or fails cleanly, with a
	 * terminated, printable message and no leak. */
	static const char *const shapes[] = {"%c", "rot13%c", "rot13 |%c",
	    "good(%c=1)", "good(a=%c)", "good(a=1%c)", "good(a='%c')",
	    "good(a=\"%c\")", "good(a=\"\\%c\")", "good%c(a=1)"};
	char s[32];
	size_t i;
	int c;

	for (i = 0; i < STRATA_ARRAY_LEN(shapes); i++) {
		for (c = 1; c < 256; c++) {
			struct strata_error err;
			struct strata_spec *spec;

			snprintf(s, sizeof(s), shapes[i], c);
			spec = strata_spec_parse_(s, 0, &err);
			if (spec) {
				strata_spec_unref_(spec);
				continue;
			}
			ck_assert_msg(err.message[0], "'%s': empty", s);
			ck_assert_msg(!has_control_chars(err.message),
			    "byte %d in '%s': control character in '%s'", c,
			    shapes[i], err.message);
			ck_assert_uint_le(err.position, strlen(s));
		}
	}
	assert_configs_balanced();
}
END_TEST

START_TEST(robust_control_value_echo)
{
	/* A value with control characters is echoed without them. */
	struct bad b = {"lines(eol=\"\x1b[2J\\\"\x07\r\n\")", 0,
	    STRATA_ERR_OPTION, 6, "lines: bad value '", "for eol"};

	expect_bad(&b);
}
END_TEST

/* ==== registry capacity: last, it fills the registry for good ==== */

START_TEST(registry_full)
{
	static struct strata_filter_type t[100];
	static char names[100][16];
	const struct strata_filter_type *list[200];
	struct strata_error err;
	size_t total = strata_list_filters(list, 200), builtins, users, i;

	ck_assert_uint_le(total, 200);
	builtins = index_of(list, total, "rot13");
	users = total - builtins;
	for (i = 0; i < 100; i++) {
		snprintf(names[i], sizeof(names[i]), "full-%zu", i);
		t[i].name = names[i];
		t[i].input = t[i].output = th_pass_fn;
		if (strata_register_filter(&t[i], &err) < 0)
			break;
		users++;
	}
	ck_assert_msg(i < 100, "registered 100 more types");
	ck_assert_uint_eq(users, 64);
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.message, "full"));
	ck_assert_ptr_null(strata_find_filter(names[i]));
	ck_assert_uint_eq(strata_list_filters(NULL, 0), builtins + 64);
	ck_assert_ptr_eq(strata_find_filter(names[i - 1]), &t[i - 1]);
	ck_assert_ptr_eq(strata_find_filter("lines"), &strata_lines_filter_);
}
END_TEST

static TCase *
tcase(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return tc;
}

int
main(void)
{
	Suite *s = suite_create("stack");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = tcase(s, "grammar");
	tcase_add_test(tc, parse_single_filter);
	tcase_add_test(tc, parse_order_is_wire_upwards);
	tcase_add_test(tc, parse_whitespace_tolerated);
	tcase_add_test(tc, parse_config_called_without_options);
	tcase_add_test(tc, parse_transport_prefix);
	tcase_add_test(tc, parse_transport_quotes_hide_bars);
	tcase_add_test(tc, parse_spec_refcount);

	tc = tcase(s, "values");
	tcase_add_test(tc, values_as_written);
	tcase_add_test(tc, values_only_two_escapes);
	tcase_add_test(tc, values_key_positions);
	tcase_add_test(tc, values_bytes_kept);
	tcase_add_test(tc, values_32_options);
	tcase_add_test(tc, values_documented_without_config);

	tc = tcase(s, "errors");
	tcase_add_loop_test(tc, errors_syntax, 0,
	    (int)STRATA_ARRAY_LEN(syntax_cases));
	tcase_add_loop_test(tc, errors_semantic, 0,
	    (int)STRATA_ARRAY_LEN(semantic_cases));
	tcase_add_test(tc, errors_prefix_not_doubled);
	tcase_add_test(tc, errors_null_string);
	tcase_add_test(tc, errors_too_many_filters);
	tcase_add_test(tc, errors_too_many_options);
	tcase_add_test(tc, errors_error_helpers);

	tc = tcase(s, "config");
	tcase_add_test(tc, config_freed_when_later_filter_fails);
	tcase_add_test(tc, config_freed_with_transport_prefix);
	tcase_add_test(tc, config_failed_is_not_freed_by_the_parser);
	tcase_add_test(tc, config_lives_as_long_as_the_stack);
	tcase_add_test(tc, config_freed_when_create_fails);

	tc = tcase(s, "push");
	tcase_add_test(tc, push_refused_leaves_bev_untouched);
	tcase_add_test(tc, push_null_bev);
	tcase_add_test(tc, push_refused_on_live_stack);
	tcase_add_test(tc, push_accepted_options);

	tc = tcase(s, "options");
	tcase_add_loop_test(tc, opt_uint_cases, 0,
	    (int)STRATA_ARRAY_LEN(uint_cases));
	tcase_add_test(tc, opt_uint_message);
	tcase_add_test(tc, opt_enum_cases);
	tcase_add_test(tc, opt_enum_long_list);
	tcase_add_test(tc, opt_bool_cases);

	tc = tcase(s, "robustness");
	tcase_add_test(tc, robust_megabyte_of_whitespace);
	tcase_add_test(tc, robust_megabyte_name);
	tcase_add_test(tc, robust_megabyte_values);
	tcase_add_test(tc, robust_long_text_in_messages);
	tcase_add_test(tc, robust_megabyte_of_filters);
	tcase_add_test(tc, robust_megabyte_unterminated);
	tcase_add_test(tc, robust_megabyte_transport);
	tcase_add_test(tc, robust_every_byte);
	tcase_add_test(tc, robust_control_value_echo);

	/* registry last: registry_full must run after every other test */
	tc = tcase(s, "registry");
	tcase_add_test(tc, registry_rejects_bad_types);
	tcase_add_test(tc, registry_longest_name);
	tcase_add_test(tc, registry_rejects_duplicates);
	tcase_add_test(tc, registry_find);
	tcase_add_test(tc, registry_list_builtins_first);
	tcase_add_test(tc, registry_full);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
