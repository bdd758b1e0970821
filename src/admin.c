/* admin: see admin.h. */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "metrics.h"
#include "worker.h"

struct admin {
    struct evhttp *http;
    const struct config *cfg;
    struct worker *workers;
    unsigned nworkers;
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
    (void)arg;
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, "ok\n", 3);
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
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
    if (addr->is_unix)
        unlink(addr->path);
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) != 0 ||
        listen(fd, 128) != 0 || !evhttp_accept_socket_with_handle(a->http, fd)) {
        fprintf(stderr, "ferry: admin.listen %s: %s\n", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out_free;
    }
    evhttp_set_cb(a->http, "/status", on_status, a);
    evhttp_set_cb(a->http, "/healthz", on_healthz, a);
    evhttp_set_cb(a->http, "/metrics", on_metrics, a);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
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
    free(a);
}
