/* Unit tests for headers (Check), table-driven. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "headers.h"

#define MAXH 64
static struct http1_header in[MAXH], out[MAXH];
static char scratch[4096];

static void parse(const char *s, struct http1_request *req)
{
    http1_request_init(req, in, MAXH);
    ck_assert_int_eq(http1_parse_request(s, strlen(s), NULL, req), (ssize_t)strlen(s));
}

/* The value of the only header named `name` in out[0..n), or NULL; fails
 * when there are several. */
static const char *value_of(int n, const char *name, char *buf)
{
    const char *found = NULL;
    for (int i = 0; i < n; i++) {
        if (!http1_token_eq(out[i].name, out[i].name_len, name))
            continue;
        ck_assert_msg(!found, "%s twice", name);
        memcpy(buf, out[i].value, out[i].value_len);
        buf[out[i].value_len] = '\0';
        found = buf;
    }
    return found;
}

#define REQ "GET / HTTP/1.1\r\nHost: Client.Example\r\n"

START_TEST(hop_by_hop)
{
    struct http1_request req;
    parse(REQ "Connection: keep-alive, X-Secret, te\r\nKeep-Alive: 5\r\n"
              "Proxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\n"
              "HTTP2-Settings: AAA\r\nX-Secret: 1\r\nx-secret: 2\r\nContent-Length: 0\r\n"
              "Accept: */*\r\n\r\n",
          &req);
    struct headers_forward fwd = {.client_addr = "192.0.2.1",
                                  .host = "backend",
                                  .host_len = 7,
                                  .request_id = "gen-1",
                                  .request_id_len = 5};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_int_gt(n, 0);
    char v[512];
    static const char *const gone[] = {
        "connection",     "keep-alive",       "proxy-connection", "te",
        "trailer",        "upgrade",          "http2-settings",   "x-secret",
        "content-length", "transfer-encoding"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        ck_assert_msg(!value_of(n, gone[i], v), "%s forwarded", gone[i]);
    ck_assert_str_eq(value_of(n, "host", v), "backend");
    ck_assert(http1_token_eq(out[0].name, out[0].name_len, "host"));
    ck_assert_str_eq(value_of(n, "accept", v), "*/*");
    ck_assert_str_eq(value_of(n, "via", v), "1.1 ferry");
    ck_assert_str_eq(value_of(n, "x-request-id", v), "gen-1");
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v), "192.0.2.1");
    ck_assert_str_eq(value_of(n, "x-forwarded-proto", v), "http");
    ck_assert_str_eq(value_of(n, "x-forwarded-host", v), "Client.Example");
}
END_TEST

#define XFWD                                                                                       \
    "X-Forwarded-For: 198.51.100.7, 10.0.0.2\r\nx-forwarded-for: 10.0.0.3\r\n"                     \
    "X-Forwarded-Proto: https\r\nX-Forwarded-Host: orig.example\r\n"                               \
    "Forwarded: for=198.51.100.7\r\nVia: 1.0 edge\r\n\r\n"

START_TEST(forwarded_untrusted)
{
    struct http1_request req;
    parse(REQ XFWD, &req);
    struct headers_forward fwd = {.client_addr = "203.0.113.9", .tls = true};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    char v[512];
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v), "203.0.113.9");
    ck_assert_str_eq(value_of(n, "x-forwarded-proto", v), "https");
    ck_assert_str_eq(value_of(n, "x-forwarded-host", v), "Client.Example");
    ck_assert_ptr_null(value_of(n, "forwarded", v));
    ck_assert_str_eq(value_of(n, "via", v), "1.0 edge, 1.1 ferry");
    ck_assert_ptr_null(value_of(n, "host", v)); /* fwd.host NULL: none */
    ck_assert_ptr_null(value_of(n, "x-request-id", v));
}
END_TEST

START_TEST(forwarded_trusted)
{
    struct http1_request req;
    parse(REQ XFWD, &req);
    struct headers_forward fwd = {.client_addr = "10.0.0.4", .trusted_peer = true};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    char v[512];
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v),
                     "198.51.100.7, 10.0.0.2, 10.0.0.3, 10.0.0.4");
    ck_assert_str_eq(value_of(n, "x-forwarded-proto", v), "https");
    ck_assert_str_eq(value_of(n, "x-forwarded-host", v), "orig.example");
    ck_assert_str_eq(value_of(n, "forwarded", v), "for=198.51.100.7, for=10.0.0.4;proto=http");

    struct headers_forward v6 = {.client_addr = "2001:db8::1", .trusted_peer = true, .tls = true};
    n = headers_forward_request(&req, &v6, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "forwarded", v),
                     "for=198.51.100.7, for=\"[2001:db8::1]\";proto=https");
    /* trusted but nothing to keep: Ferry's own values */
    parse(REQ "\r\n", &req);
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v), "10.0.0.4");
    ck_assert_ptr_null(value_of(n, "forwarded", v));
}
END_TEST

/* Names with '_' are dropped unless the route allows them (nginx's
 * underscores_in_headers off): CGI and WSGI servers map X_Forwarded_For
 * and X-Forwarded-For onto the same variable. */
START_TEST(underscores)
{
    struct http1_request req;
    char v[512];
    parse(REQ "X_Forwarded_For: 7.7.7.7\r\nX_Real_IP: 8.8.8.8\r\nMy_Header: 1\r\n"
              "My-Header: 2\r\n_: 3\r\n\r\n",
          &req);
    struct headers_forward fwd = {.client_addr = "203.0.113.9"};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_int_gt(n, 0);
    for (int i = 0; i < n; i++)
        ck_assert_msg(!memchr(out[i].name, '_', out[i].name_len), "%.*s forwarded",
                      (int)out[i].name_len, out[i].name);
    ck_assert_str_eq(value_of(n, "my-header", v), "2");
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v), "203.0.113.9");
    /* From a trusted peer too: the name is the problem, not the peer. */
    fwd.trusted_peer = true;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "x_forwarded_for", v));
    /* underscores_in_headers: true forwards them as sent, but for the
     * spellings of fields Ferry owns or frames with. */
    fwd.trusted_peer = false;
    fwd.underscores_in_headers = true;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "x_forwarded_for", v));
    ck_assert_ptr_null(value_of(n, "x_real_ip", v));
    ck_assert_str_eq(value_of(n, "my_header", v), "1");
    ck_assert_str_eq(value_of(n, "_", v), "3");
    ck_assert_str_eq(value_of(n, "x-forwarded-for", v), "203.0.113.9");
}
END_TEST

/* X-Real-IP is Ferry's: replaced for untrusted peers, kept (the first)
 * from trusted ones, set to the client address when absent. */
START_TEST(real_ip)
{
    struct http1_request req;
    char v[512];
    parse(REQ "X-Real-IP: 8.8.8.8\r\nx-real-ip: 9.9.9.9\r\n\r\n", &req);
    struct headers_forward fwd = {.client_addr = "203.0.113.9"};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-real-ip", v), "203.0.113.9");
    fwd.trusted_peer = true;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-real-ip", v), "8.8.8.8");
    parse(REQ "\r\n", &req);
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-real-ip", v), "203.0.113.9");
    struct headers_forward none = {.trusted_peer = false};
    n = headers_forward_request(&req, &none, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-real-ip", v), "unknown");
}
END_TEST

START_TEST(path_params)
{
    static const struct {
        const char *path;
        bool params;
    } cases[] = {
        {"/admin;x/y", true}, {"/a/b;", true},  {";", true},       {"/a%3Bb", true},
        {"/a%3bb", true},     {"/a%3B", true},  {"/a/b", false},   {"/", false},
        {"/a%3", false},      {"/a%3C", false}, {"/a%33b", false}, {"/a3Bb", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(headers_path_has_params(cases[i].path, strlen(cases[i].path)) ==
                          cases[i].params,
                      "%s", cases[i].path);
    /* Only the bytes given count. */
    ck_assert(!headers_path_has_params("/a;b", 2));
}
END_TEST

START_TEST(request_id)
{
    struct http1_request req;
    char v[512];
    const char *id = NULL;
    size_t len = 0;
    parse(REQ "X-Request-Id: abc-123_x.y:z+/=\r\n\r\n", &req);
    ck_assert(headers_request_id(&req, &id, &len));
    ck_assert(len == 16 && !memcmp(id, "abc-123_x.y:z+/=", 16));
    parse(REQ "X-Request-Id: a b\r\n\r\n", &req);
    ck_assert(!headers_request_id(&req, &id, &len));
    parse(REQ "X-Request-Id: a\r\nX-Request-Id: b\r\n\r\n", &req);
    ck_assert(!headers_request_id(&req, &id, &len));
    parse(REQ "x-request-id:\r\n\r\n", &req);
    ck_assert(!headers_request_id(&req, &id, &len));
    parse(REQ "\r\n", &req);
    ck_assert(!headers_request_id(&req, &id, &len));
    /* The forwarder sends the id it is given, never the client's fields. */
    parse(REQ "X-Request-Id: a\r\nX-Request-Id: b\r\n\r\n", &req);
    struct headers_forward fwd = {.client_addr = "a", .request_id = "new", .request_id_len = 3};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "x-request-id", v), "new");
    int count = 0;
    for (int i = 0; i < n; i++)
        count += http1_token_eq(out[i].name, out[i].name_len, "x-request-id");
    ck_assert_int_eq(count, 1);
    fwd.request_id = NULL;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "x-request-id", v));
    char longid[HEADERS_REQUEST_ID_MAX + 2];
    memset(longid, 'a', sizeof(longid));
    ck_assert(headers_request_id_valid(longid, HEADERS_REQUEST_ID_MAX));
    ck_assert(!headers_request_id_valid(longid, HEADERS_REQUEST_ID_MAX + 1));
    ck_assert(!headers_request_id_valid("a\"b", 3));
    ck_assert(!headers_request_id_valid("a\0b", 3));
}
END_TEST

START_TEST(tunnel)
{
    struct http1_request req;
    char v[512];
    parse(REQ "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n", &req);
    struct headers_forward fwd = {.client_addr = "a", .tunnel = true};
    int n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "upgrade", v), "websocket");
    ck_assert_str_eq(value_of(n, "connection", v), "upgrade");
    ck_assert_str_eq(value_of(n, "sec-websocket-key", v), "k");
    fwd.tunnel = false;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "upgrade", v));
    ck_assert_ptr_null(value_of(n, "connection", v));
    /* h2c is never tunnelled */
    parse(REQ "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n",
          &req);
    fwd.tunnel = true;
    n = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "upgrade", v));
    ck_assert_ptr_null(value_of(n, "http2-settings", v));
}
END_TEST

/* More Connection fields than the fast path remembers still name fields. */
START_TEST(many_connection_fields)
{
    static char buf[2048];
    size_t n = (size_t)sprintf(buf, REQ);
    for (int i = 0; i < 20; i++)
        n += (size_t)sprintf(buf + n, "Connection: X-%d\r\n", i);
    n += (size_t)sprintf(buf + n, "X-19: gone\r\nX-20: kept\r\n\r\n");
    struct http1_request req;
    parse(buf, &req);
    struct headers_forward fwd = {.client_addr = "a"};
    int k = headers_forward_request(&req, &fwd, out, MAXH, scratch, sizeof(scratch));
    char v[64];
    ck_assert_ptr_null(value_of(k, "x-19", v));
    ck_assert_str_eq(value_of(k, "x-20", v), "kept");
}
END_TEST

START_TEST(no_space)
{
    struct http1_request req;
    parse(REQ "A: 1\r\nB: 2\r\nVia: x\r\n\r\n", &req);
    struct headers_forward fwd = {.client_addr = "192.0.2.1"};
    ck_assert_int_eq(headers_forward_request(&req, &fwd, out, 3, scratch, sizeof(scratch)),
                     -ENOSPC);
    ck_assert_int_eq(headers_forward_request(&req, &fwd, out, MAXH, scratch, 8), -ENOSPC);
    ck_assert_int_gt(headers_forward_request(&req, &fwd, out, MAXH, scratch, 64), 0);
}
END_TEST

START_TEST(response_headers)
{
    struct http1_response resp;
    const char *s = "HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\n"
                    "Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nVia: 1.1 app\r\n"
                    "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    http1_response_init(&resp, in, MAXH);
    ck_assert_int_gt(http1_parse_response(s, strlen(s), NULL, HTTP1_METHOD_GET, &resp), 0);
    int n = headers_forward_response(&resp, false, out, MAXH, scratch, sizeof(scratch));
    ck_assert_int_eq(n, 3);
    char v[512];
    ck_assert_str_eq(value_of(n, "via", v), "1.1 app, 1.1 ferry");
    ck_assert(http1_token_eq(out[0].name, out[0].name_len, "set-cookie"));
    ck_assert(http1_token_eq(out[1].name, out[1].name_len, "set-cookie"));
    ck_assert_ptr_null(value_of(n, "x-internal", v));
    ck_assert_ptr_null(value_of(n, "transfer-encoding", v));

    const char *u = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    "Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
    http1_response_init(&resp, in, MAXH);
    ck_assert_int_gt(http1_parse_response(u, strlen(u), NULL, HTTP1_METHOD_GET, &resp), 0);
    n = headers_forward_response(&resp, true, out, MAXH, scratch, sizeof(scratch));
    ck_assert_str_eq(value_of(n, "upgrade", v), "websocket");
    ck_assert_str_eq(value_of(n, "connection", v), "upgrade");
    n = headers_forward_response(&resp, false, out, MAXH, scratch, sizeof(scratch));
    ck_assert_ptr_null(value_of(n, "upgrade", v));
}
END_TEST

/* ---- paths ----------------------------------------------------------------- */

struct pcase {
    const char *in;
    const char *want; /* NULL: error */
    int err;
};

static const struct pcase path_cases[] = {
    {"/", "/", 0},
    {"/a/b/c", "/a/b/c", 0},
    {"/a/b/", "/a/b/", 0},
    {"/a/./b", "/a/b", 0},
    {"/a/../b", "/b", 0},
    {"/a/b/..", "/a/", 0},
    {"/a/b/.", "/a/b/", 0},
    {"/..", "/", 0},
    {"/../../etc/passwd", "/etc/passwd", 0},
    {"/a/..%2e/b", "/a/..%2e/b", 0}, /* placeholder replaced below */
    {"/%2e%2e/admin", "/admin", 0},
    {"/a/%2E/b", "/a/b", 0},
    {"/a//b", "/a/b", 0},
    {"//admin", "/admin", 0},
    {"/a///", "/a/", 0},
    {"/a/.../b", "/a/.../b", 0},
    {"/a/..b/c", "/a/..b/c", 0},
    {"/%41%7e%2d", "/A~-", 0},
    {"/a%20b", "/a%20b", 0},
    {"/a%3fb%3A", "/a%3Fb%3A", 0},
    {"/caf%c3%a9", "/caf%C3%A9", 0},
    {"*", "*", 0},
    {"/a%2Fb", NULL, HTTP1_E_PATH_ENCODED_SLASH},
    {"/a%2fb", NULL, HTTP1_E_PATH_ENCODED_SLASH},
    {"/a%5Cb", NULL, HTTP1_E_PATH_BACKSLASH},
    {"/a%5cb", NULL, HTTP1_E_PATH_BACKSLASH},
    {"/a\\b", NULL, HTTP1_E_PATH_BACKSLASH},
    {"/a%", NULL, HTTP1_E_PATH_PERCENT},
    {"/a%2", NULL, HTTP1_E_PATH_PERCENT},
    {"/a%zz", NULL, HTTP1_E_PATH_PERCENT},
    {"/a%00", NULL, HTTP1_E_PATH_PERCENT},
    {"a/b", NULL, HTTP1_E_PATH},
    {"", NULL, HTTP1_E_PATH},
};

#define H(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

START_TEST(rewrite_rules)
{
    struct http1_header f[8] = {H("Host", "a"), H("X-Env", "dev"), H("x-env", "qa"),
                                H("X-Debug", "1"), H("Accept", "*/*")};
    const struct http1_header set[] = {H("X-ENV", "prod"), H("X-Gateway", "ferry")};
    const struct http1_header add[] = {H("Accept", "text/plain")};
    const struct http1_header rm[] = {{"x-debug", 7, NULL, 0}};
    int n = headers_rewrite(f, 5, 8, set, 2, add, 1, rm, 1);
    ck_assert_int_eq(n, 5);
    const char *want[][2] = {{"Host", "a"},
                             {"Accept", "*/*"},
                             {"X-ENV", "prod"},
                             {"X-Gateway", "ferry"},
                             {"Accept", "text/plain"}};
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(f[i].name, want[i][0]);
        ck_assert_int_eq((int)f[i].value_len, (int)strlen(want[i][1]));
        ck_assert(memcmp(f[i].value, want[i][1], f[i].value_len) == 0);
    }
    /* Names compare whole: X-Env does not remove X-Envoy. */
    struct http1_header g[4] = {H("X-Envoy", "1")};
    const struct http1_header rm2[] = {{"X-Env", 5, NULL, 0}};
    ck_assert_int_eq(headers_rewrite(g, 1, 4, NULL, 0, NULL, 0, rm2, 1), 1);
    /* No room for what is appended. */
    struct http1_header h[2] = {H("A", "1"), H("B", "2")};
    ck_assert_int_eq(headers_rewrite(h, 2, 2, set, 2, NULL, 0, NULL, 0), -ENOSPC);
}
END_TEST

START_TEST(path_normalise)
{
    const struct pcase *c = &path_cases[_i];
    if (_i == 9) {
        /* "..%2e" decodes to "...", a plain segment */
        char o[64];
        ssize_t n = headers_path_normalise("/a/..%2e/b", 10, o, sizeof(o));
        ck_assert_int_eq(n, 8);
        ck_assert(!memcmp(o, "/a/.../b", 8));
        return;
    }
    char o[64];
    ssize_t n = headers_path_normalise(c->in, strlen(c->in), o, sizeof(o));
    if (!c->want) {
        ck_assert_msg(n == c->err, "%s: want %s got %zd", c->in, http1_error_str(c->err), n);
        return;
    }
    ck_assert_msg(n >= 0, "%s: %s", c->in, http1_error_str((int)n));
    o[n] = '\0';
    ck_assert_str_eq(o, c->want);
    /* idempotent */
    char o2[64];
    ssize_t n2 = headers_path_normalise(o, (size_t)n, o2, sizeof(o2));
    ck_assert_int_eq(n2, n);
    ck_assert(!memcmp(o, o2, (size_t)n));
}
END_TEST

START_TEST(path_prefix)
{
#define HP(p, x) headers_path_has_prefix(p, strlen(p), x, strlen(x))
    ck_assert(HP("/v1", "/v1"));
    ck_assert(HP("/v1/", "/v1"));
    ck_assert(HP("/v1/users", "/v1"));
    ck_assert(!HP("/v1evil", "/v1"));
    ck_assert(!HP("/v", "/v1"));
    ck_assert(HP("/v1/x", "/v1/"));
    ck_assert(HP("/v1/", "/v1/"));
    ck_assert(!HP("/v1", "/v1/"));
    ck_assert(HP("/anything", "/"));
    ck_assert(!HP("/V1/x", "/v1"));
#undef HP
}
END_TEST

struct rwcase {
    const char *path, *strip, *add, *want;
};

static const struct rwcase rewrite_cases[] = {
    {"/v1/users", "/v1", NULL, "/users"},
    {"/v1", "/v1", NULL, "/"},
    {"/v1/", "/v1", NULL, "/"},
    {"/v1/users", "/v1/", NULL, "/users"},
    {"/v1evil", "/v1", NULL, "/v1evil"},
    {"/v1/users", "/v1", "/internal", "/internal/users"},
    {"/v1/users", "/v1", "/internal/", "/internal/users"},
    {"/v1", "/v1", "/internal", "/internal"},
    {"/users", NULL, "/api", "/api/users"},
    {"/", NULL, "/api", "/api/"},
    {"/x", NULL, NULL, "/x"},
};

START_TEST(path_rewrite)
{
    const struct rwcase *c = &rewrite_cases[_i];
    char o[64];
    size_t n =
        headers_path_rewrite(c->path, strlen(c->path), c->strip, c->strip ? strlen(c->strip) : 0,
                             c->add, c->add ? strlen(c->add) : 0, o, sizeof(o));
    ck_assert_uint_eq(n, strlen(c->want));
    ck_assert_str_eq(o, c->want);
    /* snprintf-style truncation */
    char small[4];
    ck_assert_uint_eq(headers_path_rewrite(c->path, strlen(c->path), c->strip,
                                           c->strip ? strlen(c->strip) : 0, c->add,
                                           c->add ? strlen(c->add) : 0, small, sizeof(small)),
                      n);
    ck_assert_uint_lt(strlen(small), sizeof(small));
}
END_TEST

static const struct pcase host_cases[] = {
    {"Example.COM", "example.com", 0},
    {"example.com:8080", "example.com", 0},
    {"example.com.", "example.com", 0},
    {"Example.com.:443", "example.com", 0},
    {"[::1]:8080", "[::1]", 0},
    {"[2001:DB8::1]", "[2001:db8::1]", 0},
    {"10.0.0.1:80", "10.0.0.1", 0},
    {"", "", 0},
    {"a b", NULL, HTTP1_E_HOST_INVALID},
    {"a:b", NULL, HTTP1_E_HOST_INVALID},
    {"a:65536", NULL, HTTP1_E_HOST_INVALID},
    {".", NULL, HTTP1_E_HOST_INVALID},
    {":80", NULL, HTTP1_E_HOST_INVALID},
    {"[::1", NULL, HTTP1_E_HOST_INVALID},
    {"[zz]", NULL, HTTP1_E_HOST_INVALID},
    {"a@b", NULL, HTTP1_E_HOST_INVALID},
};

START_TEST(host_normalise)
{
    const struct pcase *c = &host_cases[_i];
    char o[64];
    ssize_t n = headers_host_normalise(c->in, strlen(c->in), o, sizeof(o));
    if (!c->want) {
        ck_assert_msg(n == c->err, "%s: %zd", c->in, n);
        return;
    }
    ck_assert_msg(n >= 0, "%s: %zd", c->in, n);
    o[n] = '\0';
    ck_assert_str_eq(o, c->want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("headers");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, hop_by_hop);
    tcase_add_test(tc, forwarded_untrusted);
    tcase_add_test(tc, forwarded_trusted);
    tcase_add_test(tc, request_id);
    tcase_add_test(tc, underscores);
    tcase_add_test(tc, path_params);
    tcase_add_test(tc, real_ip);
    tcase_add_test(tc, tunnel);
    tcase_add_test(tc, no_space);
    tcase_add_test(tc, many_connection_fields);
    tcase_add_test(tc, response_headers);
    tcase_add_test(tc, rewrite_rules);
    tcase_add_loop_test(tc, path_normalise, 0, sizeof(path_cases) / sizeof(path_cases[0]));
    tcase_add_test(tc, path_prefix);
    tcase_add_loop_test(tc, path_rewrite, 0, sizeof(rewrite_cases) / sizeof(rewrite_cases[0]));
    tcase_add_loop_test(tc, host_normalise, 0, sizeof(host_cases) / sizeof(host_cases[0]));
    suite_add_tcase(s, tc);
    return check_run(s);
}
