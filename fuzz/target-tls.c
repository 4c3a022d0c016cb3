/*
 * fuzz targets "tls-server" and "tls-client" (this file, built with
 * FUZZ_TLS_SERVER=1 or 0): the TLS filter's input side, in a real stack
 * over a bufferevent pair, with the input as everything the peer sends.
 *
 * The stack is fz_tls_filters(): the committed test certificates, so a
 * handshake can complete. OpenSSL's RNG is made deterministic and reset
 * for every input (fz_rand_reset), so the stack's ClientHello, key shares
 * and ServerHello are the same every time, and a peer flight recorded
 * against it by gen-tls-seeds (the seeds in corpus/tls-*) replays through
 * the handshake, the application data and close_notify. Mutations then
 * reach every state: records cut anywhere, bad lengths, alerts, wrong
 * versions, certificates that do not verify (tls_verify_cb and the
 * messages built from the peer's names), renegotiation, key updates,
 * data after close_notify, EOF in every state.
 *
 * The input is fed one TLS record at a time (by the lengths in the
 * headers, so a recorded flight arrives as it did), the loop run after
 * each. The top writes a line (sent once the handshake is done), then
 * ends its output (close_notify) and the peer's EOF comes.
 *
 * Checks: an error names the tls layer and its cause; CONNECTED comes at
 * most once, never after an error. Sanitizers do the rest.
 */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"

#ifndef FUZZ_TLS_SERVER
#error "build with -DFUZZ_TLS_SERVER=1 or 0"
#endif

#define MAX_INPUT (1 << 17)
#define MAX_FEEDS 256

/* Bytes of the next piece to feed: one record, or all that is left when
 * the header is not a TLS record's. */
static size_t
next_piece(const uint8_t *p, size_t left)
{
	size_t rec;

	if (left < 5 || p[0] < 20 || p[0] > 24 || p[1] != 3)
		return left;
	rec = 5 + ((size_t)p[3] << 8 | p[4]);
	return rec < left ? rec : left;
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
	struct fz_stack s;
	char filters[1024];
	size_t off = 0;
	int feeds = 0;

	if (size > MAX_INPUT)
		return 0;
	fz_init();
	fz_tls_filters(FUZZ_TLS_SERVER, filters, sizeof(filters));
	fz_rand_reset();
	FZ_CHECK(fz_stack_open(
		     &s, filters, FUZZ_TLS_SERVER ? STRATA_OPT_SERVER : 0) == 0,
	    "%s: %s", filters, s.errmsg);
	bufferevent_write(s.top, "ping\n", 5);
	while (off < size && !s.error) {
		size_t n = ++feeds < MAX_FEEDS
			       ? next_piece(data + off, size - off)
			       : size - off;
		fz_stack_feed(&s, data + off, n);
		off += n;
	}
	if (!s.error) {
		bufferevent_flush(s.top, EV_WRITE, BEV_FINISHED);
		fz_stack_pump(&s);
	}
	fz_stack_peer_eof(&s);
	fz_log("%zu bytes in %d pieces: %s, %zu bytes of plaintext, %zu "
	       "bytes sent%s%s%s",
	    size, feeds, s.connected ? "connected" : "not connected",
	    evbuffer_get_length(s.got), evbuffer_get_length(s.wire),
	    s.eof ? ", EOF" : "", s.error ? ", error: " : "",
	    s.error ? s.errmsg : "");
	if (s.error)
		FZ_CHECK(!strncmp(s.errmsg, "tls: ", 5) && s.errmsg[5],
		    "error without the layer and a cause: '%s'", s.errmsg);
	FZ_CHECK(s.connected <= 1 && !s.connected_late, "CONNECTED %d times%s",
	    s.connected, s.connected_late ? ", after an error" : "");
	fz_stack_close(&s);
	return 0;
}
