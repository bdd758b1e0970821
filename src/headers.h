/*
 * headers: what a proxy changes in a message's fields and path between the
 * client and the upstream: hop-by-hop removal, X-Forwarded-* / Forwarded /
 * Via, X-Request-Id, path normalisation and prefix rewriting, Host
 * normalisation.
 *
 * Contract:
 * - Pure module like http1 (whose types it uses): no allocation, no I/O,
 *   nothing yields. Output goes to caller-provided arrays and scratch
 *   buffers; views in the output point into the parsed head, into the
 *   scratch buffer, or to static strings.
 * - Whether the peer is a trusted proxy (trusted_proxies CIDRs) is decided
 *   by the caller; this module only takes the answer.
 * - Functions return 0 / a length, or a negative: -ENOSPC when the output
 *   array or scratch is too small, or an HTTP1_E_* error (answered 400).
 *
 * Decisions (docs/http1.md):
 * - `//` in a path is merged into `/` (as nginx's merge_slashes): a route
 *   for /admin must not be bypassed by //admin reaching a backend that
 *   merges itself.
 * - Dot segments are removed per RFC 3986 §5.2.4 after decoding the
 *   percent-encoded unreserved characters (so %2e%2e is ".."); ".." above
 *   the root stays at the root. %2F, %5C, '\' and %00 are rejected; other
 *   percent-encodings are kept, hex digits uppercased.
 * - Forwarded (RFC 7239) is never created; from a trusted peer it is kept
 *   and Ferry's element (for=...;proto=...) appended, from others removed.
 * - X-Forwarded-Proto and X-Forwarded-Host from a trusted peer are kept as
 *   sent (the first proxy knew the original); otherwise Ferry sets them.
 * - X-Real-IP is Ferry's like X-Forwarded-For: from a trusted peer its
 *   first X-Real-IP is kept as sent (that proxy saw the client), from any
 *   other peer every X-Real-IP is removed; when none is kept Ferry sets it
 *   to the client address.
 * - Client fields whose name contains '_' are dropped (nginx's
 *   underscores_in_headers off) unless fwd->underscores_in_headers: CGI,
 *   WSGI and Rack map '-' and '_' to the same variable, so X_Forwarded_For
 *   would pass for X-Forwarded-For behind Ferry's back. Even where they
 *   are allowed, a name that reads as a field Ferry frames with or owns
 *   once '_' is '-' (Transfer_Encoding, X_Real_IP) is dropped.
 * - X-Request-Id is kept when exactly one is present and it is 1..128
 *   characters of [A-Za-z0-9._:+/=-], from any peer; else replaced.
 */
#ifndef FERRY_HEADERS_H
#define FERRY_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

#define HEADERS_REQUEST_ID_MAX 128
#define HEADERS_VIA "1.1 ferry"

/* What the proxy knows about the request being forwarded upstream. */
struct headers_forward {
    bool trusted_peer;       /* the peer address is in trusted_proxies */
    const char *client_addr; /* textual client IP ("192.0.2.1", "2001:db8::1") */
    bool tls;                /* client connection is TLS: proto https */
    const char *host;        /* Host to send upstream (preserve/upstream/literal) */
    size_t host_len;
    const char *request_id; /* X-Request-Id to send (headers_request_id); NULL: none */
    size_t request_id_len;
    bool tunnel;                 /* an Upgrade (websocket) is being forwarded */
    bool underscores_in_headers; /* forward client fields whose name has '_' */
};

/*
 * Builds the header list to send upstream for `req` into out[0..cap) and
 * returns how many (>= 0), or -ENOSPC (out or scratch too small). In
 * order: Host (fwd->host), then the client's end-to-end headers in their
 * order minus: hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection,
 * TE, Trailer, Transfer-Encoding, Upgrade unless fwd->tunnel, every field
 * named in Connection), Host, Content-Length (framing is the serializer's),
 * HTTP2-Settings, Upgrade: h2c, X-Forwarded-*, X-Real-IP and Forwarded from
 * untrusted peers, names with '_' (unless allowed), Via and X-Request-Id
 * (re-added); then X-Forwarded-For (the trusted chain + client_addr),
 * X-Forwarded-Proto, X-Forwarded-Host, Forwarded, X-Real-IP (see above),
 * Via (chain + "1.1 ferry"), X-Request-Id (fwd->request_id: the client's
 * own fields are never passed on as they are), and when tunnelling
 * Upgrade: <client's> and Connection: upgrade. `scratch` holds the joined
 * values.
 */
int headers_forward_request(const struct http1_request *req, struct headers_forward *fwd,
                            struct http1_header *out, size_t cap, char *scratch,
                            size_t scratch_cap);

/* The same for an upstream response going to the client: hop-by-hop fields
 * removed (Upgrade kept and Connection: upgrade added for a 101 when
 * `tunnel`), Content-Length/Transfer-Encoding removed (re-serialised), Via
 * appended. Returns the count or -ENOSPC. */
int headers_forward_response(const struct http1_response *resp, bool tunnel,
                             struct http1_header *out, size_t cap, char *scratch,
                             size_t scratch_cap);

/* Is a field of list[0..n) (NUL-terminated names) named name[0..len)?
 * Case-insensitive. */
bool headers_named_in(const char *name, size_t len, const struct http1_header *list, size_t n);

/*
 * Applies a route's rules to the fields out[0..n) (room for cap): drops
 * every field named in remove[] or set[] (case-insensitive), then appends
 * set[] and add[] in order. Returns the new count, or -ENOSPC.
 */
int headers_rewrite(struct http1_header *out, size_t n, size_t cap, const struct http1_header *set,
                    size_t nset, const struct http1_header *add, size_t nadd,
                    const struct http1_header *remove, size_t nremove);

/* Is `id` a well-formed X-Request-Id (see above)? */
bool headers_request_id_valid(const char *id, size_t len);

/* The X-Request-Id rule, in one place: the client's id counts when the
 * request has exactly one X-Request-Id field and it is well-formed; then
 * sets *id and *len to it and returns true. Otherwise false (the caller uses
 * a fresh id). */
bool headers_request_id(const struct http1_request *req, const char **id, size_t *len);

/*
 * Normalises an origin-form path (no query) into out (cap >= len suffices:
 * the result is never longer). Returns the normalised length, or
 * HTTP1_E_PATH, HTTP1_E_PATH_BACKSLASH, HTTP1_E_PATH_ENCODED_SLASH,
 * HTTP1_E_PATH_PERCENT, -ENOSPC. "*" is returned unchanged.
 */
ssize_t headers_path_normalise(const char *path, size_t len, char *out, size_t cap);

/* Does the normalised `path` carry path parameters: a ';' or its encoding
 * %3B (any case) in any segment? Servers such as Tomcat, Jetty and Spring
 * strip ";params" from a segment before matching, so "/admin;x/y" reaches
 * them as "/admin/y" while no "/admin" route matched it. */
bool headers_path_has_params(const char *path, size_t len);

/* Does the normalised `path` fall under `prefix` on a segment boundary?
 * "/v1" matches "/v1", "/v1/", "/v1/x", not "/v1evil"; "/v1/" matches
 * "/v1/" and "/v1/x", not "/v1"; "/" matches everything. */
bool headers_path_has_prefix(const char *path, size_t len, const char *prefix, size_t plen);

/*
 * Rewrites a path for a route's strip_prefix/add_prefix: removes `strip`
 * (when headers_path_has_prefix holds; otherwise nothing is stripped; an
 * emptied path becomes "/"), then prepends `add` without doubling the
 * slash between them. Either may be NULL/0. Writes into out snprintf-style
 * (NUL-terminated when it fits) and returns the length needed.
 */
size_t headers_path_rewrite(const char *path, size_t len, const char *strip, size_t strip_len,
                            const char *add, size_t add_len, char *out, size_t cap);

/* Host for routing: lowercased, port and one trailing dot removed, IPv6
 * brackets kept. Returns the length written to out (cap >= len suffices),
 * HTTP1_E_HOST_INVALID, or -ENOSPC. */
ssize_t headers_host_normalise(const char *host, size_t len, char *out, size_t cap);
/* The same for a host http1_parse_request() accepted (it checked it with
 * http1_host_valid()): without checking it again. */
ssize_t headers_host_lower(const char *host, size_t len, char *out, size_t cap);

#endif
