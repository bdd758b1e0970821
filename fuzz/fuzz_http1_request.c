/*
 * libFuzzer target for request heads. Beyond "no crash":
 * - the result is the same whether the bytes come at once or split
 *   (one byte per call for small inputs, at derived points otherwise),
 *   each call on a fresh copy so no view may outlive its buffer;
 * - an accepted head has exactly one framing decision, consistent with
 *   the raw fields (chunked <=> TE present, length <=> CL present and no
 *   TE, none <=> neither);
 * - parse -> serialize -> parse keeps method, path, query, framing and the
 *   fields, and serializing again gives the same bytes;
 * - the path normaliser is idempotent on accepted origin-form paths.
 * Linked with fuzz/replay.c, `make check` replays fuzz/corpus/http1_request.
 */
// sources: src/http1.c src/headers.c
#ifndef _GNU_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#endif
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

static const struct http1_limits lim = {
    .max_header_bytes = 4096, .max_headers = 48, .max_target = 1024, .max_body_bytes = 1 << 20};

static ssize_t parse_split(const char *data, size_t size, struct http1_request *req,
                           struct http1_header *h)
{
    http1_request_init(req, h, MAXH);
    ssize_t r = HTTP1_INCOMPLETE;
    size_t step = size <= 256 ? 1 : size / 7 + 1;
    for (size_t n = step < size ? step : size; r == HTTP1_INCOMPLETE; n += step) {
        if (n > size)
            n = size;
        char *copy = malloc(n ? n : 1);
        memcpy(copy, data, n);
        r = http1_parse_request(copy, n, &lim, req);
        free(copy);
        if (n == size)
            break;
    }
    return r;
}

static bool has(const struct http1_request *req, const char *name)
{
    return http1_header_find(req->headers, req->nheaders, name) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http1_header h1[MAXH], h2[MAXH], h3[MAXH];
    struct http1_request a, b, c;
    const char *in = (const char *)data;

    http1_request_init(&a, h1, MAXH);
    ssize_t r = http1_parse_request(in, size, &lim, &a);
    ssize_t rs = parse_split(in, size, &b, h2);
    CHECK(r == rs);
    CHECK(r == HTTP1_INCOMPLETE || r > 0 || http1_error_status((int)r) >= 400);
    CHECK(http1_error_str((int)r) != NULL);
    if (r <= 0)
        return 0;
    CHECK((size_t)r <= size);
    CHECK(b.body == a.body && b.nheaders == a.nheaders && b.content_length == a.content_length);

    /* exactly one framing, consistent with the raw fields */
    bool cl = has(&a, "content-length"), te = has(&a, "transfer-encoding");
    CHECK(!(cl && te));
    switch (a.body) {
    case HTTP1_BODY_CHUNKED:
        CHECK(te);
        break;
    case HTTP1_BODY_LENGTH:
        CHECK(cl);
        CHECK(a.content_length <= lim.max_body_bytes);
        break;
    case HTTP1_BODY_NONE:
        CHECK(!cl && !te);
        break;
    default:
        CHECK(!"close framing in a request");
    }
    CHECK(a.method != HTTP1_METHOD_CONNECT);
    CHECK(a.version_minor == 0 || a.version_minor == 1);
    CHECK(a.version_minor == 0 || has(&a, "host"));

    /* round trip */
    static char out[8192], out2[8192];
    struct http1_head_out o = {.method = a.method_str,
                               .method_len = a.method_len,
                               .path = a.path,
                               .path_len = a.path_len,
                               .query = a.query,
                               .query_len = a.query_len,
                               .headers = a.headers,
                               .nheaders = a.nheaders,
                               .body = a.body,
                               .content_length = a.content_length};
    ssize_t n = http1_write_request_head(out, sizeof(out), &o);
    CHECK(n > 0 && (size_t)n < sizeof(out));
    http1_request_init(&c, h3, MAXH);
    struct http1_limits big = lim;
    big.max_header_bytes = sizeof(out);
    big.max_headers = MAXH;
    big.max_target = sizeof(out);
    ssize_t r2 = http1_parse_request(out, (size_t)n, &big, &c);
    if (a.version_minor == 0 && !has(&a, "host")) {
        CHECK(r2 == HTTP1_E_HOST_MISSING); /* the proxy always sends Host */
        return 0;
    }
    CHECK(r2 == n);
    CHECK(c.method == a.method && c.method_len == a.method_len);
    CHECK(c.path_len == a.path_len && !memcmp(c.path, a.path, a.path_len));
    CHECK((c.query == NULL) == (a.query == NULL) && c.query_len == a.query_len);
    CHECK(!a.query || !memcmp(c.query, a.query, a.query_len));
    CHECK(c.body == a.body && c.content_length == a.content_length);
    /* An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8); written out
     * as 1.1 the same headers may ask for one, so only 1.1 must match. */
    CHECK(a.version_minor == 1 || (!a.upgrade && !a.upgrade_websocket));
    CHECK(a.version_minor == 0 || c.upgrade == a.upgrade);
    CHECK(c.expect_continue == a.expect_continue);
    o.method = c.method_str;
    o.path = c.path;
    o.query = c.query;
    o.headers = c.headers;
    o.nheaders = c.nheaders;
    CHECK(http1_write_request_head(out2, sizeof(out2), &o) == n);
    CHECK(!memcmp(out, out2, (size_t)n));

    /* path normalisation is idempotent and never grows */
    if (a.form == HTTP1_TARGET_ORIGIN) {
        static char p1[4096], p2[4096];
        ssize_t l1 = headers_path_normalise(a.path, a.path_len, p1, sizeof(p1));
        if (l1 >= 0) {
            CHECK((size_t)l1 <= a.path_len && p1[0] == '/');
            ssize_t l2 = headers_path_normalise(p1, (size_t)l1, p2, sizeof(p2));
            CHECK(l2 == l1 && !memcmp(p1, p2, (size_t)l1));
            CHECK(!memmem(p1, (size_t)l1, "//", 2) && !memmem(p1, (size_t)l1, "/../", 4) &&
                  !memmem(p1, (size_t)l1, "/./", 3));
        }
    }
    if (a.host) {
        static char hbuf[4096];
        headers_host_normalise(a.host, a.host_len, hbuf, sizeof(hbuf));
    }
    return 0;
}
