/*
 * The unix transport: socket files and the abstract namespace, stale
 * sockets, file modes and ownership of the socket file, peer credentials,
 * stacks (lines, frames) over unix sockets, errors and their messages,
 * descriptors, and a transport registered by the user.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "frames.h"
#include "frames-helpers.h"
#include "helpers.h"

/* ---- a private directory for socket files ---- */

/* One directory per test case, made and removed in the parent (so a test
 * that fails or crashes in its child leaves nothing behind), and one
 * directory per test inside it. */
static char case_dir[64];
static char dir[96];

static void
case_setup(void)
{
	snprintf(case_dir, sizeof(case_dir), "/tmp/strata-unix-XXXXXX");
	if (!mkdtemp(case_dir)) {
		perror("mkdtemp");
		abort();
	}
}

static void
remove_tree(const char *path)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", path);
}

static void
case_teardown(void)
{
	remove_tree(case_dir);
}

static void
dir_setup(void)
{
	snprintf(dir, sizeof(dir), "%s/t-XXXXXX", case_dir);
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void
dir_teardown(void)
{
	remove_tree(dir);
}

/* "unix:<dir>/<name><suffix>" into a static buffer (one of two). */
static const char *
at(const char *name, const char *suffix)
{
	static char buf[2][256];
	static int which;

	which ^= 1;
	snprintf(buf[which], sizeof(buf[which]), "unix:%s/%s%s", dir, name,
	    suffix);
	return buf[which];
}

static const char *
path_of(const char *name)
{
	static char buf[192];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static int
exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* A socket file nobody listens on: bound, then closed without unlink. */
static void
make_stale_socket(const char *path)
{
	struct sockaddr_un a;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(path), sizeof(a.sun_path));
	memcpy(a.sun_path, path, strlen(path));
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	close(fd);
}

static void
exchange_lines(struct event_base *base, struct th_peer *c)
{
	const char *text = "hello\nstrata over unix\n";

	c->want = strlen(text);
	bufferevent_write(c->top, text, strlen(text));
	th_run_until(base, &c->enough, 2000, "the echoed lines");
	ck_assert(th_got_equals(c, text));
	evbuffer_drain(c->got, evbuffer_get_length(c->got));
	c->enough = 0;
}

static void
exchange_frames(struct event_base *base, struct th_peer *c)
{
	static unsigned char big[70000];
	const struct th_frame f[] = {{"hello", 5}, {big, sizeof(big)}};

	th_pattern(big, sizeof(big), 3);
	th_frames_echo(base, c, f, 2);
}

/* ---- paths and abstract names ---- */

START_TEST(path_lines_connected_both_sides)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;

	th_srv_setup(&s, base, at("s", " | lines"), 1);
	ck_assert_str_eq(s.addr, at("s", ""));
	ck_assert_int_eq(strata_listener_port(s.l), -1);
	c = th_peer_connect(base, NULL, at("s", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	c->want = 6;
	bufferevent_write(c->top, "early\n", 6); /* before CONNECTED */
	th_run_until(base, &c->connected, 2000, "CONNECTED on the client");
	th_run_until(base, &c->enough, 2000, "the early line");
	ck_assert(th_got_equals(c, "early\n"));
	evbuffer_drain(c->got, 6);
	c->enough = 0;
	exchange_lines(base, c);
	ck_assert_int_eq(s.n, 1);
	th_run_until(base, &s.p[0]->connected, 1000,
	    "CONNECTED on the accepted stack");
	th_run_for(base, 20);
	ck_assert_int_eq(c->connected, 1);
	ck_assert_int_eq(s.p[0]->connected, 1);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(path_frames)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;

	ck_assert_int_eq(frames_register(NULL), 0);
	th_srv_setup(&s, base, at("f", " | frames(max-frame=128k)"), 1);
	c = th_peer_connect(base, NULL, at("f", " | frames(max-frame=128k)"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_frames(base, c);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(abstract_name)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;
	struct sockaddr_un a;
	int salen = sizeof(a);
	char name[64], stack[128], text[128];

	ck_assert_int_eq(frames_register(NULL), 0);
	snprintf(name, sizeof(name), "@strata-test-%d-abs", (int)getpid());
	snprintf(stack, sizeof(stack), "unix:%s | frames", name);
	th_srv_setup(&s, base, stack, 1);
	snprintf(text, sizeof(text), "unix:%s", name);
	ck_assert_str_eq(s.addr, text);
	ck_assert(!exists(name + 1));
	c = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	exchange_frames(base, c);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    (struct sockaddr *)&a, &salen), 0);
	snprintf(stack, sizeof(stack), "unix:%s", name);
	ck_assert_str_eq(text, stack);
	ck_assert_int_eq(a.sun_family, AF_UNIX);
	ck_assert_int_eq(a.sun_path[0], 0);
	ck_assert(!memcmp(a.sun_path + 1, name + 1, strlen(name) - 1));
	/* the name is taken while the listener lives */
	snprintf(stack, sizeof(stack), "unix:%s", name);
	{
		struct strata_error err;
		ck_assert_ptr_null(strata_listen(base, stack, 0, th_srv_accept,
		    &s, &err));
		ck_assert_msg(strstr(err.message, "Address already in use") !=
		    NULL, "'%s'", err.message);
	}
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(peer_address_and_credentials)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c, *sp;
	struct sockaddr_un a;
	int salen = sizeof(a), pid = 0, uid = -1, gid = -1;
	char text[256];

	th_srv_setup(&s, base, at("p", " | lines"), 1);
	c = th_peer_connect(base, NULL, at("p", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	ck_assert_int_gt(strata_peer_address(c->top, text, sizeof(text),
	    (struct sockaddr *)&a, &salen), 0);
	ck_assert_str_eq(text, at("p", ""));
	ck_assert_int_eq(a.sun_family, AF_UNIX);
	ck_assert_str_eq(a.sun_path, path_of("p"));
	sp = s.p[0];
	ck_assert_int_gt(strata_peer_address(sp->top, text, sizeof(text),
	    NULL, NULL), 0);
	ck_assert_msg(!strncmp(text, "unix:", 5), "accepted peer '%s'", text);
	/* the accepted side knows who connected: this process */
	ck_assert_int_eq(strata_peer_credentials(sp->top, &pid, &uid, &gid),
	    0);
	ck_assert_int_eq(pid, (int)getpid());
	ck_assert_int_eq(uid, (int)getuid());
	ck_assert_int_eq(gid, (int)getgid());
	/* and the client knows who listens */
	pid = 0;
	ck_assert_int_eq(strata_peer_credentials(c->top, &pid, NULL, NULL), 0);
	ck_assert_int_eq(pid, (int)getpid());
	ck_assert_int_eq(strata_exit_status(c->top), -2);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* ---- the socket file ---- */

START_TEST(stale_socket_is_replaced)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;

	make_stale_socket(path_of("stale"));
	ck_assert(exists(path_of("stale")));
	th_srv_setup(&s, base, at("stale", " | lines"), 1);
	c = th_peer_connect(base, NULL, at("stale", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	th_peer_free(c);
	th_srv_teardown(&s);
	ck_assert(!exists(path_of("stale")));
	event_base_free(base);
}
END_TEST

START_TEST(regular_file_is_refused)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;
	struct stat sb;
	int fd;

	fd = open(path_of("file"), O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "keep", 4), 4);
	close(fd);
	ck_assert_ptr_null(strata_listen(base, at("file", ""), 0, th_srv_accept,
	    &s, &err));
	ck_assert_msg(strstr(err.message, "is not a socket") != NULL, "'%s'",
	    err.message);
	ck_assert_msg(strstr(err.message, path_of("file")) != NULL,
	    "'%s' does not name the path", err.message);
	ck_assert_msg(!strncmp(err.message, "unix: ", 6), "'%s'", err.message);
	ck_assert_int_eq(stat(path_of("file"), &sb), 0);
	ck_assert(S_ISREG(sb.st_mode));
	ck_assert_int_eq(sb.st_size, 4);
	event_base_free(base);
}
END_TEST

START_TEST(live_listener_is_refused)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s, s2;
	struct th_peer *c;

	th_srv_setup(&s, base, at("live", " | lines"), 1);
	ck_assert_ptr_null(strata_listen(base, at("live", ""), 0, th_srv_accept,
	    &s2, &err));
	ck_assert_msg(strstr(err.message, "in use") != NULL, "'%s'",
	    err.message);
	ck_assert_msg(strstr(err.message, path_of("live")) != NULL, "'%s'",
	    err.message);
	/* the first listener still serves */
	c = th_peer_connect(base, NULL, at("live", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	th_peer_free(c);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(mode_option)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;
	struct stat sb;

	th_srv_setup(&s, base, at("m", "(mode=0600)"), 0);
	ck_assert_int_eq(stat(path_of("m"), &sb), 0);
	ck_assert(S_ISSOCK(sb.st_mode));
	ck_assert_int_eq(sb.st_mode & 07777, 0600);
	th_srv_teardown(&s);
	th_srv_setup(&s, base, at("m", "(mode=0666)"), 0);
	ck_assert_int_eq(stat(path_of("m"), &sb), 0);
	ck_assert_int_eq(sb.st_mode & 07777, 0666);
	th_srv_teardown(&s);
	ck_assert_ptr_null(strata_listen(base, at("m", "(mode=rw)"), 0,
	    th_srv_accept, &s, &err));
	ck_assert_msg(strstr(err.message, "mode") != NULL, "'%s'",
	    err.message);
	ck_assert_ptr_null(strata_listen(base, at("m", "(mode=0999)"), 0,
	    th_srv_accept, &s, &err));
	ck_assert_msg(strstr(err.message, "0999") != NULL, "'%s'",
	    err.message);
	ck_assert(!exists(path_of("m")));
	event_base_free(base);
}
END_TEST

START_TEST(listener_removes_its_file)
{
	struct event_base *base = event_base_new();
	struct th_server s;

	th_srv_setup(&s, base, at("gone", ""), 0);
	ck_assert(exists(path_of("gone")));
	th_srv_teardown(&s);
	ck_assert(!exists(path_of("gone")));
	event_base_free(base);
}
END_TEST

START_TEST(listener_keeps_a_replaced_file)
{
	struct event_base *base = event_base_new();
	struct th_server s, s2;
	struct th_peer *c;
	int fd;

	/* replaced by a regular file */
	th_srv_setup(&s, base, at("r", ""), 0);
	ck_assert_int_eq(unlink(path_of("r")), 0);
	fd = open(path_of("r"), O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	th_srv_teardown(&s);
	ck_assert(exists(path_of("r")));
	ck_assert_int_eq(unlink(path_of("r")), 0);

	/* replaced by another listener's socket */
	th_srv_setup(&s, base, at("r", ""), 0);
	ck_assert_int_eq(unlink(path_of("r")), 0);
	th_srv_setup(&s2, base, at("r", " | lines"), 1);
	th_srv_teardown(&s);
	ck_assert(exists(path_of("r")));
	c = th_peer_connect(base, NULL, at("r", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	th_peer_free(c);
	th_srv_teardown(&s2);
	ck_assert(!exists(path_of("r")));
	event_base_free(base);
}
END_TEST

/* ---- errors ---- */

START_TEST(empty_path)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;

	ck_assert_ptr_null(strata_connect(base, NULL, "unix:", 0, &err));
	ck_assert_msg(strstr(err.message, "unix: empty socket path") != NULL,
	    "'%s'", err.message);
	ck_assert_ptr_null(strata_listen(base, "unix: | lines", 0,
	    th_srv_accept, &s, &err));
	ck_assert_msg(strstr(err.message, "empty socket path") != NULL,
	    "'%s'", err.message);
	ck_assert_ptr_null(strata_connect(base, NULL, "unix:@", 0, &err));
	ck_assert_msg(strstr(err.message, "empty socket path") != NULL,
	    "'%s'", err.message);
	event_base_free(base);
}
END_TEST

START_TEST(path_too_long)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;
	char stack[300];
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

	memset(stack, 'x', sizeof(stack));
	memcpy(stack, "unix:/tmp/", 10);
	stack[5 + max + 1] = 0; /* one byte more than fits */
	ck_assert_ptr_null(strata_connect(base, NULL, stack, 0, &err));
	ck_assert_msg(strstr(err.message, "longer than") != NULL, "'%s'",
	    err.message);
	ck_assert_msg(strstr(err.message, "sun_path") != NULL, "'%s'",
	    err.message);
	ck_assert_int_eq(err.code, STRATA_ERR_SYNTAX);
	ck_assert_ptr_null(strata_listen(base, stack, 0, th_srv_accept, &s,
	    &err));
	ck_assert_msg(strstr(err.message, "longer than") != NULL, "'%s'",
	    err.message);
	/* the longest that fits is accepted (and refused only by the
	 * missing directory) */
	stack[5 + max] = 0;
	ck_assert_ptr_null(strata_connect(base, NULL, stack, 0, &err));
	ck_assert_msg(strstr(err.message, "No such file or directory") !=
	    NULL, "'%s'", err.message);
	event_base_free(base);
}
END_TEST

START_TEST(missing_directory)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;
	int fds = th_count_fds();

	ck_assert_ptr_null(strata_listen(base, at("nodir/s", ""), 0,
	    th_srv_accept, &s, &err));
	ck_assert_int_eq(err.code, STRATA_ERR_SYSTEM);
	ck_assert_int_eq(err.sys_errno, ENOENT);
	ck_assert_msg(strstr(err.message, "No such file or directory") !=
	    NULL, "'%s'", err.message);
	ck_assert_msg(strstr(err.message, path_of("nodir/s")) != NULL, "'%s'",
	    err.message);
	/* connect knows at once too */
	ck_assert_ptr_null(strata_connect(base, NULL, at("nodir/s", ""), 0,
	    &err));
	ck_assert_int_eq(err.sys_errno, ENOENT);
	ck_assert_msg(strstr(err.message, "No such file or directory") !=
	    NULL, "'%s'", err.message);
	ck_assert_msg(!strncmp(err.message, "unix: ", 6), "'%s'", err.message);
	ck_assert_msg(strstr(err.message, path_of("nodir/s")) != NULL, "'%s'",
	    err.message);
	ck_assert_int_eq(th_count_fds(), fds);
	event_base_free(base);
}
END_TEST

START_TEST(connect_refused_at_once)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	int fds;

	make_stale_socket(path_of("dead"));
	fds = th_count_fds();
	ck_assert_ptr_null(strata_connect(base, NULL, at("dead", " | lines"),
	    0, &err));
	ck_assert_int_eq(err.sys_errno, ECONNREFUSED);
	ck_assert_msg(strstr(err.message, "Connection refused") != NULL, "'%s'",
	    err.message);
	ck_assert_int_eq(th_count_fds(), fds);
	event_base_free(base);
}
END_TEST

/* ---- descriptors: every accepted and connected fd is closed ---- */

/*
 * strata_listen/strata_connect with options 0 (no BEV_OPT_CLOSE_ON_FREE):
 * the sockets strata made are still strata's alone, and freeing a stack
 * must close its socket; the peer sees EOF.
 */
START_TEST(connected_fd_closed_without_close_on_free)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;
	int fds0;

	th_srv_setup(&s, base, at("fd", " | lines"), 1);
	fds0 = th_count_fds();
	c = th_peer_connect(base, NULL, at("fd", " | lines"), 0);
	exchange_lines(base, c);
	th_peer_free(c);
	th_run_until(base, &s.p[0]->eof, 2000,
	    "EOF after the client stack was freed");
	th_srv_free_peers(&s);
	th_run_for(base, 10);
	ck_assert_int_eq(th_count_fds(), fds0);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

START_TEST(accepted_fd_closed_without_close_on_free)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	struct th_peer *c;
	int fds0;

	th_srv_setup_opts(&s, base, at("fd", " | lines"), 1, 0);
	fds0 = th_count_fds();
	c = th_peer_connect(base, NULL, at("fd", " | lines"),
	    BEV_OPT_CLOSE_ON_FREE);
	exchange_lines(base, c);
	th_srv_free_peers(&s);
	th_run_until(base, &c->eof, 2000,
	    "EOF after the accepted stack was freed");
	th_peer_free(c);
	th_run_for(base, 10);
	ck_assert_int_eq(th_count_fds(), fds0);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* Many connections in a row: no descriptor is left behind. */
START_TEST(many_connections_no_fd_growth)
{
	struct event_base *base = event_base_new();
	struct th_server s;
	int fds0, fds1, i;

	th_srv_setup(&s, base, at("fd", " | lines"), 1);
	fds0 = th_count_fds();
	for (i = 0; i < 200; i++) {
		struct th_peer *c = th_peer_connect(base, NULL,
		    at("fd", " | lines"), BEV_OPT_CLOSE_ON_FREE);
		exchange_lines(base, c);
		th_peer_free(c);
		th_run_until(base, &s.p[0]->eof, 2000, "EOF on the accepted");
		th_srv_free_peers(&s);
	}
	th_run_for(base, 10);
	fds1 = th_count_fds();
	ck_assert_msg(fds1 <= fds0 + 1, "fds grew from %d to %d", fds0, fds1);
	th_srv_teardown(&s);
	event_base_free(base);
}
END_TEST

/* ---- a transport registered by the user: "sp:FD", one end of a
 * socketpair given by number ---- */

static int sp_destroyed;

struct sp_state {
	struct bufferevent *bev;
	struct event *announce;
	int fd;
};

static int
sp_config(void **cfg, const char *address, const struct strata_option *o,
    size_t n, struct strata_error *err)
{
	char *end;
	long fd = strtol(address, &end, 10);
	int *c;

	(void)o;
	(void)n;
	if (!*address || *end || fd < 0 || fd > 65535) {
		strata_error_set(err, STRATA_ERR_SYNTAX,
		    "expected sp:FD, got 'sp:%s'", address);
		return -1;
	}
	c = malloc(sizeof(*c));
	if (!c) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return -1;
	}
	*c = (int)fd;
	*cfg = c;
	return 0;
}

/* The socket is connected already; say so from the loop, once the engine
 * sits on the bufferevent's callbacks. */
static void
sp_announce(evutil_socket_t fd, short what, void *arg)
{
	struct sp_state *st = arg;

	(void)fd;
	(void)what;
	bufferevent_trigger_event(st->bev, BEV_EVENT_CONNECTED, 0);
}

static struct bufferevent *
sp_connect(const void *cfg, struct strata_conn *c, void **state,
    struct strata_error *err)
{
	int fd = *(const int *)cfg;
	struct sp_state *st;

	if (fcntl(fd, F_GETFD) < 0) {
		strata_error_set(err, STRATA_ERR_SYSTEM, "fd %d is not open",
		    fd);
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	ck_assert_ptr_nonnull(st);
	st->fd = fd;
	st->bev = bufferevent_socket_new(strata_conn_base(c), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	st->announce = event_new(strata_conn_base(c), -1, 0, sp_announce, st);
	ck_assert_ptr_nonnull(st->bev);
	ck_assert_ptr_nonnull(st->announce);
	event_active(st->announce, EV_TIMEOUT, 1);
	*state = st;
	return st->bev;
}

static int
sp_peer(void *state, char *buf, size_t len, struct sockaddr *sa, int *salen)
{
	struct sp_state *st = state;

	(void)sa;
	if (salen)
		*salen = 0;
	return snprintf(buf, len, "sp:fd %d", st->fd);
}

static void
sp_destroy(void *state)
{
	struct sp_state *st = state;

	event_free(st->announce);
	free(st);
	sp_destroyed++;
}

static const struct strata_transport_type sp_transport = {
	.name = "sp",
	.summary = "test: one end of a socketpair, by fd number",
	.config = sp_config,
	.config_free = free,
	.connect = sp_connect,
	.peer = sp_peer,
	.destroy = sp_destroy,
};

static const struct strata_transport_type bad_name_transport = {
	.name = "Bad Name",
	.config = sp_config,
	.connect = sp_connect,
};

static void
sp_register(void)
{
	static int done;
	struct strata_error err;

	if (done)
		return;
	done = 1;
	ck_assert_msg(strata_register_transport(&sp_transport, &err) == 0,
	    "register: %s", err.message);
}

START_TEST(user_transport_by_name)
{
	struct event_base *base = event_base_new();
	struct th_peer *a, *b;
	char stack[64], text[64];
	int fds[2];

	sp_register();
	sp_destroyed = 0;
	ck_assert_ptr_eq(strata_find_transport("sp"), &sp_transport);
	th_socketpair(fds);
	snprintf(stack, sizeof(stack), "sp:%d | lines", fds[0]);
	a = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	snprintf(stack, sizeof(stack), "sp:%d | lines", fds[1]);
	b = th_peer_connect(base, NULL, stack, BEV_OPT_CLOSE_ON_FREE);
	b->echo = 1;
	th_run_until(base, &a->connected, 1000, "CONNECTED from sp");
	th_run_until(base, &b->connected, 1000, "CONNECTED from sp");
	exchange_lines(base, a);
	ck_assert_int_gt(strata_peer_address(a->top, text, sizeof(text), NULL,
	    NULL), 0);
	snprintf(stack, sizeof(stack), "sp:fd %d", fds[0]);
	ck_assert_str_eq(text, stack);
	th_peer_free(a);
	th_peer_free(b);
	th_run_for(base, 10); /* libevent finalizes freed bufferevents */
	ck_assert_int_eq(sp_destroyed, 2);
	event_base_free(base);
}
END_TEST

START_TEST(user_transport_errors)
{
	struct event_base *base = event_base_new();
	struct strata_error err;
	struct th_server s;
	const struct strata_transport_type *list[64];
	size_t n, i;
	int found = 0;

	sp_register();
	/* the name is taken now; a malformed name is refused */
	ck_assert_int_eq(strata_register_transport(&sp_transport, &err), -1);
	ck_assert_msg(strstr(err.message, "sp") != NULL, "'%s'", err.message);
	ck_assert_int_eq(strata_register_transport(&bad_name_transport, &err),
	    -1);
	ck_assert_ptr_null(strata_find_transport("Bad Name"));
	n = strata_list_transports(list, 64);
	for (i = 0; i < n && i < 64; i++)
		found |= list[i] == &sp_transport;
	ck_assert(found);
	/* its own errors, prefixed by its name */
	ck_assert_ptr_null(strata_connect(base, NULL, "sp:x", 0, &err));
	ck_assert_str_eq(err.message, "sp: expected sp:FD, got 'sp:x'");
	close(60);
	ck_assert_ptr_null(strata_connect(base, NULL, "sp:60", 0, &err));
	ck_assert_str_eq(err.message, "sp: fd 60 is not open");
	/* it has no listen slot */
	ck_assert_ptr_null(strata_listen(base, "sp:3", 0, th_srv_accept, &s,
	    &err));
	ck_assert_msg(strstr(err.message, "cannot listen") != NULL, "'%s'",
	    err.message);
	/* unknown schemes list the known ones, the user's included */
	ck_assert_ptr_null(strata_connect(base, NULL, "nope:1", 0, &err));
	ck_assert_msg(strstr(err.message, "nope") != NULL &&
	    strstr(err.message, "sp") != NULL, "'%s'", err.message);
	event_base_free(base);
}
END_TEST

/* A test case whose tests each get a fresh directory (dir). */
static TCase *
dir_case(const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
	tcase_add_checked_fixture(tc, dir_setup, dir_teardown);
	return tc;
}

int
main(void)
{
	Suite *s = suite_create("transport-unix");
	TCase *tc;
	SRunner *sr;
	int failed;

	tc = dir_case("connect");
	tcase_add_test(tc, path_lines_connected_both_sides);
	tcase_add_test(tc, path_frames);
	tcase_add_test(tc, abstract_name);
	tcase_add_test(tc, peer_address_and_credentials);
	suite_add_tcase(s, tc);

	tc = dir_case("socket-file");
	tcase_add_test(tc, stale_socket_is_replaced);
	tcase_add_test(tc, regular_file_is_refused);
	tcase_add_test(tc, live_listener_is_refused);
	tcase_add_test(tc, mode_option);
	tcase_add_test(tc, listener_removes_its_file);
	tcase_add_test(tc, listener_keeps_a_replaced_file);
	suite_add_tcase(s, tc);

	tc = dir_case("errors");
	tcase_add_test(tc, empty_path);
	tcase_add_test(tc, path_too_long);
	tcase_add_test(tc, missing_directory);
	tcase_add_test(tc, connect_refused_at_once);
	suite_add_tcase(s, tc);

	tc = dir_case("fds");
	tcase_add_test(tc, connected_fd_closed_without_close_on_free);
	tcase_add_test(tc, accepted_fd_closed_without_close_on_free);
	tcase_add_test(tc, many_connections_no_fd_growth);
	suite_add_tcase(s, tc);

	tc = tcase_create("user-transport");
	tcase_add_test(tc, user_transport_by_name);
	tcase_add_test(tc, user_transport_errors);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
