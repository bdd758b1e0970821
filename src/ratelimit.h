/*
 * ratelimit: token buckets per key, shared by every worker thread.
 *
 * The math. A bucket holds up to `capacity` tokens (requests + burst) and
 * refills at one token per `interval` (per / requests). It is kept as one
 * instant, the GCRA "theoretical arrival time" (tat): the bucket is full
 * when tat <= now, and each admitted request moves tat one interval on.
 * A request at `now` is admitted while tat + interval - now <= capacity *
 * interval. This is exactly the token bucket (tokens = capacity - (tat -
 * now) / interval), in 8 bytes instead of a count and a timestamp, and a
 * bucket that has refilled is indistinguishable from one never seen: such
 * an entry may be dropped (or reused for another key) without changing any
 * answer. A drained bucket is never dropped: key churn cannot reset it.
 *
 * Keys are stored as a 64-bit keyed hash (SipHash-2-4 with a per-process
 * random key), never as text: an entry is 16 bytes (hash, tat). Two keys
 * share a bucket only when their hashes collide (about 1 in 2^45 for a
 * million live keys); the random key stops a client from aiming for that.
 *
 * Threads: exact across workers through shared state under striped locks
 * (RATELIMIT_SHARDS mutexes, the shard chosen by the hash), rather than
 * lock-free atomics or one owner thread per key. An owner per key would
 * send each request's decision to another thread and back (a coroutine
 * never migrates); a lock-free table that also grows and evicts is much
 * harder to get right, while a lock held for a few arithmetic steps on one
 * of 64 shards is uncontended in practice (~20 ns). Each shard is an
 * open-addressed table (linear probing) that grows by doubling up to its
 * share of max_keys; when full, refilled entries are swept out; when still
 * full of drained buckets, a new key is refused (the caller answers 429:
 * never let through what the limit says to deny).
 *
 * Time is injected: every call takes `now` in nanoseconds of a monotonic
 * clock. Pure: no libevent, no runtime; may be called from any thread.
 * Policy layer: may call config, http1.
 */
#ifndef FERRY_RATELIMIT_H
#define FERRY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http1.h"

#define RATELIMIT_SHARDS 64
/* Live keys a table keeps by default (per route). */
#define RATELIMIT_MAX_KEYS (4u << 20)

/* A bucket's shape: refilled at one token per interval_ns, capacity tokens. */
struct ratelimit_rate {
    int64_t interval_ns; /* > 0 */
    uint64_t capacity;   /* >= 1 */
};

/* requests per per_ms, plus burst: the shape of the config's rate_limit. */
struct ratelimit_rate ratelimit_rate_of(uint64_t requests, int64_t per_ms, uint64_t burst);

/* What one request found. */
struct ratelimit_result {
    bool allowed;
    uint64_t limit;         /* capacity */
    uint64_t remaining;     /* whole tokens left after this request */
    int64_t retry_after_ns; /* refused: until one token is back; else 0 */
    int64_t reset_ns;       /* until the bucket is full again */
    bool table_full;        /* refused because no entry was free */
    bool store_error;       /* the shared store failed; on_store_error decided */
};

/*
 * The pure step: bucket *tat at now takes one token of rate. Updates *tat
 * when admitted. Fills *res.
 */
void ratelimit_step(int64_t *tat, int64_t now, const struct ratelimit_rate *rate,
                    struct ratelimit_result *res);

struct ratelimit;

/* A table for at most max_keys live keys (0: RATELIMIT_MAX_KEYS). NULL
 * when out of memory. */
struct ratelimit *ratelimit_new(size_t max_keys);
void ratelimit_free(struct ratelimit *rl);

/* The keyed 64-bit hash of a key's bytes (never 0). */
uint64_t ratelimit_hash(const void *key, size_t len);

/*
 * Takes a token from key's bucket at now. Thread-safe. On out of memory
 * or a table full of drained buckets the request is refused
 * (res->table_full).
 */
void ratelimit_take(struct ratelimit *rl, uint64_t key_hash, int64_t now,
                    const struct ratelimit_rate *rate, struct ratelimit_result *res);

/* Keys held (live or refilled, not yet swept) and the bytes the table
 * allocated. */
size_t ratelimit_keys(struct ratelimit *rl);
size_t ratelimit_bytes(struct ratelimit *rl);

/*
 * The table of route `name`, shared by every worker and kept across
 * reloads (by name) until the process exits. NULL when out of memory.
 * Takes a process-wide lock: call once per route and keep the pointer.
 */
struct ratelimit *ratelimit_of_route(const char *name);

/*
 * A route's limit for one request: the key its rate_limit names (the
 * client's address as text, the first value of a header, the identity
 * auth found, or the constant; a missing header or identity is one shared
 * key of its own), a token from the route's table at now. Thread-safe.
 */
void ratelimit_request(const struct config_route *rt, const struct http1_request *req,
                       const char *client, const char *identity, int64_t now,
                       struct ratelimit_result *res);

/* The bytes of the key a route's rate_limit names for this request (see
 * ratelimit_request), their length in *len. Points into req, client,
 * identity or the config. */
const char *ratelimit_key(const struct config_route *rt, const struct http1_request *req,
                          const char *client, const char *identity, size_t *len);

/* Fields of a 429: Retry-After, RateLimit-Limit, RateLimit-Remaining,
 * RateLimit-Reset (seconds), into out (room for 4), their text in buf
 * (room for RATELIMIT_FIELDS_BUF). Returns the count. */
#define RATELIMIT_FIELDS_BUF 96
size_t ratelimit_fields(const struct ratelimit_result *res, struct http1_header *out, char *buf);

#endif
