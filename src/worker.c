/*
 * worker: what a worker thread owns for its requests (see worker.h).
 */
#include "worker.h"

#include <stdint.h>

void worker_request_id(struct worker *w, char out[17])
{
    /* xorshift64*: ids need to be unique, not secret. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
    out[16] = '\0';
}
