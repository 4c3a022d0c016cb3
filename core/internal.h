/*
 * Internal interfaces shared by the files of core/ and the built-in plugins.
 * Names ending in '_' are cross-file helpers, never exported.
 */
#ifndef STRATA_INTERNAL_H
#define STRATA_INTERNAL_H

#include <stdarg.h>

#include "strata/plugin.h"
#include "strata/strata.h"

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

/** Prefix err->message with "<prefix>: " unless it already starts so. */
void strata_error_prefix_(struct strata_error *err, const char *prefix);

/** Look a filter type up by a name that is not NUL-terminated. */
const struct strata_filter_type *strata_find_filter_n_(const char *name,
    size_t len);

/**
 * Build a new stack over @p transport: a filter bufferevent whose filter
 * functions run the engine, interposed on the transport. @p connected says
 * whether the transport is already connected (layers start at once). On
 * failure nothing is changed and NULL is returned with @p err filled.
 */
struct bufferevent *strata_engine_new_(struct bufferevent *transport,
    struct strata_spec *spec, int options, enum strata_role role,
    int connected, struct strata_error *err);

/** Register the built-in filters once (idempotent, thread-safe). */
void strata_builtin_init_(void);

extern const struct strata_filter_type strata_lines_filter_;

#define STRATA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* STRATA_INTERNAL_H */
