/* admin: see admin.h. */
#include "admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "listener.h"
#include "metrics.h"
#include "worker.h"

/* Limits: the admin endpoint answers small GETs from health checkers and
 * scrapers, so a client gets little: an 8 KiB head, no body, and the
 * client_header timeout between reads (libevent 2.1's evhttp offers no
 * connection cap; the timeout bounds how long a held connection lasts). */
#define ADMIN_MAX_HEAD 8192

struct admin {
    struct evhttp *http;
    const struct config *cfg;
    struct worker *workers;
    unsigned nworkers;
    bool draining;
    bool bound_unix; /* removed at admin_stop */
};

static void on_status(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    unsigned long conns = 0, live = 0, total = 0, upconns = 0;
    for (unsigned i = 0; i < a->nworkers; i++) {
        struct worker *w = &a->workers[i];
        conns += WORKER_STAT_GET(w, connections);
        live += WORKER_STAT_GET(w, requests_live);
        total += WORKER_STAT_GET(w, requests_total);
        upconns += WORKER_STAT_GET(w, upstream_conns);
    }
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body,
                        "{\"pid\":%ld,\"workers\":%u,\"connections\":%lu,\"live_coroutines\":%lu,"
                        "\"requests_total\":%lu,\"upstream_connections\":%lu}\n",
                        (long)getpid(), a->nworkers, conns, live, total, upconns);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *body = evbuffer_new();
    if (!body || metrics_render(body, a->cfg, a->workers, a->nworkers) != 0) {
        evhttp_send_error(req, 503, "Out of memory");
        if (body)
            evbuffer_free(body);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *body = evbuffer_new();
    if (a->draining) {
        evbuffer_add(body, "draining\n", 9);
        evhttp_send_reply(req, 503, "Service Unavailable", body);
    } else {
        evbuffer_add(body, "ok\n", 3);
        evhttp_send_reply(req, 200, "OK", body);
    }
    evbuffer_free(body);
}

static const struct {
    const char *path;
    void (*cb)(struct evhttp_request *, void *);
} PATHS[] = {{"/healthz", on_healthz}, {"/status", on_status}, {"/metrics", on_metrics}};

/* Every request: GET/HEAD on a known path, 405 on a known path, else 404. */
static void on_request(struct evhttp_request *req, void *arg)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    for (size_t i = 0; path && i < sizeof(PATHS) / sizeof(PATHS[0]); i++) {
        if (strcmp(path, PATHS[i].path) != 0)
            continue;
        enum evhttp_cmd_type m = evhttp_request_get_command(req);
        if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD) {
            PATHS[i].cb(req, arg);
        } else {
            struct evbuffer *body = evbuffer_new();
            evbuffer_add(body, "method not allowed\n", 19);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
            evhttp_send_reply(req, 405, "Method Not Allowed", body);
            evbuffer_free(body);
        }
        return;
    }
    evhttp_send_error(req, 404, "Not Found");
}

void admin_draining(struct admin *a)
{
    if (a)
        a->draining = true;
}

struct admin *admin_start(struct event_base *base, const struct config *cfg,
                          struct worker *workers, unsigned nworkers)
{
    const struct config_addr *addr = cfg->admin_listen;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->cfg = cfg;
    a->workers = workers;
    a->nworkers = nworkers;
    a->http = evhttp_new(base);
    if (!a->http)
        goto out_free;
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && !addr->is_unix)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr->is_unix && listener_claim_unix("admin.listen", addr) != 0) {
        if (fd >= 0)
            close(fd);
        goto out_free;
    }
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) != 0 ||
        listen(fd, 128) != 0 || !evhttp_accept_socket_with_handle(a->http, fd)) {
        fprintf(stderr, "ferry: admin.listen %s: %s\n", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out_free;
    }
    a->bound_unix = addr->is_unix;
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEAD);
    evhttp_set_max_body_size(a->http, 0);
    int64_t ms = cfg->timeouts.client_header;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evhttp_set_timeout_tv(a->http, &tv);
    return a;

out_free:
    admin_stop(a);
    return NULL;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    if (a->bound_unix)
        unlink(a->cfg->admin_listen->path);
    free(a);
}
