/*
 * gen-tls-seeds: record real TLS peers against the stacks of the
 * tls-server and tls-client fuzz targets, as seeds for them.
 *
 *   gen-tls-seeds SERVER-CORPUS-DIR CLIENT-CORPUS-DIR
 *
 * For each scenario a child process runs the peer (a strata stack with
 * its own, real, RNG) on one end of a socketpair; this process runs the
 * target's stack exactly as the fuzz target builds it (fz_tls_filters,
 * fz_rand_reset, over a bufferevent pair) and relays the wire between the
 * pair and the socket, writing down every byte the peer sent. That file,
 * fed to the target, makes the same stack (the same "random" numbers)
 * finish the same handshake, read the peer's data and its close_notify.
 *
 * Rerun it when OpenSSL or fz_tls_filters changes (an old recording then
 * only gets as far as the first message that depends on the stack's keys).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

struct scenario {
	const char *name;
	int target_server; /* the target is the server (peer: client) */
	const char *peer;  /* the peer's extra tls options */
};

static const struct scenario scenarios[] = {
    /* peers of the server target: clients */
    {"tls13-client-cert", 1,
	"cert=%s/client.pem, key=%s/client.key, "
	"alpn=h2"},
    {"tls13-no-cert", 1, "alpn=http/1.1"},
    {"tls12-client-cert", 1,
	"max=1.2, cert=%s/client.pem, "
	"key=%s/client.key"},
    {"tls12-chacha", 1, "max=1.2, ciphers=ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"tls13-chacha-p256", 1,
	"ciphersuites=TLS_CHACHA20_POLY1305_SHA256, "
	"groups=P-256"},
    /* peers of the client target: servers */
    {"tls13", 0, "alpn=h2;http/1.1"},
    {"tls13-cert-request", 0, "verify=optional, ca=%s/ca.pem"},
    {"tls13-hello-retry", 0, "groups=P-256"},
    {"tls12", 0, "max=1.2"},
    {"tls12-cert-request", 0, "max=1.2, verify=required, ca=%s/ca.pem"},
};

/* ---- the peer, in the child ---- */

struct peer {
	struct event_base *base;
	int done, connected;
};

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct peer *p = arg;

	if (what & BEV_EVENT_CONNECTED) {
		p->connected = 1;
		bufferevent_write(bev, "hello from the peer\n", 20);
		/* then close_notify and the end of the stream */
		bufferevent_flush(bev, EV_WRITE, BEV_FINISHED);
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (what & BEV_EVENT_ERROR)
			fprintf(stderr, "peer: %s\n", strata_last_error(bev));
		p->done = 1;
	}
}

static void
peer_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

static int
run_peer(const struct scenario *sc, int fd)
{
	const char *d = fz_data_dir();
	struct peer p = {fz_base_new(), 0, 0};
	struct bufferevent *sock, *top;
	struct strata_error err;
	char extra[512], filters[1024];
	int i;

	snprintf(extra, sizeof(extra), sc->peer, d, d);
	if (sc->target_server)
		snprintf(filters, sizeof(filters),
		    "tls(ca=%s/ca.pem, "
		    "name=localhost, resume=no, %s)",
		    d, extra);
	else
		snprintf(filters, sizeof(filters),
		    "tls(cert=%s/server.pem, "
		    "key=%s/server.key, %s)",
		    d, d, extra);
	sock = bufferevent_socket_new(p.base, fd, BEV_OPT_CLOSE_ON_FREE);
	top = strata_push(sock, filters,
	    BEV_OPT_CLOSE_ON_FREE | (sc->target_server ? 0 : STRATA_OPT_SERVER),
	    &err);
	if (!top) {
		fprintf(stderr, "peer: %s: %s\n", filters, err.message);
		return 1;
	}
	bufferevent_setcb(top, peer_read, NULL, peer_event, &p);
	bufferevent_enable(top, EV_READ | EV_WRITE);
	for (i = 0; i < 500 && !p.done; i++) {
		struct timeval tv = {0, 10000};
		event_base_loopexit(p.base, &tv);
		event_base_dispatch(p.base);
	}
	bufferevent_free(top);
	event_base_free(p.base);
	return p.connected ? 0 : 1;
}

/* ---- the target's stack, here ---- */

struct relay {
	struct fz_stack s;
	struct bufferevent *sock;
	struct evbuffer *rec;
	int peer_eof;
};

static void
sock_read(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	evbuffer_add(r->rec, evbuffer_pullup(in, -1), evbuffer_get_length(in));
	bufferevent_write_buffer(r->s.pair[0], in);
}

static void
sock_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay *r = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		r->peer_eof = 1;
}

static int
record(const struct scenario *sc, const char *dir)
{
	struct relay r;
	char filters[1024], path[4096];
	int sv[2], status, i;
	pid_t pid;
	FILE *f;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		close(sv[0]);
		_exit(run_peer(sc, sv[1]));
	}
	close(sv[1]);
	memset(&r, 0, sizeof(r));
	fz_tls_filters(sc->target_server, filters, sizeof(filters));
	/* exactly as the fuzz target: reset, then build */
	fz_rand_reset();
	if (fz_stack_open(
		&r.s, filters, sc->target_server ? STRATA_OPT_SERVER : 0) < 0) {
		fprintf(stderr, "%s: %s\n", filters, r.s.errmsg);
		return -1;
	}
	bufferevent_write(r.s.top, "ping\n", 5);
	r.rec = evbuffer_new();
	evutil_make_socket_nonblocking(sv[0]);
	r.sock = bufferevent_socket_new(r.s.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r.sock, sock_read, NULL, sock_event, &r);
	bufferevent_enable(r.sock, EV_READ | EV_WRITE);
	for (i = 0; i < 2000 && !r.peer_eof; i++) {
		struct timeval tv = {0, 5000};
		/* what the stack sent goes to the peer */
		bufferevent_write_buffer(r.sock, r.s.wire);
		event_base_loopexit(r.s.base, &tv);
		event_base_dispatch(r.s.base);
		fz_stack_pump(&r.s);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, sc->name);
	f = fopen(path, "wb");
	if (!f ||
	    fwrite(evbuffer_pullup(r.rec, -1), 1, evbuffer_get_length(r.rec),
		f) != evbuffer_get_length(r.rec) ||
	    fclose(f) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	printf(
	    "%s: %zu bytes from the peer; the target %s, got %zu bytes%s%s\n",
	    path, evbuffer_get_length(r.rec),
	    r.s.connected ? "connected" : "did not connect",
	    evbuffer_get_length(r.s.got), r.s.error ? ", error: " : "",
	    r.s.error ? r.s.errmsg : "");
	bufferevent_free(r.sock);
	evbuffer_free(r.rec);
	fz_stack_close(&r.s);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	size_t i;
	int rc = 0;

	if (argc != 3) {
		fprintf(stderr,
		    "usage: %s SERVER-CORPUS-DIR "
		    "CLIENT-CORPUS-DIR\n",
		    argv[0]);
		return 2;
	}
	fz_init();
	for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (record(&scenarios[i],
			scenarios[i].target_server ? argv[1] : argv[2]) < 0) {
			fprintf(stderr, "%s: failed\n", scenarios[i].name);
			rc = 1;
		}
	return rc;
}
