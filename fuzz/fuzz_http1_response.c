/*
 * libFuzzer target for response heads. The first byte picks the request
 * method (GET, HEAD, CONNECT); the rest is the head. Asserts: whole ==
 * split; accepted => exactly one framing consistent with status, method
 * and fields (RFC 9112 §6.3); parse -> serialize -> parse keeps status
 * and framing, and serializing again is byte-identical.
 */
// sources: src/http1.c src/headers.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"
#include "http1.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAXH 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct http1_limits lim = {.max_header_bytes = 4096, .max_headers = 48};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http1_header h1[MAXH], h2[MAXH], h3[MAXH], fw[MAXH + 8];
    static char out[8192], out2[8192], scratch[8192];
    struct http1_response a, b, c;
    if (size < 1)
        return 0;
    static const enum http1_method methods[] = {HTTP1_METHOD_GET, HTTP1_METHOD_HEAD,
                                                HTTP1_METHOD_CONNECT, HTTP1_METHOD_POST};
    enum http1_method m = methods[data[0] & 3];
    const char *in = (const char *)data + 1;
    size--;

    http1_response_init(&a, h1, MAXH);
    ssize_t r = http1_parse_response(in, size, &lim, m, &a);
    http1_response_init(&b, h2, MAXH);
    ssize_t rs = HTTP1_INCOMPLETE;
    size_t step = size <= 256 ? 1 : size / 5 + 1;
    for (size_t n = step < size ? step : size; rs == HTTP1_INCOMPLETE; n += step) {
        if (n > size)
            n = size;
        char *copy = malloc(n ? n : 1);
        memcpy(copy, in, n);
        rs = http1_parse_response(copy, n, &lim, m, &b);
        free(copy);
        if (n == size)
            break;
    }
    CHECK(r == rs);
    if (r <= 0)
        return 0;
    CHECK(a.body == b.body && a.status == b.status && a.nheaders == b.nheaders);
    CHECK(a.status >= 100 && a.status <= 599);

    bool cl = http1_header_find(a.headers, a.nheaders, "content-length") != NULL;
    bool te = http1_header_find(a.headers, a.nheaders, "transfer-encoding") != NULL;
    bool bodiless = m == HTTP1_METHOD_HEAD || a.status < 200 || a.status == 204 ||
                    a.status == 304 || (m == HTTP1_METHOD_CONNECT && a.status < 300);
    CHECK(!(cl && te));
    switch (a.body) {
    case HTTP1_BODY_NONE:
        CHECK(bodiless);
        break;
    case HTTP1_BODY_CHUNKED:
        CHECK(!bodiless && te);
        break;
    case HTTP1_BODY_LENGTH:
        CHECK(!bodiless && cl && !te);
        break;
    case HTTP1_BODY_CLOSE:
        CHECK(!bodiless && !cl && !te && !a.keep_alive);
        break;
    }

    struct http1_head_out o = {.status = a.status,
                               .reason = a.reason,
                               .reason_len = a.reason_len,
                               .headers = a.headers,
                               .nheaders = a.nheaders,
                               .body = a.body,
                               .content_length = a.content_length};
    ssize_t n = http1_write_response_head(out, sizeof(out), &o);
    CHECK(n > 0 && (size_t)n < sizeof(out));
    struct http1_limits big = {.max_header_bytes = sizeof(out), .max_headers = MAXH};
    http1_response_init(&c, h3, MAXH);
    CHECK(http1_parse_response(out, (size_t)n, &big, m, &c) == n);
    CHECK(c.status == a.status && c.body == a.body);
    CHECK(a.body != HTTP1_BODY_LENGTH || c.content_length == a.content_length);
    o.reason = c.reason;
    o.headers = c.headers;
    o.nheaders = c.nheaders;
    CHECK(http1_write_response_head(out2, sizeof(out2), &o) == n);
    CHECK(!memcmp(out, out2, (size_t)n));

    /* forwarding never keeps framing or hop-by-hop fields */
    int k = headers_forward_response(&a, true, fw, MAXH + 8, scratch, sizeof(scratch));
    CHECK(k > 0);
    for (int i = 0; i < k; i++) {
        CHECK(!http1_token_eq(fw[i].name, fw[i].name_len, "content-length"));
        CHECK(!http1_token_eq(fw[i].name, fw[i].name_len, "transfer-encoding"));
        CHECK(!http1_token_eq(fw[i].name, fw[i].name_len, "keep-alive"));
    }
    return 0;
}
