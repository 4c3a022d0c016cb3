/*
 * https-server: libevent's HTTP server over a strata TLS stack.
 *
 *   https-server [PORT [CERT KEY]]
 *
 * evhttp makes each connection's bufferevent through the callback set
 * with evhttp_set_bevcb(); here that callback puts a strata "tls" layer
 * (in the server role) on a plain socket bufferevent and hands evhttp the
 * top. evhttp then sets the accepted fd on it (libevent passes
 * bufferevent_setfd() on a filter down to its socket) and speaks HTTP
 * over TLS without knowing it. Without CERT and KEY the server makes a
 * throwaway self-signed certificate for localhost.
 *
 *   curl --cacert chain.pem https://localhost:8443/
 *   curl -k https://localhost:8443/          (self-signed)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include <strata/strata.h>

static struct bufferevent *
make_tls_bev(struct event_base *base, void *arg)
{
	const char *filters = arg;
	struct strata_error err;
	struct bufferevent *bev, *top;

	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL;
	/* each connection parses the filter list again (and loads the
	 * certificate files): fine for an example */
	top = strata_push(bev, filters, BEV_OPT_CLOSE_ON_FREE |
	    STRATA_OPT_SERVER, &err);
	if (!top) {
		fprintf(stderr, "https-server: %s\n", err.message);
		bufferevent_free(bev);
	}
	return top;
}

/* "/" answers with the connection's TLS details. */
static void
on_request(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct bufferevent *top = evhttp_connection_get_bufferevent(conn);
	struct evbuffer *body = evbuffer_new();
	char tls[512] = "";

	(void)arg;
	if (!body) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	strata_layer_describe(top, 1, tls, sizeof(tls));
	evbuffer_add_printf(body, "hello from evhttp over strata\n%s\n", tls);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 8443;
	char filters[1024];
	struct event_base *base;
	struct evhttp *http;
	struct event *sigint;

	if (argc == 4)
		snprintf(filters, sizeof(filters),
		    "tls(cert=\"%s\", key=\"%s\", alpn=http/1.1)", argv[2],
		    argv[3]);
	else if (argc <= 2)
		snprintf(filters, sizeof(filters),
		    "tls(cert=self-signed, alpn=http/1.1)");
	else {
		fprintf(stderr, "usage: https-server [PORT [CERT KEY]]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!(base = event_base_new()) || !(http = evhttp_new(base)))
		return 1;
	evhttp_set_bevcb(http, make_tls_bev, filters);
	evhttp_set_gencb(http, on_request, NULL);
	if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)port) < 0) {
		fprintf(stderr, "https-server: cannot listen on port %d\n",
		    port);
		return 1;
	}
	printf("listening on https://localhost:%d/\n", port);
	fflush(stdout);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	event_add(sigint, NULL);
	event_base_dispatch(base);
	event_free(sigint);
	evhttp_free(http);
	event_base_free(base);
	return 0;
}
