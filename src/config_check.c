/*
 * config_check: stage 3 of a load, the checks across mappings (route ->
 * upstream names, route names, shadowed routes, unused upstreams), and the
 * lookups by name.
 */
#include "config.h"
#include "config_internal.h"

#include <stdlib.h>

/* ---- stage 3: cross checks ---- */

static int upstream_name_cmp(const void *a, const void *b)
{
    const struct config_upstream *x = *(const struct config_upstream *const *)a;
    const struct config_upstream *y = *(const struct config_upstream *const *)b;
    return strcmp(x->name, y->name);
}

struct route_ref {
    const char *name;
    size_t index;
};

static int route_ref_cmp(const void *a, const void *b)
{
    const struct route_ref *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    if (r)
        return r;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* True when prefix p matches path q at a segment boundary. */
static bool prefix_covers(const char *p, const char *q)
{
    size_t lp = strlen(p);
    if (strncmp(p, q, lp) != 0)
        return false;
    return q[lp] == '\0' || p[lp - 1] == '/' || q[lp] == '/';
}

/* True when route a matches every request that route b matches. */
static bool route_covers(const struct config_route *a, const struct config_route *b)
{
    const struct config_match *x = &a->match, *y = &b->match;
    if (x->path_re || x->nheaders || x->nquery) /* beyond what is compared here */
        return false;
    if (x->host) {
        if (!y->host)
            return false;
        if (!x->host_wildcard) {
            if (y->host_wildcard || !streq(x->host, y->host))
                return false;
        } else {
            size_t lx = strlen(x->host), ly = strlen(y->host);
            if (ly < lx || !streq(y->host + ly - lx, x->host))
                return false;
            if (!y->host_wildcard && ly == lx)
                return false;
        }
    }
    if (x->nmethods) {
        if (!y->nmethods)
            return false;
        for (size_t i = 0; i < y->nmethods; i++) {
            bool found = false;
            for (size_t j = 0; j < x->nmethods && !found; j++)
                found = streq(x->methods[j], y->methods[i]);
            if (!found)
                return false;
        }
    }
    if (x->path) {
        return y->path && streq(x->path, y->path);
    }
    if (x->path_prefix) {
        if (y->path)
            return prefix_covers(x->path_prefix, y->path);
        if (y->path_prefix)
            return prefix_covers(x->path_prefix, y->path_prefix);
        return false;
    }
    return true;
}

/* Each route gets the global timeouts under its own, its body limit and its upstream. */
static void resolve_routes(struct ctx *c)
{
    struct config *cfg = c->cfg;
    /* upstream names, sorted for lookups */
    const struct config_upstream **sorted =
        cfg_alloc(&c->tree, (cfg->nupstreams + 1) * sizeof(*sorted));
    const char **names = cfg_alloc(&c->tree, (cfg->nupstreams + 1) * sizeof(*names));
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        sorted[i] = &cfg->upstreams[i];
        names[i] = cfg->upstreams[i].name;
    }
    qsort(sorted, cfg->nupstreams, sizeof(*sorted), upstream_name_cmp);

    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        struct route_aux *aux = &c->raux[i];
        r->timeouts = cfg->timeouts;
        for (size_t f = 0; CFG_TIMEOUT_KEYS[f]; f++)
            if (aux->timeouts_set & (1u << f))
                *cfg_timeout_field(&r->timeouts, f) = *cfg_timeout_field(&aux->timeouts, f);
        if (!aux->has_max_body)
            r->max_body_bytes = cfg->limits.max_body_bytes;
        if (!aux->upstream_name)
            continue;
        struct config_upstream key = {.name = aux->upstream_name};
        const struct config_upstream *kp = &key;
        const struct config_upstream **found =
            bsearch(&kp, sorted, cfg->nupstreams, sizeof(*sorted), upstream_name_cmp);
        if (found) {
            r->upstream = *found;
            c->uaux[(*found)->index].used = true;
            continue;
        }
        const struct cfg_path *path = CFG_KEY(CFG_INDEX(CFG_KEY(NULL, "routes"), i), "upstream");
        char q[96];
        cfg_quote(q, sizeof(q), aux->upstream_node->str, aux->upstream_node->len);
        const char *near = c->nerrors < CONFIG_MAX_ERRORS
                               ? cfg_nearest(aux->upstream_name, names, cfg->nupstreams)
                               : NULL;
        if (near)
            cfg_err(c, aux->upstream_node, path, "unknown upstream %s (did you mean \"%s\"?)", q,
                    near);
        else if (cfg->nupstreams)
            cfg_err(c, aux->upstream_node, path, "unknown upstream %s: not in upstreams:", q);
        else
            cfg_err(c, aux->upstream_node, path, "unknown upstream %s: no upstreams: are defined",
                    q);
    }
}

/* Route names: given ones unique, derived ones where none was given. */
static void name_routes(struct ctx *c)
{
    struct config *cfg = c->cfg;
    /* names: given ones first, then derived ones that do not collide */
    struct route_ref *refs = cfg_alloc(&c->tree, (cfg->nroutes + 1) * sizeof(*refs));
    size_t nrefs = 0;
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].name)
            refs[nrefs++] = (struct route_ref){cfg->routes[i].name, i};
    qsort(refs, nrefs, sizeof(*refs), route_ref_cmp);
    for (size_t i = 1; i < nrefs; i++) {
        if (streq(refs[i].name, refs[i - 1].name)) {
            size_t first = i - 1;
            while (first > 0 && streq(refs[first - 1].name, refs[i].name))
                first--;
            const struct cfg_path *path =
                CFG_KEY(CFG_INDEX(CFG_KEY(NULL, "routes"), refs[i].index), "name");
            char q[96];
            const struct ynode *rn = c->raux[refs[i].index].node;
            const struct ynode *at = rn;
            for (size_t j = 0; rn->kind == Y_MAP && j + 1 < rn->n; j += 2)
                if (rn->v[j]->kind == Y_SCALAR && streq(rn->v[j]->str, "name"))
                    at = rn->v[j + 1];
            cfg_err(c, at, path, "route name %s is already used by routes[%zu] (line %u)",
                    cfg_quote(q, sizeof(q), refs[i].name, strlen(refs[i].name)), refs[first].index,
                    c->raux[refs[first].index].node->line);
        }
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        if (r->name)
            continue;
        char name[32];
        snprintf(name, sizeof(name), "route-%zu", i + 1);
        struct route_ref key = {name, 0};
        bool taken = false;
        for (size_t lo = 0, hi = nrefs; lo < hi && !taken;) {
            size_t mid = (lo + hi) / 2;
            int cmp = strcmp(name, refs[mid].name);
            if (cmp == 0)
                taken = true;
            else if (cmp < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
        (void)key;
        r->name = cfg_strdup(c->mem, name);
        r->name_derived = true;
        const struct cfg_path *path = CFG_INDEX(CFG_KEY(NULL, "routes"), i);
        if (taken)
            cfg_err(c, c->raux[i].node, path,
                    "this route has no name and its derived name \"%s\" is taken by another route",
                    name);
        else if (!c->raux[i].quiet_name)
            cfg_warn(c, c->raux[i].node, path,
                     "no name: called \"%s\" from its position; give it a name so metrics and "
                     "limits keep their meaning when routes move",
                     name);
    }
}

/* A route that an earlier one always wins over. */
static void check_shadowing(struct ctx *c)
{
    struct config *cfg = c->cfg;
    /* shadowing: bounded by CONFIG_MAX_ROUTES squared, cheap comparisons */
    for (size_t j = 1; j < cfg->nroutes && c->nerrors == 0; j++) {
        for (size_t i = 0; i < j; i++) {
            if (route_covers(&cfg->routes[i], &cfg->routes[j])) {
                const struct cfg_path *path = CFG_INDEX(CFG_KEY(NULL, "routes"), j);
                cfg_warn(c, c->raux[j].node, path,
                         "route \"%s\" can never match: route \"%s\" (line %u) comes first and "
                         "matches every request it would",
                         cfg->routes[j].name, cfg->routes[i].name, c->raux[i].node->line);
                break;
            }
        }
    }
}

/* Upstreams no route names. */
static void check_unused(struct ctx *c)
{
    struct config *cfg = c->cfg;
    /* with errors, a route naming a misspelt upstream would make noise here */
    for (size_t i = 0; i < cfg->nupstreams && c->nerrors == 0; i++) {
        if (c->uaux[i].used)
            continue;
        const struct cfg_path *path = CFG_KEY(CFG_KEY(NULL, "upstreams"), cfg->upstreams[i].name);
        cfg_warn(c, c->uaux[i].key, path, "upstream \"%s\" is not used by any route",
                 cfg->upstreams[i].name);
    }
}

void cfg_cross_check(struct ctx *c)
{
    resolve_routes(c);
    cfg_route_resolve(c);
    name_routes(c);
    check_shadowing(c);
    check_unused(c);
}

const struct config_upstream *config_upstream_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (streq(cfg->upstreams[i].name, name))
            return &cfg->upstreams[i];
    return NULL;
}

const struct config_route *config_route_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (streq(cfg->routes[i].name, name))
            return &cfg->routes[i];
    return NULL;
}

bool config_route_allows_method(const struct config_route *route, const char *method, size_t len)
{
    if (route->match.nmethods == 0)
        return true;
    for (size_t i = 0; i < route->match.nmethods; i++)
        if (strlen(route->match.methods[i]) == len &&
            memcmp(route->match.methods[i], method, len) == 0)
            return true;
    return false;
}
