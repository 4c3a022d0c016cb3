/* Shared test helpers: socketpairs, bounded loops, byte patterns. */
#ifndef STRATA_TEST_HELPERS_H
#define STRATA_TEST_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/* A nonblocking AF_UNIX socketpair; aborts the test on failure. */
void th_socketpair(int fds[2]);

/* Run @p base until *done is nonzero or @p ms milliseconds passed; fails
 * the test with @p what if the time runs out. */
void th_run_until(struct event_base *base, const int *done, int ms,
    const char *what);

/* Run the loop for @p ms milliseconds. */
void th_run_for(struct event_base *base, int ms);

/* Fill @p buf with a deterministic pattern starting at stream offset @p off. */
void th_pattern(unsigned char *buf, size_t len, size_t off);

/* Whether the program runs under valgrind (its preload library is in
 * LD_PRELOAD): memcheck runs zlib and OpenSSL tens of times slower, so the
 * bulk tests move less there (every path is still crossed many times). */
int th_under_valgrind(void);

/* @p n, or @p small under valgrind. */
size_t th_scaled(size_t n, size_t small);

/* Count open file descriptors of this process. */
int th_count_fds(void);

/* Register the test filters once: "rot13" (both sides), "guard" (fails on
 * '!'), "spin" (returns BEV_OK without progress), "hold" (delivers input one
 * byte per call). */
void th_register_test_filters(void);

#endif
