/*
 * The zlib filter.
 *
 * As pure functions: strata_zlib_filter_.output/.input called directly on
 * evbuffers, over every format, levels 0, 1, 6 and 9, every flush policy,
 * input fed in chunks of 1, 7, 4096 bytes and whole; the output is checked
 * with zlib itself (an independent inflater), and must not depend on the
 * chunking. Flush points must make everything written so far decodable;
 * dst_limit must hold on both sides. Hostile input: random bytes, every
 * truncation point, every single-bit flip, bad header CRC (FHCRC), bad
 * trailers, trailing garbage, bombs against both caps. Contexts that may
 * fail are made inside a stack ("tzlib", over a bufferevent_pair) so
 * strata_layer_fail() has a layer and the message can be read back.
 *
 * In stacks: socketpairs (round trips, a 100 MB stream generated and
 * verified on the fly, hostile peers, a 1 GB bomb, flush policies), and an
 * interactive line protocol over `tcp://127.0.0.1:PORT | zlib | lines`.
 *
 * Interop (suite "interop"): Python's zlib and gzip modules and the gzip
 * tool, as child processes over pipes, decode what strata compresses and
 * compress what strata decodes, byte for byte; and real stacks over the
 * exec: transport: `exec:sh -c "gzip -dc | gzip -c" | zlib(format=gzip)`
 * and a Python peer speaking a compressed line protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "helpers.h"
#include "internal.h"

#define ZL (&strata_zlib_filter_)
#define MIB (1024u * 1024u)

static const size_t chunk_sizes[] = {1, 7, 4096, 0 /* whole */};
static const char *const formats[] = {"zlib", "gzip", "raw"};
static const int levels[] = {0, 1, 6, 9};
static const char *const policies[] = {"auto", "none", "every:1000"};

/* ---- data ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

static const char *const words[] = {
	"the", "of", "and", "to", "in", "a", "is", "that", "for", "it",
	"connection", "request", "GET", "POST", "/api/v1/users", "200",
	"404", "user_id=4711", "latency=12ms", "INFO", "WARN", "ERROR",
	"2024-05-17", "12:03:44.512", "server", "client", "session",
	"timeout", "bytes", "received", "sent", "retry", "cache", "miss",
};

/* Text lines of words, deterministic from @p seed. */
static void
text_fill(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1;
	size_t off = 0, col = 0;

	while (off < len) {
		const char *w;
		size_t k;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		w = words[(s >> 33) % STRATA_ARRAY_LEN(words)];
		k = strlen(w);
		if (col > 40 + (s & 63)) {
			buf[off++] = '\n';
			col = 0;
			continue;
		}
		if (col && off < len) {
			buf[off++] = ' ';
			col++;
		}
		if (k > len - off)
			k = len - off;
		memcpy(buf + off, w, k);
		off += k;
		col += k;
	}
}

/* Text with a stretch of random bytes and one of zeros in the middle. */
static unsigned char *
mixed_data(size_t len)
{
	unsigned char *d = malloc(len ? len : 1);
	size_t i, third = len / 3;

	ck_assert_ptr_nonnull(d);
	text_fill(d, len, 42);
	for (i = third; i < third + third / 3; i++)
		d[i] = (unsigned char)rnd();
	memset(d + 2 * third, 0, third / 4);
	return d;
}

/* @p b holds a prefix of @p s (at most @p n bytes). */
static int
is_prefix(struct evbuffer *b, const void *s, size_t n)
{
	size_t len = evbuffer_get_length(b);

	return len <= n && (!len || !memcmp(evbuffer_pullup(b, -1), s, len));
}

static int
wbits_of(const char *format, int window)
{
	if (!strcmp(format, "gzip"))
		return window + 16;
	if (!strcmp(format, "raw"))
		return -window;
	return window;
}

/* ---- zlib itself, as the reference ---- */

/*
 * Inflate @p len bytes with zlib directly into @p out. Returns 1 if the
 * stream ended exactly at the end of the input, 0 if it needs more input,
 * -1 on an error or bytes after the end.
 */
static int
ref_inflate(int wbits, const void *data, size_t len, struct evbuffer *out)
{
	unsigned char buf[16384];
	z_stream s;
	int r;

	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(inflateInit2(&s, wbits), Z_OK);
	s.next_in = (unsigned char *)(uintptr_t)data;
	s.avail_in = (uInt)len;
	do {
		s.next_out = buf;
		s.avail_out = sizeof(buf);
		r = inflate(&s, Z_SYNC_FLUSH);
		evbuffer_add(out, buf, sizeof(buf) - s.avail_out);
	} while (r == Z_OK && (s.avail_in || !s.avail_out));
	inflateEnd(&s);
	if (r == Z_STREAM_END)
		return s.avail_in ? -1 : 1;
	return r == Z_OK || r == Z_BUF_ERROR ? 0 : -1;
}

static void
ref_inflate_buf(int wbits, struct evbuffer *in, struct evbuffer *out,
    int want)
{
	int r = ref_inflate(wbits, evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), out);

	ck_assert_msg(r == want, "zlib's inflate: %d, want %d", r, want);
}

/* Deflate with zlib directly, a sync flush every @p every bytes (0: none),
 * Z_FINISH at the end. */
static void
ref_deflate(int wbits, int level, const void *data, size_t len,
    size_t every, struct evbuffer *out)
{
	/* room for any flush at once: no repeated flush markers */
	static unsigned char buf[256 * 1024];
	const unsigned char *p = data;
	size_t off = 0;
	z_stream s;
	int r;

	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(deflateInit2(&s, level, Z_DEFLATED, wbits, 8,
			     Z_DEFAULT_STRATEGY), Z_OK);
	do {
		size_t n = every && len - off > every ? every : len - off;
		int flush = off + n == len ? Z_FINISH : Z_SYNC_FLUSH;

		s.next_in = (unsigned char *)(uintptr_t)(p + off);
		s.avail_in = (uInt)n;
		do {
			s.next_out = buf;
			s.avail_out = sizeof(buf);
			r = deflate(&s, flush);
			evbuffer_add(out, buf, sizeof(buf) - s.avail_out);
		} while (s.avail_out == 0 || (flush == Z_FINISH &&
						 r != Z_STREAM_END));
		off += n;
	} while (off < len);
	deflateEnd(&s);
}

/* ---- contexts ---- */

static const char *
held_error(struct th_held *h)
{
	const char *e = strata_last_error(h->top);

	return e ? e : "(none)";
}

/* ---- driving a filter function ---- */

static const char *
mode_name(enum bufferevent_flush_mode m)
{
	return m == BEV_NORMAL ? "NORMAL" : m == BEV_FLUSH ? "FLUSH"
							    : "FINISHED";
}

/*
 * Call @p fn the way the engine does: again while it returns BEV_OK, until
 * its input is gone (BEV_NORMAL) or @p lim is used up. Checks the contract
 * on every call. Returns 0, or -1 on BEV_ERROR.
 */
static int
drive(bufferevent_filter_cb fn, void *ctx, struct evbuffer *src,
    struct evbuffer *dst, ev_ssize_t lim, enum bufferevent_flush_mode mode)
{
	int calls;

	for (calls = 0; calls < 10000000; calls++) {
		size_t s0 = evbuffer_get_length(src);
		size_t d0 = evbuffer_get_length(dst);
		enum bufferevent_filter_result r = fn(src, dst, lim, mode, ctx);
		size_t s1 = evbuffer_get_length(src);
		size_t d1 = evbuffer_get_length(dst);

		if (r == BEV_ERROR)
			return -1;
		ck_assert_msg(s1 <= s0 && d1 >= d0,
		    "filter added to src or took from dst");
		ck_assert_msg(r == BEV_NEED_MORE || s1 != s0 || d1 != d0,
		    "BEV_OK without progress (%s)", mode_name(mode));
		ck_assert_msg(lim < 0 || d1 - d0 <= (size_t)lim,
		    "wrote %zu bytes over a limit of %zd (%s)", d1 - d0, lim,
		    mode_name(mode));
		if (r != BEV_OK)
			return 0;
		if (lim >= 0 && (lim -= (ev_ssize_t)(d1 - d0)) <= 0)
			return 0;
		if (!s1 && mode == BEV_NORMAL)
			return 0;
	}
	ck_abort_msg("the filter kept returning BEV_OK");
	return -1;
}

/*
 * Feed @p len bytes to @p fn in pieces of @p chunk (0: whole), BEV_NORMAL
 * after each; a BEV_FLUSH call after every @p flush_every bytes (0: none);
 * then one call in @p last (BEV_NORMAL: none). Returns 0 or -1.
 */
static int
feed(bufferevent_filter_cb fn, void *ctx, const void *data, size_t len,
    size_t chunk, size_t flush_every, enum bufferevent_flush_mode last,
    struct evbuffer *out)
{
	struct evbuffer *src = evbuffer_new();
	size_t off = 0, next_flush = flush_every;
	int r = 0;

	if (!chunk)
		chunk = len ? len : 1;
	while (off < len && r == 0) {
		size_t n = len - off < chunk ? len - off : chunk;
		if (flush_every && off + n > next_flush)
			n = next_flush - off;
		evbuffer_add(src, (const char *)data + off, n);
		off += n;
		r = drive(fn, ctx, src, out, -1, BEV_NORMAL);
		if (r == 0 && flush_every && off == next_flush) {
			r = drive(fn, ctx, src, out, -1, BEV_FLUSH);
			next_flush += flush_every;
		}
	}
	if (r == 0 && last != BEV_NORMAL)
		r = drive(fn, ctx, src, out, -1, last);
	if (r == 0)
		ck_assert_uint_eq(evbuffer_get_length(src), 0);
	evbuffer_free(src);
	return r;
}

/* Compress with the filter (no layer: no auto flush), Z_FINISH at the end. */
static struct evbuffer *
fz_compress(const char *opts, const void *data, size_t len, size_t chunk,
    size_t flush_every)
{
	struct evbuffer *out = evbuffer_new();
	struct th_direct d;

	th_direct_open(&d, ZL, opts);
	ck_assert_int_eq(feed(ZL->output, d.ctx, data, len, chunk,
			     flush_every, BEV_FINISHED, out), 0);
	th_direct_close(&d);
	return out;
}

/* Decompress with the filter; the stream must end cleanly. */
static void
fz_decompress(const char *opts, struct evbuffer *in, size_t chunk,
    struct evbuffer *out)
{
	struct th_direct d;

	th_direct_open(&d, ZL, opts);
	ck_assert_int_eq(feed(ZL->input, d.ctx, evbuffer_pullup(in, -1),
			     evbuffer_get_length(in), chunk, 0, BEV_FINISHED,
			     out), 0);
	th_direct_close(&d);
}

/*
 * Decompress @p in with a stack-made context (errors have messages) fed in
 * pieces of @p chunk, then BEV_FINISHED. Returns the error message, or ""
 * (a static buffer).
 */
static const char *
fz_decompress_err(const char *opts, const void *in, size_t len,
    size_t chunk, struct evbuffer *out)
{
	static char msg[STRATA_ERROR_MAX + 64];
	struct event_base *base = event_base_new();
	struct th_held h;
	int r;

	th_held_open(&h, base, opts);
	r = feed(ZL->input, h.ctx, in, len, chunk, 0, BEV_FINISHED, out);
	snprintf(msg, sizeof(msg), "%s", r < 0 ? held_error(&h) : "");
	th_held_close(&h);
	event_base_free(base);
	return msg;
}

/* ---- child processes over pipes ---- */

static char script_dir[64];

/* Python helpers, written to a temporary directory at start. */
static const char py_decode[] =
    "import sys, zlib, gzip\n"
    "mode = sys.argv[1]\n"
    "data = sys.stdin.buffer.read()\n"
    "if mode == 'gzip-module':\n"
    "    out = gzip.decompress(data)\n"
    "else:\n"
    "    d = zlib.decompressobj(int(mode))\n"
    "    out = d.decompress(data) + d.flush()\n"
    "    if not d.eof or d.unused_data:\n"
    "        sys.exit(3)\n"
    "sys.stdout.buffer.write(out)\n";

static const char py_encode[] =
    "import io, sys, zlib, gzip\n"
    "kind, level, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
    "data = sys.stdin.buffer.read()\n"
    "if kind == 'gzip-members':\n"
    "    n = len(data) // 3\n"
    "    out = (gzip.compress(data[:n], level) + gzip.compress(b'', level)\n"
    "           + gzip.compress(data[n:2 * n], level, mtime=0)\n"
    "           + gzip.compress(data[2 * n:], level))\n"
    "elif kind == 'gzip-named':\n"
    "    b = io.BytesIO()\n"
    "    with gzip.GzipFile(filename='name.txt', mode='wb', fileobj=b,\n"
    "                       compresslevel=level, mtime=12345) as f:\n"
    "        f.write(data)\n"
    "    out = b.getvalue()\n"
    "else:\n"
    "    c = zlib.compressobj(level, zlib.DEFLATED, int(kind))\n"
    "    step = every or max(len(data), 1)\n"
    "    parts = []\n"
    "    for i in range(0, len(data), step):\n"
    "        parts.append(c.compress(data[i:i + step]))\n"
    "        if every:\n"
    "            parts.append(c.flush(zlib.Z_SYNC_FLUSH))\n"
    "    parts.append(c.flush())\n"
    "    out = b''.join(parts)\n"
    "sys.stdout.buffer.write(out)\n";

/* A compressed line protocol peer: "echo <line>" for each line, each
 * reply sync-flushed; at the end of our stream it finishes its own and
 * exits 0 only if ours ended with its end marker and nothing after. */
static const char py_echo[] =
    "import os, sys, zlib\n"
    "wb = int(sys.argv[1])\n"
    "d = zlib.decompressobj(wb)\n"
    "c = zlib.compressobj(6, zlib.DEFLATED, wb)\n"
    "def put(b):\n"
    "    while b:\n"
    "        b = b[os.write(1, b):]\n"
    "buf = b''\n"
    "while True:\n"
    "    chunk = os.read(0, 65536)\n"
    "    if not chunk:\n"
    "        break\n"
    "    buf += d.decompress(chunk)\n"
    "    out = b''\n"
    "    while b'\\n' in buf:\n"
    "        line, buf = buf.split(b'\\n', 1)\n"
    "        out += b'echo ' + line + b'\\n'\n"
    "    if out:\n"
    "        put(c.compress(out) + c.flush(zlib.Z_SYNC_FLUSH))\n"
    "ok = d.eof and not d.unused_data and not buf\n"
    "put(c.flush(zlib.Z_FINISH))\n"
    "sys.exit(0 if ok else 3)\n";

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	/* called from main, outside any test: no ck_assert here */
	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void
scripts_write(void)
{
	char p[128];

	snprintf(script_dir, sizeof(script_dir), "/tmp/strata-zlib-XXXXXX");
	if (!mkdtemp(script_dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(p, sizeof(p), "%s/decode.py", script_dir);
	write_file(p, py_decode);
	snprintf(p, sizeof(p), "%s/encode.py", script_dir);
	write_file(p, py_encode);
	snprintf(p, sizeof(p), "%s/echo.py", script_dir);
	write_file(p, py_echo);
}

static void
scripts_remove(void)
{
	static const char *const names[] = {"decode.py", "encode.py",
	    "echo.py"};
	char p[128];
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(names); i++) {
		snprintf(p, sizeof(p), "%s/%s", script_dir, names[i]);
		unlink(p);
	}
	rmdir(script_dir);
}

/*
 * Run @p argv with @p in on its stdin and its stdout collected in @p out;
 * both pumped through nonblocking pipes with poll (30 s without progress
 * fails the test). Returns the exit status (or 128 + signal).
 */
static int
run_child(char *const argv[], const void *in, size_t inlen,
    struct evbuffer *out)
{
	int pin[2], pout[2], status;
	size_t off = 0;
	pid_t pid;

	ck_assert_int_eq(pipe(pin), 0);
	ck_assert_int_eq(pipe(pout), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		close(pin[0]);
		close(pin[1]);
		close(pout[0]);
		close(pout[1]);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pin[0]);
	close(pout[1]);
	fcntl(pin[1], F_SETFL, O_NONBLOCK);
	fcntl(pout[0], F_SETFL, O_NONBLOCK);
	if (!inlen) {
		close(pin[1]);
		pin[1] = -1;
	}
	for (;;) {
		struct pollfd pf[2] = {{pout[0], POLLIN, 0},
		    {pin[1], POLLOUT, 0}};
		char buf[65536];
		ssize_t n;
		int r = poll(pf, pin[1] >= 0 ? 2 : 1, 30000);

		ck_assert_msg(r > 0, "%s: no progress in 30 s", argv[0]);
		if (pin[1] >= 0 && pf[1].revents) {
			n = write(pin[1], (const char *)in + off, inlen - off);
			if (n > 0)
				off += (size_t)n;
			if (off == inlen || (n < 0 && errno == EPIPE)) {
				close(pin[1]);
				pin[1] = -1;
			}
		}
		if (pf[0].revents) {
			n = read(pout[0], buf, sizeof(buf));
			if (n == 0)
				break;
			if (n > 0)
				evbuffer_add(out, buf, (size_t)n);
		}
	}
	if (pin[1] >= 0)
		close(pin[1]);
	close(pout[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status)
				 : 128 + WTERMSIG(status);
}

/* Run a Python helper: python3 DIR/@p script @p a1 [@p a2 @p a3]. */
static int
run_python(const char *script, const char *a1, const char *a2,
    const char *a3, const void *in, size_t inlen, struct evbuffer *out)
{
	char path[128];
	char *argv[] = {"python3", path, (char *)a1, (char *)a2, (char *)a3,
	    NULL};

	snprintf(path, sizeof(path), "%s/%s", script_dir, script);
	return run_child(argv, in, inlen, out);
}

/* ---- options ---- */

static void
config_ok(const char *opts)
{
	struct th_direct d;

	th_direct_open(&d, ZL, opts);
	th_direct_close(&d);
}

static void
config_fails(const char *opts, const char *want)
{
	struct strata_error err;
	struct th_optlist l;
	void *cfg = NULL;

	memset(&err, 0, sizeof(err));
	th_optlist_parse(&l, opts);
	ck_assert_msg(ZL->config(&cfg, l.o, l.n, &err) < 0,
	    "config '%s' was accepted", opts);
	ck_assert_int_eq(err.code, STRATA_ERR_OPTION);
	if (want)
		ck_assert_str_eq(err.message, want);
}

START_TEST(opt_every_value)
{
	static const char *const ok[] = {"format=zlib", "format=gzip",
	    "format=raw", "level=0", "level=9", "window=9", "window=15",
	    "memlevel=1", "memlevel=9", "strategy=default",
	    "strategy=filtered", "strategy=huffman", "strategy=rle",
	    "strategy=fixed", "flush=auto", "flush=none", "flush=every:1",
	    "flush=every:64k", "flush=every:1G", "max-ratio=0",
	    "max-ratio=1000000", "max-output=0", "max-output=1k",
	    "max-output=1G", "tail=error", "tail=allow",
	    ("format=gzip,level=1,window=12,memlevel=4,strategy=rle,"
		"flush=every:10,max-ratio=50,max-output=5M,tail=allow")};
	size_t i;
	int l;

	for (i = 0; i < STRATA_ARRAY_LEN(ok); i++)
		config_ok(ok[i]);
	for (l = 0; l <= 9; l++) {
		char o[32];
		snprintf(o, sizeof(o), "level=%d", l);
		config_ok(o);
	}
}
END_TEST

START_TEST(opt_bad_values)
{
	config_fails("level=10", "zlib: bad value '10' for level: expected "
	    "an integer from 0 to 9");
	config_fails("level=-1", NULL);
	config_fails("window=8", "zlib: bad value '8' for window: expected "
	    "an integer from 9 to 15");
	config_fails("window=16", NULL);
	config_fails("memlevel=0", NULL);
	config_fails("memlevel=10", NULL);
	config_fails("format=deflate", "zlib: bad value 'deflate' for "
	    "format: expected one of zlib, gzip, raw");
	config_fails("strategy=fast", NULL);
	config_fails("flush=sometimes", "zlib: bad value 'sometimes' for "
	    "flush: expected auto, none or every:N (N from 1 to 1G bytes, "
	    "k, M, G suffixes allowed)");
	config_fails("flush=every:", NULL);
	config_fails("flush=every:0", NULL);
	config_fails("flush=every:2G", NULL);
	config_fails("flush=every", NULL);
	config_fails("max-ratio=x", NULL);
	config_fails("max-ratio=1000001", NULL);
	config_fails("max-output=1T", NULL);
	config_fails("max-output=-5", NULL);
	config_fails("tail=maybe", "zlib: bad value 'maybe' for tail: "
	    "expected one of error, allow");
}
END_TEST

START_TEST(opt_stack_strings)
{
	struct event_base *base = event_base_new();
	struct bufferevent *pair[2], *top;
	struct strata_error err;
	char d[512];

	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	top = strata_push(pair[0], "zlib(levle=3)", BEV_OPT_CLOSE_ON_FREE,
	    &err);
	ck_assert_ptr_null(top);
	ck_assert_str_eq(err.message, "zlib: unknown option 'levle' at "
	    "position 5 (known: format, level, window, memlevel, strategy, "
	    "flush, max-ratio, max-output, tail)");
	top = strata_push(pair[0], "zlib(level=11)", BEV_OPT_CLOSE_ON_FREE,
	    &err);
	ck_assert_ptr_null(top);
	ck_assert_int_eq(err.position, 5);
	top = strata_push(pair[0],
	    "zlib(format=gzip, level=1, flush=every:4k, max-output=2M) | lines",
	    BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	ck_assert_int_gt(strata_layer_describe(top, 1, d, sizeof(d)), 0);
	ck_assert_str_eq(d, "format=gzip level=1 deflate_in=0 deflate_out=0 "
	    "deflate_ratio=- inflate_in=0 inflate_out=0 inflate_ratio=- "
	    "flushes=0 members=0");
	bufferevent_free(top);
	bufferevent_free(pair[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}
END_TEST

START_TEST(opt_defaults)
{
	struct event_base *base = event_base_new();
	struct bufferevent *pair[2], *top;
	struct strata_error err;
	const struct strata_option_doc *o;
	char d[512];

	ck_assert_ptr_eq(strata_find_filter("zlib"), ZL);
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	top = strata_push(pair[0], "zlib", BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	ck_assert_int_gt(strata_layer_describe(top, 1, d, sizeof(d)), 0);
	ck_assert_msg(!strncmp(d, "format=zlib level=1 ", 20), "%s", d);
	for (o = ZL->options; o->key; o++)
		ck_assert_msg(o->def && o->help && o->help[0], "%s", o->key);
	bufferevent_free(top);
	bufferevent_free(pair[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}
END_TEST

/* ---- pure round trips ---- */

/*
 * Every format, level and flush policy, input fed in every chunk size:
 * zlib decodes the result to the input, the filter's input side does too
 * (fed in the same chunk sizes), and the compressed bytes do not depend
 * on the chunking; they are zlib's own bytes for the same flush points
 * (but at level 0, whose stored blocks follow zlib's output space).
 */
START_TEST(rt_matrix)
{
	const size_t len = 12345; /* not a multiple of every:1000 */
	unsigned char *data = mixed_data(len);
	size_t f, l, p, c;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++)
	for (l = 0; l < STRATA_ARRAY_LEN(levels); l++)
	for (p = 0; p < STRATA_ARRAY_LEN(policies); p++) {
		struct evbuffer *first = NULL;
		char opts[128];

		snprintf(opts, sizeof(opts), "format=%s,level=%d,flush=%s",
		    formats[f], levels[l], policies[p]);
		for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
			struct evbuffer *z;

			/* memcheck: one-byte chunks for a third of the
			 * combinations (every one of them natively) */
			if (th_under_valgrind() && chunk_sizes[c] == 1 &&
			    (f + l + p) % 3)
				continue;
			z = fz_compress(opts, data, len, chunk_sizes[c], 0);
			struct evbuffer *back = evbuffer_new();
			struct evbuffer *mine = evbuffer_new();

			ref_inflate_buf(wbits_of(formats[f], 15), z, back, 1);
			ck_assert_msg(th_buf_eq(back, data, len),
			    "%s chunk %zu: zlib decodes %zu bytes", opts,
			    chunk_sizes[c], evbuffer_get_length(back));
			fz_decompress(opts, z, chunk_sizes[c], mine);
			ck_assert_msg(th_buf_eq(mine, data, len),
			    "%s chunk %zu: the filter decodes %zu bytes",
			    opts, chunk_sizes[c], evbuffer_get_length(mine));
			if (!first) {
				struct evbuffer *ref = evbuffer_new();
				first = z;
				ref_deflate(wbits_of(formats[f], 15), levels[l],
				    data, len, p == 2 ? 1000 : 0, ref);
				ck_assert_msg(!levels[l] || th_buf_eq(ref,
				    evbuffer_pullup(z, -1),
				    evbuffer_get_length(z)), "%s: %zu bytes, "
				    "zlib made %zu", opts,
				    evbuffer_get_length(z),
				    evbuffer_get_length(ref));
				evbuffer_free(ref);
			} else {
				ck_assert_msg(th_buf_eq(first,
				    evbuffer_pullup(z, -1),
				    evbuffer_get_length(z)),
				    "%s: chunk %zu changed the output", opts,
				    chunk_sizes[c]);
				evbuffer_free(z);
			}
			evbuffer_free(back);
			evbuffer_free(mine);
		}
		evbuffer_free(first);
	}
	free(data);
}
END_TEST

/*
 * Every BEV_FLUSH makes everything written so far decodable by the peer,
 * at once: a streaming zlib inflater and the filter's input side both
 * give exactly the bytes written. A second flush adds nothing.
 */
START_TEST(rt_flush_decodable)
{
	const size_t len = 40000;
	unsigned char *data = mixed_data(len);
	size_t f, l;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++)
	for (l = 0; l < STRATA_ARRAY_LEN(levels); l++) {
		struct evbuffer *src = evbuffer_new(), *z = evbuffer_new();
		struct evbuffer *plain = evbuffer_new();
		struct th_direct enc, dec;
		char opts[64];
		size_t off = 0;
		z_stream s;

		snprintf(opts, sizeof(opts), "format=%s,level=%d", formats[f],
		    levels[l]);
		th_direct_open(&enc, ZL, opts);
		th_direct_open(&dec, ZL, opts);
		memset(&s, 0, sizeof(s));
		ck_assert_int_eq(inflateInit2(&s, wbits_of(formats[f], 15)),
		    Z_OK);
		while (off < len) {
			size_t n = 1 + rnd() % 3000, zl;
			unsigned char out[65536];

			if (n > len - off)
				n = len - off;
			evbuffer_add(src, data + off, n);
			off += n;
			ck_assert_int_eq(drive(ZL->output, enc.ctx, src, z, -1,
					     rnd() % 2 ? BEV_NORMAL
						       : BEV_FLUSH), 0);
			ck_assert_int_eq(drive(ZL->output, enc.ctx, src, z, -1,
					     BEV_FLUSH), 0);
			zl = evbuffer_get_length(z);
			ck_assert_int_eq(drive(ZL->output, enc.ctx, src, z, -1,
					     BEV_FLUSH), 0);
			ck_assert_uint_eq(evbuffer_get_length(z), zl);
			/* zlib, fed everything since the last flush */
			s.next_in = evbuffer_pullup(z, -1);
			s.avail_in = (uInt)zl;
			s.next_out = out;
			s.avail_out = sizeof(out);
			ck_assert_int_eq(inflate(&s, Z_SYNC_FLUSH), Z_OK);
			ck_assert_uint_eq(s.avail_in, 0);
			ck_assert_uint_eq(sizeof(out) - s.avail_out, n);
			ck_assert(!memcmp(out, data + off - n, n));
			/* the filter, likewise, in one call */
			ck_assert_int_eq(drive(ZL->input, dec.ctx, z, plain,
					     -1, BEV_NORMAL), 0);
			ck_assert_uint_eq(evbuffer_get_length(z), 0);
			ck_assert_uint_eq(evbuffer_get_length(plain), n);
			ck_assert(!memcmp(evbuffer_pullup(plain, -1),
			    data + off - n, n));
			evbuffer_drain(plain, n);
		}
		inflateEnd(&s);
		th_direct_close(&enc);
		th_direct_close(&dec);
		evbuffer_free(src);
		evbuffer_free(z);
		evbuffer_free(plain);
	}
	free(data);
}
END_TEST

/* flush=every:N: after each N input bytes the peer can decode them. */
START_TEST(rt_every_n)
{
	const size_t len = 20000, every = 1000;
	unsigned char *data = mixed_data(len);
	struct evbuffer *src = evbuffer_new(), *z = evbuffer_new();
	struct evbuffer *plain = evbuffer_new();
	struct th_direct enc, dec;
	size_t off = 0;

	th_direct_open(&enc, ZL, "flush=every:1000");
	th_direct_open(&dec, ZL, "");
	while (off < len) {
		size_t n = 1 + rnd() % 700;
		if (n > len - off)
			n = len - off;
		evbuffer_add(src, data + off, n);
		off += n;
		ck_assert_int_eq(drive(ZL->output, enc.ctx, src, z, -1,
				     BEV_NORMAL), 0);
		ck_assert_int_eq(drive(ZL->input, dec.ctx, z, plain, -1,
				     BEV_NORMAL), 0);
		ck_assert_msg(evbuffer_get_length(plain) >= off / every * every,
		    "%zu bytes written, %zu decodable", off,
		    evbuffer_get_length(plain));
	}
	ck_assert_int_eq(drive(ZL->output, enc.ctx, src, z, -1, BEV_FINISHED),
	    0);
	ck_assert_int_eq(drive(ZL->input, dec.ctx, z, plain, -1,
			     BEV_FINISHED), 0);
	ck_assert(th_buf_eq(plain, data, len));
	th_direct_close(&enc);
	th_direct_close(&dec);
	evbuffer_free(src);
	evbuffer_free(z);
	evbuffer_free(plain);
	free(data);
}
END_TEST

/* Empty streams: finishing without data gives a valid empty stream; an
 * input side that got nothing at all ends cleanly. */
START_TEST(rt_empty)
{
	size_t f;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		struct evbuffer *z, *back = evbuffer_new();
		struct evbuffer *mine = evbuffer_new();
		char opts[32];

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		z = fz_compress(opts, "", 0, 0, 0);
		ck_assert_uint_gt(evbuffer_get_length(z), 0);
		ref_inflate_buf(wbits_of(formats[f], 15), z, back, 1);
		ck_assert_uint_eq(evbuffer_get_length(back), 0);
		fz_decompress(opts, z, 1, mine);
		ck_assert_uint_eq(evbuffer_get_length(mine), 0);
		/* with flushes in between: still empty, still valid */
		evbuffer_free(z);
		z = fz_compress(opts, "", 0, 0, 1);
		ref_inflate_buf(wbits_of(formats[f], 15), z, back, 1);
		ck_assert_uint_eq(evbuffer_get_length(back), 0);
		/* nothing at all received: a clean end */
		ck_assert_str_eq(fz_decompress_err(opts, "", 0, 0, mine), "");
		evbuffer_free(z);
		evbuffer_free(back);
		evbuffer_free(mine);
	}
}
END_TEST

/* Flushes with nothing to flush write nothing; finishing twice finishes
 * once; writing after the end is an error. */
START_TEST(rt_flush_idle)
{
	struct event_base *base = event_base_new();
	struct evbuffer *src = evbuffer_new(), *z = evbuffer_new();
	struct th_held h;
	size_t n;

	th_held_open(&h, base, "");
	ck_assert_int_eq(ZL->output(src, z, -1, BEV_FLUSH, h.ctx),
	    BEV_NEED_MORE);
	ck_assert_uint_eq(evbuffer_get_length(z), 0);
	evbuffer_add(src, "hello\n", 6);
	ck_assert_int_eq(drive(ZL->output, h.ctx, src, z, -1, BEV_FLUSH), 0);
	n = evbuffer_get_length(z);
	ck_assert_int_eq(ZL->output(src, z, -1, BEV_FLUSH, h.ctx),
	    BEV_NEED_MORE);
	ck_assert_int_eq(ZL->output(src, z, -1, BEV_NORMAL, h.ctx),
	    BEV_NEED_MORE);
	ck_assert_uint_eq(evbuffer_get_length(z), n);
	ck_assert_int_eq(drive(ZL->output, h.ctx, src, z, -1, BEV_FINISHED),
	    0);
	n = evbuffer_get_length(z);
	ck_assert_int_eq(ZL->output(src, z, -1, BEV_FINISHED, h.ctx),
	    BEV_NEED_MORE);
	ck_assert_uint_eq(evbuffer_get_length(z), n);
	{
		struct evbuffer *back = evbuffer_new();
		ref_inflate_buf(15, z, back, 1);
		ck_assert(th_buf_eq(back, "hello\n", 6));
		evbuffer_free(back);
	}
	evbuffer_add(src, "late", 4);
	ck_assert_int_eq(ZL->output(src, z, -1, BEV_NORMAL, h.ctx),
	    BEV_ERROR);
	ck_assert_str_eq(held_error(&h),
	    "tzlib: data written after the end of the stream");
	th_held_close(&h);
	evbuffer_free(src);
	evbuffer_free(z);
	event_base_free(base);
}
END_TEST

/* Options that change the encoding: strategies, small windows and memory
 * levels, a large input of incompressible bytes. */
START_TEST(rt_options)
{
	static const char *const opts[] = {"strategy=filtered",
	    "strategy=huffman", "strategy=rle", "strategy=fixed",
	    "window=9,memlevel=1", "window=12,memlevel=4,format=raw",
	    "window=10,format=gzip,level=9", "level=0,format=gzip"};
	const size_t len = 300000;
	unsigned char *data = mixed_data(len);
	size_t i;

	for (i = 0; i < len / 4; i++)
		data[i] = (unsigned char)rnd();
	for (i = 0; i < STRATA_ARRAY_LEN(opts); i++) {
		struct evbuffer *z = fz_compress(opts[i], data, len, 65536,
		    100000);
		struct evbuffer *mine = evbuffer_new();

		fz_decompress(opts[i], z, 5000, mine);
		ck_assert_msg(th_buf_eq(mine, data, len), "%s", opts[i]);
		evbuffer_free(z);
		evbuffer_free(mine);
	}
	free(data);
}
END_TEST

/* The window option bounds what the input side accepts. */
START_TEST(rt_window_too_small)
{
	const size_t len = 200000;
	unsigned char *data = mixed_data(len);
	struct evbuffer *z, *out = evbuffer_new();
	const char *e;

	z = fz_compress("level=9", data, len, 0, 0);
	e = fz_decompress_err("window=9", evbuffer_pullup(z, -1),
	    evbuffer_get_length(z), 0, out);
	ck_assert_str_eq(e, "tzlib: corrupt input at compressed byte 2: "
	    "invalid window size");
	evbuffer_free(z);
	z = fz_compress("level=9,format=raw", data, len, 0, 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	e = fz_decompress_err("window=9,format=raw", evbuffer_pullup(z, -1),
	    evbuffer_get_length(z), 0, out);
	ck_assert_msg(strstr(e, "invalid distance too far back") != NULL,
	    "%s", e);
	/* what came before the error is the start of the data */
	ck_assert(is_prefix(out, data, len));
	evbuffer_free(z);
	evbuffer_free(out);
	free(data);
}
END_TEST

/* Concatenated gzip members are one stream, split anywhere. */
START_TEST(rt_gzip_members)
{
	const size_t len = 30000;
	unsigned char *data = mixed_data(len);
	struct evbuffer *z = evbuffer_new();
	size_t c, at;

	ref_deflate(31, 6, data, 10000, 0, z);
	ref_deflate(31, 1, "", 0, 0, z); /* an empty member */
	ref_deflate(31, 9, data + 10000, 15000, 4000, z);
	ref_deflate(31, 0, data + 25000, 5000, 0, z);
	for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
		struct evbuffer *mine = evbuffer_new();
		fz_decompress("format=gzip", z, chunk_sizes[c], mine);
		ck_assert(th_buf_eq(mine, data, len));
		evbuffer_free(mine);
	}
	/* small members, split at every position */
	evbuffer_drain(z, evbuffer_get_length(z));
	ref_deflate(31, 6, "one\n", 4, 0, z);
	ref_deflate(31, 6, "two\n", 4, 0, z);
	for (at = 0; at <= evbuffer_get_length(z); at++) {
		struct evbuffer *mine = evbuffer_new();
		struct th_direct d;
		struct evbuffer *src = evbuffer_new();
		const unsigned char *p = evbuffer_pullup(z, -1);

		th_direct_open(&d, ZL, "format=gzip");
		evbuffer_add(src, p, at);
		ck_assert_int_eq(drive(ZL->input, d.ctx, src, mine, -1,
				     BEV_NORMAL), 0);
		evbuffer_add(src, p + at, evbuffer_get_length(z) - at);
		ck_assert_int_eq(drive(ZL->input, d.ctx, src, mine, -1,
				     BEV_FINISHED), 0);
		ck_assert(th_buf_eq(mine, "one\ntwo\n", 8));
		th_direct_close(&d);
		evbuffer_free(src);
		evbuffer_free(mine);
	}
	evbuffer_free(z);
	free(data);
}
END_TEST

/* ---- limits ---- */

/* The output side never writes more than dst_limit, whatever the limit;
 * the stream is the same as without limits. */
START_TEST(limit_output)
{
	static const char *const opts[] = {"", "flush=every:333",
	    "format=gzip,level=1", "level=0"};
	const size_t len = 100000;
	unsigned char *data = mixed_data(len);
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(opts); i++) {
		struct evbuffer *want = fz_compress(opts[i], data, len, 5000,
		    0);
		struct evbuffer *src = evbuffer_new(), *z = evbuffer_new();
		enum bufferevent_flush_mode mode = BEV_NORMAL;
		struct th_direct d;
		size_t off = 0;
		int idle = 0;

		th_direct_open(&d, ZL, opts[i]);
		while (idle < 200) {
			ev_ssize_t lim = 1 + (ev_ssize_t)(rnd() % 300);
			size_t d0 = evbuffer_get_length(z);
			enum bufferevent_filter_result r;

			if (off < len && evbuffer_get_length(src) < 10000) {
				size_t n = len - off < 5000 ? len - off : 5000;
				evbuffer_add(src, data + off, n);
				off += n;
			}
			if (off == len && !evbuffer_get_length(src))
				mode = BEV_FINISHED;
			r = ZL->output(src, z, mode == BEV_FINISHED ? -1 : lim,
			    mode, d.ctx);
			ck_assert_int_ne(r, BEV_ERROR);
			if (mode == BEV_NORMAL)
				ck_assert_uint_le(evbuffer_get_length(z) - d0,
				    (size_t)lim);
			idle = r == BEV_NEED_MORE ? idle + 1 : 0;
		}
		ck_assert_msg(th_buf_eq(want, evbuffer_pullup(z, -1),
		    evbuffer_get_length(z)), "%s: %zu bytes, want %zu",
		    opts[i], evbuffer_get_length(z),
		    evbuffer_get_length(want));
		th_direct_close(&d);
		evbuffer_free(src);
		evbuffer_free(z);
		evbuffer_free(want);
	}
	free(data);
}
END_TEST

/* The input side never writes more than dst_limit; what zlib holds when
 * the limit stops it comes out in later calls even with no new input. */
START_TEST(limit_input)
{
	const size_t len = 200000;
	unsigned char *data = mixed_data(len);
	size_t f;

	memset(data + 1000, 'z', 50000); /* long matches */
	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		char opts[32];
		struct evbuffer *z, *src = evbuffer_new();
		struct evbuffer *out = evbuffer_new();
		struct th_direct d;
		size_t off = 0, zl;
		int done = 0, calls = 0;

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		z = fz_compress(opts, data, len, 0, 7000);
		zl = evbuffer_get_length(z);
		th_direct_open(&d, ZL, opts);
		while (!done && calls++ < 10000000) {
			ev_ssize_t lim = 1 + (ev_ssize_t)(rnd() % 700);
			size_t d0 = evbuffer_get_length(out);
			enum bufferevent_filter_result r;

			if (off < zl && rnd() % 4 == 0) {
				size_t n = 1 + rnd() % 300;
				if (n > zl - off)
					n = zl - off;
				evbuffer_remove_buffer(z, src, n);
				off += n;
			}
			r = ZL->input(src, out, lim, BEV_NORMAL, d.ctx);
			ck_assert_int_ne(r, BEV_ERROR);
			ck_assert_uint_le(evbuffer_get_length(out) - d0,
			    (size_t)lim);
			done = off == zl && r == BEV_NEED_MORE &&
			    !evbuffer_get_length(src);
		}
		ck_assert_int_eq(ZL->input(src, out, -1, BEV_FINISHED, d.ctx),
		    BEV_NEED_MORE);
		ck_assert_msg(th_buf_eq(out, data, len), "%s: %zu bytes", opts,
		    evbuffer_get_length(out));
		th_direct_close(&d);
		evbuffer_free(z);
		evbuffer_free(src);
		evbuffer_free(out);
	}
	free(data);
}
END_TEST

/* ---- hostile input, pure ---- */

static int
starts_with(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

/* Random bytes: an error naming zlib and an offset, in every format. */
START_TEST(bad_random)
{
	unsigned char junk[4096];
	size_t f, i, c;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rnd();
	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++)
	for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
		struct evbuffer *out = evbuffer_new();
		char opts[32];
		const char *e;

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		e = fz_decompress_err(opts, junk, sizeof(junk),
		    chunk_sizes[c], out);
		ck_assert_msg(starts_with(e, "tzlib: corrupt input at "
		    "compressed byte ") || starts_with(e, "tzlib: stream "
		    "ended without its end marker"), "%s: '%s'", opts, e);
		evbuffer_free(out);
	}
}
END_TEST

/* A stream cut anywhere: an error at the end (tail=error), or the bytes
 * decoded so far and a clean end (tail=allow). Never more than a prefix. */
START_TEST(bad_truncated)
{
	const size_t len = 3000;
	unsigned char *data = mixed_data(len);
	size_t f, cut;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		char opts[64], allow[64], want[128];
		struct evbuffer *z;
		const unsigned char *p;
		size_t zl;

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		snprintf(allow, sizeof(allow), "format=%s,tail=allow",
		    formats[f]);
		z = fz_compress(opts, data, len, 0, 1000);
		zl = evbuffer_get_length(z);
		p = evbuffer_pullup(z, -1);
		/* every cut natively, every 7th under memcheck */
		for (cut = 1; cut < zl; cut += th_scaled(1, 7)) {
			struct evbuffer *out = evbuffer_new();
			const char *e = fz_decompress_err(opts, p, cut,
			    cut % 5 ? 0 : 1, out);

			snprintf(want, sizeof(want), "tzlib: stream ended "
			    "without its end marker (truncated after %zu "
			    "compressed bytes)", cut);
			ck_assert_msg(!strcmp(e, want), "%s cut at %zu: '%s'",
			    opts, cut, e);
			ck_assert(is_prefix(out, data, len));
			evbuffer_drain(out, evbuffer_get_length(out));
			e = fz_decompress_err(allow, p, cut, 0, out);
			ck_assert_msg(!*e, "%s cut at %zu: '%s'", allow, cut,
			    e);
			ck_assert(is_prefix(out, data, len));
			evbuffer_free(out);
		}
		evbuffer_free(z);
	}
	free(data);
}
END_TEST

/* A single-bit flip anywhere in a zlib or gzip stream is caught (the
 * checksums), unless the stream still decodes to exactly the same bytes:
 * a padding bit after the last block, the gzip header's MTIME, XFL, OS. */
START_TEST(bad_bitflip)
{
	const size_t len = 600;
	unsigned char *data = mixed_data(len);
	size_t f, i, benign = 0;
	int bit;

	for (f = 0; f < 2; f++) {
		char opts[32];
		struct evbuffer *z;
		unsigned char *p;
		size_t zl;

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		z = fz_compress(opts, data, len, 0, 0);
		zl = evbuffer_get_length(z);
		p = evbuffer_pullup(z, -1);
		/* every bit natively, every 5th byte's under memcheck */
		for (i = 0; i < zl; i += th_scaled(1, 5)) {
			for (bit = 0; bit < 8; bit++) {
				struct evbuffer *out = evbuffer_new();
				const char *e;

				p[i] ^= (unsigned char)(1u << bit);
				e = fz_decompress_err(opts, p, zl, 0, out);
				p[i] ^= (unsigned char)(1u << bit);
				ck_assert_msg(starts_with(e, "tzlib: ") ||
				    (!*e && th_buf_eq(out, data, len)),
				    "%s: flipped bit %d of byte %zu went "
				    "unnoticed", opts, bit, i);
				if (!*e)
					benign++;
				evbuffer_free(out);
			}
		}
		evbuffer_free(z);
	}
	/* 48 header bits, at most 7 padding bits per stream */
	ck_assert_uint_le(benign, 48 + 14);
	free(data);
}
END_TEST

/* A gzip member made by hand: header with FHCRC (and FNAME), raw deflate,
 * trailer. */
static void
gzip_by_hand(const void *data, size_t len, int bad_hcrc, int bad_crc,
    int bad_size, struct evbuffer *out)
{
	unsigned char h[32];
	uint32_t crc = (uint32_t)crc32(0, data, (uInt)len);
	uint32_t hcrc, size = (uint32_t)len;
	unsigned char t[8];
	size_t n = 0, i;

	h[n++] = 0x1f;
	h[n++] = 0x8b;
	h[n++] = 8;
	h[n++] = 0x02 | 0x08; /* FHCRC, FNAME */
	memset(h + n, 0, 4);  /* MTIME */
	n += 4;
	h[n++] = 0;
	h[n++] = 3;
	memcpy(h + n, "x.txt", 6);
	n += 6;
	hcrc = (uint32_t)crc32(0, h, (uInt)n) ^ (bad_hcrc ? 1u : 0u);
	h[n++] = (unsigned char)(hcrc & 0xff);
	h[n++] = (unsigned char)((hcrc >> 8) & 0xff);
	evbuffer_add(out, h, n);
	ref_deflate(-15, 6, data, len, 0, out);
	crc ^= bad_crc ? 0x100u : 0;
	size += bad_size ? 1 : 0;
	for (i = 0; i < 4; i++) {
		t[i] = (unsigned char)(crc >> (8 * i));
		t[4 + i] = (unsigned char)(size >> (8 * i));
	}
	evbuffer_add(out, t, 8);
}

static void
expect_error(const char *opts, struct evbuffer *z, const char *want,
    const void *data, size_t len)
{
	size_t c;

	for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
		struct evbuffer *out = evbuffer_new();
		const char *e = fz_decompress_err(opts, evbuffer_pullup(z, -1),
		    evbuffer_get_length(z), chunk_sizes[c], out);

		ck_assert_msg(!strcmp(e, want), "%s chunk %zu: '%s', want "
		    "'%s'", opts, chunk_sizes[c], e, want);
		if (data)
			ck_assert(th_buf_eq(out, data, len));
		evbuffer_free(out);
	}
}

START_TEST(bad_gzip_header_crc)
{
	static const char text[] = "a gzip member with a header CRC\n";
	struct evbuffer *z = evbuffer_new(), *out = evbuffer_new();

	gzip_by_hand(text, sizeof(text) - 1, 0, 0, 0, z);
	fz_decompress("format=gzip", z, 1, out); /* the good one decodes */
	ck_assert(th_buf_eq(out, text, sizeof(text) - 1));
	evbuffer_drain(z, evbuffer_get_length(z));
	gzip_by_hand(text, sizeof(text) - 1, 1, 0, 0, z);
	expect_error("format=gzip", z, "tzlib: corrupt input at compressed "
	    "byte 18: header crc mismatch", "", 0);
	evbuffer_free(z);
	evbuffer_free(out);
}
END_TEST

START_TEST(bad_trailer)
{
	static const char text[] = "the data is fine, the trailer is not\n";
	const size_t n = sizeof(text) - 1;
	struct evbuffer *z = evbuffer_new();
	char want[160];
	size_t zl;

	gzip_by_hand(text, n, 0, 1, 0, z);
	zl = evbuffer_get_length(z);
	snprintf(want, sizeof(want), "tzlib: corrupt input at compressed "
	    "byte %zu: incorrect data check", zl - 4);
	expect_error("format=gzip", z, want, text, n);
	evbuffer_drain(z, zl);
	gzip_by_hand(text, n, 0, 0, 1, z);
	snprintf(want, sizeof(want), "tzlib: corrupt input at compressed "
	    "byte %zu: incorrect length check", zl);
	expect_error("format=gzip", z, want, text, n);
	/* zlib's Adler-32 */
	evbuffer_drain(z, zl);
	ref_deflate(15, 6, text, n, 0, z);
	zl = evbuffer_get_length(z);
	evbuffer_pullup(z, -1)[zl - 1] ^= 0x40;
	snprintf(want, sizeof(want), "tzlib: corrupt input at compressed "
	    "byte %zu: incorrect data check", zl);
	expect_error("format=zlib", z, want, text, n);
	evbuffer_free(z);
}
END_TEST

/* Bytes after the end of a zlib or raw stream are an error; after a gzip
 * member they must be another member. */
START_TEST(bad_trailing_garbage)
{
	static const char text[] = "the end is the end\n";
	const size_t n = sizeof(text) - 1;
	size_t f;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		struct evbuffer *z = evbuffer_new();
		char opts[32], want[160];
		size_t zl;

		snprintf(opts, sizeof(opts), "format=%s", formats[f]);
		ref_deflate(wbits_of(formats[f], 15), 6, text, n, 0, z);
		zl = evbuffer_get_length(z);
		evbuffer_add(z, "garbage", 7);
		if (f == 1)
			snprintf(want, sizeof(want), "tzlib: corrupt input at "
			    "compressed byte %zu: incorrect header check",
			    zl + 2);
		else
			snprintf(want, sizeof(want), "tzlib: data after the "
			    "end of the stream at compressed byte %zu", zl);
		expect_error(opts, z, want, text, n);
		evbuffer_free(z);
	}
}
END_TEST

/* @p total zeros, deflated (level 9), without keeping them around. */
static void
zeros_deflated(size_t total, struct evbuffer *out)
{
	static const unsigned char zeros[65536];
	unsigned char buf[16384];
	size_t off = 0;
	z_stream s;
	int r;

	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(deflateInit(&s, 9), Z_OK);
	do {
		size_t n = total - off < sizeof(zeros) ? total - off
						       : sizeof(zeros);
		int flush = off + n == total ? Z_FINISH : Z_NO_FLUSH;

		s.next_in = (unsigned char *)(uintptr_t)zeros;
		s.avail_in = (uInt)n;
		do {
			s.next_out = buf;
			s.avail_out = sizeof(buf);
			r = deflate(&s, flush);
			evbuffer_add(out, buf, sizeof(buf) - s.avail_out);
		} while (s.avail_out == 0);
		off += n;
	} while (off < total);
	ck_assert_int_eq(r, Z_STREAM_END);
	deflateEnd(&s);
}

/*
 * Inflate @p z with @p opts through a stack-made context, draining the
 * output as it comes (never more than @p lim per call); returns the bytes
 * delivered and the error ("" if none).
 */
static size_t
inflate_counting(const char *opts, struct evbuffer *z, ev_ssize_t lim,
    char *err, size_t errlen)
{
	struct event_base *base = event_base_new();
	struct evbuffer *out = evbuffer_new();
	size_t total = 0;
	struct th_held h;
	int r = 0;

	th_held_open(&h, base, opts);
	while (r == 0 && evbuffer_get_length(z)) {
		r = drive(ZL->input, h.ctx, z, out, lim, BEV_NORMAL);
		total += evbuffer_get_length(out);
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	while (r == 0) {
		r = drive(ZL->input, h.ctx, z, out, lim, BEV_FINISHED);
		if (!evbuffer_get_length(out))
			break;
		total += evbuffer_get_length(out);
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	snprintf(err, errlen, "%s", r < 0 ? held_error(&h) : "");
	th_held_close(&h);
	evbuffer_free(out);
	event_base_free(base);
	return total;
}

START_TEST(bomb_ratio)
{
	struct evbuffer *z = evbuffer_new();
	char err[STRATA_ERROR_MAX];
	size_t got, zl;

	zeros_deflated(th_scaled(64 * MIB, 8 * MIB), z);
	zl = evbuffer_get_length(z);
	got = inflate_counting("", z, -1, err, sizeof(err));
	ck_assert_msg(starts_with(err, "tzlib: inflated output exceeds "
	    "max-ratio=200 ("), "%s", err);
	/* stopped within one output piece (64 KiB) of 1 MiB */
	ck_assert_uint_ge(got, MIB - 65536);
	ck_assert_uint_le(got, MIB + 65536);
	ck_assert_uint_lt(zl - evbuffer_get_length(z), 4 * 4096);
	evbuffer_free(z);
}
END_TEST

START_TEST(bomb_max_output)
{
	struct evbuffer *z = evbuffer_new();
	char err[STRATA_ERROR_MAX];
	size_t got;

	zeros_deflated(4 * MIB, z);
	got = inflate_counting("max-ratio=0,max-output=1000000", z, -1, err,
	    sizeof(err));
	ck_assert_msg(starts_with(err, "tzlib: inflated output exceeds "
	    "max-output=1000000 bytes (at compressed byte "), "%s", err);
	ck_assert_uint_eq(got, 1000000);
	/* with small limits too */
	evbuffer_drain(z, evbuffer_get_length(z));
	zeros_deflated(4 * MIB, z);
	got = inflate_counting("max-ratio=0,max-output=1000000", z, 777, err,
	    sizeof(err));
	ck_assert_msg(starts_with(err, "tzlib: inflated output exceeds "
	    "max-output=1000000 bytes"), "%s", err);
	ck_assert_uint_eq(got, 1000000);
	evbuffer_free(z);
}
END_TEST

/* Exactly max-output bytes is fine, in every format (the trailer after
 * the last byte is still read); one more is not. */
START_TEST(bomb_max_output_exact)
{
	const size_t len = 50000;
	unsigned char *data = mixed_data(len);
	char err[STRATA_ERROR_MAX];
	size_t f;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		char opts[96];
		struct evbuffer *z;
		size_t got;

		snprintf(opts, sizeof(opts), "format=%s,max-output=%zu",
		    formats[f], len);
		z = fz_compress(opts, data, len, 0, 0);
		if (f == 1)
			ref_deflate(31, 6, "", 0, 0, z); /* + empty member */
		got = inflate_counting(opts, z, -1, err, sizeof(err));
		ck_assert_msg(!err[0], "%s: %s", opts, err);
		ck_assert_uint_eq(got, len);
		evbuffer_free(z);
		snprintf(opts, sizeof(opts), "format=%s,max-output=%zu",
		    formats[f], len - 1);
		z = fz_compress(opts, data, len, 0, 0);
		got = inflate_counting(opts, z, -1, err, sizeof(err));
		ck_assert_msg(starts_with(err, "tzlib: inflated output "
		    "exceeds max-output="), "%s: %s", opts, err);
		ck_assert_uint_eq(got, len - 1);
		evbuffer_free(z);
	}
	free(data);
}
END_TEST

/* Ordinary data never trips the default caps; switched off, zeros
 * stream through (and the output is drained as it comes). */
START_TEST(bomb_caps_normal_and_off)
{
	const size_t len = th_scaled(8 * MIB, MIB);
	const size_t zeros = th_scaled(64 * MIB, 8 * MIB);
	unsigned char *data = malloc(len);
	struct evbuffer *z;
	char err[STRATA_ERROR_MAX];
	size_t got;

	text_fill(data, len, 7);
	z = fz_compress("level=9", data, len, 0, 0);
	got = inflate_counting("", z, -1, err, sizeof(err));
	ck_assert_msg(!err[0], "%s", err);
	ck_assert_uint_eq(got, len);
	evbuffer_free(z);
	free(data);
	z = evbuffer_new();
	zeros_deflated(zeros, z);
	got = inflate_counting("max-ratio=0,max-output=0", z, 65536, err,
	    sizeof(err));
	ck_assert_msg(!err[0], "%s", err);
	ck_assert_uint_eq(got, zeros);
	evbuffer_free(z);
}
END_TEST

/* An idle context costs no zlib state; the states come with use. */
START_TEST(mem_lazy)
{
	struct mallinfo2 m0, m1, m2;
	struct evbuffer *src = evbuffer_new(), *z = evbuffer_new();
	struct th_direct d;

	m0 = mallinfo2();
	th_direct_open(&d, ZL, "");
	m1 = mallinfo2();
	evbuffer_add(src, "x", 1);
	ck_assert_int_eq(drive(ZL->output, d.ctx, src, z, -1, BEV_FLUSH), 0);
	m2 = mallinfo2();
	if (m2.uordblks > m1.uordblks + 100000) {
		/* mallinfo2 tells (not under ASan or valgrind) */
		ck_assert_uint_lt(m1.uordblks - m0.uordblks, 512);
	}
	th_direct_close(&d);
	evbuffer_free(src);
	evbuffer_free(z);
}
END_TEST

/* ---- stacks over socketpairs ---- */

/* One end of a connection: records what arrives and every event. */
struct end {
	struct event_base *base;
	struct bufferevent *top;
	struct evbuffer *got;	/* everything read (unless verifying) */
	int events, errors, eof, connected;
	int ended;		/* EOF or an error came */
	short last_what;
	char error[STRATA_ERROR_MAX + 64];
	size_t max_top_in;	/* largest top input seen in a read callback */
	size_t max_t_in;	/* largest transport input seen then */
	size_t total;		/* bytes read */
	size_t lines;		/* lines read (line mode) */
	int line_mode;		/* read whole lines with evbuffer_readln */
	/* verify against a repeating block instead of keeping the data */
	const unsigned char *block;
	size_t block_len;
	int mismatch;
};

static void
end_read(struct bufferevent *bev, void *arg)
{
	struct end *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	struct bufferevent *t = strata_transport(bev);

	if (n > e->max_top_in)
		e->max_top_in = n;
	if (t && evbuffer_get_length(bufferevent_get_input(t)) > e->max_t_in)
		e->max_t_in = evbuffer_get_length(bufferevent_get_input(t));
	if (e->line_mode) {
		char *l;
		size_t ln;
		while ((l = evbuffer_readln(in, &ln, EVBUFFER_EOL_LF))) {
			evbuffer_add(e->got, l, ln);
			evbuffer_add(e->got, "\n", 1);
			e->lines++;
			e->total += ln + 1;
			free(l);
		}
		return;
	}
	if (e->block) {
		struct evbuffer_iovec v[16];
		int k, i;

		while ((n = evbuffer_get_length(in)) > 0) {
			size_t used = 0;
			k = evbuffer_peek(in, -1, NULL, v, 16);
			for (i = 0; i < k && i < 16; i++) {
				const unsigned char *p = v[i].iov_base;
				size_t len = v[i].iov_len;
				while (len) {
					size_t at = e->total % e->block_len;
					size_t m = e->block_len - at < len
					    ? e->block_len - at : len;
					if (memcmp(p, e->block + at, m))
						e->mismatch++;
					p += m;
					len -= m;
					e->total += m;
					used += m;
				}
			}
			evbuffer_drain(in, used);
		}
		return;
	}
	e->total += n;
	evbuffer_add_buffer(e->got, in);
}

static void
end_event(struct bufferevent *bev, short what, void *arg)
{
	struct end *e = arg;
	const char *m = strata_last_error(bev);

	e->events++;
	e->last_what = what;
	if (what & BEV_EVENT_CONNECTED)
		e->connected++;
	if (what & BEV_EVENT_EOF)
		e->eof++;
	if (what & BEV_EVENT_ERROR) {
		e->errors++;
		snprintf(e->error, sizeof(e->error), "%s", m ? m : "(none)");
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		e->ended = 1;
}

static struct bufferevent *
stack_on_fd(struct event_base *base, int fd, const char *filters)
{
	struct strata_error err;
	struct bufferevent *t, *top;

	memset(&err, 0, sizeof(err));
	t = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(t);
	top = strata_push(t, filters, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "push '%s': %s", filters, err.message);
	return top;
}

static void
end_init(struct end *e, struct event_base *base, struct bufferevent *top)
{
	memset(e, 0, sizeof(*e));
	e->base = base;
	e->top = top;
	e->got = evbuffer_new();
	bufferevent_setcb(top, end_read, NULL, end_event, e);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
end_free(struct end *e)
{
	if (e->top)
		bufferevent_free(e->top);
	e->top = NULL;
	evbuffer_free(e->got);
}

/* Two stacks on the two ends of a socketpair. */
struct duo {
	struct event_base *base;
	struct end a, b;
};

static void
duo_open(struct duo *d, const char *fa, const char *fb)
{
	int fds[2];

	d->base = event_base_new();
	th_socketpair(fds);
	end_init(&d->a, d->base, stack_on_fd(d->base, fds[0], fa));
	end_init(&d->b, d->base, stack_on_fd(d->base, fds[1], fb));
}

static void
duo_close(struct duo *d)
{
	end_free(&d->a);
	end_free(&d->b);
	th_run_for(d->base, 5);
	event_base_free(d->base);
}

/* The zlib layer's numbers from strata_layer_describe: key=value. */
static unsigned long long
layer_stat(struct bufferevent *top, int index, const char *key)
{
	char d[512], k[64];
	const char *p;

	ck_assert_int_gt(strata_layer_describe(top, index, d, sizeof(d)), 0);
	snprintf(k, sizeof(k), "%s=", key);
	p = strstr(d, k);
	ck_assert_msg(p != NULL, "no %s in '%s'", key, d);
	return strtoull(p + strlen(k), NULL, 10);
}

/* Both directions, every format, lines on top; a graceful end. */
START_TEST(sock_roundtrip)
{
	size_t f;

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++) {
		char spec[64];
		struct duo d;

		snprintf(spec, sizeof(spec), "zlib(format=%s) | lines",
		    formats[f]);
		duo_open(&d, spec, spec);
		d.a.line_mode = d.b.line_mode = 1;
		bufferevent_write(d.a.top, "from a\nsecond\n", 14);
		bufferevent_write(d.b.top, "from b\n", 7);
		th_run_until(d.base, (const int *)&d.b.lines, 2000,
		    "a line at b");
		th_run_until(d.base, (const int *)&d.a.lines, 2000,
		    "a line at a");
		bufferevent_flush(d.a.top, EV_WRITE, BEV_FINISHED);
		bufferevent_flush(d.b.top, EV_WRITE, BEV_FINISHED);
		th_run_until(d.base, &d.a.eof, 2000, "EOF at a");
		th_run_until(d.base, &d.b.eof, 2000, "EOF at b");
		ck_assert_int_eq(d.a.errors + d.b.errors, 0);
		ck_assert(th_buf_eq(d.b.got, "from a\nsecond\n", 14));
		ck_assert(th_buf_eq(d.a.got, "from b\n", 7));
		ck_assert_int_eq(d.a.events, 1);
		ck_assert_int_eq(d.b.events, 1);
		duo_close(&d);
	}
}
END_TEST

/* A writer that tops its output up from a repeating block; reads and
 * events go to its end. */
struct feeder {
	const unsigned char *block;
	size_t block_len, total, sent;
	size_t chunk;
	int done;
	struct end *end;
};

static void
feeder_read(struct bufferevent *bev, void *arg)
{
	end_read(bev, ((struct feeder *)arg)->end);
}

static void
feeder_event(struct bufferevent *bev, short what, void *arg)
{
	end_event(bev, what, ((struct feeder *)arg)->end);
}

static void
feeder_write(struct bufferevent *bev, void *arg)
{
	struct feeder *w = arg;
	struct evbuffer *out = bufferevent_get_output(bev);

	while (w->sent < w->total && evbuffer_get_length(out) < 512 * 1024) {
		size_t at = w->sent % w->block_len, n = w->chunk;
		if (n > w->block_len - at)
			n = w->block_len - at;
		if (n > w->total - w->sent)
			n = w->total - w->sent;
		/* account first: the write may re-enter this callback */
		w->sent += n;
		bufferevent_write(bev, w->block + at, n);
	}
	if (w->sent == w->total && !w->done) {
		w->done = 1;
		bufferevent_flush(bev, EV_WRITE, BEV_FINISHED);
	}
}

/* 100 MB through `zlib(level=1)` -> `zlib`, generated and checked on the
 * fly (never held whole). */
START_TEST(sock_100mb)
{
	const size_t block_len = 1000003;
	const size_t total = th_scaled(100u * 1000 * 1000, 8u * 1000 * 1000);
	unsigned char *block = malloc(block_len);
	struct feeder w = {0};
	struct duo d;
	unsigned long long din, dout;

	text_fill(block, block_len, 99);
	duo_open(&d, "zlib(level=1)", "zlib");
	d.b.block = block;
	d.b.block_len = block_len;
	w.block = block;
	w.block_len = block_len;
	w.total = total;
	w.chunk = 65536;
	w.end = &d.a;
	bufferevent_setcb(d.a.top, feeder_read, feeder_write, feeder_event,
	    &w);
	bufferevent_setwatermark(d.a.top, EV_WRITE, 128 * 1024, 0);
	feeder_write(d.a.top, &w);
	th_run_until(d.base, &d.b.eof, 120000, "EOF after 100 MB");
	ck_assert_int_eq(d.b.errors + d.a.errors, 0);
	ck_assert_int_eq(d.b.mismatch, 0);
	ck_assert_uint_eq(d.b.total, total);
	din = layer_stat(d.a.top, 1, "deflate_in");
	dout = layer_stat(d.a.top, 1, "deflate_out");
	ck_assert_uint_eq(din, total);
	ck_assert_uint_eq(layer_stat(d.b.top, 1, "inflate_in"), dout);
	ck_assert_uint_eq(layer_stat(d.b.top, 1, "inflate_out"), total);
	ck_assert_msg(dout < total / 2, "compressed to %llu", dout);
	duo_close(&d);
	free(block);
}
END_TEST

/* ---- flush policies in a stack ---- */

static int
decoded_at_least(struct end *e, size_t n)
{
	return e->total >= n;
}

START_TEST(sock_flush_auto)
{
	struct duo d;
	int i;

	duo_open(&d, "zlib | lines", "zlib | lines");
	d.b.line_mode = 1;
	bufferevent_write(d.a.top, "hello\n", 6);
	th_run_until(d.base, (const int *)&d.b.lines, 2000,
	    "the line, with no flush asked for");
	ck_assert_uint_eq(layer_stat(d.a.top, 1, "flushes"), 1);
	/* a burst of writes in one turn of the loop: one flush */
	for (i = 0; i < 1000; i++)
		bufferevent_write(d.a.top, "a line of a burst of lines\n", 27);
	for (i = 0; i < 200 && d.b.lines < 1001; i++)
		th_run_for(d.base, 10);
	ck_assert_uint_eq(d.b.lines, 1001);
	ck_assert_uint_eq(layer_stat(d.a.top, 1, "flushes"), 2);
	duo_close(&d);
}
END_TEST

START_TEST(sock_flush_none)
{
	struct duo d;

	duo_open(&d, "zlib(flush=none)", "zlib");
	bufferevent_write(d.a.top, "hello\n", 6);
	th_run_for(d.base, 150);
	ck_assert_uint_eq(d.b.total, 0); /* held inside the compressor */
	bufferevent_flush(d.a.top, EV_WRITE, BEV_FLUSH);
	while (!decoded_at_least(&d.b, 6) && d.b.events == 0)
		th_run_for(d.base, 10);
	ck_assert(th_buf_eq(d.b.got, "hello\n", 6));
	ck_assert_uint_eq(layer_stat(d.a.top, 1, "flushes"), 1);
	duo_close(&d);
}
END_TEST

START_TEST(sock_flush_every)
{
	struct duo d;
	int i;

	duo_open(&d, "zlib(flush=every:16)", "zlib");
	bufferevent_write(d.a.top, "0123456789", 10);
	th_run_for(d.base, 150);
	ck_assert_uint_eq(d.b.total, 0);
	bufferevent_write(d.a.top, "abcdefXYZ", 9);
	for (i = 0; i < 200 && !decoded_at_least(&d.b, 16); i++)
		th_run_for(d.base, 10);
	ck_assert(th_buf_eq(d.b.got, "0123456789abcdef", 16));
	th_run_for(d.base, 50);
	ck_assert_uint_eq(d.b.total, 16);
	duo_close(&d);
}
END_TEST

/* ---- hostile peers ---- */

/*
 * A reader stack `zlib(@p opts)` gets @p len raw bytes from the peer (then
 * EOF with @p shut): exactly one event, BEV_EVENT_ERROR|BEV_EVENT_READING,
 * with a message starting @p want (NULL: a clean EOF is wanted).
 */
static void
hostile(const char *opts, const void *bytes, size_t len, int shut,
    const char *want, struct evbuffer *got)
{
	struct event_base *base = event_base_new();
	char spec[128];
	struct end e;
	int fds[2];
	size_t off = 0;

	th_socketpair(fds);
	snprintf(spec, sizeof(spec), "zlib%s%s%s", *opts ? "(" : "", opts,
	    *opts ? ")" : "");
	end_init(&e, base, stack_on_fd(base, fds[0], spec));
	while (off < len) {
		ssize_t n = write(fds[1], (const char *)bytes + off, len - off);
		if (n > 0)
			off += (size_t)n;
		else if (e.events)
			break;
		else
			th_run_for(base, 5);
	}
	if (shut)
		shutdown(fds[1], SHUT_WR);
	th_run_until(base, &e.events, 5000, "the error or EOF");
	th_run_for(base, 30);
	ck_assert_int_eq(e.events, 1);
	if (want) {
		ck_assert_int_eq(e.last_what,
		    BEV_EVENT_ERROR | BEV_EVENT_READING);
		ck_assert_msg(starts_with(e.error, want), "'%s', want '%s...'",
		    e.error, want);
		ck_assert_str_eq(strata_last_error(e.top), e.error);
	} else
		ck_assert_int_eq(e.last_what,
		    BEV_EVENT_EOF | BEV_EVENT_READING);
	if (got)
		evbuffer_add_buffer(got, e.got);
	end_free(&e);
	close(fds[1]);
	th_run_for(base, 5);
	event_base_free(base);
}

START_TEST(sock_hostile)
{
	static const char text[] = "a small message\nand another\n";
	const size_t n = sizeof(text) - 1;
	struct evbuffer *z = evbuffer_new(), *got = evbuffer_new();
	unsigned char junk[2000];
	char want[160];
	size_t i, zl;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rnd();
	hostile("", junk, sizeof(junk), 0, "zlib: corrupt input at "
	    "compressed byte ", NULL);
	/* truncated: what came is delivered, then the error at EOF */
	ref_deflate(15, 6, text, n, 0, z);
	zl = evbuffer_get_length(z);
	{
		struct evbuffer *part = evbuffer_new();
		ref_deflate(15, 6, text, n, 5, part); /* flushed pieces */
		snprintf(want, sizeof(want), "zlib: stream ended without its "
		    "end marker (truncated after %zu compressed bytes)",
		    evbuffer_get_length(part) - 6);
		hostile("", evbuffer_pullup(part, -1),
		    evbuffer_get_length(part) - 6, 1, want, got);
		ck_assert_uint_gt(evbuffer_get_length(got), 0);
		ck_assert(is_prefix(got, text, n));
		evbuffer_drain(got, evbuffer_get_length(got));
		/* tail=allow: a clean EOF after the data */
		hostile("tail=allow", evbuffer_pullup(part, -1),
		    evbuffer_get_length(part) - 6, 1, NULL, got);
		ck_assert(is_prefix(got, text, n));
		evbuffer_drain(got, evbuffer_get_length(got));
		evbuffer_free(part);
	}
	/* a flipped bit in the data */
	evbuffer_pullup(z, -1)[zl / 2] ^= 0x10;
	hostile("", evbuffer_pullup(z, -1), zl, 1, "zlib: corrupt input at "
	    "compressed byte ", NULL);
	/* a bad header CRC, a bad trailer */
	evbuffer_drain(z, zl);
	gzip_by_hand(text, n, 1, 0, 0, z);
	hostile("format=gzip", evbuffer_pullup(z, -1), evbuffer_get_length(z),
	    0, "zlib: corrupt input at compressed byte 18: header crc "
	    "mismatch", NULL);
	evbuffer_drain(z, evbuffer_get_length(z));
	gzip_by_hand(text, n, 0, 1, 0, z);
	hostile("format=gzip", evbuffer_pullup(z, -1), evbuffer_get_length(z),
	    0, "zlib: corrupt input at compressed byte ", NULL);
	/* trailing garbage */
	evbuffer_drain(z, evbuffer_get_length(z));
	ref_deflate(15, 6, text, n, 0, z);
	zl = evbuffer_get_length(z);
	evbuffer_add(z, "trailing", 8);
	snprintf(want, sizeof(want), "zlib: data after the end of the stream "
	    "at compressed byte %zu", zl);
	hostile("", evbuffer_pullup(z, -1), zl + 8, 0, want, got);
	ck_assert(th_buf_eq(got, text, n));
	/* and a good one ends cleanly */
	evbuffer_drain(got, evbuffer_get_length(got));
	hostile("", evbuffer_pullup(z, -1), zl, 1, NULL, got);
	ck_assert(th_buf_eq(got, text, n));
	evbuffer_free(z);
	evbuffer_free(got);
}
END_TEST

/* ---- a 1 GB bomb, deflated on the fly by the peer ---- */

struct bomb {
	z_stream s;
	size_t total, made;
	int finished;
	struct end *victim;
};

static void
bomb_write(struct bufferevent *bev, void *arg)
{
	static const unsigned char zeros[1 << 20];
	struct bomb *b = arg;
	struct evbuffer *out = bufferevent_get_output(bev);
	unsigned char buf[65536];
	int i;

	for (i = 0; i < 4 && !b->finished && !b->victim->events &&
	     evbuffer_get_length(out) < 256 * 1024; i++) {
		int flush = b->made + sizeof(zeros) >= b->total ? Z_FINISH
							      : Z_NO_FLUSH;
		b->s.next_in = (unsigned char *)(uintptr_t)zeros;
		b->s.avail_in = sizeof(zeros);
		do {
			b->s.next_out = buf;
			b->s.avail_out = sizeof(buf);
			deflate(&b->s, flush);
			evbuffer_add(out, buf, sizeof(buf) - b->s.avail_out);
		} while (b->s.avail_out == 0);
		b->made += sizeof(zeros);
		b->finished = flush == Z_FINISH;
	}
}

static const unsigned char zero_block[65536];

static size_t
rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/*
 * The peer sends 1 GB of zeros deflated (about 1 MB on the wire, made as
 * it goes); the reader stack `zlib(@p opts)` must stop it with @p want
 * having delivered at most @p most bytes, with bounded buffers.
 */
static void
bomb_run(const char *opts, size_t rd_high, const char *want, size_t least,
    size_t most)
{
	struct event_base *base = event_base_new();
	struct bufferevent *peer;
	struct bomb b;
	struct end e;
	char spec[128];
	int fds[2];
	size_t rss0 = rss_bytes();

	th_socketpair(fds);
	snprintf(spec, sizeof(spec), "zlib%s%s%s", *opts ? "(" : "", opts,
	    *opts ? ")" : "");
	end_init(&e, base, stack_on_fd(base, fds[0], spec));
	if (rd_high)
		bufferevent_setwatermark(e.top, EV_READ, 0, rd_high);
	e.block = zero_block;
	e.block_len = sizeof(zero_block); /* every byte must be a zero */
	memset(&b, 0, sizeof(b));
	ck_assert_int_eq(deflateInit(&b.s, 9), Z_OK);
	b.total = (size_t)1 << 30;
	b.victim = &e;
	peer = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(peer, NULL, bomb_write, NULL, &b);
	bufferevent_enable(peer, EV_WRITE);
	bomb_write(peer, &b);
	th_run_until(base, &e.events, 60000, "the bomb to be stopped");
	th_run_for(base, 20);
	ck_assert_int_eq(e.events, 1);
	ck_assert_int_eq(e.last_what, BEV_EVENT_ERROR | BEV_EVENT_READING);
	ck_assert_msg(starts_with(e.error, want), "'%s'", e.error);
	ck_assert_int_eq(e.mismatch, 0);
	ck_assert_msg(e.total >= least && e.total <= most,
	    "%zu bytes delivered", e.total);
	ck_assert_msg(b.made < b.total, "the whole bomb was sent");
	/* bounded: the top's input by the watermark (or one pass), the
	 * transport's by the engine: it stops reading at 256 KiB, which
	 * libevent's socket read callback (at most 4 KiB a call) can pass
	 * by one read */
	ck_assert_uint_le(e.max_top_in, rd_high ? rd_high : most);
	ck_assert_uint_le(e.max_t_in, 256 * 1024 + 4096);
	ck_assert_msg(rss_bytes() < rss0 + 400 * MIB,
	    "RSS grew by %zu MB", (rss_bytes() - rss0) / MIB);
	deflateEnd(&b.s);
	bufferevent_free(peer);
	end_free(&e);
	th_run_for(base, 5);
	event_base_free(base);
}

START_TEST(sock_bomb_ratio)
{
	bomb_run("", 0, "zlib: inflated output exceeds max-ratio=200 (",
	    MIB - 65536, MIB + 65536);
}
END_TEST

START_TEST(sock_bomb_max_output)
{
	if (th_under_valgrind())
		bomb_run("max-ratio=0,max-output=8M", 256 * 1024,
		    "zlib: inflated output exceeds max-output=8388608 bytes",
		    8 * MIB, 8 * MIB);
	else
		bomb_run("max-ratio=0,max-output=64M", 256 * 1024,
		    "zlib: inflated output exceeds max-output=67108864 bytes",
		    64 * MIB, 64 * MIB);
}
END_TEST

/* ---- an interactive line protocol over TCP ---- */

struct chat {
	struct event_base *base;
	struct strata_listener *l;
	struct bufferevent *server, *client;
	int rounds, want, errors, server_eof, client_eof, closed;
	int bad;
	double worst_ms;
	struct timespec sent_at;
	char error[STRATA_ERROR_MAX + 64];
};

static double
ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 +
	    (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void
chat_send(struct chat *c)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "ping %d\n", c->rounds);

	clock_gettime(CLOCK_MONOTONIC, &c->sent_at);
	bufferevent_write(c->client, line, (size_t)n);
}

/* The server answers each line at once; nothing else is ever written. */
static void
chat_server_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *l;
	size_t n;

	(void)arg;
	while ((l = evbuffer_readln(in, &n, EVBUFFER_EOL_LF))) {
		if (!strncmp(l, "ping ", 5))
			evbuffer_add_printf(bufferevent_get_output(bev),
			    "pong %s\n", l + 5);
		free(l);
	}
}

static void
chat_event(struct bufferevent *bev, short what, void *arg)
{
	struct chat *c = arg;
	const char *m = strata_last_error(bev);

	if (what & BEV_EVENT_ERROR) {
		c->errors++;
		snprintf(c->error, sizeof(c->error), "%s", m ? m : "(none)");
	}
	if (what & BEV_EVENT_EOF) {
		if (bev == c->server)
			c->server_eof++;
		else
			c->client_eof++;
	}
	if (what & BEV_EVENT_CONNECTED && bev == c->client)
		chat_send(c);
}

static void
chat_accept(struct strata_listener *l, struct bufferevent *top, void *arg)
{
	struct chat *c = arg;

	(void)l;
	c->server = top;
	bufferevent_setcb(top, chat_server_read, NULL, chat_event, c);
	bufferevent_enable(top, EV_READ | EV_WRITE);
}

static void
chat_client_read(struct bufferevent *bev, void *arg)
{
	struct chat *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *l, want[64];
	size_t n;

	while ((l = evbuffer_readln(in, &n, EVBUFFER_EOL_LF))) {
		double ms = ms_since(&c->sent_at);
		snprintf(want, sizeof(want), "pong %d", c->rounds);
		if (strcmp(l, want))
			c->bad++;
		free(l);
		if (ms > c->worst_ms)
			c->worst_ms = ms;
		if (++c->rounds < c->want)
			chat_send(c);
	}
}

static void
chat_closed(int delivered, void *arg)
{
	struct chat *c = arg;

	c->closed = delivered ? 1 : -1;
}

/*
 * @p rounds request/response round trips over `tcp://127.0.0.1:PORT |
 * @p filters` with flush=auto: each request is written once and its reply
 * must come back with no further write; then a graceful close, and the
 * server sees a clean end of the compressed stream.
 */
static void
chat_run(const char *filters, int rounds)
{
	struct strata_error err;
	struct chat c;
	char spec[256];

	memset(&c, 0, sizeof(c));
	c.base = event_base_new();
	c.want = rounds;
	snprintf(spec, sizeof(spec), "tcp://127.0.0.1:0 | %s", filters);
	c.l = strata_listen(c.base, spec, BEV_OPT_CLOSE_ON_FREE, chat_accept,
	    &c, &err);
	ck_assert_msg(c.l != NULL, "listen: %s", err.message);
	snprintf(spec, sizeof(spec), "tcp://127.0.0.1:%d | %s",
	    strata_listener_port(c.l), filters);
	c.client = strata_connect(c.base, NULL, spec, BEV_OPT_CLOSE_ON_FREE,
	    &err);
	ck_assert_msg(c.client != NULL, "connect: %s", err.message);
	bufferevent_setcb(c.client, chat_client_read, NULL, chat_event, &c);
	bufferevent_enable(c.client, EV_READ | EV_WRITE);
	th_run_until(c.base, &c.rounds, 5000, "the first reply");
	while (c.rounds < c.want && !c.errors) {
		int r0 = c.rounds;
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (c.rounds == r0 && !c.errors && ms_since(&t0) < 5000)
			event_base_loop(c.base, EVLOOP_ONCE);
		ck_assert_msg(c.rounds > r0, "round trip %d stalled (%s)",
		    r0, c.error);
	}
	ck_assert_msg(!c.errors, "%s", c.error);
	ck_assert_int_eq(c.rounds, rounds);
	ck_assert_int_eq(c.bad, 0);
	ck_assert_msg(c.worst_ms < 1000, "slowest round trip %.1f ms",
	    c.worst_ms);
	ck_assert_uint_ge(layer_stat(c.client, 1, "flushes"), rounds);
	strata_close(c.client, NULL, chat_closed, &c);
	th_run_until(c.base, &c.server_eof, 5000, "the server's EOF");
	ck_assert_int_eq(c.errors, 0);
	bufferevent_free(c.server);
	th_run_until(c.base, &c.closed, 5000, "the close to finish");
	strata_listener_free(c.l);
	th_run_for(c.base, 5);
	event_base_free(c.base);
}

START_TEST(tcp_interactive)
{
	chat_run("zlib | lines", 1000);
}
END_TEST

START_TEST(tcp_interactive_gzip)
{
	chat_run("zlib(format=gzip,level=1) | lines(eol=crlf)", 200);
}
END_TEST

/* ---- interop: Python's zlib and gzip modules, the gzip tool ---- */

static const char *
py_wbits(const char *format)
{
	return !strcmp(format, "gzip") ? "31" : !strcmp(format, "raw") ? "-15"
								   : "15";
}

START_TEST(interop_python_decodes)
{
	const size_t len = 150000;
	unsigned char *data = mixed_data(len);
	size_t f, l, e;
	static const int lv[] = {1, 9};
	static const size_t every[] = {0, 1000};

	for (f = 0; f < STRATA_ARRAY_LEN(formats); f++)
	for (l = 0; l < STRATA_ARRAY_LEN(lv); l++)
	for (e = 0; e < STRATA_ARRAY_LEN(every); e++) {
		char opts[64];
		struct evbuffer *z, *out = evbuffer_new();
		int st;

		snprintf(opts, sizeof(opts), "format=%s,level=%d", formats[f],
		    lv[l]);
		z = fz_compress(opts, data, len, 4096, every[e]);
		st = run_python("decode.py", py_wbits(formats[f]), NULL, NULL,
		    evbuffer_pullup(z, -1), evbuffer_get_length(z), out);
		ck_assert_msg(st == 0, "%s: python exited %d", opts, st);
		ck_assert_msg(th_buf_eq(out, data, len), "%s: python decoded "
		    "%zu bytes", opts, evbuffer_get_length(out));
		if (f == 1) {
			evbuffer_drain(out, evbuffer_get_length(out));
			st = run_python("decode.py", "gzip-module", NULL, NULL,
			    evbuffer_pullup(z, -1), evbuffer_get_length(z),
			    out);
			ck_assert_int_eq(st, 0);
			ck_assert(th_buf_eq(out, data, len));
		}
		evbuffer_free(z);
		evbuffer_free(out);
	}
	free(data);
}
END_TEST

START_TEST(interop_gzip_tool_decodes)
{
	const size_t len = 300000;
	unsigned char *data = mixed_data(len);
	char *argv[] = {"gzip", "-dc", NULL};
	static const char *const opts[] = {"format=gzip",
	    "format=gzip,level=1,flush=every:777", "format=gzip,level=9",
	    "format=gzip,level=0"};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(opts); i++) {
		struct evbuffer *z = fz_compress(opts[i], data, len, 7, 5000);
		struct evbuffer *out = evbuffer_new();
		int st = run_child(argv, evbuffer_pullup(z, -1),
		    evbuffer_get_length(z), out);

		ck_assert_msg(st == 0, "%s: gzip exited %d", opts[i], st);
		ck_assert_msg(th_buf_eq(out, data, len), "%s: gzip decoded %zu "
		    "bytes", opts[i], evbuffer_get_length(out));
		evbuffer_free(z);
		evbuffer_free(out);
	}
	{
		/* the empty stream too */
		struct evbuffer *z = fz_compress("format=gzip", "", 0, 0, 0);
		struct evbuffer *out = evbuffer_new();
		ck_assert_int_eq(run_child(argv, evbuffer_pullup(z, -1),
				     evbuffer_get_length(z), out), 0);
		ck_assert_uint_eq(evbuffer_get_length(out), 0);
		evbuffer_free(z);
		evbuffer_free(out);
	}
	free(data);
}
END_TEST

START_TEST(interop_python_encodes)
{
	static const struct {
		const char *kind, *level, *every, *opts;
	} v[] = {
	    {"15", "6", "0", "format=zlib"},
	    {"15", "9", "777", "format=zlib"},
	    {"31", "1", "0", "format=gzip"},
	    {"31", "9", "5000", "format=gzip"},
	    {"-15", "6", "0", "format=raw"},
	    {"-15", "1", "333", "format=raw"},
	    {"gzip-members", "6", "0", "format=gzip"},
	    {"gzip-named", "9", "0", "format=gzip"},
	};
	const size_t len = 150000;
	unsigned char *data = mixed_data(len);
	size_t i, c;

	for (i = 0; i < STRATA_ARRAY_LEN(v); i++) {
		struct evbuffer *z = evbuffer_new();
		int st = run_python("encode.py", v[i].kind, v[i].level,
		    v[i].every, data, len, z);

		ck_assert_msg(st == 0, "python %s exited %d", v[i].kind, st);
		for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
			struct evbuffer *out = evbuffer_new();
			const char *e = fz_decompress_err(v[i].opts,
			    evbuffer_pullup(z, -1), evbuffer_get_length(z),
			    chunk_sizes[c], out);
			ck_assert_msg(!*e, "python %s: %s", v[i].kind, e);
			ck_assert_msg(th_buf_eq(out, data, len), "python %s, "
			    "chunk %zu: %zu bytes", v[i].kind, chunk_sizes[c],
			    evbuffer_get_length(out));
			evbuffer_free(out);
		}
		evbuffer_free(z);
	}
	free(data);
}
END_TEST

START_TEST(interop_gzip_tool_encodes)
{
	const size_t len = 300000;
	unsigned char *data = mixed_data(len);
	char *fast[] = {"gzip", "-c", "-1", NULL};
	char *best[] = {"gzip", "-c", "-9", NULL};
	struct evbuffer *z = evbuffer_new(), *out = evbuffer_new();
	size_t c;

	/* two members, made by two runs of the tool */
	ck_assert_int_eq(run_child(fast, data, len / 2, z), 0);
	ck_assert_int_eq(run_child(best, data + len / 2, len - len / 2, z), 0);
	for (c = 0; c < STRATA_ARRAY_LEN(chunk_sizes); c++) {
		const char *e = fz_decompress_err("format=gzip",
		    evbuffer_pullup(z, -1), evbuffer_get_length(z),
		    chunk_sizes[c], out);
		ck_assert_msg(!*e, "%s", e);
		ck_assert(th_buf_eq(out, data, len));
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	evbuffer_free(z);
	evbuffer_free(out);
	free(data);
}
END_TEST

/* ---- interop in real stacks, over exec: ---- */

/*
 * `exec:sh -c "gzip -dc | gzip -c" | zlib(format=gzip)`: the gzip tool
 * decodes what the stack's output side compresses and compresses it again
 * for the stack's input side; 4 MB round trip, half-close, exit status.
 */
START_TEST(interop_exec_gzip_roundtrip)
{
	const size_t block_len = 1000003, total = 4 * 1000 * 1000;
	unsigned char *block = malloc(block_len);
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct feeder w = {0};
	struct end e;
	struct bufferevent *top;
	int i;

	text_fill(block, block_len, 5);
	top = strata_connect(base, NULL,
	    "exec:sh -c 'gzip -dc | gzip -c' | zlib(format=gzip)",
	    BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	end_init(&e, base, top);
	e.block = block;
	e.block_len = block_len;
	w.block = block;
	w.block_len = block_len;
	w.total = total;
	w.chunk = 50000;
	w.end = &e;
	bufferevent_setcb(top, feeder_read, feeder_write, feeder_event, &w);
	feeder_write(top, &w);
	th_run_until(base, &e.ended, 30000, "EOF from the gzip pipeline");
	ck_assert_msg(!e.errors, "%s", e.error);
	ck_assert_int_eq(e.mismatch, 0);
	ck_assert_uint_eq(e.total, total);
	for (i = 0; i < 200 && strata_exit_status(top) == -1; i++)
		th_run_for(base, 10);
	ck_assert_int_eq(strata_exit_status(top), 0);
	end_free(&e);
	th_run_for(base, 5);
	event_base_free(base);
	free(block);
}
END_TEST

/*
 * `exec:python3 echo.py | zlib | lines`: a real zlib peer answers every
 * line (sync-flushing each answer); each request is written once and must
 * be answered with no further write (flush=auto reaching a foreign
 * inflater). Ending our stream makes the peer end its own: clean EOF, exit
 * status 0 (the peer saw our end marker and nothing after it).
 */
static void
exec_echo(const char *wbits, const char *filters, int rounds)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct bufferevent *top;
	struct end e;
	char spec[256], line[64], want[64];
	int i;

	snprintf(spec, sizeof(spec), "exec:python3 %s/echo.py %s | %s",
	    script_dir, wbits, filters);
	top = strata_connect(base, NULL, spec, BEV_OPT_CLOSE_ON_FREE, &err);
	ck_assert_msg(top != NULL, "%s", err.message);
	end_init(&e, base, top);
	e.line_mode = 1;
	for (i = 0; i < rounds; i++) {
		int n = snprintf(line, sizeof(line), "line %d\n", i);
		size_t before = e.lines;
		bufferevent_write(top, line, (size_t)n);
		while (e.lines == before && !e.ended) {
			struct timespec t0;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			event_base_loop(base, EVLOOP_ONCE);
			ck_assert_msg(ms_since(&t0) < 10000, "no reply to "
			    "line %d", i);
		}
		ck_assert_msg(!e.errors, "%s", e.error);
		snprintf(want, sizeof(want), "echo line %d\n", i);
		ck_assert_msg(th_buf_eq(e.got, want, strlen(want)),
		    "got '%.*s', want '%s'", (int)evbuffer_get_length(e.got),
		    (const char *)evbuffer_pullup(e.got, -1), want);
		evbuffer_drain(e.got, evbuffer_get_length(e.got));
	}
	bufferevent_flush(top, EV_WRITE, BEV_FINISHED);
	th_run_until(base, &e.ended, 10000, "EOF from the python peer");
	ck_assert_msg(!e.errors, "%s", e.error);
	ck_assert_int_eq(e.eof, 1);
	for (i = 0; i < 300 && strata_exit_status(top) == -1; i++)
		th_run_for(base, 10);
	ck_assert_int_eq(strata_exit_status(top), 0);
	end_free(&e);
	th_run_for(base, 5);
	event_base_free(base);
}

START_TEST(interop_exec_python_echo)
{
	exec_echo("15", "zlib | lines", 100);
	exec_echo("31", "zlib(format=gzip,level=1) | lines", 30);
	exec_echo("-15", "zlib(format=raw,level=9) | lines", 30);
}
END_TEST

/* ---- main ---- */

static void
add(Suite *s, const char *name, const TTest *const *tests, size_t n,
    int timeout)
{
	TCase *tc = tcase_create(name);
	size_t i;

	tcase_set_timeout(tc, timeout);
	for (i = 0; i < n; i++)
		tcase_add_test(tc, tests[i]);
	suite_add_tcase(s, tc);
}

#define ADD(s, name, timeout, ...)                                            \
	do {                                                                  \
		const TTest *const t_[] = {__VA_ARGS__};               \
		add(s, name, t_, STRATA_ARRAY_LEN(t_), timeout);              \
	} while (0)

int
main(void)
{
	Suite *s = suite_create("zlib");
	SRunner *sr;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (th_capture_register(ZL, "tzlib") < 0) {
		fprintf(stderr, "could not register the test filter\n");
		return 1;
	}
	scripts_write();
	ADD(s, "options", 60, opt_every_value, opt_bad_values,
	    opt_stack_strings, opt_defaults);
	ADD(s, "roundtrip", 300, rt_matrix, rt_flush_decodable, rt_every_n,
	    rt_empty, rt_flush_idle, rt_options, rt_window_too_small,
	    rt_gzip_members, mem_lazy);
	ADD(s, "limits", 300, limit_output, limit_input);
	ADD(s, "hostile", 300, bad_random, bad_truncated, bad_bitflip,
	    bad_gzip_header_crc, bad_trailer, bad_trailing_garbage,
	    bomb_ratio, bomb_max_output, bomb_max_output_exact,
	    bomb_caps_normal_and_off);
	ADD(s, "stack", 600, sock_roundtrip, sock_100mb, sock_flush_auto,
	    sock_flush_none, sock_flush_every, sock_hostile, sock_bomb_ratio,
	    sock_bomb_max_output);
	ADD(s, "tcp", 300, tcp_interactive, tcp_interactive_gzip);
	ADD(s, "interop", 300, interop_python_decodes,
	    interop_gzip_tool_decodes, interop_python_encodes,
	    interop_gzip_tool_encodes, interop_exec_gzip_roundtrip,
	    interop_exec_python_echo);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	scripts_remove();
	return failed ? 1 : 0;
}
