/* Helpers shared by the fault tests (test-faults, test-tool-faults): a
 * certificate and its pin, raw sockets, the state of another process. */
#ifndef STRATA_FAULTS_HELPERS_H
#define STRATA_FAULTS_HELPERS_H

#include <stddef.h>
#include <sys/types.h>

/* Write @p path: a self-signed P-256 certificate for localhost and
 * 127.0.0.1 followed by its key (tls(cert=PATH) takes both from it), and
 * put "sha256:HEX" of its public key into @p pin (for tls(pin=...)).
 * Exits the program on failure (call it before the tests run). */
void fh_make_cert(const char *path, char *pin, size_t pinlen);

/* Bytes allocated on the heap by this process now (glibc's mallinfo2, or
 * the sanitizer allocator's count under ASan). */
size_t fh_heap_in_use(void);

/* 1 when built with AddressSanitizer. */
int fh_sanitized(void);

/* 1 when running under valgrind (meson test --setup=valgrind): the tests
 * that move hundreds of MB or make a thousand handshakes do less. */
int fh_valgrind(void);

/* Monotonic time in seconds. */
double fh_now(void);

/* A nonblocking listening socket on 127.0.0.1:0; its port in *port. */
int fh_raw_listen(int *port);

/* accept() on a nonblocking listener, waiting up to @p ms; -1 if none. */
int fh_raw_accept(int lfd, int ms);

/* A blocking connect to 127.0.0.1:port, then nonblocking. Aborts on
 * failure. */
int fh_raw_connect(int port);

/* Close @p fd with SO_LINGER 0: the peer gets a reset. */
void fh_reset_close(int fd);

/* A free TCP port on 127.0.0.1 (bound and released). */
int fh_free_port(void);

/* Wait until a socket listens on 127.0.0.1:port (up to @p ms), without
 * connecting to it (/proc/net/tcp). */
void fh_wait_listening(int port, int ms);

/* Another process: VmRSS in KiB, open fds, CPU time in ms; -1 if gone. */
long fh_proc_rss_kb(pid_t pid);
int fh_proc_fds(pid_t pid);
long fh_proc_cpu_ms(pid_t pid);

/* 1 if @p pid is still running (not exited, not a zombie). */
int fh_alive(pid_t pid);

/* fork+exec @p argv with stdin from /dev/null, stdout and stderr to
 * @p log (NULL: /dev/null), no inherited fds above 2, and, if @p nofile
 * is nonzero, RLIMIT_NOFILE set to it. Under ASan the child's quarantine
 * is cut to 16 MiB, so that its RSS follows what it holds. The child is
 * killed when the calling process dies (a failed test leaves nothing). */
pid_t fh_spawn(char *const argv[], const char *log, unsigned nofile);

#endif
