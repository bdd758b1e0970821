/*
 * bench/coro-switch: the one-way cost of a coroutine context switch, beside
 * glibc swapcontext measured the same way in the same program.
 *
 * One switch is one direction: coro_resume() into the coroutine is one,
 * coro_yield() back is another. Each run times SWITCHES switches (SWITCHES/2
 * resume+yield round trips) with CLOCK_MONOTONIC (wall) and with
 * CLOCK_THREAD_CPUTIME_ID (this thread's CPU time, user + system: less
 * disturbed when other processes share the cores); the best of RUNS runs of
 * each is reported, in ns per switch. Build it in a release build (the default -O2,
 * no sanitizers): `make bench/coro-switch && bench/coro-switch [switches]`.
 *
 * The program plays the scheduler's role, so it opens the resume gate
 * (coro_resume_gate), as loop.c does around its scheduler pass.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include "coro.h"

#define RUNS 5
#define DEFAULT_SWITCHES 10000000ul

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One run's result: ns per switch by the wall clock and by CPU time. */
struct cost {
    double wall, cpu;
};

static void timing_start(int64_t *wall, int64_t *cpu)
{
    *wall = clock_ns(CLOCK_MONOTONIC);
    *cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static struct cost timing_end(int64_t wall0, int64_t cpu0, unsigned long switches)
{
    int64_t cpu1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int64_t wall1 = clock_ns(CLOCK_MONOTONIC);
    struct cost c = {(double)(wall1 - wall0) / (double)switches,
                     (double)(cpu1 - cpu0) / (double)switches};
    return c;
}

/* --- Ferry's coroutines --------------------------------------------------- */

static bool coro_stop;
static unsigned long coro_yields;

static void ping(void *arg)
{
    (void)arg;
    while (!coro_stop) {
        coro_yields++;
        coro_yield();
    }
}

/* Returns ns per one-way switch for one run of `switches` switches. */
static struct cost run_coro(struct coro_pool *pool, unsigned long switches)
{
    struct coro *c;
    int rc = coro_new(pool, ping, NULL, &c);
    if (rc != 0) {
        fprintf(stderr, "coro-switch: coro_new: %d\n", rc);
        exit(1);
    }
    coro_stop = false;
    coro_yields = 0;
    coro_resume(c); /* first entry, not timed */
    unsigned long rounds = switches / 2;
    int64_t wall0, cpu0;
    timing_start(&wall0, &cpu0);
    for (unsigned long i = 0; i < rounds; i++)
        coro_resume(c);
    struct cost cost = timing_end(wall0, cpu0, rounds * 2);
    coro_stop = true;
    coro_resume(c);
    if (!coro_done(c) || coro_yields != rounds + 1) {
        fprintf(stderr, "coro-switch: %lu yields, expected %lu\n", coro_yields, rounds + 1);
        exit(1);
    }
    coro_release(c);
    return cost;
}

/* --- a bare switch, for reference (x86_64) ----------------------------------
 * Six callee-saved registers, the stack pointer and a ret: the floor any
 * stackful switch pays on this machine at this moment. The machine is
 * shared, so Ferry's cost is best read against this floor measured in the
 * same run. */
#if defined(__x86_64__) && !defined(FERRY_SANITIZERS)
#define HAVE_BARE 1
void bench_switch(void **save, void *to);
__asm__(".text\n"
        ".globl bench_switch\n"
        ".type bench_switch,@function\n"
        ".hidden bench_switch\n"
        "bench_switch:\n"
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
        ".size bench_switch,.-bench_switch\n");

static void *bare_main_sp, *bare_co_sp;
static unsigned long bare_yields;
static char bare_stack[64 * 1024] __attribute__((aligned(16)));

static void bare_entry(void)
{
    for (;;) {
        bare_yields++;
        bench_switch(&bare_co_sp, bare_main_sp);
    }
}

static struct cost run_bare(unsigned long switches)
{
    /* r15 r14 r13 r12 rbx rbp, then bare_entry as the return address; after
     * the ret %rsp is 8 mod 16, as at any function's entry. */
    void **sp = (void **)(bare_stack + sizeof bare_stack - 64);
    for (int i = 0; i < 6; i++)
        sp[i] = NULL;
    sp[6] = (void *)bare_entry;
    sp[7] = NULL;
    bare_co_sp = sp;
    bare_yields = 0;
    bench_switch(&bare_main_sp, bare_co_sp); /* first entry, not timed */
    unsigned long rounds = switches / 2;
    int64_t wall0, cpu0;
    timing_start(&wall0, &cpu0);
    for (unsigned long i = 0; i < rounds; i++)
        bench_switch(&bare_main_sp, bare_co_sp);
    struct cost cost = timing_end(wall0, cpu0, rounds * 2);
    if (bare_yields != rounds + 1) {
        fprintf(stderr, "coro-switch: bare: %lu yields, expected %lu\n", bare_yields, rounds + 1);
        exit(1);
    }
    return cost;
}
#endif

/* --- glibc swapcontext, the same shape ------------------------------------ */

static ucontext_t uc_main, uc_co;
static unsigned long uc_yields;
static char uc_stack[64 * 1024] __attribute__((aligned(16)));

static void uc_ping(void)
{
    for (;;) {
        uc_yields++;
        swapcontext(&uc_co, &uc_main);
    }
}

static struct cost run_swapcontext(unsigned long switches)
{
    if (getcontext(&uc_co) != 0) {
        perror("coro-switch: getcontext");
        exit(1);
    }
    uc_co.uc_stack.ss_sp = uc_stack;
    uc_co.uc_stack.ss_size = sizeof uc_stack;
    uc_co.uc_link = &uc_main;
    makecontext(&uc_co, uc_ping, 0);
    uc_yields = 0;
    swapcontext(&uc_main, &uc_co); /* first entry, not timed */
    unsigned long rounds = switches / 2;
    int64_t wall0, cpu0;
    timing_start(&wall0, &cpu0);
    for (unsigned long i = 0; i < rounds; i++)
        swapcontext(&uc_main, &uc_co);
    struct cost cost = timing_end(wall0, cpu0, rounds * 2);
    if (uc_yields != rounds + 1) {
        fprintf(stderr, "coro-switch: swapcontext: %lu yields, expected %lu\n", uc_yields,
                rounds + 1);
        exit(1);
    }
    /* uc_ping stays suspended; its context is rebuilt by the next run. */
    return cost;
}

int main(int argc, char **argv)
{
    unsigned long switches = DEFAULT_SWITCHES;
    if (argc > 1) {
        char *end;
        switches = strtoul(argv[1], &end, 10);
        if (*end != '\0' || switches < 2) {
            fprintf(stderr, "usage: %s [switches per run, default %lu]\n", argv[0],
                    DEFAULT_SWITCHES);
            return 2;
        }
    }
#ifdef FERRY_CORO_UCONTEXT
    const char *backend = "ucontext";
#else
    const char *backend = "asm";
#endif
    struct coro_pool *pool = coro_pool_new(CORO_STACK_DEFAULT, 1);
    if (!pool) {
        fprintf(stderr, "coro-switch: coro_pool_new failed\n");
        return 1;
    }
    coro_resume_gate(true);

    struct cost best_coro = {1e30, 1e30}, best_uc = {1e30, 1e30};
    for (int r = 0; r < RUNS; r++) {
        struct cost c = run_coro(pool, switches);
        best_coro.wall = c.wall < best_coro.wall ? c.wall : best_coro.wall;
        best_coro.cpu = c.cpu < best_coro.cpu ? c.cpu : best_coro.cpu;
    }
    for (int r = 0; r < RUNS; r++) {
        struct cost c = run_swapcontext(switches);
        best_uc.wall = c.wall < best_uc.wall ? c.wall : best_uc.wall;
        best_uc.cpu = c.cpu < best_uc.cpu ? c.cpu : best_uc.cpu;
    }
#ifdef HAVE_BARE
    struct cost best_bare = {1e30, 1e30};
    for (int r = 0; r < RUNS; r++) {
        struct cost c = run_bare(switches);
        best_bare.wall = c.wall < best_bare.wall ? c.wall : best_bare.wall;
        best_bare.cpu = c.cpu < best_bare.cpu ? c.cpu : best_bare.cpu;
    }
#endif
    coro_resume_gate(false);
    coro_pool_free(pool);

    printf("coro-switch: one-way switch cost, best of %d runs of %lu switches\n", RUNS, switches);
    printf("                         wall ns   cpu ns\n");
    printf("  ferry coro (%s)%*s %8.1f %8.1f\n", backend, (int)(10 - __builtin_strlen(backend)), "",
           best_coro.wall, best_coro.cpu);
    printf("  glibc swapcontext      %8.1f %8.1f\n", best_uc.wall, best_uc.cpu);
#ifdef HAVE_BARE
    printf("  bare asm switch (floor)%8.1f %8.1f\n", best_bare.wall, best_bare.cpu);
#endif
#ifdef FERRY_SANITIZERS
    printf("  (sanitizer build: not a release measurement)\n");
#endif
#if defined(__x86_64__)
    printf("  target on x86_64: under 20 ns: %s\n", best_coro.wall < 20.0 ? "met" : "MISSED");
#endif
    return 0;
}
