/* balancer: see balancer.h. */
#include "balancer.h"

#include <errno.h>
#include <stdlib.h>

int balancer_init(struct balancer *b, const uint32_t *weights, size_t n)
{
    b->n = n;
    b->weights = weights;
    b->total = 0;
    b->current = calloc(n ? n : 1, sizeof(*b->current));
    if (!b->current)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        b->total += weights[i];
    return 0;
}

void balancer_fini(struct balancer *b)
{
    free(b->current);
    b->current = NULL;
}

int balancer_next(struct balancer *b, const bool *skip)
{
    if (b->n == 1)
        return skip && skip[0] ? -1 : 0;
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (skip && skip[i])
            continue;
        b->current[i] += b->weights[i];
        total += b->weights[i];
        if (best < 0 || b->current[i] > b->current[best])
            best = (int)i;
    }
    if (best >= 0)
        b->current[best] -= total;
    return best;
}
