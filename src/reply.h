/*
 * reply: every response head Ferry writes to a client, and the one rule
 * for answers Ferry gives itself.
 *
 * Heads are serialised by http1's response writer (the one wire format)
 * straight into the client's output evbuffer: a relayed upstream head
 * (reply_head), one of Ferry's own answers (reply_write: errors of any
 * status, respond routes, limits, timeouts, the 503s answered without a
 * coroutine) and the interim 100 Continue (reply_continue).
 *
 * The rule: a connection carries another request only when the request's
 * body was consumed whole from the client (reply_keeps). A body left
 * unread, or only partly read, may hold bytes that look like a request
 * (request smuggling); so after such an answer the connection says
 * "Connection: close", reads no further request and closes lingering
 * (conn.c drains what the client still sends, bounded in time and size,
 * so the client reads the answer instead of a reset).
 *
 * Never yields; the caller owns the evbuffer. Flow layer: may call http1,
 * headers, config; called by proxy.c and conn.c.
 */
#ifndef FERRY_REPLY_H
#define FERRY_REPLY_H

#include <stdbool.h>
#include <stddef.h>

struct config_header_rules;
struct evbuffer;
struct http1_head_out;

/* One answer of Ferry's own. */
struct reply {
    int status;
    const char *content_type; /* NULL: no Content-Type */
    const char *body;
    size_t body_len;
    const char *request_id; /* X-Request-Id, NULL for none */
    size_t request_id_len;
    /* a respond route's response_headers: set/add fields are added, and
     * set/remove of Content-Type or X-Request-Id suppress Ferry's own */
    const struct config_header_rules *rules;
    /* more fields (a cors route's CORS fields), each left out when the
     * rules set, add or remove a field of its name */
    const struct http1_header *extra;
    size_t nextra;
    bool head_only;   /* the request was HEAD: head, no body bytes */
    bool retry_after; /* Retry-After: 1 (503s) */
    bool keep_alive;  /* the client and Ferry would keep the connection */
    bool http10;      /* an HTTP/1.0 client: a kept connection is said so */
    bool must_close;  /* the answer ends the connection whatever else holds */
    bool body_unread; /* some of the request body was not consumed */
};

/*
 * May the connection carry another request after an answer? Only when the
 * client and Ferry want it (keep_alive), nothing forces a close, and no
 * request body byte is left unread. The one place this is decided.
 */
bool reply_keeps(bool keep_alive, bool must_close, bool body_unread);

/*
 * Queues rp (head and body) on out. Returns true when the connection may
 * carry another request (reply_keeps; the head then has no
 * "Connection: close"), false when it must close (lingering when
 * rp->body_unread). On out of memory the answer may be cut: false.
 */
bool reply_write(struct evbuffer *out, const struct reply *rp);

/* Serialises a response head with http1_write_response_head straight into
 * dst's free space. Returns 0, HTTP1_E_SERIALIZE or -ENOMEM. */
int reply_head(struct evbuffer *dst, const struct http1_head_out *h);
/* The same for a request head (to an upstream). */
int reply_request_head(struct evbuffer *dst, const struct http1_head_out *h);

/* Queues "HTTP/1.1 100 Continue" on out. */
void reply_continue(struct evbuffer *out);

/*
 * The body of an answer of Ferry's own: {"error":why,"status":N,
 * "request_id":id} and a newline, in buf. why is one of Ferry's own
 * messages (no JSON escaping). Returns its length (at most cap - 1: a
 * longer body is cut).
 */
size_t reply_error_json(char *buf, size_t cap, int status, const char *why, const char *id,
                        size_t id_len);

#endif
