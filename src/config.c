/*
 * config: see config.h for the contract, docs/config.md for the format.
 * This file holds the schema (a table of fields per mapping) and the
 * loaders the tables name; config_internal.h lists the module's other files.
 *
 * Three stages, each bounded:
 *  1. The YAML tree (config_yaml.c): libyaml's events into scalars, lists
 *     and mappings with their positions; aliases share the anchored node
 *     and count with their expanded size against CONFIG_MAX_NODES;
 *     nesting is capped at CONFIG_MAX_DEPTH; duplicate keys are found per
 *     mapping by sorting.
 *  2. The schema walk (cfg_walk in config_schema.c over the tables here):
 *     every key against the keys of its mapping, the keys of the contract
 *     not implemented yet ("not supported yet"), a suggestion for a typo,
 *     required keys and types. It keeps going after an error so one run
 *     reports every problem. Where a value sits is a chain of keys on the
 *     stack (struct cfg_path), written out only for a message.
 *  3. Cross checks (config_check.c): route -> upstream names, duplicate
 *     route names, shadowed routes, unused upstreams.
 * Diagnostics are collected, sorted by position and printed with the
 * offending line and a caret.
 */
#include "config.h"
#include "config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- stage 2: the schema ---- */

#define AT(type, member) offsetof(type, member)
/* clang-format off */
#define LATER(k) {.key = k, .kind = CFG_LATER}
#define END {.key = NULL}
/* clang-format on */

const char *const CFG_TIMEOUT_KEYS[] = {"client_header", "client_body",      "client_send",
                                        "client_idle",   "upstream_connect", "upstream_header",
                                        "upstream_read", "upstream_send",    "upstream_idle",
                                        "total",         "tunnel_idle",      NULL};

int64_t *cfg_timeout_field(struct config_timeouts *t, size_t i)
{
    int64_t *f[] = {&t->client_header,    &t->client_body,     &t->client_send,   &t->client_idle,
                    &t->upstream_connect, &t->upstream_header, &t->upstream_read, &t->upstream_send,
                    &t->upstream_idle,    &t->total,           &t->tunnel_idle};
    return f[i];
}

/* timeouts: (top level) into struct config_timeouts */
/* clang-format off */
#define TIMEOUT(k, zero, ms, d)                                                                    \
    {.key = #k, .kind = CFG_DURATION, .offset = AT(struct config_timeouts, k), .min = (zero) ? 0 : 1, \
     .def = (ms), .doc = d}
/* clang-format on */
static const struct cfg_field timeout_fields[] = {
    TIMEOUT(client_header, 0, 10000, "reading a whole request head, from its first byte (10s)"),
    TIMEOUT(client_body, 0, 30000, "longest gap between two reads of a request body (30s)"),
    TIMEOUT(client_send, 0, 60000, "longest a client may stall reading the response (60s)"),
    TIMEOUT(client_idle, 0, 60000, "a keep-alive client connection idle between requests (60s)"),
    TIMEOUT(upstream_connect, 0, 2000, "connecting to an upstream server (2s)"),
    TIMEOUT(upstream_header, 0, 30000, "request sent until the response head (30s)"),
    TIMEOUT(upstream_read, 0, 60000, "longest gap between two reads of a response body (60s)"),
    TIMEOUT(upstream_send, 0, 60000, "longest an upstream may stall reading the request (60s)"),
    TIMEOUT(upstream_idle, 0, 4000, "a pooled idle upstream connection is closed after (4s)"),
    TIMEOUT(total, 1, 0, "a whole request including retries (0 = none)"),
    TIMEOUT(tunnel_idle, 0, 3600000, "no byte either way in a WebSocket tunnel (1h)"),
    END};
static const struct cfg_schema timeouts_schema = {
    "timeouts", "a mapping of timeouts (like upstream_header: 5s)", timeout_fields};

/* routes[].timeouts: into the route's aux (a bit per key set); the keys
 * that run before a route is chosen or outside any one request refuse. */
static bool load_route_timeout(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct route_aux *aux = target;
    (void)k;
    if (f->what) {
        cfg_err(c, k, path, "cannot be set per route (%s): set it in the top-level timeouts",
                f->what);
        return false;
    }
    size_t i = 0;
    while (!streq(CFG_TIMEOUT_KEYS[i], f->key))
        i++;
    if (!cfg_get_duration(c, v, path, streq(f->key, "total"), cfg_timeout_field(&aux->timeouts, i)))
        return false;
    aux->timeouts_set |= 1u << i;
    return true;
}
/* clang-format off */
#define RTIMEOUT(k, why)                                                                           \
    {.key = k, .kind = CFG_CUSTOM, .load = load_route_timeout, .what = why,                       \
     .doc = (why) ? "refused: set it in the top-level timeouts" : "the route's own value"}
/* clang-format on */
static const struct cfg_field route_timeout_fields[] = {
    RTIMEOUT("client_header", "the request head is read before a route is chosen"),
    RTIMEOUT("client_body", NULL),
    RTIMEOUT("client_send", NULL),
    RTIMEOUT("client_idle",
             "a client connection is idle between requests, before any route is chosen"),
    RTIMEOUT("upstream_connect", NULL),
    RTIMEOUT("upstream_header", NULL),
    RTIMEOUT("upstream_read", NULL),
    RTIMEOUT("upstream_send", NULL),
    RTIMEOUT("upstream_idle",
             "pooled upstream connections are shared by every route to the upstream"),
    RTIMEOUT("total", NULL),
    RTIMEOUT("tunnel_idle", "WebSocket tunnels take the top-level value"),
    END};
static const struct cfg_schema route_timeouts_schema = {
    "routes[].timeouts", "a mapping of timeouts (like upstream_header: 5s)", route_timeout_fields};

/* limits.max_header_bytes: 1k up to what a read buffer can hold. */
static bool load_header_bytes(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_limits *l = target;
    uint64_t b;
    (void)f, (void)k;
    if (!cfg_get_size(c, v, path, 1024, UINT64_MAX, &b))
        return false;
    if (b > CONFIG_MAX_HEADER_BYTES_LIMIT) {
        cfg_err(c, v, path,
                "must be at most 128k (%u bytes), got %s (%llu bytes): a request head must fit "
                "in the 128 KiB buffer a client connection reads into",
                CONFIG_MAX_HEADER_BYTES_LIMIT, v->str, (unsigned long long)b);
        return false;
    }
    l->max_header_bytes = b;
    return true;
}

static const struct cfg_field limit_fields[] = {
    {"max_connections", CFG_U32, AT(struct config_limits, max_connections), 1, 10000000,
     "a positive integer", .def = 100000, .doc = "client connections per worker (100000)"},
    {"max_header_bytes", CFG_CUSTOM, .load = load_header_bytes,
     .doc = "a request head, at most 128k (32k)"},
    {"max_headers", CFG_U32, AT(struct config_limits, max_headers), 1, 10000,
     "an integer from 1 to 10000", .def = 100, .doc = "header fields in a request head (100)"},
    {"max_body_bytes", CFG_SIZE, AT(struct config_limits, max_body_bytes), 0, UINT64_MAX,
     .def = 10u << 20, .doc = "a request body, 0 = unlimited (10m)"},
    END};
static const struct cfg_schema limits_schema = {"limits", "a mapping of limits", limit_fields};

/* listen: [- address, backlog, proxy_protocol, defer_accept] */
static bool load_listen_addr(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)f, (void)k;
    return cfg_get_addr(c, v, path, false, &((struct config_listener *)target)->addr);
}

static const struct cfg_field listener_fields[] = {
    {"address", CFG_CUSTOM, .load = load_listen_addr,
     .required = "required: the address to listen on (like 0.0.0.0:8080)",
     .doc = "ip:port, [ipv6]:port or unix:/path"},
    {"backlog", CFG_U32, AT(struct config_listener, backlog), 1, 1u << 20, "a positive integer",
     .def = 4096, .doc = "the listen(2) backlog (4096)"},
    {"proxy_protocol", CFG_BOOL, AT(struct config_listener, proxy_protocol),
     .doc = "connections start with a PROXY protocol v1/v2 header (false)"},
    {"defer_accept", CFG_BOOL, AT(struct config_listener, defer_accept), .def = true,
     .doc = "accept a TCP connection only once it has data (true)"},
    {"tls", CFG_CUSTOM, .load = cfg_load_listen_tls,
     .doc = "terminate TLS: certificates, protocols, client_ca (none: cleartext)"},
    END};
static const struct cfg_schema listener_schema = {"listen[]", NULL, listener_fields};

static bool load_listen(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, n, path, "a list of listeners (- address: 0.0.0.0:8080)"))
        return false;
    size_t count = cfg_seq_items(n);
    cfg->listeners = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->listeners));
    const struct ynode **addr_nodes = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(void *));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *item = n->v[i];
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        struct config_listener *l = &cfg->listeners[cfg->nlisteners];
        cfg_defaults(&listener_schema, l);
        if (item->kind != Y_MAP) {
            char d[QLEN];
            cfg_err(c, item, ipath, "expected a listener (a mapping with address:), got %s",
                    cfg_describe(d, sizeof(d), item));
            continue;
        }
        if (!cfg_walk(c, item, ipath, &listener_schema, l))
            continue;
        const struct ynode *addr = cfg_map_get(item, "address");
        size_t j = 0;
        while (j < cfg->nlisteners &&
               !(cfg->listeners[j].addr.salen == l->addr.salen &&
                 memcmp(&cfg->listeners[j].addr.sa, &l->addr.sa, l->addr.salen) == 0))
            j++;
        if (j == cfg->nlisteners) {
            addr_nodes[cfg->nlisteners++] = addr;
            continue;
        }
        cfg_err(c, addr, CFG_KEY(ipath, "address"), "%s is already listened on (line %u)",
                l->addr.text, addr_nodes[j]->line);
    }
    return true;
}

static bool load_trusted(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, n, path, "a list of addresses or CIDRs (like [10.0.0.0/8, ::1])"))
        return false;
    size_t count = cfg_seq_items(n);
    cfg->trusted_proxies = cfg_alloc(c->mem, (count ? count : 1) * sizeof(struct config_cidr));
    for (size_t i = 0; i < count; i++) {
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        char *s;
        if (!cfg_get_string(c, n->v[i], ipath, &s))
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
    return true;
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

/* upstreams.NAME.servers: [- address, weight] */
static bool load_server_addr(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)f, (void)k;
    return cfg_get_addr(c, v, path, true, &((struct config_server *)target)->addr);
}

static const struct cfg_field server_fields[] = {
    {"address", CFG_CUSTOM, .load = load_server_addr,
     .required = "required: the server's host:port", .doc = "host:port, [ipv6]:port or unix:/path"},
    {"weight", CFG_U32, AT(struct config_server, weight), 1, 1000, "a positive integer", .def = 1,
     .doc = "share of requests relative to the other servers (1)"},
    END};
static const struct cfg_schema server_schema = {"upstreams.NAME.servers[]", NULL, server_fields};

static bool load_servers(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (n->kind != Y_SEQ || n->n == 0) {
        char d[QLEN];
        cfg_err(c, n, path, "expected a list of servers (- address: host:port), got %s",
                n->kind == Y_SEQ ? "an empty list" : cfg_describe(d, sizeof(d), n));
        return false;
    }
    u->servers = cfg_alloc(c->mem, n->n * sizeof(*u->servers));
    const struct ynode **addr_nodes = cfg_alloc(&c->tree, n->n * sizeof(void *));
    for (size_t i = 0; i < n->n; i++) {
        const struct ynode *item = n->v[i];
        const struct cfg_path *ipath = CFG_INDEX(path, i);
        if (item->kind != Y_MAP) {
            char d[QLEN];
            cfg_err(c, item, ipath, "expected a server (a mapping with address:), got %s",
                    cfg_describe(d, sizeof(d), item));
            continue;
        }
        struct config_server *s = &u->servers[u->nservers];
        cfg_defaults(&server_schema, s);
        if (!cfg_walk(c, item, ipath, &server_schema, s))
            continue;
        const struct ynode *addr = cfg_map_get(item, "address");
        size_t j = 0;
        while (j < u->nservers && !streq(u->servers[j].addr.text, s->addr.text))
            j++;
        if (j < u->nservers) {
            cfg_err(c, addr, CFG_KEY(ipath, "address"),
                    "%s is already a server of this upstream (line %u)", s->addr.text,
                    addr_nodes[j]->line);
            continue;
        }
        s->index = (uint32_t)u->nservers;
        s->line = addr->line;
        s->col = addr->col;
        addr_nodes[u->nservers++] = addr;
    }
    return true;
}

/* passive: { failures, eject_for } */
static const struct cfg_field passive_fields[] = {
    {"failures", CFG_U32, AT(struct config_upstream, passive_failures), 1, 1000,
     "an integer from 1 to 1000", .def = 5, .doc = "consecutive failures that eject a server (5)"},
    {"eject_for", CFG_DURATION, AT(struct config_upstream, passive_eject_ms), 1, .def = 30000,
     .doc = "how long an ejected server gets no requests (30s)"},
    {"max_eject_for", CFG_DURATION, AT(struct config_upstream, passive_max_eject_ms), 1,
     .def = 300000, .doc = "repeated ejections double eject_for up to this (300s)"},
    END};
static const struct cfg_schema passive_schema = {"upstreams.NAME.passive",
                                                 "a mapping (failures, eject_for)", passive_fields};

static bool load_passive(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    (void)f, (void)k;
    cfg_defaults(&passive_schema, u); /* with the section: on */
    return cfg_walk(c, n, path, &passive_schema, u);
}

/* retries.on: [connect_error, reset, timeout, 502, 503, 504] */
static bool load_retry_on(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const conds[] = {"connect_error", "reset", "timeout", "502",
                                        "503",           "504",   NULL};
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, v, path, "a list like [connect_error, reset, 502, 503, 504]"))
        return false;
    u->retry_on = 0;
    bool ok = true;
    for (size_t j = 0; j < cfg_seq_items(v); j++) {
        const struct cfg_path *ipath = CFG_INDEX(path, j);
        char q[QLEN];
        const struct ynode *item = v->v[j];
        if (!cfg_want_scalar(c, item, ipath, "a retry condition")) {
            ok = false;
            continue;
        }
        size_t b = 0;
        while (conds[b] && !streq(item->str, conds[b]))
            b++;
        if (conds[b]) {
            u->retry_on |= 1u << b;
            continue;
        }
        const char *near = cfg_nearest(item->str, conds, 6);
        cfg_err(c, item, ipath,
                "unknown retry condition %s (%s%s%s connect_error, reset, timeout, 502, 503 or "
                "504)",
                cfg_quote(q, sizeof(q), item->str, item->len),
                near ? "did you mean \"" : "expected", near ? near : "",
                near ? "\"? expected" : "");
        ok = false;
    }
    return ok;
}

static const struct cfg_field retry_fields[] = {
    {"attempts", CFG_U32, AT(struct config_upstream, retry_attempts), 0, 10,
     "an integer from 0 to 10", .def = 1, .doc = "tries after the first one (1)"},
    {"on", CFG_CUSTOM, .load = load_retry_on,
     .doc = "the failures that are retried ([connect_error])"},
    {"replay_bytes", CFG_SIZE, AT(struct config_upstream, replay_bytes), 0, 64u << 20,
     .def = 64u << 10, .doc = "the largest request body kept to resend on a retry (64k)"},
    {"budget", CFG_CUSTOM, .load = cfg_load_retry_budget,
     .doc = "retries per upstream at most this share of its requests over 10s (20%)"},
    {"budget_min", CFG_U32, AT(struct config_upstream, retry_budget_min), 0, 100000,
     "an integer (retries per second)", .def = 3,
     .doc = "retries per second always allowed, whatever the budget (3)"},
    {"backoff", CFG_DURATION, AT(struct config_upstream, retry_backoff_ms), 0, .def = 0,
     .doc = "base of the jittered exponential wait before a retry (0s = none)"},
    END};
static const struct cfg_schema retry_schema = {"upstreams.NAME.retries", "a mapping (attempts, on)",
                                               retry_fields};

static bool load_retries(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    (void)f, (void)k;
    if (!cfg_want_map(c, n, path, retry_schema.what))
        return false;
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR | CONFIG_RETRY_RESET;
    return cfg_walk(c, n, path, &retry_schema, u);
}

static bool load_host_header(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_upstream *u = target;
    char *s, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    if (streq(s, "preserve")) {
        u->host_header = CONFIG_HOST_PRESERVE;
    } else if (streq(s, "upstream")) {
        u->host_header = CONFIG_HOST_UPSTREAM;
    } else if (valid_host_header(s)) {
        u->host_header = CONFIG_HOST_LITERAL;
        u->host_literal = s;
    } else {
        cfg_err(c, v, path, "expected preserve, upstream or a host name, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    return true;
}

static const struct cfg_field upstream_fields[] = {
    {"servers", CFG_CUSTOM, .load = load_servers,
     .required = "required: at least one server (- address: host:port)",
     .doc = "the servers: a list of {address, weight}"},
    {"balance", CFG_CUSTOM, .load = cfg_load_balance,
     .doc = "how a server is picked: round_robin, least_conn, random_two, hash (round_robin)"},
    {"hash_key", CFG_CUSTOM, .load = cfg_load_hash_key,
     .doc = "balance: hash's key: client_ip, header:NAME or cookie:NAME"},
    {"keepalive", CFG_U32, AT(struct config_upstream, keepalive), 0, 100000,
     "an integer from 0 to 100000", .def = 64,
     .doc = "idle pooled connections per server per worker (64)"},
    {"max_connections", CFG_U32, AT(struct config_upstream, max_connections), 0, 10000000,
     "an integer (0 = unlimited)", .doc = "connections per server per worker (0 = unlimited)"},
    {"host_header", CFG_CUSTOM, .load = load_host_header,
     .doc = "the Host sent: preserve, upstream or a literal (preserve)"},
    {"resolve", CFG_CUSTOM, .load = cfg_load_resolve,
     .doc = "families asked for servers' DNS names: any, ipv4 or ipv6 (any)"},
    {"retries", CFG_CUSTOM, .load = load_retries, .doc = "retrying a failed request"},
    {"passive", CFG_CUSTOM, .load = load_passive, .doc = "ejecting a failing server"},
    {"tls", CFG_CUSTOM, .load = cfg_load_upstream_tls,
     .doc = "TLS to the servers: verify, ca, sni, cert, key, protocols (none: cleartext)"},
    {"health_check", CFG_CUSTOM, .load = cfg_load_health, .doc = "active health checks"},
    END};
static const struct cfg_schema upstream_schema = {"upstreams.NAME", NULL, upstream_fields};

static void load_upstream(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                          struct config_upstream *u)
{
    cfg_defaults(&upstream_schema, u);
    cfg_defaults(&retry_schema, u);
    u->retry_on = CONFIG_RETRY_CONNECT_ERROR;
    u->retry_budget_pct = 20;
    u->host_header = CONFIG_HOST_PRESERVE;
    u->balance = CONFIG_BALANCE_ROUND_ROBIN;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        cfg_err(c, n, path, "expected an upstream (a mapping with servers:), got %s",
                cfg_describe(d, sizeof(d), n));
        return;
    }
    cfg_walk(c, n, path, &upstream_schema, u);
    const struct ynode *bal = cfg_map_get(n, "balance"), *key = cfg_map_get(n, "hash_key");
    if (u->balance == CONFIG_BALANCE_HASH && !key && bal)
        cfg_err(c, bal, CFG_KEY(path, "balance"),
                "balance: hash needs hash_key: (client_ip, header:NAME or cookie:NAME)");
    else if (u->balance != CONFIG_BALANCE_HASH && u->hash_source != CONFIG_HASH_NONE && key)
        cfg_warn(c, key, CFG_KEY(path, "hash_key"), "hash_key is used only with balance: hash");
}

static bool load_upstreams(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (!cfg_want_map(c, n, path, "a mapping of upstreams by name (api: {servers: [...]})"))
        return false;
    size_t count = cfg_map_pairs(n);
    cfg->upstreams = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->upstreams));
    c->uaux = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(*c->uaux));
    for (size_t i = 0; i < count; i++) {
        const struct ynode *name = n->v[2 * i], *v = n->v[2 * i + 1];
        if (name->kind != Y_SCALAR || name->repeated)
            continue;
        const struct cfg_path *sub = CFG_KEY(path, name->str);
        char q[96];
        if (!cfg_valid_name(name)) {
            cfg_err(c, name, sub,
                    "an upstream name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                    cfg_quote(q, sizeof(q), name->str, name->len));
            continue;
        }
        struct config_upstream *u = &cfg->upstreams[cfg->nupstreams];
        u->name = cfg_strndup(c->mem, name->str, name->len);
        u->index = (uint32_t)cfg->nupstreams;
        c->uaux[cfg->nupstreams].key = name;
        cfg->nupstreams++;
        load_upstream(c, v, sub, u);
    }
    return true;
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

/* A route path value (match.path, path_prefix, strip_prefix, add_prefix)
 * into *out. */
static bool get_route_path(struct ctx *c, const struct ynode *v, const struct cfg_path *path,
                           char **out)
{
    char *p, q[96];
    if (!cfg_get_string(c, v, path, &p))
        return false;
    const char *why = check_route_path(p);
    if (why) {
        cfg_err(c, v, path, "%s, got %s", why, cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    *out = p;
    return true;
}

static const char *const METHOD_NAMES[] = {"GET",     "HEAD",    "POST",  "PUT",   "DELETE",
                                           "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL};

static bool load_match_host(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_match *m = &((struct config_route *)target)->match;
    char *h, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &h))
        return false;
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
        cfg_err(c, v, path, "leave host out to match any host");
    } else if (strchr(name, ':') && name[0] != '[') {
        cfg_err(c, v, path, "the host is matched without a port, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
    } else if (name[0] != '[' && !cfg_valid_hostname(name)) {
        cfg_err(c, v, path, "expected a host name like api.example.com or *.example.com, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
    } else {
        m->host = m->host_wildcard ? h + 1 : h;
        return true;
    }
    return false;
}

static bool load_match_path(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_match *m = &((struct config_route *)target)->match;
    (void)k;
    return get_route_path(c, v, path, streq(f->key, "path") ? &m->path : &m->path_prefix);
}

/* One item of match.methods into m; false after reporting it. */
static bool match_method(struct ctx *c, const struct ynode *item, const struct cfg_path *ipath,
                         struct config_match *m)
{
    char *meth, q[96];
    if (!cfg_get_string(c, item, ipath, &meth))
        return false;
    if (!http1_token_ok(meth, strlen(meth))) {
        cfg_err(c, item, ipath, "not a method name: %s",
                cfg_quote(q, sizeof(q), item->str, item->len));
        return false;
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
        cfg_err(c, item, ipath, "methods are case-sensitive: %s (did you mean \"%s\"?)",
                cfg_quote(q, sizeof(q), meth, strlen(meth)), up);
        return false;
    }
    for (size_t b = 0; b < m->nmethods; b++) {
        if (streq(m->methods[b], meth)) {
            cfg_err(c, item, ipath, "%s is listed twice",
                    cfg_quote(q, sizeof(q), meth, strlen(meth)));
            return false;
        }
    }
    m->methods[m->nmethods++] = meth;
    m->method_mask |= bit;
    return true;
}

static bool load_match_methods(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_match *m = &((struct config_route *)target)->match;
    (void)f, (void)k;
    if (v->kind != Y_SEQ || v->n == 0) {
        char d[QLEN];
        cfg_err(c, v, path, "expected a list of methods (like [GET, POST]), got %s",
                v->kind == Y_SEQ ? "an empty list" : cfg_describe(d, sizeof(d), v));
        return false;
    }
    m->methods = cfg_alloc(c->mem, v->n * sizeof(char *));
    bool ok = true;
    for (size_t j = 0; j < v->n; j++) {
        ok &= match_method(c, v->v[j], CFG_INDEX(path, j), m);
    }
    return ok;
}

static const struct cfg_field match_fields[] = {
    {"host", CFG_CUSTOM, .load = load_match_host,
     .doc = "the request's host, or *.example.com for its subdomains"},
    {"path", CFG_CUSTOM, .load = load_match_path, .doc = "the exact path"},
    {"path_prefix", CFG_CUSTOM, .load = load_match_path,
     .doc = "a path prefix, matched at a segment boundary"},
    {"methods", CFG_CUSTOM, .load = load_match_methods, .doc = "a list of methods ([GET, POST])"},
    {"path_regex", CFG_CUSTOM, .load = cfg_load_path_regex,
     .doc = "a PCRE2 pattern searched in the normalised path"},
    {"headers", CFG_CUSTOM, .load = cfg_load_match_fields,
     .doc = "header conditions: NAME: value, or {prefix|regex|present|absent}"},
    {"query", CFG_CUSTOM, .load = cfg_load_match_fields,
     .doc = "query parameter conditions, in the forms of headers"},
    END};
static const struct cfg_schema match_schema = {
    "routes[].match",
    "a mapping of conditions (host, path, path_prefix, path_regex, methods, headers, query)",
    match_fields};

static bool load_match(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *n, const struct cfg_path *path, void *target)
{
    (void)f, (void)k;
    if (!cfg_walk(c, n, path, &match_schema, target) && n->kind != Y_MAP)
        return false;
    const struct ynode *path_node = cfg_map_get(n, "path"),
                       *prefix_node = cfg_map_get(n, "path_prefix");
    struct config_match *m = &((struct config_route *)target)->match;
    if (!path_node || !prefix_node || !m->path || !m->path_prefix)
        return true;
    const struct ynode *later_node =
        path_node->line > prefix_node->line ||
                (path_node->line == prefix_node->line && path_node->col > prefix_node->col)
            ? path_node
            : prefix_node;
    cfg_err(c, later_node, CFG_KEY(path, later_node == path_node ? "path" : "path_prefix"),
            "path and path_prefix exclude each other: keep one");
    return false;
}

/* respond: { status, body, content_type } */
static bool load_respond_status(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                                const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_respond *resp = target;
    uint32_t st;
    (void)f, (void)k;
    if (!cfg_get_u32(c, v, path, 200, 599, "an HTTP status from 200 to 599", &st))
        return false;
    resp->status = (uint16_t)st;
    return true;
}

static bool load_respond_body(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_respond *resp = target;
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "a string"))
        return false;
    resp->body = cfg_strndup(c->mem, v->str, v->len);
    resp->body_len = v->len;
    return true;
}

static bool load_respond_type(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_respond *resp = target;
    char *ct;
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &ct))
        return false;
    bool ok = *ct != '\0';
    for (const char *p = ct; *p; p++)
        ok &= (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok) {
        char q[QLEN];
        cfg_err(c, v, path, "not a valid content type: %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    resp->content_type = ct;
    return true;
}

static const struct cfg_field respond_fields[] = {
    {"status", CFG_CUSTOM, .load = load_respond_status, .doc = "200 to 599 (200)"},
    {"body", CFG_CUSTOM, .load = load_respond_body, .doc = "the body (empty)"},
    {"content_type", CFG_CUSTOM, .load = load_respond_type, .doc = "the Content-Type (none)"},
    END};
static const struct cfg_schema respond_schema = {"routes[].respond", NULL, respond_fields};

static bool load_respond(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)f, (void)k;
    struct config_respond *resp = cfg_alloc(c->mem, sizeof(*resp));
    resp->status = 200;
    resp->body = cfg_strdup(c->mem, "");
    r->respond = resp;
    if (n->kind != Y_MAP) {
        char d[QLEN];
        cfg_err(c, n, path, "expected a mapping (status, body, content_type), got %s",
                cfg_describe(d, sizeof(d), n));
        return false;
    }
    return cfg_walk(c, n, path, &respond_schema, resp);
}

/* Why a field name cannot be rewritten by a route, or NULL. */
static const char *unrewritable(const char *name, bool request)
{
    static const char *const framing[] = {
        "connection", "content-length", "transfer-encoding", "upgrade", "te",
        "trailer",    "keep-alive",     "proxy-connection",  NULL};
    for (size_t i = 0; framing[i]; i++)
        if (strcasecmp(name, framing[i]) == 0)
            return "is not rewritable: Ferry frames messages and manages connections itself";
    if (request && strcasecmp(name, "host") == 0)
        return "is not rewritable here: the upstream's host_header sets the Host sent upstream";
    return NULL;
}

/* A field name from node k (a key or a list item) into *out; false after
 * an error. */
static bool get_field_name(struct ctx *c, const struct ynode *k, const struct cfg_path *path,
                           bool request, struct http1_header *out)
{
    char q[QLEN];
    if (!cfg_want_scalar(c, k, path, "a header name"))
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

/* The target of a request_headers or response_headers walk. */
struct rules_target {
    struct config_header_rules *rules;
    bool request;
};

/* set: / add: — a mapping of header name to value. */
static bool load_header_map(struct ctx *c, const struct cfg_field *f, const struct ynode *key,
                            const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct rules_target *t = target;
    bool set = streq(f->key, "set");
    struct http1_header **out = set ? &t->rules->set : &t->rules->add;
    size_t *count = set ? &t->rules->nset : &t->rules->nadd;
    (void)key;
    if (!cfg_want_map(c, n, path, "a mapping of header names to values (X-Name: value)"))
        return false;
    *out = cfg_alloc(c->mem, (cfg_map_pairs(n) ? cfg_map_pairs(n) : 1) * sizeof(**out));
    for (size_t i = 0; i < cfg_map_pairs(n); i++) {
        const struct ynode *k = n->v[2 * i], *v = n->v[2 * i + 1];
        const struct cfg_path *sub = CFG_KEY(path, k->kind == Y_SCALAR ? k->str : "?");
        char q[QLEN];
        struct http1_header *h = &(*out)[*count];
        if (!get_field_name(c, k, sub, t->request, h))
            continue;
        if (!cfg_want_scalar(c, v, sub, "a header value"))
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
    return true;
}

static bool load_header_remove(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_header_rules *rules = ((struct rules_target *)target)->rules;
    (void)f, (void)k;
    if (!cfg_want_seq(c, v, path, "a list of header names ([X-Debug, Server])"))
        return false;
    size_t count = cfg_seq_items(v);
    rules->remove = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*rules->remove));
    for (size_t j = 0; j < count; j++) {
        if (get_field_name(c, v->v[j], CFG_INDEX(path, j), ((struct rules_target *)target)->request,
                           &rules->remove[rules->nremove]))
            rules->nremove++;
    }
    return true;
}

static const struct cfg_field header_rule_fields[] = {
    {"set", CFG_CUSTOM, .load = load_header_map, .doc = "fields to set (replacing any sent)"},
    {"add", CFG_CUSTOM, .load = load_header_map, .doc = "fields to add (keeping any sent)"},
    {"remove", CFG_CUSTOM, .load = load_header_remove, .doc = "names of fields to remove"},
    END};
static const struct cfg_schema header_rules_schema = {
    "routes[].{request,response}_headers", "a mapping (set, add, remove)", header_rule_fields};

static void load_header_rules(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                              bool request, struct config_header_rules *rules)
{
    struct rules_target t = {rules, request};
    if (!cfg_walk(c, n, path, &header_rules_schema, &t) && n->kind != Y_MAP)
        return;
    /* A name set twice (YAML keys are unique per mapping, so only case
     * differs) is an error; one both set and removed is set. */
    for (size_t i = 0; i < rules->nset; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(rules->set[i].name, rules->set[j].name) == 0)
                cfg_err(c, n, path,
                        "%s and %s are the same header (names are case-insensitive): "
                        "set it once, or use add for a second field",
                        rules->set[j].name, rules->set[i].name);
        for (size_t j = 0; j < rules->nremove; j++)
            if (strcasecmp(rules->set[i].name, rules->remove[j].name) == 0)
                cfg_warn(c, n, path, "%s is both set and removed: it is set", rules->set[i].name);
    }
}

/* routes[]: the fields below take the route; its aux is c->raux[index]. */
static struct route_aux *aux_of(struct ctx *c, const void *route)
{
    return &c->raux[((const struct config_route *)route)->index];
}

static bool load_route_name(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    char q[96];
    (void)f, (void)k;
    aux_of(c, r)->quiet_name = true;
    if (!cfg_want_scalar(c, v, path, "a name"))
        return false;
    if (!cfg_valid_name(v)) {
        cfg_err(c, v, path, "a route name is 1 to 64 letters, digits, '-', '_' or '.', got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    r->name = cfg_strndup(c->mem, v->str, v->len);
    return true;
}

static bool load_route_upstream(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                                const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct route_aux *aux = aux_of(c, target);
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "the name of an upstream"))
        return false;
    aux->upstream_node = v;
    aux->upstream_name = v->str;
    return true;
}

static bool load_route_prefix(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)k;
    return get_route_path(c, v, path,
                          streq(f->key, "strip_prefix") ? &r->strip_prefix : &r->add_prefix);
}

static bool load_route_body(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)f, (void)k;
    if (!cfg_get_size(c, v, path, 0, UINT64_MAX, &r->max_body_bytes))
        return false;
    aux_of(c, r)->has_max_body = true;
    return true;
}

static bool load_route_timeouts(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                                const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)f, (void)k;
    return cfg_walk(c, v, path, &route_timeouts_schema, aux_of(c, target));
}

static bool load_route_headers(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    bool request = streq(f->key, "request_headers");
    (void)k;
    load_header_rules(c, v, path, request, request ? &r->request_headers : &r->response_headers);
    return true;
}

static const struct cfg_field route_fields[] = {
    {"name", CFG_CUSTOM, .load = load_route_name, .doc = "the route's name (route-N)"},
    {"match", CFG_CUSTOM, .load = load_match, .doc = "the conditions (none: every request)"},
    {"upstream", CFG_CUSTOM, .load = load_route_upstream, .doc = "the upstream to proxy to"},
    {"strip_prefix", CFG_CUSTOM, .load = load_route_prefix,
     .doc = "a prefix taken off the path sent upstream"},
    {"add_prefix", CFG_CUSTOM, .load = load_route_prefix,
     .doc = "a prefix put before the path sent upstream"},
    {"respond", CFG_CUSTOM, .load = load_respond, .doc = "a fixed answer instead of an upstream"},
    {"max_body_bytes", CFG_CUSTOM, .load = load_route_body,
     .doc = "the route's request body limit (limits.max_body_bytes)"},
    {"timeouts", CFG_CUSTOM, .load = load_route_timeouts,
     .doc = "the route's timeouts over the top-level ones"},
    {"request_headers", CFG_CUSTOM, .load = load_route_headers,
     .doc = "fields set, added or removed on the way up"},
    {"response_headers", CFG_CUSTOM, .load = load_route_headers,
     .doc = "fields set, added or removed on the way back"},
    {"underscores_in_headers", CFG_BOOL, AT(struct config_route, underscores_in_headers),
     .doc = "pass client fields whose names hold '_' (false: dropped)"},
    {"reject_path_params", CFG_BOOL, AT(struct config_route, reject_path_params),
     .doc = "answer 400 to a path with ';' (false)"},
    {"client_cert", CFG_CUSTOM, .load = cfg_load_client_cert,
     .doc = "a TLS client certificate: required, and headers for its subject and fingerprint"},
    {"rewrite", CFG_CUSTOM, .load = cfg_load_rewrite,
     .doc = "the upstream path from path_regex's captures (/api/$1)"},
    {"split", CFG_CUSTOM, .load = cfg_load_split,
     .doc = "weighted upstreams instead of upstream ([{upstream, weight}])"},
    {"split_key", CFG_CUSTOM, .load = cfg_load_split_key,
     .doc = "sticky split on client_ip, header:NAME or cookie:NAME (random)"},
    {"auth", CFG_CUSTOM, .load = cfg_load_route_auth,
     .doc = "authentication: api_keys or jwt (none)"},
    {"rate_limit", CFG_CUSTOM, .load = cfg_load_rate_limit,
     .doc = "a token bucket per key: requests per per, plus burst (none)"},
    {"cors", CFG_CUSTOM, .load = cfg_load_cors,
     .doc = "cross-origin requests from browsers: preflights answered here (none)"},
    LATER("request_buffering"),
    LATER("response_buffering"),
    END};
static const struct cfg_schema route_schema = {"routes[]", NULL, route_fields};

/* The key node of key in mapping n, or NULL. */
static const struct ynode *map_key(const struct ynode *n, const char *key)
{
    for (size_t i = 0; i < cfg_map_pairs(n); i++)
        if (n->v[2 * i]->kind == Y_SCALAR && !n->v[2 * i]->repeated && streq(n->v[2 * i]->str, key))
            return n->v[2 * i];
    return NULL;
}

/* What a route's keys say about each other. */
static void check_route(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                        struct config_route *r)
{
    struct route_aux *aux = aux_of(c, r);
    const struct ynode *respond_node = map_key(n, "respond"),
                       *request_rules_node = map_key(n, "request_headers"),
                       *strip_node = r->strip_prefix ? cfg_map_get(n, "strip_prefix") : NULL;
    if (respond_node && request_rules_node) {
        cfg_warn(c, request_rules_node, CFG_KEY(path, "request_headers"),
                 "has no effect on a respond route");
    }
    if (respond_node && aux->upstream_node) {
        cfg_err(c, respond_node, CFG_KEY(path, "respond"),
                "a route has either upstream or respond, not both");
    } else if (!respond_node && !aux->upstream_node && !map_key(n, "split")) {
        cfg_err(c, n, path,
                "a route needs upstream: (where to proxy) or respond: (a fixed answer)");
    }
    if (respond_node && (strip_node || r->add_prefix)) {
        cfg_warn(c, respond_node, CFG_KEY(path, strip_node ? "strip_prefix" : "add_prefix"),
                 "has no effect on a respond route");
    }
    if (r->rate_limit && r->rate_limit->key == CONFIG_RATE_IDENTITY && !map_key(n, "auth")) {
        const struct ynode *rn = cfg_map_get(n, "rate_limit");
        cfg_err(c, cfg_map_get(rn, "key"), CFG_KEY(CFG_KEY(path, "rate_limit"), "key"),
                "identity needs auth: on the route (who is asking)");
    }
    if (strip_node && r->match.path_prefix) {
        const char *sp = r->strip_prefix, *pp = r->match.path_prefix;
        if (strncmp(pp, sp, strlen(sp)) != 0) {
            cfg_warn(c, strip_node, CFG_KEY(path, "strip_prefix"),
                     "%s is not a prefix of path_prefix %s: nothing is stripped", sp, pp);
        }
    }
}

static void load_route(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                       struct config_route *r)
{
    struct route_aux *aux = aux_of(c, r);
    aux->node = n;
    cfg_defaults(&route_schema, r);
    if (n->kind != Y_MAP) {
        aux->quiet_name = true;
        char d[QLEN];
        cfg_err(c, n, path, "expected a route (a mapping with match: and upstream:), got %s",
                cfg_describe(d, sizeof(d), n));
        return;
    }
    cfg_walk(c, n, path, &route_schema, r);
    check_route(c, n, path, r);
    cfg_route_check(c, n, path, r);
}

static bool load_routes(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (!cfg_want_seq(c, n, path, "a list of routes (- match: ... upstream: ...)"))
        return false;
    size_t count = cfg_seq_items(n);
    if (count > CONFIG_MAX_ROUTES) {
        cfg_err(c, n, path, "more than %d routes", CONFIG_MAX_ROUTES);
        return false;
    }
    cfg->routes = cfg_alloc(c->mem, (count ? count : 1) * sizeof(*cfg->routes));
    c->raux = cfg_alloc(&c->tree, (count ? count : 1) * sizeof(*c->raux));
    for (size_t i = 0; i < count; i++) {
        struct config_route *r = &cfg->routes[i];
        r->index = (uint32_t)i;
        load_route(c, n->v[i], CFG_INDEX(path, i), r);
    }
    cfg->nroutes = count;
    return true;
}

/* access_log: { path, format } */
static bool load_log_path(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_access_log *al = target;
    char *s, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    if (!streq(s, "stderr") && s[0] != '/') {
        cfg_err(c, v, path, "expected stderr or an absolute path, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    al->path = s;
    return true;
}

/* A scalar that is one of names (its index in *out), or an error saying
 * "expected <list>, got X (did you mean ...)". */
static bool get_choice(struct ctx *c, const struct ynode *v, const struct cfg_path *path,
                       const char *const *names, const char *list, unsigned *out)
{
    char q[96];
    if (!cfg_want_scalar(c, v, path, list))
        return false;
    for (unsigned i = 0; names[i]; i++) {
        if (streq(v->str, names[i])) {
            *out = i;
            return true;
        }
    }
    const char *near = cfg_nearest(v->str, names, cfg_count_list(names));
    cfg_err(c, v, path, "expected %s, got %s%s%s%s", list, cfg_quote(q, sizeof(q), v->str, v->len),
            near ? " (did you mean \"" : "", near ? near : "", near ? "\"?)" : "");
    return false;
}

static bool load_log_format(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const formats[] = {"json", "combined", NULL};
    struct config_access_log *al = target;
    char *s;
    unsigned i;
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s) || !get_choice(c, v, path, formats, "json or combined", &i))
        return false;
    al->format = i == 0 ? CONFIG_LOG_JSON : CONFIG_LOG_COMBINED;
    return true;
}

static const struct cfg_field access_log_fields[] = {
    {"path", CFG_CUSTOM, .load = load_log_path, .doc = "stderr or an absolute file path"},
    {"format", CFG_CUSTOM, .load = load_log_format, .doc = "json or combined (json)"},
    END};
static const struct cfg_schema access_log_schema = {"access_log", "a mapping (path, format)",
                                                    access_log_fields};

static bool load_access_log(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *n, const struct cfg_path *path, void *target)
{
    struct config_access_log *al = &((struct config *)target)->access_log;
    (void)f, (void)k;
    if (!cfg_want_map(c, n, path, access_log_schema.what))
        return false;
    al->path = cfg_strdup(c->mem, "stderr");
    return cfg_walk(c, n, path, &access_log_schema, al);
}

static bool load_log_level(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    unsigned l;
    (void)f, (void)k;
    if (!get_choice(c, v, path, levels, "debug, info, warn or error", &l))
        return false;
    ((struct config *)target)->error_log_level = (enum log_level)l;
    return true;
}

static const struct cfg_field error_log_fields[] = {
    {"level", CFG_CUSTOM, .load = load_log_level, .doc = "debug, info, warn or error (info)"}, END};
static const struct cfg_schema error_log_schema = {"error_log", "a mapping (level)",
                                                   error_log_fields};

static bool load_admin_listen(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_addr *a = cfg_alloc(c->mem, sizeof(*a));
    (void)f, (void)k;
    if (!cfg_get_addr(c, v, path, false, a))
        return false;
    ((struct config *)target)->admin_listen = a;
    return true;
}

static const struct cfg_field admin_fields[] = {
    {"listen", CFG_CUSTOM, .load = load_admin_listen,
     .doc = "ip:port or unix:/path of /metrics and /healthz (none)"},
    END};
static const struct cfg_schema admin_schema = {"admin", "a mapping (listen)", admin_fields};

/* A nested mapping of the top level walked with its own schema. */
static bool load_section(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)k;
    if (streq(f->key, "timeouts"))
        return cfg_walk(c, v, path, &timeouts_schema, &cfg->timeouts);
    if (streq(f->key, "limits"))
        return cfg_walk(c, v, path, &limits_schema, &cfg->limits);
    if (streq(f->key, "error_log"))
        return cfg_walk(c, v, path, &error_log_schema, cfg);
    return cfg_walk(c, v, path, &admin_schema, cfg);
}

static bool load_workers(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (v->kind == Y_SCALAR && streq(v->str, "auto")) {
        cfg->workers = 0;
        return true;
    }
    return cfg_get_u32(c, v, path, 1, 1024, "auto or an integer from 1 to 1024", &cfg->workers);
}

static bool load_pid_file(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    char *s;
    (void)f, (void)k;
    if (cfg_is_null(v)) {
        cfg->pid_file = NULL;
        return true;
    }
    if (!cfg_get_string(c, v, path, &s))
        return false;
    if (s[0] != '/') {
        cfg_err(c, v, path, "expected an absolute path, got \"%s\"", s);
        return false;
    }
    cfg->pid_file = s;
    return true;
}

static bool load_user(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config *cfg = target;
    (void)f, (void)k;
    if (cfg_is_null(v)) {
        cfg->user = NULL;
        return true;
    }
    return cfg_get_string(c, v, path, &cfg->user);
}

static const struct cfg_field root_fields[] = {
    {"workers", CFG_CUSTOM, .load = load_workers, .doc = "auto (one per core) or 1 to 1024"},
    {"coroutine_stack", CFG_SIZE, AT(struct config, coroutine_stack), 16 << 10, 64 << 20,
     .def = 64u << 10, .doc = "the stack of a request coroutine (64k)"},
    {"max_requests", CFG_U32, AT(struct config, max_requests), 1, 1000000,
     "an integer from 1 to 1000000", .def = 20000, .doc = "requests in flight per worker (20000)"},
    {"shutdown_timeout", CFG_DURATION, AT(struct config, shutdown_timeout), 0, .def = 30000,
     .doc = "how long a graceful stop waits for requests (30s)"},
    {"pid_file", CFG_CUSTOM, .load = load_pid_file, .doc = "an absolute path (none)"},
    {"trusted_proxies", CFG_CUSTOM, .load = load_trusted,
     .doc = "addresses or CIDRs whose X-Forwarded-For and PROXY headers are believed"},
    {"resolver", CFG_CUSTOM, .load = cfg_load_resolver,
     .doc = "nameservers for servers' DNS names (those of /etc/resolv.conf)"},
    {"listen", CFG_CUSTOM, .load = load_listen,
     .required = "required: at least one listener (- address: 0.0.0.0:8080)",
     .doc = "the listeners: a list of {address, backlog, proxy_protocol, defer_accept}"},
    {"timeouts", CFG_CUSTOM, .load = load_section, .doc = "the timeouts"},
    {"limits", CFG_CUSTOM, .load = load_section, .doc = "the limits"},
    {"upstreams", CFG_CUSTOM, .load = load_upstreams, .doc = "upstreams by name"},
    {"routes", CFG_CUSTOM, .load = load_routes, .doc = "the routes, first match wins"},
    {"access_log", CFG_CUSTOM, .load = load_access_log, .doc = "the access log (stderr, json)"},
    {"error_log", CFG_CUSTOM, .load = load_section, .doc = "the error log"},
    {"admin", CFG_CUSTOM, .load = load_section, .doc = "the admin listener"},
    {"user", CFG_CUSTOM, .load = load_user,
     .doc = "started as root: the user to switch to after binding (none)"},
    END};
static const struct cfg_schema root_schema = {"", NULL, root_fields};

const struct cfg_schema *const cfg_schemas[] = {&root_schema,
                                                &timeouts_schema,
                                                &route_timeouts_schema,
                                                &limits_schema,
                                                &listener_schema,
                                                &server_schema,
                                                &passive_schema,
                                                &retry_schema,
                                                &upstream_schema,
                                                &match_schema,
                                                &cfg_cond_schema,
                                                &cfg_split_schema,
                                                &respond_schema,
                                                &header_rules_schema,
                                                &route_schema,
                                                &cfg_rate_limit_schema,
                                                &cfg_cors_schema,
                                                &access_log_schema,
                                                &error_log_schema,
                                                &admin_schema,
                                                &cfg_listen_tls_schema,
                                                &cfg_tls_cert_schema,
                                                &cfg_upstream_tls_schema,
                                                &cfg_client_cert_schema,
                                                &cfg_health_schema,
                                                NULL};

/* The defaults of the top level: the tables' (def), then the custom fields'. */
void cfg_set_defaults(struct config *cfg)
{
    cfg_defaults(&root_schema, cfg);
    cfg_defaults(&timeouts_schema, &cfg->timeouts);
    cfg_defaults(&limits_schema, &cfg->limits);
    cfg->workers = 0;                        /* auto */
    cfg->limits.max_header_bytes = 32 << 10; /* a custom field (its bound explains itself) */
    cfg->access_log.path = NULL;             /* off without the section */
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
            cfg_err(c, root, NULL, "expected a mapping of settings (listen:, routes:, ...), got %s",
                    cfg_describe(d, sizeof(d), root));
        } else {
            cfg_walk(c, root, NULL, &root_schema, c->cfg);
            /* listen: present (else reported by the walk) but empty */
            if (c->cfg->nlisteners == 0 && c->nerrors == 0)
                cfg_err(c, root, CFG_KEY(NULL, "listen"), "required: at least one listener");
            cfg_cross_check(c);
            if (c->nerrors == 0 && c->cfg->nroutes == 0)
                cfg_warn(c, root, CFG_KEY(NULL, "routes"), "no routes: every request gets 404");
        }
    }
    int rc = c->nerrors ? -1 : 0;
    c->cfg->nwarnings = c->nwarnings;
    cfg_print_diags(c, diag);
    cfg_arena_fini(&c->tree);
    if (rc != 0) {
        cfg_regexes_free(&box->cfg);
        cfg_free_policies(&box->cfg);
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
    int rc = load(&c, out, diag);
    if (rc == 0 && (*out)->nupstreams) {
        /* kept only when a server's address is a DNS name (resolve.h) */
        bool names = false;
        for (size_t u = 0; u < (*out)->nupstreams && !names; u++)
            for (size_t i = 0; i < (*out)->upstreams[u].nservers; i++)
                names |= !(*out)->upstreams[u].servers[i].addr.numeric;
        if (names && !((*out)->source_ = malloc(c.srclen + 1)))
            cfg_oom();
        if (names) {
            memcpy((*out)->source_, c.src, c.srclen);
            (*out)->source_[c.srclen] = '\0';
            (*out)->source_len_ = c.srclen;
        }
    }
    return rc;
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
    if (cfg->tls_free)
        cfg->tls_free(cfg);
    if (cfg->servers_release_)
        cfg->servers_release_(cfg);
    cfg_regexes_free(cfg);
    cfg_free_policies(cfg);
    free(cfg->source_);
    for (void *b = cfg->resolved_, *next; b; b = next) {
        next = *(void **)b; /* resolve_expand's blocks: a chain */
        free(b);
    }
    cfg_arena_fini(&box->mem);
    free(box);
}
