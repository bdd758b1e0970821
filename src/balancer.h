/*
 * balancer: choosing a server of an upstream.
 *
 * Pure module: one struct balancer per upstream per worker, no locking,
 * no I/O, no clock. The caller says which servers may not be chosen
 * (`skip`: ejected, down, or already tried by this request) and, for the
 * load-aware balancers, how many requests each server has in flight
 * (read from the process-wide per-server state: upstream.c).
 *
 *  round_robin  smooth weighted round robin (as nginx): every pick adds
 *               each server's weight to its current value, takes the
 *               largest and subtracts the total from it. Weights 5,1,1
 *               give a a b a c a a (a spread, not a burst).
 *  least_conn   the fewest in-flight requests relative to weight
 *               (inflight / weight, compared without division); ties are
 *               broken by the smooth round robin over the tied servers,
 *               so with no load it is exactly round robin.
 *  random_two   power of two choices: two distinct servers drawn at
 *               random in proportion to their weights, the one with the
 *               smaller inflight / weight wins (the first drawn on a tie).
 *               The generator is the balancer's own (xorshift, seeded).
 *  hash         Maglev consistent hashing: a lookup table of
 *               BALANCER_MAGLEV_SIZE (a prime) entries, filled from each
 *               server's permutation (derived from its name: the address)
 *               in turns proportional to its weight, so each server owns
 *               its weight's share of the table within one entry. A key
 *               hashes to an entry; when that server is skipped, the walk
 *               goes on to the next entries, so only the skipped server's
 *               keys move, spread over the others in their shares (a
 *               server far lighter than the others may own no entry:
 *               when only such servers are left, round robin). A
 *               changed server list rebuilds the table (a new config):
 *               Maglev moves about 1/N of keys when one of N servers
 *               leaves and 1/(N+1) when one joins.
 */
#ifndef FERRY_BALANCER_H
#define FERRY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The order of config_balance's values. */
enum balancer_kind {
    BALANCER_ROUND_ROBIN,
    BALANCER_LEAST_CONN,
    BALANCER_RANDOM_TWO,
    BALANCER_HASH,
};

#define BALANCER_MAGLEV_SIZE 65537u

struct balancer {
    enum balancer_kind kind;
    size_t n;
    const uint32_t *weights; /* n weights, each >= 1, owned by the caller */
    int64_t *current;        /* n running values (smooth round robin) */
    bool *scratch;           /* n: least_conn's "not tied" mask */
    uint32_t *table;         /* hash: BALANCER_MAGLEV_SIZE server indexes */
    uint64_t rng;            /* random_two: xorshift64 state, never 0 */
};

/*
 * Sets b up over n >= 1 servers. weights and names (the servers' stable
 * identities, hashed into Maglev permutations; only read for hash) stay
 * owned by the caller; weights must outlive b. seed feeds random_two
 * (any value). Returns 0 or -ENOMEM.
 */
int balancer_init(struct balancer *b, enum balancer_kind kind, const uint32_t *weights,
                  const char *const *names, size_t n, uint64_t seed);
void balancer_fini(struct balancer *b);

/*
 * The next server's index, never one marked in skip (NULL: none is);
 * -1 when every server is skipped. inflight (n counts, may be NULL: all
 * zero) is read by least_conn and random_two. key is the request's hash
 * key (balancer_hash of its bytes), read by hash; has_key false (no key
 * in the request) picks by round robin instead.
 */
int balancer_next(struct balancer *b, const bool *skip, const uint64_t *inflight, uint64_t key,
                  bool has_key);

/* A 64-bit hash of bytes (FNV-1a with a final mix): keys and names. */
uint64_t balancer_hash(const void *data, size_t len);

/*
 * The value of cookie `name` in a Cookie header value (RFC 6265 pairs
 * separated by ';'). Sets *val and *vlen and returns true when present.
 */
bool balancer_cookie(const char *header, size_t len, const char *name, const char **val,
                     size_t *vlen);

#endif
