/*
 * strata's own allocations go through the functions set here, so that an
 * application (or a test failing the Nth allocation) can replace them, as
 * libevent's event_set_mem_functions() and OpenSSL's
 * CRYPTO_set_mem_functions() allow for theirs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *(*mem_malloc)(size_t) = malloc;
static void *(*mem_realloc)(void *, size_t) = realloc;
static void (*mem_free)(void *) = free;

void
strata_set_mem_functions(void *(*malloc_fn)(size_t),
    void *(*realloc_fn)(void *, size_t), void (*free_fn)(void *))
{
	if (malloc_fn && realloc_fn && free_fn) {
		mem_malloc = malloc_fn;
		mem_realloc = realloc_fn;
		mem_free = free_fn;
	} else {
		mem_malloc = malloc;
		mem_realloc = realloc;
		mem_free = free;
	}
}

void *
strata_malloc_(size_t n)
{
	/* malloc(0) may return NULL, which callers would take for failure */
	return mem_malloc(n ? n : 1);
}

void *
strata_calloc_(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	if ((p = strata_malloc_(n * size)) != NULL)
		memset(p, 0, n * size);
	return p;
}

void *
strata_realloc_(void *p, size_t n)
{
	return mem_realloc(p, n ? n : 1);
}

void
strata_free_(void *p)
{
	if (p)
		mem_free(p);
}

char *
strata_strndup_(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	char *d = strata_malloc_(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

char *
strata_strdup_(const char *s)
{
	/* not strata_strndup_(s, SIZE_MAX): gcc 12 -O3 inlines it and
	 * rejects strnlen with that bound (-Werror=stringop-overread) */
	size_t n = strlen(s);
	char *d = strata_malloc_(n + 1);

	if (d)
		memcpy(d, s, n + 1);
	return d;
}
