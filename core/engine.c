/*
 * The engine runs the chain of plugin filters of a stack itself, under one
 * of two tops:
 *
 * - direct (strata_connect() and strata_listen() over the built-in
 *   transports): the top is the transport's own socket bufferevent, and
 *   the engine reads and writes the socket into buffers of its own (see
 *   "direct stacks" below). One bufferevent per connection: about 1 KB
 *   less than the second design, and libevent's own timeouts, rate limits
 *   and priority calls work on the top.
 * - a libevent filter bufferevent over the transport (strata_push() onto
 *   any bufferevent, user transports, STRATA_DIRECT=0): DESIGN section 2.
 *
 * The traps below are those of the second design; a direct top has only
 * those of its own making, handled in its section.
 *
 * Layers are indexed from the wire up. On the input side layer i reads from
 * the buffer below it (the transport's input for layer 0) and appends to its
 * `up` buffer (the top's input for the last layer); on the output side it
 * reads from the buffer above (the top's output for the last layer) and
 * appends to its `down` buffer (the transport's output for layer 0).
 *
 * The engine handles the libevent traps of DESIGN section 4: errors are
 * sticky and raised on the top (1), BEV_OK without progress is caught (2),
 * parked data is re-run on drain and on enable (3, 7), EOF runs BEV_FINISHED
 * bottom-up before the event goes up (4), graceful close is built
 * (5, strata_close), timeouts and rate limits live on the transport (6, 10),
 * intermediate buffers and the transport are bounded (8, 9), and the
 * transport is owned through interposition (11).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "internal.h"

/* libevent-internal, exported (bufferevent-internal.h, EVENT2_EXPORT_SYMBOL).
 * With @p lock NULL a filter takes its underlying's lock, or makes a new
 * one and gives it to the underlying too. */
int bufferevent_enable_locking_(struct bufferevent *bufev, void *lock);
void bufferevent_suspend_read_(struct bufferevent *bufev, ev_uint16_t what);
void bufferevent_unsuspend_read_(struct bufferevent *bufev, ev_uint16_t what);
#define STRATA_BEV_SUSPEND_FILT_READ 0x10 /* bufferevent-internal.h:76 */

/* Bound of each intermediate buffer between two layers. */
#define LAYER_CAP (256 * 1024)
/* Read and write high watermarks put on the transport (trap 8, 9). */
#define TRANSPORT_RD_HIGH (256 * 1024)
#define TRANSPORT_WR_HIGH (256 * 1024)
#define TRANSPORT_WR_LOW (64 * 1024)
/* How far a layer's room may grow to end on a chain boundary. */
#define CHAIN_SLACK (64 * 1024)

union bev_ctrl_data {
	void *ptr;
	evutil_socket_t fd;
};

enum { CTRL_SET_FD, CTRL_GET_FD, CTRL_GET_UNDERLYING, CTRL_CANCEL_ALL };

struct bev_ops {
	const char *type;
	off_t mem_offset;
	int (*enable)(struct bufferevent *, short);
	int (*disable)(struct bufferevent *, short);
	void (*unlink)(struct bufferevent *);
	void (*destruct)(struct bufferevent *);
	int (*adj_timeouts)(struct bufferevent *);
	int (*flush)(struct bufferevent *, short, enum bufferevent_flush_mode);
	int (*ctrl)(struct bufferevent *, int, union bev_ctrl_data *);
};

struct strata_layer {
	const struct strata_filter_type *type;
	void *ctx;
	struct strata_spec *spec; /* holds type's cfg */
	struct strata_engine *engine;
	struct evbuffer *up;	  /* input side, towards the user */
	struct evbuffer *down;	  /* output side, towards the wire */
	uint64_t read_in, read_out, write_in, write_out;
	unsigned side_writes;
	size_t index;		  /* position from the wire up */
	unsigned in_finished : 1;
	unsigned in_ended : 1;	  /* strata_layer_input_end() was called */
	unsigned gates : 1;
	unsigned ready : 1;
	unsigned started : 1;
};

struct close_state {
	struct event *timer;
	strata_close_fn cb;
	void *arg;
};

/* The handle transports get; embedded in the engine. */
struct strata_conn {
	struct event_base *base;
	struct evdns_base *dns;
	int options;
	unsigned own_dns : 1;
};

struct strata_engine {
	struct bufferevent *top;
	struct bufferevent *transport;
	struct strata_conn conn;
	const struct strata_transport_type *tport;
	void *tstate;
	struct strata_layer **layers; /* each allocated alone: plugins keep
					 their layer pointer across pushes */
	struct strata_layer *layer1;  /* the array of a one-layer stack */
	/* the four buffers at the ends, cached (they never change) */
	struct evbuffer *t_in, *t_out, *top_in, *top_out;
	uint64_t wire_in, wire_out;
	size_t t_in_seen;	  /* transport input left after the engine ran */
	char *error;		  /* "<layer>: <cause>", set once */
	struct strata_error *err_detail;
	struct close_state *closing;
	enum strata_role role;
	int depth;		  /* filter calls in progress */
	int priority;		  /* strata_priority_set(), or -1 */
	short fail_dir;
	unsigned n;		  /* layers */
	unsigned failed : 1;
	unsigned error_raised : 1;
	unsigned connected : 1;
	unsigned connect_sent : 1;
	unsigned eof : 1;
	unsigned out_finished : 1;
	unsigned shut_wr : 1;
	unsigned wr_timed_out : 1;
	unsigned below_dirty : 1;
	unsigned peer_eof : 1;
	unsigned own_transport : 1;
	unsigned rd_parked : 1;	  /* transport EV_READ off: input full */
	unsigned flush_due : 1;	  /* a layer asked for a BEV_FLUSH pass */
	unsigned handshaking : 1; /* a gating layer is not ready yet */
	unsigned wcb_due : 1;	  /* the user wrote; write callback owed */
	/* direct stacks (the transport's socket bufferevent is the top) */
	unsigned direct_ok : 1;	  /* may be built direct */
	unsigned direct : 1;	  /* is direct */
	unsigned lib_rd : 1;	  /* libevent has the top's reading on */
	unsigned lib_wr : 1;	  /* libevent has the top's writing on */
	unsigned connecting : 1;  /* a connect() is in progress */
	unsigned rd_off : 1;	  /* the wire is read no more */
	unsigned wr_off : 1;	  /* the wire is written no more */
	unsigned rd_limited : 1;  /* the read rate limit ran out */
	unsigned wr_limited : 1;  /* the write rate limit ran out */
	unsigned poke_in : 1;	  /* the next read event re-runs every layer */
	unsigned poked_rd : 1;	  /* ev_read was activated by the engine */
	unsigned poked_wr : 1;	  /* ev_write was activated by the engine */
	unsigned announce_due : 1; /* raise CONNECTED from the read event */
	unsigned out_stalled : 1; /* the layers took none of the top's output */
	union {
		struct { /* over a filter bufferevent */
			bufferevent_data_cb orig_r, orig_w;
			bufferevent_event_cb orig_e;
			void *orig_arg;
			struct evbuffer_cb_entry *fill_cb, *tout_cb;
			/* charged by strata's read path on the transport */
			struct bufferevent_rate_limit_group *group;
		};
		/* direct: the top's be_ops; the engine is found from it */
		struct bev_ops ops;
	};
};

static const struct timeval hook_now = {0, 1};

static struct strata_engine *
conn_engine(struct strata_conn *c)
{
	return (struct strata_engine *)(void *)((char *)c -
	    offsetof(struct strata_engine, conn));
}

static void wrap_r(struct bufferevent *t, void *arg);
static void close_finish(struct strata_engine *e, int delivered);
static void send_connected(struct strata_engine *e);
static int is_direct(struct bufferevent *bev);
static struct strata_engine *direct_engine(struct bufferevent *bev);
static void wire_update(struct strata_engine *e);
static void poke_read(struct strata_engine *e);
static void poke_write(struct strata_engine *e);
static void pass_event(struct strata_engine *e, short what);
static size_t unsent_below(struct strata_engine *e);

/* ---- finding the engine of a top ---- */

static struct strata_engine *
engine_of(struct bufferevent *top)
{
	struct bufferevent *t;
	bufferevent_data_cb r = NULL;
	void *arg = NULL;

	if (top && is_direct(top))
		return direct_engine(top);
	if (!top || !(t = bufferevent_get_underlying(top)))
		return NULL;
	bufferevent_getcb(t, &r, NULL, NULL, &arg);
	if (r != wrap_r || !arg || ((struct strata_engine *)arg)->top != top)
		return NULL;
	return arg;
}

int
strata_is_stack(struct bufferevent *bev)
{
	return engine_of(bev) != NULL;
}

struct bufferevent *
strata_transport(struct bufferevent *top)
{
	struct strata_engine *e = engine_of(top);

	return e ? e->transport : NULL;
}

/* The socket's deferred callbacks too, where libevent allows it; the
 * events themselves directly: a tuned transport's read event was
 * re-assigned (strata_socket_tune) and a pipe's is its own. */
static int
priority_apply(struct strata_engine *e)
{
	struct bufferevent *t = e->transport, *top = e->top;
	int p = e->priority, r = 0;

	(void)bufferevent_priority_set(t, p);
	r |= event_priority_set(&t->ev_read, p);
	r |= event_priority_set(&t->ev_write, p);
	r |= event_priority_set(&top->ev_read, p);
	r |= event_priority_set(&top->ev_write, p);
	return r < 0 ? -1 : 0;
}

int
strata_priority_set(struct bufferevent *top, int priority)
{
	struct strata_engine *e = engine_of(top);
	int r;

	if (!e || priority < 0 ||
	    priority >= event_base_get_npriorities(bufferevent_get_base(top)))
		return -1;
	bufferevent_lock(top);
	e->priority = priority;
	r = priority_apply(e);
	bufferevent_unlock(top);
	return r;
}

size_t
strata_unsent(struct bufferevent *top)
{
	struct strata_engine *e = engine_of(top);
	size_t n;

	if (!e)
		return (size_t)-1;
	bufferevent_lock(top);
	n = evbuffer_get_length(e->top_out) + unsent_below(e);
	bufferevent_unlock(top);
	return n;
}

/* ---- buffers around a layer ---- */

static struct evbuffer *
in_src(struct strata_engine *e, size_t i)
{
	return i ? e->layers[i - 1]->up : e->t_in;
}

static struct evbuffer *
in_dst(struct strata_engine *e, size_t i)
{
	return i + 1 < e->n ? e->layers[i]->up : e->top_in;
}

static struct evbuffer *
out_src(struct strata_engine *e, size_t i)
{
	return i + 1 < e->n ? e->layers[i + 1]->down
			    : e->top_out;
}

static struct evbuffer *
out_dst(struct strata_engine *e, size_t i)
{
	return i ? e->layers[i]->down : e->t_out;
}

/* @p t_in_len: the transport input's length, when the caller has it */
static int
input_held_from(struct strata_engine *e, size_t t_in_len)
{
	size_t i;

	if (t_in_len)
		return 1;
	for (i = 0; i + 1 < e->n; i++)
		if (evbuffer_get_length(e->layers[i]->up))
			return 1;
	return 0;
}

static int
input_held(struct strata_engine *e)
{
	return input_held_from(e, evbuffer_get_length(e->t_in));
}

static int
output_held_below(struct strata_engine *e)
{
	size_t i;

	for (i = 1; i < e->n; i++)
		if (evbuffer_get_length(e->layers[i]->down))
			return 1;
	return 0;
}

/* What the user wrote that has not reached the transport's fd yet, in the
 * encodings of the layers it sits in. */
static size_t
unsent_below(struct strata_engine *e)
{
	size_t i, n = evbuffer_get_length(e->t_out);

	for (i = 1; i < e->n; i++)
		n += evbuffer_get_length(e->layers[i]->down);
	return n;
}

static size_t
write_low(struct strata_engine *e)
{
	size_t low, high;

	bufferevent_getwatermark(e->top, EV_WRITE, &low, &high);
	(void)high;
	return low;
}

/*
 * The top's write callback at the default low watermark of 0 means what a
 * socket bufferevent's means: everything written was handed to the fd.
 * evhttp relies on it, shutting a "Connection: close" socket down from
 * that callback; a stack also holds bytes between the top and the fd.
 * Above 0 it means the top's output fell to the mark (time to refill).
 */
static int
write_cb_ready(struct strata_engine *e)
{
	size_t low = write_low(e);

	if (evbuffer_get_length(e->top_out) > low)
		return 0;
	return low > 0 || !unsent_below(e);
}

static void
write_cb_update(struct strata_engine *e)
{
	if (!e->wcb_due || !(bufferevent_get_enabled(e->top) & EV_WRITE) ||
	    !write_cb_ready(e))
		return;
	e->wcb_due = 0;
	bufferevent_trigger(e->top, EV_WRITE, 0);
}

/*
 * The top's ev_read/ev_write are the engine's hooks: libevent adds them
 * from bufferevent_enable() and after each filter pass when a timeout is
 * set on the top, so a tiny timeout makes enable() call the engine (traps
 * 3 and 7). They are armed only while data is parked. Input parks only
 * when the top's reading is disabled or its read high watermark is set; in
 * the second case libevent's watermark callback re-enables the top on
 * every change of its input below the mark, so a user's drain, from any
 * callback, also reaches the hook.
 */
static void
hooks_update_from(struct strata_engine *e, size_t t_in_len)
{
	struct bufferevent *top = e->top;

	if (e->direct) /* the top's timeouts are the user's */
		return;
	if (!e->eof && input_held_from(e, t_in_len))
		top->timeout_read = hook_now;
	else
		evutil_timerclear(&top->timeout_read);
	if (output_held_below(e) ||
	    evbuffer_get_length(bufferevent_get_output(top)) ||
	    e->wr_timed_out)
		top->timeout_write = hook_now;
	else
		evutil_timerclear(&top->timeout_write);
}

static void
hooks_update(struct strata_engine *e)
{
	hooks_update_from(e, evbuffer_get_length(e->t_in));
}

/* ---- errors ---- */

static void
raise_error(struct strata_engine *e)
{
	if (e->error_raised)
		return;
	e->error_raised = 1;
	bufferevent_trigger_event(e->top, BEV_EVENT_ERROR | e->fail_dir,
	    BEV_TRIG_DEFER_CALLBACKS);
}

/*
 * Raise the stored error after the lines (or frames) decoded in the same
 * pass: libevent runs the read callback only when the filter returned
 * BEV_OK, and deferred read callbacks run before event callbacks.
 */
static void
fail_after_data(struct strata_engine *e, int grew)
{
	if (grew)
		bufferevent_trigger(e->top, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	raise_error(e);
}

/* Make the stack fail with @p msg (if none stored yet). */
static void
engine_fail(struct strata_engine *e, short dir, enum strata_error_code code,
    int sys_errno, const char *msg)
{
	if (e->failed)
		return;
	e->failed = 1;
	e->fail_dir = dir;
	e->error = strata_strdup_(msg);
	if (e->error) /* a peer's certificate names end up in here */
		strata_text_clean_(e->error);
	e->err_detail = strata_calloc_(1, sizeof(*e->err_detail));
	if (e->err_detail) {
		e->err_detail->code = code;
		e->err_detail->sys_errno = sys_errno;
		/* cut to the message buffer (snprintf would warn at -O3) */
		size_t n = strlen(msg);
		if (n >= sizeof(e->err_detail->message))
			n = sizeof(e->err_detail->message) - 1;
		memcpy(e->err_detail->message, msg, n);
		e->err_detail->message[n] = 0;
		strata_text_clean_(e->err_detail->message);
	}
	if (e->direct) {
		e->rd_off = 1;
		wire_update(e);
	} else
		bufferevent_disable(e->transport, EV_READ);
	if (!e->depth)
		raise_error(e);
}

const char *
strata_last_error(struct bufferevent *top)
{
	struct strata_engine *e = engine_of(top);

	if (!e || !e->failed)
		return NULL;
	/* the copy of the message is an allocation that can fail too */
	return e->error ? e->error : "out of memory (while storing an error)";
}

int
strata_get_error(struct bufferevent *top, struct strata_error *err)
{
	struct strata_engine *e = engine_of(top);

	if (!e || !e->failed || !err)
		return 0;
	if (e->err_detail)
		*err = *e->err_detail;
	else
		strata_error_set(err, STRATA_ERR_NOMEM, "%s",
		    strata_last_error(top));
	return 1;
}

void
strata_layer_fail(struct strata_layer *l, enum strata_error_code code,
    const char *fmt, ...)
{
	char cause[STRATA_ERROR_MAX], msg[STRATA_ERROR_MAX + 40];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cause, sizeof(cause), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s: %s", l->type->name, cause);
	engine_fail(l->engine, BEV_EVENT_READING, code, 0, msg);
}

/* ---- calling one layer ---- */

/*
 * Call a layer's filter function until it stops making progress, has no
 * input left (BEV_NORMAL) or filled its limit. Returns 1 if it made
 * progress, 0 if not, -1 if the stack failed.
 */
static int
layer_call(struct strata_engine *e, struct strata_layer *l, int out,
    struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode)
{
	bufferevent_filter_cb fn = out ? l->type->output : l->type->input;
	short dir = out ? BEV_EVENT_WRITING : BEV_EVENT_READING;
	int progress = 0;

	for (;;) {
		size_t s0 = evbuffer_get_length(src);
		size_t d0 = evbuffer_get_length(dst), s1, d1, used, made;
		uint64_t sent0 = e->wire_out;
		unsigned w0 = l->side_writes;
		enum bufferevent_filter_result r;
		char msg[STRATA_ERROR_MAX];

		e->depth++;
		r = fn(src, dst, lim, mode, l->ctx);
		e->depth--;
		s1 = evbuffer_get_length(src);
		d1 = evbuffer_get_length(dst);
		/* A transport may take what is added to its output at once: a
		 * bufferevent_pair hands it to its partner from an evbuffer
		 * callback, inside the filter's evbuffer_add. What left during
		 * the call was made too (a flush that wrote only a marker
		 * would otherwise look like BEV_OK without progress). */
		if (dst == e->t_out)
			d1 += (size_t)(e->wire_out - sent0);
		used = s0 > s1 ? s0 - s1 : 0;
		made = d1 > d0 ? d1 - d0 : 0;
		if (out) {
			l->write_in += used;
			l->write_out += made;
		} else {
			l->read_in += used;
			l->read_out += made;
		}
		if (e->failed || r == BEV_ERROR) {
			snprintf(msg, sizeof(msg), "%s: filter failed (%s side)",
			    l->type->name, out ? "output" : "input");
			engine_fail(e, dir, STRATA_ERR_FILTER, 0, msg);
			e->fail_dir = dir;
			/* a layer's own strata_layer_fail() ran at depth > 0
			 * and raised nothing; not every caller of the run
			 * functions raises (side writes from the input pass),
			 * so raise here, deferred: decoded data still comes
			 * first (libevent runs deferred read callbacks before
			 * event callbacks) */
			if (!e->depth)
				raise_error(e);
			return -1;
		}
		if (used || made || w0 != l->side_writes)
			progress = 1;
		else if (r == BEV_OK) {
			snprintf(msg, sizeof(msg),
			    "%s: filter returned BEV_OK without progress "
			    "(%s side)", l->type->name, out ? "output" : "input");
			engine_fail(e, dir, STRATA_ERR_PROTOCOL, 0, msg);
			return -1;
		}
		if (r != BEV_OK)
			return progress;
		if (lim >= 0 && (lim -= (ev_ssize_t)made) <= 0)
			return progress;
		if (!s1 && mode == BEV_NORMAL)
			return progress;
	}
}

static ev_ssize_t
room_in(struct evbuffer *b, ev_ssize_t cap)
{
	ev_ssize_t len = (ev_ssize_t)evbuffer_get_length(b);

	return len >= cap ? 0 : cap - len;
}

/* A stack without filters moves whole chains, no copy. */
static int
move_plain(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim)
{
	size_t n = evbuffer_get_length(src);

	if (lim >= 0 && (size_t)lim < n)
		n = (size_t)lim;
	if (!n)
		return 0;
	if (n == evbuffer_get_length(src))
		evbuffer_add_buffer(dst, src);
	else
		evbuffer_remove_buffer(src, dst, n);
	return 1;
}

/*
 * Round a layer's room up to the end of the source chain that holds its
 * last byte: a filter that moves chains (evbuffer_remove_buffer) then
 * never splits one, which would copy it. The overshoot is at most
 * CHAIN_SLACK: a bigger chain (one large write) is split as before.
 */
static ev_ssize_t
room_to_chain_end(struct evbuffer *src, ev_ssize_t room)
{
	struct evbuffer_ptr p;
	struct evbuffer_iovec v;

	if (room <= 0 || (size_t)room >= evbuffer_get_length(src) ||
	    evbuffer_ptr_set(src, &p, (size_t)room - 1, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_peek(src, 1, &p, &v, 1) < 1 ||
	    v.iov_len - 1 > CHAIN_SLACK)
		return room;
	return room - 1 + (ev_ssize_t)v.iov_len;
}

/* ---- the input chain ---- */

/* Wire bytes in: what the transport added since the engine last ran. */
static void
count_wire_in(struct strata_engine *e)
{
	size_t len = evbuffer_get_length(e->t_in);

	if (len > e->t_in_seen)
		e->wire_in += len - e->t_in_seen;
	e->t_in_seen = len;
}

/* Closing: drop what the transport read, counted as read. */
static void
drop_wire_in(struct strata_engine *e)
{
	count_wire_in(e);
	evbuffer_drain(e->t_in, evbuffer_get_length(e->t_in));
	e->t_in_seen = 0;
}


/*
 * Run the input side bottom-up until nothing moves. @p lim bounds what the
 * last layer may add to the top's input. With @p full, layers are called
 * even with empty input (re-runs, flushes); BEV_FINISHED reaches each layer
 * once, after everything below it was processed.
 */
static int
run_input_chain(struct strata_engine *e, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, int full)
{
	struct evbuffer *top_in = e->top_in;
	/* the top's input before the pass: only a limit needs it */
	size_t top0 = lim >= 0 ? evbuffer_get_length(top_in) : 0;
	int moved = 0, progress, again;
	size_t i;

	if (!e->n)
		return move_plain(e->t_in, top_in,
		    mode == BEV_NORMAL ? lim : -1);
	do {
		progress = again = 0;
		for (i = 0; i < e->n; i++) {
			struct strata_layer *l = e->layers[i];
			struct evbuffer *src = in_src(e, i), *dst = in_dst(e, i);
			ev_ssize_t room;
			int r;

			if (l->in_finished)
				continue;
			if (mode == BEV_NORMAL && !full &&
			    !evbuffer_get_length(src))
				continue;
			if (mode != BEV_NORMAL)
				room = -1;
			else if (i + 1 == e->n)
				room = lim < 0 ? -1 : room_in(top_in,
				    (ev_ssize_t)top0 + lim);
			else
				room = room_to_chain_end(src,
				    room_in(dst, LAYER_CAP));
			if (!room && !(l->gates && !l->ready)) {
				/* full above: the layers above may drain it in
				 * this pass, then this one must run again (or
				 * its input stays parked with nothing to wake
				 * it: the transport's reading is off) */
				again |= i + 1 < e->n &&
				    evbuffer_get_length(src) != 0;
				continue;
			}
			r = layer_call(e, l, 0, src, dst, room, mode);
			if (r < 0) {
				/* what the layer decoded before its error goes
				 * up: one call of each layer above (layer_call
				 * stops after one, the stack having failed) */
				while (++i < e->n)
					layer_call(e, e->layers[i], 0,
					    in_src(e, i), in_dst(e, i), -1,
					    BEV_NORMAL);
				return -1;
			}
			if (mode == BEV_FINISHED)
				l->in_finished = 1;
			progress |= r;
			/* stopped by a full buffer the layers above may
			 * drain in this pass: worth another pass */
			again |= room >= 0 && i + 1 < e->n &&
			    evbuffer_get_length(src);
		}
		moved |= progress;
		full = 0;
	} while (progress && again && mode == BEV_NORMAL);
	return moved;
}

/*
 * A layer ended its stream before the transport did (TLS close_notify):
 * the layers above it finish (BEV_FINISHED, bottom-up, as on a transport
 * EOF), the transport stops being read, and the top gets its EOF once,
 * deferred so that the data decoded in this pass is read first.
 */
static int
input_ended(struct strata_engine *e)
{
	size_t i, k;

	for (k = 0; k < e->n && !e->layers[k]->in_ended; k++)
		;
	if (k == e->n || e->eof)
		return 0;
	e->eof = 1;
	for (i = 0; i <= k; i++)
		e->layers[i]->in_finished = 1;
	for (i = k + 1; i < e->n; i++) {
		if (layer_call(e, e->layers[i], 0, in_src(e, i), in_dst(e, i),
			-1, BEV_FINISHED) < 0)
			return -1;
		e->layers[i]->in_finished = 1;
	}
	if (e->direct) {
		e->rd_off = 1;
		wire_update(e);
	} else
		bufferevent_disable(e->transport, EV_READ);
	bufferevent_trigger_event(e->top, BEV_EVENT_EOF | BEV_EVENT_READING,
	    BEV_TRIG_DEFER_CALLBACKS);
	return 1;
}

static int
run_input(struct strata_engine *e, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, int full)
{
	int r;

	count_wire_in(e);
	r = run_input_chain(e, lim, mode, full);
	if (r >= 0 && input_ended(e) < 0)
		r = -1;
	e->t_in_seen = evbuffer_get_length(e->t_in);
	return r;
}

/* ---- the output chain ---- */

static ev_ssize_t
transport_room(struct strata_engine *e)
{
	return room_in(e->t_out,
	    TRANSPORT_WR_HIGH);
}

/*
 * Run the output side top-down until nothing moves. @p lim bounds what
 * layer 0 may add to the transport's output; @p take_top says whether the
 * top's output may be consumed (EV_WRITE enabled on the top).
 */
static int
run_output(struct strata_engine *e, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, int take_top)
{
	int moved = 0, progress, again;
	size_t i;

	if (!e->n)
		return take_top ? move_plain(e->top_out,
		    e->t_out,
		    mode == BEV_NORMAL && lim >= 0 ? transport_room(e) : -1) : 0;
	do {
		progress = again = 0;
		e->below_dirty = 0;
		for (i = e->n; i-- > 0;) {
			struct strata_layer *l = e->layers[i];
			struct evbuffer *src = out_src(e, i), *dst = out_dst(e, i);
			ev_ssize_t room;
			int r;

			if (i + 1 == e->n && !take_top && mode == BEV_NORMAL)
				continue;
			if (mode == BEV_NORMAL && !evbuffer_get_length(src))
				continue;
			if (mode != BEV_NORMAL)
				room = -1;
			else if (i == 0)
				room = lim < 0 ? -1 : room_to_chain_end(src,
				    transport_room(e));
			else
				room = room_to_chain_end(src,
				    room_in(dst, LAYER_CAP));
			if (!room)
				continue;
			r = layer_call(e, l, 1, src, dst, room, mode);
			if (r < 0)
				return -1;
			progress |= r;
			again |= room >= 0 && i > 0 && evbuffer_get_length(src);
		}
		moved |= progress;
		if (mode != BEV_NORMAL)
			break;
	} while (progress && (again || e->below_dirty));
	return moved;
}

/* Layers wrote below from their input side: send it on. */
static void
flush_side_writes(struct strata_engine *e)
{
	if (e->below_dirty && !e->failed)
		run_output(e, transport_room(e), BEV_NORMAL, 0);
}

/* ---- half-close ---- */

/* After BEV_FINISHED on output, shut the write side once all is sent. */
static void
maybe_shutdown(struct strata_engine *e)
{
	evutil_socket_t fd;

	/* a handshaking layer still has to send its part; a socket still
	 * connecting would answer the shutdown with a reset */
	if (!e->out_finished || e->shut_wr || e->failed || e->handshaking ||
	    !e->connected ||
	    evbuffer_get_length(e->t_out) ||
	    output_held_below(e) ||
	    evbuffer_get_length(e->top_out))
		return;
	e->shut_wr = 1;
	fd = bufferevent_getfd(e->transport);
	if (e->tport && e->tport->shutdown_write) {
		if (e->tport->shutdown_write(e->tstate) < 0)
			goto fail;
	} else if (fd >= 0 && shutdown(fd, SHUT_WR) < 0 &&
	    errno != ENOTSOCK && errno != ENOTCONN) {
fail:;
		char msg[STRATA_ERROR_MAX];
		snprintf(msg, sizeof(msg), "transport: shutdown: %s",
		    strerror(errno));
		engine_fail(e, BEV_EVENT_WRITING, STRATA_ERR_SYSTEM, errno,
		    msg);
		return;
	}
	if (e->closing && e->peer_eof)
		close_finish(e, 1);
}

/*
 * libevent >= 2.1.9 re-runs a bufferevent's read callback, deferred, for as
 * long as its input is at or above its read high watermark and EV_READ is
 * enabled (bufferevent.c:121-131, called at :168, :209, :252; #891). The
 * transport reads exactly up to TRANSPORT_RD_HIGH when the layers above
 * are full, which made the loop spin at 100% CPU. Turn the transport's
 * reading off while its input is full, on again once there is room.
 */
static void
transport_read_from(struct strata_engine *e, size_t len)
{
	if (e->direct) {
		if (e->rd_parked != (len >= TRANSPORT_RD_HIGH)) {
			e->rd_parked = len >= TRANSPORT_RD_HIGH;
			wire_update(e);
		}
		return;
	}
	if (!e->rd_parked && len >= TRANSPORT_RD_HIGH) {
		e->rd_parked = 1;
		bufferevent_disable(e->transport, EV_READ);
	} else if (e->rd_parked && len < TRANSPORT_RD_HIGH &&
	    (!e->eof || e->closing)) {
		e->rd_parked = 0;
		bufferevent_enable(e->transport, EV_READ);
	}
}

static void
transport_read_update(struct strata_engine *e)
{
	transport_read_from(e, evbuffer_get_length(e->t_in));
}

/* ---- the two bufferevent_filter_cb functions of the top ---- */

static ev_ssize_t
top_limit(struct strata_engine *e, ev_ssize_t lim, size_t held)
{
	/* Stay one byte under the top's read high watermark: libevent >=
	 * 2.1.9 re-fires the read callback in a busy loop while the input
	 * is at or above it (libevent #891); the transport's own watermark
	 * bounds memory instead. An empty input still gets a budget of 1
	 * (one whole unit may go over it, as into any empty buffer): with a
	 * watermark of 1 the budget would otherwise always be 0, and
	 * nothing would reach the reader before EOF. */
	if (lim == 1 && !held)
		return 1;
	return lim > 0 ? lim - 1 : lim;
}

static enum bufferevent_filter_result
engine_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *arg)
{
	struct strata_engine *e = arg;
	size_t before = evbuffer_get_length(dst);
	int r;

	if (e->failed)
		return BEV_ERROR;
	if (e->closing && !e->handshaking) {
		evbuffer_drain(src, evbuffer_get_length(src));
		return BEV_NEED_MORE;
	}
	r = run_input(e, mode == BEV_NORMAL ? top_limit(e, lim, before) : -1,
	    mode,
	    mode != BEV_NORMAL);
	if (r >= 0)
		flush_side_writes(e);
	transport_read_update(e);
	hooks_update(e);
	if (r < 0 || e->failed) {
		fail_after_data(e, evbuffer_get_length(dst) > before);
		return BEV_ERROR;
	}
	if (evbuffer_get_length(dst) <= before)
		return BEV_NEED_MORE;
	/* libevent triggers the read callback only on its read path, not
	 * from a flush: do it for flushes. */
	if (mode != BEV_NORMAL)
		bufferevent_trigger(e->top, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	return BEV_OK;
}

static enum bufferevent_filter_result
engine_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *arg)
{
	struct strata_engine *e = arg;
	size_t s0 = evbuffer_get_length(src), d0 = evbuffer_get_length(dst), low;
	int r;

	if (e->failed)
		return BEV_ERROR;
	if (e->out_finished && s0) {
		engine_fail(e, BEV_EVENT_WRITING, STRATA_ERR_STATE,
		    0, "strata: write after the output was finished");
		return BEV_ERROR;
	}
	r = run_output(e, lim, mode, 1);
	if (r >= 0 && mode == BEV_FINISHED) {
		e->out_finished = 1;
		maybe_shutdown(e);
	}
	hooks_update(e);
	if (r < 0 || e->failed) {
		raise_error(e);
		return BEV_ERROR;
	}
	/* BEV_OK makes libevent call the write callback when the top's
	 * output is at its low watermark (bufferevent_filter.c,
	 * be_filter_process_output); when that would be early,
	 * write_cb_update() calls it later instead. */
	if (evbuffer_get_length(src) >= s0 && evbuffer_get_length(dst) <= d0)
		return BEV_NEED_MORE;
	if (!(low = write_low(e)) && unsent_below(e))
		return BEV_NEED_MORE;
	if (evbuffer_get_length(src) <= low)
		e->wcb_due = 0;
	return BEV_OK;
}

/* ---- re-running parked data (hooks on the top's ev_read/ev_write) ---- */

static void
input_pass(struct strata_engine *e, int full)
{
	struct bufferevent *top = e->top;
	struct evbuffer *in = e->top_in;
	size_t before, high, t_in_len;
	ev_ssize_t lim = -1;
	int rd, side;

	if (e->failed || e->eof || (e->closing && !e->handshaking))
		return;
	/* this runs for every read: the top's fields directly, not through
	 * bufferevent_get_enabled() and bufferevent_getwatermark(), which
	 * take the lock the caller holds */
	rd = top->enabled & EV_READ;
	high = top->wm_read.high;
	before = evbuffer_get_length(in);
	if ((!rd && !e->handshaking) || (rd && high && before >= high)) {
		transport_read_update(e);
		hooks_update(e);
		return;
	}
	if (!rd) /* handshaking: the layers talk, the user gets nothing */
		lim = 0;
	else if (high)
		lim = top_limit(e, (ev_ssize_t)(high - before), before);
	if (run_input(e, lim, BEV_NORMAL, full) < 0) {
		fail_after_data(e, evbuffer_get_length(in) > before);
		return;
	}
	/* run_input() left the transport input's length in t_in_seen; only
	 * side writes can change it since (a bufferevent_pair answering
	 * inside the write) */
	side = e->below_dirty;
	flush_side_writes(e);
	t_in_len = side ? evbuffer_get_length(e->t_in) : e->t_in_seen;
	transport_read_from(e, t_in_len);
	hooks_update_from(e, t_in_len);
	if (evbuffer_get_length(in) > before)
		bufferevent_trigger(top, EV_READ, 0);
}

/* Data parked in the engine may move now: call every layer. */
static void
rerun_input(struct strata_engine *e)
{
	input_pass(e, 1);
}

static void
rerun_output(struct strata_engine *e)
{
	int take = !!(bufferevent_get_enabled(e->top) & EV_WRITE);

	if (e->failed)
		return;
	if (e->wr_timed_out && take && !e->direct) {
		e->wr_timed_out = 0;
		bufferevent_enable(e->transport, EV_WRITE);
	}
	/* A full transport means a slow peer, not an idle writer: flushing
	 * now would let the writer refill the top and each turn of the loop
	 * move another layer's worth past the transport's high watermark
	 * (unbounded memory under a peer that never reads). The flush stays
	 * due until the transport drains (wrap_w). */
	if (e->flush_due && take && transport_room(e) != 0) {
		/* the writer went idle: let each layer emit what it holds */
		e->flush_due = 0;
		if (run_output(e, transport_room(e), BEV_NORMAL, take) < 0) {
			raise_error(e);
			return;
		}
		/* still input at the top: the writer is not idle; the layer
		 * asks again once it has taken the rest */
		if (!evbuffer_get_length(e->top_out) &&
		    run_output(e, -1, BEV_FLUSH, take) < 0) {
			raise_error(e);
			return;
		}
	}
	if (run_output(e, transport_room(e), BEV_NORMAL, take) < 0) {
		raise_error(e);
		return;
	}
	maybe_shutdown(e);
	hooks_update(e);
	write_cb_update(e);
}

static void
hook_read(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *top = arg;
	struct strata_engine *e;

	bufferevent_incref(top);
	bufferevent_lock(top);
	if ((e = engine_of(top)) != NULL) {
		send_connected(e); /* a stack built connected: see build */
		rerun_input(e);
	}
	bufferevent_unlock(top);
	bufferevent_decref(top);
}

static void
hook_write(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *top = arg;
	struct strata_engine *e;

	bufferevent_incref(top);
	bufferevent_lock(top);
	if ((e = engine_of(top)) != NULL)
		rerun_output(e);
	bufferevent_unlock(top);
	bufferevent_decref(top);
}

/* Output written while the top's EV_WRITE is disabled: arm the enable
 * hook so bufferevent_enable(top, EV_WRITE) sends it (trap 7). */
static void
top_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct strata_engine *e = arg;

	if (!info->n_added)
		return;
	e->wcb_due = 1;
	if (!(e->top->enabled & EV_WRITE))
		e->top->timeout_write = hook_now;
}

static void
wire_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	((struct strata_engine *)arg)->wire_out += info->n_deleted;
}

/* ---- interposition on the transport's callbacks ---- */

static void
wrap_r(struct bufferevent *t, void *arg)
{
	struct strata_engine *e = arg;

	if (e->failed)
		return;
	/* closing: input is dropped, unless a layer still needs it to
	 * finish its handshake (strata_close() right after connect) */
	if (e->closing && !e->handshaking) {
		drop_wire_in(e);
		return;
	}
	/* The engine's own read path rather than libevent's filter read
	 * callback (orig_r): same checks (reading enabled, under the top's
	 * high watermark), one pass, and the read callback when the top's
	 * input grew. */
	input_pass(e, 0);
}

static void
wrap_w(struct bufferevent *t, void *arg)
{
	struct strata_engine *e = arg;

	if (e->failed)
		return;
	bufferevent_lock(e->top);
	rerun_output(e);
	bufferevent_unlock(e->top);
}

static void start_layers(struct strata_engine *e);

/*
 * While a gating layer (TLS) has not finished its handshake, the transport
 * reads even if the user has not enabled reading on the top (the top's
 * EV_READ would otherwise keep the transport suspended): a client that
 * only writes must still complete its handshake.
 */
static void
handshake_update(struct strata_engine *e)
{
	int hs = 0;
	size_t i;

	for (i = 0; i < e->n && !hs; i++)
		hs = e->layers[i]->gates && !e->layers[i]->ready;
	if (hs == (int)e->handshaking || e->failed)
		return;
	e->handshaking = (unsigned)hs;
	if (e->direct) {
		wire_update(e);
		return;
	}
	if (bufferevent_get_enabled(e->top) & EV_READ)
		return;
	if (hs)
		bufferevent_unsuspend_read_(e->transport,
		    STRATA_BEV_SUSPEND_FILT_READ);
	else
		bufferevent_suspend_read_(e->transport,
		    STRATA_BEV_SUSPEND_FILT_READ);
}

static void
send_connected(struct strata_engine *e)
{
	size_t i;

	handshake_update(e);
	if (!e->connected || e->connect_sent || e->failed)
		return;
	for (i = 0; i < e->n; i++)
		if (e->layers[i]->gates && !e->layers[i]->ready)
			return;
	e->connect_sent = 1;
	bufferevent_trigger_event(e->top, BEV_EVENT_CONNECTED,
	    BEV_TRIG_DEFER_CALLBACKS);
}

/* The peer ended its stream: BEV_FINISHED bottom-up, data, then EOF. */
static void
on_eof(struct strata_engine *e, short what)
{
	struct evbuffer *in = e->top_in;
	size_t before = evbuffer_get_length(in);
	int r;

	e->peer_eof = 1;
	if (e->closing) {
		if (e->shut_wr)
			close_finish(e, 1);
		return;
	}
	if (e->eof) /* a layer's stream ended first: that EOF was raised */
		return;
	e->eof = 1;
	r = run_input(e, -1, BEV_FINISHED, 1);
	if (r >= 0)
		flush_side_writes(e);
	hooks_update(e);
	if (r < 0 || e->failed) {
		fail_after_data(e, evbuffer_get_length(in) > before);
		return;
	}
	if (evbuffer_get_length(in) > before)
		bufferevent_trigger(e->top, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS);
	pass_event(e, what);
}

static void
on_timeout(struct strata_engine *e, short what)
{
	if (e->closing)
		return;
	if (what & BEV_EVENT_READING) {
		/* Disable on the top, keep the transport armed: the user's
		 * bufferevent_enable(top, EV_READ) then resumes it. */
		bufferevent_disable(e->top, EV_READ);
		if (!e->rd_parked && !e->direct)
			bufferevent_enable(e->transport, EV_READ);
	}
	if (what & BEV_EVENT_WRITING) {
		bufferevent_disable(e->top, EV_WRITE);
		e->wr_timed_out = 1;
		hooks_update(e);
	}
	pass_event(e, what);
}

static void
on_error(struct strata_engine *e, short what)
{
	int err = EVUTIL_SOCKET_ERROR();
	char msg[STRATA_ERROR_MAX];
	struct evbuffer *in = e->top_in;
	size_t before = evbuffer_get_length(in);

	if (e->closing) {
		close_finish(e, e->shut_wr);
		return;
	}
	/* Deliver what was already decodable before the error. */
	if (what & BEV_EVENT_READING || input_held(e)) {
		if (run_input(e, -1, BEV_FLUSH, 1) >= 0 &&
		    evbuffer_get_length(in) > before)
			bufferevent_trigger(e->top, EV_READ,
			    BEV_TRIG_IGNORE_WATERMARKS);
	}
	snprintf(msg, sizeof(msg), "transport: %s",
	    err ? evutil_socket_error_to_string(err) : "error");
	if (!e->failed) {
		/* the original event carries it: set before engine_fail(),
		 * whose raise_error() would queue a second one */
		e->error_raised = 1;
		engine_fail(e, what & (BEV_EVENT_READING | BEV_EVENT_WRITING),
		    STRATA_ERR_SYSTEM, err, msg);
	} else if (e->error_raised)
		return; /* a layer's error is on its way to the user */
	else
		e->error_raised = 1;
	pass_event(e, what);
}

/* An event of the transport, seen before the top gets it (the caller
 * holds the top's lock and a reference). */
static void
transport_event(struct strata_engine *e, short what)
{
	if (e->failed && !e->closing)
		return; /* the user already has the error */
	if (e->tport && e->tport->event && e->tport->event(e->tstate, what))
		; /* the transport handled it (e.g. trying the next address) */
	else if (what & BEV_EVENT_CONNECTED) {
		e->connected = 1;
		/* connecting re-assigned the socket's events (setfd, tune),
		 * which put them back at the default priority */
		if (e->priority >= 0)
			(void)priority_apply(e);
		start_layers(e);
		send_connected(e);
		/* what the user wrote while connecting goes now */
		if (e->direct)
			poke_write(e);
		/* the output was finished while connecting: send the rest,
		 * then shut down */
		if (e->out_finished && !e->failed) {
			if (run_output(e, transport_room(e), BEV_NORMAL, 1) < 0)
				raise_error(e);
			else
				maybe_shutdown(e);
		}
	} else if (what & BEV_EVENT_EOF)
		on_eof(e, what);
	else if (what & BEV_EVENT_TIMEOUT)
		on_timeout(e, what);
	else if (what & BEV_EVENT_ERROR)
		on_error(e, what);
	else
		pass_event(e, what);
}

static void
wrap_e(struct bufferevent *t, short what, void *arg)
{
	struct strata_engine *e = arg;

	(void)t;
	if (e->failed && !e->closing)
		return; /* the user already has the error */
	bufferevent_incref(e->top);
	bufferevent_lock(e->top);
	transport_event(e, what);
	bufferevent_unlock(e->top);
	bufferevent_decref(e->top);
}

/* ---- direct stacks: the transport's socket bufferevent is the top ---- */

/*
 * A stack built by strata_connect() or strata_listen() over a built-in
 * transport needs no second bufferevent: its top is the transport's own
 * socket bufferevent, the engine reads and writes the socket itself (the
 * wire buffers t_in and t_out are the engine's), and the user's callbacks,
 * watermarks, timeouts and rate limits sit on that one bufferevent. About
 * 1 KB less per connection than a filter bufferevent over it (bench/
 * README.md, "Memory per idle connection").
 *
 * libevent tells a bufferevent's implementation about enable, disable,
 * flush, fd changes and the final free through the table its be_ops
 * points to (struct bufferevent_ops in bufferevent-internal.h, not
 * installed). A direct top gets a copy of the socket type's table with
 * those entries replaced, so they reach the engine; the socket type's
 * own entries still do the rest (closing the fd, timeouts, the fd
 * query). The table's layout is libevent 2.1's: direct stacks are used
 * only with the libevent they were checked against, and only when the
 * socket type's table looks as expected; otherwise every stack is built
 * over a filter bufferevent as before. STRATA_DIRECT=0 in the
 * environment forces that too (for comparisons).
 */
/* libevent-internal, exported: charge a bufferevent's rate limits (its
 * own bucket and its group's), suspending it when they run out. The
 * struct bufferevent is the first member of its private part. */
struct bufferevent_private;
int bufferevent_decrement_read_buckets_(struct bufferevent_private *bev,
    ev_ssize_t bytes);
int bufferevent_decrement_write_buckets_(struct bufferevent_private *bev,
    ev_ssize_t bytes);
#define BEV_PRIVATE(bev) ((struct bufferevent_private *)(void *)(bev))

#define LIBEVENT_CHECKED 0x02010c00 /* 2.1.12-stable */

static const struct bev_ops *sock_ops;
static struct bev_ops direct_ops;
static int direct_state; /* 0: not checked yet, 1: usable, -1: not */
static pthread_mutex_t direct_mu = PTHREAD_MUTEX_INITIALIZER;

static void engine_free(void *arg);

static void direct_read(evutil_socket_t fd, short what, void *arg);
static void direct_write(evutil_socket_t fd, short what, void *arg);
static int d_enable(struct bufferevent *bev, short what);

static int
is_direct(struct bufferevent *bev)
{
	return ((const struct bev_ops *)(const void *)bev->be_ops)->enable ==
	    d_enable;
}

int
strata_bev_is_direct_(struct bufferevent *bev)
{
	return bev && is_direct(bev);
}

/* The events' argument must be the bufferevent: libevent finalizes the
 * top through whichever of them runs (bufferevent.c:737). */
static struct strata_engine *
direct_engine(struct bufferevent *bev)
{
	return (struct strata_engine *)(void *)((char *)(uintptr_t)
	    bev->be_ops - offsetof(struct strata_engine, ops));
}

static void
wire_set(struct event *ev, short kind, int on, unsigned poked,
    const struct timeval *tv)
{
	int pending = !!event_pending(ev, kind, NULL);

	if (on && !pending)
		event_add(ev, evutil_timerisset(tv) ? tv : NULL);
	else if (!on && pending && !poked) /* a poke re-evaluates itself */
		event_del(ev);
}

/*
 * Read the socket while someone wants its bytes and there is room; write
 * it while the engine holds bytes for it (the engine moves the user's
 * output down from its write event, which libevent adds on every write
 * to the top, and from pokes: a writable socket with nothing to send
 * would otherwise wake the loop forever).
 */
static void
wire_update(struct strata_engine *e)
{
	struct bufferevent *top = e->top;
	int fd_ok, rd, wr;

	if (!e->direct) /* or not built yet */
		return;
	fd_ok = event_get_fd(&top->ev_read) >= 0;
	rd = fd_ok && !e->connecting && !e->rd_parked && !e->rd_limited &&
	    !e->peer_eof &&
	    (e->closing || (!e->rd_off && (e->lib_rd || e->handshaking)));
	wr = fd_ok && !e->wr_off && (e->connecting ||
	    (!e->shut_wr && !e->wr_limited && !e->wr_timed_out &&
		(evbuffer_get_length(e->t_out) || (e->lib_wr &&
		    !e->out_stalled && evbuffer_get_length(e->top_out)))));
	wire_set(&top->ev_read, EV_READ, rd, e->poked_rd, &top->timeout_read);
	wire_set(&top->ev_write, EV_WRITE, wr, e->poked_wr,
	    &top->timeout_write);
}

static void
poke_read(struct strata_engine *e)
{
	if (!e->direct) {
		event_active(&e->top->ev_read, EV_TIMEOUT, 1);
		return;
	}
	e->poke_in = 1;
	e->poked_rd = 1;
	event_active(&e->top->ev_read, EV_READ, 1);
}

static void
poke_write(struct strata_engine *e)
{
	if (!e->direct) {
		event_active(&e->top->ev_write, EV_TIMEOUT, 1);
		return;
	}
	if (e->connecting) /* connecting ends with a pass anyway */
		return;
	e->out_stalled = 0;
	e->poked_wr = 1;
	event_active(&e->top->ev_write, EV_WRITE, 1);
}

/* Raise CONNECTED from the loop (see strata_engine_build_). */
static void
announce_later(struct strata_engine *e)
{
	if (!e->direct) {
		event_active(&e->top->ev_read, EV_TIMEOUT, 1);
		return;
	}
	e->announce_due = 1;
	poke_read(e); /* as hook_read: then every layer is run */
}

/* A transport event the engine has handled goes on to the user. */
static void
pass_event(struct strata_engine *e, short what)
{
	if (e->direct)
		bufferevent_trigger_event(e->top, what, 0);
	else
		e->orig_e(e->transport, what, e->orig_arg);
}

static int
d_enable(struct bufferevent *bev, short what)
{
	struct strata_engine *e = direct_engine(bev);

	if (what & EV_READ) {
		e->lib_rd = 1;
		e->rd_limited = 0;
	}
	if (what & EV_WRITE) {
		e->lib_wr = 1;
		e->wr_limited = 0;
		e->wr_timed_out = 0;
		e->out_stalled = 0;
	}
	wire_update(e);
	/* data parked in the engine moves now (traps 3 and 7) */
	if ((what & EV_READ) && !e->eof && input_held(e))
		poke_read(e);
	if ((what & EV_WRITE) && (evbuffer_get_length(e->top_out) ||
		e->wcb_due || output_held_below(e)))
		poke_write(e);
	return 0;
}

static int
d_disable(struct bufferevent *bev, short what)
{
	struct strata_engine *e = direct_engine(bev);

	if (what & EV_READ)
		e->lib_rd = 0;
	if (what & EV_WRITE)
		e->lib_wr = 0;
	wire_update(e);
	return 0;
}

/* bufferevent_flush() on the top: the filter functions' flush modes. */
static int
d_flush(struct bufferevent *bev, short iotype, enum bufferevent_flush_mode mode)
{
	struct strata_engine *e = direct_engine(bev);
	size_t before = evbuffer_get_length(e->top_out);
	int r = 0;

	if (mode == BEV_NORMAL)
		return 0;
	if ((iotype & EV_READ) &&
	    engine_input(e->t_in, e->top_in, -1, mode, e) == BEV_OK)
		r = 1;
	if ((iotype & EV_WRITE) &&
	    engine_output(e->top_out, e->t_out, -1, mode, e) == BEV_OK)
		r = 1;
	if (evbuffer_get_length(e->top_out) < before)
		e->wcb_due = 1;
	wire_update(e);
	return r;
}

/* Point the top's two events at the engine (and at new fds). */
static void
direct_assign(struct strata_engine *e, evutil_socket_t rfd,
    evutil_socket_t wfd)
{
	struct bufferevent *top = e->top;
	struct event_base *base = bufferevent_get_base(top);

	event_del(&top->ev_read);
	event_del(&top->ev_write);
	e->poked_rd = e->poked_wr = 0;
	event_assign(&top->ev_read, base, rfd, EV_READ | EV_PERSIST |
	    EV_FINALIZE, direct_read, top);
	event_assign(&top->ev_write, base, wfd, EV_WRITE | EV_PERSIST |
	    EV_FINALIZE, direct_write, top);
	if (e->priority >= 0) {
		event_priority_set(&top->ev_read, e->priority);
		event_priority_set(&top->ev_write, e->priority);
	}
}

static int
d_ctrl(struct bufferevent *bev, int op, union bev_ctrl_data *d)
{
	struct strata_engine *e = direct_engine(bev);

	switch (op) {
	case CTRL_SET_FD: /* a transport trying its next address */
		direct_assign(e, d->fd, d->fd);
		e->connecting = 0;
		wire_update(e);
		return 0;
	case CTRL_GET_UNDERLYING:
		return -1;
	default:
		return sock_ops->ctrl(bev, op, d);
	}
}

/*
 * The last reference to the top is gone; libevent finalizes it from the
 * loop later. The transport stops now: a timer of its own (tcp's start,
 * its next address) would otherwise re-assign the top's events while
 * they wait to be finalized.
 */
static void
d_unlink(struct bufferevent *bev)
{
	struct strata_engine *e = direct_engine(bev);

	if (e->tport && e->tport->destroy && e->tstate)
		e->tport->destroy(e->tstate);
	e->tstate = NULL;
}

/* The top is finalized: free the engine, then let the socket type close
 * its fd. */
static void
d_destruct(struct bufferevent *bev)
{
	struct strata_engine *e = direct_engine(bev);

	bev->be_ops = (const void *)sock_ops; /* the table is e's */
	engine_free(e);
	sock_ops->destruct(bev);
}

/* The first direct build checks the socket type's table (on the
 * transport it got: a probe bufferevent of its own would need a base of
 * its own) and makes the direct table from it. */
static int
direct_check(const struct bufferevent *t)
{
	const struct bev_ops *o = (const void *)t->be_ops;
	int st = -1;

	pthread_mutex_lock(&direct_mu);
	if (direct_state) {
		pthread_mutex_unlock(&direct_mu);
		return direct_state > 0;
	}
	if (o->type && !strcmp(o->type, "socket") && o->mem_offset == 0 &&
	    o->enable && o->disable && !o->unlink && o->destruct &&
	    o->adj_timeouts && o->flush && o->ctrl) {
		sock_ops = o;
		direct_ops = *o;
		direct_ops.type = "strata";
		direct_ops.enable = d_enable;
		direct_ops.disable = d_disable;
		direct_ops.unlink = d_unlink;
		direct_ops.destruct = d_destruct;
		direct_ops.flush = d_flush;
		direct_ops.ctrl = d_ctrl;
		st = 1;
	}
	__atomic_store_n(&direct_state, st, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&direct_mu);
	return st > 0;
}

static int
direct_usable(const struct bufferevent *t)
{
	int st = __atomic_load_n(&direct_state, __ATOMIC_ACQUIRE);

	if (st)
		return st > 0 && (const void *)t->be_ops ==
		    (const void *)sock_ops;
	return direct_check(t);
}

void
strata_engine_allow_direct_(struct strata_engine *e,
    const struct strata_transport_type *t)
{
	static int env = -1; /* -1: not read yet (threads may race: same value) */
	int ok;

	if (t != &strata_tcp_transport_ && t != &strata_unix_transport_ &&
	    t != &strata_pipe_transport_ && t != &strata_exec_transport_)
		return;
	if ((ok = __atomic_load_n(&env, __ATOMIC_RELAXED)) < 0) {
		const char *v = getenv("STRATA_DIRECT");
		ok = (!v || strcmp(v, "0")) &&
		    (event_get_version_number() & 0xffffff00) ==
		    LIBEVENT_CHECKED;
		__atomic_store_n(&env, ok, __ATOMIC_RELAXED);
	}
	e->direct_ok = ok && __atomic_load_n(&direct_state,
	    __ATOMIC_ACQUIRE) >= 0;
}

int
strata_conn_bev_options_(struct strata_conn *c)
{
	return conn_engine(c)->direct_ok ? c->options &
	    (BEV_OPT_DEFER_CALLBACKS | BEV_OPT_UNLOCK_CALLBACKS) : 0;
}

/* Read what the socket has into t_in. 1: read, 0: nothing (would block,
 * no room, rate limited), -1: EOF or error, raised. */
static int
wire_read(struct strata_engine *e, evutil_socket_t fd)
{
	struct bufferevent *top = e->top;
	size_t len = evbuffer_get_length(e->t_in);
	ev_ssize_t howmuch = bufferevent_get_max_to_read(top);
	int r, err;

	if (len >= TRANSPORT_RD_HIGH) {
		e->rd_parked = 1;
		return 0;
	}
	if (howmuch > (ev_ssize_t)(TRANSPORT_RD_HIGH - len))
		howmuch = (ev_ssize_t)(TRANSPORT_RD_HIGH - len);
	if (howmuch <= 0) {
		e->rd_limited = 1;
		return 0;
	}
	r = strata_wire_read_(e->t_in, fd, howmuch);
	err = errno;
	if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
		return 0;
	if (r <= 0) {
		e->rd_off = 1;
		e->peer_eof = e->peer_eof || r == 0;
		EVUTIL_SET_SOCKET_ERROR(r < 0 ? err : 0);
		transport_event(e, BEV_EVENT_READING |
		    (r < 0 ? BEV_EVENT_ERROR : BEV_EVENT_EOF));
		return -1;
	}
	bufferevent_decrement_read_buckets_(BEV_PRIVATE(top),
	    (ev_ssize_t)(evbuffer_get_length(e->t_in) - len));
	return 1;
}

/* Write t_out to the socket. 1: wrote, 0: nothing, -1: error, raised. */
static int
wire_write(struct strata_engine *e)
{
	struct bufferevent *top = e->top;
	ev_ssize_t max = bufferevent_get_max_to_write(top);
	int n, err;

	if (max <= 0) {
		e->wr_limited = 1;
		return 0;
	}
	n = evbuffer_write_atmost(e->t_out, event_get_fd(&top->ev_write),
	    max);
	err = errno;
	if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
		return 0;
	if (n < 0) {
		e->wr_off = 1;
		EVUTIL_SET_SOCKET_ERROR(err);
		transport_event(e, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
		return -1;
	}
	e->wire_out += (uint64_t)n;
	bufferevent_decrement_write_buckets_(BEV_PRIVATE(top), n);
	return n > 0;
}

static void
direct_read(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *top = arg;
	struct strata_engine *e = direct_engine(top);
	unsigned poked;

	bufferevent_incref(top);
	bufferevent_lock(top);
	/* a poke reads nothing: a read that finds nothing still leaves a
	 * chain of 8 KiB in t_in (the socket, being level-triggered, wakes
	 * this again if it has bytes) */
	poked = e->poked_rd;
	e->poked_rd = 0;
	if (e->announce_due) {
		e->announce_due = 0;
		send_connected(e);
	}
	if (what & EV_TIMEOUT) {
		EVUTIL_SET_SOCKET_ERROR(0);
		transport_event(e, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	} else if (!e->failed || e->closing) {
		int full = e->poke_in;
		e->poke_in = 0;
		/* closing reads to the peer's FIN, whatever ended before */
		if (!poked && !e->connecting && !e->rd_parked && !e->peer_eof &&
		    (e->closing ||
			(!e->rd_off && (e->lib_rd || e->handshaking))) &&
		    wire_read(e, fd) < 0)
			goto out;
		if (e->closing && !e->handshaking)
			drop_wire_in(e);
		else
			input_pass(e, full);
		/* What the layers answered (a handshake's next flight) goes
		 * now: the socket is nearly always writable, and waiting for
		 * epoll to say so costs a turn of the loop per round trip. */
		if (evbuffer_get_length(e->t_out) && !e->wr_off &&
		    !e->shut_wr && !e->wr_timed_out && !e->wr_limited) {
			if (wire_write(e) < 0)
				goto out;
			maybe_shutdown(e);
			write_cb_update(e);
		}
	}
out:
	wire_update(e);
	bufferevent_unlock(top);
	bufferevent_decref(top);
}

/* The socket became writable while connecting: how did it end? */
static void
connect_done(struct strata_engine *e, evutil_socket_t fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	e->connecting = 0;
	EVUTIL_SET_SOCKET_ERROR(err);
	transport_event(e, err ? BEV_EVENT_ERROR : BEV_EVENT_CONNECTED);
}

/* Move the user's output down, within the room the wire buffer has. */
static void
direct_output(struct strata_engine *e)
{
	size_t before = evbuffer_get_length(e->top_out);

	/* the user wrote: the write callback is owed (rerun_output() calls
	 * it as soon as the output is at the mark) */
	if (before)
		e->wcb_due = 1;
	rerun_output(e);
	/* nothing taken, nothing to send: wait for a layer's kick (a
	 * handshake that completes) rather than for a writable socket */
	e->out_stalled = before && evbuffer_get_length(e->top_out) >= before &&
	    !evbuffer_get_length(e->t_out);
}

static void
direct_write(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *top = arg;
	struct strata_engine *e = direct_engine(top);

	bufferevent_incref(top);
	bufferevent_lock(top);
	e->poked_wr = 0;
	if (what & EV_TIMEOUT) {
		EVUTIL_SET_SOCKET_ERROR(0);
		transport_event(e, BEV_EVENT_WRITING | BEV_EVENT_TIMEOUT);
		goto out;
	}
	if (e->connecting) {
		connect_done(e, fd);
		goto out;
	}
	if (e->out_finished && !e->failed &&
	    evbuffer_get_length(e->top_out)) {
		engine_fail(e, BEV_EVENT_WRITING, STRATA_ERR_STATE, 0,
		    "strata: write after the output was finished");
		goto out;
	}
	direct_output(e);
	if (!e->wr_off && !e->shut_wr && !e->wr_timed_out &&
	    evbuffer_get_length(e->t_out)) {
		int r = wire_write(e);
		if (r < 0)
			goto out;
		if (r > 0 && evbuffer_get_length(e->t_out) < TRANSPORT_WR_LOW)
			direct_output(e); /* refill */
	}
	maybe_shutdown(e);
	write_cb_update(e);
out:
	wire_update(e);
	bufferevent_unlock(top);
	bufferevent_decref(top);
}

/*
 * Make @p e's top its transport's socket bufferevent. Runs last in
 * strata_engine_build_(), when nothing can fail any more.
 */
static struct bufferevent *
direct_build(struct strata_engine *e, struct bufferevent *t,
    const struct strata_build *b)
{
	bufferevent_lock(t);
	e->direct = 1;
	e->top = t;
	e->tstate = b->tstate;
	e->top_in = bufferevent_get_input(t);
	e->top_out = bufferevent_get_output(t);
	e->lib_rd = !!(t->enabled & EV_READ);
	e->lib_wr = !!(t->enabled & EV_WRITE);
	/* a socket bufferevent freezes its input's end and its output's
	 * start outside its own reads and writes; the engine's are these */
	evbuffer_unfreeze(e->top_in, 0);
	evbuffer_unfreeze(e->top_out, 1);
	direct_assign(e, event_get_fd(&t->ev_read),
	    event_get_fd(&t->ev_write));
	e->ops = direct_ops;
	t->be_ops = (const void *)&e->ops;
	if (b->connected) {
		e->connected = 1;
		start_layers(e);
		if (b->announce)
			announce_later(e);
		else
			send_connected(e);
	}
	wire_update(e);
	bufferevent_unlock(t);
	return t;
}

int
strata_socket_connect_(struct strata_conn *c, struct bufferevent *bev,
    const struct sockaddr *sa, int salen)
{
	struct strata_engine *e = conn_engine(c);
	evutil_socket_t fd;

	if (!e->direct_ok) {
		if (bufferevent_socket_connect(bev, sa, salen) < 0)
			return -1;
	} else {
		fd = bufferevent_getfd(bev);
		if (sa && connect(fd, sa, (socklen_t)salen) < 0 &&
		    errno != EINPROGRESS)
			return -1;
		e->connecting = 1;
		wire_update(e); /* nothing before the stack is built */
	}
	/* connecting reset the I/O sizes (and, over a filter bufferevent,
	 * libevent's read path) */
	strata_socket_tune(bev, -1);
	return 0;
}

void
strata_conn_event_(struct strata_conn *c, short what)
{
	struct strata_engine *e = conn_engine(c);
	struct bufferevent *top = e->top;

	if (!e->direct) {
		bufferevent_trigger_event(e->transport, what, 0);
		return;
	}
	bufferevent_incref(top);
	bufferevent_lock(top);
	transport_event(e, what);
	wire_update(e);
	bufferevent_unlock(top);
	bufferevent_decref(top);
}

/* ---- building and freeing ---- */

static void
layer_release(struct strata_layer *l)
{
	if (l->ctx && l->type->destroy)
		l->type->destroy(l->ctx);
	if (l->up)
		evbuffer_free(l->up);
	if (l->down)
		evbuffer_free(l->down);
	strata_spec_unref_(l->spec);
	strata_free_(l);
}

void
strata_conn_dns_abandon_(struct strata_conn *c,
    struct evdns_getaddrinfo_request *req)
{
	/* A private resolver is freed with the stack (engine_free), failing
	 * its lookups with DNS_ERR_SHUTDOWN, whose callbacks do not read it.
	 * A cancel instead leaves a deferred callback that reads the resolver
	 * (evdns.c:4490) after it was freed. */
	if (!c->own_dns)
		evdns_getaddrinfo_cancel(req);
}

/* This runs as the top's finalizer, later than bufferevent_free(top):
 * a caller may have freed the transport it kept and closed its fd by
 * then, and re-enabling reading on that fd would only make libevent warn
 * (epoll_ctl: EBADF). */
static int
transport_fd_open(struct strata_engine *e)
{
	evutil_socket_t fd = bufferevent_getfd(e->transport);

	return fd < 0 || fcntl(fd, F_GETFD) != -1;
}

static void
engine_free(void *arg)
{
	struct strata_engine *e = arg;
	size_t i;

	if (e->tport && e->tport->destroy && e->tstate)
		e->tport->destroy(e->tstate);
	if (e->conn.own_dns && e->conn.dns)
		evdns_base_free(e->conn.dns, 1);
	if (e->direct) {
		evbuffer_free(e->t_in);
		evbuffer_free(e->t_out);
	} else
		bufferevent_setcb(e->transport, NULL, NULL, NULL, NULL);
	/* bufferevent_filter_new suspended the transport's reading
	 * (bufferevent_filter.c:223); the close-on-free unlink we always
	 * use does not lift it (:234-245), so a transport handed back to
	 * its caller could never read again. */
	if (!e->direct && !e->own_transport && transport_fd_open(e)) {
		bufferevent_unsuspend_read_(e->transport,
		    STRATA_BEV_SUSPEND_FILT_READ);
		if (e->rd_parked)
			bufferevent_enable(e->transport, EV_READ);
	}
	if (!e->direct && e->fill_cb)
		evbuffer_remove_cb_entry(e->top_out,
		    e->fill_cb);
	if (!e->direct && e->tout_cb)
		evbuffer_remove_cb_entry(e->t_out,
		    e->tout_cb);
	for (i = 0; i < e->n; i++)
		layer_release(e->layers[i]);
	if (e->closing) {
		if (e->closing->timer)
			event_free(e->closing->timer);
		strata_free_(e->closing);
	}
	if (e->layers != &e->layer1)
		strata_free_(e->layers);
	strata_free_(e->error);
	strata_free_(e->err_detail);
	strata_free_(e);
}

static void
start_layers(struct strata_engine *e)
{
	size_t i;

	for (i = 0; i < e->n; i++) {
		struct strata_layer *l = e->layers[i];
		if (l->started)
			continue;
		l->started = 1;
		if (l->type->start) {
			e->depth++;
			l->type->start(l->ctx);
			e->depth--;
		}
	}
	if (e->failed) {
		raise_error(e);
		return;
	}
	flush_side_writes(e);
	hooks_update(e);
}

/*
 * Create layers [first, first + spec->n) of @p e from @p spec. Buffers
 * between layers are allocated here; on failure everything made is undone
 * and e->n is unchanged.
 */
static int
layers_add(struct strata_engine *e, struct strata_spec *spec,
    struct strata_error *err)
{
	size_t first = e->n, i, made = 0;
	struct strata_layer **ls;

	if (first + spec->n == 1)
		ls = &e->layer1; /* no array of its own for one layer */
	else if (e->layers == &e->layer1) {
		if ((ls = strata_malloc_((first + spec->n) * sizeof(*ls))))
			memcpy(ls, e->layers, first * sizeof(*ls));
	} else
		ls = strata_realloc_(e->layers, (first + spec->n) *
		    sizeof(*ls));
	if (!ls)
		goto nomem;
	e->layers = ls;
	for (i = 0; i < spec->n; i++, made++) {
		struct strata_layer *l = strata_calloc_(1, sizeof(*l));
		if (!(ls[first + i] = l))
			goto nomem;
		l->type = spec->f[i].type;
		l->engine = e;
		l->index = first + i;
		l->gates = !!(l->type->flags & STRATA_FILTER_GATES_CONNECT);
		strata_spec_ref_(spec);
		l->spec = spec;
		if ((first + i && !(l->down = evbuffer_new())) ||
		    (i + 1 < spec->n && !(l->up = evbuffer_new())))
			goto nomem_made;
		if (l->type->create &&
		    !(l->ctx = l->type->create(spec->f[i].cfg, l, err))) {
			if (err && !err->message[0])
				strata_error_set(err, STRATA_ERR_FILTER,
				    "could not create the layer");
			strata_error_prefix_(err, l->type->name);
			made++;
			goto undo;
		}
	}
	return 0;
nomem_made:
	made++;
nomem:
	strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
undo:
	for (i = 0; i < made; i++)
		layer_release(ls[first + i]);
	return -1;
}

static void
transport_setup(struct strata_engine *e)
{
	struct bufferevent *t = e->transport;

	/* No read watermark: libevent's callback for it runs on every
	 * change of the input (4 % of the instructions of a pass-through
	 * stack); transport_read_update() parks reading at
	 * TRANSPORT_RD_HIGH instead, and strata's own read path asks
	 * strata_transport_read_cap_() how much to take. */
	bufferevent_setwatermark(t, EV_WRITE, TRANSPORT_WR_LOW,
	    TRANSPORT_WR_HIGH);
	e->tout_cb = evbuffer_add_cb(bufferevent_get_output(t), wire_out_cb, e);
}

static void
sigpipe_ignore_once(void)
{
	static int done;
	struct sigaction sa;

	if (__atomic_exchange_n(&done, 1, __ATOMIC_ACQ_REL))
		return;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
		sa.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &sa, NULL);
	}
}

struct strata_engine *
strata_engine_alloc_(struct event_base *base, struct evdns_base *dns,
    int options)
{
	struct strata_engine *e = strata_calloc_(1, sizeof(*e));

	if (!e)
		return NULL;
	e->conn.base = base;
	e->conn.dns = dns;
	e->conn.options = options & ~STRATA_OPT_SERVER;
	e->priority = -1;
	return e;
}

struct strata_conn *
strata_engine_conn_(struct strata_engine *e)
{
	return &e->conn;
}

void
strata_engine_discard_(struct strata_engine *e)
{
	if (!e)
		return;
	while (e->n)
		layer_release(e->layers[--e->n]);
	if (e->conn.own_dns && e->conn.dns)
		evdns_base_free(e->conn.dns, 0);
	if (e->layers != &e->layer1)
		strata_free_(e->layers);
	strata_free_(e);
}

/* The top keeps only the user's callback options; the transport keeps
 * its callbacks synchronous so errno survives until the engine sees it. */
static int
top_options(int options)
{
	/* THREADSAFE is applied after bufferevent_filter_new, see below. */
	return (options & ~(STRATA_OPT_SERVER | BEV_OPT_THREADSAFE)) |
	    BEV_OPT_CLOSE_ON_FREE;
}


struct bufferevent *
strata_engine_build_(struct strata_engine *e, struct bufferevent *transport,
    struct strata_spec *spec, const struct strata_build *b,
    struct strata_error *err)
{
	struct bufferevent *top;

	sigpipe_ignore_once();
	e->transport = transport;
	e->role = b->role;
	e->tport = b->tport;
	e->own_transport = !!b->own_transport;
	e->t_in = bufferevent_get_input(transport);
	e->t_out = bufferevent_get_output(transport);
	if (layers_add(e, spec, err) < 0) {
		strata_engine_discard_(e);
		return NULL;
	}
	e->n = spec->n;
	if (e->direct_ok && b->tport && direct_usable(transport)) {
		struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
		if (!in || !out) {
			if (in)
				evbuffer_free(in);
			if (out)
				evbuffer_free(out);
			strata_error_set(err, STRATA_ERR_NOMEM,
			    "out of memory");
			strata_engine_discard_(e);
			return NULL;
		}
		e->t_in = in;
		e->t_out = out;
		return direct_build(e, transport, b);
	}
	top = bufferevent_filter_new(transport, engine_input, engine_output,
	    top_options(e->conn.options), engine_free, e);
	if (!top) {
		strata_error_set(err, STRATA_ERR_NOMEM,
		    "bufferevent_filter_new failed");
		strata_engine_discard_(e);
		return NULL;
	}
	/* bufferevent_filter_new(THREADSAFE) locks the filter before it sets
	 * the underlying (bufferevent_filter.c:197-201), so the top would
	 * get a lock of its own: a writer thread (top lock, then the
	 * transport's buffers) and the loop (transport lock in its
	 * callbacks, then the top's) deadlock. Share one lock. */
	if ((e->conn.options & BEV_OPT_THREADSAFE) &&
	    bufferevent_enable_locking_(top, NULL) < 0) {
		strata_error_set(err, STRATA_ERR_NOMEM,
		    "could not enable locking");
		bufferevent_free(top); /* engine_free frees e */
		return NULL;
	}
	/* Interpose before the loop can run a transport callback: the top
	 * and the transport now share one lock. */
	bufferevent_lock(top);
	e->top = top;
	e->tstate = b->tstate;
	e->top_in = bufferevent_get_input(top);
	e->top_out = bufferevent_get_output(top);
	/* The top frees its transport on unlink; a caller that keeps the
	 * transport holds a reference, so it is handed back alive with
	 * strata's callbacks gone at once. */
	if (!e->own_transport)
		bufferevent_incref(transport);
	bufferevent_getcb(transport, &e->orig_r, &e->orig_w, &e->orig_e,
	    &e->orig_arg);
	bufferevent_setcb(transport, wrap_r, wrap_w, wrap_e, e);
	event_assign(&top->ev_read, bufferevent_get_base(top), -1,
	    EV_FINALIZE, hook_read, top);
	event_assign(&top->ev_write, bufferevent_get_base(top), -1,
	    EV_FINALIZE, hook_write, top);
	transport_setup(e);
	e->fill_cb = evbuffer_add_cb(bufferevent_get_output(top),
	    top_output_cb, e);
	if (b->connected) {
		e->connected = 1;
		start_layers(e);
		if (b->announce)
			/* From the loop (hook_read): libevent drops an event
			 * raised while the top has no event callback, and the
			 * accept callback sets one only after we return. */
			announce_later(e);
		else
			send_connected(e);
	}
	bufferevent_unlock(top);
	return top;
}

void
strata_engine_accepted_(struct bufferevent *top)
{
	struct strata_engine *e = engine_of(top);
	bufferevent_data_cb r, w;
	bufferevent_event_cb ev;

	bufferevent_getcb(top, &r, &w, &ev, NULL);
	if (!e || (!r && !w && !ev)) /* freed (or never given callbacks) */
		return;
	bufferevent_lock(top);
	if (!e->connect_sent && !e->failed)
		announce_later(e);
	bufferevent_unlock(top);
}

/* ---- pushing onto a live stack (STARTTLS) ---- */

static int
push_live(struct strata_engine *e, struct strata_spec *spec,
    struct strata_error *err)
{
	struct evbuffer *tin = e->top_in;
	struct evbuffer *tout = e->top_out;
	size_t old = e->n, i;
	struct evbuffer *up;

	if (e->failed || e->out_finished || e->eof) {
		strata_error_set(err, STRATA_ERR_STATE,
		    "push: the stack has %s", e->failed ? "failed"
		    : e->eof ? "reached EOF" : "finished its output");
		return -1;
	}
	/* Output written so far belongs below the new layers. */
	if (evbuffer_get_length(tout) &&
	    run_output(e, -1, BEV_NORMAL, 1) < 0)
		goto failed;
	if ((up = evbuffer_new()) == NULL)
		goto nomem;
	if (layers_add(e, spec, err) < 0) {
		evbuffer_free(up);
		return -1;
	}
	/* The old top layer now feeds `up`, which the new layers read, with
	 * the input the user has not read yet; output the old top layer
	 * could not take yet stays its input, below the new layers. */
	e->layers[old - 1]->up = up;
	evbuffer_add_buffer(e->layers[old]->down, tout);
	evbuffer_add_buffer(up, tin);
	e->n = old + spec->n;
	if (e->connected) {
		e->connect_sent = 0;
		start_layers(e);
		for (i = old; i < e->n; i++)
			if (e->layers[i]->gates)
				break;
		if (i == e->n)
			e->connect_sent = 1; /* nothing new to announce */
		else
			send_connected(e);
	}
	rerun_input(e);
	return 0;
failed:
	strata_error_set(err, STRATA_ERR_STATE, "push: %s", e->error);
	return -1;
nomem:
	strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
	return -1;
}

struct bufferevent *
strata_push(struct bufferevent *bev, const char *filters, int options,
    struct strata_error *err)
{
	struct strata_spec *spec;
	struct strata_engine *e;
	struct bufferevent *top = NULL;

	if (!bev) {
		strata_error_set(err, STRATA_ERR_INVALID, "push: no bufferevent");
		return NULL;
	}
	if (!(spec = strata_spec_parse_(filters, 0, err)))
		return NULL;
	if ((e = engine_of(bev)) != NULL) {
		bufferevent_lock(bev);
		if (push_live(e, spec, err) == 0)
			top = bev;
		bufferevent_unlock(bev);
	} else if ((e = strata_engine_alloc_(bufferevent_get_base(bev), NULL,
			options)) != NULL) {
		struct strata_build b = {
			.role = (options & STRATA_OPT_SERVER)
			    ? STRATA_ROLE_SERVER : STRATA_ROLE_CLIENT,
			.connected = 1,
			.own_transport = !!(options & BEV_OPT_CLOSE_ON_FREE),
		};
		top = strata_engine_build_(e, bev, spec, &b, err);
	} else
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
	strata_spec_unref_(spec);
	return top;
}

/* ---- the layer handle ---- */

enum strata_role
strata_layer_role(const struct strata_layer *l)
{
	return l->engine->role;
}

struct bufferevent *
strata_layer_top(struct strata_layer *l)
{
	return l->engine->top;
}

const char *
strata_layer_peer_name(struct strata_layer *l)
{
	struct strata_engine *e = l->engine;

	if (e->role != STRATA_ROLE_CLIENT || !e->tport || !e->tport->host ||
	    !e->tstate)
		return NULL;
	return e->tport->host(e->tstate);
}

struct event_base *
strata_layer_base(struct strata_layer *l)
{
	return bufferevent_get_base(l->engine->transport);
}

struct evbuffer *
strata_layer_below(struct strata_layer *l)
{
	struct strata_engine *e = l->engine;
	size_t i = l->index;

	return out_dst(e, i);
}

void
strata_layer_wrote_below(struct strata_layer *l)
{
	l->side_writes++;
	l->engine->below_dirty = 1;
	if (!l->engine->depth && l->engine->top)
		poke_write(l->engine);
}

void
strata_layer_kick(struct strata_layer *l)
{
	if (!l->engine->top)
		return;
	poke_write(l->engine);
	poke_read(l->engine);
}

void
strata_layer_input_end(struct strata_layer *l)
{
	l->in_ended = 1; /* acted on once the pass is over: input_ended() */
}

void
strata_layer_flush_later(struct strata_layer *l)
{
	struct strata_engine *e = l->engine;

	if (e->flush_due || !e->top)
		return;
	e->flush_due = 1;
	poke_write(e);
}

void
strata_layer_ready(struct strata_layer *l)
{
	l->ready = 1;
	if (l->engine->top)
		send_connected(l->engine);
}

/* ---- the transport's handle ---- */

struct event_base *
strata_conn_base(struct strata_conn *c)
{
	return c->base;
}

struct evdns_base *
strata_conn_dns(struct strata_conn *c)
{
	if (!c->dns) {
		c->dns = evdns_base_new(c->base,
		    EVDNS_BASE_INITIALIZE_NAMESERVERS);
		c->own_dns = c->dns != NULL;
	}
	return c->dns;
}

int
strata_conn_options(struct strata_conn *c)
{
	return c->options;
}

void
strata_conn_fail(struct strata_conn *c, int sys_errno, const char *fmt, ...)
{
	struct strata_engine *e = conn_engine(c);
	char cause[STRATA_ERROR_MAX], msg[STRATA_ERROR_MAX + 40];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cause, sizeof(cause), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s: %s",
	    e->tport ? e->tport->name : "transport", cause);
	if (!e->top) /* not built yet: nothing to raise on */
		return;
	engine_fail(e, 0, STRATA_ERR_SYSTEM, sys_errno, msg);
	raise_error(e);
}

ev_ssize_t
strata_transport_read_cap_(struct bufferevent *transport)
{
	bufferevent_data_cb r = NULL;
	void *arg = NULL;
	struct strata_engine *e;
	size_t len;

	bufferevent_getcb(transport, &r, NULL, NULL, &arg);
	if (r != wrap_r)
		return -1;
	e = arg;
	len = evbuffer_get_length(e->t_in);
	if (len >= TRANSPORT_RD_HIGH) {
		transport_read_update(e);
		return 0;
	}
	return (ev_ssize_t)(TRANSPORT_RD_HIGH - len);
}

void
strata_transport_read_charged_(struct bufferevent *transport, ev_ssize_t n)
{
	bufferevent_data_cb r = NULL;
	void *arg = NULL;

	bufferevent_getcb(transport, &r, NULL, NULL, &arg);
	if (r == wrap_r && ((struct strata_engine *)arg)->group)
		bufferevent_rate_limit_group_decrement_read(
		    ((struct strata_engine *)arg)->group, n);
}

int
strata_peer_address(struct bufferevent *top, char *buf, size_t len,
    struct sockaddr *sa, int *salen)
{
	struct strata_engine *e = engine_of(top);

	if (!e || !e->tport || !e->tport->peer || !e->tstate)
		return -1;
	return e->tport->peer(e->tstate, buf, len, sa, salen);
}

/* Internal: the transport state of a stack, if its transport is @p t. */
void *
strata_transport_state_(struct bufferevent *top,
    const struct strata_transport_type *t)
{
	struct strata_engine *e = engine_of(top);

	return e && e->tport == t ? e->tstate : NULL;
}

/* ---- timeouts, rate limits ---- */

int
strata_set_timeouts(struct bufferevent *top, const struct timeval *rd,
    const struct timeval *wr)
{
	struct strata_engine *e = engine_of(top);
	int r;

	if (!e)
		return -1;
	bufferevent_lock(top);
	r = bufferevent_set_timeouts(e->transport, rd, wr);
	bufferevent_unlock(top);
	return r;
}

int
strata_set_rate_limit(struct bufferevent *top,
    struct ev_token_bucket_cfg *cfg)
{
	struct strata_engine *e = engine_of(top);

	return e ? bufferevent_set_rate_limit(e->transport, cfg) : -1;
}

int
strata_set_rate_limit_group(struct bufferevent *top,
    struct bufferevent_rate_limit_group *group)
{
	struct strata_engine *e = engine_of(top);

	if (!e)
		return -1;
	if (!e->direct) /* a direct stack's group is charged by libevent */
		e->group = group;
	if (!group)
		return bufferevent_remove_from_rate_limit_group(e->transport);
	return bufferevent_add_to_rate_limit_group(e->transport, group);
}

/* ---- graceful close ---- */

static void
close_finish(struct strata_engine *e, int delivered)
{
	struct close_state *c = e->closing;
	strata_close_fn cb = c->cb;
	void *arg = c->arg;

	if (!c->timer)
		return; /* already finished */
	event_free(c->timer);
	c->timer = NULL;
	if (cb)
		cb(delivered && !e->failed, arg);
	bufferevent_free(e->top);
}

static void
close_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct strata_engine *e = arg;
	struct bufferevent *top = e->top;

	bufferevent_lock(top);
	close_finish(e, 0);
	bufferevent_unlock(top);
}

/*
 * Closing: input is dropped from now on (wrap_r, engine_input); drop what
 * is parked already too. A reader that had stopped reading left the top's
 * input over its read high watermark, which keeps the transport's reading
 * suspended (libevent's filter suspends its underlying while its own
 * reading is), or left the transport's input full: either way nothing
 * would be read again, the peer's EOF would never come, its writes would
 * stall, and the linger would end in a reset of data in flight.
 */
static void
close_drop_input(struct strata_engine *e)
{
	size_t i;

	bufferevent_setwatermark(e->top, EV_READ, 0, 0);
	evbuffer_drain(e->top_in, evbuffer_get_length(e->top_in));
	for (i = 0; i + 1 < e->n; i++)
		evbuffer_drain(e->layers[i]->up,
		    evbuffer_get_length(e->layers[i]->up));
	drop_wire_in(e);
	transport_read_update(e);
}

int
strata_close(struct bufferevent *top, const struct timeval *linger,
    strata_close_fn cb, void *arg)
{
	static const struct timeval dflt = {30, 0};
	struct strata_engine *e = engine_of(top);
	struct close_state *c;

	if (!e || e->closing)
		return -1;
	if (!(c = strata_calloc_(1, sizeof(*c))))
		return -1;
	c->cb = cb;
	c->arg = arg;
	c->timer = evtimer_new(bufferevent_get_base(top), close_timeout, e);
	if (!c->timer) {
		strata_free_(c);
		return -1;
	}
	bufferevent_lock(top);
	bufferevent_setcb(top, NULL, NULL, NULL, NULL);
	bufferevent_set_timeouts(e->transport, NULL, NULL);
	e->closing = c;
	evtimer_add(c->timer, linger ? linger : &dflt);
	if (e->failed) {
		close_finish(e, 0);
	} else {
		if (!e->handshaking)
			close_drop_input(e);
		bufferevent_enable(top, EV_READ | EV_WRITE);
		/* a timeout may have disabled the transport; after a
		 * half-close its write side is gone (a pipe's fd is closed) */
		bufferevent_enable(e->transport,
		    e->shut_wr ? EV_READ : EV_READ | EV_WRITE);
		bufferevent_flush(top, EV_WRITE, BEV_FINISHED);
		if (e->failed)
			close_finish(e, 0);
		else if (e->shut_wr && e->peer_eof)
			close_finish(e, 1);
	}
	bufferevent_unlock(top);
	return 0;
}

/* ---- statistics ---- */

struct strata_stats_sink {
	char *buf;
	size_t len, off;
};

/* Where the next text goes; NULL with no room left (snprintf rules: the
 * offset keeps counting what would have been written). */
static char *
sink_at(struct strata_stats_sink *sink)
{
	return sink->off < sink->len ? sink->buf + sink->off : NULL;
}

static size_t
sink_room(struct strata_stats_sink *sink)
{
	return sink->off < sink->len ? sink->len - sink->off : 0;
}

void
strata_stat(struct strata_stats_sink *sink, const char *key,
    const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(sink_at(sink), sink_room(sink), "%s%s=",
	    sink->off ? " " : "", key);
	sink->off += (size_t)(n > 0 ? n : 0);
	va_start(ap, fmt);
	n = vsnprintf(sink_at(sink), sink_room(sink), fmt, ap);
	va_end(ap);
	sink->off += (size_t)(n > 0 ? n : 0);
}

static const char *
transport_name(struct strata_engine *e)
{
	return e->tport ? e->tport->name : "transport";
}

int
strata_stats(struct bufferevent *top, struct strata_layer_stats *out,
    size_t n)
{
	struct strata_engine *e = engine_of(top);
	size_t i;

	if (!e)
		return -1;
	bufferevent_lock(top);
	count_wire_in(e);
	if (n > 0) {
		memset(&out[0], 0, sizeof(out[0]));
		out[0].name = transport_name(e);
		out[0].read_in = out[0].read_out = e->wire_in;
		out[0].write_in = out[0].write_out = e->wire_out;
	}
	for (i = 0; i < e->n && i + 1 < n; i++) {
		struct strata_layer *l = e->layers[i];
		out[i + 1].name = l->type->name;
		out[i + 1].read_in = l->read_in;
		out[i + 1].read_out = l->read_out;
		out[i + 1].write_in = l->write_in;
		out[i + 1].write_out = l->write_out;
	}
	i = e->n + 1;
	bufferevent_unlock(top);
	return (int)i;
}

int
strata_layer_describe(struct bufferevent *top, int index, char *buf,
    size_t len)
{
	struct strata_engine *e = engine_of(top);
	struct strata_stats_sink sink = {buf, len, 0};
	struct strata_layer *l;

	if (!e || index < 0 || (size_t)index > e->n)
		return -1;
	if (len)
		buf[0] = 0;
	if (index == 0) {
		bufferevent_lock(top);
		if (e->tport && e->tport->stats && e->tstate)
			e->tport->stats(e->tstate, &sink);
		bufferevent_unlock(top);
		return (int)sink.off;
	}
	l = e->layers[index - 1];
	bufferevent_lock(top);
	if (l->type->stats)
		l->type->stats(l->ctx, &sink);
	bufferevent_unlock(top);
	return (int)sink.off;
}

int
strata_stats_format(struct bufferevent *top, char *buf, size_t len)
{
	struct strata_layer_stats st[33];
	char extra[256];
	size_t off = 0;
	int n, i;

	if ((n = strata_stats(top, st, 33)) < 0)
		return -1;
	if (len)
		buf[0] = 0;
	for (i = n > 33 ? 32 : n - 1; i >= 0; i--) {
		int w;
		strata_layer_describe(top, i, extra, sizeof(extra));
		w = snprintf(off < len ? buf + off : NULL,
		    off < len ? len - off : 0,
		    "%-10s read %10llu -> %-10llu write %10llu -> %-10llu %s\n",
		    st[i].name, (unsigned long long)st[i].read_in,
		    (unsigned long long)st[i].read_out,
		    (unsigned long long)st[i].write_in,
		    (unsigned long long)st[i].write_out, extra);
		off += (size_t)(w > 0 ? w : 0);
	}
	return (int)off;
}
