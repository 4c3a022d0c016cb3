/*
 * Listeners: strata_listener_reload() (new connections get the new files,
 * live ones keep theirs, a broken file changes nothing) and
 * strata_listener_spread() (connections built in worker threads' loops,
 * round-robin, over TCP and unix sockets; a listener freed with
 * connections still on their way to a worker closes them and leaks
 * nothing).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/thread.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "helpers.h"

static char tmpdir[] = "/tmp/strata-listener-XXXXXX";

/* A P-256 key and a self-signed certificate with CN=@p cn into @p cert
 * and @p key; the hex SHA-256 of its public key into @p pin. */
static void
make_cert(const char *cert, const char *key, const char *cn, char pin[65])
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL, md[32];
	FILE *f;
	int len, i;

	ck_assert(k && x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	ck_assert(X509_sign(x, k, EVP_sha256()));
	ck_assert_ptr_nonnull(f = fopen(cert, "w"));
	ck_assert(PEM_write_X509(f, x));
	fclose(f);
	ck_assert_ptr_nonnull(f = fopen(key, "w"));
	ck_assert(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	len = i2d_PUBKEY(k, &der);
	ck_assert_int_gt(len, 0);
	ck_assert(EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL));
	for (i = 0; i < 32; i++)
		snprintf(pin + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void
copy_file(const char *from, const char *to)
{
	char buf[8192];
	FILE *in = fopen(from, "r"), *out = fopen(to, "w");
	size_t n;

	ck_assert(in && out);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
}

/* ---- reload ---- */

struct echo_srv {
	int accepted;
};

static void
echo_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void
echo_event(struct bufferevent *bev, short what, void *arg)
{
	(void)arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_free(bev);
}

static void
echo_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct echo_srv *s = arg;

	(void)l;
	s->accepted++;
	bufferevent_setcb(top, echo_read, NULL, echo_event, NULL);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

struct client {
	struct bufferevent *top;
	int connected, failed;
	size_t got;
};

static void
client_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	c->got += evbuffer_get_length(in);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		c->connected = 1;
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
		c->failed = 1;
}

/* Connect a TLS client that trusts both keys; return it connected. */
static void
client_open(struct client *c, struct event_base *base, int port,
    const char *pins)
{
	struct strata_error err;
	char stack[512];

	memset(c, 0, sizeof(*c));
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | tls(pin=%s)",
	    port, pins);
	c->top = strata_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE,
	    &err);
	ck_assert_msg(c->top != NULL, "%s", err.message);
	bufferevent_setcb(c->top, client_read, NULL, client_event, c);
	bufferevent_enable(c->top, EV_READ | EV_WRITE);
	th_run_until(base, &c->connected, 5000, "the TLS client to connect");
}

/* The subject the client saw ("CN=a"). */
static int
client_saw(struct client *c, const char *cn)
{
	char d[512], want[64];

	ck_assert_int_gt(strata_layer_describe(c->top, 1, d, sizeof(d)), 0);
	snprintf(want, sizeof(want), "CN=%s", cn);
	return strstr(d, want) != NULL;
}

static void
client_echo(struct client *c, struct event_base *base)
{
	size_t before = c->got;
	int done = 0;
	int i;

	bufferevent_write(c->top, "ping", 4);
	for (i = 0; i < 300 && !done; i++) {
		th_run_for(base, 10);
		done = c->got >= before + 4;
	}
	ck_assert_msg(done && !c->failed, "no echo on the live connection");
}

START_TEST(reload_new_files_for_new_connections)
{
	struct event_base *base = event_base_new();
	struct strata_listener *l;
	struct strata_error err;
	struct echo_srv s = {0};
	struct client c1, c2, c3;
	char a_cert[256], a_key[256], b_cert[256], b_key[256], cur[256],
	    curkey[256], stack[700], pina[65], pinb[65], pins[160];
	FILE *f;

	snprintf(a_cert, sizeof(a_cert), "%s/a.pem", tmpdir);
	snprintf(a_key, sizeof(a_key), "%s/a.key", tmpdir);
	snprintf(b_cert, sizeof(b_cert), "%s/b.pem", tmpdir);
	snprintf(b_key, sizeof(b_key), "%s/b.key", tmpdir);
	snprintf(cur, sizeof(cur), "%s/cur.pem", tmpdir);
	snprintf(curkey, sizeof(curkey), "%s/cur.key", tmpdir);
	make_cert(a_cert, a_key, "a", pina);
	make_cert(b_cert, b_key, "b", pinb);
	snprintf(pins, sizeof(pins), "sha256:%s;sha256:%s", pina, pinb);
	copy_file(a_cert, cur);
	copy_file(a_key, curkey);
	snprintf(stack, sizeof(stack),
	    "tcp://127.0.0.1:0 | tls(cert=%s, key=%s)", cur, curkey);
	l = strata_listen(base, stack, BEV_OPT_CLOSE_ON_FREE, echo_accept, &s,
	    &err);
	ck_assert_msg(l != NULL, "%s", err.message);

	client_open(&c1, base, strata_listener_port(l), pins);
	ck_assert(client_saw(&c1, "a"));

	/* new files: the next connection gets them, the live one goes on */
	copy_file(b_cert, cur);
	copy_file(b_key, curkey);
	ck_assert_int_eq(strata_listener_reload(l, &err), 0);
	client_open(&c2, base, strata_listener_port(l), pins);
	ck_assert(client_saw(&c2, "b"));
	client_echo(&c1, base);
	ck_assert(client_saw(&c1, "a"));

	/* a broken file: an error naming it, and b is still served */
	ck_assert_ptr_nonnull(f = fopen(cur, "w"));
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n", f);
	fclose(f);
	ck_assert_int_eq(strata_listener_reload(l, &err), -1);
	ck_assert_msg(strstr(err.message, "cur.pem") != NULL, "'%s'",
	    err.message);
	client_open(&c3, base, strata_listener_port(l), pins);
	ck_assert(client_saw(&c3, "b"));
	client_echo(&c1, base);
	client_echo(&c2, base);
	ck_assert_int_eq(s.accepted, 3);

	bufferevent_free(c1.top);
	bufferevent_free(c2.top);
	bufferevent_free(c3.top);
	th_run_for(base, 50);
	strata_listener_free(l);
	ck_assert_int_eq(strata_listener_reload(NULL, &err), -1);
	event_base_free(base);
}
END_TEST

/* ---- spread over worker threads ---- */

#define NWORKERS 3

struct worker {
	struct event_base *base;
	struct event *keep;	/* keeps the loop running */
	pthread_t thread;
	int accepted;		/* atomic */
};

static struct worker workers[NWORKERS];
static struct event_base *acceptor;
static pthread_t acceptor_thread;

static void
noop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void *
run_base(void *arg)
{
	event_base_dispatch(arg);
	return NULL;
}

static void
spread_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct event_base *b = bufferevent_get_base(top);
	int i;

	(void)l;
	(void)arg;
	for (i = 0; i < NWORKERS; i++)
		if (workers[i].base == b)
			__atomic_add_fetch(&workers[i].accepted, 1,
			    __ATOMIC_RELAXED);
	bufferevent_setcb(top, echo_read, NULL, echo_event, NULL);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
workers_make(void)
{
	struct timeval hour = {3600, 0};
	int i;

	ck_assert_int_eq(evthread_use_pthreads(), 0);
	for (i = 0; i < NWORKERS; i++) {
		workers[i].base = event_base_new();
		workers[i].keep = event_new(workers[i].base, -1, EV_PERSIST,
		    noop, NULL);
		event_add(workers[i].keep, &hour);
		workers[i].accepted = 0;
	}
	acceptor = event_base_new();
}

static void
workers_start(void)
{
	int i;

	for (i = 0; i < NWORKERS; i++)
		ck_assert_int_eq(pthread_create(&workers[i].thread, NULL,
		    run_base, workers[i].base), 0);
}

static void
workers_stop(void)
{
	int i;

	for (i = 0; i < NWORKERS; i++) {
		event_base_loopbreak(workers[i].base);
		pthread_join(workers[i].thread, NULL);
		event_free(workers[i].keep);
		event_base_free(workers[i].base);
	}
}

/* A blocking client. */
static int
raw_client(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, sa, len), 0);
	return fd;
}

/* Send a line, read it back: the bytes that came back. */
static int
raw_echo(int fd)
{
	struct timeval tv = {5, 0};
	char buf[2];
	int got = 0;
	ssize_t n = 1;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (write(fd, "x\n", 2) != 2)
		return -1;
	while (got < 2 && (n = read(fd, buf + got, 2 - (size_t)got)) > 0)
		got += (int)n;
	return got;
}

static struct strata_listener *spread_l;

/* Free the listener in its own thread (the contract), from its loop. */
static void
free_in_loop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	strata_listener_free(spread_l);
	spread_l = NULL;
	event_base_loopbreak(acceptor);
}

static void
spread_round(const char *stack)
{
	struct event_base *bases[NWORKERS];
	struct sockaddr_storage ss;
	struct strata_error err;
	struct event *quit;
	int salen = sizeof(ss), fds[3 * NWORKERS], i;

	workers_make();
	for (i = 0; i < NWORKERS; i++)
		bases[i] = workers[i].base;
	spread_l = strata_listen(acceptor, stack, BEV_OPT_CLOSE_ON_FREE,
	    spread_accept, NULL, &err);
	ck_assert_msg(spread_l != NULL, "%s", err.message);
	ck_assert_int_eq(strata_listener_spread(spread_l, bases, NWORKERS,
	    &err), 0);
	ck_assert_int_gt(strata_listener_address(spread_l, (char[128]){0},
	    128, (struct sockaddr *)&ss, &salen), 0);
	quit = event_new(acceptor, -1, 0, free_in_loop, NULL);
	workers_start();
	ck_assert_int_eq(pthread_create(&acceptor_thread, NULL, run_base,
	    acceptor), 0);
	for (i = 0; i < 3 * NWORKERS; i++) {
		fds[i] = raw_client((struct sockaddr *)&ss, (socklen_t)salen);
		ck_assert_int_eq(raw_echo(fds[i]), 2);
	}
	/* round-robin: three each */
	for (i = 0; i < NWORKERS; i++)
		ck_assert_int_eq(__atomic_load_n(&workers[i].accepted,
		    __ATOMIC_RELAXED), 3);
	for (i = 0; i < 3 * NWORKERS; i++)
		close(fds[i]);
	event_active(quit, EV_TIMEOUT, 1);
	pthread_join(acceptor_thread, NULL);
	event_free(quit);
	usleep(50000); /* the workers see the clients' EOF */
	workers_stop();
	event_base_free(acceptor);
}

START_TEST(spread_tcp_round_robin)
{
	spread_round("tcp://127.0.0.1:0 | lines");
}
END_TEST

START_TEST(spread_unix_round_robin)
{
	char stack[128];

	snprintf(stack, sizeof(stack), "unix:%s/spread.sock | lines", tmpdir);
	spread_round(stack);
}
END_TEST

/* Connections accepted, not yet built in their (idle) workers, when the
 * listener goes: each is closed there, and nothing leaks. */
START_TEST(spread_free_with_connections_in_flight)
{
	struct event_base *bases[NWORKERS];
	struct sockaddr_storage ss;
	struct strata_error err;
	struct timeval tv = {5, 0};
	int salen = sizeof(ss), fds[4], i;
	char c;

	workers_make();
	for (i = 0; i < NWORKERS; i++)
		bases[i] = workers[i].base;
	spread_l = strata_listen(acceptor, "tcp://127.0.0.1:0 | lines",
	    BEV_OPT_CLOSE_ON_FREE, spread_accept, NULL, &err);
	ck_assert_msg(spread_l != NULL, "%s", err.message);
	ck_assert_int_eq(strata_listener_spread(spread_l, bases, NWORKERS,
	    &err), 0);
	ck_assert_int_gt(strata_listener_address(spread_l, (char[128]){0},
	    128, (struct sockaddr *)&ss, &salen), 0);
	for (i = 0; i < 4; i++)
		fds[i] = raw_client((struct sockaddr *)&ss, (socklen_t)salen);
	th_run_for(acceptor, 100); /* accepts all four, hands them over */
	strata_listener_free(spread_l);
	workers_start();
	for (i = 0; i < 4; i++) {
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ck_assert_int_eq(read(fds[i], &c, 1), 0);
		close(fds[i]);
	}
	for (i = 0; i < NWORKERS; i++)
		ck_assert_int_eq(workers[i].accepted, 0);
	workers_stop();
	event_base_free(acceptor);
}
END_TEST

START_TEST(spread_bad_arguments)
{
	struct strata_error err;

	ck_assert_int_eq(strata_listener_spread(NULL, NULL, 0, &err), -1);
	ck_assert_int_eq(err.code, STRATA_ERR_INVALID);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("listener");
	TCase *tc = tcase_create("listener");
	SRunner *sr;
	char cmd[300];
	int failed;

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, reload_new_files_for_new_connections);
	tcase_add_test(tc, spread_tcp_round_robin);
	tcase_add_test(tc, spread_unix_round_robin);
	tcase_add_test(tc, spread_free_with_connections_in_flight);
	tcase_add_test(tc, spread_bad_arguments);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return failed ? 1 : 0;
}
