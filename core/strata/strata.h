/*
 * strata: stackable stream filters for libevent.
 *
 * A stack is one transport at the bottom and any number of filters above it.
 * The top of every stack is a plain `struct bufferevent *`: set callbacks,
 * watermarks, enable/disable, read and write on it with libevent's own calls.
 * Freeing the top frees the whole stack.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(STRATA_BUILDING)
#define STRATA_API
#elif defined(__GNUC__)
#define STRATA_API __attribute__((visibility("default")))
#else
#define STRATA_API
#endif

/** Version of the library, as text and as a number (major*10000+minor*100+patch). */
#define STRATA_VERSION "0.1.0"
#define STRATA_VERSION_NUMBER 100

/** Error classes carried in struct strata_error::code. */
enum strata_error_code {
	STRATA_OK = 0,
	STRATA_ERR_SYNTAX,	 /**< malformed stack string */
	STRATA_ERR_UNKNOWN,	 /**< unknown filter or transport name */
	STRATA_ERR_OPTION,	 /**< unknown option key or bad option value */
	STRATA_ERR_FILTER,	 /**< a filter failed on the data path */
	STRATA_ERR_TRUNCATED,	 /**< the stream ended in the middle of a unit */
	STRATA_ERR_PROTOCOL,	 /**< a plugin broke the filter contract */
	STRATA_ERR_SYSTEM,	 /**< a system call failed (see sys_errno) */
	STRATA_ERR_NOMEM,	 /**< out of memory */
	STRATA_ERR_STATE,	 /**< call not valid in the current state */
	STRATA_ERR_TIMEOUT,	 /**< a timer expired */
	STRATA_ERR_INVALID	 /**< bad argument */
};

/** Size of the message buffer in struct strata_error. */
#define STRATA_ERROR_MAX 256

/**
 * An error: what went wrong, as a class, an errno value where one applies,
 * and a message that names the layer or position and the cause.
 */
struct strata_error {
	enum strata_error_code code;
	int sys_errno;			 /**< errno, or 0 */
	size_t position;		 /**< byte offset in a stack string, if any */
	char message[STRATA_ERROR_MAX]; /**< NUL-terminated, never empty on error */
};

/** Extra option bit for strata_push(): the new layers play the server role. */
#define STRATA_OPT_SERVER (1 << 20)

/**
 * Put filters on a bufferevent.
 *
 * If @p bev is the top of a strata stack, the filters are added on top of
 * its existing layers mid-stream (STARTTLS): output already written is first
 * moved below the new layers, input not yet read by the user is handed to the
 * new layers, and the same @p bev is returned.
 *
 * Otherwise @p bev (a socket, a pipe, a bufferevent_pair, any bufferevent)
 * becomes the transport of a new stack and the new top is returned. Do not
 * set callbacks on @p bev or enable/disable it afterwards: the stack owns it.
 * With BEV_OPT_CLOSE_ON_FREE the transport is freed with the top (and closes
 * its fd if it was itself created with BEV_OPT_CLOSE_ON_FREE); without it the
 * transport survives the top and is handed back without strata's callbacks.
 *
 * @param bev the bufferevent to build on
 * @param filters a filter list, e.g. "lines(max=8192) | frames"
 * @param options BEV_OPT_* for a new top, optionally | STRATA_OPT_SERVER
 * @param err filled on failure (may be NULL)
 * @return the top, or NULL on error (nothing changed, nothing leaked)
 */
STRATA_API struct bufferevent *strata_push(struct bufferevent *bev,
    const char *filters, int options, struct strata_error *err);

/** Return nonzero if @p bev is the top of a strata stack. */
STRATA_API int strata_is_stack(struct bufferevent *bev);

/**
 * The bottom bufferevent (transport) of a stack, or NULL if @p top is not a
 * stack: @p top itself for a direct stack (strata_connect() and
 * strata_listen() over the built-in transports, whose top is the
 * transport's socket bufferevent). Read its state; never set its
 * callbacks.
 */
STRATA_API struct bufferevent *strata_transport(struct bufferevent *top);

/**
 * Set the event priority of a whole stack: the transport's read and write
 * events (and its deferred callbacks) and the top's. bufferevent_priority_set()
 * refuses the top, a filter bufferevent. With event_base_priority_init()
 * and event_config_set_max_dispatch_interval() this lets handshakes run
 * ahead of bulk data (what `strata proxy` does): give a new stack a high
 * priority and lower it on BEV_EVENT_CONNECTED.
 *
 * @return 0, or -1 if @p top is not a stack, @p priority is out of range,
 *         or an event was active at that moment (libevent cannot move it;
 *         the others are set)
 */
STRATA_API int strata_priority_set(struct bufferevent *top, int priority);

/**
 * Bytes written to @p top that have not reached the transport's fd yet:
 * the top's output plus what the layers and the wire buffer hold, in the
 * encodings of the layers holding them. 0 once everything written was
 * handed to the fd; (size_t)-1 if @p top is not a stack.
 */
STRATA_API size_t strata_unsent(struct bufferevent *top);

/**
 * The last error raised on the stack (a plugin error, truncation, a
 * transport error), or NULL if none. The string lives as long as the stack.
 */
STRATA_API const char *strata_last_error(struct bufferevent *top);

/** Copy the last error of the stack into @p err; returns 0 if there is none. */
STRATA_API int strata_get_error(struct bufferevent *top,
    struct strata_error *err);

/**
 * Called when strata_close() has finished.
 * @param delivered 1 if every byte written reached the transport's kernel
 *        buffer and its write side was shut down, 0 if the linger limit
 *        expired or an error occurred first
 */
typedef void (*strata_close_fn)(int delivered, void *arg);

/**
 * Graceful end: stop delivering callbacks to the user, run BEV_FINISHED
 * through every output side (zlib end marker, TLS close_notify), wait until
 * the transport's output has drained, shut down its write side, wait for the
 * peer's EOF (so unread input cannot turn into a reset that destroys data in
 * flight), then free the stack. Gives up after @p linger (NULL: 30 seconds).
 * The top must not be used after this call, except from @p cb: it runs
 * just before the stack is freed, so it may still read strata_stats(),
 * strata_stats_format(), strata_last_error() and strata_peer_address() of
 * @p top (and nothing else). @p cb may be NULL.
 * @return 0, or -1 if @p top is not a stack
 */
STRATA_API int strata_close(struct bufferevent *top,
    const struct timeval *linger, strata_close_fn cb, void *arg);

/**
 * Timeouts for the top, with libevent's meaning: @p rd fires
 * BEV_EVENT_TIMEOUT|BEV_EVENT_READING when reading is enabled and no byte
 * arrived from the peer for that long; @p wr fires
 * BEV_EVENT_TIMEOUT|BEV_EVENT_WRITING when output is pending and none could
 * be sent for that long. A writer with nothing to write never times out.
 * The direction that timed out is disabled on the top; bufferevent_enable()
 * resumes it. NULL clears a timeout.
 *
 * Use this instead of bufferevent_set_timeouts() on the top: libevent's
 * generic timeouts on filter bufferevents fire while idle (libevent #67) and
 * ignore bytes a filter consumes.
 */
STRATA_API int strata_set_timeouts(struct bufferevent *top,
    const struct timeval *rd, const struct timeval *wr);

/**
 * Token-bucket rate limit for the stack, counted in wire bytes. Use this
 * instead of bufferevent_set_rate_limit() on the top, which libevent accepts
 * on filter bufferevents and ignores. NULL removes the limit. The
 * configuration must outlive the stack (as with libevent).
 */
STRATA_API int strata_set_rate_limit(struct bufferevent *top,
    struct ev_token_bucket_cfg *cfg);

/** Add the stack's transport to a libevent rate-limit group (NULL: remove). */
STRATA_API int strata_set_rate_limit_group(struct bufferevent *top,
    struct bufferevent_rate_limit_group *group);

/** Byte counters of one layer. Layer 0 is the transport. */
struct strata_layer_stats {
	const char *name;      /**< filter or transport name */
	uint64_t read_in;      /**< input side: bytes taken from below */
	uint64_t read_out;     /**< input side: bytes handed up */
	uint64_t write_in;     /**< output side: bytes taken from above */
	uint64_t write_out;    /**< output side: bytes handed down */
};

/**
 * Per-layer statistics. Fills up to @p n entries of @p out, transport first,
 * then each filter from the wire up. Returns the number of layers in the
 * stack (which may be more than @p n), or -1 if @p top is not a stack.
 */
STRATA_API int strata_stats(struct bufferevent *top,
    struct strata_layer_stats *out, size_t n);

/**
 * A layer's own details (a compression ratio, a TLS cipher) as text:
 * "key=value key=value". Returns the length written (snprintf rules), or
 * -1 if there is no such layer. Index 0 is the transport.
 */
STRATA_API int strata_layer_describe(struct bufferevent *top, int index,
    char *buf, size_t len);

/**
 * Format a whole stack's statistics, one line per layer, into @p buf.
 * Returns the length written (snprintf rules) or -1.
 */
STRATA_API int strata_stats_format(struct bufferevent *top, char *buf,
    size_t len);

/* ---- transports: connect and listen ---- */

struct evdns_base;
struct sockaddr;
struct strata_listener;
struct strata_stack;

/**
 * Build a stack from a stack string and connect it:
 * `"tcp://example.com:443 | lines"`, `"unix:/run/app.sock"`,
 * `"unix:@abstract"`, `"pipe:stdio"`, `"pipe:3,4"`, `"exec:cat -n"`.
 *
 * Returns the top at once; the connection completes in the background and
 * BEV_EVENT_CONNECTED reaches the top when the whole stack is ready (data
 * written before that is queued). Connection failures (refused, host not
 * found with the resolver's reason, timeout, permission denied) arrive as
 * BEV_EVENT_ERROR with the message in strata_last_error(). Errors that can
 * be known at once (a malformed stack string, an unknown transport, a
 * command that does not exist) return NULL with @p err filled.
 *
 * @param dns evdns base for resolving host names; NULL makes a private
 *        resolver for this connection from /etc/resolv.conf
 * @param options BEV_OPT_* for the top (and the transport)
 */
STRATA_API struct bufferevent *strata_connect(struct event_base *base,
    struct evdns_base *dns, const char *stack, int options,
    struct strata_error *err);

/**
 * A connecting stack string parsed once, for many connections: the parse,
 * the transport's and every filter's configuration (a TLS context, its
 * certificate and CA files) are shared by every strata_stack_connect().
 * strata_connect() is strata_stack_new(), strata_stack_connect() and
 * strata_stack_free() in one. A parsed stack may be used from several
 * threads at once. NULL with @p err filled on a bad string or file.
 */
STRATA_API struct strata_stack *strata_stack_new(const char *stack,
    struct strata_error *err);

/** Connect with @p stack, as strata_connect() does with a string. */
STRATA_API struct bufferevent *strata_stack_connect(struct strata_stack *stack,
    struct event_base *base, struct evdns_base *dns, int options,
    struct strata_error *err);

/** Take one more reference (strata_stack_free() drops one). */
STRATA_API void strata_stack_ref(struct strata_stack *stack);

/** Drop a reference; the last one frees it (stacks built from it keep what
 * they use). */
STRATA_API void strata_stack_free(struct strata_stack *stack);

/**
 * Called with the top of each accepted connection's stack, already built;
 * the callee owns it (set callbacks, enable, free).
 */
typedef void (*strata_accept_fn)(struct strata_listener *listener,
    struct bufferevent *top, void *arg);

/**
 * Listen on `tcp://host:port` (host may be empty, 0.0.0.0 or [::]; port 0
 * picks a free port), `unix:/path` or `unix:@name`, and build the stack's
 * filters on every accepted connection (in the server role). Accept errors
 * such as EMFILE pause accepting briefly instead of killing the listener.
 * @return the listener, or NULL with @p err filled (address in use, a unix
 *         path that is not a stale socket, a missing directory, ...)
 */
STRATA_API struct strata_listener *strata_listen(struct event_base *base,
    const char *stack, int options, strata_accept_fn cb, void *arg,
    struct strata_error *err);

/**
 * Stop accepting, close the socket, remove a unix socket file. NULL ok.
 * Call it from the thread that runs the listener's base. With
 * strata_listener_spread(), a connection already on its way to a worker is
 * closed there (as those still in the kernel's accept queue are), except
 * one whose stack is being built at that moment, which still reaches the
 * callback (the listener pointer stays valid for that call).
 */
STRATA_API void strata_listener_free(struct strata_listener *listener);

/**
 * Parse the listener's stack string again and build new connections from
 * the result: a tls layer reads its certificate, key, CA and ticket files
 * again (new ticket keys, unless tickets= names a file, so sessions made
 * before do not resume). Connections already accepted keep what they were
 * built with. If the string no longer parses (a file is missing, a key
 * does not match its certificate), nothing changes and @p err says why.
 * The transport part is not reopened: the socket stays as it is.
 *
 * Thread-safe: may run in any thread, while the listener and its workers
 * accept. Parsing (reading the files) runs in the caller's thread.
 * @return 0, or -1 with @p err filled
 */
STRATA_API int strata_listener_reload(struct strata_listener *listener,
    struct strata_error *err);

/**
 * Spread a listener's connections over other event loops (worker
 * threads): the listener's own base accepts, and each connection is handed
 * to the next of @p bases in turn, where its stack is built and the accept
 * callback runs (bufferevent_get_base() on the top tells which one). One
 * socket and one parsed stack (one TLS context, so session tickets work on
 * every worker) serve all of them, for every transport that can listen.
 *
 * libevent's threading must be on (evthread_use_pthreads()) before the
 * bases are made. Call from the listener's thread; each of @p bases must
 * keep running until the listener is freed and the connections handed to
 * it are done. @p n == 0 accepts in the listener's base again.
 * @return 0, or -1 with @p err filled
 */
STRATA_API int strata_listener_spread(struct strata_listener *listener,
    struct event_base *const *bases, size_t n, struct strata_error *err);

/**
 * The bound address of a listener (the chosen port after port 0), as text
 * ("127.0.0.1:40123", "[::1]:80", "unix:/path") and, if @p sa is not NULL,
 * as a sockaddr. Returns the text length or -1.
 */
STRATA_API int strata_listener_address(struct strata_listener *listener,
    char *buf, size_t len, struct sockaddr *sa, int *salen);

/** The bound TCP port of a listener, or -1. */
STRATA_API int strata_listener_port(struct strata_listener *listener);

/**
 * The peer of a stack as text ("192.0.2.1:443", "[::1]:80",
 * "unix:/run/app.sock", "pipe:stdio", "exec:cat (pid 123)") and, where
 * there is one, as a sockaddr. Returns the text length, or -1 if @p top is
 * not a stack or the transport has no peer address yet.
 */
STRATA_API int strata_peer_address(struct bufferevent *top, char *buf,
    size_t len, struct sockaddr *sa, int *salen);

/** Credentials of a unix-socket peer (SO_PEERCRED). 0, or -1 if unknown. */
STRATA_API int strata_peer_credentials(struct bufferevent *top, int *pid,
    int *uid, int *gid);

/**
 * Exit status of an exec: child as waitpid() reports it, -1 while it runs,
 * -2 if the transport is not exec:.
 */
STRATA_API int strata_exit_status(struct bufferevent *top);

/**
 * Replace the allocator of strata and its built-in plugins (zlib's states
 * included), like libevent's event_set_mem_functions(): call it before
 * any other strata function, with all three functions, or with three NULLs
 * for the C library's. libevent and OpenSSL allocate through their own
 * (event_set_mem_functions(), CRYPTO_set_mem_functions()). A NULL from
 * @p malloc_fn is an allocation failure: it ends in an error at the API
 * or an error event, never a crash.
 */
STRATA_API void strata_set_mem_functions(void *(*malloc_fn)(size_t),
    void *(*realloc_fn)(void *, size_t), void (*free_fn)(void *));

/** Library version text. */
STRATA_API const char *strata_version(void);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
