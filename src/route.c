/* route: see route.h. */
#include "route.h"

#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "headers.h"

static bool host_matches(const struct config_match *m, const char *host, size_t len)
{
    if (!m->host)
        return true;
    size_t want = strlen(m->host);
    if (!m->host_wildcard)
        return len == want && memcmp(host, m->host, len) == 0;
    /* "*.example.com" is stored as ".example.com": a suffix with at least
     * one more label in front of it. */
    return len > want && memcmp(host + len - want, m->host, want) == 0;
}

/* Does one value satisfy an exact, prefix or regex condition? ROUTE_OK,
 * ROUTE_NONE or ROUTE_LIMIT. */
static enum route_status value_matches(const struct config_field_cond *c, const char *v, size_t len)
{
    switch (c->kind) {
    case CONFIG_FIELD_EXACT:
        return len == c->text_len && memcmp(v, c->text, len) == 0 ? ROUTE_OK : ROUTE_NONE;
    case CONFIG_FIELD_PREFIX:
        return len >= c->text_len && memcmp(v, c->text, c->text_len) == 0 ? ROUTE_OK : ROUTE_NONE;
    case CONFIG_FIELD_REGEX: {
        int rc = regex_match(c->regex, v, len, NULL, 0);
        return rc > 0 ? ROUTE_OK : rc == REGEX_NOMATCH ? ROUTE_NONE : ROUTE_LIMIT;
    }
    case CONFIG_FIELD_PRESENT:
    case CONFIG_FIELD_ABSENT:
        break;
    }
    return ROUTE_OK;
}

/* A condition over every field called c->name: any one satisfying it
 * holds (absent: none is there). */
static enum route_status header_cond(const struct config_field_cond *c,
                                     const struct route_input *in)
{
    bool seen = false;
    for (size_t i = 0; i < in->nheaders; i++) {
        const struct http1_header *h = &in->headers[i];
        if (h->name_len != c->name_len || strncasecmp(h->name, c->name, c->name_len) != 0)
            continue;
        seen = true;
        if (c->kind == CONFIG_FIELD_PRESENT || c->kind == CONFIG_FIELD_ABSENT)
            break;
        enum route_status st = value_matches(c, h->value, h->value_len);
        if (st != ROUTE_NONE)
            return st;
    }
    if (c->kind == CONFIG_FIELD_PRESENT)
        return seen ? ROUTE_OK : ROUTE_NONE;
    if (c->kind == CONFIG_FIELD_ABSENT)
        return seen ? ROUTE_NONE : ROUTE_OK;
    return ROUTE_NONE;
}

/* The same over the parameters of the raw query ("a=1&b&c=2"): a
 * parameter without '=' has the empty value. */
static enum route_status query_cond(const struct config_field_cond *c, const struct route_input *in)
{
    bool seen = false;
    const char *q = in->query, *end = in->query ? in->query + in->query_len : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *name_end = eq ? eq : stop;
        if ((size_t)(name_end - q) == c->name_len && memcmp(q, c->name, c->name_len) == 0) {
            seen = true;
            if (c->kind == CONFIG_FIELD_PRESENT || c->kind == CONFIG_FIELD_ABSENT)
                break;
            const char *v = eq ? eq + 1 : stop;
            enum route_status st = value_matches(c, v, (size_t)(stop - v));
            if (st != ROUTE_NONE)
                return st;
        }
        q = amp ? amp + 1 : NULL;
    }
    if (c->kind == CONFIG_FIELD_PRESENT)
        return seen ? ROUTE_OK : ROUTE_NONE;
    if (c->kind == CONFIG_FIELD_ABSENT)
        return seen ? ROUTE_NONE : ROUTE_OK;
    return ROUTE_NONE;
}

enum route_status route_matches(const struct config_route *route, const struct route_input *in,
                                struct route_match *m)
{
    const struct config_match *cm = &route->match;
    const char *path = in->path;
    size_t path_len = in->path_len;
    if (!host_matches(cm, in->host, in->host_len))
        return ROUTE_NONE;
    if (cm->path && (strlen(cm->path) != path_len || memcmp(cm->path, path, path_len) != 0))
        return ROUTE_NONE;
    if (cm->path_prefix &&
        !headers_path_has_prefix(path, path_len, cm->path_prefix, strlen(cm->path_prefix)))
        return ROUTE_NONE;
    if (!config_route_allows_method(route, in->method, in->method_len))
        return ROUTE_NONE;
    /* the cheap byte comparisons first, the patterns last */
    for (size_t i = 0; i < cm->nheaders; i++)
        if (cm->headers[i].kind != CONFIG_FIELD_REGEX && header_cond(&cm->headers[i], in))
            return ROUTE_NONE;
    for (size_t i = 0; i < cm->nquery; i++)
        if (cm->query[i].kind != CONFIG_FIELD_REGEX && query_cond(&cm->query[i], in))
            return ROUTE_NONE;
    if (cm->path_re) {
        int rc = m ? regex_match(cm->path_re, path, path_len, m->ovec, REGEX_MAX_CAPTURES + 1)
                   : regex_match(cm->path_re, path, path_len, NULL, 0);
        if (rc == REGEX_NOMATCH)
            return ROUTE_NONE;
        if (rc < 0)
            return ROUTE_LIMIT;
        if (m)
            m->npairs = rc;
    } else if (m) {
        m->npairs = 0;
    }
    enum route_status st;
    for (size_t i = 0; i < cm->nheaders; i++)
        if (cm->headers[i].kind == CONFIG_FIELD_REGEX &&
            (st = header_cond(&cm->headers[i], in)) != ROUTE_OK)
            return st;
    for (size_t i = 0; i < cm->nquery; i++)
        if (cm->query[i].kind == CONFIG_FIELD_REGEX &&
            (st = query_cond(&cm->query[i], in)) != ROUTE_OK)
            return st;
    return ROUTE_OK;
}

enum route_status route_find(const struct config *cfg, const struct route_input *in,
                             struct route_match *m)
{
    m->route = NULL;
    m->npairs = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        enum route_status st = route_matches(r, in, m);
        if (st == ROUTE_NONE)
            continue;
        m->route = r;
        return st;
    }
    return ROUTE_NONE;
}

/* ---- rewrite ---- */

size_t route_rewrite_cap(const struct config_route *route, size_t path_len)
{
    return strlen(route->rewrite) + (size_t)route->rewrite_refs * path_len + 1;
}

/* True when p (len bytes, starting with '/') holds a "." or ".." segment. */
static bool has_dot_segment(const char *p, size_t len)
{
    const char *end = p + len;
    for (const char *q = memchr(p, '.', len); q; q = memchr(q + 1, '.', (size_t)(end - q - 1))) {
        if (q[-1] != '/')
            continue;
        size_t dots = q + 1 < end && q[1] == '.' ? 2 : 1;
        if (q + dots == end || q[dots] == '/')
            return true;
        if (q + 1 >= end)
            break;
    }
    return false;
}

/* Appends n bytes of src at out[*o]; false when they do not fit (with the NUL). */
static bool put(char *out, size_t cap, size_t *o, const char *src, size_t n)
{
    if (n >= cap - *o)
        return false;
    memcpy(out + *o, src, n);
    *o += n;
    return true;
}

ssize_t route_rewrite(const struct config_route *route, const struct route_match *m,
                      const char *path, char *out, size_t cap)
{
    size_t o = 0;
    const char *t = route->rewrite;
    for (;;) {
        const char *dollar = strchr(t, '$');
        size_t lit = dollar ? (size_t)(dollar - t) : strlen(t);
        if (!put(out, cap, &o, t, lit))
            return -1;
        if (!dollar)
            break;
        t = dollar + 2; /* "$$" or "$N": checked when loaded */
        if (dollar[1] == '$') {
            if (!put(out, cap, &o, "$", 1))
                return -1;
            continue;
        }
        int g = dollar[1] - '0';
        if (g < m->npairs && m->ovec[2 * g] != SIZE_MAX &&
            !put(out, cap, &o, path + m->ovec[2 * g], m->ovec[2 * g + 1] - m->ovec[2 * g]))
            return -1;
    }
    out[o] = '\0';
    return has_dot_segment(out, o) ? -1 : (ssize_t)o;
}

/* ---- split ---- */

const struct config_upstream *route_split_at(const struct config_route *route, uint64_t x)
{
    /* the top 32 bits scaled onto [0, total): no modulo bias to speak of */
    uint64_t point = ((x >> 32) * route->split_total) >> 32;
    for (size_t i = 0; i < route->nsplit; i++) {
        if (point < route->split[i].weight)
            return route->split[i].upstream;
        point -= route->split[i].weight;
    }
    return route->split[route->nsplit - 1].upstream;
}

/* FNV-1a, then splitmix64's finaliser to spread similar keys. */
static uint64_t hash_key(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* The value of cookie `name` in the request's Cookie fields, or NULL. */
static const char *cookie_value(const struct route_input *in, const char *name, size_t nlen,
                                size_t *len)
{
    for (size_t i = 0; i < in->nheaders; i++) {
        const struct http1_header *h = &in->headers[i];
        if (h->name_len != 6 || strncasecmp(h->name, "cookie", 6) != 0)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            if (eq && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
                const char *v = eq + 1, *ve = stop;
                while (ve > v && ve[-1] == ' ')
                    ve--;
                *len = (size_t)(ve - v);
                return v;
            }
            p = stop;
        }
    }
    return NULL;
}

/* The request's split key, or NULL when it has none. */
static const char *split_key(const struct config_route *route, const struct route_input *in,
                             size_t *len)
{
    switch (route->split_key) {
    case CONFIG_SPLIT_RANDOM:
        return NULL;
    case CONFIG_SPLIT_CLIENT_IP:
        *len = in->client_ip ? strlen(in->client_ip) : 0;
        return in->client_ip;
    case CONFIG_SPLIT_HEADER:
        for (size_t i = 0; i < in->nheaders; i++) {
            const struct http1_header *h = &in->headers[i];
            if (h->name_len == route->split_key_len &&
                strncasecmp(h->name, route->split_key_name, h->name_len) == 0) {
                *len = h->value_len;
                return h->value;
            }
        }
        return NULL;
    case CONFIG_SPLIT_COOKIE:
        return cookie_value(in, route->split_key_name, route->split_key_len, len);
    }
    return NULL;
}

const struct config_upstream *route_pick_upstream(const struct config_route *route,
                                                  const struct route_input *in, uint64_t rnd)
{
    if (!route->nsplit)
        return route->upstream;
    size_t len = 0;
    const char *key = split_key(route, in, &len);
    return route_split_at(route, key ? hash_key(key, len) : rnd);
}
