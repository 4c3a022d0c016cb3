/* Helpers for the tests that run the example frames filter over a
 * transport (test-transport-*): built into those programs only, next to
 * examples/frames.c. */
#ifndef STRATA_TEST_FRAMES_HELPERS_H
#define STRATA_TEST_FRAMES_HELPERS_H

#include <stddef.h>

#include "helpers.h"

/* One frame's payload. */
struct th_frame {
	const void *data;
	size_t len;
};

/* Write the @p n frames @p f on @p c (its stack ends in frames, its
 * other end echoes), wait until as many bytes came back, and check that
 * exactly those frames did, in order. */
void th_frames_echo(struct event_base *base, struct th_peer *c,
    const struct th_frame *f, size_t n);

#endif
