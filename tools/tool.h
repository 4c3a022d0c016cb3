/* Shared by the files of the strata command-line tool. */
#ifndef STRATA_TOOL_H
#define STRATA_TOOL_H

#include <event2/event.h>

/* Exit codes (documented in --help and strata.1). */
enum {
	EXIT_OK = 0,
	EXIT_FAILURE_ = 1, /* a connection failed after it was set up */
	EXIT_USAGE = 2,	   /* bad command line, stack string or its files */
	EXIT_CONNECT = 3,  /* could not connect, listen or handshake */
	EXIT_VERIFY = 4,   /* TLS: the peer's certificate or key refused */
	EXIT_TIMEOUT = 5,  /* connect, handshake or idle timeout */
};

/** strata demo; returns an exit code. */
int demo_run(struct event_base *base, int argc, char **argv);

#endif
