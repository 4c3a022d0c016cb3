/*
 * strata-demo: two strata stacks in one process, talking over a socketpair.
 *
 * Both ends push the same filters onto a plain socket bufferevent:
 *
 *	frames(mode=stream) | lines(eol=crlf)
 *
 * (listed from the wire up). The client writes a text of numbered lines
 * (or a file), the server checks every byte it receives and echoes it, and
 * the client checks the echo. Then both stacks print what each layer did.
 * Everything the program touches is plain libevent: callbacks, watermarks,
 * enable/disable, bufferevent_flush(BEV_FINISHED) to end the stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "frames.h"
#include "strata/plugin.h"
#include "strata/strata.h"

#define DEMO_STACK                                                             \
	"frames(mode=stream, max-frame=64k) | lines(eol=crlf, max=1M)"
#define DEMO_SIZE_DEFAULT (4u << 20)
#define DEMO_SIZE_MAX (1u << 30)
#define SEND_CHUNK (256 * 1024) /* bytes written per write callback */
#define ECHO_HIGH (1024 * 1024) /* server stops reading above this */
#define ECHO_LOW (256 * 1024)	/* and resumes below this */
#define WATCHDOG_SEC 60

/* One end of the connection. */
struct end {
	const char *name;
	struct bufferevent *top;
	size_t got;    /* bytes received and checked so far */
	size_t bad_at; /* first mismatch, or SIZE_MAX */
	int eof;
	int error;
};

struct demo {
	struct event_base *base;
	const unsigned char *text;
	size_t len;
	size_t sent;  /* client: bytes written to its top */
	int finished; /* client: output ended */
	struct end client, server;
	int timed_out;
};

/* ---- the text ---- */

static const char *const words[] = {
    "stack",
    "filter",
    "frame",
    "line",
    "buffer",
    "event",
    "socket",
    "layer",
    "byte",
    "stream",
    "wire",
    "peer",
    "header",
    "payload",
    "length",
    "callback",
    "watermark",
    "flush",
    "transport",
    "chain",
};

static uint64_t
rng_next(uint64_t *s)
{
	*s = *s * 6364136223846793005u + 1442695040888963407u;
	return *s >> 33;
}

/* Numbered lines of words, whole lines only, at most @p size bytes. */
static unsigned char *
text_generate(size_t size, size_t *len)
{
	unsigned char *t = malloc(size);
	uint64_t seed = 42;
	char line[256];
	size_t off = 0, no = 1;

	if (!t)
		return NULL;
	for (;; no++) {
		int n = snprintf(line, sizeof(line), "%07zu", no);
		int k = 3 + (int)(rng_next(&seed) % 14);

		while (k--)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %s",
			    words[rng_next(&seed) %
				  (sizeof(words) / sizeof(words[0]))]);
		line[n++] = '\n';
		if (off + (size_t)n > size)
			break;
		memcpy(t + off, line, (size_t)n);
		off += (size_t)n;
	}
	*len = off;
	return t;
}

/* Read all of @p path; a final newline is added if missing, because the
 * lines filter terminates the last line at the end of the stream. */
static unsigned char *
text_load(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	unsigned char *t = NULL, *nt;
	size_t cap = 0, n = 0, r;

	if (!fp) {
		fprintf(stderr, "strata-demo: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	do {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 1 << 20;
			if (cap > DEMO_SIZE_MAX ||
			    !(nt = realloc(t, cap + 1))) {
				fprintf(stderr,
				    "strata-demo: %s: too large "
				    "(at most 1 GiB)\n",
				    path);
				goto fail;
			}
			t = nt;
		}
		r = fread(t + n, 1, cap - n, fp);
		n += r;
	} while (r > 0);
	if (ferror(fp)) {
		fprintf(stderr, "strata-demo: %s: read error\n", path);
		goto fail;
	}
	fclose(fp);
	if (n && t[n - 1] != '\n')
		t[n++] = '\n';
	*len = n;
	return t;
fail:
	fclose(fp);
	free(t);
	return NULL;
}

/* ---- checking what arrives ---- */

/* Compare the front of @p in with the text at end->got, and count it. */
static void
check_bytes(struct demo *d, struct end *end, struct evbuffer *in)
{
	struct evbuffer_iovec v[16];
	int n = evbuffer_peek(in, -1, NULL, v, 16), i;

	if (n > 16)
		n = 16; /* the rest is checked on the next pass */
	for (i = 0; i < n; i++) {
		size_t k = v[i].iov_len, j;

		if (end->got + k > d->len ||
		    memcmp(v[i].iov_base, d->text + end->got, k)) {
			for (j = 0; j < k && end->got + j < d->len &&
				    ((unsigned char *)v[i].iov_base)[j] ==
					d->text[end->got + j];
			     j++)
				;
			if (end->bad_at == SIZE_MAX)
				end->bad_at = end->got + j;
		}
		end->got += k;
	}
}

/* Bytes covered by the first 16 extents of @p in (what check_bytes saw). */
static size_t
peeked_len(struct evbuffer *in)
{
	struct evbuffer_iovec v[16];
	int n = evbuffer_peek(in, -1, NULL, v, 16), i;
	size_t len = 0;

	for (i = 0; i < n && i < 16; i++)
		len += v[i].iov_len;
	return len;
}

/* ---- client: send the text, check the echo ---- */

static void
client_send(struct demo *d)
{
	struct bufferevent *top = d->client.top;

	if (d->sent < d->len) {
		size_t off = d->sent, n = d->len - off;
		if (n > SEND_CHUNK)
			n = SEND_CHUNK;
		/* Count it first: a filter bufferevent may run this write
		 * callback again from inside bufferevent_write(). */
		d->sent += n;
		bufferevent_write(top, d->text + off, n);
		return;
	}
	if (!d->finished) {
		/* End our direction: lines terminates, frames flushes, the
		 * socket's write side is shut down once everything is sent.
		 * Reading the echo goes on. */
		d->finished = 1;
		bufferevent_flush(top, EV_WRITE, BEV_FINISHED);
	}
}

static void
client_write(struct bufferevent *bev, void *arg)
{
	client_send(arg);
}

static void
client_read(struct bufferevent *bev, void *arg)
{
	struct demo *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in)) {
		size_t n = peeked_len(in);
		check_bytes(d, &d->client, in);
		evbuffer_drain(in, n);
	}
}

static void
end_event(struct demo *d, struct end *end, short what)
{
	if (what & BEV_EVENT_EOF)
		end->eof = 1;
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		const char *msg = strata_last_error(end->top);
		end->error = 1;
		fprintf(stderr, "strata-demo: %s: %s\n", end->name,
		    msg ? msg : "error");
		event_base_loopbreak(d->base);
	}
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
	struct demo *d = arg;

	end_event(d, &d->client, what);
	if (d->client.eof)
		event_base_loopbreak(d->base); /* the whole echo is in */
}

/* ---- server: check and echo, with back-pressure ---- */

static void
server_read(struct bufferevent *bev, void *arg)
{
	struct demo *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in)) {
		size_t n = peeked_len(in);
		check_bytes(d, &d->server, in);
		/* moves the chains, no copy */
		evbuffer_remove_buffer(in, bufferevent_get_output(bev), n);
	}
	/* A slow client must not make the echo grow without bound. */
	if (evbuffer_get_length(bufferevent_get_output(bev)) >= ECHO_HIGH)
		bufferevent_disable(bev, EV_READ);
}

static void
server_write(struct bufferevent *bev, void *arg)
{
	struct demo *d = arg;

	if (!d->server.eof)
		bufferevent_enable(bev, EV_READ);
}

static void
server_event(struct bufferevent *bev, short what, void *arg)
{
	struct demo *d = arg;

	end_event(d, &d->server, what);
	if (what & BEV_EVENT_EOF)
		bufferevent_flush(bev, EV_WRITE, BEV_FINISHED); /* echo done */
}

static void
watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct demo *d = arg;

	d->timed_out = 1;
	event_base_loopbreak(d->base);
}

/* ---- output ---- */

static void
print_stack(const char *title, struct bufferevent *top)
{
	struct strata_layer_stats st[16];
	char extra[256];
	int n = strata_stats(top, st, 16), i;

	printf("\n%s\n", title);
	printf("  %-10s %12s -> %-12s %12s -> %-12s %s\n", "layer", "read: in",
	    "out", "write: in", "out", "details");
	for (i = (n > 16 ? 16 : n) - 1; i >= 0; i--) {
		strata_layer_describe(top, i, extra, sizeof(extra));
		printf("  %-10s %12llu -> %-12llu %12llu -> %-12llu %s\n",
		    st[i].name, (unsigned long long)st[i].read_in,
		    (unsigned long long)st[i].read_out,
		    (unsigned long long)st[i].write_in,
		    (unsigned long long)st[i].write_out, extra);
	}
}

static int
print_result(const struct demo *d, const struct end *end, const char *what)
{
	int ok = !end->error && end->eof && end->got == d->len &&
		 end->bad_at == SIZE_MAX;

	printf("  %-28s %10zu of %zu bytes  %s", what, end->got, d->len,
	    ok ? "OK (identical)" : "FAIL");
	if (end->bad_at != SIZE_MAX)
		printf(" (first difference at byte %zu)", end->bad_at);
	else if (!ok && !end->eof)
		printf(" (no end of stream)");
	printf("\n");
	return ok;
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: strata-demo [--size BYTES | --file PATH]\n"
	    "\n"
	    "Builds two strata stacks over a socketpair in this process,\n"
	    "  " DEMO_STACK "\n"
	    "sends a text from the client to the server, which checks it and\n"
	    "echoes it back, checks the echo, and prints what every layer "
	    "did.\n"
	    "\n"
	    "  --size BYTES  size of the generated text (default 4M; k, M, G)\n"
	    "  --file PATH   send this file instead (a final newline is added\n"
	    "                if missing; lines longer than 1 MiB fail)\n"
	    "  --help        this text\n"
	    "\n"
	    "Exit status: 0 if both directions arrived intact, 1 if not,\n"
	    "2 on a usage error or an unreadable file.\n");
}

/* ---- setup ---- */

static int
parse_args(int argc, char **argv, size_t *size, const char **file)
{
	struct strata_error err;
	int i;

	for (i = 1; i < argc; i++) {
		struct strata_option opt = {"--size", NULL, 0};
		uint64_t v;

		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			opt.value = argv[++i];
			if (strata_opt_uint("strata-demo", &opt, 64,
				DEMO_SIZE_MAX, 1, &v, &err) < 0) {
				fprintf(stderr, "%s\n", err.message);
				return -1;
			}
			*size = (size_t)v;
		} else if (!strcmp(argv[i], "--file") && i + 1 < argc)
			*file = argv[++i];
		else {
			fprintf(
			    stderr, "strata-demo: unexpected '%s'\n", argv[i]);
			usage(stderr);
			return -1;
		}
	}
	return 0;
}

/* Push the demo stack onto one end of the socketpair. */
static struct bufferevent *
make_end(struct demo *d, int fd, int server)
{
	struct strata_error err;
	struct bufferevent *t, *top;

	t = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!t)
		return NULL;
	top = strata_push(t, DEMO_STACK,
	    BEV_OPT_CLOSE_ON_FREE | (server ? STRATA_OPT_SERVER : 0), &err);
	if (!top) {
		fprintf(stderr, "strata-demo: %s\n", err.message);
		bufferevent_free(t);
	}
	return top;
}

static int
setup(struct demo *d)
{
	struct strata_error err;
	int fds[2];

	if (frames_register(&err) < 0) {
		fprintf(stderr, "strata-demo: %s\n", err.message);
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) {
		perror("strata-demo: socketpair");
		return -1;
	}
	evutil_make_socket_nonblocking(fds[0]);
	evutil_make_socket_nonblocking(fds[1]);
	d->client.top = make_end(d, fds[0], 0);
	d->server.top = make_end(d, fds[1], 1);
	if (!d->client.top || !d->server.top)
		return -1;
	bufferevent_setcb(
	    d->client.top, client_read, client_write, client_event, d);
	bufferevent_setcb(
	    d->server.top, server_read, server_write, server_event, d);
	bufferevent_setwatermark(d->server.top, EV_WRITE, ECHO_LOW, 0);
	bufferevent_enable(d->client.top, EV_READ | EV_WRITE);
	bufferevent_enable(d->server.top, EV_READ | EV_WRITE);
	return 0;
}

static double
now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
print_header(const struct demo *d, const char *file)
{
	printf("strata-demo: two strata stacks talking over a socketpair, "
	       "in one process\n\n");
	printf("  stack at both ends (wire first): %s\n", DEMO_STACK);
	printf("    frames  the wire carries 4-byte length-prefixed frames\n"
	       "    lines   inside them, CRLF-terminated lines; the "
	       "application\n"
	       "            reads and writes LF lines, and gets whole lines "
	       "only\n\n");
	if (file)
		printf("  text: %s, %zu bytes\n", file, d->len);
	else
		printf("  text: %zu bytes of numbered lines (generated; "
		       "--size, --file)\n",
		    d->len);
	printf("  the client sends it, the server checks every byte and "
	       "echoes it,\n  the client checks the echo.\n\n");
}

static int
run(struct demo *d)
{
	struct timeval limit = {WATCHDOG_SEC, 0};
	struct event *dog = evtimer_new(d->base, watchdog, d);
	double t0, secs;
	int ok;

	evtimer_add(dog, &limit);
	t0 = now_sec();
	client_send(d);
	event_base_dispatch(d->base);
	secs = now_sec() - t0;
	event_free(dog);
	if (d->timed_out)
		fprintf(
		    stderr, "strata-demo: gave up after %d s\n", WATCHDOG_SEC);
	ok = print_result(d, &d->server, "server received:");
	ok &= print_result(d, &d->client, "client received the echo:");
	printf("  elapsed: %.3f s for %zu bytes each way (%.1f MB/s per "
	       "direction)\n",
	    secs, d->len, secs > 0 ? (double)d->len / secs / 1e6 : 0.0);
	printf("\nWhat each layer did, top layer first. \"read\" is wire -> "
	       "application,\n\"write\" is application -> wire; in -> out "
	       "is bytes into and out of the layer.\n");
	print_stack("client stack:", d->client.top);
	print_stack("server stack:", d->server.top);
	printf("\n%s\n", ok ? "OK: the text made the round trip intact."
			    : "FAIL: see above.");
	return ok;
}

int
main(int argc, char **argv)
{
	struct demo d;
	size_t size = DEMO_SIZE_DEFAULT;
	const char *file = NULL;
	unsigned char *text;
	int ok = 0;

	memset(&d, 0, sizeof(d));
	d.client.name = "client";
	d.server.name = "server";
	d.client.bad_at = d.server.bad_at = SIZE_MAX;
	if (parse_args(argc, argv, &size, &file) < 0)
		return 2;
	text = file ? text_load(file, &d.len) : text_generate(size, &d.len);
	if (!text)
		return 2;
	d.text = text;
	if (!(d.base = event_base_new()))
		goto out;
	print_header(&d, file);
	if (setup(&d) == 0)
		ok = run(&d);
out:
	if (d.client.top)
		bufferevent_free(d.client.top);
	if (d.server.top)
		bufferevent_free(d.server.top);
	if (d.base)
		event_base_free(d.base);
	free(text);
	return ok ? 0 : 1;
}
