/*
 * config: see config.h for the contract, docs/config.md for the format.
 * This file holds the schema walk and the loaders; config_internal.h lists
 * the module's other files.
 *
 * Three stages, each bounded:
 *  1. libyaml's event parser builds a small tree of scalars, lists and
 *     mappings with their positions (build_tree). Aliases point at the
 *     anchored node instead of copying it, and every node counts with its
 *     expanded size against CONFIG_MAX_NODES, so a "billion laughs" file
 *     stops early instead of being walked a billion times. Nesting is
 *     capped at CONFIG_MAX_DEPTH. Duplicate keys are found per mapping by
 *     sorting, so a mapping with many keys costs n log n.
 *  2. The schema walk (load_root and friends) checks every key against the
 *     keys it knows, the keys of the contract not implemented yet ("not
 *     supported yet") and suggests the nearest one for a typo. It keeps
 *     going after an error so one run reports every problem.
 *  3. Cross checks: route -> upstream names, duplicate route names,
 *     shadowed routes, unused upstreams.
 * Diagnostics are collected, sorted by position and printed with the
 * offending line and a caret.
 */
#include "config.h"
#include "config_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>
/* ---- typed getters: each reports its own error and returns false ---- */

static bool want_scalar(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_SCALAR && !cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

static bool get_string(struct ctx *c, const struct ynode *n, const char *path, char **out)
{
    if (!want_scalar(c, n, path, "a string"))
        return false;
    if (strlen(n->str) != n->len) {
        cfg_err(c, n, path, "a NUL character is not allowed here");
        return false;
    }
    *out = cfg_strndup(c->mem, n->str, n->len);
    return true;
}

/* An integer in [min, max]; `what` names the expectation in the error. */
static bool get_uint(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                     uint64_t max, const char *what, uint64_t *out)
{
    if (!want_scalar(c, n, path, what))
        return false;
    uint64_t v;
    char q[QLEN];
    if (!cfg_parse_u64(n->str, &v) || strlen(n->str) != n->len) {
        cfg_err(c, n, path, "expected %s, got %s", what, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        cfg_err(c, n, path, "expected %s, got %s", what, n->str);
        return false;
    }
    *out = v;
    return true;
}

static bool get_u32(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                    uint64_t max, const char *what, uint32_t *out)
{
    uint64_t v;
    if (!get_uint(c, n, path, min, max, what, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool get_bool(struct ctx *c, const struct ynode *n, const char *path, bool *out)
{
    if (!want_scalar(c, n, path, "true or false"))
        return false;
    if (streq(n->str, "true")) {
        *out = true;
        return true;
    }
    if (streq(n->str, "false")) {
        *out = false;
        return true;
    }
    char q[QLEN];
    cfg_err(c, n, path, "expected true or false, got %s", cfg_quote(q, sizeof(q), n->str, n->len));
    return false;
}

static bool get_duration(struct ctx *c, const struct ynode *n, const char *path, bool zero_ok,
                         int64_t *out)
{
    if (!want_scalar(c, n, path, "a duration like 250ms, 5s or 2m"))
        return false;
    const char *why;
    int64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_duration(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a duration like 250ms, 5s, 2m, 1h or 1h30m";
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v == 0 && !zero_ok) {
        cfg_err(c, n, path, "must be longer than 0");
        return false;
    }
    *out = v;
    return true;
}

static bool get_size(struct ctx *c, const struct ynode *n, const char *path, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    if (!want_scalar(c, n, path, "a size like 512, 16k or 1m"))
        return false;
    const char *why;
    uint64_t v;
    char q[QLEN];
    if (strlen(n->str) != n->len || config_parse_size(n->str, &v, &why) != 0) {
        if (strlen(n->str) != n->len)
            why = "expected a size like 512, 16k, 1m or 1g";
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    if (v < min || v > max) {
        cfg_err(c, n, path, "must be between %llu and %llu bytes, got %s (%llu bytes)",
            (unsigned long long)min, (unsigned long long)max, n->str, (unsigned long long)v);
        return false;
    }
    *out = v;
    return true;
}

/* A mapping, or nothing (an empty section). */
static bool want_map(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_MAP || cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

static bool want_seq(struct ctx *c, const struct ynode *n, const char *path, const char *what)
{
    if (n->kind == Y_SEQ || cfg_is_null(n))
        return true;
    char d[QLEN];
    cfg_err(c, n, path, "expected %s, got %s", what, cfg_describe(d, sizeof(d), n));
    return false;
}

/* Number of pairs of a mapping / items of a list; 0 for an empty section. */
static size_t map_pairs(const struct ynode *n)
{
    return n->kind == Y_MAP ? n->n / 2 : 0;
}

static size_t seq_items(const struct ynode *n)
{
    return n->kind == Y_SEQ ? n->n : 0;
}

/*
 * Looks a key up in `known` (returns its name) and `later` (the contract's
 * keys not implemented yet: an error). Unknown keys get the nearest of both
 * lists. Returns NULL after reporting. Non-scalar keys were reported while
 * building the tree.
 */
static const char *lookup_key(struct ctx *c, const struct ynode *key, const char *path,
                              const char *const *known, const char *const *later)
{
    if (key->kind != Y_SCALAR || key->repeated)
        return NULL;
    char sub[512], q[96];
    cfg_subpath(sub, sizeof(sub), path, key->str);
    for (size_t i = 0; known[i]; i++)
        if (streq(key->str, known[i]))
            return known[i];
    for (size_t i = 0; later && later[i]; i++) {
        if (streq(key->str, later[i])) {
            cfg_err(c, key, sub, "not supported yet by this version of ferry");
            return NULL;
        }
    }
    size_t nk = cfg_count_list(known), nl = cfg_count_list(later);
    const char *cands[64] = {NULL};
    size_t n = 0;
    for (size_t i = 0; i < nk && n < 64; i++)
        cands[n++] = known[i];
    for (size_t i = 0; i < nl && n < 64; i++)
        cands[n++] = later[i];
    const char *near = cfg_nearest(key->str, cands, n);
    c->last_suggestion = near;
    cfg_quote(q, sizeof(q), key->str, key->len);
    if (near) {
        cfg_err(c, key, sub, "unknown key %s (did you mean \"%s\"?)", q, near);
    } else {
        char list[256];
        size_t o = 0;
        list[0] = '\0';
        for (size_t i = 0; i < nk && o + 40 < sizeof(list); i++)
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", known[i]);
        cfg_err(c, key, sub, "unknown key %s (expected one of: %s)", q, list);
    }
    return NULL;
}

/*
 * Walks a mapping's pairs from *i: returns the next key that lookup_key
 * knows (unknown and "not supported yet" keys are reported there and
 * skipped), with its value in *value and "path.key" in sub; NULL at the
 * end. Loop: for (size_t i = 0; (key = next_key(...));).
 */
static const char *next_key(struct ctx *c, const struct ynode *n, const char *path,
                            const char *const *keys, size_t *i, const struct ynode **value,
                            char *sub, size_t sub_size)
{
    while (*i < map_pairs(n)) {
        const struct ynode *k = n->v[2 * *i], *v = n->v[2 * *i + 1];
        (*i)++;
        const char *key = lookup_key(c, k, path, keys, NULL);
        if (key) {
            cfg_subpath(sub, sub_size, path, key);
            *value = v;
            return key;
        }
    }
    return NULL;
}

/* A name of an upstream or route: letters, digits, '-', '_', '.'; 1-64. */
static bool valid_name(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || n->len == 0 || n->len > 64 || strlen(n->str) != n->len)
        return false;
    for (size_t i = 0; i < n->len; i++) {
        char ch = n->str[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

static bool get_addr(struct ctx *c, const struct ynode *n, const char *path, bool names_ok,
                     struct config_addr *a)
{
    char *s;
    if (!want_scalar(c, n, path, "an address (host:port, [IPv6]:port or unix:/path)") ||
        !get_string(c, n, path, &s))
        return false;
    const char *why = cfg_parse_addr(c, s, names_ok, a);
    if (why) {
        char q[QLEN];
        cfg_err(c, n, path, "%s, got %s", why, cfg_quote(q, sizeof(q), n->str, n->len));
        return false;
    }
    return true;
}

/* ---- stage 2: the schema ---- */

const char *const CFG_TIMEOUT_KEYS[] = {"client_header",
                                           "client_body",
                                           "client_send",
                                           "client_idle",
                                           "upstream_connect",
                                           "upstream_header",
                                           "upstream_read",
                                           "upstream_send",
                                           "upstream_idle",
                                           "total",
                                           "tunnel_idle",
                                           NULL};

int64_t *cfg_timeout_field(struct config_timeouts *t, size_t i)
{
    int64_t *f[] = {&t->client_header, &t->client_body,      &t->client_send,
                    &t->client_idle,   &t->upstream_connect, &t->upstream_header,
                    &t->upstream_read, &t->upstream_send,    &t->upstream_idle,
                    &t->total,         &t->tunnel_idle};
    return f[i];
}

/*
 * Why a timeout cannot be set per route (NULL: it can). These run before a
 * route is chosen or outside any one request.
 */
static const char *not_per_route(const char *key)
{
    if (streq(key, "client_header"))
        return "the request head is read before a route is chosen";
    if (streq(key, "client_idle"))
        return "a client connection is idle between requests, before any route is chosen";
    if (streq(key, "upstream_idle"))
        return "pooled upstream connections are shared by every route to the upstream";
    if (streq(key, "tunnel_idle"))
        return "WebSocket tunnels take the top-level value";
    return NULL;
}

/* Reads a timeouts mapping into *t; *set gets a bit per key present. A
 * route's mapping (route true) refuses the keys not_per_route names. */
NOINLINE static void load_timeouts(struct ctx *c, const struct ynode *n, const char *path,
                                   struct config_timeouts *t, unsigned *set, bool route)
{
    if (!want_map(c, n, path, "a mapping of timeouts (like upstream_header: 5s)"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, CFG_TIMEOUT_KEYS, &i, &v, sub, sizeof(sub)));) {
        const char *why = route ? not_per_route(key) : NULL;
        if (why) {
            cfg_err(c, n->v[2 * i - 2], sub, "cannot be set per route (%s): set it in the top-level "
                "timeouts", why);
            continue;
        }
        for (size_t f = 0; CFG_TIMEOUT_KEYS[f]; f++) {
            if (key == CFG_TIMEOUT_KEYS[f]) {
                if (get_duration(c, v, sub, streq(key, "total"), cfg_timeout_field(t, f)))
                    *set |= 1u << f;
            }
        }
    }
}

/* limits.max_header_bytes: 1k up to what a read buffer can hold. */
static void get_header_bytes(struct ctx *c, const struct ynode *v, const char *path,
                             uint64_t *out)
{
    uint64_t b;
    if (!get_size(c, v, path, 1024, UINT64_MAX, &b))
        return;
    if (b > CONFIG_MAX_HEADER_BYTES_LIMIT) {
        cfg_err(c, v, path,
            "must be at most 128k (%u bytes), got %s (%llu bytes): a request head must fit in "
            "the 128 KiB buffer a client connection reads into",
            CONFIG_MAX_HEADER_BYTES_LIMIT, v->str, (unsigned long long)b);
        return;
    }
    *out = b;
}

NOINLINE static void load_limits(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"max_connections", "max_header_bytes", "max_headers",
                                       "max_body_bytes", NULL};
    struct config_limits *l = &c->cfg->limits;
    if (!want_map(c, n, path, "a mapping of limits"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "max_connections"))
            get_u32(c, v, sub, 1, 10000000, "a positive integer", &l->max_connections);
        else if (streq(key, "max_header_bytes"))
            get_header_bytes(c, v, sub, &l->max_header_bytes);
        else if (streq(key, "max_headers"))
            get_u32(c, v, sub, 1, 10000, "an integer from 1 to 10000", &l->max_headers);
        else if (streq(key, "max_body_bytes"))
            get_size(c, v, sub, 0, UINT64_MAX, &l->max_body_bytes);
    }
}

NOINLINE static void load_listen(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"address", "backlog", "proxy_protocol", "defer_accept",
                                       NULL};
    static const char *const later[] = {"tls", NULL};
    struct config *cfg = c->cfg;
    c->listen_seen = true;
    if (!want_seq(c, n, path, "a list of listeners (- address: 0.0.0.0:8080)"))
        return;
    size_t count = seq_items(n);
    cfg->listeners = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->listeners));
    const struct ynode **addr_nodes = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(void *));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *item = n->v[i];
        char ipath[PATHLEN];
        cfg_idxpath(ipath, sizeof(ipath), path, i);
        struct config_listener *l = &cfg->listeners[cfg->nlisteners];
        l->backlog = 4096;
        l->defer_accept = true;
        if (item->kind != Y_MAP) {
            char d[QLEN];
            cfg_err(c, item, ipath, "expected a listener (a mapping with address:), got %s",
                cfg_describe(d, sizeof(d), item));
            continue;
        }
        const struct ynode *addr = NULL;
        bool ok = true;
        for (size_t j = 0; j < map_pairs(item); j++) {
            const struct ynode *k = item->v[2 * j], *v = item->v[2 * j + 1];
            c->last_suggestion = NULL;
            const char *key = lookup_key(c, k, ipath, keys, later);
            if (!key) {
                ok = false;
                if (c->last_suggestion && streq(c->last_suggestion, "address"))
                    addr = k;
                continue;
            }
            char sub[PATHLEN];
            cfg_subpath(sub, sizeof(sub), ipath, key);
            if (streq(key, "address")) {
                addr = v;
                ok &= get_addr(c, v, sub, false, &l->addr);
            } else if (streq(key, "backlog")) {
                ok &= get_u32(c, v, sub, 1, 1u << 20, "a positive integer", &l->backlog);
            } else if (streq(key, "proxy_protocol")) {
                ok &= get_bool(c, v, sub, &l->proxy_protocol);
            } else if (streq(key, "defer_accept")) {
                ok &= get_bool(c, v, sub, &l->defer_accept);
            }
        }
        if (!addr) {
            char sub[PATHLEN];
            cfg_subpath(sub, sizeof(sub), ipath, "address");
            cfg_err(c, item, sub, "required: the address to listen on (like 0.0.0.0:8080)");
            continue;
        }
        if (!ok)
            continue;
        for (size_t j = 0; j < cfg->nlisteners; j++) {
            if (cfg->listeners[j].addr.salen == l->addr.salen &&
                memcmp(&cfg->listeners[j].addr.sa, &l->addr.sa, l->addr.salen) == 0) {
                char sub[PATHLEN];
                cfg_subpath(sub, sizeof(sub), ipath, "address");
                cfg_err(c, addr, sub, "%s is already listened on (line %u)", l->addr.text,
                    addr_nodes[j]->line);
                ok = false;
                break;
            }
        }
        if (ok)
            addr_nodes[cfg->nlisteners++] = addr;
    }
}

NOINLINE static void load_trusted(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_seq(c, n, path, "a list of addresses or CIDRs (like [10.0.0.0/8, ::1])"))
        return;
    size_t count = seq_items(n);
    cfg->trusted_proxies = cfg_alloc(c->mem, (count ? count : 1) * sizeof(struct config_cidr));
    for (size_t i = 0; i < count; i++) {
        char ipath[PATHLEN];
        cfg_idxpath(ipath, sizeof(ipath), path, i);
        char *s;
        if (!get_string(c, n->v[i], ipath, &s))
            continue;
        bool host_bits;
        struct config_cidr *cidr = &cfg->trusted_proxies[cfg->ntrusted_proxies];
        const char *why = cfg_parse_cidr(s, cidr, &host_bits);
        char q[QLEN];
        if (why) {
            cfg_err(c, n->v[i], ipath, "%s, got %s", why, cfg_quote(q, sizeof(q), s, strlen(s)));
            continue;
        }
        if (host_bits) {
            char fixed[80];
            cfg_format_cidr(cidr, fixed, sizeof(fixed));
            cfg_warn(c, n->v[i], ipath, "%s has bits set beyond its prefix length; read as %s",
                 cfg_quote(q, sizeof(q), s, strlen(s)), fixed);
        }
        cfg->ntrusted_proxies++;
    }
}

static bool valid_host_header(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '/' || *p == '@' || *p == ',')
            return false;
    return true;
}

NOINLINE static void load_servers(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"address", "weight", NULL};
    if (n->kind != Y_SEQ || n->n == 0) {
        char d[QLEN];
        cfg_err(c, n, path, "expected a list of servers (- address: host:port), got %s",
            n->kind == Y_SEQ ? "an empty list" : cfg_describe(d, sizeof(d), n));
        return;
    }
    u->servers = cfg_alloc(c->mem, n->n * sizeof(*u->servers));
    const struct ynode **addr_nodes = cfg_alloc(&c->tree, n->n * sizeof(void *));
    for (size_t i = 0; i < n->n; i++) {
        const struct ynode *item = n->v[i];
        char ipath[PATHLEN];
        cfg_idxpath(ipath, sizeof(ipath), path, i);
        if (item->kind != Y_MAP) {
            char d[QLEN];
            cfg_err(c, item, ipath, "expected a server (a mapping with address:), got %s",
                cfg_describe(d, sizeof(d), item));
            continue;
        }
        struct config_server *s = &u->servers[u->nservers];
        s->weight = 1;
        const struct ynode *addr = NULL;
        bool ok = true;
        for (size_t j = 0; j < map_pairs(item); j++) {
            const struct ynode *k = item->v[2 * j], *v = item->v[2 * j + 1];
            c->last_suggestion = NULL;
            const char *key = lookup_key(c, k, ipath, keys, NULL);
            if (!key) {
                ok = false;
                if (c->last_suggestion && streq(c->last_suggestion, "address"))
                    addr = k;
                continue;
            }
            char sub[PATHLEN];
            cfg_subpath(sub, sizeof(sub), ipath, key);
            if (streq(key, "address")) {
                addr = v;
                ok &= get_addr(c, v, sub, true, &s->addr);
            } else if (streq(key, "weight")) {
                ok &= get_u32(c, v, sub, 1, 1000, "a positive integer", &s->weight);
            }
        }
        if (!addr) {
            char sub[PATHLEN];
            cfg_subpath(sub, sizeof(sub), ipath, "address");
            cfg_err(c, item, sub, "required: the server's host:port");
            continue;
        }
        if (!ok)
            continue;
        for (size_t j = 0; j < u->nservers; j++) {
            if (streq(u->servers[j].addr.text, s->addr.text)) {
                char sub[PATHLEN];
                cfg_subpath(sub, sizeof(sub), ipath, "address");
                cfg_err(c, addr, sub, "%s is already a server of this upstream (line %u)", s->addr.text,
                    addr_nodes[j]->line);
                ok = false;
                break;
            }
        }
        if (!ok)
            continue;
        s->index = (uint32_t)u->nservers;
        addr_nodes[u->nservers++] = addr;
    }
}

/* passive: { failures, eject_for } */
NOINLINE static void load_passive(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"failures", "eject_for", NULL};
    if (!want_map(c, n, path, "a mapping (failures, eject_for)"))
        return;
    u->passive_failures = 5;
    u->passive_eject_ms = 30000;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "failures"))
            get_u32(c, v, sub, 1, 1000, "an integer from 1 to 1000", &u->passive_failures);
        else
            get_duration(c, v, sub, false, &u->passive_eject_ms);
    }
}

/* retries: { attempts, on: [connect_error, reset, timeout, 502, 503, 504] } */
NOINLINE static void load_retries(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_upstream *u)
{
    static const char *const keys[] = {"attempts", "on", "replay_bytes", NULL};
    static const char *const conds[] = {"connect_error", "reset", "timeout",
                                        "502",           "503",   "504", NULL};
    if (!want_map(c, n, path, "a mapping (attempts, on)"))
        return;
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR | CONFIG_RETRY_RESET;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "attempts")) {
            get_u32(c, v, sub, 0, 10, "an integer from 0 to 10", &u->retry_attempts);
            continue;
        }
        if (streq(key, "replay_bytes")) {
            get_size(c, v, sub, 0, 64u << 20, &u->replay_bytes);
            continue;
        }
        if (!want_seq(c, v, sub, "a list like [connect_error, reset, 502, 503, 504]"))
            continue;
        u->retry_on = 0;
        for (size_t j = 0; j < seq_items(v); j++) {
            char ipath[PATHLEN], q[QLEN];
            cfg_idxpath(ipath, sizeof(ipath), sub, j);
            const struct ynode *item = v->v[j];
            if (!want_scalar(c, item, ipath, "a retry condition"))
                continue;
            size_t f = 0;
            while (conds[f] && !streq(item->str, conds[f]))
                f++;
            if (conds[f]) {
                u->retry_on |= 1u << f;
                continue;
            }
            const char *near = cfg_nearest(item->str, conds, 6);
            cfg_err(c, item, ipath,
                "unknown retry condition %s (%s%s%s connect_error, reset, timeout, 502, 503 or "
                "504)",
                cfg_quote(q, sizeof(q), item->str, item->len), near ? "did you mean \"" : "expected",
                near ? near : "", near ? "\"? expected" : "");
        }
    }
}

NOINLINE static void load_upstream(struct ctx *c, const struct ynode *n, const char *path,
                                   struct config_upstream *u)
{
    static const char *const keys[] = {"servers",         "balance",     "keepalive",
                                       "max_connections", "host_header", "retries",
                                       "passive",         NULL};
    static const char *const later[] = {"hash_key", "tls", "health_check", NULL};
    static const char *const balances[] = {"round_robin", "least_conn", "random_two", "hash", NULL};
    u->keepalive = 64;
    u->retry_attempts = 1;
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR;
    u->replay_bytes = 64u << 10;
    u->host_header = CONFIG_HOST_PRESERVE;
    u->balance = CONFIG_BALANCE_ROUND_ROBIN;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        cfg_err(c, n, path, "expected an upstream (a mapping with servers:), got %s",
            cfg_describe(d, sizeof(d), n));
        return;
    }
    bool has_servers = false;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        c->last_suggestion = NULL;
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key) {
            /* a misspelt servers: was reported already */
            has_servers |= c->last_suggestion && streq(c->last_suggestion, "servers");
            continue;
        }
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, key);
        if (streq(key, "servers")) {
            has_servers = true;
            load_servers(c, v, sub, u);
        } else if (streq(key, "keepalive")) {
            get_u32(c, v, sub, 0, 100000, "an integer from 0 to 100000", &u->keepalive);
        } else if (streq(key, "max_connections")) {
            get_u32(c, v, sub, 0, 10000000, "an integer (0 = unlimited)", &u->max_connections);
        } else if (streq(key, "balance")) {
            if (!want_scalar(c, v, sub, "round_robin"))
                continue;
            if (streq(v->str, "round_robin"))
                continue;
            bool later_value = false;
            for (size_t b = 1; balances[b]; b++)
                later_value |= streq(v->str, balances[b]);
            if (later_value) {
                cfg_err(c, v, sub, "%s is not supported yet by this version of ferry",
                    cfg_quote(q, sizeof(q), v->str, v->len));
            } else {
                const char *near = cfg_nearest(v->str, balances, 4);
                if (near)
                    cfg_err(c, v, sub, "unknown balance %s (did you mean \"%s\"?)",
                        cfg_quote(q, sizeof(q), v->str, v->len), near);
                else
                    cfg_err(c, v, sub, "unknown balance %s (expected round_robin)",
                        cfg_quote(q, sizeof(q), v->str, v->len));
            }
        } else if (streq(key, "retries")) {
            load_retries(c, v, sub, u);
        } else if (streq(key, "passive")) {
            load_passive(c, v, sub, u);
        } else if (streq(key, "host_header")) {
            char *s;
            if (!get_string(c, v, sub, &s))
                continue;
            if (streq(s, "preserve")) {
                u->host_header = CONFIG_HOST_PRESERVE;
            } else if (streq(s, "upstream")) {
                u->host_header = CONFIG_HOST_UPSTREAM;
            } else if (valid_host_header(s)) {
                u->host_header = CONFIG_HOST_LITERAL;
                u->host_literal = s;
            } else {
                cfg_err(c, v, sub, "expected preserve, upstream or a host name, got %s",
                    cfg_quote(q, sizeof(q), v->str, v->len));
            }
        }
    }
    if (!has_servers) {
        char sub[PATHLEN];
        cfg_subpath(sub, sizeof(sub), path, "servers");
        cfg_err(c, n, sub, "required: at least one server (- address: host:port)");
    }
}

NOINLINE static void load_upstreams(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_map(c, n, path, "a mapping of upstreams by name (api: {servers: [...]})"))
        return;
    size_t count = map_pairs(n);
    cfg->upstreams = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->upstreams));
    c->uaux = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(*c->uaux));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (k->kind != Y_SCALAR || k->repeated)
            continue;
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, k->str);
        if (!valid_name(k)) {
            cfg_err(c, k, sub, "an upstream name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                cfg_quote(q, sizeof(q), k->str, k->len));
            continue;
        }
        struct config_upstream *u = &cfg->upstreams[cfg->nupstreams];
        u->name = cfg_strndup(c->mem, k->str, k->len);
        u->index = (uint32_t)cfg->nupstreams;
        c->uaux[cfg->nupstreams].key = k;
        cfg->nupstreams++;
        load_upstream(c, v, sub, u);
    }
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/*
 * A path in a route must be what routing compares against: the client's
 * path after dot-segment removal. Returns NULL or why it could never match.
 */
static const char *check_route_path(const char *p)
{
    if (p[0] != '/')
        return "a path starts with '/'";
    for (const char *q = p; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return "a path holds no spaces, '?', '#' or non-ASCII bytes (percent-encode them)";
        if (ch == '/' && (q[1] == '/' || (q[1] == '.' && (q[2] == '/' || !q[2])) ||
                          (q[1] == '.' && q[2] == '.' && (q[3] == '/' || !q[3]))))
            return "not a normalised path ('//', '/./' or '/../'): it would never match";
    }
    return NULL;
}

static const char *const METHOD_NAMES[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                           "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL};

NOINLINE static void load_match(struct ctx *c, const struct ynode *n, const char *path,
                                struct config_route *r)
{
    static const char *const keys[] = {"host", "path", "path_prefix", "methods", NULL};
    static const char *const later[] = {"path_regex", "headers", NULL};
    struct config_match *m = &r->match;
    if (!want_map(c, n, path, "a mapping of conditions (host, path, path_prefix, methods)"))
        return;
    const struct ynode *path_node = NULL, *prefix_node = NULL;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key)
            continue;
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, key);
        if (streq(key, "host")) {
            char *h;
            if (!get_string(c, v, sub, &h))
                continue;
            lower(h);
            size_t len = strlen(h);
            if (len > 1 && h[len - 1] == '.')
                h[--len] = '\0';
            const char *name = h;
            if (strncmp(h, "*.", 2) == 0) {
                m->host_wildcard = true;
                name = h + 2;
            }
            if (streq(h, "*")) {
                cfg_err(c, v, sub, "leave host out to match any host");
            } else if (strchr(name, ':') && name[0] != '[') {
                cfg_err(c, v, sub, "the host is matched without a port, got %s",
                    cfg_quote(q, sizeof(q), v->str, v->len));
            } else if (name[0] != '[' && !cfg_valid_hostname(name)) {
                cfg_err(c, v, sub,
                    "expected a host name like api.example.com or *.example.com, "
                    "got %s",
                    cfg_quote(q, sizeof(q), v->str, v->len));
            } else {
                m->host = m->host_wildcard ? h + 1 : h;
            }
        } else if (streq(key, "path") || streq(key, "path_prefix")) {
            char *p;
            if (!get_string(c, v, sub, &p))
                continue;
            const char *why = check_route_path(p);
            if (why) {
                cfg_err(c, v, sub, "%s, got %s", why, cfg_quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            if (streq(key, "path")) {
                path_node = v;
                m->path = p;
            } else {
                prefix_node = v;
                m->path_prefix = p;
            }
        } else if (streq(key, "methods")) {
            if (v->kind != Y_SEQ || v->n == 0) {
                char d[QLEN];
                cfg_err(c, v, sub, "expected a list of methods (like [GET, POST]), got %s",
                    v->kind == Y_SEQ ? "an empty list" : cfg_describe(d, sizeof(d), v));
                continue;
            }
            m->methods = cfg_alloc(c->mem, v->n * sizeof(char *));
            for (size_t j = 0; j < v->n; j++) {
                char ipath[PATHLEN];
                cfg_idxpath(ipath, sizeof(ipath), sub, j);
                char *meth;
                if (!get_string(c, v->v[j], ipath, &meth))
                    continue;
                if (!http1_token_ok(meth, strlen(meth))) {
                    cfg_err(c, v->v[j], ipath, "not a method name: %s",
                        cfg_quote(q, sizeof(q), v->v[j]->str, v->v[j]->len));
                    continue;
                }
                uint32_t bit = CONFIG_METHOD_OTHER;
                bool lower_case = false;
                for (size_t b = 0; METHOD_NAMES[b]; b++) {
                    if (streq(meth, METHOD_NAMES[b]))
                        bit = 1u << b;
                    else if (strcasecmp(meth, METHOD_NAMES[b]) == 0)
                        lower_case = true;
                }
                if (lower_case) {
                    char up[16];
                    snprintf(up, sizeof(up), "%s", meth);
                    for (char *p = up; *p; p++)
                        if (*p >= 'a' && *p <= 'z')
                            *p = (char)(*p - 'a' + 'A');
                    cfg_err(c, v->v[j], ipath, "methods are case-sensitive: %s (did you mean \"%s\"?)",
                        cfg_quote(q, sizeof(q), meth, strlen(meth)), up);
                    continue;
                }
                bool dup = false;
                for (size_t b = 0; b < m->nmethods; b++)
                    dup |= streq(m->methods[b], meth);
                if (dup) {
                    cfg_err(c, v->v[j], ipath, "%s is listed twice",
                        cfg_quote(q, sizeof(q), meth, strlen(meth)));
                    continue;
                }
                m->methods[m->nmethods++] = meth;
                m->method_mask |= bit;
            }
        }
    }
    if (path_node && prefix_node) {
        char sub[PATHLEN];
        const struct ynode *later_node =
            path_node->line > prefix_node->line ||
                    (path_node->line == prefix_node->line && path_node->col > prefix_node->col)
                ? path_node
                : prefix_node;
        cfg_subpath(sub, sizeof(sub), path, later_node == path_node ? "path" : "path_prefix");
        cfg_err(c, later_node, sub, "path and path_prefix exclude each other: keep one");
    }
}

NOINLINE static void load_respond(struct ctx *c, const struct ynode *n, const char *path,
                                  struct config_route *r)
{
    static const char *const keys[] = {"status", "body", "content_type", NULL};
    struct config_respond *resp = cfg_alloc(c->mem, sizeof(*resp));
    resp->status = 200;
    resp->body = cfg_strdup(c->mem, "");
    r->respond = resp;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        cfg_err(c, n, path, "expected a mapping (status, body, content_type), got %s",
            cfg_describe(d, sizeof(d), n));
        return;
    }
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "status")) {
            uint32_t st;
            if (get_u32(c, v, sub, 200, 599, "an HTTP status from 200 to 599", &st))
                resp->status = (uint16_t)st;
        } else if (streq(key, "body")) {
            if (want_scalar(c, v, sub, "a string")) {
                resp->body = cfg_strndup(c->mem, v->str, v->len);
                resp->body_len = v->len;
            }
        } else if (streq(key, "content_type")) {
            char *ct;
            if (!get_string(c, v, sub, &ct))
                continue;
            bool ok = *ct != '\0';
            for (const char *p = ct; *p; p++)
                ok &= (unsigned char)*p >= 0x20 && *p != 0x7f;
            if (!ok) {
                char q[QLEN];
                cfg_err(c, v, sub, "not a valid content type: %s", cfg_quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            resp->content_type = ct;
        }
    }
}

/* Why a field name cannot be rewritten by a route, or NULL. */
static const char *unrewritable(const char *name, bool request)
{
    static const char *const framing[] = {"connection",       "content-length", "transfer-encoding",
                                          "upgrade",          "te",             "trailer",
                                          "keep-alive",       "proxy-connection", NULL};
    for (size_t i = 0; framing[i]; i++)
        if (strcasecmp(name, framing[i]) == 0)
            return "is not rewritable: Ferry frames messages and manages connections itself";
    if (request && strcasecmp(name, "host") == 0)
        return "is not rewritable here: the upstream's host_header sets the Host sent upstream";
    return NULL;
}

/* A field name from node k (a key or a list item) into *out; false after
 * an error. */
static bool get_field_name(struct ctx *c, const struct ynode *k, const char *path, bool request,
                           struct http1_header *out)
{
    char q[QLEN];
    if (!want_scalar(c, k, path, "a header name"))
        return false;
    if (k->len > 256 || !http1_token_ok(k->str, k->len)) {
        cfg_err(c, k, path, "not a valid header name: %s", cfg_quote(q, sizeof(q), k->str, k->len));
        return false;
    }
    const char *why = unrewritable(k->str, request);
    if (why) {
        cfg_err(c, k, path, "%s %s", cfg_quote(q, sizeof(q), k->str, k->len), why);
        return false;
    }
    out->name = cfg_strndup(c->mem, k->str, k->len);
    out->name_len = k->len;
    return true;
}

/* set: / add: — a mapping of header name to value. */
static void load_header_map(struct ctx *c, const struct ynode *n, const char *path, bool request,
                            struct http1_header **out, size_t *count)
{
    if (!want_map(c, n, path, "a mapping of header names to values (X-Name: value)"))
        return;
    *out = cfg_alloc(c->mem, (map_pairs(n) ? map_pairs(n) : 1) * sizeof(**out));
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        char sub[PATHLEN], q[QLEN];
        cfg_subpath(sub, sizeof(sub), path, k->kind == Y_SCALAR ? k->str : "?");
        struct http1_header *h = &(*out)[*count];
        if (!get_field_name(c, k, sub, request, h))
            continue;
        if (!want_scalar(c, v, sub, "a header value"))
            continue;
        bool ok = v->len <= 4096 && http1_field_text_ok(v->str, v->len);
        if (ok && v->len > 0)
            ok = !strchr(" \t", v->str[0]) && !strchr(" \t", v->str[v->len - 1]);
        if (!ok) {
            cfg_err(c, v, sub,
                "not a valid header value (at most 4096 characters, no control characters, "
                "no leading or trailing blanks): %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
            continue;
        }
        h->value = cfg_strndup(c->mem, v->str, v->len);
        h->value_len = v->len;
        (*count)++;
    }
}

NOINLINE static void load_header_rules(struct ctx *c, const struct ynode *n, const char *path,
                                       bool request, struct config_header_rules *rules)
{
    static const char *const keys[] = {"set", "add", "remove", NULL};
    if (!want_map(c, n, path, "a mapping (set, add, remove)"))
        return;
    const char *key;
    const struct ynode *v;
    char sub[PATHLEN];
    for (size_t i = 0; (key = next_key(c, n, path, keys, &i, &v, sub, sizeof(sub)));) {
        if (streq(key, "set")) {
            load_header_map(c, v, sub, request, &rules->set, &rules->nset);
        } else if (streq(key, "add")) {
            load_header_map(c, v, sub, request, &rules->add, &rules->nadd);
        } else if (want_seq(c, v, sub, "a list of header names ([X-Debug, Server])")) {
            size_t count = seq_items(v);
            rules->remove = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*rules->remove));
            for (size_t j = 0; j < count; j++) {
                char ipath[PATHLEN];
                cfg_idxpath(ipath, sizeof(ipath), sub, j);
                if (get_field_name(c, v->v[j], ipath, request, &rules->remove[rules->nremove]))
                    rules->nremove++;
            }
        }
    }
    /* A name set twice (YAML keys are unique per mapping, so only case
     * differs) is an error; one both set and removed is set. */
    for (size_t i = 0; i < rules->nset; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(rules->set[i].name, rules->set[j].name) == 0)
                cfg_err(c, n, path, "%s and %s are the same header (names are case-insensitive): set "
                    "it once, or use add for a second field", rules->set[j].name, rules->set[i].name);
        for (size_t j = 0; j < rules->nremove; j++)
            if (strcasecmp(rules->set[i].name, rules->remove[j].name) == 0)
                cfg_warn(c, n, path, "%s is both set and removed: it is set", rules->set[i].name);
    }
}

NOINLINE static void load_route(struct ctx *c, const struct ynode *n, const char *path,
                                struct config_route *r, struct route_aux *aux)
{
    static const char *const keys[] = {"name",           "match",           "upstream",
                                       "strip_prefix",   "add_prefix",      "respond",
                                       "max_body_bytes", "timeouts",        "request_headers",
                                       "response_headers", "underscores_in_headers",
                                       "reject_path_params", NULL};
    static const char *const later[] = {"request_buffering",
                                        "response_buffering",
                                        "rate_limit",
                                        "auth",
                                        NULL};
    aux->node = n;
    if (n->kind != Y_MAP) {
        aux->quiet_name = true;
        char d[QLEN];
        cfg_err(c, n, path, "expected a route (a mapping with match: and upstream:), got %s",
            cfg_describe(d, sizeof(d), n));
        return;
    }
    const struct ynode *respond_node = NULL, *strip_node = NULL, *request_rules_node = NULL;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, later);
        if (!key)
            continue;
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, key);
        if (streq(key, "name")) {
            aux->quiet_name = true;
            if (!want_scalar(c, v, sub, "a name"))
                continue;
            if (!valid_name(v)) {
                cfg_err(c, v, sub, "a route name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                    cfg_quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            r->name = cfg_strndup(c->mem, v->str, v->len);
        } else if (streq(key, "match")) {
            load_match(c, v, sub, r);
        } else if (streq(key, "upstream")) {
            if (!want_scalar(c, v, sub, "the name of an upstream"))
                continue;
            aux->upstream_node = v;
            aux->upstream_name = v->str;
        } else if (streq(key, "strip_prefix") || streq(key, "add_prefix")) {
            char *p;
            if (!get_string(c, v, sub, &p))
                continue;
            const char *why = check_route_path(p);
            if (why) {
                cfg_err(c, v, sub, "%s, got %s", why, cfg_quote(q, sizeof(q), v->str, v->len));
                continue;
            }
            if (streq(key, "strip_prefix")) {
                strip_node = v;
                r->strip_prefix = p;
            } else {
                r->add_prefix = p;
            }
        } else if (streq(key, "respond")) {
            respond_node = k;
            load_respond(c, v, sub, r);
        } else if (streq(key, "max_body_bytes")) {
            if (get_size(c, v, sub, 0, UINT64_MAX, &r->max_body_bytes))
                aux->has_max_body = true;
        } else if (streq(key, "timeouts")) {
            load_timeouts(c, v, sub, &aux->timeouts, &aux->timeouts_set, true);
        } else if (streq(key, "request_headers")) {
            request_rules_node = k;
            load_header_rules(c, v, sub, true, &r->request_headers);
        } else if (streq(key, "response_headers")) {
            load_header_rules(c, v, sub, false, &r->response_headers);
        } else if (streq(key, "underscores_in_headers")) {
            get_bool(c, v, sub, &r->underscores_in_headers);
        } else if (streq(key, "reject_path_params")) {
            get_bool(c, v, sub, &r->reject_path_params);
        }
    }
    if (respond_node && request_rules_node) {
        char sub[PATHLEN];
        cfg_subpath(sub, sizeof(sub), path, "request_headers");
        cfg_warn(c, request_rules_node, sub, "has no effect on a respond route");
    }
    if (respond_node && aux->upstream_node) {
        char sub[PATHLEN];
        cfg_subpath(sub, sizeof(sub), path, "respond");
        cfg_err(c, respond_node, sub, "a route has either upstream or respond, not both");
    } else if (!respond_node && !aux->upstream_node) {
        cfg_err(c, n, path, "a route needs upstream: (where to proxy) or respond: (a fixed answer)");
    }
    if (respond_node && (strip_node || r->add_prefix)) {
        char sub[PATHLEN];
        cfg_subpath(sub, sizeof(sub), path, strip_node ? "strip_prefix" : "add_prefix");
        cfg_warn(c, respond_node, sub, "has no effect on a respond route");
    }
    if (strip_node && r->match.path_prefix) {
        const char *sp = r->strip_prefix, *pp = r->match.path_prefix;
        size_t sl = strlen(sp);
        if (strncmp(pp, sp, sl) != 0) {
            char sub[PATHLEN];
            cfg_subpath(sub, sizeof(sub), path, "strip_prefix");
            cfg_warn(c, strip_node, sub, "%s is not a prefix of path_prefix %s: nothing is stripped",
                 sp, pp);
        }
    }
}

NOINLINE static void load_routes(struct ctx *c, const struct ynode *n, const char *path)
{
    struct config *cfg = c->cfg;
    if (!want_seq(c, n, path, "a list of routes (- match: ... upstream: ...)"))
        return;
    size_t count = seq_items(n);
    if (count > CONFIG_MAX_ROUTES) {
        cfg_err(c, n, path, "more than %d routes", CONFIG_MAX_ROUTES);
        return;
    }
    cfg->routes = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->routes));
    c->raux = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(*c->raux));
    for (size_t i = 0; i < count; i++) {
        char ipath[PATHLEN];
        cfg_idxpath(ipath, sizeof(ipath), path, i);
        struct config_route *r = &cfg->routes[i];
        r->index = (uint32_t)i;
        load_route(c, n->v[i], ipath, r, &c->raux[i]);
    }
    cfg->nroutes = count;
}

NOINLINE static void load_access_log(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"path", "format", NULL};
    struct config_access_log *al = &c->cfg->access_log;
    if (!want_map(c, n, path, "a mapping (path, format)"))
        return;
    al->path = cfg_strdup(c->mem, "stderr");
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const char *key = lookup_key(c, k, path, keys, NULL);
        if (!key)
            continue;
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, key);
        char *s;
        if (!get_string(c, v, sub, &s))
            continue;
        if (streq(key, "path")) {
            if (!streq(s, "stderr") && s[0] != '/')
                cfg_err(c, v, sub, "expected stderr or an absolute path, got %s",
                    cfg_quote(q, sizeof(q), v->str, v->len));
            else
                al->path = s;
        } else if (streq(s, "json")) {
            al->format = CONFIG_LOG_JSON;
        } else if (streq(s, "combined")) {
            al->format = CONFIG_LOG_COMBINED;
        } else {
            static const char *const formats[] = {"json", "combined", NULL};
            const char *near = cfg_nearest(s, formats, 2);
            cfg_err(c, v, sub, "expected json or combined, got %s%s%s%s",
                cfg_quote(q, sizeof(q), v->str, v->len), near ? " (did you mean \"" : "",
                near ? near : "", near ? "\"?)" : "");
        }
    }
}

NOINLINE static void load_error_log(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"level", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    if (!want_map(c, n, path, "a mapping (level)"))
        return;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (!lookup_key(c, k, path, keys, NULL))
            continue;
        char sub[512], q[96];
        cfg_subpath(sub, sizeof(sub), path, "level");
        if (!want_scalar(c, v, sub, "debug, info, warn or error"))
            continue;
        bool found = false;
        for (size_t l = 0; levels[l]; l++) {
            if (streq(v->str, levels[l])) {
                c->cfg->error_log_level = (enum log_level)l;
                found = true;
            }
        }
        if (!found) {
            const char *near = cfg_nearest(v->str, levels, 4);
            cfg_err(c, v, sub, "expected debug, info, warn or error, got %s%s%s%s",
                cfg_quote(q, sizeof(q), v->str, v->len), near ? " (did you mean \"" : "",
                near ? near : "", near ? "\"?)" : "");
        }
    }
}

NOINLINE static void load_admin(struct ctx *c, const struct ynode *n, const char *path)
{
    static const char *const keys[] = {"listen", NULL};
    if (!want_map(c, n, path, "a mapping (listen)"))
        return;
    for (size_t i = 0; i < map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        if (!lookup_key(c, k, path, keys, NULL))
            continue;
        char sub[PATHLEN];
        cfg_subpath(sub, sizeof(sub), path, "listen");
        struct config_addr *a = cfg_alloc(c->mem, sizeof(*a));
        if (get_addr(c, v, sub, false, a))
            c->cfg->admin_listen = a;
    }
}

NOINLINE static void load_root(struct ctx *c, const struct ynode *root)
{
    static const char *const keys[] = {"workers",          "coroutine_stack", "max_requests",
                                       "shutdown_timeout", "pid_file",        "trusted_proxies",
                                       "listen",           "timeouts",        "limits",
                                       "upstreams",        "routes",          "access_log",
                                       "error_log",        "admin",           NULL};
    static const char *const later[] = {"user", NULL};
    struct config *cfg = c->cfg;
    for (size_t i = 0; i < map_pairs(root); i++) {
        const struct ynode *k = root->v[2 * i], *v = root->v[2 * i + 1];
        c->last_suggestion = NULL;
        const char *key = lookup_key(c, k, "", keys, later);
        if (!key) {
            c->listen_seen |= c->last_suggestion && streq(c->last_suggestion, "listen");
            continue;
        }
        if (streq(key, "workers")) {
            if (v->kind == Y_SCALAR && streq(v->str, "auto"))
                cfg->workers = 0;
            else
                get_u32(c, v, key, 1, 1024, "auto or an integer from 1 to 1024", &cfg->workers);
        } else if (streq(key, "coroutine_stack")) {
            get_size(c, v, key, 16 << 10, 64 << 20, &cfg->coroutine_stack);
        } else if (streq(key, "max_requests")) {
            get_u32(c, v, key, 1, 1000000, "an integer from 1 to 1000000", &cfg->max_requests);
        } else if (streq(key, "shutdown_timeout")) {
            get_duration(c, v, key, true, &cfg->shutdown_timeout);
        } else if (streq(key, "pid_file")) {
            char *s;
            if (cfg_is_null(v))
                cfg->pid_file = NULL;
            else if (!get_string(c, v, key, &s))
                continue;
            else if (s[0] != '/')
                cfg_err(c, v, key, "expected an absolute path, got \"%s\"", s);
            else
                cfg->pid_file = s;
        } else if (streq(key, "trusted_proxies")) {
            load_trusted(c, v, key);
        } else if (streq(key, "listen")) {
            load_listen(c, v, key);
        } else if (streq(key, "timeouts")) {
            unsigned set = 0;
            load_timeouts(c, v, key, &cfg->timeouts, &set, false);
        } else if (streq(key, "limits")) {
            load_limits(c, v, key);
        } else if (streq(key, "upstreams")) {
            load_upstreams(c, v, key);
        } else if (streq(key, "routes")) {
            load_routes(c, v, key);
        } else if (streq(key, "access_log")) {
            load_access_log(c, v, key);
        } else if (streq(key, "error_log")) {
            load_error_log(c, v, key);
        } else if (streq(key, "admin")) {
            load_admin(c, v, key);
        }
    }
}

void cfg_set_defaults(struct config *cfg)
{
    cfg->workers = 0;
    cfg->coroutine_stack = 64 << 10;
    cfg->max_requests = 20000;
    cfg->shutdown_timeout = 30000;
    cfg->timeouts = (struct config_timeouts){
        .client_header = 10000,
        .client_body = 30000,
        .client_send = 60000,
        .client_idle = 60000,
        .upstream_connect = 2000,
        .upstream_header = 30000,
        .upstream_read = 60000,
        .upstream_send = 60000,
        .upstream_idle = 4000,
        .total = 0,
        .tunnel_idle = 3600000,
    };
    cfg->limits = (struct config_limits){
        .max_connections = 100000,
        .max_header_bytes = 32 << 10,
        .max_headers = 100,
        .max_body_bytes = 10 << 20,
    };
    cfg->access_log.path = NULL;
    cfg->access_log.format = CONFIG_LOG_JSON;
    cfg->error_log_level = CONFIG_LOG_INFO;
}

/* ---- public ---- */

struct config_box {
    struct config cfg;
    struct arena mem;
};

static int load(struct ctx *c, struct config **out, FILE *diag)
{
    struct config_box *box = calloc(1, sizeof(*box));
    if (!box)
        cfg_oom();
    c->mem = &box->mem;
    c->cfg = &box->cfg;
    cfg_set_defaults(c->cfg);
    c->cfg->refs_ = 1;
    c->cfg->path = cfg_strdup(c->mem, c->name);

    const struct ynode *root;
    if (cfg_tree_build(c, &root) == 0) {
        c->root = root;
        if (!root || cfg_is_null(root)) {
            cfg_err_at(c, 1, 1, "", "the file holds no settings: at least listen: is required");
        } else if (root->kind != Y_MAP) {
            char d[QLEN];
            cfg_err(c, root, "", "expected a mapping of settings (listen:, routes:, ...), got %s",
                cfg_describe(d, sizeof(d), root));
        } else {
            load_root(c, root);
            if (!c->listen_seen || c->cfg->nlisteners == 0) {
                if (!c->listen_seen)
                    cfg_err(c, root, "listen",
                        "required: at least one listener (- address: 0.0.0.0:8080)");
                else if (c->nerrors == 0)
                    cfg_err(c, root, "listen", "required: at least one listener");
            }
            cfg_cross_check(c);
            if (c->nerrors == 0 && c->cfg->nroutes == 0)
                cfg_warn(c, root, "routes", "no routes: every request gets 404");
        }
    }
    int rc = c->nerrors ? -1 : 0;
    c->cfg->nwarnings = c->nwarnings;
    cfg_print_diags(c, diag);
    cfg_arena_fini(&c->tree);
    if (rc != 0) {
        cfg_arena_fini(&box->mem);
        free(box);
        *out = NULL;
        return -1;
    }
    *out = &box->cfg;
    return 0;
}

int config_load_string(const char *name, const char *data, size_t len, struct config **out,
                       FILE *diag)
{
    struct ctx c = {.name = name, .src = data, .srclen = len};
    *out = NULL;
    /* a UTF-8 byte order mark: libyaml only skips it when it guesses the
     * encoding, and we insist on UTF-8 */
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        c.src += 3;
        c.srclen -= 3;
    }
    if (len > CONFIG_MAX_FILE_BYTES) {
        if (diag)
            fprintf(diag, "%s: too large (%zu bytes; a config file is at most %u MiB)\n", name, len,
                    CONFIG_MAX_FILE_BYTES >> 20);
        return -1;
    }
    return load(&c, out, diag);
}

int config_load(const char *path, struct config **out, FILE *diag)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (diag)
            fprintf(diag, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode) ||
        (S_ISREG(st.st_mode) && (uint64_t)st.st_size > CONFIG_MAX_FILE_BYTES)) {
        if (diag) {
            if (S_ISDIR(st.st_mode))
                fprintf(diag, "%s: is a directory, not a config file\n", path);
            else
                fprintf(diag, "%s: too large (%lld bytes; a config file is at most %u MiB)\n", path,
                        (long long)st.st_size, CONFIG_MAX_FILE_BYTES >> 20);
        }
        close(fd);
        return -1;
    }
    /* read at most the limit + 1 (a FIFO or a device has no size) */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        cfg_oom();
    for (;;) {
        if (len == cap) {
            if (cap > CONFIG_MAX_FILE_BYTES)
                break;
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown)
                cfg_oom();
            buf = grown;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (diag)
                fprintf(diag, "%s: cannot read: %s\n", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CONFIG_MAX_FILE_BYTES)
            break;
    }
    close(fd);
    int rc = config_load_string(path, buf, len, out, diag);
    free(buf);
    return rc;
}

struct config *config_ref(struct config *cfg)
{
    __atomic_add_fetch(&cfg->refs_, 1, __ATOMIC_RELAXED);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (!cfg)
        return;
    if (__atomic_sub_fetch(&cfg->refs_, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    struct config_box *box = (struct config_box *)cfg;
    cfg_arena_fini(&box->mem);
    free(box);
}

