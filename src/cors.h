/*
 * cors: a route's answer to browsers' cross-origin requests (the Fetch
 * standard's CORS protocol), as response fields.
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
 * answered by Ferry itself, 204, and never reaches the upstream. For an
 * allowed origin it carries Access-Control-Allow-Origin, -Allow-Methods,
 * -Allow-Headers, -Max-Age and -Allow-Credentials as configured; for any
 * other origin none of them (the browser then refuses the request). An
 * actual request from an allowed origin gets Access-Control-Allow-Origin,
 * -Allow-Credentials and -Expose-Headers added to the upstream's response
 * (replacing the upstream's own), and to Ferry's own answers.
 *
 * Vary: Origin is added whenever the answer depends on the Origin: every
 * answer of the route except when allow_origins is "*" without
 * credentials (then Access-Control-Allow-Origin is the constant "*").
 * Origins compare exactly, in lower case (browsers send them so); a
 * pattern, "https:" then "//" and "*.example.com", matches one or more labels before
 * example.com on https, never example.com itself.
 *
 * Pure: no libevent, no runtime; never yields. Policy layer: may call
 * config, http1.
 */
#ifndef FERRY_CORS_H
#define FERRY_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "http1.h"

/* The most fields cors_fields returns. */
#define CORS_MAX_FIELDS 7

/* The fields Ferry owns on a cors route's actual responses: removed from
 * the upstream's answer whether or not Ferry sets them (names only). */
#define CORS_RESPONSE_FIELDS 3
extern const struct http1_header cors_response_fields[CORS_RESPONSE_FIELDS];

/* Is origin[0..len) allowed by c? */
bool cors_origin_allowed(const struct config_cors *c, const char *origin, size_t len);

/* Is req a CORS preflight (OPTIONS with Origin and
 * Access-Control-Request-Method)? */
bool cors_is_preflight(const struct http1_request *req);

/*
 * The CORS fields of the answer to req (preflight or not) into out (room
 * for CORS_MAX_FIELDS); values point into c, req's head or agebuf (room
 * for 24 bytes), which must outlive out. Returns the count. The fields
 * are meant to replace any of the same name (Vary excepted: it is added).
 */
size_t cors_fields(const struct config_cors *c, const struct http1_request *req, bool preflight,
                   struct http1_header *out, char *agebuf);

#endif
