/*
 * upstream: per-worker connections to the servers of each upstream:
 * choosing a server (balancer), keep-alive pools, max_connections; and
 * the process-wide state of each server and upstream.
 *
 * Process-wide state lives in the registry (registry.h): one entry per
 * server, keyed by "upstream name + server address", found or created
 * when a set is built, holding the requests in flight over all workers
 * (what least_conn and random_two compare), passive ejection (every
 * worker's failures count; this module decides), the health checker's
 * verdict (health.c writes it, every worker reads it) and the drain flag
 * (admin); one entry per upstream name holds the retry budget's 10 s
 * window and the lock of ejection decisions. A later config that keeps a
 * server finds the same entry, so all of that carries over a reload.
 * Counters are updated without a lock (relaxed atomics): the window's
 * slot turnover may lose a concurrent increment, which a budget can
 * afford.
 *
 * Pools (per worker) are kept in the worker's own registry of pools, keyed
 * by "upstream name + server address" and shared by the sets of
 * successive configs, so a reload that keeps a server keeps its pool and
 * idle connections. Idle pooled connections keep reading armed: a
 * connection the backend closes (or that sends stray bytes) leaves the
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

struct evbuffer;
struct io_stream;
struct loop;
struct upstream_conn;
struct upstream_registry;
struct upstream_set;

/* What the worker lends its upstream sets: its id (random_two's seed),
 * its drain flag (no pooling once set), its count of open upstream
 * connections (relaxed atomics, read by /metrics) and where it keeps its
 * registry of pools (NULL until its first set; upstream_registry_free
 * frees it). The pointers must outlive every set and pool of the worker;
 * its first set's owner is the one its pools keep. */
struct upstream_owner {
    unsigned id;
    const bool *draining;
    unsigned long *conns;
    struct upstream_registry **registry;
};

/* Builds the per-worker state for cfg's upstreams (cfg must outlive the
 * set), finding or creating each server's process-wide entry
 * (registry.h). Servers of the worker's registry of pools with the same
 * upstream name and address are shared with the sets of other configs (a
 * reload): their pools carry over, as their process-wide state does.
 * NULL when out of memory. */
struct upstream_set *upstream_set_new(const struct upstream_owner *owner, const struct config *cfg);
/* Frees the set. A pool no other set uses closes its idle connections and
 * goes once its connections in use (older requests, tunnels) are released.
 * NULL does nothing. */
void upstream_set_free(struct upstream_set *set);
/* Frees a worker's registry of pools at its exit (and sets *reg to
 * NULL): no connection may be in use. */
void upstream_registry_free(struct upstream_registry **reg);

/* The next server of `up` by its balancer, skipping those marked in skip
 * (may be NULL: servers tried), those passively ejected (unless every
 * server left is) and those down by their health checks (unless every
 * server left is and health_check.fail_open). key/has_key: the request's
 * hash key (balance: hash; has_key false when the request has none: round
 * robin). -1 when no server can be chosen. */
int upstream_pick(struct upstream_set *set, const struct config_upstream *up, const bool *skip,
                  uint64_t key, bool has_key);

/* "upstream NAME: no server is up", for the 503 after upstream_pick's -1. */
const char *upstream_none_up(struct upstream_set *set, const struct config_upstream *up);

/* Does the server pass its health checks (true without checks, or when
 * it has no process-wide entry yet)? Any thread. health.c sets the
 * verdict in the server's registry entry. */
bool upstream_healthy(const struct config_upstream *up, unsigned server);

/* How an attempt on a server ended: ok (a response head came back, any
 * status) or not (connect error, reset, timeout, invalid head). With
 * passive ejection on, passive_failures in a row over all workers eject
 * the server for passive_eject_ms, doubled when it is ejected again
 * within its last ejection's length of returning (up to
 * passive_max_eject_ms), unless half of the upstream's servers are
 * ejected already. Returns true when this report ejected the server. */
bool upstream_report(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool ok);

/* Appends {"NAME":[{"address","healthy","ejected","ejections","drained",
 * "in_flight"}...]...}
 * for cfg's upstreams (process-wide state; /status). Any thread. */
void upstream_status_json(struct evbuffer *out, const struct config *cfg);

/* Is the server passively ejected now (process-wide)? Any thread. */
bool upstream_ejected(const struct config_upstream *up, unsigned server);

/* Counts a request (its first attempt) toward up's retry budget. */
void upstream_budget_request(struct upstream_set *set, const struct config_upstream *up);

/* May one more retry go to up within retries.budget over the last 10 s
 * (plus budget_min per second)? When so, it is counted as taken. */
bool upstream_budget_retry(struct upstream_set *set, const struct config_upstream *up);

/*
 * A connection to server `server` of `up`: a pooled idle one unless
 * `fresh`, else a new connect. While the server is at max_connections
 * (per worker), waits in line for a slot: first come, first served; a
 * slot freed while anyone waits goes to the first in line, never to a
 * newcomer. `fresh` says the caller's pooled connection to this server
 * just failed (the keep-alive race): a slot it released to the line
 * without yielding since is taken back (it was in service, not new).
 * watch (may be NULL: the request's client) is watched all the while:
 * its end (EOF or error) stops the wait, the lookup or the connect
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
 * keep-alive, nothing unread) and the pool has room, else closed. The
 * server's in-flight count (taken by upstream_acquire) drops by one. */
void upstream_release(struct upstream_conn *uc, bool reusable);

struct io_stream *upstream_stream(struct upstream_conn *uc);

#endif
