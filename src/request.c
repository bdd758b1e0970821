/* request: see request.h. */
#include "request.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "coro.h"
#include "cors.h"
#include "headers.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "reply.h"
#include "tls.h"
#include "snapshot.h"
#include "worker.h"

/* Released request objects a worker keeps. */
#define REQUEST_POOL_CAP 256

/* ---- the pool and the scratch ------------------------------------------------------- */

/* Frees what a request object owns (not the object). */
static void request_fini(void *area)
{
    struct request *r = area;
    if (r->replay)
        evbuffer_free(r->replay);
    free(r->tried);
    free(r->head);
    if (r->hdrs != r->hdrs_inline)
        free(r->hdrs);
    free(r->pathbuf);
    if (r->auth)
        auth_out_fini(r->auth);
    free(r->auth);
}

static void request_free(struct request *r)
{
    request_fini(r);
    free(r);
}

struct request *request_get(struct worker *w)
{
    struct request_scratch *sc = request_scratch_of(w);
    if (sc && sc->free) {
        struct request *r = sc->free;
        sc->free = r->next_free;
        sc->nfree--;
        return r;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (r) {
        r->hdrs = r->hdrs_inline;
        r->hdrs_cap = REQUEST_HEADERS_START;
    }
    return r;
}

struct request *request_of_coro(struct worker *w)
{
    struct request *r = coro_local(sizeof(*r), request_fini);
    if (!r)
        return request_get(w);
    if (!r->on_stack) { /* the area was zeroed for its first use */
        r->on_stack = true;
        r->hdrs = r->hdrs_inline;
        r->hdrs_cap = REQUEST_HEADERS_START;
    }
    return r;
}

void request_put(struct worker *w, struct request *r)
{
    snapshot_release(r->snap);
    r->snap = NULL;
    if (r->head_cap > 4096) { /* a large head: do not keep its buffer */
        free(r->head);
        r->head = NULL;
        r->head_cap = 0;
    }
    if (r->on_stack)
        return; /* stays with its stack (request_fini when unmapped) */
    struct request_scratch *sc = w->proxy_scratch;
    if (!sc || sc->nfree >= REQUEST_POOL_CAP) {
        request_free(r);
        return;
    }
    r->next_free = sc->free;
    sc->free = r;
    sc->nfree++;
}

void request_reset(struct request *r, struct request_side *side)
{
    snapshot_release(r->snap); /* the previous request's on this side */
    memset(r, 0, offsetof(struct request, next_free));
    r->side = side;
    r->w = side->w;
    r->snap = snapshot_acquire(side->w);
    r->cfg = r->snap->cfg;
    r->tmo = &r->cfg->timeouts;
    r->start = loop_now();
    r->total_deadline = r->tmo->total > 0 ? r->start + r->tmo->total * LOOP_MS : LOOP_NEVER;
}

struct request_scratch *request_scratch_of(struct worker *w)
{
    if (!w->proxy_scratch)
        w->proxy_scratch = calloc(1, sizeof(struct request_scratch));
    return w->proxy_scratch;
}

void request_worker_fini(struct worker *w)
{
    struct request_scratch *sc = w->proxy_scratch;
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
    free(sc);
    w->proxy_scratch = NULL;
}

int request_headers_grow(struct request *r, size_t n)
{
    struct http1_header *more = malloc(n * sizeof(*more));
    if (!more)
        return -1;
    if (r->hdrs != r->hdrs_inline)
        free(r->hdrs);
    r->hdrs = more;
    r->hdrs_cap = n;
    return 0;
}

void *request_grow(void *bufp, size_t *cap, size_t need, size_t elem)
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

/* ---- what a request is ---------------------------------------------------------------- */

void request_id_decide(struct request *r)
{
    worker_request_id(r->w, r->new_id);
    r->id = r->new_id;
    r->id_len = 16;
    if (r->head_len)
        headers_request_id(&r->req, &r->id, &r->id_len);
}

/* ---- answers of Ferry's own ------------------------------------------------------------- */

/*
 * Drops what has arrived of a body the answer does not need, without
 * waiting, as nginx discards one: when that is the whole body, the
 * connection can carry the next request. Bytes after the body's end stay
 * in the input (the next request); a body that has not arrived whole, or
 * breaks its framing, stays unread and the answer closes.
 */
static void discard_arrived_body(struct request *r)
{
    struct evbuffer *sink = evbuffer_new();
    if (!sink)
        return;
    if (r->side->ops->read_body(r, sink) < 0)
        r->req_body.done = false;
    evbuffer_free(sink);
}

void request_answer(struct request *r, int status, const char *content_type, const char *body,
                    size_t body_len, bool must_close, const struct config_header_rules *rules)
{
    if (!must_close && r->head_len && r->keep_alive && request_body_unread(r))
        discard_arrived_body(r);
    /* A cors route's answers carry its fields, Ferry's own too: a page's
     * script can read a 401, 413 or 502, and Vary: Origin keeps caches
     * apart. A preflight's answer and a 429 bring theirs (rules: then
     * nothing is added twice). */
    struct http1_header cors[CORS_MAX_FIELDS];
    char age[24];
    size_t ncors = 0;
    if (r->route && r->route->cors && r->head_len && !cors_is_preflight(&r->req))
        ncors = cors_fields(r->route->cors, &r->req, false, cors, age);
    struct reply rp = {
        .status = status,
        .content_type = content_type,
        .body = body,
        .body_len = body_len,
        .request_id = r->id,
        .request_id_len = r->id_len,
        .rules = rules,
        .extra = cors,
        .nextra = ncors,
        .head_only = r->req.method == HTTP1_METHOD_HEAD,
        .retry_after = status == 503,
        .keep_alive = r->keep_alive,
        .must_close = must_close,
        .body_unread = request_body_unread(r),
    };
    r->status = status;
    r->keep_alive = r->side->ops->answer(r, &rp);
    r->linger = !r->keep_alive && rp.body_unread;
    r->bytes_out = body_len;
}

void request_answer_auth(struct request *r, int status)
{
    char body[512];
    const char *why = status == 401 ? "unauthorized" : status == 403 ? "forbidden" : "unavailable";
    size_t n = reply_error_json(body, sizeof(body), status, why, r->id, r->id_len);
    struct http1_header www = {"WWW-Authenticate", 16, r->auth->challenge,
                               r->auth->challenge ? strlen(r->auth->challenge) : 0};
    struct config_header_rules rules = {.add = &www, .nadd = status == 401 && r->auth->challenge};
    r->error = r->auth->why ? r->auth->why : why;
    request_answer(r, status, "application/json", body, n, false, &rules);
}

void request_answer_json(struct request *r, int status, const char *why, bool must_close)
{
    char body[512];
    size_t n = reply_error_json(body, sizeof(body), status, why, r->id, r->id_len);
    if (!r->error)
        r->error = why;
    request_answer(r, status, "application/json", body, n, must_close, NULL);
}

/* ---- the end of a request: counted and logged ------------------------------------------ */

void request_log(const struct request *r)
{
    double ms = (double)(loop_now() - r->start) / 1e6;
    WORKER_STAT_ADD(r->w, requests_total, 1);
    metrics_request(r->snap->metrics, r->route, r->status, ms / 1000);
    if (!log_access_enabled())
        return;
    struct log_access a = {
        .client = r->side->client,
        .method = r->req.method_str,
        .method_len = r->req.method_str ? r->req.method_len : 0,
        .host = r->host_len ? r->host : NULL,
        .host_len = r->host_len,
        .path = r->path,
        .path_len = r->path_len,
        .status = r->status,
        .bytes_sent = r->streaming ? r->resp_body.bytes : r->bytes_out,
        .bytes_received = r->req_body.bytes,
        .route = r->route ? r->route->name : NULL,
        .upstream = r->upstream ? r->upstream->name : NULL,
        .upstream_server = r->upstream_server,
        .upstream_status = r->upstream_status,
        .upstream_retries = r->attempts,
        .request_id = r->id,
        .request_id_len = r->id_len,
        .duration_ms = ms,
        .upstream_connect_ms = r->upstream_server ? r->connect_ms : -1,
        .upstream_header_ms = r->upstream_status ? r->header_ms : -1,
        .error = r->error,
        .identity = r->identity,
    };
    r->side->ops->client_cert(r, &a.tls_client_subject, &a.tls_client_fingerprint);
    log_access_write(&a);
}
