/*
 * strata: the command-line tool. Stacks from the command line, no C:
 *
 *   strata proxy LISTEN_STACK TARGET_STACK   relay each connection
 *   strata connect STACK                     stdin/stdout through a stack
 *   strata listen STACK [--echo | --exec C]  serve connections
 *   strata plugins                           transports and filters
 *
 * Relays keep back-pressure end to end (a side's reading stops while the
 * other side's output is full) and half-close per direction (EOF on one
 * side ends only that direction: the other side's filters finish and its
 * write side shuts down, while the reverse direction keeps flowing).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/* Exit codes (documented in --help and strata.1). */
enum {
	EXIT_OK = 0,
	EXIT_FAILURE_ = 1, /* a connection failed or ended with an error */
	EXIT_USAGE = 2,	   /* bad command line or stack string */
	EXIT_CONNECT = 3,  /* could not connect or listen */
};

/* Output of one side above this pauses reading on the other. */
#define RELAY_HIGH (256 * 1024)
#define RELAY_LOW (64 * 1024)

struct opts {
	int verbose, quiet, stats, echo, json;
	const char *exec_cmd;
	struct timeval idle_timeout, drain_timeout;
	unsigned long max_conns;
	uint64_t rate, rate_total;
};

static struct opts o = {
	.drain_timeout = {30, 0},
};
static struct event_base *base;
static struct evdns_base *dns;
static int exit_code = EXIT_OK;
static unsigned long conn_serial;

/* Serving state of proxy and listen: connection count, limits, drain. */
static struct {
	struct strata_listener *l;
	const char *stack;	/* the listening stack string */
	unsigned long live;
	int draining;
	struct ev_token_bucket_cfg *rate;
	struct ev_token_bucket_cfg *rate_total_cfg;
	struct bufferevent_rate_limit_group *total;
} srv;

static void
logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* level 0: errors (always), 1: normal, 2: -v */
static void
logmsg(int level, const char *fmt, ...)
{
	va_list ap;

	if ((o.quiet && level > 0) || level > 1 + o.verbose)
		return;
	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- relaying two stacks ---- */

struct side {
	struct bufferevent *bev;
	struct relay *r;
	struct side *peer;
	const char *name;	/* "client", "target", ... */
	const char *stack;	/* its stack string, for the log */
	char peer_addr[128];	/* its peer address, for the log */
	int eof;		/* this side's input ended */
	int done;		/* its output was finished towards it */
	uint64_t bytes_in;	/* read from this side */
};

struct relay {
	unsigned long id;
	struct side s[2];
	struct timespec start;
	int closing;
	int failed;
	int pending;	/* closes still running */
	char why[STRATA_ERROR_MAX + 32];
	void (*on_end)(struct relay *r);
};

static double
elapsed(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	    (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void
print_stats(const char *what, struct bufferevent *bev)
{
	char buf[4096];

	if (bev && strata_stats_format(bev, buf, sizeof(buf)) > 0)
		fprintf(stderr, "%s:\n%s", what, buf);
}

/* Both sides' graceful closes finished: the relay is over. */
static void
relay_closed(int delivered, void *arg)
{
	struct relay *r = arg;

	if (!delivered && !r->failed) {
		r->failed = 1;
		if (exit_code == EXIT_OK)
			exit_code = EXIT_FAILURE_;
	}
	if (--r->pending)
		return;
	if (r->on_end)
		r->on_end(r);
	free(r);
}

/* Wire bytes of a stack (its transport's counters), or 0. */
static void
wire_bytes(struct bufferevent *bev, uint64_t *in, uint64_t *out)
{
	struct strata_layer_stats st;

	*in = *out = 0;
	if (strata_stats(bev, &st, 1) > 0) {
		*in = st.read_in;
		*out = st.write_out;
	}
}

/* Write @p s as a JSON string (quotes, backslashes, controls escaped). */
static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/*
 * One line per connection when it ends: the peer, both stacks, bytes each
 * way at the wire and at the top, duration, and how it ended (with the
 * layer's message on errors). Text, or JSON with --log-format=json.
 */
static void
relay_log(struct relay *r)
{
	uint64_t win[2], wout[2];
	const char *how = r->failed ? r->why : "closed";
	int i;

	if (o.quiet && !r->failed)
		return;
	for (i = 0; i < 2; i++)
		wire_bytes(r->s[i].bev, &win[i], &wout[i]);
	if (o.json) {
		printf("{\"conn\":%lu,\"peer\":", r->id);
		json_str(stdout, r->s[0].peer_addr);
		for (i = 0; i < 2; i++) {
			printf(",\"%s\":{\"stack\":", r->s[i].name);
			json_str(stdout, r->s[i].stack);
			printf(",\"top_in\":%llu,\"wire_in\":%llu,"
			       "\"wire_out\":%llu}",
			    (unsigned long long)r->s[i].bytes_in,
			    (unsigned long long)win[i],
			    (unsigned long long)wout[i]);
		}
		printf(",\"seconds\":%.3f,\"ok\":%s,\"end\":",
		    elapsed(&r->start), r->failed ? "false" : "true");
		json_str(stdout, how);
		printf("}\n");
		fflush(stdout);
		return;
	}
	logmsg(r->failed ? 0 : 1,
	    "#%lu %s %.3fs %s [%s] -> %s [%s]: top %llu/%llu bytes, wire "
	    "%llu/%llu in, %llu/%llu out: %s",
	    r->id, r->s[0].peer_addr, elapsed(&r->start), r->s[0].name,
	    r->s[0].stack, r->s[1].name, r->s[1].stack,
	    (unsigned long long)r->s[0].bytes_in,
	    (unsigned long long)r->s[1].bytes_in,
	    (unsigned long long)win[0], (unsigned long long)win[1],
	    (unsigned long long)wout[0], (unsigned long long)wout[1], how);
}

static void
relay_end(struct relay *r)
{
	int i;

	relay_log(r);
	if (r->failed && exit_code == EXIT_OK)
		exit_code = EXIT_FAILURE_;
	r->pending = 2;
	for (i = 0; i < 2; i++) {
		struct bufferevent *bev = r->s[i].bev;
		if (o.stats || o.verbose)
			print_stats(r->s[i].name, bev);
		/* graceful: what is still queued towards a side gets there */
		if (r->failed || strata_close(bev, NULL, relay_closed, r) < 0) {
			bufferevent_free(bev);
			relay_closed(1, r);
		}
	}
}

/* Move what @p from read to its peer's output; pause when that is full. */
static void
relay_move(struct side *from)
{
	struct evbuffer *in = bufferevent_get_input(from->bev);
	struct side *to = from->peer;

	from->bytes_in += evbuffer_get_length(in);
	if (to->done) { /* the peer's write side is over: drop */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	bufferevent_write_buffer(to->bev, in);
	if (evbuffer_get_length(bufferevent_get_output(to->bev)) >=
	    RELAY_HIGH)
		bufferevent_disable(from->bev, EV_READ);
}

static void
relay_read(struct bufferevent *bev, void *arg)
{
	relay_move(arg);
}

/* The peer's output drained below the low mark: resume reading. */
static void
relay_write(struct bufferevent *bev, void *arg)
{
	struct side *s = arg;

	if (!s->peer->eof && !s->r->closing)
		bufferevent_enable(s->peer->bev, EV_READ);
}

static void
relay_fail(struct relay *r, struct side *s, const char *what)
{
	const char *msg = strata_last_error(s->bev);

	r->failed = 1;
	snprintf(r->why, sizeof(r->why), "%s %s: %s", s->name, what,
	    msg ? msg : "error");
	r->closing = 1;
	relay_end(r);
}

/* Half-close: @p s ended its input; end that direction towards its peer. */
static void
relay_half_close(struct side *s)
{
	struct side *to = s->peer;

	s->eof = 1;
	relay_move(s);
	if (!to->done) {
		to->done = 1;
		bufferevent_flush(to->bev, EV_WRITE, BEV_FINISHED);
	}
	if (to->eof) {
		s->r->closing = 1;
		relay_end(s->r);
	}
}

static void
relay_event(struct bufferevent *bev, short what, void *arg)
{
	struct side *s = arg;

	if (what & BEV_EVENT_CONNECTED) {
		logmsg(2, "#%lu %s connected", s->r->id, s->name);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		logmsg(2, "#%lu %s: end of stream", s->r->id, s->name);
		relay_half_close(s);
	} else if (what & BEV_EVENT_TIMEOUT)
		relay_fail(s->r, s, "timed out");
	else if (what & BEV_EVENT_ERROR)
		relay_fail(s->r, s, "failed");
}

/* --rate on each stack, --rate-total for all together. */
static void
apply_limits(struct bufferevent *bev)
{
	if (srv.rate)
		strata_set_rate_limit(bev, srv.rate);
	if (srv.total)
		strata_set_rate_limit_group(bev, srv.total);
}

static struct relay *
relay_new(struct bufferevent *a, const char *an, const char *astack,
    struct bufferevent *b, const char *bn, const char *bstack)
{
	struct relay *r = calloc(1, sizeof(*r));
	int i;

	if (!r)
		return NULL;
	r->s[0].stack = astack;
	r->s[1].stack = bstack;
	r->id = ++conn_serial;
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	r->s[0].bev = a;
	r->s[0].name = an;
	r->s[1].bev = b;
	r->s[1].name = bn;
	for (i = 0; i < 2; i++) {
		struct side *s = &r->s[i];
		s->r = r;
		s->peer = &r->s[1 - i];
		if (strata_peer_address(s->bev, s->peer_addr,
			sizeof(s->peer_addr), NULL, NULL) < 0)
			snprintf(s->peer_addr, sizeof(s->peer_addr), "-");
		bufferevent_setcb(s->bev, relay_read, relay_write, relay_event,
		    s);
		bufferevent_setwatermark(s->bev, EV_WRITE, RELAY_LOW, 0);
		if (o.idle_timeout.tv_sec || o.idle_timeout.tv_usec)
			strata_set_timeouts(s->bev, &o.idle_timeout, NULL);
		apply_limits(s->bev);
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	}
	return r;
}

/* ---- stack strings on the command line ---- */

/* Print the string with a caret under the position of the error. */
static void
stack_error(const char *stack, const struct strata_error *err)
{
	fprintf(stderr, "strata: %s\n", err->message);
	if (err->code == STRATA_ERR_SYNTAX || err->code == STRATA_ERR_OPTION ||
	    err->code == STRATA_ERR_UNKNOWN) {
		fprintf(stderr, "  %s\n  %*s^\n", stack, (int)err->position,
		    "");
	}
}

static int
is_usage_error(const struct strata_error *err)
{
	return err->code == STRATA_ERR_SYNTAX ||
	    err->code == STRATA_ERR_OPTION || err->code == STRATA_ERR_UNKNOWN;
}

static struct bufferevent *
connect_stack(const char *stack)
{
	struct strata_error err;
	struct bufferevent *bev = strata_connect(base, dns, stack,
	    BEV_OPT_CLOSE_ON_FREE, &err);

	if (!bev) {
		stack_error(stack, &err);
		exit_code = is_usage_error(&err) ? EXIT_USAGE : EXIT_CONNECT;
	}
	return bev;
}

/* ---- serving: admission, release, graceful stop ---- */

static struct strata_listener *
listen_stack(const char *stack, strata_accept_fn cb, void *arg)
{
	struct strata_error err;
	struct strata_listener *l = strata_listen(base, stack,
	    BEV_OPT_CLOSE_ON_FREE, cb, arg, &err);
	char addr[256];

	if (!l) {
		stack_error(stack, &err);
		exit_code = is_usage_error(&err) ? EXIT_USAGE : EXIT_CONNECT;
		return NULL;
	}
	if (strata_listener_address(l, addr, sizeof(addr), NULL, NULL) > 0)
		logmsg(1, "listening on %s", addr);
	return l;
}


/* A connection may start unless --max-conns are live (then refused). */
static int
admit(struct bufferevent *top)
{
	char peer[128] = "?";

	if (srv.draining || (o.max_conns && srv.live >= o.max_conns)) {
		strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
		logmsg(1, "refused %s: %s", peer, srv.draining
		    ? "shutting down" : "--max-conns reached");
		bufferevent_free(top);
		return 0;
	}
	srv.live++;
	return 1;
}

static void
release(void)
{
	if (srv.live)
		srv.live--;
	if (srv.draining && !srv.live)
		event_base_loopexit(base, NULL);
}

static void
relay_released(struct relay *r)
{
	(void)r;
	release();
}

/* SIGTERM/SIGINT: stop accepting, let connections finish within
 * --drain-timeout; a second signal exits at once. */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (srv.draining) {
		logmsg(1, "second signal: exiting now");
		event_base_loopbreak(base);
		return;
	}
	srv.draining = 1;
	logmsg(1, "signal %d: no new connections; %lu still running, "
		  "waiting up to %ld s", (int)sig, srv.live,
	    (long)o.drain_timeout.tv_sec);
	strata_listener_free(srv.l);
	srv.l = NULL;
	if (!srv.live)
		event_base_loopexit(base, NULL);
	else
		event_base_loopexit(base, &o.drain_timeout);
}

/* Listen, run until a signal drains the server, clean up. */
static int
serve(const char *stack, strata_accept_fn cb, void *arg)
{
	struct event *sig[2];
	int i;

	srv.stack = stack;
	if (!(srv.l = listen_stack(stack, cb, arg)))
		return exit_code;
	sig[0] = evsignal_new(base, SIGTERM, on_signal, NULL);
	sig[1] = evsignal_new(base, SIGINT, on_signal, NULL);
	for (i = 0; i < 2; i++)
		if (sig[i])
			evsignal_add(sig[i], NULL);
	event_base_dispatch(base);
	for (i = 0; i < 2; i++)
		if (sig[i])
			event_free(sig[i]);
	strata_listener_free(srv.l);
	srv.l = NULL;
	return exit_code;
}

/* ---- strata proxy ---- */

struct proxy {
	const char *target;
};

static void
proxy_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct proxy *p = arg;
	struct bufferevent *t;
	char peer[128] = "?";

	struct relay *r;

	(void)l;
	if (!admit(top))
		return;
	strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
	t = connect_stack(p->target);
	if (!t) {
		logmsg(0, "connection from %s: cannot start %s", peer,
		    p->target);
		exit_code = EXIT_OK; /* the proxy keeps serving */
		bufferevent_free(top);
		release();
		return;
	}
	if (!(r = relay_new(top, "client", srv.stack, t, "target",
		  p->target))) {
		bufferevent_free(top);
		bufferevent_free(t);
		release();
		return;
	}
	r->on_end = relay_released;
	logmsg(1, "#%lu accepted from %s", conn_serial, peer);
}

static int
cmd_proxy(int argc, char **argv)
{
	struct proxy p;

	if (argc != 2) {
		fprintf(stderr, "usage: strata proxy [options] LISTEN_STACK "
				"TARGET_STACK\n");
		return EXIT_USAGE;
	}
	p.target = argv[1];
	return serve(argv[0], proxy_accept, &p);
}

/* ---- strata connect: stdin/stdout through a stack ---- */

static void
end_loop(struct relay *r)
{
	(void)r;
	event_base_loopexit(base, NULL);
}

static struct bufferevent *
stdio_stack(void)
{
	struct strata_error err;
	struct bufferevent *bev = strata_connect(base, NULL, "pipe:stdio", 0,
	    &err);

	if (!bev)
		logmsg(0, "standard input/output: %s", err.message);
	return bev;
}

static int
cmd_connect(int argc, char **argv)
{
	struct bufferevent *net, *io;
	struct relay *r;

	if (argc != 1) {
		fprintf(stderr, "usage: strata connect [options] STACK\n");
		return EXIT_USAGE;
	}
	if (!(net = connect_stack(argv[0])))
		return exit_code;
	if (!(io = stdio_stack())) {
		bufferevent_free(net);
		return EXIT_FAILURE_;
	}
	if (!(r = relay_new(io, "stdio", "pipe:stdio", net, "remote",
		  argv[0])))
		return EXIT_FAILURE_;
	r->on_end = end_loop;
	event_base_dispatch(base);
	return exit_code;
}

/* ---- strata listen ---- */

static void
echo_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void
echo_closed(int delivered, void *arg)
{
	(void)delivered;
	(void)arg;
	release();
}

static void
echo_event(struct bufferevent *bev, short what, void *arg)
{
	(void)arg;
	if (what & BEV_EVENT_EOF)
		strata_close(bev, NULL, echo_closed, NULL);
	else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		logmsg(0, "echo: %s", strata_last_error(bev)
		    ? strata_last_error(bev) : "timeout");
		bufferevent_free(bev);
		release();
	}
}

static void
listen_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct bufferevent *other;
	char peer[128] = "?", cmd[4096];
	struct relay *r;

	(void)arg;
	if (!admit(top))
		return;
	strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
	logmsg(1, "accepted from %s", peer);
	if (o.echo) {
		bufferevent_setcb(top, echo_read, NULL, echo_event, NULL);
		if (o.idle_timeout.tv_sec || o.idle_timeout.tv_usec)
			strata_set_timeouts(top, &o.idle_timeout, NULL);
		apply_limits(top);
		bufferevent_enable(top, EV_READ | EV_WRITE);
		return;
	}
	if (o.exec_cmd) {
		snprintf(cmd, sizeof(cmd), "exec:%s", o.exec_cmd);
		other = connect_stack(cmd);
	} else {
		/* one connection, relayed to stdin/stdout */
		other = stdio_stack();
		strata_listener_free(l);
		srv.l = NULL;
	}
	if (!other || !(r = relay_new(top, "client", srv.stack, other,
			     o.exec_cmd ? "command" : "stdio",
			     o.exec_cmd ? o.exec_cmd : "pipe:stdio"))) {
		bufferevent_free(top);
		if (other)
			bufferevent_free(other);
		release();
		if (!o.exec_cmd)
			event_base_loopexit(base, NULL);
		return;
	}
	r->on_end = o.exec_cmd ? relay_released : end_loop;
}

static int
cmd_listen(int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "usage: strata listen [options] STACK "
				"[--echo | --exec COMMAND]\n");
		return EXIT_USAGE;
	}
	return serve(argv[0], listen_accept, NULL);
}

/* ---- strata plugins ---- */

static void
print_options(const struct strata_option_doc *d)
{
	for (; d && d->key; d++)
		printf("      %-12s %-10s %s\n", d->key,
		    d->def && d->def[0] ? d->def : "-", d->help);
}

static int
cmd_plugins(int argc, char **argv)
{
	const struct strata_transport_type *t[64];
	const struct strata_filter_type *f[128];
	size_t nt = strata_list_transports(t, 64), nf;
	size_t i;

	(void)argc;
	(void)argv;
	nf = strata_list_filters(f, 128);
	printf("transports:\n");
	for (i = 0; i < nt && i < 64; i++) {
		printf("  %-10s %s\n", t[i]->name, t[i]->summary);
		print_options(t[i]->options);
	}
	printf("filters:\n");
	for (i = 0; i < nf && i < 128; i++) {
		printf("  %-10s %s\n", f[i]->name, f[i]->summary);
		print_options(f[i]->options);
	}
	return EXIT_OK;
}

/* ---- main ---- */

static const char usage_text[] =
    "usage: strata [--version] [--help] COMMAND [options] ARGS\n"
    "\n"
    "commands:\n"
    "  proxy LISTEN_STACK TARGET_STACK   accept, connect, relay both ways\n"
    "  connect STACK                     stdin/stdout through a stack\n"
    "  listen STACK [--echo|--exec CMD]  serve each connection\n"
    "  plugins                           transports, filters, options\n"
    "  demo                              tcp | tls | zlib | lines on loopback\n"
    "\n"
    "options:\n"
    "  -v, --verbose        more detail (per-layer statistics at the end)\n"
    "  -q, --quiet          errors only\n"
    "  --stats              print each stack's per-layer table at the end\n"
    "  --log-format F       text (stderr) or json (a line per connection\n"
    "                       on stdout)\n"
    "  --idle-timeout S     close a connection silent this long (off)\n"
    "  --max-conns N        refuse connections beyond N at once\n"
    "  --rate BYTES         per connection and direction, e.g. 1M\n"
    "  --rate-total BYTES   all connections together\n"
    "  --drain-timeout S    on SIGTERM/SIGINT, wait this long for running\n"
    "                       connections (30); a second signal exits now\n"
    "  --echo               listen: echo what each connection sends\n"
    "  --exec COMMAND       listen: relay each connection to a command\n"
    "\n"
    "stacks: \"tcp://host:port | filter(key=value) | ...\", see\n"
    "  strata plugins. Exit codes: 0 ok, 1 a connection ended with an\n"
    "  error, 2 usage, 3 could not connect or listen.\n";

static int
parse_seconds(const char *s, struct timeval *tv)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0 || v > 86400) {
		fprintf(stderr, "strata: bad number of seconds '%s'\n", s);
		return -1;
	}
	tv->tv_sec = (time_t)v;
	tv->tv_usec = (suseconds_t)((v - (double)tv->tv_sec) * 1e6);
	return 0;
}

/* A count or a byte rate: digits with an optional K, M or G (1024s). */
static int
parse_bytes(const char *s, const char *what, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;

	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (end == s || s[0] == '-' || (shift ? end[1] : end[0]) || !v ||
	    v > (UINT64_MAX >> shift)) {
		fprintf(stderr, "strata: bad value '%s' for %s (a positive "
				"number, K/M/G allowed)\n", s, what);
		return -1;
	}
	*out = (uint64_t)v << shift;
	return 0;
}

static int
parse_options(int argc, char **argv)
{
	static const struct option longs[] = {
		{"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},
		{"stats", no_argument, NULL, 'S'},
		{"echo", no_argument, NULL, 'E'},
		{"exec", required_argument, NULL, 'X'},
		{"idle-timeout", required_argument, NULL, 'I'},
		{"drain-timeout", required_argument, NULL, 'D'},
		{"max-conns", required_argument, NULL, 'M'},
		{"rate", required_argument, NULL, 'R'},
		{"rate-total", required_argument, NULL, 'T'},
		{"log-format", required_argument, NULL, 'L'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "vqh", longs, NULL)) != -1) {
		switch (c) {
		case 'v': o.verbose++; break;
		case 'q': o.quiet = 1; break;
		case 'S': o.stats = 1; break;
		case 'E': o.echo = 1; break;
		case 'X': o.exec_cmd = optarg; break;
		case 'I':
			if (parse_seconds(optarg, &o.idle_timeout) < 0)
				return -1;
			break;
		case 'D':
			if (parse_seconds(optarg, &o.drain_timeout) < 0)
				return -1;
			break;
		case 'M':
			if (parse_bytes(optarg, "--max-conns", &v) < 0)
				return -1;
			o.max_conns = (unsigned long)v;
			break;
		case 'R':
			if (parse_bytes(optarg, "--rate", &o.rate) < 0)
				return -1;
			break;
		case 'T':
			if (parse_bytes(optarg, "--rate-total",
				&o.rate_total) < 0)
				return -1;
			break;
		case 'L':
			if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
				fprintf(stderr, "strata: --log-format is json "
						"or text\n");
				return -1;
			}
			o.json = !strcmp(optarg, "json");
			break;
		case 'h': fputs(usage_text, stdout); exit(EXIT_OK);
		default: return -1;
		}
	}
	if (o.echo && o.exec_cmd) {
		fprintf(stderr, "strata: --echo and --exec exclude each "
				"other\n");
		return -1;
	}
	return optind;
}

/* epoll watches sockets, pipes and terminals only: with stdio redirected
 * from or to a file or /dev/null, use a backend that can (poll reports
 * those always ready). */
static struct event_base *
new_base(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *b;
	struct stat st;
	int i, regular = 0;

	for (i = 0; i < 2; i++)
		if (fstat(i, &st) == 0 && !S_ISSOCK(st.st_mode) &&
		    !S_ISFIFO(st.st_mode) && !isatty(i))
			regular = 1;
	if (cfg && regular)
		event_config_avoid_method(cfg, "epoll");
	b = cfg ? event_base_new_with_config(cfg) : event_base_new();
	if (cfg)
		event_config_free(cfg);
	return b;
}

/* Token buckets refilled every 50 ms, bursts of one refill. */
static struct ev_token_bucket_cfg *
bucket(uint64_t rate)
{
	static const struct timeval tick = {0, 50000};
	size_t per_tick = (size_t)(rate / 20 ? rate / 20 : 1);

	return ev_token_bucket_cfg_new(per_tick, per_tick, per_tick,
	    per_tick, &tick);
}

static int
setup_limits(void)
{
	if (o.rate && !(srv.rate = bucket(o.rate)))
		return -1;
	if (o.rate_total) {
		srv.rate_total_cfg = bucket(o.rate_total);
		srv.total = srv.rate_total_cfg
		    ? bufferevent_rate_limit_group_new(base, srv.rate_total_cfg)
		    : NULL;
		if (!srv.total)
			return -1;
	}
	return 0;
}

/* ---- strata demo ---- */

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

static int
cmd_demo(int argc, char **argv)
{
	char dir[] = "/tmp/strata-demo-XXXXXX", pin[65], sstack[1024];
	char cstack[512], addr[128], table[4096];
	struct strata_listener *l;
	struct strata_error err;
	struct demo d;
	double secs;
	int port;

	(void)argv;
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

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{"proxy", cmd_proxy},
		{"connect", cmd_connect},
		{"listen", cmd_listen},
		{"plugins", cmd_plugins},
		{"demo", cmd_demo},
	};
	size_t i;
	int first, rc;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("strata %s\n", strata_version());
		return EXIT_OK;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			break;
	if (i == sizeof(cmds) / sizeof(cmds[0])) {
		fprintf(stderr, "strata: unknown command '%s'\n%s", argv[1],
		    usage_text);
		return EXIT_USAGE;
	}
	optind = 1;
	if ((first = parse_options(argc - 1, argv + 1)) < 0)
		return EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	base = new_base();
	dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!base) {
		fprintf(stderr, "strata: cannot create an event base\n");
		return EXIT_FAILURE_;
	}
	if (setup_limits() < 0)
		return EXIT_FAILURE_;
	rc = cmds[i].fn(argc - 1 - first, argv + 1 + first);
	if (srv.total)
		bufferevent_rate_limit_group_free(srv.total);
	if (srv.rate)
		ev_token_bucket_cfg_free(srv.rate);
	if (srv.rate_total_cfg)
		ev_token_bucket_cfg_free(srv.rate_total_cfg);
	if (dns)
		evdns_base_free(dns, 0);
	event_base_free(base);
	return rc;
}
