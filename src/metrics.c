/* metrics: see metrics.h. */
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "config.h"
#include "upstream.h"
#include "tls.h"
#include "ratelimit_redis.h"
#include "registry.h"
#include "worker.h"

/* Request duration buckets (seconds, upper bounds; +Inf is implied). */
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,      2.5,   5,    10,    30,   60};
#define NBUCKETS (sizeof(BUCKETS) / sizeof(BUCKETS[0]))
#define NCLASSES 5 /* 1xx .. 5xx */

struct route_counters {
    uint64_t requests[NCLASSES];
    uint64_t buckets[NBUCKETS + 1]; /* not cumulative; the last is +Inf */
    uint64_t duration_us;           /* sum */
};

struct server_counters {
    uint64_t responses[NCLASSES];
    uint64_t failures;
    uint64_t ejections;
};

struct upstream_counters {
    uint64_t retries;
    uint64_t budget_denied;
};

struct metrics {
    size_t nroutes;                /* cfg->nroutes; slot nroutes is "no route" */
    struct route_counters *routes; /* nroutes + 1 */
    size_t *server_base;           /* per upstream: its first slot in servers */
    struct server_counters *servers;
    struct upstream_counters *ups; /* per upstream */
};

/* One writer (the worker): no locked instruction, no torn value. */
static inline void bump(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline uint64_t get(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

struct metrics *metrics_new(const struct config *cfg)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    size_t nservers = 0;
    m->server_base = calloc(cfg->nupstreams + 1, sizeof(*m->server_base));
    if (!m->server_base)
        goto fail;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        m->server_base[i] = nservers;
        nservers += cfg->upstreams[i].nservers;
    }
    m->nroutes = cfg->nroutes;
    m->routes = calloc(cfg->nroutes + 1, sizeof(*m->routes));
    m->servers = calloc(nservers ? nservers : 1, sizeof(*m->servers));
    m->ups = calloc(cfg->nupstreams + 1, sizeof(*m->ups));
    if (!m->routes || !m->servers || !m->ups)
        goto fail;
    return m;
fail:
    metrics_free(m);
    return NULL;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    free(m->routes);
    free(m->servers);
    free(m->ups);
    free(m->server_base);
    free(m);
}

/* to += from - base (base NULL: 0). Each counter is read once. */
static void carry(uint64_t *to, const uint64_t *from, const uint64_t *base, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bump(&to[i], get(&from[i]) - (base ? get(&base[i]) : 0));
}

void metrics_carry(struct metrics *to, const struct config *tocfg, const struct metrics *from,
                   const struct config *fromcfg)
{
    metrics_carry_since(to, tocfg, from, NULL, fromcfg);
}

void metrics_carry_since(struct metrics *to, const struct config *tocfg, const struct metrics *from,
                         const struct metrics *base, const struct config *fromcfg)
{
    if (!to || !from)
        return;
    for (size_t r = 0; r <= tocfg->nroutes; r++) {
        size_t k = fromcfg->nroutes; /* "no route" to "no route" */
        if (r < tocfg->nroutes) {
            const struct config_route *old = config_route_find(fromcfg, tocfg->routes[r].name);
            if (!old)
                continue;
            k = old->index;
        }
        carry((uint64_t *)&to->routes[r], (const uint64_t *)&from->routes[k],
              base ? (const uint64_t *)&base->routes[k] : NULL,
              sizeof(struct route_counters) / sizeof(uint64_t));
    }
    for (size_t u = 0; u < tocfg->nupstreams; u++) {
        const struct config_upstream *up = &tocfg->upstreams[u];
        const struct config_upstream *old = config_upstream_find(fromcfg, up->name);
        if (old) /* the upstream's own counters (retries, budget refusals) */
            carry((uint64_t *)&to->ups[u], (const uint64_t *)&from->ups[old->index],
                  base ? (const uint64_t *)&base->ups[old->index] : NULL,
                  sizeof(struct upstream_counters) / sizeof(uint64_t));
        for (size_t s = 0; old && s < up->nservers; s++) {
            for (size_t t = 0; t < old->nservers; t++) {
                if (strcmp(old->servers[t].addr.text, up->servers[s].addr.text) != 0)
                    continue;
                size_t k = from->server_base[old->index] + t;
                carry((uint64_t *)&to->servers[to->server_base[u] + s],
                      (const uint64_t *)&from->servers[k],
                      base ? (const uint64_t *)&base->servers[k] : NULL,
                      sizeof(struct server_counters) / sizeof(uint64_t));
                break;
            }
        }
    }
}

static int class_of(int status)
{
    int c = status / 100 - 1;
    return c < 0 ? 0 : c >= NCLASSES ? NCLASSES - 1 : c;
}

void metrics_request(struct metrics *m, const struct config_route *route, int status,
                     double seconds)
{
    if (!m)
        return;
    struct route_counters *rc = &m->routes[route ? route->index : m->nroutes];
    bump(&rc->requests[class_of(status)], 1);
    size_t b = 0;
    while (b < NBUCKETS && seconds > BUCKETS[b])
        b++;
    bump(&rc->buckets[b], 1);
    bump(&rc->duration_us, seconds > 0 ? (uint64_t)(seconds * 1e6 + 0.5) : 0);
}

void metrics_upstream(struct metrics *m, const struct config_upstream *up,
                      const struct config_server *server, int status)
{
    if (!m)
        return;
    struct server_counters *sc = &m->servers[m->server_base[up->index] + server->index];
    if (status > 0)
        bump(&sc->responses[class_of(status)], 1);
    else
        bump(&sc->failures, 1);
}

void metrics_ejection(struct metrics *m, const struct config_upstream *up,
                      const struct config_server *server)
{
    if (m)
        bump(&m->servers[m->server_base[up->index] + server->index].ejections, 1);
}

void metrics_retry(struct metrics *m, const struct config_upstream *up, bool allowed)
{
    if (m)
        bump(allowed ? &m->ups[up->index].retries : &m->ups[up->index].budget_denied, 1);
}

/* ---- rendering (admin thread) ------------------------------------------------------ */

void metrics_label_value(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(out, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

static void help(struct evbuffer *out, const char *name, const char *type, const char *text)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void route_label(struct evbuffer *out, const struct config *cfg, size_t r)
{
    evbuffer_add(out, "route=\"", 7);
    if (r < cfg->nroutes)
        metrics_label_value(out, cfg->routes[r].name);
    evbuffer_add(out, "\"", 1);
}

static void server_labels(struct evbuffer *out, const struct config_upstream *up,
                          const struct config_server *s)
{
    evbuffer_add(out, "upstream=\"", 10);
    metrics_label_value(out, up->name);
    evbuffer_add(out, "\",server=\"", 10);
    metrics_label_value(out, s->addr.text);
    evbuffer_add(out, "\"", 1);
}

static int render_routes(struct evbuffer *out, const struct config *cfg, struct worker *workers,
                         unsigned nworkers)
{
    size_t n = cfg->nroutes + 1;
    struct route_counters *sum = calloc(n, sizeof(*sum));
    if (!sum)
        return -1;
    for (unsigned w = 0; w < nworkers; w++) {
        const struct metrics *m = workers[w].metrics;
        if (!m)
            continue;
        for (size_t r = 0; r < n; r++) {
            for (int c = 0; c < NCLASSES; c++)
                sum[r].requests[c] += get(&m->routes[r].requests[c]);
            for (size_t b = 0; b <= NBUCKETS; b++)
                sum[r].buckets[b] += get(&m->routes[r].buckets[b]);
            sum[r].duration_us += get(&m->routes[r].duration_us);
        }
    }
    help(out, "ferry_requests_total", "counter",
         "Requests answered, by route and status class (route=\"\": no route).");
    for (size_t r = 0; r < n; r++) {
        for (int c = 0; c < NCLASSES; c++) {
            if (!sum[r].requests[c] && c != 1)
                continue; /* 2xx always shown; the others once seen */
            evbuffer_add(out, "ferry_requests_total{", 21);
            route_label(out, cfg, r);
            evbuffer_add_printf(out, ",code=\"%dxx\"} %llu\n", c + 1,
                                (unsigned long long)sum[r].requests[c]);
        }
    }
    help(out, "ferry_request_duration_seconds", "histogram",
         "From the request head read to the answer handed to the kernel.");
    for (size_t r = 0; r < n; r++) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= NBUCKETS; b++) {
            cum += sum[r].buckets[b];
            evbuffer_add(out, "ferry_request_duration_seconds_bucket{", 38);
            route_label(out, cfg, r);
            if (b < NBUCKETS)
                evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", BUCKETS[b], (unsigned long long)cum);
            else
                evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        evbuffer_add(out, "ferry_request_duration_seconds_sum{", 35);
        route_label(out, cfg, r);
        evbuffer_add_printf(out, "} %.6f\n", (double)sum[r].duration_us / 1e6);
        evbuffer_add(out, "ferry_request_duration_seconds_count{", 37);
        route_label(out, cfg, r);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)cum);
    }
    free(sum);
    return 0;
}

/* The per-upstream counters summed over the workers: i 0 retries, 1
 * budget_denied. */
static uint64_t up_sum(struct worker *workers, unsigned nworkers, size_t u, int i)
{
    uint64_t n = 0;
    for (unsigned w = 0; w < nworkers; w++) {
        const struct metrics *m = workers[w].metrics;
        if (m)
            n += get(i ? &m->ups[u].budget_denied : &m->ups[u].retries);
    }
    return n;
}

/* Ejections and retries: what passive ejection and the retry budget did. */
static void render_resilience(struct evbuffer *out, const struct config *cfg,
                              struct worker *workers, unsigned nworkers)
{
    help(out, "ferry_upstream_ejections_total", "counter",
         "Times a server was passively ejected (process-wide failure counts).");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->nservers; s++) {
            uint64_t n = 0;
            for (unsigned w = 0; w < nworkers; w++) {
                const struct metrics *m = workers[w].metrics;
                if (m)
                    n += get(&m->servers[m->server_base[u] + s].ejections);
            }
            evbuffer_add(out, "ferry_upstream_ejections_total{", 31);
            server_labels(out, up, &up->servers[s]);
            evbuffer_add_printf(out, "} %llu\n", (unsigned long long)n);
        }
    }
    help(out, "ferry_upstream_server_ejected", "gauge",
         "1 while the server is passively ejected, else 0.");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->nservers; s++) {
            evbuffer_add(out, "ferry_upstream_server_ejected{", 30);
            server_labels(out, up, &up->servers[s]);
            evbuffer_add_printf(out, "} %d\n", upstream_ejected(up, (unsigned)s) ? 1 : 0);
        }
    }
    help(out, "ferry_upstream_server_healthy", "gauge",
         "1 while the server passes its active health checks, else 0 (upstreams with "
         "health_check).");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; up->health.path && s < up->nservers; s++) {
            evbuffer_add(out, "ferry_upstream_server_healthy{", 30);
            server_labels(out, up, &up->servers[s]);
            evbuffer_add_printf(out, "} %d\n", upstream_healthy(up, (unsigned)s) ? 1 : 0);
        }
    }
    help(out, "ferry_upstream_retries_total", "counter",
         "Retries sent to another server of the upstream.");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        evbuffer_add(out, "ferry_upstream_retries_total{upstream=\"", 39);
        metrics_label_value(out, cfg->upstreams[u].name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)up_sum(workers, nworkers, u, 0));
    }
    help(out, "ferry_upstream_retry_budget_exhausted_total", "counter",
         "Retries not sent because retries.budget was spent.");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        evbuffer_add(out, "ferry_upstream_retry_budget_exhausted_total{upstream=\"", 54);
        metrics_label_value(out, cfg->upstreams[u].name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)up_sum(workers, nworkers, u, 1));
    }
}

static void render_servers(struct evbuffer *out, const struct config *cfg, struct worker *workers,
                           unsigned nworkers)
{
    help(out, "ferry_upstream_responses_total", "counter",
         "Responses received from upstream servers, by status class.");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->nservers; s++) {
            uint64_t cls[NCLASSES] = {0};
            for (unsigned w = 0; w < nworkers; w++) {
                const struct metrics *m = workers[w].metrics;
                if (m)
                    for (int c = 0; c < NCLASSES; c++)
                        cls[c] += get(&m->servers[m->server_base[u] + s].responses[c]);
            }
            for (int c = 0; c < NCLASSES; c++) {
                if (!cls[c] && c != 1)
                    continue;
                evbuffer_add(out, "ferry_upstream_responses_total{", 31);
                server_labels(out, up, &up->servers[s]);
                evbuffer_add_printf(out, ",code=\"%dxx\"} %llu\n", c + 1,
                                    (unsigned long long)cls[c]);
            }
        }
    }
    help(out, "ferry_upstream_failures_total", "counter",
         "Upstream attempts that failed through the server (connect error, reset, timeout, "
         "invalid head; not client aborts, bad request bodies, max_connections or Ferry's own "
         "shortages).");
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->nservers; s++) {
            uint64_t fails = 0;
            for (unsigned w = 0; w < nworkers; w++) {
                const struct metrics *m = workers[w].metrics;
                if (m)
                    fails += get(&m->servers[m->server_base[u] + s].failures);
            }
            evbuffer_add(out, "ferry_upstream_failures_total{", 30);
            server_labels(out, up, &up->servers[s]);
            evbuffer_add_printf(out, "} %llu\n", (unsigned long long)fails);
        }
    }
    render_resilience(out, cfg, workers, nworkers);
}

static void gauge(struct evbuffer *out, const char *name, const char *text, double v)
{
    help(out, name, "gauge", text);
    evbuffer_add_printf(out, "%s %.17g\n", name, v);
}

/* The process_* metrics (Prometheus client conventions), from /proc. */
static void cert_expiry(void *arg, const char *listener, const char *file, int64_t not_after)
{
    struct evbuffer *out = arg;
    evbuffer_add_printf(out, "ferry_tls_certificate_expiry_seconds{listener=\"");
    metrics_label_value(out, listener);
    evbuffer_add_printf(out, "\",file=\"");
    metrics_label_value(out, file);
    evbuffer_add_printf(out, "\"} %lld\n", (long long)(not_after - (int64_t)time(NULL)));
}

/* TLS: handshakes on listeners (process-wide) and certificate expiry. */
static void render_tls(struct evbuffer *out, const struct config *cfg)
{
    struct tls_stats st;
    tls_stats_get(&st);
    help(out, "ferry_tls_handshakes_total", "counter", "TLS handshakes completed on listeners.");
    evbuffer_add_printf(out, "ferry_tls_handshakes_total %lu\n", st.handshakes);
    help(out, "ferry_tls_resumed_total", "counter", "...of which resumed a session (a ticket).");
    evbuffer_add_printf(out, "ferry_tls_resumed_total %lu\n", st.resumed);
    help(out, "ferry_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed on listeners (garbage and plaintext included).");
    evbuffer_add_printf(out, "ferry_tls_handshake_failures_total %lu\n", st.failed);
    help(out, "ferry_tls_plaintext_total", "counter",
         "Cleartext HTTP requests sent to a TLS listener (answered 400).");
    evbuffer_add_printf(out, "ferry_tls_plaintext_total %lu\n", st.plaintext);
    help(out, "ferry_tls_certificate_expiry_seconds", "gauge",
         "Seconds until a listener's certificate expires (negative: expired).");
    tls_cert_expiry(cfg, cert_expiry, out);
}

/* One count of the rate-limit store's failures (ratelimit_redis.h). */
struct store_errors {
    struct evbuffer *out;
    bool any;
};

static void store_error_count(void *arg, const char *route, const char *outcome, const char *reason,
                              unsigned long n)
{
    struct store_errors *e = arg;
    if (!e->any)
        help(e->out, "ferry_ratelimit_store_errors_total", "counter",
             "Requests decided by on_store_error because the rate-limit store failed.");
    e->any = true;
    evbuffer_add_printf(e->out, "ferry_ratelimit_store_errors_total{route=\"");
    metrics_label_value(e->out, route);
    evbuffer_add_printf(e->out, "\",outcome=\"%s\",reason=\"%s\"} %lu\n", outcome, reason, n);
}

static void render_process(struct evbuffer *out)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, start = 0;
    long rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        /* after "pid (comm) ": state is field 3; utime 14, stime 15,
         * starttime 22, rss 24 */
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                        "%*d %*d %llu %*u %ld",
                        &utime, &stime, &start, &rss) != 4)
            utime = stime = start = 0, rss = 0;
    }
    double boot = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    size_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory stream's own */
    }
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    help(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    evbuffer_add_printf(out, "process_cpu_seconds_total %.2f\n",
                        (double)(utime + stime) / (double)tck);
    gauge(out, "process_resident_memory_bytes", "Resident memory size.",
          (double)rss * (double)page);
    gauge(out, "process_open_fds", "Open file descriptors.", (double)fds);
    gauge(out, "process_max_fds", "RLIMIT_NOFILE (soft).", (double)rl.rlim_cur);
    gauge(out, "process_start_time_seconds", "Start time since the Unix epoch.",
          boot + (double)start / (double)tck);
}

int metrics_render(struct evbuffer *out, const struct config *cfg, struct worker *workers,
                   unsigned nworkers)
{
    unsigned long conns = 0, live = 0, upconns = 0;
    for (unsigned i = 0; i < nworkers; i++) {
        conns += WORKER_STAT_GET(&workers[i], connections);
        live += WORKER_STAT_GET(&workers[i], requests_live);
        upconns += WORKER_STAT_GET(&workers[i], upstream_conns);
    }
    help(out, "ferry_build_info", "gauge", "Ferry's version.");
    evbuffer_add_printf(out, "ferry_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    gauge(out, "ferry_workers", "Worker threads.", nworkers);
    gauge(out, "ferry_connections", "Open client connections.", (double)conns);
    gauge(out, "ferry_requests_in_flight", "Requests being served (one coroutine each).",
          (double)live);
    gauge(out, "ferry_upstream_connections", "Open upstream connections (pooled or in use).",
          (double)upconns);
    gauge(out, "ferry_registry_servers",
          "Process-wide server entries: the servers of the configs in use, and drained ones.",
          (double)registry_count());
    if (render_routes(out, cfg, workers, nworkers) != 0)
        return -1;
    render_servers(out, cfg, workers, nworkers);
    render_tls(out, cfg);
    struct store_errors errors = {.out = out};
    ratelimit_redis_errors(store_error_count, &errors);
    render_process(out);
    return 0;
}
