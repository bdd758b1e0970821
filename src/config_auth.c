/*
 * config_auth: a route's auth: section (routes[].auth, .api_keys, .jwt)
 * into a struct auth_config, then the route's policy (auth.c), whose
 * files (keys, JWKS, PEM, secret) are read here, at load: a bad line is
 * reported as FILE:LINE at the key that names the file.
 */
#include "config.h"
#include "config_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <strings.h>

#include "auth.h"
#include "jwt.h"

#define AT(type, member) offsetof(type, member)
/* clang-format off */
#define LATER(k) {.key = k, .kind = CFG_LATER}
#define END {.key = NULL}
/* clang-format on */

/* A string setting at f->offset of the auth_config. */
static bool load_str(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                     const struct ynode *v, const struct cfg_path *path, void *target)
{
    (void)k;
    char *s;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    if (!*s) {
        cfg_err(c, v, path, "must not be empty");
        return false;
    }
    *(const char **)(void *)((char *)target + f->offset) = s;
    return true;
}

/* A header name at f->offset. */
static bool load_header_name(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                             const struct ynode *v, const struct cfg_path *path, void *target)
{
    char q[QLEN];
    if (!load_str(c, f, k, v, path, target))
        return false;
    if (v->len > 256 || !http1_token_ok(v->str, v->len) || strcasecmp(v->str, "host") == 0 ||
        strcasecmp(v->str, "connection") == 0 || strcasecmp(v->str, "content-length") == 0 ||
        strcasecmp(v->str, "transfer-encoding") == 0) {
        cfg_err(c, v, path, "not a header name Ferry may set: %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    return true;
}

static bool load_realm(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target)
{
    if (!load_str(c, f, k, v, path, target))
        return false;
    for (size_t i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->str[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\' || v->len > 64) {
            cfg_err(c, v, path, "a realm is 1 to 64 printable ASCII characters without \" or \\");
            return false;
        }
    }
    return true;
}

/* A list of strings (a single string counts as a list of one) into
 * (list at f->offset, count right after it). */
static bool load_strings(struct ctx *c, const struct ynode *v, const struct cfg_path *path,
                         const char *const **list, size_t *count)
{
    if (v->kind == Y_SCALAR && !cfg_is_null(v)) {
        const char **one = cfg_alloc(c->mem, sizeof(*one));
        char *s;
        if (!cfg_get_string(c, v, path, &s))
            return false;
        one[0] = s;
        *list = one;
        *count = 1;
        return true;
    }
    if (!cfg_want_seq(c, v, path, "a list of strings"))
        return false;
    size_t n = cfg_seq_items(v);
    const char **l = cfg_alloc(c->mem, (n ? n : 1) * sizeof(*l));
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        char *s;
        if (!cfg_get_string(c, v->v[i], CFG_INDEX(path, i), &s))
            return false;
        l[(*count)++] = s;
    }
    *list = l;
    return true;
}

static bool load_allow(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                       const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct auth_config *ac = target;
    (void)f, (void)k;
    return load_strings(c, v, path, &ac->allow, &ac->nallow);
}

static bool load_audience(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                          const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct auth_config *ac = target;
    (void)f, (void)k;
    return load_strings(c, v, path, &ac->audiences, &ac->naudiences);
}

static bool load_algorithms(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                            const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct auth_config *ac = target;
    const char *const *names;
    size_t n;
    char q[QLEN];
    (void)f, (void)k;
    if (!load_strings(c, v, path, &names, &n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned alg = jwt_alg_from_name(names[i], strlen(names[i]));
        if (!alg) {
            cfg_err(c, v->kind == Y_SEQ ? v->v[i] : v, path,
                    "unknown or refused algorithm %s (HS256, RS256, ES256, EdDSA)",
                    cfg_quote(q, sizeof(q), names[i], strlen(names[i])));
            return false;
        }
        ac->algorithms |= alg;
    }
    return true;
}

static bool load_claims(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct auth_config *ac = target;
    (void)f, (void)k;
    if (!cfg_want_map(c, v, path, "a mapping of claim names to header names (email: X-Email)"))
        return false;
    if (cfg_map_pairs(v) > AUTH_MAX_CLAIMS) {
        cfg_err(c, v, path, "at most %d claims", AUTH_MAX_CLAIMS);
        return false;
    }
    for (size_t i = 0; i < cfg_map_pairs(v); i++) {
        const struct ynode *ck = v->v[2 * i], *cv = v->v[2 * i + 1];
        const struct cfg_path *sub = CFG_KEY(path, ck->str);
        struct auth_claim_header *ch = &ac->claims[ac->nclaims];
        struct {
            const char *header;
        } tmp;
        static const struct cfg_field hf = {.key = "header", .kind = CFG_CUSTOM};
        if (!load_header_name(c, &hf, ck, cv, sub, &tmp))
            continue;
        ch->claim = cfg_strndup(c->mem, ck->str, ck->len);
        ch->header = tmp.header;
        ac->nclaims++;
    }
    return true;
}

static const struct cfg_field api_keys_fields[] = {
    {"header", CFG_CUSTOM, AT(struct auth_config, key_header), .load = load_header_name,
     .doc = "the header carrying the key (X-Api-Key unless query is given)"},
    {"query", CFG_CUSTOM, AT(struct auth_config, key_query), .load = load_str,
     .doc = "a query parameter carrying the key"},
    {"keys_file", CFG_CUSTOM, AT(struct auth_config, keys_file), .load = load_str,
     .required = "required: the file of keys (KEY [NAME] a line)",
     .doc = "the file of keys: KEY or sha256:HEX, then a name, a line"},
    END};
static const struct cfg_schema cfg_auth_api_keys_schema = {
    "routes[].auth.api_keys", "a mapping (header, query, keys_file)", api_keys_fields};

static const struct cfg_field jwt_fields[] = {
    {"jwks_file", CFG_CUSTOM, AT(struct auth_config, jwks_file), .load = load_str,
     .doc = "a JWKS file of verification keys"},
    {"public_key_file", CFG_CUSTOM, AT(struct auth_config, public_key_file), .load = load_str,
     .doc = "a PEM public key (RSA, EC P-256, Ed25519)"},
    {"secret_file", CFG_CUSTOM, AT(struct auth_config, secret_file), .load = load_str,
     .doc = "a file holding an HS256 secret (32 bytes at least)"},
    {"issuer", CFG_CUSTOM, AT(struct auth_config, issuer), .load = load_str,
     .doc = "the iss a token must carry (any)"},
    {"audience", CFG_CUSTOM, .load = load_audience,
     .doc = "one of these must be in aud (not checked)"},
    {"algorithms", CFG_CUSTOM, .load = load_algorithms,
     .doc = "the algorithms accepted (every one the keys fit)"},
    {"leeway", CFG_DURATION, AT(struct auth_config, leeway_ms), 0, 0, NULL, 60000,
     .doc = "clock skew allowed for exp and nbf (60s)"},
    {"identity_claim", CFG_CUSTOM, AT(struct auth_config, identity_claim), .load = load_str,
     .doc = "the claim naming the caller (sub)"},
    {"claims_to_headers", CFG_CUSTOM, .load = load_claims,
     .doc = "claims copied into fields sent upstream"},
    {"cache_size", CFG_U32, AT(struct auth_config, cache_size), 0, 1u << 20,
     "a number of tokens (0 = no cache)", 1024, .doc = "verified tokens remembered (1024)"},
    END};
static const struct cfg_schema cfg_auth_jwt_schema = {"routes[].auth.jwt",
                                                      "a mapping (jwks_file, ...)", jwt_fields};

static const struct cfg_field basic_fields[] = {
    {"users_file", CFG_CUSTOM, AT(struct auth_config, users_file), .load = load_str,
     .required = "required: the file of users (USER:HASH a line)",
     .doc = "the file of users: USER:HASH (bcrypt, SHA-crypt, yescrypt) a line"},
    {"cache_ttl", CFG_DURATION, AT(struct auth_config, cache_ttl_ms), 0, 0, NULL, 300000,
     .doc = "how long verified credentials are remembered (300s; 0 = not)"},
    {"cache_size", CFG_U32, AT(struct auth_config, cache_size), 0, 1u << 20,
     "a number of credentials (0 = no cache)", 1024, .doc = "credentials remembered (1024)"},
    END};
static const struct cfg_schema cfg_auth_basic_schema = {
    "routes[].auth.basic", "a mapping (users_file, cache_ttl, cache_size)", basic_fields};

static bool load_method(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct auth_config *ac = target;
    (void)k;
    if (ac->method != AUTH_NONE) {
        cfg_err(c, k, path, "a route has one authentication method (api_keys, jwt or basic)");
        return false;
    }
    bool jwt = streq(f->key, "jwt"), basic = streq(f->key, "basic");
    ac->method = jwt ? AUTH_JWT : basic ? AUTH_BASIC : AUTH_API_KEYS;
    return cfg_walk(c, v, path,
                    jwt     ? &cfg_auth_jwt_schema
                    : basic ? &cfg_auth_basic_schema
                            : &cfg_auth_api_keys_schema,
                    ac);
}

static const struct cfg_field auth_fields[] = {
    {"api_keys", CFG_CUSTOM, .load = load_method, .doc = "API keys from a header or the query"},
    {"jwt", CFG_CUSTOM, .load = load_method, .doc = "JWT bearer tokens"},
    {"identity_header", CFG_CUSTOM, AT(struct auth_config, identity_header),
     .load = load_header_name, .doc = "the field carrying the caller's identity upstream"},
    {"realm", CFG_CUSTOM, AT(struct auth_config, realm), .load = load_realm,
     .doc = "the realm of the WWW-Authenticate challenge (ferry)"},
    {"hide_credentials", CFG_BOOL, AT(struct auth_config, hide_credentials),
     .doc = "remove the credential before forwarding (false)"},
    {"allow", CFG_CUSTOM, .load = load_allow,
     .doc = "the identities let through; others get 403 (every one)"},
    {"basic", CFG_CUSTOM, .load = load_method,
     .doc = "HTTP basic auth against a users file of crypt(3) hashes"},
    END};
static const struct cfg_schema cfg_auth_schema = {"routes[].auth",
                                                  "a mapping (api_keys or jwt, ...)", auth_fields};

const struct cfg_schema *const cfg_auth_schemas[] = {&cfg_auth_schema, &cfg_auth_api_keys_schema,
                                                     &cfg_auth_jwt_schema, &cfg_auth_basic_schema,
                                                     NULL};

/* Where auth_policy_new's messages go: at the key named, in the method's
 * mapping (or the auth mapping, or the auth key). */
struct auth_report {
    struct ctx *c;
    const struct ynode *auth, *method;
    const struct cfg_path *path;
};

static void report(void *arg, const char *key, const char *msg)
{
    struct auth_report *r = arg;
    const struct ynode *at = r->method ? cfg_map_get(r->method, key) : NULL;
    cfg_err(r->c, at ? at : r->auth, CFG_KEY(r->path, key), "%s", msg);
}

bool cfg_load_route_auth(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *route = target;
    struct auth_config *ac = cfg_alloc(c->mem, sizeof(*ac));
    (void)f;
    unsigned before = c->nerrors;
    cfg_defaults(&cfg_auth_schema, ac);
    cfg_defaults(&cfg_auth_jwt_schema, ac);
    cfg_defaults(&cfg_auth_basic_schema, ac);
    ac->realm = "ferry";
    ac->identity_claim = "sub";
    if (!cfg_walk(c, v, path, &cfg_auth_schema, ac) || c->nerrors != before)
        return false;
    const struct ynode *method = NULL;
    const struct cfg_path *mpath = path;
    if (ac->method == AUTH_NONE) {
        cfg_err(c, v, path, "names no method: api_keys:, jwt: or basic:");
        return false;
    }
    const char *mkey = ac->method == AUTH_JWT     ? "jwt"
                       : ac->method == AUTH_BASIC ? "basic"
                                                  : "api_keys";
    method = cfg_map_get(v, mkey);
    mpath = CFG_KEY(path, mkey);
    if (ac->method == AUTH_API_KEYS && !ac->key_header && !ac->key_query)
        ac->key_header = "X-Api-Key";
    if (ac->method == AUTH_JWT && !ac->jwks_file && !ac->public_key_file && !ac->secret_file) {
        cfg_err(c, method, mpath, "names no key: jwks_file, public_key_file or secret_file");
        return false;
    }
    /* each field upstream is set once: by the identity or by one claim */
    for (size_t i = 0; i < ac->nclaims; i++) {
        bool dup =
            ac->identity_header && strcasecmp(ac->claims[i].header, ac->identity_header) == 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcasecmp(ac->claims[i].header, ac->claims[j].header) == 0;
        if (dup) {
            cfg_err(c, method, CFG_KEY(mpath, "claims_to_headers"),
                    "%s is set twice (identity_header or another claim)", ac->claims[i].header);
            return false;
        }
    }
    struct auth_report r = {c, k, method, mpath};
    route->auth = auth_policy_new(ac, report, &r);
    return route->auth != NULL;
}

void cfg_free_policies(struct config *cfg)
{
    for (size_t i = 0; cfg->routes && i < cfg->nroutes; i++) {
        auth_policy_free(cfg->routes[i].auth);
        cfg->routes[i].auth = NULL;
    }
}
