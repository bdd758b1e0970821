/* route: see route.h. */
#include "route.h"

#include <string.h>

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

bool route_matches(const struct config_route *route, const char *method, size_t method_len,
                   const char *host, size_t host_len, const char *path, size_t path_len)
{
    const struct config_match *m = &route->match;
    if (!host_matches(m, host, host_len))
        return false;
    if (m->path && (strlen(m->path) != path_len || memcmp(m->path, path, path_len) != 0))
        return false;
    if (m->path_prefix &&
        !headers_path_has_prefix(path, path_len, m->path_prefix, strlen(m->path_prefix)))
        return false;
    return config_route_allows_method(route, method, method_len);
}

const struct config_route *route_find(const struct config *cfg, const char *method,
                                      size_t method_len, const char *host, size_t host_len,
                                      const char *path, size_t path_len)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        if (route_matches(r, method, method_len, host, host_len, path, path_len))
            return r;
    }
    return NULL;
}
