/*
 * bench-tls: strata's tls filter against libevent's bufferevent_openssl,
 * in one run (issue 5). TLS 1.3 only, over loopback TCP:
 *
 *  1. Bulk transfer with TLS_AES_128_GCM_SHA256, one event loop, client
 *     writes and server reads: a strata "tcp | tls" stack at both ends
 *     against bufferevent_openssl_socket_new and against
 *     bufferevent_openssl_filter_new over a socket bufferevent (same
 *     certificate, same suite).
 *  2. Full handshakes per second (no resumption) of a strata server
 *     against a bufferevent_openssl server, ECDSA P-256 certificate, the
 *     same raw OpenSSL client (blocking, in a thread).
 *  3. Memory per idle server connection (RSS and mallinfo2) for many
 *     connections, both servers with default settings, each measured in a
 *     fresh process, the clients in another process; and, as a reference,
 *     OpenSSL alone (only the SSL objects kept): the floor for any server
 *     built on OpenSSL 3.
 *
 * Every figure is the median of several runs; the variants of a section
 * run interleaved. bench/README.md ("## TLS") explains each column.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "strata/strata.h"

#include "common.h"

#define MIB (1024u * 1024u)
#define CHUNK (64 * 1024)  /* the writer adds this much at a time */
#define FILL (256 * 1024)  /* ... while the top's output is below this */
#define LOW (128 * 1024)   /* write low watermark on the writer's top */
#define UNDER_LOW (64 * 1024)	/* the filter row's underlying write */
#define UNDER_HIGH (256 * 1024) /* watermarks (strata's transport's) */
#define MAX_RUNS 31
#define SUITE "TLS_AES_128_GCM_SHA256"

struct opts {
	size_t bulk_mib;
	int runs;
	int handshakes;
	int clients;
	int idle;
	int section; /* 0: all */
	const char *only; /* -x: one variant of section 1 or 2 */
};

static struct opts o = {1024, 5, 1000, 1, 2000, 0, NULL};
static char dir[64];
static char cert_path[128], key_path[128], pin[80];
static unsigned char chunk[CHUNK];

static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-tls: %s%s%s\n", what, detail ? ": " : "",
	    detail ? detail : "");
	ERR_print_errors_fp(stderr);
	exit(1);
}

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *
verdict(double ratio, double target, int higher_is_better)
{
	if (higher_is_better)
		return ratio >= target ? "met" : "MISS";
	return ratio <= target ? "met" : "MISS";
}

/* ---- the certificate: ECDSA P-256, self-signed, for 127.0.0.1 ---- */

static void
make_cert(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	X509_NAME *n;
	unsigned char *der = NULL, md[32];
	int len, i;
	FILE *f;

	if (!key || !x)
		die("cannot make a key", NULL);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"bench-tls", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
	    "DNS:localhost,IP:127.0.0.1");
	if (!ext || !X509_add_ext(x, ext, -1) ||
	    !X509_sign(x, key, EVP_sha256()))
		die("cannot make a certificate", NULL);
	X509_EXTENSION_free(ext);
	snprintf(dir, sizeof(dir), "/tmp/bench-tls-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp", strerror(errno));
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	if (!(f = fopen(cert_path, "w")) || !PEM_write_X509(f, x))
		die("cannot write", cert_path);
	fclose(f);
	if (!(f = fopen(key_path, "w")) ||
	    !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
		die("cannot write", key_path);
	fclose(f);
	len = i2d_PUBKEY(key, &der);
	EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL);
	OPENSSL_free(der);
	snprintf(pin, sizeof(pin), "sha256:");
	for (i = 0; i < 32; i++)
		snprintf(pin + 7 + 2 * i, sizeof(pin) - 7 - 2 * (size_t)i,
		    "%02x", md[i]);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void
cleanup_cert(void)
{
	unlink(cert_path);
	unlink(key_path);
	rmdir(dir);
}

/* libevent's side: the same certificate; @p tuned: TLS 1.3 and SUITE only
 * (what the strata stacks of sections 1 and 2 ask for). */
static SSL_CTX *
server_ctx(int tuned)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx || SSL_CTX_use_certificate_file(ctx, cert_path,
			SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1)
		die("server SSL_CTX", NULL);
	if (tuned && (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
			 SSL_CTX_set_ciphersuites(ctx, SUITE) != 1))
		die("server SSL_CTX options", NULL);
	return ctx;
}

static SSL_CTX *
client_ctx(int tuned)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		die("client SSL_CTX", NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (tuned && (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
			 SSL_CTX_set_ciphersuites(ctx, SUITE) != 1))
		die("client SSL_CTX options", NULL);
	return ctx;
}

static void
strata_server_stack(char *buf, size_t len, int tuned)
{
	snprintf(buf, len, "tcp://127.0.0.1:0 | tls(cert=%s, key=%s%s)",
	    cert_path, key_path,
	    tuned ? ", min=1.3, ciphersuites=" SUITE : "");
}

/* strata's tcp transport sets TCP_NODELAY; so does any TLS server worth
 * measuring (without it a server's ticket and first byte wait for the
 * client's delayed ACK: 40 ms per handshake). */
static void
nodelay(evutil_socket_t fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- a listener of either kind; @p strata or libevent's openssl ---- */

/* SRV_RAW: section 3's reference, OpenSSL alone (no event library) */
enum server_kind { SRV_STRATA, SRV_SOCKET, SRV_FILTER, SRV_RAW };

struct server {
	enum server_kind kind;
	struct event_base *base;
	struct strata_listener *sl;
	struct evconnlistener *el;
	SSL_CTX *ctx;
	int port;
	void (*on_accept)(struct server *, struct bufferevent *);
	void *arg;
};

static void
strata_accepted(struct strata_listener *l, struct bufferevent *top,
    void *arg)
{
	struct server *s = arg;

	(void)l;
	s->on_accept(s, top);
}

static void
ossl_accepted(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct server *s = arg;
	SSL *ssl = SSL_new(s->ctx);
	struct bufferevent *bev;

	(void)l;
	(void)sa;
	(void)salen;
	if (!ssl)
		die("SSL_new", NULL);
	nodelay(fd);
	if (s->kind == SRV_SOCKET)
		bev = bufferevent_openssl_socket_new(s->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	else {
		struct bufferevent *u = bufferevent_socket_new(s->base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
		if (!u)
			die("bufferevent_socket_new", NULL);
		bufferevent_setwatermark(u, EV_WRITE, UNDER_LOW, UNDER_HIGH);
		bev = bufferevent_openssl_filter_new(s->base, u, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!bev)
		die("bufferevent_openssl_*_new", NULL);
	s->on_accept(s, bev);
}

static void
server_start(struct server *s, struct event_base *base, enum server_kind k,
    int tuned, void (*cb)(struct server *, struct bufferevent *), void *arg)
{
	memset(s, 0, sizeof(*s));
	s->kind = k;
	s->base = base;
	s->on_accept = cb;
	s->arg = arg;
	if (k == SRV_STRATA) {
		char stack[512];
		struct strata_error err;
		strata_server_stack(stack, sizeof(stack), tuned);
		s->sl = strata_listen(base, stack, BEV_OPT_CLOSE_ON_FREE,
		    strata_accepted, s, &err);
		if (!s->sl)
			die("strata_listen", err.message);
		s->port = strata_listener_port(s->sl);
	} else {
		struct sockaddr_in a;
		socklen_t len = sizeof(a);
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s->ctx = server_ctx(tuned);
		s->el = evconnlistener_new_bind(base, ossl_accepted, s,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
		    (struct sockaddr *)&a, sizeof(a));
		if (!s->el)
			die("evconnlistener_new_bind", strerror(errno));
		getsockname(evconnlistener_get_fd(s->el),
		    (struct sockaddr *)&a, &len);
		s->port = ntohs(a.sin_port);
	}
}

static void
server_stop(struct server *s)
{
	if (s->sl)
		strata_listener_free(s->sl);
	if (s->el)
		evconnlistener_free(s->el);
	SSL_CTX_free(s->ctx);
}

/* ================= 1. bulk ================= */

struct bulk {
	struct event_base *base;
	struct bufferevent *cli, *srv;
	size_t total, sent, got;
	int cli_up, srv_up, done, failed;
	double t0_wall, t0_cpu, wall, cpu;
};

static void
bulk_fail(struct bulk *b, struct bufferevent *bev, const char *who,
    short what)
{
	const char *m = strata_is_stack(bev) ? strata_last_error(bev) : NULL;
	unsigned long e = ERR_peek_error();

	fprintf(stderr, "bench-tls: %s event 0x%x: %s %s\n", who, what,
	    m ? m : "", e ? ERR_reason_error_string(e) : "");
	b->failed = 1;
	event_base_loopbreak(b->base);
}

static void
bulk_write(struct bufferevent *bev, void *arg)
{
	struct bulk *b = arg;
	struct evbuffer *out = bufferevent_get_output(bev);

	/* re-entered from inside evbuffer_add on a strata top: count first */
	while (b->sent < b->total && evbuffer_get_length(out) < FILL) {
		size_t n = b->total - b->sent < CHUNK ? b->total - b->sent
						      : CHUNK;
		b->sent += n;
		evbuffer_add(out, chunk, n);
	}
}

static void
bulk_read(struct bufferevent *bev, void *arg)
{
	struct bulk *b = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	evbuffer_drain(in, n);
	b->got += n;
	if (b->got >= b->total && !b->done) {
		b->wall = clock_s(CLOCK_MONOTONIC) - b->t0_wall;
		b->cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - b->t0_cpu;
		b->done = 1;
		event_base_loopbreak(b->base);
	}
}

static void
bulk_cli_event(struct bufferevent *bev, short what, void *arg)
{
	struct bulk *b = arg;

	if (what & BEV_EVENT_CONNECTED) {
		b->cli_up = 1;
		if (b->srv_up)
			event_base_loopbreak(b->base);
		return;
	}
	bulk_fail(b, bev, "client", what);
}

static void
bulk_srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct bulk *b = arg;

	if (what & BEV_EVENT_CONNECTED) {
		b->srv_up = 1;
		if (b->cli_up)
			event_base_loopbreak(b->base);
		return;
	}
	if (b->done)
		return;
	bulk_fail(b, bev, "server", what);
}

static void
bulk_accept(struct server *s, struct bufferevent *bev)
{
	struct bulk *b = s->arg;

	b->srv = bev;
	bufferevent_setcb(bev, bulk_read, NULL, bulk_srv_event, b);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static const char *const bulk_names[] = {
	"strata \"tcp | tls\"",
	"bufferevent_openssl_socket_new",
	"bufferevent_openssl_filter_new",
};
static const char *const bulk_keys[] = {"strata", "socket", "filter"};

/* One transfer of @p total bytes; returns 0 or -1. */
static int
bulk_run(enum server_kind k, size_t total, double *wall, double *cpu)
{
	struct event_base *base = event_base_new();
	struct server s;
	struct bulk b;
	SSL_CTX *cctx = NULL;
	int rc = -1;

	memset(&b, 0, sizeof(b));
	b.base = base;
	b.total = total;
	server_start(&s, base, k, 1, bulk_accept, &b);
	if (k == SRV_STRATA) {
		char stack[512];
		struct strata_error err;
		snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | tls(pin=%s, "
		    "min=1.3, ciphersuites=" SUITE ", resume=no)", s.port, pin);
		b.cli = strata_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE,
		    &err);
		if (!b.cli)
			die("strata_connect", err.message);
	} else {
		struct sockaddr_in a;
		SSL *ssl;
		cctx = client_ctx(1);
		ssl = SSL_new(cctx);
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)s.port);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (k == SRV_SOCKET) {
			b.cli = bufferevent_openssl_socket_new(base, -1, ssl,
			    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
			if (!b.cli || bufferevent_socket_connect(b.cli,
					  (struct sockaddr *)&a, sizeof(a)) < 0)
				die("client connect", NULL);
			nodelay(bufferevent_getfd(b.cli));
		} else {
			struct bufferevent *u = bufferevent_socket_new(base, -1,
			    BEV_OPT_CLOSE_ON_FREE);
			if (!u || bufferevent_socket_connect(u,
					 (struct sockaddr *)&a, sizeof(a)) < 0)
				die("client connect", NULL);
			nodelay(bufferevent_getfd(u));
			bufferevent_setwatermark(u, EV_WRITE, UNDER_LOW,
			    UNDER_HIGH);
			b.cli = bufferevent_openssl_filter_new(base, u, ssl,
			    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		}
		if (!b.cli)
			die("client bufferevent", NULL);
	}
	bufferevent_setcb(b.cli, NULL, bulk_write, bulk_cli_event, &b);
	bufferevent_setwatermark(b.cli, EV_WRITE, LOW, 0);
	bufferevent_enable(b.cli, EV_READ | EV_WRITE);
	event_base_dispatch(base); /* until both ends are connected */
	if (b.failed || !b.cli_up || !b.srv_up)
		goto out;
	b.t0_wall = clock_s(CLOCK_MONOTONIC);
	b.t0_cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	bulk_write(b.cli, &b);
	event_base_dispatch(base);
	if (b.failed || !b.done || b.got != total) {
		fprintf(stderr, "bench-tls: %s: got %zu of %zu bytes\n",
		    bulk_names[k], b.got, total);
		goto out;
	}
	*wall = b.wall;
	*cpu = b.cpu;
	rc = 0;
out:
	if (b.cli)
		bufferevent_free(b.cli);
	if (b.srv)
		bufferevent_free(b.srv);
	server_stop(&s);
	SSL_CTX_free(cctx);
	event_base_free(base);
	return rc;
}

static void
section_bulk(void)
{
	double wall[3][MAX_RUNS], cpu[3][MAX_RUNS], mw[3], mc[3];
	size_t total = o.bulk_mib * MIB;
	int k, r, use[3];

	for (k = 0; k < 3; k++)
		use[k] = !o.only || !strcmp(o.only, bulk_keys[k]);
	printf("\n1. Bulk transfer, TLS 1.3 %s, loopback TCP, one event "
	       "loop, client writes, server reads\n"
	       "   %.1f MB per run, %d KiB chunks topped up below %d KiB, "
	       "median of %d runs\n\n",
	    SUITE, (double)total / 1e6, CHUNK / 1024, FILL / 1024, o.runs);
	for (k = 0; k < 3; k++) /* warm-up */
		if (use[k] && bulk_run((enum server_kind)k,
				  total < 64 * MIB ? total : 64 * MIB, &mw[k],
				  &mc[k]) < 0)
			die("bulk warm-up failed", bulk_names[k]);
	for (r = 0; r < o.runs; r++)
		for (k = 0; k < 3; k++)
			if (use[k] && bulk_run((enum server_kind)k, total,
					  &wall[k][r], &cpu[k][r]) < 0)
				die("bulk run failed", bulk_names[k]);
	printf("   %-34s %9s %9s\n", "variant", "MB/s", "MB/cpu-s");
	for (k = 0; k < 3; k++) {
		if (!use[k])
			continue;
		mw[k] = bench_median(wall[k], o.runs);
		mc[k] = bench_median(cpu[k], o.runs);
		printf("   %-34s %9.1f %9.1f\n", bulk_names[k],
		    (double)total / 1e6 / mw[k], (double)total / 1e6 / mc[k]);
	}
	if (!use[0])
		return;
	printf("\n   %-34s %9s %9s  %s\n", "strata vs", "ratio", "cpu",
	    "target (wall)");
	for (k = 1; k < 3; k++) {
		double t = k == 1 ? 1.0 : 1.5;
		if (!use[k])
			continue;
		printf("   %-34s %8.3fx %8.3fx  >= %.2f %s\n", bulk_names[k],
		    mw[k] / mw[0], mc[k] / mc[0], t,
		    verdict(mw[k] / mw[0], t, 1));
	}
}

/* ================= 2. handshakes ================= */

struct hs_client {
	int port, n, done_fd;
	int ok;
	double wall;
};

/* The same client for both servers: blocking OpenSSL, TLS 1.3 only, no
 * resumption; waits for the server's first byte (so the server finished
 * its side), then close_notify and close. */
static void *
hs_client_main(void *arg)
{
	struct hs_client *c = arg;
	SSL_CTX *ctx = client_ctx(1);
	struct sockaddr_in a;
	double t0 = clock_s(CLOCK_MONOTONIC);
	int i, one = 1;

	pthread_setname_np(pthread_self(), "hs-client"); /* for perf */
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)c->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	for (i = 0; i < c->n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		SSL *ssl;
		char ch;
		size_t got = 0;
		if (fd < 0 || connect(fd, (struct sockaddr *)&a,
				  sizeof(a)) < 0) {
			perror("bench-tls: handshake client connect");
			break;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_connect(ssl) == 1 &&
		    SSL_read_ex(ssl, &ch, 1, &got) == 1 && got == 1)
			c->ok++;
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	}
	c->wall = clock_s(CLOCK_MONOTONIC) - t0;
	SSL_CTX_free(ctx);
	if (write(c->done_fd, "x", 1) != 1)
		perror("bench-tls: write");
	return NULL;
}

struct hs {
	struct event_base *base;
	int accepted, established, open;
};

static void
hs_event(struct bufferevent *bev, short what, void *arg)
{
	struct hs *h = arg;

	if (what & BEV_EVENT_CONNECTED) {
		h->established++;
		bufferevent_write(bev, "k", 1);
		return;
	}
	h->open--;
	bufferevent_free(bev);
}

static void
hs_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
hs_accept(struct server *s, struct bufferevent *bev)
{
	struct hs *h = s->arg;

	h->accepted++;
	h->open++;
	bufferevent_setcb(bev, hs_read, NULL, hs_event, h);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
hs_done(evutil_socket_t fd, short what, void *arg)
{
	char b[16];

	(void)what;
	if (read(fd, b, sizeof(b)) > 0)
		event_base_loopbreak(arg);
}

/* One run of @p n handshakes per client: wall-clock handshakes/s and the
 * server thread's CPU seconds per handshake. */
static int
hs_run(enum server_kind k, int n, double *rate, double *cpu_per)
{
	struct event_base *base = event_base_new();
	struct server s;
	struct hs h;
	struct hs_client c[8];
	pthread_t th[8];
	struct event *ev;
	int pfd[2], i, finished = 0, ok = 0;
	double cpu0, wall = 0;

	memset(&h, 0, sizeof(h));
	h.base = base;
	server_start(&s, base, k, 1, hs_accept, &h);
	if (pipe(pfd) < 0)
		die("pipe", strerror(errno));
	ev = event_new(base, pfd[0], EV_READ | EV_PERSIST, hs_done, base);
	event_add(ev, NULL);
	cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	for (i = 0; i < o.clients; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].port = s.port;
		c[i].n = n;
		c[i].done_fd = pfd[1];
		pthread_create(&th[i], NULL, hs_client_main, &c[i]);
	}
	while (finished < o.clients) {
		event_base_dispatch(base);
		finished = 0;
		for (i = 0; i < o.clients; i++)
			finished += c[i].wall > 0;
	}
	*cpu_per = (clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0);
	for (i = 0; i < o.clients; i++) {
		pthread_join(th[i], NULL);
		ok += c[i].ok;
		if (c[i].wall > wall)
			wall = c[i].wall;
	}
	/* the last connections' EOF */
	for (i = 0; i < 100 && h.open; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	event_free(ev);
	close(pfd[0]);
	close(pfd[1]);
	server_stop(&s);
	event_base_free(base);
	if (ok != n * o.clients || h.established != ok) {
		fprintf(stderr, "bench-tls: handshakes: %d of %d ok, server "
		    "saw %d\n", ok, n * o.clients, h.established);
		return -1;
	}
	*rate = ok / wall;
	*cpu_per /= ok;
	return 0;
}

static void
section_handshakes(void)
{
	double rate[2][MAX_RUNS], cpu[2][MAX_RUNS], mr[2], mc[2];
	static const char *const names[] = {"strata server \"tcp | tls\"",
	    "bufferevent_openssl_socket_new"};
	static const char *const keys[] = {"hs-strata", "hs-socket"};
	int k, r, use[2];

	for (k = 0; k < 2; k++)
		use[k] = !o.only || !strcmp(o.only, keys[k]);
	printf("\n2. Full TLS 1.3 handshakes (%s, ECDSA P-256, X25519, no "
	       "resumption), loopback TCP\n"
	       "   %d client thread(s) x %d sequential handshakes per run "
	       "(blocking OpenSSL), median of %d runs\n\n",
	    SUITE, o.clients, o.handshakes, o.runs);
	for (k = 0; k < 2; k++)
		if (use[k] && hs_run((enum server_kind)k, 100, &mr[k],
				  &mc[k]) < 0)
			die("handshake warm-up failed", names[k]);
	for (r = 0; r < o.runs; r++)
		for (k = 0; k < 2; k++)
			if (use[k] && hs_run((enum server_kind)k, o.handshakes,
					  &rate[k][r], &cpu[k][r]) < 0)
				die("handshake run failed", names[k]);
	printf("   %-34s %9s %14s %12s\n", "server", "hs/s", "server us/hs",
	    "hs/server-cpu-s");
	for (k = 0; k < 2; k++) {
		if (!use[k])
			continue;
		mr[k] = bench_median(rate[k], o.runs);
		mc[k] = bench_median(cpu[k], o.runs);
		printf("   %-34s %9.0f %14.1f %12.0f\n", names[k], mr[k],
		    mc[k] * 1e6, 1 / mc[k]);
	}
	if (use[0] && use[1])
		printf("\n   strata / bufferevent_openssl:      %8.3fx "
		       "(hs/s)  %.3fx (per server cpu-s)  >= 0.95 %s\n",
		    mr[0] / mr[1], mc[1] / mc[0],
		    verdict(mr[0] / mr[1], 0.95, 1));
}

/* ================= 3. memory per idle connection ================= */

struct idle {
	int established, errors;
	size_t traffic, received;
};

static void
idle_event(struct bufferevent *bev, short what, void *arg)
{
	struct idle *d = arg;

	if (what & BEV_EVENT_CONNECTED) {
		d->established++;
		bufferevent_write(bev, chunk, d->traffic ? d->traffic : 1);
		return;
	}
	d->errors++;
	bufferevent_free(bev);
}

static void
idle_read(struct bufferevent *bev, void *arg)
{
	struct idle *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	d->received += evbuffer_get_length(in);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void
idle_accept(struct server *s, struct bufferevent *bev)
{
	bufferevent_setcb(bev, idle_read, NULL, idle_event, s->arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/*
 * The reference row: what OpenSSL alone keeps per connection. A blocking
 * SSL on the accepted fd, with SSL_MODE_RELEASE_BUFFERS, does the same
 * exchange from the listener's callback, then only the SSL object stays:
 * no bufferevent, no evbuffer, no event. No server built on OpenSSL 3
 * can keep less per connection.
 */
struct raw_idle {
	struct idle *d;
	SSL_CTX *ctx;
	SSL **ssl;
	int n, cap;
};

static void
raw_accepted(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct raw_idle *r = arg;
	static unsigned char buf[CHUNK];
	size_t want, got = 0, n;
	SSL *ssl = SSL_new(r->ctx);

	(void)l;
	(void)sa;
	(void)salen;
	nodelay(fd);
	if (!ssl || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1)
		die("raw server: SSL_accept", NULL);
	for (want = r->d->traffic; got < want; got += n)
		if (SSL_read_ex(ssl, buf, sizeof(buf), &n) != 1)
			die("raw server: SSL_read", NULL);
	r->d->received += got;
	want = r->d->traffic ? r->d->traffic : 1;
	if (SSL_write_ex(ssl, chunk, want, &n) != 1 || n != want)
		die("raw server: SSL_write", NULL);
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 256;
		r->ssl = realloc(r->ssl, (size_t)r->cap * sizeof(*r->ssl));
		if (!r->ssl)
			die("out of memory", NULL);
	}
	r->ssl[r->n++] = ssl; /* kept open, as the others' connections */
	r->d->established++;
}

/* Listen for the raw variant; fills s->port. */
static void
raw_start(struct server *s, struct event_base *base, struct raw_idle *r)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->kind = SRV_RAW;
	s->ctx = r->ctx = server_ctx(0);
	SSL_CTX_set_mode(r->ctx, SSL_MODE_RELEASE_BUFFERS);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->el = evconnlistener_new_bind(base, raw_accepted, r,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
		LEV_OPT_LEAVE_SOCKETS_BLOCKING, 1024, (struct sockaddr *)&a,
	    sizeof(a));
	if (!s->el)
		die("evconnlistener_new_bind", strerror(errno));
	getsockname(evconnlistener_get_fd(s->el), (struct sockaddr *)&a,
	    &len);
	s->port = ntohs(a.sin_port);
}

static size_t
rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (!f || fscanf(f, "%lu %lu", &size, &res) != 2)
		die("cannot read /proc/self/statm", NULL);
	fclose(f);
	return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

static size_t
heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* The clients, in their own process: @p n TLS connections (OpenSSL
 * defaults), each sending @p traffic bytes and waiting for as many (or
 * one) from the server; then they stay open until the parent closes
 * @p hold. */
static void
idle_clients(int port, int n, size_t traffic, int ready, int hold)
{
	SSL_CTX *ctx = client_ctx(0);
	struct sockaddr_in a;
	int i;
	char ch;
	static unsigned char buf[CHUNK];

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		SSL *ssl;
		size_t got = 0;
		if (fd < 0 || connect(fd, (struct sockaddr *)&a,
				  sizeof(a)) < 0)
			_exit(2);
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_connect(ssl) != 1)
			_exit(3);
		if (traffic && (SSL_write_ex(ssl, chunk, traffic, &got) != 1 ||
				   got != traffic))
			_exit(3);
		for (got = 0; got < (traffic ? traffic : 1);) {
			size_t r = 0;
			if (SSL_read_ex(ssl, buf, sizeof(buf), &r) != 1)
				_exit(3);
			got += r;
		}
	}
	if (write(ready, "r", 1) != 1)
		_exit(4);
	if (read(hold, &ch, 1) < 0)
		_exit(4);
	_exit(0);
}

static void
idle_ready(evutil_socket_t fd, short what, void *arg)
{
	char b[4];

	(void)what;
	if (read(fd, b, sizeof(b)) > 0)
		*(int *)arg = 1;
}

/* In a fresh process: per-connection RSS and heap of @p k's server. */
static int
idle_measure(enum server_kind k, int n, size_t traffic, double *rss,
    double *heap)
{
	int res[2], ready[2], hold[2];
	double out[2];
	pid_t pid, cpid;
	int st;

	if (pipe(res) < 0)
		die("pipe", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		struct event_base *base = event_base_new();
		struct server s;
		struct idle d = {0, 0, traffic, 0};
		struct raw_idle raw = {&d, NULL, NULL, 0, 0};
		struct event *ev;
		size_t rss0, heap0;
		int up = 0, i;

		if (k == SRV_RAW)
			raw_start(&s, base, &raw);
		else
			server_start(&s, base, k, 0, idle_accept, &d);
		if (pipe(ready) < 0 || pipe(hold) < 0)
			_exit(5);
		ev = event_new(base, ready[0], EV_READ | EV_PERSIST,
		    idle_ready, &up);
		event_add(ev, NULL);
		/* let the loop and the listener settle first */
		event_base_loop(base, EVLOOP_NONBLOCK);
		rss0 = rss_bytes();
		heap0 = heap_bytes();
		cpid = fork();
		if (cpid == 0) {
			close(hold[1]);
			idle_clients(s.port, n, traffic, ready[1], hold[0]);
		}
		close(hold[0]);
		while (!up || d.established < n ||
		    d.received < (size_t)n * traffic) {
			if (d.errors)
				_exit(6);
			event_base_loop(base, EVLOOP_ONCE);
		}
		for (i = 0; i < 20; i++) /* the byte written to each */
			event_base_loop(base, EVLOOP_NONBLOCK);
		out[0] = ((double)rss_bytes() - (double)rss0) / n;
		out[1] = ((double)heap_bytes() - (double)heap0) / n;
		if (write(res[1], out, sizeof(out)) != sizeof(out))
			_exit(7);
		close(hold[1]);
		waitpid(cpid, &st, 0);
		_exit(0);
	}
	close(res[1]);
	st = read(res[0], out, sizeof(out)) == sizeof(out);
	close(res[0]);
	waitpid(pid, NULL, 0);
	if (!st)
		return -1;
	*rss = out[0];
	*heap = out[1];
	return 0;
}

static void
section_idle(void)
{
	static const char *const names[] = {"strata \"tcp | tls\" server",
	    "bufferevent_openssl_socket_new",
	    "OpenSSL alone (reference, below)"};
	static const char *const keys[] = {"idle-strata", "idle-socket",
	    "idle-openssl"};
	static const enum server_kind kinds[] = {SRV_STRATA, SRV_SOCKET,
	    SRV_RAW};
	static const size_t traffic[] = {0, 4096, CHUNK};
	double rss[3][MAX_RUNS], heap[3][MAX_RUNS], mr[3], mh[3];
	int k, r, t, runs = o.runs < 3 ? o.runs : 3, use[3];

	for (k = 0; k < 3; k++)
		use[k] = !o.only || !strcmp(o.only, keys[k]);
	printf("\n3. Memory per idle server connection, %d TLS connections "
	       "(OpenSSL client defaults: TLS 1.3),\n"
	       "   both servers with default settings, each run in a fresh "
	       "process, median of %d runs\n", o.idle, runs);
	for (t = 0; t < 3; t++) {
		if (traffic[t])
			printf("\n   %c) after %zu KiB each way, then idle%s\n\n",
			    'a' + t, traffic[t] / 1024, t == 1 ?
			    " (a small request and reply: the issue's \"about "
			    "31 KB\" baseline)" : "");
		else
			printf("\n   a) right after the handshake (and one byte "
			       "from the server)\n\n");
		for (r = 0; r < runs; r++)
			for (k = 0; k < 3; k++)
				if (use[k] && idle_measure(kinds[k], o.idle,
						  traffic[t], &rss[k][r],
						  &heap[k][r]) < 0)
					die("idle run failed", names[k]);
		printf("   %-34s %12s %12s\n", "server", "RSS bytes",
		    "heap bytes");
		for (k = 0; k < 3; k++) {
			if (!use[k])
				continue;
			mr[k] = bench_median(rss[k], runs);
			mh[k] = bench_median(heap[k], runs);
			printf("   %-34s %12.0f %12.0f\n", names[k], mr[k],
			    mh[k]);
		}
		if (use[0] && use[1])
			printf("   %-34s %11.3fx %11.3fx  <= 0.60 (RSS) %s\n",
			    "strata / bufferevent_openssl", mr[0] / mr[1],
			    mh[0] / mh[1], verdict(mr[0] / mr[1], 0.6, 0));
		if (use[1] && use[2])
			printf("   %-34s %11.3fx %11.3fx\n",
			    "OpenSSL alone / bufferevent_openssl",
			    mr[2] / mr[1], mh[2] / mh[1]);
	}
	if (use[2])
		printf("\n   OpenSSL alone: a blocking SSL per accepted fd with "
		       "SSL_MODE_RELEASE_BUFFERS, the same\n"
		       "   exchange, then nothing but the SSL object kept: the "
		       "least any server on OpenSSL 3 keeps.\n");
}

/* ================= main ================= */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bench-tls [-s MIB] [-r RUNS] [-n HANDSHAKES] [-k CLIENTS] "
	    "[-c CONNS] [-S SECTION] [-x VARIANT]\n"
	    "  -s MIB        bulk bytes per run (default 1024)\n"
	    "  -r RUNS       runs per median (default 5, at most %d; section 3 "
	    "uses at most 3)\n"
	    "  -n N          handshakes per client per run (default 1000)\n"
	    "  -k N          handshake client threads (default 1, at most 8)\n"
	    "  -c N          idle connections (default 2000)\n"
	    "  -S N          only section N (1 bulk, 2 handshakes, 3 memory)\n"
	    "  -x NAME       one variant: strata, socket, filter (section 1), "
	    "hs-strata,\n"
	    "                hs-socket (section 2), idle-strata, idle-socket, "
	    "idle-openssl\n                (section 3)\n", MAX_RUNS);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	time_t now = time(NULL);
	char when[32];
	int c;

	while ((c = getopt(argc, argv, "s:r:n:k:c:S:x:h")) != -1) {
		switch (c) {
		case 's': o.bulk_mib = (size_t)strtoul(optarg, NULL, 10); break;
		case 'r': o.runs = atoi(optarg); break;
		case 'n': o.handshakes = atoi(optarg); break;
		case 'k': o.clients = atoi(optarg); break;
		case 'c': o.idle = atoi(optarg); break;
		case 'S': o.section = atoi(optarg); break;
		case 'x': o.only = optarg; break;
		default: usage();
		}
	}
	if (!o.bulk_mib || o.runs < 1 || o.runs > MAX_RUNS ||
	    o.handshakes < 1 || o.clients < 1 || o.clients > 8 || o.idle < 1)
		usage();
	signal(SIGPIPE, SIG_IGN);
	/* as strata-bench: a warm heap, not trimmed and re-faulted */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(chunk, 'x', sizeof(chunk));
	make_cert();
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M", gmtime(&now));
	printf("bench-tls %s  %s UTC  libevent %s  %s\n", strata_version(),
	    when, event_get_version(), OpenSSL_version(OPENSSL_VERSION));
	fflush(stdout);
	if (!o.section || o.section == 1)
		section_bulk();
	fflush(stdout);
	if (!o.section || o.section == 2)
		section_handshakes();
	fflush(stdout);
	if (!o.section || o.section == 3)
		section_idle();
	cleanup_cert();
	return 0;
}
