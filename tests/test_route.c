/*
 * Unit tests for route (Check): a pure module, no sockets (the balancer's
 * are in test_balancer.c). route: host
 * exact and wildcard (case, port and trailing dot normalised as the proxy
 * does), prefixes on segment boundaries, exact paths, methods, and first
 * match wins, over a config loaded from YAML text.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "config.h"
#include "headers.h"
#include "route.h"

static const char ROUTES[] = "listen: [{address: 127.0.0.1:8080}]\n"
                             "upstreams:\n"
                             "  u: {servers: [{address: 127.0.0.1:9001}]}\n"
                             "routes:\n"
                             "  - {name: exact, match: {host: Api.Example.com, path: /exact}, "
                             "respond: {status: 200}}\n"
                             "  - {name: wild, match: {host: '*.Example.com', path_prefix: /v1},"
                             " upstream: u}\n"
                             "  - {name: posts, match: {path_prefix: /w/, methods: [POST]}, "
                             "upstream: u}\n"
                             "  - {name: v1, match: {path_prefix: /v1}, upstream: u}\n"
                             "  - {name: all, match: {path_prefix: /}, upstream: u}\n";

static struct config *load_routes(void)
{
    struct config *cfg = NULL;
    int rc = config_load_string("routes.yaml", ROUTES, sizeof(ROUTES) - 1, &cfg, stderr);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

static const char *find(const struct config *cfg, const char *method, const char *host,
                        const char *path)
{
    const struct config_route *r =
        route_find(cfg, method, strlen(method), host, host ? strlen(host) : 0, path, strlen(path));
    return r ? r->name : "(none)";
}

START_TEST(routes_first_match)
{
    struct config *cfg = load_routes();
    /* exact host and exact path */
    ck_assert_str_eq(find(cfg, "GET", "api.example.com", "/exact"), "exact");
    ck_assert_str_eq(find(cfg, "GET", "api.example.com", "/exact/more"), "all");
    /* a wildcard host matches a subdomain, not the bare domain */
    ck_assert_str_eq(find(cfg, "GET", "a.example.com", "/v1/x"), "wild");
    ck_assert_str_eq(find(cfg, "GET", "example.com", "/v1/x"), "v1");
    ck_assert_str_eq(find(cfg, "GET", "evil-example.com", "/v1/x"), "v1");
    /* prefixes respect segment boundaries */
    ck_assert_str_eq(find(cfg, "GET", "x.org", "/v1"), "v1");
    ck_assert_str_eq(find(cfg, "GET", "x.org", "/v1/"), "v1");
    ck_assert_str_eq(find(cfg, "GET", "x.org", "/v1evil"), "all");
    /* methods */
    ck_assert_str_eq(find(cfg, "POST", "x.org", "/w/a"), "posts");
    ck_assert_str_eq(find(cfg, "GET", "x.org", "/w/a"), "all");
    /* no host at all (HTTP/1.0) */
    ck_assert_str_eq(find(cfg, "GET", NULL, "/exact"), "all");
    config_unref(cfg);
}
END_TEST

/* The route for a Host header as a client writes it: normalised first, as
 * the proxy does (headers_host_normalise), then matched. */
static const char *find_raw_host(const struct config *cfg, const char *host, const char *path)
{
    char norm[256];
    ssize_t n = headers_host_normalise(host, strlen(host), norm, sizeof norm);
    if (n < 0)
        return "(bad host)";
    norm[n] = '\0';
    return find(cfg, "GET", norm, path);
}

START_TEST(hosts_case_port_trailing_dot)
{
    struct config *cfg = load_routes();
    ck_assert_str_eq(find_raw_host(cfg, "API.Example.COM", "/exact"), "exact");
    ck_assert_str_eq(find_raw_host(cfg, "api.example.com:8080", "/exact"), "exact");
    ck_assert_str_eq(find_raw_host(cfg, "api.example.com.", "/exact"), "exact");
    ck_assert_str_eq(find_raw_host(cfg, "Api.Example.Com.:443", "/exact"), "exact");
    /* one trailing dot is the same name; anything else is another host */
    ck_assert_str_ne(find_raw_host(cfg, "api.example.com..", "/exact"), "exact");
    ck_assert_str_eq(find_raw_host(cfg, "api.example.co", "/exact"), "all");
    ck_assert_str_eq(find_raw_host(cfg, "xapi.example.com", "/exact"), "all");
    /* the wildcard, written in mixed case in the config, too */
    ck_assert_str_eq(find_raw_host(cfg, "A.B.EXAMPLE.COM:80", "/v1/x"), "wild");
    ck_assert_str_eq(find_raw_host(cfg, "EXAMPLE.COM.", "/v1/x"), "v1");
    config_unref(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("balancer+route");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, routes_first_match);
    tcase_add_test(tc, hosts_case_port_trailing_dot);
    suite_add_tcase(s, tc);
    return check_run(s);
}
