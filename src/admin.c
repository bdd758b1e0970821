/* admin: see admin.h. */
#include "admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "diff.h"
#include "http1.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "reply.h"
#include "upstream.h"
#include "worker.h"

/*
 * Limits: the admin endpoint answers small GETs from health checkers and
 * scrapers, one request per connection, so a client gets little: an
 * 8 KiB head (431 beyond), no body (413), ADMIN_MAX_CONNS connections at
 * once (more are accepted and closed at once), and timeouts.client_header
 * for the whole exchange from accept (absolute: a head trickled a byte at
 * a time is cut like a slowloris on the proxy listener). Every answer
 * says Connection: close. Once it is written the connection lingers: the
 * write side is shut and what the client still sends is read and dropped,
 * for at most ADMIN_LINGER_MS and ADMIN_LINGER_BYTES, so that bytes
 * arriving after the answer do not turn the close into a reset that
 * destroys the answer's tail (as the proxy listener's lingering close).
 */
#define ADMIN_MAX_HEAD 8192
#define ADMIN_MAX_CONNS 64
#define ADMIN_MAX_FIELDS 64
#define ADMIN_LINGER_MS 2000
#define ADMIN_LINGER_BYTES (1024 * 1024)

struct admin_conn {
    struct admin *a;
    struct bufferevent *bev;
    struct event *timer;
    struct admin_conn *next, *prev;
    struct http1_request req;
    struct http1_header fields[ADMIN_MAX_FIELDS];
    size_t dropped; /* bytes read and dropped after the answer */
    bool answered;
    bool lingering; /* answer written, write side shut */
};

struct admin {
    struct event_base *base;
    struct event *accept_ev;
    struct event *resume_ev; /* accepting again after a descriptor shortage */
    int fd;
    const struct config *cfg;  /* the config in force (admin_set_config) */
    struct config *listen_cfg; /* a reference to the one it was started with */
    struct worker *workers;
    unsigned nworkers;
    struct admin_conn *conns;
    unsigned nconns;
    bool draining;
    bool bound_unix; /* removed at admin_stop */
};

/* ---- the answers ------------------------------------------------------------ */

static void answer(struct admin_conn *ac, int status, const char *type, struct evbuffer *body,
                   const struct config_header_rules *extra)
{
    size_t len = body ? evbuffer_get_length(body) : 0;
    const char *bytes = len ? (const char *)evbuffer_pullup(body, -1) : "";
    struct reply rp = {
        .status = status,
        .content_type = type,
        .body = bytes ? bytes : "",
        .body_len = bytes ? len : 0,
        .rules = extra,
        .head_only = ac->req.method == HTTP1_METHOD_HEAD,
        .must_close = true,
    };
    reply_write(bufferevent_get_output(ac->bev), &rp);
    ac->answered = true;
    bufferevent_disable(ac->bev, EV_READ);
}

static void answer_text(struct admin_conn *ac, int status, const char *text,
                        const struct config_header_rules *extra)
{
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add(body, text, strlen(text));
    answer(ac, status, "text/plain", body, extra);
    if (body)
        evbuffer_free(body);
}

static void on_status(struct admin_conn *ac)
{
    struct admin *a = ac->a;
    unsigned long conns = 0, live = 0, total = 0, upconns = 0;
    for (unsigned i = 0; i < a->nworkers; i++) {
        struct worker *w = &a->workers[i];
        conns += WORKER_STAT_GET(w, connections);
        live += WORKER_STAT_GET(w, requests_live);
        total += WORKER_STAT_GET(w, requests_total);
        upconns += WORKER_STAT_GET(w, upstream_conns);
    }
    struct evbuffer *body = evbuffer_new();
    if (body) {
        evbuffer_add_printf(body,
                            "{\"pid\":%ld,\"workers\":%u,\"connections\":%lu,"
                            "\"live_coroutines\":%lu,\"requests_total\":%lu,"
                            "\"upstream_connections\":%lu,\"upstreams\":",
                            (long)getpid(), a->nworkers, conns, live, total, upconns);
        upstream_status_json(body, a->cfg);
        evbuffer_add(body, "}\n", 2);
    }
    answer(ac, body ? 200 : 503, "application/json", body, NULL);
    if (body)
        evbuffer_free(body);
}

static void on_metrics(struct admin_conn *ac)
{
    struct admin *a = ac->a;
    struct evbuffer *body = evbuffer_new();
    if (!body || metrics_render(body, a->cfg, a->workers, a->nworkers) != 0) {
        answer_text(ac, 503, "out of memory\n", NULL);
    } else {
        answer(ac, 200, "text/plain; version=0.0.4; charset=utf-8", body, NULL);
    }
    if (body)
        evbuffer_free(body);
}

/* The running config's normalized form (diff.h): what `ferry diff`
 * compares a file with. No secrets: diff_config_write hashes them. */
static void on_config(struct admin_conn *ac)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        diff_config_write(f, ac->a->cfg);
        fclose(f);
    }
    struct evbuffer *body = text ? evbuffer_new() : NULL;
    if (body && evbuffer_add(body, text, len) == 0)
        answer(ac, 200, "text/plain; charset=utf-8", body, NULL);
    else
        answer_text(ac, 503, "out of memory\n", NULL);
    if (body)
        evbuffer_free(body);
    free(text);
}

/* ---- upstream servers: GET /upstreams, POST .../drain and .../ready ---------------- */

static void json_str(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            evbuffer_add_printf(b, "\\%c", c);
        else if (c < 0x20)
            evbuffer_add_printf(b, "\\u%04x", c);
        else
            evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

static void on_upstreams(struct admin_conn *ac)
{
    const struct config *cfg = ac->a->cfg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        answer_text(ac, 503, "out of memory\n", NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"upstreams\":[");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        evbuffer_add_printf(b, "%s{\"name\":", u ? "," : "");
        json_str(b, up->name);
        evbuffer_add_printf(b, ",\"servers\":[");
        for (size_t i = 0; i < up->nservers; i++) {
            const struct config_server *sv = &up->servers[i];
            bool drained = registry_drained(registry_server(up->name, sv->addr.text));
            evbuffer_add_printf(b, "%s{\"address\":", i ? "," : "");
            json_str(b, sv->addr.text);
            evbuffer_add_printf(b, ",\"weight\":%u,\"state\":\"%s\",\"healthy\":%s,\"ejected\":%s}",
                                sv->weight, drained ? "drained" : "ready",
                                upstream_healthy(up, (unsigned)i) ? "true" : "false",
                                upstream_ejected(up, (unsigned)i) ? "true" : "false");
        }
        evbuffer_add_printf(b, "]}");
    }
    evbuffer_add_printf(b, "]}\n");
    answer(ac, 200, "application/json", b, NULL);
    evbuffer_free(b);
}

/* Decodes %XX in s[0..n) into out (NUL-terminated). False when malformed,
 * too long or decoding to a NUL. */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            unsigned v;
            char hex[3] = {0};
            if (i + 2 >= n)
                return false;
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            if (sscanf(hex, "%2x", &v) != 1 || !v)
                return false;
            c = (char)v;
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

/* POST /upstreams/NAME/servers/ADDRESS/drain (or /ready): NAME and
 * ADDRESS as in the running config, %-encoded where needed (a unix
 * address's slashes). The state is process-wide and survives reloads. */
static void on_server_state(struct admin_conn *ac, const char *p, size_t n)
{
    static const char servers[] = "/servers/";
    const char *slash = memchr(p, '/', n);
    const char *last = p + n;
    while (last > p && last[-1] != '/')
        last--;
    char name[256], addr[512], action[16];
    if (!slash || (size_t)(p + n - slash) < sizeof(servers) ||
        memcmp(slash, servers, sizeof(servers) - 1) != 0 || last <= slash + sizeof(servers) ||
        !pct_decode(p, (size_t)(slash - p), name, sizeof(name)) ||
        !pct_decode(slash + sizeof(servers) - 1, (size_t)(last - 1 - slash - sizeof(servers) + 1),
                    addr, sizeof(addr)) ||
        !pct_decode(last, (size_t)(p + n - last), action, sizeof(action)) ||
        (strcmp(action, "drain") != 0 && strcmp(action, "ready") != 0)) {
        answer_text(ac, 404, "not found: POST /upstreams/NAME/servers/ADDRESS/drain|ready\n", NULL);
        return;
    }
    bool drain = strcmp(action, "drain") == 0;
    const struct config_upstream *up = config_upstream_find(ac->a->cfg, name);
    bool known = false;
    for (size_t i = 0; up && i < up->nservers && !known; i++)
        known = strcmp(up->servers[i].addr.text, addr) == 0;
    /* A server a reload removed while drained keeps its entry (a reload
     * that adds it back finds it drained): ready clears it, or nothing
     * could, and every pick would stay on the path that checks drains. */
    if (!known && !drain)
        known = registry_drained_named(name, addr);
    if (!known) {
        answer_text(ac, 404, "no such upstream server in the running config\n", NULL);
        return;
    }
    if (registry_set_drained(name, addr, drain) != 0) {
        answer_text(ac, 503, "out of memory\n", NULL);
        return;
    }
    log_info("admin: upstream %s: server %s %s", name, addr,
             drain ? "drained: out of rotation" : "ready: back in rotation");
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        answer_text(ac, 503, "out of memory\n", NULL);
        return;
    }
    evbuffer_add(b, "{\"upstream\":", 12);
    json_str(b, name);
    evbuffer_add(b, ",\"address\":", 11);
    json_str(b, addr);
    evbuffer_add_printf(b, ",\"state\":\"%s\"}\n", drain ? "drained" : "ready");
    answer(ac, 200, "application/json", b, NULL);
    evbuffer_free(b);
}

static void on_healthz(struct admin_conn *ac)
{
    if (ac->a->draining)
        answer_text(ac, 503, "draining\n", NULL);
    else
        answer_text(ac, 200, "ok\n", NULL);
}

static const struct {
    const char *path;
    void (*cb)(struct admin_conn *);
} PATHS[] = {{"/healthz", on_healthz},
             {"/status", on_status},
             {"/metrics", on_metrics},
             {"/config", on_config},
             {"/upstreams", on_upstreams}};

/* A parsed request: no body, GET/HEAD on a known path (405 on a known
 * path, 404 elsewhere). */
static void dispatch(struct admin_conn *ac)
{
    const struct http1_request *req = &ac->req;
    if (req->body != HTTP1_BODY_NONE &&
        !(req->body == HTTP1_BODY_LENGTH && req->content_length == 0)) {
        answer_text(ac, 413, "the admin endpoint takes no request body\n", NULL);
        return;
    }
    static const char ups[] = "/upstreams/";
    if (req->path_len > sizeof(ups) - 1 && memcmp(req->path, ups, sizeof(ups) - 1) == 0) {
        if (req->method == HTTP1_METHOD_POST) {
            on_server_state(ac, req->path + sizeof(ups) - 1, req->path_len - (sizeof(ups) - 1));
        } else {
            static struct http1_header allow = {
                .name = "Allow", .name_len = 5, .value = "POST", .value_len = 4};
            static const struct config_header_rules rules = {.add = &allow, .nadd = 1};
            answer_text(ac, 405, "method not allowed\n", &rules);
        }
        return;
    }
    for (size_t i = 0; i < sizeof(PATHS) / sizeof(PATHS[0]); i++) {
        size_t n = strlen(PATHS[i].path);
        if (req->path_len != n || memcmp(req->path, PATHS[i].path, n) != 0)
            continue;
        if (req->method == HTTP1_METHOD_GET || req->method == HTTP1_METHOD_HEAD) {
            PATHS[i].cb(ac);
        } else {
            static struct http1_header allow = {
                .name = "Allow", .name_len = 5, .value = "GET, HEAD", .value_len = 9};
            static const struct config_header_rules rules = {.add = &allow, .nadd = 1};
            answer_text(ac, 405, "method not allowed\n", &rules);
        }
        return;
    }
    answer_text(ac, 404, "not found\n", NULL);
}

/* ---- connections ------------------------------------------------------------ */

static void conn_free(struct admin_conn *ac)
{
    struct admin *a = ac->a;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    a->nconns--;
    if (ac->timer)
        event_free(ac->timer);
    bufferevent_free(ac->bev);
    free(ac);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct admin_conn *ac = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (ac->answered) {
        ac->dropped += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (ac->dropped > ADMIN_LINGER_BYTES)
            conn_free(ac);
        return;
    }
    size_t len = evbuffer_get_length(in);
    size_t want = len < ADMIN_MAX_HEAD + 1 ? len : ADMIN_MAX_HEAD + 1;
    const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
    if (!buf)
        return;
    struct http1_limits lim = {.max_header_bytes = ADMIN_MAX_HEAD,
                               .max_headers = ADMIN_MAX_FIELDS - 1};
    ssize_t n = http1_parse_request(buf, want, &lim, &ac->req);
    if (n > 0)
        dispatch(ac);
    else if (n != HTTP1_INCOMPLETE)
        answer_text(ac, http1_error_status((int)n), "bad request\n", NULL);
    else if (len > ADMIN_MAX_HEAD)
        answer_text(ac, 431, "request head too large\n", NULL);
}

/* The answer is out: shut the write side and linger (see the top). */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct admin_conn *ac = arg;
    if (!ac->answered || ac->lingering || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    ac->lingering = true;
    bufferevent_disable(bev, EV_WRITE);
    bufferevent_enable(bev, EV_READ); /* off while the answer went out */
    if (shutdown(bufferevent_getfd(bev), SHUT_WR) < 0) {
        conn_free(ac);
        return;
    }
    struct timeval tv = {.tv_sec = ADMIN_LINGER_MS / 1000,
                         .tv_usec = (ADMIN_LINGER_MS % 1000) * 1000};
    evtimer_add(ac->timer, &tv);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
}

/* client_header from accept: the whole exchange, absolute. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

static void conn_new(struct admin *a, int fd)
{
    struct admin_conn *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        close(fd);
        return;
    }
    ac->a = a;
    ac->bev = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
    ac->timer = evtimer_new(a->base, on_deadline, ac);
    if (!ac->bev || !ac->timer) {
        if (ac->bev)
            bufferevent_free(ac->bev);
        else
            close(fd);
        if (ac->timer)
            event_free(ac->timer);
        free(ac);
        return;
    }
    http1_request_init(&ac->req, ac->fields, ADMIN_MAX_FIELDS);
    ac->next = a->conns;
    if (a->conns)
        a->conns->prev = ac;
    a->conns = ac;
    a->nconns++;
    int64_t ms = a->cfg->timeouts.client_header;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ac->timer, &tv);
    bufferevent_setcb(ac->bev, on_read, on_write, on_event, ac);
    bufferevent_setwatermark(ac->bev, EV_READ, 0, ADMIN_MAX_HEAD + 1);
    bufferevent_enable(ac->bev, EV_READ | EV_WRITE);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin *a = arg;
    event_add(a->accept_ev, NULL);
}

/* Accepts what is pending; beyond ADMIN_MAX_CONNS a client is closed at
 * once (it sees a close, not a hang, and costs nothing). */
static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct admin *a = arg;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            /* Out of descriptors: pause for 100 ms rather than spin (the
             * socket stays readable while the client waits). */
            struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
            event_del(a->accept_ev);
            evtimer_add(a->resume_ev, &tv);
        }
        if (fd < 0)
            return;
        if (a->nconns >= ADMIN_MAX_CONNS) {
            close(fd);
            continue;
        }
        conn_new(a, fd);
    }
}

void admin_draining(struct admin *a)
{
    if (a)
        a->draining = true;
}

struct admin *admin_start(struct event_base *base, const struct config *cfg, struct worker *workers,
                          unsigned nworkers)
{
    const struct config_addr *addr = cfg->admin_listen;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->base = base;
    a->cfg = cfg;
    a->listen_cfg = config_ref((struct config *)cfg);
    a->workers = workers;
    a->nworkers = nworkers;
    a->fd = -1;
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && !addr->is_unix)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr->is_unix && listener_claim_unix("admin.listen", addr) != 0) {
        if (fd >= 0)
            close(fd);
        goto out_free;
    }
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) != 0) {
        fprintf(stderr, "ferry: admin.listen %s: %s\n", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out_free;
    }
    /* Whoever may connect may drain servers: owner and group only,
     * whatever the umask (as CONFIG's "mode 0660"). */
    if (addr->is_unix && chmod(addr->path, 0660) != 0) {
        fprintf(stderr, "ferry: admin.listen %s: chmod: %s\n", addr->text, strerror(errno));
        close(fd);
        unlink(addr->path);
        goto out_free;
    }
    a->fd = fd;
    a->bound_unix = addr->is_unix;
    a->accept_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, a);
    a->resume_ev = evtimer_new(base, on_resume, a);
    if (!a->accept_ev || !a->resume_ev) {
        fprintf(stderr, "ferry: admin.listen %s: out of memory\n", addr->text);
        goto out_free;
    }
    return a;

out_free:
    admin_stop(a);
    return NULL;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    while (a->conns)
        conn_free(a->conns);
    if (a->accept_ev)
        event_free(a->accept_ev);
    if (a->resume_ev)
        event_free(a->resume_ev);
    if (a->fd >= 0)
        close(a->fd);
    if (a->bound_unix)
        unlink(a->listen_cfg->admin_listen->path);
    config_unref(a->listen_cfg);
    free(a);
}

int admin_serve(struct admin *a)
{
    if (listen(a->fd, 128) != 0 || event_add(a->accept_ev, NULL) != 0) {
        fprintf(stderr, "ferry: admin.listen %s: %s\n", a->listen_cfg->admin_listen->text,
                strerror(errno));
        return -1;
    }
    return 0;
}

void admin_set_config(struct admin *a, const struct config *cfg)
{
    if (a)
        a->cfg = cfg;
}
