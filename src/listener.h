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
int listener_probe(const struct config *cfg, const int *inherited);

/*
 * Socket activation: the listening sockets systemd passed (LISTEN_FDS,
 * from fd 3) matched to cfg's listen addresses by what they are bound to:
 * inherited[i] is the descriptor for listeners[i], or -1 (bound by Ferry
 * as usual). A passed socket that matches no address is closed with a
 * warning. Returns how many were passed. Such a listener is never probed
 * or bound, but gets what Ferry sets on its own sockets and can still set
 * (TCP_NODELAY, defer_accept, backlog; see listen_options in listener.c);
 * workers accept on duplicates of it, and a reload that keeps its address
 * keeps it.
 */
int listener_inherit(const struct config *cfg, int *inherited);

/* Opens one SO_REUSEPORT listening socket per listen[] entry for a worker;
 * a unix listener is bound once (first = NULL) and later workers share it
 * (first = the first worker's fds). Returns 0 with fds[0..n) set, or
 * -errno (message printed). */
int listener_open(const struct config *cfg, int *fds, const int *first, const int *inherited);

/* Makes a unix socket path free to bind: nothing there, or a stale socket
 * (nobody accepts on it) which is removed. A regular file or a live socket
 * is refused: -errno after "ferry: WHAT ADDRESS: ..." on stderr. */
int listener_claim_unix(const char *what, const struct config_addr *a);
/* True when the address text is one of start's listeners whose socket
 * came from systemd (inherited[i] >= 0; inherited may be NULL). */
bool listener_inherited(const struct config *start, const int *inherited, const char *text);
/* Removes the unix listener sockets ferry bound (at exit); a socket
 * systemd passed (its socket unit owns the path) stays. */
void listener_unlink_unix(const struct config *cfg, const struct config *start,
                          const int *inherited);

/* Starts accepting on the worker's sockets. Returns 0 or -ENOMEM. */
int listener_start(struct worker *w);
/*
 * Reload, main thread: fds[i] for each of cfg's listeners, given a worker's
 * old config and its fds: the same socket when old has the same address
 * (kept open: no accept gap; a new backlog or defer_accept applies),
 * else a new one (probed, then bound; first as in listener_open).
 * Returns 0, or -errno with err set to one line (what was opened is
 * closed again).
 */
int listener_reopen(const struct config *old, const int *oldfds, const struct config *cfg, int *fds,
                    const int *first, char *err, size_t errlen);
/* Closes fds[0..n) that are not among old's oldfds (a reload given up). */
void listener_close_new(const struct config *old, const int *oldfds, const int *fds, size_t n);
/*
 * Reload, worker thread: accepts on fds (cfg's listeners, handed over)
 * from now on. Sockets of the old set that are not in fds have their
 * accept queue served, then are closed. Returns 0 or -ENOMEM (nothing
 * changed).
 */
int listener_swap(struct worker *w, const struct config *cfg, int *fds, unsigned n);
/* Stops accepting and closes the worker's sockets. */
void listener_stop(struct worker *w);

#endif
