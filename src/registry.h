/*
 * registry: runtime state that outlives a config, shared by the whole
 * process and keyed by a stable identity: one entry per upstream server
 * (upstream name + server address) holding everything that is
 * process-wide about it, and one per upstream name.
 *
 * A server's entry holds, in one place:
 *   - inflight: requests holding or getting a connection to it, over all
 *     workers (what least_conn and random_two compare; upstream.c);
 *   - passive ejection: consecutive failures over all workers, the
 *     ejection's end and length, how many times it was ejected
 *     (upstream.c decides; the upstream entry's lock guards decisions);
 *   - health: the checker's verdict (down), whether a verdict was given
 *     since checking began, the passes and failures in a row (health.c
 *     writes them from its thread; workers read down);
 *   - drained: the admin endpoint took it out of rotation.
 * An upstream's entry holds the retry budget's 10 s window and the lock
 * of ejection decisions (the half cap looks at all its servers).
 *
 * A config that keeps a server finds the same entry, so all of it carries
 * over a reload. Entries are created under a mutex (when a config to be
 * published takes its holds, when a worker builds its upstream state for
 * a config, by the health checker's set-up on the main thread, by the
 * admin endpoint; never per request).
 *
 * Lifetime: every config the workers and the health checker are given
 * holds the entries of its servers while it lives (registry_hold when it
 * is expanded, before anyone sees it; registry_release at its last
 * unref: resolve.c). Whoever reads an entry through a pointer holds a
 * config that has its server (a pool its newest config, a checker its
 * config, the admin endpoint the running config, a request its
 * snapshot's), so an entry whose last hold goes is unused: it is freed
 * then, under the mutex, unless it is drained (a drain outlives the
 * server: it applies again when the server comes back; undraining an
 * entry no config holds frees it). So the registry holds the servers of
 * the configs alive, plus drained ones: a DNS name whose answers keep
 * bringing new addresses leaves nothing behind once the configs that
 * had them are gone. A server that leaves every config and comes back
 * starts over (not ejected; health as health.c decides for a new
 * server). Entries that were never held (unit tests' configs) live until
 * registry_free at exit. Fields are read and written with relaxed atomics
 * (REGISTRY_LOAD and friends): statistics and verdicts, where a stale
 * read costs one pick.
 *
 * Policy layer, pure: no libevent.
 */
#ifndef FERRY_REGISTRY_H
#define FERRY_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REGISTRY_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define REGISTRY_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define REGISTRY_ADD(p, n) __atomic_add_fetch((p), (n), __ATOMIC_RELAXED)
#define REGISTRY_SUB(p, n) __atomic_sub_fetch((p), (n), __ATOMIC_RELAXED)

#define REGISTRY_BUDGET_SLOTS 10 /* one per second: the retry budget's 10 s window */

/* One second of an upstream's traffic: first attempts and retries. */
struct registry_budget_slot {
    int64_t sec; /* which second it counts; older: stale, reset on use */
    uint64_t requests;
    uint64_t retries;
};

/* One upstream (by name), for the whole process. */
struct registry_upstream {
    char *name;
    pthread_mutex_t lock; /* ejection decisions (rare): the half cap */
    struct registry_budget_slot slots[REGISTRY_BUDGET_SLOTS];
    struct registry_upstream *next;
};

/* One server (upstream name + address), for the whole process. Aligned
 * to a cache line: workers write inflight and fails on every request. */
struct registry_server {
    _Alignas(64) uint64_t inflight; /* requests holding or getting a connection */
    /* passive ejection (upstream.c) */
    uint32_t fails;        /* consecutive failures, every worker's */
    uint32_t ejections;    /* times ejected since the process started */
    int64_t ejected_until; /* loop_now() instant; 0: never ejected */
    int64_t eject_ms;      /* the last ejection's length */
    int64_t eject_logged;  /* log_ratelimited's timestamp */
    /* active health checks (health.c) */
    uint32_t health_passes; /* checks passed in a row */
    uint32_t health_fails;  /* checks failed in a row */
    uint8_t down;           /* the verdict: 1 = failing its checks */
    uint8_t checked;        /* a verdict was given since checking began */
    /* admin */
    bool drained; /* taken out of rotation (registry_set_drained) */
    /* lifetime (under the registry's mutex) */
    uint32_t holds; /* configs alive that have the server */
    bool held;      /* its lifetime follows holds (it was held once) */
    struct registry_upstream *up;
    char *key; /* "upstream" NUL "address" */
    size_t key_len;
    struct registry_server *next;
};

/* The entry for upstream + address, created when new (in service, healthy,
 * never ejected; its upstream's entry too). NULL when out of memory. Any
 * thread. */
struct registry_server *registry_server(const char *upstream, const char *address);
/* The entry if it exists (never creates). Any thread. */
struct registry_server *registry_server_find(const char *upstream, const char *address);

/* A config to be published holds the entry of each of its servers
 * (created when new); NULL when out of memory. Any thread. */
struct registry_server *registry_hold(const char *upstream, const char *address);
/* Gives back a hold taken at registry_epoch() == epoch (none since
 * registry_free: nothing). The last one frees an entry that is not
 * drained. Any thread. */
void registry_release(struct registry_server *s, unsigned epoch);
unsigned registry_epoch(void);
/* Server entries alive (for /metrics). */
size_t registry_count(void);

/* True while the server is drained (taken out of rotation). s may be NULL. */
bool registry_drained(const struct registry_server *s);
/* The same by name, for a server no config may hold (its entry may go
 * meanwhile: looked up and read under the registry's lock). Any thread. */
bool registry_drained_named(const char *upstream, const char *address);
/* True when any server is drained: the request path's fast check. */
bool registry_any_drained(void);

/* Drains (true) or readies (false) the server. Returns 0 or -ENOMEM. */
int registry_set_drained(const char *upstream, const char *address, bool drained);

/* Starts the server's health over: no verdict yet, no passes or failures
 * in a row, down or up as given (a server new to the config starts down
 * until its first pass; one already in service starts up). */
void registry_health_reset(struct registry_server *s, bool down);

/* Frees every entry (at exit, once no thread uses them). */
void registry_free(void);

#endif
