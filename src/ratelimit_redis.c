/* ratelimit_redis: see ratelimit_redis.h. */
#include "ratelimit_redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <hiredis/adapters/libevent.h>
#pragma GCC diagnostic pop
#include <openssl/sha.h>

#include "coro.h"
#include "io.h"
#include "log.h"
#include "loop.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LOG_EVERY_MS 5000
#define KEY_TEXT_MAX 64
#define TICK_MS 1000 /* the timer's period while connecting or up */
#define CONNECT_TIMEOUT_S 2
#define STALL_S 10 /* commands outstanding and no reply for this long */

/* KEYS[1] the bucket; ARGV[1] the interval (µs), ARGV[2] the capacity,
 * ARGV[3] the database. Returns {admitted, remaining, retry_after_us,
 * reset_us}. The script selects its database itself (a SELECT inside a
 * script stays in it): a database Redis does not have is an error of
 * every command, never commands run in database 0. */
static const char SCRIPT[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "redis.call('SELECT', tonumber(ARGV[3]))\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local iv = tonumber(ARGV[1])\n"
    "local cap = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not tat or tat < now then tat = now end\n"
    "local new = tat + iv\n"
    "local limit = cap * iv\n"
    "if new - now <= limit then\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',\n"
    "             math.min(math.ceil((new - now) / 1000) + 1000, 315360000000))\n"
    "  return {1, math.floor((limit - (new - now)) / iv), 0, math.ceil(new - now)}\n"
    "end\n"
    "return {0, 0, math.ceil(new - now - limit), math.ceil(tat - now)}\n";

enum conn_state { ST_DOWN, ST_RESOLVING, ST_CONNECTING, ST_UP };

enum reason { R_DOWN, R_TIMEOUT, R_QUEUE, R_REPLY, R_COUNT };
static const char *const reason_names[R_COUNT] = {"down", "timeout", "queue_full", "bad_reply"};

/* One worker's connection to one store. */
struct conn {
    struct conn *next;
    char *url, *host;
    uint16_t port;
    uint32_t db;
    struct loop *loop;
    redisAsyncContext *ac;
    enum conn_state state;
    struct event *retry; /* reconnect after backoff; else the tick */
    struct evdns_getaddrinfo_request *dns;
    int64_t backoff_ms;
    bool answered;    /* since connecting: a reply that is not an error */
    bool refused;     /* since connecting: an error reply */
    unsigned pending; /* commands sent, reply not yet in */
    int64_t last_used;
    unsigned named;       /* the prepare_gen of the last config that named it */
    int64_t since;        /* the connect's start, or the last reply (or first send) */
    int64_t last_log;     /* the connection's own events */
    int64_t last_decided; /* on_store_error decisions */
    unsigned long unlogged;
};

/* A command's wait record (see the header: owned by the last side). */
struct wait {
    struct coro *co; /* NULL once orphaned */
    struct conn *conn;
    bool done, ok, lost; /* lost: no reply (the connection went) */
    long long v[4];
};

static __thread struct conn *conns;
static __thread unsigned prepare_gen; /* configs installed on this thread */

/* ---- counters, process-wide ---- */

struct counter {
    struct counter *next;
    char *route;
    unsigned long n[2][R_COUNT]; /* [deny][reason] */
};
static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct counter *counters;

static void count(const char *route, bool deny, enum reason why)
{
    pthread_mutex_lock(&counters_lock);
    struct counter *c = counters;
    while (c && strcmp(c->route, route) != 0)
        c = c->next;
    if (!c && (c = calloc(1, sizeof(*c))) != NULL) {
        if ((c->route = strdup(route)) == NULL) {
            free(c);
            c = NULL;
        } else {
            c->next = counters;
            counters = c;
        }
    }
    if (c)
        c->n[deny][why]++;
    pthread_mutex_unlock(&counters_lock);
}

void ratelimit_redis_errors(void (*fn)(void *arg, const char *route, const char *outcome,
                                       const char *reason, unsigned long n),
                            void *arg)
{
    pthread_mutex_lock(&counters_lock);
    for (struct counter *c = counters; c; c = c->next)
        for (int d = 0; d < 2; d++)
            for (int r = 0; r < R_COUNT; r++)
                if (c->n[d][r])
                    fn(arg, c->route, d ? "deny" : "allow", reason_names[r], c->n[d][r]);
    pthread_mutex_unlock(&counters_lock);
}

/* ---- connections ---- */

static void conn_start(struct conn *c);
static void conn_failed(struct conn *c, const char *what);

static void conn_close_ac(struct conn *c)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL;    /* the disconnect callback ignores it */
        redisAsyncFree(ac); /* pending callbacks run now, with no reply */
    }
}

static void conn_free(struct conn *c)
{
    if (c->dns) {
        struct evdns_getaddrinfo_request *d = c->dns;
        c->dns = NULL;
        evdns_getaddrinfo_cancel(d);
    }
    conn_close_ac(c);
    if (c->retry)
        event_free(c->retry);
    free(c->url);
    free(c->host);
    free(c);
}

static void unlink_conn(struct conn *c)
{
    for (struct conn **p = &conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            return;
        }
}

/* Only an older config's store closes when unused: the current ones stay
 * connected (made again on demand, a store named by a host name would send
 * requests to on_store_error until its lookup ends). */
static bool idle(const struct conn *c)
{
    return c->named != prepare_gen && c->pending == 0 &&
           loop_now() - c->last_used > RLR_IDLE_CLOSE_S * LOOP_SEC;
}

/*
 * A connection that was up is lost: the next try comes after the shortest
 * backoff, unless the store only refused since connecting (error replies,
 * nothing else: a Redis at maxclients accepts, sends an error and closes),
 * where the backoff keeps growing rather than reconnecting every 100 ms.
 */
static void conn_lost(struct conn *c, const char *what)
{
    if (c->answered || !c->refused)
        c->backoff_ms = BACKOFF_MIN_MS;
    conn_failed(c, what);
}

/* After a failure: down, and a reconnect after the backoff. */
static void conn_failed(struct conn *c, const char *what)
{
    c->state = ST_DOWN;
    log_ratelimited(&c->last_log, LOG_EVERY_MS, LOG_LEVEL_WARN,
                    "rate_limit store %s: %s; retrying in %lld ms", c->url, what,
                    (long long)c->backoff_ms);
    struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
    evtimer_add(c->retry, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void tick_later(struct conn *c)
{
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    evtimer_add(c->retry, &tv);
}

/*
 * The connection's timer: down, a reconnect after the backoff; connecting,
 * a connect timeout; up, a stalled Redis (commands outstanding, no reply
 * for STALL_S: a dead peer TCP has not noticed) is dropped. Unused
 * connections (an old config's store) are closed.
 */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd, (void)what;
    if (idle(c) && c->state != ST_RESOLVING) {
        unlink_conn(c);
        conn_free(c);
        return;
    }
    int64_t waited = loop_now() - c->since;
    if (c->state == ST_DOWN) {
        conn_start(c);
    } else if (c->state == ST_CONNECTING && waited > CONNECT_TIMEOUT_S * LOOP_SEC) {
        conn_close_ac(c);
        conn_failed(c, "connect timed out");
    } else if (c->state == ST_UP && c->pending && waited > STALL_S * LOOP_SEC) {
        conn_close_ac(c);
        conn_lost(c, "no reply for 10 s: reconnecting");
    } else {
        tick_later(c);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    if (!c || c->ac != ac)
        return;
    if (status != REDIS_OK) {
        c->ac = NULL; /* hiredis frees it after this callback */
        conn_failed(c, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    c->state = ST_UP; /* the backoff is reset when it is lost: conn_lost */
    c->answered = c->refused = false;
    c->since = loop_now();
    tick_later(c);
    log_msg(LOG_LEVEL_INFO, "rate_limit store %s: connected", c->url);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    (void)status;
    if (!c || c->ac != ac)
        return;
    c->ac = NULL; /* hiredis frees it after this callback */
    /* An error reply nothing waited for made hiredis drop it (maxclients). */
    if (ac->err == REDIS_ERR_OTHER)
        c->refused = true;
    conn_lost(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* hiredis 0.14 allocates an array as its header announces (*400000000 is
 * 3.2 GB, then freed one element at a time): a store's reply is the
 * script's four integers or an error, so a longer array is refused, which
 * hiredis reports as a reader error and Ferry as a dropped connection. */
#define REPLY_ARRAY_MAX 8
static redisReplyObjectFunctions bounded_fns;
static void *(*hiredis_array)(const redisReadTask *, int);
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;
static bool bounded_ok;

static void *bounded_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > REPLY_ARRAY_MAX)
        return NULL;
    return hiredis_array(task, elements);
}

static void bounded_init(void)
{
    redisReader *r = redisReaderCreate(); /* with hiredis's own functions */
    if (!r || !r->fn) {
        if (r)
            redisReaderFree(r);
        return;
    }
    bounded_fns = *r->fn;
    redisReaderFree(r);
    hiredis_array = bounded_fns.createArray;
    bounded_fns.createArray = bounded_array;
    bounded_ok = hiredis_array != NULL;
}

static void connect_ip(struct conn *c, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
    if (!ac || ac->err) {
        char what[160];
        snprintf(what, sizeof(what), "connect to %s: %s", ip, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        conn_failed(c, what);
        return;
    }
    ac->data = c;
    c->ac = ac;
    pthread_once(&bounded_once, bounded_init);
    if (bounded_ok && ac->c.reader)
        ac->c.reader->fn = &bounded_fns;
    if (redisLibeventAttach(ac, loop_base(c->loop)) != REDIS_OK) {
        conn_close_ac(c);
        conn_failed(c, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->state = ST_CONNECTING;
    c->since = loop_now();
    tick_later(c);
}

static void on_resolved(int err, struct evutil_addrinfo *ai, void *arg)
{
    struct conn *c = arg;
    if (err == EVUTIL_EAI_CANCEL) { /* conn_free: c goes away */
        if (ai)
            evutil_freeaddrinfo(ai);
        return;
    }
    c->dns = NULL;
    char ip[64];
    if (err || !ai) {
        char what[128];
        snprintf(what, sizeof(what), "cannot resolve the host: %s", evutil_gai_strerror(err));
        conn_failed(c, what);
    } else {
        struct evutil_addrinfo *first = ai;
        while (ai->ai_next && ai->ai_family != AF_INET) /* IPv4 first */
            ai = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            ai = first;
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        if (evutil_inet_ntop(ai->ai_family, a, ip, sizeof(ip)))
            connect_ip(c, ip);
        else
            conn_failed(c, "resolved to an unusable address");
        ai = first;
    }
    if (ai)
        evutil_freeaddrinfo(ai);
}

static void conn_start(struct conn *c)
{
    unsigned char bin[16];
    if (evutil_inet_pton(AF_INET, c->host, bin) == 1 ||
        evutil_inet_pton(AF_INET6, c->host, bin) == 1) {
        connect_ip(c, c->host);
        return;
    }
    struct evdns_base *dns = loop_dns(c->loop);
    if (!dns) {
        conn_failed(c, "no resolver");
        return;
    }
    struct evutil_addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->state = ST_RESOLVING;
    /* May call back at once (then c->dns stays NULL). */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(dns, c->host, NULL, &hints, on_resolved, c);
    if (c->state == ST_RESOLVING)
        c->dns = req;
}

/* The calling worker's connection to the route's store (made on first use). */
static struct conn *conn_of(struct loop *loop, const struct config_rate_limit *cfg)
{
    struct conn *c = conns;
    while (c && strcmp(c->url, cfg->store_url) != 0)
        c = c->next;
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->url = strdup(cfg->store_url);
    c->host = strdup(cfg->store_host);
    c->retry = evtimer_new(loop_base(loop), on_retry, c);
    if (!c->url || !c->host || !c->retry) {
        conn_free(c);
        return NULL;
    }
    c->port = cfg->store_port;
    c->db = cfg->store_db;
    c->loop = loop;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->last_used = loop_now();
    c->next = conns;
    conns = c;
    conn_start(c);
    return c;
}

void ratelimit_redis_prepare(const struct config *cfg)
{
    struct loop *loop = loop_current();
    prepare_gen++;
    for (size_t i = 0; loop && i < cfg->nroutes; i++) {
        const struct config_rate_limit *rl = cfg->routes[i].rate_limit;
        struct conn *c = rl && rl->store_url ? conn_of(loop, rl) : NULL;
        if (c) {
            c->last_used = loop_now();
            c->named = prepare_gen;
        }
    }
}

void ratelimit_redis_thread_end(void)
{
    while (conns) {
        struct conn *c = conns;
        conns = c->next;
        conn_free(c);
    }
}

/* ---- commands ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct wait *w = priv;
    redisReply *r = reply;
    (void)ac;
    w->conn->pending--;
    w->conn->since = loop_now();
    if (r && r->type == REDIS_REPLY_ERROR)
        w->conn->refused = true;
    else if (r)
        w->conn->answered = true;
    if (!w->co) { /* orphaned: the request stopped waiting */
        free(w);
        return;
    }
    w->done = true;
    w->lost = !r;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        w->ok = true;
        for (size_t i = 0; i < 4; i++) {
            if (r->element[i]->type != REDIS_REPLY_INTEGER || r->element[i]->integer < 0)
                w->ok = false;
            else
                w->v[i] = r->element[i]->integer;
        }
    }
    io_signal(w->co);
}

/* The bucket's Redis key: ferry:rl:ROUTE:KEY, a long key hashed. */
static size_t bucket_name(struct evbuffer *b, const char *route, const char *key, size_t len)
{
    evbuffer_add_printf(b, "ferry:rl:%s:", route);
    if (len <= KEY_TEXT_MAX) {
        evbuffer_add(b, key, len);
    } else {
        unsigned char md[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)key, len, md);
        evbuffer_add(b, "#", 1);
        for (size_t i = 0; i < sizeof(md); i++)
            evbuffer_add_printf(b, "%02x", md[i]);
    }
    return evbuffer_get_length(b);
}

/* Sends the script and awaits its reply: 0 with *w filled, or a reason. */
static int take(struct conn *c, struct wait *w, const struct config_route *rt, const char *key,
                size_t len, const struct ratelimit_rate *rate, int64_t deadline)
{
    if (c->state != ST_UP && c->state != ST_CONNECTING)
        return R_DOWN;
    if (c->pending >= RLR_MAX_PENDING)
        return R_QUEUE;
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return R_DOWN;
    size_t blen = bucket_name(b, rt->name, key, len);
    const char *bname = (const char *)evbuffer_pullup(b, -1);
    char iv[32], cap[24], db[16];
    snprintf(iv, sizeof(iv), "%.3f", (double)rate->interval_ns / 1000.0);
    snprintf(cap, sizeof(cap), "%llu", (unsigned long long)rate->capacity);
    snprintf(db, sizeof(db), "%u", (unsigned)c->db);
    const char *argv[] = {"EVAL", SCRIPT, "1", bname ? bname : "", iv, cap, db};
    size_t argl[] = {4,          sizeof(SCRIPT) - 1, 1,         bname ? blen : 0,
                     strlen(iv), strlen(cap),        strlen(db)};
    int rc = redisAsyncCommandArgv(c->ac, on_reply, w, 7, argv, argl);
    evbuffer_free(b);
    if (rc != REDIS_OK)
        return R_DOWN;
    if (c->pending++ == 0)
        c->since = loop_now();
    struct io_want want = {.events = IO_SIGNAL};
    while (!w->done) {
        if (io_wait(&want, 1, deadline) < 0 && !w->done) {
            w->co = NULL; /* orphaned: the reply (or hiredis's free) frees it */
            return R_TIMEOUT;
        }
    }
    return w->ok ? -1 : w->lost ? R_DOWN : R_REPLY;
}

static void decide_on_error(const struct config_route *rt, struct conn *c, enum reason why,
                            const struct ratelimit_rate *rate, struct ratelimit_result *res)
{
    const struct config_rate_limit *cfg = rt->rate_limit;
    memset(res, 0, sizeof(*res));
    res->store_error = true;
    res->allowed = !cfg->store_deny;
    res->limit = rate->capacity;
    res->retry_after_ns = res->allowed ? 0 : LOOP_SEC;
    count(rt->name, cfg->store_deny, why);
    if (!c) {
        static int64_t last;
        log_ratelimited(&last, LOG_EVERY_MS, LOG_LEVEL_WARN,
                        "rate_limit store: out of memory: route %s: %s", rt->name,
                        res->allowed ? "allowed" : "denied");
        return;
    }
    c->unlogged++;
    if (log_ratelimited(&c->last_decided, LOG_EVERY_MS, LOG_LEVEL_WARN,
                        "rate_limit store %s: %s: route %s: on_store_error %s (%lu requests "
                        "since the last such line)",
                        c->url, reason_names[why], rt->name, cfg->store_deny ? "deny" : "allow",
                        c->unlogged))
        c->unlogged = 0;
}

void ratelimit_redis_request(const struct config_route *rt, const struct http1_request *req,
                             const char *client, const char *identity, struct ratelimit_result *res)
{
    const struct config_rate_limit *cfg = rt->rate_limit;
    struct ratelimit_rate rate = ratelimit_rate_of(cfg->requests, cfg->per, cfg->burst);
    struct loop *loop = loop_current();
    struct conn *c = conn_of(loop, cfg);
    struct wait *w = c ? calloc(1, sizeof(*w)) : NULL;
    if (!w) {
        decide_on_error(rt, c, R_DOWN, &rate, res);
        return;
    }
    c->last_used = loop_now();
    w->co = coro_current();
    w->conn = c;
    size_t len;
    const char *key = ratelimit_key(rt, req, client, identity, &len);
    int why = take(c, w, rt, key, len, &rate, loop_deadline(cfg->store_timeout * LOOP_MS));
    if (why == R_TIMEOUT) /* orphaned: no longer ours */
        w = NULL;
    if (why >= 0) {
        /* a command never sent, or its reply seen: the record is ours */
        free(w);
        decide_on_error(rt, c, (enum reason)why, &rate, res);
        return;
    }
    memset(res, 0, sizeof(*res));
    res->allowed = w->v[0] == 1;
    res->limit = rate.capacity;
    res->remaining = (uint64_t)w->v[1];
    res->retry_after_ns = (int64_t)w->v[2] * 1000;
    res->reset_ns = (int64_t)w->v[3] * 1000;
    free(w);
}
