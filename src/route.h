/*
 * route: which route of the config answers a request (first match wins),
 * the path a rewrite sends upstream, and the upstream a split picks.
 *
 * Pure module over the config's routes. The caller passes the normalised
 * host (headers_host_normalise: lower case, no port, no trailing dot) and
 * the normalised path (headers_path_normalise), so `/v1/../admin` and
 * `API.Example.com:443.` are matched as what they mean; match.path_regex
 * runs on that path too, and match.headers / match.query on the parsed
 * request's fields and raw query (values byte for byte, not decoded).
 *
 * Regular expressions run through regex.h: bounded by its match and depth
 * limits, with per-thread match data (no allocation per request). A match
 * that hits a limit is neither a match nor a non-match: route_find stops
 * and reports ROUTE_LIMIT, and the proxy answers 500 (as nginx does when
 * its regex engine fails) rather than let the request fall through to a
 * later, perhaps less guarded, route. Nothing here yields or logs.
 */
#ifndef FERRY_ROUTE_H
#define FERRY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "regex.h"

/* What routing looks at in one request. */
struct route_input {
    const char *method;
    size_t method_len;
    const char *host; /* normalised; may be NULL (len 0) */
    size_t host_len;
    const char *path; /* normalised */
    size_t path_len;
    const char *query; /* after '?', NULL when none */
    size_t query_len;
    const struct http1_header *headers;
    size_t nheaders;
    const char *client_ip; /* for split_key: client_ip; may be NULL */
};

enum route_status {
    ROUTE_OK = 0,
    ROUTE_NONE = 1,  /* no route matches: 404 */
    ROUTE_LIMIT = 2, /* a pattern hit its match limit (or the matcher failed): 500 */
};

/* What route_find found: the route and path_regex's groups on the path. */
struct route_match {
    const struct config_route *route;
    int npairs; /* pairs set in ovec (0 without path_regex) */
    size_t ovec[2 * (REGEX_MAX_CAPTURES + 1)];
};

/* Does one route's match block accept this request? ROUTE_OK (with the
 * captures in *m when m is not NULL), ROUTE_NONE or ROUTE_LIMIT. */
enum route_status route_matches(const struct config_route *route, const struct route_input *in,
                                struct route_match *m);

/* The first route that accepts the request into m->route. Stops at the
 * first route whose pattern hits a limit (ROUTE_LIMIT, m->route that
 * route); ROUTE_NONE leaves m->route NULL. */
enum route_status route_find(const struct config *cfg, const struct route_input *in,
                             struct route_match *m);

/* The most bytes route_rewrite can write for a path of path_len bytes
 * (terminating NUL included). */
size_t route_rewrite_cap(const struct config_route *route, size_t path_len);

/*
 * Writes route->rewrite with $N replaced by group N of m (taken from path,
 * the normalised path route_find matched; an unset group is empty) into
 * out, NUL-terminated. Returns the length, or -1 when out (cap bytes) is
 * too small or the result holds a "." or ".." segment (a capture must not
 * walk the upstream path up; the caller answers 400). Call only for a
 * route with rewrite.
 */
ssize_t route_rewrite(const struct config_route *route, const struct route_match *m,
                      const char *path, char *out, size_t cap);

/*
 * The upstream a route sends this request to: route->upstream, or for a
 * split the share that `in` falls into: by the hash of its split_key when
 * the request has one (the same key keeps its upstream while the weights
 * stay), else by `rnd` (a uniformly random 64-bit value from the caller).
 */
const struct config_upstream *route_pick_upstream(const struct config_route *route,
                                                  const struct route_input *in, uint64_t rnd);

/* The share that point x (uniform over 64 bits) falls into. */
const struct config_upstream *route_split_at(const struct config_route *route, uint64_t x);

#endif
