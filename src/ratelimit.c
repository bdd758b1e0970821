/* ratelimit: see ratelimit.h. */
#include "ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- the pure step -------------------------------------------------------------------- */

struct ratelimit_rate ratelimit_rate_of(uint64_t requests, int64_t per_ms, uint64_t burst)
{
    struct ratelimit_rate r;
    if (requests == 0)
        requests = 1;
    if (per_ms <= 0)
        per_ms = 1;
    __int128 ns = (__int128)per_ms * 1000000 / requests;
    r.interval_ns = ns < 1 ? 1 : ns > INT64_MAX ? INT64_MAX : (int64_t)ns;
    r.capacity = requests + burst < requests ? UINT64_MAX : requests + burst;
    return r;
}

/* capacity * interval, saturated. */
static int64_t span_ns(const struct ratelimit_rate *rate)
{
    __int128 s = (__int128)rate->capacity * rate->interval_ns;
    return s > INT64_MAX ? INT64_MAX : (int64_t)s;
}

void ratelimit_step(int64_t *tat, int64_t now, const struct ratelimit_rate *rate,
                    struct ratelimit_result *res)
{
    int64_t span = span_ns(rate);
    int64_t start = *tat > now ? *tat : now;
    int64_t next = start > INT64_MAX - rate->interval_ns ? INT64_MAX : start + rate->interval_ns;
    memset(res, 0, sizeof(*res));
    res->limit = rate->capacity;
    if (next - now > span) {
        res->allowed = false;
        res->retry_after_ns = next - now - span;
        res->reset_ns = start - now;
        res->remaining = 0;
        return;
    }
    *tat = next;
    res->allowed = true;
    res->reset_ns = next - now;
    res->remaining = (uint64_t)((span - (next - now)) / rate->interval_ns);
}

/* ---- SipHash-2-4 with a per-process key ----------------------------------------------- */

static uint64_t sip_k0, sip_k1;
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_init(void)
{
    uint64_t k[2];
    if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        k[1] = (uint64_t)(uintptr_t)&ts ^ 0xc2b2ae3d27d4eb4full;
    }
    sip_k0 = k[0];
    sip_k1 = k[1];
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t ratelimit_hash(const void *key, size_t len)
{
    pthread_once(&sip_once, sip_init);
    const unsigned char *p = key;
    uint64_t v0 = 0x736f6d6570736575ull ^ sip_k0, v1 = 0x646f72616e646f6dull ^ sip_k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ sip_k0, v3 = 0x7465646279746573ull ^ sip_k1;
    uint64_t b = (uint64_t)len << 56, m;
    size_t i;
    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&m, p + i, 8);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    uint64_t h = v0 ^ v1 ^ v2 ^ v3;
    return h ? h : 1;
}

/* ---- the shared table ------------------------------------------------------------------ */

struct entry {
    uint64_t hash; /* 0: empty */
    int64_t tat;
};

struct shard {
    pthread_mutex_t mu;
    struct entry *slots;
    size_t cap; /* a power of two, or 0 */
    size_t used;
    size_t max_cap;
} __attribute__((aligned(64)));

struct ratelimit {
    struct shard shards[RATELIMIT_SHARDS];
};

#define SHARD_START 16

struct ratelimit *ratelimit_new(size_t max_keys)
{
    struct ratelimit *rl;
    if (posix_memalign((void **)&rl, 64, sizeof(*rl)) != 0)
        return NULL;
    memset(rl, 0, sizeof(*rl));
    if (!max_keys)
        max_keys = RATELIMIT_MAX_KEYS;
    size_t per = max_keys / RATELIMIT_SHARDS + 1, cap = SHARD_START;
    while (cap / 4 * 3 < per)
        cap *= 2;
    for (size_t i = 0; i < RATELIMIT_SHARDS; i++) {
        pthread_mutex_init(&rl->shards[i].mu, NULL);
        rl->shards[i].max_cap = cap;
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < RATELIMIT_SHARDS; i++) {
        pthread_mutex_destroy(&rl->shards[i].mu);
        free(rl->shards[i].slots);
    }
    free(rl);
}

/*
 * Rebuilds shard s with only its live entries (tat > now: not refilled),
 * doubling its capacity when they would fill more than half of it (up to
 * max_cap). Returns false (s unchanged) when out of memory.
 */
static bool shard_rebuild(struct shard *s, int64_t now)
{
    size_t live = 0;
    for (size_t i = 0; i < s->cap; i++)
        live += s->slots[i].hash && s->slots[i].tat > now;
    size_t cap = s->cap ? s->cap : SHARD_START;
    while ((live + 1) * 2 > cap && cap < s->max_cap)
        cap *= 2;
    struct entry *fresh = calloc(cap, sizeof(*fresh));
    if (!fresh)
        return false;
    for (size_t i = 0; i < s->cap; i++) {
        const struct entry *e = &s->slots[i];
        if (!e->hash || e->tat <= now)
            continue;
        size_t j = e->hash & (cap - 1);
        while (fresh[j].hash)
            j = (j + 1) & (cap - 1);
        fresh[j] = *e;
    }
    free(s->slots);
    s->slots = fresh;
    s->cap = cap;
    s->used = live;
    return true;
}

/* The entry of hash in s, or a free one for it (*fresh), or NULL when
 * the shard cannot take another key. */
static struct entry *shard_find(struct shard *s, uint64_t hash, int64_t now, bool *fresh)
{
    for (int pass = 0; pass < 2; pass++) {
        if (s->cap) {
            size_t mask = s->cap - 1, i = hash & mask;
            struct entry *reuse = NULL;
            while (s->slots[i].hash) {
                if (s->slots[i].hash == hash)
                    return &s->slots[i];
                if (!reuse && s->slots[i].tat <= now)
                    reuse = &s->slots[i]; /* refilled: as good as absent */
                i = (i + 1) & mask;
            }
            *fresh = true;
            if (reuse)
                return reuse;
            if ((s->used + 1) * 4 <= s->cap * 3) {
                s->used++;
                return &s->slots[i];
            }
        }
        if (pass == 0 && !shard_rebuild(s, now))
            return NULL;
    }
    return NULL;
}

void ratelimit_take(struct ratelimit *rl, uint64_t key_hash, int64_t now,
                    const struct ratelimit_rate *rate, struct ratelimit_result *res)
{
    struct shard *s = &rl->shards[key_hash >> 58]; /* top bits: the index uses the low ones */
    bool fresh = false;
    pthread_mutex_lock(&s->mu);
    struct entry *e = shard_find(s, key_hash, now, &fresh);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        memset(res, 0, sizeof(*res));
        res->limit = rate->capacity;
        res->retry_after_ns = rate->interval_ns;
        res->table_full = true;
        return;
    }
    if (fresh) {
        e->hash = key_hash;
        e->tat = now;
    }
    ratelimit_step(&e->tat, now, rate, res);
    pthread_mutex_unlock(&s->mu);
}

size_t ratelimit_keys(struct ratelimit *rl)
{
    size_t n = 0;
    for (size_t i = 0; i < RATELIMIT_SHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].mu);
        n += rl->shards[i].used;
        pthread_mutex_unlock(&rl->shards[i].mu);
    }
    return n;
}

size_t ratelimit_bytes(struct ratelimit *rl)
{
    size_t n = sizeof(*rl);
    for (size_t i = 0; i < RATELIMIT_SHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].mu);
        n += rl->shards[i].cap * sizeof(struct entry);
        pthread_mutex_unlock(&rl->shards[i].mu);
    }
    return n;
}

/* ---- tables by route name, for the life of the process ------------------------------- */

struct named {
    struct named *next;
    struct ratelimit *rl;
    char name[];
};

static pthread_mutex_t named_mu = PTHREAD_MUTEX_INITIALIZER;
static struct named *named_list;

struct ratelimit *ratelimit_of_route(const char *name)
{
    struct ratelimit *rl = NULL;
    pthread_mutex_lock(&named_mu);
    for (struct named *n = named_list; n; n = n->next)
        if (strcmp(n->name, name) == 0) {
            rl = n->rl;
            goto out_unlock;
        }
    size_t len = strlen(name);
    struct named *n = malloc(sizeof(*n) + len + 1);
    if (!n)
        goto out_unlock;
    n->rl = ratelimit_new(0);
    if (!n->rl) {
        free(n);
        goto out_unlock;
    }
    memcpy(n->name, name, len + 1);
    n->next = named_list;
    named_list = n;
    rl = n->rl;
out_unlock:
    pthread_mutex_unlock(&named_mu);
    return rl;
}

/* ---- a route's limit for a request ------------------------------------------------------ */

void ratelimit_request(const struct config_route *rt, const struct http1_request *req,
                       const char *client, const char *identity, int64_t now,
                       struct ratelimit_result *res)
{
    struct config_rate_limit *cfg = rt->rate_limit;
    struct ratelimit *rl = __atomic_load_n((struct ratelimit **)&cfg->state_, __ATOMIC_ACQUIRE);
    if (!rl) {
        rl = ratelimit_of_route(rt->name);
        __atomic_store_n((struct ratelimit **)&cfg->state_, rl, __ATOMIC_RELEASE);
    }
    struct ratelimit_rate rate = ratelimit_rate_of(cfg->requests, cfg->per, cfg->burst);
    size_t len;
    const char *key = ratelimit_key(rt, req, client, identity, &len);
    if (!rl) { /* out of memory: refuse rather than let through */
        memset(res, 0, sizeof(*res));
        res->limit = rate.capacity;
        res->retry_after_ns = rate.interval_ns;
        res->table_full = true;
        return;
    }
    ratelimit_take(rl, ratelimit_hash(key, len), now, &rate, res);
}

const char *ratelimit_key(const struct config_route *rt, const struct http1_request *req,
                          const char *client, const char *identity, size_t *out_len)
{
    const struct config_rate_limit *cfg = rt->rate_limit;
    const char *key = "";
    size_t len = 0;
    switch (cfg->key) {
    case CONFIG_RATE_CLIENT_IP:
        key = client ? client : "";
        len = strlen(key);
        break;
    case CONFIG_RATE_HEADER: {
        const struct http1_header *h = http1_header_find(req->headers, req->nheaders, cfg->key_arg);
        if (h) {
            key = h->value;
            len = h->value_len;
        }
        break;
    }
    case CONFIG_RATE_IDENTITY:
        key = identity ? identity : "";
        len = strlen(key);
        break;
    case CONFIG_RATE_CONST:
        key = cfg->key_arg;
        len = cfg->key_arg_len;
        break;
    }
    *out_len = len;
    return key;
}

static uint64_t ceil_seconds(int64_t ns)
{
    return ns <= 0 ? 0 : (uint64_t)((ns + 999999999) / 1000000000);
}

size_t ratelimit_fields(const struct ratelimit_result *res, struct http1_header *out, char *buf)
{
    static const char *const names[] = {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                                        "RateLimit-Reset"};
    uint64_t retry = ceil_seconds(res->retry_after_ns);
    uint64_t v[] = {retry ? retry : 1, res->limit, res->remaining, ceil_seconds(res->reset_ns)};
    size_t used = 0;
    for (size_t i = 0; i < 4; i++) {
        int n = snprintf(buf + used, RATELIMIT_FIELDS_BUF - used, "%llu", (unsigned long long)v[i]);
        out[i] = (struct http1_header){names[i], strlen(names[i]), buf + used, (size_t)n};
        used += (size_t)n + 1;
    }
    return 4;
}
