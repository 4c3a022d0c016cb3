/*
 * relay-peer: the client and the sink of bench/relay.sh (issue 6), in one
 * process so that one clock covers the whole transfer.
 *
 *   relay-peer -c PORT -s PORT -n BYTES [-H] [-b BYTES] [-t SECONDS]
 *
 * It listens on 127.0.0.1:-s (the sink), then connects to 127.0.0.1:-c
 * (the first proxy, or the sink itself for the "direct" row) and sends
 * -n bytes of pseudo-random data, write(2) by write(2) in -b pieces
 * (256 KiB), then shuts its write side and waits for the end of the
 * stream coming back. The sink thread accepts one connection and read(2)s
 * it into a -b buffer until EOF, counting the bytes; with -H both ends
 * also hash what they sent and got (SHA-256; it costs CPU in both, so the
 * timed runs leave it off). Plain blocking sockets, TCP_NODELAY on both,
 * no copy on the sending side: neither end does more than a system call
 * per -b bytes.
 *
 * Prints one line: "bytes=N seconds=S sent=N cpu=S [sha256=ok|MISMATCH]"
 * and exits 0 only if the sink got exactly -n bytes (and, with -H, the
 * same SHA-256). The clock runs from just before connect() to the sink's
 * EOF; cpu is this process's user + system time over the same span (both
 * ends together).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/evp.h>

#define PATTERN (1024 * 1024) /* the data: this many random bytes, repeated */

static struct {
	int cport, sport, hash;
	uint64_t total;
	size_t piece;
	unsigned timeout;
} o = {0, 0, 0, 0, 256 * 1024, 120};

static unsigned char *pattern;
static int sink_listen_fd;
static uint64_t sink_bytes;
static double sink_end;
static unsigned char sink_md[32], sent_md[32];

static void
die(const char *what)
{
	fprintf(stderr, "relay-peer: %s: %s\n", what, strerror(errno));
	exit(2);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User + system CPU seconds of this process (both threads). */
static double
cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void
nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sa;
}

static void *
sink(void *arg)
{
	EVP_MD_CTX *md = o.hash ? EVP_MD_CTX_new() : NULL;
	unsigned char *buf = malloc(o.piece);
	int fd;
	ssize_t n;

	if (!buf)
		die("malloc");
	if (md)
		EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	if ((fd = accept(sink_listen_fd, NULL, NULL)) < 0)
		die("accept");
	nodelay(fd);
	while ((n = read(fd, buf, o.piece)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "relay-peer: sink read: %s\n",
			    strerror(errno));
			break;
		}
		sink_bytes += (uint64_t)n;
		if (md)
			EVP_DigestUpdate(md, buf, (size_t)n);
	}
	sink_end = now();
	if (md) {
		EVP_DigestFinal_ex(md, sink_md, NULL);
		EVP_MD_CTX_free(md);
	}
	close(fd); /* the end travels back to the client through the proxies */
	free(buf);
	return arg;
}

/* Send o.total bytes of the pattern to @p fd; hash them with -H. */
static uint64_t
send_all(int fd)
{
	EVP_MD_CTX *md = o.hash ? EVP_MD_CTX_new() : NULL;
	uint64_t sent = 0;

	if (md)
		EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	while (sent < o.total) {
		size_t off = (size_t)(sent % PATTERN);
		size_t len = o.piece;
		ssize_t n;

		if (len > PATTERN - off)
			len = PATTERN - off;
		if (len > o.total - sent)
			len = (size_t)(o.total - sent);
		n = write(fd, pattern + off, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "relay-peer: write: %s\n",
			    strerror(errno));
			break;
		}
		if (md)
			EVP_DigestUpdate(md, pattern + off, (size_t)n);
		sent += (uint64_t)n;
	}
	if (md) {
		EVP_DigestFinal_ex(md, sent_md, NULL);
		EVP_MD_CTX_free(md);
	}
	return sent;
}

static void
usage(void)
{
	fprintf(stderr, "usage: relay-peer -c PORT -s PORT -n BYTES [-H] "
			"[-b BYTES] [-t SECONDS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sa;
	pthread_t th;
	uint64_t sent, x = 0x9e3779b97f4a7c15ull;
	double start, cpu0, cpu1;
	char tail[64];
	int c, fd, one = 1, ok;
	size_t i;

	while ((c = getopt(argc, argv, "c:s:n:Hb:t:")) != -1) {
		switch (c) {
		case 'c': o.cport = atoi(optarg); break;
		case 's': o.sport = atoi(optarg); break;
		case 'n': o.total = strtoull(optarg, NULL, 10); break;
		case 'H': o.hash = 1; break;
		case 'b': o.piece = strtoul(optarg, NULL, 10); break;
		case 't': o.timeout = (unsigned)atoi(optarg); break;
		default: usage();
		}
	}
	if (!o.cport || !o.sport || !o.total || o.piece < 1 ||
	    o.piece > PATTERN || PATTERN % o.piece)
		usage();
	signal(SIGPIPE, SIG_IGN);
	alarm(o.timeout); /* a stuck proxy ends the run, not the bench */

	if (!(pattern = malloc(PATTERN)))
		die("malloc");
	for (i = 0; i < PATTERN; i++) { /* xorshift64: incompressible */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pattern[i] = (unsigned char)(x >> 24);
	}

	sa = loopback(o.sport);
	if ((sink_listen_fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		die("socket");
	setsockopt(sink_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one));
	if (bind(sink_listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind (sink)");
	if (listen(sink_listen_fd, 16) < 0)
		die("listen");
	if (pthread_create(&th, NULL, sink, NULL))
		die("pthread_create");

	cpu0 = cpu_now();
	start = now();
	sa = loopback(o.cport);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		die("socket");
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect");
	sent = send_all(fd);
	shutdown(fd, SHUT_WR);
	{ /* wait for the end coming back (the sink closed) */
		char b[4096];
		ssize_t n;

		while ((n = read(fd, b, sizeof(b))) > 0 ||
		    (n < 0 && errno == EINTR))
			;
	}
	pthread_join(th, NULL);
	cpu1 = cpu_now();
	close(fd);

	ok = sink_bytes == o.total && sent == o.total;
	tail[0] = '\0';
	if (o.hash) {
		int same = !memcmp(sink_md, sent_md, sizeof(sink_md));
		snprintf(tail, sizeof(tail), " sha256=%s",
		    same ? "ok" : "MISMATCH");
		ok = ok && same;
	}
	printf("bytes=%llu seconds=%.6f sent=%llu cpu=%.3f%s\n",
	    (unsigned long long)sink_bytes, sink_end - start,
	    (unsigned long long)sent, cpu1 - cpu0, tail);
	return ok ? 0 : 1;
}
