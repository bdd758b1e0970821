/*
 * coro: see coro.h for the contract.
 *
 * Memory layout of one coroutine, a single mmap of guard + stack:
 *
 *   low   [ guard: CORO_GUARD_SIZE, PROT_NONE ][ stack ...... | local | struct coro ]  high
 *
 * The struct coro lives at the top of its own stack mapping, so creating a
 * coroutine is one mmap (two VMAs once the guard is mprotected) and the
 * struct's page is always among the top pages kept on release. The local
 * area (coro_local) sits right under it, in the same page, and the stack
 * starts under that: the page a waiting coroutine holds anyway holds the
 * entry function's state too, and it stays with the stack in the pool.
 */
#include "coro.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef FERRY_CORO_UCONTEXT
#include <ucontext.h>
#endif
#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif

#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* Misuse of the API is a bug in Ferry: say which call, then abort. */
#define CORO_CHECK(cond, call, what)                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            coro_misuse(call, what);                                                               \
    } while (0)

enum coro_state {
    CORO_READY,     /* created, never resumed */
    CORO_SUSPENDED, /* yielded */
    CORO_RUNNING,
    CORO_DONE,
};

struct coro_defer_entry {
    void (*fn)(void *arg);
    void *arg;
};

struct coro {
    struct coro_slots slots; /* first: loop.c and io.c use them on every wake */
#ifdef FERRY_CORO_UCONTEXT
    ucontext_t ctx;
    ucontext_t *caller_ctx;
#else
    void *sp;        /* saved stack pointer while suspended */
    void *caller_sp; /* the resumer's, while running */
#endif
    struct coro_pool *pool;
    struct coro *next_free;
    void (*fn)(void *arg);
    void *arg;
    enum coro_state state;
    bool cancelled;
    unsigned ndefers;
    void (*cancel_hook)(struct coro *c, void *arg);
    void *cancel_arg;
    struct coro_defer_entry defers[CORO_MAX_DEFERS];
    char *map;        /* start of the mapping (guard) */
    size_t map_size;  /* guard + stack */
    char *stack_low;  /* lowest usable stack byte (just above the guard) */
    char *stack_high; /* where the stack starts (under the local area, or this struct) */
    char *low_water;  /* lowest frame seen at a yield since coro_new */
    char *local;      /* the entry's area (coro_local): between the stack and this struct */
    bool local_init;  /* local was handed out (zeroed) on this stack: fini it at unmap */
#ifdef HAVE_VALGRIND_VALGRIND_H
    unsigned valgrind_id;
#endif
#ifdef CORO_ASAN
    void *asan_fake_stack; /* the coroutine's fake stack while suspended */
    const void *caller_bottom;
    size_t caller_size;
#endif
};

struct coro_pool {
    size_t stack_size; /* usable bytes, including the struct coro at the top */
    unsigned cap;
    unsigned idle;
    unsigned live;
    unsigned releases;
    struct coro *free;
    size_t local_size; /* reserved under the struct coro of coroutines from now on */
    void (*local_fini)(void *area);
};

static __thread struct coro *current;
static __thread bool resume_gate;
static size_t page_size;

static void coro_misuse(const char *call, const char *what)
{
    fprintf(stderr, "ferry: BUG: %s: %s\n", call, what);
    abort();
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* ---- the context switch ---------------------------------------------------- */

#ifndef FERRY_CORO_UCONTEXT
/*
 * coro_switch(save, to): saves the callee-saved registers on the current
 * stack, stores the stack pointer in *save, loads `to` and pops the
 * registers saved there, returning into the other context. No signal mask,
 * no FPU state beyond what the ABI makes callee-saved.
 */
void coro_switch(void **save, void *to);
/* First frame of a new coroutine: calls entry(coro) from registers set up
 * by stack_init(); entry never returns. */
void coro_trampoline(void);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl coro_switch\n"
        ".type coro_switch,@function\n"
        ".hidden coro_switch\n"
        "coro_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size coro_switch,.-coro_switch\n"
        ".globl coro_trampoline\n"
        ".type coro_trampoline,@function\n"
        ".hidden coro_trampoline\n"
        "coro_trampoline:\n"
        "    movq %r12, %rdi\n"
        "    callq *%r13\n"
        "    ud2\n"
        ".size coro_trampoline,.-coro_trampoline\n");

/* Initial frame popped by the first coro_switch into the coroutine:
 * r15 r14 r13(entry) r12(coro) rbx rbp, then the return address. After the
 * ret, %rsp is 16-byte aligned, as the trampoline's call needs. */
static void *stack_init(char *top, void (*entry)(struct coro *), struct coro *c)
{
    uintptr_t t = (uintptr_t)top & ~(uintptr_t)15;
    void **sp = (void **)(t - 72);
    sp[0] = NULL;          /* r15 */
    sp[1] = NULL;          /* r14 */
    sp[2] = (void *)entry; /* r13 */
    sp[3] = c;             /* r12 */
    sp[4] = NULL;          /* rbx */
    sp[5] = NULL;          /* rbp */
    sp[6] = (void *)coro_trampoline;
    sp[7] = NULL; /* fake return address of the trampoline's frame */
    return sp;
}
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl coro_switch\n"
        ".type coro_switch,%function\n"
        ".hidden coro_switch\n"
        "coro_switch:\n"
        "    sub sp, sp, #176\n"
        "    stp x19, x20, [sp, #0]\n"
        "    stp x21, x22, [sp, #16]\n"
        "    stp x23, x24, [sp, #32]\n"
        "    stp x25, x26, [sp, #48]\n"
        "    stp x27, x28, [sp, #64]\n"
        "    stp x29, x30, [sp, #80]\n"
        "    stp d8, d9, [sp, #96]\n"
        "    stp d10, d11, [sp, #112]\n"
        "    stp d12, d13, [sp, #128]\n"
        "    stp d14, d15, [sp, #144]\n"
        "    mov x9, sp\n"
        "    str x9, [x0]\n"
        "    mov sp, x1\n"
        "    ldp x19, x20, [sp, #0]\n"
        "    ldp x21, x22, [sp, #16]\n"
        "    ldp x23, x24, [sp, #32]\n"
        "    ldp x25, x26, [sp, #48]\n"
        "    ldp x27, x28, [sp, #64]\n"
        "    ldp x29, x30, [sp, #80]\n"
        "    ldp d8, d9, [sp, #96]\n"
        "    ldp d10, d11, [sp, #112]\n"
        "    ldp d12, d13, [sp, #128]\n"
        "    ldp d14, d15, [sp, #144]\n"
        "    add sp, sp, #176\n"
        "    ret\n"
        ".size coro_switch,.-coro_switch\n"
        ".globl coro_trampoline\n"
        ".type coro_trampoline,%function\n"
        ".hidden coro_trampoline\n"
        "coro_trampoline:\n"
        "    mov x0, x19\n"
        "    blr x20\n"
        "    brk #0\n"
        ".size coro_trampoline,.-coro_trampoline\n");

/* Initial frame: x19 = coro, x20 = entry, x30 (lr) = trampoline, x29 = 0. */
static void *stack_init(char *top, void (*entry)(struct coro *), struct coro *c)
{
    uintptr_t t = (uintptr_t)top & ~(uintptr_t)15;
    void **sp = (void **)(t - 176);
    memset(sp, 0, 176);
    sp[0] = c;                        /* x19 */
    sp[1] = (void *)entry;            /* x20 */
    sp[10] = NULL;                    /* x29 */
    sp[11] = (void *)coro_trampoline; /* x30 */
    return sp;
}
#else
#error "no assembly context switch for this CPU: configure --with-coro=ucontext"
#endif
#endif /* !FERRY_CORO_UCONTEXT */

/* ---- sanitizer and valgrind hooks ------------------------------------------------ */

#ifdef CORO_ASAN
#define ASAN_START(fake_save, bottom, size) __sanitizer_start_switch_fiber(fake_save, bottom, size)
#define ASAN_FINISH(fake, bottom_old, size_old)                                                    \
    __sanitizer_finish_switch_fiber(fake, bottom_old, size_old)
#else
#define ASAN_START(fake_save, bottom, size) ((void)0)
#define ASAN_FINISH(fake, bottom_old, size_old) ((void)0)
#endif

/* ---- running a coroutine ---------------------------------------------------- */

static void run_defers(struct coro *c)
{
    while (c->ndefers > 0) {
        struct coro_defer_entry *d = &c->defers[--c->ndefers];
        d->fn(d->arg);
    }
}

/* Switches from the coroutine back to its resumer. last: the coroutine has
 * ended and will never run again (ASan may drop its fake stack). */
static void switch_out(struct coro *c, bool last)
{
#ifdef CORO_ASAN
    ASAN_START(last ? NULL : &c->asan_fake_stack, c->caller_bottom, c->caller_size);
#else
    (void)last;
#endif
#ifdef FERRY_CORO_UCONTEXT
    swapcontext(&c->ctx, c->caller_ctx);
#else
    coro_switch(&c->sp, c->caller_sp);
#endif
    /* resumed again */
    ASAN_FINISH(c->asan_fake_stack, &c->caller_bottom, &c->caller_size);
}

static void coro_entry(struct coro *c)
{
    ASAN_FINISH(NULL, &c->caller_bottom, &c->caller_size);
    c->fn(c->arg);
    run_defers(c);
    c->state = CORO_DONE;
    current = NULL;
    switch_out(c, true);
    coro_misuse("coro_resume", "a finished coroutine was resumed");
}

#ifdef FERRY_CORO_UCONTEXT
/* makecontext passes int arguments only: the pointer comes in two halves. */
static void ucontext_entry(unsigned hi, unsigned lo)
{
    uintptr_t p = ((uintptr_t)hi << 32) | (uintptr_t)lo;
    coro_entry((struct coro *)p);
}
#endif

void coro_resume_gate(bool open)
{
    resume_gate = open;
}

void coro_resume(struct coro *c)
{
    CORO_CHECK(resume_gate, "coro_resume",
               "called outside the loop's scheduler (callbacks must use loop_wake)");
    CORO_CHECK(current == NULL, "coro_resume", "called from inside a coroutine");
    CORO_CHECK(c->state == CORO_READY || c->state == CORO_SUSPENDED, "coro_resume",
               c->state == CORO_DONE ? "the coroutine has finished" : "the coroutine is running");
    c->state = CORO_RUNNING;
    current = c;
#ifdef CORO_ASAN
    void *fake = NULL;
    ASAN_START(&fake, c->stack_low, (size_t)(c->stack_high - c->stack_low));
#endif
#ifdef FERRY_CORO_UCONTEXT
    ucontext_t here;
    c->caller_ctx = &here;
    swapcontext(&here, &c->ctx);
#else
    coro_switch(&c->caller_sp, c->sp);
#endif
    /* The coroutine cleared `current` before it switched back (yield or
     * end): nothing to do here, so the switch is a tail call. */
    ASAN_FINISH(fake, NULL, NULL);
}

void coro_yield(void)
{
    struct coro *c = current;
    CORO_CHECK(c != NULL, "coro_yield", "called outside a coroutine");
    char *frame = __builtin_frame_address(0);
    if (frame < c->low_water)
        c->low_water = frame;
    c->state = CORO_SUSPENDED;
    current = NULL;
    /* coro_resume() set `current` and the state before switching back in. */
    switch_out(c, false);
}

struct coro *coro_current(void)
{
    return current;
}

bool coro_done(const struct coro *c)
{
    return c->state == CORO_DONE;
}

int coro_defer(void (*fn)(void *arg), void *arg)
{
    struct coro *c = current;
    CORO_CHECK(c != NULL, "coro_defer", "called outside a coroutine");
    if (c->ndefers == CORO_MAX_DEFERS)
        return -ENOSPC;
    c->defers[c->ndefers].fn = fn;
    c->defers[c->ndefers].arg = arg;
    c->ndefers++;
    return 0;
}

void coro_cancel(struct coro *c)
{
    if (c->state == CORO_DONE || c->cancelled)
        return;
    c->cancelled = true;
    if (c->cancel_hook)
        c->cancel_hook(c, c->cancel_arg);
}

bool coro_cancelled(const struct coro *c)
{
    return c->cancelled;
}

void coro_set_cancel_hook(struct coro *c, void (*hook)(struct coro *c, void *arg), void *arg)
{
    c->cancel_hook = hook;
    c->cancel_arg = arg;
}

/* coro_local's first call on a stack: reserves the pool's area if it has
 * none yet, clears this stack's. */
static void *local_first(struct coro *c, size_t size, void (*fini)(void *area))
{
    struct coro_pool *pool = c->pool;
    size = round_up(size, 64);
    if (!pool->local_size) {
        /* The struct coro, the area and the frames down to the await stay
         * within the top page, which coro_release keeps. */
        size_t coro_size = (size_t)(c->map + c->map_size - (char *)c);
        if (coro_size + size + CORO_LOCAL_FRAMES > page_size || size > pool->stack_size / 4)
            return NULL;
        pool->local_size = size;
        pool->local_fini = fini;
    }
    if (!c->local || size > pool->local_size || fini != pool->local_fini)
        return NULL;
#ifdef CORO_ASAN
    /* Frames of the stack's earlier coroutines may have left it poisoned. */
    __asan_unpoison_memory_region(c->local, pool->local_size);
#endif
    memset(c->local, 0, pool->local_size);
    c->local_init = true;
    return c->local;
}

void *coro_local(size_t size, void (*fini)(void *area))
{
    struct coro *c = current;
    if (c && c->local_init) /* once per request: kept short */
        return c->local;
    CORO_CHECK(c != NULL, "coro_local", "called outside a coroutine");
    return local_first(c, size, fini);
}

struct coro_slots *coro_slots(struct coro *c)
{
    return &c->slots;
}

/* ---- stacks and the pool -------------------------------------------------------- */

struct coro_pool *coro_pool_new(size_t stack_size, unsigned cap)
{
    if (page_size == 0)
        page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct coro_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    if (stack_size < CORO_STACK_MIN)
        stack_size = CORO_STACK_MIN;
    pool->stack_size = round_up(stack_size, page_size);
    pool->cap = cap;
    return pool;
}

static void unmap_coro(struct coro_pool *pool, struct coro *c)
{
    if (c->local_init && pool->local_fini)
        pool->local_fini(c->local);
#ifdef HAVE_VALGRIND_VALGRIND_H
    VALGRIND_STACK_DEREGISTER(c->valgrind_id);
#endif
    munmap(c->map, c->map_size);
}

void coro_pool_free(struct coro_pool *pool)
{
    if (!pool)
        return;
    CORO_CHECK(pool->live == 0, "coro_pool_free", "coroutines of the pool are still alive");
    while (pool->free) {
        struct coro *c = pool->free;
        pool->free = c->next_free;
        unmap_coro(pool, c);
    }
    free(pool);
}

size_t coro_pool_stack_size(const struct coro_pool *pool)
{
    return pool->stack_size;
}

unsigned coro_pool_live(const struct coro_pool *pool)
{
    return pool->live;
}

unsigned coro_pool_idle(const struct coro_pool *pool)
{
    return pool->idle;
}

/* Maps guard + stack and places the struct coro at the top. */
static int map_coro(struct coro_pool *pool, struct coro **out)
{
    size_t map_size = CORO_GUARD_SIZE + pool->stack_size;
    char *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return errno == ENOMEM ? -ENOMEM : -EAGAIN;
    if (mprotect(map, CORO_GUARD_SIZE, PROT_NONE) != 0) {
        /* Splitting the mapping needs a second VMA: vm.max_map_count. */
        int err = errno == ENOMEM ? -ENOMEM : -EAGAIN;
        munmap(map, map_size);
        return err;
    }
    uintptr_t top = (uintptr_t)(map + map_size);
    struct coro *c = (struct coro *)((top - sizeof(struct coro)) & ~(uintptr_t)63);
    memset(c, 0, sizeof(*c));
    c->map = map;
    c->map_size = map_size;
    c->stack_low = map + CORO_GUARD_SIZE;
    c->stack_high = (char *)c;
#ifdef HAVE_VALGRIND_VALGRIND_H
    c->valgrind_id = VALGRIND_STACK_REGISTER(c->stack_low, c->stack_high);
#endif
    *out = c;
    return 0;
}

int coro_new(struct coro_pool *pool, void (*fn)(void *arg), void *arg, struct coro **out)
{
    struct coro *c = pool->free;
    if (c) {
        pool->free = c->next_free;
        pool->idle--;
    } else {
        int err = map_coro(pool, &c);
        if (err)
            return err;
    }
    /* Reset everything but the mapping's bookkeeping. */
    memset(&c->slots, 0, sizeof(c->slots));
    c->pool = pool;
    c->next_free = NULL;
    c->fn = fn;
    c->arg = arg;
    c->state = CORO_READY;
    c->cancelled = false;
    c->ndefers = 0;
    /* The stack starts under the local area, when the pool reserves one. A
     * stack mapped before the reservation gets the area now: what its
     * earlier frames left there is cleared when it is first handed out. */
    if (!c->local && pool->local_size) {
        c->local = (char *)c - pool->local_size;
        c->local_init = false;
        c->stack_high = c->local;
    }
    c->low_water = c->stack_high;
    c->cancel_hook = NULL;
    c->cancel_arg = NULL;
#ifdef CORO_ASAN
    c->asan_fake_stack = NULL;
#endif
#ifdef FERRY_CORO_UCONTEXT
    getcontext(&c->ctx);
    c->ctx.uc_stack.ss_sp = c->stack_low;
    c->ctx.uc_stack.ss_size = (size_t)(c->stack_high - c->stack_low);
    c->ctx.uc_link = NULL;
    uintptr_t p = (uintptr_t)c;
    makecontext(&c->ctx, (void (*)(void))ucontext_entry, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
#else
    c->sp = stack_init(c->stack_high, coro_entry, c);
#endif
    pool->live++;
    *out = c;
    return 0;
}

bool coro_release(struct coro *c)
{
    if (!c)
        return false;
    CORO_CHECK(c->state == CORO_DONE || c->state == CORO_READY, "coro_release",
               "the coroutine has not finished");
    struct coro_pool *pool = c->pool;
    pool->live--;
    /* Drop the pages a deep request touched; keep the top ones (this struct
     * and the shallow frames every request uses). Depth is known from the
     * frames seen at yields: a request that never waited below the kept
     * pages costs no syscall. Leaf calls that dipped deeper without
     * yielding are caught by every CORO_TRIM_EVERY-th release. */
    char *keep_from = (char *)((uintptr_t)c & ~(uintptr_t)(page_size - 1));
    keep_from -= (CORO_KEEP_PAGES - 1) * page_size;
    bool deep = c->low_water < keep_from || ++pool->releases % CORO_TRIM_EVERY == 0;
    if (deep && keep_from > c->stack_low)
        madvise(c->stack_low, (size_t)(keep_from - c->stack_low), MADV_DONTNEED);
    c->state = CORO_DONE;
    c->next_free = pool->free;
    pool->free = c;
    pool->idle++;
    return pool->idle > pool->cap;
}

unsigned coro_pool_trim(struct coro_pool *pool, unsigned max)
{
    for (; max > 0 && pool->idle > pool->cap; max--) {
        struct coro *c = pool->free;
        pool->free = c->next_free;
        pool->idle--;
        unmap_coro(pool, c);
    }
    return pool->idle > pool->cap ? pool->idle - pool->cap : 0;
}

size_t coro_stack_resident(const struct coro *c)
{
    char *base = c->stack_low;
    size_t pages = (size_t)(c->map + c->map_size - base) / page_size;
    size_t resident = 0;
    unsigned char vec[512];
    for (size_t done = 0; done < pages;) {
        size_t n = pages - done < sizeof(vec) ? pages - done : sizeof(vec);
        if (mincore(base + done * page_size, n * page_size, vec) != 0)
            return 0;
        for (size_t i = 0; i < n; i++)
            resident += vec[i] & 1;
        done += n;
    }
    return resident * page_size;
}

/* ---- stack overflow reports --------------------------------------------------- */

#ifndef CORO_ASAN
static void on_segv(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    struct coro *c = current;
    char *addr = info->si_addr;
    if (c && addr >= c->map && addr < c->stack_low) {
        static const char msg[] = "ferry: coroutine stack overflow: a request used more than its "
                                  "stack; raise coroutine_stack in the config\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        abort();
    }
    /* Not ours: fall back to the default action, which re-faults. */
    signal(sig, SIG_DFL);
}
#endif

int coro_thread_init(void)
{
    if (page_size == 0)
        page_size = (size_t)sysconf(_SC_PAGESIZE);
#ifndef CORO_ASAN
    static __thread char *altstack;
    if (!altstack) {
        size_t size = 64 * 1024;
        altstack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (altstack == MAP_FAILED) {
            altstack = NULL;
            return -errno;
        }
        stack_t ss = {.ss_sp = altstack, .ss_size = size, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0)
            return -errno;
    }
    static bool installed;
    if (!__atomic_exchange_n(&installed, true, __ATOMIC_ACQ_REL)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, NULL) != 0)
            return -errno;
    }
#endif
    return 0;
}
