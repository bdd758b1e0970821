/*
 * upstream: per-worker connections to the servers of each upstream:
 * choosing a server (balancer), keep-alive pools, max_connections.
 *
 * Pools are kept in a registry keyed by "upstream name + server address"
 * (runtime state keyed by a stable identity, not by config position), so
 * a later config that keeps a server can keep its pool. Idle pooled connections keep reading armed:
 * a connection the backend closes (or that sends stray bytes) leaves the
 * pool at once; each also expires after upstream_idle.
 *
 * Functions marked "may yield" run in a request coroutine. Everything
 * belongs to the worker's thread.
 */
#ifndef FERRY_UPSTREAM_H
#define FERRY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* What an upstream connection's input buffers at most: a response head
 * must fit in it (a larger one is a 502, not a wait). */
#define UPSTREAM_READ_MAX (256u * 1024u)

struct io_stream;
struct loop;
struct upstream_conn;
struct upstream_set;
struct worker;

/* Builds the per-worker state for cfg's upstreams (cfg must outlive the
 * set). Servers of the worker's registry with the same upstream name and
 * address are shared with the sets of other configs (a reload): their
 * pools and passive-ejection state carry over. NULL when out of memory. */
struct upstream_set *upstream_set_new(struct worker *w, const struct config *cfg);
/* Frees the set. A pool no other set uses closes its idle connections and
 * goes once its connections in use (older requests, tunnels) are released.
 * NULL does nothing. */
void upstream_set_free(struct upstream_set *set);
/* Frees the worker's registry at its exit: no connection may be in use. */
void upstream_registry_free(struct worker *w);

/* The next server of `up` (smooth weighted round robin), skipping those
 * marked in skip (may be NULL) and those passively ejected (unless every
 * server left is). -1 when all are skipped. */
int upstream_pick(struct upstream_set *set, const struct config_upstream *up, const bool *skip);

/* How an attempt on a server ended: ok (a response head came back, any
 * status) or not (connect error, reset, timeout, invalid head). With
 * passive ejection on, passive_failures in a row eject the server from
 * this worker's choice for passive_eject_ms. */
void upstream_report(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool ok);

/*
 * A connection to server `server` of `up`: a pooled idle one unless
 * `fresh`, else a new connect. While the server is at max_connections
 * (per worker), waits in line for a slot: first come, first served; a
 * slot freed while anyone waits goes to the first in line, never to a
 * newcomer. watch (may be NULL: the request's client) is watched all the
 * while: its end (EOF or error) stops the wait, the lookup or the connect
 * with -ECONNABORTED, and nothing is sent for it. Sets *reused. Returns
 * 0, or -EBUSY (no slot freed before the deadline), -ETIMEDOUT (connect),
 * -ECONNREFUSED / -errno (connect), -EMFILE/-ENFILE (no descriptor),
 * -ECANCELED, -ECONNABORTED. Failed connects and -EBUSY are logged here
 * (rate-limited per server). May yield.
 */
int upstream_acquire(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool fresh, int64_t deadline, struct io_stream *watch,
                     struct upstream_conn **out, bool *reused);

/* Gives the connection back: pooled when `reusable` (a complete response,
 * keep-alive, nothing unread) and the pool has room, else closed. */
void upstream_release(struct upstream_conn *uc, bool reusable);

struct io_stream *upstream_stream(struct upstream_conn *uc);

#endif
