/*
 * Unit tests for ratelimit (Check): the token-bucket math over an injected
 * clock (a full bucket admits requests + burst at once, then one request
 * per interval; remaining and reset; the 429 fields), the shared table
 * (keys independent; a million keys within 64 bytes each; drained buckets
 * never evicted, refilled ones reused; exact across threads) and the
 * rate_limit config keys.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "config.h"
#include "ratelimit.h"

#define SEC 1000000000LL

START_TEST(full_bucket_then_rate)
{
    /* 10 per second, burst 5: 15 at once, then one per 100 ms */
    struct ratelimit_rate rate = ratelimit_rate_of(10, 1000, 5);
    ck_assert_int_eq(rate.interval_ns, 100000000);
    ck_assert_uint_eq(rate.capacity, 15);
    int64_t tat = 0, now = 1000 * SEC;
    struct ratelimit_result res;
    for (int i = 0; i < 15; i++) {
        ratelimit_step(&tat, now, &rate, &res);
        ck_assert(res.allowed);
        ck_assert_uint_eq(res.remaining, 14 - i);
        ck_assert_uint_eq(res.limit, 15);
    }
    ratelimit_step(&tat, now, &rate, &res);
    ck_assert(!res.allowed);
    ck_assert_uint_eq(res.remaining, 0);
    ck_assert_int_eq(res.retry_after_ns, 100000000);
    ck_assert_int_eq(res.reset_ns, 15 * 100000000LL);
    /* a refusal takes nothing: 99 ms later still none, at 100 ms one */
    ratelimit_step(&tat, now + 99000000, &rate, &res);
    ck_assert(!res.allowed);
    ck_assert_int_eq(res.retry_after_ns, 1000000);
    ratelimit_step(&tat, now + 100000000, &rate, &res);
    ck_assert(res.allowed);
    ck_assert_uint_eq(res.remaining, 0);
    ratelimit_step(&tat, now + 100000000, &rate, &res);
    ck_assert(!res.allowed);
    /* quiet for long: full again, never more than full */
    ratelimit_step(&tat, now + 3600 * SEC, &rate, &res);
    ck_assert(res.allowed);
    ck_assert_uint_eq(res.remaining, 14);
}
END_TEST

/* Requests every millisecond for 10 s: capacity + rate x T, exactly. */
START_TEST(admitted_over_time)
{
    struct ratelimit_rate rate = ratelimit_rate_of(50, 1000, 20);
    int64_t tat = 0, start = 5 * SEC;
    unsigned admitted = 0;
    struct ratelimit_result res;
    for (int64_t t = 0; t < 10 * SEC; t += SEC / 1000) {
        ratelimit_step(&tat, start + t, &rate, &res);
        admitted += res.allowed;
    }
    /* 70 at t = 0, then one per 20 ms from t = 20 ms to 9.98 s: 499 */
    ck_assert_uint_eq(admitted, 70 + 499);
}
END_TEST

START_TEST(slow_rates_and_bounds)
{
    /* 1 per hour: the interval is exact; a huge burst saturates */
    struct ratelimit_rate rate = ratelimit_rate_of(1, 3600 * 1000, 0);
    ck_assert_int_eq(rate.interval_ns, 3600 * SEC);
    int64_t tat = 0;
    struct ratelimit_result res;
    ratelimit_step(&tat, SEC, &rate, &res);
    ck_assert(res.allowed);
    ratelimit_step(&tat, SEC, &rate, &res);
    ck_assert(!res.allowed);
    ck_assert_int_eq(res.retry_after_ns, 3600 * SEC);
    rate = ratelimit_rate_of(1, 86400000, 1000000000);
    tat = 0;
    for (int i = 0; i < 1000; i++) {
        ratelimit_step(&tat, SEC, &rate, &res);
        ck_assert(res.allowed);
    }
}
END_TEST

START_TEST(fields_of_a_refusal)
{
    struct ratelimit_result res = {.allowed = false,
                                   .limit = 15,
                                   .remaining = 0,
                                   .retry_after_ns = 100000000,
                                   .reset_ns = 1500000001};
    struct http1_header f[4];
    char buf[RATELIMIT_FIELDS_BUF];
    ck_assert_uint_eq(ratelimit_fields(&res, f, buf), 4);
    const char *want[4][2] = {{"Retry-After", "1"},
                              {"RateLimit-Limit", "15"},
                              {"RateLimit-Remaining", "0"},
                              {"RateLimit-Reset", "2"}};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(f[i].name, want[i][0]);
        ck_assert_uint_eq(f[i].value_len, strlen(want[i][1]));
        ck_assert(memcmp(f[i].value, want[i][1], f[i].value_len) == 0);
    }
}
END_TEST

static uint64_t key_hash(unsigned i)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
    return ratelimit_hash(k, (size_t)n);
}

START_TEST(keys_independent)
{
    struct ratelimit *rl = ratelimit_new(0);
    struct ratelimit_rate rate = ratelimit_rate_of(2, 1000, 0);
    struct ratelimit_result res;
    for (unsigned k = 0; k < 100; k++) {
        for (int i = 0; i < 2; i++) {
            ratelimit_take(rl, key_hash(k), SEC, &rate, &res);
            ck_assert(res.allowed);
        }
        ratelimit_take(rl, key_hash(k), SEC, &rate, &res);
        ck_assert(!res.allowed);
        ck_assert(!res.table_full);
    }
    ck_assert_uint_eq(ratelimit_keys(rl), 100);
    ck_assert(ratelimit_hash("a", 1) != ratelimit_hash("b", 1));
    ck_assert(ratelimit_hash("", 0) != 0);
    ratelimit_free(rl);
}
END_TEST

/* A million keys, each drained (1 per minute, no burst): all kept, and
 * the table costs at most 64 bytes a key. */
START_TEST(million_keys_bytes_per_key)
{
    struct ratelimit *rl = ratelimit_new(0);
    struct ratelimit_rate rate = ratelimit_rate_of(1, 60000, 0);
    struct ratelimit_result res;
    const unsigned n = 1000000;
    for (unsigned k = 0; k < n; k++) {
        ratelimit_take(rl, key_hash(k), SEC, &rate, &res);
        ck_assert(res.allowed);
    }
    ck_assert_uint_eq(ratelimit_keys(rl), n);
    double per_key = (double)ratelimit_bytes(rl) / n;
    printf("ratelimit: %u keys, %zu bytes, %.1f bytes per key\n", n, ratelimit_bytes(rl), per_key);
    ck_assert(per_key <= 64.0);
    /* none was evicted: each key is still drained */
    for (unsigned k = 0; k < n; k += 997) {
        ratelimit_take(rl, key_hash(k), SEC + 1, &rate, &res);
        ck_assert(!res.allowed);
    }
    ratelimit_free(rl);
}
END_TEST

/* A table full of drained buckets refuses a new key rather than evict one
 * (key churn must not reset a limit); once they refill, new keys reuse
 * their room and the table stays within its bound. */
START_TEST(only_refilled_buckets_evicted)
{
    struct ratelimit *rl = ratelimit_new(1000);
    struct ratelimit_rate rate = ratelimit_rate_of(1, 1000, 0);
    struct ratelimit_result res;
    unsigned k = 0, refused = 0;
    for (; k < 100000 && !refused; k++) {
        ratelimit_take(rl, key_hash(k), SEC, &rate, &res);
        refused += !res.allowed;
    }
    ck_assert_uint_eq(refused, 1);
    ck_assert(res.table_full);
    /* Keys spread over 64 shards by a keyed hash: the first refusal comes
     * when the fullest shard is full, before the table as a whole is
     * (seen: 831 to 1,000 held of 1,000). */
    size_t held = ratelimit_keys(rl);
    ck_assert_uint_ge(held, 700);
    /* every drained key is still held and still refused */
    for (unsigned j = 0; j + 1 < k; j++) {
        ratelimit_take(rl, key_hash(j), SEC, &rate, &res);
        ck_assert(!res.allowed);
        ck_assert(!res.table_full);
    }
    /* One second later they have refilled: 50,000 new keys fit in turn.
     * Only the current second's keys are live, and a shard holds 24 (3/4
     * of 32): at 500 new keys a second (7.8 a shard on average, the hash
     * keyed at random per process) a shard got 25 in about one run of 200,
     * and the test failed; at 200 a second (3.1 a shard) that is below
     * 1e-10 a run. */
    for (unsigned j = 0; j < 50000; j++) {
        int64_t now = 2 * SEC + (int64_t)(j / 200) * SEC; /* 200 new keys a second */
        ratelimit_take(rl, key_hash(200000 + j), now, &rate, &res);
        ck_assert(res.allowed);
    }
    ck_assert_uint_le(ratelimit_bytes(rl), 64 * 1000); /* 64 bytes a key of its bound */
    ck_assert_uint_le(ratelimit_keys(rl), 64 * 32);
    ratelimit_free(rl);
}
END_TEST

struct hammer {
    struct ratelimit *rl;
    const struct ratelimit_rate *rate;
    unsigned admitted;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct ratelimit_result res;
    for (int i = 0; i < 200000; i++) {
        /* time moves on by 1 us per call in each thread: 0.2 s in all */
        ratelimit_take(h->rl, ratelimit_hash("shared", 6), SEC + (int64_t)i * 1000, h->rate, &res);
        h->admitted += res.allowed;
    }
    return NULL;
}

/* Four threads on one key: exactly capacity + rate x T between them. */
START_TEST(exact_across_threads)
{
    struct ratelimit *rl = ratelimit_new(0);
    struct ratelimit_rate rate = ratelimit_rate_of(1000, 1000, 100); /* 1 per ms */
    struct hammer h[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){rl, &rate, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    unsigned total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += h[i].admitted;
    }
    /* the clock reaches 0.199999 s: 1100 at once, then 199 more (one
     * thread's clock may lag the others', never exceeding the bucket) */
    ck_assert_uint_le(total, 1100 + 200);
    ck_assert_uint_ge(total, 1100 + 199);
    ratelimit_free(rl);
}
END_TEST

static struct config *load(const char *yaml, FILE *err)
{
    struct config *cfg = NULL;
    int rc = config_load_string("t.yaml", yaml, strlen(yaml), &cfg, err);
    return rc == 0 ? cfg : NULL;
}

#define BASE                                                                                       \
    "listen: [{address: 127.0.0.1:8080}]\nupstreams:\n  api:\n    servers: [{address: "            \
    "127.0.0.1:9000}]\n"                                                                           \
    "routes:\n  - name: r\n    upstream: api\n"

START_TEST(config_keys)
{
    struct config *cfg =
        load(BASE "    rate_limit: { requests: 100, per: 1m, burst: 20, key: header:X-Api-Key }\n",
             stderr);
    ck_assert_ptr_nonnull(cfg);
    const struct config_rate_limit *rl = cfg->routes[0].rate_limit;
    ck_assert_ptr_nonnull(rl);
    ck_assert_uint_eq(rl->requests, 100);
    ck_assert_int_eq(rl->per, 60000);
    ck_assert_uint_eq(rl->burst, 20);
    ck_assert_int_eq(rl->key, CONFIG_RATE_HEADER);
    ck_assert_str_eq(rl->key_arg, "X-Api-Key");
    config_unref(cfg);

    cfg = load(BASE "    rate_limit: { requests: 5 }\n", stderr);
    ck_assert_ptr_nonnull(cfg);
    rl = cfg->routes[0].rate_limit;
    ck_assert_int_eq(rl->per, 1000);
    ck_assert_uint_eq(rl->burst, 0);
    ck_assert_int_eq(rl->key, CONFIG_RATE_CLIENT_IP);
    config_unref(cfg);

    cfg = load(BASE "    rate_limit: { requests: 5, key: \"const:all\" }\n", stderr);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_int_eq(cfg->routes[0].rate_limit->key, CONFIG_RATE_CONST);
    ck_assert_str_eq(cfg->routes[0].rate_limit->key_arg, "all");
    config_unref(cfg);
}
END_TEST

static void expect_error(const char *yaml, const char *want)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&buf, &len);
    struct config *cfg = load(yaml, err);
    fclose(err);
    ck_assert_msg(cfg == NULL, "loaded: %s", yaml);
    ck_assert_msg(strstr(buf, want) != NULL, "%s\ndoes not say: %s", buf, want);
    free(buf);
}

START_TEST(config_errors)
{
    expect_error(BASE "    rate_limit: { per: 1s }\n", "rate_limit.requests: a rate limit needs");
    expect_error(BASE "    rate_limit: { requests: 0 }\n",
                 "t.yaml:8:29: routes[0].rate_limit.requests");
    expect_error(BASE "    rate_limit: { requests: 5, per: 0s }\n", "rate_limit.per");
    expect_error(BASE "    rate_limit: { requests: 5, key: client-ip }\n",
                 "expected client_ip, identity, header:NAME or const:TEXT");
    expect_error(BASE "    rate_limit: { requests: 5, key: \"header:X Y\" }\n", "header:NAME");
    expect_error(BASE "    rate_limit: { requests: 5, key: identity }\n",
                 "identity needs auth: on the route");
    expect_error(BASE "    rate_limit: { requests: 5, brust: 3 }\n", "did you mean \"burst\"");
    expect_error(BASE "    rate_limit: 5\n", "a mapping (requests, per, burst, key)");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, full_bucket_then_rate);
    tcase_add_test(tc, admitted_over_time);
    tcase_add_test(tc, slow_rates_and_bounds);
    tcase_add_test(tc, fields_of_a_refusal);
    tcase_add_test(tc, keys_independent);
    tcase_add_test(tc, million_keys_bytes_per_key);
    tcase_add_test(tc, only_refilled_buckets_evicted);
    tcase_add_test(tc, exact_across_threads);
    tcase_add_test(tc, config_keys);
    tcase_add_test(tc, config_errors);
    suite_add_tcase(s, tc);
    return check_run(s);
}
