/*
 * evmem: see evmem.h.
 *
 * Blocks are plain malloc blocks: no header of ours, so memory looks as it
 * would without evmem. A freed block's class is read off its usable size
 * (malloc_usable_size): the largest class it can hold. A block on class
 * c's list holds at least class_bytes(c), which is all a request for that
 * class needs.
 */
#include "evmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/event.h>

#define EVMEM_MIN_SHIFT 10u /* 1 KiB */
#define EVMEM_CLASSES 8u    /* 1 KiB .. 128 KiB */
#define EVMEM_UNCACHED UINT32_MAX

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

/* A size within an eighth above a class's size belongs to it. */
static bool near_class(size_t n, uint32_t cls)
{
    return n >= class_bytes(cls) && n - class_bytes(cls) <= class_bytes(cls) / 8;
}

/* The class a request of n bytes is served from, or EVMEM_UNCACHED.
 * Only sizes at (or just below, rounded up by at most an eighth) a class
 * are: libevent's chains are powers of two, while its other objects (an
 * evbuffer or an event, a few hundred bytes) keep their exact malloc size. */
static uint32_t class_for_request(size_t n)
{
    if (n < class_bytes(0) - class_bytes(0) / 8 || n > class_bytes(EVMEM_CLASSES - 1))
        return EVMEM_UNCACHED; /* glibc's tcache serves the small ones */
    /* The smallest class holding n: ceil(log2 n), at least the first. */
    unsigned bits = 64u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
    uint32_t cls = bits > EVMEM_MIN_SHIFT ? bits - EVMEM_MIN_SHIFT : 0;
    return n >= class_bytes(cls) - class_bytes(cls) / 8 ? cls : EVMEM_UNCACHED;
}

/* The class a freed block of usable size u can serve without wasting more
 * than an eighth of it, or EVMEM_UNCACHED. */
static uint32_t class_of_block(size_t u)
{
    if (u < class_bytes(0))
        return EVMEM_UNCACHED;
    uint32_t cls = (uint32_t)(63 - __builtin_clzll((unsigned long long)u)) - EVMEM_MIN_SHIFT;
    return cls < EVMEM_CLASSES && near_class(u, cls) ? cls : EVMEM_UNCACHED;
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
    uint32_t cls = class_for_request(n);
    if (cls != EVMEM_UNCACHED && lists[cls]) {
        struct free_block *b = lists[cls];
        lists[cls] = b->next;
        counts[cls]--;
        return b;
    }
    /* A class's full size, so that the block serves the class again. */
    return malloc(cls == EVMEM_UNCACHED ? n : class_bytes(cls));
}

void evmem_free(void *p)
{
    if (!p)
        return;
    uint32_t cls = class_of_block(malloc_usable_size(p));
    if (cls == EVMEM_UNCACHED || counts[cls] >= EVMEM_CACHE_BYTES / class_bytes(cls)) {
        free(p);
        return;
    }
    if (!registered) {
        /* Give the cache back when this thread ends. */
        pthread_once(&exit_once, make_key);
        registered = pthread_setspecific(exit_key, &registered) == 0;
        if (!registered) {
            free(p);
            return;
        }
    }
    struct free_block *b = p;
    b->next = lists[cls];
    lists[cls] = b;
    counts[cls]++;
}

void *evmem_realloc(void *p, size_t n)
{
    if (!p)
        return evmem_malloc(n);
    if (n && n <= malloc_usable_size(p))
        return p;
    return realloc(p, n); /* a live block: never on a list */
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
