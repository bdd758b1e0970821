/*
 * listener: the listening sockets of `listen[]` and the accept loop.
 *
 * Before binding, each address is probe-bound without SO_REUSEPORT, so a
 * second Ferry (or anything else) on the port fails with "address in use"
 * instead of silently sharing it. Then each worker gets its own
 * SO_REUSEPORT socket per address (the kernel spreads connections); a unix
 * path is bound once and each worker accepts on a duplicate of it.
 * Accepting runs in a libevent callback on the worker; when descriptors run
 * out (EMFILE/ENFILE) the worker's reserve descriptor is spent to accept and
 * close one connection, the error is logged at most once a second (per
 * worker), and the listener pauses for 100 ms instead of spinning. Workers
 * share one descriptor table, so another thread can take the slot the
 * reserve freed: a reserve that could not be re-opened is re-armed each
 * time the listener resumes.
 */
#ifndef FERRY_LISTENER_H
#define FERRY_LISTENER_H

#include "config.h"

struct worker;

/* Checks that every listen address is free (listener_claim_unix for unix
 * paths). Returns 0, or -errno after
 * printing "ferry: listen ADDRESS: ..." to stderr. */
int listener_probe(const struct config *cfg);

/* Opens one SO_REUSEPORT listening socket per listen[] entry for a worker;
 * a unix listener is bound once (first = NULL) and later workers share it
 * (first = the first worker's fds). Returns 0 with fds[0..n) set, or
 * -errno (message printed). */
int listener_open(const struct config *cfg, int *fds, const int *first);

/* Makes a unix socket path free to bind: nothing there, or a stale socket
 * (nobody accepts on it) which is removed. A regular file or a live socket
 * is refused: -errno after "ferry: WHAT ADDRESS: ..." on stderr. */
int listener_claim_unix(const char *what, const struct config_addr *a);
/* Removes the unix listener sockets ferry bound (at exit). */
void listener_unlink_unix(const struct config *cfg);

/* Starts accepting on the worker's sockets. Returns 0 or -ENOMEM. */
int listener_start(struct worker *w);
/* Stops accepting and closes the worker's sockets. */
void listener_stop(struct worker *w);

#endif
