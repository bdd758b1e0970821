/*
 * request: one proxied request's state, the client side that carries it,
 * the worker's pool of request objects and its scratch buffers, the
 * answers Ferry gives itself for a request, and the access-log record.
 *
 * The request seam: the request flow (proxy.c) takes a parsed head from,
 * reads the body through, writes the response through and waits on a
 * struct request_side, and never sees the client's transport. The HTTP/1
 * connection is today its one user: h1side.c reads and parses heads,
 * runs the loop over a connection's requests and frames bodies; an
 * HTTP/2 stream would be another, running the same proxy_request().
 *
 * Per-worker scratch holds only what never lives across a yield (see
 * docs/runtime.md); everything a request holds across an await is in its
 * struct request, kept in its coroutine's stack page (request_of_coro) or
 * pooled per worker.
 *
 * Runs on the worker's thread; nothing here yields. Flow layer: may call
 * reply, http1, headers, config, io (buffers only), log, metrics.
 */
#ifndef FERRY_REQUEST_H
#define FERRY_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth.h"
#include "body.h"
#include "http1.h"
#include "loop.h"

struct config;
struct config_header_rules;
struct config_route;
struct config_server;
struct config_timeouts;
struct config_upstream;
struct evbuffer;
struct io_stream;
struct io_want;
struct reply;
struct request;
struct upstream_conn;
struct worker;
struct snapshot;

/*
 * A response head in the flow's terms, for a side to put in its own
 * framing: the fields are the ones to send (hop-by-hop ones already
 * gone); body is what the flow knows of the body: HTTP1_BODY_NONE,
 * HTTP1_BODY_LENGTH (content_length; also for a HEAD or 304 that
 * advertises a length it does not carry) or HTTP1_BODY_CHUNKED for a body
 * of unknown length (the side decides how to delimit it); keep_alive is
 * whether the flow would keep the client's connection, and the side
 * clears it when its framing needs the close (HTTP/1.0: an unknown
 * length); tunnel is a 101 whose connection becomes a tunnel.
 */
struct side_head {
    int status;
    const char *reason;
    size_t reason_len;
    const struct http1_header *headers;
    size_t nheaders;
    enum http1_body body;
    uint64_t content_length;
    bool keep_alive; /* in and out */
    bool tunnel;
};

/* What the flow waits for on its side (bits of wait's `what` and result). */
enum side_event {
    SIDE_GONE = 1u << 0,    /* the client left (or reset the stream) */
    SIDE_BODY = 1u << 1,    /* more of the request body arrived (or its end) */
    SIDE_DRAINED = 1u << 2, /* the response output drained (after write_body said full) */
};

/*
 * How the flow reads a request's body from, writes its response to and
 * waits on its side, whatever the transport. Every op but tunnel is
 * required. Only wait yields.
 */
struct request_side_ops {
    /* queues the response head (0, or < 0 when it cannot be serialised);
     * r->resp_body is set up (its framing as the upstream sent it) and
     * the side sets its output framing there (chunk_out) */
    int (*write_head)(struct request *r, struct side_head *h);
    /* queues one of Ferry's own answers whole, filling in what its
     * framing needs (HTTP/1: http10); true when the connection may carry
     * another request */
    bool (*answer)(struct request *r, struct reply *rp);
    /* queues a 100 Continue if the transport wants one now (HTTP/1: a
     * 1.1 client that has not started its body); true when queued */
    bool (*interim_continue)(struct request *r);
    /* the client's verified certificate: false when none (subject and
     * fingerprint may be NULL; the strings live as long as the side) */
    bool (*client_cert)(const struct request *r, const char **subject, const char **fingerprint);
    /* the response cannot end cleanly after its head: the client must see
     * a cut, not an end (HTTP/1: a reset on close where the framing was
     * the close; HTTP/2: RST_STREAM) */
    void (*abort)(struct request *r);
    /* moves what has arrived of the request body to `to`, framed for the
     * upstream as r->req_body says (body_move; the side ends a body of
     * unknown length with body_close_end). Returns 0 or an HTTP1_E_* error */
    int (*read_body)(struct request *r, struct evbuffer *to);
    /* moves what `from` holds of the response body (r->resp_body: framed
     * as the upstream sent it) to the client in the side's framing; from
     * NULL: a close-delimited body ended cleanly. Never moves while the
     * client's output is full. Returns 1 when it is full (wait for
     * SIDE_DRAINED), 0, or an HTTP1_E_* error */
    int (*write_body)(struct request *r, struct evbuffer *from);
    /* waits until one of `what` holds on the side or up (the flow's own
     * want on an upstream stream; may be NULL) fires, or the deadline;
     * with SIDE_BODY the side also ends the wait client_body after the
     * body's last bytes arrived. Returns the side's events that hold (0:
     * only up fired, or the client made progress worth another look),
     * -ETIMEDOUT, -ECANCELED or -errno. May yield */
    int (*wait)(struct request *r, unsigned what, struct io_want *up, int64_t deadline);
    /* takes an upstream connection after a 101 head was queued: the side
     * splices its transport with it once the response is out. NULL: the
     * side cannot tunnel (the flow then forwards an Upgrade request as a
     * plain one, as an HTTP/2 front end does) */
    void (*tunnel)(struct request *r, struct upstream_conn *uc);
};

/*
 * The client side of requests. Its owner fills it in and keeps it alive
 * while a request runs on it; the side's request coroutine (h1side_serve
 * for HTTP/1) calls done() exactly once, when it leaves the side: keep_alive (another request may
 * come), else close (lingering when linger: request bytes were left unread); a non-NULL tunnel is
 * an upstream connection after a 101 to splice with. The side must not be used after done().
 */
struct request_side {
    struct worker *w;
    const struct request_side_ops *ops; /* h1side.h for HTTP/1 */
    struct io_stream *s;                /* the transport's own: only its ops touch it */
    struct io_stream *watch;     /* ends when the client leaves (upstream connects stop); or NULL */
    size_t read_max;             /* what s buffers at most: a head must fit */
    const struct sockaddr *peer; /* the client's address (after PROXY) */
    const char *client;          /* the same, as text */
    bool close_after;            /* answer with Connection: close (draining) */
    bool tls;                    /* the client's transport is encrypted */
    void (*done)(struct request_side *side, bool keep_alive, bool linger,
                 struct upstream_conn *tunnel);
};

/* Header slots a request holds in itself; a head with more grows them to
 * limits.max_headers on the heap. */
#define REQUEST_HEADERS_START 24

struct request {
    struct request_side *side;
    struct worker *w;
    struct snapshot *snap;    /* the worker's snapshot it started on (a reference) */
    const struct config *cfg; /* snap->cfg */
    const struct config_route *route;
    const struct config_upstream *upstream; /* the route's, or its split's pick */
    const char *rewritten; /* the route's rewrite of path (in pathbuf), else NULL */
    size_t rewritten_len;
    const struct config_timeouts *tmo;
    int64_t start;
    int64_t total_deadline;

    /* The head as the side delivers it (views into head), and the body's
     * reading state it sets up: req.body is the framing sent upstream
     * (HTTP1_BODY_CHUNKED for a body of unknown length, req_body then
     * re-encoding it as chunks). */
    struct http1_request req;
    char *path; /* normalised path (in pathbuf) */
    size_t path_len;
    char *host; /* normalised host, for routing (in pathbuf, after the path) */
    size_t host_len;
    size_t head_len;
    char new_id[17];
    const char *id; /* X-Request-Id in effect (request_id_decide) */
    size_t id_len;

    struct body req_body;
    bool sent_continue;
    /* The body as queued upstream (framed), kept for a retry while it fits
     * the upstream's replay_bytes: replay_whole says replay holds all
     * body_sent bytes, so a retry can resend the body whole. */
    uint64_t body_sent;
    bool replay_whole;
    bool replay_wanted; /* a retry after the body went out may happen */

    struct upstream_conn *uc;
    struct upstream_conn *tunnel_uc; /* HTTP/1 side: after a 101, the tunnel's */
    struct http1_response resp;      /* header views valid until the next yield */
    size_t resp_head_len;
    struct body resp_body;

    int status; /* what the client got */
    int upstream_status;
    unsigned attempts; /* retries on other servers */
    const char *upstream_server;
    const struct config_server *server; /* the upstream server tried last */
    const char *error;
    uint64_t bytes_out;
    double connect_ms;
    double header_ms;
    bool streaming;    /* the upstream's body is being relayed */
    bool resp_started; /* a response head (also 1xx) was parsed */
    bool no_log;       /* the client left before a whole head: nothing to log */
    bool keep_alive;   /* keep the client connection after this response */
    bool linger;       /* close lingering: request bytes were left unread */

    const char *identity; /* who the route's auth found (in auth), NULL: none */

    /* ---- kept across requests (the worker's pool, or the coroutine's
     * stack: request_of_coro); not reset ---- */
    struct request *next_free;
    bool on_stack; /* lives in a coroutine stack's local area */
    char *head;    /* a copy of the client's head; req's views point here */
    size_t head_cap;
    struct http1_header *hdrs;
    size_t hdrs_cap;
    char *pathbuf;
    size_t pathbuf_cap;
    struct evbuffer *replay; /* see body_sent; drained after each request */
    bool *tried;             /* servers of the upstream this request tried */
    size_t tried_cap;
    /* The route's auth check (auth_check resets it): allocated for the
     * first route with auth the pooled request serves (776 bytes that
     * every other request, and every waiting one, would hold). */
    struct auth_out *auth;
    /* The header slots of a head of up to REQUEST_HEADERS_START fields:
     * hdrs points here until a head needs more (request_headers_grow). */
    struct http1_header hdrs_inline[REQUEST_HEADERS_START];
};

/*
 * Per-worker scratch for work that never yields in the middle: building
 * the forwarded header lists and the heads, parsing the response head
 * right before it is re-serialised. Waiting requests hold none of it.
 */
struct request_scratch {
    struct http1_header *out; /* forwarded headers */
    size_t out_cap;
    struct http1_header *resp_hdrs; /* the upstream's response head */
    size_t resp_cap;
    char *buf; /* joined values (X-Forwarded-For, Via) */
    size_t buf_cap;
    char *path; /* the rewritten upstream path */
    size_t path_cap;
    struct request *free; /* released requests */
    unsigned nfree;
};

/* A request object from the worker's pool, or a new one. NULL when out
 * of memory. request_reset before each use; request_put when done. */
struct request *request_get(struct worker *w);
void request_put(struct worker *w, struct request *r);
/*
 * The request object of the running coroutine: the one kept in its stack's
 * local area (coro_local) with the buffers it owns, so that a waiting
 * request costs no heap object and the memory is in the page the
 * coroutine's frames touch anyway; from the worker's pool (request_get)
 * when the stack has no area. NULL when out of memory. request_reset
 * before each use; request_put when done, as for request_get's.
 */
struct request *request_of_coro(struct worker *w);
/* Makes room for n header slots (r->hdrs, hdrs_cap), dropping what they
 * held. Returns 0, or -1 when out of memory (the slots are unchanged). */
int request_headers_grow(struct request *r, size_t n);
/* Clears what one request leaves behind, keeping the pooled buffers. */
void request_reset(struct request *r, struct request_side *side);
/* The worker's scratch (created on first use); NULL when out of memory. */
struct request_scratch *request_scratch_of(struct worker *w);
/* Frees the worker's pooled requests and scratch (its exit). */
void request_worker_fini(struct worker *w);

/* Grows *bufp (an array of elem-sized items) to hold need items. Returns
 * it, or NULL when out of memory (*bufp is then unchanged). */
void *request_grow(void *bufp, size_t *cap, size_t need, size_t elem);

/*
 * The X-Request-Id in effect, decided once per request: the client's when
 * it sent exactly one, well-formed (the same rule headers_forward_request
 * applies to what goes upstream), else a fresh one. Call after the head
 * was read (or with none parsed: a fresh one).
 */
void request_id_decide(struct request *r);

/* The earlier of now + ms (ms > 0; else none) and timeouts.total. */
static inline int64_t request_phase_deadline(const struct request *r, int64_t ms)
{
    int64_t d = ms > 0 ? loop_now() + ms * LOOP_MS : LOOP_NEVER;
    return loop_deadline_min(d, r->total_deadline);
}

/* True while any of the request body has not been consumed from the
 * client (also before a head was parsed: its framing is unknown). */
static inline bool request_body_unread(const struct request *r)
{
    return !r->req_body.done;
}

/*
 * Queues an answer of Ferry's own through reply_write, which decides
 * whether the connection carries another request (never while any of the
 * request body is unread: it then closes lingering), nor after an answer
 * that must_close. Sets r->status, keep_alive, linger, bytes_out.
 */
void request_answer(struct request *r, int status, const char *content_type, const char *body,
                    size_t body_len, bool must_close, const struct config_header_rules *rules);
/* The answer to a request the route's auth refused (status 401, 403 or
 * 503 from auth_check): JSON naming only the status's meaning, a 401 with
 * r->auth's WWW-Authenticate; r->auth.why goes to the access log. */
void request_answer_auth(struct request *r, int status);
/* An error of Ferry's own, as JSON {"error", "status", "request_id"};
 * why also goes to the access log unless r->error is set. */
void request_answer_json(struct request *r, int status, const char *why, bool must_close);

/*
 * The request ended (answered, failed or abandoned): counts it (the
 * worker's requests_total, /metrics' requests by route and class) and
 * writes its access-log line. The one builder of the access-log record.
 */
void request_log(const struct request *r);

#endif
