/*
 * health: active health checks (upstreams.NAME.health_check).
 *
 * One checker per server for the whole process, not per worker: a thread
 * of its own runs a loop whose coroutines (one per checked server) await
 * their I/O as a request does: connect (with TLS, verified as a request's
 * connection, when the upstream has tls), GET path with Connection:
 * close, read the status line, each within timeout; then sleep until the next
 * interval. unhealthy_after failures in a row take a server down,
 * healthy_after passes bring it back; each change is logged and published
 * to every worker through the server's registry entry (registry.h), which
 * also holds the counts in a row, so a reload that keeps the server keeps
 * its verdict and counts.
 *
 * Reloads: the main thread calls health_reload with the new config before
 * any worker sees it. It sets the health of the servers the config checks
 * afresh (new to the config: down until their first pass, unless
 * start_healthy; already in service without checks: up) and posts the
 * config to the checker thread, which takes it at a safe point of its loop:
 * checkers of servers still checked take the new description before their
 * next check, those of servers no longer checked end (a check in progress
 * is cancelled), new servers get a checker whose first check runs at once.
 * Each checker holds a reference to the config it reads (config_ref), so a
 * reload never frees what a check in progress uses. The thread starts with
 * the first config that has checks and idles when a reload removes them.
 *
 * Calls: config, registry, tls, io, loop, coro, log. health_start,
 * health_reload and health_stop run on the main thread and never yield.
 */
#ifndef FERRY_HEALTH_H
#define FERRY_HEALTH_H

struct config;

/* Starts checking cfg's upstreams that have health_check (no thread when
 * none has: a reload that adds checks starts it). Call it before the
 * workers build their upstream state. Holds a reference to cfg until
 * health_stop or the next health_reload. A second call without health_stop
 * in between fails. Returns 0 or -1 (logged; servers are then served as
 * up, without active checks). */
int health_start(struct config *cfg);

/* The config changes to fresh (a reload, on the main thread, before the
 * workers get fresh): see above. Failing to start the thread is logged;
 * servers are then served as up. */
void health_reload(struct config *fresh);

/* Stops the checkers (an ongoing check is cancelled), joins the thread and
 * drops the configs. Nothing started: does nothing. */
void health_stop(void);

#endif
