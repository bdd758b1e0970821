/*
 * balancer: choosing a server of an upstream.
 *
 * Smooth weighted round robin (as nginx): every pick adds each server's
 * weight to its current value, takes the largest, and subtracts the total
 * from it. Weights 5,1,1 give a a b a c a a (a spread, not a burst).
 * Pure module: one struct per upstream per worker, no locking, no I/O.
 */
#ifndef FERRY_BALANCER_H
#define FERRY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct balancer {
    size_t n;
    const uint32_t *weights; /* n weights, each >= 1, owned by the caller */
    int64_t *current;        /* n running values */
    int64_t total;
};

/* Sets b up over `weights` (n >= 1). Returns 0 or -ENOMEM. */
int balancer_init(struct balancer *b, const uint32_t *weights, size_t n);
void balancer_fini(struct balancer *b);

/*
 * The next server's index. `skip`, when not NULL, marks servers not to
 * choose (a retry after a failure); when every server is skipped, returns
 * -1.
 */
int balancer_next(struct balancer *b, const bool *skip);

#endif
