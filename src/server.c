/*
 * server: the process around the workers (see server.h). The main thread
 * checks and binds the listen addresses, starts one worker thread per
 * core (or `workers`), serves the admin endpoint and handles signals:
 * SIGTERM/SIGINT drain (stop accepting, finish in-flight requests up to
 * shutdown_timeout, close idle keep-alive connections; the admin listener
 * keeps answering, /healthz with 503 "draining"; a second SIGTERM/SIGINT
 * exits at once), SIGUSR1 reopens
 * the access log, SIGHUP re-checks the file (applying a new config needs
 * the reload work: until then it says so and keeps the running one).
 */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
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
#include "loop.h"
#include "health.h"
#include "upstream.h"
#include "worker.h"

/* Released stacks each worker keeps mapped for reuse. */
#define STACK_POOL_CAP 256
#define DRAIN_POLL_MS 50

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
    int pid_fd;
    bool bound; /* unix listener sockets exist: remove them at exit */
    bool stopping;
};

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

/* The main thread asked this worker to drain. */
static void on_control(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct worker *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) != sizeof(v) || w->draining)
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
static int worker_setup(struct worker *w)
{
    w->loop = loop_new(w->cfg->coroutine_stack, STACK_POOL_CAP);
    if (!w->loop) {
        log_error("worker %u: cannot create its event loop", w->id);
        return -1;
    }
    w->upstreams = upstream_set_new(
        &(struct upstream_owner){w->id, &w->draining, &w->stats.upstream_conns}, w->cfg);
    w->control_ev =
        event_new(loop_base(w->loop), w->control_fd, EV_READ | EV_PERSIST, on_control, w);
    if (!w->upstreams || !w->control_ev || event_add(w->control_ev, NULL) != 0 ||
        listener_start(w) != 0) {
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
    /* A clean drain: free what the worker owns (leak checkers see none). */
    upstream_set_free(w->upstreams);
    listener_stop(w);
    event_free(w->control_ev);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->drain_poll)
        event_free(w->drain_poll);
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
    if (srv->cfg->pid_file)
        daemon_pidfile_remove(srv->cfg->pid_file, srv->pid_fd);
    listener_unlink_unix(srv->cfg);
    if (srv->admin)
        admin_stop(srv->admin); /* removes a unix admin socket */
    _exit(1);
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
        struct config *fresh = NULL;
        if (config_load(srv->config_path, &fresh, stderr) != 0) {
            log_error("SIGHUP: %s is invalid; keeping the running config", srv->config_path);
            return;
        }
        config_unref(fresh);
        log_warn("SIGHUP: %s is valid, but applying a new config without a restart is not "
                 "implemented yet; keeping the running config",
                 srv->config_path);
    }
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
    srv->base = event_base_new();
    if (!srv->workers || !srv->base)
        return -1;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->id = i;
        w->cfg = config_ref(srv->cfg);
        w->reserve_fd = -1;
        w->nlisten = (unsigned)cfg->nlisteners;
        w->listen_fds = calloc(cfg->nlisteners, sizeof(int));
        w->control_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        w->metrics = metrics_new(cfg);
        if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || w->rng == 0)
            w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 16) ^ i;
        if (!w->listen_fds || w->control_fd < 0 || !w->metrics ||
            listener_open(cfg, w->listen_fds, i ? srv->workers[0].listen_fds : NULL) != 0)
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
            if (srv->cfg->pid_file)
                daemon_pidfile_remove(srv->cfg->pid_file, srv->pid_fd);
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
        metrics_free(w->metrics);
        if (w->control_fd > 0)
            close(w->control_fd);
        config_unref(w->cfg);
    }
    free(srv->workers);
}

int server_run(struct config *cfg, const char *config_path)
{
    struct server srv = {.cfg = cfg, .config_path = config_path, .pid_fd = -1};
    int status = 1;
    struct admin *admin = NULL;
    struct event *sigev[4] = {NULL};

    signal(SIGPIPE, SIG_IGN);
    if (log_init(cfg->error_log_level, cfg->access_log.format, cfg->access_log.path) != 0) {
        fprintf(stderr, "ferry: access_log %s: %s\n", cfg->access_log.path, strerror(errno));
        goto out_unref;
    }
    daemon_raise_nofile();
    daemon_tune_malloc();
    evmem_install(); /* before the first libevent allocation */
    if (listener_probe(cfg) != 0)
        goto out_unref;
    if (cfg->pid_file && (srv.pid_fd = daemon_pidfile(cfg->pid_file)) < 0)
        goto out_unref;

    if (workers_prepare(&srv) != 0)
        goto out_pidfile;
    if (workers_start(&srv) != 0) {
        stop_workers(&srv);
        goto out_join;
    }
    health_start(cfg); /* failing: logged, served without active checks */
    if (cfg->admin_listen &&
        !(srv.admin = admin = admin_start(srv.base, cfg, srv.workers, srv.nworkers))) {
        stop_workers(&srv);
        goto out_join;
    }
    handle_signals(&srv, sigev);
    char ready[128];
    snprintf(ready, sizeof(ready), "serving: %zu listeners, %u workers", cfg->nlisteners,
             srv.nworkers);
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
    log_info("stopped");
out_pidfile:
    admin_stop(admin);
    for (int i = 0; i < 4; i++)
        if (sigev[i])
            event_free(sigev[i]);
    if (cfg->pid_file)
        daemon_pidfile_remove(cfg->pid_file, srv.pid_fd);
    if (srv.bound)
        listener_unlink_unix(cfg);
    workers_free(&srv);
    if (srv.base)
        event_base_free(srv.base);
out_unref:
    config_unref(cfg);
    return status;
}
