/*
 * Unit tests for the request side's seam: the request flow (proxy.c,
 * request.c) takes the head, reads the body and writes the response
 * through the side's ops only. The side here is an in-memory one with no
 * stream at all (s and watch are NULL: a reach for the client's stream
 * would crash the test), standing in for the HTTP/2 stream a later
 * transport would give.
 *
 * Ferry's own answers leave through answer; a forwarded request goes to
 * a real upstream (a loopback listener served by a thread) with its body
 * read through read_body (part of it arriving only once the flow waits)
 * and its response body written through write_body, decoded: the side
 * owns the client's framing. A side without a tunnel op gets an Upgrade
 * request forwarded as a plain one.
 *
 * A pooled upstream connection that its server closed (at once after a
 * keep-alive answer, or while the loop did not run, with a FIN or a
 * reset) is the keep-alive race: a GET on it is retried on a fresh
 * connection and answered; a POST whose body went out is answered 502
 * (it may have taken effect), and the next request finds a fresh one.
 *
 * A client whose connection failed for want of Ferry's own memory did
 * not leave: the request is logged as Ferry's 503, unanswered and
 * closed, not as the client's 499; a wait that found no memory of its
 * own answers the client, who is still there, 503.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "../src/config.h"
#include "body.h"
#include "check_helpers.h"
#include "coro.h"
#include "io.h"
#include "io_internal.h"
#include "loop.h"
#include "metrics.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"
#include "snapshot.h"
#include "upstream.h"
#include "worker.h"

/* What the in-memory side was given. */
static struct {
    int answers, heads, continues;
    int status;
    char body[512];
    bool keep_alive, must_close, body_unread;
} seen;
static bool side_keeps; /* the verdict the side returns */

static int mem_write_head(struct request *r, struct side_head *h)
{
    (void)r;
    seen.heads++;
    seen.status = h->status;
    return 0;
}

static bool mem_answer(struct request *r, struct reply *rp)
{
    (void)r;
    seen.answers++;
    seen.status = rp->status;
    seen.keep_alive = rp->keep_alive;
    seen.must_close = rp->must_close;
    seen.body_unread = rp->body_unread;
    size_t n = rp->body_len < sizeof(seen.body) - 1 ? rp->body_len : sizeof(seen.body) - 1;
    memcpy(seen.body, rp->body, n);
    seen.body[n] = '\0';
    return side_keeps;
}

static bool mem_continue(struct request *r)
{
    (void)r;
    seen.continues++;
    return true;
}

/* The in-memory client of a forwarded request: body bytes that have
 * arrived (in), more that arrive when the flow waits for them (later),
 * whether the body is one of unknown length that ends with them (as an
 * HTTP/2 stream's END_STREAM), and the response body as delivered. */
static struct {
    struct evbuffer *in, *later, *out;
    bool ends;
    unsigned body_waits;
    enum http1_body head_body; /* what write_head was told */
    /* When the flow first waits with an upstream want (for the response
     * head): the client's stream (the side's watch) fails for want of
     * memory and the wait says SIDE_GONE (client_nomem), or the wait
     * itself fails with fail_wait. */
    bool client_nomem;
    int fail_wait;
} mem;

/* What io makes of a stream that found no memory for its buffers or
 * events (test_io shows it does): failed both ways, ENOMEM. */
static void stream_fail_nomem(struct io_stream *s)
{
    s->read_done = true;
    s->write_err = true;
    s->error = ENOMEM;
}

static int mem_read_body(struct request *r, struct evbuffer *to)
{
    int e = body_move(&r->req_body, mem.in, to);
    if (e == 0 && mem.ends && !r->req_body.done && evbuffer_get_length(mem.in) == 0 &&
        evbuffer_get_length(mem.later) == 0)
        body_close_end(&r->req_body, to);
    return e;
}

static int mem_write_body(struct request *r, struct evbuffer *from)
{
    if (!from) {
        body_close_end(&r->resp_body, mem.out);
        return 0;
    }
    return body_move(&r->resp_body, from, mem.out); /* never full */
}

static int mem_write_head_fwd(struct request *r, struct side_head *h)
{
    seen.heads++;
    seen.status = h->status;
    mem.head_body = h->body;
    r->resp_body.chunk_out = false; /* the body goes decoded, as DATA would */
    return 0;
}

/* No stream: the body's next bytes "arrive" when asked for; else only the
 * flow's upstream want is awaited. */
static int mem_wait(struct request *r, unsigned what, struct io_want *up, int64_t deadline)
{
    if ((what & SIDE_BODY) && evbuffer_get_length(mem.later) > 0) {
        evbuffer_add_buffer(mem.in, mem.later);
        mem.body_waits++;
        return SIDE_BODY;
    }
    if (up && (mem.client_nomem || mem.fail_wait)) {
        io_kick(up->stream); /* the head goes out: the upstream answers, unread */
        if (mem.fail_wait)
            return mem.fail_wait;
        stream_fail_nomem(r->side->watch);
        return SIDE_GONE;
    }
    if (!up)
        return io_sleep(deadline) == 0 ? -ETIMEDOUT : -ECANCELED;
    int rc = io_wait(up, 1, deadline);
    return rc < 0 ? rc : 0;
}

static bool mem_client_cert(const struct request *r, const char **subject, const char **fingerprint)
{
    (void)r;
    (void)subject;
    (void)fingerprint;
    return false;
}

static void mem_abort(struct request *r)
{
    (void)r;
}

static const struct request_side_ops mem_ops = {
    .write_head = mem_write_head,
    .answer = mem_answer,
    .interim_continue = mem_continue,
    .client_cert = mem_client_cert,
    .abort = mem_abort,
    .read_body = mem_read_body,
    .write_body = mem_write_body,
    .wait = mem_wait,
};

/* The same side for forwarded requests; no tunnel op: it cannot tunnel. */
static const struct request_side_ops fwd_ops = {
    .write_head = mem_write_head_fwd,
    .answer = mem_answer,
    .interim_continue = mem_continue,
    .client_cert = mem_client_cert,
    .abort = mem_abort,
    .read_body = mem_read_body,
    .write_body = mem_write_body,
    .wait = mem_wait,
};

/* A request on the in-memory side, as the flow holds it after its head. */
static void setup(struct request_side *side, struct request *r)
{
    memset(&seen, 0, sizeof(seen));
    *side = (struct request_side){.ops = &mem_ops, .s = NULL, .client = "192.0.2.1"};
    memset(r, 0, sizeof(*r));
    r->side = side;
    r->keep_alive = true;
    r->id = "abc";
    r->id_len = 3;
    r->req_body.done = true;
}

START_TEST(own_answer_goes_through_the_side)
{
    struct request_side side;
    struct request *r = calloc(1, sizeof(*r));
    setup(&side, r);
    side_keeps = true;
    request_answer_json(r, 429, "too many requests", false);
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.heads, 0);
    ck_assert_int_eq(seen.status, 429);
    ck_assert_int_eq(r->status, 429);
    ck_assert(seen.keep_alive && !seen.must_close && !seen.body_unread);
    ck_assert_ptr_nonnull(strstr(seen.body, "\"status\":429"));
    ck_assert_ptr_nonnull(strstr(seen.body, "\"request_id\":\"abc\""));
    ck_assert(r->keep_alive); /* the side's verdict is the request's */
    ck_assert(!r->linger);
    free(r);
}
END_TEST

START_TEST(side_verdict_closes)
{
    struct request_side side;
    struct request *r = calloc(1, sizeof(*r));
    setup(&side, r);
    side_keeps = false; /* e.g. a transport that ends the stream anyway */
    request_answer_json(r, 404, "no route", true);
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.status, 404);
    ck_assert(seen.must_close);
    ck_assert(!r->keep_alive);
    ck_assert_str_eq(r->error, "no route");
    free(r);
}
END_TEST

/* ---- a forwarded request on the in-memory side ---------------------------------------- */

/* The upstream: a loopback listener, one connection served by a thread
 * with blocking sockets: it reads a whole request (head, then a
 * Content-Length or chunked body), keeps it and sends a canned answer. */
static struct {
    int lfd;
    uint16_t port;
    pthread_t thread;
    const char *answer;
    char got[4096];
    size_t got_len;
} be;

static bool request_complete(const char *b, size_t len)
{
    const char *end = strstr(b, "\r\n\r\n");
    if (!end)
        return false;
    size_t head = (size_t)(end - b) + 4;
    const char *cl = strcasestr(b, "content-length:");
    if (cl && cl < end)
        return len >= head + strtoul(cl + 15, NULL, 10);
    if (strcasestr(b, "transfer-encoding: chunked"))
        return len >= 5 && memcmp(b + len - 5, "0\r\n\r\n", 5) == 0;
    return true;
}

static void *backend(void *arg)
{
    (void)arg;
    int fd = accept(be.lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (be.got_len < sizeof(be.got) - 1) {
        ssize_t n = read(fd, be.got + be.got_len, sizeof(be.got) - 1 - be.got_len);
        if (n <= 0)
            break;
        be.got_len += (size_t)n;
        be.got[be.got_len] = '\0';
        if (request_complete(be.got, be.got_len))
            break;
    }
    ssize_t w = write(fd, be.answer, strlen(be.answer));
    (void)w;
    shutdown(fd, SHUT_WR);
    char sink[256];
    while (read(fd, sink, sizeof sink) > 0)
        ;
    close(fd);
    return NULL;
}

/* The keep-alive upstream that closes: connections served one after
 * another, each answering one request with a keep-alive 200 (a length,
 * no Connection: close) and then closed, at once or once the test says
 * so (ka_close, while the loop does not run), with a reset when `reset`.
 * It records each connection's request line. */
#define KA_CONNS 8
static struct {
    bool at_once, reset;
    sem_t go, closed;
    atomic_bool stop;
    atomic_int conns;         /* accepted so far */
    char lines[KA_CONNS][32]; /* each one's request line, as far as it fits */
} ka;

static void *ka_backend(void *arg)
{
    (void)arg;
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    while (!atomic_load(&ka.stop) && atomic_load(&ka.conns) < KA_CONNS) {
        struct pollfd pfd = {.fd = be.lfd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept(be.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char got[1024];
        size_t len = 0;
        while (len < sizeof(got) - 1) {
            ssize_t n = read(fd, got + len, sizeof(got) - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            got[len] = '\0';
            if (request_complete(got, len))
                break;
        }
        got[len] = '\0';
        int i = atomic_load(&ka.conns);
        snprintf(ka.lines[i], sizeof ka.lines[i], "%.*s", (int)strcspn(got, "\r"), got);
        atomic_fetch_add(&ka.conns, 1);
        ssize_t w = write(fd, answer, sizeof(answer) - 1);
        (void)w;
        if (!ka.at_once)
            sem_wait(&ka.go);
        if (ka.reset) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
        if (!ka.at_once)
            sem_post(&ka.closed);
    }
    return NULL;
}

static void ka_start(bool at_once, bool reset)
{
    ka.at_once = at_once;
    ka.reset = reset;
    ck_assert_int_eq(pthread_create(&be.thread, NULL, ka_backend, NULL), 0);
}

/* The upstream closes the connection it answered last, and has closed
 * it when this returns (the FIN or reset is in Ferry's socket). */
static void ka_close(void)
{
    sem_post(&ka.go);
    sem_wait(&ka.closed);
}

static struct worker fw;
static struct request_side fside;
static struct sockaddr_in fpeer;
/* What the request coroutine saw. */
static struct {
    const char *head;    /* the request head the side delivers */
    bool unknown_length; /* its body ends with the stream, not a length */
    bool keep;           /* proxy_request's verdict */
    int status;          /* r->status */
    uint64_t body_bytes; /* r->req_body.bytes */
    const char *error;
    bool of_coro;       /* take the request from the coroutine (request_of_coro) */
    size_t max_headers; /* the parse's limit; 0: 16 */
    struct request *r;  /* the object the request ran on */
    char *frame;        /* the request coroutine's frame */
    bool on_stack, inline_hdrs;
    const char *pathbuf; /* r->pathbuf after the request */
    bool snap_released;  /* r->snap was dropped by request_put */
} run;

static void fwd_setup(void)
{
    memset(&be, 0, sizeof be);
    memset(&run, 0, sizeof run);
    memset(&ka, 0, sizeof ka);
    ck_assert_int_eq(sem_init(&ka.go, 0, 0), 0);
    ck_assert_int_eq(sem_init(&ka.closed, 0, 0), 0);
    memset(&seen, 0, sizeof seen);
    be.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(be.lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(be.lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(be.lfd, 4), 0);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(be.lfd, (struct sockaddr *)&sin, &len), 0);
    be.port = ntohs(sin.sin_port);

    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "listen:\n  - address: 127.0.0.1:1\n"
             "upstreams:\n  u:\n    servers:\n      - address: 127.0.0.1:%u\n"
             "routes:\n  - name: r\n    upstream: u\n",
             (unsigned)be.port);
    struct config *cfg = NULL;
    FILE *diag = fopen("/dev/null", "w");
    ck_assert_int_eq(config_load_string("t.yaml", yaml, strlen(yaml), &cfg, diag), 0);
    fclose(diag);
    memset(&fw, 0, sizeof fw);
    fw.rng = 42;
    fw.loop = loop_new(CORO_STACK_DEFAULT, 8);
    ck_assert_ptr_nonnull(fw.loop);
    ck_assert_int_eq(snapshot_install(&fw, cfg, metrics_new(cfg), NULL), 0);

    fpeer = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xC0000201)};
    fside = (struct request_side){.w = &fw,
                                  .ops = &fwd_ops,
                                  .s = NULL,
                                  .watch = NULL,
                                  .peer = (const struct sockaddr *)&fpeer,
                                  .client = "192.0.2.1"};
    mem.in = evbuffer_new();
    mem.later = evbuffer_new();
    mem.out = evbuffer_new();
    mem.ends = false;
    mem.body_waits = 0;
    mem.client_nomem = false;
    mem.fail_wait = 0;
}

static void fwd_teardown(void)
{
    atomic_store(&ka.stop, true);
    sem_post(&ka.go); /* a keep-alive upstream waiting to close its last one */
    snapshot_release(fw.snap);
    upstream_registry_free(&fw.upstream_registry); /* closes the pooled connection */
    request_worker_fini(&fw);
    pthread_join(be.thread, NULL);
    ck_assert_uint_eq(loop_live(fw.loop), 0);
    loop_free(fw.loop);
    close(be.lfd);
    sem_destroy(&ka.go);
    sem_destroy(&ka.closed);
    evbuffer_free(mem.in);
    evbuffer_free(mem.later);
    evbuffer_free(mem.out);
}

/* The request coroutine of the in-memory side: the head it delivers is
 * parsed here from text (an HTTP/2 side would fill the same fields from
 * its HEADERS), then the flow runs on it. */
static void run_request(void *arg)
{
    struct request_side *side = arg;
    struct request *r = run.of_coro ? request_of_coro(side->w) : request_get(side->w);
    ck_assert_ptr_nonnull(r);
    request_reset(r, side);
    struct http1_limits lim = {.max_header_bytes = 8192,
                               .max_headers = run.max_headers ? run.max_headers : 16};
    if (r->hdrs_cap < lim.max_headers + 1)
        ck_assert_int_eq(request_headers_grow(r, lim.max_headers + 1), 0);
    http1_request_init(&r->req, r->hdrs, r->hdrs_cap);
    ssize_t n = http1_parse_request(run.head, strlen(run.head), &lim, &r->req);
    ck_assert_int_eq(n, (ssize_t)strlen(run.head));
    r->head_len = (size_t)n;
    if (run.unknown_length) /* decoded bytes until the stream ends, chunked upstream */
        body_init(&r->req_body, HTTP1_BODY_CLOSE, 0, true, 0);
    else
        body_init(&r->req_body, r->req.body, r->req.content_length, false, 0);
    run.keep = proxy_request(r, 0);
    run.status = r->status;
    run.body_bytes = r->req_body.bytes;
    run.error = r->error;
    run.r = r;
    run.frame = __builtin_frame_address(0);
    run.on_stack = r->on_stack;
    run.inline_hdrs = r->hdrs == r->hdrs_inline;
    request_log(r);
    request_put(side->w, r);
    run.pathbuf = r->pathbuf;
    run.snap_released = r->snap == NULL;
    loop_stop(side->w->loop);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    loop_stop(arg);
}

/* Runs one request on the in-memory side to its end. The stop timer is
 * the forward's own and goes with it: one left in the loop stops any
 * forward that runs 10 s later, with its request still running (a third
 * forward, after two joins that each waited out a backend's 5 s read). */
static void forward_run(const char *head)
{
    run.head = head;
    run.status = 0;
    run.error = NULL;
    ck_assert_int_eq(loop_spawn(fw.loop, run_request, &fside, NULL), 0);
    struct event *stop = evtimer_new(loop_base(fw.loop), on_stop, fw.loop);
    ck_assert_ptr_nonnull(stop);
    struct timeval tv = {10, 0}; /* a hang fails instead of blocking the suite */
    ck_assert_int_eq(evtimer_add(stop, &tv), 0);
    loop_run(fw.loop);
    event_free(stop);
    ck_assert_uint_eq(loop_live(fw.loop), 0);
}

static void forward_one(const char *head, const char *answer)
{
    be.answer = answer;
    ck_assert_int_eq(pthread_create(&be.thread, NULL, backend, NULL), 0);
    forward_run(head);
}

static char *out_text(void)
{
    static char buf[256];
    size_t n = evbuffer_get_length(mem.out);
    ck_assert_uint_lt(n, sizeof buf);
    evbuffer_copyout(mem.out, buf, n);
    buf[n] = '\0';
    return buf;
}

START_TEST(forwards_length_body_and_decodes_chunked_response)
{
    evbuffer_add(mem.in, "hello", 5);
    evbuffer_add(mem.later, " world", 6); /* arrives once the flow waits for it */
    forward_one("POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(be.got, "POST /echo HTTP/1.1\r\n"));
    ck_assert_ptr_nonnull(strcasestr(be.got, "content-length: 11\r\n"));
    ck_assert_ptr_nonnull(strstr(be.got, "\r\n\r\nhello world"));
    ck_assert_uint_ge(mem.body_waits, 1);
    ck_assert_int_eq(run.status, 200);
    ck_assert_uint_eq(run.body_bytes, 11);
    ck_assert_int_eq(seen.heads, 1);
    ck_assert_int_eq(seen.answers, 0);
    ck_assert_int_eq(mem.head_body, HTTP1_BODY_CHUNKED); /* unknown length: the side frames */
    ck_assert_str_eq(out_text(), "abcdefg");             /* decoded, no chunk lines */
    ck_assert(run.keep);
}
END_TEST

START_TEST(unknown_length_body_goes_chunked_upstream)
{
    mem.ends = true;
    run.unknown_length = true; /* as an HTTP/2 request without content-length */
    evbuffer_add(mem.in, "abc", 3);
    evbuffer_add(mem.later, "defgh", 5);
    forward_one("POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    ck_assert_ptr_nonnull(strcasestr(be.got, "transfer-encoding: chunked\r\n"));
    ck_assert_ptr_nonnull(strstr(be.got, "\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"));
    ck_assert_int_eq(run.status, 201);
    ck_assert_uint_eq(run.body_bytes, 8);
    ck_assert_int_eq(mem.head_body, HTTP1_BODY_LENGTH);
    ck_assert_str_eq(out_text(), "ok");
}
END_TEST

START_TEST(upgrade_without_tunnel_goes_plain)
{
    forward_one("GET /ws HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(be.got, "GET /ws HTTP/1.1\r\n"));
    ck_assert_ptr_null(strcasestr(be.got, "upgrade")); /* neither Upgrade nor Connection: Upgrade */
    ck_assert_int_eq(run.status, 502);                 /* a 101 to a plain request */
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.heads, 0);
}
END_TEST

/* The request object of a connection's coroutine lives in its stack's top
 * page, above the frames, and stays there with the buffers it owns when
 * the stack goes back to the pool: the next coroutine on that stack gets
 * the same object and buffers, and no snapshot is held meanwhile. The
 * first coroutine of a pool only reserves the area (heap object). A head
 * with more fields than the inline slots grows them on the heap; the
 * teardown's loop_free unmaps the stack and frees what the object owns
 * (the ASan build's leak check sees it). */
START_TEST(request_lives_in_its_stack_page)
{
    /* No upstream connection pooled in between: each forward's backend
     * serves one connection and reads it to its end, so a pooled one
     * would hold the join below for its 5 s read timeout. */
    static const char *answer =
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    run.of_coro = true;
    forward_one("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n", answer);
    ck_assert_int_eq(run.status, 200);
    ck_assert(!run.on_stack); /* created before the pool reserved the area */
    pthread_join(be.thread, NULL);
    be.got_len = 0;

    forward_one("GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n", answer);
    ck_assert_int_eq(run.status, 200);
#ifdef FERRY_CORO_UCONTEXT
    /* A ucontext_t in the struct coro leaves no room for the object and
     * the frames in one page: the heap's, as before. */
    ck_assert(!run.on_stack);
    return;
#endif
    ck_assert(run.on_stack);
    ck_assert(run.inline_hdrs);
    ck_assert(run.snap_released);
    uintptr_t r = (uintptr_t)run.r, page = 4096;
    ck_assert_uint_gt(r, (uintptr_t)run.frame); /* the frames grow below it */
    ck_assert_uint_eq(r / page, (r + sizeof(struct request) - 1) / page); /* one page */
    struct request *first = run.r;
    const char *pathbuf = run.pathbuf;
    ck_assert_ptr_nonnull(pathbuf);
    pthread_join(be.thread, NULL);
    be.got_len = 0;

    /* 30 fields: more than the inline slots. */
    char big[2048];
    size_t at = (size_t)snprintf(big, sizeof big, "GET /c HTTP/1.1\r\nHost: example.test\r\n");
    for (int i = 0; i < 29; i++)
        at += (size_t)snprintf(big + at, sizeof big - at, "X-F%d: v\r\n", i);
    snprintf(big + at, sizeof big - at, "\r\n");
    run.max_headers = 40;
    forward_one(big, answer);
    ck_assert_int_eq(run.status, 200);
    ck_assert_ptr_eq(run.r, first);         /* the same stack, from the pool */
    ck_assert_ptr_eq(run.pathbuf, pathbuf); /* and the buffers it owns */
    ck_assert(run.on_stack);
    ck_assert(!run.inline_hdrs);
    ck_assert_ptr_nonnull(strstr(be.got, "X-F28: v\r\n"));
}
END_TEST

/* ---- a pooled upstream connection its server closed ---------------------------------- */

static const char post_head[] =
    "POST /p HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\n";

/* The answer of a forward that the keep-alive upstream served. */
static void assert_ok(void)
{
    ck_assert_int_eq(run.status, 200);
    ck_assert_ptr_null(run.error);
    ck_assert_str_eq(out_text(), "ok");
    evbuffer_drain(mem.out, evbuffer_get_length(mem.out));
}

/* Closed while the loop did not run: the next request takes the
 * connection from the pool before the loop polls its idle read event. */
static void closed_while_stopped(bool reset)
{
    ka_start(false, reset);
    forward_run("GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_ok();
    ck_assert_int_eq(atomic_load(&ka.conns), 1);
    ka_close();

    /* A GET on the closed one goes again on a fresh connection. */
    forward_run("GET /2 HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_ok();
    ck_assert_int_eq(atomic_load(&ka.conns), 2);
    ck_assert_str_eq(ka.lines[1], "GET /2 HTTP/1.1");
    ka_close();

    /* A POST whose body went out is not sent again: it may have taken
     * effect (as nginx without non_idempotent). */
    evbuffer_add(mem.in, "hello", 5);
    forward_run(post_head);
    ck_assert_int_eq(run.status, 502);
    ck_assert_str_eq(run.error, "upstream closed the connection without answering");
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(atomic_load(&ka.conns), 2);

    /* The closed one left the pool with the failure: a fresh one. */
    forward_run("GET /4 HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_ok();
    ck_assert_int_eq(atomic_load(&ka.conns), 3);
    ck_assert_str_eq(ka.lines[2], "GET /4 HTTP/1.1");
}

START_TEST(pooled_closed_while_stopped_is_retried)
{
    closed_while_stopped(false);
}
END_TEST

START_TEST(pooled_reset_while_stopped_is_retried)
{
    closed_while_stopped(true);
}
END_TEST

/* Closed right after each answer: whether Ferry sees the close before
 * the next request takes the connection or only when it uses it, every
 * GET is answered by the request's own connection. */
START_TEST(pooled_closed_at_once_never_fails_a_get)
{
    ka_start(true, false);
    for (int i = 0; i < 4; i++) {
        char head[64];
        snprintf(head, sizeof head, "GET /%d HTTP/1.1\r\nHost: example.test\r\n\r\n", i);
        forward_run(head);
        assert_ok();
        ck_assert_int_eq(atomic_load(&ka.conns), i + 1);
        ck_assert_int_eq(strncmp(ka.lines[i], head, strcspn(head, "\r")), 0);
    }
}
END_TEST

/* ---- Ferry's own memory, not the client's doing ----------------------------------------- */

/* The side's watch: a client stream (of a socket pair; *peer the other
 * end), lazy, never read. */
static struct io_stream *client_stream(int *peer)
{
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    struct io_stream *s = io_stream_accepted(fw.loop, fds[0], 4096);
    ck_assert_ptr_nonnull(s);
    *peer = fds[1];
    return s;
}

/* Logged as Ferry's 503, with nothing answered through the side and the
 * connection not kept. */
static void assert_closed_unanswered_nomem(void)
{
    ck_assert_int_eq(run.status, 503);
    ck_assert_str_eq(run.error, "out of memory for the client connection: closed unanswered");
    ck_assert_int_eq(seen.answers, 0);
    ck_assert_int_eq(seen.heads, 0);
    ck_assert(!run.keep);
}

/* The client's connection failed for want of memory before the upstream
 * connect (the watch stops it), or while the flow waited for the
 * response head. */
START_TEST(client_out_of_memory_is_not_a_client_close)
{
    ka_start(true, false);
    int peer;
    fside.watch = client_stream(&peer);
    stream_fail_nomem(fside.watch);
    forward_run("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_closed_unanswered_nomem();
    ck_assert_int_eq(atomic_load(&ka.conns), 0); /* nothing was sent upstream */
    io_stream_free(fside.watch);
    close(peer);

    memset(&seen, 0, sizeof seen);
    fside.watch = client_stream(&peer);
    mem.client_nomem = true;
    forward_run("GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_closed_unanswered_nomem();
    io_stream_free(fside.watch);
    close(peer);
    fside.watch = NULL;
}
END_TEST

/* The side's wait found no memory of its own (-ENOMEM): the client is
 * still there and is answered 503. */
START_TEST(side_wait_out_of_memory_answers_503)
{
    ka_start(true, false);
    mem.fail_wait = -ENOMEM;
    forward_run("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n");
    ck_assert_int_eq(run.status, 503);
    ck_assert_str_eq(run.error, "out of memory");
    ck_assert_int_eq(seen.answers, 1);
    ck_assert_int_eq(seen.status, 503);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reqside");
    TCase *tc = tcase_create("seam");
    tcase_add_test(tc, own_answer_goes_through_the_side);
    tcase_add_test(tc, side_verdict_closes);
    suite_add_tcase(s, tc);
    TCase *fwd = tcase_create("forward");
    tcase_set_timeout(fwd, 20);
    tcase_add_checked_fixture(fwd, fwd_setup, fwd_teardown);
    tcase_add_test(fwd, forwards_length_body_and_decodes_chunked_response);
    tcase_add_test(fwd, unknown_length_body_goes_chunked_upstream);
    tcase_add_test(fwd, upgrade_without_tunnel_goes_plain);
    tcase_add_test(fwd, request_lives_in_its_stack_page);
    tcase_add_test(fwd, pooled_closed_while_stopped_is_retried);
    tcase_add_test(fwd, pooled_reset_while_stopped_is_retried);
    tcase_add_test(fwd, pooled_closed_at_once_never_fails_a_get);
    tcase_add_test(fwd, client_out_of_memory_is_not_a_client_close);
    tcase_add_test(fwd, side_wait_out_of_memory_answers_503);
    suite_add_tcase(s, fwd);
    return check_run(s);
}
