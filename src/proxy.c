/*
 * proxy: see proxy.h. One request's life, top to bottom, in the order of
 * this file: proxy_request (a head its side delivered) -> route_request ->
 * (a respond route's answer | forward: attempt (upstream_acquire ->
 * build_upstream_head -> exchange: body out, response head in) ->
 * retries -> relay (send_response: head and body back) ->
 * upstream_release). Failures are one table (FAILURES), bodies and their
 * replay for retries follow.
 *
 * The client is reached only through the request's side (request.h): its
 * body is read with read_body, the response written with write_head and
 * write_body, its leaving and draining awaited with wait, a 101 handed
 * over with tunnel. Upstream streams are this file's own.
 *
 * Bytes stay in evbuffers: bodies move evbuffer to evbuffer with
 * evbuffer_remove_buffer (chains change hands, nothing is copied), and
 * the heads Ferry sends are serialised from parsed fields only (reply.c).
 *
 * Decision: the request body is moved by this coroutine inside the same
 * wait set as the response head (client body or leaving, upstream
 * writable or readable, deadline), not by separate callbacks: an early
 * upstream answer is forwarded, not turned into a 502, and the flow stays
 * in one place.
 */
#include "proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>

#include "auth.h"
#include "auth_pool.h"
#include "balancer.h"
#include "config.h"
#include "cors.h"
#include "headers.h"
#include "http1.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "body.h"
#include "ratelimit.h"
#include "ratelimit_redis.h"
#include "reply.h"
#include "snapshot.h"
#include "request.h"
#include "route.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

/* Output queued beyond this waits for the peer to read (backpressure). */
#define OUT_HIGH (256u * 1024u)
/* Header slots added by Ferry on top of the client's (Host, X-Forwarded-*,
 * Forwarded, Via, X-Request-Id, Upgrade, Connection). */
#define EXTRA_HEADERS 12

/* How an upstream attempt, or the request with it, ended. */
enum fail {
    FAIL_NONE = 0,        /* a response head came */
    FAIL_CONNECT,         /* connect refused, reset or unreachable */
    FAIL_CONNECT_TIMEOUT, /* no connection within upstream_connect */
    FAIL_TLS,             /* the TLS handshake or verification failed (r->error: why) */
    FAIL_BUSY,            /* the server stayed at max_connections */
    FAIL_RESOURCES,       /* Ferry has no descriptor or memory for a socket */
    FAIL_UP_CLOSED,       /* closed or reset before any response byte */
    FAIL_UP_TIMEOUT,      /* no response head within upstream_header */
    FAIL_UP_SEND_TIMEOUT, /* the upstream stopped reading the request */
    FAIL_UP_BAD,          /* a response that breaks HTTP/1 */
    FAIL_UP_SWITCH,       /* a 101 to a request that asked for no upgrade */
    FAIL_CLIENT_GONE,     /* the client closed: nothing to answer */
    FAIL_CLIENT_NOMEM,    /* the client's connection failed for want of Ferry's memory */
    FAIL_CLIENT_BODY,     /* a bad chunked request body */
    FAIL_CLIENT_TIMEOUT,  /* the client stalled its body */
    FAIL_BODY_TOO_LARGE,  /* a chunked body over max_body_bytes */
    FAIL_HEAD,            /* the request head cannot be forwarded */
    FAIL_NOMEM,           /* out of memory */
    FAIL_NO_SERVER,       /* every server left is down (health checks) or drained (admin) */
    FAIL_KINDS
};

/*
 * Each failure's consequences, in one place. blame: the server failed
 * (passive ejection and ferry_upstream_failures_total count it; a client
 * that left, a bad body, a busy server or Ferry's own shortage do not).
 * retry: the retries.on condition under which another server is tried
 * (0: never). stale: on a reused pooled connection, tried once more on a
 * fresh one (the keep-alive race). close: the client connection ends
 * after the answer (an unread body closes it anyway: reply.c). silent:
 * nothing can be answered (the client left, or its connection failed):
 * status and why are only logged, and the connection closes.
 */
static const struct failure {
    int status;      /* answered to the client, or only logged when silent */
    const char *why; /* the answer's message; NULL: r->error */
    bool blame;
    unsigned retry;
    bool stale;
    bool close;
    bool silent;
} FAILURES[FAIL_KINDS] = {
    [FAIL_NONE] = {0, NULL, false, 0, false, false},
    [FAIL_CONNECT] = {502, "upstream connection failed", true, CONFIG_RETRY_CONNECT_ERROR, false,
                      false},
    [FAIL_CONNECT_TIMEOUT] = {504, "upstream connect timed out", true, CONFIG_RETRY_CONNECT_ERROR,
                              false, false},
    [FAIL_TLS] = {502, NULL, true, CONFIG_RETRY_CONNECT_ERROR, false, false},
    [FAIL_BUSY] = {503, "upstream server at max_connections", false, CONFIG_RETRY_CONNECT_ERROR,
                   false, false},
    [FAIL_RESOURCES] = {503, "out of resources to reach the upstream", false,
                        CONFIG_RETRY_CONNECT_ERROR, false, false},
    [FAIL_UP_CLOSED] = {502, "upstream closed the connection without answering", true,
                        CONFIG_RETRY_RESET, true, false},
    [FAIL_UP_TIMEOUT] = {504, "upstream timed out (upstream_header)", true, CONFIG_RETRY_TIMEOUT,
                         false, false},
    [FAIL_UP_SEND_TIMEOUT] = {504, "upstream stopped reading the request (upstream_send)", true, 0,
                              false, false},
    [FAIL_UP_BAD] = {502, "upstream sent an invalid response", true, 0, true, false},
    [FAIL_UP_SWITCH] = {502, "upstream switched protocols without an upgrade request", false, 0,
                        false, false},
    [FAIL_CLIENT_GONE] = {499, "client closed the connection", false, 0, false, true, true},
    /* Ferry's shortage, not the client's doing: a 5xx in the log and the
     * metrics, though nothing reaches the client. */
    [FAIL_CLIENT_NOMEM] = {503, "out of memory for the client connection: closed unanswered", false,
                           0, false, true, true},
    [FAIL_CLIENT_BODY] = {400, NULL, false, 0, false, true},
    [FAIL_CLIENT_TIMEOUT] = {408, "request body timed out (client_body)", false, 0, false, true},
    [FAIL_BODY_TOO_LARGE] = {413, "request body too large", false, 0, false, true},
    [FAIL_HEAD] = {400, "request head cannot be forwarded", false, 0, false, true},
    [FAIL_NOMEM] = {503, "out of memory", false, 0, false, false},
    [FAIL_NO_SERVER] = {503, NULL, false, 0, false, false},
};

/* The tries of one request: servers tried, retries left, and whether the
 * next try must use a fresh connection. */
struct attempts {
    bool *tried; /* the request's own (r->tried); NULL: no retries elsewhere */
    unsigned left;
    bool fresh;
};

/* The request's life, in the order of this file. */
static int route_request(struct request *r);
static void answer_error(struct request *r, int status, const char *why);
static void forward(struct request *r);
static enum fail attempt(struct request *r, const struct config_upstream *up, int server,
                         bool fresh, bool *reused);
static enum fail connect_failure(const struct request *r, int err);
static enum fail client_failure(const struct request *r, int rc);
static bool stale_retry(struct request *r, struct attempts *at, enum fail f, bool reused);
static void attempt_done(struct request *r, const struct config_upstream *up, int server,
                         enum fail f);
static bool retry_elsewhere(struct request *r, struct attempts *at, int server, enum fail *fp);
static bool hash_key(const struct request *r, const struct config_upstream *up, uint64_t *key);
static int64_t backoff_until(const struct request *r, const struct config_upstream *up,
                             unsigned retry);
static void answer_failure(struct request *r, enum fail f);
static void relay(struct request *r);
static void release_upstream(struct request *r, bool reusable);
static int build_upstream_head(struct request *r, const struct config_server *server,
                               struct evbuffer *dst);
static int client_cert_headers(const struct request *r, const struct config_client_cert *cc,
                               struct http1_header *out, size_t n, size_t cap);
static void upstream_host(const struct request *r, const struct config_upstream *up,
                          const struct config_server *server, const char **host, size_t *len);
static enum fail exchange(struct request *r, struct io_stream *up);
static int parse_response_head(struct request *r, struct evbuffer *in);
static int send_response(struct request *r, struct io_stream *up);
static int write_response_head(struct request *r, enum http1_body advertised);
static int relay_body(struct request *r, struct io_stream *up);
static bool idempotent(enum http1_method m);
static bool out_of_resources(int err);
static void replay_start(struct request *r, const struct config_upstream *up);
static bool can_resend(const struct request *r);
static void replay_record(struct request *r, struct evbuffer *uout, size_t from);
static void replay_end(struct request *r);
static double ms_since(int64_t t0);

/* ---- one request: head, route, answer ------------------------------------------------ */

/* A CORS preflight, answered here (cors.h): 204 and the route's fields. */
static void answer_preflight(struct request *r)
{
    struct http1_header f[CORS_MAX_FIELDS];
    char age[24];
    size_t n = cors_fields(r->route->cors, &r->req, true, f, age);
    struct config_header_rules rules = {.set = f, .nset = n};
    request_answer(r, 204, NULL, "", 0, false, &rules);
}

/* The route's rate limit (ratelimit.h) takes a token, or answers 429 with
 * Retry-After and the RateLimit fields (and the route's CORS fields, so a
 * browser's script can read it). Returns true when the request goes on. */
static bool rate_limit_admits(struct request *r)
{
    struct ratelimit_result res;
    if (r->route->rate_limit->store_url) /* shared through Redis; may yield */
        ratelimit_redis_request(r->route, &r->req, r->side->client, r->identity, &res);
    else
        ratelimit_request(r->route, &r->req, r->side->client, r->identity, loop_now(), &res);
    if (res.allowed)
        return true;
    struct http1_header f[4 + CORS_MAX_FIELDS];
    char buf[RATELIMIT_FIELDS_BUF], age[24], body[512];
    size_t n = ratelimit_fields(&res, f, buf);
    if (r->route->cors)
        n += cors_fields(r->route->cors, &r->req, false, f + n, age);
    int status = res.store_error ? 503 : 429; /* on_store_error: deny */
    size_t len = reply_error_json(
        body, sizeof(body), status,
        res.store_error ? "rate limit store unavailable" : "too many requests", r->id, r->id_len);
    struct config_header_rules rules = {.set = f, .nset = n};
    r->error = res.store_error  ? "rate limit store unavailable"
               : res.table_full ? "rate limit: no room for another key"
                                : "rate limited";
    request_answer(r, status, "application/json", body, len, false, &rules);
    return false;
}

bool proxy_request(struct request *r, int status)
{
    request_id_decide(r); /* the client's well-formed id, also in Ferry's own answers */
    if (status > 0) {
        /* The framing is unknown: whatever follows is unread body. */
        answer_error(r, status, r->error ? r->error : "bad request");
        return false;
    }
    r->keep_alive = r->req.keep_alive && !r->side->close_after && !r->w->draining;

    status = route_request(r);
    if (status) {
        answer_error(r, status, status == 404 ? "no route" : r->error);
        return r->keep_alive;
    }
    if (r->route->client_cert && r->route->client_cert->required &&
        !r->side->ops->client_cert(r, NULL, NULL)) {
        answer_error(r, 403, "a verified TLS client certificate is required");
        return r->keep_alive;
    }
    /* A preflight carries no credentials: answered before any other policy. */
    if (r->route->cors && cors_is_preflight(&r->req)) {
        answer_preflight(r);
        return r->keep_alive;
    }
    /* Who is asking, before any other policy (a rate limit may key on it). */
    if (r->route->auth) {
        if (!r->auth && !(r->auth = calloc(1, sizeof(*r->auth)))) {
            answer_error(r, 503, "out of memory");
            return r->keep_alive;
        }
        status = auth_check(r->route->auth, &r->req, time(NULL), r->auth);
        if (status == AUTH_PENDING) /* a password to hash, off the loop */
            status = auth_pool_check(r->route->auth, r->auth, r->w->loop, r->side->watch,
                                     request_phase_deadline(r, AUTH_POOL_TIMEOUT_MS));
        if (status < 0) { /* the client left while its password waited: 499 */
            answer_failure(r, client_failure(r, status));
            return false;
        }
        r->identity = r->auth->identity;
        if (status) {
            request_answer_auth(r, status);
            return r->keep_alive;
        }
    }
    r->req_body.dec.max_body = r->route->max_body_bytes;
    /* An expectation other than 100-continue cannot be met (RFC 9110
     * §10.1.1); nothing of the body has been asked for yet. */
    if (!r->req.expect_continue && http1_header_find(r->req.headers, r->req.nheaders, "Expect")) {
        answer_error(r, 417, "unsupported Expect");
        return r->keep_alive;
    }
    if (r->req.body == HTTP1_BODY_LENGTH && r->route->max_body_bytes &&
        r->req.content_length > r->route->max_body_bytes) {
        answer_error(r, 413, "request body too large");
        return r->keep_alive;
    }
    if (r->route->rate_limit && !rate_limit_admits(r))
        return r->keep_alive;
    if (r->route->respond) {
        const struct config_respond *rs = r->route->respond;
        request_answer(r, rs->status, rs->content_type, rs->body, rs->body_len, false,
                       &r->route->response_headers);
        return r->keep_alive;
    }
    forward(r);
    return r->keep_alive;
}

/* A random 64-bit value for a split without a key (xorshift64* on the
 * worker's generator: shares, not secrets). */
static uint64_t next_random(struct worker *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* The route's rewrite of the path, kept after path and host in pathbuf
 * (both move with it). Returns 0, 503 (memory) or 400 (a capture made a
 * dot segment). */
static int rewrite_path(struct request *r, const struct route_match *m)
{
    size_t path_at = (size_t)(r->path - r->pathbuf),
           host_at = r->host ? (size_t)(r->host - r->pathbuf) : 0;
    size_t used = r->host ? host_at + r->host_len + 1 : path_at + r->path_len + 1;
    size_t cap = route_rewrite_cap(r->route, r->path_len);
    if (!request_grow(&r->pathbuf, &r->pathbuf_cap, used + cap, 1))
        return 503;
    r->path = r->pathbuf + path_at;
    if (r->host)
        r->host = r->pathbuf + host_at;
    ssize_t n = route_rewrite(r->route, m, r->path, r->pathbuf + used, cap);
    if (n < 0) {
        r->error = "the route's rewrite made a '.' or '..' segment";
        return 400;
    }
    r->rewritten = r->pathbuf + used;
    r->rewritten_len = (size_t)n;
    return 0;
}

/* Normalises path and host and finds the route, its upstream (a split's
 * pick) and its rewrite of the path. Returns 0, or an HTTP status to
 * answer (400 for a bad path or host, 404 for no route, 500 when a
 * pattern hit its match limit). */
static int route_request(struct request *r)
{
    /* Path and host share one buffer; neither grows when normalised. */
    size_t hcap = r->req.host ? r->req.host_len + 1 : 0;
    r->path = request_grow(&r->pathbuf, &r->pathbuf_cap, r->req.path_len + 1 + hcap, 1);
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
        n = headers_host_lower(r->req.host, r->req.host_len, r->host, hcap);
        if (n < 0) {
            r->error = "invalid Host";
            return 400;
        }
        r->host_len = (size_t)n;
    }
    struct route_input in = {
        .method = r->req.method_str,
        .method_len = r->req.method_len,
        .host = r->host,
        .host_len = r->host_len,
        .path = r->path,
        .path_len = r->path_len,
        .query = r->req.query,
        .query_len = r->req.query_len,
        .headers = r->req.headers,
        .nheaders = r->req.nheaders,
        .client_ip = r->side->client,
    };
    struct route_match m;
    enum route_status st = route_find(r->cfg, &in, &m);
    if (st == ROUTE_LIMIT) {
        static __thread int64_t last_log;
        log_ratelimited(&last_log, 10000, LOG_LEVEL_WARN,
                        "route %s: a pattern hit its match limit; answering 500", m.route->name);
        r->error = "a route's pattern hit its match limit";
        return 500;
    }
    if (st != ROUTE_OK) {
        r->error = "no route matches the request";
        return 404;
    }
    r->route = m.route;
    r->tmo = &r->route->timeouts;
    if (r->route->reject_path_params && headers_path_has_params(r->path, r->path_len)) {
        r->error = "path parameters (;) refused by the route";
        return 400;
    }
    r->upstream = route_pick_upstream(r->route, &in, next_random(r->w));
    return r->route->rewrite ? rewrite_path(r, &m) : 0;
}

/* An error of Ferry's own before forwarding: any 4xx but 404 ends the
 * connection (the request broke a rule); reply.c closes it anyway while
 * any of the body is unread. */
static void answer_error(struct request *r, int status, const char *why)
{
    request_answer_json(r, status, why, status >= 400 && status < 500 && status != 404);
}

/* ---- forwarding: attempts, retries, the answer --------------------------------------- */

/*
 * Proxies the request to its route's upstream and the response back.
 * Each attempt is one server; a failure is looked up in FAILURES: once
 * more on a fresh connection after a stale pooled one, another server per
 * the upstream's retries, else its answer. A retry resends the whole body
 * (replay) or does not happen.
 */
static void forward(struct request *r)
{
    const struct config_upstream *up = r->upstream;
    struct attempts at = {.left = up->retry_attempts};
    /* A side that cannot tunnel forwards an Upgrade request as a plain
     * one (as nginx behind HTTP/2): a 101 to it is then a 502. */
    if (r->req.upgrade_websocket && !r->side->ops->tunnel)
        r->req.upgrade_websocket = false;
    /* The servers tried are the request's own: the list is held across
     * every yield of the attempts (never in the worker's scratch). */
    if (up->retry_attempts && up->nservers > 1 &&
        request_grow(&r->tried, &r->tried_cap, up->nservers, sizeof(bool))) {
        at.tried = r->tried;
        memset(at.tried, 0, up->nservers * sizeof(bool));
    }
    replay_start(r, up);
    uint64_t key = 0;
    bool has_key = up->balance == CONFIG_BALANCE_HASH && hash_key(r, up, &key);
    upstream_budget_request(r->snap->upstreams, up);
    enum fail f;
    for (;;) {
        int server = upstream_pick(r->snap->upstreams, up, at.tried, key, has_key);
        if (server < 0) { /* none left up or in service (a retry's failure is dropped) */
            release_upstream(r, false);
            r->error = upstream_none_up(r->snap->upstreams, up);
            f = FAIL_NO_SERVER;
            break;
        }
        bool reused = false;
        f = attempt(r, up, server, at.fresh, &reused);
        if (stale_retry(r, &at, f, reused))
            continue;
        attempt_done(r, up, server, f);
        if (!retry_elsewhere(r, &at, server, &f))
            break;
    }
    replay_end(r); /* a response is taken, or none will be: no retry from here */
    if (f == FAIL_NONE && r->resp.status == 101 && !(r->req.upgrade_websocket && r->resp.upgrade))
        f = FAIL_UP_SWITCH;
    if (f != FAIL_NONE) {
        answer_failure(r, f);
        release_upstream(r, false);
        return;
    }
    relay(r);
}

/*
 * One try on `server`: a connection (pooled unless fresh), the head and
 * what a retry must resend of the body, then the exchange up to the
 * response head. Returns FAIL_NONE with r->resp parsed, or how it failed;
 * r->uc is held either way when a connection was had. May yield.
 */
static enum fail attempt(struct request *r, const struct config_upstream *up, int server,
                         bool fresh, bool *reused)
{
    r->server = &up->servers[server];
    r->upstream_server = r->server->addr.text;
    int64_t t0 = loop_now();
    int err = upstream_acquire(r->snap->upstreams, up, (unsigned)server, fresh,
                               request_phase_deadline(r, r->tmo->upstream_connect), r->side->watch,
                               &r->uc, reused);
    if (err < 0) {
        r->uc = NULL;
        if (err == -EPROTO)
            r->error = tls_last_failure();
        return connect_failure(r, err);
    }
    r->connect_ms = ms_since(t0);
    /* The head is serialised straight into the connection's output (a
     * retry builds it again: it depends on the server, host_header). */
    struct io_stream *us = upstream_stream(r->uc);
    int built = build_upstream_head(r, r->server, io_output(us));
    if (built == 0 && r->body_sent)
        built = body_copy(io_output(us), r->replay);
    if (built < 0)
        return built == -ENOMEM ? FAIL_NOMEM : FAIL_HEAD;
    t0 = loop_now();
    enum fail f = exchange(r, us);
    r->header_ms = ms_since(t0);
    return f;
}

/* The failure kind of a connect error (upstream_acquire logged it,
 * rate-limited per server). The client leaving while Ferry waited for a
 * slot or a connection is -ECONNABORTED (or -ECANCELED). */
static enum fail connect_failure(const struct request *r, int err)
{
    return err == -ECANCELED || err == -ECONNABORTED ? client_failure(r, err)
           : err == -EBUSY                           ? FAIL_BUSY
           : err == -EPROTO                          ? FAIL_TLS
           : err == -ETIMEDOUT                       ? FAIL_CONNECT_TIMEOUT
           : out_of_resources(err)                   ? FAIL_RESOURCES
                                                     : FAIL_CONNECT;
}

/*
 * How the client side ended the request: rc is what said so (the side's
 * wait: its events with SIDE_GONE, or -errno; a connect or a slot that
 * the watch stopped: -ECONNABORTED). The client left (499), unless the
 * side's watch failed for want of Ferry's own memory (io_error ENOMEM:
 * the client did nothing, and its connection can carry no answer), or
 * the wait itself found none (-ENOMEM: the client is still there and is
 * answered 503).
 */
static enum fail client_failure(const struct request *r, int rc)
{
    if (r->side->watch && io_error(r->side->watch) == ENOMEM)
        return FAIL_CLIENT_NOMEM;
    return rc == -ENOMEM ? FAIL_NOMEM : FAIL_CLIENT_GONE;
}

/*
 * A reused pooled connection that closed, or said something that is not
 * a response (stray bytes of an earlier answer), before any response to
 * this request: the keep-alive race, not the server's failure. Once more
 * on a fresh connection, if the body can be resent whole and the method
 * is idempotent or some of its body has not gone out yet (a POST without
 * a body went out whole: it may have taken effect, as nginx assumes).
 */
static bool stale_retry(struct request *r, struct attempts *at, enum fail f, bool reused)
{
    if (!FAILURES[f].stale || !reused || at->fresh || r->resp_started || !can_resend(r) ||
        !(idempotent(r->req.method) || (r->body_sent == 0 && !r->req_body.done)))
        return false;
    r->error = NULL;
    release_upstream(r, false);
    at->fresh = true;
    return true;
}

/* Counts an attempt against its server, the one definition shared by
 * passive ejection and /metrics: a response head is a success (any
 * status); a failure counts only when FAILURES blames the server. */
static void attempt_done(struct request *r, const struct config_upstream *up, int server,
                         enum fail f)
{
    const struct config_server *s = &up->servers[server];
    if (f == FAIL_NONE) {
        upstream_report(r->snap->upstreams, up, (unsigned)server, true);
        metrics_upstream(r->snap->metrics, up, s, r->resp.status);
    } else if (FAILURES[f].blame) {
        if (upstream_report(r->snap->upstreams, up, (unsigned)server, false))
            metrics_ejection(r->snap->metrics, up, s);
        metrics_upstream(r->snap->metrics, up, s, 0);
    }
}

/*
 * May the request go to another server after f (or a 502/503/504
 * response, then dropped) on `server`? Only when the upstream's retries.on
 * lists the condition, with retries left, a server not tried yet, time
 * left, a body that can be resent whole (can_resend), once the request
 * was sent an idempotent method, a backoff that ends within
 * timeouts.total, and room in the upstream's retry budget (counted in
 * /metrics either way). Releases the connection and waits the backoff
 * when so; a client that leaves meanwhile makes *fp its client_failure (and
 * false). May yield.
 */
static bool retry_elsewhere(struct request *r, struct attempts *at, int server, enum fail *fp)
{
    enum fail f = *fp;
    const struct config_upstream *up = r->upstream;
    int st = f == FAIL_NONE ? r->resp.status : 0;
    unsigned cond = f != FAIL_NONE ? FAILURES[f].retry
                    : st == 502    ? CONFIG_RETRY_502
                    : st == 503    ? CONFIG_RETRY_503
                    : st == 504    ? CONFIG_RETRY_504
                                   : 0;
    if (!cond || !at->tried || at->left == 0 || !(up->retry_on & cond))
        return false;
    if (!can_resend(r) || (cond != CONFIG_RETRY_CONNECT_ERROR && !idempotent(r->req.method)))
        return false;
    if (r->total_deadline != LOOP_NEVER && loop_now() >= r->total_deadline)
        return false;
    at->tried[server] = true;
    size_t other = 0;
    while (other < up->nservers && at->tried[other])
        other++;
    if (other == up->nservers)
        return false;
    int64_t until = backoff_until(r, up, up->retry_attempts - at->left + 1);
    if (until < 0)
        return false;
    bool allowed = upstream_budget_retry(r->snap->upstreams, up);
    metrics_retry(r->snap->metrics, up, allowed);
    if (!allowed)
        return false;
    at->left--;
    at->fresh = false;
    r->attempts++;
    r->error = NULL;
    r->resp_started = false;
    release_upstream(r, false);
    if (until != LOOP_NEVER) {
        int rc = r->side->ops->wait(r, SIDE_GONE, NULL, until);
        if (rc != -ETIMEDOUT) {
            *fp = client_failure(r, rc);
            return false;
        }
    }
    return true;
}

/*
 * When retry number `retry` (1, 2...) may start: after retries.backoff
 * doubled per retry, at most ten times the base, with jitter (half of it
 * fixed, half random) so that the clients of a failed server do not come
 * back in step. LOOP_NEVER: no wait (no backoff); -1: the wait would end
 * past timeouts.total (no retry).
 */
static int64_t backoff_until(const struct request *r, const struct config_upstream *up,
                             unsigned retry)
{
    static __thread uint64_t rng;
    if (up->retry_backoff_ms <= 0)
        return LOOP_NEVER;
    int64_t ms = up->retry_backoff_ms << (retry > 4 ? 3 : retry - 1);
    if (ms > up->retry_backoff_ms * 10)
        ms = up->retry_backoff_ms * 10;
    if (!rng)
        rng = (uint64_t)loop_now() | 1;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    int64_t wait = (ms * LOOP_MS) / 2 + (int64_t)(rng % (uint64_t)((ms * LOOP_MS) / 2 + 1));
    int64_t until = loop_now() + wait;
    if (r->total_deadline != LOOP_NEVER && until >= r->total_deadline)
        return -1;
    return until;
}

/*
 * The request's key for balance: hash (hash_key): the client's address
 * (its IP, without the port), a header's value or a cookie's value.
 * False when the request has none (the balancer falls back to round
 * robin).
 */
static bool hash_key(const struct request *r, const struct config_upstream *up, uint64_t *key)
{
    const struct http1_header *h = NULL;
    switch (up->hash_source) {
    case CONFIG_HASH_CLIENT_IP: {
        const struct sockaddr *sa = r->side->peer;
        if (sa && sa->sa_family == AF_INET) {
            const struct in_addr *a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
            *key = balancer_hash(a, sizeof(*a));
            return true;
        }
        if (sa && sa->sa_family == AF_INET6) {
            const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
            /* An IPv4 client as IPv4-mapped IPv6 (a PROXY TCP6 header, a
             * dual-stack socket a unit passed) is keyed as the IPv4
             * address it is, as conn.c's text (the rate limits' key) and
             * config_trusted see it: its 4 bytes, so its server is the
             * one it gets when it comes as IPv4. */
            if (IN6_IS_ADDR_V4MAPPED(a))
                *key = balancer_hash(&a->s6_addr[12], 4);
            else
                *key = balancer_hash(a, sizeof(*a));
            return true;
        }
        return false;
    }
    case CONFIG_HASH_HEADER:
        h = http1_header_find(r->req.headers, r->req.nheaders, up->hash_name);
        if (!h)
            return false;
        *key = balancer_hash(h->value, h->value_len);
        return true;
    case CONFIG_HASH_COOKIE:
        for (size_t i = 0; i < r->req.nheaders; i++) {
            const struct http1_header *c = &r->req.headers[i];
            const char *v;
            size_t vlen;
            if (http1_token_eq(c->name, c->name_len, "cookie") &&
                balancer_cookie(c->value, c->value_len, up->hash_name, &v, &vlen)) {
                *key = balancer_hash(v, vlen);
                return true;
            }
        }
        return false;
    case CONFIG_HASH_NONE:
    default:
        return false;
    }
}

/* Answers the client for f, per FAILURES (silent: nothing, only logged). */
static void answer_failure(struct request *r, enum fail f)
{
    const struct failure *fl = &FAILURES[f];
    if (f == FAIL_NOMEM || f == FAIL_CLIENT_NOMEM) {
        /* Ferry's own shortage: the error log says so, not only the
         * access log's status (rate-limited per worker). */
        static __thread int64_t last;
        log_ratelimited(&last, 1000, CONFIG_LOG_ERROR, "client %s: %s: %s %d",
                        r->side->client ? r->side->client : "-", fl->why,
                        fl->silent ? "closed, logged" : "answered", fl->status);
    }
    if (fl->silent) {
        r->status = fl->status;
        r->error = fl->why;
        r->keep_alive = false;
        return;
    }
    const char *why = fl->why ? fl->why : r->error ? r->error : "invalid request body";
    request_answer_json(r, fl->status, why, fl->close);
}

/*
 * Sends the upstream's response to the client and gives the connection
 * back: handed to the tunnel after a 101, pooled after a complete
 * keep-alive response to a request sent whole, else closed.
 */
static void relay(struct request *r)
{
    struct io_stream *us = upstream_stream(r->uc);
    if (r->resp.status == 101) {
        r->keep_alive = false;
        if (send_response(r, us) < 0) {
            release_upstream(r, false);
            return;
        }
        r->side->ops->tunnel(r, r->uc); /* the side splices once the 101 is out */
        r->uc = NULL;
        return;
    }
    /* An early answer: the upstream spoke before the whole body was sent.
     * Forward it; the body's rest is drained by a lingering close. */
    bool early = request_body_unread(r);
    if (send_response(r, us) < 0) {
        r->keep_alive = false;
        r->linger = false;
        if (r->streaming) /* a head went out: the client must see a cut */
            r->side->ops->abort(r);
        release_upstream(r, false);
        return;
    }
    release_upstream(r, !early && r->resp.keep_alive && r->resp_body.in != HTTP1_BODY_CLOSE);
}

static void release_upstream(struct request *r, bool reusable)
{
    if (r->uc)
        upstream_release(r->uc, reusable);
    r->uc = NULL;
}

/* ---- the upstream exchange ------------------------------------------------------------ */

/*
 * Serialises the head sent upstream into dst (the connection's output):
 * the rewritten path, the forwarded headers, one framing header. Uses the
 * worker's scratch and does not yield. Returns 0 or -ENOMEM / -ENOSPC.
 */
static int build_upstream_head(struct request *r, const struct config_server *server,
                               struct evbuffer *dst)
{
    const struct config_route *rt = r->route;
    const struct config_upstream *up = r->upstream;
    struct request_scratch *sc = request_scratch_of(r->w);
    const struct config_header_rules *rules = &rt->request_headers;
    size_t cap = (r->rewritten ? r->rewritten_len : r->path_len) +
                 (rt->add_prefix ? strlen(rt->add_prefix) : 0) + 2;
    size_t nout = r->req.nheaders + EXTRA_HEADERS + rules->nset + rules->nadd + AUTH_MAX_FIELDS + 2;
    if (!sc || !request_grow(&sc->path, &sc->path_cap, cap, 1) ||
        !request_grow(&sc->buf, &sc->buf_cap, r->head_len + 1024, 1) ||
        !request_grow(&sc->out, &sc->out_cap, nout, sizeof(*sc->out)))
        return -ENOMEM;
    const char *path = r->rewritten ? r->rewritten : r->path; /* rewrite: no strip, no add */
    size_t path_len = r->rewritten ? r->rewritten_len : r->path_len;
    size_t plen = headers_path_rewrite(
        path, path_len, rt->strip_prefix, rt->strip_prefix ? strlen(rt->strip_prefix) : 0,
        rt->add_prefix, rt->add_prefix ? strlen(rt->add_prefix) : 0, sc->path, sc->path_cap);
    if (plen >= sc->path_cap)
        return -ENOSPC;
    struct headers_forward fwd = {
        .trusted_peer = config_trusted(r->cfg, r->side->peer),
        .client_addr = r->side->client,
        .request_id = r->id,
        .request_id_len = r->id_len,
        .tunnel = r->req.upgrade_websocket,
        .underscores_in_headers = rt->underscores_in_headers,
        .tls = r->side->tls,
    };
    upstream_host(r, up, server, &fwd.host, &fwd.host_len);
    int n = headers_forward_request(&r->req, &fwd, sc->out, sc->out_cap, sc->buf, sc->buf_cap);
    if (n >= 0)
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, rules->set, rules->nset, rules->add,
                            rules->nadd, rules->remove, rules->nremove);
    if (n >= 0 && rt->client_cert) /* after the rules: they cannot forge these */
        n = client_cert_headers(r, rt->client_cert, sc->out, (size_t)n, sc->out_cap);
    if (n >= 0 && r->identity) /* auth's fields last: neither client nor route overrides them */
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, r->auth->set, r->auth->nset, NULL, 0,
                            r->auth->remove, r->auth->nremove);
    if (n < 0)
        return n;
    struct http1_head_out h = {
        .method = r->req.method_str,
        .method_len = r->req.method_len,
        .path = sc->path,
        .path_len = plen,
        .query = r->identity && r->auth->query_rewritten ? r->auth->query : r->req.query,
        .query_len =
            r->identity && r->auth->query_rewritten ? r->auth->query_len : r->req.query_len,
        .headers = sc->out,
        .nheaders = (size_t)n,
        .body = r->req.body,
        .content_length = r->req.content_length,
        .fields_checked = true,
    };
    return reply_request_head(dst, &h);
}

/*
 * A route's client_cert headers on the fields out[0..n) (room for cap)
 * going upstream: the client's own fields of those names are dropped
 * (they cannot be forged), then the subject and fingerprint of the
 * certificate the side verified are added. Returns the new count, or
 * -ENOSPC.
 */
static int client_cert_headers(const struct request *r, const struct config_client_cert *cc,
                               struct http1_header *out, size_t n, size_t cap)
{
    const char *subject = NULL, *fp = NULL;
    bool have = r->side->ops->client_cert(r, &subject, &fp);
    struct http1_header set[2], remove[2];
    size_t nset = 0, nremove = 0;
    const char *names[2] = {cc->subject_header, cc->fingerprint_header};
    const char *values[2] = {subject, fp};
    for (int i = 0; i < 2; i++) {
        if (!names[i])
            continue;
        struct http1_header h = {.name = names[i], .name_len = strlen(names[i])};
        if (have && values[i]) {
            h.value = values[i];
            h.value_len = strlen(values[i]);
            set[nset++] = h;
        } else {
            remove[nremove++] = h;
        }
    }
    if (!nset && !nremove)
        return (int)n;
    return headers_rewrite(out, n, cap, set, nset, NULL, 0, remove, nremove);
}

/* The Host sent upstream, per the upstream's host_header. */
static void upstream_host(const struct request *r, const struct config_upstream *up,
                          const struct config_server *server, const char **host, size_t *len)
{
    if (up->host_header == CONFIG_HOST_LITERAL) {
        *host = up->host_literal;
        *len = strlen(up->host_literal);
    } else if (up->host_header == CONFIG_HOST_UPSTREAM || !r->req.host) {
        *host = server->written ? server->written : server->addr.text; /* a name's address */
        *len = strlen(*host);
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
    struct evbuffer *uout = io_output(up);
    struct evbuffer *uin = io_input(up);
    int64_t header_deadline = LOOP_NEVER;
    for (;;) {
        if (!r->req_body.done && evbuffer_get_length(uout) < OUT_HIGH) {
            size_t before = evbuffer_get_length(uout);
            int e = r->side->ops->read_body(r, uout);
            replay_record(r, uout, before);
            if (e == HTTP1_E_BODY_TOO_LARGE)
                return FAIL_BODY_TOO_LARGE;
            if (e == HTTP1_E_NOMEM)
                return FAIL_NOMEM; /* Ferry's shortage, not the client's body */
            if (e < 0) {
                r->error = http1_error_str(e);
                return FAIL_CLIENT_BODY;
            }
        }
        if (r->req_body.done && header_deadline == LOOP_NEVER)
            header_deadline = request_phase_deadline(r, r->tmo->upstream_header);
        int p = parse_response_head(r, uin);
        if (p > 0)
            return FAIL_NONE;
        if (p < 0)
            return FAIL_UP_BAD;
        if (io_eof(up) && io_error(up) == ENOMEM)
            return FAIL_NOMEM; /* Ferry's memory, not the server's fault */
        if (io_eof(up))
            return evbuffer_get_length(uin) == 0 ? FAIL_UP_CLOSED : FAIL_UP_BAD;

        /* Expect: 100-continue is answered before the first body byte is
         * needed (the side knows whether its client wants it now). */
        if (r->req.expect_continue && !r->sent_continue && !r->req_body.done)
            r->sent_continue = r->side->ops->interim_continue(r);
        struct io_want w = {
            .stream = up, .events = IO_READABLE | IO_EOF, .read_min = evbuffer_get_length(uin) + 1};
        unsigned what = SIDE_GONE;
        int64_t deadline = header_deadline;
        bool reading_body = !r->req_body.done && evbuffer_get_length(uout) < OUT_HIGH;
        if (reading_body) {
            what |= SIDE_BODY; /* the side bounds the gap between reads (client_body) */
            deadline = r->total_deadline;
        } else if (!r->req_body.done) {
            w.events |= IO_WRITABLE;
            w.write_below = OUT_HIGH / 2;
            deadline = request_phase_deadline(r, r->tmo->upstream_send);
        }
        if (r->req_body.done) /* a long wait for the answer holds no buffers */
            w.events |= IO_PARK;
        int rc = r->side->ops->wait(r, what, &w, deadline);
        uout = io_output(up); /* parked meanwhile: fetched again */
        uin = io_input(up);
        if (rc == -ETIMEDOUT) {
            if (r->req_body.done)
                return FAIL_UP_TIMEOUT;
            return reading_body ? FAIL_CLIENT_TIMEOUT : FAIL_UP_SEND_TIMEOUT;
        }
        /* The client closing while it waits is an abort (as nginx: its
         * answer has nowhere to go); an upstream EOF is handled above. */
        if (rc < 0 || (rc & SIDE_GONE))
            return client_failure(r, rc);
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
        struct request_scratch *sc = request_scratch_of(r->w);
        size_t cap = lim.max_headers + 1;
        if (!buf || !sc ||
            !request_grow(&sc->resp_hdrs, &sc->resp_cap, cap, sizeof(*sc->resp_hdrs))) {
            r->error = "out of memory reading the response head";
            return -1;
        }
        http1_response_init(&r->resp, sc->resp_hdrs, cap);
        ssize_t n = http1_parse_response(buf, want, &lim, r->req.method, &r->resp);
        if (n == HTTP1_INCOMPLETE && len >= UPSTREAM_READ_MAX) {
            r->error = "response head larger than the upstream read buffer";
            return -1;
        }
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
    r->upstream_status = resp->status;
    r->status = resp->status;

    /* The side gets what is known of the body: none, a length (also a
     * HEAD's or 304's, which may advertise the length of the body they do
     * not carry; 1xx and 204 must not, RFC 9110 §8.6), or an unknown
     * length (chunked or close-delimited from the upstream). */
    enum http1_body known = resp->body == HTTP1_BODY_CLOSE ? HTTP1_BODY_CHUNKED : resp->body;
    if (known == HTTP1_BODY_NONE && resp->has_content_length &&
        (r->req.method == HTTP1_METHOD_HEAD || resp->status == 304))
        known = HTTP1_BODY_LENGTH;
    r->keep_alive = reply_keeps(r->keep_alive, false, request_body_unread(r));
    r->linger = request_body_unread(r);
    body_init(&r->resp_body, resp->body, resp->content_length, false, 0);

    if (write_response_head(r, known) < 0)
        return -1;
    evbuffer_drain(uin, r->resp_head_len);
    r->streaming = true; /* bytes_out follows resp_body.bytes from here */
    return relay_body(r, up);
}

/* The client's response head, re-serialised from the parsed upstream head
 * (its header views are in the worker's scratch: nothing yields before
 * this). Returns 0 or -1 (r->error set). */
static int write_response_head(struct request *r, enum http1_body advertised)
{
    struct http1_response *resp = &r->resp;
    const struct config_header_rules *rules = &r->route->response_headers;
    size_t nout = resp->nheaders + EXTRA_HEADERS + rules->nset + rules->nadd + CORS_MAX_FIELDS;
    struct request_scratch *sc = request_scratch_of(r->w);
    if (!sc || !request_grow(&sc->out, &sc->out_cap, nout, sizeof(*sc->out)) ||
        !request_grow(&sc->buf, &sc->buf_cap, r->resp_head_len + 256, 1)) {
        r->error = "out of memory";
        return -1;
    }
    bool tunnel = resp->status == 101;
    int n = headers_forward_response(resp, tunnel, sc->out, sc->out_cap, sc->buf, sc->buf_cap);
    if (n >= 0)
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, rules->set, rules->nset, rules->add,
                            rules->nadd, rules->remove, rules->nremove);
    if (n >= 0 && r->route->cors) { /* the route's CORS fields, never the upstream's */
        struct http1_header f[CORS_MAX_FIELDS];
        char age[24];
        size_t nf = cors_fields(r->route->cors, &r->req, false, f, age);
        size_t vary = nf && f[0].name_len == 4; /* Vary is added, not set */
        n = headers_rewrite(sc->out, (size_t)n, sc->out_cap, f + vary, nf - vary, f, vary,
                            cors_response_fields, CORS_RESPONSE_FIELDS);
    }
    struct side_head h = {
        .status = resp->status,
        .reason = resp->reason,
        .reason_len = resp->reason_len,
        .headers = sc->out,
        .nheaders = n > 0 ? (size_t)n : 0,
        .body = advertised,
        .content_length = resp->content_length,
        .keep_alive = r->keep_alive,
        .tunnel = tunnel,
    };
    int rc = n < 0 ? n : r->side->ops->write_head(r, &h);
    r->keep_alive = h.keep_alive; /* the side's framing may need the close */
    if (rc < 0) {
        r->error = "cannot serialise the response head";
        return -1;
    }
    return 0;
}

/*
 * Streams the response body from the upstream to the client with
 * backpressure both ways. Returns 0 when the body ended cleanly, -1 when
 * it was cut short (upstream EOF, error or stall) or the client went away.
 */
static int relay_body(struct request *r, struct io_stream *up)
{
    const struct request_side_ops *side = r->side->ops;
    struct evbuffer *uin = io_input(up);
    struct body *b = &r->resp_body;
    bool gone = false;
    while (!b->done) {
        int full = side->write_body(r, uin);
        if (full < 0) {
            r->error = http1_error_str(full);
            return -1;
        }
        if (b->done)
            break;
        if (io_eof(up) && evbuffer_get_length(uin) == 0) {
            if (b->in == HTTP1_BODY_CLOSE && !io_error(up)) {
                int e = side->write_body(r, NULL);
                if (e < 0) { /* no end marker: the answer must look cut */
                    r->error = http1_error_str(e);
                    return -1;
                }
                break;
            }
            r->error = "upstream closed in the middle of the response body";
            return -1;
        }
        if (gone) {
            r->error = client_failure(r, SIDE_GONE) == FAIL_CLIENT_NOMEM
                           ? FAILURES[FAIL_CLIENT_NOMEM].why
                           : "client closed during the response";
            return -1;
        }
        struct io_want w = {.stream = up,
                            .events = full ? IO_EOF : IO_READABLE | IO_EOF,
                            .read_min = evbuffer_get_length(uin) + 1};
        int64_t deadline =
            request_phase_deadline(r, full ? r->tmo->client_send : r->tmo->upstream_read);
        int rc = side->wait(r, SIDE_GONE | (full ? SIDE_DRAINED : 0), &w, deadline);
        if (rc == -ETIMEDOUT) {
            r->error =
                full ? "client stopped reading (client_send)" : "upstream stalled (upstream_read)";
            return -1;
        }
        if (rc < 0) {
            /* Cut short however it failed: the side must not end the
             * answer as a whole one (a TLS close_notify after a
             * close-delimited body would make the cut look complete). */
            r->error = "response body relay failed";
            return -1;
        }
        gone = rc & SIDE_GONE;
    }
    return 0;
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

/* ---- replaying a body for a retry ---------------------------------------------------- */

/*
 * A retry must resend the whole body or not happen. The body is recorded
 * as queued upstream (framed: whole chunks) only when a retry after it
 * went out is possible at all: an idempotent method (a POST is retried
 * only before any body byte went out) and replay_bytes > 0.
 */
static void replay_start(struct request *r, const struct config_upstream *up)
{
    r->body_sent = 0;
    r->replay_whole = true;
    r->replay_wanted = !r->req_body.done && idempotent(r->req.method) && up->replay_bytes > 0;
}

/* Can the body queued so far be resent whole? */
static bool can_resend(const struct request *r)
{
    return r->body_sent == 0 || r->replay_whole;
}

/* Records what body_move appended to uout after its first `from` bytes. */
static void replay_record(struct request *r, struct evbuffer *uout, size_t from)
{
    size_t n = evbuffer_get_length(uout) - from;
    if (n == 0)
        return;
    r->body_sent += n;
    if (!r->replay_whole)
        return;
    if (!r->replay_wanted || r->body_sent > r->upstream->replay_bytes ||
        (!r->replay && !(r->replay = evbuffer_new())))
        goto out_give_up;
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(uout, &pos, from, EVBUFFER_PTR_SET) < 0)
        goto out_give_up;
    while (n > 0) {
        struct evbuffer_iovec v[8];
        int k = evbuffer_peek(uout, (ev_ssize_t)n, &pos, v, 8);
        size_t took = 0;
        for (int i = 0; i < k && i < 8 && took < n; i++) {
            size_t len = v[i].iov_len < n - took ? v[i].iov_len : n - took;
            if (evbuffer_add(r->replay, v[i].iov_base, len) < 0)
                goto out_give_up;
            took += len;
        }
        if (took == 0 || evbuffer_ptr_set(uout, &pos, took, EVBUFFER_PTR_ADD) < 0)
            goto out_give_up;
        n -= took;
    }
    return;

out_give_up:
    r->replay_whole = false;
    if (r->replay)
        evbuffer_drain(r->replay, evbuffer_get_length(r->replay));
}

/* The response is taken (or the request failed): the copy goes. */
static void replay_end(struct request *r)
{
    r->replay_whole = false;
    r->replay_wanted = false;
    if (r->replay && evbuffer_get_length(r->replay))
        evbuffer_drain(r->replay, evbuffer_get_length(r->replay));
}

/* ---- time ---------------------------------------------------------------------------- */

static double ms_since(int64_t t0)
{
    return (double)(loop_now() - t0) / 1e6;
}

void proxy_worker_fini(struct worker *w)
{
    request_worker_fini(w);
}
