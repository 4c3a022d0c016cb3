/* What the benchmark programs share: clocks, medians, the generated text. */
#include "common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MEDIAN_MAX 64

double
bench_clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double
bench_median(const double *v, int n)
{
	double s[MEDIAN_MAX];

	if (n <= 0)
		return 0;
	if (n > MEDIAN_MAX)
		n = MEDIAN_MAX;
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static uint64_t
rnd(uint64_t *s)
{
	/* xorshift64*: deterministic, so every run sends the same text */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* clang-format off */
static const char *const words[] = {
	"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as",
	"was", "with", "be", "by", "on", "not", "he", "this", "are", "or",
	"his", "from", "at", "which", "but", "have", "an", "had", "they",
	"you", "were", "their", "one", "all", "we", "can", "her", "has",
	"there", "been", "if", "more", "when", "will", "would", "who", "so",
	"connection", "request", "GET", "POST", "/api/v1/users", "200", "404",
	"user_id=4711", "latency=12ms", "INFO", "WARN", "ERROR", "2024-05-17",
	"12:03:44.512", "server", "client", "session", "timeout", "bytes",
	"received", "sent", "retry", "cache", "miss", "hit", "upstream",
	"\"Mozilla/5.0\"", "-", "[worker:3]", "queue", "depth=17", "ok",
};
/* clang-format on */

static size_t
line_len(uint64_t *s)
{
	uint64_t a = rnd(s) % 191, b = rnd(s) % 191;

	return 10 + (size_t)(rnd(s) & 1 ? a : a * b / 190);
}

int
bench_text_make(struct bench_text *t, size_t want)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	size_t off = 0;

	if (!(t->buf = malloc(want + 256)))
		return -1;
	t->lines = 0;
	while (off < want) {
		size_t n = line_len(&s), w = 0;
		while (w + 1 < n) {
			const char *word =
			    words[rnd(&s) % (sizeof(words) / sizeof(*words))];
			size_t k = strlen(word);
			if (w)
				t->buf[off + w++] = ' ';
			if (k > n - 1 - w)
				k = n - 1 - w;
			memcpy(t->buf + off + w, word, k);
			w += k;
		}
		t->buf[off + n - 1] = '\n';
		off += n;
		t->lines++;
	}
	t->len = off;
	return 0;
}
