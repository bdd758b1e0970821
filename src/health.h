/*
 * health: active health checks (upstreams.NAME.health_check).
 *
 * One checker per server for the whole process, not per worker: a thread
 * of its own runs a loop whose coroutines (one per checked server) await
 * their I/O as a request does: connect, GET path with Connection: close,
 * read the status line, each within timeout; then sleep until the next
 * interval. unhealthy_after failures in a row take a server down,
 * healthy_after passes bring it back; each change is logged and published
 * to every worker through upstream_set_health (the server's process-wide
 * state, which a reload that keeps the server keeps, with its verdict).
 *
 * Calls: config, upstream, io, loop, coro, log. health_start and
 * health_stop run on the main thread and never yield.
 */
#ifndef FERRY_HEALTH_H
#define FERRY_HEALTH_H

struct config;

/* Starts checking cfg's upstreams that have health_check (no thread when
 * none has). Holds a reference to cfg until health_stop. A second call
 * without health_stop in between fails. Returns 0 or -1 (logged). */
int health_start(struct config *cfg);

/* Stops the checkers (an ongoing check is cancelled), joins the thread and
 * drops the config. Nothing started: does nothing. A new config: stop,
 * then start with it. */
void health_stop(void);

#endif
