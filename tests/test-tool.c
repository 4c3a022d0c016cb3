/*
 * The strata command-line tool, run as real processes: plugins, listen
 * --echo, connect with stdin/stdout, proxy with half-close, bad input and
 * exit codes. The tool's path comes from STRATA_TOOL (set by meson).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static const char *
tool(void)
{
	const char *t = getenv("STRATA_TOOL");

	ck_assert_msg(t != NULL, "STRATA_TOOL is not set");
	return t;
}

/* A free TCP port on 127.0.0.1 (bound and released). */
static int
free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Start the tool in the background with stdio to /dev/null. */
static pid_t
spawn(char *const argv[])
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* Wait until something listens on 127.0.0.1:port (up to 3 s). */
static void
wait_listening(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int i;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((unsigned short)port);
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
	char full[4096];
	int st;

	snprintf(full, sizeof(full), "timeout 20 sh -c '%s'", cmd);
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
	int port = free_port();
	char stack[128], cmd[1024];
	char *argv[6];
	pid_t pid;

	make_file("in.txt", 2 << 20);
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	argv[0] = (char *)tool();
	argv[1] = "listen";
	argv[2] = stack;
	argv[3] = "--echo";
	argv[4] = NULL;
	pid = spawn(argv);
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
	int p1 = free_port(), p2;
	char s1[128], s2[128], s3[128], cmd[1024];
	char *argv1[5], *argv2[6];
	pid_t echo, proxy;

	make_file("big.txt", 8 << 20);
	snprintf(s1, sizeof(s1), "tcp://127.0.0.1:%d", p1);
	argv1[0] = (char *)tool();
	argv1[1] = "listen";
	argv1[2] = s1;
	argv1[3] = "--echo";
	argv1[4] = NULL;
	echo = spawn(argv1);
	wait_listening(p1);
	p2 = free_port();
	snprintf(s2, sizeof(s2), "tcp://127.0.0.1:%d", p2);
	argv2[0] = (char *)tool();
	argv2[1] = "proxy";
	argv2[2] = s2;
	argv2[3] = s1;
	argv2[4] = NULL;
	proxy = spawn(argv2);
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
	int port = free_port();
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
	    "%s connect tcp://127.0.0.1:%d </dev/null 2>%s/err.txt; "
	    "test $? = 1 && grep -q \"Connection refused\" %s/err.txt",
	    tool(), port, tmpdir, tmpdir);
	ck_assert_int_eq(sh(cmd), 0);
}
END_TEST

START_TEST(port_in_use_exit_code)
{
	int port = free_port();
	char stack[128], cmd[512];
	char *argv[5];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	argv[0] = (char *)tool();
	argv[1] = "listen";
	argv[2] = stack;
	argv[3] = "--echo";
	argv[4] = NULL;
	pid = spawn(argv);
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
	int port = free_port();
	char stack[128], cmd[1024];
	char *argv[6];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d | lines", port);
	argv[0] = (char *)tool();
	argv[1] = "listen";
	argv[2] = stack;
	argv[3] = "--exec";
	argv[4] = "tr a-z A-Z";
	argv[5] = NULL;
	pid = spawn(argv);
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

static int
tcp_connect_port(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((unsigned short)port);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Read with a deadline: bytes read, 0 on EOF, -1 on timeout. */
static ssize_t
read_wait(int fd, char *buf, size_t len, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return read(fd, buf, len);
}

START_TEST(max_conns_refuses_the_extra_one)
{
	int port = free_port(), a, b, c;
	char stack[64], buf[16];
	char *argv[7];
	pid_t pid;

	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	argv[0] = (char *)tool();
	argv[1] = "listen";
	argv[2] = stack;
	argv[3] = "--echo";
	argv[4] = "--max-conns";
	argv[5] = "1";
	argv[6] = NULL;
	pid = spawn(argv);
	wait_listening(port); /* that probe came and went */
	usleep(100000);
	a = tcp_connect_port(port);
	ck_assert_int_eq(write(a, "x", 1), 1);
	ck_assert_int_eq(read_wait(a, buf, sizeof(buf), 2000), 1);
	b = tcp_connect_port(port);
	ck_assert_int_eq(read_wait(b, buf, sizeof(buf), 2000), 0); /* refused */
	close(b);
	close(a);
	usleep(200000);
	c = tcp_connect_port(port);
	ck_assert_int_eq(write(c, "y", 1), 1);
	ck_assert_int_eq(read_wait(c, buf, sizeof(buf), 2000), 1);
	close(c);
	stop(pid);
}
END_TEST

START_TEST(rate_limit_within_20_percent)
{
	int port = free_port();
	char stack[64], cmd[1024];
	char *argv[7];
	double t0, t;
	pid_t pid;

	make_file("rate.txt", 1 << 20); /* about 0.8 MiB of text */
	snprintf(stack, sizeof(stack), "tcp://127.0.0.1:%d", port);
	argv[0] = (char *)tool();
	argv[1] = "listen";
	argv[2] = stack;
	argv[3] = "--echo";
	argv[4] = "--rate";
	argv[5] = "400K";
	argv[6] = NULL;
	pid = spawn(argv);
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
	int p1 = free_port(), p2, st;
	char s1[64], s2[64], cmd[1024];
	char *argv1[5], *argv2[8];
	pid_t echo, proxy;

	make_file("drain.txt", 1 << 20);
	snprintf(s1, sizeof(s1), "tcp://127.0.0.1:%d", p1);
	argv1[0] = (char *)tool();
	argv1[1] = "listen";
	argv1[2] = s1;
	argv1[3] = "--echo";
	argv1[4] = NULL;
	echo = spawn(argv1);
	wait_listening(p1);
	p2 = free_port();
	snprintf(s2, sizeof(s2), "tcp://127.0.0.1:%d", p2);
	argv2[0] = (char *)tool();
	argv2[1] = "proxy";
	argv2[2] = "--rate";
	argv2[3] = "1M";
	argv2[4] = s2;
	argv2[5] = s1;
	argv2[6] = NULL;
	proxy = spawn(argv2);
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
	int port = free_port();
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
	tcase_set_timeout(tc, 60);
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
