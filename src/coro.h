/*
 * coro: stackful, asymmetric coroutines on guarded stacks.
 *
 * Owns: the context switch (hand-written for x86_64 and aarch64, ucontext
 * elsewhere or with --with-coro=ucontext), the stacks (mmap with a 64 KiB
 * PROT_NONE guard below each), a per-worker pool of released stacks, each
 * stack's local area for its entry function's state (coro_local),
 * deferred cleanups and the cancellation flag.
 *
 * Calls: nothing of Ferry's. The loop (loop.c) is the only caller of
 * coro_resume(); it opens the "resume gate" around its scheduler pass and
 * coro_resume() asserts the gate is open, so a libevent callback that tries
 * to resume a coroutine directly aborts with a message naming the call.
 *
 * Yields: coro_yield() suspends the calling coroutine; nothing else here
 * does. A coroutine never migrates between threads: its pool, its stack and
 * the thread that resumes it are one worker's.
 *
 * Lifecycle: coro_new() -> (loop) coro_resume() ... coro_yield() ... ->
 * the entry function returns -> deferred cleanups run on the coroutine's own
 * stack, newest first -> coro_done() is true -> coro_release() returns the
 * stack to the pool (or unmaps it when the pool is full).
 */
#ifndef FERRY_CORO_H
#define FERRY_CORO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Stack sizes: the default follows `coroutine_stack: 64k`; sanitizer builds
 * need room for ASan's redzones and UBSan's frames. */
#ifdef FERRY_SANITIZERS
#define CORO_STACK_DEFAULT (256u * 1024u)
#else
#define CORO_STACK_DEFAULT (64u * 1024u)
#endif
#define CORO_STACK_MIN (16u * 1024u)
#define CORO_GUARD_SIZE (64u * 1024u)
/* Pages kept mapped at the top of a released stack (the struct coro and the
 * shallow frames every request touches); the rest is madvise(DONTNEED)ed. */
#define CORO_KEEP_PAGES 2u
/* Few: the defers live in the struct coro, in the top page every waiting
 * coroutine holds (with the local area and the frames down to its await). */
#define CORO_MAX_DEFERS 4
/* A released stack is trimmed when it waited below the kept pages, and in
 * any case every this many releases of its pool. */
#define CORO_TRIM_EVERY 256u
/* Room a local area (coro_local) leaves in the top page for the frames
 * down to a coroutine's await point (1,704 bytes for a request waiting on
 * its upstream on x86_64): an area that would leave less is refused, so
 * that it never pushes a waiting coroutine into a second page (as the
 * ucontext build's larger struct coro would). */
#define CORO_LOCAL_FRAMES 1792u

struct coro;
struct coro_pool;

/*
 * A pool of stacks of one size, for one worker thread. cap is how many
 * released stacks stay mapped for reuse for good; those above it wait for
 * coro_pool_trim. Returns NULL when out of memory.
 */
struct coro_pool *coro_pool_new(size_t stack_size, unsigned cap);
/* Unmaps every pooled stack. Every coroutine of the pool must be released. */
void coro_pool_free(struct coro_pool *pool);
size_t coro_pool_stack_size(const struct coro_pool *pool);
/* Coroutines of this pool created and not yet released. */
unsigned coro_pool_live(const struct coro_pool *pool);
/* Released stacks kept for reuse. */
unsigned coro_pool_idle(const struct coro_pool *pool);

/*
 * Creates a coroutine that will run fn(arg) on its own stack when first
 * resumed. Returns 0 and sets *out, or -ENOMEM / -EAGAIN when the stack
 * cannot be mapped (vm.max_map_count, RLIMIT_AS): the caller turns that into
 * a 503 for one request; Ferry never aborts for it.
 */
int coro_new(struct coro_pool *pool, void (*fn)(void *arg), void *arg, struct coro **out);

/*
 * Switches to the coroutine until it yields or ends. Only the loop's
 * scheduler calls this, with the gate open (coro_resume_gate). Resuming a
 * finished coroutine, the running one, or with the gate closed aborts.
 */
void coro_resume(struct coro *c);
/* Opens (true) or closes (false) this thread's resume gate. loop.c only. */
void coro_resume_gate(bool open);

/* Suspends the running coroutine back to whoever resumed it. Must be called
 * from a coroutine. May yield (it is the yield). */
void coro_yield(void);

/* The running coroutine of this thread, or NULL on the loop's own stack. */
struct coro *coro_current(void);
bool coro_done(const struct coro *c);

/*
 * Registers fn(arg) to run when the running coroutine ends, however it ends
 * (its entry function returns after a cancel just like after success).
 * Defers run newest first, on the coroutine's stack. Returns 0, or -ENOSPC
 * past CORO_MAX_DEFERS. Must be called from a coroutine.
 */
int coro_defer(void (*fn)(void *arg), void *arg);

/*
 * The running coroutine's local area: size bytes (rounded up to 64) right
 * under its struct coro, in the stack's top page, which every coroutine
 * touches anyway and coro_release keeps. The area stays as its last user
 * left it when the stack goes back to the pool and comes out again, so an
 * entry function can keep its per-run state, and the buffers that state
 * owns, there from one coroutine to the next without a malloc. It is
 * zeroed when first handed out on a stack, and fini(area) runs when a
 * stack whose area was handed out is unmapped.
 *
 * The first call on a pool reserves the area for the coroutines created
 * after it (the stack starts below it) and returns NULL, as does a call
 * from a coroutine created before that, or one that would not leave
 * CORO_LOCAL_FRAMES of the top page to the frames under the struct coro
 * and the area: the caller then keeps its state elsewhere
 * (the heap). Must be called from a coroutine. One kind of area per pool:
 * size and fini are checked against the first call's when a stack's area
 * is first handed out (NULL when larger or another), not on later calls.
 */
void *coro_local(size_t size, void (*fini)(void *area));

/*
 * Cooperative cancellation: marks c cancelled and calls its cancel hook
 * (set by the await layer while c waits), which arranges for the pending
 * await to return -ECANCELED. The coroutine unwinds through its own labels.
 * Safe to call from callbacks; never switches stacks.
 */
void coro_cancel(struct coro *c);
bool coro_cancelled(const struct coro *c);
void coro_set_cancel_hook(struct coro *c, void (*hook)(struct coro *c, void *arg), void *arg);

/*
 * Returns a finished coroutine's stack to its pool, with all but the top
 * CORO_KEEP_PAGES pages dropped by madvise. The stack stays mapped even past
 * the pool's cap: unmapping costs a TLB flush per stack (tens of
 * microseconds on a VM), and a burst of thousands of requests that end
 * together would pay it on the path of their own answers. Returns true when
 * the pool holds more idle stacks than its cap, so that the caller trims
 * them later, a few at a time (coro_pool_trim). coro_release(NULL) does
 * nothing and returns false.
 */
bool coro_release(struct coro *c);
/* Unmaps at most max idle stacks above the pool's cap; returns how many
 * remain above it. */
unsigned coro_pool_trim(struct coro_pool *pool, unsigned max);

/*
 * Per-coroutine slots for the two layers above: the run queue link and
 * flags belong to loop.c, the current wait record to io.c. Nothing else
 * reads them.
 */
struct coro_slots {
    struct coro *run_next;
    bool queued;    /* on the run queue */
    bool ready;     /* woken since it last yielded: the scheduler resumes it */
    void *loop;     /* struct loop * that owns it */
    void *wait;     /* io.c: the wait record it is suspended on */
    bool signalled; /* io.c: io_signal() not yet consumed */
};
struct coro_slots *coro_slots(struct coro *c);

/*
 * Installs, once per process, the SIGSEGV handler that reports a stack
 * overflow into a guard region ("coroutine stack overflow ... raise
 * coroutine_stack") and aborts, and gives the calling thread an alternate
 * signal stack. Every worker thread calls it. A no-op under ASan, which
 * reports overflows itself.
 */
int coro_thread_init(void);

/* Bytes of the coroutine's stack currently touched (resident), for reports. */
size_t coro_stack_resident(const struct coro *c);

#endif
