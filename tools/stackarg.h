/*
 * Stack strings from the command line with the tool's defaults added:
 * --connect-timeout becomes tcp's timeout= and --handshake-timeout tls's
 * handshake-timeout=, unless the string sets them itself (it wins).
 */
#ifndef STRATA_TOOL_STACKARG_H
#define STRATA_TOOL_STACKARG_H

#include <stddef.h>
#include <stdint.h>

#include "strata/strata.h"

#define STACKARG_MAX_INSERTS 40

/** A stack string as the user wrote it and as the tool passes it on. */
struct stackarg {
	const char *orig;	/* as written (not owned) */
	char *s;		/* with the defaults (malloc'd) */
	size_t n;		/* insertions, in s's coordinates: */
	size_t at[STACKARG_MAX_INSERTS], len[STACKARG_MAX_INSERTS];
};

/**
 * Add the defaults to @p orig: timeout=@p connect_ms on a tcp transport
 * when @p connecting (0: none), handshake-timeout=@p handshake_ms on every
 * tls filter (0: none). A string the scan does not understand is passed on
 * from there as written: the library's parser then reports the error.
 * @return 0, or -1 when out of memory
 */
int stackarg_init(struct stackarg *a, const char *orig, int connecting,
    uint64_t connect_ms, uint64_t handshake_ms);

void stackarg_clear(struct stackarg *a);

/** The filter list of a->s (after the transport's '|'), or NULL. */
const char *stackarg_filters(const struct stackarg *a);

/**
 * An error from parsing a->s (or, with @p offset, the part of it from
 * a->s + offset on), told about a->orig: the position, the "position N"
 * numbers in the message and its "(near '...')" text.
 */
void stackarg_fix_error(const struct stackarg *a, size_t offset,
    struct strata_error *err);

#endif
