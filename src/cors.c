/* cors: see cors.h. */
#include "cors.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define FIELD(n, v, l) ((struct http1_header){(n), sizeof(n) - 1, (v), (l)})

const struct http1_header cors_response_fields[CORS_RESPONSE_FIELDS] = {
    FIELD("Access-Control-Allow-Origin", NULL, 0),
    FIELD("Access-Control-Allow-Credentials", NULL, 0),
    FIELD("Access-Control-Expose-Headers", NULL, 0),
};

/* Does origin[0..len) match pattern p (exact, or scheme, "://", "*.", rest)? */
static bool origin_match(const char *p, const char *origin, size_t len)
{
    size_t plen = strlen(p);
    const char *star = strstr(p, "://*.");
    if (!star)
        return plen == len && memcmp(p, origin, len) == 0;
    size_t head = (size_t)(star - p) + 3; /* "https://" */
    const char *tail = star + 4;          /* ".example.com" */
    size_t tlen = plen - head - 1;
    if (len < head + 1 + tlen || memcmp(origin, p, head) != 0 ||
        memcmp(origin + len - tlen, tail, tlen) != 0)
        return false;
    /* The labels the '*' stands for: at least one character, no port or
     * path, nothing a browser would not send in a host. */
    for (size_t i = head; i < len - tlen; i++) {
        char ch = origin[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
            return false;
    }
    return origin[head] != '.' && origin[len - tlen - 1] != '.';
}

bool cors_origin_allowed(const struct config_cors *c, const char *origin, size_t len)
{
    if (len == 0 || len > 512)
        return false;
    if (c->any_origin)
        return true;
    for (size_t i = 0; i < c->norigins; i++)
        if (origin_match(c->origins[i], origin, len))
            return true;
    return false;
}

bool cors_is_preflight(const struct http1_request *req)
{
    return req->method == HTTP1_METHOD_OPTIONS &&
           http1_header_find(req->headers, req->nheaders, "Origin") &&
           http1_header_find(req->headers, req->nheaders, "Access-Control-Request-Method");
}

size_t cors_fields(const struct config_cors *c, const struct http1_request *req, bool preflight,
                   struct http1_header *out, char *agebuf)
{
    const struct http1_header *o = http1_header_find(req->headers, req->nheaders, "Origin");
    bool star = c->any_origin && !c->credentials;
    size_t n = 0;
    if (!star)
        out[n++] = FIELD("Vary", "Origin", 6);
    if (!o || !cors_origin_allowed(c, o->value, o->value_len))
        return n;
    if (star)
        out[n++] = FIELD("Access-Control-Allow-Origin", "*", 1);
    else
        out[n++] = FIELD("Access-Control-Allow-Origin", o->value, o->value_len);
    if (c->credentials)
        out[n++] = FIELD("Access-Control-Allow-Credentials", "true", 4);
    if (!preflight) {
        if (c->expose)
            out[n++] = FIELD("Access-Control-Expose-Headers", c->expose, strlen(c->expose));
        return n;
    }
    out[n++] = FIELD("Access-Control-Allow-Methods", c->methods, strlen(c->methods));
    if (c->headers)
        out[n++] = FIELD("Access-Control-Allow-Headers", c->headers, strlen(c->headers));
    if (c->max_age > 0) {
        int len = snprintf(agebuf, 24, "%lld", (long long)(c->max_age / 1000));
        out[n++] = FIELD("Access-Control-Max-Age", agebuf, (size_t)len);
    }
    return n;
}
