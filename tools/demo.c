/*
 * strata demo: in one process, on loopback, with an ephemeral self-signed
 * certificate and a pinned key, a text goes through tcp | tls | zlib |
 * lines and back, is checked byte for byte, and every layer's statistics
 * are printed with the equivalent listen and connect command lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "strata/strata.h"
#include "tool.h"

static struct event_base *base;

static double
elapsed(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	    (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/*
 * An ephemeral P-256 key and self-signed certificate for "localhost" in
 * @p dir (cert.pem, key.pem), and the SHA-256 pin of its public key (hex),
 * so the demo's client trusts exactly that key.
 */
static int
demo_cert(const char *dir, char pin[65])
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL, md[32];
	char path[512];
	FILE *f;
	int len, i, ok = 0;

	if (!key || !x)
		goto out;
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (!X509_sign(x, key, EVP_sha256()))
		goto out;
	snprintf(path, sizeof(path), "%s/cert.pem", dir);
	if (!(f = fopen(path, "w")) || !PEM_write_X509(f, x))
		goto close;
	fclose(f);
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	if (!(f = fopen(path, "w")) ||
	    !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
		goto close;
	len = i2d_PUBKEY(key, &der);
	if (len <= 0 || !SHA256(der, (size_t)len, md))
		goto close;
	for (i = 0; i < 32; i++)
		snprintf(pin + 2 * i, 3, "%02x", md[i]);
	ok = 1;
close:
	if (f)
		fclose(f);
out:
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(key);
	return ok ? 0 : -1;
}

struct demo {
	struct bufferevent *client, *server;
	struct evbuffer *text;	/* what was sent */
	size_t size, sent, got, echoed;
	int bad, done, failed;
	struct timespec start;
};

static void
demo_server_read(struct bufferevent *bev, void *arg)
{
	struct demo *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	d->echoed += evbuffer_get_length(in);
	bufferevent_write_buffer(bev, in); /* echo, line by line */
}

static void
demo_event(struct bufferevent *bev, short what, void *arg)
{
	struct demo *d = arg;

	if (what & BEV_EVENT_ERROR) {
		fprintf(stderr, "strata demo: %s\n", strata_last_error(bev)
		    ? strata_last_error(bev) : "error");
		d->failed = 1;
		event_base_loopexit(base, NULL);
	} else if (what & BEV_EVENT_EOF && bev == d->server)
		bufferevent_flush(bev, EV_WRITE, BEV_FINISHED);
	else if (what & BEV_EVENT_EOF) {
		d->done = 1;
		event_base_loopexit(base, NULL);
	}
}

/* The echo comes back: compare with what was sent, byte for byte. */
static void
demo_client_read(struct bufferevent *bev, void *arg)
{
	struct demo *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char buf[4096], want[4096];
	struct evbuffer_ptr p;
	size_t k;

	while ((k = evbuffer_get_length(in)) > 0) {
		if (k > sizeof(buf))
			k = sizeof(buf);
		evbuffer_remove(in, buf, k);
		if (d->got + k > d->size ||
		    evbuffer_ptr_set(d->text, &p, d->got, EVBUFFER_PTR_SET) < 0 ||
		    evbuffer_copyout_from(d->text, &p, want, k) !=
			(ev_ssize_t)k || memcmp(want, buf, k))
			d->bad = 1;
		d->got += k;
	}
}

static void
demo_client_event(struct bufferevent *bev, short what, void *arg)
{
	struct demo *d = arg;

	if (what & BEV_EVENT_CONNECTED) {
		/* send it all, then end our direction: the echo keeps going */
		evbuffer_add_buffer_reference(bufferevent_get_output(bev),
		    d->text);
		d->sent = d->size;
		bufferevent_flush(bev, EV_WRITE, BEV_FINISHED);
		return;
	}
	demo_event(bev, what, arg);
}

static void
demo_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct demo *d = arg;

	(void)l;
	d->server = top;
	bufferevent_setcb(top, demo_server_read, NULL, demo_event, d);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
demo_text(struct evbuffer *b, size_t size)
{
	static const char *words[] = {"stream", "filter", "layer", "libevent",
	    "bufferevent", "compressed", "encrypted", "line", "strata",
	    "handshake", "record", "window"};
	size_t n = 0;
	unsigned long i = 0;

	while (n < size) {
		char line[160];
		int k = snprintf(line, sizeof(line), "%08lu %s %s %s %s\n", i,
		    words[i % 12], words[(i / 12) % 12], words[(i * 7) % 12],
		    words[(i * 5 + 3) % 12]);
		evbuffer_add(b, line, (size_t)k);
		n += (size_t)k;
		i++;
	}
}

int
demo_run(struct event_base *b, int argc, char **argv)
{
	char dir[] = "/tmp/strata-demo-XXXXXX", pin[65], sstack[1024];
	char cstack[512], addr[128], table[4096];
	struct strata_listener *l;
	struct strata_error err;
	struct demo d;
	double secs;
	int port;

	(void)argv;
	base = b;
	memset(&d, 0, sizeof(d));
	d.size = argc ? 0 : 4u << 20;
	if (!mkdtemp(dir) || demo_cert(dir, pin) < 0) {
		fprintf(stderr, "strata demo: cannot make a certificate\n");
		return EXIT_FAILURE_;
	}
	snprintf(sstack, sizeof(sstack), "tcp://127.0.0.1:0 | tls(cert=%s/"
	    "cert.pem, key=%s/key.pem) | zlib | lines", dir, dir);
	printf("strata demo: a text through tcp | tls | zlib | lines on "
	       "loopback, echoed back and checked\n\n");
	if (!(l = strata_listen(base, sstack, BEV_OPT_CLOSE_ON_FREE,
		  demo_accept, &d, &err))) {
		fprintf(stderr, "strata demo: %s\n", err.message);
		return EXIT_CONNECT;
	}
	port = strata_listener_port(l);
	snprintf(cstack, sizeof(cstack), "tcp://127.0.0.1:%d | tls(pin="
	    "sha256:%s) | zlib | lines", port, pin);
	d.text = evbuffer_new();
	demo_text(d.text, d.size);
	d.size = evbuffer_get_length(d.text);
	clock_gettime(CLOCK_MONOTONIC, &d.start);
	d.client = strata_connect(base, NULL, cstack, BEV_OPT_CLOSE_ON_FREE,
	    &err);
	if (!d.client) {
		fprintf(stderr, "strata demo: %s\n", err.message);
		return EXIT_CONNECT;
	}
	bufferevent_setcb(d.client, demo_client_read, NULL,
	    demo_client_event, &d);
	bufferevent_enable(d.client, EV_READ | EV_WRITE);
	{
		struct timeval limit = {30, 0};
		event_base_loopexit(base, &limit);
	}
	event_base_dispatch(base);
	secs = elapsed(&d.start);
	printf("  server stack: %s\n  client stack: %s\n\n", sstack, cstack);
	printf("  sent %zu bytes of text, got %zu back: %s\n", d.size, d.got,
	    !d.failed && !d.bad && d.got == d.size ? "OK, identical"
						   : "FAIL");
	printf("  %.3f s, %.1f MB/s each way\n\n", secs,
	    (double)d.size / secs / 1e6);
	if (d.client && strata_stats_format(d.client, table, sizeof(table)) > 0)
		printf("client, from the top down (bytes in -> out per "
		       "direction):\n%s\n", table);
	if (d.server && strata_stats_format(d.server, table, sizeof(table)) > 0)
		printf("server:\n%s\n", table);
	strata_listener_address(l, addr, sizeof(addr), NULL, NULL);
	printf("the same with two processes:\n"
	       "  strata listen \"tcp://127.0.0.1:7000 | tls(cert=%s/cert.pem, "
	       "key=%s/key.pem) | zlib | lines\" --echo\n"
	       "  strata connect \"tcp://127.0.0.1:7000 | tls(pin=sha256:%s) | "
	       "zlib | lines\" < file.txt\n", dir, dir, pin);
	if (d.client)
		bufferevent_free(d.client);
	if (d.server)
		bufferevent_free(d.server);
	strata_listener_free(l);
	evbuffer_free(d.text);
	return !d.failed && !d.bad && d.got == d.size ? EXIT_OK
						      : EXIT_FAILURE_;
}
