/*
 * fuzz target "stack": the stack string parser.
 *
 * Input: one mode byte, then the string. Mode bit 0: a full stack string
 * (transport first, whose part is then configured too, as strata_connect
 * would; no connection is made); otherwise a filter list, as
 * strata_push() takes. Bit 1: a filter list that parses is also pushed
 * onto a bufferevent pair (layers created, started, freed); bit 2: in the
 * server role.
 *
 * Checks: a failure fills the error (code, a message without control
 * characters, a position inside the string); a success gives a spec with
 * what was asked for.
 *
 * Strings naming files to write (keylog=) or special files (/dev, /proc,
 * /sys) are skipped: the parser is what is fuzzed, not the file system.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fuzz.h"

#define MAX_STRING 4096

static int
skipped(const char *s)
{
	static const char *const bad[] = {
	    "keylog", "/dev", "/proc", "/sys", NULL};
	size_t i;

	for (i = 0; bad[i]; i++)
		if (strstr(s, bad[i]))
			return 1;
	return 0;
}

static void
check_error(const char *s, const struct strata_error *err)
{
	FZ_CHECK(
	    err->code != STRATA_OK, "failure without an error code: '%s'", s);
	FZ_CHECK(err->message[0] != 0, "failure without a message: '%s'", s);
	FZ_CHECK(memchr(err->message, 0, sizeof(err->message)) != NULL,
	    "message not terminated");
	fz_check_text(s, err->message);
	FZ_CHECK(err->position <= strlen(s),
	    "error position %zu past the end (%zu) of '%s': %s", err->position,
	    strlen(s), s, err->message);
	fz_log("error: %s", err->message);
}

static void
push_once(const char *s, int server)
{
	struct event_base *base = fz_base_new();
	struct bufferevent *pair[2], *top;
	struct strata_error err;
	int i;

	FZ_CHECK(bufferevent_pair_new(base, BEV_OPT_CLOSE_ON_FREE, pair) == 0,
	    "bufferevent_pair_new failed");
	memset(&err, 0, sizeof(err));
	top = strata_push(pair[1], s,
	    BEV_OPT_CLOSE_ON_FREE | (server ? STRATA_OPT_SERVER : 0), &err);
	if (!top) {
		check_error(s, &err);
		bufferevent_free(pair[1]);
	} else {
		bufferevent_enable(top, EV_READ | EV_WRITE);
		bufferevent_write(top, "x\n", 2);
		for (i = 0; i < 4; i++)
			fz_loop_once(base);
		bufferevent_free(top);
	}
	bufferevent_free(pair[0]);
	fz_loop_once(base);
	event_base_free(base);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = {data, size};
	struct strata_error err;
	struct strata_spec *spec;
	unsigned mode = fz_u8(&in);
	int want_transport = mode & 1;
	char *s;

	if (in.n > MAX_STRING)
		return 0;
	fz_init();
	s = fz_strndup(in.p, in.n);
	if (strlen(s) != in.n || skipped(s)) {
		free(s);
		return 0;
	}
	memset(&err, 0x55, sizeof(err)); /* the parser must clear it */
	spec = strata_spec_parse_(s, want_transport, &err);
	if (!spec) {
		check_error(s, &err);
		free(s);
		return 0;
	}
	FZ_CHECK(err.code == STRATA_OK, "success with error code %d: %s",
	    err.code, err.message);
	FZ_CHECK(
	    spec->refcnt == 1, "a new spec has %d references", spec->refcnt);
	if (want_transport) {
		const struct strata_transport_type *t = NULL;
		void *cfg = NULL;

		FZ_CHECK(spec->transport && spec->transport[0],
		    "stack without a transport: '%s'", s);
		memset(&err, 0, sizeof(err));
		if (strata_transport_config_(spec, &t, &cfg, &err) < 0) {
			FZ_CHECK(cfg == NULL, "failed config left a cfg");
			check_error(s, &err);
		} else if (t->config_free)
			t->config_free(cfg);
	} else
		FZ_CHECK(spec->n >= 1 && !spec->transport,
		    "filter list with %zu filters, transport %s", spec->n,
		    spec->transport ? spec->transport : "(none)");
	strata_spec_unref_(spec);
	if (!want_transport && (mode & 2))
		push_once(s, mode & 4);
	free(s);
	return 0;
}
