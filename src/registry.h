/*
 * registry: runtime state that outlives a config, shared by the whole
 * process and keyed by a stable identity. Today: each upstream server's
 * admin state (drained or in service), keyed by upstream name + server
 * address, so a drain set on the admin endpoint holds across reloads and
 * applies in every worker.
 *
 * Policy layer, pure: no libevent. Entries are created under a mutex (at
 * pool creation and by the admin endpoint, never per request) and live
 * until registry_free at exit; their state is read with relaxed atomics
 * on the request path.
 */
#ifndef FERRY_REGISTRY_H
#define FERRY_REGISTRY_H

#include <stdbool.h>

struct registry_server;

/* The entry for upstream + address, created (in service) when new. NULL
 * when out of memory. Any thread. */
struct registry_server *registry_server(const char *upstream, const char *address);

/* True while the server is drained (taken out of rotation). s may be NULL. */
bool registry_drained(const struct registry_server *s);
/* True when any server is drained: the request path's fast check. */
bool registry_any_drained(void);

/* Drains (true) or readies (false) the server. Returns 0 or -ENOMEM. */
int registry_set_drained(const char *upstream, const char *address, bool drained);

/* Frees every entry (at exit, once no thread uses them). */
void registry_free(void);

#endif
