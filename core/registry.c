/*
 * The registries of filter and transport types (built-in types first, then
 * up to 64 user types of each kind, looked up by name) and the option-value
 * helpers plugins use in config().
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

/* User types of each kind, besides the built-ins (plugin.h promises 64). */
#define USER_MAX 64
#define TABLE_MAX (USER_MAX + 8)

/*
 * One registry. Both type structs start with `const char *name`, so an
 * entry's name is read through a pointer to that first member.
 */
struct table {
	const char *kind;
	const void *items[TABLE_MAX];
	size_t n, builtins;
};

static struct table filters = {.kind = "filter"};
static struct table transports = {.kind = "transport"};
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static const char *
item_name(const void *item)
{
	return *(const char *const *)item;
}

static void
builtin_register(void)
{
	static const void *const f[] = {&strata_lines_filter_,
	    &strata_zlib_filter_, &strata_tls_filter_};
	static const void *const t[] = {&strata_tcp_transport_,
	    &strata_unix_transport_, &strata_pipe_transport_,
	    &strata_exec_transport_};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(f); i++)
		filters.items[filters.n++] = f[i];
	for (i = 0; i < STRATA_ARRAY_LEN(t); i++)
		transports.items[transports.n++] = t[i];
	filters.builtins = filters.n;
	transports.builtins = transports.n;
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

	if (!name || !name[0] || strnlen(name, 33) > 32)
		return 0;
	/* ASCII ranges, as the parser: not <ctype.h>, which follows the
	 * locale */
	for (i = 0; name[i]; i++)
		if (!(name[i] >= 'a' && name[i] <= 'z') &&
		    !(name[i] >= '0' && name[i] <= '9') && name[i] != '-' &&
		    name[i] != '_')
			return 0;
	return 1;
}

static const void *
find_locked(const struct table *t, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (strlen(item_name(t->items[i])) == len &&
		    !memcmp(item_name(t->items[i]), name, len))
			return t->items[i];
	return NULL;
}

static int
table_add(struct table *t, const void *item, struct strata_error *err)
{
	int rc = -1;

	pthread_mutex_lock(&registry_lock);
	if (find_locked(t, item_name(item), strlen(item_name(item))))
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: a %s named '%s' already exists", t->kind,
		    item_name(item));
	else if (t->n == t->builtins + USER_MAX)
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: the %s registry is full (%d user types)",
		    t->kind, USER_MAX);
	else {
		t->items[t->n++] = item;
		rc = 0;
	}
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

static const void *
table_find(const struct table *t, const char *name, size_t len)
{
	const void *item;

	strata_builtin_init_();
	pthread_mutex_lock(&registry_lock);
	item = find_locked(t, name, len);
	pthread_mutex_unlock(&registry_lock);
	return item;
}

static size_t
table_list(const struct table *t, const void **out, size_t n)
{
	size_t i, total;

	strata_builtin_init_();
	pthread_mutex_lock(&registry_lock);
	total = t->n;
	for (i = 0; i < n && i < total; i++)
		out[i] = t->items[i];
	pthread_mutex_unlock(&registry_lock);
	return total;
}

int
strata_register_filter(const struct strata_filter_type *type,
    struct strata_error *err)
{
	strata_builtin_init_();
	if (!type || !name_valid(type->name) || !type->input ||
	    !type->output) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: filter type needs a name of [a-z0-9_-] "
		    "(at most 32) and both filter functions");
		return -1;
	}
	return table_add(&filters, type, err);
}

int
strata_register_transport(const struct strata_transport_type *type,
    struct strata_error *err)
{
	strata_builtin_init_();
	if (!type || !name_valid(type->name) || !type->config ||
	    (!type->connect && !(type->listen && type->accept))) {
		strata_error_set(err, STRATA_ERR_INVALID,
		    "register: transport type needs a name of [a-z0-9_-] "
		    "(at most 32), config() and connect() or "
		    "listen()+accept()");
		return -1;
	}
	return table_add(&transports, type, err);
}

const struct strata_filter_type *
strata_find_filter_n_(const char *name, size_t len)
{
	return table_find(&filters, name, len);
}

const struct strata_filter_type *
strata_find_filter(const char *name)
{
	return name ? strata_find_filter_n_(name, strlen(name)) : NULL;
}

const struct strata_transport_type *
strata_find_transport_n_(const char *name, size_t len)
{
	return table_find(&transports, name, len);
}

const struct strata_transport_type *
strata_find_transport(const char *name)
{
	return name ? strata_find_transport_n_(name, strlen(name)) : NULL;
}

size_t
strata_list_filters(const struct strata_filter_type **out, size_t n)
{
	return table_list(&filters, (const void **)out, n);
}

size_t
strata_list_transports(const struct strata_transport_type **out, size_t n)
{
	return table_list(&transports, (const void **)out, n);
}

/* ---- option helpers ---- */

/*
 * At most 40 bytes of @p s for a message, then "...", with control
 * characters shown as '?': a long value must not push the key and what
 * was expected out of the message, nor write escapes to a terminal.
 */
static const char *
clip(const char *s, char buf[44])
{
	size_t i, n = strnlen(s, 41);

	for (i = 0; i < n && i < 40; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = c < 0x20 || c == 0x7f ? '?' : s[i];
	}
	if (n > 40) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = 0;
	return buf;
}

static int
bad_value(const char *filter, const struct strata_option *opt,
    struct strata_error *err, const char *expected)
{
	char v[44], k[44];

	strata_error_set(err, STRATA_ERR_OPTION,
	    "%s: bad value '%s' for %s: expected %s", filter,
	    clip(opt->value, v), clip(opt->key, k), expected);
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

int
strata_opt_msec(const char *filter, const struct strata_option *opt,
    uint64_t min_ms, uint64_t max_ms, uint64_t *out_ms,
    struct strata_error *err)
{
	char expected[96];
	const char *v = opt->value;
	char *end = NULL;
	unsigned long long x;
	uint64_t scale;

	snprintf(expected, sizeof(expected),
	    "a duration from %" PRIu64 "ms to %" PRIu64 "s (ms, s, m suffixes)",
	    min_ms, max_ms / 1000);
	if (!isdigit((unsigned char)v[0]))
		return bad_value(filter, opt, err, expected);
	errno = 0;
	x = strtoull(v, &end, 10);
	if (!strcmp(end, "ms"))
		scale = 1;
	else if (!*end || !strcmp(end, "s"))
		scale = 1000;
	else if (!strcmp(end, "m"))
		scale = 60000;
	else
		return bad_value(filter, opt, err, expected);
	if (errno || x > UINT64_MAX / scale || x * scale < min_ms ||
	    x * scale > max_ms)
		return bad_value(filter, opt, err, expected);
	*out_ms = x * scale;
	return 0;
}
