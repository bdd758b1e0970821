/*
 * Unit tests for config (Check).
 *
 * Fixtures: every tests/data/config/NAME.yaml is loaded under the name
 * "NAME.yaml" and its diagnostics must equal NAME.expected byte for byte
 * (an absent .expected means: no output at all). NAME starting with "ok-"
 * or "warn-" must load, "err-" must fail. The directory is found through
 * $FERRY_SRCDIR (VPATH builds, make distcheck).
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, open_memstream */
#endif
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* "config.h" alone would find the build's autoconf header first (-I.) */
#include "../src/config.h"
#include "check_helpers.h"

static char *fixture_dir(void)
{
    const char *src = getenv("FERRY_SRCDIR");
    char *dir;
    ck_assert(asprintf(&dir, "%s/tests/data/config", src ? src : "..") > 0);
    return dir;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *out = open_memstream(&buf, &cap);
    char chunk[1024];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    fclose(out);
    *len = cap;
    return buf;
}

/* Loads a string; returns the diagnostics text (caller frees). */
static char *load_str(const char *name, const char *yaml, size_t len, struct config **cfg, int *rc)
{
    char *text = NULL;
    size_t size = 0;
    FILE *diag = open_memstream(&text, &size);
    *rc = config_load_string(name, yaml, len, cfg, diag);
    fclose(diag);
    return text;
}

static struct config *load_ok(const char *yaml)
{
    struct config *cfg;
    int rc;
    char *out = load_str("t.yaml", yaml, strlen(yaml), &cfg, &rc);
    ck_assert_msg(rc == 0, "expected success, got:\n%s", out);
    free(out);
    return cfg;
}

static char *load_fail(const char *yaml)
{
    struct config *cfg;
    int rc;
    char *out = load_str("t.yaml", yaml, strlen(yaml), &cfg, &rc);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_null(cfg);
    return out;
}

START_TEST(fixtures)
{
    char *dir = fixture_dir();
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s (set FERRY_SRCDIR)", dir);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 5, ".yaml") != 0)
            continue;
        char *path, *exp_path;
        ck_assert(asprintf(&path, "%s/%s", dir, e->d_name) > 0);
        ck_assert(asprintf(&exp_path, "%s/%.*s.expected", dir, (int)(nl - 5), e->d_name) > 0);
        size_t len, elen = 0;
        char *yaml = slurp(path, &len);
        ck_assert_ptr_nonnull(yaml);
        char *expected = slurp(exp_path, &elen);
        struct config *cfg;
        int rc;
        char *out = load_str(e->d_name, yaml, len, &cfg, &rc);
        ck_assert_msg(strcmp(out, expected ? expected : "") == 0,
                      "%s: diagnostics differ.\n--- expected\n%s--- got\n%s", e->d_name,
                      expected ? expected : "", out);
        bool must_fail = strncmp(e->d_name, "err-", 4) == 0;
        ck_assert_msg(must_fail ? rc == -1 && !cfg : rc == 0 && cfg, "%s: rc %d", e->d_name, rc);
        /* every rejection carries a position or names the file */
        if (must_fail)
            ck_assert_msg(strncmp(out, e->d_name, strlen(e->d_name)) == 0 &&
                              out[strlen(e->d_name)] == ':',
                          "%s: first line has no position: %s", e->d_name, out);
        config_unref(cfg);
        free(out);
        free(expected);
        free(yaml);
        free(path);
        free(exp_path);
        count++;
    }
    closedir(d);
    ck_assert_int_ge(count, 20);
    free(dir);
}
END_TEST

START_TEST(defaults)
{
    struct config *cfg = load_ok("listen: [{address: '127.0.0.1:8080'}]\n");
    ck_assert_uint_eq(cfg->workers, 0);
    ck_assert_uint_eq(cfg->coroutine_stack, 64 * 1024);
    ck_assert_uint_eq(cfg->max_requests, 20000);
    ck_assert_int_eq(cfg->shutdown_timeout, 30000);
    ck_assert_ptr_null(cfg->pid_file);
    ck_assert_uint_eq(cfg->ntrusted_proxies, 0);
    ck_assert_uint_eq(cfg->nlisteners, 1);
    ck_assert_uint_eq(cfg->listeners[0].backlog, 4096);
    ck_assert(!cfg->listeners[0].proxy_protocol);
    ck_assert(cfg->listeners[0].defer_accept);
    const struct config_timeouts *t = &cfg->timeouts;
    ck_assert_int_eq(t->client_header, 10000);
    ck_assert_int_eq(t->client_body, 30000);
    ck_assert_int_eq(t->client_send, 60000);
    ck_assert_int_eq(t->client_idle, 60000);
    ck_assert_int_eq(t->upstream_connect, 2000);
    ck_assert_int_eq(t->upstream_header, 30000);
    ck_assert_int_eq(t->upstream_read, 60000);
    ck_assert_int_eq(t->upstream_send, 60000);
    ck_assert_int_eq(t->upstream_idle, 4000);
    ck_assert_int_eq(t->total, 0);
    ck_assert_uint_eq(cfg->limits.max_connections, 100000);
    ck_assert_uint_eq(cfg->limits.max_header_bytes, 32 * 1024);
    ck_assert_uint_eq(cfg->limits.max_headers, 100);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 10 * 1024 * 1024);
    ck_assert_ptr_null(cfg->access_log.path);
    ck_assert_int_eq(cfg->error_log_level, CONFIG_LOG_INFO);
    ck_assert_ptr_null(cfg->admin_listen);
    ck_assert_uint_eq(cfg->nroutes, 0);
    ck_assert_uint_eq(cfg->nwarnings, 1); /* no routes */
    config_unref(cfg);

    cfg = load_ok("listen: [{address: '127.0.0.1:8080'}]\n"
                  "upstreams: {a: {servers: [{address: 'x.internal:80'}]}}\n"
                  "routes: [{upstream: a}]\naccess_log: {}\n");
    const struct config_upstream *u = config_upstream_find(cfg, "a");
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq(u->keepalive, 64);
    ck_assert_uint_eq(u->max_connections, 0);
    ck_assert_int_eq(u->host_header, CONFIG_HOST_PRESERVE);
    ck_assert_uint_eq(u->servers[0].weight, 1);
    ck_assert(!u->servers[0].addr.numeric);
    ck_assert_str_eq(u->servers[0].addr.host, "x.internal");
    ck_assert_uint_eq(u->servers[0].addr.port, 80);
    ck_assert_str_eq(cfg->routes[0].name, "route-1");
    ck_assert(cfg->routes[0].name_derived);
    ck_assert_ptr_eq(cfg->routes[0].upstream, u);
    ck_assert_uint_eq(cfg->routes[0].max_body_bytes, 10 * 1024 * 1024);
    ck_assert_mem_eq(&cfg->routes[0].timeouts, &cfg->timeouts, sizeof(cfg->timeouts));
    ck_assert_str_eq(cfg->access_log.path, "stderr");
    ck_assert_int_eq(cfg->access_log.format, CONFIG_LOG_JSON);
    ck_assert_int_eq(cfg->timeouts.tunnel_idle, 3600000);
    ck_assert_uint_eq(u->retry_attempts, 1);
    ck_assert_uint_eq(u->retry_on, CONFIG_RETRY_CONNECT_ERROR);
    ck_assert_uint_eq(u->replay_bytes, 64 * 1024);
    ck_assert_uint_eq(u->passive_failures, 0); /* off without the section */
    ck_assert(!cfg->routes[0].underscores_in_headers);
    ck_assert(!cfg->routes[0].reject_path_params);
    config_unref(cfg);

    /* an empty section has its own defaults */
    cfg = load_ok("listen: [{address: '127.0.0.1:8080'}]\n"
                  "upstreams: {a: {servers: [{address: 'x.internal:80'}], retries: {}, "
                  "passive: {}}}\nroutes: [{name: r, upstream: a}]\n");
    u = config_upstream_find(cfg, "a");
    ck_assert_uint_eq(u->retry_attempts, 1);
    ck_assert_uint_eq(u->retry_on, CONFIG_RETRY_CONNECT_ERROR | CONFIG_RETRY_RESET);
    ck_assert_uint_eq(u->passive_failures, 5);
    ck_assert_int_eq(u->passive_eject_ms, 30000);
    config_unref(cfg);
}
END_TEST

START_TEST(full_example)
{
    char *dir = fixture_dir(), *path;
    ck_assert(asprintf(&path, "%s/ok-full.yaml", dir) > 0);
    struct config *cfg;
    ck_assert_int_eq(config_load(path, &cfg, stderr), 0);
    ck_assert_str_eq(cfg->path, path);
    ck_assert_uint_eq(cfg->workers, 4);
    ck_assert_uint_eq(cfg->coroutine_stack, 128 * 1024);
    ck_assert_uint_eq(cfg->max_requests, 5000);
    ck_assert_int_eq(cfg->shutdown_timeout, 90000);
    ck_assert_str_eq(cfg->pid_file, "/run/ferry/ferry.pid");
    ck_assert_uint_eq(cfg->ntrusted_proxies, 3);
    ck_assert_int_eq(cfg->trusted_proxies[1].family, AF_INET);
    ck_assert_uint_eq(cfg->trusted_proxies[1].prefix, 32);
    ck_assert_int_eq(cfg->trusted_proxies[2].family, AF_INET6);
    ck_assert_uint_eq(cfg->trusted_proxies[2].prefix, 8);

    ck_assert_uint_eq(cfg->nlisteners, 3);
    const struct config_listener *l = cfg->listeners;
    ck_assert_str_eq(l[0].addr.host, "0.0.0.0");
    ck_assert_uint_eq(l[0].addr.port, 8080);
    ck_assert_uint_eq(l[0].backlog, 1024);
    ck_assert_int_eq(l[0].addr.sa.ss_family, AF_INET);
    ck_assert_uint_eq(l[0].addr.salen, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&l[0].addr.sa)->sin_port), 8080);
    ck_assert_str_eq(l[1].addr.host, "::1");
    ck_assert_int_eq(l[1].addr.sa.ss_family, AF_INET6);
    ck_assert(l[1].proxy_protocol);
    ck_assert(l[0].defer_accept);
    ck_assert(!l[1].defer_accept);
    ck_assert(l[2].addr.is_unix);
    ck_assert_str_eq(l[2].addr.path, "/run/ferry/http.sock");
    ck_assert_str_eq(((struct sockaddr_un *)&l[2].addr.sa)->sun_path, "/run/ferry/http.sock");

    ck_assert_int_eq(cfg->timeouts.client_header, 5000);
    ck_assert_int_eq(cfg->timeouts.upstream_connect, 250);
    ck_assert_int_eq(cfg->timeouts.upstream_idle, 3000);
    ck_assert_int_eq(cfg->timeouts.total, 120000);
    ck_assert_uint_eq(cfg->limits.max_connections, 5000);
    ck_assert_uint_eq(cfg->limits.max_header_bytes, 16384);
    ck_assert_uint_eq(cfg->limits.max_headers, 50);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 1 << 20);

    ck_assert_uint_eq(cfg->nupstreams, 2);
    const struct config_upstream *api = &cfg->upstreams[0];
    ck_assert_str_eq(api->name, "api");
    ck_assert_int_eq(api->host_header, CONFIG_HOST_UPSTREAM);
    ck_assert_uint_eq(api->nservers, 2);
    ck_assert_uint_eq(api->servers[0].weight, 2);
    ck_assert(api->servers[0].addr.numeric);
    ck_assert_uint_eq(api->servers[1].index, 1);
    ck_assert_str_eq(api->servers[1].addr.host, "api-2.internal");
    ck_assert_uint_eq(api->keepalive, 16);
    ck_assert_uint_eq(api->max_connections, 100);
    ck_assert_int_eq(cfg->upstreams[1].host_header, CONFIG_HOST_LITERAL);
    ck_assert_str_eq(cfg->upstreams[1].host_literal, "static.example.com");

    ck_assert_uint_eq(cfg->nroutes, 3);
    const struct config_route *r = config_route_find(cfg, "api-v1");
    ck_assert_ptr_eq(r, &cfg->routes[0]);
    ck_assert_str_eq(r->match.host, "api.example.com");
    ck_assert(!r->match.host_wildcard);
    ck_assert_str_eq(r->match.path_prefix, "/v1/");
    ck_assert_uint_eq(r->match.nmethods, 3);
    ck_assert_uint_eq(r->match.method_mask,
                      CONFIG_METHOD_GET | CONFIG_METHOD_POST | CONFIG_METHOD_OTHER);
    ck_assert(config_route_allows_method(r, "PURGE", 5));
    ck_assert(!config_route_allows_method(r, "PUT", 3));
    ck_assert_ptr_eq(r->upstream, api);
    ck_assert_str_eq(r->strip_prefix, "/v1");
    ck_assert_str_eq(r->add_prefix, "/internal");
    ck_assert_uint_eq(r->max_body_bytes, 0);
    ck_assert_int_eq(r->timeouts.upstream_header, 5000);
    ck_assert_int_eq(r->timeouts.client_header, 5000); /* from the global */
    ck_assert_int_eq(r->timeouts.total, 120000);
    const struct config_route *w = &cfg->routes[1];
    ck_assert(w->match.host_wildcard);
    ck_assert_str_eq(w->match.host, ".example.com");
    ck_assert_str_eq(w->match.path, "/exact");
    ck_assert_uint_eq(w->max_body_bytes, 1 << 20);
    ck_assert(config_route_allows_method(w, "DELETE", 6));
    const struct config_route *s = &cfg->routes[2];
    ck_assert_ptr_null(s->upstream);
    ck_assert_ptr_nonnull(s->respond);
    ck_assert_uint_eq(s->respond->status, 503);
    ck_assert_str_eq(s->respond->body, "down\n");
    ck_assert_uint_eq(s->respond->body_len, 5);
    ck_assert_str_eq(s->respond->content_type, "text/plain");

    ck_assert_str_eq(cfg->access_log.path, "/var/log/ferry/access.log");
    ck_assert_int_eq(cfg->access_log.format, CONFIG_LOG_COMBINED);
    ck_assert_int_eq(cfg->error_log_level, CONFIG_LOG_WARN);
    ck_assert_ptr_nonnull(cfg->admin_listen);
    ck_assert_uint_eq(cfg->admin_listen->port, 9901);

    /* references: the snapshot outlives the first unref */
    ck_assert_ptr_eq(config_ref(cfg), cfg);
    config_unref(cfg);
    ck_assert_uint_eq(cfg->nroutes, 3);
    config_unref(cfg);
    config_unref(NULL);
    free(path);
    free(dir);
}
END_TEST

START_TEST(durations)
{
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {{"0", 0},        {"250ms", 250},   {"5s", 5000},       {"2m", 120000},
              {"1h", 3600000}, {"1d", 86400000}, {"1h30m", 5400000}, {"1s500ms", 1500}};
    for (size_t i = 0; i < CHECK_NELEMS(ok); i++) {
        int64_t v = -1;
        const char *why = NULL;
        ck_assert_msg(config_parse_duration(ok[i].in, &v, &why) == 0, "%s", ok[i].in);
        ck_assert_int_eq(v, ok[i].ms);
    }
    static const char *const bad[] = {
        "", "5", "s", "5x", "-5s", "5 s", "1.5s", "99999999999999999999s", "400d", "5sm"};
    for (size_t i = 0; i < CHECK_NELEMS(bad); i++) {
        int64_t v;
        const char *why = NULL;
        ck_assert_msg(config_parse_duration(bad[i], &v, &why) == -1, "%s", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
}
END_TEST

START_TEST(sizes)
{
    static const struct {
        const char *in;
        uint64_t bytes;
    } ok[] = {{"0", 0},
              {"512", 512},
              {"16k", 16384},
              {"16K", 16384},
              {"1m", 1048576},
              {"1g", 1073741824},
              {"1024g", 1099511627776ull}};
    for (size_t i = 0; i < CHECK_NELEMS(ok); i++) {
        uint64_t v = 1;
        const char *why = NULL;
        ck_assert_msg(config_parse_size(ok[i].in, &v, &why) == 0, "%s", ok[i].in);
        ck_assert_uint_eq(v, ok[i].bytes);
    }
    static const char *const bad[] = {
        "", "k", "1.5m", "-1", "1kb", "1t", "99999999999999999999", "2000000000g"};
    for (size_t i = 0; i < CHECK_NELEMS(bad); i++) {
        uint64_t v;
        const char *why = NULL;
        ck_assert_msg(config_parse_size(bad[i], &v, &why) == -1, "%s", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
}
END_TEST

START_TEST(trusted)
{
    struct config *cfg = load_ok("listen: [{address: '127.0.0.1:8080'}]\nroutes: []\n"
                                 "trusted_proxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8', "
                                 "172.16.0.0/12]\n");
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    static const struct {
        const char *addr;
        bool trusted;
    } cases[] = {{"10.1.2.3", true},        {"11.0.0.1", false},      {"192.168.1.7", true},
                 {"192.168.1.8", false},    {"172.31.255.255", true}, {"172.32.0.0", false},
                 {"fd12::1", true},         {"fe80::1", false},       {"::ffff:10.9.9.9", true},
                 {"::ffff:11.9.9.9", false}};
    for (size_t i = 0; i < CHECK_NELEMS(cases); i++) {
        const struct sockaddr *sa;
        if (inet_pton(AF_INET, cases[i].addr, &in.sin_addr) == 1) {
            sa = (const struct sockaddr *)&in;
        } else {
            ck_assert_int_eq(inet_pton(AF_INET6, cases[i].addr, &in6.sin6_addr), 1);
            sa = (const struct sockaddr *)&in6;
        }
        ck_assert_msg(config_trusted(cfg, sa) == cases[i].trusted, "%s", cases[i].addr);
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    ck_assert(config_trusted(cfg, (const struct sockaddr *)&un));
    config_unref(cfg);

    cfg = load_ok("listen: [{address: '127.0.0.1:8080'}]\nroutes: []\n");
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    ck_assert(!config_trusted(cfg, (const struct sockaddr *)&in));
    config_unref(cfg);
}
END_TEST

/* A route's overrides apply whatever the order of the top-level keys. */
START_TEST(route_overrides_any_order)
{
    struct config *cfg = load_ok("routes:\n"
                                 "  - {name: r, respond: {}, timeouts: {client_body: 1s}}\n"
                                 "timeouts: {client_body: 7s, upstream_read: 9s}\n"
                                 "limits: {max_body_bytes: 2k}\n"
                                 "listen: [{address: '127.0.0.1:1'}]\n");
    ck_assert_int_eq(cfg->routes[0].timeouts.client_body, 1000);
    ck_assert_int_eq(cfg->routes[0].timeouts.upstream_read, 9000);
    ck_assert_uint_eq(cfg->routes[0].max_body_bytes, 2048);
    ck_assert_uint_eq(cfg->routes[0].respond->status, 200);
    ck_assert_str_eq(cfg->routes[0].respond->body, "");
    config_unref(cfg);
}
END_TEST

/* Route keys for forwarding headers and path parameters; the largest
 * max_header_bytes a read buffer can hold. */
START_TEST(route_flags_and_head_limit)
{
    struct config *cfg = load_ok("listen: [{address: '127.0.0.1:1'}]\n"
                                 "limits: {max_header_bytes: 128k}\n"
                                 "routes:\n"
                                 "  - {name: a, respond: {}, underscores_in_headers: true,\n"
                                 "     reject_path_params: true}\n"
                                 "  - {name: b, respond: {}}\n");
    ck_assert_uint_eq(cfg->limits.max_header_bytes, CONFIG_MAX_HEADER_BYTES_LIMIT);
    ck_assert_uint_eq(cfg->limits.max_header_bytes, 131072);
    ck_assert(cfg->routes[0].underscores_in_headers);
    ck_assert(cfg->routes[0].reject_path_params);
    ck_assert(!cfg->routes[1].underscores_in_headers);
    ck_assert(!cfg->routes[1].reject_path_params);
    config_unref(cfg);
}
END_TEST

START_TEST(header_rules)
{
    struct config *cfg = load_ok(
        "listen: [{address: '127.0.0.1:1'}]\n"
        "upstreams: {u: {servers: [{address: '127.0.0.1:2'}]}}\n"
        "routes:\n"
        "  - name: r\n"
        "    upstream: u\n"
        "    request_headers: {set: {X-A: '1', X-B: ''}, add: {X-C: 'a, b'}, remove: [X-D]}\n"
        "    response_headers: {remove: [Server, X-Powered-By]}\n");
    const struct config_header_rules *q = &cfg->routes[0].request_headers;
    ck_assert_uint_eq(q->nset, 2);
    ck_assert_str_eq(q->set[0].name, "X-A");
    ck_assert_str_eq(q->set[0].value, "1");
    ck_assert_uint_eq(q->set[1].value_len, 0);
    ck_assert_uint_eq(q->nadd, 1);
    ck_assert_str_eq(q->add[0].value, "a, b");
    ck_assert_uint_eq(q->nremove, 1);
    ck_assert_str_eq(q->remove[0].name, "X-D");
    const struct config_header_rules *p = &cfg->routes[0].response_headers;
    ck_assert_uint_eq(p->nset + p->nadd, 0);
    ck_assert_uint_eq(p->nremove, 2);
    ck_assert_str_eq(p->remove[1].name, "X-Powered-By");
    config_unref(cfg);
}
END_TEST

START_TEST(files)
{
    struct config *cfg;
    char *out = NULL;
    size_t size;
    FILE *diag = open_memstream(&out, &size);

    /* a directory */
    char *dir = fixture_dir();
    ck_assert_int_eq(config_load(dir, &cfg, diag), -1);
    fflush(diag);
    ck_assert_ptr_nonnull(strstr(out, "is a directory"));
    ck_assert_ptr_null(cfg);

    /* a missing file */
    ck_assert_int_eq(config_load("/nonexistent/ferry.yaml", &cfg, diag), -1);
    fflush(diag);
    ck_assert_ptr_nonnull(strstr(out, "/nonexistent/ferry.yaml: cannot open: No such file"));

    /* a 100 MB file: sparse, so it costs nothing to make; rejected by size */
    char tmpl[] = "/tmp/ferry-test-config-XXXXXX";
    int fd = mkstemp(tmpl);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 100 << 20), 0);
    close(fd);
    ck_assert_int_eq(config_load(tmpl, &cfg, diag), -1);
    fflush(diag);
    ck_assert_ptr_nonnull(strstr(out, "too large (104857600 bytes"));

    /* the same limit for a buffer */
    ck_assert_int_eq(config_load_string("big.yaml", "", CONFIG_MAX_FILE_BYTES + 1, &cfg, diag), -1);
    unlink(tmpl);

    /* /dev/null: empty, read through the no-size path */
    ck_assert_int_eq(config_load("/dev/null", &cfg, diag), -1);
    fclose(diag);
    ck_assert_ptr_nonnull(strstr(out, "/dev/null:1:1: the file holds no settings"));
    free(out);
    free(dir);
}
END_TEST

/* A large legitimate config stays fast, and the shadow check is bounded. */
START_TEST(many_routes)
{
    char *yaml = NULL;
    size_t size;
    FILE *f = open_memstream(&yaml, &size);
    fputs("listen: [{address: '127.0.0.1:1'}]\nupstreams: {a: {servers: [{address: "
          "'127.0.0.1:2'}]}}\nroutes:\n",
          f);
    for (int i = 0; i < 3000; i++)
        fprintf(f, "  - {name: r%d, match: {path_prefix: /p%d}, upstream: a}\n", i, i);
    fclose(f);
    struct config *cfg = load_ok(yaml);
    ck_assert_uint_eq(cfg->nroutes, 3000);
    ck_assert_uint_eq(cfg->nwarnings, 0);
    ck_assert_str_eq(cfg->routes[2999].name, "r2999");
    config_unref(cfg);
    free(yaml);

    /* a mapping with many keys: duplicate detection is not quadratic */
    f = open_memstream(&yaml, &size);
    fputs("upstreams:\n", f);
    for (int i = 0; i < 50000; i++)
        fprintf(f, "  u%d: 1\n", i);
    fputs("  u7: 1\n", f);
    fclose(f);
    char *out = load_fail(yaml);
    ck_assert_ptr_nonnull(strstr(out, "t.yaml:50002:3: upstreams.u7: duplicate key \"u7\" "
                                      "(first at line 9)"));
    free(out);
    free(yaml);
}
END_TEST

/* Paths are written out only for a message: keys and list indexes in
 * order, and a path longer than its buffer ends in "...". */
START_TEST(long_paths)
{
    char *out = load_fail("listen: [{address: '127.0.0.1:1'}]\n"
                          "upstreams: {a: {servers: [{address: '127.0.0.1:2'}, {adress: x}]}}\n"
                          "routes: [{upstream: a}]\n");
    ck_assert_ptr_nonnull(
        strstr(out, "t.yaml:2:54: upstreams.a.servers[1].adress: unknown key \"adress\" "
                    "(did you mean \"address\"?)"));
    free(out);

    char *yaml = NULL;
    size_t size;
    FILE *f = open_memstream(&yaml, &size);
    fputs("listen: [{address: '127.0.0.1:1'}]\nroutes:\n  - name: r\n    respond: {}\n"
          "    response_headers:\n      set:\n        ",
          f);
    for (int i = 0; i < 1000; i++)
        fputc('X', f);
    fputs("@: v\n", f);
    fclose(f);
    out = load_fail(yaml);
    const char *path = strstr(out, "routes[0].response_headers.set.XXX");
    ck_assert_ptr_nonnull(path);
    const char *end = strstr(path, ": not a valid header name");
    ck_assert_ptr_nonnull(end);
    ck_assert_int_le(end - path, 511);
    ck_assert_int_ge(end - path, 400);
    ck_assert_mem_eq(end - 3, "...", 3);
    free(out);
    free(yaml);
}
END_TEST

START_TEST(bad_bytes)
{
    /* NULs inside the buffer, a BOM, a lone surrogate in an escape */
    static const char nul[] = "listen: [{address: '127.0.0.1:1'}]\n\0routes: []\n";
    struct config *cfg;
    int rc;
    char *out = load_str("n.yaml", nul, sizeof(nul) - 1, &cfg, &rc);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_nonnull(strstr(out, "n.yaml:2:1: "));
    free(out);

    out = load_fail("listen: [{address: \"127.0.0.1:1\\0\"}]\n");
    ck_assert_ptr_nonnull(strstr(out, "a NUL character is not allowed here"));
    free(out);

    cfg = load_ok("\xef\xbb\xbflisten: [{address: '127.0.0.1:1'}]\nroutes: []\n");
    config_unref(cfg);

    out =
        load_fail("listen: [{address: '127.0.0.1:1'}]\nroutes: [{respond: {body: \"\\ud800\"}}]\n");
    ck_assert_ptr_nonnull(strstr(out, "t.yaml:2:"));
    free(out);
}
END_TEST

/* ---- the schema's keys and the two documents that list them ---- */

/* A key's default (from the table) is the one its doc line names, "(10s"
 * for 10s, and reads back as the same value. */
static void check_default(const char *mapping, const char *key, const char *doc, const char *def)
{
    if (!def)
        return;
    char *want;
    ck_assert(asprintf(&want, "(%s", def) > 0);
    ck_assert_msg(strstr(doc, want) != NULL, "%s.%s: the doc line \"%s\" does not say %s)", mapping,
                  key, doc, want);
    free(want);
    int64_t ms;
    uint64_t bytes;
    const char *why;
    ck_assert_msg(strcmp(def, "true") == 0 || strcmp(def, "false") == 0 ||
                      config_parse_duration(def, &ms, &why) == 0 ||
                      config_parse_size(def, &bytes, &why) == 0,
                  "%s.%s: default %s does not read back", mapping, key, def);
}

struct key_list {
    const char *mapping[256], *key[256];
    bool later[256];
    size_t n;
};

static void collect_key(void *arg, const char *mapping, const char *key, bool later,
                        const char *doc, const char *def)
{
    struct key_list *l = arg;
    ck_assert_msg(later || (doc && *doc), "%s.%s has no doc line", mapping, key);
    check_default(mapping, key, doc, def);
    ck_assert(l->n < 256);
    l->mapping[l->n] = mapping;
    l->key[l->n] = key;
    l->later[l->n++] = later;
}

static bool word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/* key occurs in text as a whole word (followed by ':' when colon). */
static bool has_word(const char *text, const char *key, bool colon)
{
    size_t len = strlen(key);
    for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
        if (p > text && word_char(p[-1]))
            continue;
        if (colon ? p[len] == ':' : !word_char(p[len]))
            return true;
    }
    return false;
}

static bool known_key(const struct key_list *l, const char *word)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->key[i], word) == 0)
            return true;
    return false;
}

static char *doc_file(const char *rel)
{
    const char *src = getenv("FERRY_SRCDIR");
    char *path, *text;
    size_t len;
    ck_assert(asprintf(&path, "%s/%s", src ? src : "..", rel) > 0);
    text = slurp(path, &len);
    ck_assert_msg(text != NULL, "cannot read %s (set FERRY_SRCDIR)", path);
    free(path);
    return text;
}

/* Every key the loader knows is in conf/ferry.yaml and ferry.yaml(5). */
START_TEST(schema_keys_documented)
{
    static struct key_list l;
    l.n = 0;
    config_schema_keys(collect_key, &l);
    ck_assert_uint_gt(l.n, 60);
    char *conf = doc_file("conf/ferry.yaml"), *man = doc_file("man/ferry.yaml.5");
    for (size_t i = 0; i < l.n; i++) {
        if (l.later[i])
            continue;
        ck_assert_msg(has_word(conf, l.key[i], true),
                      "conf/ferry.yaml does not show %s%s%s:", l.mapping[i],
                      *l.mapping[i] ? "." : "", l.key[i]);
        ck_assert_msg(has_word(man, l.key[i], false), "ferry.yaml.5 does not name %s%s%s",
                      l.mapping[i], *l.mapping[i] ? "." : "", l.key[i]);
    }
    free(conf);
    free(man);
}
END_TEST

/* Neither document shows a key the loader does not know: in conf/ferry.yaml
 * every "key:" that starts a line (commented or not), but the names of its
 * upstreams and the two headings of the units paragraph; in the manual
 * every ".B key" line. */
START_TEST(schema_documents_no_unknown_key)
{
    static const char *const prose[] = {"durations", "sizes", NULL};
    static struct key_list l;
    l.n = 0;
    config_schema_keys(collect_key, &l);
    const char *src = getenv("FERRY_SRCDIR");
    char *path;
    ck_assert(asprintf(&path, "%s/conf/ferry.yaml", src ? src : "..") > 0);
    struct config *cfg = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_int_eq(config_load(path, &cfg, devnull), 0);
    fclose(devnull);
    free(path);
    char *conf = doc_file("conf/ferry.yaml"), *man = doc_file("man/ferry.yaml.5");
    for (char *line = strtok(conf, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = line + strspn(line, " ");
        if (*p == '#')
            p += 1 + strspn(p + 1, " ");
        if (p[0] == '-' && p[1] == ' ')
            p += 2;
        size_t n = 0;
        while (word_char(p[n]))
            n++;
        if (n == 0 || p[n] != ':' || (p[n + 1] != ' ' && p[n + 1] != '\0'))
            continue;
        p[n] = '\0';
        bool ok = known_key(&l, p) || config_upstream_find(cfg, p);
        for (size_t i = 0; prose[i]; i++)
            ok |= strcmp(prose[i], p) == 0;
        ck_assert_msg(ok, "conf/ferry.yaml shows a key the loader does not know: %s", p);
    }
    for (char *line = strtok(man, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, ".B ", 3) == 0)
            ck_assert_msg(known_key(&l, line + 3),
                          "ferry.yaml.5 names a key the loader does not know: %s", line + 3);
    }
    free(conf);
    free(man);
    config_unref(cfg);
}
END_TEST

/* rate_limit.store: redis://HOST[:PORT][/DB] */
START_TEST(redis_url)
{
    static const struct {
        const char *url, *host;
        unsigned port, db;
    } ok[] = {
        {"redis://127.0.0.1", "127.0.0.1", 6379, 0},
        {"redis://127.0.0.1:6380/2", "127.0.0.1", 6380, 2},
        {"redis://redis.example-1.internal:1/", "redis.example-1.internal", 1, 0},
        {"redis://[::1]:7000/15", "::1", 7000, 15},
        {"redis://h/2147483647", "h", 6379, 2147483647u},
    };
    static const char *const bad[] = {
        "",
        "redis:/h",
        "http://h",
        "redis://",
        "redis://:6379",
        "redis://h:",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:99999999999",
        "redis://h/x",
        "redis://h/2147483648",
        "redis://u:p@h",
        "redis://h?db=1",
        "redis://h/1/2",
        "redis://[::1",
        "redis://[]",
        "redis://[g::1]",
        "redis://h h",
        "redis://h:6379x",
    };
    char host[256];
    uint16_t port;
    uint32_t db;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *err = config_redis_url(ok[i].url, strlen(ok[i].url), host, &port, &db);
        ck_assert_msg(err == NULL, "%s: %s", ok[i].url, err);
        ck_assert_str_eq(host, ok[i].host);
        ck_assert_uint_eq(port, ok[i].port);
        ck_assert_uint_eq(db, ok[i].db);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(config_redis_url(bad[i], strlen(bad[i]), host, &port, &db) != NULL,
                      "%s accepted", bad[i]);
    /* a host of 254 characters */
    char longname[300] = "redis://";
    memset(longname + 8, 'a', 254);
    longname[8 + 254] = '\0';
    ck_assert(config_redis_url(longname, strlen(longname), host, &port, &db) != NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, fixtures);
    tcase_add_test(tc, long_paths);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, full_example);
    tcase_add_test(tc, durations);
    tcase_add_test(tc, sizes);
    tcase_add_test(tc, trusted);
    tcase_add_test(tc, route_overrides_any_order);
    tcase_add_test(tc, header_rules);
    tcase_add_test(tc, route_flags_and_head_limit);
    tcase_add_test(tc, files);
    tcase_add_test(tc, many_routes);
    tcase_add_test(tc, bad_bytes);
    tcase_add_test(tc, schema_keys_documented);
    tcase_add_test(tc, schema_documents_no_unknown_key);
    tcase_add_test(tc, redis_url);
    suite_add_tcase(s, tc);
    return check_run(s);
}
