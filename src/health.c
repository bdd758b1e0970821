/* health: see health.h. */
#include "health.h"

#include <errno.h>
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
#include "upstream.h"

#define STATUS_LINE_MAX 1024 /* a longer first line fails the check */

/* One server's checker (a coroutine of the health thread). */
struct checker {
    const struct config_upstream *up;
    unsigned server;
    struct coro *coro; /* NULL once it ended */
    unsigned passes, fails;
    bool checked; /* a verdict was given: the first pass brings a new server up */
};

static struct {
    struct config *cfg;
    pthread_t thread;
    bool started;
    struct loop *loop;
    struct checker *checkers;
    size_t n, live;
    int stop_pipe[2];
    bool stopping;
} H = {.stop_pipe = {-1, -1}};

/*
 * Reads the status of the response on s, up to the deadline. Returns the
 * status (100..599), or -EPROTO (no HTTP/1.x status line), or an await's
 * error. May yield.
 */
static int read_status(struct io_stream *s, int64_t deadline)
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
    char line[13];
    evbuffer_copyout(in, line, 12);
    line[12] = '\0';
    if (memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || line[9] < '1' || line[9] > '5' ||
        line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9')
        return -EPROTO;
    return (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
}

/*
 * One check of c's server. Returns the status (the caller compares it to
 * expect_status) or -errno: connect, send or read failed or timed out,
 * -EPROTO for no valid status line, -ECANCELED when stopping. May yield.
 */
static int probe(const struct checker *c)
{
    const struct config_health *h = &c->up->health;
    const struct config_addr *a = &c->up->servers[c->server].addr;
    int64_t deadline = loop_now() + h->timeout_ms * LOOP_MS;
    struct io_stream *s = NULL;
    int r = a->numeric ? io_connect_addr(H.loop, (const struct sockaddr *)&a->sa, a->salen, 16384,
                                         deadline, NULL, &s)
                       : io_connect(H.loop, a->host, a->port, 16384, deadline, NULL, &s);
    if (r < 0)
        return r;
    const char *host = h->host ? h->host : a->is_unix ? "localhost" : a->text;
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

/* Counts one check's outcome and publishes a change of verdict. */
static void record(struct checker *c, int r)
{
    const struct config_health *h = &c->up->health;
    const char *addr = c->up->servers[c->server].addr.text;
    bool pass = r > 0 && expected(h, r);
    bool healthy = upstream_healthy(c->up, c->server);
    bool first = !c->checked;
    c->checked = true;
    if (pass) {
        c->fails = 0;
        if ((++c->passes >= h->healthy_after || first) && !healthy &&
            upstream_set_health(c->up, c->server, true))
            log_info("upstream %s: server %s is up: health check passed %u times in a row",
                     c->up->name, addr, c->passes);
        return;
    }
    c->passes = 0;
    if (++c->fails < h->unhealthy_after || !healthy ||
        !upstream_set_health(c->up, c->server, false))
        return;
    char why[64];
    if (r > 0)
        snprintf(why, sizeof(why), "status %d", r);
    else if (r == -EPROTO)
        snprintf(why, sizeof(why), "no HTTP/1.x status line");
    else
        snprintf(why, sizeof(why), "%s", strerror(-r));
    log_warn("upstream %s: server %s is down: health check %s failed %u times in a row (%s)",
             c->up->name, addr, h->path, c->fails, why);
}

static void check_main(void *arg)
{
    struct checker *c = arg;
    while (!H.stopping) {
        int64_t next = loop_now() + c->up->health.interval_ms * LOOP_MS;
        int r = probe(c);
        if (r == -ECANCELED || H.stopping)
            break;
        record(c, r);
        if (io_sleep(next) == -ECANCELED)
            break;
    }
    c->coro = NULL;
    if (--H.live == 0)
        loop_stop(H.loop);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    H.stopping = true;
    for (size_t i = 0; i < H.n; i++)
        if (H.checkers[i].coro)
            coro_cancel(H.checkers[i].coro);
    if (H.live == 0)
        loop_stop(H.loop);
}

static void *health_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    H.loop = loop_new(CORO_STACK_DEFAULT, 4);
    struct event *stop_ev =
        H.loop ? event_new(loop_base(H.loop), H.stop_pipe[0], EV_READ, on_stop, NULL) : NULL;
    if (!stop_ev || event_add(stop_ev, NULL) != 0) {
        log_error("health checks: out of memory at start: no active checks");
        goto out_free;
    }
    for (size_t i = 0; i < H.n; i++) {
        if (loop_spawn(H.loop, check_main, &H.checkers[i], &H.checkers[i].coro) != 0) {
            log_error("health checks: no stack for a checker: no active checks");
            on_stop(-1, 0, NULL); /* those spawned end on their first turn */
            break;
        }
        H.live++;
    }
    if (H.live)
        loop_run(H.loop);
out_free:
    if (stop_ev)
        event_free(stop_ev);
    loop_free(H.loop);
    H.loop = NULL;
    io_thread_cleanup();
    return NULL;
}

int health_start(struct config *cfg)
{
    if (H.started)
        return -1;
    size_t n = 0;
    for (size_t u = 0; u < cfg->nupstreams; u++)
        if (cfg->upstreams[u].health.path)
            n += cfg->upstreams[u].nservers;
    if (n == 0)
        return 0;
    H.checkers = calloc(n, sizeof(*H.checkers));
    if (!H.checkers || pipe(H.stop_pipe) != 0) {
        log_error("health checks: cannot start: %s", strerror(errno));
        free(H.checkers);
        H.checkers = NULL;
        return -1;
    }
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; up->health.path && s < up->nservers; s++) {
            H.checkers[H.n].up = up;
            H.checkers[H.n++].server = (unsigned)s;
            /* creates the server's shared state (down until its first
             * pass, unless start_healthy) before any request */
            upstream_healthy(up, (unsigned)s);
        }
    }
    H.cfg = config_ref(cfg);
    H.stopping = false;
    H.live = 0;
    if (pthread_create(&H.thread, NULL, health_main, NULL) != 0) {
        log_error("health checks: cannot start their thread");
        health_stop();
        return -1;
    }
    H.started = true;
    return 0;
}

void health_stop(void)
{
    if (H.started) {
        ssize_t w = write(H.stop_pipe[1], "x", 1);
        (void)w;
        pthread_join(H.thread, NULL);
        H.started = false;
    }
    for (int i = 0; i < 2; i++) {
        if (H.stop_pipe[i] >= 0)
            close(H.stop_pipe[i]);
        H.stop_pipe[i] = -1;
    }
    free(H.checkers);
    H.checkers = NULL;
    H.n = 0;
    config_unref(H.cfg);
    H.cfg = NULL;
}
