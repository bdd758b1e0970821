/*
 * upstream: per-worker connections to the servers of each upstream:
 * choosing a server (balancer), keep-alive pools, max_connections.
 *
 * Pools are kept in a registry keyed by "upstream name + server address"
 * (DESIGN "Config and runtime state"), so a later config that keeps a
 * server can keep its pool. Idle pooled connections keep reading armed:
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

/* Builds the per-worker state for cfg's upstreams. NULL when out of memory. */
struct upstream_set *upstream_set_new(struct worker *w, const struct config *cfg);
/* Closes every pooled connection and frees the set. No connection may be
 * in use. NULL does nothing. */
void upstream_set_free(struct upstream_set *set);

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
 * `fresh`, else a new connect. Waits for a slot while the server is at
 * max_connections. Sets *reused. Returns 0, or -EBUSY (no slot freed
 * before the deadline), -ETIMEDOUT (connect), -ECONNREFUSED / -errno
 * (connect), -EMFILE/-ENFILE (no descriptor), -ECANCELED. May yield.
 */
int upstream_acquire(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool fresh, int64_t deadline, struct upstream_conn **out, bool *reused);

/* Gives the connection back: pooled when `reusable` (a complete response,
 * keep-alive, nothing unread) and the pool has room, else closed. */
void upstream_release(struct upstream_conn *uc, bool reusable);

struct io_stream *upstream_stream(struct upstream_conn *uc);

#endif
