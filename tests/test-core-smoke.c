/* Smoke: a two-filter stack over a socketpair moves lines both ways. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

struct smoke {
	int got;
	char line[64];
	int eof;
};

static void
smoke_read(struct bufferevent *bev, void *arg)
{
	struct smoke *s = arg;
	char *l;
	size_t n;

	while ((l = evbuffer_readln(bufferevent_get_input(bev), &n,
		    EVBUFFER_EOL_LF)) != NULL) {
		snprintf(s->line, sizeof(s->line), "%s", l);
		s->got++;
		free(l);
	}
}

static void
smoke_event(struct bufferevent *bev, short what, void *arg)
{
	struct smoke *s = arg;

	if (what & BEV_EVENT_EOF)
		s->eof = 1;
}

START_TEST(smoke_roundtrip)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct smoke s = {0};
	struct bufferevent *t, *top;
	int fds[2];
	char buf[64];
	ssize_t n;

	th_register_test_filters();
	th_socketpair(fds);
	t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	top = strata_push(t, "rot13 | lines(eol=crlf)", BEV_OPT_CLOSE_ON_FREE,
	    &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	bufferevent_setcb(top, smoke_read, NULL, smoke_event, &s);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	ck_assert_int_eq(write(fds[1], "uryyb\r\njbeyq", 12), 12);
	th_run_until(base, &s.got, 2000, "first line");
	ck_assert_str_eq(s.line, "hello");
	bufferevent_write(top, "abc\n", 4);
	th_run_for(base, 50);
	n = read(fds[1], buf, sizeof(buf));
	ck_assert_int_eq(n, 5);
	ck_assert(!memcmp(buf, "nop\r\n", 5));
	shutdown(fds[1], SHUT_WR);
	th_run_until(base, &s.eof, 2000, "EOF");
	ck_assert_int_eq(s.got, 2);
	ck_assert_str_eq(s.line, "world");
	bufferevent_free(top);
	close(fds[1]);
	event_base_free(base);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("smoke");
	TCase *tc = tcase_create("smoke");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, smoke_roundtrip);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
