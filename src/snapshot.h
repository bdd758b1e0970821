/*
 * snapshot: a config as one worker serves it (flow layer; worker thread
 * only, nothing here yields).
 */
#ifndef FERRY_SNAPSHOT_H
#define FERRY_SNAPSHOT_H

struct config;
struct metrics;
struct upstream_set;
struct worker;

/*
 * What the requests of one config share in a worker: the config, the
 * upstream state built for it and the metrics sized for it. The worker
 * holds one reference to the snapshot in force and each request one to
 * the snapshot it started on (worker-local counts, no atomics): after a
 * reload, requests in flight finish on the old snapshot, which is freed
 * when the last of them ends.
 */
struct snapshot {
    struct worker *w;
    struct config *cfg;
    struct upstream_set *upstreams;
    struct metrics *metrics;
    /* Once superseded: a copy of metrics taken when they were carried to
     * the next snapshot's; what was counted since is carried to the
     * worker's snapshot in force when this one is freed. */
    struct metrics *baseline;
    unsigned refs;
};

/* Makes cfg and metrics (handed over) the worker's snapshot in force;
 * the previous one goes once its last request ends, carrying what it
 * counted since baseline (handed over, may be NULL) to the snapshot in
 * force then. Returns 0, or -ENOMEM (nothing changed; nothing taken). */
int snapshot_install(struct worker *w, struct config *cfg, struct metrics *metrics,
                     struct metrics *baseline);
/* The snapshot in force, with a reference for a request. */
struct snapshot *snapshot_acquire(struct worker *w);
/* Drops a reference; the last frees the snapshot. NULL does nothing. */
void snapshot_release(struct snapshot *snap);

#endif
