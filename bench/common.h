/* What the benchmark programs share: clocks, medians, the generated text. */
#ifndef STRATA_BENCH_COMMON_H
#define STRATA_BENCH_COMMON_H

#include <stddef.h>
#include <time.h>

/* Seconds on clock @p id (CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID). */
double bench_clock_s(clockid_t id);

/* The median of @p n values (at most 64; @p v is not reordered). */
double bench_median(const double *v, int n);

/*
 * Real-looking text: lines of 10..200 bytes ("\n" included; half uniform,
 * half skewed short, like a mix of log and protocol lines) made of common
 * words and log tokens, the same bytes on every run. At least @p want
 * bytes; the buffer has 256 bytes of slack and is the caller's to free.
 * @return 0, or -1 when out of memory
 */
struct bench_text {
	char *buf;
	size_t len;
	size_t lines;
};
int bench_text_make(struct bench_text *t, size_t want);

#endif
