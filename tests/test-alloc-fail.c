/*
 * Allocation failures, the way curl's torture tests do them: run a scenario
 * once to count its allocations, then again with the 1st, 2nd, ..., Nth
 * allocation failing, until a run gets through without reaching the
 * failure. Every allocator is hooked: strata's own (zlib's states
 * included), libevent's and OpenSSL's. Each run is a child process, so a
 * failure that poisons a library's global state stays in that run, and
 * the child's exit tells what happened:
 *
 *   passed (all data arrived intact) or failed cleanly (an API call
 *   returned NULL with a message, or an error or EOF event reached the
 *   user): good; wrong data, an error without a message, a hang, a crash
 *   or a leak (LeakSanitizer in the ASan build makes the child exit 23):
 *   a finding.
 *
 * Scenarios: "build" (parse and build stacks on a socketpair, free them)
 * and "transfer" (a listener and a client over tcp | tls | zlib | lines,
 * lines echoed and checked, then closed). STRATA_TORTURE_STEP=K runs only
 * every Kth failure point (the default runs every one).
 */
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "strata/strata.h"

/* ---- the counting allocator ---- */

static unsigned long alloc_count; /* allocations since arm() */
static unsigned long fail_at;	  /* 0: never */
static int failed_one;		  /* the failure was injected */

/* Where the injected failure happened, for the report of a finding. */
static void *fail_stack[32];
static int fail_depth;

/* A place for a breakpoint: the injected failure. */
__attribute__((noinline)) static void
fail_hit(void)
{
	fail_depth = backtrace(fail_stack, 32);
}

static void
report_failure_site(const char *what)
{
	fprintf(stderr, "--- %s; the failed allocation was made by:\n", what);
	backtrace_symbols_fd(fail_stack, fail_depth, 2);
}

/*
 * libevent 2.1.12 does not check evbuffer_add_cb() for NULL in these
 * callers: two crash on the NULL entry right after (bufferevent_filter.c
 * bufferevent_filter_new: evbuffer_cb_clear_flags(outbuf_cb);
 * bufferevent.c bufferevent_setwatermark: evbuffer_cb_set_flags(
 * read_watermarks_cb)), and bufferevent_socket_new returns a bufferevent
 * whose writes never start (no outbuf callback). Nothing above libevent can catch that, so such an
 * allocation is let through and the next one fails instead; the driver
 * reports how often (the child's exit code +50).
 */
static const char *const unchecked_callers[] = {
	"bufferevent_filter_new", "bufferevent_setwatermark",
	"bufferevent_socket_new",
};
static int skipped_one;

static const char *
frame_name(void *pc)
{
	Dl_info info;

	return dladdr(pc, &info) && info.dli_sname ? info.dli_sname : "";
}

static int
libevent_cannot_fail_here(void)
{
	void *pcs[12];
	int n = backtrace(pcs, 12), i;
	size_t k;

	for (i = 1; i + 1 < n; i++) {
		if (strcmp(frame_name(pcs[i]), "evbuffer_add_cb"))
			continue;
		for (k = 0; k < sizeof(unchecked_callers) /
		     sizeof(*unchecked_callers); k++)
			if (!strcmp(frame_name(pcs[i + 1]),
				unchecked_callers[k]))
				return 1;
	}
	return 0;
}

static int
fail_now(void)
{
	if (!fail_at)
		return 0;
	if (++alloc_count == fail_at) {
		if (libevent_cannot_fail_here()) {
			skipped_one = 1;
			fail_at++;
			return 0;
		}
		failed_one = 1;
		fail_hit();
		return 1;
	}
	return 0;
}

static void *
t_malloc(size_t n)
{
	return fail_now() ? NULL : malloc(n);
}

static void *
t_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : realloc(p, n);
}

static void
t_free(void *p)
{
	free(p);
}

static void *
o_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return t_malloc(n);
}

static void *
o_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return t_realloc(p, n);
}

static void
o_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

/* Start counting; the Nth allocation from now fails (0: count only). */
static void
arm(unsigned long n)
{
	alloc_count = 0;
	failed_one = 0;
	fail_at = n ? n : (unsigned long)-1;
}

/* ---- outcomes ---- */

enum outcome {
	PASSED = 0,	/* everything arrived */
	CLEAN_FAIL = 10,/* a NULL with a message, or an error/EOF event */
	WRONG_DATA = 20,
	NO_MESSAGE = 21,/* an error without a message */
	HANG = 30,
	SETUP = 40	/* the test itself could not run */
};

static char dir[] = "/tmp/strata-torture-XXXXXX";
static char cert[256], key[256];

/* ---- scenario "build" ---- */

static const char *const build_stacks[] = {
	"lines",
	"zlib(format=gzip, level=6) | lines(max=4096)",
	"tls(role=server, cert=%s, key=%s) | zlib | lines",
	"tls(role=client, ca=%s, name=localhost) | zlib(format=raw) | lines",
};

static enum outcome
scenario_build(void)
{
	struct event_base *base = event_base_new();
	enum outcome r = PASSED;
	size_t i;

	if (!base)
		return CLEAN_FAIL;
	for (i = 0; i < sizeof(build_stacks) / sizeof(*build_stacks); i++) {
		struct strata_error err;
		struct bufferevent *t, *top;
		char stack[1024];
		int fds[2];

		snprintf(stack, sizeof(stack), build_stacks[i], cert, key);
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
			return SETUP;
		evutil_make_socket_nonblocking(fds[0]);
		t = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
		if (!t) {
			close(fds[0]);
			close(fds[1]);
			r = CLEAN_FAIL;
			continue;
		}
		memset(&err, 0, sizeof(err));
		top = strata_push(t, stack, BEV_OPT_CLOSE_ON_FREE, &err);
		if (!top) {
			if (!err.message[0])
				r = NO_MESSAGE;
			else if (r == PASSED)
				r = CLEAN_FAIL;
			bufferevent_free(t);
		} else {
			bufferevent_write(top, "hello\n", 6);
			event_base_loop(base, EVLOOP_NONBLOCK);
			bufferevent_free(top);
		}
		close(fds[1]);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	return r;
}

/* ---- scenario "transfer" ---- */

#define LINES 200

struct peer {
	struct bufferevent *top;
	struct evbuffer *got;
	int eof, error, no_message;
};

struct transfer {
	struct event_base *base;
	struct strata_listener *l;
	struct peer srv, cli;
	struct evbuffer *want;
	int wrong, done;
};

static void
peer_free(struct peer *p)
{
	if (p->top)
		bufferevent_free(p->top);
	p->top = NULL;
}

static void
note_event(struct peer *p, short what)
{
	if (what & BEV_EVENT_ERROR) {
		p->error = 1;
		if (!strata_last_error(p->top) || !*strata_last_error(p->top))
			p->no_message = 1;
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_TIMEOUT))
		p->eof = 1;
}

static void
srv_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct transfer *x = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	note_event(&x->srv, what);
	peer_free(&x->srv);
	if (!x->cli.top)
		event_base_loopexit(x->base, NULL);
}

static void
on_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct transfer *x = arg;

	(void)l;
	if (x->srv.top) { /* one connection only */
		bufferevent_free(top);
		return;
	}
	x->srv.top = top;
	bufferevent_setcb(top, srv_read, NULL, srv_event, x);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

/* Whether @p got is a prefix of @p want (or all of it with @p whole), with
 * no allocation: evbuffer_pullup() could be the one that fails. */
static int
prefix_of(struct evbuffer *got, struct evbuffer *want, int whole)
{
	static char a[64 * 1024], b[64 * 1024];
	size_t n = evbuffer_get_length(got), w = evbuffer_get_length(want);

	if (n > w || (whole && n != w) || n > sizeof(a))
		return 0;
	if (evbuffer_copyout(got, a, n) != (ev_ssize_t)n ||
	    evbuffer_copyout(want, b, n) != (ev_ssize_t)n)
		return 0;
	return !memcmp(a, b, n);
}

static void
cli_read(struct bufferevent *bev, void *arg)
{
	struct transfer *x = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t want = evbuffer_get_length(x->want);

	evbuffer_add_buffer(x->cli.got, in);
	if (evbuffer_get_length(x->cli.got) < want)
		return;
	if (!prefix_of(x->cli.got, x->want, 1))
		x->wrong = 1;
	x->done = 1;
	peer_free(&x->cli);
	if (!x->srv.top)
		event_base_loopexit(x->base, NULL);
}

static void
cli_event(struct bufferevent *bev, short what, void *arg)
{
	struct transfer *x = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	note_event(&x->cli, what);
	/* what arrived so far must be a prefix of what was sent */
	if (!prefix_of(x->cli.got, x->want, 0))
		x->wrong = 1;
	peer_free(&x->cli);
	if (!x->srv.top)
		event_base_loopexit(x->base, NULL);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopexit(arg, NULL);
}

static enum outcome
scenario_transfer(void)
{
	struct transfer x;
	struct strata_error err;
	struct timeval tv = {5, 0};
	struct event *timer = NULL;
	char stack[1024];
	enum outcome r = CLEAN_FAIL;
	int i, api_fail = 0, hung = 0;
	static char text[LINES * 80];
	size_t len;

	memset(&x, 0, sizeof(x));
	x.want = evbuffer_new();
	x.cli.got = evbuffer_new();
	if (!x.want || !x.cli.got || !(x.base = event_base_new()))
		goto out;
	for (i = 0, len = 0; i < LINES; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		    "line %d of the torture transfer, with some text to "
		    "compress %d\n", i, i);
	if (evbuffer_add(x.want, text, len) < 0)
		goto out;
	if (!(timer = evtimer_new(x.base, on_timeout, x.base)) ||
	    evtimer_add(timer, &tv) < 0)
		goto out;
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:0 | tls(cert=%s, "
	    "key=%s) | zlib | lines", cert, key);
	memset(&err, 0, sizeof(err));
	x.l = strata_listen(x.base, stack, BEV_OPT_CLOSE_ON_FREE, on_accept,
	    &x, &err);
	if (!x.l) {
		api_fail = err.message[0] ? 1 : -1;
		goto out;
	}
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | tls(ca=%s, "
	    "name=localhost) | zlib | lines", strata_listener_port(x.l), cert);
	memset(&err, 0, sizeof(err));
	x.cli.top = strata_connect(x.base, NULL, stack, BEV_OPT_CLOSE_ON_FREE,
	    &err);
	if (!x.cli.top) {
		api_fail = err.message[0] ? 1 : -1;
		goto out;
	}
	bufferevent_setcb(x.cli.top, cli_read, NULL, cli_event, &x);
	bufferevent_enable(x.cli.top, EV_READ | EV_WRITE);
	if (bufferevent_write(x.cli.top, text, len) < 0) {
		api_fail = 1;
		goto out;
	}
	event_base_dispatch(x.base);
	hung = x.cli.top != NULL;
	if (hung) {
		char st[2048];
		report_failure_site("hang");
		strata_stats_format(x.cli.top, st, sizeof(st));
		fprintf(stderr, "client: %s\n", st);
		if (x.srv.top) {
			strata_stats_format(x.srv.top, st, sizeof(st));
			fprintf(stderr, "server: %s\n", st);
		} else
			fprintf(stderr, "server: %s\n", x.srv.error ?
			    "error event" : x.srv.eof ? "eof" : "never "
			    "accepted");
	}
out:
	if (x.wrong)
		r = WRONG_DATA;
	else if (api_fail < 0 || x.cli.no_message || x.srv.no_message)
		r = NO_MESSAGE;
	else if (hung)
		r = HANG;
	else if (x.done)
		r = PASSED;
	peer_free(&x.cli);
	peer_free(&x.srv);
	if (x.l)
		strata_listener_free(x.l);
	if (timer)
		event_free(timer);
	if (x.base) {
		event_base_loop(x.base, EVLOOP_NONBLOCK);
		event_base_free(x.base);
	}
	if (x.want)
		evbuffer_free(x.want);
	if (x.cli.got)
		evbuffer_free(x.cli.got);
	return r;
}

/* ---- the driver ---- */

struct scenario {
	const char *name;
	enum outcome (*run)(void);
};

static const struct scenario scenarios[] = {
	{"build", scenario_build},
	{"transfer", scenario_transfer},
};

static const char *
outcome_name(int code)
{
	switch (code) {
	case PASSED: return "passed";
	case CLEAN_FAIL: return "failed cleanly";
	case WRONG_DATA: return "WRONG DATA";
	case NO_MESSAGE: return "ERROR WITHOUT A MESSAGE";
	case HANG: return "HANG";
	case SETUP: return "setup failed";
	case 23: return "LEAK (LeakSanitizer)";
	default: return "unexpected exit";
	}
}

static void
on_crash(int sig)
{
	void *pcs[32];
	int n = backtrace(pcs, 32);

	report_failure_site(sig == SIGALRM ? "stuck" : "crash");
	fprintf(stderr, "--- signal %d at:\n", sig);
	backtrace_symbols_fd(pcs, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Exit code of the child: the outcome, +100 when the Nth allocation was
 * never reached (the scenario is shorter than N). */
static int
run_child(const struct scenario *sc, unsigned long n, int *status)
{
	pid_t pid = fork();
	int st, waited = 0;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		enum outcome r;

		alarm(20); /* a hang inside a library call */
		signal(SIGSEGV, on_crash);
		signal(SIGABRT, on_crash);
		signal(SIGALRM, on_crash);
		arm(n);
		r = sc->run();
		fail_at = 0;
		/* exit(), not _exit(): LeakSanitizer checks at exit */
		exit(r + (failed_one ? 0 : 100) + (skipped_one ? 50 : 0));
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR || ++waited > 1000)
			return -1;
	}
	*status = st;
	return 0;
}

static int
make_cert(void)
{
	char cmd[1024];

	if (!mkdtemp(dir))
		return -1;
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 2 "
	    "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
	    ">/dev/null 2>&1", key, cert);
	return system(cmd) == 0 ? 0 : -1;
}

static void
remove_cert(void)
{
	unlink(cert);
	unlink(key);
	rmdir(dir);
}

int
main(void)
{
	const char *s = getenv("STRATA_TORTURE_STEP");
	unsigned long step = s ? strtoul(s, NULL, 10) : 1;
	size_t i;
	int bad = 0;

	if (!step)
		step = 1;
	/* before anything allocates */
	if (!CRYPTO_set_mem_functions(o_malloc, o_realloc, o_free)) {
		fprintf(stderr, "CRYPTO_set_mem_functions failed\n");
		return 1;
	}
	event_set_mem_functions(t_malloc, t_realloc, t_free);
	strata_set_mem_functions(t_malloc, t_realloc, t_free);
	signal(SIGPIPE, SIG_IGN);
	if (make_cert() < 0) {
		fprintf(stderr, "cannot make a certificate with openssl\n");
		return 1;
	}
	/* STRATA_TORTURE_AT=scenario:N runs that one failure in this
	 * process (for a debugger: break on fail_hit) */
	if ((s = getenv("STRATA_TORTURE_AT")) != NULL) {
		const char *colon = strchr(s, ':');
		for (i = 0; colon && i < sizeof(scenarios) / sizeof(*scenarios);
		     i++) {
			enum outcome r;
			if (strncmp(scenarios[i].name, s, (size_t)(colon - s)))
				continue;
			arm(0);
			scenarios[i].run(); /* warm up as the driver does */
			arm(strtoul(colon + 1, NULL, 10));
			r = scenarios[i].run();
			fail_at = 0;
			printf("%s: %s%s\n", s, outcome_name(r),
			    failed_one ? "" : " (not reached)");
		}
		remove_cert();
		return 0;
	}
	for (i = 0; i < sizeof(scenarios) / sizeof(*scenarios); i++) {
		const struct scenario *sc = &scenarios[i];
		unsigned long n, total, runs = 0, clean = 0, passed = 0;
		unsigned long skipped = 0;
		enum outcome r;
		time_t t0 = time(NULL);
		int st;

		/* warm up in this process (library init, caches), count */
		arm(0);
		r = sc->run();
		total = alloc_count;
		fail_at = 0;
		if (getenv("STRATA_TORTURE_VERBOSE"))
			fprintf(stderr, "%s: %lu allocations\n", sc->name,
			    total);
		if (r != PASSED) {
			fprintf(stderr, "%s: fails without failures: %s\n",
			    sc->name, outcome_name(r));
			bad++;
			continue;
		}
		for (n = 1;; n += step) {
			int code;

			if (run_child(sc, n, &st) < 0) {
				fprintf(stderr, "%s: fork/wait failed\n",
				    sc->name);
				bad++;
				break;
			}
			runs++;
			if (getenv("STRATA_TORTURE_VERBOSE"))
				fprintf(stderr, "%s %lu: status %#x (%ld s)\n",
				    sc->name, n, st, (long)(time(NULL) - t0));
			if (WIFSIGNALED(st)) {
				fprintf(stderr, "%s: allocation %lu failing: "
				    "killed by signal %d (%s)\n", sc->name, n,
				    WTERMSIG(st), WTERMSIG(st) == SIGALRM ?
				    "hang" : "crash");
				bad++;
				continue;
			}
			code = WEXITSTATUS(st);
			if (code != 23 && code % 100 >= 50) {
				skipped++;
				code -= 50;
			}
			if (code >= 100) { /* got through without the failure */
				if (code - 100 != PASSED) {
					fprintf(stderr, "%s: no failure "
					    "injected, yet: %s\n", sc->name,
					    outcome_name(code - 100));
					bad++;
				}
				break;
			}
			if (code == PASSED)
				passed++;
			else if (code == CLEAN_FAIL)
				clean++;
			else {
				fprintf(stderr, "%s: allocation %lu failing: "
				    "%s\n", sc->name, n, outcome_name(code));
				bad++;
			}
		}
		printf("%s: %lu allocations when nothing fails; %lu runs "
		    "(every %lu%s): %lu failed cleanly, %lu recovered, %d "
		    "findings so far; %lu times libevent could not take the "
		    "failure where it fell; %lds\n", sc->name, total, runs,
		    step, step == 1 ? "st" : "th", clean, passed, bad, skipped,
		    (long)(time(NULL) - t0));
		fflush(stdout);
	}
	remove_cert();
	return bad ? 1 : 0;
}
