/*
 * metrics: the counters behind GET /metrics (Prometheus text format 0.0.4).
 *
 * Each worker owns one struct metrics, sized for the config snapshot it
 * serves, and is its only writer: an increment is a relaxed atomic load
 * and store (no locked instruction on the request path). The admin thread
 * reads every worker's counters with relaxed loads and sums them; a scrape
 * may see one request's counters half updated, never a torn value.
 *
 * Exposed (the names are a contract, like the config's):
 *   ferry_requests_total{route,code}             counter, code = 1xx..5xx:
 *                                                every request answered or
 *                                                abandoned after its head
 *                                                (also the 503s answered
 *                                                without a coroutine; the
 *                                                same count as /status
 *                                                requests_total)
 *   ferry_request_duration_seconds{route}        histogram (head read to
 *                                                answer sent)
 *   ferry_upstream_responses_total{upstream,server,code}   every response
 *                                                head received, also one
 *                                                dropped for a retry
 *   ferry_upstream_failures_total{upstream,server}   attempts that failed
 *                                                through the server: connect
 *                                                refused or timed out, reset
 *                                                or closed before answering,
 *                                                no head in time, stopped
 *                                                reading, invalid head. Not
 *                                                counted: a client that left
 *                                                (499), a bad or slow request
 *                                                body, a server busy at
 *                                                max_connections, Ferry's own
 *                                                descriptor or memory
 *                                                shortage. The same notion
 *                                                as passive ejection's.
 *   ferry_upstream_ejections_total{upstream,server}   passive ejections
 *                                                (process-wide failure counts)
 *   ferry_upstream_server_ejected{upstream,server}   1 while ejected
 *   ferry_upstream_server_healthy{upstream,server}   1 while it passes its
 *                                                health checks (upstreams
 *                                                with health_check only)
 *   ferry_upstream_retries_total{upstream}       retries sent to another
 *                                                server
 *   ferry_upstream_retry_budget_exhausted_total{upstream}   retries not
 *                                                sent: retries.budget spent
 *   ferry_connections, ferry_requests_in_flight, ferry_upstream_connections
 *   ferry_workers, ferry_build_info{version}
 *   ferry_tls_handshakes_total, ferry_tls_resumed_total,
 *   ferry_tls_handshake_failures_total, ferry_tls_plaintext_total (tls.c's
 *   counters), ferry_tls_certificate_expiry_seconds{listener,file}
 *   ferry_ratelimit_store_errors_total{route,outcome,reason}
 *                                                (ratelimit_redis.c's counts)
 *   process_cpu_seconds_total, process_resident_memory_bytes,
 *   process_open_fds, process_max_fds, process_start_time_seconds
 * route="" counts requests that matched no route (404) or were refused
 * before routing (400, 408, 431...).
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct config_route;
struct config_server;
struct config_upstream;
struct evbuffer;
struct worker;

struct metrics;

/* Counters for cfg's routes and upstream servers, all zero. NULL when out
 * of memory. */
struct metrics *metrics_new(const struct config *cfg);
void metrics_free(struct metrics *m);

/* A reload: adds from's counters (sized for fromcfg) to to's (sized for
 * tocfg) for the routes and upstream servers both configs name alike
 * (route name; upstream name + server address), so counters run on. Any
 * thread: from is read with relaxed loads; to has no writer yet. */
void metrics_carry(struct metrics *to, const struct config *tocfg, const struct metrics *from,
                   const struct config *fromcfg);
/* The same for what from counted since base (a copy of from, sized
 * alike, taken when from was carried): the counts of requests that
 * finished on an old config after the reload. to's writer only. */
void metrics_carry_since(struct metrics *to, const struct config *tocfg, const struct metrics *from,
                         const struct metrics *base, const struct config *fromcfg);

/*
 * One request ended (worker thread). route NULL: none matched. status: what
 * the client got. seconds: how long it took.
 */
void metrics_request(struct metrics *m, const struct config_route *route, int status,
                     double seconds);

/* One upstream attempt ended (worker thread): status of the response
 * head, or 0 for a failure of the server (see above: the caller decides,
 * from its one table of failure kinds, whether the server is to blame). */
void metrics_upstream(struct metrics *m, const struct config_upstream *up,
                      const struct config_server *server, int status);

/* A server was passively ejected (by this worker's report). */
void metrics_ejection(struct metrics *m, const struct config_upstream *up,
                      const struct config_server *server);

/* A retry was sent (allowed) or refused by the retry budget. */
void metrics_retry(struct metrics *m, const struct config_upstream *up, bool allowed);

/* Appends s as a label value, the text between its double quotes:
 * backslash, double quote and newline escaped (\\, \" and \n), every other
 * byte as it is (the text format 0.0.4). Every label value of the page goes
 * through it. */
void metrics_label_value(struct evbuffer *out, const char *s);

/* Renders every worker's counters and the process gauges (admin thread).
 * Returns 0 or -1 when out of memory. */
int metrics_render(struct evbuffer *out, const struct config *cfg, struct worker *workers,
                   unsigned nworkers);

#endif
