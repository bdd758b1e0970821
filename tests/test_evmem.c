/*
 * Unit tests for evmem: libevent's allocator with per-thread caches.
 */
#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "check_helpers.h"
#include "evmem.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif

START_TEST(freed_block_is_reused_for_its_class)
{
    evmem_flush();
    ck_assert_uint_eq(evmem_cached(), 0);
    char *a = evmem_malloc(8000); /* within an eighth below 8 KiB: an 8 KiB block */
    ck_assert_ptr_nonnull(a);
    memset(a, 0xab, 8000);
    evmem_free(a);
    ck_assert_uint_eq(evmem_cached(), 1);
    char *b = evmem_malloc(8192); /* libevent's sizes are powers of two */
    ck_assert_ptr_eq(b, a);
    ck_assert_uint_eq(evmem_cached(), 0);
    memset(b, 0xcd, 8192);
    char *c = evmem_malloc(16000); /* a 16 KiB block */
    ck_assert_ptr_nonnull(c);
    memset(c, 0xef, 16000);
    evmem_free(b);
    evmem_free(c);
    ck_assert_uint_eq(evmem_cached(), 2);
    ck_assert_ptr_eq(evmem_malloc(7200), b);
    ck_assert_ptr_eq(evmem_malloc(15000), c);
    ck_assert_uint_eq(evmem_cached(), 0);
    evmem_free(b);
    evmem_free(c);
    /* Far from a class (a 5,000-byte object): malloc's own size, not
     * rounded up, and not kept when freed. */
    char *d = evmem_malloc(5000);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_ne(d, b);
    ck_assert_ptr_ne(d, c);
    ck_assert_uint_lt(malloc_usable_size(d), 8192);
    evmem_free(d);
    ck_assert_uint_eq(evmem_cached(), 2);
    evmem_flush();
}
END_TEST

START_TEST(small_and_huge_pass_through)
{
    evmem_flush();
    void *small = evmem_malloc(200);
    void *huge = evmem_malloc(256 * 1024);
    ck_assert_ptr_nonnull(small);
    ck_assert_ptr_nonnull(huge);
    ck_assert_uint_eq(((uintptr_t)small) % 16, 0);
    ck_assert_uint_eq(((uintptr_t)huge) % 16, 0);
    evmem_free(small);
    evmem_free(huge);
    ck_assert_uint_eq(evmem_cached(), 0);
    evmem_free(NULL);
    ck_assert_uint_eq(evmem_cached(), 0);
}
END_TEST

START_TEST(realloc_keeps_bytes)
{
    evmem_flush();
    unsigned char *p = evmem_realloc(NULL, 100);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 100; i++)
        p[i] = (unsigned char)i;
    /* malloc's realloc: the bytes move along. (Sizes at a class: ASan's
     * malloc_usable_size is the size asked, glibc's a little more.) */
    p = evmem_realloc(p, 4096);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(p[i], (unsigned)i);
    for (int i = 100; i < 4096; i++)
        p[i] = (unsigned char)(i * 7);
    evmem_free(p); /* 4 KiB usable: the 4 KiB class */
    ck_assert_uint_eq(evmem_cached(), 1);
    ck_assert_ptr_eq(evmem_malloc(4096), p);
    free(p);

    unsigned char *q = evmem_malloc(1900); /* within an eighth of 2 KiB: a 2 KiB block */
    for (int i = 0; i < 1500; i++)
        q[i] = (unsigned char)(i * 3);
    ck_assert_ptr_eq(evmem_realloc(q, 2000), q); /* still fits its block */
    ck_assert_ptr_eq(evmem_realloc(q, 2048), q);
    ck_assert_ptr_eq(evmem_realloc(q, 10), q);
    unsigned char *r = evmem_realloc(q, 70000);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < 1500; i++)
        ck_assert_uint_eq(r[i], (unsigned char)(i * 3));
    ck_assert_uint_eq(evmem_cached(), 0); /* a live block is never cached */
    evmem_free(r);                        /* 70,000 usable bytes serve the 64 KiB class */
    ck_assert_uint_eq(evmem_cached(), 1);
    ck_assert_ptr_eq(evmem_malloc(65536), r);
    evmem_free(r);
    void *big = evmem_malloc(65537); /* the 128 KiB class: not r */
    ck_assert_ptr_ne(big, r);
    evmem_free(big);
    evmem_flush();
}
END_TEST

START_TEST(cache_is_bounded_per_class)
{
    evmem_flush();
    size_t cap = EVMEM_CACHE_BYTES / (16 * 1024);
    size_t n = cap + 10;
    void **blocks = calloc(n, sizeof(*blocks));
    ck_assert_ptr_nonnull(blocks);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = evmem_malloc(16384);
        ck_assert_ptr_nonnull(blocks[i]);
    }
    for (size_t i = 0; i < n; i++)
        evmem_free(blocks[i]);
    ck_assert_uint_eq(evmem_cached(), cap);
    free(blocks);
}
END_TEST

static void *thread_frees(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < 8; i++)
        evmem_free(blocks[i]);
    return (void *)(uintptr_t)evmem_cached();
}

START_TEST(a_block_freed_on_another_thread_joins_that_threads_cache)
{
    evmem_flush();
    void *blocks[8];
    for (int i = 0; i < 8; i++)
        blocks[i] = evmem_malloc(2000);
    pthread_t t;
    void *ret;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_frees, blocks), 0);
    ck_assert_int_eq(pthread_join(t, &ret), 0);
    ck_assert_uint_eq((uintptr_t)ret, 8); /* held there, given back at its exit */
    ck_assert_uint_eq(evmem_cached(), 0);
}
END_TEST

START_TEST(libevent_chains_come_from_the_cache)
{
#ifdef ASAN
    /* evmem_install() is a no-op under ASan: nothing to observe. */
    evmem_install();
#else
    evmem_flush();
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    char data[3000];
    memset(data, 'x', sizeof(data));
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(evbuffer_add(b, data, sizeof(data)), 0);
        ck_assert_uint_eq(evbuffer_get_length(b), sizeof(data));
        size_t before = evmem_cached();
        ck_assert_int_eq(evbuffer_drain(b, sizeof(data)), 0);
        /* The drained chain went back to this thread's cache. */
        ck_assert_uint_eq(evmem_cached(), before + 1);
    }
    evbuffer_free(b);

    /* libevent sizes chains in powers of two (3,000 bytes + its chain
     * header: 4 KiB); such a chain takes a 4 KiB block, not the next
     * class up. */
    evmem_flush();
    void *p = evmem_malloc(4096);
    evmem_free(p);
    ck_assert_uint_eq(evmem_cached(), 1);
    b = evbuffer_new();
    ck_assert_int_eq(evbuffer_add(b, data, sizeof(data)), 0);
    ck_assert_uint_eq(evmem_cached(), 0);
    evbuffer_free(b);
#endif
}
END_TEST

int main(void)
{
    /* Before any libevent allocation, as the daemon does. */
    evmem_install();
    Suite *s = suite_create("evmem");
    TCase *tc = tcase_create("cache");
    tcase_add_test(tc, freed_block_is_reused_for_its_class);
    tcase_add_test(tc, small_and_huge_pass_through);
    tcase_add_test(tc, realloc_keeps_bytes);
    tcase_add_test(tc, cache_is_bounded_per_class);
    tcase_add_test(tc, a_block_freed_on_another_thread_joins_that_threads_cache);
    tcase_add_test(tc, libevent_chains_come_from_the_cache);
    suite_add_tcase(s, tc);
    return check_run(s);
}
