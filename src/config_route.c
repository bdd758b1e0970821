/*
 * config_route: the routes' richer matching and choosing keys, loaded into
 * struct config_route (config.h documents the fields):
 *
 *   match.path_regex   a PCRE2 pattern, compiled here once (regex.h bounds it)
 *   match.headers      NAME: value (exact), or NAME: {exact|prefix|regex: ..}
 *                      or {present: true} / {absent: true}
 *   match.query        the same forms on query parameters
 *   rewrite            the upstream path from path_regex's captures ($1)
 *   split, split_key   weighted upstreams, sticky on a key when one is given
 *
 * The rows naming these keys are in config.c's tables; the loaders, the
 * checks between them and the resolution of split's upstream names are
 * here. Compiled patterns hang off the config (regexes_) and are freed
 * with it.
 */
#include "config.h"
#include "config_internal.h"

#include <stdlib.h>
#include <strings.h>

#include "regex.h"

/* ---- compiled patterns: owned by the config ---- */

struct regex_node {
    struct regex *re;
    struct regex_node *next;
};

void cfg_regexes_free(struct config *cfg)
{
    struct regex_node *n = cfg->regexes_;
    while (n) {
        struct regex_node *next = n->next;
        regex_free(n->re);
        free(n);
        n = next;
    }
    cfg->regexes_ = NULL;
}

/* The column of byte `off` of scalar v's text in the source, when the
 * source holds the text as it is (a plain or quoted scalar without
 * escapes on one line); else v's own column. */
static uint32_t pattern_col(const struct ctx *c, const struct ynode *v, size_t off)
{
    const char *s = c->src, *end = c->src + c->srclen;
    for (uint32_t line = 1; line < v->line && s < end; s++)
        if (*s == '\n')
            line++;
    uint32_t skip = v->col - 1 + (v->quoted ? 1 : 0);
    for (const char *p = s; p < s + skip; p++)
        if (p >= end || *p == '\n' || (unsigned char)*p >= 0x80)
            return v->col;
    s += skip;
    if ((size_t)(end - s) < v->len || memcmp(s, v->str, v->len) != 0 || off > v->len)
        return v->col;
    return v->col + (v->quoted ? 1 : 0) + (uint32_t)off;
}

/* Compiles scalar v into *out (owned by the config); false after reporting. */
static bool get_regex(struct ctx *c, const struct ynode *v, const struct cfg_path *path,
                      struct regex **out, char **text)
{
    char *p, q[96], why[160];
    if (!cfg_get_string(c, v, path, &p))
        return false;
    if (v->len == 0) {
        cfg_err(c, v, path, "an empty pattern matches everything: leave the key out");
        return false;
    }
    size_t off;
    struct regex *re = regex_compile(p, v->len, why, sizeof(why), &off);
    if (!re) {
        struct ynode at = *v;
        at.col = pattern_col(c, v, off);
        cfg_err(c, &at, path, "does not compile: %s at offset %zu of %s", why, off,
                cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    struct regex_node *node = malloc(sizeof(*node));
    if (!node)
        cfg_oom();
    node->re = re;
    node->next = c->cfg->regexes_;
    c->cfg->regexes_ = node;
    *out = re;
    if (text)
        *text = p;
    return true;
}

bool cfg_load_path_regex(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                         const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_match *m = &((struct config_route *)target)->match;
    (void)f, (void)k;
    return get_regex(c, v, path, &m->path_re, &m->path_regex);
}

/* ---- match.headers, match.query ---- */

/* The walk of one long-form condition: which keys were given. */
struct cond_walk {
    struct config_field_cond *cond;
    unsigned nset;
};

static bool load_cond_text(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct cond_walk *w = target;
    struct config_field_cond *cond = w->cond;
    (void)k;
    w->nset++;
    if (streq(f->key, "regex")) {
        cond->kind = CONFIG_FIELD_REGEX;
        return get_regex(c, v, path, &cond->regex, &cond->text);
    }
    cond->kind = streq(f->key, "exact") ? CONFIG_FIELD_EXACT : CONFIG_FIELD_PREFIX;
    if (!cfg_get_string(c, v, path, &cond->text))
        return false;
    cond->text_len = v->len;
    return true;
}

static bool load_cond_bool(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct cond_walk *w = target;
    bool b;
    (void)k;
    w->nset++;
    if (!cfg_get_bool(c, v, path, &b))
        return false;
    bool present = streq(f->key, "present") ? b : !b;
    w->cond->kind = present ? CONFIG_FIELD_PRESENT : CONFIG_FIELD_ABSENT;
    return true;
}

static const struct cfg_field cond_fields[] = {
    {"exact", CFG_CUSTOM, .load = load_cond_text, .doc = "the value, byte for byte"},
    {"prefix", CFG_CUSTOM, .load = load_cond_text, .doc = "the value starts with this"},
    {"regex", CFG_CUSTOM, .load = load_cond_text,
     .doc = "a PCRE2 pattern searched in the value (anchor it with ^...$)"},
    {"present", CFG_CUSTOM, .load = load_cond_bool,
     .doc = "true: the field is there (any value); false: it is not"},
    {"absent", CFG_CUSTOM, .load = load_cond_bool, .doc = "true: no field of that name"},
    {.key = NULL}};
const struct cfg_schema cfg_cond_schema = {
    "routes[].match.{headers,query}.NAME",
    "a value, or one of {exact: V}, {prefix: V}, {regex: P}, {present: true}, {absent: true}",
    cond_fields};

/* A query parameter name as it appears before '=': no '&', '=', '#',
 * spaces or control bytes. */
static bool query_name_ok(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '&' || ch == '=' || ch == '#')
            return false;
    }
    return true;
}

/* One NAME: condition of match.headers (header) or match.query into cond. */
static bool load_cond(struct ctx *c, const struct ynode *k, const struct ynode *v,
                      const struct cfg_path *path, bool header, struct config_field_cond *cond)
{
    char q[96];
    const struct cfg_path *sub = CFG_KEY(path, k->str);
    if (strlen(k->str) != k->len ||
        (header ? !http1_token_ok(k->str, k->len) : !query_name_ok(k->str, k->len))) {
        cfg_err(c, k, sub, "not a %s name: %s", header ? "header" : "query parameter",
                cfg_quote(q, sizeof(q), k->str, k->len));
        return false;
    }
    cond->name = cfg_strndup(c->mem, k->str, k->len);
    cond->name_len = k->len;
    if (v->kind == Y_SCALAR) {
        cond->kind = CONFIG_FIELD_EXACT;
        if (!cfg_get_string(c, v, sub, &cond->text))
            return false;
        cond->text_len = v->len;
        return true;
    }
    struct cond_walk w = {.cond = cond};
    if (!cfg_walk(c, v, sub, &cfg_cond_schema, &w))
        return false;
    if (w.nset != 1) {
        cfg_err(c, v, sub, "give exactly one of exact, prefix, regex, present, absent (got %u)",
                w.nset);
        return false;
    }
    return true;
}

bool cfg_load_match_fields(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                           const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_match *m = &((struct config_route *)target)->match;
    bool header = streq(f->key, "headers");
    (void)k;
    if (!cfg_want_map(c, v, path,
                      header ? "a mapping of header conditions (like { X-Canary: \"1\" })"
                             : "a mapping of query parameter conditions (like { debug: \"1\" })"))
        return false;
    size_t n = cfg_map_pairs(v);
    struct config_field_cond *conds = cfg_alloc(c->mem, (n ? n : 1) * sizeof(*conds));
    size_t count = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const struct ynode *key = v->v[2 * i], *val = v->v[2 * i + 1];
        if (key->kind != Y_SCALAR || key->repeated) {
            ok = false;
            continue;
        }
        for (size_t j = 0; header && j < count; j++) {
            if (strcasecmp(conds[j].name, key->str) == 0) {
                cfg_err(c, key, CFG_KEY(path, key->str),
                        "%s and %s are the same header (names are case-insensitive)", conds[j].name,
                        key->str);
                ok = false;
            }
        }
        if (load_cond(c, key, val, path, header, &conds[count]))
            count++;
        else
            ok = false;
    }
    if (header) {
        m->headers = conds;
        m->nheaders = count;
    } else {
        m->query = conds;
        m->nquery = count;
    }
    return ok;
}

/* ---- rewrite ---- */

/*
 * rewrite: a path template. Literal parts follow the rules of a route
 * path (no spaces, '?', '#', non-ASCII); $0..$9 are path_regex's groups,
 * $$ a '$'. Which $N exist is checked against the pattern later
 * (cfg_route_check), when both keys are known.
 */
bool cfg_load_rewrite(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                      const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    char *t, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &t))
        return false;
    const char *why = t[0] != '/' ? "the rewritten path starts with '/'" : NULL;
    uint32_t refs = 0;
    for (const char *p = t; *p && !why; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '$') {
            if (p[1] == '$') {
                p++;
            } else if (p[1] >= '0' && p[1] <= '9') {
                refs++;
                p++;
            } else {
                why = "'$' is followed by a group number 0 to 9 (or write $$ for '$')";
            }
        } else if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#') {
            why = "a path holds no spaces, '?', '#' or non-ASCII bytes (percent-encode them)";
        }
    }
    if (why) {
        cfg_err(c, v, path, "%s, got %s", why, cfg_quote(q, sizeof(q), v->str, v->len));
        return false;
    }
    r->rewrite = t;
    r->rewrite_refs = refs;
    return true;
}

/* ---- split, split_key ---- */

/* One item of split: walked into this, resolved by cfg_route_resolve. */
struct cfg_split_item {
    const struct ynode *upstream_node;
    uint32_t weight;
};

static bool load_split_upstream(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                                const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct cfg_split_item *item = target;
    (void)f, (void)k;
    if (!cfg_want_scalar(c, v, path, "the name of an upstream"))
        return false;
    item->upstream_node = v;
    return true;
}

static const struct cfg_field split_fields[] = {
    {"upstream", CFG_CUSTOM, .load = load_split_upstream,
     .required = "required: the upstream that gets this share", .doc = "an upstream's name"},
    {"weight", CFG_U32, offsetof(struct cfg_split_item, weight), 1, 1000000,
     "a weight from 1 to 1000000", 1, .doc = "its share against the others' weights (1)"},
    {.key = NULL}};
const struct cfg_schema cfg_split_schema = {
    "routes[].split[]", "a share of the route (a mapping: upstream, weight)", split_fields};

bool cfg_load_split(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                    const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    struct route_aux *aux = &c->raux[r->index];
    (void)f, (void)k;
    if (v->kind != Y_SEQ || v->n == 0) {
        char d[QLEN];
        cfg_err(c, v, path,
                "expected a list of shares (like [{upstream: api, weight: 95}, "
                "{upstream: canary, weight: 5}]), got %s",
                v->kind == Y_SEQ ? "an empty list" : cfg_describe(d, sizeof(d), v));
        return false;
    }
    struct cfg_split_item *items = cfg_alloc(&c->tree, v->n * sizeof(*items));
    bool ok = true;
    for (size_t i = 0; i < v->n; i++) {
        cfg_defaults(&cfg_split_schema, &items[i]);
        ok &= cfg_walk(c, v->v[i], CFG_INDEX(path, i), &cfg_split_schema, &items[i]);
    }
    aux->split_node = v;
    aux->split_items = items;
    aux->nsplit_items = v->n;
    return ok;
}

bool cfg_load_split_key(struct ctx *c, const struct cfg_field *f, const struct ynode *k,
                        const struct ynode *v, const struct cfg_path *path, void *target)
{
    struct config_route *r = target;
    char *s, q[96];
    (void)f, (void)k;
    if (!cfg_get_string(c, v, path, &s))
        return false;
    const char *name = NULL;
    if (streq(s, "client_ip")) {
        r->split_key = CONFIG_SPLIT_CLIENT_IP;
        return true;
    } else if (strncmp(s, "header:", 7) == 0) {
        r->split_key = CONFIG_SPLIT_HEADER;
        name = s + 7;
    } else if (strncmp(s, "cookie:", 7) == 0) {
        r->split_key = CONFIG_SPLIT_COOKIE;
        name = s + 7;
    }
    if (!name || !*name || !http1_token_ok(name, strlen(name))) {
        cfg_err(c, v, path, "expected client_ip, header:NAME or cookie:NAME, got %s",
                cfg_quote(q, sizeof(q), v->str, v->len));
        r->split_key = CONFIG_SPLIT_RANDOM;
        return false;
    }
    r->split_key_name = (char *)name;
    r->split_key_len = strlen(name);
    return true;
}

/* The key node of key in mapping n, or NULL. */
static const struct ynode *key_node(const struct ynode *n, const char *key)
{
    for (size_t i = 0; n->kind == Y_MAP && i < cfg_map_pairs(n); i++)
        if (n->v[2 * i]->kind == Y_SCALAR && !n->v[2 * i]->repeated && streq(n->v[2 * i]->str, key))
            return n->v[2 * i];
    return NULL;
}

/* What these keys say about each other and the route's others (route n). */
void cfg_route_check(struct ctx *c, const struct ynode *n, const struct cfg_path *path,
                     struct config_route *r)
{
    struct route_aux *aux = &c->raux[r->index];
    const struct ynode *match = cfg_map_get(n, "match");
    const struct ynode *re_key = match ? key_node(match, "path_regex") : NULL;
    if (re_key && (r->match.path || r->match.path_prefix))
        cfg_err(c, re_key, CFG_KEY(CFG_KEY(path, "match"), "path_regex"),
                "path_regex excludes path and path_prefix: keep one");
    const struct ynode *rw = key_node(n, "rewrite");
    if (rw && r->rewrite) {
        const struct cfg_path *sub = CFG_KEY(path, "rewrite");
        uint32_t groups = r->match.path_re ? regex_captures(r->match.path_re) : 0;
        const char *bad = NULL;
        for (const char *p = r->rewrite; *p && !bad; p++)
            if (p[0] == '$' && p[1] == '$')
                p++;
            else if (p[0] == '$' && (uint32_t)(p[1] - '0') > groups)
                bad = p;
        if (!re_key)
            cfg_err(c, rw, sub, "rewrite uses the captures of match.path_regex: add one");
        else if (r->match.path_re && bad)
            cfg_err(c, rw, sub, "$%c: path_regex has %u capture group%s", bad[1], groups,
                    groups == 1 ? "" : "s");
        if (r->strip_prefix || r->add_prefix)
            cfg_err(c, rw, sub, "rewrite sets the whole path: drop strip_prefix and add_prefix");
    }
    const struct ynode *split = key_node(n, "split");
    if (split && aux->upstream_node)
        cfg_err(c, split, CFG_KEY(path, "split"), "a route has either upstream or split, not both");
    if (split && key_node(n, "respond"))
        cfg_err(c, split, CFG_KEY(path, "split"), "a route has either respond or split, not both");
    const struct ynode *sk = key_node(n, "split_key");
    if (sk && !split)
        cfg_warn(c, sk, CFG_KEY(path, "split_key"), "has no effect without split");
}

/* Resolves split's upstream names (after every upstream is loaded). */
void cfg_route_resolve(struct ctx *c)
{
    struct config *cfg = c->cfg;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        struct route_aux *aux = &c->raux[i];
        if (!aux->nsplit_items)
            continue;
        r->split = cfg_alloc(c->mem, aux->nsplit_items * sizeof(*r->split));
        uint64_t total = 0;
        bool ok = true;
        for (size_t j = 0; j < aux->nsplit_items; j++) {
            const struct cfg_split_item *it = &aux->split_items[j];
            if (!it->upstream_node) {
                ok = false;
                continue;
            }
            const struct config_upstream *u = config_upstream_find(cfg, it->upstream_node->str);
            if (!u) {
                char q[96];
                const struct cfg_path *path =
                    CFG_KEY(CFG_INDEX(CFG_KEY(CFG_INDEX(CFG_KEY(NULL, "routes"), i), "split"), j),
                            "upstream");
                cfg_quote(q, sizeof(q), it->upstream_node->str, it->upstream_node->len);
                const char **names = cfg_alloc(&c->tree, (cfg->nupstreams + 1) * sizeof(*names));
                for (size_t u2 = 0; u2 < cfg->nupstreams; u2++)
                    names[u2] = cfg->upstreams[u2].name;
                const char *near = cfg_nearest(it->upstream_node->str, names, cfg->nupstreams);
                if (near)
                    cfg_err(c, it->upstream_node, path,
                            "unknown upstream %s (did you mean \"%s\"?)", q, near);
                else
                    cfg_err(c, it->upstream_node, path,
                            "unknown upstream %s: not in upstreams:", q);
                ok = false;
                continue;
            }
            c->uaux[u->index].used = true;
            r->split[j] = (struct config_split){.upstream = u, .weight = it->weight};
            total += it->weight;
        }
        if (!ok)
            continue;
        r->nsplit = aux->nsplit_items;
        r->split_total = (uint32_t)total; /* checked below */
        r->upstream = r->split[0].upstream;
        if (total > UINT32_MAX)
            cfg_err(c, aux->split_node, CFG_KEY(CFG_INDEX(CFG_KEY(NULL, "routes"), i), "split"),
                    "the weights add up to more than %u", UINT32_MAX);
    }
}
