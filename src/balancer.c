/* balancer: see balancer.h. */
#include "balancer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint64_t balancer_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    /* FNV's low bits mix poorly for short keys: murmur3's finaliser. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/*
 * Fills the Maglev table: server i's permutation is offset_i + j * step_i
 * (mod M, a prime, so every step visits every entry). Turns interleave by
 * weight (weighted Maglev): in each round every server adds its weight to
 * its credit and claims the next free entry of its permutation when the
 * credit reaches the largest weight, so a server of the largest weight
 * takes one entry a round and the others in proportion, within one entry
 * of their share however large the weights. (Whole runs of weight_i
 * turns per round left the servers late in the order a turn short when
 * the table filled mid-round: with 100 servers of weight 500, half owned
 * 500 entries and half 1000.) Equal weights take one entry each a round,
 * as with weight 1. Returns 0 or -ENOMEM.
 */
static int maglev_fill(struct balancer *b, const char *const *names)
{
    const uint32_t m = BALANCER_MAGLEV_SIZE;
    uint32_t *pos = malloc(b->n * sizeof(*pos));
    uint32_t *step = malloc(b->n * sizeof(*step));
    uint64_t *credit = calloc(b->n, sizeof(*credit));
    b->table = malloc(m * sizeof(*b->table));
    if (!pos || !step || !credit || !b->table) {
        free(pos);
        free(step);
        free(credit);
        return -ENOMEM;
    }
    uint32_t wmax = 1;
    for (size_t i = 0; i < b->n; i++) {
        uint64_t h = balancer_hash(names[i], strlen(names[i]));
        pos[i] = (uint32_t)(h % m);
        step[i] = (uint32_t)((h >> 32) % (m - 1)) + 1;
        if (b->weights[i] > wmax)
            wmax = b->weights[i];
    }
    memset(b->table, 0xff, m * sizeof(*b->table));
    uint32_t filled = 0;
    while (filled < m) {
        for (size_t i = 0; i < b->n && filled < m; i++) {
            credit[i] += b->weights[i];
            if (credit[i] < wmax)
                continue;
            credit[i] -= wmax;
            while (b->table[pos[i]] != UINT32_MAX)
                pos[i] = (uint32_t)(((uint64_t)pos[i] + step[i]) % m);
            b->table[pos[i]] = (uint32_t)i;
            filled++;
        }
    }
    free(pos);
    free(step);
    free(credit);
    return 0;
}

int balancer_init(struct balancer *b, enum balancer_kind kind, const uint32_t *weights,
                  const char *const *names, size_t n, uint64_t seed)
{
    memset(b, 0, sizeof(*b));
    b->kind = kind;
    b->n = n;
    b->weights = weights;
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    b->current = calloc(n ? n : 1, sizeof(*b->current));
    b->scratch = calloc(n ? n : 1, sizeof(*b->scratch));
    if (!b->current || !b->scratch)
        goto out_fini;
    if (kind == BALANCER_HASH && n > 0 && maglev_fill(b, names) != 0)
        goto out_fini;
    return 0;

out_fini:
    balancer_fini(b);
    return -ENOMEM;
}

void balancer_fini(struct balancer *b)
{
    free(b->current);
    free(b->scratch);
    free(b->table);
    b->current = NULL;
    b->scratch = NULL;
    b->table = NULL;
}

/* Smooth weighted round robin over the servers not in skip. */
static int round_robin(struct balancer *b, const bool *skip)
{
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (skip && skip[i])
            continue;
        b->current[i] += b->weights[i];
        total += b->weights[i];
        if (best < 0 || b->current[i] > b->current[best])
            best = (int)i;
    }
    if (best >= 0)
        b->current[best] -= total;
    return best;
}

/* Is a's load (inflight / weight) below b's? Compared without division. */
static int load_cmp(const struct balancer *b, const uint64_t *inflight, size_t x, size_t y)
{
    unsigned __int128 lx = (unsigned __int128)inflight[x] * b->weights[y];
    unsigned __int128 ly = (unsigned __int128)inflight[y] * b->weights[x];
    return lx < ly ? -1 : lx > ly;
}

static int least_conn(struct balancer *b, const bool *skip, const uint64_t *inflight)
{
    if (!inflight)
        return round_robin(b, skip);
    int best = -1;
    for (size_t i = 0; i < b->n; i++)
        if (!(skip && skip[i]) && (best < 0 || load_cmp(b, inflight, i, (size_t)best) < 0))
            best = (int)i;
    if (best < 0)
        return -1;
    for (size_t i = 0; i < b->n; i++)
        b->scratch[i] = (skip && skip[i]) || load_cmp(b, inflight, i, (size_t)best) != 0;
    return round_robin(b, b->scratch);
}

static uint64_t next_random(struct balancer *b)
{
    uint64_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

/* A server drawn in proportion to weight among those not skipped nor
 * `other` (total: their weight sum, > 0). */
static size_t weighted_draw(struct balancer *b, const bool *skip, size_t other, uint64_t total)
{
    uint64_t r = next_random(b) % total;
    size_t last = 0;
    for (size_t i = 0; i < b->n; i++) {
        if ((skip && skip[i]) || i == other)
            continue;
        last = i;
        if (r < b->weights[i])
            return i;
        r -= b->weights[i];
    }
    return last;
}

static int random_two(struct balancer *b, const bool *skip, const uint64_t *inflight)
{
    uint64_t total = 0;
    size_t up = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!(skip && skip[i])) {
            total += b->weights[i];
            up++;
        }
    }
    if (up == 0)
        return -1;
    size_t x = weighted_draw(b, skip, SIZE_MAX, total);
    if (up == 1)
        return (int)x;
    size_t y = weighted_draw(b, skip, x, total - b->weights[x]);
    if (inflight && load_cmp(b, inflight, y, x) < 0)
        return (int)y;
    return (int)x;
}

static int hashed(struct balancer *b, const bool *skip, uint64_t key)
{
    bool any = !skip;
    for (size_t i = 0; i < b->n && !any; i++)
        any = !skip[i];
    if (!any)
        return -1;
    uint32_t e = (uint32_t)(key % BALANCER_MAGLEV_SIZE);
    for (uint32_t walked = 0; walked < BALANCER_MAGLEV_SIZE; walked++) {
        uint32_t s = b->table[e];
        if (!skip || !skip[s])
            return (int)s;
        e = e + 1 == BALANCER_MAGLEV_SIZE ? 0 : e + 1;
    }
    /* Every server left owns no entry (weights far below the others'):
     * the walk went round the table. Round robin among them. */
    return round_robin(b, skip);
}

int balancer_next(struct balancer *b, const bool *skip, const uint64_t *inflight, uint64_t key,
                  bool has_key)
{
    if (b->n == 1)
        return skip && skip[0] ? -1 : 0;
    switch (b->kind) {
    case BALANCER_LEAST_CONN:
        return least_conn(b, skip, inflight);
    case BALANCER_RANDOM_TWO:
        return random_two(b, skip, inflight);
    case BALANCER_HASH:
        if (has_key)
            return hashed(b, skip, key);
        return round_robin(b, skip);
    case BALANCER_ROUND_ROBIN:
    default:
        return round_robin(b, skip);
    }
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool balancer_cookie(const char *header, size_t len, const char *name, const char **val,
                     size_t *vlen)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(header[i]) || header[i] == ';'))
            i++;
        size_t start = i;
        while (i < len && header[i] != ';')
            i++;
        size_t end = i;
        while (end > start && is_ows(header[end - 1]))
            end--;
        const char *eq = memchr(header + start, '=', end - start);
        if (!eq)
            continue;
        size_t klen = (size_t)(eq - (header + start));
        while (klen > 0 && is_ows(header[start + klen - 1]))
            klen--;
        if (klen != nlen || memcmp(header + start, name, nlen) != 0)
            continue;
        const char *v = eq + 1;
        size_t l = (size_t)(header + end - v);
        while (l > 0 && is_ows(*v)) {
            v++;
            l--;
        }
        if (l >= 2 && v[0] == '"' && v[l - 1] == '"') {
            v++;
            l -= 2;
        }
        *val = v;
        *vlen = l;
        return true;
    }
    return false;
}
