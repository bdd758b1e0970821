/*
 * worker: one event-loop thread's context, shared by the flow modules
 * (conn, proxy, upstream) and started by server.c.
 *
 * Everything here belongs to the worker's thread, except the counters the
 * main thread reads for /status (atomics, relaxed: they are statistics).
 */
#ifndef FERRY_WORKER_H
#define FERRY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct acceptor;
struct conn;
struct config;
struct event;
struct loop;
struct metrics;
struct snapshot;
struct upstream_registry;
struct upstream_set;

struct worker_stats {
    unsigned long connections;   /* open client connections */
    unsigned long requests_live; /* request coroutines running */
    unsigned long requests_total;
    unsigned long upstream_conns; /* open upstream connections (pooled or in use) */
};

/* A new config posted by the main thread (server.c), applied by the
 * worker at a safe point (a callback of its loop). */
struct worker_update {
    struct config *cfg;       /* a reference, handed over */
    struct metrics *metrics;  /* sized for cfg, handed over */
    struct metrics *baseline; /* the old metrics as carried into metrics, handed over */
    int *listen_fds;          /* one per cfg->listeners[i], handed over */
    unsigned nlisten;
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct loop *loop;
    struct config *cfg;                          /* snap->cfg: the config in force */
    struct snapshot *snap;                       /* the snapshot new requests take (snapshot.h) */
    struct upstream_registry *upstream_registry; /* upstream.c: pools kept across reloads */
    pthread_mutex_t update_lock;
    struct worker_update *update; /* posted, not applied yet (update_lock) */
    bool drain_requested;         /* atomic: the main thread asks to drain */
    int *listen_fds;
    unsigned nlisten;
    struct acceptor *acceptors; /* listener.c */
    int reserve_fd;             /* spent to accept-and-close when out of descriptors */
    int control_fd;             /* eventfd: the main thread asks to drain or stop */
    struct event *control_ev;
    struct event *heartbeat_ev;
    uint64_t heartbeat; /* atomic: bumped by the loop, read by the watchdog */
    struct event *drain_timer;
    struct event *drain_poll;
    bool draining;
    bool failed;                /* setup failed on its thread */
    pthread_barrier_t *started; /* server.c: reached once set up */
    struct conn *conns;         /* every open client connection, for draining */
    uint64_t rng;               /* request ids */
    void *proxy_scratch;        /* request.c: pooled requests and scratch buffers */
    struct metrics *metrics;    /* the newest snapshot's, read by admin (main thread) */
    struct worker_stats stats;
};

/* Statistics helpers: relaxed atomics (read by the admin thread). */
#define WORKER_STAT_ADD(w, field, n) __atomic_add_fetch(&(w)->stats.field, (n), __ATOMIC_RELAXED)
#define WORKER_STAT_SUB(w, field, n) __atomic_sub_fetch(&(w)->stats.field, (n), __ATOMIC_RELAXED)
#define WORKER_STAT_GET(w, field) __atomic_load_n(&(w)->stats.field, __ATOMIC_RELAXED)

/* Writes a fresh 16-hex-digit request id (and a NUL) into out[17]. */
void worker_request_id(struct worker *w, char out[17]);

#endif
