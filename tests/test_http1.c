/*
 * Unit tests for http1 (Check), table-driven. Every request case is parsed
 * twice: whole, and fed one byte more per call on the same struct (the
 * restartable path); both must give the same result.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "http1.h"

#define MAXH 64
#define OK 1 /* expected: accepted */

static struct http1_header hdrs[MAXH];
static struct http1_header hdrs2[MAXH];

/* Parses s[0..len) whole. */
static ssize_t req_whole(const char *s, size_t len, const struct http1_limits *lim,
                         struct http1_request *req)
{
    http1_request_init(req, hdrs, MAXH);
    return http1_parse_request(s, len, lim, req);
}

/* Feeds s one byte more per call, each time from a fresh copy (so stale
 * pointers into an old buffer would be caught by ASan). */
static ssize_t req_split(const char *s, size_t len, const struct http1_limits *lim,
                         struct http1_request *req)
{
    http1_request_init(req, hdrs2, MAXH);
    ssize_t r = HTTP1_INCOMPLETE;
    for (size_t n = 1; n <= len && r == HTTP1_INCOMPLETE; n++) {
        char *copy = malloc(n);
        memcpy(copy, s, n);
        r = http1_parse_request(copy, n, lim, req);
        free(copy);
    }
    return r;
}

/* Both ways; asserts they agree and returns the result (req from whole). */
static ssize_t parse_req(const char *s, size_t len, const struct http1_limits *lim,
                         struct http1_request *req)
{
    struct http1_request split;
    ssize_t a = req_whole(s, len, lim, req);
    ssize_t b = req_split(s, len, lim, &split);
    ck_assert_msg(a == b, "whole %zd (%s) != split %zd (%s)", a, http1_error_str((int)a), b,
                  http1_error_str((int)b));
    if (a > 0) {
        ck_assert_int_eq(req->body, split.body);
        ck_assert_uint_eq(req->nheaders, split.nheaders);
    }
    return a;
}

static ssize_t parse_reqs(const char *s, struct http1_request *req)
{
    return parse_req(s, strlen(s), NULL, req);
}

#define RL "GET / HTTP/1.1\r\n"
#define H "Host: a\r\n"
#define POST "POST / HTTP/1.1\r\nHost: a\r\n"

struct rcase {
    const char *in;
    size_t len; /* 0 = strlen */
    int want;   /* OK or an error */
};

/* One or more accepted and rejected cases per rule. */
static const struct rcase req_cases[] = {
    {RL H "\r\n", 0, OK},
    {"GET /a/b?c=d&e HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"GET / HTTP/1.0\r\n\r\n", 0, OK},
    {"GET / HTTP/1.2\r\n" H "\r\n", 0, OK},
    /* method */
    {"G@T / HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_METHOD_CHAR},
    {"G\0T / HTTP/1.1\r\n" H "\r\n", 27, HTTP1_E_METHOD_CHAR},
    {"G\x7fT / HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_METHOD_CHAR},
    {"G\rT / HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_BARE_CR},
    {"PROPFIND / HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"CONNECT a:443 HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_CONNECT},
    /* request line shape */
    {"GET  / HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {"GET / HTTP/1.1 \r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {"GET /a b HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {" GET / HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {"GET /\r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {"GET\r\n" H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    {"\r\n" RL H "\r\n", 0, HTTP1_E_REQUEST_LINE},
    /* target */
    {"GET /a\x01 HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_CHAR},
    {"GET /a\x7f HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_CHAR},
    {"GET /a\0 HTTP/1.1\r\n" H "\r\n", 29, HTTP1_E_TARGET_CHAR},
    {"GET /a#f HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_CHAR},
    {"GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_CHAR},
    {"GET /a\tb HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_CHAR},
    {"GET /a%20b HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"GET * HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_FORM},
    {"OPTIONS * HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"GET a.com:80 HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_FORM},
    {"GET ftp://a/ HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_FORM},
    {"GET http:/a/ HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_TARGET_FORM},
    {"GET http://a.com/x?y HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"GET HTTPS://a.com HTTP/1.1\r\n" H "\r\n", 0, OK},
    {"GET http://u@a.com/ HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_HOST_INVALID},
    {"GET http:///x HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_HOST_INVALID},
    /* version */
    {"GET / HTTP/1.1x\r\n" H "\r\n", 0, HTTP1_E_VERSION},
    {"GET / HTTP/11\r\n" H "\r\n", 0, HTTP1_E_VERSION},
    {"GET / http/1.1\r\n" H "\r\n", 0, HTTP1_E_VERSION},
    {"GET / HTTP/1.\r\n" H "\r\n", 0, HTTP1_E_VERSION},
    {"GET / HTTP/2.0\r\n" H "\r\n", 0, HTTP1_E_VERSION_UNSUPPORTED},
    {"GET / HTTP/0.9\r\n" H "\r\n", 0, HTTP1_E_VERSION_UNSUPPORTED},
    /* line ends */
    {"GET / HTTP/1.1\n" H "\r\n", 0, HTTP1_E_BARE_LF},
    {RL "Host: a\nX: y\r\n\r\n", 0, HTTP1_E_BARE_LF},
    {RL H "\n", 0, HTTP1_E_BARE_LF},
    {RL H "\n\r\n", 0, HTTP1_E_BARE_LF},
    {RL "Host: a\rb\r\n\r\n", 0, HTTP1_E_BARE_CR},
    {RL "Ho\rst: a\r\n\r\n", 0, HTTP1_E_BARE_CR},
    {"GET /\r HTTP/1.1\r\n" H "\r\n", 0, HTTP1_E_BARE_CR},
    {RL H "\r\r\n\r\n", 0, HTTP1_E_BARE_CR},
    /* field lines */
    {RL " Host: a\r\n\r\n", 0, HTTP1_E_LEADING_WS},
    {RL "\tHost: a\r\n\r\n", 0, HTTP1_E_LEADING_WS},
    {RL H "X: b\r\n c\r\n\r\n", 0, HTTP1_E_OBS_FOLD},
    {RL H "X: b\r\n\tc\r\n\r\n", 0, HTTP1_E_OBS_FOLD},
    {RL H "XY\r\n\r\n", 0, HTTP1_E_NO_COLON},
    {RL H "X Y\r\n\r\n", 0, HTTP1_E_NO_COLON},
    {RL "Host : a\r\n\r\n", 0, HTTP1_E_WS_BEFORE_COLON},
    {RL H "X\t: a\r\n\r\n", 0, HTTP1_E_WS_BEFORE_COLON},
    {RL H ": a\r\n\r\n", 0, HTTP1_E_EMPTY_NAME},
    {RL H "X(y): a\r\n\r\n", 0, HTTP1_E_NAME_CHAR},
    {RL H "X\0: a\r\n\r\n", 35, HTTP1_E_NAME_CHAR},
    {RL H "X\x7f: a\r\n\r\n", 0, HTTP1_E_NAME_CHAR},
    {RL H "X: a\0b\r\n\r\n", 36, HTTP1_E_VALUE_CHAR},
    {RL H "X: a\x7f\r\n\r\n", 0, HTTP1_E_VALUE_CHAR},
    {RL H "X: \x01\r\n\r\n", 0, HTTP1_E_VALUE_CHAR},
    {RL H "X: a\x0b b\r\n\r\n", 0, HTTP1_E_VALUE_CHAR},
    {RL H "X: a\tb \t\r\n\r\n", 0, OK},
    {RL H "X: caf\xc3\xa9\r\n\r\n", 0, OK},
    {RL H "X:\r\n\r\n", 0, OK},
    {RL H "X-Y_z.~!#$%&'*+^`|: 1\r\n\r\n", 0, OK},
    /* Content-Length */
    {POST "Content-Length: 5\r\n\r\n", 0, OK},
    {POST "Content-Length:  05 \r\n\r\n", 0, OK},
    {POST "Content-Length: 5\r\ncontent-length: 5\r\n\r\n", 0, OK},
    {POST "Content-Length: +5\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: -5\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: 0x5\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: \r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: 5 5\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: 5, 5\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: 5.0\r\n\r\n", 0, HTTP1_E_CL_INVALID},
    {POST "Content-Length: 9223372036854775807\r\n\r\n", 0, OK},
    {POST "Content-Length: 9223372036854775808\r\n\r\n", 0, HTTP1_E_CL_OVERFLOW},
    {POST "Content-Length: 99999999999999999999999\r\n\r\n", 0, HTTP1_E_CL_OVERFLOW},
    {POST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, HTTP1_E_CL_DIFFERENT},
    /* Transfer-Encoding */
    {POST "Transfer-Encoding: chunked\r\n\r\n", 0, OK},
    {POST "Transfer-Encoding: CHUNKED \r\n\r\n", 0, OK},
    {POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0, HTTP1_E_CL_AND_TE},
    {POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, HTTP1_E_CL_AND_TE},
    {POST "Transfer-Encoding: gzip\r\n\r\n", 0, HTTP1_E_TE_NOT_CHUNKED_LAST},
    {POST "Transfer-Encoding: chunked, gzip\r\n\r\n", 0, HTTP1_E_TE_NOT_CHUNKED_LAST},
    {POST "Transfer-Encoding: xchunked\r\n\r\n", 0, HTTP1_E_TE_NOT_CHUNKED_LAST},
    {POST "Transfer-Encoding: gzip, chunked\r\n\r\n", 0, HTTP1_E_TE_UNKNOWN},
    {POST "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 0, HTTP1_E_TE_UNKNOWN},
    {POST "Transfer-Encoding: chunked, chunked\r\n\r\n", 0, HTTP1_E_TE_CHUNKED_TWICE},
    {POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
     HTTP1_E_TE_CHUNKED_TWICE},
    {POST "Transfer-Encoding: chunked;a=b\r\n\r\n", 0, HTTP1_E_TE_SYNTAX},
    {POST "Transfer-Encoding: \r\n\r\n", 0, HTTP1_E_TE_SYNTAX},
    {POST "Transfer-Encoding: ,chunked\r\n\r\n", 0, HTTP1_E_TE_SYNTAX},
    {POST "Transfer-Encoding: \"chunked\"\r\n\r\n", 0, HTTP1_E_TE_SYNTAX},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, HTTP1_E_TE_HTTP10},
    /* Host */
    {"GET / HTTP/1.1\r\n\r\n", 0, HTTP1_E_HOST_MISSING},
    {"GET http://a/ HTTP/1.1\r\n\r\n", 0, HTTP1_E_HOST_MISSING},
    {RL H H "\r\n", 0, HTTP1_E_HOST_REPEATED},
    {RL "Host: a\r\nhost: b\r\n\r\n", 0, HTTP1_E_HOST_REPEATED},
    {RL "Host: a b\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: a/b\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: a:99999\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: a:\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: a,b\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: [::1\r\n\r\n", 0, HTTP1_E_HOST_INVALID},
    {RL "Host: [::1]:8080\r\n\r\n", 0, OK},
    {RL "Host: Example.COM.:443\r\n\r\n", 0, OK},
    {RL "Host:\r\n\r\n", 0, OK},
};

START_TEST(request_table)
{
    const struct rcase *c = &req_cases[_i];
    size_t len = c->len ? c->len : strlen(c->in);
    struct http1_request req;
    ssize_t r = parse_req(c->in, len, NULL, &req);
    if (c->want == OK)
        ck_assert_msg(r == (ssize_t)len, "case %d: want accepted, got %zd (%s)", _i, r,
                      http1_error_str((int)r));
    else
        ck_assert_msg(r == c->want, "case %d: want %s, got %zd (%s)", _i, http1_error_str(c->want),
                      r, http1_error_str((int)r));
}
END_TEST

START_TEST(request_fields)
{
    struct http1_request req;
    const char *s = "PATCH /a/b?x=1&y HTTP/1.1\r\nHost:  Api.Example.com:8080 \r\n"
                    "Content-Length: 12\r\nX-Empty:\r\nExpect: 100-Continue\r\n\r\nbody";
    ssize_t r = parse_reqs(s, &req);
    ck_assert_int_eq(r, (ssize_t)strlen(s) - 4);
    ck_assert_int_eq(req.method, HTTP1_METHOD_PATCH);
    ck_assert_int_eq(req.form, HTTP1_TARGET_ORIGIN);
    ck_assert_int_eq(req.version_minor, 1);
    ck_assert_uint_eq(req.target_len, 10);
    ck_assert(!memcmp(req.path, "/a/b", req.path_len) && req.path_len == 4);
    ck_assert(req.query_len == 5 && !memcmp(req.query, "x=1&y", 5));
    ck_assert(req.host_len == 20 && !memcmp(req.host, "Api.Example.com:8080", 20));
    ck_assert_uint_eq(req.nheaders, 4);
    ck_assert_uint_eq(req.headers[2].value_len, 0);
    ck_assert_int_eq(req.body, HTTP1_BODY_LENGTH);
    ck_assert_uint_eq(req.content_length, 12);
    ck_assert(req.keep_alive);
    ck_assert(req.expect_continue);
    ck_assert(!req.upgrade);

    /* no '?' -> NULL query; "?" -> empty query */
    ck_assert_int_gt(parse_reqs(RL H "\r\n", &req), 0);
    ck_assert_ptr_null(req.query);
    ck_assert_int_eq(req.body, HTTP1_BODY_NONE);
    ck_assert_int_gt(parse_reqs("GET /? HTTP/1.1\r\n" H "\r\n", &req), 0);
    ck_assert_ptr_nonnull(req.query);
    ck_assert_uint_eq(req.query_len, 0);

    /* absolute-form: the authority overrides Host */
    ck_assert_int_gt(parse_reqs("GET http://b.com:81?q HTTP/1.1\r\nHost: a\r\n\r\n", &req), 0);
    ck_assert_int_eq(req.form, HTTP1_TARGET_ABSOLUTE);
    ck_assert(req.host_len == 8 && !memcmp(req.host, "b.com:81", 8));
    ck_assert(req.path_len == 1 && req.path[0] == '/');
    ck_assert(req.query_len == 1 && req.query[0] == 'q');
    ck_assert(req.scheme_len == 4);

    /* HTTP/1.0 without Host: host NULL, no keep-alive by default */
    ck_assert_int_gt(parse_reqs("GET / HTTP/1.0\r\n\r\n", &req), 0);
    ck_assert_ptr_null(req.host);
    ck_assert(!req.keep_alive);
    ck_assert_int_eq(req.version_minor, 0);
    ck_assert_int_gt(parse_reqs("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req), 0);
    ck_assert(req.keep_alive);
    ck_assert_int_gt(parse_reqs(RL H "Connection: foo, close\r\n\r\n", &req), 0);
    ck_assert(!req.keep_alive);

    /* unknown method keeps its token */
    ck_assert_int_gt(parse_reqs("PURGE / HTTP/1.1\r\n" H "\r\n", &req), 0);
    ck_assert_int_eq(req.method, HTTP1_METHOD_OTHER);
    ck_assert(req.method_len == 5 && !memcmp(req.method_str, "PURGE", 5));
    /* methods are case-sensitive, and one with a lowercase letter is
     * refused: backends that upper-case it would read another method */
    ck_assert_int_eq(parse_reqs("get / HTTP/1.1\r\n" H "\r\n", &req), HTTP1_E_METHOD_CASE);
    ck_assert_int_eq(parse_reqs("Head / HTTP/1.1\r\n" H "\r\n", &req), HTTP1_E_METHOD_CASE);
    ck_assert_int_eq(parse_reqs("M-SEARCH_z / HTTP/1.1\r\n" H "\r\n", &req), HTTP1_E_METHOD_CASE);
    ck_assert_int_gt(parse_reqs("M-SEARCH / HTTP/1.1\r\n" H "\r\n", &req), 0);
    ck_assert_int_gt(parse_reqs("X_9.A~ / HTTP/1.1\r\n" H "\r\n", &req), 0);

    ck_assert_int_gt(parse_reqs(POST "Transfer-Encoding: chunked\r\n\r\n", &req), 0);
    ck_assert_int_eq(req.body, HTTP1_BODY_CHUNKED);
}
END_TEST

START_TEST(request_upgrade)
{
    struct http1_request req;
    ck_assert_int_gt(
        parse_reqs(RL H "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n", &req), 0);
    ck_assert(req.upgrade && req.upgrade_websocket && !req.upgrade_h2c);
    ck_assert_int_gt(parse_reqs(RL H "Upgrade: websocket\r\n\r\n", &req), 0);
    ck_assert(!req.upgrade && !req.upgrade_websocket);
    ck_assert_int_gt(
        parse_reqs(RL H "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n", &req), 0);
    ck_assert(req.upgrade && !req.upgrade_websocket && req.upgrade_h2c);
    /* ignored in HTTP/1.0 (RFC 9110 7.8): no tunnel for a 1.0 client */
    ck_assert_int_gt(parse_reqs("GET / HTTP/1.0\r\n" H
                                "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                                &req),
                     0);
    ck_assert(!req.upgrade && !req.upgrade_websocket);
}
END_TEST

START_TEST(request_limits)
{
    struct http1_request req;
    struct http1_limits lim = {.max_header_bytes = 200, .max_headers = 3, .max_target = 20};
    char buf[1024];

    /* target: 20 ok, 21 -> 414, also when the line is not complete yet */
    snprintf(buf, sizeof(buf), "GET /%s HTTP/1.1\r\nHost: a\r\n\r\n", "0123456789012345678");
    ck_assert_int_gt(parse_req(buf, strlen(buf), &lim, &req), 0);
    snprintf(buf, sizeof(buf), "GET /%s HTTP/1.1\r\nHost: a\r\n\r\n", "01234567890123456789");
    ck_assert_int_eq(parse_req(buf, strlen(buf), &lim, &req), HTTP1_E_TARGET_TOO_LONG);
    ck_assert_int_eq(parse_req(buf, 25, &lim, &req), HTTP1_E_TARGET_TOO_LONG);
    ck_assert_int_eq(parse_req(buf, 24, &lim, &req), HTTP1_INCOMPLETE);
    ck_assert_int_eq(http1_error_status(HTTP1_E_TARGET_TOO_LONG), 414);

    /* header count: 3 ok, 4 -> 431 */
    const char *three = RL H "A: 1\r\nB: 2\r\n\r\n";
    const char *four = RL H "A: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    ck_assert_int_gt(parse_req(three, strlen(three), &lim, &req), 0);
    ck_assert_int_eq(parse_req(four, strlen(four), &lim, &req), HTTP1_E_TOO_MANY_HEADERS);
    /* the caller's array is a limit too */
    http1_request_init(&req, hdrs, 2);
    ck_assert_int_eq(http1_parse_request(three, strlen(three), NULL, &req),
                     HTTP1_E_TOO_MANY_HEADERS);
    ck_assert_int_eq(http1_error_status(HTTP1_E_TOO_MANY_HEADERS), 431);

    /* head size: exactly 200 accepted; 201 -> 431; no end in 200 -> 431
     * even though incomplete */
    memset(buf, 0, sizeof(buf));
    strcpy(buf, RL H "X: ");
    size_t pre = strlen(buf);
    memset(buf + pre, 'v', 200 - pre - 4);
    memcpy(buf + 196, "\r\n\r\n", 4);
    ck_assert_int_eq(parse_req(buf, 200, &lim, &req), 200);
    memmove(buf + pre + 1, buf + pre, 200 - pre);
    ck_assert_int_eq(parse_req(buf, 201, &lim, &req), HTTP1_E_HEAD_TOO_LARGE);
    ck_assert_int_eq(parse_req(buf, 200, &lim, &req), HTTP1_E_HEAD_TOO_LARGE);
    ck_assert_int_eq(parse_req(buf, 199, &lim, &req), HTTP1_INCOMPLETE);
    ck_assert_int_eq(http1_error_status(HTTP1_E_HEAD_TOO_LARGE), 431);

    /* body limit on Content-Length */
    struct http1_limits blim = {.max_body_bytes = 10};
    const char *b10 = POST "Content-Length: 10\r\n\r\n";
    const char *b11 = POST "Content-Length: 11\r\n\r\n";
    ck_assert_int_gt(parse_req(b10, strlen(b10), &blim, &req), 0);
    ck_assert_int_eq(parse_req(b11, strlen(b11), &blim, &req), HTTP1_E_BODY_TOO_LARGE);
    ck_assert_int_eq(http1_error_status(HTTP1_E_BODY_TOO_LARGE), 413);
}
END_TEST

/* A request line that is garbage fails as soon as it is complete, before
 * the head limit; the result does not depend on later bytes. */
START_TEST(request_early_error)
{
    struct http1_request req;
    http1_request_init(&req, hdrs, MAXH);
    ck_assert_int_eq(http1_parse_request("GET / HTTP/1.1\r", 15, NULL, &req), HTTP1_INCOMPLETE);
    http1_request_init(&req, hdrs, MAXH);
    ck_assert_int_eq(http1_parse_request("G T / HTTP/1.1\r\nHo", 18, NULL, &req),
                     HTTP1_E_REQUEST_LINE);
    http1_request_init(&req, hdrs, MAXH);
    ck_assert_int_eq(http1_parse_request("GET / HTTP/1.1\r\nHost: a\n", 24, NULL, &req),
                     HTTP1_E_BARE_LF);
}
END_TEST

/* Smuggling family 1: every whitespace or control byte around and inside
 * `chunked` and its header name, with a Content-Length in either order.
 * Never accepted with CL present; without CL, accepted only as chunked or
 * with no field named Transfer-Encoding at all. */
START_TEST(smuggling_te_variants)
{
    static const char bytes[] = {' ',    '\t', '\v',   '\f', '\r', '\n', '\0',
                                 '\x7f', ',',  '\x80', '"',  ';',  '='};
    static const char *const shapes[] = {
        "@Transfer-Encoding: chunked", "Transfer-Encoding@: chunked",
        "Transfer-Encoding:@chunked",  "Transfer-Encoding: @chunked",
        "Transfer-Encoding: chunked@", "Transfer-Encoding: chun@ked",
        "Transfer@-Encoding: chunked", "Transfer-Encoding: chunked,@",
    };
    int tried = 0;
    for (size_t s = 0; s < CHECK_NELEMS(shapes); s++) {
        for (size_t b = 0; b < sizeof(bytes); b++) {
            char te[64];
            int tl = (int)strlen(shapes[s]);
            memcpy(te, shapes[s], (size_t)tl + 1);
            *strchr(te, '@') = bytes[b];
            for (int order = 0; order < 3; order++) {
                char buf[256];
                size_t n = 0;
#define ADD(str, l) (memcpy(buf + n, (str), (l)), n += (l))
                ADD(POST, strlen(POST));
                if (order == 1)
                    ADD("Content-Length: 5\r\n", 19);
                ADD(te, (size_t)tl);
                ADD("\r\n", 2);
                if (order == 0)
                    ADD("Content-Length: 5\r\n", 19);
                ADD("\r\n", 2);
#undef ADD
                struct http1_request req;
                ssize_t r = parse_req(buf, n, NULL, &req);
                tried++;
                if (order < 2) {
                    ck_assert_msg(r < 0, "shape %zu byte %#x order %d accepted", s,
                                  (unsigned char)bytes[b], order);
                } else if (r > 0 && req.body != HTTP1_BODY_CHUNKED) {
                    ck_assert_msg(
                        !http1_header_find(req.headers, req.nheaders, "transfer-encoding"),
                        "shape %zu byte %#x: TE seen but not chunked", s, (unsigned char)bytes[b]);
                }
            }
        }
    }
    ck_assert_int_gt(tried, 100);
}
END_TEST

/* Family 2: every CRLF of a valid head made a bare LF, a CR inserted at
 * every offset, and NUL inserted at every offset: never accepted. */
START_TEST(smuggling_bare_cr_lf_nul)
{
    const char *base = POST "Content-Length: 5\r\nX-A: b c\r\n\r\n";
    size_t len = strlen(base);
    char buf[256];
    struct http1_request req;
    for (size_t i = 0; i + 1 < len; i++) {
        if (base[i] != '\r')
            continue;
        memcpy(buf, base, i);
        memcpy(buf + i, base + i + 1, len - i - 1);
        ck_assert_int_eq(parse_req(buf, len - 1, NULL, &req), HTTP1_E_BARE_LF);
    }
    for (size_t i = 0; i < len - 1; i++) {
        if (base[i] == '\n')
            continue; /* "\r\r\n"... handled: CR before CR */
        memcpy(buf, base, i);
        buf[i] = '\r';
        memcpy(buf + i + 1, base + i, len - i);
        memcpy(buf + len + 1, "\r\n", 2); /* so a CR in the last line still ends the head */
        ssize_t r = parse_req(buf, len + 3, NULL, &req);
        ck_assert_msg(r == HTTP1_E_BARE_CR, "CR at %zu: %s", i, http1_error_str((int)r));
    }
    for (size_t i = 0; i < len - 2; i++) {
        memcpy(buf, base, i);
        buf[i] = '\0';
        memcpy(buf + i + 1, base + i, len - i);
        ck_assert_msg(parse_req(buf, len + 1, NULL, &req) < 0, "NUL at %zu accepted", i);
    }
}
END_TEST

/* Round trip: parse -> serialize -> parse gives the same fields. */
static const char *const roundtrip_cases[] = {
    RL H "\r\n",
    POST "Content-Length: 7\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    POST "Transfer-Encoding: chunked\r\nAccept: */*\r\n\r\n",
    "DELETE /x/y?z=%20 HTTP/1.1\r\nHost: h:1\r\nCookie: a=b; c=d\r\nX:\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: h\r\nUser-Agent: t\t x\r\n\r\n",
    POST "Content-Length: 0\r\n\r\n",
};

/* The value scan reads 8 bytes at a time: a forbidden byte is found at
 * every offset of a word, and allowed bytes that a word check doubts
 * (HTAB) or passes (obs-text, SP, '~') are accepted, in values of many
 * lengths. */
START_TEST(value_bytes_at_every_offset)
{
    static const unsigned char bad[] = {0x00, 0x01, 0x08, 0x0a, 0x0b, 0x1f, 0x7f};
    static const unsigned char good[] = {'\t', ' ', '~', 0x80, 0xff, 0x21, 0x7e};
    char buf[128];
    for (size_t vlen = 1; vlen <= 24; vlen++) {
        for (size_t at = 0; at < vlen; at++) {
            for (size_t k = 0; k < sizeof(bad) + sizeof(good); k++) {
                bool is_bad = k < sizeof(bad);
                unsigned char c = is_bad ? bad[k] : good[k - sizeof(bad)];
                if (!is_bad && (c == ' ' || c == '\t') && (at == 0 || at == vlen - 1))
                    continue; /* edge whitespace is trimmed, not kept */
                char value[32];
                memset(value, 'v', vlen);
                value[at] = (char)c;
                int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
                memcpy(buf + n, value, vlen);
                n += (int)vlen;
                memcpy(buf + n, "\r\n\r\n", 4);
                n += 4;
                struct http1_request req;
                ssize_t r = parse_req(buf, (size_t)n, NULL, &req);
                if (c == '\n') {
                    ck_assert_msg(r == HTTP1_E_BARE_LF, "LF at %zu of %zu: %zd", at, vlen, r);
                } else if (is_bad) {
                    ck_assert_msg(r == HTTP1_E_VALUE_CHAR, "0x%02x at %zu of %zu: %zd", c, at, vlen,
                                  r);
                } else {
                    ck_assert_msg(r == n, "0x%02x at %zu of %zu: %zd", c, at, vlen, r);
                    ck_assert_uint_eq(req.headers[1].value_len, vlen);
                    ck_assert_int_eq(memcmp(req.headers[1].value, value, vlen), 0);
                }
            }
        }
    }
}
END_TEST

START_TEST(roundtrip)
{
    struct http1_request a, b;
    static struct http1_header hb[MAXH];
    const char *in = roundtrip_cases[_i];
    ck_assert_int_gt(parse_reqs(in, &a), 0);
    struct http1_head_out o = {
        .method = a.method_str,
        .method_len = a.method_len,
        .path = a.path,
        .path_len = a.path_len,
        .query = a.query,
        .query_len = a.query_len,
        .headers = a.headers,
        .nheaders = a.nheaders,
        .body = a.body,
        .content_length = a.content_length,
    };
    char out[1024];
    ssize_t n = http1_write_request_head(out, sizeof(out), &o);
    ck_assert_int_gt(n, 0);
    ck_assert_int_lt(n, (ssize_t)sizeof(out));
    http1_request_init(&b, hb, MAXH);
    ck_assert_int_eq(http1_parse_request(out, (size_t)n, NULL, &b), n);
    ck_assert_int_eq(a.method, b.method);
    ck_assert(a.path_len == b.path_len && !memcmp(a.path, b.path, a.path_len));
    ck_assert((a.query == NULL) == (b.query == NULL));
    ck_assert(a.query_len == b.query_len && (!a.query || !memcmp(a.query, b.query, a.query_len)));
    ck_assert_int_eq(a.body, b.body);
    ck_assert_uint_eq(a.content_length, b.content_length);
    ck_assert_int_eq(b.version_minor, 1);
    ck_assert((a.host == NULL) == (b.host == NULL));
    /* same fields in the same order (framing headers re-made: one each) */
    size_t j = 0;
    for (size_t i = 0; i < a.nheaders; i++) {
        if (http1_token_eq(a.headers[i].name, a.headers[i].name_len, "content-length") ||
            http1_token_eq(a.headers[i].name, a.headers[i].name_len, "transfer-encoding"))
            continue;
        ck_assert_uint_lt(j, b.nheaders);
        ck_assert(a.headers[i].name_len == b.headers[j].name_len &&
                  !memcmp(a.headers[i].name, b.headers[j].name, a.headers[i].name_len));
        ck_assert(a.headers[i].value_len == b.headers[j].value_len &&
                  !memcmp(a.headers[i].value, b.headers[j].value, a.headers[i].value_len));
        j++;
    }
    size_t framing = a.body == HTTP1_BODY_LENGTH || a.body == HTTP1_BODY_CHUNKED;
    ck_assert_uint_eq(b.nheaders, j + framing);
    /* and serializing b gives the same bytes (stable) */
    struct http1_head_out o2 = o;
    o2.method = b.method_str;
    o2.path = b.path;
    o2.query = b.query;
    o2.headers = b.headers;
    o2.nheaders = b.nheaders;
    char out2[1024];
    ck_assert_int_eq(http1_write_request_head(out2, sizeof(out2), &o2), n);
    ck_assert(!memcmp(out, out2, (size_t)n));
}
END_TEST

START_TEST(serializer)
{
    struct http1_header h[] = {
        {"Host", 4, "a", 1},
        {"Content-Length", 14, "99", 2},
        {"transfer-encoding", 17, "gzip", 4},
        {"X-B", 3, "c d", 3},
    };
    struct http1_head_out o = {.method = "PUT",
                               .method_len = 3,
                               .path = "/p",
                               .path_len = 2,
                               .query = "q=1",
                               .query_len = 3,
                               .headers = h,
                               .nheaders = 4,
                               .body = HTTP1_BODY_LENGTH,
                               .content_length = 12};
    char buf[256];
    const char *want = "PUT /p?q=1 HTTP/1.1\r\nHost: a\r\nX-B: c d\r\nContent-Length: 12\r\n\r\n";
    ck_assert_int_eq(http1_write_request_head(buf, sizeof(buf), &o), (ssize_t)strlen(want));
    ck_assert_str_eq(buf, want);
    /* snprintf-style: the needed length even when it does not fit */
    ck_assert_int_eq(http1_write_request_head(buf, 10, &o), (ssize_t)strlen(want));
    ck_assert_uint_eq(strlen(buf), 9);
    o.body = HTTP1_BODY_CHUNKED;
    o.query = NULL;
    o.connection_close = true;
    http1_write_request_head(buf, sizeof(buf), &o);
    ck_assert_str_eq(buf, "PUT /p HTTP/1.1\r\nHost: a\r\nX-B: c d\r\n"
                          "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    /* never emits a CR/LF/NUL it was given */
    struct http1_header bad = {"X", 1, "a\r\nB: c", 7};
    o.headers = &bad;
    o.nheaders = 1;
    ck_assert_int_eq(http1_write_request_head(buf, sizeof(buf), &o), HTTP1_E_SERIALIZE);
    struct http1_header badname = {"X Y", 3, "a", 1};
    o.headers = &badname;
    ck_assert_int_eq(http1_write_request_head(buf, sizeof(buf), &o), HTTP1_E_SERIALIZE);
    o.nheaders = 0;
    o.path = "/a b";
    o.path_len = 4;
    ck_assert_int_eq(http1_write_request_head(buf, sizeof(buf), &o), HTTP1_E_SERIALIZE);

    struct http1_head_out r = {.status = 404,
                               .reason = "Not Found",
                               .reason_len = 9,
                               .headers = h,
                               .nheaders = 1,
                               .body = HTTP1_BODY_NONE};
    http1_write_response_head(buf, sizeof(buf), &r);
    ck_assert_str_eq(buf, "HTTP/1.1 404 Not Found\r\nHost: a\r\n\r\n");
    r.status = 99;
    ck_assert_int_eq(http1_write_response_head(buf, sizeof(buf), &r), HTTP1_E_SERIALIZE);
    r.status = 200;
    r.reason = "O\nK";
    r.reason_len = 3;
    ck_assert_int_eq(http1_write_response_head(buf, sizeof(buf), &r), HTTP1_E_SERIALIZE);
    ck_assert_str_eq(http1_reason(431), "Request Header Fields Too Large");
}
END_TEST

/* ---- responses ------------------------------------------------------------ */

struct respcase {
    const char *in;
    enum http1_method method;
    int want;             /* OK or an error */
    enum http1_body body; /* when OK */
    int keep_alive;       /* when OK */
};

#define R200 "HTTP/1.1 200 OK\r\n"
static const struct respcase resp_cases[] = {
    {R200 "Content-Length: 5\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_LENGTH, 1},
    {R200 "Transfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_CHUNKED, 1},
    {R200 "\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_CLOSE, 0},
    {R200 "Content-Length: 5\r\n\r\n", HTTP1_METHOD_HEAD, OK, HTTP1_BODY_NONE, 1},
    {R200 "Transfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_HEAD, OK, HTTP1_BODY_NONE, 1},
    {"HTTP/1.1 204 No Content\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_NONE, 1},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", HTTP1_METHOD_GET, OK,
     HTTP1_BODY_NONE, 1},
    {"HTTP/1.1 100 Continue\r\n\r\n", HTTP1_METHOD_POST, OK, HTTP1_BODY_NONE, 1},
    {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     HTTP1_METHOD_GET, OK, HTTP1_BODY_NONE, 1},
    {R200 "\r\n", HTTP1_METHOD_CONNECT, OK, HTTP1_BODY_NONE, 1},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_LENGTH, 0},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", HTTP1_METHOD_GET, OK,
     HTTP1_BODY_LENGTH, 1},
    {R200 "Content-Length: 1\r\nConnection: close\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_LENGTH,
     0},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_LENGTH, 1},
    {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET, OK, HTTP1_BODY_LENGTH, 1},
    /* 502 cases */
    {R200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_CL_DIFFERENT,
     0, 0},
    {R200 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_E_CL_AND_TE, 0, 0},
    {R200 "Content-Length: -1\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_CL_INVALID, 0, 0},
    {R200 "X: a\r\n b\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_OBS_FOLD, 0, 0},
    {R200 "X : a\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_WS_BEFORE_COLON, 0, 0},
    {R200 "X: a\x1f\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_VALUE_CHAR, 0, 0},
    {"HTTP/1.1 20 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1 2000 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1 600 X\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1 099 X\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1 2a0 X\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1  200 X\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_STATUS, 0, 0},
    {"HTTP/1.1 200 O\x01K\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_REASON_CHAR, 0, 0},
    {"HTTP/1.1 200 O\rK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_BARE_CR, 0, 0},
    {"HTTP/2 200\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_VERSION, 0, 0},
    {"HTTP/2.0 200 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_VERSION_UNSUPPORTED, 0, 0},
    {"HTTP/1.1 200 OK\n\r\n", HTTP1_METHOD_GET, HTTP1_E_BARE_LF, 0, 0},
    {R200 "Transfer-Encoding: gzip\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_TE_NOT_CHUNKED_LAST, 0, 0},
    {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET, HTTP1_E_TE_HTTP10,
     0, 0},
};

START_TEST(response_table)
{
    const struct respcase *c = &resp_cases[_i];
    struct http1_response a, b;
    size_t len = strlen(c->in);
    http1_response_init(&a, hdrs, MAXH);
    ssize_t r = http1_parse_response(c->in, len, NULL, c->method, &a);
    http1_response_init(&b, hdrs2, MAXH);
    ssize_t r2 = HTTP1_INCOMPLETE;
    for (size_t n = 1; n <= len && r2 == HTTP1_INCOMPLETE; n++)
        r2 = http1_parse_response(c->in, n, NULL, c->method, &b);
    ck_assert_int_eq(r, r2);
    if (c->want != OK) {
        ck_assert_msg(r == c->want, "case %d: want %s got %s", _i, http1_error_str(c->want),
                      http1_error_str((int)r));
        return;
    }
    ck_assert_msg(r == (ssize_t)len, "case %d: %s", _i, http1_error_str((int)r));
    ck_assert_int_eq(a.body, c->body);
    ck_assert_int_eq(a.keep_alive, c->keep_alive);
}
END_TEST

START_TEST(response_fields)
{
    struct http1_response resp;
    const char *s = "HTTP/1.1 404 Not  Found\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
    http1_response_init(&resp, hdrs, MAXH);
    ck_assert_int_eq(http1_parse_response(s, strlen(s), NULL, HTTP1_METHOD_GET, &resp),
                     (ssize_t)strlen(s) - 3);
    ck_assert_int_eq(resp.status, 404);
    ck_assert(resp.reason_len == 10 && !memcmp(resp.reason, "Not  Found", 10));
    ck_assert_uint_eq(resp.nheaders, 2);
    ck_assert_uint_eq(resp.content_length, 3);
    const char *u = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    http1_response_init(&resp, hdrs, MAXH);
    ck_assert_int_gt(http1_parse_response(u, strlen(u), NULL, HTTP1_METHOD_GET, &resp), 0);
    ck_assert(resp.upgrade);
    const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
    http1_response_init(&resp, hdrs, MAXH);
    ck_assert_int_gt(http1_parse_response(h, strlen(h), NULL, HTTP1_METHOD_HEAD, &resp), 0);
    ck_assert(resp.body == HTTP1_BODY_NONE && resp.has_content_length && resp.content_length == 42);
    /* head size limit applies to responses too */
    struct http1_limits lim = {.max_header_bytes = 20};
    http1_response_init(&resp, hdrs, MAXH);
    ck_assert_int_eq(http1_parse_response(h, strlen(h), &lim, HTTP1_METHOD_GET, &resp),
                     HTTP1_E_HEAD_TOO_LARGE);
}
END_TEST

/* ---- chunked ---------------------------------------------------------------- */

struct chcase {
    const char *in;
    size_t len;          /* 0 = strlen */
    int want;            /* OK or an error */
    const char *payload; /* when OK */
    size_t consumed;     /* when OK: 0 = all */
};

static const struct chcase chunk_cases[] = {
    {"5\r\nhello\r\n0\r\n\r\n", 0, OK, "hello", 0},
    {"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, OK, "abcde", 0},
    {"A\r\n0123456789\r\n0\r\n\r\n", 0, OK, "0123456789", 0},
    {"0000005\r\nhello\r\n0\r\n\r\n", 0, OK, "hello", 0},
    {"5;a=b;c\r\nhello\r\n0;x=\"y z\"\r\n\r\n", 0, OK, "hello", 0},
    {"5 ;a\r\nhello\r\n0\r\n\r\n", 0, OK, "hello", 0},
    {"0\r\n\r\n", 0, OK, "", 0},
    {"0\r\nX-T: 1\r\nY:\r\n\r\n", 0, OK, "", 0},
    {"0\r\n\r\nGET / HTTP/1.1", 0, OK, "", 5},
    {"2\r\nab\r\n0\r\n\r\n0\r\n\r\n", 0, OK, "ab", 12},
    {"\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"0x5\r\nhello\r\n0\r\n\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"-5\r\nhello\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"+5\r\nhello\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {" 5\r\nhello\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"5 \r\nhello\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"5 5\r\nhello\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"g\r\n", 0, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"5\0\r\n", 4, HTTP1_E_CHUNK_SIZE, NULL, 0},
    {"10000000000000000\r\n", 0, HTTP1_E_CHUNK_OVERFLOW, NULL, 0},
    {"8000000000000000\r\n", 0, HTTP1_E_CHUNK_OVERFLOW, NULL, 0},
    {"00000000000000001\r\n", 0, HTTP1_E_CHUNK_OVERFLOW, NULL, 0},
    {"5;a\x01\r\nhello\r\n", 0, HTTP1_E_CHUNK_EXT, NULL, 0},
    {"5;a\0\r\nhello\r\n", 6, HTTP1_E_CHUNK_EXT, NULL, 0},
    {"5\nhello\r\n0\r\n\r\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"5;a\nhello\r\n0\r\n\r\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"5\r\nhello\n0\r\n\r\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"0\n\r\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"0\r\n\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"0\r\nX: y\n\r\n", 0, HTTP1_E_BARE_LF, NULL, 0},
    {"5\rhello", 0, HTTP1_E_BARE_CR, NULL, 0},
    {"5\r\nhello\rX", 0, HTTP1_E_BARE_CR, NULL, 0},
    {"0\r\n\r\r", 0, HTTP1_E_BARE_CR, NULL, 0},
    {"0\r\nX: y\rz\r\n\r\n", 0, HTTP1_E_BARE_CR, NULL, 0},
    {"5\r\nhelloX\r\n", 0, HTTP1_E_CHUNK_CRLF, NULL, 0},
    {"5\r\nhello0\r\n\r\n", 0, HTTP1_E_CHUNK_CRLF, NULL, 0},
    {"0\r\n X: y\r\n\r\n", 0, HTTP1_E_LEADING_WS, NULL, 0},
    {"0\r\nX: y\r\n z\r\n\r\n", 0, HTTP1_E_OBS_FOLD, NULL, 0},
    {"0\r\nX : y\r\n\r\n", 0, HTTP1_E_WS_BEFORE_COLON, NULL, 0},
    {"0\r\nXY\r\n\r\n", 0, HTTP1_E_NO_COLON, NULL, 0},
    {"0\r\n: y\r\n\r\n", 0, HTTP1_E_EMPTY_NAME, NULL, 0},
    {"0\r\nX(: y\r\n\r\n", 0, HTTP1_E_NAME_CHAR, NULL, 0},
    {"0\r\nX: \x01\r\n\r\n", 0, HTTP1_E_VALUE_CHAR, NULL, 0},
};

/* Runs the decoder over in[0..len) in pieces of `step` bytes (0 = whole),
 * collecting payload; returns the error or the bytes consumed. */
static ssize_t dechunk(const char *in, size_t len, size_t step, const struct http1_limits *lim,
                       char *payload, size_t *plen)
{
    struct http1_chunked dec;
    size_t pos = 0;
    http1_chunked_init(&dec, lim);
    *plen = 0;
    while (pos < len && !http1_chunked_done(&dec)) {
        size_t avail = len - pos;
        if (step && avail > step)
            avail = step;
        /* a fresh copy per call: no pointer may survive a call */
        char *piece = malloc(avail);
        memcpy(piece, in + pos, avail);
        size_t off, dlen;
        ssize_t r = http1_chunked_decode(&dec, piece, avail, &off, &dlen);
        if (r < 0) {
            free(piece);
            return r;
        }
        ck_assert_uint_le((size_t)r, avail);
        ck_assert_uint_le(off + dlen, (size_t)r);
        memcpy(payload + *plen, piece + off, dlen);
        *plen += dlen;
        free(piece);
        if (r == 0 && !http1_chunked_done(&dec))
            ck_abort_msg("no progress");
        pos += (size_t)r;
    }
    return http1_chunked_done(&dec) ? (ssize_t)pos : HTTP1_INCOMPLETE;
}

START_TEST(chunked_table)
{
    const struct chcase *c = &chunk_cases[_i];
    size_t len = c->len ? c->len : strlen(c->in);
    char p1[256], p2[256];
    size_t l1, l2;
    ssize_t r1 = dechunk(c->in, len, 0, NULL, p1, &l1);
    ssize_t r2 = dechunk(c->in, len, 1, NULL, p2, &l2);
    ck_assert_int_eq(r1, r2);
    if (c->want != OK) {
        ck_assert_msg(r1 == c->want, "case %d: want %s got %s", _i, http1_error_str(c->want),
                      http1_error_str((int)r1));
        return;
    }
    ck_assert_msg(r1 == (ssize_t)(c->consumed ? c->consumed : len), "case %d: %zd %s", _i, r1,
                  http1_error_str((int)r1));
    ck_assert_uint_eq(l1, strlen(c->payload));
    ck_assert(!memcmp(p1, c->payload, l1));
    ck_assert_uint_eq(l1, l2);
    ck_assert(!memcmp(p1, p2, l1));
}
END_TEST

START_TEST(chunked_limits)
{
    char p[256];
    size_t l;
    struct http1_limits lim = {.max_chunk_ext = 8, .max_body_bytes = 6};
    ck_assert_int_gt(dechunk("1;abcdef\r\na\r\n0\r\n\r\n", 18, 0, &lim, p, &l), 0);
    ck_assert_int_eq(dechunk("1;abcdefgh\r\na\r\n0\r\n\r\n", 20, 0, &lim, p, &l),
                     HTTP1_E_CHUNK_EXT_TOO_LONG);
    ck_assert_int_eq(dechunk("1        ;\r\na\r\n0\r\n\r\n", 20, 0, &lim, p, &l),
                     HTTP1_E_CHUNK_EXT_TOO_LONG);
    ck_assert_int_gt(dechunk("3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 22, 0, &lim, p, &l), 0);
    ck_assert_int_eq(dechunk("3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", 23, 0, &lim, p, &l),
                     HTTP1_E_BODY_TOO_LARGE);
    struct http1_limits tl = {.max_headers = 1};
    ck_assert_int_gt(dechunk("0\r\nA: 1\r\n\r\n", 11, 0, &tl, p, &l), 0);
    ck_assert_int_eq(dechunk("0\r\nA: 1\r\nB: 2\r\n\r\n", 17, 0, &tl, p, &l),
                     HTTP1_E_TRAILER_TOO_LARGE);
    struct http1_limits tb = {.max_header_bytes = 10};
    ck_assert_int_eq(dechunk("0\r\nA: 12345678\r\n\r\n", 19, 0, &tb, p, &l),
                     HTTP1_E_TRAILER_TOO_LARGE);
}
END_TEST

/* An error is final: a second call over the same (undrained) bytes must
 * not read them from the state the failing byte left, which could end the
 * body early (found by an attack review). */
START_TEST(chunked_error_is_final)
{
    struct http1_limits lim = {.max_header_bytes = 1};
    struct http1_chunked d;
    http1_chunked_init(&d, &lim);
    size_t off, dl;
    ck_assert_int_eq(http1_chunked_decode(&d, "1\r\n", 3, &off, &dl), 3);
    static const char rest[] = "\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
    ssize_t first = http1_chunked_decode(&d, rest, sizeof(rest) - 1, &off, &dl);
    ck_assert_int_lt(first, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(http1_chunked_decode(&d, rest, sizeof(rest) - 1, &off, &dl), first);
        ck_assert_int_eq(http1_chunked_decode(&d, "0\r\n\r\n", 5, &off, &dl), first);
        ck_assert(!http1_chunked_done(&d));
    }
}
END_TEST

START_TEST(chunked_encoder)
{
    char h[HTTP1_CHUNK_HEADER_MAX];
    ck_assert_uint_eq(http1_chunk_header(h, 0x1f), 4);
    ck_assert_str_eq(h, "1f\r\n");
    ck_assert_uint_eq(http1_chunk_header(h, UINT64_C(0x7fffffffffffffff)), 18);
    ck_assert_str_eq(h, "7fffffffffffffff\r\n");
    /* encode pieces, decode them back */
    char body[512];
    size_t n = 0;
    const char *pieces[] = {"hello", " ", "world, this is a longer piece"};
    for (int i = 0; i < 3; i++) {
        n += http1_chunk_header(body + n, strlen(pieces[i]));
        memcpy(body + n, pieces[i], strlen(pieces[i]));
        n += strlen(pieces[i]);
        memcpy(body + n, HTTP1_CHUNK_END, 2);
        n += 2;
    }
    memcpy(body + n, HTTP1_LAST_CHUNK, 5);
    n += 5;
    char p[512];
    size_t l;
    ck_assert_int_eq(dechunk(body, n, 3, NULL, p, &l), (ssize_t)n);
    ck_assert_uint_eq(l, 35);
    ck_assert(!memcmp(p, "hello world, this is a longer piece", l));
}
END_TEST

START_TEST(error_mapping)
{
    static const int e400[] = {HTTP1_E_METHOD_CHAR,
                               HTTP1_E_METHOD_CASE,
                               HTTP1_E_REQUEST_LINE,
                               HTTP1_E_TARGET_CHAR,
                               HTTP1_E_TARGET_FORM,
                               HTTP1_E_VERSION,
                               HTTP1_E_BARE_LF,
                               HTTP1_E_BARE_CR,
                               HTTP1_E_LEADING_WS,
                               HTTP1_E_OBS_FOLD,
                               HTTP1_E_NO_COLON,
                               HTTP1_E_WS_BEFORE_COLON,
                               HTTP1_E_EMPTY_NAME,
                               HTTP1_E_NAME_CHAR,
                               HTTP1_E_VALUE_CHAR,
                               HTTP1_E_CL_INVALID,
                               HTTP1_E_CL_OVERFLOW,
                               HTTP1_E_CL_DIFFERENT,
                               HTTP1_E_CL_AND_TE,
                               HTTP1_E_TE_SYNTAX,
                               HTTP1_E_TE_NOT_CHUNKED_LAST,
                               HTTP1_E_TE_CHUNKED_TWICE,
                               HTTP1_E_TE_HTTP10,
                               HTTP1_E_HOST_MISSING,
                               HTTP1_E_HOST_REPEATED,
                               HTTP1_E_HOST_INVALID,
                               HTTP1_E_CHUNK_SIZE,
                               HTTP1_E_CHUNK_OVERFLOW,
                               HTTP1_E_CHUNK_EXT,
                               HTTP1_E_CHUNK_EXT_TOO_LONG,
                               HTTP1_E_CHUNK_CRLF,
                               HTTP1_E_TRAILER_TOO_LARGE,
                               HTTP1_E_PATH,
                               HTTP1_E_PATH_BACKSLASH,
                               HTTP1_E_PATH_ENCODED_SLASH,
                               HTTP1_E_PATH_PERCENT};
    for (size_t i = 0; i < CHECK_NELEMS(e400); i++) {
        ck_assert_int_eq(http1_error_status(e400[i]), 400);
        ck_assert_str_ne(http1_error_str(e400[i]), "unknown error");
    }
    ck_assert_int_eq(http1_error_status(HTTP1_E_TE_UNKNOWN), 501);
    ck_assert_int_eq(http1_error_status(HTTP1_E_CONNECT), 501);
    ck_assert_int_eq(http1_error_status(HTTP1_E_VERSION_UNSUPPORTED), 505);
    ck_assert_int_eq(http1_error_status(HTTP1_E_STATUS), 502);
    ck_assert_str_eq(http1_error_str(12345), "unknown error");
}
END_TEST

/* Restart cost: a 30 KiB head fed 1 byte at a time (30k calls) must scan
 * each byte O(1) times; a quadratic rescan would take far longer. */
START_TEST(restart_linear)
{
    static char buf[32768];
    size_t n = 0;
    n += (size_t)sprintf(buf, RL H);
    while (n < sizeof(buf) - 200)
        n += (size_t)sprintf(buf + n, "X-Padding-%zu: %s\r\n", n, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
    memcpy(buf + n, "\r\n", 2);
    n += 2;
    struct http1_request req;
    http1_request_init(&req, hdrs, MAXH);
    struct http1_limits lim = {.max_headers = 64, .max_header_bytes = 65536};
    ssize_t r = HTTP1_INCOMPLETE;
    size_t calls = 0;
    for (size_t k = 1; k <= n && r == HTTP1_INCOMPLETE; k++, calls++)
        r = http1_parse_request(buf, k, &lim, &req);
    ck_assert_uint_eq(calls, n);
    ck_assert_int_eq(r, HTTP1_E_TOO_MANY_HEADERS); /* > 64 lines: still decided at the end */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http1");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, request_table, 0, CHECK_NELEMS(req_cases));
    tcase_add_test(tc, request_fields);
    tcase_add_test(tc, value_bytes_at_every_offset);
    tcase_add_test(tc, request_upgrade);
    tcase_add_test(tc, request_limits);
    tcase_add_test(tc, request_early_error);
    tcase_add_test(tc, smuggling_te_variants);
    tcase_add_test(tc, smuggling_bare_cr_lf_nul);
    tcase_add_loop_test(tc, roundtrip, 0, CHECK_NELEMS(roundtrip_cases));
    tcase_add_test(tc, serializer);
    tcase_add_loop_test(tc, response_table, 0, CHECK_NELEMS(resp_cases));
    tcase_add_test(tc, response_fields);
    tcase_add_loop_test(tc, chunked_table, 0, CHECK_NELEMS(chunk_cases));
    tcase_add_test(tc, chunked_limits);
    tcase_add_test(tc, chunked_error_is_final);
    tcase_add_test(tc, chunked_encoder);
    tcase_add_test(tc, error_mapping);
    tcase_add_test(tc, restart_linear);
    suite_add_tcase(s, tc);
    return check_run(s);
}
