/* Helpers for the tests that run the example frames filter. */
#include <string.h>

#include "frames.h"
#include "frames-helpers.h"

void
th_frames_echo(struct event_base *base, struct th_peer *c,
    const struct th_frame *f, size_t n)
{
	struct evbuffer *payload = evbuffer_new();
	size_t i;

	/* want is whole before the first write: `enough` means all of it */
	c->want = 0;
	for (i = 0; i < n; i++)
		c->want += FRAMES_HEADER + f[i].len;
	for (i = 0; i < n; i++)
		ck_assert_int_eq(frames_write(c->top, f[i].data,
		    (uint32_t)f[i].len), 0);
	th_run_until(base, &c->enough, 3000, "the echoed frames");
	ck_assert_uint_eq(evbuffer_get_length(c->got), c->want);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(frames_read(c->got, payload), 1);
		ck_assert_uint_eq(evbuffer_get_length(payload), f[i].len);
		ck_assert(!f[i].len || !memcmp(evbuffer_pullup(payload, -1),
		    f[i].data, f[i].len));
		evbuffer_drain(payload, f[i].len);
	}
	ck_assert_int_eq(frames_read(c->got, payload), 0);
	evbuffer_free(payload);
	c->enough = 0;
}
