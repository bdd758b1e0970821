/*
 * Unit tests for coro (Check): the context switch, stacks, the pool, defers,
 * cancellation flags and the assertions that catch wrong use.
 *
 * The tests play the scheduler's role: they open the resume gate and call
 * coro_resume() themselves (loop.c does that in the daemon). Results are
 * recorded in globals and asserted on the test's own stack, never inside a
 * coroutine. Anything that is expected to abort runs in a forked child whose
 * stderr is read through a pipe, so the message can be checked too.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <alloca.h>

#include "check_helpers.h"
#include "coro.h"

/* --- helpers -------------------------------------------------------------- */

/* Resumes c until it ends; fails after a bound so a broken yield cannot spin. */
static unsigned run_to_end(struct coro *c)
{
    unsigned n = 0;
    while (!coro_done(c)) {
        ck_assert_uint_lt(n, 1000000);
        coro_resume(c);
        n++;
    }
    return n;
}

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* mincore on the page holding addr: 1 resident, 0 not, -errno when unmapped. */
static int page_resident(uintptr_t addr)
{
    unsigned char vec = 0;
    uintptr_t page = addr & ~(uintptr_t)(page_size() - 1);
    if (mincore((void *)page, page_size(), &vec) != 0)
        return -errno;
    return vec & 1;
}

/* --- switch correctness ---------------------------------------------------- */

static int seq_seen[64];
static unsigned seq_n;
static struct coro *seq_self;
static void *seq_arg;

static void seq_fn(void *arg)
{
    seq_arg = arg;
    seq_self = coro_current();
    for (int i = 0; i < 50; i++) {
        seq_seen[seq_n++] = i;
        coro_yield();
    }
}

START_TEST(switch_sequence)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c = NULL;
    int marker = 7;
    ck_assert_int_eq(coro_new(pool, seq_fn, &marker, &c), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(coro_current());
    ck_assert(!coro_done(c));
    for (unsigned i = 0; i < 50; i++) {
        coro_resume(c);
        ck_assert_ptr_null(coro_current());
        ck_assert_uint_eq(seq_n, i + 1);
        ck_assert_int_eq(seq_seen[i], (int)i);
        ck_assert(!coro_done(c));
    }
    coro_resume(c);
    ck_assert(coro_done(c));
    ck_assert_uint_eq(seq_n, 50);
    ck_assert_ptr_eq(seq_self, c);
    ck_assert_ptr_eq(seq_arg, &marker);
    coro_release(c);
    coro_release(NULL);
    ck_assert_uint_eq(coro_pool_live(pool), 0);
    coro_pool_free(pool);
}
END_TEST

/*
 * Keeps twelve integers and eight doubles live across every call of step():
 * more than the callee-saved registers of x86_64 or aarch64 hold, so some
 * live in callee-saved registers (integer ones, and d8-d15 on aarch64) and
 * some on the stack. The same code with step = noop gives the reference.
 */
#define CHURN_ROUNDS 2000

static void noop_step(void)
{
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

__attribute__((noinline, noclone)) static uint64_t churn(uint64_t seed, unsigned rounds,
                                                         void (*step)(void))
{
    uint64_t a = seed | 1, b = a * 3, c = a * 5, d = a * 7, e = a * 11, f = a * 13;
    uint64_t g = a * 17, h = a * 19, i = a * 23, j = a * 29, k = a * 31, l = a * 37;
    double x = (double)(seed % 1000) + 0.25, y = x * 1.5, z = x * 2.25, w = x * 3.125;
    double u = x * 0.75, v = x * 0.3, p = x + 1.0, q = x + 2.0;
    for (unsigned n = 0; n < rounds; n++) {
        step();
        a = a * 6364136223846793005u + b;
        b ^= c >> 3;
        c += d << 1;
        d = d * 31 + e;
        e ^= f + n;
        f += g >> 5;
        g = g * 7 + h;
        h ^= i << 2;
        i += j;
        j = j * 13 + k;
        k ^= l >> 7;
        l += a;
        x = x * 1.000001 + y * 1e-3;
        y = y - z * 1e-4;
        z = z + w * 1e-5;
        w = w * 0.99999 + u;
        u = u - v * 1e-6;
        v = v + p * 1e-7;
        p = p * 1.0000001 - q * 1e-8;
        q = q + x * 1e-9;
    }
    return a ^ (b << 1) ^ (c << 2) ^ (d << 3) ^ (e << 4) ^ (f << 5) ^ (g << 6) ^ (h << 7) ^
           (i << 8) ^ (j << 9) ^ (k << 10) ^ (l << 11) ^ dbits(x) ^ (dbits(y) >> 1) ^
           (dbits(z) >> 2) ^ (dbits(w) >> 3) ^ (dbits(u) >> 4) ^ (dbits(v) >> 5) ^ (dbits(p) >> 6) ^
           (dbits(q) >> 7);
}

static struct coro *churn_a, *churn_b;
static uint64_t churn_result[2];
static unsigned churn_order[4 * CHURN_ROUNDS + 8];
static unsigned churn_order_n;

static void churn_fn(void *arg)
{
    unsigned which = (unsigned)(uintptr_t)arg;
    churn_result[which] = churn(1000003u * (which + 1), CHURN_ROUNDS, coro_yield);
    churn_order[churn_order_n++] = which;
}

/* Main's step: resumes both coroutines, which clobber every register. */
static void step_resume_both(void)
{
    coro_resume(churn_a);
    churn_order[churn_order_n++] = 10;
    coro_resume(churn_b);
    churn_order[churn_order_n++] = 11;
}

START_TEST(switch_preserves_registers)
{
    uint64_t want_a = churn(1000003u * 1, CHURN_ROUNDS, noop_step);
    uint64_t want_b = churn(1000003u * 2, CHURN_ROUNDS, noop_step);
    uint64_t want_m = churn(424242u, CHURN_ROUNDS, noop_step);
    ck_assert(want_a != want_b);

    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    ck_assert_int_eq(coro_new(pool, churn_fn, (void *)(uintptr_t)0, &churn_a), 0);
    ck_assert_int_eq(coro_new(pool, churn_fn, (void *)(uintptr_t)1, &churn_b), 0);
    /* Main computes across resumes while both coroutines compute across yields. */
    uint64_t got_m = churn(424242u, CHURN_ROUNDS, step_resume_both);
    ck_assert(!coro_done(churn_a));
    ck_assert(!coro_done(churn_b));
    step_resume_both(); /* both finish now */
    ck_assert(coro_done(churn_a));
    ck_assert(coro_done(churn_b));
    ck_assert_msg(got_m == want_m, "resumer's registers clobbered: %" PRIx64 " != %" PRIx64, got_m,
                  want_m);
    ck_assert_msg(churn_result[0] == want_a, "coroutine A: %" PRIx64 " != %" PRIx64,
                  churn_result[0], want_a);
    ck_assert_msg(churn_result[1] == want_b, "coroutine B: %" PRIx64 " != %" PRIx64,
                  churn_result[1], want_b);
    /* Alternation: resume A returns before B runs, and each finishes on its last resume. */
    ck_assert_uint_eq(churn_order_n, 2 * (CHURN_ROUNDS + 1) + 2);
    for (unsigned n = 0; n < CHURN_ROUNDS * 2; n += 2) {
        ck_assert_uint_eq(churn_order[n], 10);
        ck_assert_uint_eq(churn_order[n + 1], 11);
    }
    ck_assert_uint_eq(churn_order[2 * CHURN_ROUNDS], 0);
    ck_assert_uint_eq(churn_order[2 * CHURN_ROUNDS + 1], 10);
    ck_assert_uint_eq(churn_order[2 * CHURN_ROUNDS + 2], 1);
    ck_assert_uint_eq(churn_order[2 * CHURN_ROUNDS + 3], 11);
    coro_release(churn_a);
    coro_release(churn_b);
    coro_pool_free(pool);
}
END_TEST

/* Recursion inside a coroutine: each frame checks its own bytes on the way
 * back up, after yields at several depths. */
#define REC_PAD 256

__attribute__((noinline)) static unsigned recurse(unsigned depth, unsigned seed, void (*step)(void),
                                                  unsigned *bad)
{
    volatile unsigned char pad[REC_PAD];
    for (unsigned n = 0; n < REC_PAD; n++)
        pad[n] = (unsigned char)(seed + n * 7 + depth);
    unsigned r = 0;
    if (depth % 16 == 0)
        step();
    if (depth > 0)
        r = recurse(depth - 1, seed * 31 + 1, step, bad);
    for (unsigned n = 0; n < REC_PAD; n++)
        if (pad[n] != (unsigned char)(seed + n * 7 + depth))
            (*bad)++;
    return r * 3 + pad[depth % REC_PAD] + depth;
}

/* About a third of the stack: 64 frames in a 64 KiB stack, more under ASan. */
#define REC_DEPTH (CORO_STACK_DEFAULT / 3 / (REC_PAD + 96))

static unsigned rec_result, rec_bad;

static void rec_fn(void *arg)
{
    (void)arg;
    rec_result = recurse(REC_DEPTH, 12345, coro_yield, &rec_bad);
}

START_TEST(switch_deep_recursion)
{
    unsigned bad = 0;
    unsigned want = recurse(REC_DEPTH, 12345, noop_step, &bad);
    ck_assert_uint_eq(bad, 0);
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, rec_fn, NULL, &c), 0);
    unsigned resumes = run_to_end(c);
    ck_assert_uint_eq(resumes, REC_DEPTH / 16 + 2);
    ck_assert_uint_eq(rec_bad, 0);
    ck_assert_uint_eq(rec_result, want);
    coro_release(c);
    coro_pool_free(pool);
}
END_TEST

/* --- defers and cancellation ---------------------------------------------- */

static int defer_log[32];
static unsigned defer_n;
static struct coro *defer_ran_on[32];

static void defer_push(void *arg)
{
    defer_ran_on[defer_n] = coro_current();
    defer_log[defer_n++] = (int)(intptr_t)arg;
}

static int defer_rc[CORO_MAX_DEFERS + 2];

static void defer_fn(void *arg)
{
    (void)arg;
    for (int i = 1; i <= CORO_MAX_DEFERS; i++) {
        defer_rc[i] = coro_defer(defer_push, (void *)(intptr_t)i);
        coro_yield();
    }
}

START_TEST(defer_normal_end_newest_first)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, defer_fn, NULL, &c), 0);
    for (int i = 0; i < CORO_MAX_DEFERS; i++) {
        coro_resume(c);
        ck_assert_uint_eq(defer_n, 0); /* nothing runs before the end */
    }
    coro_resume(c);
    ck_assert(coro_done(c));
    ck_assert_uint_eq(defer_n, CORO_MAX_DEFERS);
    for (int i = 0; i < CORO_MAX_DEFERS; i++) {
        ck_assert_int_eq(defer_rc[i + 1], 0);
        ck_assert_int_eq(defer_log[i], CORO_MAX_DEFERS - i);
        ck_assert_ptr_eq(defer_ran_on[i], c); /* on the coroutine, not the loop */
    }
    coro_release(c);
    coro_pool_free(pool);
}
END_TEST

static unsigned hook_calls;
static struct coro *hook_coro;
static void *hook_arg;
static struct coro *hook_current;
static unsigned cancel_loops;

static void cancel_hook(struct coro *c, void *arg)
{
    hook_calls++;
    hook_coro = c;
    hook_arg = arg;
    hook_current = coro_current();
}

static int hook_token;

static void cancel_fn(void *arg)
{
    (void)arg;
    for (int i = 1; i <= 3; i++)
        coro_defer(defer_push, (void *)(intptr_t)i);
    coro_set_cancel_hook(coro_current(), cancel_hook, &hook_token);
    while (!coro_cancelled(coro_current())) {
        cancel_loops++;
        coro_yield();
    }
}

START_TEST(defer_on_cancel_newest_first)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, cancel_fn, NULL, &c), 0);
    coro_resume(c);
    coro_resume(c);
    ck_assert_uint_eq(cancel_loops, 2);
    ck_assert(!coro_cancelled(c));
    coro_cancel(c);
    ck_assert(coro_cancelled(c));
    ck_assert_uint_eq(hook_calls, 1);
    ck_assert_ptr_eq(hook_coro, c);
    ck_assert_ptr_eq(hook_arg, &hook_token);
    ck_assert_ptr_null(hook_current); /* coro_cancel never switches stacks */
    ck_assert_uint_eq(defer_n, 0);
    ck_assert(!coro_done(c));
    coro_resume(c);
    ck_assert(coro_done(c));
    ck_assert_uint_eq(cancel_loops, 2);
    ck_assert_uint_eq(defer_n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(defer_log[i], 3 - i);
        ck_assert_ptr_eq(defer_ran_on[i], c);
    }
    coro_release(c);
    coro_pool_free(pool);
}
END_TEST

static void defer_many_fn(void *arg)
{
    (void)arg;
    for (int i = 0; i < CORO_MAX_DEFERS + 1; i++)
        defer_rc[i] = coro_defer(defer_push, (void *)(intptr_t)i);
}

START_TEST(defer_limit_enospc)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, defer_many_fn, NULL, &c), 0);
    run_to_end(c);
    for (int i = 0; i < CORO_MAX_DEFERS; i++)
        ck_assert_int_eq(defer_rc[i], 0);
    ck_assert_int_eq(defer_rc[CORO_MAX_DEFERS], -ENOSPC);
    ck_assert_uint_eq(defer_n, CORO_MAX_DEFERS);
    for (int i = 0; i < CORO_MAX_DEFERS; i++)
        ck_assert_int_eq(defer_log[i], CORO_MAX_DEFERS - 1 - i);
    coro_release(c);
    coro_pool_free(pool);
}
END_TEST

/* --- the pool -------------------------------------------------------------- */

static uintptr_t frame_addr[16];
static unsigned frame_n;

static void record_frame_fn(void *arg)
{
    (void)arg;
    volatile char local = 1;
    frame_addr[frame_n++] = (uintptr_t)&local;
}

START_TEST(pool_reuses_released_stack)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(pool);
    ck_assert_uint_ge(coro_pool_stack_size(pool), CORO_STACK_DEFAULT);
    ck_assert_uint_eq(coro_pool_live(pool), 0);
    ck_assert_uint_eq(coro_pool_idle(pool), 0);
    coro_resume_gate(true);
    struct coro *c1, *c2;
    ck_assert_int_eq(coro_new(pool, record_frame_fn, NULL, &c1), 0);
    ck_assert_uint_eq(coro_pool_live(pool), 1);
    run_to_end(c1);
    coro_release(c1);
    ck_assert_uint_eq(coro_pool_live(pool), 0);
    ck_assert_uint_eq(coro_pool_idle(pool), 1);
    /* The pooled stack stays mapped. */
    ck_assert_int_ge(page_resident(frame_addr[0]), 0);
    ck_assert_int_eq(coro_new(pool, record_frame_fn, NULL, &c2), 0);
    ck_assert_uint_eq(coro_pool_live(pool), 1);
    ck_assert_uint_eq(coro_pool_idle(pool), 0);
    run_to_end(c2);
    ck_assert_msg(frame_addr[1] == frame_addr[0], "stack not reused: %#" PRIxPTR " then %#" PRIxPTR,
                  frame_addr[0], frame_addr[1]);
    coro_release(c2);
    coro_pool_free(pool);
}
END_TEST

START_TEST(pool_cap_bounds_idle)
{
    enum { CAP = 3, N = 8 };
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, CAP);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *cs[N];
    for (unsigned round = 0; round < 2; round++) {
        frame_n = 0;
        for (unsigned i = 0; i < N; i++) {
            ck_assert_int_eq(coro_new(pool, record_frame_fn, NULL, &cs[i]), 0);
            ck_assert_uint_eq(coro_pool_live(pool), i + 1);
            /* The second round takes the pooled stacks first. */
            unsigned idle_want = round == 0 ? 0 : (i + 1 < CAP ? CAP - i - 1 : 0);
            ck_assert_uint_eq(coro_pool_idle(pool), idle_want);
        }
        for (unsigned i = 0; i < N; i++)
            run_to_end(cs[i]);
        for (unsigned i = 0; i < N; i++) {
            /* Past the cap the release says so, and the stack stays mapped
             * until trimmed. */
            ck_assert(coro_release(cs[i]) == (i + 1 > CAP));
            ck_assert_uint_eq(coro_pool_live(pool), N - i - 1);
            ck_assert_uint_eq(coro_pool_idle(pool), i + 1);
            ck_assert_int_ge(page_resident(frame_addr[i]), 0);
        }
        /* Trimmed a few at a time, down to the cap and no further. */
        ck_assert_uint_eq(coro_pool_trim(pool, 2), N - CAP - 2);
        ck_assert_uint_eq(coro_pool_idle(pool), N - 2);
        ck_assert_uint_eq(coro_pool_trim(pool, 100), 0);
        ck_assert_uint_eq(coro_pool_idle(pool), CAP);
        ck_assert_uint_eq(coro_pool_trim(pool, 100), 0);
        ck_assert_uint_eq(coro_pool_idle(pool), CAP);
        /* The stacks past the cap are unmapped, the first CAP kept. */
        for (unsigned i = 0; i < N; i++) {
            int res = page_resident(frame_addr[i]);
            if (i < CAP)
                ck_assert_msg(res >= 0, "pooled stack %u unmapped (%d)", i, res);
            else
                ck_assert_msg(res == -ENOMEM, "stack %u past the cap still mapped (%d)", i, res);
        }
    }
    coro_pool_free(pool);
}
END_TEST

START_TEST(pool_cap_zero_unmaps)
{
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 0);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, record_frame_fn, NULL, &c), 0);
    run_to_end(c);
    ck_assert_int_ge(page_resident(frame_addr[0]), 0);
    ck_assert(coro_release(c));
    ck_assert_uint_eq(coro_pool_live(pool), 0);
    ck_assert_uint_eq(coro_pool_trim(pool, 1), 0);
    ck_assert_uint_eq(coro_pool_idle(pool), 0);
    ck_assert_int_eq(page_resident(frame_addr[0]), -ENOMEM);
    coro_pool_free(pool);
}
END_TEST

/* Deep recursion touches most of a large stack; on release all but the top
 * CORO_KEEP_PAGES pages must be dropped (MADV_DONTNEED). */
#define DEEP_STACK (4 * CORO_STACK_DEFAULT)
#define DEEP_PAD 1024
#define DEEP_DEPTH (DEEP_STACK / 2 / (DEEP_PAD + 128))

static uintptr_t deep_lowest, deep_top;

__attribute__((noinline)) static unsigned touch_deep(unsigned depth)
{
    volatile unsigned char pad[DEEP_PAD];
    for (unsigned n = 0; n < DEEP_PAD; n++)
        pad[n] = (unsigned char)(depth + n);
    if (depth == 0) {
        deep_lowest = (uintptr_t)&pad[0];
        coro_yield();
        return pad[1];
    }
    return touch_deep(depth - 1) + pad[depth % DEEP_PAD];
}

static void deep_fn(void *arg)
{
    (void)arg;
    volatile char top = 0;
    deep_top = (uintptr_t)&top;
    (void)touch_deep(DEEP_DEPTH);
}

START_TEST(pool_release_drops_pages)
{
    size_t pg = page_size();
    struct coro_pool *pool = coro_pool_new(DEEP_STACK, 2);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, deep_fn, NULL, &c), 0);
    coro_resume(c); /* now at the deepest point */
    ck_assert(!coro_done(c));
    size_t touched = deep_top - deep_lowest;
    ck_assert_uint_ge(touched, (size_t)DEEP_DEPTH * DEEP_PAD);
    ck_assert_uint_lt(touched, DEEP_STACK);
    size_t resident = coro_stack_resident(c);
    ck_assert_msg(resident >= touched, "coro_stack_resident %zu < %zu bytes touched", resident,
                  touched);
    ck_assert_int_eq(page_resident(deep_lowest), 1);
    run_to_end(c);
    coro_release(c);
    ck_assert_uint_eq(coro_pool_idle(pool), 1);

    /* Count resident pages of the touched range, independently of coro. */
    unsigned still = 0, mapped = 0;
    for (uintptr_t a = deep_lowest & ~(uintptr_t)(pg - 1); a <= deep_top; a += pg) {
        int r = page_resident(a);
        if (r >= 0)
            mapped++;
        if (r == 1)
            still++;
    }
    ck_assert_uint_eq(mapped, (deep_top - (deep_lowest & ~(uintptr_t)(pg - 1))) / pg + 1);
    ck_assert_msg(still <= CORO_KEEP_PAGES, "%u pages of a released stack still resident", still);
    ck_assert_int_eq(page_resident(deep_lowest), 0);

    /* The reused stack starts small again. */
    struct coro *c2;
    ck_assert_int_eq(coro_new(pool, record_frame_fn, NULL, &c2), 0);
    ck_assert_uint_eq(coro_pool_idle(pool), 0);
    size_t fresh = coro_stack_resident(c2);
    ck_assert_msg(fresh <= CORO_KEEP_PAGES * pg, "a reused stack has %zu bytes resident", fresh);
    run_to_end(c2);
    coro_release(c2);
    coro_pool_free(pool);
}
END_TEST

/* A coroutine that went deep in leaf calls but yielded only near the top:
 * coro.h trims its stack "in any case every CORO_TRIM_EVERY releases". */
__attribute__((noinline)) static unsigned touch_deep_leaf(unsigned depth)
{
    volatile unsigned char pad[DEEP_PAD];
    for (unsigned n = 0; n < DEEP_PAD; n++)
        pad[n] = (unsigned char)(depth + n);
    if (depth == 0) {
        deep_lowest = (uintptr_t)&pad[0];
        return pad[1];
    }
    return touch_deep_leaf(depth - 1) + pad[depth % DEEP_PAD];
}

static void deep_leaf_fn(void *arg)
{
    (void)arg;
    (void)touch_deep_leaf(DEEP_DEPTH);
    coro_yield(); /* shallow */
}

START_TEST(pool_trims_leaf_depth_eventually)
{
    struct coro_pool *pool = coro_pool_new(DEEP_STACK, 1);
    ck_assert_ptr_nonnull(pool);
    coro_resume_gate(true);
    unsigned trimmed_at = 0;
    for (unsigned i = 1; i <= CORO_TRIM_EVERY + 1 && !trimmed_at; i++) {
        struct coro *c;
        ck_assert_int_eq(coro_new(pool, deep_leaf_fn, NULL, &c), 0);
        run_to_end(c);
        ck_assert_int_eq(page_resident(deep_lowest), 1);
        coro_release(c);
        ck_assert_uint_eq(coro_pool_idle(pool), 1);
        if (page_resident(deep_lowest) == 0)
            trimmed_at = i;
    }
    ck_assert_msg(trimmed_at > 0 && trimmed_at <= CORO_TRIM_EVERY,
                  "a stack that went deep without yielding there was not trimmed within %u "
                  "releases",
                  CORO_TRIM_EVERY);
    coro_pool_free(pool);
}
END_TEST

/* coro_new under a tight RLIMIT_AS: an error code, never an abort. */
static void rlimit_child(void *arg)
{
    (void)arg;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 0);
    if (!pool)
        _exit(2);
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%lu", &pages) != 1)
        _exit(3);
    fclose(f);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = pages * page_size() + 8u * 1024 * 1024;
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        _exit(4);
    static struct coro *cs[4096];
    int rc = 0;
    unsigned n;
    for (n = 0; n < 4096; n++) {
        rc = coro_new(pool, record_frame_fn, NULL, &cs[n]);
        if (rc != 0)
            break;
    }
    fprintf(stderr, "created %u, then %d\n", n, rc);
    if (rc != -ENOMEM && rc != -EAGAIN)
        _exit(5);
    /* Still usable: run and release one that was created. */
    if (n > 0) {
        coro_resume_gate(true);
        while (!coro_done(cs[0]))
            coro_resume(cs[0]);
        coro_release(cs[0]);
        if (coro_new(pool, record_frame_fn, NULL, &cs[0]) != 0)
            _exit(6);
    }
    _exit(0);
}

START_TEST(coro_new_fails_cleanly_out_of_address_space)
{
    static struct check_child r;
    check_run_child(rlimit_child, NULL, &r);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "child status %#x, stderr: %s",
                  (unsigned)r.status, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "created "));
}
END_TEST

/* --- guard region ------------------------------------------------------------ */

#ifndef FERRY_SANITIZERS
__attribute__((noinline)) static unsigned overflow_recurse(unsigned depth)
{
    volatile unsigned char pad[512];
    pad[0] = (unsigned char)depth;
    pad[511] = (unsigned char)depth;
    if (depth > (1u << 30))
        return pad[0];
    return overflow_recurse(depth + 1) + pad[511];
}

static void overflow_fn(void *arg)
{
    (void)arg;
    (void)overflow_recurse(0);
}

/* One frame larger than a 4 KiB guard page would be: it must still land in the
 * 64 KiB guard, touching only its lowest byte. */
static void big_frame_fn(void *arg)
{
    size_t n = *(size_t *)arg;
    volatile unsigned char *p = alloca(n);
    p[0] = 1;
}

static void guard_child(void *arg)
{
    if (coro_thread_init() != 0)
        _exit(2);
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    if (!pool)
        _exit(3);
    struct coro *c;
    if (coro_new(pool, arg ? big_frame_fn : overflow_fn, arg, &c) != 0)
        _exit(4);
    coro_resume_gate(true);
    coro_resume(c);
    _exit(5); /* survived the overflow */
}

START_TEST(guard_hit_reports_overflow)
{
    static struct check_child r;
    check_run_child(guard_child, NULL, &r);
    check_assert_aborted_naming(&r, "coroutine_stack");
}
END_TEST

START_TEST(guard_catches_big_frame)
{
    static size_t n = CORO_STACK_DEFAULT + 32u * 1024u;
    static struct check_child r;
    check_run_child(guard_child, &n, &r);
    check_assert_aborted_naming(&r, "coroutine_stack");
}
END_TEST
#endif

/* --- wrong use ------------------------------------------------------------------ */

static void yield_once_fn(void *arg)
{
    (void)arg;
    coro_yield();
}

static void resume_gate_closed_child(void *arg)
{
    (void)arg;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    struct coro *c;
    if (!pool || coro_new(pool, yield_once_fn, NULL, &c) != 0)
        _exit(2);
    coro_resume_gate(false);
    coro_resume(c);
    _exit(3);
}

static void resume_finished_child(void *arg)
{
    (void)arg;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    struct coro *c;
    if (!pool || coro_new(pool, record_frame_fn, NULL, &c) != 0)
        _exit(2);
    coro_resume_gate(true);
    coro_resume(c);
    if (!coro_done(c))
        _exit(4);
    coro_resume(c);
    _exit(3);
}

static void resume_self_fn(void *arg)
{
    (void)arg;
    coro_resume(coro_current());
}

static void resume_running_child(void *arg)
{
    (void)arg;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    struct coro *c;
    if (!pool || coro_new(pool, resume_self_fn, NULL, &c) != 0)
        _exit(2);
    coro_resume_gate(true);
    coro_resume(c);
    _exit(3);
}

static void yield_outside_child(void *arg)
{
    (void)arg;
    coro_yield();
    _exit(3);
}

START_TEST(wrong_use_resume_gate_closed)
{
    static struct check_child r;
    check_run_child(resume_gate_closed_child, NULL, &r);
    check_assert_aborted_naming(&r, "coro_resume");
}
END_TEST

START_TEST(wrong_use_resume_finished)
{
    static struct check_child r;
    check_run_child(resume_finished_child, NULL, &r);
    check_assert_aborted_naming(&r, "coro_resume");
}
END_TEST

START_TEST(wrong_use_resume_running)
{
    static struct check_child r;
    check_run_child(resume_running_child, NULL, &r);
    check_assert_aborted_naming(&r, "coro_resume");
}
END_TEST

START_TEST(wrong_use_yield_outside)
{
    static struct check_child r;
    check_run_child(yield_outside_child, NULL, &r);
    check_assert_aborted_naming(&r, "coro_yield");
}
END_TEST

/* --- the local area (coro_local) ------------------------------------------ */

#define LOCAL_SIZE 640

static unsigned local_fini_n;
static void *local_fini_area[4];

static void local_fini(void *area)
{
    if (local_fini_n < 4)
        local_fini_area[local_fini_n] = area;
    local_fini_n++;
}

static void other_fini(void *area)
{
    (void)area;
}

/* What one coroutine asks for and what it saw. */
struct local_run {
    size_t size;
    void (*fini)(void *area);
    unsigned char mark; /* written over the area it gets */
    unsigned char *got;
    uintptr_t frame;
    bool zero;   /* the area it got was all zero */
    bool marked; /* ... or all `mark` (an earlier run's) */
};

__attribute__((noinline)) static void local_junk(void)
{
    /* Frames near the top of a stack mapped before the pool reserved an
     * area: the area will be carved where they were. */
    volatile unsigned char junk[2048];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = 0xAB;
}

static void local_fn(void *arg)
{
    struct local_run *lr = arg;
    local_junk();
    lr->got = coro_local(lr->size, lr->fini);
    lr->frame = (uintptr_t)__builtin_frame_address(0);
    if (lr->got) {
        lr->zero = lr->marked = true;
        for (size_t i = 0; i < lr->size; i++) {
            lr->zero = lr->zero && lr->got[i] == 0;
            lr->marked = lr->marked && lr->got[i] == lr->mark;
        }
        memset(lr->got, lr->mark, lr->size);
    }
    coro_yield();
}

static void local_run(struct coro_pool *pool, struct local_run *lr)
{
    struct coro *c;
    ck_assert_int_eq(coro_new(pool, local_fn, lr, &c), 0);
    run_to_end(c);
    coro_release(c);
}

START_TEST(local_area_in_the_top_page_kept_across_reuse)
{
    size_t pg = page_size();
    local_fini_n = 0;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(pool);
    /* The first call reserves the area for later coroutines: none now. */
    struct local_run a = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x11};
    local_run(pool, &a);
    ck_assert_ptr_null(a.got);

    /* The same stack, now with its area: cleared of the earlier frames,
     * above this coroutine's frames, within one page. */
    struct local_run b = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x22};
    local_run(pool, &b);
    ck_assert_ptr_nonnull(b.got);
    ck_assert(b.zero);
    ck_assert_uint_gt((uintptr_t)b.got, b.frame);
    ck_assert_uint_eq((uintptr_t)b.got / pg, ((uintptr_t)b.got + LOCAL_SIZE - 1) / pg);
    ck_assert_int_eq(page_resident((uintptr_t)b.got), 1); /* kept by the release */

    /* The next coroutine on that stack finds the area as b left it, also
     * after the release dropped the deeper pages. */
    struct local_run c = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x22};
    local_run(pool, &c);
    ck_assert_ptr_eq(c.got, b.got);
    ck_assert(c.marked);

    /* Another kind of area on a stack whose area was never handed out:
     * refused (two coroutines at once: the second one's stack is new). */
    struct local_run d = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x44};
    struct local_run e = {.size = LOCAL_SIZE, .fini = other_fini, .mark = 0x55};
    struct coro *cd, *ce;
    ck_assert_int_eq(coro_new(pool, local_fn, &d, &cd), 0);
    ck_assert_int_eq(coro_new(pool, local_fn, &e, &ce), 0);
    run_to_end(cd);
    run_to_end(ce);
    ck_assert_ptr_eq(d.got, b.got);
    ck_assert_ptr_null(e.got);
    struct local_run f = {.size = 2 * LOCAL_SIZE, .fini = local_fini, .mark = 0x66};
    struct coro *cf;
    ck_assert_int_eq(coro_new(pool, local_fn, &f, &cf), 0);
    run_to_end(cf);
    ck_assert_ptr_null(f.got); /* larger than the pool's */
    coro_release(cd);
    coro_release(ce);
    coro_release(cf);

    /* Unmapping runs fini once, for the one stack whose area was used. */
    ck_assert_uint_eq(local_fini_n, 0);
    coro_pool_free(pool);
    ck_assert_uint_eq(local_fini_n, 1);
    ck_assert_ptr_eq(local_fini_area[0], b.got);
}
END_TEST

/* An area that would leave the frames less than CORO_LOCAL_FRAMES of the
 * top page is refused and reserves nothing. */
START_TEST(local_area_crowding_the_frames_refused)
{
    size_t too_big = page_size() - CORO_LOCAL_FRAMES;
    local_fini_n = 0;
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 4);
    ck_assert_ptr_nonnull(pool);
    struct local_run a = {.size = too_big, .fini = local_fini, .mark = 0x11};
    local_run(pool, &a);
    ck_assert_ptr_null(a.got);
    struct local_run b = {.size = too_big, .fini = local_fini, .mark = 0x11};
    local_run(pool, &b);
    ck_assert_ptr_null(b.got); /* nothing was reserved */
    struct local_run c = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x11};
    local_run(pool, &c);
    ck_assert_ptr_null(c.got); /* reserves now */
    struct local_run d = {.size = LOCAL_SIZE, .fini = local_fini, .mark = 0x11};
    local_run(pool, &d);
    ck_assert_ptr_nonnull(d.got);
    coro_pool_free(pool);
    ck_assert_uint_eq(local_fini_n, 1);
}
END_TEST

/* Each test starts from clean globals, also under CK_FORK=no. */
static void reset_globals(void)
{
    seq_n = 0;
    churn_order_n = 0;
    rec_bad = 0;
    defer_n = 0;
    hook_calls = 0;
    cancel_loops = 0;
    frame_n = 0;
    coro_resume_gate(true);
}

int main(void)
{
    Suite *s = suite_create("coro");
    TCase *tc = tcase_create("switch");
    tcase_add_checked_fixture(tc, reset_globals, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, switch_sequence);
    tcase_add_test(tc, switch_preserves_registers);
    tcase_add_test(tc, switch_deep_recursion);
    suite_add_tcase(s, tc);

    tc = tcase_create("defer");
    tcase_add_checked_fixture(tc, reset_globals, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, defer_normal_end_newest_first);
    tcase_add_test(tc, defer_on_cancel_newest_first);
    tcase_add_test(tc, defer_limit_enospc);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, reset_globals, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_reuses_released_stack);
    tcase_add_test(tc, pool_cap_bounds_idle);
    tcase_add_test(tc, pool_cap_zero_unmaps);
    tcase_add_test(tc, pool_release_drops_pages);
    tcase_add_test(tc, pool_trims_leaf_depth_eventually);
    tcase_add_test(tc, coro_new_fails_cleanly_out_of_address_space);
    tcase_add_test(tc, local_area_in_the_top_page_kept_across_reuse);
    tcase_add_test(tc, local_area_crowding_the_frames_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("guard");
    tcase_add_checked_fixture(tc, reset_globals, NULL);
    tcase_set_timeout(tc, 60);
#ifndef FERRY_SANITIZERS
    tcase_add_test(tc, guard_hit_reports_overflow);
    tcase_add_test(tc, guard_catches_big_frame);
#endif
    tcase_add_test(tc, wrong_use_resume_gate_closed);
    tcase_add_test(tc, wrong_use_resume_finished);
    tcase_add_test(tc, wrong_use_resume_running);
    tcase_add_test(tc, wrong_use_yield_outside);
    suite_add_tcase(s, tc);

    return check_run(s);
}
