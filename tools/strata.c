/*
 * strata: the command-line tool. Stacks from the command line, no C:
 *
 *   strata proxy LISTEN_STACK TARGET_STACK   relay each connection
 *   strata connect STACK                     stdin/stdout through a stack
 *   strata listen STACK [--echo | --exec C]  serve connections
 *   strata plugins                           transports and filters
 *   strata demo                              tcp | tls | zlib | lines
 *
 * Relays keep back-pressure end to end (a side's reading stops while the
 * other side's output is full) and half-close per direction (EOF on one
 * side ends only that direction: the other side's filters finish and its
 * write side shuts down, while the reverse direction keeps flowing).
 *
 * Servers (proxy, listen --echo/--exec) run N worker threads, each with
 * its own event loop; the main thread accepts, hands each connection to
 * the next worker (strata_listener_spread()), and handles the signals:
 * SIGTERM/SIGINT drain, SIGHUP reloads certificates and keys
 * (strata_listener_reload()). With one worker the main thread does it all.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "strata/plugin.h"
#include "strata/strata.h"
#include "stackarg.h"
#include "tool.h"

/* Output of one side above this pauses reading on the other. */
#define RELAY_HIGH (256 * 1024)
#define RELAY_LOW (64 * 1024)
#define MAX_WORKERS 256
/*
 * Event priorities (every loop has three; libevent's default is the
 * middle one: listeners, timers, signals). A stack runs at PRIO_HANDSHAKE
 * until it is connected (its handshakes done), then at PRIO_DATA, and a
 * loop turn runs at most DISPATCH_MAX callbacks below the first before it
 * polls again: a new connection's handshake waits for at most that many
 * bulk callbacks per round trip, not for every busy stream's, and does
 * not run into --handshake-timeout under load.
 */
#define PRIO_HANDSHAKE 0
#define PRIO_DATA 2
#define PRIORITIES 3
#define DISPATCH_MAX 16
#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_HANDSHAKE_MS 10000
/* connect's progress line: refreshed this often (ms) */
#define PROGRESS_MS 250
/* token buckets: refilled every 50 ms, holding up to 200 ms of them */
#define RATE_TICK_MS 50
#define RATE_BURST_TICKS 4

struct opts {
	int verbose, quiet, stats, echo, json;
	const char *exec_cmd;
	struct timeval idle_timeout, drain_timeout;
	uint64_t connect_ms, handshake_ms;
	unsigned long max_conns;
	uint64_t rate, rate_total;
	int workers; /* 0: one per CPU */
};

static struct opts o = {
	.drain_timeout = {30, 0},
	.connect_ms = DEFAULT_CONNECT_MS,
	.handshake_ms = DEFAULT_HANDSHAKE_MS,
};
static struct event_base *base;	/* the main thread's loop */
static struct evdns_base *dns;	/* and its resolver */
static int exit_code = EXIT_OK;	/* atomic: the first failure's code */
static unsigned long conn_serial; /* atomic */

/*
 * A connection a worker serves (a relay, an echo), in its worker's list:
 * when the worker's loop ends with connections still running (a drain
 * cut short, a second signal), they are freed there, not left behind.
 */
struct conn {
	struct conn *prev, *next;
	void (*kill)(struct conn *c); /* free it now, no log, no close */
};

/* A worker: a thread with its own loop (or, alone, the main thread). */
struct worker {
	int id;			/* 1..N, in the logs */
	struct event_base *base;
	struct evdns_base *dns;
	pthread_t thread;
	int started;		/* the thread runs (join it) */
	unsigned long live;	/* its connections; its thread only */
	int draining;		/* its thread only */
	struct event *drain_ev;	/* activated by the main thread */
	struct event *drain_timer;
	struct event *keep;	/* keeps an idle loop running */
	struct event *done_ev;	/* in the main loop: this worker ended */
	struct conn conns;	/* list head; its thread only */
};

/* Serving state of proxy and listen: connection count, limits, drain. */
static struct {
	struct strata_listener *l;
	struct stackarg stack;	/* the listening stack */
	struct stackarg target;	/* proxy: the stack to connect */
	struct strata_stack *prepared; /* target, parsed once (prep_lock) */
	pthread_mutex_t prep_lock;
	int draining;		/* atomic */
	unsigned long live;	/* atomic: all workers' connections */
	unsigned long fd_room;	/* connections the fd limit allows, or 0 */
	struct worker *w;
	int nw, running;	/* workers, and threads still running */
	int bev_opts;		/* BEV_OPT_* of every stack */
	int one_shot;		/* one connection: its end is the exit code */
	struct ev_token_bucket_cfg *rate;
	struct ev_token_bucket_cfg *rate_total_cfg;
	struct bufferevent_rate_limit_group *total;
} srv = {.bev_opts = BEV_OPT_CLOSE_ON_FREE,
    .prep_lock = PTHREAD_MUTEX_INITIALIZER};

static void progress_erase(void);
static struct event_base *new_base(int stdio);

static void
set_exit(int code)
{
	int ok = EXIT_OK;

	__atomic_compare_exchange_n(&exit_code, &ok, code, 0, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE);
}

static void
conn_add(struct worker *w, struct conn *c, void (*kill)(struct conn *))
{
	c->kill = kill;
	c->prev = c->next = c;
	if (!w)
		return;
	c->next = &w->conns;
	c->prev = w->conns.prev;
	w->conns.prev->next = c;
	w->conns.prev = c;
}

static void
conn_del(struct conn *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
	c->prev = c->next = c;
}

/* In the worker's thread, after its loop: what is still running goes. */
static void
worker_reap(struct worker *w)
{
	while (w->conns.next != &w->conns)
		w->conns.next->kill(w->conns.next);
}

static void
logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* level 0: errors (always), 1: normal, 2: -v. Whole lines, from any
 * thread. */
static void
logmsg(int level, const char *fmt, ...)
{
	va_list ap;

	if ((o.quiet && level > 0) || level > 1 + o.verbose)
		return;
	flockfile(stderr);
	progress_erase();
	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

static double
elapsed(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	    (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* ---- relaying two stacks ---- */

struct side {
	struct bufferevent *bev;
	struct relay *r;
	struct side *peer;
	const char *name;	/* "client", "target", ... */
	const char *stack;	/* its stack string as typed, for the log */
	char peer_addr[128];	/* its peer address, for the log */
	int connected;		/* the whole stack was ready */
	int eof;		/* this side's input ended */
	int done;		/* its output was finished towards it */
	int finish_later;	/* ... once it is connected */
	uint64_t bytes_in;	/* read from this side */
	uint64_t wire_in, wire_out; /* its transport's, when it closed */
};

struct relay {
	struct conn conn;	/* first: a struct conn * is the relay */
	unsigned long id;
	struct worker *w;
	struct side s[2];
	struct timespec start;
	int closing;
	int failed;		/* an exit code, or 0 */
	int pending;		/* closes still running */
	char why[STRATA_ERROR_MAX + 32];
	void (*on_end)(struct relay *r);
};

static void
print_stats(const char *what, struct bufferevent *bev)
{
	char buf[4096];

	if (bev && strata_stats_format(bev, buf, sizeof(buf)) > 0) {
		flockfile(stderr);
		progress_erase();
		fprintf(stderr, "%s:\n%s", what, buf);
		funlockfile(stderr);
	}
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

static void
relay_log_json(struct relay *r, const uint64_t *win, const uint64_t *wout,
    const char *how)
{
	int i;

	flockfile(stdout);
	printf("{\"conn\":%lu,\"worker\":%d,\"peer\":", r->id,
	    r->w ? r->w->id : 0);
	json_str(stdout, r->s[0].peer_addr);
	for (i = 0; i < 2; i++) {
		printf(",\"%s\":{\"stack\":", r->s[i].name);
		json_str(stdout, r->s[i].stack);
		printf(",\"top_in\":%llu,\"wire_in\":%llu,\"wire_out\":%llu}",
		    (unsigned long long)r->s[i].bytes_in,
		    (unsigned long long)win[i], (unsigned long long)wout[i]);
	}
	printf(",\"seconds\":%.3f,\"ok\":%s,\"end\":", elapsed(&r->start),
	    r->failed ? "false" : "true");
	json_str(stdout, how);
	printf("}\n");
	fflush(stdout);
	funlockfile(stdout);
}

/*
 * One line per connection when it ends: the peer, both stacks, bytes each
 * way at the wire and at the top, duration, and how it ended (with the
 * layer's message on errors). Text, or JSON with --log-format=json. A
 * one-shot command (connect) says what failed on a line of its own and
 * logs the connection only with -v.
 */
static void
relay_log(struct relay *r)
{
	uint64_t win[2], wout[2];
	const char *how = r->failed ? r->why : "closed";
	char wk[16] = "";
	int i;

	for (i = 0; i < 2; i++) {
		win[i] = r->s[i].wire_in;
		wout[i] = r->s[i].wire_out;
	}
	if (o.json) {
		if (!o.quiet || r->failed)
			relay_log_json(r, win, wout, how);
		return;
	}
	if (o.quiet && !r->failed)
		return;
	if (r->w)
		snprintf(wk, sizeof(wk), " w%d", r->w->id);
	logmsg(r->failed && !srv.one_shot ? 0 : srv.one_shot ? 2 : 1,
	    "#%lu%s %s %.3fs %s [%s] -> %s [%s]: top %llu/%llu bytes, "
	    "wire %llu/%llu in, %llu/%llu out: %s",
	    r->id, wk, r->s[0].peer_addr, elapsed(&r->start),
	    r->s[0].name, r->s[0].stack, r->s[1].name, r->s[1].stack,
	    (unsigned long long)r->s[0].bytes_in,
	    (unsigned long long)r->s[1].bytes_in,
	    (unsigned long long)win[0], (unsigned long long)win[1],
	    (unsigned long long)wout[0], (unsigned long long)wout[1], how);
}

static void progress_stop(struct relay *r);

/* Last look at a side's stack before it goes: its wire counters and,
 * with --stats or -v, its table. */
static void
side_last_look(struct side *s)
{
	if (!s->bev)
		return;
	wire_bytes(s->bev, &s->wire_in, &s->wire_out);
	if ((o.stats || o.verbose) && strcmp(s->stack, "pipe:stdio"))
		print_stats(s->name, s->bev);
	s->bev = NULL;
}

/*
 * A side's graceful close finished (the stack is freed right after this
 * returns, so it is still there to look at); after both, the relay is
 * over and logged, with the bytes that really reached each wire.
 */
static void
side_closed(int delivered, void *arg)
{
	struct side *s = arg;
	struct relay *r = s->r;

	side_last_look(s);
	if (!delivered && !r->failed) {
		r->failed = EXIT_FAILURE_;
		snprintf(r->why, sizeof(r->why), "%s: not all data delivered "
		    "before the close", s->name);
	}
	if (--r->pending)
		return;
	relay_log(r);
	if (r->failed && srv.one_shot)
		set_exit(r->failed);
	if (r->on_end)
		r->on_end(r);
	conn_del(&r->conn);
	free(r);
}

static void
relay_kill(struct conn *c)
{
	struct relay *r = (struct relay *)c;
	int i;

	progress_stop(r);
	for (i = 0; i < 2; i++)
		if (r->s[i].bev)
			bufferevent_free(r->s[i].bev); /* also mid-close */
	conn_del(c);
	free(r);
}

static void
relay_end(struct relay *r)
{
	struct bufferevent *bev;
	int i;

	progress_stop(r);
	r->pending = 2;
	for (i = 0; i < 2; i++) {
		bev = r->s[i].bev;
		/* graceful: what is still queued towards a side gets there */
		if (r->failed || strata_close(bev, NULL, side_closed,
		    &r->s[i]) < 0) {
			side_last_look(&r->s[i]);
			bufferevent_free(bev);
			side_closed(1, &r->s[i]);
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
	(void)bev;
	relay_move(arg);
}

/* The peer's output drained below the low mark: resume reading. */
static void
relay_write(struct bufferevent *bev, void *arg)
{
	struct side *s = arg;

	(void)bev;
	if (!s->peer->eof && !s->r->closing)
		bufferevent_enable(s->peer->bev, EV_READ);
}

/*
 * The exit code a failure of @p s stands for: a timeout (ours, tcp's
 * connect timer, tls's handshake timer), a refused certificate or key,
 * a connection that never came up, or one that broke.
 */
static int
failure_code(struct side *s, short what)
{
	struct strata_error e;
	int has = strata_get_error(s->bev, &e);

	if (what & BEV_EVENT_TIMEOUT)
		return EXIT_TIMEOUT;
	if (has && (e.code == STRATA_ERR_TIMEOUT || e.sys_errno == ETIMEDOUT))
		return EXIT_TIMEOUT;
	/* the tls filter's words for every verification failure, pins
	 * included */
	if (has && strstr(e.message, "certificate verify failed"))
		return EXIT_VERIFY;
	return s->connected ? EXIT_FAILURE_ : EXIT_CONNECT;
}

static const char *
failure_words(int code)
{
	switch (code) {
	case EXIT_TIMEOUT: return "timed out";
	case EXIT_VERIFY: return "TLS verification failed";
	case EXIT_CONNECT: return "could not connect";
	default: return "connection failed";
	}
}

static void
relay_fail(struct relay *r, struct side *s, short what)
{
	const char *msg = strata_last_error(s->bev);
	char idle[64];

	r->failed = failure_code(s, what);
	if ((what & BEV_EVENT_TIMEOUT) || !msg) {
		snprintf(idle, sizeof(idle), "no data for %ld.%03ld s (--idle-"
		    "timeout)", (long)o.idle_timeout.tv_sec,
		    (long)o.idle_timeout.tv_usec / 1000);
		msg = (what & BEV_EVENT_TIMEOUT) ? idle : "error";
	}
	snprintf(r->why, sizeof(r->why), "%s %s: %s", s->name,
	    failure_words(r->failed), msg);
	if (srv.one_shot)
		logmsg(0, "%s: %s", failure_words(r->failed), msg);
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
		/* a socket shut down while it connects is reset (Linux
		 * disconnects a SYN_SENT socket): finish once connected */
		if (to->connected)
			bufferevent_flush(to->bev, EV_WRITE, BEV_FINISHED);
		else
			to->finish_later = 1;
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

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		s->connected = 1;
		(void)strata_priority_set(s->bev, PRIO_DATA);
		logmsg(2, "#%lu %s connected", s->r->id, s->name);
		if (s->finish_later) {
			s->finish_later = 0;
			bufferevent_flush(s->bev, EV_WRITE, BEV_FINISHED);
		}
		return;
	}
	if (what & BEV_EVENT_EOF) {
		logmsg(2, "#%lu %s: end of stream", s->r->id, s->name);
		relay_half_close(s);
	} else if (what & (BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR))
		relay_fail(s->r, s, what);
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

static void
side_init(struct relay *r, int i, struct bufferevent *bev, const char *name,
    const char *stack)
{
	struct side *s = &r->s[i];

	s->bev = bev;
	s->name = name;
	s->stack = stack;
	s->r = r;
	s->peer = &r->s[1 - i];
	if (strata_peer_address(bev, s->peer_addr, sizeof(s->peer_addr), NULL,
		NULL) < 0)
		snprintf(s->peer_addr, sizeof(s->peer_addr), "-");
	bufferevent_setcb(bev, relay_read, relay_write, relay_event, s);
	bufferevent_setwatermark(bev, EV_WRITE, RELAY_LOW, 0);
	(void)strata_priority_set(bev, PRIO_HANDSHAKE); /* not stdio's */
	if (o.idle_timeout.tv_sec || o.idle_timeout.tv_usec)
		strata_set_timeouts(bev, &o.idle_timeout, NULL);
	apply_limits(bev);
}

static struct relay *
relay_new(struct worker *w, struct bufferevent *a, const char *an,
    const char *astack, struct bufferevent *b, const char *bn,
    const char *bstack)
{
	struct relay *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->id = __atomic_add_fetch(&conn_serial, 1, __ATOMIC_RELAXED);
	r->w = w;
	conn_add(w, &r->conn, relay_kill);
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	side_init(r, 0, a, an, astack);
	side_init(r, 1, b, bn, bstack);
	bufferevent_enable(a, EV_READ | EV_WRITE);
	bufferevent_enable(b, EV_READ | EV_WRITE);
	return r;
}

/* ---- connect's progress line ---- */

/* While stderr is a terminal: sent, received, rate, wire and ratio. */
static struct {
	struct event *ev;
	struct relay *r;
	struct timespec last;
	uint64_t last_bytes;
	double rate;
	int shown;
} prog;

static void
human(char *buf, size_t len, double v)
{
	static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static void
progress_erase(void)
{
	if (prog.shown) {
		fputs("\r\033[K", stderr);
		prog.shown = 0;
	}
}

static void
progress_tick(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = prog.r;
	uint64_t win, wout, top = r->s[0].bytes_in + r->s[1].bytes_in;
	char sent[32], got[32], rate[32], wire[32];
	double dt = elapsed(&prog.last);

	(void)fd;
	(void)what;
	(void)arg;
	wire_bytes(r->s[1].bev, &win, &wout);
	if (dt > 0)
		prog.rate = 0.5 * prog.rate +
		    0.5 * (double)(top - prog.last_bytes) / dt;
	clock_gettime(CLOCK_MONOTONIC, &prog.last);
	prog.last_bytes = top;
	human(sent, sizeof(sent), (double)r->s[0].bytes_in);
	human(got, sizeof(got), (double)r->s[1].bytes_in);
	human(rate, sizeof(rate), prog.rate);
	human(wire, sizeof(wire), (double)(win + wout));
	flockfile(stderr);
	fprintf(stderr, "\r\033[Kstrata: sent %s, received %s, %s/s, wire %s "
	    "(ratio %.2f)", sent, got, rate, wire,
	    win + wout ? (double)top / (double)(win + wout) : 1.0);
	fflush(stderr);
	prog.shown = 1;
	funlockfile(stderr);
}

static void
progress_start(struct relay *r)
{
	struct timeval tv = {0, PROGRESS_MS * 1000};

	if (o.quiet || !isatty(2))
		return;
	prog.r = r;
	clock_gettime(CLOCK_MONOTONIC, &prog.last);
	if ((prog.ev = event_new(base, -1, EV_PERSIST, progress_tick, NULL)))
		event_add(prog.ev, &tv);
}

/* The relay ends: no more updates, and the line goes. */
static void
progress_stop(struct relay *r)
{
	if (!prog.ev || prog.r != r)
		return;
	event_free(prog.ev);
	prog.ev = NULL;
	prog.r = NULL;
	flockfile(stderr);
	progress_erase();
	funlockfile(stderr);
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

/* A stack string or a file it names is wrong: a usage error. */
static int
is_usage_error(const struct strata_error *err)
{
	return err->code == STRATA_ERR_SYNTAX ||
	    err->code == STRATA_ERR_OPTION || err->code == STRATA_ERR_UNKNOWN;
}

static int
stack_prepare(struct stackarg *a, const char *stack, int connecting)
{
	if (stackarg_init(a, stack, connecting, o.connect_ms,
		o.handshake_ms) < 0) {
		logmsg(0, "out of memory");
		return -1;
	}
	return 0;
}

/* Start connecting @p a in @p w's loop; NULL (reported) on error. */
static struct bufferevent *
connect_stack(struct event_base *b, struct evdns_base *d,
    const struct stackarg *a, int quiet)
{
	struct strata_error err;
	struct bufferevent *bev = strata_connect(b, d, a->s, srv.bev_opts,
	    &err);

	if (!bev) {
		stackarg_fix_error(a, 0, &err);
		if (quiet) { /* a server's connection: logged, serving on */
			logmsg(0, "cannot start %s: %s", a->orig, err.message);
			return NULL;
		}
		stack_error(a->orig, &err);
		set_exit(is_usage_error(&err) ? EXIT_USAGE : EXIT_CONNECT);
	}
	return bev;
}

/*
 * Check a proxy's target before serving: every error of the string and
 * of the files it names (a client certificate, a CA file) shows now, not
 * at the first connection. A tcp stack is built on a loop that never
 * runs (tcp starts connecting from the loop); other transports connect at
 * once (exec: would run the command), so only their filters are built,
 * over a socket pair.
 */
static int
check_target(const struct stackarg *a)
{
	struct event_base *scratch = event_base_new();
	struct bufferevent *bev = NULL, *pair[2] = {NULL, NULL};
	struct strata_error err;
	const char *filters = stackarg_filters(a);
	int ok = 0;

	if (!scratch)
		return -1;
	if (!strncmp(a->s + strspn(a->s, " \t\r\n"), "tcp:", 4)) {
		bev = connect_stack(scratch, NULL, a, 0);
		ok = bev != NULL;
	} else if (filters && !bufferevent_pair_new(scratch,
			      BEV_OPT_CLOSE_ON_FREE, pair)) {
		bev = strata_push(pair[0], filters, BEV_OPT_CLOSE_ON_FREE,
		    &err);
		if (!bev) {
			stackarg_fix_error(a, (size_t)(filters - a->s), &err);
			stack_error(a->orig, &err);
			set_exit(is_usage_error(&err) ? EXIT_USAGE
						      : EXIT_CONNECT);
			bufferevent_free(pair[0]);
		}
		bufferevent_free(pair[1]);
		ok = bev != NULL;
	} else
		ok = 1;
	if (bev)
		bufferevent_free(bev);
	event_base_free(scratch);
	return ok ? 0 : -1;
}

/* ---- workers ---- */

static struct worker *
worker_of(struct bufferevent *bev)
{
	struct event_base *b = bufferevent_get_base(bev);
	int i;

	for (i = 0; i < srv.nw; i++)
		if (srv.w[i].base == b)
			return &srv.w[i];
	return &srv.w[0];
}

/* The worker has no more connections to wait for: its loop ends. */
static void
worker_finish(struct worker *w)
{
	event_base_loopexit(w->base, NULL);
}

static void
drain_expired(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	logmsg(0, "worker %d: --drain-timeout expired, cutting %lu "
		  "connection(s)", w->id, w->live);
	set_exit(EXIT_FAILURE_);
	worker_finish(w);
}

/* In the worker's thread: no new connections; end when the last goes. */
static void
worker_drain(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	w->draining = 1;
	if (!w->live)
		worker_finish(w);
	else
		evtimer_add(w->drain_timer, &o.drain_timeout);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	worker_reap(w);
	event_active(w->done_ev, EV_TIMEOUT, 1);
	return NULL;
}

/* In the main thread: a worker's loop ended. */
static void
worker_done(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (--srv.running == 0)
		event_base_loopexit(base, NULL);
}

static void
worker_free(struct worker *w)
{
	if (w->drain_ev)
		event_free(w->drain_ev);
	if (w->drain_timer)
		event_free(w->drain_timer);
	if (w->keep)
		event_free(w->keep);
	if (w->done_ev)
		event_free(w->done_ev);
	if (w->base != base) {
		if (w->dns)
			evdns_base_free(w->dns, 0);
		if (w->base)
			event_base_free(w->base);
	}
}

static void
keep_alive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static int
worker_init(struct worker *w, int id, int threaded)
{
	struct timeval day = {86400, 0};

	w->id = id;
	w->conns.prev = w->conns.next = &w->conns;
	if (!threaded) {
		w->base = base;
		w->dns = dns;
	} else if ((w->base = new_base(0)) != NULL) {
		w->dns = evdns_base_new(w->base,
		    EVDNS_BASE_INITIALIZE_NAMESERVERS);
		w->keep = event_new(w->base, -1, EV_PERSIST, keep_alive, w);
		w->done_ev = event_new(base, -1, 0, worker_done, w);
		if (w->keep)
			event_add(w->keep, &day);
	}
	if (!w->base)
		return -1;
	w->drain_ev = event_new(w->base, -1, 0, worker_drain, w);
	w->drain_timer = evtimer_new(w->base, drain_expired, w);
	return w->drain_ev && w->drain_timer &&
	    (!threaded || (w->keep && w->done_ev)) ? 0 : -1;
}

/* --workers: how many, and the threads' loops before anything listens. */
static int
workers_make(int n)
{
	int i;

	if (!(srv.w = calloc((size_t)n, sizeof(*srv.w))))
		return -1;
	srv.nw = n;
	for (i = 0; i < n; i++)
		if (worker_init(&srv.w[i], i + 1, n > 1) < 0) {
			logmsg(0, "cannot set up worker %d", i + 1);
			return -1;
		}
	return 0;
}

static int
workers_start(void)
{
	int i;

	if (srv.nw == 1)
		return 0;
	for (i = 0; i < srv.nw; i++) {
		if (pthread_create(&srv.w[i].thread, NULL, worker_main,
			&srv.w[i]) != 0) {
			logmsg(0, "cannot start worker %d", i + 1);
			return -1;
		}
		srv.w[i].started = 1;
		srv.running++;
	}
	return 0;
}

static void
workers_end(void)
{
	int i;

	for (i = 0; i < srv.nw; i++) {
		if (srv.w[i].started)
			pthread_join(srv.w[i].thread, NULL);
		worker_free(&srv.w[i]);
	}
	free(srv.w);
	srv.w = NULL;
	srv.nw = 0;
}

/*
 * The target of a proxy (or listen --exec) is parsed once, with its files
 * and TLS context, and shared by every connection (SIGHUP parses it
 * again); without it each connection would parse the string and load its
 * certificates anew.
 */
static int
target_prepare(void)
{
	struct strata_error err;
	struct strata_stack *st, *old;

	if (!(st = strata_stack_new(srv.target.s, &err))) {
		stackarg_fix_error(&srv.target, 0, &err);
		logmsg(0, "%s: %s", srv.target.orig, err.message);
		return -1;
	}
	pthread_mutex_lock(&srv.prep_lock);
	old = srv.prepared;
	srv.prepared = st;
	pthread_mutex_unlock(&srv.prep_lock);
	strata_stack_free(old);
	return 0;
}

/* Connect the target from a worker; NULL (logged) on error. */
static struct bufferevent *
target_connect(struct worker *w)
{
	struct strata_stack *st;
	struct strata_error err;
	struct bufferevent *bev;

	pthread_mutex_lock(&srv.prep_lock);
	st = srv.prepared;
	strata_stack_ref(st);
	pthread_mutex_unlock(&srv.prep_lock);
	if (!st)
		return connect_stack(w->base, w->dns, &srv.target, 1);
	bev = strata_stack_connect(st, w->base, w->dns, srv.bev_opts, &err);
	strata_stack_free(st);
	if (!bev) {
		stackarg_fix_error(&srv.target, 0, &err);
		logmsg(0, "cannot start %s: %s", srv.target.orig, err.message);
	}
	return bev;
}

/* ---- serving: admission, release, graceful stop, reload ---- */

/* A connection may start unless --max-conns are live (then refused). */
static int
admit(struct worker *w, struct bufferevent *top)
{
	unsigned long n = __atomic_add_fetch(&srv.live, 1, __ATOMIC_ACQ_REL);
	char peer[128] = "?";

	if (w->draining || __atomic_load_n(&srv.draining, __ATOMIC_ACQUIRE) ||
	    (o.max_conns && n > o.max_conns) ||
	    (srv.fd_room && n > srv.fd_room)) {
		__atomic_sub_fetch(&srv.live, 1, __ATOMIC_ACQ_REL);
		strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
		logmsg(1, "refused %s: %s", peer,
		    o.max_conns && n > o.max_conns ? "--max-conns reached"
		    : srv.fd_room && n > srv.fd_room
		    ? "out of file descriptors (ulimit -n)" : "shutting down");
		bufferevent_free(top);
		return 0;
	}
	w->live++;
	return 1;
}

/*
 * How many connections the file descriptor limit leaves room for when
 * each needs @p per_conn fds, more than the one accept() gives it (a
 * proxy's target, an --exec child's pipes); 0 when it need not be
 * counted. Past it admit() refuses a connection at once: accepting it
 * and then failing its target for want of an fd would, under a flood,
 * drop every connection (all fds held by clients waiting for targets).
 * Only fds under the limit count (valgrind keeps its own above it).
 */
static unsigned long
fd_room(unsigned per_conn)
{
	struct rlimit rl;
	struct dirent *de;
	unsigned long open_fds = 0, room;
	DIR *d;

	if (per_conn < 2 || getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
	    rl.rlim_cur == RLIM_INFINITY || !(d = opendir("/proc/self/fd")))
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' &&
		    strtoul(de->d_name, NULL, 10) < rl.rlim_cur)
			open_fds++;
	closedir(d);
	/* the directory's own fd was counted: one spare, and one more
	 * for the accept() that precedes admit() */
	room = rl.rlim_cur > open_fds + 1 ? rl.rlim_cur - open_fds - 1 : 0;
	return room / per_conn ? room / per_conn : 1;
}

static void
release(struct worker *w)
{
	if (!__atomic_sub_fetch(&srv.live, 1, __ATOMIC_ACQ_REL))
		malloc_trim(0); /* idle: give the kept heap back (main) */
	if (w->live)
		w->live--;
	if (w->draining && !w->live)
		worker_finish(w);
}

static void
relay_released(struct relay *r)
{
	release(r->w);
}

/* SIGTERM/SIGINT: stop accepting, let connections finish within
 * --drain-timeout; a second signal exits at once. */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	int i;

	(void)what;
	(void)arg;
	if (srv.draining) {
		logmsg(1, "second signal: exiting now");
		if (__atomic_load_n(&srv.live, __ATOMIC_ACQUIRE))
			set_exit(EXIT_FAILURE_);
		for (i = 0; i < srv.nw; i++)
			event_base_loopbreak(srv.w[i].base);
		return;
	}
	__atomic_store_n(&srv.draining, 1, __ATOMIC_RELEASE);
	logmsg(1, "signal %d: no new connections; %lu still running, "
		  "waiting up to %ld s", (int)sig,
	    __atomic_load_n(&srv.live, __ATOMIC_ACQUIRE),
	    (long)o.drain_timeout.tv_sec);
	strata_listener_free(srv.l);
	srv.l = NULL;
	for (i = 0; i < srv.nw; i++) {
		if (srv.nw == 1)
			worker_drain(-1, 0, &srv.w[i]);
		else
			event_active(srv.w[i].drain_ev, EV_TIMEOUT, 1);
	}
}

/* SIGHUP: read the listening stack's files again (certificates, keys,
 * CAs); a broken file is logged and the old ones stay. */
static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct strata_error err;

	(void)sig;
	(void)what;
	(void)arg;
	if (!srv.l)
		return;
	if (srv.prepared) {
		if (target_prepare() == 0)
			logmsg(1, "SIGHUP: reloaded %s", srv.target.orig);
		else
			logmsg(0, "SIGHUP: new connections keep the old files "
				  "of %s", srv.target.orig);
	}
	if (strata_listener_reload(srv.l, &err) == 0) {
		logmsg(1, "SIGHUP: reloaded %s", srv.stack.orig);
		return;
	}
	stackarg_fix_error(&srv.stack, 0, &err);
	logmsg(0, "SIGHUP: reload failed, new connections keep the old "
		  "certificates and keys: %s", err.message);
}

static struct strata_listener *
listen_stack(strata_accept_fn cb)
{
	struct strata_error err;
	struct strata_listener *l = strata_listen(base, srv.stack.s,
	    srv.bev_opts, cb, NULL, &err);
	char addr[256];

	if (!l) {
		stackarg_fix_error(&srv.stack, 0, &err);
		stack_error(srv.stack.orig, &err);
		set_exit(is_usage_error(&err) ? EXIT_USAGE : EXIT_CONNECT);
		return NULL;
	}
	if (strata_listener_address(l, addr, sizeof(addr), NULL, NULL) > 0)
		logmsg(1, "listening on %s (%d worker%s)", addr, srv.nw,
		    srv.nw > 1 ? "s" : "");
	return l;
}

static int
spread(void)
{
	struct event_base *bases[MAX_WORKERS];
	struct strata_error err;
	int i;

	if (srv.nw == 1)
		return 0;
	for (i = 0; i < srv.nw; i++)
		bases[i] = srv.w[i].base;
	if (strata_listener_spread(srv.l, bases, (size_t)srv.nw, &err) < 0) {
		logmsg(0, "%s", err.message);
		return -1;
	}
	return 0;
}

/* Listen, run until a signal drains the server, clean up. */
static int
serve(strata_accept_fn cb, unsigned fds_per_conn)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
	struct event *sig[3] = {NULL, NULL, NULL};
	int i;

	if (!(srv.l = listen_stack(cb)) || spread() < 0)
		goto out;
	for (i = 0; i < 3; i++) {
		sig[i] = evsignal_new(base, sigs[i],
		    sigs[i] == SIGHUP ? on_hup : on_signal, NULL);
		if (sig[i])
			evsignal_add(sig[i], NULL);
	}
	srv.fd_room = fd_room(fds_per_conn);
	if (workers_start() < 0) {
		/* the ones running end (and are joined) as in a drain; a
		 * loopbreak could come before their loop starts, and be lost */
		set_exit(EXIT_FAILURE_);
		for (i = 0; i < srv.nw; i++)
			if (srv.w[i].started)
				event_active(srv.w[i].drain_ev, EV_TIMEOUT, 1);
		goto out;
	}
	event_base_dispatch(base);
	if (srv.nw == 1)
		worker_reap(&srv.w[0]);
out:
	for (i = 0; i < 3; i++)
		if (sig[i])
			event_free(sig[i]);
	strata_listener_free(srv.l);
	srv.l = NULL;
	return __atomic_load_n(&exit_code, __ATOMIC_ACQUIRE);
}

/* ---- strata proxy ---- */

static void
proxy_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct worker *w = worker_of(top);
	struct bufferevent *t;
	char peer[128] = "?";
	struct relay *r;

	(void)l;
	(void)arg;
	if (!admit(w, top))
		return;
	strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
	if (!(t = target_connect(w))) {
		logmsg(0, "connection from %s closed", peer);
		bufferevent_free(top);
		release(w);
		return;
	}
	if (!(r = relay_new(w, top, "client", srv.stack.orig, t, "target",
		  srv.target.orig))) {
		bufferevent_free(top);
		bufferevent_free(t);
		release(w);
		return;
	}
	r->on_end = relay_released;
	logmsg(1, "#%lu w%d accepted from %s", r->id, w->id, peer);
}

static int
cmd_proxy(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: strata proxy [options] LISTEN_STACK "
				"TARGET_STACK\n");
		return EXIT_USAGE;
	}
	if (stack_prepare(&srv.stack, argv[0], 0) < 0 ||
	    stack_prepare(&srv.target, argv[1], 1) < 0)
		return EXIT_FAILURE_;
	if (check_target(&srv.target) < 0)
		return exit_code;
	if (target_prepare() < 0) {
		set_exit(EXIT_USAGE);
		return exit_code;
	}
	return serve(proxy_accept, 2); /* the client's fd, the target's */
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
	struct stackarg a;
	struct relay *r;

	if (argc != 1) {
		fprintf(stderr, "usage: strata connect [options] STACK\n");
		return EXIT_USAGE;
	}
	srv.one_shot = 1;
	if (stack_prepare(&a, argv[0], 1) < 0)
		return EXIT_FAILURE_;
	if (!(net = connect_stack(base, dns, &a, 0)))
		goto out;
	if (!(io = stdio_stack())) {
		bufferevent_free(net);
		set_exit(EXIT_FAILURE_);
		goto out;
	}
	if (!(r = relay_new(NULL, io, "stdio", "pipe:stdio", net, "remote",
		  argv[0]))) {
		set_exit(EXIT_FAILURE_);
		goto out;
	}
	r->on_end = end_loop;
	progress_start(r);
	event_base_dispatch(base);
out:
	stackarg_clear(&a);
	return exit_code;
}

/* ---- strata listen ---- */

struct echo {
	struct conn conn;	/* first */
	struct worker *w;
	struct bufferevent *bev;
};

/* Echo with back-pressure: a client that sends and never reads stops
 * being read once RELAY_HIGH bytes wait for it, as a relay does. */
static void
echo_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_write_buffer(bev, bufferevent_get_input(bev));
	if (evbuffer_get_length(bufferevent_get_output(bev)) >= RELAY_HIGH)
		bufferevent_disable(bev, EV_READ);
}

/* The output fell to RELAY_LOW: read again. */
static void
echo_write(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_enable(bev, EV_READ);
}

static void
echo_done(struct echo *e)
{
	release(e->w);
	conn_del(&e->conn);
	free(e);
}

static void
echo_closed(int delivered, void *arg)
{
	(void)delivered;
	echo_done(arg);
}

static void
echo_kill(struct conn *c)
{
	struct echo *e = (struct echo *)c;

	bufferevent_free(e->bev); /* also mid-close */
	conn_del(c);
	free(e);
}

static void
echo_event(struct bufferevent *bev, short what, void *arg)
{
	struct echo *e = arg;

	if (what & BEV_EVENT_CONNECTED)
		(void)strata_priority_set(bev, PRIO_DATA);
	else if (what & BEV_EVENT_EOF)
		strata_close(bev, NULL, echo_closed, e);
	else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		logmsg(0, "echo: %s", strata_last_error(bev)
		    ? strata_last_error(bev) : "idle timeout");
		bufferevent_free(bev);
		echo_done(e);
	}
}

static void
listen_echo(struct worker *w, struct bufferevent *top)
{
	struct echo *e = calloc(1, sizeof(*e));

	if (!e) {
		bufferevent_free(top);
		release(w);
		return;
	}
	e->w = w;
	e->bev = top;
	conn_add(w, &e->conn, echo_kill);
	bufferevent_setcb(top, echo_read, echo_write, echo_event, e);
	bufferevent_setwatermark(top, EV_WRITE, RELAY_LOW, 0);
	(void)strata_priority_set(top, PRIO_HANDSHAKE);
	if (o.idle_timeout.tv_sec || o.idle_timeout.tv_usec)
		strata_set_timeouts(top, &o.idle_timeout, NULL);
	apply_limits(top);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
listen_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct worker *w = worker_of(top);
	struct bufferevent *other;
	char peer[128] = "?";
	struct relay *r;

	(void)arg;
	if (!admit(w, top))
		return;
	strata_peer_address(top, peer, sizeof(peer), NULL, NULL);
	logmsg(1, "w%d accepted from %s", w->id, peer);
	if (o.echo) {
		listen_echo(w, top);
		return;
	}
	if (o.exec_cmd)
		other = target_connect(w);
	else {
		/* one connection, relayed to stdin/stdout */
		other = stdio_stack();
		strata_listener_free(l);
		srv.l = NULL;
	}
	if (!other || !(r = relay_new(w, top, "client", srv.stack.orig, other,
			     o.exec_cmd ? "command" : "stdio",
			     o.exec_cmd ? o.exec_cmd : "pipe:stdio"))) {
		bufferevent_free(top);
		if (other)
			bufferevent_free(other);
		release(w);
		if (!o.exec_cmd)
			event_base_loopexit(base, NULL);
		return;
	}
	r->on_end = o.exec_cmd ? relay_released : end_loop;
}

static int
cmd_listen(int argc, char **argv)
{
	char cmd[4096];

	if (argc != 1) {
		fprintf(stderr, "usage: strata listen [options] STACK "
				"[--echo | --exec COMMAND]\n");
		return EXIT_USAGE;
	}
	if (stack_prepare(&srv.stack, argv[0], 0) < 0)
		return EXIT_FAILURE_;
	if (o.exec_cmd) {
		snprintf(cmd, sizeof(cmd), "exec:%s", o.exec_cmd);
		if (stack_prepare(&srv.target, cmd, 1) < 0)
			return EXIT_FAILURE_;
	}
	/* --exec: the client's fd and the child's two pipes */
	return serve(listen_accept, o.exec_cmd ? 3 : 1);
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

static int
cmd_demo(int argc, char **argv)
{
	return demo_run(base, argc, argv);
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
    "  -v, --verbose          more detail (per-layer statistics at the end)\n"
    "  -q, --quiet            errors only\n"
    "  --stats                print each stack's per-layer table at the end\n"
    "  --log-format F         text (stderr) or json (a line per connection\n"
    "                         on stdout)\n"
    "  --connect-timeout S    tcp stacks: give up connecting (10 s); a\n"
    "                         timeout= in the stack string wins\n"
    "  --handshake-timeout S  every tls layer: give up the handshake (10 s);\n"
    "                         a handshake-timeout= in the stack wins\n"
    "  --idle-timeout S       close a connection silent this long (off)\n"
    "  --max-conns N          refuse connections beyond N at once (all\n"
    "                         workers together)\n"
    "  --rate BYTES           per connection and direction, e.g. 1M\n"
    "  --rate-total BYTES     all connections of all workers together\n"
    "  --workers N            proxy, listen: N threads with a loop each\n"
    "                         (default: one per CPU)\n"
    "  --drain-timeout S      on SIGTERM/SIGINT, wait this long for running\n"
    "                         connections (30); a second signal exits now\n"
    "  --echo                 listen: echo what each connection sends\n"
    "  --exec COMMAND         listen: relay each connection to a command\n"
    "\n"
    "signals (proxy, listen): SIGTERM/SIGINT drain, SIGHUP reloads the\n"
    "  listening stack's certificates and keys (a bad file is logged and\n"
    "  the old ones kept).\n"
    "stacks: \"tcp://host:port | filter(key=value) | ...\", see\n"
    "  strata plugins.\n"
    "exit codes: 0 ok; 1 a connection failed after it was set up; 2 usage\n"
    "  (command line, stack string, or a file it names); 3 could not\n"
    "  connect, listen or finish the TLS handshake; 4 TLS verification of\n"
    "  the peer failed (certificate, name or pin); 5 timed out (connect,\n"
    "  handshake or idle).\n";

static int
parse_seconds(const char *s, const char *what, struct timeval *tv)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !(v >= 0) || v > 86400) {
		fprintf(stderr, "strata: bad value '%s' for %s (seconds, from 0 "
				"to 86400)\n", s, what);
		return -1;
	}
	tv->tv_sec = (time_t)v;
	tv->tv_usec = (suseconds_t)((v - (double)tv->tv_sec) * 1e6);
	return 0;
}

/* Seconds into milliseconds, at least 1 ms, at most an hour (the limits
 * of tcp's timeout= and tls's handshake-timeout=). */
static int
parse_ms(const char *s, const char *what, uint64_t *ms)
{
	struct timeval tv;

	if (parse_seconds(s, what, &tv) < 0)
		return -1;
	*ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	if (*ms < 1 || *ms > 3600000) {
		fprintf(stderr, "strata: bad value '%s' for %s (seconds, from "
				"0.001 to 3600)\n", s, what);
		return -1;
	}
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
parse_workers(const char *s)
{
	uint64_t v;

	if (parse_bytes(s, "--workers", &v) < 0)
		return -1;
	if (v > MAX_WORKERS) {
		fprintf(stderr, "strata: --workers: at most %d\n", MAX_WORKERS);
		return -1;
	}
	o.workers = (int)v;
	return 0;
}

/* One option; -1 on a bad value. */
static int
parse_one(int c)
{
	uint64_t v;

	switch (c) {
	case 'v': o.verbose++; return 0;
	case 'q': o.quiet = 1; return 0;
	case 'S': o.stats = 1; return 0;
	case 'E': o.echo = 1; return 0;
	case 'X': o.exec_cmd = optarg; return 0;
	case 'I': return parse_seconds(optarg, "--idle-timeout",
		      &o.idle_timeout);
	case 'D': return parse_seconds(optarg, "--drain-timeout",
		      &o.drain_timeout);
	case 'C': return parse_ms(optarg, "--connect-timeout", &o.connect_ms);
	case 'H': return parse_ms(optarg, "--handshake-timeout",
		      &o.handshake_ms);
	case 'W': return parse_workers(optarg);
	case 'M':
		if (parse_bytes(optarg, "--max-conns", &v) < 0)
			return -1;
		o.max_conns = (unsigned long)v;
		return 0;
	case 'R': return parse_bytes(optarg, "--rate", &o.rate);
	case 'T': return parse_bytes(optarg, "--rate-total", &o.rate_total);
	case 'L':
		if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
			fprintf(stderr, "strata: --log-format is json or "
					"text, not '%s'\n", optarg);
			return -1;
		}
		o.json = !strcmp(optarg, "json");
		return 0;
	case 'h': fputs(usage_text, stdout); exit(EXIT_OK);
	default: return -1; /* getopt said what */
	}
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
		{"connect-timeout", required_argument, NULL, 'C'},
		{"handshake-timeout", required_argument, NULL, 'H'},
		{"drain-timeout", required_argument, NULL, 'D'},
		{"max-conns", required_argument, NULL, 'M'},
		{"rate", required_argument, NULL, 'R'},
		{"rate-total", required_argument, NULL, 'T'},
		{"workers", required_argument, NULL, 'W'},
		{"log-format", required_argument, NULL, 'L'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0; /* our own words, naming the tool */
	while ((c = getopt_long(argc, argv, "vqh", longs, NULL)) != -1) {
		if (c == '?') {
			fprintf(stderr, "strata: unknown option, or one without "
					"its value: '%s' (see strata --help)\n",
			    argv[optind - 1]);
			return -1;
		}
		if (parse_one(c) < 0)
			return -1;
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
 * those always ready). Only for the commands that relay stdio: a proxy
 * started with stdin on /dev/null (any daemon) keeps epoll. */
static struct event_base *
new_base(int stdio)
{
	struct event_config *cfg = event_config_new();
	struct event_base *b;
	struct stat st;
	int i, regular = 0;

	for (i = 0; stdio && i < 2; i++)
		if (fstat(i, &st) == 0 && !S_ISSOCK(st.st_mode) &&
		    !S_ISFIFO(st.st_mode) && !isatty(i))
			regular = 1;
	if (cfg && regular)
		event_config_avoid_method(cfg, "epoll");
	if (cfg)
		event_config_set_max_dispatch_interval(cfg, NULL, DISPATCH_MAX,
		    PRIO_HANDSHAKE + 1);
	b = cfg ? event_base_new_with_config(cfg) : event_base_new();
	if (cfg)
		event_config_free(cfg);
	if (b && event_base_priority_init(b, PRIORITIES) < 0) {
		event_base_free(b);
		b = NULL;
	}
	return b;
}

/*
 * Token buckets refilled every RATE_TICK_MS, holding up to
 * RATE_BURST_TICKS refills: a loop that misses a refill (libevent's group
 * timer, in the main thread, skips a worker whose lock is held at that
 * moment until the next tick) spends it later instead of losing it. The
 * long-run rate is exact; a burst may reach 200 ms worth.
 */
static struct ev_token_bucket_cfg *
bucket(uint64_t rate)
{
	static const struct timeval tick = {0, RATE_TICK_MS * 1000};
	uint64_t per_tick = rate / (1000 / RATE_TICK_MS);

	if (!per_tick)
		per_tick = 1;
	if (per_tick > (uint64_t)INT32_MAX / RATE_BURST_TICKS)
		per_tick = (uint64_t)INT32_MAX / RATE_BURST_TICKS; /* ~40 GB/s */
	return ev_token_bucket_cfg_new(per_tick, RATE_BURST_TICKS * per_tick,
	    per_tick, RATE_BURST_TICKS * per_tick, &tick);
}

static int
setup_limits(void)
{
	if (o.rate && !(srv.rate = bucket(o.rate))) {
		logmsg(0, "--rate: cannot make a token bucket");
		return -1;
	}
	if (o.rate_total) {
		srv.rate_total_cfg = bucket(o.rate_total);
		srv.total = srv.rate_total_cfg
		    ? bufferevent_rate_limit_group_new(base, srv.rate_total_cfg)
		    : NULL;
		if (!srv.total) {
			logmsg(0, "--rate-total: cannot make a rate limit "
				  "group");
			return -1;
		}
		if (srv.nw > 1)
			srv.bev_opts |= BEV_OPT_THREADSAFE;
	}
	return 0;
}

static void
free_limits(void)
{
	if (srv.total)
		bufferevent_rate_limit_group_free(srv.total);
	if (srv.rate)
		ev_token_bucket_cfg_free(srv.rate);
	if (srv.rate_total_cfg)
		ev_token_bucket_cfg_free(srv.rate_total_cfg);
}

/* How many workers a command runs: servers one per CPU by default; a
 * listen without --echo/--exec serves one connection, in the main loop. */
static int
worker_count(const char *cmd)
{
	long cpus;

	if (strcmp(cmd, "proxy") && (strcmp(cmd, "listen") ||
		(!o.echo && !o.exec_cmd)))
		return 1;
	if (o.workers)
		return o.workers;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
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
	int first, rc, nw;

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
	nw = worker_count(cmds[i].name);
	if (nw > 1 && evthread_use_pthreads() < 0) {
		fprintf(stderr, "strata: libevent has no thread support\n");
		return EXIT_FAILURE_;
	}
	/*
	 * A relay allocates and frees 256 KiB read chains and OpenSSL's
	 * 16 KiB record buffers all the time. With glibc's default (dynamic)
	 * thresholds the free top of the heap keeps going back to the kernel
	 * (brk) and coming back as fresh zeroed pages: 120,000 to 150,000
	 * page faults and up to 5,300 brk calls per GiB relayed. Fixed
	 * thresholds keep up to 64 MiB of freed heap for reuse; release()
	 * gives it back when the last connection ends.
	 */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	base = new_base(!strcmp(cmds[i].name, "connect") ||
	    (!strcmp(cmds[i].name, "listen") && !o.echo && !o.exec_cmd));
	if (!base) {
		fprintf(stderr, "strata: cannot create an event base\n");
		return EXIT_FAILURE_;
	}
	dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	srv.one_shot = nw == 1 && !strcmp(cmds[i].name, "listen") &&
	    !o.echo && !o.exec_cmd;
	if (workers_make(nw) < 0 || setup_limits() < 0)
		rc = EXIT_FAILURE_;
	else
		rc = cmds[i].fn(argc - 1 - first, argv + 1 + first);
	workers_end();
	free_limits();
	stackarg_clear(&srv.stack);
	stackarg_clear(&srv.target);
	strata_stack_free(srv.prepared);
	srv.prepared = NULL;
	if (dns)
		evdns_base_free(dns, 0);
	event_base_free(base);
	return rc;
}
