/*
 * server: the process around the workers (see server.h). The main thread
 * checks and binds the listen addresses, starts one worker thread per
 * core (or `workers`), serves the admin endpoint and handles signals:
 * SIGTERM/SIGINT drain (stop accepting, finish in-flight requests up to
 * shutdown_timeout, close idle keep-alive connections; the admin listener
 * keeps answering, /healthz with 503 "draining"; a second SIGTERM/SIGINT
 * exits at once), SIGUSR1 reopens
 * the access log, SIGHUP reloads the file (see "reload" below).
 */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin.h"
#include "config.h"
#include "conn.h"
#include "coro.h"
#include "daemon.h"
#include "evmem.h"
#include "io.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "ratelimit_redis.h"
#include "loop.h"
#include "health.h"
#include "registry.h"
#include "resolve.h"
#include "snapshot.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

/* Released stacks each worker keeps mapped for reuse. */
#define STACK_POOL_CAP 256
#define DRAIN_POLL_MS 50
#define RELOAD_POLL_MS 2
#define HEARTBEAT_MS 250
#define STATUS_MS 2000

struct server {
    pthread_barrier_t started; /* every worker set up (or failed), and main */
    struct config *cfg;
    const char *config_path;
    struct event_base *base;
    struct worker *workers;
    unsigned nworkers;
    unsigned njoined; /* workers joined, in order, while draining */
    struct admin *admin;
    struct event *join_poll;
    struct event *reload_poll; /* waits for every worker to apply a reload */
    struct event *status_ev;   /* STATUS= and the watchdog */
    char *pid_file;            /* as started with (pid_file changes need a restart) */
    int *inherited;            /* socket activation: per listener of start_cfg, or -1 */
    struct config *start_cfg;  /* a reference to the config started with */
    int pid_fd;
    bool bound; /* unix listener sockets exist: remove them at exit */
    bool stopping;
    bool reloading;    /* posted to the workers, not applied by all yet */
    bool reload_again; /* a SIGHUP came meanwhile: reload once more after */
    bool reload_dns;   /* the reload under way applies new DNS answers (resolve.h) */
    bool dns_again;    /* new DNS answers came meanwhile: apply them after */
    int64_t reload_t0; /* monotonic microseconds */
    double load_ms;    /* the last (re)load: read, checked and applied */
    uint64_t *beats;   /* each worker's heartbeat at the last watchdog ping */
    uint64_t watchdog_us;
    int64_t watchdog_last;
    bool watchdog_warned;
    uint64_t status_requests;
    int64_t status_t;
};

static bool opt_streq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (!w->conns)
        loop_stop(w->loop);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    log_warn("worker %u: shutdown_timeout reached with %lu requests in flight", w->id,
             WORKER_STAT_GET(w, requests_live));
    loop_stop(w->loop);
}

/* A reload posted by the main thread: the new snapshot for new requests,
 * the new listening sockets. Called from a callback of the worker's loop
 * (no request is running: a safe point). Out of memory here aborts, like
 * the config loader: a half-applied reload is never left running. */
static void apply_update(struct worker *w)
{
    pthread_mutex_lock(&w->update_lock);
    struct worker_update *u = w->update;
    if (u) {
        /* Listeners first: a removed listener's queue is served with the
         * config its acceptor points into, still the installed one. */
        if (listener_swap(w, u->cfg, u->listen_fds, u->nlisten) != 0 ||
            snapshot_install(w, u->cfg, u->metrics, u->baseline) != 0) {
            log_error("worker %u: out of memory applying a reload", w->id);
            abort();
        }
        w->update = NULL;
    }
    pthread_mutex_unlock(&w->update_lock);
    free(u);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    __atomic_add_fetch(&w->heartbeat, 1, __ATOMIC_RELAXED);
}

/* The main thread posted a reload, or asks this worker to drain. */
static void on_control(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct worker *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) != sizeof(v))
        return;
    apply_update(w);
    if (!__atomic_load_n(&w->drain_requested, __ATOMIC_ACQUIRE) || w->draining)
        return;
    w->draining = true;
    listener_stop(w);
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        conn_drain(c);
    }
    struct event_base *base = loop_base(w->loop);
    w->drain_poll = event_new(base, -1, EV_PERSIST, on_drain_poll, w);
    struct timeval tv = {.tv_sec = 0, .tv_usec = DRAIN_POLL_MS * 1000};
    event_add(w->drain_poll, &tv);
    int64_t ms = w->cfg->shutdown_timeout;
    struct timeval dl = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    w->drain_timer = event_new(base, -1, 0, on_drain_deadline, w);
    event_add(w->drain_timer, &dl);
    on_drain_poll(-1, 0, w);
}

/* Sets a worker up on its own thread. Returns 0 or -1 (message logged). */
/* A worker's malloc arena made writable this far at start, so that a
 * cold burst of waiting requests grows the heap without a syscall each. */
#define WORKER_HEAP_RESERVE (32u << 20)

static int worker_setup(struct worker *w)
{
    daemon_reserve_heap(WORKER_HEAP_RESERVE);
    w->loop = loop_new(w->cfg->coroutine_stack, STACK_POOL_CAP);
    if (!w->loop) {
        log_error("worker %u: cannot create its event loop", w->id);
        return -1;
    }
    struct config *cfg = config_ref(w->cfg);
    if (snapshot_install(w, cfg, w->metrics, NULL) != 0) {
        config_unref(cfg);
        log_error("worker %u: out of memory at start", w->id);
        return -1;
    }
    w->control_ev =
        event_new(loop_base(w->loop), w->control_fd, EV_READ | EV_PERSIST, on_control, w);
    w->heartbeat_ev = event_new(loop_base(w->loop), -1, EV_PERSIST, on_heartbeat, w);
    struct timeval hb = {.tv_sec = 0, .tv_usec = HEARTBEAT_MS * 1000};
    if (!w->control_ev || event_add(w->control_ev, NULL) != 0 || !w->heartbeat_ev ||
        event_add(w->heartbeat_ev, &hb) != 0 || listener_start(w) != 0) {
        log_error("worker %u: out of memory at start", w->id);
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    w->failed = worker_setup(w) != 0;
    pthread_barrier_wait(w->started);
    if (w->failed)
        return NULL;
    loop_run(w->loop);
    if (w->conns || loop_live(w->loop))
        return NULL; /* stopped at shutdown_timeout: the process exit closes the rest */
    /* A clean drain: free what the worker owns (leak checkers see none).
     * The snapshot's metrics stay for the admin listener (workers_free). */
    if (w->snap->metrics == w->metrics)
        w->snap->metrics = NULL;
    snapshot_release(w->snap);
    w->snap = NULL;
    upstream_registry_free(&w->upstream_registry);
    listener_stop(w);
    event_free(w->control_ev);
    event_free(w->heartbeat_ev);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->drain_poll)
        event_free(w->drain_poll);
    ratelimit_redis_thread_end();
    loop_free(w->loop);
    proxy_worker_fini(w);
    io_thread_cleanup();
    return NULL;
}

/* While draining, the main loop keeps running (the admin listener answers,
 * signals are handled) and ends once every worker thread has finished. */
static void on_join_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    while (srv->njoined < srv->nworkers &&
           pthread_tryjoin_np(srv->workers[srv->njoined].thread, NULL) == 0)
        srv->njoined++;
    if (srv->njoined == srv->nworkers)
        event_base_loopexit(srv->base, NULL);
}

static void stop_workers(struct server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    daemon_stopping();
    admin_draining(srv->admin);
    log_info("draining: finishing in-flight requests (shutdown_timeout %llds)",
             (long long)(srv->cfg->shutdown_timeout / 1000));
    uint64_t one = 1;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        __atomic_store_n(&srv->workers[i].drain_requested, true, __ATOMIC_RELEASE);
        ssize_t n = write(srv->workers[i].control_fd, &one, sizeof(one));
        (void)n;
    }
    srv->join_poll = event_new(srv->base, -1, EV_PERSIST, on_join_poll, srv);
    struct timeval tv = {.tv_sec = 0, .tv_usec = DRAIN_POLL_MS * 1000};
    if (!srv->join_poll || event_add(srv->join_poll, &tv) != 0)
        event_base_loopexit(srv->base, NULL); /* out_join waits for the workers */
}

/* A second SIGTERM/SIGINT while draining: exit now, cutting what is in
 * flight. The pid file and unix sockets go; the kernel closes the rest. */
static void exit_now(struct server *srv, int sig)
{
    log_warn("%s while draining: exiting now", sig == SIGINT ? "SIGINT" : "SIGTERM");
    if (srv->pid_file)
        daemon_pidfile_remove(srv->pid_file, srv->pid_fd);
    listener_unlink_unix(srv->cfg, srv->start_cfg, srv->inherited);
    if (srv->admin)
        admin_stop(srv->admin); /* removes a unix admin socket */
    _exit(1);
}

/* ---- reload (SIGHUP) ------------------------------------------------------------------
 *
 * The file is read and checked on the main thread; an invalid one (or a
 * new listen address that cannot be bound) is one log line and STATUS=,
 * and the running config keeps serving. A valid one is posted whole to
 * every worker (config reference, metrics sized for it, listening sockets:
 * the same socket for an address that stays, a new one for a new
 * address), and each worker installs it at a safe point of its loop: new
 * requests take the new snapshot, requests in flight finish on theirs.
 * Only once every worker applied it is the next reload started: SIGHUPs
 * meanwhile are coalesced into one more reload. */

/* One line for the log and STATUS=: the first line of the loader's report
 * (FILE:LINE:COLUMN: PATH: message), and how many errors it counted. */
static void reload_refused(const char *diag)
{
    const char *first = diag && *diag ? diag : "cannot read the file";
    int len = (int)strcspn(first, "\n");
    const char *summary = NULL;
    for (const char *p = diag; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strstr(p, " errors, ") && strcspn(p, "\n") < 200)
            summary = p;
    int slen = summary ? (int)strcspn(summary, "\n") : 0;
    log_error("reload: %.*s%s%.*s%s; keeping the running config", len, first, summary ? " (" : "",
              slen, summary ? summary : "", summary ? ")" : "");
    char st[256];
    snprintf(st, sizeof(st), "reload failed: %.*s; serving the previous config",
             len < 160 ? len : 160, first);
    daemon_ready(st);
}

/* Keys a reload cannot change: warned about once, the running values stay. */
static void reload_restart_only(const struct config *old, const struct config *cfg)
{
    char what[256] = "";
    const struct {
        bool changed;
        const char *key;
    } keys[] = {
        {old->workers != cfg->workers, "workers"},
        {old->coroutine_stack != cfg->coroutine_stack, "coroutine_stack"},
        {!opt_streq(old->pid_file, cfg->pid_file), "pid_file"},
        {!opt_streq(old->admin_listen ? old->admin_listen->text : NULL,
                    cfg->admin_listen ? cfg->admin_listen->text : NULL),
         "admin.listen"},
        {!opt_streq(old->access_log.path, cfg->access_log.path) ||
             old->access_log.format != cfg->access_log.format,
         "access_log"},
        {old->error_log_level != cfg->error_log_level, "error_log"},
        {!opt_streq(old->user, cfg->user), "user"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!keys[i].changed)
            continue;
        if (what[0])
            strncat(what, ", ", sizeof(what) - strlen(what) - 1);
        strncat(what, keys[i].key, sizeof(what) - strlen(what) - 1);
    }
    if (what[0])
        log_warn("reload: %s changed; this needs a restart: the running values stay", what);
}

static void update_free(struct worker_update *u)
{
    if (!u)
        return;
    config_unref(u->cfg);
    metrics_free(u->metrics);
    metrics_free(u->baseline);
    free(u->listen_fds);
    free(u);
}

/* Builds every worker's update; 0, or -1 with err set (nothing left open). */
static int reload_prepare(struct server *srv, struct config *fresh, struct worker_update **ups,
                          char *err, size_t errlen)
{
    unsigned i;
    for (i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        struct worker_update *u = ups[i] = calloc(1, sizeof(*u));
        if (!u || !(u->listen_fds = calloc(fresh->nlisteners, sizeof(int))) ||
            !(u->metrics = metrics_new(fresh)) || !(u->baseline = metrics_new(srv->cfg))) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        u->cfg = config_ref(fresh);
        u->nlisten = (unsigned)fresh->nlisteners;
        /* Counters run on for what both configs name alike: a copy of the
         * old ones now, carried to the new; what the old snapshot counts
         * after this, the worker carries when that snapshot goes. */
        metrics_carry(u->baseline, srv->cfg, w->metrics, srv->cfg);
        metrics_carry(u->metrics, fresh, u->baseline, srv->cfg);
        if (listener_reopen(srv->cfg, w->listen_fds, fresh, u->listen_fds,
                            i ? ups[0]->listen_fds : NULL, err, errlen) != 0) {
            free(u->listen_fds); /* closed by listener_reopen */
            u->listen_fds = NULL;
            break;
        }
    }
    if (i == srv->nworkers)
        return 0;
    for (unsigned j = 0; j < i; j++)
        listener_close_new(srv->cfg, srv->workers[j].listen_fds, ups[j]->listen_fds,
                           fresh->nlisteners);
    for (unsigned j = 0; j <= i && j < srv->nworkers; j++) {
        update_free(ups[j]);
        ups[j] = NULL;
    }
    return -1;
}

static void reload_as(struct server *srv, bool dns);

/* Every worker applied the posted reload: READY=1, and the next one if
 * SIGHUPs came meanwhile. */
static void on_reload_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        pthread_mutex_lock(&w->update_lock);
        bool pending = w->update != NULL;
        pthread_mutex_unlock(&w->update_lock);
        if (pending) {
            struct timeval tv = {.tv_sec = 0, .tv_usec = RELOAD_POLL_MS * 1000};
            event_add(srv->reload_poll, &tv);
            return;
        }
    }
    srv->reloading = false;
    srv->load_ms = (double)(mono_us() - srv->reload_t0) / 1000.0;
    const struct config *cfg = srv->cfg;
    if (srv->reload_dns) {
        log_info("dns: new addresses applied in %.1f ms", srv->load_ms);
    } else {
        log_info("reload: %s applied in %.1f ms (%zu listeners, %zu routes, %zu upstreams)",
                 srv->config_path, srv->load_ms, cfg->nlisteners, cfg->nroutes, cfg->nupstreams);
        char st[160];
        snprintf(st, sizeof(st), "serving: config reloaded in %.1f ms", srv->load_ms);
        daemon_ready(st);
    }
    if (srv->reload_again && !srv->stopping) {
        srv->reload_again = false;
        srv->dns_again = false; /* the reload expands with the newest addresses */
        reload_as(srv, false);
    } else if (srv->dns_again && !srv->stopping) {
        srv->dns_again = false;
        reload_as(srv, true);
    }
}

/* Reads and checks the config for a reload: the file, or (dns) the text
 * the running config was read from, expanded with the names' newest
 * addresses (resolve.h). NULL when refused (logged). */
static struct config *reload_load(struct server *srv, bool dns)
{
    char *diag = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&diag, &dlen);
    struct config *fresh = NULL;
    int rc = dns ? config_load_string(srv->cfg->path, srv->cfg->source_, srv->cfg->source_len_,
                                      &fresh, f ? f : stderr)
                 : config_load(srv->config_path, &fresh, f ? f : stderr);
    if (rc == 0 && tls_config_load(fresh, f ? f : stderr) != 0) {
        config_unref(fresh); /* a bad certificate or key: the old ones stay */
        fresh = NULL;
        rc = -1;
    }
    if (f)
        fclose(f);
    if (rc != 0) {
        reload_refused(diag);
        free(diag);
        return NULL;
    }
    /* Each warning once (an expiring certificate, a key others can read). */
    for (const char *p = diag; !dns && fresh->nwarnings && p && *p;
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strstr(p, "warning: ") && strstr(p, "warning: ") < p + strcspn(p, "\n"))
            log_warn("reload: %.*s", (int)strcspn(p, "\n"), p);
    free(diag);
    resolve_update(fresh);
    return fresh;
}

static void reload_as(struct server *srv, bool dns)
{
    if (srv->stopping) {
        if (!dns)
            log_warn("SIGHUP while stopping: ignored");
        return;
    }
    if (srv->reloading) {
        /* coalesced: one more reload once this one is applied */
        *(dns ? &srv->dns_again : &srv->reload_again) = true;
        return;
    }
    if (dns && !srv->cfg->source_)
        return; /* the running config names no host */
    srv->reload_t0 = mono_us();
    srv->reload_dns = dns;
    if (!dns)
        daemon_reloading();
    struct config *fresh = reload_load(srv, dns);
    if (!fresh)
        return;
    reload_restart_only(srv->cfg, fresh);

    char err[256] = "";
    struct worker_update **ups = calloc(srv->nworkers, sizeof(*ups));
    if (!ups || reload_prepare(srv, fresh, ups, err, sizeof(err)) != 0) {
        free(ups);
        config_unref(fresh);
        resolve_names(srv->cfg); /* the running config's names are asked again */
        log_error("reload: %s; keeping the running config", err[0] ? err : "out of memory");
        char st[300];
        snprintf(st, sizeof(st), "reload failed: %s; serving the previous config", err);
        daemon_ready(st);
        return;
    }
    /* Before the workers see it: the health states of servers it adds
     * (down until their first pass), then the checkers follow. */
    health_reload(fresh);
    uint64_t one = 1;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        pthread_mutex_lock(&w->update_lock);
        w->update = ups[i];
        pthread_mutex_unlock(&w->update_lock);
        w->metrics = ups[i]->metrics; /* the old ones are the old snapshot's now */
        ssize_t n = write(w->control_fd, &one, sizeof(one));
        (void)n;
    }
    free(ups);
    /* A unix listener that went: its path goes now, its sockets with the
     * workers' old snapshot. */
    for (size_t i = 0; i < srv->cfg->nlisteners; i++) {
        const struct config_addr *a = &srv->cfg->listeners[i].addr;
        bool kept = false;
        for (size_t j = 0; j < fresh->nlisteners && !kept; j++)
            kept = strcmp(fresh->listeners[j].addr.text, a->text) == 0;
        if (a->is_unix && !kept && !listener_inherited(srv->start_cfg, srv->inherited, a->text))
            unlink(a->path);
    }
    /* A socket-activated address that went: our copy of it goes too. */
    for (size_t i = 0; srv->inherited && i < srv->start_cfg->nlisteners; i++) {
        bool kept = false;
        for (size_t j = 0; j < fresh->nlisteners && !kept; j++)
            kept =
                strcmp(fresh->listeners[j].addr.text, srv->start_cfg->listeners[i].addr.text) == 0;
        if (!kept && srv->inherited[i] >= 0) {
            close(srv->inherited[i]);
            srv->inherited[i] = -1;
        }
    }
    struct config *old = srv->cfg;
    srv->cfg = fresh;
    admin_set_config(srv->admin, fresh);
    config_unref(old);
    srv->reloading = true;
    if (!srv->reload_poll)
        srv->reload_poll = evtimer_new(srv->base, on_reload_poll, srv);
    if (srv->reload_poll) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = RELOAD_POLL_MS * 1000};
        event_add(srv->reload_poll, &tv);
    }
}

/* ---- STATUS= and the watchdog ---------------------------------------------------------- */

/* The watchdog ping goes only once every worker's loop turned since the
 * last one (each bumps its heartbeat every HEARTBEAT_MS; checked four
 * times per WatchdogSec): a wedged worker gets the process restarted, not
 * just a wedged main loop. WatchdogSec must be well above HEARTBEAT_MS. */
static void watchdog_tick(struct server *srv)
{
    if (!srv->watchdog_us)
        return;
    int64_t now = mono_us();
    bool all = true;
    for (unsigned i = 0; i < srv->nworkers && !srv->stopping; i++)
        if (__atomic_load_n(&srv->workers[i].heartbeat, __ATOMIC_RELAXED) == srv->beats[i])
            all = false;
    if (!all) {
        if (now - srv->watchdog_last > (int64_t)srv->watchdog_us && !srv->watchdog_warned) {
            log_error("watchdog: a worker's loop has not turned for WatchdogSec; no more pings");
            srv->watchdog_warned = true;
        }
        return;
    }
    for (unsigned i = 0; i < srv->nworkers; i++)
        srv->beats[i] = __atomic_load_n(&srv->workers[i].heartbeat, __ATOMIC_RELAXED);
    daemon_watchdog();
    srv->watchdog_last = now;
    srv->watchdog_warned = false;
}

static void status_tick(struct server *srv)
{
    int64_t now = mono_us();
    if (now - srv->status_t < (int64_t)STATUS_MS * 1000 || srv->stopping || srv->reloading)
        return;
    unsigned long conns = 0, total = 0;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        conns += WORKER_STAT_GET(&srv->workers[i], connections);
        total += WORKER_STAT_GET(&srv->workers[i], requests_total);
    }
    double secs = srv->status_t ? (double)(now - srv->status_t) / 1e6 : 0;
    double rps = secs > 0 ? (double)(total - srv->status_requests) / secs : 0;
    srv->status_t = now;
    srv->status_requests = total;
    char st[200];
    snprintf(st, sizeof(st), "serving: %lu connections, %.0f requests/s, config loaded in %.1f ms",
             conns, rps, srv->load_ms);
    daemon_status(st);
}

static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    watchdog_tick(srv);
    status_tick(srv);
}

/* A timer on the main loop: often enough for the watchdog (half its
 * interval, capped at 1 s) and STATUS= every STATUS_MS. */
static void status_start(struct server *srv)
{
    srv->watchdog_us = daemon_watchdog_usec();
    srv->beats = calloc(srv->nworkers, sizeof(*srv->beats));
    int64_t us = 1000000;
    if (srv->watchdog_us && (int64_t)srv->watchdog_us / 4 < us)
        us = (int64_t)srv->watchdog_us / 4;
    srv->status_ev = event_new(srv->base, -1, EV_PERSIST, on_status_timer, srv);
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};
    if (srv->beats && srv->status_ev)
        event_add(srv->status_ev, &tv);
    if (srv->watchdog_us)
        daemon_watchdog();
    srv->watchdog_last = mono_us();
    srv->status_t = 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *srv = arg;
    if ((sig == SIGTERM || sig == SIGINT) && srv->stopping) {
        exit_now(srv, (int)sig);
    } else if (sig == SIGTERM || sig == SIGINT) {
        stop_workers(srv);
    } else if (sig == SIGUSR1) {
        if (log_reopen() != 0)
            log_error("SIGUSR1: cannot reopen the access log");
        else
            log_info("SIGUSR1: access log reopened");
    } else if (sig == SIGHUP) {
        reload_as(srv, false);
    }
}

/* A name's addresses changed (resolve.h): publish them as a reload does. */
static void on_dns_changed(void *arg)
{
    reload_as(arg, true);
}

static unsigned worker_count(const struct config *cfg)
{
    if (cfg->workers)
        return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* The workers' state, each with its listening sockets (a unix listener is
 * bound once and shared). Returns 0 or -1 (what was made is freed by
 * workers_free). */
static int workers_prepare(struct server *srv)
{
    const struct config *cfg = srv->cfg;
    srv->nworkers = worker_count(cfg);
    srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
    if (!srv->base)
        srv->base = event_base_new();
    if (!srv->workers || !srv->base)
        return -1;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->id = i;
        w->cfg = srv->cfg; /* until the worker installs its first snapshot */
        pthread_mutex_init(&w->update_lock, NULL);
        w->reserve_fd = -1;
        w->nlisten = (unsigned)cfg->nlisteners;
        w->listen_fds = calloc(cfg->nlisteners, sizeof(int));
        w->control_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        w->metrics = metrics_new(cfg);
        if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || w->rng == 0)
            w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 16) ^ i;
        if (!w->listen_fds || w->control_fd < 0 || !w->metrics ||
            listener_open(cfg, w->listen_fds, i ? srv->workers[0].listen_fds : NULL,
                          srv->inherited) != 0)
            return -1;
        srv->bound = true;
    }
    return 0;
}

/* Starts the worker threads and waits until each accepts (ready for the
 * admin listener and sd_notify only then). Returns 0, or -1 when one
 * failed to set up (the others run: stop them). Out of threads exits. */
static int workers_start(struct server *srv)
{
    pthread_barrier_init(&srv->started, NULL, srv->nworkers + 1);
    for (unsigned i = 0; i < srv->nworkers; i++) {
        srv->workers[i].started = &srv->started;
        if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]) != 0) {
            log_error("cannot start worker %u: out of threads", i);
            /* The others wait on the barrier: nothing to unwind but the pid file. */
            if (srv->pid_file)
                daemon_pidfile_remove(srv->pid_file, srv->pid_fd);
            _exit(1);
        }
    }
    pthread_barrier_wait(&srv->started);
    pthread_barrier_destroy(&srv->started);
    for (unsigned i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].failed)
            return -1;
    return 0;
}

/* Handlers for the signals main() blocked; pending ones are delivered
 * once unblocked here. */
static void handle_signals(struct server *srv, struct event *sigev[4])
{
    sigset_t handled;
    sigemptyset(&handled);
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        sigaddset(&handled, sigs[i]);
        sigev[i] = evsignal_new(srv->base, sigs[i], on_signal, srv);
        if (sigev[i])
            event_add(sigev[i], NULL);
    }
    pthread_sigmask(SIG_UNBLOCK, &handled, NULL);
}

static void workers_free(struct server *srv)
{
    if (!srv->workers)
        return;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        free(w->listen_fds);
        metrics_free(w->metrics); /* the newest snapshot's (see worker_main) */
        if (w->update) {          /* posted, never applied: its metrics are w->metrics */
            config_unref(w->update->cfg);
            metrics_free(w->update->baseline);
            free(w->update->listen_fds);
            free(w->update);
        }
        if (w->control_fd > 0)
            close(w->control_fd);
        pthread_mutex_destroy(&w->update_lock);
    }
    free(srv->workers);
    free(srv->beats);
}

int server_run(struct config *cfg, const char *config_path, int64_t t0)
{
    struct server srv = {.cfg = cfg, .config_path = config_path, .pid_fd = -1};
    int status = 1;
    struct admin *admin = NULL;
    struct event *sigev[4] = {NULL};
    srv.start_cfg = config_ref(cfg);
    if (cfg->user && daemon_user_check(cfg->user) != 0)
        goto out_unref;

    signal(SIGPIPE, SIG_IGN);
    if (log_init(cfg->error_log_level, cfg->access_log.format, cfg->access_log.path) != 0) {
        fprintf(stderr, "ferry: access_log %s: %s\n", cfg->access_log.path, strerror(errno));
        goto out_unref;
    }
    daemon_raise_nofile();
    /* A client and an upstream descriptor per connection, per worker. */
    daemon_presize_fds((uint64_t)worker_count(cfg) * cfg->limits.max_connections * 2 + 256);
    daemon_tune_malloc();
    evmem_install(); /* before the first libevent allocation */
    srv.inherited = calloc(cfg->nlisteners, sizeof(int));
    if (!srv.inherited)
        goto out_unref;
    listener_inherit(cfg, srv.inherited);
    if (listener_probe(cfg, srv.inherited) != 0)
        goto out_unref;
    if (cfg->pid_file && (!(srv.pid_file = strdup(cfg->pid_file)) ||
                          (srv.pid_fd = daemon_pidfile(cfg->pid_file)) < 0))
        goto out_unref;

    /* Names of servers: resolved before anything counts the servers. */
    if (!(srv.base = event_base_new()) || resolve_start(srv.base, cfg, on_dns_changed, &srv) != 0)
        goto out_pidfile;
    resolve_expand(cfg);
    if (workers_prepare(&srv) != 0)
        goto out_pidfile;
    if (cfg->admin_listen &&
        !(srv.admin = admin = admin_start(srv.base, cfg, srv.workers, srv.nworkers)))
        goto out_pidfile;
    /* Everything privileged is done: listeners bound, pid file written. */
    if (cfg->user && daemon_drop_privileges(cfg->user) != 0)
        goto out_pidfile;
    /* Before the workers: servers new to the config start down (health.c) */
    health_start(cfg); /* failing: logged, served without active checks */
    if (workers_start(&srv) != 0 || (admin && admin_serve(admin) != 0)) {
        stop_workers(&srv);
        goto out_join;
    }
    handle_signals(&srv, sigev);
    status_start(&srv);
    srv.load_ms = (double)(mono_us() - t0) / 1000.0;
    char ready[160];
    snprintf(ready, sizeof(ready), "serving: %zu listeners, %u workers, config loaded in %.1f ms",
             cfg->nlisteners, srv.nworkers, srv.load_ms);
    log_info("%s (%s)", ready, cfg->listeners[0].addr.text);
    daemon_ready(ready);
    event_base_dispatch(srv.base);
    status = 0;

out_join:
    health_stop();
    for (unsigned i = srv.njoined; i < srv.nworkers; i++)
        pthread_join(srv.workers[i].thread, NULL);
    if (srv.join_poll)
        event_free(srv.join_poll);
    if (srv.reload_poll)
        event_free(srv.reload_poll);
    if (srv.status_ev)
        event_free(srv.status_ev);
    log_info("stopped");
out_pidfile:
    admin_stop(admin);
    for (int i = 0; i < 4; i++)
        if (sigev[i])
            event_free(sigev[i]);
    if (srv.pid_file)
        daemon_pidfile_remove(srv.pid_file, srv.pid_fd);
    if (srv.bound)
        listener_unlink_unix(srv.cfg, srv.start_cfg, srv.inherited);
    workers_free(&srv);
    resolve_stop();
    if (srv.base)
        event_base_free(srv.base);
out_unref:
    if (srv.inherited)
        for (size_t i = 0; i < srv.start_cfg->nlisteners; i++)
            if (srv.inherited[i] >= 0)
                close(srv.inherited[i]);
    free(srv.inherited);
    registry_free();
    config_unref(srv.start_cfg);
    free(srv.pid_file);
    config_unref(srv.cfg);
    return status;
}
