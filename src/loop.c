/*
 * loop: see loop.h for the contract.
 *
 * The run queue is an intrusive list through coro_slots.run_next. A
 * coroutine is queued at most once (slots.queued) and resumed only if it
 * is still ready when its turn comes: a wake that the coroutine consumed
 * itself (an io_wait that found its event already there) leaves a queued
 * but no longer ready entry, which the scheduler skips.
 */
#include "loop.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "coro.h"

/* A scheduler pass resumes at most this many coroutines before letting the
 * loop poll for I/O again, so two coroutines signalling each other cannot
 * starve the sockets. */
#define LOOP_PASS_MAX 1024

/* Stacks released above the pool's cap (a burst that ended) are unmapped
 * LOOP_TRIM_BATCH every LOOP_TRIM_MS: about 320 a second, a few
 * milliseconds of munmap per tick instead of one per answer of the burst,
 * and a burst that comes back within seconds finds its stacks mapped. */
#define LOOP_TRIM_MS 100
#define LOOP_TRIM_BATCH 32

struct free_later {
    void (*fn)(void *obj);
    void *obj;
    struct free_later *next;
};

struct loop {
    struct event_base *base;
    struct event *sched;
    struct event *reaper;
    struct event *trim;
    bool trimming; /* the trim timer is armed */
    struct coro_pool *pool;
    struct coro *run_head;
    struct coro *run_tail;
    struct free_later *reap_head;
    struct free_later **reap_tail;
    struct evdns_base *dns;
    unsigned live;
    uint64_t id;
    void (*on_free)(void *arg);
    void *on_free_arg;
};

static __thread struct loop *current_loop;

/*
 * The clock is read once per loop turn, not per use: a request reads the
 * time a dozen times (phase deadlines, idle stamps, durations for the log
 * and metrics), and each read is a vDSO call of ~40 ns on this VM, 1.5 % of
 * a keep-alive request's CPU. loop_run() runs the base one turn at a time
 * and forgets the instant between turns; the scheduler refreshes it at the
 * start of each pass, so a duration is off by at most the work done in one
 * pass before it (nginx and Envoy keep one cached time per turn the same
 * way). A thread outside loop_run() reads the clock each time.
 */
__thread int64_t loop_turn_now; /* 0: not read in this turn (loop.h) */
static __thread bool in_run;

static int64_t clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * LOOP_SEC + ts.tv_nsec;
}

int64_t loop_now_read(void)
{
    int64_t t = clock_now();
    if (in_run)
        loop_turn_now = t;
    return t;
}

int64_t loop_deadline(int64_t after)
{
    return after > 0 ? loop_now() + after : LOOP_NEVER;
}

int64_t loop_deadline_min(int64_t a, int64_t b)
{
    if (a == LOOP_NEVER)
        return b;
    if (b == LOOP_NEVER)
        return a;
    return a < b ? a : b;
}

static void on_schedule(evutil_socket_t fd, short what, void *arg);
static void on_reap(evutil_socket_t fd, short what, void *arg);
static void on_trim(evutil_socket_t fd, short what, void *arg);

struct loop *loop_new(size_t stack_size, unsigned pool_cap)
{
    if (current_loop)
        return NULL; /* one live loop per thread (loop.h) */
    if (coro_thread_init() != 0)
        return NULL;
    struct loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    static atomic_uint_fast64_t last_id;
    loop->id = (uint64_t)atomic_fetch_add(&last_id, 1) + 1;
    loop->reap_tail = &loop->reap_head;
    /* Precise timers: deadlines are exact CLOCK_MONOTONIC instants, and
     * the coarse clock (4 ms ticks) would end waits early. */
    struct event_config *ec = event_config_new();
    /* The changelist folds an EV_WRITE added and removed in one loop turn
     * (a response written whole) into no epoll_ctl at all. */
    if (ec)
        event_config_set_flag(ec,
                              EVENT_BASE_FLAG_PRECISE_TIMER | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    loop->base = ec ? event_base_new_with_config(ec) : NULL;
    if (ec)
        event_config_free(ec);
    /* Three priorities: every event gets libevent's default, the middle
     * one (n / 2); loop_idle_new's run only in a turn with nothing else. */
    if (loop->base && event_base_priority_init(loop->base, LOOP_PRIORITIES) != 0)
        goto out_free;
    loop->pool = coro_pool_new(stack_size, pool_cap);
    if (!loop->base || !loop->pool)
        goto out_free;
    loop->sched = event_new(loop->base, -1, 0, on_schedule, loop);
    loop->reaper = event_new(loop->base, -1, 0, on_reap, loop);
    loop->trim = evtimer_new(loop->base, on_trim, loop);
    if (!loop->sched || !loop->reaper || !loop->trim)
        goto out_free;
    current_loop = loop;
    return loop;

out_free:
    loop_free(loop);
    return NULL;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
    if (loop->on_free)
        loop->on_free(loop->on_free_arg);
    on_reap(-1, 0, loop);
    if (loop->dns)
        evdns_base_free(loop->dns, 1);
    if (loop->sched)
        event_free(loop->sched);
    if (loop->reaper)
        event_free(loop->reaper);
    if (loop->trim)
        event_free(loop->trim);
    coro_pool_free(loop->pool);
    if (loop->base)
        event_base_free(loop->base);
    if (current_loop == loop)
        current_loop = NULL;
    free(loop);
}

void loop_on_free(struct loop *loop, void (*fn)(void *arg), void *arg)
{
    loop->on_free = fn;
    loop->on_free_arg = arg;
}

struct loop *loop_current(void)
{
    return current_loop;
}

uint64_t loop_id(const struct loop *loop)
{
    return loop->id;
}

int loop_idle_priority(struct event *ev)
{
    return event_priority_set(ev, LOOP_PRIORITIES - 1);
}

struct event_base *loop_base(struct loop *loop)
{
    return loop->base;
}

struct evdns_base *loop_dns(struct loop *loop)
{
    if (!loop->dns)
        loop->dns = evdns_base_new(loop->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    return loop->dns;
}

int loop_spawn(struct loop *loop, void (*fn)(void *arg), void *arg, struct coro **out)
{
    struct coro *c;
    int err = coro_new(loop->pool, fn, arg, &c);
    if (err)
        return err;
    coro_slots(c)->loop = loop;
    loop->live++;
    loop_wake(c);
    if (out)
        *out = c;
    return 0;
}

void loop_wake(struct coro *c)
{
    struct coro_slots *s = coro_slots(c);
    struct loop *loop = s->loop;
    s->ready = true;
    if (s->queued)
        return;
    s->queued = true;
    s->run_next = NULL;
    if (loop->run_tail)
        coro_slots(loop->run_tail)->run_next = c;
    else
        loop->run_head = c;
    loop->run_tail = c;
    event_active(loop->sched, EV_TIMEOUT, 0);
}

void loop_consume_wake(struct coro *c)
{
    coro_slots(c)->ready = false;
}

static void trim_later(struct loop *loop)
{
    if (loop->trimming)
        return;
    struct timeval tv = {.tv_sec = 0, .tv_usec = LOOP_TRIM_MS * 1000};
    loop->trimming = event_add(loop->trim, &tv) == 0;
}

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *loop = arg;
    loop->trimming = false;
    if (coro_pool_trim(loop->pool, LOOP_TRIM_BATCH) > 0)
        trim_later(loop);
}

/* The scheduler: the only caller of coro_resume(), on the loop's stack. */
static void on_schedule(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *loop = arg;
    coro_resume_gate(true);
    loop_turn_now = 0; /* this pass's instant: read on first use */
    for (unsigned n = 0; loop->run_head && n < LOOP_PASS_MAX; n++) {
        struct coro *c = loop->run_head;
        struct coro_slots *s = coro_slots(c);
        loop->run_head = s->run_next;
        if (!loop->run_head)
            loop->run_tail = NULL;
        s->queued = false;
        s->run_next = NULL;
        if (coro_done(c)) {
            /* Woken while it ran, then it ended: released only now that
             * the queue no longer links it. */
            if (coro_release(c))
                trim_later(loop);
            continue;
        }
        if (!s->ready)
            continue;
        s->ready = false;
        coro_resume(c);
        if (coro_done(c)) {
            loop->live--;
            if (!s->queued && coro_release(c))
                trim_later(loop);
        }
    }
    coro_resume_gate(false);
    if (loop->run_head)
        event_active(loop->sched, EV_TIMEOUT, 0);
}

/*
 * event_base_dispatch() one turn at a time (EVLOOP_ONCE returns once a
 * turn has run callbacks and none is left active; a turn that must run
 * more polls without blocking), forgetting the cached instant in between.
 */
int loop_run(struct loop *loop)
{
    int r = 0;
    in_run = true;
    while (r == 0) {
        loop_turn_now = 0;
        r = event_base_loop(loop->base, EVLOOP_ONCE);
        if (event_base_got_exit(loop->base) || event_base_got_break(loop->base))
            break;
    }
    in_run = false;
    loop_turn_now = 0;
    return r < 0 ? -EIO : 0;
}

void loop_stop(struct loop *loop)
{
    event_base_loopexit(loop->base, NULL);
}

void loop_free_later(struct loop *loop, void (*fn)(void *obj), void *obj)
{
    struct free_later *f = malloc(sizeof(*f));
    if (!f) {
        /* Out of memory: freeing now is the lesser evil than leaking
         * forever; callers pass objects whose callbacks are gone. */
        fn(obj);
        return;
    }
    f->fn = fn;
    f->obj = obj;
    f->next = NULL;
    *loop->reap_tail = f;
    loop->reap_tail = &f->next;
    event_active(loop->reaper, EV_TIMEOUT, 0);
}

/* Runs after every callback already active when the objects were queued. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop *loop = arg;
    struct free_later *list = loop->reap_head;
    loop->reap_head = NULL;
    loop->reap_tail = &loop->reap_head;
    while (list) {
        struct free_later *next = list->next;
        list->fn(list->obj);
        free(list);
        list = next;
    }
}

unsigned loop_live(const struct loop *loop)
{
    return loop->live;
}

unsigned loop_pooled_stacks(const struct loop *loop)
{
    return coro_pool_idle(loop->pool);
}
