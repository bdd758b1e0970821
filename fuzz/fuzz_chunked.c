/*
 * libFuzzer target for the streaming chunked decoder. The first byte
 * picks the piece size (1..256 bytes per call, or all at once); asserts
 * that any split gives the same consumed count, payload and error as the
 * whole input, that each payload range lies inside the bytes consumed,
 * that no call stalls, and that re-encoding the payload with the encoder
 * decodes back to it.
 */
// sources: src/http1.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct http1_limits lim = {
    .max_chunk_ext = 64, .max_header_bytes = 512, .max_headers = 8, .max_body_bytes = 1 << 20};

/* Returns consumed or an error; payload appended to pay (cap >= size). */
static ssize_t run(const char *in, size_t size, size_t step, char *pay, size_t *plen)
{
    struct http1_chunked dec;
    http1_chunked_init(&dec, &lim);
    size_t pos = 0;
    *plen = 0;
    while (pos < size && !http1_chunked_done(&dec)) {
        size_t avail = size - pos;
        if (step && avail > step)
            avail = step;
        char *piece = malloc(avail);
        memcpy(piece, in + pos, avail);
        size_t off, dlen;
        ssize_t r = http1_chunked_decode(&dec, piece, avail, &off, &dlen);
        if (r < 0) {
            free(piece);
            return r;
        }
        CHECK((size_t)r <= avail && off + dlen <= (size_t)r);
        CHECK(r > 0 || http1_chunked_done(&dec));
        memcpy(pay + *plen, piece + off, dlen);
        *plen += dlen;
        free(piece);
        pos += (size_t)r;
    }
    return http1_chunked_done(&dec) ? (ssize_t)pos : HTTP1_INCOMPLETE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = data[0];
    const char *in = (const char *)data + 1;
    size--;
    char *p1 = malloc(size + 1), *p2 = malloc(size + 1);
    size_t l1, l2;
    ssize_t r1 = run(in, size, 0, p1, &l1);
    ssize_t r2 = run(in, size, step, p2, &l2);
    CHECK(r1 == r2);
    /* payload is only comparable when both succeeded: after an error the
     * split run may have delivered pieces the whole run never reported */
    if (r1 > 0) {
        CHECK(l1 == l2 && !memcmp(p1, p2, l1));
        /* re-encode in pieces of up to 7 bytes and decode again */
        size_t cap = l1 * 4 + 64, n = 0;
        char *enc = malloc(cap);
        for (size_t i = 0; i < l1; i += 7) {
            size_t k = l1 - i < 7 ? l1 - i : 7;
            n += http1_chunk_header(enc + n, k);
            memcpy(enc + n, p1 + i, k);
            n += k;
            memcpy(enc + n, HTTP1_CHUNK_END, 2);
            n += 2;
        }
        memcpy(enc + n, HTTP1_LAST_CHUNK, 5);
        n += 5;
        char *p3 = malloc(n + 1);
        size_t l3;
        CHECK(run(enc, n, 3, p3, &l3) == (ssize_t)n);
        CHECK(l3 == l1 && !memcmp(p3, p1, l1));
        free(p3);
        free(enc);
    }
    free(p1);
    free(p2);
    return 0;
}
