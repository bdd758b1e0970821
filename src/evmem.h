/*
 * evmem: libevent's memory, with the sizes a request churns kept in
 * per-thread caches.
 *
 * libevent frees an evbuffer chain as soon as it is drained, so every
 * request allocates and frees a chain per read and per written head: on a
 * keep-alive request two of them are 8 KiB (io's smallest read, 4 KiB,
 * plus the chain's header), past glibc's per-thread cache (tcache holds
 * blocks up to 1 KiB), and cost ~1,000 instructions in
 * _int_malloc/_int_free. evmem_install() hands libevent an allocator that
 * keeps freed blocks of a power of two from 1 KiB to 128 KiB (up to an
 * eighth more) on the freeing thread's list, up to EVMEM_CACHE_BYTES per
 * class, and serves from them the requests of such a size (up to an eighth
 * less, rounded up); every other size (an evbuffer or an event, a few
 * hundred bytes; tiny or huge chains) goes to malloc as asked and is never
 * kept. Blocks are malloc's own, without a header (a block's class is read
 * off malloc_usable_size), so a block freed on another thread simply joins
 * that thread's cache and memory looks as it would without the cache. A
 * thread's cache goes back to malloc when the thread exits.
 *
 * Not installed in AddressSanitizer builds: ASan must see every libevent
 * free to catch a use after it.
 *
 * Calls: malloc, libevent. Nothing here yields.
 */
#ifndef FERRY_EVMEM_H
#define FERRY_EVMEM_H

#include <stddef.h>

/* Bytes each thread keeps per size class. */
#define EVMEM_CACHE_BYTES ((size_t)512 * 1024)

/* Installs the allocator with event_set_mem_functions(). Call before the
 * first libevent call (libevent must free only what it allocated). */
void evmem_install(void);

/* The allocator itself (what libevent is given), for tests. */
void *evmem_malloc(size_t n);
void *evmem_realloc(void *p, size_t n);
void evmem_free(void *p);
/* Gives the calling thread's cache back to malloc (done for each thread
 * when it exits). */
void evmem_flush(void);
/* Blocks the calling thread's cache holds now. */
size_t evmem_cached(void);

#endif
