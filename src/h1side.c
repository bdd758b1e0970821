/*
 * h1side: the HTTP/1 side of the request seam. See h1side.h.
 *
 * Decision: the request body is read and the response body written by
 * the request coroutine itself, inside the flow's one wait set (client
 * readable, drained or gone, upstream readable or writable, deadline):
 * h1_wait adds the connection's stream to the flow's upstream want, so a
 * request costs no more waits than before the seam.
 */
#include "h1side.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "body.h"
#include "config.h"
#include "http1.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"
#include "tls.h"

/* Response output queued beyond this waits for the client to read. */
#define H1_OUT_HIGH (256u * 1024u)

static int read_head(struct request *r);

/* ---- the requests of one connection, in order ---------------------------------------- */

void h1side_serve(void *arg)
{
    struct request_side *side = arg;
    struct worker *w = side->w;
    struct request *r = request_of_coro(w);
    bool keep = false, linger = false;
    if (!r) {
        side->done(side, false, false, NULL);
        return;
    }
    /* Requests pipelined behind this one are served by this coroutine;
     * answers to pipelined requests are flushed together unless they pile
     * up. Each request is logged once its answer is out (or failed). */
    do {
        request_reset(r, side);
        int status = read_head(r);
        if (status < 0) {
            r->no_log = true; /* closed or idle before a whole head */
            keep = false;
        } else {
            keep = proxy_request(r, status);
        }
        linger = r->linger;
        bool more = keep && !r->tunnel_uc && evbuffer_get_length(io_input(side->s)) > 0;
        if (!more || evbuffer_get_length(io_output(side->s)) >= H1_OUT_HIGH) {
            /* client_send bounds a stall, not the whole transfer. */
            int64_t stall = r->tmo->client_send * LOOP_MS;
            if (io_flush_progress(side->s, stall, r->total_deadline) < 0) {
                keep = false;
                linger = false;
                if (!r->error)
                    r->error = "client stopped reading (client_send)";
            }
        }
        if (!r->no_log)
            request_log(r);
        if (r->tunnel_uc)
            break;
    } while (keep && evbuffer_get_length(io_input(side->s)) > 0);

    /* A lingering close shuts the write side once the answer is out, so
     * the client sees its end while its unread body is drained. */
    if (!keep && linger)
        io_shutdown_write(side->s);
    else if (!keep && !r->error && !r->no_log && !r->tunnel_uc && tls_is(side->s))
        io_shutdown_write(side->s); /* a whole answer: close_notify (RFC 8446 6.1) */
    struct upstream_conn *tunnel = r->tunnel_uc;
    request_put(w, r);
    side->done(side, keep, linger, tunnel);
}

/* ---- the request head ---------------------------------------------------------------- */

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
    char *m = cur ? request_grow(&r->head, &r->head_cap, r->req.method_len, 1) : NULL;
    if (m)
        memcpy(m, cur, r->req.method_len);
    r->req.method_str = m;
}

/* Empty lines before a request line: see h1side.h. */
bool h1side_drop_empty_lines(struct evbuffer *in)
{
    /* A pass over the bytes as they lie and a drain per few chains: a
     * flood of CRLFs costs what reading it costs, not a call per pair. */
    bool dropped = false;
    for (;;) {
        struct evbuffer_iovec v[4];
        int nv = evbuffer_peek(in, -1, NULL, v, 4);
        size_t n = 0;
        bool all = true;
        for (int i = 0; i < nv && i < 4 && all; i++) {
            const char *p = v[i].iov_base;
            size_t k = 0;
            while (k < v[i].iov_len && p[k] == ((n + k) % 2 ? '\n' : '\r'))
                k++;
            n += k;
            all = k == v[i].iov_len;
        }
        n -= n % 2; /* a CR whose LF is not there (yet) stays */
        if (n == 0)
            return dropped;
        evbuffer_drain(in, n);
        dropped = true;
        if (!all || nv < 4)
            return true; /* with len -1, evbuffer_peek says at most 4 */
    }
}

/*
 * Reads and parses one request head, trickled or pipelined, within
 * client_header from its first byte. Returns 0, an HTTP status to answer
 * (400, 408, 413, 414, 431, 501, 505), or -1 when the client closed
 * or went silent before sending a whole head (nothing to answer; empty
 * lines before a head are dropped, within the same client_header).
 */
static int read_head(struct request *r)
{
    struct io_stream *s = r->side->s;
    struct evbuffer *in = io_input(s);
    int64_t deadline = request_phase_deadline(r, r->tmo->client_header);
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
            /* A head never starts with CR: empty lines before it. They
             * do not restart client_header (as in nginx): a client
             * sending CRLFs alone is closed at its end, unanswered. */
            if (__builtin_expect(buf[0] == '\r', 0) && h1side_drop_empty_lines(in)) {
                /* Nothing of a head was parsed: start over on the rest. */
                http1_request_init(&r->req, r->hdrs, r->hdrs_cap);
                continue;
            }
            ssize_t n = http1_parse_request(buf, want, &lim, &r->req);
            if (n == HTTP1_E_TOO_MANY_HEADERS && r->hdrs_cap < lim.max_headers + 1) {
                /* The header array starts small (a waiting request holds
                 * it); grow it to the limit and parse again. */
                if (request_headers_grow(r, lim.max_headers + 1) != 0)
                    goto out_of_memory;
                http1_request_init(&r->req, r->hdrs, r->hdrs_cap);
                continue;
            }
            if (n > 0) {
                /* Copy the head into a buffer of its own size: the views
                 * stay valid while the body and pipelined bytes move on,
                 * and a waiting request does not hold the read buffer. */
                char *head = request_grow(&r->head, &r->head_cap, (size_t)n, 1);
                if (!head)
                    goto out_of_memory;
                memcpy(head, buf, (size_t)n);
                r->head_len = (size_t)n;
                http1_request_rebase(&r->req, buf, head);
                evbuffer_drain(in, (size_t)n);
                body_init(&r->req_body, r->req.body, r->req.content_length,
                          r->req.body == HTTP1_BODY_CHUNKED, 0);
                return 0;
            }
            if (n != HTTP1_INCOMPLETE) {
                r->error = http1_error_str((int)n);
                keep_method(r, in);
                return http1_error_status((int)n);
            }
            if (len >= r->side->read_max) {
                /* max_header_bytes allows more than the input can hold. */
                r->error = "request head larger than the read buffer";
                keep_method(r, in);
                return 431;
            }
        }
        if (io_eof(s))
            return -1;
        struct io_want w = {.stream = s, .events = IO_READABLE, .read_min = len + 1};
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
    {
        static __thread int64_t last; /* per worker: the error log says so too */
        log_ratelimited(&last, 1000, CONFIG_LOG_ERROR, "client %s: %s: answering 503",
                        r->side->client ? r->side->client : "-", r->error);
    }
    keep_method(r, in); /* the view is into a pullup the answer may outlive */
    return 503;
}

/* ---- the side's ops -------------------------------------------------------------------- */

/* How a response body goes on the wire: one of unknown length goes
 * chunked to an HTTP/1.1 client (as nginx: it can tell a cut body from an
 * end) and close-delimited to an HTTP/1.0 one (the connection then ends). */
static enum http1_body h1_framing(const struct request *r, enum http1_body body)
{
    return body == HTTP1_BODY_CHUNKED && r->req.version_minor == 0 ? HTTP1_BODY_CLOSE : body;
}

static int h1_write_head(struct request *r, struct side_head *sh)
{
    enum http1_body framing = h1_framing(r, sh->body);
    if (framing == HTTP1_BODY_CLOSE)
        sh->keep_alive = false;
    r->resp_body.chunk_out = framing == HTTP1_BODY_CHUNKED && !r->resp_body.done;
    struct http1_head_out h = {
        .status = sh->status,
        .reason = sh->reason,
        .reason_len = sh->reason_len,
        .headers = sh->headers,
        .nheaders = sh->nheaders,
        .body = framing,
        .content_length = sh->content_length,
        .connection_close = !sh->keep_alive && !sh->tunnel,
        .connection_keep_alive = sh->keep_alive && r->req.version_minor == 0,
        .fields_checked = true,
    };
    return reply_head(io_output(r->side->s), &h);
}

static bool h1_answer(struct request *r, struct reply *rp)
{
    rp->http10 = r->head_len && r->req.version_minor == 0;
    return reply_write(io_output(r->side->s), rp);
}

/* RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored; a client
 * already sending its body needs no invitation. */
static bool h1_interim_continue(struct request *r)
{
    if (r->req.version_minor < 1 || evbuffer_get_length(io_input(r->side->s)) > 0)
        return false;
    reply_continue(io_output(r->side->s));
    return true;
}

static bool h1_client_cert(const struct request *r, const char **subject, const char **fingerprint)
{
    return tls_client_identity(r->side->s, subject, fingerprint);
}

/* A close-delimited body's cut would read as its end: the close becomes a
 * reset. A chunked or length-framed one shows its cut by the close alone. */
static void h1_abort(struct request *r)
{
    enum http1_body in = r->resp_body.in;
    bool unknown = in == HTTP1_BODY_CHUNKED || in == HTTP1_BODY_CLOSE;
    if (unknown && h1_framing(r, HTTP1_BODY_CHUNKED) == HTTP1_BODY_CLOSE)
        io_reset_on_close(r->side->s);
}

static int h1_read_body(struct request *r, struct evbuffer *to)
{
    return body_move(&r->req_body, io_input(r->side->s), to);
}

static int h1_write_body(struct request *r, struct evbuffer *from)
{
    struct evbuffer *out = io_output(r->side->s);
    if (!from)
        return body_close_end(&r->resp_body, out);
    if (evbuffer_get_length(out) < H1_OUT_HIGH) {
        int e = body_move(&r->resp_body, from, out);
        if (e < 0)
            return e;
    }
    return evbuffer_get_length(out) >= H1_OUT_HIGH;
}

static int h1_wait(struct request *r, unsigned what, struct io_want *up, int64_t deadline)
{
    struct io_stream *s = r->side->s;
    struct io_want w[2];
    unsigned n = 0;
    if (up)
        w[n++] = *up;
    struct io_want *c = &w[n++];
    *c = (struct io_want){.stream = s, .events = IO_EOF};
    if (up && (up->events & IO_PARK) && !(what & (SIDE_BODY | SIDE_DRAINED)))
        c->events |= IO_PARK; /* the flow waits for its answer: the client's idle too */
    if (what & SIDE_BODY) {
        /* A gap between two reads, counted from the last bytes that
         * arrived, also while the upstream connect went on. */
        c->events |= IO_READABLE;
        c->read_min = evbuffer_get_length(io_input(s)) + 1;
        deadline = loop_deadline_min(io_last_read(s) + r->tmo->client_body * LOOP_MS, deadline);
    }
    size_t unsent = 0;
    if (what & SIDE_DRAINED) {
        c->events |= IO_WRITABLE;
        c->write_below = H1_OUT_HIGH / 2;
        unsent = io_unsent(s);
    }
    int rc = io_wait(w, n, deadline);
    if (up)
        up->fired = w[0].fired;
    if (rc == -ETIMEDOUT && unsent && io_peer_took(s, &unsent) &&
        (r->total_deadline == LOOP_NEVER || loop_now() < r->total_deadline))
        return 0; /* still reading, below the kernel's wake-up threshold */
    if (rc < 0)
        return rc;
    return (c->fired & IO_EOF ? SIDE_GONE : 0) | (c->fired & IO_READABLE ? SIDE_BODY : 0) |
           (c->fired & IO_WRITABLE ? SIDE_DRAINED : 0);
}

/* The connection becomes a tunnel once the 101 is out: h1side_serve hands
 * it to done(), and conn.c splices (tunnel.c, io_splice). */
static void h1_tunnel(struct request *r, struct upstream_conn *uc)
{
    r->tunnel_uc = uc;
}

const struct request_side_ops h1side_ops = {
    .write_head = h1_write_head,
    .answer = h1_answer,
    .interim_continue = h1_interim_continue,
    .client_cert = h1_client_cert,
    .abort = h1_abort,
    .read_body = h1_read_body,
    .write_body = h1_write_body,
    .wait = h1_wait,
    .tunnel = h1_tunnel,
};
