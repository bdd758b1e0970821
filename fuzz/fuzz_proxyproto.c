/*
 * libFuzzer target for the PROXY protocol parser. Asserts that the result
 * is a length within the input and the bound, or a named error; that every
 * prefix answers INCOMPLETE or the whole input's answer (an accepted
 * header: INCOMPLETE for every shorter prefix, the same result for any
 * longer input); and that an accepted header carries a consistent address.
 */
// sources: src/proxyproto.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include "proxyproto.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses a heap copy of exactly data[0..len) (so ASan sees overreads). */
static ssize_t parse_copy(const uint8_t *data, size_t len, struct proxyproto_result *res)
{
    uint8_t *buf = malloc(len ? len : 1);
    CHECK(buf);
    memcpy(buf, data, len);
    ssize_t r = proxyproto_parse(buf, len, res);
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 * PROXYPROTO_MAX_HEADER)
        size = 4 * PROXYPROTO_MAX_HEADER;
    struct proxyproto_result whole, part;
    ssize_t r = parse_copy(data, size, &whole);
    CHECK(r == PROXYPROTO_INCOMPLETE || r == PROXYPROTO_E_NOT_PROXY ||
          r == PROXYPROTO_E_MALFORMED || r == PROXYPROTO_E_UNSUPPORTED ||
          r == PROXYPROTO_E_TOO_LONG || r > 0);
    CHECK(proxyproto_error_str(r) != NULL);
    if (r > 0) {
        CHECK((size_t)r <= size);
        CHECK((size_t)r <= PROXYPROTO_MAX_HEADER);
        CHECK(whole.version == 1 || whole.version == 2);
        CHECK(whole.version != 1 || (size_t)r <= PROXYPROTO_V1_MAX);
        if (whole.local) {
            CHECK(whole.src.ss_family == AF_UNSPEC && whole.src_len == 0);
        } else if (whole.src.ss_family == AF_INET) {
            CHECK(whole.src_len == sizeof(struct sockaddr_in));
            CHECK(whole.dst.ss_family == AF_INET && whole.dst_len == whole.src_len);
        } else {
            CHECK(whole.src.ss_family == AF_INET6);
            CHECK(whole.src_len == sizeof(struct sockaddr_in6));
            CHECK(whole.dst.ss_family == AF_INET6 && whole.dst_len == whole.src_len);
        }
    }
    /* Prefixes: every one up to 128 bytes, then a stride, and the ones
     * around the header's end. */
    size_t limit = r > 0 ? (size_t)r + 1 : size;
    if (limit > size)
        limit = size;
    for (size_t k = 0; k < limit; k += k < 128 ? 1 : 61) {
        ssize_t p = parse_copy(data, k, &part);
        if (r > 0 && k < (size_t)r)
            CHECK(p == PROXYPROTO_INCOMPLETE);
        else if (r > 0)
            CHECK(p == r && memcmp(&part, &whole, sizeof(part)) == 0);
        else
            CHECK(p == PROXYPROTO_INCOMPLETE || p == r);
    }
    if (r > 0) {
        CHECK(parse_copy(data, (size_t)r - 1, &part) == PROXYPROTO_INCOMPLETE);
        CHECK(parse_copy(data, (size_t)r, &part) == r);
        CHECK(memcmp(&part, &whole, sizeof(part)) == 0);
    }
    return 0;
}
