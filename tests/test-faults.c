/*
 * Faults, library level (issue 7, "Faults and load"): a peer that resets
 * mid-transfer (tcp and tcp | tls, the stack under test connected or
 * accepted, sending or receiving); a peer that closes or resets during the
 * TLS handshake; a peer that sends one byte per second (dropped at the
 * handshake timeout, or at the idle timeout of strata_set_timeouts); a peer
 * that never reads (the writer's stack stops taking data, the heap stays
 * bounded, the loop does not spin, and nothing is lost once the peer reads).
 *
 * Every peer is real: a strata stack or a raw socket on loopback TCP.
 *
 * Checks that failed until an engine fix landed are marked PENDING with
 * the fix's number (all of them are on main and every check runs):
 *  01 a transport error (a reset) raises BEV_EVENT_ERROR twice;
 *  02 an accepted stack whose accept callback disables reading never
 *     announces itself, so its TLS handshake never starts;
 *  03 zlib's flush=auto moves data past the transport's high watermark
 *     every turn of the loop: memory grows without bound when the peer
 *     does not read (tcp | tls | zlib);
 *  04 an input pass does not re-run a layer it skipped for a full buffer
 *     that the layers above then drained: the stream stalls;
 *  06 every tls stack string parsed without ca= loads the system's CA
 *     bundle again (about 30 ms of CPU), even with pin= where no CA is
 *     used: a proxy with a tls target pays it per connection;
 *  09 the tcp listener's backlog option is lost: libevent listens again
 *     with 128 over it, and a burst of connections overflows the queue.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faults-helpers.h"
#include "helpers.h"

static char tmpdir[] = "/tmp/strata-faults-XXXXXX";
static char cert[256], pin[80];

/* ---- one end of a connection under test ---- */

struct end {
	struct bufferevent *top;
	/* writer: keeps the top's output topped up to `fill` bytes of the
	 * pattern from its write callback, until `total` were written */
	int writer, filling;
	size_t sent, total, fill;
	/* reader: drains and checks the pattern */
	int drain;
	size_t got;
	int bad;
	/* events */
	int connected, eof, error, timeout, events;
	int ended; /* an EOF, error or timeout came */
	short what;
	double t_event; /* first EOF, error or timeout */
	char msg[STRATA_ERROR_MAX];
};

static void
end_fill(struct end *e)
{
	static unsigned char buf[65536];
	struct evbuffer *out;

	/* a stack's top may run the write callback from inside
	 * bufferevent_write (as libevent's filter bufferevents do) */
	if (!e->writer || !e->top || e->filling)
		return;
	e->filling = 1;
	out = bufferevent_get_output(e->top);
	while (e->sent < e->total && evbuffer_get_length(out) < e->fill) {
		size_t n = e->total - e->sent;

		if (n > sizeof(buf))
			n = sizeof(buf);
		th_pattern(buf, n, e->sent);
		ck_assert_int_eq(bufferevent_write(e->top, buf, n), 0);
		e->sent += n;
	}
	e->filling = 0;
}

/* Check @p n bytes at stream offset e->got against the pattern. */
static void
end_check(struct end *e, const unsigned char *p, size_t n)
{
	static unsigned char want[65536];

	while (n) {
		size_t k = n < sizeof(want) ? n : sizeof(want);

		th_pattern(want, k, e->got);
		if (memcmp(p, want, k))
			e->bad = 1;
		e->got += k;
		p += k;
		n -= k;
	}
}

static void
end_read(struct bufferevent *bev, void *arg)
{
	struct end *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	unsigned char buf[16384];
	int n;

	if (!e->drain)
		return;
	while ((n = evbuffer_remove(in, buf, sizeof(buf))) > 0)
		end_check(e, buf, (size_t)n);
}

static void
end_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	end_fill(arg);
}

static void
end_event(struct bufferevent *bev, short what, void *arg)
{
	struct end *e = arg;
	const char *m;

	e->events++;
	e->what = what;
	if (what & BEV_EVENT_CONNECTED) {
		e->connected++;
		end_fill(e);
	}
	if (what & BEV_EVENT_EOF)
		e->eof++;
	if (what & BEV_EVENT_TIMEOUT)
		e->timeout++;
	if (what & BEV_EVENT_ERROR) {
		e->error++;
		m = strata_last_error(bev);
		snprintf(e->msg, sizeof(e->msg), "%s", m ? m : "(no message)");
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) &&
	    !e->t_event) {
		e->t_event = fh_now();
		e->ended = 1;
	}
}

static void
end_attach(struct end *e, struct bufferevent *top)
{
	e->top = top;
	bufferevent_setcb(top, end_read, end_write, end_event, e);
	bufferevent_setwatermark(top, EV_WRITE, 64 * 1024, 0);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
end_free(struct end *e)
{
	if (e->top)
		bufferevent_free(e->top);
	e->top = NULL;
}

/* Free the end's stack with SO_LINGER 0 on its socket: a reset. */
static void
end_reset(struct end *e)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	evutil_socket_t fd = bufferevent_getfd(e->top);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(
	    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	end_free(e);
}

/* ---- a listener whose one accepted stack becomes an end ---- */

struct server {
	struct strata_listener *l;
	struct end *e;
	int accepted;
	double t_accept;
	struct timeval rd_timeout; /* set on the accepted stack if nonzero */
	int no_read;		   /* disable reading on it */
	size_t rd_high;		   /* its read high watermark */
};

static void
srv_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct server *s = arg;

	(void)l;
	s->accepted++;
	s->t_accept = fh_now();
	if (s->accepted > 1 || !s->e) {
		bufferevent_free(top);
		return;
	}
	end_attach(s->e, top);
	if (s->rd_timeout.tv_sec || s->rd_timeout.tv_usec)
		ck_assert_int_eq(
		    strata_set_timeouts(top, &s->rd_timeout, NULL), 0);
	if (s->rd_high)
		bufferevent_setwatermark(top, EV_READ, 0, s->rd_high);
	if (s->no_read)
		bufferevent_disable(top, EV_READ);
}

static int
srv_listen(struct server *s, struct event_base *base, const char *filters,
    struct end *e)
{
	struct strata_error err;
	char stack[1024];

	s->e = e;
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:0%s%s",
	    *filters ? " | " : "", filters);
	s->l = strata_listen(
	    base, stack, BEV_OPT_CLOSE_ON_FREE, srv_accept, s, &err);
	ck_assert_msg(s->l != NULL, "listen '%s': %s", stack, err.message);
	return strata_listener_port(s->l);
}

static void
cli_connect(
    struct end *e, struct event_base *base, int port, const char *filters)
{
	struct strata_error err;
	char stack[1024];
	struct bufferevent *top;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d%s%s", port,
	    *filters ? " | " : "", filters);
	top = strata_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "connect '%s': %s", stack, err.message);
	end_attach(e, top);
}

/* The tls filter of a server (our certificate) and of a client (pinned). */
static const char *
srv_tls(const char *extra)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "tls(cert=%s%s%s)", cert, *extra ? ", " : "",
	    extra);
	return buf;
}

static const char *
cli_tls(const char *extra)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "tls(pin=%s, resume=no%s%s)", pin,
	    *extra ? ", " : "", extra);
	return buf;
}

static void
ck_has(const char *msg, const char *what)
{
	ck_assert_msg(strcasestr(msg, what) != NULL,
	    "'%s' does not mention '%s'", msg, what);
}

/* ---- a peer that resets mid-transfer ---- */

static const struct reset_case {
	int tls;
	int server_under_test; /* the accepted stack is under test */
	int under_test_sends;  /* it sends (else it receives) */
} reset_cases[] = {
    {0, 0, 1},
    {0, 0, 0},
    {0, 1, 1},
    {0, 1, 0},
    {1, 0, 1},
    {1, 0, 0},
    {1, 1, 1},
    {1, 1, 0},
};

START_TEST(reset_mid_transfer)
{
	const struct reset_case *c = &reset_cases[_i];
	struct event_base *base = event_base_new();
	struct end sv = {0}, cl = {0}, *ut, *peer, *tx, *rx;
	struct server s = {0};
	int port;

	port = srv_listen(&s, base, c->tls ? srv_tls("") : "", &sv);
	cli_connect(&cl, base, port, c->tls ? cli_tls("") : "");
	th_run_until(base, &s.accepted, 3000, "the accept");
	ut = c->server_under_test ? &sv : &cl;
	peer = ut == &sv ? &cl : &sv;
	tx = c->under_test_sends ? ut : peer;
	rx = tx == ut ? peer : ut;
	tx->writer = 1;
	tx->total = (size_t)1 << 34;
	tx->fill = 256 * 1024;
	rx->drain = 1;
	end_fill(tx);
	while (rx->got < (1 << 20) && !rx->t_event && !tx->t_event)
		th_run_for(base, 5);
	ck_assert_msg(rx->got >= (1 << 20) && !rx->bad,
	    "1 MiB did not arrive intact (%zu bytes, bad=%d, events %d/%d)",
	    rx->got, rx->bad, rx->events, tx->events);
	end_reset(peer);
	th_run_until(base, &ut->ended, 3000, "the error after the reset");
	ck_assert_int_eq(ut->eof, 0);
	ck_assert_int_ge(ut->error, 1);
	ck_assert(ut->what & (BEV_EVENT_READING | BEV_EVENT_WRITING));
	ck_has(ut->msg, "reset");
	ck_assert_int_eq(rx->bad, 0);
	/* nothing more is delivered after the error (PENDING 01: a second
	 * BEV_EVENT_ERROR comes) */
	th_run_for(base, 50);
	ck_assert_int_eq(ut->events, ut->connected + 1);
	end_free(ut);
	strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/* ---- a peer that closes (or resets) during the TLS handshake ---- */

/* The first bytes of a ClientHello record: header, then part of it. */
static const unsigned char partial_hello[] = {
    0x16,
    0x03,
    0x01,
    0x01,
    0x00,
    0x01,
    0x00,
    0x00,
    0xfc,
    0x03,
    0x03,
    0x11,
    0x22,
    0x33,
    0x44,
    0x55,
    0x66,
    0x77,
    0x88,
    0x99,
    0xaa,
};

static const struct hs_case {
	int server_under_test;
	int sends; /* the raw peer sends a partial hello first */
	int rst;   /* it resets instead of closing */
	const char *expect;
} hs_cases[] = {
    {1, 1, 0, "tls: connection closed during the handshake"},
    {1, 0, 0, "tls: connection closed during the handshake"},
    {1, 1, 1, "reset"},
    {0, 0, 0, "tls: connection closed during the handshake"},
    {0, 0, 1, "reset"},
};

/* Run the loop until the raw listener has a connection. */
static int
accept_looping(struct event_base *base, int lfd)
{
	int i, fd = -1;

	for (i = 0; i < 300 && fd < 0; i++) {
		th_run_for(base, 10);
		fd = fh_raw_accept(lfd, 0);
	}
	ck_assert_msg(fd >= 0, "no connection to the raw listener");
	return fd;
}

/* Run the loop until the raw socket received something; bytes read. */
static size_t
recv_looping(struct event_base *base, int fd)
{
	char buf[4096];
	size_t got = 0;
	ssize_t n;
	int i;

	for (i = 0; i < 300; i++) {
		th_run_for(base, 10);
		while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
			got += (size_t)n;
		if (got)
			break;
	}
	return got;
}

START_TEST(close_during_handshake)
{
	const struct hs_case *c = &hs_cases[_i];
	struct event_base *base = event_base_new();
	struct end e = {0};
	struct server s = {0};
	int port, fd, lfd = -1;

	if (c->server_under_test) {
		port = srv_listen(&s, base, srv_tls(""), &e);
		fd = fh_raw_connect(port);
		th_run_until(base, &s.accepted, 3000, "the accept");
		if (c->sends)
			ck_assert_int_eq(
			    send(fd, partial_hello, sizeof(partial_hello), 0),
			    sizeof(partial_hello));
		th_run_for(base, 50);
	} else {
		lfd = fh_raw_listen(&port);
		cli_connect(&e, base, port, cli_tls(""));
		fd = accept_looping(base, lfd);
		/* the ClientHello came; no answer */
		ck_assert_uint_gt(recv_looping(base, fd), 0);
	}
	ck_assert_int_eq(e.events, 0);
	if (c->rst)
		fh_reset_close(fd);
	else
		ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	th_run_until(base, &e.ended, 3000, "the error");
	ck_assert_int_eq(e.connected, 0);
	ck_assert_int_eq(e.eof, 0);
	ck_has(e.msg, c->expect);
	ck_assert(e.what & BEV_EVENT_READING);
	end_free(&e);
	if (!c->rst)
		close(fd);
	if (lfd >= 0)
		close(lfd);
	if (s.l)
		strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/*
 * A stack whose user disabled reading on the top still completes its TLS
 * handshake (the engine reads for the layers, nothing reaches the top):
 * a client that only writes, a server that reads later (PENDING 02).
 */
START_TEST(handshake_with_reading_disabled)
{
	struct event_base *base = event_base_new();
	struct end sv = {0}, cl = {0};
	struct server s = {.no_read = _i == 1};
	int port;

	port = srv_listen(&s, base, srv_tls(""), &sv);
	cli_connect(&cl, base, port, cli_tls(""));
	if (_i == 0)
		bufferevent_disable(cl.top, EV_READ);
	sv.drain = _i == 0;
	cl.writer = 1;
	cl.total = 100;
	cl.fill = 1 << 20;
	end_fill(&cl);
	th_run_until(base, &cl.connected, 3000, "the client's CONNECTED");
	if (_i == 0)
		while (sv.got < 100 && !sv.ended)
			th_run_for(base, 5);
	else
		th_run_until(
		    base, &sv.connected, 3000, "the server's CONNECTED");
	ck_assert_int_eq(cl.events + sv.events, 2);
	end_free(&sv);
	end_free(&cl);
	strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/* ---- a peer that sends one byte per second ---- */

struct trickle {
	int fd;	       /* a raw socket, or -1 */
	struct end *e; /* or a strata stack */
	const unsigned char *bytes;
	size_t len, off;
	double t_last; /* time of the last byte sent */
};

static void
trickle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct trickle *t = arg;
	unsigned char b = t->bytes ? t->bytes[t->off % t->len] : 'a';

	(void)fd;
	(void)what;
	if (t->fd >= 0) {
		if (send(t->fd, &b, 1, MSG_NOSIGNAL) != 1)
			return;
	} else if (t->e->top)
		bufferevent_write(t->e->top, &b, 1);
	t->off++;
	t->t_last = fh_now();
}

static struct event *
trickle_start(struct event_base *base, struct trickle *t, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct event *ev = event_new(base, -1, EV_PERSIST, trickle_tick, t);

	ck_assert_ptr_nonnull(ev);
	event_add(ev, &tv);
	return ev;
}

/* A fake ServerHello, one byte a second from a raw server. */
static const unsigned char slow_server_hello[] = {
    0x16,
    0x03,
    0x03,
    0x00,
    0x7a,
    0x02,
    0x00,
    0x00,
    0x76,
    0x03,
    0x03,
};

START_TEST(one_byte_per_second_handshake_timeout)
{
	struct event_base *base = event_base_new();
	struct end e = {0};
	struct server s = {0};
	struct trickle t = {.fd = -1};
	struct event *ev;
	int port, lfd = -1;
	double t0, took;

	if (_i == 0) { /* the server under test, a raw client trickling */
		port =
		    srv_listen(&s, base, srv_tls("handshake-timeout=2s"), &e);
		t.fd = fh_raw_connect(port);
		t.bytes = partial_hello;
		t.len = sizeof(partial_hello);
		th_run_until(base, &s.accepted, 3000, "the accept");
		t0 = s.t_accept;
	} else { /* the client under test, a raw server trickling */
		lfd = fh_raw_listen(&port);
		cli_connect(&e, base, port, cli_tls("handshake-timeout=2s"));
		t.fd = accept_looping(base, lfd);
		/* the timer starts once connected (building the stack may
		 * take long: PENDING 06, and under valgrind) */
		t0 = fh_now();
		ck_assert_uint_gt(recv_looping(base, t.fd), 0);
		t.bytes = slow_server_hello;
		t.len = sizeof(slow_server_hello);
	}
	trickle_tick(-1, 0, &t);
	ev = trickle_start(base, &t, 1000);
	th_run_until(base, &e.ended, 4000, "the handshake timeout");
	took = e.t_event - t0;
	ck_has(e.msg, "tls: handshake not complete after 2000 ms");
	ck_assert_int_eq(e.connected, 0);
	ck_assert_msg(took > 1.8 && took < 3.0, "dropped after %.2f s", took);
	ck_assert_uint_ge(t.off, 2); /* it was sending all along */
	event_free(ev);
	end_free(&e);
	close(t.fd);
	if (lfd >= 0)
		close(lfd);
	if (s.l)
		strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/*
 * strata_set_timeouts counts bytes at the wire: a peer sending a byte every
 * 200 ms (an endless line, so nothing reaches the top) is not dropped by a
 * 700 ms read timeout; once it slows to one byte a second it is, about
 * 700 ms after its last byte.
 */
START_TEST(one_byte_per_second_idle_timeout)
{
	struct event_base *base = event_base_new();
	struct end sv = {0}, cl = {0};
	struct server s = {.rd_timeout = {0, 700000}};
	struct trickle t = {.fd = -1, .e = &cl};
	struct event *ev;
	char srv_f[600], cli_f[600];
	double gap;
	int port;

	snprintf(srv_f, sizeof(srv_f), "%s%s", _i ? srv_tls("") : "",
	    _i ? " | lines" : "lines");
	snprintf(cli_f, sizeof(cli_f), "%s%s", _i ? cli_tls("") : "",
	    _i ? " | lines" : "lines");
	port = srv_listen(&s, base, srv_f, &sv);
	sv.drain = 1;
	cli_connect(&cl, base, port, cli_f);
	th_run_until(base, &s.accepted, 3000, "the accept");
	trickle_tick(-1, 0, &t);
	ev = trickle_start(base, &t, 200);
	th_run_for(base, 2000);
	ck_assert_msg(sv.events == sv.connected,
	    "dropped while sending every 200 ms "
	    "(events %d, what 0x%x)",
	    sv.events, sv.what);
	ck_assert_uint_eq(sv.got, 0); /* no line ended */
	event_free(ev);
	ev = trickle_start(base, &t, 1000);
	th_run_until(base, &sv.ended, 2000, "the idle timeout");
	gap = sv.t_event - t.t_last;
	ck_assert_int_eq(sv.what, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	ck_assert_msg(gap > 0.6 && gap < 1.0,
	    "timed out %.2f s after the "
	    "last byte",
	    gap);
	ck_assert_int_eq(sv.error + sv.eof, 0);
	event_free(ev);
	end_free(&sv);
	end_free(&cl);
	strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/* ---- a peer that never reads ---- */

enum nr_peer { NR_RAW, NR_DISABLED, NR_UNDRAINED };

/* The PENDING cases come last. */
static const struct nr_case {
	const char *name;
	int tls, zlib;
	enum nr_peer peer;
} nr_cases[] = {
    {"tcp, raw peer", 0, 0, NR_RAW},
    {"tcp, reading disabled", 0, 0, NR_DISABLED},
    {"tcp | tls, reading disabled", 1, 0, NR_DISABLED},
    {"tcp | zlib, input never drained", 0, 1, NR_UNDRAINED},
    /* PENDING 03 */
    {"tcp | tls | zlib, reading disabled", 1, 1, NR_DISABLED},
    /* PENDING 03 and 04 */
    {"tcp | tls | zlib, input never drained", 1, 1, NR_UNDRAINED},
};

static long
cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static void
raw_drain(int fd, struct end *e)
{
	static unsigned char buf[65536];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		end_check(e, buf, (size_t)n);
}

START_TEST(never_reading_peer)
{
	const struct nr_case *c = &nr_cases[_i];
	struct event_base *base;
	struct end sv = {0}, cl = {0};
	struct server s = {0};
	char srv_f[600], cli_f[600];
	size_t heap0, heap1, w1, w2;
	long cpu0, cpu1;
	int port, lfd = -1, rfd = -1, i;

	/* compressible data: a hundred MB through zlib before the kernel's
	 * buffers fill, minutes under valgrind */
	if (c->zlib && fh_valgrind()) {
		fprintf(stderr, "never reading (%s): skipped under valgrind\n",
		    c->name);
		return;
	}
	base = event_base_new();
	snprintf(srv_f, sizeof(srv_f), "%s%s%s", c->tls ? srv_tls("") : "",
	    c->tls && c->zlib ? " | " : "", c->zlib ? "zlib" : "");
	snprintf(cli_f, sizeof(cli_f), "%s%s%s", c->tls ? cli_tls("") : "",
	    c->tls && c->zlib ? " | " : "", c->zlib ? "zlib" : "");
	if (c->peer == NR_RAW) {
		lfd = fh_raw_listen(&port);
		cli_connect(&cl, base, port, cli_f);
		rfd = accept_looping(base, lfd);
		th_run_until(base, &cl.connected, 3000, "CONNECTED");
	} else {
		s.rd_high = c->peer == NR_UNDRAINED ? 65536 : 0;
		port = srv_listen(&s, base, srv_f, &sv);
		cli_connect(&cl, base, port, cli_f);
		th_run_until(base, &cl.connected, 3000, "CONNECTED");
		th_run_until(
		    base, &sv.connected, 3000, "the server's CONNECTED");
		/* (disabled in the accept callback: PENDING 02) */
		if (c->peer == NR_DISABLED)
			bufferevent_disable(sv.top, EV_READ);
	}
	th_run_for(base, 50);
	heap0 = fh_heap_in_use();
	cl.writer = 1;
	cl.total = (size_t)1 << 34;
	cl.fill = 256 * 1024;
	end_fill(&cl);
	/* the kernel's buffers grow for a while (autotuning); then the
	 * writer's stack must stop taking data: 500 ms without a byte */
	w2 = 0;
	for (i = 0; i < 10; i++) {
		w1 = w2;
		th_run_for(base, 500);
		w2 = cl.sent;
		if (w2 == w1)
			break;
	}
	heap1 = fh_heap_in_use();
	cpu0 = cpu_ms();
	th_run_for(base, 500);
	cpu1 = cpu_ms();
	fprintf(stderr,
	    "never reading (%s): stalled after %zu bytes "
	    "(%.1f s); heap +%zd bytes; %ld ms of CPU in the last 0.5 s\n",
	    c->name, w2, (i + 1) * 0.5, (ssize_t)(heap1 - heap0), cpu1 - cpu0);
	ck_assert_int_eq(cl.events, 1); /* CONNECTED only */
	ck_assert_msg(w2 == w1 && cl.sent == w2,
	    "the writer's stack still "
	    "takes data after 5 s: %zu bytes",
	    cl.sent);
	ck_assert_msg(heap1 < heap0 + 8 * 1024 * 1024,
	    "heap grew by %zu "
	    "bytes with %zu written",
	    heap1 - heap0, w2);
	/* stalled, not spinning (libevent #891) */
	ck_assert_msg(cpu1 - cpu0 < 100,
	    "%ld ms of CPU in 0.5 s while "
	    "stalled",
	    cpu1 - cpu0);
	/* The peer reads at last: every byte arrives, in order. */
	cl.total = cl.sent;
	if (c->peer == NR_RAW) {
		for (i = 0; i < 1000 && sv.got < w2; i++) {
			th_run_for(base, 5);
			raw_drain(rfd, &sv);
		}
	} else {
		sv.drain = 1;
		bufferevent_setwatermark(sv.top, EV_READ, 0, 0);
		bufferevent_enable(sv.top, EV_READ);
		end_read(sv.top, &sv);
		for (i = 0; i < 1000 && sv.got < w2; i++)
			th_run_for(base, 5);
	}
	ck_assert_msg(sv.got == w2 && !sv.bad,
	    "%zu of %zu bytes arrived "
	    "(bad=%d)",
	    sv.got, w2, sv.bad);
	end_free(&cl);
	end_free(&sv);
	if (rfd >= 0)
		close(rfd);
	if (lfd >= 0)
		close(lfd);
	if (s.l)
		strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

/* ---- the cost of building a tls stack (PENDING 06) ---- */

START_TEST(tls_stack_build_cost)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	char stack[600];
	double t0, took;
	int i;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:9 | %s", cli_tls(""));
	t0 = fh_now();
	for (i = 0; i < 50; i++) {
		struct bufferevent *top = strata_connect(
		    base, NULL, stack, BEV_OPT_CLOSE_ON_FREE, &err);
		ck_assert_msg(top != NULL, "%s", err.message);
		bufferevent_free(top);
	}
	took = fh_now() - t0;
	fprintf(stderr, "strata_connect with tls(pin=...): %.2f ms each\n",
	    took * 1000 / 50);
	ck_assert_msg(took < 0.5, "50 tls stacks took %.2f s to build", took);
	th_run_for(base, 10);
	event_base_free(base);
}
END_TEST

/* ---- a burst of connections and the backlog (PENDING 09) ---- */

START_TEST(listen_backlog_holds_a_burst)
{
	struct event_base *base = event_base_new();
	struct server s = {0};
	struct strata_error err;
	int port = fh_free_port(), i, fds[250], done = 0;
	char stack[64];
	double end;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d(backlog=300)", port);
	s.l = strata_listen(
	    base, stack, BEV_OPT_CLOSE_ON_FREE, srv_accept, &s, &err);
	ck_assert_msg(s.l != NULL, "%s", err.message);
	/* the loop does not run: nothing is accepted, the queue fills */
	for (i = 0; i < 250; i++) {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa.sin_port = htons((unsigned short)port);
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		ck_assert_int_ge(fds[i], 0);
		if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) == 0)
			done++;
		else
			ck_assert_int_eq(errno, EINPROGRESS);
	}
	end = fh_now() + 0.5;
	while (fh_now() < end)
		usleep(10000);
	for (i = 0; i < 250; i++) {
		struct pollfd pf = {.fd = fds[i], .events = POLLOUT};
		int e = 0;
		socklen_t len = sizeof(e);
		if (poll(&pf, 1, 0) == 1 &&
		    getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &e, &len) == 0 &&
		    !e)
			done++;
		close(fds[i]);
	}
	ck_assert_msg(done == 250,
	    "%d of 250 connections were queued with "
	    "backlog=300",
	    done);
	strata_listener_free(s.l);
	event_base_free(base);
}
END_TEST

int
main(void)
{
	Suite *su = suite_create("faults");
	TCase *tc;
	SRunner *sr;
	int failed;
	char cmd[300];

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
	fh_make_cert(cert, pin, sizeof(pin));

	tc = tcase_create("reset");
	tcase_add_loop_test(tc, reset_mid_transfer, 0,
	    (int)(sizeof(reset_cases) / sizeof(reset_cases[0])));
	suite_add_tcase(su, tc);

	tc = tcase_create("handshake");
	tcase_add_loop_test(
	    tc, handshake_with_reading_disabled, 0, 2);
	tcase_add_loop_test(tc, close_during_handshake, 0,
	    (int)(sizeof(hs_cases) / sizeof(hs_cases[0])));
	suite_add_tcase(su, tc);

	tc = tcase_create("slow");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, one_byte_per_second_handshake_timeout, 0, 2);
	tcase_add_loop_test(tc, one_byte_per_second_idle_timeout, 0, 2);
	suite_add_tcase(su, tc);

	tc = tcase_create("never-reads");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, never_reading_peer, 0,
	    (int)(sizeof(nr_cases) / sizeof(nr_cases[0])));
	suite_add_tcase(su, tc);

	tc = tcase_create("cost");
	tcase_add_test(tc, tls_stack_build_cost);
	tcase_add_test(tc, listen_backlog_holds_a_burst);
	suite_add_tcase(su, tc);

	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return failed ? 1 : 0;
}
