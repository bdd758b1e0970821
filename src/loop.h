/*
 * loop: one worker's event loop and its coroutine scheduler.
 *
 * Owns: the worker's event_base, its coroutine pool, the run queue and the
 * one scheduler event that empties it, and the "free at a safe point" list.
 *
 * The rule it enforces: callbacks never resume a coroutine. They call
 * loop_wake(), which marks the coroutine ready and pushes it on the run
 * queue once; the scheduler event, running on the loop's own stack,
 * resumes each ready coroutine. This removes re-entrancy
 * (evdns may call back synchronously) and use-after-free (a callback
 * touching an object its coroutine just freed).
 *
 * Calls: coro, libevent. Nothing here yields.
 */
#ifndef FERRY_LOOP_H
#define FERRY_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct coro;
struct event;
struct event_base;
struct evdns_base;
struct loop;

/* Deadlines are absolute CLOCK_MONOTONIC instants in nanoseconds; 0 means
 * no deadline. */
#define LOOP_NEVER ((int64_t)0)
#define LOOP_MS ((int64_t)1000000)
#define LOOP_SEC ((int64_t)1000000000)

/* Now, CLOCK_MONOTONIC, in nanoseconds. On a thread inside loop_run() it
 * is read once per loop turn and scheduler pass (a few µs of work): deadlines
 * and logged durations are off by at most that much. */
static inline int64_t loop_now(void);
/* loop_now() + after, or LOOP_NEVER when after <= 0 ("0s = none"). */
int64_t loop_deadline(int64_t after);
/* The earlier of two deadlines, LOOP_NEVER counting as the latest. */
int64_t loop_deadline_min(int64_t a, int64_t b);

/* loop_now()'s cache: this turn's instant, 0 when not read yet in this
 * turn or outside loop_run() (loop.c only writes it). Inline, because a
 * request asks for the time a dozen times. */
extern __thread int64_t loop_turn_now;
int64_t loop_now_read(void);
static inline int64_t loop_now(void)
{
    int64_t t = loop_turn_now;
    return t ? t : loop_now_read();
}

/*
 * Creates a loop for the calling thread (it becomes loop_current() there):
 * an event_base, a coroutine pool of stack_size stacks keeping at most
 * pool_cap released ones. Returns NULL on failure, and while the thread
 * has a loop already: one live loop per thread (io's wait records keep
 * timers across waits and rely on it).
 */
struct loop *loop_new(size_t stack_size, unsigned pool_cap);
/* Frees the loop; every coroutine must have ended. loop_free(NULL) is a no-op. */
void loop_free(struct loop *loop);
/* Runs fn(arg) first thing in loop_free, before the event base goes: a
 * layer above that keeps objects bound to the base frees them there (io's
 * pool of streams). One hook per loop; a second call replaces it. */
void loop_on_free(struct loop *loop, void (*fn)(void *arg), void *arg);
struct loop *loop_current(void);
struct event_base *loop_base(struct loop *loop);
/* The event base's priorities (loop_new): all events run at libevent's
 * default, the middle one, except loop_idle_new's. */
#define LOOP_PRIORITIES 3
/* Makes an event (not added yet) of the loop's base run only in a turn
 * where no other event is ready: work that may wait until a burst is
 * served. Event_active it, or add it with a timeout. Returns 0 or -1. */
int loop_idle_priority(struct event *ev);
/* A number no other loop of the process had or will have (a freed loop's
 * memory may come back as another loop: this tells them apart). */
uint64_t loop_id(const struct loop *loop);
/* The worker's evdns base, created on first use (numeric names need none). */
struct evdns_base *loop_dns(struct loop *loop);

/*
 * Starts fn(arg) as a new coroutine: it runs on the next scheduler pass.
 * Returns 0 and sets *out when out is not NULL, or -ENOMEM/-EAGAIN when
 * no stack could be mapped (the caller answers 503). The loop releases the
 * coroutine's stack when fn returns; *out must not be used after that.
 */
int loop_spawn(struct loop *loop, void (*fn)(void *arg), void *arg, struct coro **out);

/* Marks c ready and queues it once. Safe from any callback on c's thread,
 * also while c itself is running (it then runs again only if still ready
 * after it yields; io_wait clears readiness it consumed itself). */
void loop_wake(struct coro *c);

/* Marks the running coroutine not ready (the await layer consumed the wake). */
void loop_consume_wake(struct coro *c);

/* Runs the event loop until loop_stop(). */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/*
 * Frees obj with fn(obj) after the current callback chain, at the end of the
 * next scheduler pass, when no callback or coroutine of this pass can still
 * reference it.
 */
void loop_free_later(struct loop *loop, void (*fn)(void *obj), void *obj);

/* Coroutines started and not yet finished. */
unsigned loop_live(const struct loop *loop);
/* Stacks of ended coroutines kept mapped for reuse: at most the pool's cap
 * once the trim timer has caught up after a burst. */
unsigned loop_pooled_stacks(const struct loop *loop);

#endif
