/*
 * Shared pieces of the fuzz targets: the libFuzzer entry points, a reader
 * of fuzz bytes, a quiet event loop, a pass-through test filter, a
 * deterministic OpenSSL RNG, and a harness that runs a stack over a
 * bufferevent pair whose other end the target drives.
 *
 * Every target is built twice: against libFuzzer (-Dfuzz=enabled, clang)
 * and against replay.c, a main() that feeds files to the same entry point,
 * so every build replays the committed corpora as meson tests.
 */
#ifndef STRATA_FUZZ_H
#define STRATA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/* The libFuzzer interface (each target defines the first; the second is
 * optional, replay.c calls it when a target has it). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A check that holds in every build, fuzzing or not: prints what failed
 * and aborts, which libFuzzer and the replay test both report. */
#define FZ_CHECK(cond, ...)                                                    \
	do {                                                                   \
		if (!(cond))                                                   \
			fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
	} while (0)

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

/* Messages go to terminals and logs: no control characters in them,
 * whatever the input (a stack string, a peer's certificate). */
void fz_check_text(const char *what, const char *msg);

/* Nonzero when FUZZ_VERBOSE is set in the environment: targets then say
 * what happened to an input (for looking at seeds and crashes). */
int fz_verbose(void);
void fz_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- reading the input ---- */

struct fz_in {
	const uint8_t *p;
	size_t n;
};

/* The next byte, or 0 once the input is used up. */
uint8_t fz_u8(struct fz_in *in);
/* Two bytes, big-endian (0 past the end). */
unsigned fz_u16(struct fz_in *in);
/* Up to @p max bytes from the input; *len says how many. */
const uint8_t *fz_bytes(struct fz_in *in, size_t max, size_t *len);

/* A small deterministic generator for data the input only seeds. */
struct fz_rng {
	uint64_t s;
};
uint32_t fz_rng_next(struct fz_rng *r);
/* A piece of 1..@p max bytes of the @p left still to go. */
size_t fz_chunk(struct fz_rng *r, size_t left, size_t max);

/* ---- setup ---- */

/* Once per process: register "frames" and the fuzz "pass" filter, quiet
 * libevent's log, ignore SIGPIPE. Safe to call from every input. */
void fz_init(void);

/* Make OpenSSL's RNG a deterministic generator, reset to the same state
 * (call before building a TLS stack): the same input then makes the same
 * ClientHello, the same keys, the same records, so a recorded peer flight
 * replays past the handshake. Fuzzing only: never link this elsewhere. */
void fz_rand_reset(void);

/* An event base with precise timers (see fz_pump). */
struct event_base *fz_base_new(void);

/* A number that changes whenever any layer of the stack @p top (the
 * transport included) moves a byte: the progress fz_pump watches. */
uint64_t fz_stack_progress(struct bufferevent *top);

/* One round of @p base's loop: what is active runs, then it returns. */
void fz_loop_once(struct event_base *base);

/* Run @p base until nothing is active, the progress @p sig reports has
 * not changed for a few rounds and no timer is due within 5 ms (strata
 * re-runs parked data from 1 us timers; a handshake timeout is not
 * waited for), at most @p max_rounds rounds. */
void fz_pump(struct event_base *base, int max_rounds, uint64_t (*sig)(void *),
    void *arg);

/* ---- a stack over a bufferevent pair ---- */

/*
 * pair[1] is the transport under the stack, pair[0] the peer end the
 * target writes the wire bytes into and reads the stack's output from.
 * What reaches the top is moved into `got` by the read callback (or left
 * there, read_all = 0, for the target to take).
 */
struct fz_stack {
	struct event_base *base;
	struct bufferevent *pair[2];
	struct bufferevent *top;
	struct evbuffer *got;  /* bytes read from the top */
	struct evbuffer *wire; /* bytes the stack sent to the peer */
	uint64_t events;       /* callbacks seen (for fz_pump) */
	int read_all;	       /* move all input to `got` on read */
	int connected;	       /* BEV_EVENT_CONNECTED events seen */
	int connected_late;    /* one came after an error */
	int eof, error;
	char errmsg[STRATA_ERROR_MAX];
	/* called on each read callback before input is taken */
	void (*on_read)(struct fz_stack *s, void *arg);
	void *arg;
};

/*
 * Build @p filters over a fresh pair on a fresh base (STRATA_OPT_SERVER in
 * @p options for the server role). Returns 0, or -1 with s->errmsg set
 * (everything already freed).
 */
int fz_stack_open(struct fz_stack *s, const char *filters, int options);

/* Write wire bytes from the peer, then pump. */
void fz_stack_feed(struct fz_stack *s, const void *p, size_t len);

/* The peer ends its stream (EOF on the stack's transport), then pump. */
void fz_stack_peer_eof(struct fz_stack *s);

/* Pump the stack's loop until it is quiet. */
void fz_stack_pump(struct fz_stack *s);

/* Free the top (and the transport), the peer end, the buffers, the base. */
void fz_stack_close(struct fz_stack *s);

/* Does @p a start with all of @p b's bytes? (Both empty: yes.) */
int fz_starts_with(struct evbuffer *a, struct evbuffer *b);
/* Is @p a a prefix of @p b? Are they equal? */
int fz_is_prefix(struct evbuffer *a, struct evbuffer *b);
int fz_equal(struct evbuffer *a, struct evbuffer *b);

/* Copy a C string made from fuzz bytes (NUL-terminated, malloc'd). */
char *fz_strndup(const uint8_t *p, size_t n);

/* Directory of the committed test certificates (fuzz/data). */
const char *fz_data_dir(void);

/*
 * The filter list of the TLS targets, also used by gen-tls-seeds to record
 * a real peer's flight against the very same stack: the server has the
 * test certificate and asks for an optional client certificate; the client
 * checks the server's (for localhost, from the test CA), offers its own,
 * and does not resume (a session cached by one input would change the
 * next). Both offer ALPN.
 */
void fz_tls_filters(int server, char *buf, size_t len);

#endif /* STRATA_FUZZ_H */
