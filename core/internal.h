/*
 * Internal interfaces shared by the files of core/ and the built-in plugins.
 * Names ending in '_' are cross-file helpers, never exported.
 */
#ifndef STRATA_INTERNAL_H
#define STRATA_INTERNAL_H

#include <stdarg.h>
#include <sys/socket.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/* Allocations of strata and its built-in plugins (core/mem.c): through
 * the functions of strata_set_mem_functions(). */
void *strata_malloc_(size_t n);
void *strata_calloc_(size_t n, size_t size);
void *strata_realloc_(void *p, size_t n);
void strata_free_(void *p);
char *strata_strdup_(const char *s);
char *strata_strndup_(const char *s, size_t max);

/** One filter of a parsed stack string, with its validated configuration. */
struct strata_spec_filter {
	const struct strata_filter_type *type;
	void *cfg;
};

/**
 * A parsed stack string. Reference counted: a listener shares one spec with
 * every connection it accepts; each layer holds a reference.
 */
struct strata_spec {
	int refcnt;
	char *transport; /* transport part as written, or NULL */
	size_t transport_pos;
	size_t n;
	struct strata_spec_filter f[];
};

/**
 * Parse a stack string. With @p want_transport the first element must be a
 * transport address (kept as text in spec->transport); without it the string
 * is a filter list only. Returns a spec with one reference, or NULL with
 * @p err filled (position, what was expected).
 */
struct strata_spec *strata_spec_parse_(const char *s, int want_transport,
    struct strata_error *err);
void strata_spec_ref_(struct strata_spec *spec);
void strata_spec_unref_(struct strata_spec *spec);

/** Format into err with a va_list; code and message. */
void strata_error_vset_(struct strata_error *err, enum strata_error_code code,
    const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

/**
 * Replace control characters in @p s with '?'. Messages quote stack
 * strings, file names and what a peer sent (a certificate's names): they
 * go to terminals and logs, where an escape sequence or a newline from
 * the network must not arrive as such.
 */
void strata_text_clean_(char *s);

/** Log a warning line to stderr ("strata: ..."). */
void strata_warn_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Prefix err->message with "<prefix>: " unless it already starts so. */
void strata_error_prefix_(struct strata_error *err, const char *prefix);

/** Look a filter type up by a name that is not NUL-terminated. */
const struct strata_filter_type *strata_find_filter_n_(const char *name,
    size_t len);

/* ---- building a stack: alloc, (transport connects), build ---- */

struct strata_engine;

/** What strata_engine_build_() needs besides the transport and spec. */
struct strata_build {
	enum strata_role role;
	int connected;	   /* the transport is connected: start the layers */
	int announce;	   /* and raise BEV_EVENT_CONNECTED from the loop */
	int own_transport; /* free the transport with the top */
	const struct strata_transport_type *tport; /* NULL for strata_push */
	void *tstate;	   /* the transport's per-connection state */
};

/** An engine not yet built; its strata_conn can be given to transports. */
struct strata_engine *strata_engine_alloc_(struct event_base *base,
    struct evdns_base *dns, int options);
struct strata_conn *strata_engine_conn_(struct strata_engine *e);

/** Free an engine that was never built (the caller keeps tstate). */
void strata_engine_discard_(struct strata_engine *e);

/**
 * Build the stack over @p transport: a filter bufferevent whose filter
 * functions run the engine, interposed on the transport. On failure the
 * engine is discarded, the transport and b->tstate are left to the caller,
 * and NULL is returned with @p err filled.
 */
struct bufferevent *strata_engine_build_(struct strata_engine *e,
    struct bufferevent *transport, struct strata_spec *spec,
    const struct strata_build *b, struct strata_error *err);

/**
 * The accept callback that got @p top (built with b->announce) returned:
 * announce the stack again if the callback disabled reading on the top,
 * which deletes the pending announcement (be_filter_disable deletes the
 * top's ev_read). Nothing if the callback freed the top.
 */
void strata_engine_accepted_(struct bufferevent *top);

/**
 * A transport no longer wants the lookup @p req it started on
 * strata_conn_dns(@p c). Its callback still runs once, later (with
 * EVUTIL_EAI_CANCEL or an error), and must then only free what its
 * argument holds: the transport's state may be gone.
 */
struct evdns_getaddrinfo_request;
void strata_conn_dns_abandon_(struct strata_conn *c,
    struct evdns_getaddrinfo_request *req);

/** Format a socket address: "1.2.3.4:80", "[::1]:80", "unix:/p",
 * "unix:@name". snprintf rules. */
int strata_format_sockaddr_(const struct sockaddr *sa, socklen_t len,
    char *buf, size_t buflen);

/** Hand an address out: copy it to @p sa (if room) and format it. */
int strata_sockaddr_out_(const struct sockaddr *ss, socklen_t sl, char *buf,
    size_t len, struct sockaddr *sa, int *salen);

/**
 * Resolve the transport part of a parsed stack string: find the type by
 * scheme, parse "(options)" after the address, and run its config().
 */
int strata_transport_config_(const struct strata_spec *spec,
    const struct strata_transport_type **type, void **cfg,
    struct strata_error *err);

/** The transport state of @p top if its transport type is @p t. */
void *strata_transport_state_(struct bufferevent *top,
    const struct strata_transport_type *t);

/* How much strata's read path may add to a stack transport's input
 * (TRANSPORT_RD_HIGH minus what it holds; 0 parks reading), or -1 for a
 * bufferevent that is no stack's transport. */
ev_ssize_t strata_transport_read_cap_(struct bufferevent *transport);
/** The fast read path read @p n bytes on a transport: charge its group. */
void strata_transport_read_charged_(struct bufferevent *transport,
    ev_ssize_t n);

/* ---- direct stacks: the transport's socket bufferevent is the top ---- */

/**
 * Read what @p fd has, up to @p howmuch (FIONREAD sizes the reservation),
 * into @p in. 1 if bytes were read, 0 on EOF, -1 with errno on error.
 */
int strata_wire_read_(struct evbuffer *in, evutil_socket_t fd,
    ev_ssize_t howmuch);

/** Let strata_engine_build_() make @p e direct if its transport allows. */
void strata_engine_allow_direct_(struct strata_engine *e,
    const struct strata_transport_type *t);

/** Options a built-in transport adds to its socket bufferevent: the
 * user's callback options when the stack will be direct, else none. */
int strata_conn_bev_options_(struct strata_conn *c);

/** 1 if @p bev is the top of a direct stack. */
int strata_bev_is_direct_(struct bufferevent *bev);

/**
 * Connect the socket of @p bev to @p sa (or, with @p sa NULL, wait for the
 * connect() the caller started on its fd), reporting BEV_EVENT_CONNECTED
 * or BEV_EVENT_ERROR to the engine: bufferevent_socket_connect() for a
 * stack over a separate transport, strata's own for a direct stack.
 * 0, or -1 with errno when the connect failed at once.
 */
int strata_socket_connect_(struct strata_conn *c, struct bufferevent *bev,
    const struct sockaddr *sa, int salen);

/** A transport's event (BEV_EVENT_CONNECTED, ...) for the engine. */
void strata_conn_event_(struct strata_conn *c, short what);

/** Register the built-in filters once (idempotent, thread-safe). */
void strata_builtin_init_(void);

/** Look a transport type up by a scheme that is not NUL-terminated. */
const struct strata_transport_type *strata_find_transport_n_(
    const char *name, size_t len);

extern const struct strata_filter_type strata_lines_filter_;
extern const struct strata_filter_type strata_zlib_filter_;
extern const struct strata_filter_type strata_tls_filter_;
extern const struct strata_transport_type strata_tcp_transport_;
extern const struct strata_transport_type strata_unix_transport_;
extern const struct strata_transport_type strata_pipe_transport_;
extern const struct strata_transport_type strata_exec_transport_;

#define STRATA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* STRATA_INTERNAL_H */
