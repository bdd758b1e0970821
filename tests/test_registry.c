/*
 * Unit tests for registry (Check): one entry per upstream name + server
 * address for the whole process, whatever the thread that asks first;
 * its fields as the workers use them (relaxed atomics from several
 * threads add up); drains counted; a health reset leaves the rest.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "registry.h"

#define THREADS 4
#define SERVERS 32
#define ROUNDS 20000

static struct registry_server *seen[THREADS][SERVERS];

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    char addr[32];
    for (unsigned s = 0; s < SERVERS; s++) {
        /* each thread asks in its own order: creations race */
        unsigned k = (s * 7 + t * 5) % SERVERS;
        snprintf(addr, sizeof(addr), "10.0.0.%u:80", k);
        seen[t][k] = registry_server("api", addr);
    }
    for (unsigned i = 0; i < ROUNDS; i++) {
        struct registry_server *rs = seen[t][i % SERVERS];
        REGISTRY_ADD(&rs->inflight, 1);
        REGISTRY_ADD(&rs->fails, 1);
        REGISTRY_SUB(&rs->inflight, 1);
    }
    return NULL;
}

START_TEST(one_entry_per_key_across_threads)
{
    pthread_t th[THREADS];
    for (unsigned t = 0; t < THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t), 0);
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (unsigned s = 0; s < SERVERS; s++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%u:80", s);
        struct registry_server *rs = registry_server_find("api", addr);
        ck_assert_ptr_nonnull(rs);
        for (unsigned t = 0; t < THREADS; t++)
            ck_assert_ptr_eq(seen[t][s], rs);
        ck_assert_uint_eq(REGISTRY_LOAD(&rs->inflight), 0);
        ck_assert_uint_eq(REGISTRY_LOAD(&rs->fails), THREADS * ROUNDS / SERVERS);
        ck_assert_ptr_eq(rs->up, seen[0][0]->up); /* one upstream entry */
        ck_assert((uintptr_t)rs % 64 == 0);       /* a cache line of its own */
    }
    /* the key is name + address: another upstream, another entry */
    ck_assert_ptr_ne(registry_server("web", "10.0.0.1:80"), registry_server("api", "10.0.0.1:80"));
    ck_assert_ptr_null(registry_server_find("api", "10.0.0.1:8"));
    ck_assert_ptr_null(registry_server_find("ap", "i\0"));
    registry_free();
}
END_TEST

START_TEST(drains_and_health_reset)
{
    struct registry_server *a = registry_server("api", "a:1");
    ck_assert(!registry_any_drained());
    ck_assert_int_eq(registry_set_drained("api", "a:1", true), 0);
    ck_assert_int_eq(registry_set_drained("api", "a:1", true), 0); /* counted once */
    ck_assert(registry_drained(a));
    ck_assert(registry_any_drained());
    /* a drain set before any config names the server: the same entry later */
    ck_assert_int_eq(registry_set_drained("api", "b:2", true), 0);
    ck_assert(registry_drained(registry_server("api", "b:2")));
    ck_assert_int_eq(registry_set_drained("api", "a:1", false), 0);
    ck_assert(registry_any_drained());
    ck_assert_int_eq(registry_set_drained("api", "b:2", false), 0);
    ck_assert(!registry_any_drained());
    ck_assert(!registry_drained(NULL));
    /* health starts over; ejection and in-flight counts stay */
    a->ejected_until = 123;
    a->ejections = 2;
    a->health_passes = 5;
    a->checked = 1;
    registry_health_reset(a, true);
    ck_assert_uint_eq(a->down, 1);
    ck_assert_uint_eq(a->checked, 0);
    ck_assert_uint_eq(a->health_passes, 0);
    ck_assert_int_eq(a->ejected_until, 123);
    ck_assert_uint_eq(a->ejections, 2);
    registry_free();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, one_entry_per_key_across_threads);
    tcase_add_test(tc, drains_and_health_reset);
    suite_add_tcase(s, tc);
    return check_run(s);
}
