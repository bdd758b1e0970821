/*
 * ratelimit_redis: a route's token buckets kept in Redis (rate_limit.store:
 * redis://HOST[:PORT][/DB]), so several Ferry instances share one limit.
 *
 * The bucket is ratelimit.h's GCRA instant ("tat"), stored as a string of
 * microseconds under ferry:rl:ROUTE:KEY (a key longer than 64 bytes is
 * replaced by "#" and the hex SHA-256 of its bytes), with a PX expiry of
 * the time until the bucket is full again plus one second: an idle bucket
 * vanishes, which is exactly a full one. One Lua script (EVAL: Redis caches
 * the compiled script by its SHA-1, so the cost of plain EVAL is the ~600
 * bytes sent) reads, decides and writes atomically: two instances can never
 * both take the last token.
 *
 * Time: the script reads Redis's own clock (redis.call('TIME')), never
 * Ferry's. Instances whose wall clocks disagree would otherwise refill one
 * bucket at different instants (a clock 1 s ahead grants a whole second of
 * tokens early); Redis's clock is the one every instance shares. (Redis 5+
 * replicates a script's effects, so a non-deterministic TIME is allowed;
 * redis.replicate_commands() is called for 3.2 and 4.)
 *
 * Connections: one hiredis async context per worker thread per store URL,
 * on the worker's event base (hiredis's libevent adapter), opened when the
 * worker installs a config that names the store (at start, at a reload)
 * or at the first request that needs it. A host name is resolved with the worker's
 * evdns (hiredis is handed an IP literal: its own connect would call a
 * blocking getaddrinfo); of its addresses the first IPv4 one is used,
 * else the first. After a failure or a dropped connection a
 * background timer reconnects with backoff (100 ms doubling to 5 s).
 * While the connection is down (or its host is being resolved) commands
 * fail at once, without waiting for the deadline. A connect that takes
 * over 2 s is abandoned, and so is a connection with commands outstanding
 * and no reply for 10 s (a peer gone without a FIN or RST; hiredis sets no
 * keepalive), and both reconnect. A connection nobody has
 * used for RLR_IDLE_CLOSE_S seconds with no command outstanding is closed
 * (this is how a reload's old store URL goes away: the requests of the old
 * config stop using it).
 *
 * Waiting: the request coroutine sends the command and waits (io_wait on
 * IO_SIGNAL) until the reply's callback signals it, or its deadline
 * (store_timeout, 100 ms by default). The wait record is heap-allocated and
 * owned by whichever side is last: a coroutine that gives up (deadline,
 * cancellation) marks it orphaned and leaves; the late reply, or hiredis
 * freeing the context (it calls every pending callback with no reply),
 * frees it. So a late reply never touches a coroutine or a request.
 * Commands outstanding on a connection are bounded (RLR_MAX_PENDING,
 * orphaned ones included): beyond, a request fails at once, so a slow Redis
 * cannot queue thousands of requests.
 *
 * Failures (down, deadline, queue full, an error or unexpected reply):
 * the route's on_store_error decides: allow (the default: a rate limit is
 * protection, and an outage of the store should not become an outage of
 * the API) or deny (503 with Retry-After: 1: the limit is not known to be
 * exceeded, so not 429). Each decision is counted in /metrics
 * (ferry_ratelimit_store_errors_total{route,outcome,reason}) and logged at
 * most once per 5 s per worker and store, with the count since; log lines
 * name the route and store URL only, never a key's bytes.
 *
 * Policy layer; calls ratelimit, config, loop, io, log. Runs on worker
 * threads; functions marked "may yield" run in a request coroutine only.
 */
#ifndef FERRY_RATELIMIT_REDIS_H
#define FERRY_RATELIMIT_REDIS_H

#include <stdbool.h>

#include "config.h"
#include "http1.h"
#include "ratelimit.h"

#define RLR_MAX_PENDING 1024
#define RLR_IDLE_CLOSE_S 30

/*
 * A route's limit (its rate_limit has a store) for one request, decided
 * by Redis, or by on_store_error when Redis failed (res->store_error).
 * May yield.
 */
void ratelimit_redis_request(const struct config_route *rt, const struct http1_request *req,
                             const char *client, const char *identity,
                             struct ratelimit_result *res);

/* Opens the calling worker's connections to the stores cfg names (at the
 * worker's start and after each reload): an unreachable store is a warning
 * then, not at the first request. */
void ratelimit_redis_prepare(const struct config *cfg);

/* Closes the calling worker thread's store connections (before its loop
 * is freed). */
void ratelimit_redis_thread_end(void);

/* Calls fn for each nonzero count of store failures decided by
 * on_store_error, process-wide (metrics.c renders them as
 * ferry_ratelimit_store_errors_total): the route, the outcome ("allow" or
 * "deny"), the reason ("down", "timeout", "queue_full", "bad_reply") and
 * the count. fn runs under the counters' lock: it must not fail a store
 * command. */
void ratelimit_redis_errors(void (*fn)(void *arg, const char *route, const char *outcome,
                                       const char *reason, unsigned long n),
                            void *arg);

#endif
