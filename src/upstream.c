/* upstream: see upstream.h. */
#include "upstream.h"

#include <errno.h>
#include <pthread.h>
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

_Static_assert(CONFIG_MAX_HEADER_BYTES_LIMIT <= UPSTREAM_READ_MAX,
               "the largest max_header_bytes must fit in the upstream read buffer");

#define ATOMIC_LOAD REGISTRY_LOAD
#define ATOMIC_STORE REGISTRY_STORE
#define ATOMIC_ADD REGISTRY_ADD
#define ATOMIC_SUB REGISTRY_SUB

/* ---- process-wide state (registry.h) -------------------------------------------------- */

/* The registry entry of a server of up; NULL when out of memory. */
static struct registry_server *entry(const struct config_upstream *up, unsigned server)
{
    return registry_server(up->name, up->servers[server].addr.text);
}

bool upstream_healthy(const struct config_upstream *up, unsigned server)
{
    if (!up->health.path)
        return true;
    struct registry_server *rs = registry_server_find(up->name, up->servers[server].addr.text);
    return !rs || !ATOMIC_LOAD(&rs->down);
}

bool upstream_ejected(const struct config_upstream *up, unsigned server)
{
    struct registry_server *rs = registry_server_find(up->name, up->servers[server].addr.text);
    return rs && ATOMIC_LOAD(&rs->ejected_until) > loop_now();
}

/* A JSON string of s (quotes, backslashes and control bytes escaped). */
static void json_string(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            evbuffer_add_printf(out, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            evbuffer_add_printf(out, "\\u%04x", ch);
        else
            evbuffer_add(out, s, 1);
    }
    evbuffer_add(out, "\"", 1);
}

void upstream_status_json(struct evbuffer *out, const struct config *cfg)
{
    int64_t now = loop_now();
    evbuffer_add(out, "{", 1);
    for (size_t u = 0; u < cfg->nupstreams; u++) {
        const struct config_upstream *up = &cfg->upstreams[u];
        evbuffer_add_printf(out, "%s", u ? "," : "");
        json_string(out, up->name);
        evbuffer_add(out, ":[", 2);
        for (size_t i = 0; i < up->nservers; i++) {
            struct registry_server *rs = entry(up, (unsigned)i);
            evbuffer_add_printf(out, "%s{\"address\":", i ? "," : "");
            json_string(out, up->servers[i].addr.text);
            evbuffer_add_printf(out,
                                ",\"healthy\":%s,\"ejected\":%s,\"ejections\":%u,\"drained\":%s,"
                                "\"in_flight\":%llu}",
                                rs && up->health.path && ATOMIC_LOAD(&rs->down) ? "false" : "true",
                                rs && ATOMIC_LOAD(&rs->ejected_until) > now ? "true" : "false",
                                rs ? ATOMIC_LOAD(&rs->ejections) : 0u,
                                registry_drained(rs) ? "true" : "false",
                                rs ? (unsigned long long)ATOMIC_LOAD(&rs->inflight) : 0ull);
        }
        evbuffer_add(out, "]", 1);
    }
    evbuffer_add(out, "}", 1);
}

/* ---- per-worker state ----------------------------------------------------------------- */

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
    struct upstream_registry *reg;      /* the worker's, which owns it */
    const struct config_server *server; /* of the newest config that has it */
    const struct config_upstream *up;
    struct config *cfg;              /* a reference to that config: server and up live on */
    unsigned refs;                   /* sets using it; at 0 it goes once nothing is active */
    struct registry_server *shared;  /* the server's process-wide state (registry.h) */
    struct upstream_conn *idle_head; /* most recently released first */
    unsigned nidle;
    unsigned nactive;            /* in use by requests, or reserved for a woken waiter */
    struct slot_waiter *waiters; /* first come, first served */
    struct slot_waiter **waiters_tail;
    /* The waiter last handed a released slot, until it runs, and the
     * coroutine that released it: see slot_take_back. */
    struct slot_waiter *handed;
    struct coro *handed_by;
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
    const char **names;  /* the servers' addresses (the hash's identities) */
    struct pool **pools; /* one per server, from the registry */
    bool *skip;          /* upstream_pick's scratch: tried, ejected or down */
    bool *skip2;         /* ... tried or down */
    bool *skip3;         /* ... tried (or drained) */
    char *none_up;       /* "upstream NAME: no server is up" */
    uint64_t *load;      /* upstream_pick's scratch: in-flight counts */
    struct registry_upstream *shared;
};

/* The worker's registry: every pool, keyed by name + address. Sets of
 * successive configs (a reload) share the pools of the servers they keep,
 * with their idle connections (what else a server carries over, its
 * ejection, health and drain, is process-wide: its registry entry). */
struct upstream_registry {
    struct pool *head;
    struct upstream_owner owner; /* as the worker's first set was given it */
    /* Surplus connections (their pool held `keepalive` idle ones already)
     * waiting for `closer`, which runs in a loop turn with nothing else
     * to do: see close_later. A ring, oldest first. */
    struct closing *closing;
    unsigned closing_head;
    unsigned nclosing;
    unsigned closing_cap; /* a power of two, at most CLOSE_QUEUE_MAX */
    struct event *closer;
};

struct upstream_set {
    struct upstream_owner owner;
    const struct config *cfg;
    struct upstream_state *ups; /* one per cfg->upstreams[i] */
    struct upstream_registry *registry;
};

static void pool_close_idle(struct pool *p);
static void slot_grant(struct pool *p);

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
    slot_grant(p); /* a reload that raised max_connections serves the line now */
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
    p->reg = set->registry;
    p->shared = registry_server(up->name, server->addr.text);
    if (!p->shared) {
        free(p->key);
        free(p);
        return NULL;
    }
    pool_point(p, set->cfg, up, server);
    p->waiters_tail = &p->waiters;
    p->next = set->registry->head;
    set->registry->head = p;
    return p;
}

struct upstream_set *upstream_set_new(const struct upstream_owner *owner, const struct config *cfg)
{
    if (!*owner->registry) {
        if (!(*owner->registry = calloc(1, sizeof(struct upstream_registry))))
            return NULL;
        (*owner->registry)->owner = *owner;
    }
    struct upstream_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->owner = *owner;
    set->cfg = cfg;
    set->registry = *owner->registry;
    set->ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*set->ups));
    if (!set->ups)
        goto out_free;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        struct upstream_state *st = &set->ups[i];
        st->weights = calloc(up->nservers, sizeof(*st->weights));
        st->names = calloc(up->nservers, sizeof(*st->names));
        st->pools = calloc(up->nservers, sizeof(*st->pools));
        st->skip = calloc(up->nservers, sizeof(*st->skip));
        st->load = calloc(up->nservers, sizeof(*st->load));
        st->skip2 = calloc(up->nservers, sizeof(*st->skip2));
        st->skip3 = calloc(up->nservers, sizeof(*st->skip3));
        st->none_up = malloc(strlen(up->name) + 40);
        if (!st->weights || !st->names || !st->pools || !st->skip || !st->load || !st->skip2 ||
            !st->skip3 || !st->none_up)
            goto out_free;
        sprintf(st->none_up, "upstream %s: no server is up", up->name);
        for (size_t j = 0; j < up->nservers; j++) {
            st->weights[j] = up->servers[j].weight;
            st->names[j] = up->servers[j].addr.text;
            st->pools[j] = registry_get(set, up, &up->servers[j]);
            if (!st->pools[j])
                goto out_free;
        }
        st->shared = st->pools[0]->shared->up;
        /* random_two's generator: its own per worker and upstream */
        uint64_t seed = ((uint64_t)owner->id + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)loop_now() ^
                        ((uint64_t)i << 32);
        if (balancer_init(&st->balancer, (enum balancer_kind)up->balance, st->weights, st->names,
                          up->nservers, seed) != 0)
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
    ATOMIC_SUB(uc->pool->reg->owner.conns, 1);
    free(uc);
}

/*
 * Closing a connection costs tens of microseconds on loopback: the FIN is
 * sent and the peer's state changed inside close(). When a burst of
 * answers comes back on more connections than the pools keep, closing
 * each surplus one as its answer is relayed made the answers behind it
 * wait. They are closed in loop turns that have nothing else to run, at
 * most CLOSE_BATCH a turn, oldest first; one queued CLOSE_LATER_MS ago (a
 * loop that is never idle) is closed by the next release, and beyond
 * CLOSE_QUEUE_MAX queued a connection is closed at once. Only plain
 * connections of the pool's current generation wait, with reading
 * stopped: a TLS one could still take a late session ticket into slots of
 * a config that is gone (see acquire).
 */
#define CLOSE_BATCH 64u
#define CLOSE_LATER_MS 100
#define CLOSE_QUEUE_MAX 4096u

struct closing {
    struct io_stream *s;
    int64_t since;
};

/* Closes the n oldest queued connections. */
static void close_oldest(struct upstream_registry *reg, unsigned n)
{
    for (; n && reg->nclosing; n--, reg->nclosing--) {
        io_stream_free(reg->closing[reg->closing_head].s);
        reg->closing_head = (reg->closing_head + 1) & (reg->closing_cap - 1);
        ATOMIC_SUB(reg->owner.conns, 1);
    }
}

static void on_closer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_registry *reg = arg;
    close_oldest(reg, CLOSE_BATCH);
    if (reg->nclosing)
        event_active(reg->closer, EV_TIMEOUT, 1);
}

/* Makes room for one more in the ring; false when it may not grow. */
static bool closing_room(struct upstream_registry *reg)
{
    if (reg->nclosing < reg->closing_cap)
        return true;
    if (reg->closing_cap >= CLOSE_QUEUE_MAX)
        return false;
    unsigned cap = reg->closing_cap ? 2 * reg->closing_cap : CLOSE_BATCH;
    struct closing *ring = malloc(cap * sizeof(*ring));
    if (!ring)
        return false;
    for (unsigned i = 0; i < reg->nclosing; i++)
        ring[i] = reg->closing[(reg->closing_head + i) & (reg->closing_cap - 1)];
    free(reg->closing);
    reg->closing = ring;
    reg->closing_head = 0;
    reg->closing_cap = cap;
    return true;
}

/* Queues uc's stream for closing; false when it is to be closed now. */
static bool close_later(struct upstream_registry *reg, struct upstream_conn *uc)
{
    if (!reg->closer) {
        reg->closer = event_new(loop_base(loop_current()), -1, 0, on_closer, reg);
        if (!reg->closer)
            return false;
        if (loop_idle_priority(reg->closer) != 0) {
            event_free(reg->closer);
            reg->closer = NULL;
            return false;
        }
    }
    int64_t now = loop_now();
    if (reg->nclosing && now - reg->closing[reg->closing_head].since > CLOSE_LATER_MS * LOOP_MS)
        close_oldest(reg, reg->nclosing);
    if (!closing_room(reg))
        return false;
    io_set_idle(uc->s, NULL, NULL);
    io_set_reading(uc->s, false);
    unsigned at = (reg->closing_head + reg->nclosing) & (reg->closing_cap - 1);
    reg->closing[at] = (struct closing){.s = uc->s, .since = now};
    reg->nclosing++;
    if (uc->idle_timer)
        event_free(uc->idle_timer);
    free(uc);
    event_active(reg->closer, EV_TIMEOUT, 1);
    return true;
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
    for (struct pool **pp = &p->reg->head; *pp; pp = &(*pp)->next) {
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
            free(set->ups[i].names);
            free(set->ups[i].pools);
            free(set->ups[i].skip);
            free(set->ups[i].load);
            free(set->ups[i].skip2);
            free(set->ups[i].skip3);
            free(set->ups[i].none_up);
        }
        free(set->ups);
    }
    free(set);
}

int upstream_pick(struct upstream_set *set, const struct config_upstream *up, const bool *skip,
                  uint64_t key, bool has_key)
{
    struct upstream_state *st = &set->ups[up->index];
    const uint64_t *load = NULL;
    if (up->balance == CONFIG_BALANCE_LEAST_CONN || up->balance == CONFIG_BALANCE_RANDOM_TWO) {
        for (size_t i = 0; i < up->nservers; i++)
            st->load[i] = ATOMIC_LOAD(&st->pools[i]->shared->inflight);
        load = st->load;
    }
    bool drains = registry_any_drained();
    if (!up->passive_failures && !up->health.path && !drains && !up->unresolved)
        return balancer_next(&st->balancer, skip, load, key, has_key);
    int64_t now = loop_now();
    bool any = false, any_up = false, any_left = false;
    for (size_t i = 0; i < up->nservers; i++) {
        struct pool *p = st->pools[i];
        const struct registry_server *sh = p->shared;
        /* Drained (admin) is as hard as tried: never picked. */
        bool drained = drains && registry_drained(sh);
        /* A DNS name without an address yet (resolve.h): as if tried. */
        bool tried = (skip && skip[i]) || drained || !up->servers[i].addr.numeric;
        bool down = up->health.path && ATOMIC_LOAD(&sh->down);
        st->skip[i] = tried || down || ATOMIC_LOAD(&sh->ejected_until) > now;
        st->skip2[i] = tried || down;
        st->skip3[i] = tried;
        any |= !st->skip[i];
        any_up |= !st->skip2[i];
        any_left |= !tried;
        while (drained && p->idle_head) { /* its pooled connections close */
            struct upstream_conn *uc = p->idle_head;
            idle_unlink(uc);
            conn_close(uc);
        }
    }
    if (any)
        return balancer_next(&st->balancer, st->skip, load, key, has_key);
    /* Every server left ejected: ejections are ignored rather than
     * failing every request (as nginx when all servers are down). */
    if (any_up)
        return balancer_next(&st->balancer, st->skip2, load, key, has_key);
    /* Every server left fails its health checks: fail_open uses them. */
    if (up->health.fail_open && any_left)
        return balancer_next(&st->balancer, st->skip3, load, key, has_key);
    return -1;
}

const char *upstream_none_up(struct upstream_set *set, const struct config_upstream *up)
{
    return set->ups[up->index].none_up;
}

/*
 * Ejects sh unless it is already out or half of the upstream's servers
 * are (a cap: an outage of the backends, or of the network to them, must
 * not empty the upstream). Called under the upstream's lock. Returns the
 * ejection's length in ms, or 0 when not ejected.
 */
static int64_t eject(struct upstream_state *st, const struct config_upstream *up,
                     struct registry_server *sh, int64_t now)
{
    if (ATOMIC_LOAD(&sh->ejected_until) > now)
        return 0;
    size_t out = 0;
    for (size_t i = 0; i < up->nservers; i++)
        out += ATOMIC_LOAD(&st->pools[i]->shared->ejected_until) > now;
    if ((out + 1) * 2 > up->nservers)
        return -1;
    /* Ejected again within its last ejection's length of coming back:
     * twice as long as the last time, up to max_eject_for. */
    int64_t ms = up->passive_eject_ms;
    int64_t until = ATOMIC_LOAD(&sh->ejected_until);
    if (until && sh->eject_ms && now - until < sh->eject_ms * LOOP_MS) {
        ms = sh->eject_ms * 2;
        int64_t cap = up->passive_max_eject_ms > up->passive_eject_ms ? up->passive_max_eject_ms
                                                                      : up->passive_eject_ms;
        if (ms > cap)
            ms = cap;
    }
    sh->eject_ms = ms;
    ATOMIC_STORE(&sh->ejected_until, now + ms * LOOP_MS);
    ATOMIC_ADD(&sh->ejections, 1);
    return ms;
}

bool upstream_report(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool ok)
{
    if (!up->passive_failures)
        return false;
    struct upstream_state *st = &set->ups[up->index];
    struct registry_server *sh = st->pools[server]->shared;
    if (ok) {
        if (ATOMIC_LOAD(&sh->fails))
            ATOMIC_STORE(&sh->fails, 0);
        return false;
    }
    if (ATOMIC_ADD(&sh->fails, 1) < up->passive_failures)
        return false;
    pthread_mutex_lock(&st->shared->lock);
    int64_t ms = 0;
    if (ATOMIC_LOAD(&sh->fails) >= up->passive_failures) { /* not taken by another worker */
        ATOMIC_STORE(&sh->fails, 0);
        ms = eject(st, up, sh, loop_now());
    }
    pthread_mutex_unlock(&st->shared->lock);
    if (ms > 0)
        log_ratelimited(&sh->eject_logged, 1000, CONFIG_LOG_WARN,
                        "upstream %s: server %s ejected for %lld ms after %u failures in a row",
                        up->name, up->servers[server].addr.text, (long long)ms,
                        up->passive_failures);
    else if (ms < 0)
        log_ratelimited(&sh->eject_logged, 1000, CONFIG_LOG_WARN,
                        "upstream %s: server %s failed %u times in a row, not ejected: half of "
                        "the upstream's servers are ejected already",
                        up->name, up->servers[server].addr.text, up->passive_failures);
    return ms > 0;
}

/* The window's slot for second `sec`, emptied when it held an older one. */
static struct registry_budget_slot *budget_slot(struct registry_upstream *su, int64_t sec)
{
    struct registry_budget_slot *b = &su->slots[sec % REGISTRY_BUDGET_SLOTS];
    int64_t old = ATOMIC_LOAD(&b->sec);
    if (old != sec && __atomic_compare_exchange_n(&b->sec, &old, sec, false, __ATOMIC_RELAXED,
                                                  __ATOMIC_RELAXED)) {
        ATOMIC_STORE(&b->requests, 0);
        ATOMIC_STORE(&b->retries, 0);
    }
    return b;
}

void upstream_budget_request(struct upstream_set *set, const struct config_upstream *up)
{
    if (!up->retry_attempts)
        return;
    struct registry_upstream *su = set->ups[up->index].shared;
    ATOMIC_ADD(&budget_slot(su, loop_now() / (1000 * LOOP_MS))->requests, 1);
}

bool upstream_budget_retry(struct upstream_set *set, const struct config_upstream *up)
{
    struct registry_upstream *su = set->ups[up->index].shared;
    int64_t sec = loop_now() / (1000 * LOOP_MS);
    uint64_t requests = 0, retries = 0;
    for (size_t i = 0; i < REGISTRY_BUDGET_SLOTS; i++) {
        if (ATOMIC_LOAD(&su->slots[i].sec) > sec - REGISTRY_BUDGET_SLOTS) {
            requests += ATOMIC_LOAD(&su->slots[i].requests);
            retries += ATOMIC_LOAD(&su->slots[i].retries);
        }
    }
    uint64_t allowed = requests * up->retry_budget_pct / 100 +
                       (uint64_t)up->retry_budget_min * REGISTRY_BUDGET_SLOTS;
    if (retries >= allowed)
        return false;
    ATOMIC_ADD(&budget_slot(su, sec)->retries, 1);
    return true;
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
    int64_t ms = uc->pool->cfg->timeouts.upstream_idle;
    int64_t left = ms - (loop_now() - uc->idle_since) / LOOP_MS;
    if (left > 0) {
        arm_idle(uc, left);
        return;
    }
    idle_unlink(uc);
    conn_close(uc);
}

/* Hands a slot to the first coroutine in line (reserved for it: counted
 * in nactive) and wakes it. */
static void slot_hand(struct pool *p)
{
    struct slot_waiter *sw = p->waiters;
    p->waiters = sw->next;
    if (!p->waiters)
        p->waiters_tail = &p->waiters;
    sw->granted = true;
    io_signal(sw->coro);
}

/*
 * Gives a slot back. With coroutines waiting, it is handed to the first
 * one (reserved for it: nactive stays as it is) and that one is woken; a
 * newcomer never takes a slot while anyone waits, so the queue is served
 * in order and a woken waiter never finds its slot taken. While more are
 * in use than the server's max_connections (a reload lowered it), the
 * slot is not handed on: the line waits until the new limit holds.
 */
static void slot_release(struct pool *p)
{
    if (!p->waiters || (p->up->max_connections && p->nactive > p->up->max_connections)) {
        p->handed = NULL; /* not to be taken back by whoever comes next */
        p->nactive--;
        pool_put(p);
        return;
    }
    p->handed = p->waiters;
    p->handed_by = coro_current();
    slot_hand(p);
}

/* The pool's server took a new description (a reload): while it is under
 * its max_connections (raised, or 0: unlimited), the coroutines in line
 * get the free slots, in order, rather than one per release. */
static void slot_grant(struct pool *p)
{
    uint32_t max = p->up->max_connections;
    while (p->waiters && (!max || p->nactive < max)) {
        p->nactive++;
        slot_hand(p);
    }
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
 * A request whose pooled connection just failed before any answer (the
 * keep-alive race: upstream_acquire with `fresh`) and that released its
 * slot to the first in line, that waiter not having run yet: the slot is
 * taken back, the waiter goes back to the head of the line (its wake-up
 * finds no grant and it waits on). The request was in service, not a
 * newcomer: without this, a server at max_connections answered it 503
 * after upstream_connect while the waiter it had let in was served.
 * True when taken back.
 */
static bool slot_take_back(struct pool *p)
{
    struct slot_waiter *sw = p->handed;
    if (!sw || !p->handed_by || p->handed_by != coro_current())
        return false;
    p->handed = NULL;
    sw->granted = false;
    sw->next = p->waiters;
    if (!p->waiters)
        p->waiters_tail = &sw->next;
    p->waiters = sw;
    return true;
}

/*
 * Takes a slot under max_connections (counted in nactive until
 * slot_release), waiting in line for one while the server is full or
 * others wait; `fresh`: see slot_take_back. Returns 0, -EBUSY (none
 * before the deadline), -ECANCELED, -ECONNABORTED (watch ended) or
 * -ENOMEM. A waiter leaving the line just after it was handed a slot
 * (cancelled, its client gone, its deadline met in the same loop turn)
 * passes the slot on. May yield.
 */
static int slot_take(struct pool *p, bool fresh, struct io_stream *watch, int64_t deadline)
{
    uint32_t max = p->up->max_connections;
    if (!max || (p->nactive < max && !p->waiters)) {
        p->nactive++;
        return 0;
    }
    if (fresh && slot_take_back(p))
        return 0;
    struct slot_waiter sw = {.coro = coro_current(), .next = NULL, .granted = false};
    *p->waiters_tail = &sw;
    p->waiters_tail = &sw.next;
    for (;;) {
        struct io_want want[2] = {{.events = IO_SIGNAL}, {.stream = watch, .events = IO_EOF}};
        int r = io_wait(want, watch ? 2 : 1, deadline);
        if (p->handed == &sw) /* it runs: no longer to be taken back */
            p->handed = NULL;
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
                        p->up->name, p->server->addr.text, (unsigned)p->up->max_connections);
        return -EBUSY;
    }
}

static int acquire(struct pool *p, const struct config_upstream *up, unsigned server, bool fresh,
                   int64_t deadline, struct io_stream *watch, struct upstream_conn **out,
                   bool *reused)
{
    int r = slot_take(p, fresh, watch, deadline);
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
    /* A pooled connection's timer may still run to an older config's
     * longer upstream_idle (a reload shortened it): its age is checked
     * when it is taken. The most recently released is first: when it is
     * past upstream_idle, so are all the others. */
    if (!fresh && !foreign && p->idle_head &&
        loop_now() - p->idle_head->idle_since >= p->cfg->timeouts.upstream_idle * LOOP_MS)
        pool_close_idle(p);
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
    ATOMIC_ADD(p->reg->owner.conns, 1);
    *reused = false;
    *out = uc;
    return 0;
}

/* The server's in-flight count covers the wait for a slot and the
 * connect: requests on their way to a server count against it, so a
 * burst does not all go to the one that was idle. */
int upstream_acquire(struct upstream_set *set, const struct config_upstream *up, unsigned server,
                     bool fresh, int64_t deadline, struct io_stream *watch,
                     struct upstream_conn **out, bool *reused)
{
    struct pool *p = set->ups[up->index].pools[server];
    ATOMIC_ADD(&p->shared->inflight, 1);
    int r = acquire(p, up, server, fresh, deadline, watch, out, reused);
    if (r < 0)
        ATOMIC_SUB(&p->shared->inflight, 1);
    return r;
}

void upstream_release(struct upstream_conn *uc, bool reusable)
{
    struct pool *p = uc->pool;
    struct io_stream *s = uc->s;
    const struct config *cfg = p->cfg;
    ATOMIC_SUB(&p->shared->inflight, 1);
    if (!reusable || uc->gen != p->gen || io_eof(s) || p->nidle >= p->up->keepalive ||
        *p->reg->owner.draining || registry_drained(p->shared) ||
        evbuffer_get_length(io_input(s)) > 0 || evbuffer_get_length(io_output(s)) > 0) {
        bool surplus = reusable && uc->gen == p->gen && p->nidle >= p->up->keepalive && !tls_is(s);
        if (!surplus || !close_later(p->reg, uc))
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

void upstream_registry_free(struct upstream_registry **reg)
{
    if (!*reg)
        return;
    close_oldest(*reg, (*reg)->nclosing);
    free((*reg)->closing);
    if ((*reg)->closer)
        event_free((*reg)->closer);
    while ((*reg)->head) {
        struct pool *p = (*reg)->head;
        p->refs = 0;
        p->nactive = 0;
        p->waiters = NULL;
        p->handed = NULL;
        pool_put(p);
    }
    free(*reg);
    *reg = NULL;
}

struct io_stream *upstream_stream(struct upstream_conn *uc)
{
    return uc->s;
}
