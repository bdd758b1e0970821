/*
 * Unit tests for route (Check): a pure module, no sockets (the balancer's
 * are in test_balancer.c). route: host
 * exact and wildcard (case, port and trailing dot normalised as the proxy
 * does), prefixes on segment boundaries, exact paths, methods, and first
 * match wins, over a config loaded from YAML text.
 * path_regex with its captures and its match limit, rewrite, header and
 * query conditions, split shares (random and keyed) and stickiness.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "config.h"
#include "headers.h"
#include "regex.h"
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
    struct route_input in = {.method = method,
                             .method_len = strlen(method),
                             .host = host,
                             .host_len = host ? strlen(host) : 0,
                             .path = path,
                             .path_len = strlen(path)};
    struct route_match m;
    return route_find(cfg, &in, &m) == ROUTE_OK ? m.route->name : "(none)";
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

/* ---- path_regex, headers, query, rewrite, split ---- */

static const char MATCH[] =
    "listen: [{address: 127.0.0.1:8080}]\n"
    "upstreams:\n"
    "  u: {servers: [{address: 127.0.0.1:9001}]}\n"
    "  stable: {servers: [{address: 127.0.0.1:9002}]}\n"
    "  canary: {servers: [{address: 127.0.0.1:9003}]}\n"
    "  third: {servers: [{address: 127.0.0.1:9004}]}\n"
    "routes:\n"
    "  - {name: users, match: {path_regex: '^/users/([0-9]+)(/[a-z]+)?$'}, upstream: u,"
    " rewrite: '/api/v2/user/$1$2'}\n"
    "  - {name: evil, match: {path_regex: '^/evil/(a+)+$'}, upstream: u}\n"
    "  - {name: dots, match: {path_regex: '^/d/x(.*)$'}, upstream: u, rewrite: '/s/$1/$$'}\n"
    "  - name: canary\n"
    "    match: {path_prefix: /h, headers: {X-Canary: '1', X-Ver: {prefix: '2.'},"
    " User-Agent: {regex: '^curl/'}, X-Debug: {absent: true}, X-Team: {present: true}}}\n"
    "    upstream: canary\n"
    "  - {name: query, match: {path_prefix: /q, query: {v: '2', debug: {present: true}}},"
    " upstream: u}\n"
    "  - name: split\n"
    "    match: {path_prefix: /s}\n"
    "    split: [{upstream: stable, weight: 95}, {upstream: canary, weight: 5}]\n"
    "  - name: split3\n"
    "    match: {path_prefix: /t}\n"
    "    split: [{upstream: stable, weight: 70}, {upstream: canary, weight: 20},"
    " {upstream: third, weight: 10}]\n"
    "  - {name: sticky-ip, match: {path_prefix: /ip}, split_key: client_ip,"
    " split: [{upstream: stable, weight: 50}, {upstream: canary, weight: 50}]}\n"
    "  - {name: sticky-cookie, match: {path_prefix: /c}, split_key: 'cookie:uid',"
    " split: [{upstream: stable, weight: 50}, {upstream: canary, weight: 50}]}\n"
    "  - {name: sticky-header, match: {path_prefix: /x}, split_key: 'header:X-User',"
    " split: [{upstream: stable, weight: 90}, {upstream: canary, weight: 10}]}\n"
    "  - {name: rest, match: {path_prefix: /}, upstream: u}\n";

static struct config *load_match(void)
{
    struct config *cfg = NULL;
    ck_assert_int_eq(config_load_string("match.yaml", MATCH, sizeof(MATCH) - 1, &cfg, stderr), 0);
    return cfg;
}

/* A request: path, optional query, headers as "Name: value" strings. */
struct req {
    struct route_input in;
    struct http1_header h[8];
};

static void req_init(struct req *q, const char *path, const char *query, const char *const *hdrs)
{
    memset(q, 0, sizeof(*q));
    q->in.method = "GET";
    q->in.method_len = 3;
    q->in.path = path;
    q->in.path_len = strlen(path);
    q->in.query = query;
    q->in.query_len = query ? strlen(query) : 0;
    q->in.headers = q->h;
    for (size_t i = 0; hdrs && hdrs[i]; i++) {
        const char *colon = strchr(hdrs[i], ':');
        q->h[i] =
            (struct http1_header){hdrs[i], (size_t)(colon - hdrs[i]), colon + 2, strlen(colon + 2)};
        q->in.nheaders++;
    }
}

static const char *route_of(const struct config *cfg, const char *path, const char *query,
                            const char *const *hdrs)
{
    struct req q;
    struct route_match m;
    req_init(&q, path, query, hdrs);
    enum route_status st = route_find(cfg, &q.in, &m);
    return st == ROUTE_OK ? m.route->name : st == ROUTE_LIMIT ? "(limit)" : "(none)";
}

START_TEST(path_regex_and_captures)
{
    struct config *cfg = load_match();
    struct req q;
    struct route_match m;
    req_init(&q, "/users/42/posts", NULL, NULL);
    ck_assert_int_eq(route_find(cfg, &q.in, &m), ROUTE_OK);
    ck_assert_str_eq(m.route->name, "users");
    ck_assert_int_eq(m.npairs, 3);
    ck_assert_uint_eq(m.ovec[2], 7);
    ck_assert_uint_eq(m.ovec[3], 9);
    ck_assert_uint_eq(m.ovec[4], 9);
    ck_assert_uint_eq(m.ovec[5], 15);
    ck_assert_str_eq(route_of(cfg, "/users/42", NULL, NULL), "users");
    ck_assert_str_eq(route_of(cfg, "/users/x42", NULL, NULL), "rest");
    ck_assert_str_eq(route_of(cfg, "/users/42/POSTS", NULL, NULL), "rest");
    ck_assert_str_eq(route_of(cfg, "/evil/aaaa", NULL, NULL), "evil");
    config_unref(cfg);
}
END_TEST

/* ^(a+)+$ against "aaa...ab" backtracks exponentially: the match limit
 * stops it, and routing reports the limit instead of falling through. */
START_TEST(regex_limit_is_an_error)
{
    struct config *cfg = load_match();
    char path[64] = "/evil/";
    memset(path + 6, 'a', 40);
    strcpy(path + 46, "b");
    struct req q;
    struct route_match m;
    req_init(&q, path, NULL, NULL);
    ck_assert_int_eq(route_find(cfg, &q.in, &m), ROUTE_LIMIT);
    ck_assert_str_eq(m.route->name, "evil");
    config_unref(cfg);
}
END_TEST

/* The same bounds with and without JIT (the interpreter is the fallback
 * where PCRE2 has no JIT): captures, a limit hit, a long subject. */
START_TEST(regex_jit_and_interpreter)
{
    for (int jit = 0; jit < 2; jit++) {
        regex_set_jit(jit);
        char err[160];
        size_t off;
        struct regex *re = regex_compile("^/(a+)+$", 8, err, sizeof err, &off);
        ck_assert_ptr_nonnull(re);
        if (!jit)
            ck_assert(!regex_jit(re));
#if defined(__x86_64__) || defined(__aarch64__)
        else /* Debian's PCRE2 has JIT on these */
            ck_assert(regex_jit(re));
#endif
        ck_assert_uint_eq(regex_captures(re), 1);
        size_t ov[4];
        ck_assert_int_eq(regex_match(re, "/aaa", 4, ov, 2), 2);
        ck_assert_uint_eq(ov[2], 1);
        ck_assert_uint_eq(ov[3], 4);
        char s[64] = "/";
        memset(s + 1, 'a', 50);
        s[51] = 'b';
        ck_assert_int_eq(regex_match(re, s, 52, ov, 2), REGEX_LIMIT);
        ck_assert_int_eq(regex_match(re, "/b", 2, ov, 2), REGEX_NOMATCH);
        regex_free(re);
        /* a syntax error names its offset */
        ck_assert_ptr_null(regex_compile("^/(x", 4, err, sizeof err, &off));
        ck_assert_uint_eq(off, 4);
        ck_assert_ptr_nonnull(strstr(err, "parenthesis"));
        /* NUL and (*UTF) are refused */
        ck_assert_ptr_null(regex_compile("a\0b", 3, err, sizeof err, &off));
        ck_assert_ptr_null(regex_compile("(*UTF)x", 7, err, sizeof err, &off));
    }
    regex_set_jit(true);
}
END_TEST

static const char *rewrite_of(const struct config *cfg, const char *path, char *out, size_t cap)
{
    struct req q;
    struct route_match m;
    req_init(&q, path, NULL, NULL);
    ck_assert_int_eq(route_find(cfg, &q.in, &m), ROUTE_OK);
    ck_assert_uint_le(route_rewrite_cap(m.route, strlen(path)), cap);
    ssize_t n = route_rewrite(m.route, &m, path, out, cap);
    if (n < 0)
        return "(refused)";
    ck_assert_uint_eq(strlen(out), (size_t)n);
    return out;
}

START_TEST(rewrite_paths)
{
    struct config *cfg = load_match();
    char out[256];
    ck_assert_str_eq(rewrite_of(cfg, "/users/42/posts", out, sizeof out), "/api/v2/user/42/posts");
    /* a group that took no part is empty */
    ck_assert_str_eq(rewrite_of(cfg, "/users/7", out, sizeof out), "/api/v2/user/7");
    ck_assert_str_eq(rewrite_of(cfg, "/d/xabc", out, sizeof out), "/s/abc/$");
    /* a capture that would make a dot segment upstream is refused */
    ck_assert_str_eq(rewrite_of(cfg, "/d/x..", out, sizeof out), "(refused)");
    ck_assert_str_eq(rewrite_of(cfg, "/d/x.", out, sizeof out), "(refused)");
    ck_assert_str_eq(rewrite_of(cfg, "/d/x...", out, sizeof out), "/s/.../$");
    /* too small an output is refused, never overrun */
    struct req q;
    struct route_match m;
    req_init(&q, "/users/42/posts", NULL, NULL);
    ck_assert_int_eq(route_find(cfg, &q.in, &m), ROUTE_OK);
    ck_assert_int_eq(route_rewrite(m.route, &m, "/users/42/posts", out, 10), -1);
    config_unref(cfg);
}
END_TEST

START_TEST(header_and_query_conditions)
{
    struct config *cfg = load_match();
    const char *ok[] = {"x-canary: 1", "X-VER: 2.4", "User-Agent: curl/8", "X-Team: a", NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, ok), "canary");
    /* values are byte-exact, names are not */
    const char *v_case[] = {"X-Canary: 1 ", "X-Ver: 2.4", "User-Agent: curl/8", "X-Team: a", NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, v_case), "rest");
    const char *no_prefix[] = {"X-Canary: 1", "X-Ver: 3.2.", "User-Agent: curl/8", "X-Team: a",
                               NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, no_prefix), "rest");
    const char *no_regex[] = {"X-Canary: 1", "X-Ver: 2.", "User-Agent: xcurl/8", "X-Team: a", NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, no_regex), "rest");
    const char *absent_there[] = {"X-Canary: 1", "X-Ver: 2.",  "User-Agent: curl/",
                                  "X-Team: a",   "X-Debug: 0", NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, absent_there), "rest");
    const char *no_team[] = {"X-Canary: 1", "X-Ver: 2.", "User-Agent: curl/", NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, no_team), "rest");
    /* one of several fields of a name is enough */
    const char *two[] = {"X-Canary: 0",       "X-Canary: 1", "X-Ver: 2.",
                         "User-Agent: curl/", "X-Team: ",    NULL};
    ck_assert_str_eq(route_of(cfg, "/h", NULL, two), "canary");
    /* query: exact value and presence, raw bytes */
    ck_assert_str_eq(route_of(cfg, "/q", "v=2&debug", NULL), "query");
    ck_assert_str_eq(route_of(cfg, "/q", "debug=&v=2", NULL), "query");
    ck_assert_str_eq(route_of(cfg, "/q", "v=2", NULL), "rest");
    ck_assert_str_eq(route_of(cfg, "/q", "v=20&debug", NULL), "rest");
    ck_assert_str_eq(route_of(cfg, "/q", "vv=2&debug&v=%32", NULL), "rest");
    ck_assert_str_eq(route_of(cfg, "/q", NULL, NULL), "rest");
    config_unref(cfg);
}
END_TEST

/* splitmix64: a reproducible stream of uniform 64-bit values. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Shares over 100,000 picks are within 2 % (relative) of the weights:
 * random picks (70/20/10), and keyed ones over distinct keys (90/10). */
START_TEST(split_shares_within_2_percent)
{
    struct config *cfg = load_match();
    const struct config_route *r = config_route_find(cfg, "split3");
    const char *const names[] = {"stable", "canary", "third"};
    const double want[] = {0.70, 0.20, 0.10};
    unsigned count[3] = {0};
    uint64_t seed = 12345;
    for (int i = 0; i < 100000; i++) {
        const struct config_upstream *u =
            route_pick_upstream(r, &(struct route_input){0}, mix(&seed));
        for (int k = 0; k < 3; k++)
            if (strcmp(u->name, names[k]) == 0)
                count[k]++;
    }
    for (int k = 0; k < 3; k++) {
        double share = count[k] / 100000.0;
        ck_assert_msg(share > want[k] * 0.98 && share < want[k] * 1.02,
                      "%s: %.4f, want %.2f +- 2%%", names[k], share, want[k]);
    }
    /* a header key: 100,000 distinct users fall 90/10 */
    const struct config_route *sh = config_route_find(cfg, "sticky-header");
    unsigned canary = 0;
    for (int i = 0; i < 100000; i++) {
        char line[48];
        snprintf(line, sizeof line, "X-User: user-%d", i);
        const char *h[] = {line, NULL};
        struct req q;
        req_init(&q, "/x", NULL, h);
        canary += strcmp(route_pick_upstream(sh, &q.in, 0)->name, "canary") == 0;
    }
    ck_assert_msg(canary > 9800 && canary < 10200, "canary got %u of 100000", canary);
    config_unref(cfg);
}
END_TEST

/* The same key always gets the same upstream, whatever the random value;
 * no key falls back to the random value. */
START_TEST(split_sticky_keys)
{
    struct config *cfg = load_match();
    const struct config_route *ip = config_route_find(cfg, "sticky-ip"),
                              *ck = config_route_find(cfg, "sticky-cookie");
    uint64_t seed = 7;
    unsigned seen_ip[2] = {0}, seen_ck[2] = {0};
    for (int user = 0; user < 200; user++) {
        char addr[32], cookie[64];
        snprintf(addr, sizeof addr, "10.0.%d.%d", user / 250, user % 250);
        snprintf(cookie, sizeof cookie, "Cookie: a=b; uid=%d ; z=1", user);
        const char *h[] = {cookie, NULL};
        struct req q;
        req_init(&q, "/c", NULL, h);
        q.in.client_ip = addr;
        const struct config_upstream *first_ip = route_pick_upstream(ip, &q.in, mix(&seed));
        const struct config_upstream *first_ck = route_pick_upstream(ck, &q.in, mix(&seed));
        for (int i = 0; i < 50; i++) {
            ck_assert_ptr_eq(route_pick_upstream(ip, &q.in, mix(&seed)), first_ip);
            ck_assert_ptr_eq(route_pick_upstream(ck, &q.in, mix(&seed)), first_ck);
        }
        seen_ip[strcmp(first_ip->name, "canary") == 0]++;
        seen_ck[strcmp(first_ck->name, "canary") == 0]++;
    }
    /* both sides get users (50/50) */
    ck_assert_uint_gt(seen_ip[0], 50);
    ck_assert_uint_gt(seen_ip[1], 50);
    ck_assert_uint_gt(seen_ck[0], 50);
    ck_assert_uint_gt(seen_ck[1], 50);
    /* without the cookie the pick follows the random value: both sides */
    struct req q;
    req_init(&q, "/c", NULL, NULL);
    unsigned canary = 0;
    for (int i = 0; i < 1000; i++)
        canary += strcmp(route_pick_upstream(ck, &q.in, mix(&seed))->name, "canary") == 0;
    ck_assert_uint_gt(canary, 400);
    ck_assert_uint_lt(canary, 600);
    config_unref(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("balancer+route");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, routes_first_match);
    tcase_add_test(tc, hosts_case_port_trailing_dot);
    tcase_add_test(tc, path_regex_and_captures);
    tcase_add_test(tc, regex_limit_is_an_error);
    tcase_add_test(tc, regex_jit_and_interpreter);
    tcase_add_test(tc, rewrite_paths);
    tcase_add_test(tc, header_and_query_conditions);
    tcase_add_test(tc, split_shares_within_2_percent);
    tcase_add_test(tc, split_sticky_keys);
    suite_add_tcase(s, tc);
    return check_run(s);
}
