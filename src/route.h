/*
 * route: which route of the config answers a request (first match wins).
 *
 * Pure module over the config's routes. The caller passes the normalised
 * host (headers_host_normalise: lower case, no port, no trailing dot) and
 * the normalised path (headers_path_normalise), so `/v1/../admin` and
 * `API.Example.com:443.` are matched as what they mean.
 */
#ifndef FERRY_ROUTE_H
#define FERRY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Does one route's match block accept this request? */
bool route_matches(const struct config_route *route, const char *method, size_t method_len,
                   const char *host, size_t host_len, const char *path, size_t path_len);

/* The first route that accepts the request, or NULL (the proxy answers 404). */
const struct config_route *route_find(const struct config *cfg, const char *method,
                                      size_t method_len, const char *host, size_t host_len,
                                      const char *path, size_t path_len);

#endif
