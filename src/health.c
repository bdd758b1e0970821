/* health: see health.h. */
#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "coro.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "registry.h"
#include "tls.h"

#define STATUS_LINE_MAX 1024 /* a longer first line fails the check */
#define INTERIM_MAX 8192     /* bytes of 1xx heads skipped before the status */

/* One server's checker (a coroutine of the health thread). */
struct checker {
    struct config *cfg; /* a reference: up points into it */
    const struct config_upstream *up;
    unsigned server;
    struct registry_server *rs; /* the server's entry: its counts and verdict */
    /* a reload that keeps the server: taken before the next check */
    struct config *next_cfg; /* a reference */
    const struct config_upstream *next_up;
    unsigned next_server;
    struct coro *coro;
    bool gone;               /* a reload removed the server: the checker ends */
    const char *tls_failure; /* why the last check's handshake failed, or NULL */
    struct checker *next;
};

static struct {
    /* main thread only */
    struct config *cfg; /* the config in force, as last handed over (a reference) */
    pthread_t thread;
    bool started;
    int wake_pipe[2];
    /* the main thread posts, the health thread takes (under lock) */
    pthread_mutex_t lock;
    struct config *posted; /* a reference, handed over */
    bool stop;
    /* health thread only */
    struct loop *loop;
    struct checker *checkers;
    unsigned live; /* checkers spawned and not ended */
    bool stopping;
} H = {.wake_pipe = {-1, -1}, .lock = PTHREAD_MUTEX_INITIALIZER};

/* Reads one status line on s (in its input, not drained). Returns the
 * status (100..599), -EPROTO (no HTTP/1.x status line) or an await's
 * error. May yield. */
static int read_status_line(struct io_stream *s, int64_t deadline)
{
    struct evbuffer *in = io_input(s);
    for (size_t want = 12;; want = evbuffer_get_length(in) + 1) {
        int r = io_read_at_least(s, want, deadline);
        if (r < 0)
            return r;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF);
        if (eol.pos >= 0)
            break;
        if (evbuffer_get_length(in) > STATUS_LINE_MAX)
            return -EPROTO;
    }
    /* "HTTP/1.1 200" and what follows: SP, or the line's end without a
     * reason (CR, or a bare LF, which EVBUFFER_EOL_CRLF accepts too). */
    char line[13] = {0};
    evbuffer_copyout(in, line, 13);
    if (memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || line[9] < '1' || line[9] > '5' ||
        line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
        (line[12] != ' ' && line[12] != '\r' && line[12] != '\n'))
        return -EPROTO;
    return (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
}

/*
 * Reads the status of the final response on s, up to the deadline:
 * interim 1xx heads (100 Continue, 103 Early Hints) before it are read
 * whole and skipped, as any HTTP client must (RFC 9110 §15.2), at most
 * INTERIM_MAX bytes of them. A 101 is final (a switch nobody asked for:
 * it fails unless expected). Returns the status (100..599), or -EPROTO
 * (no HTTP/1.x status line, an interim head too large), or an await's
 * error. May yield.
 */
static int read_status(struct io_stream *s, int64_t deadline)
{
    struct evbuffer *in = io_input(s);
    size_t skipped = 0;
    for (;;) {
        int st = read_status_line(s, deadline);
        if (st < 0 || st >= 200 || st == 101)
            return st;
        struct evbuffer_ptr end;
        for (;;) {
            end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (end.pos >= 0)
                break;
            size_t len = evbuffer_get_length(in);
            if (skipped + len > INTERIM_MAX)
                return -EPROTO;
            int r = io_read_at_least(s, len + 1, deadline);
            if (r < 0)
                return r;
        }
        skipped += (size_t)end.pos + 4;
        if (skipped > INTERIM_MAX)
            return -EPROTO;
        evbuffer_drain(in, (size_t)end.pos + 4);
    }
}

/*
 * One check of c's server. Returns the status (the caller compares it to
 * expect_status) or -errno: connect, send or read failed or timed out,
 * -EPROTO for no valid status line, -ECANCELED when stopping. May yield.
 */
static int probe(struct checker *c)
{
    const struct config_health *h = &c->up->health;
    const struct config_addr *a = &c->up->servers[c->server].addr;
    int64_t deadline = loop_now() + h->timeout_ms * LOOP_MS;
    struct io_stream *s = NULL;
    c->tls_failure = NULL;
    int r = a->numeric ? io_connect_addr(H.loop, (const struct sockaddr *)&a->sa, a->salen, 16384,
                                         deadline, NULL, &s)
                       : io_connect(H.loop, a->host, a->port, 16384, deadline, NULL, &s);
    if (r == 0 && c->up->tls) { /* verified as a request's connection would be */
        r = tls_connect(s, c->up, c->server, deadline, NULL);
        c->tls_failure = r == -EPROTO ? tls_last_failure() : NULL;
    }
    if (r < 0) {
        io_stream_free(s);
        return r;
    }
    const struct config_server *sv = &c->up->servers[c->server];
    const char *host = h->host       ? h->host
                       : a->is_unix  ? "localhost"
                       : sv->written ? sv->written
                                     : a->text;
    if (evbuffer_add_printf(io_output(s),
                            "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ferry-health-check\r\n"
                            "Connection: close\r\n\r\n",
                            h->path, host) < 0)
        r = -ENOMEM;
    if (r == 0)
        r = io_flush(s, deadline);
    if (r == 0)
        r = read_status(s, deadline);
    io_stream_free(s);
    return r;
}

static bool expected(const struct config_health *h, int status)
{
    for (size_t i = 0; i < h->nexpect_status; i++)
        if (h->expect_status[i] == status)
            return true;
    return false;
}

/* Counts one check's outcome in the server's entry and publishes a
 * change of verdict (every worker reads it there). */
static void record(struct checker *c, int r)
{
    const struct config_health *h = &c->up->health;
    const char *addr = c->up->servers[c->server].addr.text;
    struct registry_server *rs = c->rs;
    bool pass = r > 0 && expected(h, r);
    bool healthy = !REGISTRY_LOAD(&rs->down);
    bool first = !REGISTRY_LOAD(&rs->checked);
    REGISTRY_STORE(&rs->checked, 1);
    if (pass) {
        REGISTRY_STORE(&rs->health_fails, 0);
        uint32_t passes = REGISTRY_ADD(&rs->health_passes, 1);
        if ((passes >= h->healthy_after || first) && !healthy) {
            REGISTRY_STORE(&rs->down, 0);
            log_info("upstream %s: server %s is up: health check passed %u times in a row",
                     c->up->name, addr, passes);
        }
        return;
    }
    REGISTRY_STORE(&rs->health_passes, 0);
    uint32_t fails = REGISTRY_ADD(&rs->health_fails, 1);
    if (fails < h->unhealthy_after || !healthy)
        return;
    REGISTRY_STORE(&rs->down, 1);
    char why[160];
    if (r > 0)
        snprintf(why, sizeof(why), "status %d", r);
    else if (r == -EPROTO && c->tls_failure)
        snprintf(why, sizeof(why), "%s", c->tls_failure);
    else if (r == -EPROTO)
        snprintf(why, sizeof(why), "no HTTP/1.x status line");
    else
        snprintf(why, sizeof(why), "%s", strerror(-r));
    log_warn("upstream %s: server %s is down: health check %s failed %u times in a row (%s)",
             c->up->name, addr, h->path, fails, why);
}

static void check_main(void *arg)
{
    struct checker *c = arg;
    while (!c->gone && !H.stopping) {
        if (c->next_cfg) { /* a reload kept the server: its new description */
            config_unref(c->cfg);
            c->cfg = c->next_cfg;
            c->next_cfg = NULL;
            c->up = c->next_up;
            c->server = c->next_server;
        }
        int64_t next = loop_now() + c->up->health.interval_ms * LOOP_MS;
        int r = probe(c);
        if (r == -ECANCELED || c->gone || H.stopping)
            break;
        record(c, r);
        if (io_sleep(next) == -ECANCELED)
            break;
    }
    for (struct checker **pp = &H.checkers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    config_unref(c->cfg);
    config_unref(c->next_cfg);
    free(c);
    if (--H.live == 0 && H.stopping)
        loop_stop(H.loop);
}

/* The server of upstream `up` (by name) with address addr in cfg, when
 * that upstream has health_check: its index, else -1. */
static long checked_index(const struct config *cfg, const char *up, const char *addr)
{
    const struct config_upstream *u = cfg ? config_upstream_find(cfg, up) : NULL;
    for (size_t i = 0; u && u->health.path && i < u->nservers; i++)
        if (strcmp(u->servers[i].addr.text, addr) == 0)
            return (long)i;
    return -1;
}

static bool has_server(const struct config *cfg, const char *up, const char *addr)
{
    const struct config_upstream *u = cfg ? config_upstream_find(cfg, up) : NULL;
    for (size_t i = 0; u && i < u->nservers; i++)
        if (strcmp(u->servers[i].addr.text, addr) == 0)
            return true;
    return false;
}

/* Did cfg's upstream `up` have an address of the DNS name `written` (a
 * server as written in the config, resolve.h) in service? */
static bool has_name(const struct config *cfg, const char *up, const char *written)
{
    const struct config_upstream *u = cfg && written ? config_upstream_find(cfg, up) : NULL;
    for (size_t i = 0; u && i < u->nservers; i++)
        if (u->servers[i].written && strcmp(u->servers[i].written, written) == 0)
            return true;
    return false;
}

/* Health thread: the checkers follow cfg. A checker whose server cfg
 * still checks takes cfg's description before its next check (counts and
 * verdict are in the registry: they stay); one whose server cfg does not
 * check ends (its check in progress is cancelled); a server checked
 * afresh gets a checker, its first check at once. */
static void apply(struct config *cfg)
{
    for (struct checker *c = H.checkers; c; c = c->next) {
        if (c->gone)
            continue;
        const struct config_upstream *cur = c->next_cfg ? c->next_up : c->up;
        long i = checked_index(cfg, cur->name,
                               cur->servers[c->next_cfg ? c->next_server : c->server].addr.text);
        if (i < 0) {
            c->gone = true;
            if (c->coro)
                coro_cancel(c->coro);
            continue;
        }
        /* cur may point into the pending config: look it up before its unref */
        c->next_up = config_upstream_find(cfg, cur->name);
        c->next_server = (unsigned)i;
        config_unref(c->next_cfg);
        c->next_cfg = config_ref(cfg);
    }
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; up->health.path && s < up->nservers; s++) {
            struct registry_server *rs = registry_server(up->name, up->servers[s].addr.text);
            struct checker *c = H.checkers;
            while (c && (c->gone || c->rs != rs))
                c = c->next;
            if (c || !rs)
                continue;
            if (!(c = calloc(1, sizeof(*c)))) {
                log_error("health checks: out of memory: %s of %s not checked",
                          up->servers[s].addr.text, up->name);
                continue;
            }
            c->cfg = config_ref(cfg);
            c->up = up;
            c->server = (unsigned)s;
            c->rs = rs;
            if (loop_spawn(H.loop, check_main, c, &c->coro) != 0) {
                log_error("health checks: no stack for a checker: %s of %s not checked",
                          up->servers[s].addr.text, up->name);
                config_unref(c->cfg);
                free(c);
                continue;
            }
            c->next = H.checkers;
            H.checkers = c;
            H.live++;
        }
    }
}

/* Health thread: the main thread posted a config or asks to stop. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    char buf[64];
    if (fd >= 0 && read(fd, buf, sizeof(buf)) < 0)
        return;
    pthread_mutex_lock(&H.lock);
    struct config *cfg = H.posted;
    H.posted = NULL;
    bool stop = H.stop;
    pthread_mutex_unlock(&H.lock);
    if (stop && !H.stopping) {
        H.stopping = true;
        for (struct checker *c = H.checkers; c; c = c->next)
            if (c->coro)
                coro_cancel(c->coro);
        if (H.live == 0)
            loop_stop(H.loop);
    }
    if (cfg && !H.stopping)
        apply(cfg);
    config_unref(cfg);
}

static void *health_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    H.loop = loop_new(CORO_STACK_DEFAULT, 4);
    struct event *wake_ev =
        H.loop ? event_new(loop_base(H.loop), H.wake_pipe[0], EV_READ | EV_PERSIST, on_wake, NULL)
               : NULL;
    if (!wake_ev || event_add(wake_ev, NULL) != 0) {
        log_error("health checks: out of memory at start: no active checks");
        goto out_free;
    }
    on_wake(-1, 0, NULL); /* the config posted before the thread started */
    if (!H.stopping || H.live)
        loop_run(H.loop);
out_free:
    if (wake_ev)
        event_free(wake_ev);
    loop_free(H.loop);
    H.loop = NULL;
    io_thread_cleanup();
    return NULL;
}

static bool has_checks(const struct config *cfg)
{
    for (size_t u = 0; u < cfg->nupstreams; u++)
        if (cfg->upstreams[u].health.path)
            return true;
    return false;
}

/*
 * Main thread, before the workers see fresh: the health fields of fresh's
 * servers in the registry. A server old checked too keeps its verdict and
 * counts. One checked afresh starts over: down until its first pass when
 * it is new to the config (unless start_healthy, or it is a new address
 * of a DNS name old had in service: resolve.h), up when old had it in
 * service without checks. One no longer checked is up (its verdict
 * would be stale; workers ignore it without health_check anyway).
 */
static void prepare(const struct config *old, const struct config *fresh)
{
    for (size_t u = 0; u < fresh->nupstreams; u++) {
        const struct config_upstream *up = &fresh->upstreams[u];
        for (size_t s = 0; s < up->nservers; s++) {
            const char *addr = up->servers[s].addr.text;
            bool was_checked = checked_index(old, up->name, addr) >= 0;
            struct registry_server *rs = up->health.path ? registry_server(up->name, addr)
                                         : was_checked   ? registry_server_find(up->name, addr)
                                                         : NULL;
            if (!rs || (up->health.path && was_checked))
                continue;
            /* A new address of a name already in service replaces one
             * that was up: it starts up too (a DNS move is no outage). */
            bool down = up->health.path && !has_server(old, up->name, addr) &&
                        !up->health.start_healthy &&
                        !has_name(old, up->name, up->servers[s].written);
            registry_health_reset(rs, down);
        }
    }
}

/* No checker thread: every checked server of cfg is served as up. */
static void unchecked(const struct config *cfg)
{
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; up->health.path && s < up->nservers; s++) {
            struct registry_server *rs = registry_server_find(up->name, up->servers[s].addr.text);
            if (rs)
                registry_health_reset(rs, false);
        }
    }
}

static int start_thread(void)
{
    if (pipe2(H.wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        log_error("health checks: cannot start: %s; no active checks", strerror(errno));
        return -1;
    }
    H.stopping = false;
    H.live = 0;
    if (pthread_create(&H.thread, NULL, health_main, NULL) != 0) {
        log_error("health checks: cannot start their thread; no active checks");
        for (int i = 0; i < 2; i++) {
            close(H.wake_pipe[i]);
            H.wake_pipe[i] = -1;
        }
        return -1;
    }
    H.started = true;
    return 0;
}

void health_reload(struct config *fresh)
{
    prepare(H.cfg, fresh);
    config_unref(H.cfg);
    H.cfg = config_ref(fresh);
    if (!H.started && !has_checks(fresh))
        return;
    pthread_mutex_lock(&H.lock);
    config_unref(H.posted); /* not taken yet: superseded */
    H.posted = config_ref(fresh);
    pthread_mutex_unlock(&H.lock);
    if (H.started) {
        ssize_t w = write(H.wake_pipe[1], "x", 1);
        (void)w; /* a full pipe: a wake-up is pending already */
    } else if (start_thread() != 0) {
        unchecked(fresh);
    }
}

int health_start(struct config *cfg)
{
    if (H.cfg || H.started)
        return -1;
    health_reload(cfg);
    return H.started || !has_checks(cfg) ? 0 : -1;
}

void health_stop(void)
{
    if (H.started) {
        pthread_mutex_lock(&H.lock);
        H.stop = true;
        pthread_mutex_unlock(&H.lock);
        ssize_t w = write(H.wake_pipe[1], "x", 1);
        (void)w;
        pthread_join(H.thread, NULL);
        H.started = false;
    }
    for (int i = 0; i < 2; i++) {
        if (H.wake_pipe[i] >= 0)
            close(H.wake_pipe[i]);
        H.wake_pipe[i] = -1;
    }
    pthread_mutex_lock(&H.lock);
    config_unref(H.posted);
    H.posted = NULL;
    H.stop = false;
    pthread_mutex_unlock(&H.lock);
    config_unref(H.cfg);
    H.cfg = NULL;
}
