/*
 * worker: what a worker thread owns for its requests (see worker.h).
 */
#include "worker.h"

#include <stdint.h>
#include <string.h>

/* x as 8 lowercase hex digits, most significant first, without a loop:
 * each nibble spread into a byte of its own, then turned into a digit (a
 * request id is made per request). */
static void hex8(uint32_t x, char out[8])
{
    uint64_t y = x;
    y = ((y & 0xFFFF0000ull) << 16) | (y & 0xFFFFull);
    y = ((y & 0x0000FF000000FF00ull) << 8) | (y & 0x000000FF000000FFull);
    y = ((y & 0x00F000F000F000F0ull) << 4) | (y & 0x000F000F000F000Full);
    /* y's byte k holds nibble k (from the least significant): 0..15 */
    uint64_t over9 = ((y + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    y += 0x3030303030303030ull + over9 * (uint64_t)('a' - '0' - 10);
    /* byte k is the digit at out[7 - k]: most significant byte first */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    y = __builtin_bswap64(y);
#endif
    memcpy(out, &y, 8);
}

void worker_request_id(struct worker *w, char out[17])
{
    /* xorshift64*: ids need to be unique, not secret. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    hex8((uint32_t)(v >> 32), out);
    hex8((uint32_t)v, out + 8);
    out[16] = '\0';
}
