/*
 * Errors: struct strata_error filling and formatting.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

void
strata_text_clean_(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

void
strata_error_vset_(struct strata_error *err, enum strata_error_code code,
    const char *fmt, va_list ap)
{
	if (!err)
		return;
	err->code = code;
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	strata_text_clean_(err->message);
	if (!err->message[0])
		snprintf(err->message, sizeof(err->message), "error %d",
		    (int)code);
}

void
strata_error_set(struct strata_error *err, enum strata_error_code code,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	strata_error_vset_(err, code, fmt, ap);
	va_end(ap);
}

void
strata_error_prefix_(struct strata_error *err, const char *prefix)
{
	char tmp[STRATA_ERROR_MAX];
	size_t n = strlen(prefix), m;

	if (!err || (!strncmp(err->message, prefix, n) &&
			err->message[n] == ':'))
		return;
	m = strlen(err->message);
	if (n + 2 >= sizeof(tmp))
		return;
	memcpy(tmp, prefix, n);
	memcpy(tmp + n, ": ", 2);
	if (m > sizeof(tmp) - n - 3)
		m = sizeof(tmp) - n - 3;
	memcpy(tmp + n + 2, err->message, m);
	tmp[n + 2 + m] = 0;
	memcpy(err->message, tmp, sizeof(tmp));
}

void
strata_warn_(const char *fmt, ...)
{
	va_list ap;

	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *
strata_version(void)
{
	return STRATA_VERSION;
}
