/*
 * bench/coro-switch: the one-way cost of a coroutine context switch, beside
 * glibc swapcontext measured the same way in the same program.
 *
 * One switch is one direction: coro_resume() into the coroutine is one,
 * coro_yield() back is another. Each run times SWITCHES switches (SWITCHES/2
 * resume+yield round trips) with CLOCK_MONOTONIC; the best of RUNS runs is
 * reported, in ns per switch. Build it in a release build (the default -O2,
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

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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
static double run_coro(struct coro_pool *pool, unsigned long switches)
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
    int64_t t0 = now_ns();
    for (unsigned long i = 0; i < rounds; i++)
        coro_resume(c);
    int64_t t1 = now_ns();
    coro_stop = true;
    coro_resume(c);
    if (!coro_done(c) || coro_yields != rounds + 1) {
        fprintf(stderr, "coro-switch: %lu yields, expected %lu\n", coro_yields, rounds + 1);
        exit(1);
    }
    coro_release(c);
    return (double)(t1 - t0) / (double)(rounds * 2);
}

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

static double run_swapcontext(unsigned long switches)
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
    int64_t t0 = now_ns();
    for (unsigned long i = 0; i < rounds; i++)
        swapcontext(&uc_main, &uc_co);
    int64_t t1 = now_ns();
    if (uc_yields != rounds + 1) {
        fprintf(stderr, "coro-switch: swapcontext: %lu yields, expected %lu\n", uc_yields,
                rounds + 1);
        exit(1);
    }
    /* uc_ping stays suspended; its context is rebuilt by the next run. */
    return (double)(t1 - t0) / (double)(rounds * 2);
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

    double best_coro = 1e30, best_uc = 1e30;
    for (int r = 0; r < RUNS; r++) {
        double ns = run_coro(pool, switches);
        if (ns < best_coro)
            best_coro = ns;
    }
    for (int r = 0; r < RUNS; r++) {
        double ns = run_swapcontext(switches);
        if (ns < best_uc)
            best_uc = ns;
    }
    coro_resume_gate(false);
    coro_pool_free(pool);

    printf("coro-switch: one-way switch cost, best of %d runs of %lu switches\n", RUNS, switches);
    printf("  ferry coro (%s)%*s %8.1f ns\n", backend, (int)(10 - __builtin_strlen(backend)), "",
           best_coro);
    printf("  glibc swapcontext      %8.1f ns\n", best_uc);
#ifdef FERRY_SANITIZERS
    printf("  (sanitizer build: not a release measurement)\n");
#endif
#if defined(__x86_64__)
    printf("  target on x86_64: under 20 ns: %s\n", best_coro < 20.0 ? "met" : "MISSED");
#endif
    return 0;
}
