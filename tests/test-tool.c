/*
 * The strata command-line tool, run as real processes with real peers
 * (curl, openssl s_client, Python's http.server, OpenSSL clients): plugins,
 * listen --echo/--exec, connect with stdin/stdout, proxy with half-close,
 * timeouts, TLS verification, workers, limits, SIGTERM drain, SIGHUP
 * reload, the progress line, bounded memory under a slow reader, the
 * README's proxy examples, bad input and exit codes. The tool's path comes
 * from STRATA_TOOL, the source tree from STRATA_SOURCE_ROOT (set by meson).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "helpers.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static const char *
tool(void)
{
	const char *t = getenv("STRATA_TOOL");

	ck_assert_msg(t != NULL, "STRATA_TOOL is not set");
	return t;
}

/* Children a test started: killed when the test's process exits, also
 * after a failed assertion (Check's forked test then exits), so a failed
 * test leaves no server behind. */
static pid_t children[32];
static int nchildren;

static void
kill_children(void)
{
	int i;

	for (i = 0; i < nchildren; i++)
		if (children[i] > 0 && waitpid(children[i], NULL, WNOHANG) == 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
}

static void
child_started(pid_t pid)
{
	if (!nchildren)
		atexit(kill_children);
	if (nchildren < 32)
		children[nchildren++] = pid;
}

/* The tool in the background with NULL-terminated arguments; stdout to
 * @p out and stderr to @p log (files, or /dev/null when NULL). */
static pid_t
tool_bg(const char *out, const char *log, ...)
{
	char *argv[32];
	va_list ap;
	int n = 0;
	pid_t pid;

	argv[n++] = (char *)tool();
	va_start(ap, log);
	while (n < 31 && (argv[n] = va_arg(ap, char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int o = out ? open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644)
			    : null;
		int e = log ? open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644)
			    : null;
		dup2(null, 0);
		dup2(o, 1);
		dup2(e, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	child_started(pid);
	return pid;
}

/* Wait until something listens on 127.0.0.1:port (up to 3 s). */
static void
wait_listening(int port)
{
	struct sockaddr_in sa = th_loopback(port);
	int i;

	for (i = 0; i < 300; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0), r;
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (r == 0)
			return;
		usleep(10000);
	}
	ck_abort_msg("nothing listens on port %d after 3 s", port);
}

static void
stop(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* Run a shell command line with a 20 s limit; its exit status. */
static int
sh(const char *cmd)
{
	char full[8192];
	const char *c = cmd;
	size_t n = 0;
	int st;

	/* quote for sh -c '...': each ' becomes '\'' */
	n += (size_t)snprintf(full, sizeof(full), "timeout 20 sh -c '");
	for (; *c && n + 6 < sizeof(full); c++) {
		if (*c == '\'') {
			memcpy(full + n, "'\\''", 4);
			n += 4;
		} else
			full[n++] = *c;
	}
	ck_assert_msg(!*c, "command too long");
	memcpy(full + n, "'", 2);
	st = system(full);
	ck_assert_msg(st != -1 && WIFEXITED(st), "'%s' did not exit", cmd);
	ck_assert_msg(WEXITSTATUS(st) != 124, "'%s' timed out", cmd);
	return WEXITSTATUS(st);
}

static char tmpdir[] = "/tmp/strata-tool-XXXXXX";

static void
make_file(const char *name, size_t bytes)
{
	char path[256];
	FILE *f;
	size_t i;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	for (i = 0; i < bytes; i += 64)
		fprintf(f, "line %09zu of the test text, with some words ..\n",
		    i / 64);
	fclose(f);
}

/* A path in the test's directory (eight rotating buffers). */
static char *
tpath(const char *name)
{
	static char buf[8][512];
	static int i;
	char *p = buf[i++ % 8];

	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

/* `listen --echo` on a free port of 127.0.0.1, serving; its stack
 * ("tcp://127.0.0.1:PORT") in @p stack. */
static pid_t
echo_server(char *stack, size_t len)
{
	int port = th_free_port();
	pid_t pid;

	snprintf(stack, len, "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", NULL);
	wait_listening(port);
	return pid;
}

/* A TLS server's stack on 127.0.0.1:@p port with tmpdir/@p name.pem and
 * .key, and @p above ("" or " | filter ...") on top. */
static void
tls_stack(char *stack, size_t len, int port, const char *name,
    const char *above)
{
	char pem[64], key[64];

	snprintf(pem, sizeof(pem), "%s.pem", name);
	snprintf(key, sizeof(key), "%s.key", name);
	snprintf(stack, len, "tcp://127.0.0.1:%d | tls(cert=%s, key=%s)%s",
	    port, tpath(pem), tpath(key), above);
}

START_TEST(plugins_lists_the_registry)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
	    "%s plugins | grep -q \"^  tcp \" && %s plugins | "
	    "grep -q \"^  lines \" && %s plugins | grep -q \"max \"",
	    tool(), tool(), tool());
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s --version | grep -q \"^strata \"",
	    tool());
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(listen_echo_and_connect_file)
{
	int port = th_free_port();
	char stack[128], cmd[1024];
	pid_t pid;

	make_file("in.txt", 2 << 20);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd),
	    "%s connect \"%s\" < %s/in.txt > %s/out.txt && "
	    "cmp %s/in.txt %s/out.txt", tool(), stack, tmpdir, tmpdir, tmpdir,
	    tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
	stop(pid);
}
END_TEST

START_TEST(proxy_relays_both_ways_with_half_close)
{
	int p2;
	char s1[128], s2[128], s3[128], cmd[1024];
	pid_t echo, proxy;

	make_file("big.txt", 8 << 20);
	echo = echo_server(s1, sizeof(s1));
	p2 = th_free_port();
	snprintf(s2, sizeof(s2), "tcp://127.0.0.1:%d", p2);
	proxy = tool_bg(NULL, NULL, "proxy", s2, s1, NULL);
	wait_listening(p2);
	/* stdin ends first; the echo still flows back in full afterwards */
	snprintf(s3, sizeof(s3), "tcp://127.0.0.1:%d | lines", p2);
	snprintf(cmd, sizeof(cmd),
	    "%s connect \"%s\" < %s/big.txt | cmp - %s/big.txt", tool(), s3,
	    tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
	/* the proxy keeps serving: a second client */
	ck_assert_int_eq(sh(cmd), 0);
	stop(proxy);
	stop(echo);
}
END_TEST

START_TEST(bad_stack_is_a_usage_error_with_caret)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
	    "%s connect \"tcp://127.0.0.1:1 | lines(mx=1)\" 2>&1 "
	    "</dev/null | grep -q \"unknown option .mx. at position 26\"",
	    tool());
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	    "%s connect \"tcp://127.0.0.1:1 | lines(mx=1)\" </dev/null "
	    ">/dev/null 2>&1; test $? = 2", tool());
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	    "%s connect \"tcp://h | lines(\" 2>&1 </dev/null | "
	    "grep -q \"\\^\"", tool());
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s nosuch >/dev/null 2>&1; test $? = 2",
	    tool());
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(refused_connection_exit_code)
{
	int port = th_free_port();
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
	    "%s connect tcp://127.0.0.1:%d </dev/null 2>%s/err.txt; "
	    "test $? = 3 && grep -q \"could not connect: .*Connection "
	    "refused\" %s/err.txt",
	    tool(), port, tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(port_in_use_exit_code)
{
	int port = th_free_port();
	char stack[128], cmd[512];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd),
	    "%s listen %s --echo 2>%s/err2.txt; test $? = 3 && "
	    "grep -q \"Address already in use\" %s/err2.txt",
	    tool(), stack, tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
	stop(pid);
}
END_TEST

START_TEST(listen_exec_serves_a_command)
{
	int port = th_free_port();
	char stack[128], cmd[1024];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--exec", "tr a-z A-Z",
	    NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd),
	    "printf \"hello\\nworld\\n\" | %s connect \"%s\" | "
	    "tr -d \"\\n\" | grep -qx HELLOWORLD", tool(), stack);
	ck_assert_int_eq(sh(cmd), 0);
	stop(pid);
}
END_TEST


static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read with a deadline: bytes read, 0 on EOF, -1 on timeout. */
static ssize_t
read_wait(int fd, char *buf, size_t len, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return read(fd, buf, len);
}

/* A client that was served: the byte @p c it sent came back. */
static int
echoed_client(int port, const char *c)
{
	int fd = th_tcp_connect(port);
	char buf[16];

	ck_assert_int_eq(write(fd, c, 1), 1);
	ck_assert_int_eq(read_wait(fd, buf, sizeof(buf), 2000), 1);
	return fd;
}

START_TEST(max_conns_refuses_the_extra_one)
{
	int port = th_free_port(), a, b, c;
	char stack[64], buf[16];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", "--max-conns",
	    "1", NULL);
	wait_listening(port); /* that probe came and went */
	usleep(100000);
	a = echoed_client(port, "x");
	b = th_tcp_connect(port);
	ck_assert_int_eq(read_wait(b, buf, sizeof(buf), 2000), 0); /* refused */
	close(b);
	close(a);
	usleep(200000);
	c = echoed_client(port, "y");
	close(c);
	stop(pid);
}
END_TEST

START_TEST(rate_limit_within_20_percent)
{
	int port = th_free_port();
	char stack[64], cmd[1024];
	double t0, t;
	pid_t pid;

	make_file("rate.txt", 1 << 20); /* about 0.8 MiB of text */
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", "--rate", "400K",
	    NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd), "%s connect %s < %s/rate.txt | cmp - %s/rate.txt",
	    tool(), stack, tmpdir, tmpdir);
	t0 = now_s();
	ck_assert_int_eq(sh(cmd), 0);
	t = now_s() - t0;
	/* 851,968 bytes at 409,600 B/s: 2.08 s */
	ck_assert_msg(t > 2.08 * 0.8 && t < 2.08 * 1.2,
	    "took %.2f s, expected 2.08 s within 20%%", t);
	stop(pid);
}
END_TEST

START_TEST(sigterm_drains_a_transfer_in_flight)
{
	int p2, st;
	char s1[64], s2[64], cmd[1024];
	pid_t echo, proxy;

	make_file("drain.txt", 1 << 20);
	echo = echo_server(s1, sizeof(s1));
	p2 = th_free_port();
	snprintf(s2, sizeof(s2), "tcp://127.0.0.1:%d", p2);
	proxy = tool_bg(NULL, NULL, "proxy", "--rate", "1M", "--workers=2",
	    s2, s1, NULL);
	wait_listening(p2);
	snprintf(cmd, sizeof(cmd),
	    "(sleep 0.3; kill -TERM %d) & %s connect %s < %s/drain.txt | "
	    "cmp - %s/drain.txt", (int)proxy, tool(), s2, tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(waitpid(proxy, &st, 0), proxy);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	stop(echo);
}
END_TEST

START_TEST(json_log_line_per_connection)
{
	int port = th_free_port();
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
	    "%s listen tcp://127.0.0.1:%d --exec cat --log-format=json "
	    ">%s/log.json 2>/dev/null & pid=$!; "
	    "for i in 1 2 3 4 5 6 7 8 9 10; do "
	    "printf ping | %s connect tcp://127.0.0.1:%d >/dev/null 2>&1 "
	    "&& break; sleep 0.1; done; sleep 0.3; kill $pid; wait $pid; "
	    "python3 -c \"import json,sys; "
	    "l=[json.loads(x) for x in open(sys.argv[1])]; "
	    "c=l[-1]; assert c[\\\"ok\\\"] and c[\\\"end\\\"]==\\\"closed\\\", c; "
	    "assert c[\\\"client\\\"][\\\"top_in\\\"]==4, c; "
	    "assert c[\\\"command\\\"][\\\"stack\\\"]==\\\"cat\\\", c; "
	    "assert c[\\\"peer\\\"].startswith(\\\"127.0.0.1:\\\"), c\" "
	    "%s/log.json",
	    tool(), port, tmpdir, tool(), port, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(demo_moves_a_text_through_tls_and_zlib)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
	    "%s demo > %s/demo.txt 2>&1 && grep -q \"OK, identical\" "
	    "%s/demo.txt && grep -q \"version=TLSv1.3\" %s/demo.txt && "
	    "grep -q \"deflate_ratio=\" %s/demo.txt && "
	    "grep -q \"strata listen\" %s/demo.txt", tool(), tmpdir, tmpdir,
	    tmpdir, tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

/* ---- helpers for the tests below ---- */

/* SIGTERM, and the exit status (-1 if it did not exit by itself). */
static int
stop_status(pid_t pid)
{
	int st;

	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Wait up to @p ms for @p needle to appear in the file @p file. */
static int
wait_text(const char *file, const char *needle, int ms)
{
	char buf[65536];
	int i;

	for (i = 0; i <= ms / 10; i++) {
		FILE *f = fopen(file, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = 0;
		if (strstr(buf, needle))
			return 1;
		if (i < ms / 10)
			usleep(10000);
	}
	return 0;
}

/* A key and a self-signed certificate for localhost and 127.0.0.1 with
 * CN=@p cn: tmpdir/@p name.pem and .key. */
static void
make_cert(const char *name, const char *cn)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -days 2 -subj /CN=%s -addext "
	    "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s/%s.key "
	    "-out %s/%s.pem 2>/dev/null", cn, tmpdir, name, tmpdir, name);
	if (system(cmd) != 0)
		fprintf(stderr, "could not make %s.pem\n", name);
}

/* A nonblocking connect that the kernel may never answer. */
static int
raw_connect_nb(int port)
{
	struct sockaddr_in sa = th_loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	return fd;
}

/* Run a shell command; its exit status and how long it took. */
static int
sh_timed(const char *cmd, double *secs)
{
	double t0 = now_s();
	int rc = sh(cmd);

	*secs = now_s() - t0;
	return rc;
}

static long
file_size(const char *p)
{
	struct stat st;

	ck_assert_int_eq(stat(p, &st), 0);
	return (long)st.st_size;
}

/* ---- timeouts and exit codes ---- */

START_TEST(connect_timeout_on_a_blackhole)
{
	/* backlog 0, one connection queued: the kernel drops further SYNs,
	 * as a blackholed address would */
	int port, lfd = th_tcp_listen(0, &port), fill[3], i;
	char cmd[1024];
	double t;

	for (i = 0; i < 3; i++)
		fill[i] = raw_connect_nb(port);
	usleep(50000);
	snprintf(cmd, sizeof(cmd),
	    "%s connect --connect-timeout 0.4 tcp://127.0.0.1:%d </dev/null "
	    "2>%s; test $? = 5 && grep -q \"timed out: tcp: connect to "
	    "127.0.0.1:%d timed out\" %s", tool(), port, tpath("ct.txt"), port,
	    tpath("ct.txt"));
	ck_assert_int_eq(sh_timed(cmd, &t), 0);
	ck_assert_msg(t > 0.3 && t < 3, "gave up after %.2f s, not 0.4", t);
	/* a timeout= in the stack wins */
	snprintf(cmd, sizeof(cmd),
	    "%s connect --connect-timeout 5 \"tcp://127.0.0.1:%d(timeout="
	    "200ms)\" </dev/null 2>/dev/null; test $? = 5", tool(), port);
	ck_assert_int_eq(sh_timed(cmd, &t), 0);
	ck_assert_msg(t < 2, "gave up after %.2f s, not 0.2", t);
	/* the default is documented */
	snprintf(cmd, sizeof(cmd), "%s --help | grep -q "
	    "\"connect-timeout S .*(10 s)\"", tool());
	ck_assert_int_eq(sh(cmd), 0);
	for (i = 0; i < 3; i++)
		close(fill[i]);
	close(lfd);
}
END_TEST

START_TEST(handshake_timeout_both_roles)
{
	int port, lfd = th_tcp_listen(16, &port), p2 = th_free_port(), fd;
	char cmd[1024], stack[128], buf[8];
	double t, t0;
	pid_t pid;

	/* a client whose server never answers the ClientHello */
	snprintf(cmd, sizeof(cmd),
	    "%s connect --handshake-timeout 0.3 \"tcp://127.0.0.1:%d | tls\" "
	    "</dev/null 2>%s; test $? = 5 && grep -q \"timed out: tls: "
	    "handshake not complete after 300 ms\" %s", tool(), port,
	    tpath("hs.txt"), tpath("hs.txt"));
	ck_assert_int_eq(sh_timed(cmd, &t), 0);
	ck_assert_msg(t > 0.25 && t < 3, "gave up after %.2f s", t);
	/* the stack's own option wins */
	snprintf(cmd, sizeof(cmd),
	    "%s connect --handshake-timeout 0.3 \"tcp://127.0.0.1:%d | "
	    "tls(handshake-timeout=1200ms)\" </dev/null 2>%s; test $? = 5 && "
	    "grep -q \"after 1200 ms\" %s", tool(), port, tpath("hs2.txt"),
	    tpath("hs2.txt"));
	ck_assert_int_eq(sh_timed(cmd, &t), 0);
	ck_assert_msg(t > 1.0 && t < 4, "gave up after %.2f s, not 1.2", t);
	close(lfd);

	/* a server whose client never says hello */
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | "
	    "tls(cert=self-signed)", p2);
	pid = tool_bg(NULL, tpath("hs3.txt"), "listen", "--handshake-timeout",
	    "0.3", stack, "--echo", NULL);
	wait_listening(p2);
	fd = th_tcp_connect(p2);
	t0 = now_s();
	ck_assert_int_eq(read_wait(fd, buf, sizeof(buf), 3000), 0);
	t = now_s() - t0;
	ck_assert_msg(t > 0.2 && t < 2.5, "closed after %.2f s, not 0.3", t);
	ck_assert(wait_text(tpath("hs3.txt"), "handshake not complete after "
	    "300 ms", 2000));
	close(fd);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

START_TEST(tls_verification_failure_exit_code)
{
	int port = th_free_port();
	char stack[512], cmd[2048];
	pid_t pid;

	tls_stack(stack, sizeof(stack), port, "a", "");
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", NULL);
	wait_listening(port);
	/* self-signed, no CA given: the system store does not know it */
	snprintf(cmd, sizeof(cmd),
	    "echo x | %s connect \"tcp://127.0.0.1:%d | tls\" 2>%s; "
	    "test $? = 4 && grep -q \"TLS verification failed: tls: "
	    "certificate verify failed: untrusted issuer\" %s", tool(), port,
	    tpath("v1.txt"), tpath("v1.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	    "echo x | %s connect \"tcp://127.0.0.1:%d | tls(ca=%s, "
	    "name=other.example)\" 2>%s; test $? = 4 && grep -q \"hostname "
	    "mismatch: expected 'other.example'\" %s", tool(), port,
	    tpath("a.pem"), tpath("v2.txt"), tpath("v2.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	    "echo x | %s connect \"tcp://127.0.0.1:%d | tls(pin=sha256:"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=)\" 2>%s; test $? = 4 "
	    "&& grep -q \"pin mismatch\" %s", tool(), port, tpath("v3.txt"),
	    tpath("v3.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	/* and with the right CA it works */
	snprintf(cmd, sizeof(cmd),
	    "echo hello | %s connect \"tcp://127.0.0.1:%d | tls(ca=%s)\" | "
	    "grep -qx hello", tool(), port, tpath("a.pem"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

/* ---- workers ---- */

START_TEST(workers_spread_connections)
{
	int port = th_free_port(), i;
	char stack[64], cmd[2048];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(tpath("w.json"), tpath("w.txt"), "listen", "--workers",
	    "3", "--log-format=json", stack, "--exec", "cat", NULL);
	wait_listening(port);
	for (i = 0; i < 6; i++) {
		snprintf(cmd, sizeof(cmd), "printf ping%d | %s connect %s | "
		    "grep -qx ping%d", i, tool(), stack, i);
		ck_assert_int_eq(sh(cmd), 0);
	}
	ck_assert_int_eq(stop_status(pid), 0);
	ck_assert(wait_text(tpath("w.txt"), "(3 workers)", 0));
	snprintf(cmd, sizeof(cmd), "python3 -c \"import json,sys; "
	    "l=[json.loads(x) for x in open(sys.argv[1])]; "
	    "w=sorted(set(c[\\\"worker\\\"] for c in l if c[\\\"ok\\\"] and "
	    "c[\\\"client\\\"][\\\"top_in\\\"]==5)); "
	    "assert w==[1,2,3], w\" %s", tpath("w.json"));
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(rate_total_across_workers)
{
	int port = th_free_port();
	char stack[64], cmd[4096], f[512];
	double t, want;
	pid_t pid;

	make_file("half.txt", 512 << 10);
	snprintf(f, sizeof(f), "%s", tpath("half.txt"));
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, tpath("rt.txt"), "listen", "--workers", "2",
	    "--rate-total", "400K", stack, "--echo", NULL);
	wait_listening(port);
	usleep(100000);
	/* two at once, one on each worker: the total is what is limited */
	snprintf(cmd, sizeof(cmd),
	    "%s connect %s < %s > %s & %s connect %s < %s > %s; wait; "
	    "cmp %s %s && cmp %s %s", tool(), stack, f, tpath("h1"), tool(),
	    stack, f, tpath("h2"), f, tpath("h1"), f, tpath("h2"));
	ck_assert_int_eq(sh_timed(cmd, &t), 0);
	want = 2.0 * (double)file_size(f) / 409600.0;
	ck_assert_msg(t > want * 0.8 && t < want * 1.2,
	    "took %.2f s, expected %.2f s within 20%%", t, want);
	ck_assert_int_eq(stop_status(pid), 0);
	ck_assert(wait_text(tpath("rt.txt"), "w1 accepted", 0));
	ck_assert(wait_text(tpath("rt.txt"), "w2 accepted", 0));
}
END_TEST

START_TEST(max_conns_across_workers)
{
	int port = th_free_port(), a, b, c, d;
	char stack[64], buf[16];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	pid = tool_bg(NULL, tpath("mc.txt"), "listen", "--workers", "3",
	    "--max-conns", "2", stack, "--echo", NULL);
	wait_listening(port);
	usleep(100000);
	/* round-robin: a and b on two workers, the count is one for all */
	a = echoed_client(port, "a");
	b = echoed_client(port, "b");
	c = th_tcp_connect(port);
	ck_assert_int_eq(read_wait(c, buf, sizeof(buf), 2000), 0);
	ck_assert(wait_text(tpath("mc.txt"), "--max-conns reached", 2000));
	close(c);
	close(a);
	usleep(200000);
	d = echoed_client(port, "d");
	close(d);
	close(b);
	ck_assert_int_eq(stop_status(pid), 0);
	ck_assert(wait_text(tpath("mc.txt"), "w2 accepted", 0));
	ck_assert(wait_text(tpath("mc.txt"), "w3 accepted", 0));
}
END_TEST

/* One TLS context for all workers: a session made on one resumes on
 * another (openssl s_client -sess_out, then -sess_in). */
START_TEST(tls_sessions_resume_across_workers)
{
	int port = th_free_port();
	char stack[512], cmd[1024];
	pid_t pid;

	tls_stack(stack, sizeof(stack), port, "a", "");
	pid = tool_bg(NULL, tpath("res.txt"), "listen", "--workers", "2", stack,
	    "--echo", NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd), "sleep 0.5 | openssl s_client -connect "
	    "127.0.0.1:%d -sess_out %s 2>/dev/null | grep -q \"^New, TLS\" && "
	    "sleep 0.5 | openssl s_client -connect 127.0.0.1:%d -sess_in %s "
	    "2>/dev/null | grep -q \"^Reused, TLS\"", port, tpath("sess.pem"),
	    port, tpath("sess.pem"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(stop_status(pid), 0);
	ck_assert(wait_text(tpath("res.txt"), "w1 accepted", 0));
	ck_assert(wait_text(tpath("res.txt"), "w2 accepted", 0));
}
END_TEST

/* ---- SIGHUP: certificates and keys again ---- */

struct tlsc {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static void
tlsc_open(struct tlsc *c, int port)
{
	struct timeval tv = {5, 0};

	c->fd = th_tcp_connect(port);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	c->ctx = SSL_CTX_new(TLS_client_method());
	ck_assert_ptr_nonnull(c->ctx);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
	c->ssl = SSL_new(c->ctx);
	SSL_set_fd(c->ssl, c->fd);
	ck_assert_int_eq(SSL_connect(c->ssl), 1);
}

static void
tlsc_close(struct tlsc *c)
{
	SSL_shutdown(c->ssl);
	SSL_free(c->ssl);
	SSL_CTX_free(c->ctx);
	close(c->fd);
}

/* Does the server's certificate have the SHA-256 fingerprint of @p pem? */
static int
tlsc_sees(struct tlsc *c, const char *pem)
{
	unsigned char a[32], b[32];
	unsigned int la = 0, lb = 0;
	X509 *peer = SSL_get1_peer_certificate(c->ssl), *want;
	FILE *f = fopen(pem, "r");

	ck_assert_ptr_nonnull(peer);
	ck_assert_ptr_nonnull(f);
	want = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(want);
	X509_digest(peer, EVP_sha256(), a, &la);
	X509_digest(want, EVP_sha256(), b, &lb);
	X509_free(peer);
	X509_free(want);
	return la == 32 && lb == 32 && !memcmp(a, b, 32);
}

static void
tlsc_echo(struct tlsc *c)
{
	char buf[8];
	int got = 0, n = 1;

	ck_assert_int_eq(SSL_write(c->ssl, "ping\n", 5), 5);
	while (got < 5 && (n = SSL_read(c->ssl, buf + got, 5 - got)) > 0)
		got += n;
	ck_assert_msg(got == 5 && !memcmp(buf, "ping\n", 5),
	    "no echo on a live connection");
}

static void
copy_file(const char *from, const char *to)
{
	char cmd[1200];

	snprintf(cmd, sizeof(cmd), "cp %s %s", from, to);
	ck_assert_int_eq(sh(cmd), 0);
}

START_TEST(sighup_reloads_certificates)
{
	int port = th_free_port();
	char stack[512];
	struct tlsc c1, c2, c3;
	FILE *f;
	pid_t pid;

	copy_file(tpath("a.pem"), tpath("cur.pem"));
	copy_file(tpath("a.key"), tpath("cur.key"));
	tls_stack(stack, sizeof(stack), port, "cur", "");
	pid = tool_bg(NULL, tpath("hup.txt"), "listen", "--workers", "2",
	    stack, "--echo", NULL);
	wait_listening(port);
	tlsc_open(&c1, port);
	ck_assert(tlsc_sees(&c1, tpath("a.pem")));
	tlsc_echo(&c1);

	/* new files: the next client sees b, the live one goes on with a */
	copy_file(tpath("b.pem"), tpath("cur.pem"));
	copy_file(tpath("b.key"), tpath("cur.key"));
	kill(pid, SIGHUP);
	ck_assert_msg(wait_text(tpath("hup.txt"), "SIGHUP: reloaded", 3000),
	    "no reload in the log");
	tlsc_open(&c2, port);
	ck_assert(tlsc_sees(&c2, tpath("b.pem")));
	tlsc_echo(&c1);
	ck_assert(tlsc_sees(&c1, tpath("a.pem")));

	/* a broken file: logged with its name, and b is still served */
	ck_assert_ptr_nonnull(f = fopen(tpath("cur.pem"), "w"));
	fputs("-----BEGIN CERTIFICATE-----\nbroken\n", f);
	fclose(f);
	kill(pid, SIGHUP);
	ck_assert_msg(wait_text(tpath("hup.txt"), "SIGHUP: reload failed, "
	    "new connections keep the old certificates and keys: tls: cert:",
	    3000), "no failed reload in the log");
	ck_assert(wait_text(tpath("hup.txt"), "cur.pem", 0));
	tlsc_open(&c3, port);
	ck_assert(tlsc_sees(&c3, tpath("b.pem")));
	tlsc_echo(&c1);
	tlsc_echo(&c2);
	tlsc_echo(&c3);
	tlsc_close(&c1);
	tlsc_close(&c2);
	tlsc_close(&c3);
	ck_assert_int_eq(kill(pid, 0), 0); /* still serving */
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

/* ---- connect: the progress line and --stats ---- */

START_TEST(connect_progress_line_on_a_terminal)
{
	int port = th_free_port();
	char stack[128], cmd[2048], *data = tpath("rnd.txt");
	pid_t pid;

	snprintf(cmd, sizeof(cmd), "head -c 1200000 /dev/urandom | base64 "
	    "> %s", data);
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | zlib", port);
	pid = tool_bg(NULL, NULL, "listen", "--rate", "1M", stack, "--echo",
	    NULL);
	wait_listening(port);
	/* stderr on a pseudo-terminal, stdin and stdout on files */
	snprintf(cmd, sizeof(cmd),
	    "python3 -c \"import os,pty,subprocess,sys; m,s=pty.openpty(); "
	    "f=sys.argv[1]; p=subprocess.Popen(sys.argv[2:], stdin=open(f), "
	    "stdout=open(f+'.out','w'), stderr=s); os.close(s); "
	    "b=b''\n"
	    "while True:\n"
	    "  try: d=os.read(m,4096)\n"
	    "  except OSError: break\n"
	    "  if not d: break\n"
	    "  b+=d\n"
	    "open(f+'.tty','wb').write(b); sys.exit(p.wait())\" "
	    "%s %s connect --stats \"%s\"", data, tool(), stack);
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	    "cmp %s %s.out && python3 -c \"import sys; "
	    "b=open(sys.argv[1],'rb').read().decode(); "
	    "assert b.count('\\r\\x1b[Kstrata: sent ')>=3, b[:300]; "
	    "last=b.rindex('strata: sent '); "
	    "assert '\\r\\x1b[K' in b[last:], 'not erased'; "
	    "assert '/s, wire ' in b and '(ratio 1.' in b, b[:300]; "
	    "assert 'zlib ' in b[last:] and 'tcp ' in b[last:], b[last:]\" "
	    "%s.tty", data, data, data);
	ck_assert_int_eq(sh(cmd), 0);
	/* stderr not a terminal: no progress line */
	snprintf(cmd, sizeof(cmd), "%s connect \"%s\" < %s 2>%s >/dev/null; "
	    "! grep -q \"strata: sent\" %s", tool(), stack, data,
	    tpath("noprog.txt"), tpath("noprog.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

/* ---- memory under a slow reader ---- */

static long
rss_kib(pid_t pid)
{
	char p[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	if (!(f = fopen(p, "r")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/* Accept one connection and read it at @p rate bytes/s; exit 0 if
 * exactly @p total bytes came. Connections that end before their first
 * byte (wait_listening()'s probe of the proxy, relayed) are skipped. */
static void
paced_reader(int lfd, unsigned long long total, double rate)
{
	static char buf[65536];
	unsigned long long got = 0;
	double t0, ahead;
	ssize_t n;
	int fd;

	do {
		fd = accept(lfd, NULL, NULL);
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			close(fd);
	} while (n <= 0);
	t0 = now_s();
	got = (unsigned long long)n;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		got += (unsigned long long)n;
		ahead = (double)got / rate - (now_s() - t0);
		if (ahead > 0)
			usleep((useconds_t)(ahead * 1e6));
	}
	if (got != total)
		fprintf(stderr, "slow reader: %llu of %llu bytes, then %s\n",
		    got, total, n < 0 ? strerror(errno) : "EOF");
	_exit(got == total ? 0 : 1);
}

/* Write @p total bytes as fast as the proxy takes them, then end. */
static void
fast_writer(int port, unsigned long long total)
{
	static char buf[256 << 10];
	unsigned long long sent = 0;
	int fd = th_tcp_connect(port);
	ssize_t n;

	memset(buf, 'x', sizeof(buf));
	while (sent < total) {
		size_t k = total - sent < sizeof(buf) ? (size_t)(total - sent)
						      : sizeof(buf);
		if ((n = write(fd, buf, k)) <= 0)
			_exit(1);
		sent += (unsigned long long)n;
	}
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	_exit(0);
}

START_TEST(relay_memory_stays_bounded_under_a_slow_reader)
{
	/* 1 GiB to a reader at 64 MiB/s (the proxy alone moves several
	 * times that): about 16 s. Under ASan, whose allocator makes RSS
	 * meaningless, a quarter of it and no bound. */
	unsigned long long total = UNDER_ASAN ? 256ull << 20 : 1ull << 30;
	int lport, pport = th_free_port(), lfd = th_tcp_listen(16, &lport), st;
	char target[64], listen_s[64];
	pid_t proxy, reader, writer, done;
	long peak = 0, kib, samples = 0;
	double t0 = now_s();

	snprintf(target, sizeof(target), "tcp://127.0.0.1:%d", lport);
	snprintf(listen_s, sizeof(listen_s), "tcp://127.0.0.1:%d", pport);
	if ((reader = fork()) == 0)
		paced_reader(lfd, total, 64.0 * 1024 * 1024);
	child_started(reader);
	close(lfd);
	proxy = tool_bg(NULL, tpath("mem.txt"), "proxy", listen_s, target,
	    NULL);
	wait_listening(pport);
	if ((writer = fork()) == 0)
		fast_writer(pport, total);
	child_started(writer);
	for (;;) {
		if ((kib = rss_kib(proxy)) > peak)
			peak = kib;
		samples++;
		done = waitpid(reader, &st, WNOHANG);
		if (done == reader || now_s() - t0 > 50)
			break;
		usleep(50000);
	}
	if (done != reader) {
		kill(reader, SIGKILL);
		kill(writer, SIGKILL);
		waitpid(writer, NULL, 0);
		stop(proxy);
		ck_abort_msg("the slow reader did not finish in 50 s");
	}
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	    "the reader did not get exactly %llu bytes", total);
	ck_assert_int_eq(waitpid(writer, &st, 0), writer);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	fprintf(stderr, "relay of %llu MiB to a reader at 64 MiB/s in %.1f s: "
	    "proxy RSS peak %ld KiB over %ld samples\n", total >> 20,
	    now_s() - t0, peak, samples);
	if (!UNDER_ASAN)
		ck_assert_msg(peak > 0 && peak < 64 * 1024,
		    "proxy RSS peaked at %ld KiB", peak);
	ck_assert_int_eq(stop_status(proxy), 0);
}
END_TEST

/* A drain cut short by --drain-timeout, and a second signal: both end
 * at once with status 1, saying so, and free what was running. */
START_TEST(drain_timeout_and_second_signal)
{
	int pp, i, st;
	char echo_s[64], lstack[64], log[32], want[64];
	pid_t echo, proxy, writer;
	double t0;

	echo = echo_server(echo_s, sizeof(echo_s));
	for (i = 0; i < 2; i++) {
		pp = th_free_port();
		snprintf(lstack, sizeof(lstack), "tcp://127.0.0.1:%d", pp);
		snprintf(log, sizeof(log), "cut%d.txt", i);
		proxy = tool_bg(NULL, tpath(log), "proxy", "--workers", "2",
		    "--rate", "100K", "--drain-timeout", "0.5", lstack, echo_s,
		    NULL);
		wait_listening(pp);
		if ((writer = fork()) == 0)
			fast_writer(pp, 1 << 20); /* 10 s at 100K/s */
		child_started(writer);
		usleep(300000);
		t0 = now_s();
		kill(proxy, SIGTERM);
		if (i == 1) {
			usleep(100000);
			kill(proxy, SIGTERM);
		}
		ck_assert_int_eq(waitpid(proxy, &st, 0), proxy);
		ck_assert_msg(now_s() - t0 < (i ? 0.4 : 2.0),
		    "took %.2f s to exit", now_s() - t0);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1,
		    "exit status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		snprintf(want, sizeof(want), "%s", i ? "second signal: exiting "
		    "now" : "--drain-timeout expired, cutting 1 connection");
		ck_assert(wait_text(tpath(log), want, 0));
		kill(writer, SIGKILL);
		waitpid(writer, NULL, 0);
	}
	ck_assert_int_eq(stop_status(echo), 0);
}
END_TEST

/* ---- real peers ---- */

START_TEST(curl_through_a_tls_terminating_proxy)
{
	int hport = th_free_port(), pport = th_free_port();
	char cmd[2048], lstack[512], target[64], port_s[16];
	pid_t http, proxy;

	snprintf(cmd, sizeof(cmd), "mkdir -p %s && head -c 5000000 "
	    "/dev/urandom > %s/blob", tpath("www"), tpath("www"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(port_s, sizeof(port_s), "%d", hport);
	http = fork();
	if (http == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 1);
		dup2(null, 2);
		if (chdir(tpath("www")) == 0)
			execlp("python3", "python3", "-m", "http.server", port_s,
			    "--bind", "127.0.0.1", (char *)NULL);
		_exit(127);
	}
	child_started(http);
	wait_listening(hport);
	tls_stack(lstack, sizeof(lstack), pport, "a", "");
	snprintf(target, sizeof(target), "tcp://127.0.0.1:%d", hport);
	proxy = tool_bg(NULL, NULL, "proxy", lstack, target, NULL);
	wait_listening(pport);
	snprintf(cmd, sizeof(cmd),
	    "test \"$(curl -sS --cacert %s https://localhost:%d/blob | "
	    "sha256sum)\" = \"$(sha256sum < %s/blob)\"", tpath("a.pem"), pport,
	    tpath("www"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(sh(cmd), 0); /* and again: the proxy goes on */
	ck_assert_int_eq(stop_status(proxy), 0);
	kill(http, SIGTERM);
	waitpid(http, NULL, 0);
}
END_TEST

START_TEST(openssl_s_client_against_listen_echo)
{
	int port = th_free_port();
	char stack[512], cmd[1024];
	pid_t pid;

	tls_stack(stack, sizeof(stack), port, "a", " | lines");
	pid = tool_bg(NULL, NULL, "listen", stack, "--echo", NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd),
	    "(printf \"hello s_client\\n\"; sleep 1) | openssl s_client "
	    "-connect 127.0.0.1:%d -CAfile %s -verify_return_error -quiet "
	    "-no_ign_eof 2>/dev/null | grep -qx \"hello s_client\"", port,
	    tpath("a.pem"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

START_TEST(file_through_connect_into_listen_exec_sha256)
{
	int port = th_free_port();
	char lstack[512], cmd[2048];
	pid_t pid;

	make_file("sum.txt", 8 << 20);
	tls_stack(lstack, sizeof(lstack), port, "a", " | zlib");
	pid = tool_bg(NULL, NULL, "listen", lstack, "--exec", "sha256sum",
	    NULL);
	wait_listening(port);
	snprintf(cmd, sizeof(cmd),
	    "test \"$(%s connect \"tcp://127.0.0.1:%d | tls(ca=%s) | zlib\" "
	    "< %s | cut -d\" \" -f1)\" = \"$(sha256sum < %s | cut -d\" \" "
	    "-f1)\"", tool(), port, tpath("a.pem"), tpath("sum.txt"),
	    tpath("sum.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

START_TEST(tunnel_both_ways)
{
	/* client -> near proxy (plain to tcp|tls|zlib) -> far proxy (and
	 * back to plain) -> echo: the file goes out and comes back whole */
	int pf, pn;
	char echo_s[64], far_l[512], near_l[64], near_t[512];
	char cmd[2048];
	pid_t echo, far, near;

	make_file("tunnel.txt", 8 << 20);
	echo = echo_server(echo_s, sizeof(echo_s));
	pf = th_free_port();
	tls_stack(far_l, sizeof(far_l), pf, "a", " | zlib");
	far = tool_bg(NULL, NULL, "proxy", far_l, echo_s, NULL);
	wait_listening(pf);
	pn = th_free_port();
	snprintf(near_l, sizeof(near_l), "tcp://127.0.0.1:%d", pn);
	snprintf(near_t, sizeof(near_t), "tcp://localhost:%d | tls(ca=%s) | "
	    "zlib", pf, tpath("a.pem"));
	near = tool_bg(NULL, tpath("near.txt"), "proxy", "--stats", near_l,
	    near_t, NULL);
	wait_listening(pn);
	snprintf(cmd, sizeof(cmd),
	    "test \"$(%s connect %s < %s | sha256sum)\" = \"$(sha256sum < "
	    "%s)\"", tool(), near_l, tpath("tunnel.txt"), tpath("tunnel.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	/* the text went compressed over TLS */
	ck_assert(wait_text(tpath("near.txt"), "deflate_ratio=", 3000));
	ck_assert(wait_text(tpath("near.txt"), "version=TLSv1.3", 0));
	ck_assert_int_eq(stop_status(near), 0);
	ck_assert_int_eq(stop_status(far), 0);
	ck_assert_int_eq(stop_status(echo), 0);
}
END_TEST

/* ---- bad input ---- */

START_TEST(bad_options_and_files)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s connect --bogus tcp://127.0.0.1:1 "
	    "</dev/null 2>%s; test $? = 2 && grep -q \"unknown option, or "
	    "one without its value: '--bogus'\" %s", tool(), tpath("b1.txt"),
	    tpath("b1.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s proxy --workers 0 tcp://127.0.0.1:0 "
	    "tcp://127.0.0.1:1 2>%s; test $? = 2 && grep -q \"bad value '0' "
	    "for --workers\" %s", tool(), tpath("b2.txt"), tpath("b2.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s connect --connect-timeout soon "
	    "tcp://127.0.0.1:1 </dev/null 2>%s; test $? = 2 && grep -q \"bad "
	    "value 'soon' for --connect-timeout\" %s", tool(), tpath("b3.txt"),
	    tpath("b3.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	/* a missing certificate file: named, with a caret, at startup */
	snprintf(cmd, sizeof(cmd), "%s listen \"tcp://127.0.0.1:0 | "
	    "tls(cert=/nonexistent/c.pem)\" --echo 2>%s; test $? = 2 && "
	    "grep -q \"tls: cert: cannot read '/nonexistent/c.pem'\" %s && "
	    "grep -qx \"                          \\^\" %s", tool(),
	    tpath("b4.txt"), tpath("b4.txt"), tpath("b4.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	/* in a proxy's target too, before it serves anyone */
	snprintf(cmd, sizeof(cmd), "%s proxy tcp://127.0.0.1:0 "
	    "\"unix:/nonexistent.sock | tls(ca=/nonexistent/ca.pem)\" 2>%s; "
	    "test $? = 2 && grep -q \"ca: cannot read '/nonexistent/ca.pem'\" "
	    "%s", tool(), tpath("b5.txt"), tpath("b5.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s proxy tcp://127.0.0.1:0 "
	    "\"tcp://127.0.0.1:1 | tls | zlb\" 2>%s; test $? = 2 && grep -q "
	    "\"unknown filter 'zlb' at position 26\" %s", tool(),
	    tpath("b6.txt"), tpath("b6.txt"));
	ck_assert_int_eq(sh(cmd), 0);
	/* a target that is not tcp: its filters are checked on their own,
	 * and the position still counts from the start of the string */
	snprintf(cmd, sizeof(cmd), "%s proxy tcp://127.0.0.1:0 "
	    "\"unix:/nonexistent.sock | tls | zlb\" 2>%s; test $? = 2 && "
	    "grep -q \"unknown filter 'zlb' at position 31\" %s && grep -qx "
	    "\"                                 \\^\" %s", tool(),
	    tpath("b7.txt"), tpath("b7.txt"), tpath("b7.txt"));
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(refused_target_proxy_keeps_serving)
{
	int dead = th_free_port(), port = th_free_port(), fd, i;
	char lstack[64], target[64], buf[16], want[128];
	pid_t pid;

	snprintf(lstack, sizeof(lstack), "tcp://127.0.0.1:%d", port);
	snprintf(target, sizeof(target), "tcp://127.0.0.1:%d", dead);
	pid = tool_bg(NULL, tpath("refused.txt"), "proxy", lstack, target,
	    NULL);
	wait_listening(port);
	for (i = 0; i < 3; i++) {
		fd = th_tcp_connect(port);
		ck_assert_int_eq(write(fd, "x", 1), 1);
		ck_assert_int_le(read_wait(fd, buf, sizeof(buf), 3000), 0);
		close(fd);
	}
	snprintf(want, sizeof(want), "target could not connect: tcp: connect "
	    "to 127.0.0.1:%d failed: Connection refused", dead);
	ck_assert(wait_text(tpath("refused.txt"), want, 2000));
	ck_assert_int_eq(kill(pid, 0), 0);
	ck_assert_int_eq(stop_status(pid), 0);
}
END_TEST

START_TEST(readme_proxy_examples_as_written)
{
	const char *src = getenv("STRATA_SOURCE_ROOT");
	char cmd[2048];

	ck_assert_msg(src != NULL, "STRATA_SOURCE_ROOT is not set");
	snprintf(cmd, sizeof(cmd), "mkdir -p %s && python3 "
	    "%s/tests/readme-examples.py %s %s %s", tpath("readme"), src,
	    tool(), src, tpath("readme"));
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("tool");
	TCase *tc = tcase_create("tool");
	SRunner *sr;
	int failed;
	char cmd[300];

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	make_cert("a", "a");
	make_cert("b", "b");
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, plugins_lists_the_registry);
	tcase_add_test(tc, listen_echo_and_connect_file);
	tcase_add_test(tc, proxy_relays_both_ways_with_half_close);
	tcase_add_test(tc, bad_stack_is_a_usage_error_with_caret);
	tcase_add_test(tc, refused_connection_exit_code);
	tcase_add_test(tc, port_in_use_exit_code);
	tcase_add_test(tc, listen_exec_serves_a_command);
	tcase_add_test(tc, max_conns_refuses_the_extra_one);
	tcase_add_test(tc, rate_limit_within_20_percent);
	tcase_add_test(tc, sigterm_drains_a_transfer_in_flight);
	tcase_add_test(tc, json_log_line_per_connection);
	tcase_add_test(tc, demo_moves_a_text_through_tls_and_zlib);
	tcase_add_test(tc, connect_timeout_on_a_blackhole);
	tcase_add_test(tc, handshake_timeout_both_roles);
	tcase_add_test(tc, tls_verification_failure_exit_code);
	tcase_add_test(tc, workers_spread_connections);
	tcase_add_test(tc, rate_total_across_workers);
	tcase_add_test(tc, max_conns_across_workers);
	tcase_add_test(tc, tls_sessions_resume_across_workers);
	tcase_add_test(tc, sighup_reloads_certificates);
	tcase_add_test(tc, connect_progress_line_on_a_terminal);
	tcase_add_test(tc, relay_memory_stays_bounded_under_a_slow_reader);
	tcase_add_test(tc, drain_timeout_and_second_signal);
	tcase_add_test(tc, curl_through_a_tls_terminating_proxy);
	tcase_add_test(tc, openssl_s_client_against_listen_echo);
	tcase_add_test(tc, file_through_connect_into_listen_exec_sha256);
	tcase_add_test(tc, tunnel_both_ways);
	tcase_add_test(tc, bad_options_and_files);
	tcase_add_test(tc, refused_target_proxy_keeps_serving);
	tcase_add_test(tc, readme_proxy_examples_as_written);
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
