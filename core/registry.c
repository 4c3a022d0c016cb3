/*
 * The filter registry (built-in types first, then up to 64 user types,
 * looked up by name) and the option-value helpers plugins use in config().
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define REGISTRY_MAX 80

static const struct strata_filter_type *registry[REGISTRY_MAX];
static size_t registry_n;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static const struct strata_filter_type *const builtins[] = {
	&strata_lines_filter_,
};

static void
builtin_register(void)
{
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(builtins); i++)
		registry[registry_n++] = builtins[i];
}

void
strata_builtin_init_(void)
{
	pthread_once(&builtin_once, builtin_register);
}

static int
name_valid(const char *name)
{
	size_t i;

	if (!name || !name[0] || strlen(name) > 32)
		return 0;
	for (i = 0; name[i]; i++)
		if (!islower((unsigned char)name[i]) &&
		    !isdigit((unsigned char)name[i]) && name[i] != '-' &&
		    name[i] != '_')
			return 0;
	return 1;
}

static const struct strata_filter_type *
find_locked(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < registry_n; i++)
		if (strlen(registry[i]->name) == len &&
		    !memcmp(registry[i]->name, name, len))
			return registry[i];
	return NULL;
}

int
strata_register_filter(const struct strata_filter_type *type,
    struct strata_error *err)
{
	int rc = -1;

	strata_builtin_init_();
	if (!type || !name_valid(type->name) || !type->input ||
	    !type->output) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: filter type needs a name of [a-z0-9_-] "
		    "(at most 32) and both filter functions");
		return -1;
	}
	pthread_mutex_lock(&registry_lock);
	if (find_locked(type->name, strlen(type->name)))
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: a filter named '%s' already exists",
		    type->name);
	else if (registry_n == REGISTRY_MAX)
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: the registry is full (%d types)", REGISTRY_MAX);
	else {
		registry[registry_n++] = type;
		rc = 0;
	}
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

const struct strata_filter_type *
strata_find_filter_n_(const char *name, size_t len)
{
	const struct strata_filter_type *t;

	strata_builtin_init_();
	pthread_mutex_lock(&registry_lock);
	t = find_locked(name, len);
	pthread_mutex_unlock(&registry_lock);
	return t;
}

const struct strata_filter_type *
strata_find_filter(const char *name)
{
	return name ? strata_find_filter_n_(name, strlen(name)) : NULL;
}

size_t
strata_list_filters(const struct strata_filter_type **out, size_t n)
{
	size_t i, total;

	strata_builtin_init_();
	pthread_mutex_lock(&registry_lock);
	total = registry_n;
	for (i = 0; i < n && i < total; i++)
		out[i] = registry[i];
	pthread_mutex_unlock(&registry_lock);
	return total;
}

/* ---- option helpers ---- */

static int
bad_value(const char *filter, const struct strata_option *opt,
    struct strata_error *err, const char *expected)
{
	strata_error_set(err, STRATA_ERR_OPTION,
	    "%s: bad value '%s' for %s: expected %s", filter, opt->value,
	    opt->key, expected);
	if (err)
		err->position = opt->position;
	return -1;
}

static int
suffix_shift(const char *s, unsigned *shift)
{
	if (!*s)
		*shift = 0;
	else if (!strcasecmp(s, "k") || !strcasecmp(s, "kb") ||
	    !strcasecmp(s, "kib"))
		*shift = 10;
	else if (!strcasecmp(s, "m") || !strcasecmp(s, "mb") ||
	    !strcasecmp(s, "mib"))
		*shift = 20;
	else if (!strcasecmp(s, "g") || !strcasecmp(s, "gb") ||
	    !strcasecmp(s, "gib"))
		*shift = 30;
	else
		return -1;
	return 0;
}

int
strata_opt_uint(const char *filter, const struct strata_option *opt,
    uint64_t min, uint64_t max, int allow_suffix, uint64_t *out,
    struct strata_error *err)
{
	char expected[96];
	const char *v = opt->value;
	char *end = NULL;
	unsigned long long x;
	unsigned shift = 0;

	snprintf(expected, sizeof(expected), "an integer from %" PRIu64
	    " to %" PRIu64 "%s", min, max,
	    allow_suffix ? " (k, M, G suffixes allowed)" : "");
	if (!isdigit((unsigned char)v[0]))
		return bad_value(filter, opt, err, expected);
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || (allow_suffix ? suffix_shift(end, &shift) : *end != 0))
		return bad_value(filter, opt, err, expected);
	if (shift && x > (UINT64_MAX >> shift))
		return bad_value(filter, opt, err, expected);
	x <<= shift;
	if (x < min || x > max)
		return bad_value(filter, opt, err, expected);
	*out = x;
	return 0;
}

int
strata_opt_enum(const char *filter, const struct strata_option *opt,
    const char *const *names, int *out, struct strata_error *err)
{
	char expected[160] = "one of ";
	size_t len = strlen(expected);
	int i;

	for (i = 0; names[i]; i++) {
		if (!strcmp(opt->value, names[i])) {
			*out = i;
			return 0;
		}
	}
	for (i = 0; names[i] && len < sizeof(expected) - 1; i++)
		len += (size_t)snprintf(expected + len, sizeof(expected) - len,
		    "%s%s", i ? ", " : "", names[i]);
	return bad_value(filter, opt, err, expected);
}

int
strata_opt_bool(const char *filter, const struct strata_option *opt,
    int *out, struct strata_error *err)
{
	static const char *const names[] = {"no", "yes", "false", "true",
	    "off", "on", "0", "1", NULL};
	int i;

	if (strata_opt_enum(filter, opt, names, &i, err) < 0)
		return -1;
	*out = i & 1;
	return 0;
}
