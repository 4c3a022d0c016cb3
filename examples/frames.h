/*
 * frames: length-prefixed frames, an example of a strata filter written
 * outside the library (examples/frames.c is the whole plugin).
 *
 * On the wire every frame is a 4-byte big-endian payload length followed by
 * the payload. Register the type once, then name it in stack strings:
 *
 *	frames_register(&err);
 *	top = strata_push(bev, "frames(max-frame=64k)", BEV_OPT_CLOSE_ON_FREE,
 *	    &err);
 *
 * Options:
 *   max-frame=BYTES   largest payload accepted or sent (default 1M, at most
 *                     1G; k/M/G suffixes). A larger length from the peer is
 *                     an error, not an allocation.
 *   mode=message      (default) the application deals in frames: its read
 *                     callback only ever sees whole frames (header and
 *                     payload), and it writes whole frames (frames_write).
 *   mode=stream       frames are only the wire encoding: the layer above
 *                     gets the payloads as one byte stream and its output is
 *                     cut into frames, so other filters can sit on top
 *                     ("frames(mode=stream) | lines").
 *
 * Both ends of a connection should use the same mode and max-frame.
 */
#ifndef STRATA_EXAMPLE_FRAMES_H
#define STRATA_EXAMPLE_FRAMES_H

#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "strata/plugin.h"
#include "strata/strata.h"

/** Bytes of the length prefix. */
#define FRAMES_HEADER 4

/**
 * The filter type. Most programs only need frames_register(); the type is
 * public so a program can also run the two filter functions on their own
 * (under bufferevent_filter_new(), or in tests) with a context from
 * frames_filter.create(cfg, NULL, err). Without a strata layer, errors are
 * reported only as BEV_ERROR.
 */
extern const struct strata_filter_type frames_filter;

/**
 * Register "frames" with strata so stack strings can name it. Calling it
 * again is harmless.
 * @return 0, or -1 with @p err filled (another filter took the name)
 */
int frames_register(struct strata_error *err);

/**
 * Write one frame (header, then @p len bytes from @p p) to the output of
 * @p bev, as a single append: the filter below never sees half a frame
 * from this call. Works on any bufferevent, strata stack or not.
 * @return 0, or -1 if @p bev is NULL, @p p is NULL with @p len > 0, or the
 *         buffer could not grow
 */
int frames_write(struct bufferevent *bev, const void *p, uint32_t len);

/**
 * Take one whole frame from the front of @p in and append its payload to
 * @p payload_out (or drop it if @p payload_out is NULL). Nothing is removed
 * unless the whole frame is present. On the top of a "frames" stack in
 * message mode the input only ever holds whole frames, so a read callback
 * can loop `while (frames_read(in, msg) > 0)` and never see a partial one.
 * @return 1 if a frame was taken (its payload may be empty), 0 if @p in
 *         holds no whole frame, -1 on a bad argument or a failed move
 *         (e.g. @p in is a socket bufferevent's output, whose start
 *         libevent keeps frozen)
 */
int frames_read(struct evbuffer *in, struct evbuffer *payload_out);

#endif /* STRATA_EXAMPLE_FRAMES_H */
