/*
 * The tcp transport over real loopback connections: IPv4, IPv6 and names
 * resolved through evdns, listeners, socket options, connect timeouts and
 * failures with their messages, stacks (lines, frames) over TCP, peer
 * addresses, graceful close, and a listener under load and under EMFILE.
 *
 * Offline and deterministic: names come from /etc/hosts, from a hosts file
 * the test writes, or from a DNS server the test runs on loopback; a
 * connect timeout comes from a listener whose accept queue is full.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/dns_struct.h>

#include "frames.h"
#include "frames-helpers.h"
#include "helpers.h"

/* ---- small tools ---- */

static int
has_ipv6_loopback(void)
{
	struct sockaddr_in6 a;
	int fd = socket(AF_INET6, SOCK_STREAM, 0), ok;

	if (fd < 0)
		return 0;
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

#define SKIP_WITHOUT_IPV6()                                                  \
	do {                                                                 \
		if (!has_ipv6_loopback()) {                                  \
			printf("SKIP %s: this machine has no ::1\n",         \
			    __func__);                                       \
			return;                                              \
		}                                                            \
	} while (0)

/* A nonblocking connect to 127.0.0.1:port, left to complete in the kernel. */
static int
raw_connect(int port)
{
	struct sockaddr_in a = th_loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ||
	    errno == EINPROGRESS);
	return fd;
}

static int
sockopt_int(struct bufferevent *top, int level, int name)
{
	evutil_socket_t fd = bufferevent_getfd(strata_transport(top));
	socklen_t len = sizeof(int);
	int v = -1;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(getsockopt(fd, level, name, &v, &len), 0);
	return v;
}

static long
ms_since(const struct timeval *start)
{
	struct timeval now;

	gettimeofday(&now, NULL);
	return (now.tv_sec - start->tv_sec) * 1000 +
	    (now.tv_usec - start->tv_usec) / 1000;
}

/* Wait for the error of a failing connect, and check its message. */
static void
expect_connect_error(struct event_base *base, struct th_peer *c,
    const char *part, int ms)
{
	const char *msg;

	th_run_until(base, &c->errors, ms, "the connect error");
	ck_assert_int_eq(c->errors, 1);
	ck_assert(c->last_what & BEV_EVENT_ERROR);
	ck_assert_int_eq(c->connected, 0);
	msg = strata_last_error(c->top);
	ck_assert_ptr_nonnull(msg);
	ck_assert_msg(strstr(msg, part) != NULL, "'%s' lacks '%s'", msg,
	    part);
}

/* ---- exchanges through a stack ---- */

/* c (client stack "... | lines") to an echoing server and back. */
static void
exchange_lines(struct event_base *base, struct th_peer *c)
{
	const char *text = "hello\nstrata over tcp\n";

	c->want = strlen(text);
	bufferevent_write(c->top, "hello\nstrata ", 13);
	bufferevent_write(c->top, "over tcp\n", 9);
	th_run_until(base, &c->enough, 2000, "the echoed lines");
	ck_assert_msg(th_got_equals(c, text), "got '%s'", th_got_text(c));
	evbuffer_drain(c->got, evbuffer_get_length(c->got));
	c->enough = 0;
}

/* A client on @p fmt (a stack with a %d for @p port) to an echoing
 * lines server: its lines come back. */
static void
lines_echoed(struct event_base *base, const char *fmt, int port)
{
	struct th_peer *c;
	char stack[128];

	snprintf(stack, sizeof(stack), fmt, port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	th_peer_free(c);
}

static void
exchange_frames(struct event_base *base, struct th_peer *c)
{
	static unsigned char big[100000];
	const struct th_frame f[] = {{"one", 3}, {NULL, 0}, {big, sizeof(big)}};

	th_pattern(big, sizeof(big), 7);
	th_frames_echo(base, c, f, 3);
}

/* ---- loopback connections ---- */

START_TEST(ipv4_lines_and_connected)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c, *sp;
	char stack[128];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	ck_assert_int_gt(s.port, 0);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	/* written before the connection exists: queued, then delivered */
	c->want = 6;
	bufferevent_write(c->top, "early\n", 6);
	th_run_until(base, &c->connected, 2000, "CONNECTED on the client");
	ck_assert_int_eq(c->connected, 1);
	th_run_until(base, &c->enough, 2000, "the early line echoed");
	ck_assert_msg(th_got_equals(c, "early\n"), "got '%s'", th_got_text(c));
	evbuffer_drain(c->got, 6);
	c->enough = 0;
	sp = th_srv_wait_peer(&s);
	th_run_until(base, &sp->connected, 1000, "CONNECTED on the accepted");
	exchange_lines(base, c);
	th_run_for(base, 20);
	ck_assert_int_eq(c->connected, 1);
	ck_assert_int_eq(sp->connected, 1);
	ck_assert_int_eq(c->errors + sp->errors, 0);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* Written and finished before the connection exists: the data and then
 * the end arrive once it does (a shutdown of a socket still connecting
 * would have been answered with a reset). */
START_TEST(finish_while_connecting)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c, *sp;
	char stack[128];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 0);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_write(c->top, "only\n", 5);
	ck_assert_int_ge(bufferevent_flush(c->top, EV_WRITE, BEV_FINISHED), 0);
	ck_assert_int_eq(c->connected, 0);
	sp = th_srv_wait_peer(&s);
	th_run_until(base, &sp->eof, 2000, "EOF at the server");
	ck_assert_msg(th_got_equals(sp, "only\n"), "got '%s'", th_got_text(sp));
	ck_assert_int_eq(sp->errors + c->errors, 0);
	ck_assert_int_eq(c->connected, 1);
	th_peer_free(c);
	/* nothing written: the end alone */
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_int_ge(bufferevent_flush(c->top, EV_WRITE, BEV_FINISHED), 0);
	th_run_until(base, &c->connected, 2000, "CONNECTED on the client");
	th_run_until(base, &s.n, 2000, "a second connection");
	while (s.n < 2)
		th_run_for(base, 10);
	th_run_until(base, &s.p[1]->eof, 2000, "EOF at the server");
	ck_assert_int_eq(s.p[1]->errors + c->errors, 0);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* One parsed stack, several connections; freeing it leaves the stacks
 * built from it working. */
START_TEST(prepared_stack_connects_many)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct strata_stack *st;
	struct th_server s;
	struct th_peer *c[3];
	char stack[128];
	int i;

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	st = strata_stack_new(stack, &err);
	ck_assert_msg(st != NULL, "%s", err.message);
	for (i = 0; i < 3; i++) {
		struct bufferevent *top = strata_stack_connect(st, base, NULL,
		    BEV_OPT_CLOSE_ON_FREE, &err);
		ck_assert_msg(top != NULL, "%s", err.message);
		c[i] = th_peer_new(top, 0);
	}
	strata_stack_free(st);
	for (i = 0; i < 3; i++) {
		c[i]->want = 4;
		bufferevent_write(c[i]->top, i == 1 ? "two\n" : "one\n", 4);
		th_run_until(base, &c[i]->enough, 2000, "the echo");
		ck_assert(th_got_equals(c[i], i == 1 ? "two\n" : "one\n"));
		th_peer_free(c[i]);
	}
	ck_assert_ptr_null(strata_stack_new("tcp://127.0.0.1:1 | nope", &err));
	ck_assert_msg(strstr(err.message, "nope"), "%s", err.message);
	ck_assert_ptr_null(strata_stack_new("lines", &err));
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(ipv4_frames)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;
	char stack[128];

	ck_assert_int_eq(frames_register(NULL), 0);
	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | frames", 1);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | frames", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	exchange_frames(base, c);
	/* and lines on top of frames in stream mode */
	th_peer_free(c);
	th_srv_teardown(&s);
	th_srv_setup(&s, base,
	    "tcp://127.0.0.1:0 | frames(mode=stream) | lines", 1);
	lines_echoed(base, "tcp://127.0.0.1:%d | frames(mode=stream) | lines",
	    s.port);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(ipv6_loopback)
{
	struct event_base *base;
	struct th_server s;
	struct th_peer *c, *sp;
	struct sockaddr_in6 a6;
	int salen = sizeof(a6);
	char stack[128], text[128];

	SKIP_WITHOUT_IPV6();
	base = event_base_new();
	th_srv_setup(&s, base, "tcp://[::1]:0 | lines", 1);
	snprintf(text, sizeof(text), "[::1]:%d", s.port);
	ck_assert_str_eq(s.addr, text);
	snprintf(stack, sizeof(stack), "tcp://[::1]:%d | lines", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    (struct sockaddr *)&a6, &salen), 0);
	snprintf(stack, sizeof(stack), "[::1]:%d", s.port);
	ck_assert_str_eq(text, stack);
	ck_assert_int_eq(a6.sin6_family, AF_INET6);
	ck_assert_int_eq(ntohs(a6.sin6_port), s.port);
	ck_assert(IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr));
	sp = th_srv_wait_peer(&s);
	ck_assert_int_gt(strata_peer_address(sp->top, text, sizeof(text),
	    NULL, NULL), 0);
	ck_assert_msg(!strncmp(text, "[::1]:", 6), "accepted peer '%s'", text);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(localhost_private_resolver)
{
	/* "localhost" goes through evdns (from /etc/hosts), with the
	 * resolver strata makes when given none; the listener is IPv4 only,
	 * so if the name also gave ::1 that address is refused first. */
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;
	char stack[128], text[64], want[64];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	snprintf(stack, sizeof(stack), "tcp://localhost:%d | lines", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	th_run_until(base, &c->connected, 3000, "CONNECTED to localhost");
	exchange_lines(base, c);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    NULL, NULL), 0);
	snprintf(want, sizeof(want), "127.0.0.1:%d", s.port);
	ck_assert_str_eq(text, want);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(localhost_own_resolver)
{
	/* the same through the caller's evdns base (hosts from /etc/hosts) */
	struct event_base *base = event_base_new();
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct th_server s;
	struct th_peer *c;
	char stack[128];

	ck_assert_ptr_nonnull(dns);
	ck_assert_int_eq(evdns_base_load_hosts(dns, NULL), 0);
	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	snprintf(stack, sizeof(stack), "tcp://localhost:%d | lines", s.port);
	c = th_peer_connect(base, dns, stack, BEV_OPT_CLOSE_ON_FREE);
	th_run_until(base, &c->connected, 3000, "CONNECTED to localhost");
	exchange_lines(base, c);
	th_peer_free(c);
	th_srv_teardown(&s);
	th_run_for(base, 10);
	evdns_base_free(dns, 0);
	event_base_free(base);
}
END_TEST

/* Write a hosts file; returns its path (static storage). */
static const char *
hosts_file(const char *content)
{
	static char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/strata-hosts-%d", (int)getpid());
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
	return path;
}

START_TEST(name_tries_each_address)
{
	/* With the user's own evdns base: the name gives ::1, 127.0.0.2 and
	 * 127.0.0.1 in that order and only 127.0.0.1 listens: the first two
	 * are refused and the third connects. */
	struct event_base *base = event_base_new();
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct th_server s;
	struct th_peer *c;
	char stack[128], text[64], want[64];
	const char *path;

	ck_assert_ptr_nonnull(dns);
	path = hosts_file("::1 multi.strata.test\n"
			  "127.0.0.2 multi.strata.test\n"
			  "127.0.0.1 multi.strata.test\n");
	ck_assert_int_eq(evdns_base_load_hosts(dns, path), 0);
	unlink(path);
	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	snprintf(stack, sizeof(stack), "tcp://multi.strata.test:%d | lines",
	    s.port);
	c = th_peer_connect(base, dns, stack, BEV_OPT_CLOSE_ON_FREE);
	th_run_until(base, &c->connected, 3000, "CONNECTED to the 3rd address");
	ck_assert_int_eq(c->errors, 0);
	exchange_lines(base, c);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    NULL, NULL), 0);
	snprintf(want, sizeof(want), "127.0.0.1:%d", s.port);
	ck_assert_str_eq(text, want);
	th_peer_free(c);
	th_srv_teardown(&s);
	evdns_base_free(dns, 0);
	event_base_free(base);
}
END_TEST

START_TEST(name_all_addresses_refused)
{
	struct event_base *base = event_base_new();
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct th_peer *c;
	char stack[128];
	const char *path;
	int port = th_free_port();

	path = hosts_file("127.0.0.2 two.strata.test\n"
			  "127.0.0.1 two.strata.test\n");
	ck_assert_int_eq(evdns_base_load_hosts(dns, path), 0);
	unlink(path);
	snprintf(stack, sizeof(stack), "tcp://two.strata.test:%d", port);
	c = th_peer_connect(base, dns, stack, BEV_OPT_CLOSE_ON_FREE);
	expect_connect_error(base, c, "Connection refused", 3000);
	ck_assert_msg(strstr(strata_last_error(c->top), "two.strata.test") !=
	    NULL, "'%s' does not name the host", strata_last_error(c->top));
	th_run_for(base, 20);
	ck_assert_int_eq(c->errors, 1);
	th_peer_free(c);
	evdns_base_free(dns, 0);
	event_base_free(base);
}
END_TEST

/* ---- a DNS server on loopback: NXDOMAIN for everything, or silence ---- */

#define FAKE_DNS_HELD 8

struct fake_dns {
	struct evdns_server_port *port;
	int queries;
	int silent;	/* never answer */
	int late_ms;	/* answer 127.0.0.1 after this long (0: NXDOMAIN) */
	struct evdns_server_request *held[FAKE_DNS_HELD];
	int nheld;
	struct event *timer;
	char ns[64];
};

/* The late answers: an A record for 127.0.0.1, no AAAA. */
static void
fake_dns_late(evutil_socket_t fd, short what, void *arg)
{
	struct fake_dns *f = arg;
	struct in_addr lo;
	int i;

	(void)fd;
	(void)what;
	lo.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < f->nheld; i++) {
		struct evdns_server_request *req = f->held[i];
		const struct evdns_server_question *q = req->questions[0];
		if (q->type == EVDNS_TYPE_A)
			evdns_server_request_add_a_reply(req, q->name, 1, &lo,
			    60);
		evdns_server_request_respond(req, 0);
	}
	f->nheld = 0;
}

static void
fake_dns_cb(struct evdns_server_request *req, void *arg)
{
	struct fake_dns *f = arg;
	struct timeval tv;

	f->queries++;
	if (f->silent || (f->late_ms && f->nheld == FAKE_DNS_HELD)) {
		evdns_server_request_drop(req);
	} else if (f->late_ms) {
		f->held[f->nheld++] = req;
		tv.tv_sec = f->late_ms / 1000;
		tv.tv_usec = (f->late_ms % 1000) * 1000;
		if (!evtimer_pending(f->timer, NULL))
			evtimer_add(f->timer, &tv);
	} else
		evdns_server_request_respond(req, DNS_ERR_NOTEXIST);
}

static struct evdns_base *
fake_dns_start(struct event_base *base, struct fake_dns *f, int silent)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	struct evdns_base *dns;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);

	memset(f, 0, sizeof(*f));
	f->silent = silent;
	a = th_loopback(0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	f->port = evdns_add_server_port_with_base(base, fd, 0, fake_dns_cb, f);
	ck_assert_ptr_nonnull(f->port);
	f->timer = evtimer_new(base, fake_dns_late, f);
	snprintf(f->ns, sizeof(f->ns), "127.0.0.1:%d", ntohs(a.sin_port));
	dns = evdns_base_new(base, 0);
	ck_assert_ptr_nonnull(dns);
	ck_assert_int_eq(evdns_base_nameserver_ip_add(dns, f->ns), 0);
	return dns;
}

static void
fake_dns_stop(struct fake_dns *f, struct evdns_base *dns)
{
	int i;

	evdns_base_free(dns, 0);
	for (i = 0; i < f->nheld; i++)
		evdns_server_request_drop(f->held[i]);
	event_free(f->timer);
	evdns_close_server_port(f->port);
}

START_TEST(name_does_not_resolve)
{
	struct event_base *base = event_base_new();
	struct fake_dns f;
	struct evdns_base *dns = fake_dns_start(base, &f, 0);
	struct th_peer *c;

	c = th_peer_connect(base, dns, "tcp://nonexistent.invalid:80 | lines",
	    BEV_OPT_CLOSE_ON_FREE);
	expect_connect_error(base, c, "cannot resolve 'nonexistent.invalid'",
	    3000);
	ck_assert_msg(!strncmp(strata_last_error(c->top), "tcp: ", 5),
	    "'%s' does not name the layer", strata_last_error(c->top));
	ck_assert_int_gt(f.queries, 0);
	th_peer_free(c);
	fake_dns_stop(&f, dns);
	event_base_free(base);
}
END_TEST

START_TEST(free_while_resolving_own_dns)
{
	/* The answer never comes: freeing the stack cancels the lookup. */
	struct event_base *base = event_base_new();
	struct fake_dns f;
	struct evdns_base *dns = fake_dns_start(base, &f, 1);
	struct th_peer *c;

	c = th_peer_connect(base, dns, "tcp://slow.strata.test:80",
	    BEV_OPT_CLOSE_ON_FREE);
	th_run_until(base, &f.queries, 2000, "the DNS query");
	th_peer_free(c);
	th_run_for(base, 50);
	fake_dns_stop(&f, dns);
	th_run_for(base, 10);
	event_base_free(base);
}
END_TEST

START_TEST(timeout_while_resolving)
{
	/* The connect times out before the name resolves: the late answer
	 * must not start a connection afterwards. */
	struct event_base *base = event_base_new();
	struct fake_dns f;
	struct evdns_base *dns = fake_dns_start(base, &f, 0);
	struct th_server s;
	struct th_peer *c;
	char stack[128];

	f.late_ms = 300;
	th_srv_setup(&s, base, "tcp://127.0.0.1:0", 0);
	snprintf(stack, sizeof(stack),
	    "tcp://late.strata.test:%d(timeout=100ms)", s.port);
	c = th_peer_connect(base, dns, stack, BEV_OPT_CLOSE_ON_FREE);
	expect_connect_error(base, c, "timed out", 2000);
	ck_assert_msg(strstr(strata_last_error(c->top), "late.strata.test") !=
	    NULL, "'%s'", strata_last_error(c->top));
	th_run_for(base, 500); /* the answer comes, 127.0.0.1 listens */
	ck_assert_int_eq(f.nheld, 0);
	ck_assert_int_eq(s.accepted, 0);
	ck_assert_int_eq(c->errors, 1);
	ck_assert_int_eq(c->connected, 0);
	th_peer_free(c);
	th_srv_teardown(&s);
	th_run_for(base, 10);
	fake_dns_stop(&f, dns);
	event_base_free(base);
}
END_TEST

/* Runs right behind the tcp transport's start in the same pass of the loop
 * (both were made active, in this order): the query is out, no answer can
 * have been read yet. */
struct free_now {
	struct th_peer *c;
	int events_before;
	int done;
};

static void
free_now_cb(evutil_socket_t fd, short what, void *arg)
{
	struct free_now *f = arg;

	(void)fd;
	(void)what;
	f->events_before = f->c->errors + f->c->connected;
	th_peer_free(f->c);
	f->done = 1;
}

START_TEST(free_while_resolving_private_dns)
{
	/* The same with strata's private resolver (freed with the stack):
	 * the cancelled lookup's callback must not outlive it (valgrind and
	 * ASan see the use after free). */
	struct event_base *base = event_base_new();
	struct free_now f = {NULL, 0, 0};
	struct event *ev;

	f.c = th_peer_connect(base, NULL, "tcp://slow.strata.invalid:80",
	    BEV_OPT_CLOSE_ON_FREE);
	ev = event_new(base, -1, 0, free_now_cb, &f);
	event_active(ev, EV_TIMEOUT, 1);
	th_run_until(base, &f.done, 1000, "the free");
	ck_assert_int_eq(f.events_before, 0);
	th_run_for(base, 50);
	event_free(ev);
	event_base_free(base);
}
END_TEST

/* ---- listening ---- */

START_TEST(listen_port_zero_and_address)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct sockaddr_in a;
	struct sockaddr_storage ss;
	int salen = sizeof(a), tiny = 4;
	char want[64];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0", 0);
	ck_assert_int_gt(s.port, 0);
	ck_assert_int_lt(s.port, 65536);
	snprintf(want, sizeof(want), "127.0.0.1:%d", s.port);
	ck_assert_str_eq(s.addr, want);
	ck_assert_int_eq(strata_listener_address(s.l, want, sizeof(want),
	    (struct sockaddr *)&a, &salen), (int)strlen(want));
	ck_assert_int_eq(salen, sizeof(a));
	ck_assert_int_eq(a.sin_family, AF_INET);
	ck_assert_int_eq(ntohs(a.sin_port), s.port);
	ck_assert_int_eq(ntohl(a.sin_addr.s_addr), INADDR_LOOPBACK);
	/* a sockaddr buffer too small is refused, not overrun */
	ck_assert_int_eq(strata_listener_address(s.l, want, sizeof(want),
	    (struct sockaddr *)&ss, &tiny), -1);
	ck_assert_int_eq(strata_listener_port(NULL), -1);
	ck_assert_int_eq(strata_listener_address(NULL, want, sizeof(want),
	    NULL, NULL), -1);
	th_srv_teardown(&s);
	strata_listener_free(NULL);
	event_base_free(base);
}
END_TEST

START_TEST(listen_any_empty_host)
{
	/* "tcp://:0": every address; IPv4 loopback reaches it */
	struct event_base *base = event_base_new();
	struct th_server s;

	th_srv_setup(&s, base, "tcp://:0 | lines", 1);
	ck_assert_int_gt(s.port, 0);
	ck_assert_msg(!strncmp(s.addr, "0.0.0.0:", 8) ||
	    !strncmp(s.addr, "[::]:", 5), "address '%s'", s.addr);
	lines_echoed(base, "tcp://127.0.0.1:%d | lines", s.port);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(listen_any_ipv6)
{
	struct event_base *base;
	struct th_server s;
	char want[64];

	SKIP_WITHOUT_IPV6();
	base = event_base_new();
	th_srv_setup(&s, base, "tcp://[::]:0 | lines", 1);
	snprintf(want, sizeof(want), "[::]:%d", s.port);
	ck_assert_str_eq(s.addr, want);
	lines_echoed(base, "tcp://[::1]:%d | lines", s.port);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(listen_address_in_use)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct strata_error err;
	struct strata_listener *l2;
	char stack[128];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0", 0);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", s.port);
	l2 = strata_listen(base, stack, 0, th_srv_accept, &s, &err);
	ck_assert_ptr_null(l2);
	ck_assert_int_eq(err.code, STRATA_ERR_SYSTEM);
	ck_assert_int_eq(err.sys_errno, EADDRINUSE);
	ck_assert_msg(strstr(err.message, "Address already in use") != NULL,
	    "'%s'", err.message);
	ck_assert_msg(!strncmp(err.message, "tcp: ", 5), "'%s'", err.message);
	ck_assert_msg(strstr(err.message, stack + 6) != NULL,
	    "'%s' does not name the address", err.message);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(listen_reuseport)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct strata_error err;
	struct strata_listener *l2, *l3;
	char stack[128];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0(reuseport=yes) | lines", 1);
	snprintf(stack, sizeof(stack),
	    "tcp://127.0.0.1:%d(reuseport=yes) | lines", s.port);
	l2 = strata_listen(base, stack, 0, th_srv_accept, &s, &err);
	ck_assert_msg(l2 != NULL, "second reuseport listener: %s",
	    err.message);
	ck_assert_int_eq(strata_listener_port(l2), s.port);
	/* without the option the port is taken */
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", s.port);
	l3 = strata_listen(base, stack, 0, th_srv_accept, &s, &err);
	ck_assert_ptr_null(l3);
	ck_assert_msg(strstr(err.message, "Address already in use") != NULL,
	    "'%s'", err.message);
	/* either listener serves */
	lines_echoed(base, "tcp://127.0.0.1:%d | lines", s.port);
	strata_listener_free(l2);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(listen_backlog_option)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct strata_error err;

	th_srv_setup(&s, base, "tcp://127.0.0.1:0(backlog=16) | lines", 1);
	lines_echoed(base, "tcp://127.0.0.1:%d | lines", s.port);
	th_srv_teardown(&s);
	ck_assert_ptr_null(strata_listen(base, "tcp://127.0.0.1:0(backlog=0)",
	    0, th_srv_accept, &s, &err));
	ck_assert_msg(strstr(err.message, "backlog") != NULL, "'%s'",
	    err.message);
	ck_assert_ptr_null(strata_listen(base, "tcp://127.0.0.1:0(bogus=1)",
	    0, th_srv_accept, &s, &err));
	ck_assert_msg(strstr(err.message, "bogus") != NULL, "'%s'",
	    err.message);
	event_base_free(base);
}
END_TEST

/* ---- socket options ---- */

/* Connect a client with the tcp options @p copts to a listener with
 * @p lopts ("(k=v)" or ""): the socket option @p level/@p name is set
 * (nonzero) on both ends when @p on, off on both when not. */
static void
sockopt_both_ends(struct event_base *base, const char *lopts,
    const char *copts, int level, int name, int on)
{
	struct th_server s;
	struct th_peer *c, *sp;
	char stack[128];

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:0%s", lopts);
	th_srv_setup(&s, base, stack, 1);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d%s", s.port, copts);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	th_run_until(base, &c->connected, 2000, "CONNECTED");
	sp = th_srv_wait_peer(&s);
	ck_assert_int_eq(sockopt_int(c->top, level, name) != 0, on);
	ck_assert_int_eq(sockopt_int(sp->top, level, name) != 0, on);
	th_peer_free(c);
	th_srv_teardown(&s);
}

START_TEST(nodelay_default_and_off)
{
	struct event_base *base = event_base_new();

	sockopt_both_ends(base, "", "", IPPROTO_TCP, TCP_NODELAY, 1);
	sockopt_both_ends(base, "(nodelay=no)", "(nodelay=no)", IPPROTO_TCP,
	    TCP_NODELAY, 0);
	event_base_free(base);
}
END_TEST

START_TEST(keepalive_default_and_off)
{
	struct event_base *base = event_base_new();

	sockopt_both_ends(base, "", "", SOL_SOCKET, SO_KEEPALIVE, 1);
	sockopt_both_ends(base, "(keepalive=no)", "(keepalive=off)",
	    SOL_SOCKET, SO_KEEPALIVE, 0);
	event_base_free(base);
}
END_TEST

/* ---- connect failures ---- */

START_TEST(connect_timeout)
{
	/* A listener with backlog 0 that never accepts: once one connection
	 * fills its queue, the kernel drops further SYNs and a connect
	 * hangs until strata's timer fires. */
	struct event_base *base = event_base_new();
	struct timeval start;
	struct th_peer *c;
	char stack[128];
	int port, lfd = th_tcp_listen(0, &port), fill[3], i;
	long waited;

	for (i = 0; i < 3; i++)
		fill[i] = raw_connect(port);
	usleep(50000);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d(timeout=200ms)",
	    port);
	gettimeofday(&start, NULL);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	expect_connect_error(base, c, "timed out", 3000);
	waited = ms_since(&start);
	ck_assert_msg(waited >= 150 && waited < 2000, "failed after %ld ms",
	    waited);
	snprintf(stack, sizeof(stack), "127.0.0.1:%d", port);
	ck_assert_msg(strstr(strata_last_error(c->top), stack) != NULL,
	    "'%s' does not name the address", strata_last_error(c->top));
	th_run_for(base, 20);
	ck_assert_int_eq(c->errors, 1);
	th_peer_free(c);
	for (i = 0; i < 3; i++)
		close(fill[i]);
	close(lfd);
	event_base_free(base);
}
END_TEST

/*
 * A stack from strata_connect() over tcp is direct: its top is the
 * transport's own socket bufferevent (one bufferevent per connection), so
 * libevent's own timeout call works on it. STRATA_DIRECT=0 (the
 * "-filter-bev" run of this program) builds the filter bufferevent over a
 * transport instead.
 */
START_TEST(direct_top_is_its_transport)
{
	struct event_base *base = event_base_new();
	const char *env = getenv("STRATA_DIRECT");
	int direct = !env || strcmp(env, "0");
	int port, lfd = th_tcp_listen(0, &port), fd, events, i;
	struct timeval rd = {0, 100 * 1000};
	struct th_peer *c;
	char stack[96], buf[16];

	ck_assert_uint_eq(strata_unsent(NULL), (size_t)-1);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	/* strata_unsent(): written while connecting, then all at the fd */
	ck_assert_int_eq(bufferevent_write(c->top, "early\n", 6), 0);
	ck_assert_uint_eq(strata_unsent(c->top), 6);
	th_run_until(base, &c->connected, 2000, "the connect");
	for (i = 0; i < 200 && strata_unsent(c->top); i++)
		th_run_for(base, 10);
	ck_assert_uint_eq(strata_unsent(c->top), 0);
	fd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(recv(fd, buf, sizeof(buf), 0), 6);
	ck_assert(!memcmp(buf, "early\n", 6));
	ck_assert(strata_is_stack(c->top));
	ck_assert_int_ge(bufferevent_getfd(c->top), 0);
	if (!direct) {
		ck_assert_ptr_nonnull(bufferevent_get_underlying(c->top));
		ck_assert_ptr_ne(strata_transport(c->top), c->top);
		goto out;
	}
	ck_assert_ptr_null(bufferevent_get_underlying(c->top));
	ck_assert_ptr_eq(strata_transport(c->top), c->top);
	/* the peer is silent: libevent's read timeout, on the top itself */
	events = c->events; /* CONNECTED */
	ck_assert_int_eq(bufferevent_set_timeouts(c->top, &rd, NULL), 0);
	for (i = 0; i < 200 && c->events == events; i++)
		th_run_for(base, 10);
	ck_assert_int_eq(c->events, events + 1);
	ck_assert_int_eq(c->last_what, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	ck_assert(!(bufferevent_get_enabled(c->top) & EV_READ));
	/* enabled again, it reads what comes */
	ck_assert_int_eq(bufferevent_set_timeouts(c->top, NULL, NULL), 0);
	ck_assert_int_eq(bufferevent_enable(c->top, EV_READ), 0);
	c->want = 6;
	ck_assert_int_eq(write(fd, "late\r\n", 6), 6);
	th_run_until(base, &c->enough, 2000, "the late line");
	ck_assert_msg(th_got_equals(c, "late\r\n"), "got %s", th_got_text(c));
out:
	th_peer_free(c);
	close(fd);
	close(lfd);
	event_base_free(base);
}
END_TEST

START_TEST(connect_refused)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_peer *c;
	char stack[128], want[64];
	int port = th_free_port();

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	expect_connect_error(base, c, "Connection refused", 2000);
	snprintf(want, sizeof(want), "tcp: connect to 127.0.0.1:%d", port);
	ck_assert_msg(!strncmp(strata_last_error(c->top), want, strlen(want)),
	    "'%s'", strata_last_error(c->top));
	ck_assert_int_eq(strata_get_error(c->top, &err), 1);
	ck_assert_int_eq(err.sys_errno, ECONNREFUSED);
	th_run_for(base, 20);
	ck_assert_int_eq(c->errors, 1);
	th_peer_free(c);
	event_base_free(base);
}
END_TEST

/* ---- out of file descriptors while connecting ---- */

#define FILL_MAX 64

struct fd_wait {
	int fill[FILL_MAX], n;
	int connected, failed;
};

static void
fd_wait_event(struct bufferevent *bev, short what, void *arg)
{
	struct fd_wait *w = arg;

	if (what & BEV_EVENT_CONNECTED)
		w->connected = 1;
	else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
		/* failed, with a message that says why (4: another one) */
		w->failed = strstr(strata_last_error(bev) ? strata_last_error(
		    bev) : "", "no free file descriptor before the timeout: "
		    "Too many open files") ? 1 : 4;
}

static void
fd_wait_free_one(evutil_socket_t fd, short what, void *arg)
{
	struct fd_wait *w = arg;

	(void)fd;
	(void)what;
	if (w->n)
		close(w->fill[--w->n]);
}

/*
 * In a child with every fd under its limit taken: the connect cannot get a
 * socket, and must wait for one (a fd freed 200 ms later) within its
 * timeout instead of failing at once. Exit 0 when it connected, 1 when it
 * failed saying it found no fd, 4 when it failed otherwise, 2 when it did
 * neither, 3 when the setup could not be made.
 */
static int
connect_when_out_of_fds(int port, int free_one)
{
	struct event_base *base = event_base_new();
	struct timeval later = {0, 200 * 1000};
	struct fd_wait w = {{0}, 0, 0, 0};
	struct bufferevent *top = NULL;
	struct strata_error err;
	struct event *tm = base ? evtimer_new(base, fd_wait_free_one, &w)
				: NULL;
	struct rlimit rl;
	char stack[64];
	int fd, i, r = 3;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d(timeout=2s)",
	    port);
	if (!tm || getrlimit(RLIMIT_NOFILE, &rl) < 0 || (fd = dup(0)) < 0)
		goto out;
	/* a limit 8 above the lowest free fd (new fds take the lowest
	 * free number, and only numbers under the limit), then fill it */
	close(fd);
	rl.rlim_cur = (rlim_t)fd + 8;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 ||
	    !(top = strata_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE,
		  &err)))
		goto out;
	while (w.n < FILL_MAX && (fd = open("/dev/null", O_RDONLY)) >= 0)
		w.fill[w.n++] = fd;
	if (fd >= 0 || errno != EMFILE)
		goto out; /* (valgrind fakes the limit: nothing to test) */
	bufferevent_setcb(top, NULL, NULL, fd_wait_event, &w);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	if (free_one)
		evtimer_add(tm, &later);
	/* no Check assertions in this child: a loop of its own, 3 s */
	for (i = 0; i < 300 && !w.connected && !w.failed; i++) {
		struct timeval slice = {0, 10 * 1000};
		event_base_loopexit(base, &slice);
		event_base_dispatch(base);
	}
	r = w.connected ? 0 : w.failed ? w.failed : 2;
out:
	while (w.n)
		close(w.fill[--w.n]);
	if (top)
		bufferevent_free(top);
	if (tm)
		event_free(tm);
	if (base)
		event_base_free(base);
	return r;
}

START_TEST(connect_waits_for_a_free_fd)
{
	int free_one = _i, port, lfd = th_tcp_listen(16, &port), status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(connect_when_out_of_fds(port, free_one));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	close(lfd);
	ck_assert(WIFEXITED(status));
	if (WEXITSTATUS(status) == 3)
		return; /* no real fd limit here (valgrind) */
	/* with a fd freed it connects; without, it fails by its timeout */
	ck_assert_int_eq(WEXITSTATUS(status), free_one ? 0 : 1);
}
END_TEST

struct bad_addr {
	const char *stack;
	const char *part;
};

static const struct bad_addr bad_addrs[] = {
	{"tcp://host", "the port is missing"},
	{"tcp://127.0.0.1:70000", "bad port '70000'"},
	{"tcp://[::1", "unclosed '['"},
	{"tcp://[::1]80", "the port is missing"},
	{"tcp://::1:80", "needs brackets"},
	{"tcp://127.0.0.1:-1", "bad port '-1'"},
	{"tcp://127.0.0.1:http", "bad port 'http'"},
	{"tcp:127.0.0.1:80", "expected tcp://host:port"},
	{"tcp://127.0.0.1:0", "port other than 0"},
	{"tcp://127.0.0.1:80(nodelay=maybe)", "maybe"},
	{"tcp://127.0.0.1:80(timeout=0)", "timeout"},
};

START_TEST(malformed_addresses)
{
	struct event_base *base = event_base_new();
	const struct bad_addr *b = &bad_addrs[_i];
	struct strata_error err;
	struct bufferevent *top;
	int fds = th_count_fds();

	memset(&err, 0, sizeof(err));
	top = strata_connect(base, NULL, b->stack, 0, &err);
	ck_assert_msg(top == NULL, "'%s' was accepted", b->stack);
	ck_assert_int_ne(err.code, STRATA_OK);
	ck_assert_msg(strstr(err.message, b->part) != NULL,
	    "'%s': message '%s' lacks '%s'", b->stack, err.message, b->part);
	ck_assert_msg(!strncmp(err.message, "tcp: ", 5),
	    "'%s': message '%s' does not name the transport", b->stack,
	    err.message);
	ck_assert_int_eq(th_count_fds(), fds);
	event_base_free(base);
}
END_TEST

/* ---- peer addresses ---- */

START_TEST(peer_address_both_sides)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c, *sp;
	struct sockaddr_in a, local;
	socklen_t llen = sizeof(local);
	int salen;
	char stack[128], text[64], want[64];

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	/* no peer while connecting */
	ck_assert_int_eq(strata_peer_address(c->top, text, sizeof(text),
	    NULL, NULL), -1);
	th_run_until(base, &c->connected, 2000, "CONNECTED");
	salen = sizeof(a);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    (struct sockaddr *)&a, &salen), 0);
	snprintf(want, sizeof(want), "127.0.0.1:%d", s.port);
	ck_assert_str_eq(text, want);
	ck_assert_int_eq(salen, sizeof(a));
	ck_assert_int_eq(a.sin_family, AF_INET);
	ck_assert_int_eq(ntohs(a.sin_port), s.port);
	ck_assert_int_eq(ntohl(a.sin_addr.s_addr), INADDR_LOOPBACK);
	/* the accepted side sees the client's own address */
	ck_assert_int_eq(getsockname(bufferevent_getfd(strata_transport(
	    c->top)), (struct sockaddr *)&local, &llen), 0);
	sp = th_srv_wait_peer(&s);
	salen = sizeof(a);
	ck_assert_int_gt(strata_peer_address(sp->top, text, sizeof(text),
	    (struct sockaddr *)&a, &salen), 0);
	snprintf(want, sizeof(want), "127.0.0.1:%d", ntohs(local.sin_port));
	ck_assert_str_eq(text, want);
	ck_assert_int_eq(a.sin_port, local.sin_port);
	ck_assert_int_eq(strata_peer_address(NULL, text, sizeof(text), NULL,
	    NULL), -1);
	ck_assert_int_eq(strata_peer_credentials(c->top, NULL, NULL, NULL),
	    -1);
	ck_assert_int_eq(strata_exit_status(c->top), -2);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* ---- graceful close ---- */

START_TEST(close_delivers_everything)
{
	static unsigned char data[1 << 20];
	struct event_base *base = event_base_new();
	struct th_close_res r = {0, -1};
	struct th_server s;
	struct th_peer *c, *sp;
	char stack[128];
	size_t i;

	th_pattern(data, sizeof(data), 0);
	th_srv_setup(&s, base, "tcp://127.0.0.1:0", 0);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", s.port);
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	for (i = 0; i < sizeof(data); i += 65536)
		bufferevent_write(c->top, data + i, 65536);
	ck_assert_int_eq(strata_close(c->top, NULL, th_on_closed, &r), 0);
	c->top = NULL;
	sp = th_srv_wait_peer(&s);
	th_run_until(base, &sp->eof, 5000, "EOF on the accepted side");
	ck_assert_int_eq(sp->errors, 0);
	ck_assert_uint_eq(sp->got_at_eof, sizeof(data));
	ck_assert(!memcmp(evbuffer_pullup(sp->got, -1), data, sizeof(data)));
	ck_assert_int_eq(r.done, 0); /* waits for the peer's EOF */
	bufferevent_free(sp->top);
	sp->top = NULL;
	th_run_until(base, &r.done, 2000, "the close callback");
	ck_assert_int_eq(r.delivered, 1);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* ---- a listener under load ---- */

static size_t
heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* One connection: connect, a line there and back, close. */
static void
one_round(struct event_base *base, struct th_server *s, const char *stack)
{
	struct th_peer *c = th_peer_connect(base, NULL, stack,
	    BEV_OPT_CLOSE_ON_FREE);

	c->want = 5;
	bufferevent_write(c->top, "ping\n", 5);
	th_run_until(base, &c->enough, 2000, "the echoed line");
	ck_assert(th_got_equals(c, "ping\n"));
	th_peer_free(c);
	(void)s;
}

START_TEST(listener_1000_connections)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	char stack[128];
	size_t heap0, heap1;
	int fds0, fds1, i, target;

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	s.free_on_end = 1;
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	for (i = 0; i < 20; i++) /* warm up: lazily made state */
		one_round(base, &s, stack);
	th_run_until(base, &s.freed, 1000, "the warm-up closes");
	target = 20;
	while (s.freed < target)
		th_run_for(base, 5);
	fds0 = th_count_fds();
	heap0 = heap_in_use();
	for (i = 0; i < 1000; i++)
		one_round(base, &s, stack);
	target = 1020;
	for (i = 0; i < 200 && s.freed < target; i++)
		th_run_for(base, 10);
	ck_assert_int_eq(s.accepted, 1020);
	ck_assert_int_eq(s.freed, 1020);
	fds1 = th_count_fds();
	heap1 = heap_in_use();
	ck_assert_msg(fds1 <= fds0 + 2, "fds grew from %d to %d", fds0, fds1);
	ck_assert_msg(heap1 <= heap0 + 65536, "heap grew from %zu to %zu",
	    heap0, heap1);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* ---- accept errors ---- */

static long
cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

START_TEST(accept_emfile_pauses_and_resumes)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct rlimit old, low;
	struct th_peer *c;
	char stack[128];
	int raw[3], i, next, during, setr;
	long cpu0, cpu1;

	th_srv_setup(&s, base, "tcp://127.0.0.1:0 | lines", 1);
	s.free_on_end = 1;
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", s.port);
	one_round(base, &s, stack);
	th_run_until(base, &s.freed, 2000, "the first connection's end");
	for (i = 0; i < 3; i++)
		raw[i] = raw_connect(s.port);
	usleep(20000);
	/* no fd can be made now: accept fails with EMFILE */
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	next = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(next, 0);
	close(next);
	low = old;
	low.rlim_cur = (rlim_t)next;
	setr = setrlimit(RLIMIT_NOFILE, &low);
	cpu0 = cpu_ms();
	th_run_for(base, 400);
	cpu1 = cpu_ms();
	during = s.accepted;
	/* restore before any check can fail (CK_FORK=no) */
	setrlimit(RLIMIT_NOFILE, &old);
	ck_assert_int_eq(setr, 0);
	ck_assert_int_eq(during, 1);
	/* paused, not spinning on the pending connections */
	ck_assert_msg(cpu1 - cpu0 < 200, "%ld ms of CPU in 400 ms",
	    cpu1 - cpu0);
	/* resumes: a new connection is served */
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	c->want = 4;
	bufferevent_write(c->top, "bye\n", 4);
	th_run_until(base, &c->enough, 3000, "service after EMFILE");
	ck_assert(th_got_equals(c, "bye\n"));
	ck_assert_int_ge(s.accepted, 2);
	th_peer_free(c);
	for (i = 0; i < 3; i++)
		close(raw[i]);
	th_run_for(base, 50);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("transport-tcp");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = tcase_create("loopback");
	tcase_add_test(tc, ipv4_lines_and_connected);
	tcase_add_test(tc, finish_while_connecting);
	tcase_add_test(tc, prepared_stack_connects_many);
	tcase_add_test(tc, ipv4_frames);
	tcase_add_test(tc, ipv6_loopback);
	tcase_add_test(tc, localhost_private_resolver);
	tcase_add_test(tc, localhost_own_resolver);
	tcase_add_test(tc, name_tries_each_address);
	tcase_add_test(tc, name_all_addresses_refused);
	tcase_add_test(tc, name_does_not_resolve);
	tcase_add_test(tc, free_while_resolving_own_dns);
	tcase_add_test(tc, free_while_resolving_private_dns);
	tcase_add_test(tc, timeout_while_resolving);
	tcase_add_test(tc, peer_address_both_sides);
	tcase_add_test(tc, close_delivers_everything);
	suite_add_tcase(s, tc);

	tc = tcase_create("listen");
	tcase_add_test(tc, listen_port_zero_and_address);
	tcase_add_test(tc, listen_any_empty_host);
	tcase_add_test(tc, listen_any_ipv6);
	tcase_add_test(tc, listen_address_in_use);
	tcase_add_test(tc, listen_reuseport);
	tcase_add_test(tc, listen_backlog_option);
	suite_add_tcase(s, tc);

	tc = tcase_create("options");
	tcase_add_test(tc, nodelay_default_and_off);
	tcase_add_test(tc, keepalive_default_and_off);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, connect_timeout);
	tcase_add_test(tc, connect_refused);
	tcase_add_test(tc, direct_top_is_its_transport);
	tcase_add_loop_test(tc, connect_waits_for_a_free_fd, 0, 2);
	tcase_add_loop_test(tc, malformed_addresses, 0,
	    (int)(sizeof(bad_addrs) / sizeof(bad_addrs[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, listener_1000_connections);
	tcase_add_test(tc, accept_emfile_pauses_and_resumes);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
