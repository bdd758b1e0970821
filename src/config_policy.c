/* config_policy: the loaders of a route's rate_limit and cors (the
 * policies' own modules, ratelimit and cors, use what they build). */
#include "config.h"
#include "config_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AT(type, member) offsetof(type, member)
#define END                                                                                        \
    {                                                                                              \
        .key = NULL                                                                                \
    }

/* rate_limit: { requests, per, burst, key } */
static bool load_rate_requests(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)f, (void)k;
    return cfg_get_u32(c, v, path, 1, 1000000000, "an integer from 1 to 1000000000",
                       &((struct config_rate_limit *)target)->requests);
}

/* key: client_ip | identity | header:NAME | const:TEXT */
static bool load_rate_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_rate_limit *rl = target;
    char q[QLEN];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "a key (client_ip, identity, header:NAME or const:TEXT)"))
        return false;
    if (streq(v->str, "client_ip")) {
        rl->key = CONFIG_RATE_CLIENT_IP;
    } else if (streq(v->str, "identity")) {
        rl->key = CONFIG_RATE_IDENTITY;
    } else if (strncmp(v->str, "header:", 7) == 0 && v->len > 7 && v->len <= 7 + 256 &&
               http1_token_ok(v->str + 7, v->len - 7)) {
        rl->key = CONFIG_RATE_HEADER;
    } else if (strncmp(v->str, "const:", 6) == 0 && v->len > 6 && v->len <= 6 + 256 &&
               strlen(v->str) == v->len) {
        rl->key = CONFIG_RATE_CONST;
    } else {
        cfg_err(c, v, path,
                "expected client_ip, identity, header:NAME or const:TEXT (1 to 256 characters), "
                "got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    size_t skip = rl->key == CONFIG_RATE_HEADER ? 7 : rl->key == CONFIG_RATE_CONST ? 6 : 0;
    if (skip) {
        rl->key_arg = cfg_strndup(c->mem, v->str + skip, v->len - skip);
        rl->key_arg_len = v->len - skip;
    }
    return true;
}

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

/* Reads decimal digits of s[*i..len) up to max; false when none or too big. */
static bool url_number(const char *s, size_t len, size_t *i, uint32_t max, uint32_t *out)
{
    uint64_t n = 0;
    size_t start = *i;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9' && *i - start < 10)
        n = n * 10 + (uint64_t)(s[(*i)++] - '0');
    if (*i == start || n > max || (*i < len && s[*i] >= '0' && s[*i] <= '9'))
        return false;
    *out = (uint32_t)n;
    return true;
}

const char *config_redis_url(const char *s, size_t len, char *host, uint16_t *port, uint32_t *db)
{
    static const char scheme[] = "redis://";
    if (len < sizeof(scheme) - 1 || strncmp(s, scheme, sizeof(scheme) - 1) != 0)
        return "expected redis://HOST[:PORT][/DB]";
    if (memchr(s, '@', len))
        return "a user or password is not supported (redis://HOST[:PORT][/DB])";
    size_t i = sizeof(scheme) - 1, h = 0;
    if (i < len && s[i] == '[') { /* [IPv6] */
        for (i++; i < len && s[i] != ']'; i++) {
            if (h >= 64 || !(s[i] == ':' || s[i] == '.' || (s[i] >= '0' && s[i] <= '9') ||
                             (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
                return "a bracketed host must be an IPv6 address";
            host[h++] = s[i];
        }
        if (i >= len || h == 0)
            return "a bracketed host must be an IPv6 address";
        i++;
    } else {
        for (; i < len && host_char(s[i]); i++) {
            if (h >= 253)
                return "the host name is longer than 253 characters";
            host[h++] = s[i];
        }
    }
    host[h] = '\0';
    if (h == 0)
        return "the URL names no host";
    uint32_t n = 6379;
    if (i < len && s[i] == ':') {
        i++;
        if (!url_number(s, len, &i, 65535, &n) || n == 0)
            return "the port must be 1 to 65535";
    }
    *port = (uint16_t)n;
    n = 0;
    if (i < len && s[i] == '/' && i + 1 < len) {
        i++;
        if (!url_number(s, len, &i, 2147483647, &n))
            return "the database must be a number";
    } else if (i < len && s[i] == '/') {
        i++;
    }
    *db = n;
    if (i != len)
        return "unexpected text after HOST[:PORT][/DB] (no user, password or query)";
    return NULL;
}

/* store: redis://HOST[:PORT][/DB] */
static bool load_rate_store(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_rate_limit *rl = target;
    char q[QLEN], host[256];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "a URL like redis://127.0.0.1:6379/0"))
        return false;
    const char *bad = strlen(v->str) == v->len
                          ? config_redis_url(v->str, v->len, host, &rl->store_port, &rl->store_db)
                          : "the URL holds a NUL byte";
    if (bad) {
        cfg_err(c, v, path, "%s, got %s", bad, cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    rl->store_url = cfg_strndup(c->mem, v->str, v->len);
    rl->store_host = cfg_strndup(c->mem, host, strlen(host));
    return true;
}

/* on_store_error: allow | deny */
static bool load_rate_on_error(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                               const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_rate_limit *rl = target;
    char q[QLEN];
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "allow or deny"))
        return false;
    if (streq(v->str, "allow") || streq(v->str, "deny")) {
        rl->store_deny = streq(v->str, "deny");
        return true;
    }
    cfg_err(c, v, path, "expected allow or deny, got %s", cfg_quote(q, sizeof(q), v->str, v->len));
    return false;
}

static const struct cfg_field rate_limit_fields[] = {
    {"requests", CFG_CUSTOM, .load = load_rate_requests,
     .required = "a rate limit needs requests: (tokens refilled per `per`)",
     .doc = "tokens refilled per `per` (required)"},
    {"per", CFG_DURATION, AT(struct config_rate_limit, per), 1, .def = 1000,
     .doc = "the period requests are counted over (1s)"},
    {"burst", CFG_U32, AT(struct config_rate_limit, burst), 0, 1000000000,
     "an integer from 0 to 1000000000", .def = 0, .doc = "tokens held beyond requests (0)"},
    {"key", CFG_CUSTOM, .load = load_rate_key,
     .doc = "client_ip, identity, header:NAME or const:TEXT (client_ip)"},
    {"store", CFG_CUSTOM, .load = load_rate_store,
     .doc = "redis://HOST[:PORT][/DB]: the buckets live in Redis, shared by every instance"},
    {"on_store_error", CFG_CUSTOM, .load = load_rate_on_error,
     .doc = "allow or deny when the store is down or slow (allow)"},
    {"store_timeout", CFG_DURATION, AT(struct config_rate_limit, store_timeout), 1, 10000,
     .def = 100, .doc = "the longest a request waits for the store (100ms)"},
    END};
const struct cfg_schema cfg_rate_limit_schema = {
    "routes[].rate_limit", "a mapping (requests, per, burst, key)", rate_limit_fields};

bool cfg_load_rate_limit(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)f, (void)k;
    struct config_rate_limit *rl = cfg_alloc(c->mem, sizeof(*rl));
    cfg_defaults(&cfg_rate_limit_schema, rl);
    rl->key = CONFIG_RATE_CLIENT_IP;
    r->rate_limit = rl;
    return cfg_walk(c, v, path, &cfg_rate_limit_schema, rl);
}

/* cors: a list of strings into *out (n items); false after an error. */
static bool get_string_list(struct ctx *c, const struct ynode *v, const struct cfg_path *path,
                            const char *what, char ***out, size_t *n)
{
    if (!cfg_want_seq(c, v, path, what))
        return false;
    size_t count = cfg_seq_items(v);
    *out = cfg_alloc(c->mem, (count ? count : 1) * sizeof(**out));
    *n = 0;
    for (size_t j = 0; j < count; j++)
        if (cfg_get_string(c, v->v[j], CFG_INDEX(path, j), &(*out)[*n]))
            (*n)++;
    return *n == count;
}

/* An origin as a browser sends it: scheme://host[:port], lower case, no
 * path; host may start with "*." (any subdomain). */
static bool origin_ok(const char *o)
{
    const char *p = strstr(o, "://");
    if (!p || p == o || !p[3])
        return false;
    for (const char *q = o; q < p; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || strchr("+-.", *q)))
            return false;
    p += 3;
    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    if (!*p)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-.:[]", *p)))
            return false;
    return true;
}

static bool load_cors_origins(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                              const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_cors *cors = target;
    (void)f, (void)k;
    if (!get_string_list(c, v, path, "a list of origins ([https://app.example.com])",
                         &cors->origins, &cors->norigins))
        return false;
    for (size_t i = 0; i < cors->norigins; i++) {
        char q[QLEN];
        if (streq(cors->origins[i], "*")) {
            cors->any_origin = true;
        } else if (!origin_ok(cors->origins[i])) {
            cfg_err(c, v->v[i], CFG_INDEX(path, i),
                    "expected \"*\" or an origin (scheme://host[:port] in lower case, the host "
                    "may start with \"*.\"), got %s",
                    cfg_quote(q, sizeof(q), cors->origins[i], strlen(cors->origins[i])));
            return false;
        }
    }
    return true;
}

/* allow_methods, allow_headers, expose_headers: tokens joined with ", ". */
static bool load_cors_tokens(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_cors *cors = target;
    char **items, q[QLEN];
    size_t n, len = 0;
    (void)k;
    if (!get_string_list(c, v, path, "a list of names", &items, &n))
        return false;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(items[i]);
        if (!(streq(items[i], "*") || (l <= 256 && http1_token_ok(items[i], l)))) {
            cfg_err(c, v->v[i], CFG_INDEX(path, i), "not a valid name: %s",
                    cfg_quote(q, sizeof(q), items[i], l));
            return false;
        }
        len += l + 2;
    }
    char *joined = cfg_alloc(c->mem, len + 1), *p = joined;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? ", " : "", items[i]);
    *p = '\0';
    char **slot = streq(f->key, "allow_methods")   ? &cors->methods
                  : streq(f->key, "allow_headers") ? &cors->headers
                                                   : &cors->expose;
    *slot = n ? joined : NULL;
    return true;
}

static const struct cfg_field cors_field_table[] = {
    {"allow_origins", CFG_CUSTOM, .load = load_cors_origins,
     .required = "cors needs allow_origins: (\"*\", origins, or https://*.example.com patterns)",
     .doc = "origins allowed: \"*\", exact, or with a \"*.\" subdomain pattern (required)"},
    {"allow_methods", CFG_CUSTOM, .load = load_cors_tokens,
     .doc = "methods a preflight allows (GET, HEAD, POST)"},
    {"allow_headers", CFG_CUSTOM, .load = load_cors_tokens,
     .doc = "request fields a preflight allows (none beyond the safelisted)"},
    {"expose_headers", CFG_CUSTOM, .load = load_cors_tokens,
     .doc = "response fields scripts may read (none beyond the safelisted)"},
    {"allow_credentials", CFG_BOOL, AT(struct config_cors, credentials),
     .doc = "Access-Control-Allow-Credentials: true (false)"},
    {"max_age", CFG_DURATION, AT(struct config_cors, max_age), 0, .def = 0,
     .doc = "how long a browser may cache a preflight (0 = not sent)"},
    END};
const struct cfg_schema cfg_cors_schema = {
    "routes[].cors", "a mapping (allow_origins, allow_methods, ...)", cors_field_table};

bool cfg_load_cors(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                   const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    (void)f, (void)k;
    struct config_cors *cors = cfg_alloc(c->mem, sizeof(*cors));
    cfg_defaults(&cfg_cors_schema, cors);
    cors->methods = cfg_strdup(c->mem, "GET, HEAD, POST");
    r->cors = cors;
    if (!cfg_walk(c, v, path, &cfg_cors_schema, cors))
        return false;
    if (cors->credentials && cors->any_origin) {
        cfg_err(c, cfg_map_get(v, "allow_credentials"), CFG_KEY(path, "allow_credentials"),
                "cannot be true with allow_origins \"*\" (browsers refuse credentials for any "
                "origin): list the origins");
        return false;
    }
    return true;
}
