/*
 * evmem: see evmem.h.
 */
#include "evmem.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define EVMEM_MIN_SHIFT 10u /* 1 KiB */
#define EVMEM_CLASSES 8u    /* 1 KiB .. 128 KiB */
#define EVMEM_HDR 16u       /* keeps malloc's 16-byte alignment */
#define EVMEM_UNCACHED UINT32_MAX

struct hdr {
    uint32_t cls; /* size class, or EVMEM_UNCACHED */
    uint32_t pad[3];
};
_Static_assert(sizeof(struct hdr) == EVMEM_HDR, "header keeps alignment");

struct free_block {
    struct free_block *next;
};

static __thread struct free_block *lists[EVMEM_CLASSES];
static __thread unsigned counts[EVMEM_CLASSES];
static __thread bool registered;

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static size_t class_bytes(uint32_t cls)
{
    return (size_t)1 << (EVMEM_MIN_SHIFT + cls);
}

/* The class whose blocks hold total bytes (header included), or
 * EVMEM_UNCACHED. */
static uint32_t class_of(size_t total)
{
    if (total <= class_bytes(0) / 2 || total > class_bytes(EVMEM_CLASSES - 1))
        return EVMEM_UNCACHED; /* glibc's tcache serves the small ones */
    uint32_t cls = 0;
    while (class_bytes(cls) < total)
        cls++;
    return cls;
}

void evmem_flush(void)
{
    for (unsigned c = 0; c < EVMEM_CLASSES; c++) {
        while (lists[c]) {
            struct free_block *b = lists[c];
            lists[c] = b->next;
            free(b);
        }
        counts[c] = 0;
    }
}

static void on_thread_exit(void *unused)
{
    (void)unused;
    evmem_flush();
}

static void make_key(void)
{
    (void)pthread_key_create(&exit_key, on_thread_exit);
}

void *evmem_malloc(size_t n)
{
    if (n > SIZE_MAX - EVMEM_HDR)
        return NULL;
    uint32_t cls = class_of(n + EVMEM_HDR);
    struct hdr *h;
    if (cls != EVMEM_UNCACHED && lists[cls]) {
        struct free_block *b = lists[cls];
        lists[cls] = b->next;
        counts[cls]--;
        h = (struct hdr *)b;
    } else {
        h = malloc(cls == EVMEM_UNCACHED ? n + EVMEM_HDR : class_bytes(cls));
        if (!h)
            return NULL;
    }
    h->cls = cls;
    return (char *)h + EVMEM_HDR;
}

void evmem_free(void *p)
{
    if (!p)
        return;
    struct hdr *h = (struct hdr *)((char *)p - EVMEM_HDR);
    uint32_t cls = h->cls;
    if (cls == EVMEM_UNCACHED || counts[cls] >= EVMEM_CACHE_BYTES / class_bytes(cls)) {
        free(h);
        return;
    }
    if (!registered) {
        /* Give the cache back when this thread ends. */
        pthread_once(&exit_once, make_key);
        registered = pthread_setspecific(exit_key, &registered) == 0;
        if (!registered) {
            free(h);
            return;
        }
    }
    struct free_block *b = (struct free_block *)h;
    b->next = lists[cls];
    lists[cls] = b;
    counts[cls]++;
}

void *evmem_realloc(void *p, size_t n)
{
    if (!p)
        return evmem_malloc(n);
    struct hdr *h = (struct hdr *)((char *)p - EVMEM_HDR);
    if (h->cls == EVMEM_UNCACHED) {
        if (n > SIZE_MAX - EVMEM_HDR)
            return NULL;
        struct hdr *nh = realloc(h, n + EVMEM_HDR);
        return nh ? (char *)nh + EVMEM_HDR : NULL;
    }
    size_t have = class_bytes(h->cls) - EVMEM_HDR;
    if (n <= have)
        return p;
    void *q = evmem_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, have);
    evmem_free(p);
    return q;
}

size_t evmem_cached(void)
{
    size_t n = 0;
    for (unsigned c = 0; c < EVMEM_CLASSES; c++)
        n += counts[c];
    return n;
}

#if defined(__SANITIZE_ADDRESS__)
#define EVMEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVMEM_ASAN 1
#endif
#endif

void evmem_install(void)
{
#ifndef EVMEM_ASAN
    event_set_mem_functions(evmem_malloc, evmem_realloc, evmem_free);
#endif
}
