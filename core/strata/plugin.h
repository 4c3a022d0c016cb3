/*
 * strata plugin API: write your own filters.
 *
 * A filter is a const struct strata_filter_type: a name, the options it
 * accepts, create/destroy for its per-connection context, and two functions
 * with libevent's bufferevent_filter_cb signature (so a strata filter also
 * works alone under bufferevent_filter_new()). Register the type once, then
 * name it in stack strings: "tcp://host:7000 | myfilter(key=value)".
 */
#ifndef STRATA_PLUGIN_H
#define STRATA_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "strata/strata.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One `key=value` from a stack string, as written (quotes removed). */
struct strata_option {
	const char *key;
	const char *value;
	size_t position; /**< offset of the key in the stack string */
};

/** Documentation of one accepted option; arrays end with a NULL key. */
struct strata_option_doc {
	const char *key;
	const char *def;  /**< default, as text ("" for none) */
	const char *help; /**< one line */
};

/** The engine's per-layer handle, given to create(). */
struct strata_layer;

/** Sink for a plugin's stats hook; see strata_stat(). */
struct strata_stats_sink;

/** Role of a stack: clients connect, servers accept. */
enum strata_role { STRATA_ROLE_CLIENT = 0, STRATA_ROLE_SERVER = 1 };

/** strata_filter_type::flags: the layer holds BEV_EVENT_CONNECTED back
 *  until it calls strata_layer_ready() (a handshake). */
#define STRATA_FILTER_GATES_CONNECT 0x1

/**
 * A filter plugin. Every slot but name, input and output may be NULL.
 *
 * The engine guarantees to the two filter functions: `src` and `dst` are the
 * buffers on either side of this layer; `dst_limit` is how many bytes may be
 * appended to `dst` (-1: no limit); `mode` is BEV_NORMAL, BEV_FLUSH or
 * BEV_FINISHED (DESIGN section 3). The functions return BEV_OK only after
 * consuming input or producing output (the engine reports an error
 * otherwise), BEV_NEED_MORE when nothing can be done until more input
 * arrives, and BEV_ERROR after strata_layer_fail().
 */
struct strata_filter_type {
	const char *name;	/* name in stack strings: [a-z0-9_-]+ */
	const char *summary;	/* one line, for listings */
	const struct strata_option_doc *options; /* accepted keys */
	unsigned flags;		/* STRATA_FILTER_* */
	/* validate options once per stack string; *cfg is handed to create */
	int (*config)(void **cfg, const struct strata_option *opts, size_t n,
	    struct strata_error *err);
	void (*config_free)(void *cfg); /* frees what config made */
	/* per-connection context; may fail with err filled */
	void *(*create)(const void *cfg, struct strata_layer *layer,
	    struct strata_error *err);
	void (*destroy)(void *ctx);	/* frees what create made */
	bufferevent_filter_cb input;	/* wire -> application */
	bufferevent_filter_cb output;	/* application -> wire */
	void (*start)(void *ctx);	/* the layer below is connected */
	void (*stats)(const void *ctx, struct strata_stats_sink *sink);
};

/**
 * Register a filter type so stack strings can name it. The type must stay
 * valid for the life of the process. Fails if the name is malformed or
 * taken, or the registry (64 user types) is full.
 * @return 0 or -1 with @p err filled
 */
STRATA_API int strata_register_filter(const struct strata_filter_type *type,
    struct strata_error *err);

/** Look a filter type up by name; NULL if unknown. */
STRATA_API const struct strata_filter_type *strata_find_filter(
    const char *name);

/**
 * List registered filter types (built-in first). Fills up to @p n entries of
 * @p out and returns the total count.
 */
STRATA_API size_t strata_list_filters(const struct strata_filter_type **out,
    size_t n);

/* ---- option parsing helpers, for config() ---- */

/**
 * Parse an unsigned integer within [min, max]; accepts k, M, G suffixes
 * (powers of 1024) when @p allow_suffix. On failure fills @p err with
 * "<filter>: bad value '<v>' for <key>: expected ...".
 */
STRATA_API int strata_opt_uint(const char *filter,
    const struct strata_option *opt, uint64_t min, uint64_t max,
    int allow_suffix, uint64_t *out, struct strata_error *err);

/**
 * Match the value against a NULL-terminated list of names; *out is the
 * index. The error lists the accepted names.
 */
STRATA_API int strata_opt_enum(const char *filter,
    const struct strata_option *opt, const char *const *names, int *out,
    struct strata_error *err);

/** Parse a duration ("500ms", "10s", "2m"; a bare number is seconds)
 * into milliseconds within [min_ms, max_ms]. */
STRATA_API int strata_opt_msec(const char *filter,
    const struct strata_option *opt, uint64_t min_ms, uint64_t max_ms,
    uint64_t *out_ms, struct strata_error *err);

/** Parse yes/no/true/false/on/off/1/0. */
STRATA_API int strata_opt_bool(const char *filter,
    const struct strata_option *opt, int *out, struct strata_error *err);

/** Fill @p err (code, printf-style message). Safe with err == NULL. */
STRATA_API void strata_error_set(struct strata_error *err,
    enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the layer handle, for filter functions ---- */

/** The role of the stack this layer is in. */
STRATA_API enum strata_role strata_layer_role(const struct strata_layer *l);

/** The stack's top bufferevent. */
STRATA_API struct bufferevent *strata_layer_top(struct strata_layer *l);

/**
 * The host name or address the stack connected to, as written in the
 * stack string ("example.com" for tcp://example.com:443), for a TLS
 * client's SNI and certificate check; NULL for accepted stacks and
 * transports without a host (unix:, pipe:, exec:, strata_push()).
 */
STRATA_API const char *strata_layer_peer_name(struct strata_layer *l);

/** The event base of the stack. */
STRATA_API struct event_base *strata_layer_base(struct strata_layer *l);

/**
 * The output buffer directly below this layer (the next layer's output side,
 * or the transport's output). A plugin may append to it at any time, from
 * either filter function (handshake records, alerts); the engine sends it on.
 */
STRATA_API struct evbuffer *strata_layer_below(struct strata_layer *l);

/**
 * Tell the engine this layer appended to strata_layer_below() outside its
 * output function (counts as progress; schedules the layers below).
 */
STRATA_API void strata_layer_wrote_below(struct strata_layer *l);

/**
 * Ask the engine to run this stack's output side (and input side) again
 * soon, from the event loop: for a layer that returned BEV_NEED_MORE for a
 * reason that has now cleared (a handshake finished).
 */
STRATA_API void strata_layer_kick(struct strata_layer *l);

/**
 * The stream this layer decodes ended cleanly before the transport's EOF
 * (TLS close_notify). Call it from the input function, which then returns
 * as usual. After the pass, the layers above get BEV_FINISHED (so a zlib
 * above still checks its end marker), the transport is no longer read,
 * and the top gets BEV_EVENT_EOF | BEV_EVENT_READING once, after the data
 * decoded before it; a later transport EOF raises nothing more. The output
 * side stays open (half-close).
 */
STRATA_API void strata_layer_input_end(struct strata_layer *l);

/**
 * Ask for one BEV_FLUSH pass over the output side from the event loop, once
 * the callbacks already due have run: what the user wrote in this turn of
 * the loop is then complete, so a compressor can sync-flush once per burst
 * instead of once per write (zlib's flush=auto). Repeated calls before the
 * pass runs are one request.
 */
STRATA_API void strata_layer_flush_later(struct strata_layer *l);

/**
 * Fail the layer: store "<name>: <message>" as the stack's error. The filter
 * function then returns BEV_ERROR; the engine raises BEV_EVENT_ERROR with
 * READING or WRITING on the top, once, and never calls the layer again.
 * Outside a filter function, this also raises the event itself.
 */
STRATA_API void strata_layer_fail(struct strata_layer *l,
    enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * For STRATA_FILTER_GATES_CONNECT layers: the layer is ready (handshake done,
 * peer verified). BEV_EVENT_CONNECTED reaches the top once every gating layer
 * is ready and the transport is connected.
 */
STRATA_API void strata_layer_ready(struct strata_layer *l);

/* ---- transport plugins ---- */

/** The engine's handle for one transport instance (one connection). */
struct strata_conn;

/**
 * A transport plugin: the bottom of a stack. The stack string names it by
 * its scheme: "tcp://host:port" for name "tcp", "unix:/path" for "unix".
 * Options follow the address in parentheses: "tcp://h:1(nodelay=no)".
 *
 * connect() and accept() return the bottom bufferevent (a socket
 * bufferevent in the built-ins) and may set *state, the per-connection
 * state handed to the other per-connection slots and freed by destroy().
 * A connecting transport raises BEV_EVENT_CONNECTED or BEV_EVENT_ERROR on
 * that bufferevent; event() sees every event of it first and returns 1 to
 * swallow one (e.g. to try the next address).
 */
struct strata_transport_type {
	const char *name;	/* scheme */
	const char *summary;	/* one line, for listings */
	const struct strata_option_doc *options;
	/* parse and validate the address (text after "name:" or
	 * "name://") and options once; *cfg goes to the other slots */
	int (*config)(void **cfg, const char *address,
	    const struct strata_option *opts, size_t n,
	    struct strata_error *err);
	void (*config_free)(void *cfg);
	/* start connecting; NULL if the transport cannot connect */
	struct bufferevent *(*connect)(const void *cfg, struct strata_conn *c,
	    void **state, struct strata_error *err);
	/* open a bound, listening socket (-1 with err on failure); may set
	 * *lstate, handed to unlisten() before the fd is closed */
	evutil_socket_t (*listen)(const void *cfg, void **lstate,
	    struct strata_error *err);
	/* undo what listen() left besides the fd (a socket file); frees
	 * lstate */
	void (*unlisten)(void *lstate);
	/* wrap an accepted fd */
	struct bufferevent *(*accept)(const void *cfg, evutil_socket_t fd,
	    struct strata_conn *c, void **state, struct strata_error *err);
	int (*event)(void *state, short what);	/* 1: swallow the event */
	int (*shutdown_write)(void *state);	/* end the output (half-close) */
	/* peer as text (+ sockaddr where there is one); length or -1 */
	int (*peer)(void *state, char *buf, size_t len, struct sockaddr *sa,
	    int *salen);
	void (*destroy)(void *state);		/* free per-connection state */
	void (*stats)(const void *state, struct strata_stats_sink *sink);
	/* the host a connecting stack was asked to reach, or NULL */
	const char *(*host)(void *state);
};

/** Register a transport type (name: [a-z0-9_-]+, unique). */
STRATA_API int strata_register_transport(
    const struct strata_transport_type *type, struct strata_error *err);

/** Look a transport type up by scheme; NULL if unknown. */
STRATA_API const struct strata_transport_type *strata_find_transport(
    const char *name);

/** List registered transport types; returns the total count. */
STRATA_API size_t strata_list_transports(
    const struct strata_transport_type **out, size_t n);

/** The event base a connection belongs to. */
STRATA_API struct event_base *strata_conn_base(struct strata_conn *c);

/** The resolver for host names (made on first use if the user gave none). */
STRATA_API struct evdns_base *strata_conn_dns(struct strata_conn *c);

/** BEV_OPT_* the stack was built with. */
STRATA_API int strata_conn_options(struct strata_conn *c);

/**
 * Fail the connection with a message ("connection refused", "host not
 * found: ..."): raises BEV_EVENT_ERROR on the top (once) with the message
 * prefixed by the transport name. @p sys_errno may be 0.
 */
STRATA_API void strata_conn_fail(struct strata_conn *c, int sys_errno,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/**
 * Make @p bev read and write efficiently: reads of up to 256 KiB per call
 * (libevent's socket bufferevent reads 4 KiB), writes of up to 256 KiB.
 * Call after every bufferevent_setfd()/bufferevent_socket_connect(), which
 * reset it. With @p wfd >= 0 (a pipe pair), writes go to @p wfd.
 */
STRATA_API int strata_socket_tune(struct bufferevent *bev,
    evutil_socket_t wfd);

/** Add one "key=value" to a stats sink (value printf-style). */
STRATA_API void strata_stat(struct strata_stats_sink *sink, const char *key,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif /* STRATA_PLUGIN_H */
