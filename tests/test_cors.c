/*
 * Unit tests for cors (Check): origins exact and by subdomain pattern, the
 * fields of a preflight and of an actual request, Vary: Origin, nothing
 * for a disallowed origin, "*" without credentials, and the cors config
 * keys (credentials with "*" refused).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "config.h"
#include "cors.h"

#define BASE                                                                                       \
    "listen: [{address: 127.0.0.1:8080}]\nupstreams:\n  api:\n    servers: [{address: "            \
    "127.0.0.1:9000}]\n"                                                                           \
    "routes:\n  - name: r\n    upstream: api\n"

static struct config *load(const char *yaml, FILE *err)
{
    struct config *cfg = NULL;
    int rc = config_load_string("t.yaml", yaml, strlen(yaml), &cfg, err);
    return rc == 0 ? cfg : NULL;
}

static struct config *load_cors(void)
{
    struct config *cfg = load(BASE "    cors:\n"
                                   "      allow_origins: [https://app.example.com, "
                                   "\"https://*.example.org\", http://localhost:3000]\n"
                                   "      allow_methods: [GET, PUT]\n"
                                   "      allow_headers: [Authorization, X-Trace]\n"
                                   "      expose_headers: [X-Total]\n"
                                   "      allow_credentials: true\n"
                                   "      max_age: 10m\n",
                              stderr);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_ptr_nonnull(cfg->routes[0].cors);
    return cfg;
}

static bool allowed(const struct config_cors *c, const char *o)
{
    return cors_origin_allowed(c, o, strlen(o));
}

START_TEST(origins)
{
    struct config *cfg = load_cors();
    const struct config_cors *c = cfg->routes[0].cors;
    ck_assert(allowed(c, "https://app.example.com"));
    ck_assert(allowed(c, "http://localhost:3000"));
    ck_assert(allowed(c, "https://a.example.org"));
    ck_assert(allowed(c, "https://a.b-c.example.org"));
    ck_assert(!allowed(c, "https://example.org")); /* the pattern needs a label */
    ck_assert(!allowed(c, "https://.example.org"));
    ck_assert(!allowed(c, "http://a.example.org"));       /* another scheme */
    ck_assert(!allowed(c, "https://a.example.org:8443")); /* another port */
    ck_assert(!allowed(c, "https://evilexample.org"));
    ck_assert(!allowed(c, "https://a.example.org.evil.com"));
    ck_assert(!allowed(c, "https://app.example.com.evil.com"));
    ck_assert(!allowed(c, "https://APP.example.com"));
    ck_assert(!allowed(c, "http://app.example.com"));
    ck_assert(!allowed(c, "null"));
    ck_assert(!allowed(c, ""));
    ck_assert(!allowed(c, "https://a/b.example.org"));
    config_unref(cfg);
}
END_TEST

static struct http1_request request(enum http1_method m, struct http1_header *h, size_t n)
{
    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.method = m;
    req.headers = h;
    req.nheaders = n;
    return req;
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static const char *field(const struct http1_header *f, size_t n, const char *name)
{
    static char buf[256];
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0) {
            snprintf(buf, sizeof(buf), "%.*s", (int)f[i].value_len, f[i].value);
            return buf;
        }
    return NULL;
}

START_TEST(preflight_fields)
{
    struct config *cfg = load_cors();
    const struct config_cors *c = cfg->routes[0].cors;
    struct http1_header h[] = {HDR("Origin", "https://x.example.org"),
                               HDR("Access-Control-Request-Method", "PUT")};
    struct http1_request req = request(HTTP1_METHOD_OPTIONS, h, 2);
    ck_assert(cors_is_preflight(&req));
    struct http1_header f[CORS_MAX_FIELDS];
    char age[24];
    size_t n = cors_fields(c, &req, true, f, age);
    ck_assert_str_eq(field(f, n, "Vary"), "Origin");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Origin"), "https://x.example.org");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Methods"), "GET, PUT");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Headers"), "Authorization, X-Trace");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Credentials"), "true");
    ck_assert_str_eq(field(f, n, "Access-Control-Max-Age"), "600");
    ck_assert_ptr_null(field(f, n, "Access-Control-Expose-Headers"));

    /* a disallowed origin: Vary only */
    h[0] = (struct http1_header)HDR("Origin", "https://evil.com");
    n = cors_fields(c, &req, true, f, age);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(field(f, n, "Vary"), "Origin");

    /* not a preflight: GET, or OPTIONS without the request method */
    req = request(HTTP1_METHOD_OPTIONS, h, 1);
    ck_assert(!cors_is_preflight(&req));
    req = request(HTTP1_METHOD_GET, h, 2);
    ck_assert(!cors_is_preflight(&req));
    config_unref(cfg);
}
END_TEST

START_TEST(actual_request_fields)
{
    struct config *cfg = load_cors();
    const struct config_cors *c = cfg->routes[0].cors;
    struct http1_header h[] = {HDR("Origin", "https://app.example.com")};
    struct http1_request req = request(HTTP1_METHOD_GET, h, 1);
    struct http1_header f[CORS_MAX_FIELDS];
    char age[24];
    size_t n = cors_fields(c, &req, false, f, age);
    ck_assert_str_eq(f[0].name, "Vary"); /* first: the proxy adds it, sets the others */
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Origin"), "https://app.example.com");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Credentials"), "true");
    ck_assert_str_eq(field(f, n, "Access-Control-Expose-Headers"), "X-Total");
    ck_assert_ptr_null(field(f, n, "Access-Control-Allow-Methods"));
    /* no Origin: not a CORS request, but the answer still varies by it */
    req = request(HTTP1_METHOD_GET, h, 0);
    n = cors_fields(c, &req, false, f, age);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(field(f, n, "Vary"), "Origin");
    config_unref(cfg);
}
END_TEST

START_TEST(any_origin)
{
    struct config *cfg = load(BASE "    cors: { allow_origins: [\"*\"] }\n", stderr);
    ck_assert_ptr_nonnull(cfg);
    const struct config_cors *c = cfg->routes[0].cors;
    struct http1_header h[] = {HDR("Origin", "https://anyone.net"),
                               HDR("Access-Control-Request-Method", "POST")};
    struct http1_request req = request(HTTP1_METHOD_OPTIONS, h, 2);
    struct http1_header f[CORS_MAX_FIELDS];
    char age[24];
    size_t n = cors_fields(c, &req, true, f, age);
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Origin"), "*");
    ck_assert_str_eq(field(f, n, "Access-Control-Allow-Methods"), "GET, HEAD, POST");
    ck_assert_ptr_null(field(f, n, "Vary")); /* the same answer for every origin */
    ck_assert_ptr_null(field(f, n, "Access-Control-Allow-Credentials"));
    ck_assert_ptr_null(field(f, n, "Access-Control-Max-Age"));
    ck_assert_ptr_null(field(f, n, "Access-Control-Allow-Headers"));
    config_unref(cfg);
}
END_TEST

static void expect_error(const char *yaml, const char *want)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    struct config *cfg = load(yaml, err);
    fclose(err);
    ck_assert_msg(cfg == NULL, "loaded: %s", yaml);
    ck_assert_msg(strstr(buf, want) != NULL, "%s\ndoes not say: %s", buf, want);
    free(buf);
}

START_TEST(config_errors)
{
    expect_error(BASE "    cors: { allow_origins: [\"*\"], allow_credentials: true }\n",
                 "routes[0].cors.allow_credentials: cannot be true with allow_origins \"*\"");
    expect_error(BASE "    cors: { allow_methods: [GET] }\n", "cors.allow_origins: cors needs");
    expect_error(BASE "    cors: { allow_origins: [https://App.example.com] }\n",
                 "expected \"*\" or an origin");
    expect_error(BASE "    cors: { allow_origins: [app.example.com] }\n", "an origin");
    expect_error(BASE "    cors: { allow_origins: [https://a.com/path] }\n", "an origin");
    expect_error(BASE "    cors: { allow_origins: [\"*\"], allow_headers: [\"X Y\"] }\n",
                 "not a valid name");
    expect_error(BASE "    cors: { allow_origins: [\"*\"], max_age: soon }\n", "cors.max_age");
    expect_error(BASE "    cors: { allow_origin: [\"*\"] }\n", "did you mean \"allow_origins\"");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cors");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, origins);
    tcase_add_test(tc, preflight_fields);
    tcase_add_test(tc, actual_request_fields);
    tcase_add_test(tc, any_origin);
    tcase_add_test(tc, config_errors);
    suite_add_tcase(s, tc);
    return check_run(s);
}
