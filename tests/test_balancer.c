/*
 * Unit tests for balancer (Check): a pure module, no sockets.
 *
 * round_robin: smooth weighted round robin respects weights exactly over a
 * cycle and over many picks, spreads picks, skips servers marked tried,
 * and shares by weight among the rest while one is ejected. Every
 * balancer respects weights within 2 % (relative to each server's share)
 * over 100,000 picks; least_conn prefers the least loaded relative to
 * weight and breaks ties by round robin; random_two never picks the one
 * server far more loaded than the others; hash (Maglev) over 100,000 keys
 * from a fixed seed moves about 1/N of keys when one of N servers leaves
 * and 1/(N+1) when one joins (within 3 points), and a skipped (ejected)
 * server moves its own keys only. Skipped servers are never chosen.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "balancer.h"

#define PICKS 100000

START_TEST(weights_exact_over_cycles)
{
    const uint32_t w[] = {5, 1, 1, 3};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_ROUND_ROBIN, w, NULL, 4, 1), 0);
    unsigned count[4] = {0};
    for (int i = 0; i < 10 * 100; i++) {
        int k = balancer_next(&b, NULL, NULL, 0, false);
        ck_assert_int_ge(k, 0);
        ck_assert_int_lt(k, 4);
        count[k]++;
    }
    for (int k = 0; k < 4; k++)
        ck_assert_uint_eq(count[k], w[k] * 100);
    balancer_fini(&b);
}
END_TEST

START_TEST(smooth_spread)
{
    /* 5,1,1 gives a a b a c a a: never more than 3 of a in a row there */
    const uint32_t w[] = {5, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_ROUND_ROBIN, w, NULL, 3, 1), 0);
    char seq[8] = {0};
    for (int i = 0; i < 7; i++)
        seq[i] = (char)('a' + balancer_next(&b, NULL, NULL, 0, false));
    ck_assert_str_eq(seq, "aabacaa");
    balancer_fini(&b);
}
END_TEST

START_TEST(skips_tried)
{
    const uint32_t w[] = {1, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_ROUND_ROBIN, w, NULL, 3, 1), 0);
    bool skip[3] = {true, false, true};
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(balancer_next(&b, skip, NULL, 0, false), 1);
    skip[1] = true;
    ck_assert_int_eq(balancer_next(&b, skip, NULL, 0, false), -1);
    /* Skipping does not skew the others' shares afterwards. */
    unsigned count[3] = {0};
    for (int i = 0; i < 300; i++)
        count[balancer_next(&b, NULL, NULL, 0, false)]++;
    for (int k = 0; k < 3; k++)
        ck_assert_uint_ge(count[k], 95);
    balancer_fini(&b);
}
END_TEST

START_TEST(ejected_server_others_keep_their_ratio)
{
    /* A server skipped for a long stretch (ejected, as upstream_pick marks
     * it) gets nothing; the others share exactly by their weights. */
    const uint32_t w[] = {3, 2, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_ROUND_ROBIN, w, NULL, 3, 1), 0);
    const bool skip[3] = {true, false, false};
    unsigned count[3] = {0};
    for (int i = 0; i < 3 * 1000; i++)
        count[balancer_next(&b, skip, NULL, 0, false)]++;
    ck_assert_uint_eq(count[0], 0);
    ck_assert_uint_eq(count[1], 2000);
    ck_assert_uint_eq(count[2], 1000);
    /* Back in service: its weight counts again over full cycles. */
    unsigned back[3] = {0};
    for (int i = 0; i < 6 * 1000; i++)
        back[balancer_next(&b, NULL, NULL, 0, false)]++;
    ck_assert_uint_ge(back[0], 3000 - 6);
    ck_assert_uint_le(back[0], 3000 + 6);
    balancer_fini(&b);
}
END_TEST

START_TEST(large_weights_over_many_picks)
{
    const uint32_t w[] = {1000, 1, 10};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_ROUND_ROBIN, w, NULL, 3, 1), 0);
    unsigned count[3] = {0};
    for (int i = 0; i < 1011 * 50; i++)
        count[balancer_next(&b, NULL, NULL, 0, false)]++;
    ck_assert_uint_eq(count[0], 50000);
    ck_assert_uint_eq(count[1], 50);
    ck_assert_uint_eq(count[2], 500);
    balancer_fini(&b);
}
END_TEST

static const char *const NAMES[] = {"10.0.0.1:80", "10.0.0.2:80",  "10.0.0.3:80", "10.0.0.4:80",
                                    "10.0.0.5:80", "10.0.0.6:80",  "10.0.0.7:80", "10.0.0.8:80",
                                    "10.0.0.9:80", "10.0.0.10:80", "10.0.0.11:80"};

/* The i-th key of a fixed pseudo-random sequence (xorshift, seed 42),
 * hashed as the proxy hashes a header value. */
static uint64_t key_of(unsigned i)
{
    static uint64_t keys[PICKS];
    static bool made;
    if (!made) {
        uint64_t x = 42;
        for (unsigned k = 0; k < PICKS; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char s[32];
            int n = snprintf(s, sizeof s, "user-%llu", (unsigned long long)(x % 100000000));
            keys[k] = balancer_hash(s, (size_t)n);
        }
        made = true;
    }
    return keys[i];
}

static const enum balancer_kind KINDS[] = {BALANCER_ROUND_ROBIN, BALANCER_LEAST_CONN,
                                           BALANCER_RANDOM_TWO, BALANCER_HASH};
static const char *const KIND_NAMES[] = {"round_robin", "least_conn", "random_two", "hash"};

/* Every balancer: each server's share of 100,000 picks (no load: each
 * request ends before the next; hash: 100,000 distinct keys) is its
 * weight's share within 2 % of that share. */
START_TEST(weights_every_balancer)
{
    const uint32_t w[] = {5, 1, 3, 1};
    const uint64_t inflight[4] = {0};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, KINDS[_i], w, NAMES, 4, 7), 0);
    unsigned count[4] = {0};
    for (unsigned i = 0; i < PICKS; i++) {
        int k = balancer_next(&b, NULL, inflight, key_of(i), true);
        ck_assert_int_ge(k, 0);
        ck_assert_int_lt(k, 4);
        count[k]++;
    }
    for (int k = 0; k < 4; k++) {
        double want = (double)w[k] / 10.0, got = (double)count[k] / PICKS;
        double dev = (got - want) / want;
        printf("%s: server %d weight %u: %.4f of picks (want %.4f, %+.2f %%)\n", KIND_NAMES[_i], k,
               w[k], got, want, 100 * dev);
        ck_assert_msg(dev < 0.02 && dev > -0.02, "%s: server %d: share %.4f, want %.4f",
                      KIND_NAMES[_i], k, got, want);
    }
    balancer_fini(&b);
}
END_TEST

/* Skipped servers are never chosen, by any balancer; all skipped: -1. */
START_TEST(skips_every_balancer)
{
    const uint32_t w[] = {1, 2, 1, 1};
    uint64_t inflight[4] = {9, 0, 0, 0};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, KINDS[_i], w, NAMES, 4, 3), 0);
    bool skip[4] = {false, true, false, true};
    unsigned count[4] = {0};
    for (unsigned i = 0; i < 1000; i++)
        count[balancer_next(&b, skip, NULL, key_of(i), true)]++;
    ck_assert_uint_eq(count[1] + count[3], 0);
    ck_assert_uint_gt(count[0], 0);
    ck_assert_uint_gt(count[2], 0);
    if (KINDS[_i] == BALANCER_LEAST_CONN || KINDS[_i] == BALANCER_RANDOM_TWO)
        for (unsigned i = 0; i < 100; i++) /* 0 is loaded, 2 is not */
            ck_assert_int_eq(balancer_next(&b, skip, inflight, key_of(i), true), 2);
    bool all[4] = {true, true, true, true};
    ck_assert_int_eq(balancer_next(&b, all, inflight, 1, true), -1);
    balancer_fini(&b);
}
END_TEST

START_TEST(least_conn_load_and_ties)
{
    const uint32_t w[] = {2, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_LEAST_CONN, w, NAMES, 3, 1), 0);
    /* 4/2 = 2 > 1: the two others, turn by turn */
    uint64_t inflight[3] = {4, 1, 1};
    char seq[7] = {0};
    for (int i = 0; i < 6; i++)
        seq[i] = (char)('a' + balancer_next(&b, NULL, inflight, 0, false));
    ck_assert_str_eq(seq, "bcbcbc");
    /* 2/2 == 1/1 < 3/1: a and b tie, by round robin with their weights */
    inflight[0] = 2;
    inflight[2] = 3;
    unsigned count[3] = {0};
    for (int i = 0; i < 300; i++)
        count[balancer_next(&b, NULL, inflight, 0, false)]++;
    ck_assert_uint_eq(count[0], 200);
    ck_assert_uint_eq(count[1], 100);
    ck_assert_uint_eq(count[2], 0);
    balancer_fini(&b);
}
END_TEST

START_TEST(random_two_avoids_the_loaded)
{
    const uint32_t w[] = {1, 1, 1, 1};
    uint64_t inflight[4] = {50, 3, 4, 5};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_RANDOM_TWO, w, NAMES, 4, 99), 0);
    unsigned count[4] = {0};
    for (int i = 0; i < 10000; i++)
        count[balancer_next(&b, NULL, inflight, 0, false)]++;
    ck_assert_uint_eq(count[0], 0); /* it loses every comparison */
    ck_assert_uint_gt(count[1], count[2]);
    ck_assert_uint_gt(count[2], count[3]);
    ck_assert_uint_gt(count[3], 0);
    balancer_fini(&b);
}
END_TEST

/* The fraction of PICKS keys that map to different servers in a and b,
 * where a's server i is b's map[i] (-1: gone). */
static double moved(struct balancer *a, struct balancer *b, const int *map)
{
    unsigned n = 0;
    for (unsigned i = 0; i < PICKS; i++) {
        int x = balancer_next(a, NULL, NULL, key_of(i), true);
        int y = balancer_next(b, NULL, NULL, key_of(i), true);
        if (map[x] != y)
            n++;
    }
    return (double)n / PICKS;
}

/* Maglev: one of N servers removed moves about 1/N of keys, one added
 * about 1/(N+1): within 3 points, for N from 3 to 10. */
START_TEST(hash_consistent_remove_add)
{
    static const uint32_t w[11] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (size_t n = 3; n <= 10; n++) {
        struct balancer full, less, more;
        const char *names_less[11];
        int map_less[11], map_same[11];
        size_t gone = n / 2, j = 0;
        for (size_t i = 0; i < n; i++) {
            map_same[i] = (int)i;
            map_less[i] = i == gone ? -1 : (int)j;
            if (i != gone)
                names_less[j++] = NAMES[i];
        }
        ck_assert_int_eq(balancer_init(&full, BALANCER_HASH, w, NAMES, n, 1), 0);
        ck_assert_int_eq(balancer_init(&less, BALANCER_HASH, w, names_less, n - 1, 1), 0);
        ck_assert_int_eq(balancer_init(&more, BALANCER_HASH, w, NAMES, n + 1, 1), 0);
        double rm = moved(&full, &less, map_less), add = moved(&full, &more, map_same);
        printf("hash: %zu servers: removing one moves %.2f %% of keys (1/N = %.2f %%), adding "
               "one %.2f %% (1/(N+1) = %.2f %%)\n",
               n, 100 * rm, 100.0 / (double)n, 100 * add, 100.0 / (double)(n + 1));
        ck_assert_msg(rm > 1.0 / (double)n - 0.03 && rm < 1.0 / (double)n + 0.03,
                      "%zu servers: removing one moved %.4f", n, rm);
        ck_assert_msg(add > 1.0 / (double)(n + 1) - 0.03 && add < 1.0 / (double)(n + 1) + 0.03,
                      "%zu servers: adding one moved %.4f", n, add);
        balancer_fini(&full);
        balancer_fini(&less);
        balancer_fini(&more);
    }
}
END_TEST

/* A skipped (ejected) server's keys go elsewhere; no other key moves. */
START_TEST(hash_skip_moves_only_its_keys)
{
    const uint32_t w[] = {1, 1, 1, 1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_HASH, w, NAMES, 5, 1), 0);
    bool skip[5] = {false, false, true, false, false};
    unsigned own = 0, others = 0, spread[5] = {0};
    for (unsigned i = 0; i < PICKS; i++) {
        int x = balancer_next(&b, NULL, NULL, key_of(i), true);
        int y = balancer_next(&b, skip, NULL, key_of(i), true);
        ck_assert_int_ne(y, 2);
        if (x == 2) {
            own++;
            spread[y]++;
        } else if (x != y) {
            others++;
        }
    }
    ck_assert_uint_eq(others, 0);
    for (int k = 0; k < 5; k++)
        if (k != 2)
            ck_assert_uint_gt(spread[k], own / 8); /* spread over all, not one */
    balancer_fini(&b);
}
END_TEST

/* Entries of the Maglev table each server owns. */
static void table_shares(const struct balancer *b, unsigned *count)
{
    memset(count, 0, b->n * sizeof(*count));
    for (uint32_t e = 0; e < BALANCER_MAGLEV_SIZE; e++)
        count[b->table[e]]++;
}

static const char **many_names(size_t n)
{
    static char buf[200][32];
    static const char *names[200];
    for (size_t i = 0; i < n; i++) {
        snprintf(buf[i], sizeof(buf[i]), "10.1.%zu.%zu:80", i / 250, i % 250 + 1);
        names[i] = buf[i];
    }
    return names;
}

/* Large weights: each server owns its weight's share of the table (the
 * last round cut short by a full table must not take a turn's worth from
 * the servers late in the order), also when the weights add up to more
 * than the table. */
START_TEST(hash_large_weights_fair_shares)
{
    static const size_t ns[] = {100, 128};
    static const uint32_t ws[] = {500, 1000};
    for (size_t t = 0; t < 2; t++) {
        size_t n = ns[t];
        uint32_t *w = malloc(n * sizeof(*w));
        for (size_t i = 0; i < n; i++)
            w[i] = ws[t];
        struct balancer b;
        ck_assert_int_eq(balancer_init(&b, BALANCER_HASH, w, many_names(n), n, 1), 0);
        unsigned count[200];
        table_shares(&b, count);
        unsigned lo = UINT32_MAX, hi = 0;
        for (size_t i = 0; i < n; i++) {
            lo = count[i] < lo ? count[i] : lo;
            hi = count[i] > hi ? count[i] : hi;
        }
        printf("hash: %zu servers of weight %u: %u to %u entries each (%.1f fair)\n", n, ws[t], lo,
               hi, (double)BALANCER_MAGLEV_SIZE / (double)n);
        ck_assert_msg(hi - lo <= 1, "%zu servers of weight %u: %u to %u entries", n, ws[t], lo, hi);
        balancer_fini(&b);
        free(w);
    }
}
END_TEST

/* A server that owns no entry (a weight far below the others') is still
 * chosen when every server that owns entries is skipped: the walk ends. */
START_TEST(hash_server_without_entries_still_chosen)
{
    uint32_t w[101];
    for (size_t i = 0; i < 100; i++)
        w[i] = 1000;
    w[100] = 1;
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_HASH, w, many_names(101), 101, 1), 0);
    bool skip[101];
    for (size_t i = 0; i < 101; i++)
        skip[i] = i < 100;
    for (unsigned i = 0; i < 1000; i++)
        ck_assert_int_eq(balancer_next(&b, skip, NULL, key_of(i), true), 100);
    balancer_fini(&b);
}
END_TEST

START_TEST(hash_without_key_round_robin)
{
    const uint32_t w[] = {1, 1};
    struct balancer b;
    ck_assert_int_eq(balancer_init(&b, BALANCER_HASH, w, NAMES, 2, 1), 0);
    ck_assert_int_eq(balancer_next(&b, NULL, NULL, 0, false), 0);
    ck_assert_int_eq(balancer_next(&b, NULL, NULL, 0, false), 1);
    ck_assert_int_eq(balancer_next(&b, NULL, NULL, 0, false), 0);
    balancer_fini(&b);
}
END_TEST

START_TEST(cookie_values)
{
    const char *v;
    size_t l;
    const char h[] = "a=1; sid = \"xyz\" ;session=abc;;  empty=; noeq; sid2=q";
    ck_assert(balancer_cookie(h, strlen(h), "session", &v, &l));
    ck_assert_int_eq((int)l, 3);
    ck_assert(memcmp(v, "abc", 3) == 0);
    ck_assert(balancer_cookie(h, strlen(h), "sid", &v, &l));
    ck_assert_int_eq((int)l, 3);
    ck_assert(memcmp(v, "xyz", 3) == 0);
    ck_assert(balancer_cookie(h, strlen(h), "a", &v, &l));
    ck_assert(l == 1 && *v == '1');
    ck_assert(balancer_cookie(h, strlen(h), "empty", &v, &l));
    ck_assert_int_eq((int)l, 0);
    ck_assert(!balancer_cookie(h, strlen(h), "noeq", &v, &l));
    ck_assert(!balancer_cookie(h, strlen(h), "sess", &v, &l));
    ck_assert(!balancer_cookie(h, strlen(h), "q", &v, &l));
    ck_assert(!balancer_cookie("", 0, "a", &v, &l));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("balancer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, weights_exact_over_cycles);
    tcase_add_test(tc, smooth_spread);
    tcase_add_test(tc, skips_tried);
    tcase_add_test(tc, ejected_server_others_keep_their_ratio);
    tcase_add_test(tc, large_weights_over_many_picks);
    tcase_add_loop_test(tc, weights_every_balancer, 0, (int)CHECK_NELEMS(KINDS));
    tcase_add_loop_test(tc, skips_every_balancer, 0, (int)CHECK_NELEMS(KINDS));
    tcase_add_test(tc, least_conn_load_and_ties);
    tcase_add_test(tc, random_two_avoids_the_loaded);
    tcase_add_test(tc, hash_consistent_remove_add);
    tcase_add_test(tc, hash_skip_moves_only_its_keys);
    tcase_add_test(tc, hash_large_weights_fair_shares);
    tcase_add_test(tc, hash_server_without_entries_still_chosen);
    tcase_add_test(tc, hash_without_key_round_robin);
    tcase_add_test(tc, cookie_values);
    suite_add_tcase(s, tc);
    return check_run(s);
}
