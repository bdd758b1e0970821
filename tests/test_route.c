/*
 * Unit tests for balancer and route (Check): pure modules, no sockets.
 * balancer: smooth weighted round robin respects weights exactly over a
 * cycle and over many picks, spreads picks, skips servers marked tried,
 * and shares by weight among the rest while one is ejected. route: host
 * exact and wildcard (case, port and trailing dot normalised as the proxy
 * does), prefixes on segment boundaries, exact paths, methods, and first
 * match wins, over a config loaded from YAML text.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "balancer.h"
#include "config.h"
#include "headers.h"
#include "route.h"

START_TEST(weights_exact_over_cycles)
{
    const uint32_t w[] = {5, 1, 1, 3};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, w, 4), 0);
    unsigned count[4] = {0};
    for (int i = 0; i < 10 * 100; i++) {
        int k = balancer_next(&b, NULL);
        ck_assert_int_ge(k, 0);
        ck_assert_int_lt(k, 4);
        count[k]++;
    }
    for (int k = 0; k < 4; k++)
        ck_assert_uint_eq(count[k], w[k] * 100);
    balancer_fini(&b);
}
END_TEST

START_TEST(smooth_spread)
{
    /* 5,1,1 gives a a b a c a a: never more than 3 of a in a row there */
    const uint32_t w[] = {5, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, w, 3), 0);
    char seq[8] = {0};
    for (int i = 0; i < 7; i++)
        seq[i] = (char)('a' + balancer_next(&b, NULL));
    ck_assert_str_eq(seq, "aabacaa");
    balancer_fini(&b);
}
END_TEST

START_TEST(skips_tried)
{
    const uint32_t w[] = {1, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, w, 3), 0);
    bool skip[3] = {true, false, true};
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(balancer_next(&b, skip), 1);
    skip[1] = true;
    ck_assert_int_eq(balancer_next(&b, skip), -1);
    /* Skipping does not skew the others' shares afterwards. */
    unsigned count[3] = {0};
    for (int i = 0; i < 300; i++)
        count[balancer_next(&b, NULL)]++;
    for (int k = 0; k < 3; k++)
        ck_assert_uint_ge(count[k], 95);
    balancer_fini(&b);
}
END_TEST

START_TEST(ejected_server_others_keep_their_ratio)
{
    /* A server skipped for a long stretch (ejected, as upstream_pick marks
     * it) gets nothing; the others share exactly by their weights. */
    const uint32_t w[] = {3, 2, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, w, 3), 0);
    const bool skip[3] = {true, false, false};
    unsigned count[3] = {0};
    for (int i = 0; i < 3 * 1000; i++)
        count[balancer_next(&b, skip)]++;
    ck_assert_uint_eq(count[0], 0);
    ck_assert_uint_eq(count[1], 2000);
    ck_assert_uint_eq(count[2], 1000);
    /* Back in service: its weight counts again over full cycles. */
    unsigned back[3] = {0};
    for (int i = 0; i < 6 * 1000; i++)
        back[balancer_next(&b, NULL)]++;
    ck_assert_uint_ge(back[0], 3000 - 6);
    ck_assert_uint_le(back[0], 3000 + 6);
    balancer_fini(&b);
}
END_TEST

START_TEST(large_weights_over_many_picks)
{
    const uint32_t w[] = {1000, 1, 10};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, w, 3), 0);
    unsigned count[3] = {0};
    for (int i = 0; i < 1011 * 50; i++)
        count[balancer_next(&b, NULL)]++;
    ck_assert_uint_eq(count[0], 50000);
    ck_assert_uint_eq(count[1], 50);
    ck_assert_uint_eq(count[2], 500);
    balancer_fini(&b);
}
END_TEST

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
    tcase_add_test(tc, weights_exact_over_cycles);
    tcase_add_test(tc, smooth_spread);
    tcase_add_test(tc, skips_tried);
    tcase_add_test(tc, routes_first_match);
    tcase_add_test(tc, ejected_server_others_keep_their_ratio);
    tcase_add_test(tc, large_weights_over_many_picks);
    tcase_add_test(tc, hosts_case_port_trailing_dot);
    suite_add_tcase(s, tc);
    return check_run(s);
}
