/*
 * config_balance: the loaders of an upstream's balancing, retry budget and
 * health check keys (balance, hash_key, retries.budget, health_check),
 * and the top-level resolver (nameservers for servers' DNS names), used
 * by config.c's tables.
 */
#include "config.h"
#include "config_internal.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cfg_load_balance(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const balances[] = {"round_robin", "least_conn", "random_two", "hash", NULL};
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "round_robin, least_conn, random_two or hash"))
        return false;
    for (size_t b = 0; balances[b]; b++) {
        if (streq(v->str, balances[b])) {
            u->balance = (enum config_balance)b;
            return true;
        }
    }
    const char *near = cfg_nearest(v->str, balances, 4);
    cfg_quote(q, sizeof(q), v->str, v->len);
    if (near)
        cfg_err(c, v, path, "unknown balance %s (did you mean \"%s\"?)", q, near);
    else
        cfg_err(c, v, path,
                "unknown balance %s (expected round_robin, least_conn, random_two or "
                "hash)",
                q);
    return false;
}

static bool token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* hash_key: client_ip | header:NAME | cookie:NAME */
bool cfg_load_hash_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const sources[] = {"client_ip", "header:", "cookie:", NULL};
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "client_ip, header:NAME or cookie:NAME"))
        return false;
    cfg_quote(q, sizeof(q), v->str, v->len);
    if (streq(v->str, "client_ip")) {
        u->hash_source = CONFIG_HASH_CLIENT_IP;
        return true;
    }
    const char *colon = strchr(v->str, ':');
    size_t plen = colon ? (size_t)(colon - v->str) : 0;
    if (colon && ((plen == 6 && memcmp(v->str, "header", 6) == 0) ||
                  (plen == 6 && memcmp(v->str, "cookie", 6) == 0))) {
        const char *name = colon + 1;
        bool ok = *name != '\0' && strlen(name) <= 128;
        for (const char *p = name; ok && *p; p++)
            ok = token_char(*p);
        if (!ok) {
            cfg_err(c, v, path,
                    "expected a %s name after \"%.6s:\" (letters, digits, '-', '_'), "
                    "got %s",
                    v->str[0] == 'h' ? "header" : "cookie", v->str, q);
            return false;
        }
        u->hash_source = v->str[0] == 'h' ? CONFIG_HASH_HEADER : CONFIG_HASH_COOKIE;
        u->hash_name = cfg_alloc(c->mem, strlen(name) + 1);
        memcpy(u->hash_name, name, strlen(name) + 1);
        return true;
    }
    char word[16];
    snprintf(word, sizeof(word), "%.*s", colon ? (int)plen + 1 : 15, v->str);
    const char *near = cfg_nearest(word, sources, 3);
    if (near)
        cfg_err(c, v, path, "unknown hash key source %s (did you mean \"%s%s\"?)", q, near,
                near[strlen(near) - 1] == ':' ? "NAME" : "");
    else
        cfg_err(c, v, path,
                "unknown hash key source %s (expected client_ip, header:NAME or "
                "cookie:NAME)",
                q);
    return false;
}

/* retries.budget: "20%" (or a bare number, a percentage) */
bool cfg_load_retry_budget(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "a percentage like 20%"))
        return false;
    const char *p = v->str;
    unsigned long pct = 0;
    bool ok = *p >= '0' && *p <= '9';
    while (ok && *p >= '0' && *p <= '9' && pct <= 1000)
        pct = pct * 10 + (unsigned long)(*p++ - '0');
    if (*p == '%')
        p++;
    if (!ok || *p || pct > 1000) {
        cfg_err(c, v, path, "expected a percentage from 0%% to 1000%%, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    u->retry_budget_pct = (uint32_t)pct;
    return true;
}

/* health_check.path: an origin-form path, sent as is. */
static bool load_health_path(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    char *s, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    bool ok = s[0] == '/' && strlen(s) <= 1024;
    for (const char *p = s; ok && *p; p++)
        ok = (unsigned char)*p > 0x20 && *p != 0x7f;
    if (!ok) {
        cfg_err(c, v, path, "expected a path starting with / (no spaces), got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    u->health.path = s;
    return true;
}

static bool load_health_host(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    char *s, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    if (!cfg_valid_hostname(s)) {
        cfg_err(c, v, path, "expected a host name, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    u->health.host = s;
    return true;
}

/* health_check.expect_status: [200, 204, ...] */
static bool load_health_expect(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, v, path, "a list of statuses like [200, 204]"))
        return false;
    size_t n = cfg_seq_items(v);
    if (n == 0) {
        cfg_err(c, v, path, "expected at least one status");
        return false;
    }
    u->health.expect_status = cfg_alloc(c->mem, n * sizeof(*u->health.expect_status));
    u->health.nexpect_status = 0;
    bool ok = true;
    for (size_t j = 0; j < n; j++) {
        uint32_t st;
        if (!cfg_get_u32(c, v->v[j], CFG_INDEX(path, j), 100, 599, "a status from 100 to 599",
                         &st)) {
            ok = false;
            continue;
        }
        u->health.expect_status[u->health.nexpect_status++] = (uint16_t)st;
    }
    return ok;
}

#define HAT(member) offsetof(struct config_upstream, health.member)
static const struct cfg_field health_fields[] = {
    {"path", CFG_CUSTOM, .load = load_health_path, .required = "required: the path checked",
     .doc = "the path requested (GET), starting with /"},
    {"host", CFG_CUSTOM, .load = load_health_host,
     .doc = "the Host sent (default: the server's address)"},
    {"interval", CFG_DURATION, HAT(interval_ms), 1, .def = 2000,
     .doc = "time between two checks of a server (2s)"},
    {"timeout", CFG_DURATION, HAT(timeout_ms), 1, .def = 1000,
     .doc = "a check without a status line within this fails (1s)"},
    {"healthy_after", CFG_U32, HAT(healthy_after), 1, 100, "an integer from 1 to 100", .def = 2,
     .doc = "passes in a row that bring a server up (2)"},
    {"unhealthy_after", CFG_U32, HAT(unhealthy_after), 1, 100, "an integer from 1 to 100", .def = 3,
     .doc = "failures in a row that take a server down (3)"},
    {"expect_status", CFG_CUSTOM, .load = load_health_expect,
     .doc = "the statuses that pass ([200])"},
    {"start_healthy", CFG_BOOL, HAT(start_healthy), .def = false,
     .doc = "a server new to the config starts up, not down until its first pass (false)"},
    {"fail_open", CFG_BOOL, HAT(fail_open), .def = false,
     .doc = "every server down: send to them all rather than answer 503 (false)"},
    {.key = NULL}};
const struct cfg_schema cfg_health_schema = {
    "upstreams.NAME.health_check", "a mapping (path, interval, timeout...)", health_fields};

bool cfg_load_health(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                     const struct ynode *v, const struct cfg_path *path, void *target)
{
    static uint16_t ok200[] = {200};
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (!cfg_want_map(c, v, path, cfg_health_schema.what))
        return false;
    cfg_defaults(&cfg_health_schema, u);
    u->health.expect_status = ok200;
    u->health.nexpect_status = 1;
    return cfg_walk(c, v, path, &cfg_health_schema, u);
}

/* upstreams.NAME.resolve: any | ipv4 | ipv6 */
bool cfg_load_resolve(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const families[] = {"any", "ipv4", "ipv6", NULL};
    struct config_upstream *u = target;
    char q[96];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "any, ipv4 or ipv6"))
        return false;
    for (size_t i = 0; families[i]; i++) {
        if (streq(v->str, families[i])) {
            u->resolve = (enum config_resolve)i;
            return true;
        }
    }
    cfg_err(c, v, path, "unknown address family %s (expected any, ipv4 or ipv6)",
            cfg_quote(q, sizeof(q), v->str, v->len));
    return false;
}

/* resolver: [IP, "IP:PORT", "[IPv6]:PORT"] (port 53 when not written) */
bool cfg_load_resolver(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, n, path, "a list of nameserver addresses (like [127.0.0.53])"))
        return false;
    size_t count = cfg_seq_items(n);
    cfg->resolvers = cfg_alloc(c->mem, (count ? count : 1) * sizeof(struct config_addr));
    for (size_t i = 0; i < count; i++) {
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        char *s, buf[96];
        if (!cfg_get_string(c, n->v[i], ipath, &s))
            continue;
        unsigned char ip[16];
        if (inet_pton(AF_INET, s, ip) == 1 && strlen(s) < 80)
            snprintf(buf, sizeof(buf), "%s:53", s);
        else if (inet_pton(AF_INET6, s, ip) == 1 && strlen(s) < 80)
            snprintf(buf, sizeof(buf), "[%s]:53", s);
        else
            snprintf(buf, sizeof(buf), "%.90s", s);
        struct config_addr *a = &cfg->resolvers[cfg->nresolvers];
        const char *why = strncmp(s, "unix:", 5) == 0 ? "a nameserver is an IP address"
                                                      : cfg_parse_addr(c, buf, false, a);
        char q[QLEN];
        if (why) {
            cfg_err(c, n->v[i], ipath, "%s, got %s", why, cfg_quote(q, sizeof(q), s, strlen(s)));
            continue;
        }
        cfg->nresolvers++;
    }
    return true;
}
