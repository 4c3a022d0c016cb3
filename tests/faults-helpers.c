/* Helpers shared by the fault tests. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "faults-helpers.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FH_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(FH_ASAN)
#define FH_ASAN 1
#endif
#ifdef FH_ASAN
#include <sanitizer/allocator_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define FH_HAVE_VALGRIND_H 1
#endif
#endif

#define NEED(x)                                                                \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: setup failed: %s\n", __FILE__, \
			    __LINE__, #x);                                     \
			exit(1);                                               \
		}                                                              \
	} while (0)

static void
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	NEED(ext);
	NEED(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

void
fh_make_cert(const char *path, char *pin, size_t pinlen)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL, md[32];
	unsigned int mdlen = 0;
	int derlen, i;
	FILE *f;

	NEED(key && x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	add_ext(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	NEED(X509_sign(x, key, EVP_sha256()));
	NEED((f = fopen(path, "w")) != NULL);
	NEED(PEM_write_X509(f, x));
	NEED(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	derlen = i2d_PUBKEY(key, &der);
	NEED(derlen > 0);
	NEED(EVP_Digest(der, (size_t)derlen, md, &mdlen, EVP_sha256(), NULL));
	NEED(pinlen >= 7 + 2 * 32 + 1);
	strcpy(pin, "sha256:");
	for (i = 0; i < 32; i++)
		snprintf(pin + 7 + 2 * i, 3, "%02x", md[i]);
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(key);
}

int
fh_sanitized(void)
{
#ifdef FH_ASAN
	return 1;
#else
	return 0;
#endif
}

int
fh_valgrind(void)
{
#ifdef FH_HAVE_VALGRIND_H
	return RUNNING_ON_VALGRIND != 0;
#else
	const char *p = getenv("LD_PRELOAD");

	return p && strstr(p, "vgpreload") != NULL;
#endif
}

size_t
fh_heap_in_use(void)
{
#ifdef FH_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
#endif
}

double
fh_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((unsigned short)port);
	return sa;
}

int
fh_raw_listen(int *port)
{
	struct sockaddr_in sa = loopback(0);
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

int
fh_raw_accept(int lfd, int ms)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};

	if (poll(&p, 1, ms) <= 0)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
}

int
fh_raw_connect(int port)
{
	struct sockaddr_in sa = loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
	    "connect to port %d: %s", port, strerror(errno));
	ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	return fd;
}

void
fh_reset_close(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	ck_assert_int_eq(
	    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd);
}

int
fh_free_port(void)
{
	int port, fd = fh_raw_listen(&port);

	close(fd);
	return port;
}

/* A socket listening on 127.0.0.1:port in /proc/net/tcp (state 0A). */
static int
listening(int port)
{
	char line[512], want[32];
	int found = 0;
	FILE *f = fopen("/proc/net/tcp", "r");

	if (!f)
		return 0;
	snprintf(want, sizeof(want), "0100007F:%04X", port);
	while (!found && fgets(line, sizeof(line), f)) {
		char local[64], remote[64];
		unsigned st;

		if (sscanf(line, "%*d: %63s %63s %X", local, remote, &st) ==
			3 &&
		    !strcmp(local, want) && st == 0x0A)
			found = 1;
	}
	fclose(f);
	return found;
}

void
fh_wait_listening(int port, int ms)
{
	double end = fh_now() + ms / 1000.0;

	while (fh_now() < end) {
		if (listening(port))
			return;
		usleep(10000);
	}
	ck_abort_msg("nothing listens on port %d after %d ms", port, ms);
}

long
fh_proc_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

int
fh_proc_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Fields 14 and 15 of /proc/PID/stat, after the command in parentheses. */
long
fh_proc_cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	if (!(p = strrchr(buf, ')')) ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		&ut, &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

int
fh_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

pid_t
fh_spawn(char *const argv[], const char *log, unsigned nofile)
{
	pid_t parent = getpid(), pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit rl;
		int fd, in = open("/dev/null", O_RDONLY);
		int out = open(log ? log : "/dev/null",
		    O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (in < 0 || out < 0)
			_exit(126);
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		/* not closefrom(): under valgrind it would close valgrind's
		 * own fds, which sit above the (faked) limit */
		getrlimit(RLIMIT_NOFILE, &rl);
		for (fd = 3; fd < (int)rl.rlim_cur && fd < 65536; fd++)
			close(fd);
		signal(SIGPIPE, SIG_DFL);
		/* a test that fails (or is killed) leaves no server behind */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(124);
		if (fh_sanitized()) {
			/* a small quarantine: RSS then says something */
			const char *o = getenv("ASAN_OPTIONS");
			char opts[1024];
			snprintf(opts, sizeof(opts),
			    "%s%squarantine_size_mb=16", o ? o : "",
			    o && *o ? ":" : "");
			setenv("ASAN_OPTIONS", opts, 1);
		}
		if (nofile) {
			/* the limit set by a shell: valgrind (meson test
			 * --setup=valgrind) fakes setrlimit in the process it
			 * runs, this one until the exec */
			char cmd[64];
			char *sh[64] = {"sh", "-c", cmd};
			int i;

			snprintf(cmd, sizeof(cmd),
			    "ulimit -n %u && exec \"$0\" \"$@\"", nofile);
			for (i = 0; argv[i] && i < 60; i++)
				sh[3 + i] = argv[i];
			sh[3 + i] = NULL;
			execv("/bin/sh", sh);
			_exit(127);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}
