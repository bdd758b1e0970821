/* upstream: see upstream.h. */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "balancer.h"
#include "coro.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "tls.h"
#include "registry.h"
#include "worker.h"

_Static_assert(CONFIG_MAX_HEADER_BYTES_LIMIT <= UPSTREAM_READ_MAX,
               "the largest max_header_bytes must fit in the upstream read buffer");

struct pool;

struct upstream_conn {
    struct io_stream *s;
    struct pool *pool;
    struct upstream_conn *next; /* idle list */
    struct upstream_conn *prev;
    struct event *idle_timer; /* lazily re-armed: see on_pooled_expired */
    int64_t idle_since;       /* when it last went back to the pool */
    bool timer_armed;
    bool idle;
    unsigned gen; /* its pool's gen when made: another is never pooled */
};

/* A coroutine waiting for a slot under max_connections (on its stack). */
struct slot_waiter {
    struct coro *coro;
    struct slot_waiter *next;
    bool granted; /* a freed slot was reserved for it (counted in nactive) */
};

/* One server's connections in this worker: the registry's value. */
struct pool {
    char *key; /* "upstream name" NUL "address" */
    size_t key_len;
    struct worker *w;
    const struct config_server *server; /* of the newest config that has it */
    const struct config_upstream *up;
    struct config *cfg;              /* a reference to that config: server and up live on */
    unsigned refs;                   /* sets using it; at 0 it goes once nothing is active */
    struct registry_server *shared;  /* process-wide: drained by the admin endpoint */
    struct upstream_conn *idle_head; /* most recently released first */
    unsigned nidle;
    unsigned nactive;            /* in use by requests, or reserved for a woken waiter */
    struct slot_waiter *waiters; /* first come, first served */
    struct slot_waiter **waiters_tail;
    unsigned fails;        /* consecutive attempts without a usable response */
    int64_t ejected_until; /* passive ejection (loop_now); 0 = in service */
    int64_t eject_logged;  /* log_ratelimited's timestamp: one per server and worker */
    int64_t connect_logged;
    int64_t busy_logged;
    /* Bumped when a reload repoints a TLS upstream's pool: connections
     * made with the old config's TLS context (its verification settings,
     * its session slots) are not pooled under the new one. */
    unsigned gen;
    struct pool *next; /* registry chain */
};

struct upstream_state {
    struct balancer balancer;
    uint32_t *weights;
    struct pool **pools; /* one per server, from the registry */
    bool *skip;          /* upstream_pick's scratch: tried or ejected */
};

/* The worker's registry: every pool, keyed by name + address. Sets of
 * successive configs (a reload) share the pools of the servers they keep,
 * with their idle connections and passive-ejection state. */
struct upstream_registry {
    struct pool *head;
};

struct upstream_set {
    struct worker *w;
    const struct config *cfg;
    struct upstream_state *ups; /* one per cfg->upstreams[i] */
    struct upstream_registry *registry;
};

static void pool_close_idle(struct pool *p);

static void pool_point(struct pool *p, const struct config *cfg, const struct config_upstream *up,
                       const struct config_server *server)
{
    struct config *old = p->cfg;
    if (p->up && (p->up->tls || up->tls)) {
        pool_close_idle(p);
        p->gen++;
    }
    p->cfg = config_ref((struct config *)cfg);
    p->server = server;
    p->up = up;
    p->refs++;
    config_unref(old);
}

static struct pool *registry_get(struct upstream_set *set, const struct config_upstream *up,
                                 const struct config_server *server)
{
    size_t nlen = strlen(up->name), alen = strlen(server->addr.text);
    size_t klen = nlen + 1 + alen;
    for (struct pool *p = set->registry->head; p; p = p->next) {
        if (p->key_len == klen && memcmp(p->key, up->name, nlen + 1) == 0 &&
            memcmp(p->key + nlen + 1, server->addr.text, alen) == 0) {
            pool_point(p, set->cfg, up, server);
            return p;
        }
    }
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->key = malloc(klen + 1);
    if (!p->key) {
        free(p);
        return NULL;
    }
    memcpy(p->key, up->name, nlen + 1);
    memcpy(p->key + nlen + 1, server->addr.text, alen + 1);
    p->key_len = klen;
    p->w = set->w;
    p->shared = registry_server(up->name, server->addr.text);
    pool_point(p, set->cfg, up, server);
    p->waiters_tail = &p->waiters;
    p->next = set->registry->head;
    set->registry->head = p;
    return p;
}

struct upstream_set *upstream_set_new(struct worker *w, const struct config *cfg)
{
    if (!w->upstream_registry &&
        !(w->upstream_registry = calloc(1, sizeof(struct upstream_registry))))
        return NULL;
    struct upstream_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->w = w;
    set->cfg = cfg;
    set->registry = w->upstream_registry;
    set->ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*set->ups));
    if (!set->ups)
        goto out_free;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        struct upstream_state *st = &set->ups[i];
        st->weights = calloc(up->nservers, sizeof(*st->weights));
        st->pools = calloc(up->nservers, sizeof(*st->pools));
        st->skip = calloc(up->nservers, sizeof(*st->skip));
        if (!st->weights || !st->pools || !st->skip)
            goto out_free;
        for (size_t j = 0; j < up->nservers; j++) {
            st->weights[j] = up->servers[j].weight;
            st->pools[j] = registry_get(set, up, &up->servers[j]);
            if (!st->pools[j])
                goto out_free;
        }
        if (balancer_init(&st->balancer, st->weights, up->nservers) != 0)
            goto out_free;
    }
    return set;

out_free:
    upstream_set_free(set);
    return NULL;
}

static void conn_close(struct upstream_conn *uc)
{
    if (uc->idle_timer)
        event_free(uc->idle_timer);
    io_stream_free(uc->s);
    WORKER_STAT_SUB(uc->pool->w, upstream_conns, 1);
    free(uc);
}

static void idle_unlink(struct upstream_conn *uc)
{
    struct pool *p = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        p->idle_head = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    uc->idle = false;
    p->nidle--;
}

static void pool_close_idle(struct pool *p)
{
    while (p->idle_head) {
        struct upstream_conn *uc = p->idle_head;
        idle_unlink(uc);
        conn_close(uc);
    }
}

/* A pool no set uses any more goes once no connection of it is in use
 * (a request of an older config, a WebSocket tunnel). */
static void pool_put(struct pool *p)
{
    if (p->refs || p->nactive || p->waiters)
        return;
    pool_close_idle(p);
    for (struct pool **pp = &p->w->upstream_registry->head; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    config_unref(p->cfg);
    free(p->key);
    free(p);
}

void upstream_set_free(struct upstream_set *set)
{
    if (!set)
        return;
    if (set->ups) {
        for (size_t i = 0; i < set->cfg->nupstreams; i++) {
            for (size_t j = 0; set->ups[i].pools && j < set->cfg->upstreams[i].nservers; j++) {
                struct pool *p = set->ups[i].pools[j];
                if (p) {
                    p->refs--;
                    pool_put(p);
                }
            }
            balancer_fini(&set->ups[i].balancer);
            free(set->ups[i].weights);
            free(set->ups[i].pools);
            free(set->ups[i].skip);
        }
        free(set->ups);
    }
    free(set);
}

int upstream_pick(struct upstream_set *set, const struct config_upstream *up, const bool *skip)
{
    struct upstream_state *st = &set->ups[up->index];
    bool drains = registry_any_drained();
    if (!up->passive_failures && !drains)
        return balancer_next(&st->balancer, skip);
    int64_t now = loop_now();
    bool any = false;
    for (size_t i = 0; i < up->nservers; i++) {
        /* Drained (admin) is as hard as tried: never picked. */
        struct pool *p = st->pools[i];
        bool drained = drains && registry_drained(p->shared);
        st->skip[i] = (skip && skip[i]) || drained;
        any |= !st->skip[i] && !(up->passive_failures && p->ejected_until > now);
        while (drained && p->idle_head) { /* its pooled connections close */
            struct upstream_conn *uc = p->idle_head;
            idle_unlink(uc);
            conn_close(uc);
        }
    }
    /* Every server left ejected (or tried): ejections are ignored rather
     * than failing every request (as nginx when all servers are down). */
    for (size_t i = 0; any && up->passive_failures && i < up->nservers; i++)
        st->skip[i] |= st->pools[i]->ejected_until > now;
    return balancer_next(&st->balancer, st->skip);
}

void upstream_report(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool ok)
{
    if (!up->passive_failures)
        return;
    struct pool *p = set->ups[up->index].pools[server];
    if (ok) {
        p->fails = 0;
        return;
    }
    if (++p->fails < up->passive_failures)
        return;
    p->fails = 0;
    p->ejected_until = loop_now() + up->passive_eject_ms * LOOP_MS;
    log_ratelimited(&p->eject_logged, 1000, CONFIG_LOG_WARN,
                    "worker %u: upstream %s: server %s ejected for %lld ms after %u failures in "
                    "a row",
                    set->w->id, up->name, up->servers[server].addr.text,
                    (long long)up->passive_eject_ms, up->passive_failures);
}

/* A pooled connection said something (stray bytes) or closed: drop it. */
static void on_pooled_event(struct io_stream *s, unsigned what, void *arg)
{
    (void)s;
    (void)what;
    struct upstream_conn *uc = arg;
    idle_unlink(uc);
    conn_close(uc);
}

static void arm_idle(struct upstream_conn *uc, int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(uc->idle_timer, &tv);
    uc->timer_armed = true;
}

/*
 * The idle timer is not removed when a pooled connection is taken and
 * re-added when it comes back (two event operations per request); it runs
 * out, and the connection is closed only if it has been idle for the
 * whole upstream_idle since it last came back. Otherwise it is re-armed
 * for the rest, or left off while the connection is in use.
 */
static void on_pooled_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_conn *uc = arg;
    uc->timer_armed = false;
    if (!uc->idle)
        return; /* in use: upstream_release re-arms it */
    int64_t ms = uc->pool->w->cfg->timeouts.upstream_idle;
    int64_t left = ms - (loop_now() - uc->idle_since) / LOOP_MS;
    if (left > 0) {
        arm_idle(uc, left);
        return;
    }
    idle_unlink(uc);
    conn_close(uc);
}

/*
 * Gives a slot back. With coroutines waiting, it is handed to the first
 * one (reserved for it: nactive stays as it is) and that one is woken; a
 * newcomer never takes a slot while anyone waits, so the queue is served
 * in order and a woken waiter never finds its slot taken.
 */
static void slot_release(struct pool *p)
{
    struct slot_waiter *sw = p->waiters;
    if (!sw) {
        p->nactive--;
        pool_put(p);
        return;
    }
    p->waiters = sw->next;
    if (!p->waiters)
        p->waiters_tail = &p->waiters;
    sw->granted = true;
    io_signal(sw->coro);
}

static void slot_unqueue(struct pool *p, struct slot_waiter *sw)
{
    for (struct slot_waiter **pp = &p->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == sw) {
            *pp = sw->next;
            if (!*pp)
                p->waiters_tail = pp;
            return;
        }
    }
}

/*
 * Takes a slot under max_connections (counted in nactive until
 * slot_release), waiting in line for one while the server is full or
 * others wait. Returns 0, -EBUSY (none before the deadline), -ECANCELED,
 * -ECONNABORTED (watch ended) or -ENOMEM. A waiter leaving the line just
 * after it was handed a slot (cancelled, its client gone, its deadline
 * met in the same loop turn) passes the slot on. May yield.
 */
static int slot_take(struct pool *p, struct io_stream *watch, int64_t deadline)
{
    uint32_t max = p->up->max_connections;
    if (!max || (p->nactive < max && !p->waiters)) {
        p->nactive++;
        return 0;
    }
    struct slot_waiter sw = {.coro = coro_current(), .next = NULL, .granted = false};
    *p->waiters_tail = &sw;
    p->waiters_tail = &sw.next;
    for (;;) {
        struct io_want want[2] = {{.events = IO_SIGNAL}, {.stream = watch, .events = IO_EOF}};
        int r = io_wait(want, watch ? 2 : 1, deadline);
        if (r >= 0 && (want[1].fired & IO_EOF))
            r = -ECONNABORTED;
        if (sw.granted) {
            if (r >= 0)
                return 0;
            slot_release(p); /* handed over, not to be used: the next in line */
        } else if (r >= 0) {
            continue; /* a signal left over from an earlier wait */
        } else {
            slot_unqueue(p, &sw);
        }
        if (r != -ETIMEDOUT)
            return r;
        /* The server stayed at max_connections: not its failure. */
        log_ratelimited(&p->busy_logged, 1000, CONFIG_LOG_WARN,
                        "upstream %s: %s: no connection free within upstream_connect "
                        "(max_connections %u)",
                        p->up->name, p->server->addr.text, (unsigned)max);
        return -EBUSY;
    }
}

int upstream_acquire(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool fresh, int64_t deadline, struct io_stream *watch,
                     struct upstream_conn **out, bool *reused)
{
    struct pool *p = set->ups[up->index].pools[server];
    int r = slot_take(p, watch, deadline);
    if (r < 0)
        return r;
    if (watch && io_eof(watch)) {
        slot_release(p);
        return -ECONNABORTED;
    }
    /* A request of an older config and a TLS pool (either side TLS) do
     * not mix: its connections are made with that config's TLS context
     * (whose session slots go with it) and are never pooled, and it does
     * not take the pool's, made under another config (a late session
     * ticket would then write into a slot its own config does not keep
     * alive). */
    bool foreign = up != p->up && (up->tls || p->up->tls);
    if (!fresh && !foreign && p->idle_head) {
        struct upstream_conn *uc = p->idle_head;
        idle_unlink(uc);
        io_set_idle(uc->s, NULL, NULL);
        *reused = true;
        *out = uc;
        return 0;
    }
    struct upstream_conn *uc = calloc(1, sizeof(*uc));
    if (!uc) {
        slot_release(p);
        return -ENOMEM;
    }
    uc->pool = p;
    uc->gen = foreign ? p->gen - 1 : p->gen;
    const struct config_addr *a = &p->server->addr;
    struct loop *loop = loop_current();
    if (a->numeric)
        r = io_connect_addr(loop, (const struct sockaddr *)&a->sa, a->salen, UPSTREAM_READ_MAX,
                            deadline, watch, &uc->s);
    else
        r = io_connect(loop, a->host, a->port, UPSTREAM_READ_MAX, deadline, watch, &uc->s);
    if (r == 0 && up->tls && (r = tls_connect(uc->s, up, server, deadline, watch)) < 0)
        io_stream_free(uc->s); /* -EPROTO: tls_last_failure() says why */
    if (r < 0) {
        slot_release(p);
        free(uc);
        if (r != -ECONNABORTED && r != -ECANCELED)
            log_ratelimited(&p->connect_logged, 1000, CONFIG_LOG_WARN,
                            "upstream %s: %s: connect: %s", up->name, p->server->addr.text,
                            r == -EPROTO ? tls_last_failure() : strerror(-r));
        return r;
    }
    WORKER_STAT_ADD(p->w, upstream_conns, 1);
    *reused = false;
    *out = uc;
    return 0;
}

void upstream_release(struct upstream_conn *uc, bool reusable)
{
    struct pool *p = uc->pool;
    struct io_stream *s = uc->s;
    const struct config *cfg = p->w->cfg;
    if (!reusable || uc->gen != p->gen || io_eof(s) || p->nidle >= p->up->keepalive ||
        p->w->draining || registry_drained(p->shared) || evbuffer_get_length(io_input(s)) > 0 ||
        evbuffer_get_length(io_output(s)) > 0) {
        conn_close(uc);
        slot_release(p);
        return;
    }
    if (!uc->idle_timer) {
        uc->idle_timer = event_new(loop_base(loop_current()), -1, 0, on_pooled_expired, uc);
        if (!uc->idle_timer) {
            conn_close(uc);
            slot_release(p);
            return;
        }
    }
    uc->idle_since = loop_now();
    if (!uc->timer_armed)
        arm_idle(uc, cfg->timeouts.upstream_idle);
    io_set_idle(s, on_pooled_event, uc);
    uc->idle = true;
    uc->prev = NULL;
    uc->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = uc;
    p->idle_head = uc;
    p->nidle++;
    slot_release(p);
}

void upstream_registry_free(struct worker *w)
{
    if (!w->upstream_registry)
        return;
    while (w->upstream_registry->head) {
        struct pool *p = w->upstream_registry->head;
        p->refs = 0;
        p->nactive = 0;
        p->waiters = NULL;
        pool_put(p);
    }
    free(w->upstream_registry);
    w->upstream_registry = NULL;
}

struct io_stream *upstream_stream(struct upstream_conn *uc)
{
    return uc->s;
}
