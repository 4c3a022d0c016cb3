/*
 * The tool's defaults in stack strings (tools/stackarg.c): where timeout=
 * and handshake-timeout= go, that an option the string sets wins, that
 * quotes and odd spacing are followed as the parser follows them, and that
 * an error in a rewritten string reads exactly as the same error in the
 * string as typed (position, message, the "near" text).
 */
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "stackarg.h"

static void
expect(const char *in, int connecting, const char *want)
{
	struct stackarg a;

	ck_assert_int_eq(stackarg_init(&a, in, connecting, 10000, 5000), 0);
	ck_assert_msg(!strcmp(a.s, want), "'%s' became '%s', not '%s'", in,
	    a.s, want);
	stackarg_clear(&a);
}

START_TEST(transport_timeout)
{
	expect("tcp://h:1", 1, "tcp://h:1(timeout=10000ms)");
	expect("  tcp://h:1  ", 1, "  tcp://h:1(timeout=10000ms)  ");
	expect("tcp://h:1(nodelay=no)", 1,
	    "tcp://h:1(timeout=10000ms, nodelay=no)");
	expect("tcp://h:1( )", 1, "tcp://h:1(timeout=10000ms )");
	expect("tcp://h:1(timeout=2s)", 1, "tcp://h:1(timeout=2s)");
	expect("tcp://h:1(nodelay=no, timeout = 2s)", 1,
	    "tcp://h:1(nodelay=no, timeout = 2s)");
	expect("tcp://h:1 | lines", 1, "tcp://h:1(timeout=10000ms) | lines");
	/* listening, other transports: nothing */
	expect("tcp://h:1", 0, "tcp://h:1");
	expect("unix:/run/a.sock", 1, "unix:/run/a.sock");
	expect("tcpx://h:1", 1, "tcpx://h:1");
	expect("exec:cat", 1, "exec:cat");
}
END_TEST

START_TEST(tls_handshake_timeout)
{
	expect("tcp://h:1 | tls", 0, "tcp://h:1 | tls(handshake-timeout=5000ms)");
	expect("tcp://h:1 | tls(ca=c.pem) | zlib", 0,
	    "tcp://h:1 | tls(handshake-timeout=5000ms, ca=c.pem) | zlib");
	expect("unix:/p | tls (ca=x) | zlib", 0,
	    "unix:/p | tls (handshake-timeout=5000ms, ca=x) | zlib");
	expect("unix:/p | tls()", 0, "unix:/p | tls(handshake-timeout=5000ms)");
	expect("unix:/p | tls(handshake-timeout=1s)", 0,
	    "unix:/p | tls(handshake-timeout=1s)");
	/* tls inside tls: both */
	expect("unix:/p | tls | tls(name=x)", 0,
	    "unix:/p | tls(handshake-timeout=5000ms) | "
	    "tls(handshake-timeout=5000ms, name=x)");
	/* not tls */
	expect("unix:/p | tlsx | lines(max=1)", 0,
	    "unix:/p | tlsx | lines(max=1)");
	/* a key inside a quoted value is not a key */
	expect("unix:/p | tls(name=\"a|b, handshake-timeout=1\")", 0,
	    "unix:/p | tls(handshake-timeout=5000ms, name=\"a|b, "
	    "handshake-timeout=1\")");
	/* single quotes take a backslash as it is: the key is real */
	expect("unix:/p | tls(name='x\\', handshake-timeout=2s)", 0,
	    "unix:/p | tls(name='x\\', handshake-timeout=2s)");
	/* the transport ends at the first '|' outside quotes */
	expect("exec:sh -c 'a | b' | tls", 1,
	    "exec:sh -c 'a | b' | tls(handshake-timeout=5000ms)");
	/* both at once */
	expect("tcp://h:1 | tls", 1,
	    "tcp://h:1(timeout=10000ms) | tls(handshake-timeout=5000ms)");
}
END_TEST

START_TEST(malformed_strings_stop_the_insertions)
{
	/* up to the error, as usual; after it, as written */
	expect("tcp://h:1 | tls(ca= | tls", 1,
	    "tcp://h:1(timeout=10000ms) | tls(ca= | tls");
	expect("tcp://h:1 | zlib) | tls", 1,
	    "tcp://h:1(timeout=10000ms) | zlib) | tls");
	expect("tcp://h:1(nodelay=no | tls", 1,
	    "tcp://h:1(nodelay=no(timeout=10000ms) | "
	    "tls(handshake-timeout=5000ms)");
	expect("tcp://h:1 | tls(alpn=\"h2) | tls", 1,
	    "tcp://h:1(timeout=10000ms) | tls(alpn=\"h2) | tls");
	expect("", 1, "");
	expect("|", 1, "|");
}
END_TEST

/* The same error from the string as typed and from its rewrite. */
static void
same_error(const char *in)
{
	struct event_base *base = event_base_new();
	struct strata_error e1, e2;
	struct bufferevent *b;
	struct stackarg a;

	ck_assert_int_eq(stackarg_init(&a, in, 1, 10000, 5000), 0);
	b = strata_connect(base, NULL, in, BEV_OPT_CLOSE_ON_FREE, &e1);
	ck_assert_msg(b == NULL, "'%s' parsed", in);
	b = strata_connect(base, NULL, a.s, BEV_OPT_CLOSE_ON_FREE, &e2);
	ck_assert_msg(b == NULL, "'%s' parsed", a.s);
	stackarg_fix_error(&a, 0, &e2);
	ck_assert_msg(!strcmp(e1.message, e2.message),
	    "'%s': '%s' became '%s'", in, e1.message, e2.message);
	ck_assert_msg(e1.position == e2.position, "'%s': position %zu, not %zu",
	    in, e2.position, e1.position);
	ck_assert_int_eq(e1.code, e2.code);
	stackarg_clear(&a);
	event_base_free(base);
}

START_TEST(errors_read_as_in_the_string_typed)
{
	static const char *const bad[] = {
		"tcp://127.0.0.1:1 | lines(mx=1)",
		"tcp://h:1 | tls | zlib(lvl=3",
		"tcp://h:1 | tls | lins",
		"tcp://h:1(bogus=1) | tls",
		"tcp://h:1(nodelay=maybe) | tls | zlib",
		"tcp://h:1 | tls(min=1.9)",
		"tcp://h:1 | tls(alpn=\"unterminated) | zlib",
		"tcp://h:1 | | tls",
		"tcp://h:1 | tls(,)",
		"tcp://h:1 | tls | zlib | ",
		"tcp://h:1 | tls(handshake-timeout=0)",
		"tcp://h:1 | tls(ca=x, ca=y)",
		"tcp://h:1 | tls(ca=/nonexistent/ca.pem) | zlib",
		"tcp://h:1 | tls | tls(cert=/nonexistent/c.pem)",
		"tcp://h:1 | tls zlib",
		"tcp://h:1 | tls(name=x) lines",
		"tcp://h:1 | tls(\nca=x)",
		"tcp://:1 | tls",
		"nosuch://h:1 | tls",
		"tcp://h:1 | TLS",
		/* the "near" text would show what was inserted */
		"tcp://h:1 | zlib(=1) | tls",
		"tcp://h:1 | zlib(level=1 | tls",
		"tcp://h:1 |",
	};
	char many[512] = "tcp://h:1";
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		same_error(bad[i]);
	/* one filter too many, a tls: the parser's "near" text is where
	 * handshake-timeout= went in */
	for (i = 0; i < 32; i++)
		strcat(many, " | zlib");
	strcat(many, " | tls");
	same_error(many);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("tool-stackarg");
	TCase *tc = tcase_create("stackarg");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, transport_timeout);
	tcase_add_test(tc, tls_handshake_timeout);
	tcase_add_test(tc, malformed_strings_stop_the_insertions);
	tcase_add_test(tc, errors_read_as_in_the_string_typed);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
