/* conn: see conn.h. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "config.h"
#include "h1side.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "proxyproto.h"
#include "tls.h"
#include "tunnel.h"
#include "upstream.h"
#include "worker.h"

_Static_assert(CONFIG_MAX_HEADER_BYTES_LIMIT <= CONN_READ_MAX,
               "the largest max_header_bytes must fit in the client read buffer");

static void on_idle(struct io_stream *s, unsigned what, void *arg);
static void on_request_done(struct request_side *side, bool keep_alive, bool linger,
                            struct upstream_conn *tunnel);
static void conn_end_logged(struct conn *c);
static void conn_close(struct conn *c);

/*
 * Deadlines without a timer per connection: the worker's connections that
 * wait (for a first head, a next request, a lingering client's end) are in
 * one of three queues, each in deadline order (a queue's connections all
 * got the same timeout, so a new one almost always goes last: a reload
 * that changes the timeout is the exception, found by walking back from
 * the tail). One timer per worker thread is pending for the earliest
 * deadline of all; re-armed only when a new deadline is earlier than the
 * one it is pending for (when it fires early, it is armed for the rest).
 * A connection with a request running is in no queue: its coroutine keeps
 * its own deadlines.
 */
static __thread struct {
    uint64_t loop; /* loop_id() the timer is assigned to; 0: none */
    int64_t armed; /* the instant it is pending for; 0: not pending */
    struct event timer;
    struct conn *head[CONN_Q_COUNT], *tail[CONN_Q_COUNT];
} dq;

static void dq_fire(evutil_socket_t fd, short what, void *arg);

static void dq_arm(struct loop *loop, int64_t at)
{
    if (dq.loop != loop_id(loop)) {
        /* First use on this thread, or its loop was freed (freeing the
         * base took the timer out of it; its connections were closed). */
        evtimer_assign(&dq.timer, loop_base(loop), dq_fire, loop);
        dq.loop = loop_id(loop);
        dq.armed = 0;
        memset(dq.head, 0, sizeof(dq.head));
        memset(dq.tail, 0, sizeof(dq.tail));
    }
    if (dq.armed && dq.armed <= at)
        return;
    int64_t left = at - loop_now();
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = (time_t)(left / LOOP_SEC),
                         .tv_usec = (suseconds_t)((left % LOOP_SEC) / 1000)};
    dq.armed = event_add(&dq.timer, &tv) == 0 ? at : 0;
}

/* Takes c out of its queue, if it is in one. */
static void dq_remove(struct conn *c)
{
    unsigned q = c->dq;
    if (q == CONN_Q_NONE)
        return;
    if (c->dq_prev)
        c->dq_prev->dq_next = c->dq_next;
    else
        dq.head[q] = c->dq_next;
    if (c->dq_next)
        c->dq_next->dq_prev = c->dq_prev;
    else
        dq.tail[q] = c->dq_prev;
    c->dq_next = c->dq_prev = NULL;
    c->dq = CONN_Q_NONE;
}

/* c waits in queue q for at most ms from now. */
static void wait_for(struct conn *c, unsigned q, int64_t ms)
{
    dq_remove(c);
    int64_t due = loop_now() + ms * LOOP_MS;
    dq_arm(c->side.w->loop, due); /* first: it resets the queues of a new loop */
    struct conn *after = dq.tail[q];
    while (after && after->due > due)
        after = after->dq_prev;
    c->due = due;
    c->dq = (uint8_t)q;
    c->dq_prev = after;
    c->dq_next = after ? after->dq_next : dq.head[q];
    if (c->dq_next)
        c->dq_next->dq_prev = c;
    else
        dq.tail[q] = c;
    if (after)
        after->dq_next = c;
    else
        dq.head[q] = c;
}

/* The timer: ends the connections whose deadline passed, then is armed
 * for the earliest one left. */
static void dq_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *loop = arg;
    dq.armed = 0;
    int64_t now = loop_now(), next = 0;
    for (unsigned q = 1; q < CONN_Q_COUNT; q++) {
        struct conn *c;
        while ((c = dq.head[q]) && c->due <= now) {
            dq_remove(c);
            if (q == CONN_Q_LINGER)
                conn_close(c);
            else
                conn_end_logged(c);
        }
        if (c && (!next || c->due < next))
            next = c->due;
    }
    if (next)
        dq_arm(loop, next);
}

/* Dotted-quad text of an IPv4 address into out (16 bytes at least):
 * glibc's inet_ntop formats it with sprintf, a tenth of a new
 * connection's instructions. */
static void ipv4_text(const uint8_t *a, char *out)
{
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *out++ = (char)('0' + v / 100);
        if (v >= 10)
            *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
        *out++ = i < 3 ? '.' : '\0';
    }
}

/* The peer's address as text; a v4-mapped IPv6 address prints as IPv4. */
static void peer_text(const struct sockaddr *sa, char *out, size_t cap)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET && cap >= INET_ADDRSTRLEN) {
        ipv4_text((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, out);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a) && cap >= INET_ADDRSTRLEN)
            ipv4_text(&a->s6_addr[12], out);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)cap);
    } else {
        snprintf(out, cap, "unix");
    }
}

/* The peer's address (an AF_UNIX one: its family only) and its text. */
static void set_peer(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
    if (len > sizeof(c->peer))
        len = sizeof(c->peer);
    memcpy(&c->peer, sa, len);
    c->peer_len = len;
    peer_text(sa, c->client, sizeof(c->client));
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len,
                 const struct config_listener *l)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    struct io_stream *s = io_stream_accepted(w->loop, fd, CONN_READ_MAX);
    if (!s) {
        free(c);
        return;
    }
    if (l && l->tls) {
        /* The handshake runs in the stream's reads; client_header (the
         * deadline below) bounds it as it bounds a head that never comes. */
        if (tls_accept(s, l->tls, l->proxy_protocol) != 0) {
            io_stream_free(s);
            free(c);
            return;
        }
        c->tls = true;
        c->hs_cfg = config_ref((struct config *)w->cfg);
    }
    c->side = (struct request_side){.w = w,
                                    .ops = &h1side_ops,
                                    .s = s,
                                    .watch = s,
                                    .read_max = CONN_READ_MAX,
                                    .peer = (const struct sockaddr *)&c->peer,
                                    .client = c->client,
                                    .tls = c->tls,
                                    .done = on_request_done};
    set_peer(c, peer, len);
    c->await_proxy = l && l->proxy_protocol;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    WORKER_STAT_ADD(w, connections, 1);
    io_set_idle(c->side.s, on_idle, c);
    /* Until its first byte, a new connection has client_header to send a
     * head (a silent connection is a slowloris as much as a slow one). */
    wait_for(c, CONN_Q_HEADER, w->cfg->timeouts.client_header);
    /* The request has usually arrived by the end of this loop turn: read
     * it then, without polling the socket first. */
    io_read_soon(c->side.s);
    /* ...and if it finds nothing, a connection among many waits in the
     * worker's idle set, with no event of its own. */
    if (WORKER_STAT_GET(w, connections) > CONN_PARK_ABOVE)
        io_park(c->side.s);
}

static void conn_close(struct conn *c)
{
    struct worker *w = c->side.w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    dq_remove(c);
    io_stream_free(c->side.s);
    config_unref(c->hs_cfg);
    WORKER_STAT_SUB(w, connections, 1);
    free(c);
}

/* Discards what the lingering client sent; false once it sent more than
 * CONN_LINGER_BYTES (then the connection closes: draining is for a body
 * in flight, not a sink for uploads). */
static bool linger_drain(struct conn *c)
{
    size_t n = evbuffer_get_length(io_input(c->side.s));
    evbuffer_drain(io_input(c->side.s), n);
    if (n > CONN_LINGER_BYTES - c->lingered) /* never wraps: the sum stays in 32 bits */
        return false;
    c->lingered += (uint32_t)n;
    return true;
}

/* Lingering close: our answer is out (flushed, write side shut by the
 * request); discard what the client still sends until it closes,
 * CONN_LINGER_MS pass or CONN_LINGER_BYTES were discarded. No coroutine
 * is held. */
static void conn_linger(struct conn *c)
{
    c->lingering = true;
    c->lingered = 0;
    linger_drain(c);
    io_set_reading(c->side.s, true);
    wait_for(c, CONN_Q_LINGER, CONN_LINGER_MS);
}

/* Answers from a callback, without a coroutine (no stack could be had, or
 * too many requests are in flight), then closes lingering: the request
 * was not read, so the connection cannot carry another. The answer goes
 * through the same writer, counters and access log as any request's. */
static void answer_now(struct conn *c, int status, const char *why)
{
    struct request *r = request_get(c->side.w);
    if (!r) {
        conn_close(c);
        return;
    }
    request_reset(r, &c->side);
    request_id_decide(r);
    request_answer_json(r, status, why, true);
    io_kick(c->side.s);
    request_log(r);
    request_put(c->side.w, r);
    conn_linger(c);
    if (evbuffer_get_length(io_output(c->side.s)) == 0)
        io_shutdown_write(c->side.s); /* the answer is out: show its end */
}

static void start_request(struct conn *c)
{
    struct worker *w = c->side.w;
    if (WORKER_STAT_GET(w, requests_live) >= w->cfg->max_requests) {
        static __thread int64_t last; /* per worker */
        log_ratelimited(&last, 1000, CONFIG_LOG_WARN,
                        "worker %u: max_requests (%u) reached: answering 503", w->id,
                        w->cfg->max_requests);
        answer_now(c, 503, "too many requests in flight");
        return;
    }
    int r = loop_spawn(w->loop, h1side_serve, &c->side, &c->req);
    if (r < 0) {
        static __thread int64_t last; /* per worker */
        log_ratelimited(&last, 1000, CONFIG_LOG_ERROR,
                        "worker %u: cannot map a coroutine stack (%s): answering 503; raise "
                        "vm.max_map_count or lower max_requests",
                        w->id, strerror(-r));
        c->req = NULL;
        answer_now(c, 503, "out of memory for a new request");
        return;
    }
    dq_remove(c); /* the request keeps its own deadlines */
    WORKER_STAT_ADD(w, requests_live, 1);
}

static void on_idle(struct io_stream *s, unsigned what, void *arg)
{
    struct conn *c = arg;
    const char *why;
    if (c->hs_cfg && !tls_failed(s, &why)) {
        config_unref(c->hs_cfg); /* the handshake is over */
        c->hs_cfg = NULL;
    }
    if (c->lingering) {
        if ((what & IO_EOF) || !linger_drain(c))
            conn_close(c);
        else
            io_set_reading(s, true);
        return;
    }
    if (c->req)
        return; /* spawned, not yet waiting: it will see this itself */
    if (c->await_proxy && c->tls) {
        /* TLS read the header from the socket before the handshake. */
        struct proxyproto_result pr;
        c->await_proxy = false;
        if (tls_proxy_header(s, &pr) && !pr.local) {
            set_peer(c, (const struct sockaddr *)&pr.src, pr.src_len);
        }
    }
    if (c->await_proxy) {
        struct evbuffer *in = io_input(s);
        size_t len = evbuffer_get_length(in);
        size_t want = len < PROXYPROTO_MAX_HEADER ? len : PROXYPROTO_MAX_HEADER;
        struct proxyproto_result pr;
        ssize_t n = proxyproto_parse(want ? evbuffer_pullup(in, (ssize_t)want) : NULL, want, &pr);
        if (n == PROXYPROTO_INCOMPLETE && !(what & IO_EOF)) {
            io_poll(s); /* the rest of the header is awaited */
            return;
        }
        if (n < 0) {
            static __thread int64_t last; /* per worker */
            log_ratelimited(&last, 1000, CONFIG_LOG_WARN, "client %s: %s: closing", c->client,
                            proxyproto_error_str(n));
            conn_close(c);
            return;
        }
        evbuffer_drain(in, (size_t)n);
        c->await_proxy = false;
        if (!pr.local) {
            set_peer(c, (const struct sockaddr *)&pr.src, pr.src_len);
        }
        if (evbuffer_get_length(in) == 0 && !(what & IO_EOF)) {
            io_poll(s); /* the request is awaited */
            return;
        }
    }
    if (what & IO_EOF) {
        conn_end_logged(c);
        return;
    }
    start_request(c);
}

/* A connection that ends before its first request: a TLS handshake that
 * failed is logged (rate-limited per worker) with why. */
static void conn_end_logged(struct conn *c)
{
    const char *why;
    if (c->tls && !c->served && tls_failed(c->side.s, &why)) {
        static __thread int64_t last; /* per worker */
        log_ratelimited(&last, 1000, CONFIG_LOG_WARN, "client %s: TLS: %s: closing", c->client,
                        why);
    }
    conn_close(c);
}

/*
 * The request coroutine's last response is complete: keep_alive leaves
 * the connection idle (client_idle timer, no coroutine); otherwise it
 * closes, lingering when linger is set (an answer with request bytes left
 * unread).
 */
static void finish_request(struct conn *c, bool keep_alive, bool linger)
{
    struct worker *w = c->side.w;
    c->req = NULL;
    c->served++;
    WORKER_STAT_SUB(w, requests_live, 1);
    if (keep_alive && !c->side.close_after && !w->draining) {
        wait_for(c, CONN_Q_IDLE, w->cfg->timeouts.client_idle);
        /* Bytes that arrived while the response finished start the next
         * request on the next loop turn (the idle callback only fires on
         * new reads). Otherwise, when the worker has many connections,
         * the connection holds no buffers and no event until its next
         * bytes (io_park: its socket waits in the worker's idle set); a
         * few are polled as they are and keep their buffers (a park and
         * wake per request costs an epoll_ctl and ~300 instructions,
         * their buffers and events little). */
        if (io_input_length(c->side.s) > 0) {
            io_poll(c->side.s);
            start_request(c);
            return;
        }
        /* Reading pauses while the input holds read_max bytes and resumes
         * when a coroutine awaits more: one that drained a full input
         * without a wait after (pipelined heads that ended where the input
         * was full, or empty lines) left it paused, and io_poll resumes it
         * (else the next requests would wait in the socket until
         * client_idle closed it). A parked socket is polled in the idle
         * set whatever its read event. */
        if (WORKER_STAT_GET(w, connections) > CONN_PARK_ABOVE)
            io_park(c->side.s);
        else
            io_poll(c->side.s);
        return;
    }
    if (linger)
        conn_linger(c);
    else
        conn_close(c);
}

static void on_tunnel_close(void *arg, const struct tunnel_stats *st)
{
    struct conn *c = arg;
    (void)st;
    upstream_release(c->tunnel_uc, false);
    c->tunnel_uc = NULL;
    c->tunnel = NULL;
    c->tunneled = false;
    conn_close(c);
}

/* After a 101: the connection becomes a tunnel to uc (no coroutine). */
static void start_tunnel(struct conn *c, struct upstream_conn *uc)
{
    struct worker *w = c->side.w;
    c->req = NULL;
    c->served++;
    WORKER_STAT_SUB(w, requests_live, 1);
    dq_remove(c);
    c->tunneled = true; /* the queue's links hold the tunnel from now on */
    c->tunnel = NULL;
    c->tunnel_uc = uc;
    if (tunnel_start(w->loop, c->side.s, upstream_stream(uc), w->cfg->timeouts.tunnel_idle,
                     on_tunnel_close, c, &c->tunnel) < 0) {
        upstream_release(uc, false);
        c->tunnel_uc = NULL;
        c->tunneled = false;
        conn_close(c);
    }
}

/* The request coroutine leaves its client side (request.h). */
static void on_request_done(struct request_side *side, bool keep_alive, bool linger,
                            struct upstream_conn *tunnel)
{
    struct conn *c = (struct conn *)side; /* the side is the first member */
    if (tunnel)
        start_tunnel(c, tunnel);
    else
        finish_request(c, keep_alive, linger);
}

void conn_drain(struct conn *c)
{
    if (c->tunneled && c->tunnel) {
        tunnel_stop(c->tunnel);
        return;
    }
    if (!c->req && !c->lingering)
        conn_close(c);
    else
        c->side.close_after = true;
}
