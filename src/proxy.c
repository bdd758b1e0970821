/*
 * proxy: see proxy.h. One request's life, top to bottom, in the order of
 * this file: proxy_serve (the requests of one connection) -> serve_one ->
 * read_head -> route_request -> (a respond route's answer | forward:
 * upstream_acquire -> build_upstream_head -> exchange (body out, response
 * head in) -> send_response (body back) -> upstream_release) -> the
 * access log. Helpers (answers, bodies, head writing, pools) follow.
 *
 * Bytes stay in evbuffers: the client's head is copied into a buffer of
 * the request's own size (the parsed views point into it), bodies move
 * evbuffer to evbuffer with evbuffer_remove_buffer (chains change hands,
 * nothing is copied), and the heads Ferry sends are serialised from parsed
 * fields only.
 *
 * Decision: the request body is moved by this coroutine inside the same
 * wait set as the response head (client readable, upstream writable,
 * upstream readable, client EOF, deadline), not by separate callbacks: the
 * effect DESIGN asks for (an early upstream answer is forwarded, not turned
 * into a 502) holds, and the flow stays in one place.
 */
#include "proxy.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>

#include "config.h"
#include "conn.h"
#include "coro.h"
#include "headers.h"
#include "http1.h"
#include "io.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "route.h"
#include "upstream.h"
#include "worker.h"

/* Output queued beyond this waits for the peer to read (backpressure). */
#define OUT_HIGH (256u * 1024u)
/* Header slots added by Ferry on top of the client's (Host, X-Forwarded-*,
 * Forwarded, Via, X-Request-Id, Upgrade, Connection). */
#define EXTRA_HEADERS 12

/* How a body is read from one side and written to the other. */
struct body {
    enum http1_body in; /* framing as received */
    bool chunk_out;     /* re-encode as chunked (else pass raw bytes) */
    uint64_t remaining; /* HTTP1_BODY_LENGTH */
    struct http1_chunked dec;
    bool done;
    uint64_t bytes; /* payload bytes moved */
};

/* Failures of the upstream exchange, each mapped to an answer. */
enum fail {
    FAIL_NONE = 0,
    FAIL_UP_CLOSED,       /* closed or reset before any response byte */
    FAIL_UP_TIMEOUT,      /* no response head within upstream_header: 504 */
    FAIL_UP_SEND_TIMEOUT, /* the upstream stopped reading our request: 504 */
    FAIL_UP_BAD,          /* a response that breaks HTTP/1: 502 */
    FAIL_CLIENT_GONE,     /* the client closed: 499, nothing to answer */
    FAIL_CLIENT_BODY,     /* a bad chunked request body: 400 */
    FAIL_CLIENT_TIMEOUT,  /* the client stalled its body: 408 */
    FAIL_BODY_TOO_LARGE,  /* chunked body over max_body_bytes: 413 */
    FAIL_NOMEM,
};

struct request {
    struct conn *conn;
    struct worker *w;
    const struct config *cfg;
    struct io_stream *client;
    const struct config_route *route;
    const struct config_timeouts *tmo;
    int64_t start;
    int64_t total_deadline;

    struct http1_request req;
    char *path; /* normalised path (in pathbuf) */
    size_t path_len;
    char *host; /* normalised host, for routing (in pathbuf, after the path) */
    size_t host_len;
    size_t head_len;
    char new_id[17];
    const char *id; /* X-Request-Id in effect */
    size_t id_len;

    struct body req_body;
    bool sent_continue;

    struct upstream_conn *uc;
    struct upstream_conn *tunnel_uc; /* after a 101: handed to the tunnel */
    struct http1_response resp;      /* headers in the worker's scratch */
    size_t resp_head_len;
    struct body resp_body;

    int status; /* what the client got */
    int upstream_status;
    unsigned attempts; /* retries on other servers (retry_elsewhere) */
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

    /* ---- kept across requests: the worker's pool; not reset ---- */
    struct request *next_free;
    char *head; /* a copy of the client's head; req's views point here */
    size_t head_cap;
    struct http1_header *hdrs;
    size_t hdrs_cap;
    char *pathbuf;
    size_t pathbuf_cap;
};

/*
 * Per-worker scratch for work that never yields in the middle: building
 * the forwarded header lists and the heads, parsing the response head
 * right before it is re-serialised. Waiting requests hold none of it.
 */
struct proxy_scratch {
    struct http1_header *out; /* forwarded headers */
    size_t out_cap;
    struct http1_header *resp_hdrs; /* the upstream's response head */
    size_t resp_cap;
    char *buf; /* joined values (X-Forwarded-For, Via) */
    size_t buf_cap;
    char *path; /* the rewritten upstream path */
    size_t path_cap;
    bool *tried; /* servers of the upstream tried by this request */
    size_t tried_cap;
    struct request *free; /* released requests */
    unsigned nfree;
};

/* Released request objects a worker keeps. */
#define REQUEST_POOL_CAP 256
/* Header slots a request starts with; grown to limits.max_headers when a
 * head has more. */
#define REQUEST_HEADERS_START 24

/* The request's life, in the order of this file. */
static bool serve_one(struct request *r);
static int read_head(struct request *r);
static int route_request(struct request *r);
static bool body_unread(const struct request *r);
static void forward(struct request *r);
static int build_upstream_head(struct request *r, const struct config_server *server,
                               struct evbuffer *dst);
static void upstream_host(const struct request *r, const struct config_upstream *up,
                          const struct config_server *server, const char **host, size_t *len);
static enum fail exchange(struct request *r, struct io_stream *up);
static void maybe_continue(struct request *r);
static int parse_response_head(struct request *r, struct evbuffer *in);
static int send_response(struct request *r, struct io_stream *up);
static bool idempotent(enum http1_method m);
static bool retry_elsewhere(struct request *r, bool *tried, int server, unsigned *left,
                            unsigned cond, int status);
static bool out_of_resources(int err);
static void answer_connect_error(struct request *r, int err);
static void log_request(const struct request *r);
static void answer(struct request *r, int status, const char *content_type, const char *body,
                   size_t body_len, const char *extra_headers,
                   const struct config_header_rules *rules);
static bool rule_names(const struct config_header_rules *rules, const char *name);
static void answer_error(struct request *r, int status, const char *why);
static void body_init(struct body *b, enum http1_body in, uint64_t length, bool chunk_out,
                      uint64_t max_body);
static int body_move(struct body *b, struct evbuffer *in, struct evbuffer *out);
static size_t head_estimate(const struct http1_head_out *h);
static int write_head(struct evbuffer *dst, const struct http1_head_out *h,
                      ssize_t (*writer)(char *buf, size_t cap, const struct http1_head_out *h));
static struct request *request_get(struct worker *w);
static void request_put(struct worker *w, struct request *r);
static void request_reset(struct request *r, struct conn *c);
static void request_free(struct request *r);
static void *grow(void *bufp, size_t *cap, size_t need, size_t elem);
static struct proxy_scratch *scratch_of(struct worker *w);
static int64_t phase_deadline(const struct request *r, int64_t ms);
static double ms_since(int64_t t0);

/* ---- one connection: its requests, in order ------------------------------------------ */

void proxy_serve(void *arg)
{
    struct conn *c = arg;
    struct worker *w = c->w;
    struct request *r = request_get(w);
    bool keep = false, linger = false;
    if (!r)
        goto out_finish;

    /* Requests pipelined behind this one are served by this coroutine;
     * answers to pipelined requests are flushed together unless they pile
     * up. Each request is logged once its answer is out (or failed). */
    do {
        request_reset(r, c);
        keep = serve_one(r);
        linger = r->linger;
        bool more = keep && !r->tunnel_uc && evbuffer_get_length(io_input(c->s)) > 0;
        if (!more || evbuffer_get_length(io_output(c->s)) >= OUT_HIGH) {
            /* client_send bounds a stall, not the whole transfer. */
            int64_t stall = r->tmo->client_send * LOOP_MS;
            if (io_flush_progress(c->s, stall, r->total_deadline) < 0) {
                keep = false;
                linger = false;
                if (!r->error)
                    r->error = "client stopped reading (client_send)";
            }
        }
        if (!r->no_log)
            log_request(r);
        if (r->tunnel_uc)
            break;
    } while (keep && evbuffer_get_length(io_input(c->s)) > 0);

    /* A lingering close shuts the write side once the answer is out, so
     * the client sees its end while its unread body is drained. */
    if (!keep && linger)
        io_shutdown_write(c->s);
    struct upstream_conn *tunnel = r->tunnel_uc;
    request_put(w, r);
    if (tunnel) {
        conn_start_tunnel(c, tunnel);
        return;
    }
out_finish:
    conn_finish_request(c, keep, linger);
}

/* ---- one request: head, route, answer ------------------------------------------------ */

/*
 * One request on the connection, from head to logged response. Returns
 * true when the connection stays open for another request.
 */
static bool serve_one(struct request *r)
{
    int status = read_head(r);
    if (status < 0) {
        r->keep_alive = false;
        r->no_log = true; /* closed or idle before a whole head */
        return false;
    }
    /* The client's X-Request-Id when well-formed (also in Ferry's own
     * answers), else a fresh one. */
    worker_request_id(r->w, r->new_id);
    r->id = r->new_id;
    r->id_len = 16;
    const struct http1_header *xid =
        status ? NULL : http1_header_find(r->req.headers, r->req.nheaders, "X-Request-Id");
    if (xid && headers_request_id_valid(xid->value, xid->value_len)) {
        r->id = xid->value;
        r->id_len = xid->value_len;
    }
    if (status > 0) {
        r->keep_alive = false;
        answer_error(r, status, r->error ? r->error : "bad request");
        r->linger = true;
        goto out_log;
    }
    r->keep_alive = r->req.keep_alive && !r->conn->close_after && !r->w->draining;

    status = route_request(r);
    if (status) {
        if (body_unread(r)) {
            r->keep_alive = false;
            r->linger = true;
        }
        answer_error(r, status, status == 404 ? "no route" : r->error);
        goto out_log;
    }
    /* An expectation other than 100-continue cannot be met (RFC 9110
     * §10.1.1); nothing of the body has been asked for yet. */
    if (!r->req.expect_continue && http1_header_find(r->req.headers, r->req.nheaders, "Expect")) {
        if (body_unread(r)) {
            r->keep_alive = false;
            r->linger = true;
        }
        answer_error(r, 417, "unsupported Expect");
        goto out_log;
    }
    if (r->req.body == HTTP1_BODY_LENGTH && r->route->max_body_bytes &&
        r->req.content_length > r->route->max_body_bytes) {
        r->keep_alive = false;
        r->linger = true;
        answer_error(r, 413, "request body too large");
        goto out_log;
    }
    if (r->route->respond) {
        const struct config_respond *rs = r->route->respond;
        if (body_unread(r)) {
            r->keep_alive = false;
            r->linger = true;
        }
        answer(r, rs->status, rs->content_type, rs->body, rs->body_len, NULL,
               &r->route->response_headers);
        goto out_log;
    }
    forward(r);

out_log:
    return r->keep_alive;
}

/*
 * After a head that is answered without being parsed whole (an error, a
 * timeout), the method view may point into an earlier pullup of the input,
 * and the answer's lingering close drains the input: the access log gets a
 * copy, taken from the input's start where the request line still is.
 */
static void keep_method(struct request *r, struct evbuffer *in)
{
    if (!r->req.method_str)
        return;
    const char *cur = (const char *)evbuffer_pullup(in, (ssize_t)r->req.method_len);
    char *m = cur ? grow(&r->head, &r->head_cap, r->req.method_len, 1) : NULL;
    if (m)
        memcpy(m, cur, r->req.method_len);
    r->req.method_str = m;
}

/*
 * Reads and parses one request head, trickled or pipelined, within
 * client_header from its first byte. Returns 0, an HTTP status to answer
 * (400, 408, 413, 414, 431, 501, 505), or -1 when the client closed
 * before sending a whole head (nothing to answer).
 */
static int read_head(struct request *r)
{
    struct evbuffer *in = io_input(r->client);
    int64_t deadline = phase_deadline(r, r->tmo->client_header);
    struct http1_limits lim = {.max_header_bytes = r->cfg->limits.max_header_bytes,
                               .max_headers = r->cfg->limits.max_headers};
    http1_request_init(&r->req, r->hdrs, r->hdrs_cap);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        size_t want = len < lim.max_header_bytes + 1 ? len : lim.max_header_bytes + 1;
        if (want > 0) {
            const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
            if (!buf)
                goto out_of_memory;
            ssize_t n = http1_parse_request(buf, want, &lim, &r->req);
            if (n == HTTP1_E_TOO_MANY_HEADERS && r->hdrs_cap < lim.max_headers + 1) {
                /* The header array starts small (a waiting request holds
                 * it); grow it to the limit and parse again. */
                struct http1_header *more =
                    realloc(r->hdrs, (lim.max_headers + 1) * sizeof(*r->hdrs));
                if (!more)
                    goto out_of_memory;
                r->hdrs = more;
                r->hdrs_cap = lim.max_headers + 1;
                http1_request_init(&r->req, r->hdrs, r->hdrs_cap);
                continue;
            }
            if (n > 0) {
                /* Copy the head into a buffer of its own size: the views
                 * stay valid while the body and pipelined bytes move on,
                 * and a waiting request does not hold the read buffer. */
                char *head = grow(&r->head, &r->head_cap, (size_t)n, 1);
                if (!head)
                    goto out_of_memory;
                memcpy(head, buf, (size_t)n);
                r->head_len = (size_t)n;
                http1_request_rebase(&r->req, buf, head);
                evbuffer_drain(in, (size_t)n);
                return 0;
            }
            if (n != HTTP1_INCOMPLETE) {
                r->error = http1_error_str((int)n);
                keep_method(r, in);
                return http1_error_status((int)n);
            }
        }
        if (io_eof(r->client))
            return -1;
        struct io_want w = {.stream = r->client, .events = IO_READABLE, .read_min = len + 1};
        int rc = io_wait(&w, 1, deadline);
        if (rc == -ETIMEDOUT) {
            r->error = "request head timed out (client_header)";
            keep_method(r, in);
            return len > 0 ? 408 : -1;
        }
        if (rc < 0)
            return -1;
    }

out_of_memory:
    r->error = "out of memory reading the request head";
    return 503;
}

/* Normalises path and host and finds the route. Returns 0, or an HTTP
 * status to answer (400 for a bad path or host, 404 for no route). */
static int route_request(struct request *r)
{
    /* Path and host share one buffer; neither grows when normalised. */
    size_t hcap = r->req.host ? r->req.host_len + 1 : 0;
    r->path = grow(&r->pathbuf, &r->pathbuf_cap, r->req.path_len + 1 + hcap, 1);
    if (!r->path)
        return 503;
    ssize_t n = headers_path_normalise(r->req.path, r->req.path_len, r->path, r->req.path_len + 1);
    if (n < 0) {
        r->error = http1_error_str((int)n);
        return 400;
    }
    r->path_len = (size_t)n;
    if (r->req.host) {
        r->host = r->pathbuf + r->req.path_len + 1;
        n = headers_host_normalise(r->req.host, r->req.host_len, r->host, hcap);
        if (n < 0) {
            r->error = "invalid Host";
            return 400;
        }
        r->host_len = (size_t)n;
    }
    r->route = route_find(r->cfg, r->req.method_str, r->req.method_len, r->host, r->host_len,
                          r->path, r->path_len);
    if (!r->route) {
        r->error = "no route matches the request";
        return 404;
    }
    r->tmo = &r->route->timeouts;
    if (r->route->reject_path_params && headers_path_has_params(r->path, r->path_len)) {
        r->error = "path parameters (;) refused by the route";
        return 400;
    }
    return 0;
}

/* True when the request carries a body Ferry has not read. */
static bool body_unread(const struct request *r)
{
    return (r->req.body == HTTP1_BODY_LENGTH && r->req.content_length > 0) ||
           r->req.body == HTTP1_BODY_CHUNKED;
}

/* ---- forwarding: acquire, send, await the answer, relay it, release ------------------ */

/*
 * Proxies the request to its route's upstream and the response back.
 * Retries once, on a fresh connection, when a reused one fails before any
 * response byte and the request is idempotent or its body is untouched;
 * and on another server per the upstream's retries (retry_elsewhere).
 */
static void forward(struct request *r)
{
    const struct config_upstream *up = r->route->upstream;
    uint64_t max_body = r->route->max_body_bytes;
    body_init(&r->req_body, r->req.body, r->req.content_length, r->req.body == HTTP1_BODY_CHUNKED,
              max_body);
    struct proxy_scratch *sc = scratch_of(r->w);
    bool *tried = NULL;
    if (up->retry_attempts && up->nservers > 1 && sc &&
        grow(&sc->tried, &sc->tried_cap, up->nservers, sizeof(bool))) {
        tried = sc->tried;
        memset(tried, 0, up->nservers * sizeof(bool));
    }
    unsigned retries_left = up->retry_attempts;

    bool fresh = false;
    for (;;) {
        int server = upstream_pick(r->w->upstreams, up, tried);
        r->upstream_server = up->servers[server].addr.text;
        r->server = &up->servers[server];
        bool reused = false;
        int64_t t0 = loop_now();
        int err = upstream_acquire(r->w->upstreams, up, (unsigned)server, fresh,
                                   phase_deadline(r, r->tmo->upstream_connect), r->client, &r->uc,
                                   &reused);
        if (err == -ECANCELED || err == -ECONNABORTED) {
            r->status = 499;
            r->error = "client closed the connection";
            r->keep_alive = false;
            return;
        }
        if (err < 0) {
            /* Out of descriptors or memory is Ferry's state, and a server
             * at max_connections is busy, not failing. */
            if (!out_of_resources(err) && err != -EBUSY)
                upstream_report(r->w->upstreams, up, (unsigned)server, false);
            if (retry_elsewhere(r, tried, server, &retries_left, CONFIG_RETRY_CONNECT_ERROR, 0)) {
                fresh = false;
                continue;
            }
            answer_connect_error(r, err);
            return;
        }
        r->connect_ms = ms_since(t0);
        /* The head is serialised straight into the connection's output (a
         * retry builds it again: it depends on the server, host_header). */
        struct io_stream *us = upstream_stream(r->uc);
        int built = build_upstream_head(r, &up->servers[server], io_output(us));
        if (built < 0) {
            upstream_release(r->uc, evbuffer_get_length(io_output(us)) == 0);
            r->uc = NULL;
            if (built == -ENOMEM)
                answer_error(r, 503, "out of memory");
            else
                answer_error(r, 400, "request head cannot be forwarded");
            return;
        }
        t0 = loop_now();
        enum fail f = exchange(r, us);
        r->header_ms = ms_since(t0);
        /* A reused connection that closed, or said something that is not a
         * response (stray bytes of an earlier answer), before any response
         * to this request: once more on a fresh connection. */
        if ((f == FAIL_UP_CLOSED || f == FAIL_UP_BAD) && reused && !fresh &&
            !r->resp_started && (idempotent(r->req.method) || r->req_body.bytes == 0)) {
            r->error = NULL;
            upstream_release(r->uc, false);
            r->uc = NULL;
            fresh = true;
            continue;
        }
        if (f == FAIL_NONE)
            upstream_report(r->w->upstreams, up, (unsigned)server, true);
        else if (f == FAIL_UP_CLOSED || f == FAIL_UP_TIMEOUT || f == FAIL_UP_SEND_TIMEOUT ||
                 f == FAIL_UP_BAD)
            upstream_report(r->w->upstreams, up, (unsigned)server, false);
        /* Another server, per the upstream's retries: after a reset, a
         * timeout or a 502/503/504 (that answer is dropped). */
        unsigned cond = f == FAIL_UP_CLOSED    ? CONFIG_RETRY_RESET
                        : f == FAIL_UP_TIMEOUT ? CONFIG_RETRY_TIMEOUT
                        : f != FAIL_NONE       ? 0
                        : r->resp.status == 502 ? CONFIG_RETRY_502
                        : r->resp.status == 503 ? CONFIG_RETRY_503
                        : r->resp.status == 504 ? CONFIG_RETRY_504
                                                : 0;
        if (cond && retry_elsewhere(r, tried, server, &retries_left, cond,
                                    f == FAIL_NONE ? r->resp.status : 0)) {
            r->error = NULL;
            r->resp_started = false;
            upstream_release(r->uc, false);
            r->uc = NULL;
            fresh = false;
            continue;
        }
        switch (f) {
        case FAIL_NONE:
            break;
        case FAIL_UP_CLOSED:
            answer_error(r, 502, "upstream closed the connection without answering");
            goto out_close_upstream;
        case FAIL_UP_BAD:
            answer_error(r, 502, "upstream sent an invalid response");
            goto out_close_upstream;
        case FAIL_UP_TIMEOUT:
            answer_error(r, 504, "upstream timed out (upstream_header)");
            goto out_close_upstream;
        case FAIL_UP_SEND_TIMEOUT:
            answer_error(r, 504, "upstream stopped reading the request (upstream_send)");
            goto out_close_upstream;
        case FAIL_CLIENT_BODY:
            answer_error(r, 400, r->error ? r->error : "invalid request body");
            r->linger = true;
            goto out_close_upstream;
        case FAIL_BODY_TOO_LARGE:
            answer_error(r, 413, "request body too large");
            r->linger = true;
            goto out_close_upstream;
        case FAIL_CLIENT_TIMEOUT:
            answer_error(r, 408, "request body timed out (client_body)");
            goto out_close_upstream;
        case FAIL_CLIENT_GONE:
        case FAIL_NOMEM:
            r->status = 499;
            r->error = "client closed the connection";
            r->keep_alive = false;
            goto out_close_upstream;
        }
        break;
    }

    if (r->resp.status == 101) {
        if (!r->req.upgrade_websocket || !r->resp.upgrade) {
            answer_error(r, 502, "upstream switched protocols without an upgrade request");
            goto out_close_upstream;
        }
        r->keep_alive = false;
        if (send_response(r, upstream_stream(r->uc)) < 0)
            goto out_close_upstream;
        r->tunnel_uc = r->uc;
        r->uc = NULL;
        return;
    }
    /* An early answer: the upstream spoke before the whole body was sent.
     * Forward it; the body's rest is drained by a lingering close. */
    bool early = !r->req_body.done;
    if (early) {
        r->keep_alive = false;
        r->linger = true;
    }
    struct io_stream *us = upstream_stream(r->uc);
    if (send_response(r, us) < 0) {
        r->keep_alive = false;
        r->linger = false;
        goto out_close_upstream;
    }
    bool reusable = !early && r->resp.keep_alive && r->resp_body.in != HTTP1_BODY_CLOSE;
    upstream_release(r->uc, reusable);
    r->uc = NULL;
    return;

out_close_upstream:
    if (r->uc)
        upstream_release(r->uc, false);
    r->uc = NULL;
}

/*
 * Serialises the head sent upstream into a fresh evbuffer (kept for a
 * retry): the rewritten path, the forwarded headers, one framing header.
 * Returns 0 or -ENOMEM / -ENOSPC.
 */
static int build_upstream_head(struct request *r, const struct config_server *server,
                               struct evbuffer *dst)
{
    const struct config_route *rt = r->route;
    const struct config_upstream *up = rt->upstream;
    struct proxy_scratch *sc = scratch_of(r->w);
    const struct config_header_rules *rules = &rt->request_headers;
    size_t cap = r->path_len + (rt->add_prefix ? strlen(rt->add_prefix) : 0) + 2;
    size_t nout = r->req.nheaders + EXTRA_HEADERS + rules->nset + rules->nadd;
    if (!sc || !grow(&sc->path, &sc->path_cap, cap, 1) ||
        !grow(&sc->buf, &sc->buf_cap, r->head_len + 1024, 1) ||
        !grow(&sc->out, &sc->out_cap, nout, sizeof(*sc->out)))
        return -ENOMEM;
    size_t plen = headers_path_rewrite(
        r->path, r->path_len, rt->strip_prefix, rt->strip_prefix ? strlen(rt->strip_prefix) : 0,
        rt->add_prefix, rt->add_prefix ? strlen(rt->add_prefix) : 0, sc->path, sc->path_cap);
    if (plen >= sc->path_cap)
        return -ENOSPC;
    struct headers_forward fwd = {
        .trusted_peer = config_trusted(r->cfg, (const struct sockaddr *)&r->conn->peer),
        .client_addr = r->conn->client,
        .new_request_id = r->new_id,
        .tunnel = r->req.upgrade_websocket,
        .underscores_in_headers = rt->underscores_in_headers,
    };
    upstream_host(r, up, server, &fwd.host, &fwd.host_len);
    int n = headers_forward_request(&r->req, &fwd, sc->out, sc->out_cap, sc->buf, sc->buf_cap);
    if (n >= 0)
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, rules->set, rules->nset, rules->add,
                            rules->nadd, rules->remove, rules->nremove);
    if (n < 0)
        return n;
    r->id = fwd.request_id;
    r->id_len = fwd.request_id_len;
    struct http1_head_out h = {
        .method = r->req.method_str,
        .method_len = r->req.method_len,
        .path = sc->path,
        .path_len = plen,
        .query = r->req.query,
        .query_len = r->req.query_len,
        .headers = sc->out,
        .nheaders = (size_t)n,
        .body = r->req.body,
        .content_length = r->req.content_length,
        .fields_checked = true,
    };
    return write_head(dst, &h, http1_write_request_head);
}

/* The Host sent upstream, per the upstream's host_header. */
static void upstream_host(const struct request *r, const struct config_upstream *up,
                          const struct config_server *server, const char **host, size_t *len)
{
    if (up->host_header == CONFIG_HOST_LITERAL) {
        *host = up->host_literal;
        *len = strlen(up->host_literal);
    } else if (up->host_header == CONFIG_HOST_UPSTREAM || !r->req.host) {
        *host = server->addr.text;
        *len = strlen(server->addr.text);
    } else {
        *host = r->req.host;
        *len = r->req.host_len;
    }
}

/*
 * Sends the request body (if any) while waiting for the response head.
 * The head was already queued on the upstream's output. Returns FAIL_NONE
 * with r->resp parsed, or a failure.
 */
static enum fail exchange(struct request *r, struct io_stream *up)
{
    struct evbuffer *cin = io_input(r->client);
    struct evbuffer *uout = io_output(up);
    struct evbuffer *uin = io_input(up);
    int64_t header_deadline = LOOP_NEVER;
    for (;;) {
        if (!r->req_body.done && evbuffer_get_length(uout) < OUT_HIGH) {
            int e = body_move(&r->req_body, cin, uout);
            if (e == HTTP1_E_BODY_TOO_LARGE)
                return FAIL_BODY_TOO_LARGE;
            if (e < 0) {
                r->error = http1_error_str(e);
                return FAIL_CLIENT_BODY;
            }
        }
        if (r->req_body.done && header_deadline == LOOP_NEVER)
            header_deadline = phase_deadline(r, r->tmo->upstream_header);
        int p = parse_response_head(r, uin);
        if (p > 0)
            return FAIL_NONE;
        if (p < 0)
            return FAIL_UP_BAD;
        if (io_eof(up))
            return evbuffer_get_length(uin) == 0 ? FAIL_UP_CLOSED : FAIL_UP_BAD;

        maybe_continue(r);
        struct io_want w[2] = {
            {.stream = up,
             .events = IO_READABLE | IO_EOF,
             .read_min = evbuffer_get_length(uin) + 1},
            {.stream = r->client, .events = IO_EOF},
        };
        int64_t deadline = header_deadline;
        bool reading_body = !r->req_body.done && evbuffer_get_length(uout) < OUT_HIGH;
        if (reading_body) {
            w[1].events |= IO_READABLE;
            w[1].read_min = evbuffer_get_length(cin) + 1;
            /* A gap between two reads, counted from the last bytes that
             * arrived, also while the upstream connect went on. */
            deadline = loop_deadline_min(io_last_read(r->client) + r->tmo->client_body * LOOP_MS,
                                         r->total_deadline);
        } else if (!r->req_body.done) {
            w[0].events |= IO_WRITABLE;
            w[0].write_below = OUT_HIGH / 2;
            deadline = phase_deadline(r, r->tmo->upstream_send);
        }
        int rc = io_wait(w, 2, deadline);
        if (rc == -ETIMEDOUT) {
            if (r->req_body.done)
                return FAIL_UP_TIMEOUT;
            return reading_body ? FAIL_CLIENT_TIMEOUT : FAIL_UP_SEND_TIMEOUT;
        }
        if (rc < 0)
            return FAIL_CLIENT_GONE;
        /* The client closing while it waits is an abort (as nginx: its
         * answer has nowhere to go); an upstream EOF is handled above. */
        if (w[1].fired & IO_EOF)
            return FAIL_CLIENT_GONE;
    }
}

/* Answers `Expect: 100-continue` before the first body byte is needed. */
static void maybe_continue(struct request *r)
{
    /* RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored. */
    if (r->req.expect_continue && r->req.version_minor >= 1 && !r->sent_continue &&
        !r->req_body.done && evbuffer_get_length(io_input(r->client)) == 0) {
        evbuffer_add(io_output(r->client), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        r->sent_continue = true;
    }
}

/*
 * Tries to parse the response head from what the upstream sent. Returns 1
 * with r->resp set, 0 when more bytes are needed, or -1 on a broken head.
 * Interim 1xx heads (100 Continue, 103) are dropped here.
 */
static int parse_response_head(struct request *r, struct evbuffer *in)
{
    struct http1_limits lim = {.max_header_bytes = r->cfg->limits.max_header_bytes,
                               .max_headers = r->cfg->limits.max_headers};
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return 0;
        size_t want = len < lim.max_header_bytes + 1 ? len : lim.max_header_bytes + 1;
        const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
        struct proxy_scratch *sc = scratch_of(r->w);
        size_t cap = lim.max_headers + 1;
        if (!buf || !sc || !grow(&sc->resp_hdrs, &sc->resp_cap, cap, sizeof(*sc->resp_hdrs))) {
            r->error = "out of memory reading the response head";
            return -1;
        }
        http1_response_init(&r->resp, sc->resp_hdrs, cap);
        ssize_t n = http1_parse_response(buf, want, &lim, r->req.method, &r->resp);
        if (n == HTTP1_INCOMPLETE)
            return 0;
        if (n < 0) {
            r->error = http1_error_str((int)n);
            return -1;
        }
        r->resp_started = true;
        if (r->resp.status >= 200 || r->resp.status == 101) {
            r->resp_head_len = (size_t)n;
            return 1;
        }
        evbuffer_drain(in, (size_t)n);
    }
}

/*
 * Sends the response head to the client and streams the body with
 * backpressure both ways. Returns 0 when the body ended cleanly, -1 when
 * it was cut short (upstream EOF, error or stall: the client connection
 * is then closed without a clean end) or the client went away.
 */
static int send_response(struct request *r, struct io_stream *up)
{
    struct http1_response *resp = &r->resp;
    struct evbuffer *uin = io_input(up);
    struct evbuffer *cout = io_output(r->client);
    r->upstream_status = resp->status;
    r->status = resp->status;

    enum http1_body down = resp->body;
    if (down == HTTP1_BODY_CHUNKED && r->req.version_minor == 0)
        down = HTTP1_BODY_CLOSE; /* an HTTP/1.0 client cannot take chunks */
    if (down == HTTP1_BODY_CLOSE)
        r->keep_alive = false;
    enum http1_body advertised = down;
    /* HEAD and 304 may advertise the length of the body they do not
     * carry; 1xx and 204 must not have a Content-Length (RFC 9110 §8.6). */
    if (down == HTTP1_BODY_NONE && resp->has_content_length &&
        (r->req.method == HTTP1_METHOD_HEAD || resp->status == 304))
        advertised = HTTP1_BODY_LENGTH;

    const struct config_header_rules *rules = &r->route->response_headers;
    size_t nout = resp->nheaders + EXTRA_HEADERS + rules->nset + rules->nadd;
    struct proxy_scratch *sc = scratch_of(r->w);
    if (!sc || !grow(&sc->out, &sc->out_cap, nout, sizeof(*sc->out)) ||
        !grow(&sc->buf, &sc->buf_cap, r->resp_head_len + 256, 1)) {
        r->error = "out of memory";
        return -1;
    }
    bool tunnel = resp->status == 101;
    int n = headers_forward_response(resp, tunnel, sc->out, sc->out_cap, sc->buf, sc->buf_cap);
    if (n >= 0)
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, rules->set, rules->nset, rules->add,
                            rules->nadd, rules->remove, rules->nremove);
    struct http1_head_out h = {
        .status = resp->status,
        .reason = resp->reason,
        .reason_len = resp->reason_len,
        .headers = sc->out,
        .nheaders = n > 0 ? (size_t)n : 0,
        .body = advertised,
        .content_length = resp->content_length,
        .connection_close = !r->keep_alive && !tunnel,
        .fields_checked = true,
    };
    int rc = n < 0 ? n : write_head(cout, &h, http1_write_response_head);
    if (rc < 0) {
        r->error = "cannot serialise the response head";
        return -1;
    }
    evbuffer_drain(uin, r->resp_head_len);

    body_init(&r->resp_body, down == HTTP1_BODY_NONE ? HTTP1_BODY_NONE : resp->body,
              resp->content_length, down == HTTP1_BODY_CHUNKED, 0);
    struct body *b = &r->resp_body;
    r->streaming = true; /* bytes_out follows resp_body.bytes from here */
    while (!b->done) {
        if (evbuffer_get_length(cout) < OUT_HIGH) {
            int e = body_move(b, uin, cout);
            if (e < 0) {
                r->error = http1_error_str(e);
                return -1;
            }
            if (b->done)
                break;
        }
        if (io_eof(up) && evbuffer_get_length(uin) == 0) {
            if (b->in == HTTP1_BODY_CLOSE && !io_error(up)) {
                b->done = true;
                break;
            }
            r->error = "upstream closed in the middle of the response body";
            return -1;
        }
        if (io_eof(r->client)) {
            r->error = "client closed during the response";
            return -1;
        }
        struct io_want w[2] = {
            {.stream = up,
             .events = IO_READABLE | IO_EOF,
             .read_min = evbuffer_get_length(uin) + 1},
            {.stream = r->client, .events = IO_EOF},
        };
        int64_t deadline;
        if (evbuffer_get_length(cout) >= OUT_HIGH) {
            w[0].events = IO_EOF;
            w[1].events |= IO_WRITABLE;
            w[1].write_below = OUT_HIGH / 2;
            deadline = phase_deadline(r, r->tmo->client_send);
        } else {
            deadline = phase_deadline(r, r->tmo->upstream_read);
        }
        size_t unsent = evbuffer_get_length(cout) >= OUT_HIGH ? io_unsent(r->client) : 0;
        int rc2 = io_wait(w, 2, deadline);
        if (rc2 == -ETIMEDOUT && unsent && io_peer_took(r->client, &unsent) &&
            (r->total_deadline == LOOP_NEVER || loop_now() < r->total_deadline))
            continue; /* still reading, below the kernel's wake-up threshold */
        if (rc2 == -ETIMEDOUT) {
            r->error = evbuffer_get_length(cout) >= OUT_HIGH
                           ? "client stopped reading (client_send)"
                           : "upstream stalled (upstream_read)";
            return -1;
        }
        if (rc2 < 0)
            return -1;
    }
    return 0;
}

/*
 * May the request go to another server after `cond` (CONFIG_RETRY_*) on
 * `server`? Only with retries left, a server not tried yet, time left,
 * and, once the request was sent, an idempotent method without a body.
 * Counts the failed attempt (status: the response dropped, 0: none).
 */
static bool retry_elsewhere(struct request *r, bool *tried, int server, unsigned *left,
                            unsigned cond, int status)
{
    const struct config_upstream *up = r->route->upstream;
    if (!tried || *left == 0 || !(up->retry_on & cond))
        return false;
    if (cond != CONFIG_RETRY_CONNECT_ERROR &&
        (!idempotent(r->req.method) || r->req.body != HTTP1_BODY_NONE))
        return false;
    if (r->total_deadline != LOOP_NEVER && loop_now() >= r->total_deadline)
        return false;
    tried[server] = true;
    size_t other = 0;
    while (other < up->nservers && tried[other])
        other++;
    if (other == up->nservers)
        return false;
    (*left)--;
    r->attempts++;
    metrics_upstream(r->w->metrics, up, &up->servers[server], status);
    return true;
}

static bool idempotent(enum http1_method m)
{
    return m == HTTP1_METHOD_GET || m == HTTP1_METHOD_HEAD || m == HTTP1_METHOD_PUT ||
           m == HTTP1_METHOD_DELETE || m == HTTP1_METHOD_OPTIONS || m == HTTP1_METHOD_TRACE;
}

/* Did a connect fail for want of Ferry's own descriptors or memory? */
static bool out_of_resources(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -ENOBUFS;
}

/* The answer for a failed connect: 504 on timeout, 503 when out of
 * descriptors or memory or when the server stayed at max_connections,
 * 502 otherwise. */
static void answer_connect_error(struct request *r, int err)
{
    if (err == -EBUSY)
        answer_error(r, 503, "upstream server at max_connections");
    else if (err == -ETIMEDOUT)
        answer_error(r, 504, "upstream connect timed out");
    else if (out_of_resources(err))
        answer_error(r, 503, "out of resources to reach the upstream");
    else
        answer_error(r, 502, "upstream connection failed");
}

/* ---- the access log ------------------------------------------------------------------ */

static void log_request(const struct request *r)
{
    double ms = ms_since(r->start);
    metrics_request(r->w->metrics, r->route, r->status, ms / 1000,
                    r->route ? r->route->upstream : NULL, r->server, r->upstream_status);
    if (!log_access_enabled())
        return;
    struct log_access a = {
        .client = r->conn->client,
        .method = r->req.method_str,
        .method_len = r->req.method_str ? r->req.method_len : 0,
        .host = r->host_len ? r->host : NULL,
        .host_len = r->host_len,
        .path = r->path ? r->path : NULL,
        .path_len = r->path_len,
        .status = r->status,
        .bytes_sent = r->streaming ? r->resp_body.bytes : r->bytes_out,
        .bytes_received = r->req_body.bytes,
        .route = r->route ? r->route->name : NULL,
        .upstream = r->route && r->route->upstream ? r->route->upstream->name : NULL,
        .upstream_server = r->upstream_server,
        .upstream_status = r->upstream_status,
        .upstream_retries = r->attempts,
        .request_id = r->id,
        .request_id_len = r->id_len,
        .duration_ms = ms,
        .upstream_connect_ms = r->upstream_server ? r->connect_ms : -1,
        .upstream_header_ms = r->upstream_status ? r->header_ms : -1,
        .error = r->error,
    };
    log_access_write(&a);
}

/* ---- answering the client ourselves -------------------------------------------------- */

/*
 * Queues a complete response (head and body) on the client's output. The
 * connection is kept only when the request was read whole (keep_alive
 * unchanged) and the status is not a protocol error.
 */
static void answer(struct request *r, int status, const char *content_type, const char *body,
                   size_t body_len, const char *extra_headers,
                   const struct config_header_rules *rules)
{
    struct evbuffer *out = io_output(r->client);
    r->status = status;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, http1_reason(status));
    if (content_type && !rule_names(rules, "Content-Type"))
        evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    evbuffer_add_printf(out, "Content-Length: %zu\r\n", body_len);
    if (r->id_len && !rule_names(rules, "X-Request-Id"))
        evbuffer_add_printf(out, "X-Request-Id: %.*s\r\n", (int)r->id_len, r->id);
    if (extra_headers)
        evbuffer_add(out, extra_headers, strlen(extra_headers));
    for (size_t i = 0; rules && i < rules->nset + rules->nadd; i++) {
        const struct http1_header *h =
            i < rules->nset ? &rules->set[i] : &rules->add[i - rules->nset];
        evbuffer_add_printf(out, "%s: %s\r\n", h->name, h->value);
    }
    if (!r->keep_alive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
    if (r->req.method != HTTP1_METHOD_HEAD && body_len)
        evbuffer_add(out, body, body_len);
    r->bytes_out = body_len;
}

/* Does a route's rule set or remove the field `name`? */
static bool rule_names(const struct config_header_rules *rules, const char *name)
{
    size_t len = strlen(name);
    return rules && (headers_named_in(name, len, rules->set, rules->nset) ||
                     headers_named_in(name, len, rules->remove, rules->nremove));
}

/* An error of Ferry's own, as JSON: {"error", "status", "request_id"}. */
static void answer_error(struct request *r, int status, const char *why)
{
    char body[512];
    size_t n = conn_error_json(body, sizeof(body), status, why, r->id, r->id_len);
    if (!r->error)
        r->error = why;
    if (status >= 400 && status != 404 && status != 502 && status != 503 && status != 504)
        r->keep_alive = false;
    answer(r, status, "application/json", body, n, status == 503 ? "Retry-After: 1\r\n" : NULL,
           NULL);
}

/* ---- bodies -------------------------------------------------------------------------- */

static void body_init(struct body *b, enum http1_body in, uint64_t length, bool chunk_out,
                      uint64_t max_body)
{
    memset(b, 0, sizeof(*b));
    b->in = in;
    b->chunk_out = chunk_out;
    b->remaining = length;
    struct http1_limits lim = {.max_body_bytes = max_body};
    if (in == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&b->dec, &lim);
    b->done = in == HTTP1_BODY_NONE || (in == HTTP1_BODY_LENGTH && length == 0);
    if (b->done && b->chunk_out)
        b->chunk_out = false;
}

/*
 * Moves what `in` holds of the body to `out`, re-framing chunked bodies
 * (extensions and trailers dropped). Never waits. Returns 0 or an
 * HTTP1_E_* error. b->done turns true at the body's end (for CLOSE
 * framing the caller decides at EOF).
 */
static int body_move(struct body *b, struct evbuffer *in, struct evbuffer *out)
{
    size_t len = evbuffer_get_length(in);
    if (b->done || len == 0)
        return 0;
    if (b->in == HTTP1_BODY_LENGTH) {
        size_t n = len < b->remaining ? len : (size_t)b->remaining;
        evbuffer_remove_buffer(in, out, n);
        b->remaining -= n;
        b->bytes += n;
        b->done = b->remaining == 0;
        return 0;
    }
    if (b->in == HTTP1_BODY_CLOSE) {
        evbuffer_remove_buffer(in, out, len);
        b->bytes += len;
        return 0;
    }
    while (!b->done && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t off = 0, dlen = 0;
        ssize_t n = http1_chunked_decode(&b->dec, v.iov_base, v.iov_len, &off, &dlen);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        if (dlen > 0) {
            evbuffer_drain(in, off);
            if (b->chunk_out) {
                char line[HTTP1_CHUNK_HEADER_MAX];
                evbuffer_add(out, line, http1_chunk_header(line, dlen));
            }
            evbuffer_remove_buffer(in, out, dlen);
            if (b->chunk_out)
                evbuffer_add(out, HTTP1_CHUNK_END, 2);
            evbuffer_drain(in, (size_t)n - off - dlen);
            b->bytes += dlen;
        } else {
            evbuffer_drain(in, (size_t)n);
        }
        if (http1_chunked_done(&b->dec)) {
            b->done = true;
            if (b->chunk_out)
                evbuffer_add(out, HTTP1_LAST_CHUNK, 5);
        }
    }
    return 0;
}

/* ---- writing heads ------------------------------------------------------------------- */

/* Room a head needs, give or take: the writers are asked once in the
 * common case, twice only when the estimate was short. */
static size_t head_estimate(const struct http1_head_out *h)
{
    size_t n = 128 + h->path_len + h->query_len + h->reason_len + h->method_len;
    for (size_t i = 0; i < h->nheaders; i++)
        n += h->headers[i].name_len + h->headers[i].value_len + 4;
    return n;
}

/* Serialises h with `writer` straight into dst's free space. Returns 0,
 * HTTP1_E_SERIALIZE, or -ENOMEM. */
static int write_head(struct evbuffer *dst, const struct http1_head_out *h,
                      ssize_t (*writer)(char *buf, size_t cap, const struct http1_head_out *h))
{
    size_t cap = head_estimate(h);
    for (int pass = 0; pass < 2; pass++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(dst, (ev_ssize_t)cap, &v, 1) < 1)
            return -ENOMEM;
        ssize_t need = writer(v.iov_base, v.iov_len, h);
        if (need < 0)
            return (int)need;
        if ((size_t)need < v.iov_len) {
            v.iov_len = (size_t)need;
            evbuffer_commit_space(dst, &v, 1);
            return 0;
        }
        cap = (size_t)need + 1;
    }
    return -ENOMEM;
}

/* ---- request objects, pooled per worker, and scratch --------------------------------- */

/* A request object from the worker's pool, or a new one. NULL when out
 * of memory. */
static struct request *request_get(struct worker *w)
{
    struct proxy_scratch *sc = scratch_of(w);
    size_t cap = REQUEST_HEADERS_START;
    if (sc && sc->free) {
        struct request *r = sc->free;
        sc->free = r->next_free;
        sc->nfree--;
        return r;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->hdrs = malloc(cap * sizeof(*r->hdrs));
    r->hdrs_cap = cap;
    if (!r->hdrs) {
        request_free(r);
        return NULL;
    }
    return r;
}

static void request_put(struct worker *w, struct request *r)
{
    struct proxy_scratch *sc = w->proxy_scratch;
    if (!sc || sc->nfree >= REQUEST_POOL_CAP) {
        request_free(r);
        return;
    }
    if (r->head_cap > 4096) { /* a large head: do not keep its buffer */
        free(r->head);
        r->head = NULL;
        r->head_cap = 0;
    }
    r->next_free = sc->free;
    sc->free = r;
    sc->nfree++;
}

/* Clears what one request leaves behind, keeping the pooled buffers. */
static void request_reset(struct request *r, struct conn *c)
{
    memset(r, 0, offsetof(struct request, next_free));
    r->conn = c;
    r->w = c->w;
    r->cfg = c->w->cfg;
    r->client = c->s;
    r->tmo = &r->cfg->timeouts;
    r->start = loop_now();
    r->total_deadline = r->tmo->total > 0 ? r->start + r->tmo->total * LOOP_MS : LOOP_NEVER;
}

static void request_free(struct request *r)
{
    free(r->head);
    free(r->hdrs);
    free(r->pathbuf);
    free(r);
}

void proxy_worker_fini(struct worker *w)
{
    struct proxy_scratch *sc = w->proxy_scratch;
    if (!sc)
        return;
    while (sc->free) {
        struct request *r = sc->free;
        sc->free = r->next_free;
        request_free(r);
    }
    free(sc->out);
    free(sc->resp_hdrs);
    free(sc->buf);
    free(sc->path);
    free(sc->tried);
    free(sc);
    w->proxy_scratch = NULL;
}

/* Grows *buf to hold need bytes. Returns it, or NULL when out of memory. */
static void *grow(void *bufp, size_t *cap, size_t need, size_t elem)
{
    void **buf = bufp;
    if (*buf && *cap >= need)
        return *buf;
    size_t n = need < 64 ? 64 : need;
    void *fresh = realloc(*buf, n * elem);
    if (!fresh)
        return NULL;
    *buf = fresh;
    *cap = n;
    return fresh;
}

static struct proxy_scratch *scratch_of(struct worker *w)
{
    if (!w->proxy_scratch)
        w->proxy_scratch = calloc(1, sizeof(struct proxy_scratch));
    return w->proxy_scratch;
}

/* ---- time ---------------------------------------------------------------------------- */

static int64_t phase_deadline(const struct request *r, int64_t ms)
{
    int64_t d = ms > 0 ? loop_now() + ms * LOOP_MS : LOOP_NEVER;
    return loop_deadline_min(d, r->total_deadline);
}

static double ms_since(int64_t t0)
{
    return (double)(loop_now() - t0) / 1e6;
}
