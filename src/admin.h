/*
 * admin: the admin listener (admin.listen) on the main thread:
 * GET /healthz ("ok"), GET /status (JSON: workers, connections,
 * live_coroutines, requests_total, upstream_connections), GET /metrics
 * (Prometheus text format, see metrics.h), GET /config (the running
 * config's normalized form for `ferry diff`, diff.h; no secrets), GET
 * /upstreams (servers and their state), POST
 * /upstreams/NAME/servers/ADDRESS/drain and .../ready (registry.h: the
 * state is process-wide and survives reloads). GET and HEAD only (405 on other
 * methods, 404 on other paths), one request per connection; limits in
 * admin.c. It shows upstream
 * addresses and counters: bind it to loopback or a unix socket.
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include "config.h"

struct event_base;
struct worker;
struct admin;

/* Binds cfg->admin_listen (before privileges are dropped); nothing is
 * accepted until admin_serve. NULL (message printed) on failure. */
struct admin *admin_start(struct event_base *base, const struct config *cfg, struct worker *workers,
                          unsigned nworkers);
/* Listens and serves (once the workers accept: the admin endpoint
 * answering means the proxy is up). 0, or -1 (message printed). */
int admin_serve(struct admin *a);
/* From now on /healthz answers 503 "draining" (the process is stopping). */
void admin_draining(struct admin *a);
void admin_stop(struct admin *a);
/* After a reload: answers from cfg (which must outlive its use here). The
 * admin listener itself stays where it was started (admin.listen changes
 * need a restart). NULL a does nothing. */
void admin_set_config(struct admin *a, const struct config *cfg);

#endif
