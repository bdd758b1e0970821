/*
 * Unit tests for loop and io (Check): coroutines interleaving on one loop,
 * waits on sets, deadlines, signals, cancellation, stale timers and late
 * callbacks, connect, and the assertions that catch wrong use.
 *
 * Every test runs its loop until all coroutines ended (and a linger time
 * passed, so stale timers get their chance to fire), with a watchdog.
 * Coroutines only record what happened; the asserts run on the test's own
 * stack afterwards. Every test ends with loop_live() == 0 and
 * io_records_live() == 0. Network traffic stays on loopback: names resolve
 * through a hosts file or a fake DNS server on 127.0.0.1, never the
 * system's resolvers.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "check_helpers.h"
#include "coro.h"
#include "io.h"
#include "io_internal.h"
#include "loop.h"

#define MS(t) ((t) / LOOP_MS)
/* The test's own timers (event_base_once) run on libevent's clock, which is
 * CLOCK_MONOTONIC_COARSE (4 ms ticks) unless the base asks for precise
 * timers: instants they drive get this slack. Deadlines of io.c's own waits
 * are checked exactly in deadlines_never_early. */
#define SLACK_MS 5

/* --- scaffolding -------------------------------------------------------------- */

struct runner {
    struct loop *loop;
    int64_t min_end;
    const bool *until; /* also wait for this, when set */
    bool watchdog;
};

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct runner *r = arg;
    if (loop_live(r->loop) == 0 && loop_now() >= r->min_end && (!r->until || *r->until))
        loop_stop(r->loop);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct runner *r = arg;
    r->watchdog = true;
    loop_stop(r->loop);
}

/* Runs the loop until every coroutine ended, linger_ms passed and *until
 * (when not NULL) holds; fails when that takes more than 10 s. */
static void run_loop_until(struct loop *loop, int64_t linger_ms, const bool *until)
{
    struct runner r = {loop, loop_now() + linger_ms * LOOP_MS, until, false};
    struct event *poll = event_new(loop_base(loop), -1, EV_PERSIST, on_poll, &r);
    struct event *dog = evtimer_new(loop_base(loop), on_watchdog, &r);
    ck_assert_ptr_nonnull(poll);
    ck_assert_ptr_nonnull(dog);
    struct timeval tp = {0, 2000}, td = {10, 0};
    event_add(poll, &tp);
    event_add(dog, &td);
    loop_run(loop);
    event_free(poll);
    event_free(dog);
    ck_assert_msg(!r.watchdog, "watchdog: %u coroutines still live after 10 s", loop_live(loop));
}

/* Out of memory on demand: this program is linked with --wrap=malloc
 * (Makefile.am), so every malloc of libferry's code (not libevent's, a
 * shared library) comes here first. The next fail_left ones of exactly
 * fail_size bytes fail. */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static size_t fail_size;
static unsigned fail_left;

void *__wrap_malloc(size_t n)
{
    if (fail_left && n == fail_size) {
        fail_left--;
        return NULL;
    }
    return __real_malloc(n);
}

/* The next n mallocs of size bytes fail. */
static void fail_mallocs(size_t size, unsigned n)
{
    fail_size = size;
    fail_left = n;
}

/* Mallocs succeed again. Returns how many of the failures asked for were
 * left unused (0: every one happened). */
static unsigned fail_stop(void)
{
    unsigned left = fail_left;
    fail_left = 0;
    return left;
}

static void run_loop(struct loop *loop, int64_t linger_ms)
{
    run_loop_until(loop, linger_ms, NULL);
}

static struct loop *new_loop(unsigned pool_cap)
{
    struct loop *loop = loop_new(CORO_STACK_DEFAULT, pool_cap);
    ck_assert_ptr_nonnull(loop);
    ck_assert_ptr_eq(loop_current(), loop);
    ck_assert_ptr_nonnull(loop_base(loop));
    return loop;
}

/* Every coroutine ended; every wait record is gone, before and after the
 * loop is freed. */
static void end_loop(struct loop *loop)
{
    ck_assert_uint_eq(loop_live(loop), 0);
    ck_assert_uint_eq(io_records_live(), 0);
    loop_free(loop);
    ck_assert_uint_eq(io_records_live(), 0);
}

static struct coro *spawn(struct loop *loop, void (*fn)(void *), void *arg)
{
    struct coro *c = NULL;
    ck_assert_int_eq(loop_spawn(loop, fn, arg, &c), 0);
    ck_assert_ptr_nonnull(c);
    return c;
}

static void after_ms(struct loop *loop, int64_t ms, void (*fn)(evutil_socket_t, short, void *),
                     void *arg)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    ck_assert_int_eq(event_base_once(loop_base(loop), -1, EV_TIMEOUT, fn, arg, &tv), 0);
}

static void make_pair(int fds[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

/* A stream on fds[0]; fds[1] stays a raw descriptor the test writes to. */
static struct io_stream *pair_stream(struct loop *loop, int *peer, size_t read_max)
{
    int fds[2];
    make_pair(fds);
    struct io_stream *s = io_stream_from_fd(loop, fds[0], read_max);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(io_fd(s), fds[0]);
    *peer = fds[1];
    return s;
}

static void write_all(int fd, const void *p, size_t n)
{
    ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
}

/* Spins for ms milliseconds: libevent's time, cached when the loop turn
 * began, falls that far behind the clock. */
/* Burns CPU for ms milliseconds of the real clock (loop_now() stands still
 * within a loop turn). */
static void busy_ms(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t end = (int64_t)ts.tv_sec * LOOP_SEC + ts.tv_nsec + ms * LOOP_MS;
    do
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while ((int64_t)ts.tv_sec * LOOP_SEC + ts.tv_nsec < end);
}

/* Timer callback: writes one byte ("w") to the descriptor in arg. */
static void on_write_byte(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    int peer = *(int *)arg;
    if (write(peer, "w", 1) != 1)
        abort();
}

static uint16_t listener_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* A TCP listener on 127.0.0.1, ephemeral port. */
static int loopback_listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    *port = listener_port(fd);
    return fd;
}

/* A port on 127.0.0.1 that nobody listens on: bound once, then closed. */
static uint16_t dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    uint16_t port = listener_port(fd);
    close(fd);
    return port;
}

/* --- two coroutines interleave while one waits on a slow peer ------------------ */

static struct {
    struct io_stream *reader, *writer;
    int64_t t0, read_at, ticker_done;
    ssize_t got;
    char byte;
    unsigned ticks, ticks_at_read;
    int sleep_rc, write_rc;
} il;

static void il_reader(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    il.got = io_read(il.reader, b, 100, loop_deadline(2 * LOOP_SEC));
    il.read_at = loop_now();
    il.ticks_at_read = il.ticks;
    evbuffer_remove(b, &il.byte, 1);
    evbuffer_free(b);
}

static void il_slow_peer(void *arg)
{
    (void)arg;
    il.sleep_rc = io_sleep(il.t0 + 200 * LOOP_MS);
    il.write_rc = io_write(il.writer, "x", 1, 0, loop_deadline(LOOP_SEC));
}

static void il_ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        io_sleep(loop_deadline(10 * LOOP_MS));
        il.ticks++;
    }
    il.ticker_done = loop_now();
}

START_TEST(interleave_with_slow_peer)
{
    struct loop *loop = new_loop(8);
    int fds[2];
    make_pair(fds);
    il.reader = io_stream_from_fd(loop, fds[0], 4096);
    il.writer = io_stream_from_fd(loop, fds[1], 4096);
    ck_assert_ptr_nonnull(il.reader);
    ck_assert_ptr_nonnull(il.writer);
    il.t0 = loop_now();
    spawn(loop, il_reader, NULL);
    spawn(loop, il_slow_peer, NULL);
    spawn(loop, il_ticker, NULL);
    ck_assert_uint_eq(loop_live(loop), 3);
    run_loop(loop, 0);
    ck_assert_int_eq(il.sleep_rc, 0);
    ck_assert_int_eq(il.write_rc, 0);
    ck_assert_int_eq(il.got, 1);
    ck_assert_int_eq(il.byte, 'x');
    ck_assert_int_ge(MS(il.read_at - il.t0), 200 - SLACK_MS);
    ck_assert_int_lt(MS(il.read_at - il.t0), 1000);
    /* The ticker ran all its turns while the reader waited. */
    /* The ticker ran turns while the reader waited: 10 of them, unless the
     * machine stalls the loop for long. */
    ck_assert_uint_ge(il.ticks_at_read, 2);
    ck_assert_uint_eq(il.ticks, 10);
    ck_assert_int_lt(MS(il.ticker_done - il.t0), 1000);
    io_stream_free(il.reader);
    io_stream_free(il.writer);
    end_loop(loop);
}
END_TEST

/* --- stale timers ------------------------------------------------------------------ */

static struct {
    struct io_stream *s;
    int peer;
    struct coro *c;
    int64_t t0, t1, t2, t3;
    int r1, r2, r3;
    unsigned f1, f2;
} st;

static void st_readable_fn(void *arg)
{
    (void)arg;
    struct io_want w = {.stream = st.s, .events = IO_READABLE, .read_min = 1};
    st.r1 = io_wait(&w, 1, st.t0 + 300 * LOOP_MS); /* data at 10 ms ends it */
    st.f1 = w.fired;
    st.t1 = loop_now();
    evbuffer_drain(io_input(st.s), evbuffer_get_length(io_input(st.s)));
    w.fired = 0;
    st.r2 = io_wait(&w, 1, st.t0 + 1000 * LOOP_MS); /* data at 500 ms, not the 300 ms timer */
    st.f2 = w.fired;
    st.t2 = loop_now();
}

START_TEST(stale_timer_does_not_end_next_wait)
{
    struct loop *loop = new_loop(8);
    st.s = pair_stream(loop, &st.peer, 4096);
    st.t0 = loop_now();
    spawn(loop, st_readable_fn, NULL);
    after_ms(loop, 10, on_write_byte, &st.peer);
    after_ms(loop, 500, on_write_byte, &st.peer);
    run_loop(loop, 1100);
    /* Wide margins: a loaded machine may hold the 10 ms write back by
     * 100 ms and more; the stale timer still fires between the waits. */
    ck_assert_int_eq(st.r1, 1);
    ck_assert_uint_eq(st.f1, IO_READABLE);
    ck_assert_int_lt(MS(st.t1 - st.t0), 300);
    ck_assert_msg(st.r2 == 1, "second wait returned %d after %lld ms", st.r2,
                  (long long)MS(st.t2 - st.t0));
    ck_assert_uint_eq(st.f2, IO_READABLE);
    ck_assert_int_ge(MS(st.t2 - st.t0), 500 - SLACK_MS);
    io_stream_free(st.s);
    close(st.peer);
    end_loop(loop);
}
END_TEST

static void on_signal_st(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    io_signal(st.c);
}

static void st_signal_fn(void *arg)
{
    (void)arg;
    struct io_want w = {.stream = NULL, .events = IO_SIGNAL};
    st.r1 = io_wait(&w, 1, st.t0 + 40 * LOOP_MS); /* the signal at 10 ms ends it */
    st.f1 = w.fired;
    st.t1 = loop_now();
    st.r2 = io_sleep(st.t0 + 150 * LOOP_MS); /* not ended by the 40 ms timer */
    st.t2 = loop_now();
    w.fired = 0;
    st.r3 = io_wait(&w, 1, st.t0 + 250 * LOOP_MS); /* no signal left over */
    st.f2 = w.fired;
    st.t3 = loop_now();
}

START_TEST(stale_timer_after_signal)
{
    struct loop *loop = new_loop(8);
    st.t0 = loop_now();
    st.c = spawn(loop, st_signal_fn, NULL);
    after_ms(loop, 10, on_signal_st, NULL);
    run_loop(loop, 300);
    ck_assert_int_eq(st.r1, 1);
    ck_assert_uint_eq(st.f1, IO_SIGNAL);
    ck_assert_int_lt(MS(st.t1 - st.t0), 140);
    ck_assert_int_eq(st.r2, 0);
    ck_assert_int_ge(MS(st.t2 - st.t0), 150 - SLACK_MS);
    ck_assert_int_eq(st.r3, -ETIMEDOUT);
    ck_assert_uint_eq(st.f2, 0);
    ck_assert_int_ge(MS(st.t3 - st.t0), 250 - SLACK_MS);
    end_loop(loop);
}
END_TEST

/* A wait record keeps its pending timer across waits and in the free list
 * (io.c, struct wait_rec). A thread has one live loop at a time, so a
 * record whose loop was freed is re-armed on the next loop cleanly: its
 * next wait ends at its own deadline, and freeing the loops touches no
 * freed memory (meaningful under ASan). */
static void lr_wait_fn(void *arg)
{
    (void)arg;
    struct io_want w = {.stream = NULL, .events = IO_SIGNAL};
    st.r1 = io_wait(&w, 1, loop_now() + 10 * LOOP_SEC); /* the signal ends it */
}

static void lr_sleep_fn(void *arg)
{
    (void)arg;
    st.t1 = loop_now();
    st.r2 = io_sleep(st.t1 + 30 * LOOP_MS);
    st.t2 = loop_now();
}

START_TEST(record_timer_across_loops)
{
    struct loop *a = new_loop(8);
    st.c = spawn(a, lr_wait_fn, NULL);
    after_ms(a, 5, on_signal_st, NULL);
    run_loop(a, 100);
    ck_assert_int_eq(st.r1, 1); /* its record went back with a 10 s timer pending */
    ck_assert_ptr_null(loop_new(CORO_STACK_DEFAULT, 8)); /* one live loop per thread */
    end_loop(a);
    struct loop *b = new_loop(8);
    spawn(b, lr_sleep_fn, NULL);
    run_loop(b, 0);
    ck_assert_int_eq(st.r2, 0);
    ck_assert_int_ge(MS(st.t2 - st.t1), 30 - SLACK_MS);
    ck_assert_int_lt(MS(st.t2 - st.t1), 1000);
    end_loop(b);
}
END_TEST

/* --- late callbacks after cancel (meaningful under ASan; pool cap 0 unmaps
 * every finished stack, so a touch of one faults in any build) ------------ */

static struct {
    struct io_stream *s;
    int peer;
    struct coro *a, *c;
    int64_t t0, ta;
    int ra, rb, rc1, rc2;
    char bbyte;
    int waited_after;
    unsigned c_runs;
} lc;

static void lc_a(void *arg)
{
    (void)arg;
    struct io_want w = {.stream = lc.s, .events = IO_READABLE, .read_min = 1};
    lc.ra = io_wait(&w, 1, lc.t0 + 300 * LOOP_MS);
    lc.ta = loop_now();
}

static void lc_b(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    lc.rb = (int)io_read(lc.s, b, 10, loop_deadline(LOOP_SEC));
    evbuffer_remove(b, &lc.bbyte, 1);
    evbuffer_free(b);
}

/* Waits for a signal; gets cancelled and signalled in one callback. */
static void lc_c(void *arg)
{
    (void)arg;
    lc.c_runs++;
    struct io_want w = {.stream = NULL, .events = IO_SIGNAL};
    lc.rc1 = io_wait(&w, 1, lc.t0 + 300 * LOOP_MS);
    lc.rc2 = io_sleep(lc.t0 + 300 * LOOP_MS); /* cancelled: returns at once */
}

static void on_cancel_then_data(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    coro_cancel(lc.a);
    if (write(lc.peer, "q", 1) != 1)
        abort();
    io_signal(lc.c);
    coro_cancel(lc.c);
    io_signal(lc.c);
}

static void on_after_cancel(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    lc.waited_after = io_waited(lc.s);
    spawn(loop_current(), lc_b, NULL);
}

START_TEST(late_callbacks_after_cancel_touch_nothing_freed)
{
    struct loop *loop = new_loop(0);
    lc.s = pair_stream(loop, &lc.peer, 4096);
    lc.t0 = loop_now();
    lc.waited_after = -1;
    lc.a = spawn(loop, lc_a, NULL);
    lc.c = spawn(loop, lc_c, NULL);
    after_ms(loop, 20, on_cancel_then_data, NULL);
    after_ms(loop, 60, on_after_cancel, NULL);
    run_loop(loop, 400); /* past the cancelled waits' 300 ms deadlines */
    ck_assert_int_eq(lc.ra, -ECANCELED);
    ck_assert_int_lt(MS(lc.ta - lc.t0), 290); /* before its 300 ms deadline */
    ck_assert_int_eq(lc.waited_after, 0);
    ck_assert_int_eq(lc.rb, 1);
    ck_assert_int_eq(lc.bbyte, 'q');
    ck_assert_uint_eq(lc.c_runs, 1);
    ck_assert_msg(lc.rc1 == -ECANCELED || lc.rc1 == 1, "rc1 %d", lc.rc1);
    ck_assert_int_eq(lc.rc2, -ECANCELED);
    io_stream_free(lc.s);
    close(lc.peer);
    end_loop(loop);
}
END_TEST

/* --- deadlines: a trickling peer --------------------------------------------- */

static struct {
    struct io_stream *s;
    int peer;
    struct event *tick;
    int64_t t0, t_end, t_end2;
    ssize_t last;
    int last2;
    size_t bytes;
    unsigned reads;
} tr;

static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (write(tr.peer, "t", 1) != 1)
        abort();
}

static void tr_reader(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    int64_t deadline = loop_deadline(500 * LOOP_MS);
    tr.t0 = loop_now();
    for (;;) {
        tr.last = io_read(tr.s, b, 4096, deadline);
        if (tr.last <= 0)
            break;
        tr.bytes += (size_t)tr.last;
        tr.reads++;
    }
    tr.t_end = loop_now();
    /* Same with io_read_at_least: 100 bytes never come. */
    deadline = loop_deadline(500 * LOOP_MS);
    int64_t t1 = loop_now();
    tr.last2 = io_read_at_least(tr.s, 100, deadline);
    tr.t_end2 = loop_now() - t1;
    evbuffer_free(b);
}

START_TEST(trickle_gets_etimedout_at_deadline)
{
    struct loop *loop = new_loop(8);
    tr.s = pair_stream(loop, &tr.peer, 4096);
    tr.tick = event_new(loop_base(loop), -1, EV_PERSIST, on_trickle, NULL);
    struct timeval tv = {0, 100000};
    event_add(tr.tick, &tv);
    spawn(loop, tr_reader, NULL);
    run_loop(loop, 0);
    event_free(tr.tick);
    ck_assert_int_eq(tr.last, -ETIMEDOUT);
    int64_t ms = MS(tr.t_end - tr.t0);
    /* Never early; late only by what a loaded machine delays a timer (a
     * deadline that each byte pushed back would not end before the
     * trickle does). */
    ck_assert_msg(ms >= 450 && ms <= 800, "-ETIMEDOUT after %lld ms, want 500 (-50, +300)",
                  (long long)ms);
    ck_assert_uint_ge(tr.reads, 3); /* the trickle did arrive, one byte at a time */
    ck_assert_uint_le(tr.reads, 5);
    ck_assert_uint_eq(tr.bytes, tr.reads);
    ck_assert_int_eq(tr.last2, -ETIMEDOUT);
    ms = MS(tr.t_end2);
    ck_assert_msg(ms >= 450 && ms <= 550, "read_at_least: -ETIMEDOUT after %lld ms", (long long)ms);
    io_stream_free(tr.s);
    close(tr.peer);
    end_loop(loop);
}
END_TEST

/* --- connect ------------------------------------------------------------------------ */

static struct {
    uint16_t port;
    int r1, r2;
    int64_t elapsed;
    struct io_stream *s1, *s2;
} cr;

static void cr_fn(void *arg)
{
    (void)arg;
    int64_t t0 = loop_now();
    cr.r1 = io_connect(loop_current(), "127.0.0.1", cr.port, 4096, loop_deadline(2 * LOOP_SEC),
                       NULL, &cr.s1);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons(cr.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr.r2 = io_connect_addr(loop_current(), (struct sockaddr *)&sin, sizeof sin, 4096,
                            loop_deadline(2 * LOOP_SEC), NULL, &cr.s2);
    cr.elapsed = loop_now() - t0;
}

START_TEST(connect_refused)
{
    struct loop *loop = new_loop(8);
    cr.port = dead_port();
    spawn(loop, cr_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(cr.r1, -ECONNREFUSED);
    ck_assert_int_eq(cr.r2, -ECONNREFUSED);
    ck_assert_int_lt(MS(cr.elapsed), 1000);
    end_loop(loop);
}
END_TEST

/* A fake DNS server on 127.0.0.1: answers A queries with 127.0.0.1 and
 * AAAA queries with no data, after delay_ms. */
struct fake_dns {
    int fd;
    uint16_t port;
    struct event *ev;
    int64_t delay_ms;
    bool nxdomain; /* answer "no such name" instead */
    unsigned queries, answered;
    unsigned nq;
    struct {
        unsigned char buf[512];
        size_t len;
        struct sockaddr_in from;
    } q[8];
};

static struct fake_dns dns;

static void dns_answer_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (unsigned n = 0; n < dns.nq; n++) {
        unsigned char *in = dns.q[n].buf;
        size_t len = dns.q[n].len, p = 12;
        if (len < 12)
            continue;
        while (p < len && in[p] != 0)
            p += (size_t)in[p] + 1;
        p += 1;
        if (p + 4 > len)
            continue;
        unsigned qtype = (unsigned)in[p] << 8 | in[p + 1];
        p += 4;
        unsigned char out[600];
        memcpy(out, in, p);
        out[2] = (unsigned char)(0x80 | (in[2] & 0x01)); /* QR, RD as asked */
        out[3] = dns.nxdomain ? 0x83 : 0x80;             /* RA, NOERROR or NXDOMAIN */
        out[6] = 0;
        out[7] = qtype == 1 && !dns.nxdomain ? 1 : 0; /* ANCOUNT */
        memset(out + 8, 0, 4);                        /* NSCOUNT, ARCOUNT */
        size_t o = p;
        if (out[7] == 1) {
            static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0,   1, 0, 0,
                                               0,    60,   0, 4, 127, 0, 0, 1};
            memcpy(out + o, rr, sizeof rr);
            o += sizeof rr;
        }
        sendto(dns.fd, out, o, 0, (struct sockaddr *)&dns.q[n].from, sizeof dns.q[n].from);
        dns.answered++;
    }
    dns.nq = 0;
}

static void on_dns_query(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct loop *loop = arg;
    for (;;) {
        struct sockaddr_in from;
        socklen_t flen = sizeof from;
        unsigned char buf[512];
        ssize_t k = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (k <= 0)
            break;
        dns.queries++;
        if (dns.nq < 8) {
            memcpy(dns.q[dns.nq].buf, buf, (size_t)k);
            dns.q[dns.nq].len = (size_t)k;
            dns.q[dns.nq].from = from;
            dns.nq++;
        }
        if (dns.delay_ms == 0)
            dns_answer_all(-1, 0, NULL);
        else if (dns.nq == 1)
            after_ms(loop, dns.delay_ms, dns_answer_all, NULL);
    }
}

/*
 * Points the loop's evdns at the fake server only (no search domains, no
 * system resolvers) and, when hosts_line is set, loads a hosts file that
 * answers that name synchronously.
 */
static void fake_dns_setup(struct loop *loop, int64_t delay_ms, const char *hosts_line)
{
    memset(&dns, 0, sizeof dns);
    dns.delay_ms = delay_ms;
    dns.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(dns.fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(dns.fd, (struct sockaddr *)&sin, sizeof sin), 0);
    dns.port = listener_port(dns.fd);
    dns.ev = event_new(loop_base(loop), dns.fd, EV_READ | EV_PERSIST, on_dns_query, loop);
    event_add(dns.ev, NULL);

    struct evdns_base *base = loop_dns(loop);
    ck_assert_ptr_nonnull(base);
    ck_assert_int_eq(evdns_base_clear_nameservers_and_suspend(base), 0);
    evdns_base_search_clear(base);
    char ns[64];
    snprintf(ns, sizeof ns, "127.0.0.1:%u", (unsigned)dns.port);
    ck_assert_int_eq(evdns_base_nameserver_ip_add(base, ns), 0);
    ck_assert_int_eq(evdns_base_resume(base), 0);
    if (hosts_line) {
        char path[] = "/tmp/ferry-test-hosts-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        write_all(fd, hosts_line, strlen(hosts_line));
        close(fd);
        ck_assert_int_eq(evdns_base_load_hosts(base, path), 0);
        unlink(path);
    }
}

static void fake_dns_free(void)
{
    event_free(dns.ev);
    close(dns.fd);
}

static struct {
    uint16_t port;
    const char *host;
    int64_t deadline_ms, t_connect, t_sleep;
    int rc, rsleep, rwrite;
    struct io_stream *s;
    struct io_stream *watch; /* the connect's watched stream, or NULL */
    uint16_t peer_port;
    unsigned concurrent;
} dc;

static void dc_fn(void *arg)
{
    (void)arg;
    int64_t t0 = loop_now();
    dc.rc = io_connect(loop_current(), dc.host, dc.port, 4096,
                       loop_deadline(dc.deadline_ms * LOOP_MS), dc.watch, &dc.s);
    dc.t_connect = loop_now() - t0;
    if (dc.rc != 0)
        return;
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(io_fd(dc.s), (struct sockaddr *)&peer, &len) == 0)
        dc.peer_port = ntohs(peer.sin_port);
    dc.rwrite = io_write(dc.s, "ping", 4, 0, loop_deadline(LOOP_SEC));
    /* A wake left over from the synchronous answer would end this early. */
    t0 = loop_now();
    dc.rsleep = io_sleep(loop_deadline(50 * LOOP_MS));
    dc.t_sleep = loop_now() - t0;
}

/* Runs alongside: proves the loop is not stuck inside the lookup. */
static void dc_other(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        io_sleep(loop_deadline(5 * LOOP_MS));
        dc.concurrent++;
    }
}

/* Accepts the one connection the coroutine made and reads "ping". */
static void assert_pinged(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    char buf[8] = {0};
    ck_assert_int_eq(read(fd, buf, 4), 4);
    ck_assert_str_eq(buf, "ping");
    close(fd);
}

static void no_pending_connection(int lfd)
{
    int fl = fcntl(lfd, F_GETFL);
    fcntl(lfd, F_SETFL, fl | O_NONBLOCK);
    int fd = accept(lfd, NULL, NULL);
    ck_assert_msg(fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "a connection was made after the wait ended");
}

START_TEST(connect_numeric_skips_dns)
{
    struct loop *loop = new_loop(8);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 0, NULL);
    dc.host = "127.0.0.1";
    dc.deadline_ms = 2000;
    spawn(loop, dc_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(dc.rc, 0);
    ck_assert_uint_eq(dc.peer_port, dc.port);
    ck_assert_int_eq(dc.rwrite, 0);
    ck_assert_uint_eq(dns.queries, 0);
    assert_pinged(lfd);
    io_stream_free(dc.s);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

START_TEST(connect_name_synchronous_answer_no_reentry)
{
    struct loop *loop = new_loop(8);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 0, "127.0.0.1 peer.ferry.test\n");
    dc.host = "peer.ferry.test";
    dc.deadline_ms = 2000;
    spawn(loop, dc_fn, NULL);
    spawn(loop, dc_other, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(dc.rc, 0);
    ck_assert_uint_eq(dns.queries, 0); /* answered from the hosts file, synchronously */
    ck_assert_int_lt(MS(dc.t_connect), 1500);
    ck_assert_uint_eq(dc.peer_port, dc.port);
    ck_assert_int_eq(dc.rwrite, 0);
    ck_assert_int_eq(dc.rsleep, 0);
    ck_assert_int_ge(MS(dc.t_sleep), 50 - SLACK_MS);
    ck_assert_uint_eq(dc.concurrent, 3);
    assert_pinged(lfd);
    io_stream_free(dc.s);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

START_TEST(connect_name_through_evdns)
{
    struct loop *loop = new_loop(8);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 0, NULL);
    dc.host = "peer.ferry.test";
    dc.deadline_ms = 3000;
    spawn(loop, dc_fn, NULL);
    spawn(loop, dc_other, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(dc.rc, 0);
    ck_assert_uint_ge(dns.queries, 1);
    ck_assert_uint_eq(dc.peer_port, dc.port);
    ck_assert_int_eq(dc.rsleep, 0);
    ck_assert_int_ge(MS(dc.t_sleep), 50 - SLACK_MS);
    assert_pinged(lfd);
    io_stream_free(dc.s);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

START_TEST(connect_name_not_found)
{
    struct loop *loop = new_loop(8);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 0, NULL);
    dns.nxdomain = true;
    dc.host = "nowhere.ferry.test";
    dc.deadline_ms = 3000;
    spawn(loop, dc_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(dc.rc, -EHOSTUNREACH);
    ck_assert_uint_ge(dns.answered, 1);
    ck_assert_int_lt(MS(dc.t_connect), 1000);
    no_pending_connection(lfd);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

/* The answer comes at 300 ms, after the wait timed out at 100 ms and the
 * coroutine's stack was unmapped (pool cap 0): the late evdns callback finds
 * an orphaned record and connects nowhere. */
START_TEST(connect_name_late_answer_after_timeout)
{
    struct loop *loop = new_loop(0);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 300, NULL);
    dc.host = "peer.ferry.test";
    dc.deadline_ms = 100;
    spawn(loop, dc_fn, NULL);
    run_loop(loop, 500);
    ck_assert_int_eq(dc.rc, -ETIMEDOUT);
    ck_assert_int_ge(MS(dc.t_connect), 100 - SLACK_MS);
    ck_assert_int_lt(MS(dc.t_connect), 1500); /* not hung; rc says it was not the answer */
    ck_assert_uint_ge(dns.queries, 1);
    ck_assert_uint_ge(dns.answered, 1);
    no_pending_connection(lfd);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

/* A lookup that gets no answer ends at its deadline, not before, even when
 * the loop turn that started it ran long (libevent's cached time is then
 * behind the clock). */
static struct {
    int rc;
    int64_t late;
} dn;

static void dn_fn(void *arg)
{
    (void)arg;
    struct io_stream *s = NULL;
    busy_ms(20);
    int64_t d = loop_deadline(60 * LOOP_MS);
    dn.rc = io_connect(loop_current(), "peer.ferry.test", dc.port, 4096, d, NULL, &s);
    dn.late = loop_now() - d;
    io_stream_free(s);
}

START_TEST(connect_name_timeout_not_early)
{
    struct loop *loop = new_loop(8);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 2000, NULL); /* answers after the test ended */
    spawn(loop, dn_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(dn.rc, -ETIMEDOUT);
    ck_assert_msg(dn.late >= 0, "the lookup timed out %lld us before its deadline",
                  (long long)(-dn.late / 1000));
    ck_assert_int_lt(MS(dn.late), 300); /* not the answer's 2 s either */
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

static struct coro *dc_coro;

static void on_cancel_dc(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    coro_cancel(dc_coro);
}

static int watch_peer_fd = -1;

static void on_close_watch_peer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    close(watch_peer_fd);
    watch_peer_fd = -1;
}

/* The watched stream (a request's client) ends during the lookup: the
 * connect stops at once with -ECONNABORTED and connects nowhere, also
 * when the answer comes later; a watch that ended before the call stops
 * it before any lookup. */
START_TEST(connect_name_watch_ends_during_lookup)
{
    struct loop *loop = new_loop(0);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 300, NULL);
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    struct io_stream *watch = io_stream_accepted(loop, fds[0], 4096); /* lazy, as a client */
    watch_peer_fd = fds[1];
    dc.host = "peer.ferry.test";
    dc.deadline_ms = 2000;
    dc.watch = watch;
    spawn(loop, dc_fn, NULL);
    after_ms(loop, 50, on_close_watch_peer, NULL);
    run_loop(loop, 500);
    ck_assert_int_eq(dc.rc, -ECONNABORTED);
    ck_assert_int_ge(MS(dc.t_connect), 50 - SLACK_MS);
    ck_assert_int_lt(MS(dc.t_connect), 250); /* before the answer */
    ck_assert_uint_ge(dns.answered, 1);
    no_pending_connection(lfd);
    /* Already ended: stops before any lookup. */
    spawn(loop, dc_fn, NULL);
    run_loop(loop, 50);
    ck_assert_int_eq(dc.rc, -ECONNABORTED);
    ck_assert_int_lt(MS(dc.t_connect), SLACK_MS);
    dc.watch = NULL;
    io_stream_free(watch);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

START_TEST(connect_name_cancelled_during_lookup)
{
    struct loop *loop = new_loop(0);
    int lfd = loopback_listener(&dc.port);
    fake_dns_setup(loop, 300, NULL);
    dc.host = "peer.ferry.test";
    dc.deadline_ms = 2000;
    dc_coro = spawn(loop, dc_fn, NULL);
    after_ms(loop, 50, on_cancel_dc, NULL);
    run_loop(loop, 500);
    ck_assert_int_eq(dc.rc, -ECANCELED);
    ck_assert_int_lt(MS(dc.t_connect), 1500); /* not hung; rc says it was not the answer */
    ck_assert_uint_ge(dns.answered, 1);
    no_pending_connection(lfd);
    fake_dns_free();
    close(lfd);
    end_loop(loop);
}
END_TEST

/* --- io_wait on sets ------------------------------------------------------------------- */

static struct {
    struct io_stream *s1, *s2;
    int p1, p2;
    int r[8];
    unsigned fired[8][3];
    int64_t t0, t[8];
    size_t len;
    int eof_read;
    bool eof;
    int err;
} ws;

static void on_ws_write5(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (write(ws.p2, "12345", 5) != 5)
        abort();
}

static void on_ws_close1(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    close(ws.p1);
    ws.p1 = -1;
}

static void ws_fn(void *arg)
{
    (void)arg;
    struct io_want w[3] = {
        {.stream = ws.s1, .events = IO_READABLE | IO_EOF, .read_min = 1},
        {.stream = ws.s2, .events = IO_READABLE | IO_EOF, .read_min = 1},
        {.stream = NULL, .events = IO_SIGNAL},
    };
    /* 0: s2 gets a byte at 30 ms. */
    ws.r[0] = io_wait(w, 3, loop_deadline(LOOP_SEC));
    ws.t[0] = loop_now();
    for (int i = 0; i < 3; i++)
        ws.fired[0][i] = w[i].fired;
    /* 1: s2 still holds it: returns at once. */
    for (int i = 0; i < 3; i++)
        w[i].fired = 0;
    int64_t t = loop_now();
    ws.r[1] = io_wait(w, 3, loop_deadline(LOOP_SEC));
    ws.t[1] = loop_now() - t;
    for (int i = 0; i < 3; i++)
        ws.fired[1][i] = w[i].fired;
    /* 2: nothing comes: -ETIMEDOUT, nothing fired. */
    evbuffer_drain(io_input(ws.s2), evbuffer_get_length(io_input(ws.s2)));
    for (int i = 0; i < 3; i++)
        w[i].fired = 0;
    t = loop_now();
    ws.r[2] = io_wait(w, 3, loop_deadline(60 * LOOP_MS));
    ws.t[2] = loop_now() - t;
    for (int i = 0; i < 3; i++)
        ws.fired[2][i] = w[i].fired;
    /* 3: read_min 10: 5 bytes at +20 ms do not end it, 5 more at +60 ms do. */
    struct io_want m = {.stream = ws.s2, .events = IO_READABLE, .read_min = 10};
    after_ms(loop_current(), 20, on_ws_write5, NULL);
    after_ms(loop_current(), 60, on_ws_write5, NULL);
    t = loop_now();
    ws.r[3] = io_wait(&m, 1, loop_deadline(LOOP_SEC));
    ws.t[3] = loop_now() - t;
    ws.fired[3][0] = m.fired;
    ws.len = evbuffer_get_length(io_input(ws.s2));
    /* 4: s1's peer closes at +20 ms. */
    struct io_want e = {.stream = ws.s1, .events = IO_EOF};
    after_ms(loop_current(), 20, on_ws_close1, NULL);
    ws.r[4] = io_wait(&e, 1, loop_deadline(LOOP_SEC));
    ws.fired[4][0] = e.fired;
    ws.eof = io_eof(ws.s1);
    ws.err = io_error(ws.s1);
    struct evbuffer *b = evbuffer_new();
    ws.eof_read = (int)io_read(ws.s1, b, 10, loop_deadline(LOOP_SEC));
    evbuffer_free(b);
}

START_TEST(wait_set_returns_which_fired)
{
    struct loop *loop = new_loop(8);
    ws.s1 = pair_stream(loop, &ws.p1, 4096);
    ws.s2 = pair_stream(loop, &ws.p2, 4096);
    ws.t0 = loop_now();
    spawn(loop, ws_fn, NULL);
    after_ms(loop, 30, on_write_byte, &ws.p2);
    run_loop(loop, 0);
    ck_assert_int_eq(ws.r[0], 1);
    ck_assert_int_ge(MS(ws.t[0] - ws.t0), 30 - SLACK_MS);
    ck_assert_uint_eq(ws.fired[0][0], 0);
    ck_assert_uint_eq(ws.fired[0][1], IO_READABLE);
    ck_assert_uint_eq(ws.fired[0][2], 0);
    ck_assert_int_eq(ws.r[1], 1);
    ck_assert_int_lt(MS(ws.t[1]), 200); /* at once (a stalled CI machine aside) */
    ck_assert_uint_eq(ws.fired[1][1], IO_READABLE);
    ck_assert_uint_eq(ws.fired[1][0] | ws.fired[1][2], 0);
    ck_assert_int_eq(ws.r[2], -ETIMEDOUT);
    ck_assert_int_ge(MS(ws.t[2]), 60 - SLACK_MS);
    ck_assert_uint_eq(ws.fired[2][0] | ws.fired[2][1] | ws.fired[2][2], 0);
    ck_assert_int_eq(ws.r[3], 1);
    ck_assert_uint_eq(ws.fired[3][0], IO_READABLE);
    ck_assert_uint_ge(ws.len, 10);
    ck_assert_int_ge(MS(ws.t[3]), 60 - SLACK_MS); /* not at the first 5 bytes (+20 ms) */
    ck_assert_int_eq(ws.r[4], 1);
    ck_assert_uint_eq(ws.fired[4][0], IO_EOF);
    ck_assert(ws.eof);
    ck_assert_int_eq(ws.err, 0);
    ck_assert_int_eq(ws.eof_read, 0);
    io_stream_free(ws.s1);
    io_stream_free(ws.s2);
    close(ws.p2);
    end_loop(loop);
}
END_TEST

/* --- io_signal, io_sleep ------------------------------------------------------------ */

static struct {
    struct coro *a;
    int64_t t0, t[4];
    int r[4];
    unsigned fired[4];
} sg;

static void sg_a(void *arg)
{
    (void)arg;
    struct io_want w = {.events = IO_SIGNAL};
    sg.r[0] = io_wait(&w, 1, loop_deadline(LOOP_SEC)); /* B signals at 30 ms */
    sg.fired[0] = w.fired;
    sg.t[0] = loop_now();
    sg.r[1] = io_sleep(sg.t0 + 100 * LOOP_MS); /* B signals at 50 ms: no effect on sleep */
    sg.t[1] = loop_now();
    w.fired = 0;
    int64_t t = loop_now();
    sg.r[2] = io_wait(&w, 1, loop_deadline(LOOP_SEC)); /* the pending signal: at once */
    sg.fired[2] = w.fired;
    sg.t[2] = loop_now() - t;
    w.fired = 0;
    t = loop_now();
    sg.r[3] = io_wait(&w, 1, loop_deadline(50 * LOOP_MS)); /* consumed: times out */
    sg.fired[3] = w.fired;
    sg.t[3] = loop_now() - t;
}

static void sg_b(void *arg)
{
    (void)arg;
    io_sleep(sg.t0 + 30 * LOOP_MS);
    io_signal(sg.a);
    /* Signals are a flag, not a count: send the second only once A took
     * the first (normally at 50 ms, while A sleeps). */
    io_sleep(sg.t0 + 50 * LOOP_MS);
    for (int i = 0; i < 1000 && sg.t[0] == 0; i++)
        io_sleep(loop_deadline(LOOP_MS));
    io_signal(sg.a);
}

START_TEST(signal_between_coroutines)
{
    struct loop *loop = new_loop(8);
    sg.t0 = loop_now();
    sg.a = spawn(loop, sg_a, NULL);
    spawn(loop, sg_b, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(sg.r[0], 1);
    ck_assert_uint_eq(sg.fired[0], IO_SIGNAL);
    ck_assert_int_ge(MS(sg.t[0] - sg.t0), 30 - SLACK_MS);
    ck_assert_int_lt(MS(sg.t[0] - sg.t0), 500); /* the signal, not the 1 s deadline */
    ck_assert_int_eq(sg.r[1], 0);
    ck_assert_int_ge(MS(sg.t[1] - sg.t0), 100 - SLACK_MS);
    ck_assert_int_eq(sg.r[2], 1);
    ck_assert_uint_eq(sg.fired[2], IO_SIGNAL);
    ck_assert_int_lt(MS(sg.t[2]), 200); /* at once (a stalled CI machine aside) */
    ck_assert_int_eq(sg.r[3], -ETIMEDOUT);
    ck_assert_uint_eq(sg.fired[3], 0);
    ck_assert_int_ge(MS(sg.t[3]), 50 - SLACK_MS);
    end_loop(loop);
}
END_TEST

/* A signal sent before the coroutine ever waited is kept for its first
 * IO_SIGNAL wait, and consumed by it. */
static struct {
    int r[2];
    int64_t t[2];
} sp;

static void sp_fn(void *arg)
{
    (void)arg;
    struct io_want w = {.events = IO_SIGNAL};
    int64_t t = loop_now();
    sp.r[0] = io_wait(&w, 1, loop_deadline(LOOP_SEC));
    sp.t[0] = loop_now() - t;
    t = loop_now();
    sp.r[1] = io_wait(&w, 1, loop_deadline(30 * LOOP_MS));
    sp.t[1] = loop_now() - t;
}

START_TEST(signal_before_first_wait)
{
    struct loop *loop = new_loop(8);
    struct coro *c = spawn(loop, sp_fn, NULL);
    io_signal(c); /* not started yet, so not waiting */
    run_loop(loop, 0);
    ck_assert_int_eq(sp.r[0], 1);
    ck_assert_int_lt(MS(sp.t[0]), 200); /* at once (a stalled CI machine aside) */
    ck_assert_int_eq(sp.r[1], -ETIMEDOUT);
    ck_assert_int_ge(MS(sp.t[1]), 30 - SLACK_MS);
    end_loop(loop);
}
END_TEST

/* loop.h: loop_wake() is safe "also while c itself is running". A coroutine
 * that wakes itself and then ends must not be resumed or touched again
 * (pool cap 0: its stack and struct are unmapped when it ends). */
static unsigned ws_runs;

static void wake_self_fn(void *arg)
{
    (void)arg;
    ws_runs++;
    loop_wake(coro_current());
}

static void wake_self_yield_fn(void *arg)
{
    (void)arg;
    ws_runs++;
    loop_wake(coro_current());
    io_sleep(loop_deadline(5 * LOOP_MS));
    loop_wake(coro_current());
}

static void return_at_once(void *arg)
{
    (void)arg;
}

/* A burst that ends together keeps its stacks mapped past the pool's cap
 * (no munmap on the path of its answers); the loop unmaps them later, a
 * batch per tick, down to the cap and no further. */
START_TEST(burst_stacks_trimmed_later)
{
    enum { CAP = 2, N = 200 };
    struct loop *loop = new_loop(CAP);
    for (unsigned i = 0; i < N; i++)
        spawn(loop, return_at_once, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(loop_live(loop), 0);
    ck_assert_uint_gt(loop_pooled_stacks(loop), CAP);
    for (unsigned i = 0; i < 100 && loop_pooled_stacks(loop) > CAP; i++)
        run_loop(loop, 100);
    ck_assert_uint_eq(loop_pooled_stacks(loop), CAP);
    end_loop(loop);
}
END_TEST

START_TEST(wake_self_then_finish)
{
    struct loop *loop = new_loop(0);
    spawn(loop, wake_self_fn, NULL);
    spawn(loop, wake_self_yield_fn, NULL);
    run_loop(loop, 20);
    ck_assert_uint_eq(ws_runs, 2);
    end_loop(loop);
}
END_TEST

static struct {
    int64_t t0;
    int order[8];
    unsigned n;
    int rc[8];
    int64_t late[8];
    int past_rc;
    int64_t past_t;
} sl;

static const int sleep_ms[] = {90, 30, 60, 10, 50, 20};

static void sl_fn(void *arg)
{
    int i = (int)(intptr_t)arg;
    int64_t deadline = sl.t0 + sleep_ms[i] * LOOP_MS;
    sl.rc[i] = io_sleep(deadline);
    sl.late[i] = loop_now() - deadline;
    sl.order[sl.n++] = sleep_ms[i];
}

static void sl_past(void *arg)
{
    (void)arg;
    int64_t t = loop_now();
    sl.past_rc = io_sleep(t - LOOP_MS);
    sl.past_t = loop_now() - t;
}

START_TEST(sleep_ordering)
{
    struct loop *loop = new_loop(8);
    sl.t0 = loop_now();
    for (int i = 0; i < 6; i++)
        spawn(loop, sl_fn, (void *)(intptr_t)i);
    spawn(loop, sl_past, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(sl.n, 6);
    static const int want[] = {10, 20, 30, 50, 60, 90};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(sl.order[i], want[i]);
        ck_assert_int_eq(sl.rc[i], 0);
        ck_assert_int_ge(MS(sl.late[i]), -SLACK_MS); /* exactly: deadlines_never_early */
        ck_assert_int_lt(MS(sl.late[i]), 250);
    }
    ck_assert_int_eq(sl.past_rc, 0);
    ck_assert_int_lt(MS(sl.past_t), 200); /* at once (a stalled CI machine aside) */
    end_loop(loop);
}
END_TEST

/* An absolute deadline is an instant: a wait never returns -ETIMEDOUT (or
 * io_sleep 0) while loop_now() is still before it. Two coroutines sleep
 * and wait at staggered sub-millisecond offsets so timers are armed from
 * callbacks deep in a loop turn. */
static struct {
    unsigned early, waits, bad_rc;
    int64_t worst;
} dl;

static void dl_fn(void *arg)
{
    int64_t phase = (int64_t)(intptr_t)arg;
    for (int64_t i = 0; i < 15; i++) {
        int64_t after = (1 + (i * 7 + phase) % 9) * LOOP_MS + ((i * 131 + phase) % 1000) * 1000;
        if (i % 3 == 0)
            busy_ms(3);
        int64_t d = loop_deadline(after);
        int r = io_sleep(d);
        int64_t late = loop_now() - d;
        dl.waits++;
        if (r != 0)
            dl.bad_rc++;
        if (late < 0) {
            dl.early++;
            dl.worst = late < dl.worst ? late : dl.worst;
        }
        struct io_want w = {.events = IO_SIGNAL};
        d = loop_deadline(after / 2);
        r = io_wait(&w, 1, d);
        late = loop_now() - d;
        dl.waits++;
        if (r != -ETIMEDOUT)
            dl.bad_rc++;
        if (late < 0) {
            dl.early++;
            dl.worst = late < dl.worst ? late : dl.worst;
        }
    }
}

START_TEST(deadlines_never_early)
{
    struct loop *loop = new_loop(8);
    spawn(loop, dl_fn, (void *)(intptr_t)0);
    spawn(loop, dl_fn, (void *)(intptr_t)5);
    run_loop(loop, 0);
    ck_assert_uint_eq(dl.waits, 60);
    ck_assert_uint_eq(dl.bad_rc, 0);
    ck_assert_msg(dl.early == 0, "%u of %u waits ended before their deadline, worst by %lld us",
                  dl.early, dl.waits, (long long)(-dl.worst / 1000));
    end_loop(loop);
}
END_TEST

/* --- cancellation from outside ------------------------------------------------------- */

static struct {
    struct coro *a, *b;
    struct io_stream *s, *s2;
    int peer, peer2;
    int64_t t0, ta;
    int r[6];
    bool cancelled;
    int defers[4];
    unsigned ndefers;
    int rb;
    int64_t tb;
    int waited_after;
} cx;

static void cx_defer(void *arg)
{
    cx.defers[cx.ndefers++] = (int)(intptr_t)arg;
}

static void cx_a(void *arg)
{
    (void)arg;
    for (int i = 1; i <= 3; i++)
        coro_defer(cx_defer, (void *)(intptr_t)i);
    cx.r[0] = io_sleep(loop_deadline(2 * LOOP_SEC));
    cx.ta = loop_now();
    cx.cancelled = coro_cancelled(coro_current());
    /* Every later wait returns -ECANCELED at once. */
    cx.r[1] = io_sleep(loop_deadline(LOOP_SEC));
    struct evbuffer *b = evbuffer_new();
    cx.r[2] = (int)io_read(cx.s, b, 10, loop_deadline(LOOP_SEC));
    evbuffer_free(b);
    struct io_want w = {.events = IO_SIGNAL};
    cx.r[3] = io_wait(&w, 1, loop_deadline(LOOP_SEC));
    cx.r[4] = io_write(cx.s, "abc", 3, 0, loop_deadline(LOOP_SEC));
}

static void cx_b(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    cx.rb = (int)io_read(cx.s2, b, 10, loop_deadline(2 * LOOP_SEC));
    cx.tb = loop_now();
    evbuffer_free(b);
}

static void on_cx_cancel(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    coro_cancel(cx.a);
    coro_cancel(cx.b);
}

START_TEST(cancel_from_timer_wakes_waiter)
{
    struct loop *loop = new_loop(0);
    cx.s = pair_stream(loop, &cx.peer, 4096);
    cx.s2 = pair_stream(loop, &cx.peer2, 4096);
    cx.t0 = loop_now();
    cx.a = spawn(loop, cx_a, NULL);
    cx.b = spawn(loop, cx_b, NULL);
    after_ms(loop, 50, on_cx_cancel, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(cx.r[0], -ECANCELED);
    ck_assert_int_ge(MS(cx.ta - cx.t0), 50 - SLACK_MS);
    ck_assert_int_lt(MS(cx.ta - cx.t0), 1000);
    ck_assert(cx.cancelled);
    for (int i = 1; i <= 4; i++)
        ck_assert_msg(cx.r[i] == -ECANCELED, "wait %d after cancel returned %d", i, cx.r[i]);
    ck_assert_uint_eq(cx.ndefers, 3);
    ck_assert_int_eq(cx.defers[0], 3);
    ck_assert_int_eq(cx.defers[1], 2);
    ck_assert_int_eq(cx.defers[2], 1);
    ck_assert_int_eq(cx.rb, -ECANCELED);
    ck_assert_int_lt(MS(cx.tb - cx.t0), 1000);
    ck_assert(!io_waited(cx.s2));
    ck_assert(!io_waited(cx.s));
    io_stream_free(cx.s);
    io_stream_free(cx.s2);
    close(cx.peer);
    close(cx.peer2);
    end_loop(loop);
}
END_TEST

/* --- reads and writes with watermarks ---------------------------------------------- */

#define BP_TOTAL (512u * 1024u)
#define BP_CHUNK (16u * 1024u)
#define BP_HIGH (32u * 1024u)
#define BP_READ_MAX (8u * 1024u)

static struct {
    struct io_stream *w, *r;
    int wrc, rrc, frc;
    size_t out_over_high, in_over_max, read_over_max;
    size_t received;
    unsigned mismatches;
} bp;

static void bp_writer(void *arg)
{
    (void)arg;
    unsigned char *chunk = malloc(BP_CHUNK);
    for (size_t off = 0; off < BP_TOTAL && bp.wrc == 0; off += BP_CHUNK) {
        for (size_t i = 0; i < BP_CHUNK; i++)
            chunk[i] = (unsigned char)((off + i) * 7 / 3);
        bp.wrc = io_write(bp.w, chunk, BP_CHUNK, BP_HIGH, loop_deadline(5 * LOOP_SEC));
        if (evbuffer_get_length(io_output(bp.w)) > BP_HIGH)
            bp.out_over_high++;
    }
    free(chunk);
    bp.frc = io_flush(bp.w, loop_deadline(5 * LOOP_SEC));
}

static void bp_reader(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    while (bp.received < BP_TOTAL) {
        bp.rrc = io_read_at_least(bp.r, 1, loop_deadline(5 * LOOP_SEC));
        if (bp.rrc != 0)
            break;
        if (evbuffer_get_length(io_input(bp.r)) > BP_READ_MAX)
            bp.in_over_max++;
        ssize_t k = io_read(bp.r, b, 1000, loop_deadline(5 * LOOP_SEC));
        if (k <= 0) {
            bp.rrc = (int)k;
            break;
        }
        if (k > 1000)
            bp.read_over_max++;
        unsigned char tmp[1000];
        size_t n = evbuffer_remove(b, tmp, sizeof tmp);
        for (size_t i = 0; i < n; i++)
            if (tmp[i] != (unsigned char)((bp.received + i) * 7 / 3))
                bp.mismatches++;
        bp.received += n;
        /* A slow reader: the writer must wait for it. */
        if (bp.received % (64 * 1024) < 1000)
            io_sleep(loop_deadline(2 * LOOP_MS));
    }
    evbuffer_free(b);
}

START_TEST(write_backpressure_and_read_limits)
{
    struct loop *loop = new_loop(8);
    int fds[2];
    make_pair(fds);
    bp.w = io_stream_from_fd(loop, fds[0], 4096);
    bp.r = io_stream_from_fd(loop, fds[1], BP_READ_MAX);
    ck_assert_ptr_nonnull(bp.w);
    ck_assert_ptr_nonnull(bp.r);
    spawn(loop, bp_writer, NULL);
    spawn(loop, bp_reader, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(bp.wrc, 0);
    ck_assert_int_eq(bp.frc, 0);
    ck_assert_int_eq(bp.rrc, 0);
    ck_assert_uint_eq(bp.received, BP_TOTAL);
    ck_assert_uint_eq(bp.mismatches, 0);
    ck_assert_uint_eq(bp.out_over_high, 0);
    ck_assert_uint_eq(bp.in_over_max, 0);
    ck_assert_uint_eq(bp.read_over_max, 0);
    ck_assert_uint_eq(evbuffer_get_length(io_output(bp.w)), 0);
    io_stream_free(bp.w);
    io_stream_free(bp.r);
    end_loop(loop);
}
END_TEST

/* Writing to a peer that closed fails with an error, neither hanging nor
 * killing the process (SIGPIPE is ignored, as the daemon does). */
static struct {
    struct io_stream *s;
    int peer;
    int rc[3];
    int64_t t;
} wc;

static void wc_fn(void *arg)
{
    (void)arg;
    static const char block[2048];
    int64_t t0 = loop_now();
    wc.rc[0] = 0;
    for (int i = 0; i < 256 && wc.rc[0] == 0; i++)
        wc.rc[0] = io_write(wc.s, block, sizeof block, 0, loop_deadline(LOOP_SEC));
    wc.rc[1] = io_write(wc.s, "x", 1, 0, loop_deadline(LOOP_SEC));
    wc.rc[2] = io_flush(wc.s, loop_deadline(LOOP_SEC));
    wc.t = loop_now() - t0;
}

START_TEST(write_to_closed_peer_fails)
{
    struct loop *loop = new_loop(8);
    wc.s = pair_stream(loop, &wc.peer, 4096);
    close(wc.peer);
    spawn(loop, wc_fn, NULL);
    run_loop(loop, 0);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(wc.rc[i] == -EPIPE || wc.rc[i] == -ECONNRESET, "write %d returned %d", i,
                      wc.rc[i]);
    ck_assert_msg(wc.rc[2] < 0 && wc.rc[2] != -ETIMEDOUT, "flush returned %d", wc.rc[2]);
    ck_assert_int_lt(MS(wc.t), 1000);
    ck_assert(io_eof(wc.s));
    io_stream_free(wc.s);
    end_loop(loop);
}
END_TEST

/* Connecting to a listener whose accept queue is full: the kernel drops the
 * SYNs, so the connect ends at its deadline with -ETIMEDOUT. */
static struct {
    uint16_t port;
    int rc;
    int64_t late;
    struct io_stream *s;
} ct;

static void ct_fn(void *arg)
{
    (void)arg;
    int64_t d = loop_deadline(200 * LOOP_MS);
    ct.rc = io_connect(loop_current(), "127.0.0.1", ct.port, 4096, d, NULL, &ct.s);
    ct.late = loop_now() - d;
}

START_TEST(connect_timeout)
{
    struct loop *loop = new_loop(8);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    ct.port = listener_port(lfd);
    sin.sin_port = htons(ct.port);
    /* Fill the accept queue (never accepted). */
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fill[i], 0);
        (void)connect(fill[i], (struct sockaddr *)&sin, sizeof sin);
    }
    usleep(50000);
    spawn(loop, ct_fn, NULL);
    run_loop(loop, 0);
    ck_assert_msg(ct.rc == -ETIMEDOUT, "connect returned %d", ct.rc);
    ck_assert_int_ge(ct.late, 0);
    ck_assert_int_lt(MS(ct.late), 500);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
    end_loop(loop);
}
END_TEST

/* The idle callback: what a stream nobody waits on reports. */
static struct {
    struct io_stream *s;
    int peer;
    unsigned readable, eof, other;
    size_t len_at_readable;
    int waited_during;
    unsigned idle_during;
    bool done;
} id;

static void on_idle_close_peer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    close(id.peer);
}

/* Waits on the stream while a byte arrives: the idle callback stays quiet.
 * Then the peer closes, with nobody waiting again. */
static void id_fn(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    evbuffer_drain(io_input(id.s), evbuffer_get_length(io_input(id.s))); /* the idle byte */
    unsigned before = id.readable;
    after_ms(loop_current(), 20, on_write_byte, &id.peer);
    id.waited_during = (int)io_read(id.s, b, 10, loop_deadline(LOOP_SEC));
    id.idle_during = id.readable - before;
    evbuffer_free(b);
    after_ms(loop_current(), 10, on_idle_close_peer, NULL);
}

static void on_idle_spawn_reader(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    spawn(loop_current(), id_fn, NULL);
}

static void on_idle_cb(struct io_stream *s, unsigned what, void *arg)
{
    (void)arg;
    if (s != id.s) {
        id.other++;
    } else if (what == IO_READABLE) {
        if (id.readable++ == 0)
            after_ms(loop_current(), 10, on_idle_spawn_reader, NULL);
        id.len_at_readable = evbuffer_get_length(io_input(s));
    } else if (what == IO_EOF) {
        id.eof++;
        id.done = true;
    } else {
        id.other++;
    }
}

START_TEST(idle_callback_reports_readable_and_eof)
{
    struct loop *loop = new_loop(8);
    id.s = pair_stream(loop, &id.peer, 4096);
    io_set_idle(id.s, on_idle_cb, NULL);
    after_ms(loop, 10, on_write_byte, &id.peer);
    run_loop_until(loop, 30, &id.done);
    ck_assert_uint_eq(id.other, 0);
    ck_assert_uint_eq(id.readable, 1); /* the first byte, nobody waiting */
    ck_assert_uint_eq(id.len_at_readable, 1);
    /* The second byte went to the waiting coroutine, not to on_idle. */
    ck_assert_int_eq(id.waited_during, 1);
    ck_assert_uint_eq(id.idle_during, 0);
    ck_assert_uint_eq(id.eof, 1); /* the close, nobody waiting */
    io_set_idle(id.s, NULL, NULL);
    io_stream_free(id.s);
    end_loop(loop);
}
END_TEST

/* A lazy (accepted) stream: read at the end of the loop turn by io_read_soon, polled only once
 * input is needed; a wait for its end alone polls after IO_LAZY_EOF_MS. */
static struct {
    struct io_stream *s;
    int peer;
    unsigned readable, eof;
    size_t len;
    int eof_rc;
    unsigned eof_fired;
    int64_t eof_ms;
    ssize_t got;
} lz;

static void lz_idle(struct io_stream *s, unsigned what, void *arg)
{
    (void)arg;
    if (what & IO_EOF)
        lz.eof++;
    else
        lz.readable++;
    lz.len = evbuffer_get_length(io_input(s));
}

static struct io_stream *lazy_pair(struct loop *loop, int *peer)
{
    int fds[2];
    make_pair(fds);
    evutil_make_socket_nonblocking(fds[0]);
    struct io_stream *s = io_stream_accepted(loop, fds[0], 4096);
    ck_assert_ptr_nonnull(s);
    *peer = fds[1];
    return s;
}

/* A new stream in lz (reset; lz_idle its idle callback), parked in the
 * thread's idle set: its read event went back to the pool. When taker is
 * not NULL, a second stream (*taker, its peer *taker_peer) takes that
 * event: the pool is empty again and the next event is malloc'd, so that
 * fail_mallocs(sizeof(struct io_ev), n) reaches it. */
static void park_in_idle_set(struct loop *loop, struct io_stream **taker, int *taker_peer)
{
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    io_set_idle(lz.s, lz_idle, NULL);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->rev);
    ck_assert(lz.s->idle_reg);
    if (taker) {
        *taker = lazy_pair(loop, taker_peer);
        ck_assert_ptr_nonnull((*taker)->rev);
    }
}

static void on_close_lz_peer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    close(lz.peer);
}

static void lz_wait_eof(void *arg)
{
    (void)arg;
    int64_t t0 = loop_now();
    struct io_want w = {.stream = lz.s, .events = IO_EOF};
    lz.eof_rc = io_wait(&w, 1, loop_deadline(5 * LOOP_SEC));
    lz.eof_fired = w.fired;
    lz.eof_ms = (loop_now() - t0) / LOOP_MS;
}

static void lz_read(void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    lz.got = io_read(lz.s, b, 100, loop_deadline(5 * LOOP_SEC));
    evbuffer_free(b);
}

START_TEST(lazy_stream_polls_only_when_needed)
{
    struct loop *loop = new_loop(8);

    /* What arrived before is read on the next loop turn. */
    lz.s = lazy_pair(loop, &lz.peer);
    io_set_idle(lz.s, lz_idle, NULL);
    write_all(lz.peer, "abc", 3);
    io_read_soon(lz.s);
    ck_assert_uint_eq(lz.readable, 0);
    run_loop(loop, 0);
    ck_assert_uint_eq(lz.readable, 1);
    ck_assert_uint_eq(lz.len, 3);
    /* Not polled: later bytes wait in the socket until io_poll. */
    write_all(lz.peer, "de", 2);
    run_loop(loop, 30);
    ck_assert_uint_eq(lz.readable, 1);
    io_poll(lz.s);
    run_loop(loop, 30);
    ck_assert_uint_eq(lz.readable, 2);
    ck_assert_uint_eq(lz.len, 5);
    io_set_idle(lz.s, NULL, NULL);
    io_stream_free(lz.s);
    close(lz.peer);

    /* Nothing there yet: the stream is polled from then on. */
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    io_set_idle(lz.s, lz_idle, NULL);
    io_read_soon(lz.s);
    run_loop(loop, 0);
    ck_assert_uint_eq(lz.readable, 0);
    after_ms(loop, 10, on_write_byte, &lz.peer);
    run_loop(loop, 300); /* the byte comes at 10 ms: a busy machine may be late */
    ck_assert_uint_eq(lz.readable, 1);
    io_set_idle(lz.s, NULL, NULL);
    io_stream_free(lz.s);
    close(lz.peer);

    /* A coroutine awaiting input polls it. */
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    spawn(loop, lz_read, NULL);
    after_ms(loop, 10, on_write_byte, &lz.peer);
    run_loop(loop, 0);
    ck_assert_int_eq(lz.got, 1);
    io_stream_free(lz.s);
    close(lz.peer);

    /* Awaiting the end alone: seen, but only once IO_LAZY_EOF_MS passed. */
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    spawn(loop, lz_wait_eof, NULL);
    after_ms(loop, 10, on_close_lz_peer, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(lz.eof_rc, 1);
    ck_assert_uint_eq(lz.eof_fired, IO_EOF);
    ck_assert_int_ge(lz.eof_ms, IO_LAZY_EOF_MS);
    ck_assert_int_lt(lz.eof_ms, IO_LAZY_EOF_MS + 2000);
    io_stream_free(lz.s);

    end_loop(loop);
}
END_TEST

/* A parked stream (new, or io_park between requests) holds no buffers
 * and no write event; bytes, a read or a write take them back. */
START_TEST(parked_stream_holds_no_buffers)
{
    struct loop *loop = new_loop(8);
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    ck_assert_ptr_null(lz.s->bufs); /* new: parked */
    io_set_idle(lz.s, lz_idle, NULL);
    io_read_soon(lz.s);
    run_loop(loop, 0);
    ck_assert_ptr_null(lz.s->bufs); /* a read that found nothing takes none */
    write_all(lz.peer, "abc", 3);
    run_loop(loop, 300);
    ck_assert_uint_eq(lz.readable, 1);
    ck_assert_ptr_nonnull(lz.s->bufs);
    ck_assert_uint_eq(io_input_length(lz.s), 3);
    io_park(lz.s); /* input left: stays */
    ck_assert_ptr_nonnull(lz.s->bufs);
    evbuffer_drain(io_input(lz.s), 3);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->bufs);
    ck_assert_uint_eq(io_input_length(lz.s), 0);
    /* A coroutine that waits on a parked stream reads what comes. */
    io_set_idle(lz.s, NULL, NULL);
    spawn(loop, lz_read, NULL);
    after_ms(loop, 10, on_write_byte, &lz.peer);
    run_loop(loop, 0);
    ck_assert_int_eq(lz.got, 1);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->bufs);
    /* Writing takes them back too, and the bytes arrive. */
    ck_assert_int_eq(io_write(lz.s, "xy", 2, 0, LOOP_NEVER), 0);
    char got[2];
    ck_assert_int_eq(read(lz.peer, got, 2), 2);
    ck_assert_int_eq(memcmp(got, "xy", 2), 0);
    io_stream_free(lz.s);
    close(lz.peer);
    end_loop(loop);
}
END_TEST

/* io_park: an idle stream waits in the thread's idle set with no read
 * event of its own; bytes (also ones that came before the park), the
 * peer's close, a free while parked and a return to polling all work. */
START_TEST(parked_stream_waits_in_idle_set)
{
    struct loop *loop = new_loop(8);
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    io_set_idle(lz.s, lz_idle, NULL);
    io_read_soon(lz.s);
    io_park(lz.s); /* the scheduled read goes first */
    ck_assert_ptr_nonnull(lz.s->rev);
    run_loop(loop, 20);
    ck_assert_uint_eq(lz.readable, 0);
    ck_assert_ptr_null(lz.s->rev); /* it found nothing: in the set */
    ck_assert(lz.s->idle_reg);
    write_all(lz.peer, "abc", 3);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.readable, 1);
    ck_assert_uint_eq(lz.len, 3);
    ck_assert_ptr_nonnull(lz.s->rev); /* woken: an event again */
    /* Bytes already there when it parks are reported at once. */
    evbuffer_drain(io_input(lz.s), 3);
    write_all(lz.peer, "de", 2);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->rev);
    ck_assert_ptr_null(lz.s->bufs);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.readable, 2);
    ck_assert_uint_eq(lz.len, 2);
    /* Polled by the loop again on request (out of the set). */
    evbuffer_drain(io_input(lz.s), 2);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->rev);
    io_set_reading(lz.s, true);
    ck_assert_ptr_nonnull(lz.s->rev);
    ck_assert(lz.s->rev_added);
    ck_assert(!lz.s->idle_reg);
    write_all(lz.peer, "f", 1);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.readable, 3);
    /* The peer's close, while parked. */
    evbuffer_drain(io_input(lz.s), 1);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->rev);
    close(lz.peer);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.eof, 1);
    io_stream_free(lz.s);

    /* Freed while armed in the set (out of it before the close); the
     * pooled stream comes back with a read event and works. */
    park_in_idle_set(loop, NULL, NULL);
    io_stream_free(lz.s);
    close(lz.peer);
    memset(&lz, 0, sizeof(lz));
    lz.s = lazy_pair(loop, &lz.peer);
    ck_assert_ptr_nonnull(lz.s->rev);
    io_set_idle(lz.s, lz_idle, NULL);
    io_read_soon(lz.s);
    write_all(lz.peer, "gh", 2);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.readable, 1);
    ck_assert_uint_eq(lz.len, 2);
    io_stream_free(lz.s);
    close(lz.peer);
    end_loop(loop);
}
END_TEST

/* IO_PARK: with a crowd of waits, a stream is parked for the wait, and
 * what arrives meanwhile is read after it. */
static struct {
    struct coro *crowd[IO_PARK_CROWD];
    bool parked_meanwhile;
    int got;
} pk;

static void pk_crowd(void *arg)
{
    (void)arg;
    struct io_want w = {.events = IO_SIGNAL};
    io_wait(&w, 1, loop_deadline(10 * LOOP_SEC));
}

static void pk_check_and_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pk.parked_meanwhile = lz.s->bufs == NULL;
    write_all(lz.peer, "z", 1);
}

static void pk_parker(void *arg)
{
    struct loop *loop = arg;
    ck_assert_int_eq(io_read_at_least(lz.s, 2, loop_deadline(5 * LOOP_SEC)), 0);
    evbuffer_drain(io_input(lz.s), 2); /* attached, and empty again */
    after_ms(loop, 20, pk_check_and_write, NULL);
    struct io_want w = {.stream = lz.s, .events = IO_READABLE | IO_PARK};
    pk.got = io_wait(&w, 1, loop_deadline(5 * LOOP_SEC));
    ck_assert_uint_eq(evbuffer_get_length(io_input(lz.s)), 1);
    for (unsigned i = 0; i < IO_PARK_CROWD; i++)
        io_signal(pk.crowd[i]);
}

START_TEST(crowded_wait_parks_its_streams)
{
    struct loop *loop = new_loop(IO_PARK_CROWD + 8);
    memset(&lz, 0, sizeof(lz));
    memset(&pk, 0, sizeof(pk));
    lz.s = lazy_pair(loop, &lz.peer);
    for (unsigned i = 0; i < IO_PARK_CROWD; i++)
        pk.crowd[i] = spawn(loop, pk_crowd, NULL);
    write_all(lz.peer, "ab", 2);
    spawn(loop, pk_parker, loop);
    run_loop(loop, 0);
    ck_assert_int_eq(pk.got, 1);
    ck_assert(pk.parked_meanwhile);
    io_stream_free(lz.s);
    close(lz.peer);
    end_loop(loop);
}
END_TEST

/* Out of memory when a parked stream takes its buffers back (io_input,
 * io_output: a request after an IO_PARK wait): that stream fails, not the
 * process. A fresh loop's thread pools are empty, so the buffers are
 * malloc'd. */
static struct {
    struct io_stream *s;
    int peer;
    int rc;
    unsigned fired;
    int64_t ms;
    unsigned fail_left; /* after the failing io_output */
} om;

static void om_wait_eof(void *arg)
{
    (void)arg;
    int64_t t0 = loop_now();
    struct io_want w = {.stream = om.s, .events = IO_EOF};
    om.rc = io_wait(&w, 1, loop_deadline(5 * LOOP_SEC));
    om.fired = w.fired;
    om.ms = (loop_now() - t0) / LOOP_MS;
}

static void on_om_take_buffers(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    fail_mallocs(sizeof(struct io_bufs), 1);
    (void)io_output(om.s);
    om.fail_left = fail_stop();
}

START_TEST(parked_stream_out_of_memory_for_buffers)
{
    struct loop *loop = new_loop(8);
    int peer, other_peer;
    struct io_stream *s = lazy_pair(loop, &peer);
    struct io_stream *other = lazy_pair(loop, &other_peer);
    ck_assert_ptr_null(s->bufs); /* new: parked */
    fail_mallocs(sizeof(struct io_bufs), 1);
    struct evbuffer *out = io_output(s);
    ck_assert_uint_eq(fail_stop(), 0); /* the malloc that failed was the buffers' */
    ck_assert_ptr_nonnull(out);
    ck_assert(io_eof(s));
    ck_assert_int_eq(io_error(s), ENOMEM);
    /* What it was given refuses adds: no other parked stream sees bytes. */
    ck_assert_int_eq(evbuffer_add(out, "x", 1), -1);
    ck_assert_uint_eq(evbuffer_get_length(out), 0);
    ck_assert_uint_eq(io_input_length(s), 0);
    ck_assert_uint_eq(io_input_length(other), 0);
    ck_assert_int_eq(io_write(s, "x", 1, 0, LOOP_NEVER), -ENOMEM);
    /* Memory back: the buffers come, the stream stays failed. */
    ck_assert_uint_eq(evbuffer_get_length(io_input(s)), 0);
    ck_assert_ptr_nonnull(s->bufs);
    ck_assert(io_eof(s));
    io_stream_free(s);
    close(peer);

    /* A coroutine waiting on the stream is woken by the failure. The
     * buffers s gave back go to other: the next are malloc'd. */
    ck_assert_ptr_nonnull(io_output(other));
    ck_assert_ptr_nonnull(other->bufs);
    memset(&om, 0, sizeof(om));
    om.s = lazy_pair(loop, &om.peer);
    ck_assert_ptr_null(om.s->bufs);
    spawn(loop, om_wait_eof, NULL);
    after_ms(loop, 10, on_om_take_buffers, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(om.fail_left, 0);
    ck_assert_int_eq(om.rc, 1);
    ck_assert_uint_eq(om.fired, IO_EOF);
    ck_assert_int_lt(om.ms, IO_LAZY_EOF_MS);
    ck_assert_int_eq(io_error(om.s), ENOMEM);
    io_stream_free(om.s);
    close(om.peer);
    io_stream_free(other);
    close(other_peer);
    end_loop(loop);
}
END_TEST

/* Out of memory when the idle set wakes a parked stream (no read event to
 * be had): that stream ends with ENOMEM at once, its owner told (it would
 * close it), rather than sitting unread until its deadline. */
START_TEST(idle_set_wake_out_of_memory_ends_the_stream)
{
    struct loop *loop = new_loop(8);
    struct io_stream *other;
    int other_peer;
    park_in_idle_set(loop, &other, &other_peer);
    write_all(lz.peer, "abc", 3);
    fail_mallocs(sizeof(struct io_ev), 1);
    run_loop(loop, 50);
    ck_assert_uint_eq(fail_stop(), 0); /* the wake found no memory */
    ck_assert_uint_eq(lz.eof, 1);
    ck_assert_uint_eq(lz.readable, 0);
    ck_assert(io_eof(lz.s));
    ck_assert_int_eq(io_error(lz.s), ENOMEM);
    io_stream_free(lz.s); /* out of the set (disarmed), as its owner would */
    close(lz.peer);

    /* The set serves the next parked stream as before. */
    memset(&lz, 0, sizeof(lz));
    lz.s = other;
    lz.peer = other_peer;
    io_set_idle(lz.s, lz_idle, NULL);
    io_park(lz.s);
    ck_assert_ptr_null(lz.s->rev);
    write_all(lz.peer, "de", 2);
    run_loop(loop, 50);
    ck_assert_uint_eq(lz.readable, 1);
    ck_assert_uint_eq(lz.len, 2);
    io_stream_free(lz.s);
    close(lz.peer);
    end_loop(loop);
}
END_TEST

/* Out of memory for a read event while a coroutine waits on the stream:
 * the waiter is woken with the failure at once, not at its deadline. The
 * stream waits in the idle set with reading off and no read event (its
 * owner turned reading off when none could be had back), a coroutine
 * awaits its end, and turning reading on again finds no memory for the
 * event either. */
static void on_om_reading_on(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    fail_mallocs(sizeof(struct io_ev), 2); /* io_set_reading's take-back, io_rev_update's */
    io_set_reading(om.s, true);
    om.fail_left = fail_stop();
}

START_TEST(out_of_memory_for_read_event_wakes_waiter)
{
    struct loop *loop = new_loop(8);
    struct io_stream *other;
    int other_peer;
    park_in_idle_set(loop, &other, &other_peer);
    memset(&om, 0, sizeof(om));
    om.s = lz.s;
    om.peer = lz.peer;
    fail_mallocs(sizeof(struct io_ev), 1);
    io_set_reading(om.s, false); /* no event back: it stays in the set */
    ck_assert_uint_eq(fail_stop(), 0);
    ck_assert_ptr_null(om.s->rev);
    ck_assert(!io_eof(om.s));
    spawn(loop, om_wait_eof, NULL);
    after_ms(loop, 10, on_om_reading_on, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(om.fail_left, 0);
    ck_assert_int_eq(om.rc, 1);
    ck_assert_uint_eq(om.fired, IO_EOF);
    ck_assert_int_lt(om.ms, 1000); /* its deadline was 5 s away */
    ck_assert(io_eof(om.s));
    ck_assert_int_eq(io_error(om.s), ENOMEM);
    ck_assert_uint_eq(lz.eof, 0); /* its waiter was told, not the idle callback */
    io_stream_free(om.s);
    close(om.peer);
    io_stream_free(other);
    close(other_peer);
    end_loop(loop);
}
END_TEST

/* Queues more than the socket takes and writes it (io_kick) with no
 * memory for the write event the rest needs. Returns the failures left
 * unused (0: the write event's malloc failed). */
static unsigned om_write_stuck(struct io_stream *s)
{
    static char big[1u << 20]; /* a socket pair's buffers take a few 100 KiB */
    if (evbuffer_add(io_output(s), big, sizeof(big)) != 0)
        return ~0u;
    fail_mallocs(sizeof(struct io_ev), 1);
    io_kick(s);
    return fail_stop();
}

static void on_om_write_stuck(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    om.fail_left = om_write_stuck(om.s);
}

/* A transport whose handshake waits for the peer's first byte, then for
 * the socket to be writable (as TLS's may, from the read callback). */
static unsigned hs_steps;

static ssize_t hs_readv(struct io_stream *s, struct iovec *v, int n)
{
    ssize_t r = readv(io_transport_fd(s), v, n);
    return r < 0 ? -errno : r;
}

static ssize_t hs_writev(struct io_stream *s, const struct iovec *v, int n)
{
    ssize_t r = writev(io_transport_fd(s), v, n);
    return r < 0 ? -errno : r;
}

static int hs_shutdown(struct io_stream *s)
{
    return shutdown(io_transport_fd(s), SHUT_WR) == 0 ? 0 : -errno;
}

static int hs_handshake(struct io_stream *s)
{
    (void)s;
    return hs_steps++ == 0 ? -EAGAIN : IO_TP_WANT_WRITE;
}

static const struct io_transport hs_transport = {
    .name = "test-handshake",
    .readv = hs_readv,
    .writev = hs_writev,
    .shutdown = hs_shutdown,
    .handshake = hs_handshake,
};

static void om_handshake(void *arg)
{
    (void)arg;
    int64_t t0 = loop_now();
    om.rc = io_handshake(om.s, loop_deadline(5 * LOOP_SEC), NULL);
    om.ms = (loop_now() - t0) / LOOP_MS;
}

/* The peer's byte comes with no memory for the write event the
 * handshake's next step asks for. */
static void on_om_handshake_byte(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    fail_mallocs(sizeof(struct io_ev), 1);
    write_all(om.peer, "h", 1);
}

/* Out of memory for a write event (output left over after a partial
 * write, or a handshake that needs the socket writable) fails the stream
 * both ways: a coroutine waiting on it is woken at once, not at its
 * deadline; with nobody waiting, its owner hears of it from the loop (the
 * idle callback, IO_EOF), never from inside the call that failed. A
 * fresh loop each time: the thread's pool of events starts empty, so the
 * write event is malloc'd. */
START_TEST(out_of_memory_for_write_event_ends_the_stream)
{
    /* A coroutine waits for the stream's end while a callback writes. */
    struct loop *loop = new_loop(8);
    memset(&om, 0, sizeof(om));
    om.s = pair_stream(loop, &om.peer, 4096);
    spawn(loop, om_wait_eof, NULL);
    after_ms(loop, 10, on_om_write_stuck, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(om.fail_left, 0);
    ck_assert_int_eq(om.rc, 1);
    ck_assert_uint_eq(om.fired, IO_EOF);
    ck_assert_int_lt(om.ms, 1000); /* its deadline was 5 s away */
    ck_assert_int_eq(io_error(om.s), ENOMEM);
    ck_assert_int_eq(io_write(om.s, "x", 1, 0, LOOP_NEVER), -ENOMEM);
    io_stream_free(om.s);
    close(om.peer);
    end_loop(loop);

    /* A coroutine in the transport's handshake. */
    loop = new_loop(8);
    memset(&om, 0, sizeof(om));
    hs_steps = 0;
    om.s = pair_stream(loop, &om.peer, 4096);
    io_stream_set_transport(om.s, &hs_transport, NULL);
    spawn(loop, om_handshake, NULL);
    after_ms(loop, 10, on_om_handshake_byte, NULL);
    run_loop(loop, 0);
    ck_assert_uint_eq(fail_stop(), 0);
    ck_assert_uint_eq(hs_steps, 2);
    ck_assert_int_eq(om.rc, -ENOMEM);
    ck_assert_int_lt(om.ms, 1000);
    ck_assert(io_eof(om.s));
    io_stream_free(om.s);
    close(om.peer);
    end_loop(loop);

    /* Nobody waits: the idle callback hears of it on the loop's stack. */
    loop = new_loop(8);
    memset(&lz, 0, sizeof(lz));
    lz.s = pair_stream(loop, &lz.peer, 4096);
    io_set_idle(lz.s, lz_idle, NULL);
    ck_assert_uint_eq(om_write_stuck(lz.s), 0);
    ck_assert(io_eof(lz.s));
    ck_assert_int_eq(io_error(lz.s), ENOMEM);
    ck_assert_uint_eq(lz.eof, 0); /* not from inside io_kick */
    run_loop(loop, 20);
    ck_assert_uint_eq(lz.eof, 1);
    ck_assert_uint_eq(lz.readable, 0);
    io_stream_free(lz.s);
    close(lz.peer);
    end_loop(loop);
}
END_TEST

/* loop_free_later: the object outlives the callback chain that queued it. */
static struct {
    int freed;
    int freed_seen_in_cb;
} fl;

static void fl_free(void *obj)
{
    (void)obj;
    fl.freed++;
}

static void on_free_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    loop_free_later(loop_current(), fl_free, &fl);
    fl.freed_seen_in_cb = fl.freed;
}

START_TEST(free_later_runs_after_the_callback)
{
    struct loop *loop = new_loop(8);
    after_ms(loop, 5, on_free_later, NULL);
    run_loop(loop, 30);
    ck_assert_int_eq(fl.freed_seen_in_cb, 0);
    ck_assert_int_eq(fl.freed, 1);
    end_loop(loop);
}
END_TEST

/* The input cap: reading pauses at read_max, resumes when the cap is raised
 * (without any drain), stops with io_set_reading(false) and resumes with
 * io_set_reading(true). */
static struct {
    struct io_stream *s;
    int peer;
    int r[4];
    size_t len[4];
} rm;

static void rm_fn(void *arg)
{
    (void)arg;
    struct io_stream *s = rm.s;
    rm.r[0] = io_read_at_least(s, 4096, loop_deadline(LOOP_SEC));
    io_sleep(loop_deadline(30 * LOOP_MS)); /* more is in the socket: not read */
    rm.len[0] = evbuffer_get_length(io_input(s));
    io_set_read_max(s, 16384);
    rm.r[1] = io_read_at_least(s, 10000, loop_deadline(LOOP_SEC));
    rm.len[1] = evbuffer_get_length(io_input(s));
    evbuffer_drain(io_input(s), rm.len[1]);
    io_set_reading(s, false);
    if (write(rm.peer, "0123456789", 10) != 10)
        abort();
    io_sleep(loop_deadline(30 * LOOP_MS));
    rm.len[2] = evbuffer_get_length(io_input(s));
    io_set_reading(s, true);
    rm.r[2] = io_read_at_least(s, 10, loop_deadline(LOOP_SEC));
    rm.len[3] = evbuffer_get_length(io_input(s));
}

START_TEST(read_cap_and_reading_switch)
{
    struct loop *loop = new_loop(8);
    rm.s = pair_stream(loop, &rm.peer, 4096);
    static char block[10000];
    memset(block, 'r', sizeof block);
    write_all(rm.peer, block, sizeof block);
    spawn(loop, rm_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(rm.r[0], 0);
    ck_assert_uint_eq(rm.len[0], 4096);
    ck_assert_int_eq(rm.r[1], 0);
    ck_assert_uint_eq(rm.len[1], 10000);
    ck_assert_uint_eq(rm.len[2], 0);
    ck_assert_int_eq(rm.r[2], 0);
    ck_assert_uint_eq(rm.len[3], 10);
    io_stream_free(rm.s);
    close(rm.peer);
    end_loop(loop);
}
END_TEST

/* A TCP peer that resets the connection: io_read returns -ECONNRESET. */
static struct {
    uint16_t port;
    int lfd;
    struct io_stream *s;
    int rc, rread;
    bool eof;
    int err;
} rs;

static void rs_fn(void *arg)
{
    (void)arg;
    rs.rc = io_connect(loop_current(), "127.0.0.1", rs.port, 4096, loop_deadline(LOOP_SEC), NULL,
                       &rs.s);
    if (rs.rc != 0)
        return;
    /* The peer accepts and resets in the test's thread now. */
    int fd = accept(rs.lfd, NULL, NULL);
    if (fd >= 0) {
        if (write(fd, "x", 1) != 1)
            abort();
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    struct evbuffer *b = evbuffer_new();
    rs.rread = (int)io_read(rs.s, b, 10, loop_deadline(LOOP_SEC));
    if (rs.rread == 1) /* the byte sent before the reset may come first */
        rs.rread = (int)io_read(rs.s, b, 10, loop_deadline(LOOP_SEC));
    evbuffer_free(b);
    rs.eof = io_eof(rs.s);
    rs.err = io_error(rs.s);
    io_stream_free(rs.s);
}

START_TEST(reset_gives_econnreset)
{
    struct loop *loop = new_loop(8);
    rs.lfd = loopback_listener(&rs.port);
    spawn(loop, rs_fn, NULL);
    run_loop(loop, 0);
    ck_assert_int_eq(rs.rc, 0);
    ck_assert_msg(rs.rread == -ECONNRESET, "io_read after a reset returned %d", rs.rread);
    ck_assert(rs.eof);
    ck_assert_int_eq(rs.err, ECONNRESET);
    close(rs.lfd);
    end_loop(loop);
}
END_TEST

/* io_flush_progress: a slow but steady reader is never cut (the stall bound
 * re-arms whenever bytes leave); a reader that stops is cut after the stall. */
#define FP_TOTAL (256u * 1024u)
/* The stall bound: the steady reader (4 KiB every 5 ms, ~320 ms in all)
 * outlasts it; a loaded machine that holds the reader's timer back for
 * 100 ms must not look like a stall. */
#define FP_STALL_MS 250

static struct {
    struct io_stream *s;
    int peer;
    bool reading;
    size_t got;
    int rc[2];
    int64_t t[2];
    struct event *reader;
} fp;

static void on_fp_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    static char buf[4096];
    if (!fp.reading)
        return;
    ssize_t k = read(fp.peer, buf, sizeof buf);
    if (k > 0)
        fp.got += (size_t)k;
}

static void fp_fn(void *arg)
{
    (void)arg;
    static char block[FP_TOTAL];
    /* A steady reader: 4 KiB every 5 ms, so 256 KiB take about 320 ms. */
    fp.reading = true;
    io_write(fp.s, block, sizeof block, SIZE_MAX, loop_deadline(LOOP_SEC));
    int64_t t = loop_now();
    fp.rc[0] = io_flush_progress(fp.s, FP_STALL_MS * LOOP_MS, loop_deadline(5 * LOOP_SEC));
    fp.t[0] = loop_now() - t;
    /* The reader stops: cut FP_STALL_MS after the last byte left. */
    fp.reading = false;
    io_write(fp.s, block, sizeof block, SIZE_MAX, loop_deadline(LOOP_SEC));
    t = loop_now();
    fp.rc[1] = io_flush_progress(fp.s, FP_STALL_MS * LOOP_MS, loop_deadline(5 * LOOP_SEC));
    fp.t[1] = loop_now() - t;
}

START_TEST(flush_progress_cuts_stalls_not_slow_readers)
{
    struct loop *loop = new_loop(8);
    int fds[2];
    make_pair(fds);
    int small = 4096;
    ck_assert_int_eq(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    fp.s = io_stream_from_fd(loop, fds[0], 4096);
    ck_assert_ptr_nonnull(fp.s);
    fp.peer = fds[1];
    fp.reader = event_new(loop_base(loop), -1, EV_PERSIST, on_fp_read, NULL);
    struct timeval tv = {0, 5000};
    event_add(fp.reader, &tv);
    spawn(loop, fp_fn, NULL);
    run_loop(loop, 0);
    event_free(fp.reader);
    ck_assert_msg(fp.rc[0] == 0, "steady reader: %d after %lld ms", fp.rc[0],
                  (long long)MS(fp.t[0]));
    ck_assert_int_gt(MS(fp.t[0]), FP_STALL_MS);      /* longer than one stall bound */
    ck_assert_uint_ge(fp.got, FP_TOTAL - 32 * 1024); /* the rest may sit in the socket */
    ck_assert_int_eq(fp.rc[1], -ETIMEDOUT);
    ck_assert_int_ge(MS(fp.t[1]), FP_STALL_MS - SLACK_MS);
    ck_assert_int_lt(MS(fp.t[1]), 2000);
    io_stream_free(fp.s);
    close(fp.peer);
    end_loop(loop);
}
END_TEST

/* --- wrong use ------------------------------------------------------------------------ */

static struct io_stream *wu_s;

static void wu_wait_fn(void *arg)
{
    (void)arg;
    struct io_want w = {.stream = wu_s, .events = IO_READABLE, .read_min = 1};
    io_wait(&w, 1, loop_deadline(LOOP_SEC));
}

static void on_wu_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_stop(arg);
}

static void wait_twice_child(void *arg)
{
    (void)arg;
    struct loop *loop = loop_new(CORO_STACK_DEFAULT, 4);
    int fds[2];
    if (!loop || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        _exit(2);
    wu_s = io_stream_from_fd(loop, fds[0], 4096);
    if (!wu_s || loop_spawn(loop, wu_wait_fn, NULL, NULL) != 0 ||
        loop_spawn(loop, wu_wait_fn, NULL, NULL) != 0)
        _exit(2);
    struct timeval tv = {2, 0};
    event_base_once(loop_base(loop), -1, EV_TIMEOUT, on_wu_stop, loop, &tv);
    loop_run(loop);
    _exit(3);
}

static struct coro *wu_c;

static void wu_sleep_fn(void *arg)
{
    (void)arg;
    io_sleep(loop_deadline(LOOP_SEC));
}

static void on_wu_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    coro_resume(wu_c); /* a callback must not resume */
}

static void resume_from_callback_child(void *arg)
{
    (void)arg;
    struct loop *loop = loop_new(CORO_STACK_DEFAULT, 4);
    if (!loop || loop_spawn(loop, wu_sleep_fn, NULL, &wu_c) != 0)
        _exit(2);
    struct timeval tv = {0, 10000};
    event_base_once(loop_base(loop), -1, EV_TIMEOUT, on_wu_resume, NULL, &tv);
    struct timeval stop = {2, 0};
    event_base_once(loop_base(loop), -1, EV_TIMEOUT, on_wu_stop, loop, &stop);
    loop_run(loop);
    _exit(3);
}

START_TEST(wrong_use_wait_twice_on_stream)
{
    static struct check_child r;
    check_run_child(wait_twice_child, NULL, &r);
    check_assert_aborted_naming(&r, "io_wait");
}
END_TEST

START_TEST(wrong_use_resume_from_callback)
{
    static struct check_child r;
    check_run_child(resume_from_callback_child, NULL, &r);
    check_assert_aborted_naming(&r, "coro_resume");
}
END_TEST

/* --- io_splice -------------------------------------------------------------------------- */

static struct {
    struct io_stream *a, *b;
    int pa, pb;
    bool ended, free_in_end;
    unsigned calls;
    struct io_splice_stats st;
    struct io_splice *sp;
    int64_t t0, t_end;
} sc;

static void on_splice_end(void *arg, const struct io_splice_stats *stats)
{
    (void)arg;
    sc.calls++;
    sc.ended = true;
    sc.st = *stats;
    sc.t_end = loop_now() - sc.t0;
    if (sc.free_in_end) {
        io_stream_free(sc.a);
        io_stream_free(sc.b);
        sc.a = sc.b = NULL;
    }
}

static void sc_write_a(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    write_all(sc.pa, "hello", 5);
}

static void sc_write_b(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    write_all(sc.pb, "world", 5);
}

static void sc_shut_a(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    shutdown(sc.pa, SHUT_WR);
}

static void sc_shut_b(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    shutdown(sc.pb, SHUT_WR);
}

/* Reads fd to its EOF (blocking) into out; returns the length. */
static size_t read_to_eof(int fd, char *out, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, out + len, cap - len);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            return len;
        len += (size_t)n;
        ck_assert_uint_lt(len, cap);
    }
}

/* Bytes go both ways (those already in an input first), each EOF is
 * forwarded after the bytes before it, the splice ends CLOSED once both
 * directions are shut, on_end runs once and never inside io_splice, and
 * may free both streams. */
START_TEST(splice_both_ways_and_half_close)
{
    struct loop *loop = new_loop(8);
    memset(&sc, 0, sizeof sc);
    sc.a = pair_stream(loop, &sc.pa, 4096);
    sc.b = pair_stream(loop, &sc.pb, 4096);
    sc.free_in_end = true;
    evbuffer_add(io_input(sc.a), "pre", 3);
    sc.t0 = loop_now();
    ck_assert_int_eq(io_splice(sc.a, sc.b, 64 * 1024, 0, on_splice_end, NULL, &sc.sp), 0);
    ck_assert_uint_eq(sc.calls, 0);
    after_ms(loop, 20, sc_write_a, NULL);
    after_ms(loop, 40, sc_write_b, NULL);
    after_ms(loop, 60, sc_shut_a, NULL);
    after_ms(loop, 80, sc_shut_b, NULL);
    run_loop_until(loop, 0, &sc.ended);
    ck_assert_uint_eq(sc.calls, 1);
    ck_assert_int_eq(sc.st.end, IO_SPLICE_CLOSED);
    ck_assert_int_eq(sc.st.error, 0);
    ck_assert_uint_eq(sc.st.a_to_b, 8);
    ck_assert_uint_eq(sc.st.b_to_a, 5);
    ck_assert_int_ge(MS(sc.t_end), 80 - SLACK_MS);
    char buf[64];
    size_t n = read_to_eof(sc.pb, buf, sizeof buf);
    ck_assert_uint_eq(n, 8);
    ck_assert_int_eq(memcmp(buf, "prehello", 8), 0);
    n = read_to_eof(sc.pa, buf, sizeof buf);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(memcmp(buf, "world", 5), 0);
    close(sc.pa);
    close(sc.pb);
    end_loop(loop);
}
END_TEST

/* No byte either way for idle_ns: IDLE, not before. io_splice_stop: STOPPED,
 * on_end before it returns. */
START_TEST(splice_idle_and_stop)
{
    struct loop *loop = new_loop(8);
    memset(&sc, 0, sizeof sc);
    sc.a = pair_stream(loop, &sc.pa, 4096);
    sc.b = pair_stream(loop, &sc.pb, 4096);
    sc.t0 = loop_now();
    ck_assert_int_eq(io_splice(sc.a, sc.b, 1024, 60 * LOOP_MS, on_splice_end, NULL, &sc.sp), 0);
    after_ms(loop, 30, sc_write_a, NULL); /* activity at 30 ms: the end moves to 90 */
    run_loop_until(loop, 0, &sc.ended);
    ck_assert_int_eq(sc.st.end, IO_SPLICE_IDLE);
    ck_assert_int_ge(MS(sc.t_end), 90 - SLACK_MS);
    ck_assert_int_lt(MS(sc.t_end), 1000);
    ck_assert_uint_eq(sc.st.a_to_b, 5);
    io_stream_free(sc.a);
    io_stream_free(sc.b);
    close(sc.pa);
    close(sc.pb);

    memset(&sc, 0, sizeof sc);
    sc.a = pair_stream(loop, &sc.pa, 4096);
    sc.b = pair_stream(loop, &sc.pb, 4096);
    ck_assert_int_eq(io_splice(sc.a, sc.b, 1024, 0, on_splice_end, NULL, &sc.sp), 0);
    io_splice_stop(sc.sp);
    ck_assert_uint_eq(sc.calls, 1);
    ck_assert_int_eq(sc.st.end, IO_SPLICE_STOPPED);
    run_loop(loop, 20);
    ck_assert_uint_eq(sc.calls, 1);
    io_stream_free(sc.a);
    io_stream_free(sc.b);
    close(sc.pa);
    close(sc.pb);
    end_loop(loop);
}
END_TEST

/* Bytes for a side whose peer has gone: its write fails and the splice
 * ends with that side's error (EPIPE), after that side's EOF was taken as
 * a half-close. */
START_TEST(splice_write_error_ends_it)
{
    struct loop *loop = new_loop(8);
    memset(&sc, 0, sizeof sc);
    sc.a = pair_stream(loop, &sc.pa, 4096);
    sc.b = pair_stream(loop, &sc.pb, 4096);
    sc.free_in_end = true;
    close(sc.pb);
    ck_assert_int_eq(io_splice(sc.a, sc.b, 1024, 0, on_splice_end, NULL, &sc.sp), 0);
    after_ms(loop, 30, sc_write_a, NULL);
    run_loop_until(loop, 0, &sc.ended);
    ck_assert_uint_eq(sc.calls, 1);
    ck_assert_int_eq(sc.st.end, IO_SPLICE_B_ERROR);
    ck_assert_int_eq(sc.st.error, EPIPE);
    close(sc.pa);
    end_loop(loop);
}
END_TEST

/* The peer does not read: reading the other side stops at `high`; the
 * splice holds about `high` plus the socket buffers, not everything sent. */
static struct {
    size_t sent;
} bpw;

static void bp_fill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    static char chunk[16384];
    for (int i = 0; i < 64; i++) {
        ssize_t n = send(sc.pa, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n <= 0)
            break;
        bpw.sent += (size_t)n;
    }
}

START_TEST(splice_backpressure)
{
    struct loop *loop = new_loop(8);
    memset(&sc, 0, sizeof sc);
    bpw.sent = 0;
    sc.a = pair_stream(loop, &sc.pa, 4096);
    sc.b = pair_stream(loop, &sc.pb, 4096);
    ck_assert_int_eq(io_splice(sc.a, sc.b, 64 * 1024, 0, on_splice_end, NULL, &sc.sp), 0);
    for (int t = 0; t < 20; t++)
        after_ms(loop, 5 * t, bp_fill, NULL);
    run_loop(loop, 200);
    struct io_splice_stats now;
    io_splice_stats(sc.sp, &now);
    ck_assert_uint_gt(now.a_to_b, 64 * 1024);
    ck_assert_uint_lt(evbuffer_get_length(io_output(sc.b)), 64 * 1024 + 128 * 1024);
    ck_assert_uint_lt(now.a_to_b, bpw.sent); /* some still waits in a's socket */
    io_splice_stop(sc.sp);
    io_stream_free(sc.a);
    io_stream_free(sc.b);
    close(sc.pa);
    close(sc.pb);
    end_loop(loop);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("await");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, interleave_with_slow_peer);
    tcase_add_test(tc, wait_set_returns_which_fired);
    tcase_add_test(tc, signal_between_coroutines);
    tcase_add_test(tc, signal_before_first_wait);
    tcase_add_test(tc, wake_self_then_finish);
    tcase_add_test(tc, burst_stacks_trimmed_later);
    tcase_add_test(tc, sleep_ordering);
    tcase_add_test(tc, write_backpressure_and_read_limits);
    tcase_add_test(tc, write_to_closed_peer_fails);
    tcase_add_test(tc, flush_progress_cuts_stalls_not_slow_readers);
    tcase_add_test(tc, read_cap_and_reading_switch);
    tcase_add_test(tc, reset_gives_econnreset);
    tcase_add_test(tc, idle_callback_reports_readable_and_eof);
    tcase_add_test(tc, lazy_stream_polls_only_when_needed);
    tcase_add_test(tc, parked_stream_holds_no_buffers);
    tcase_add_test(tc, parked_stream_waits_in_idle_set);
    tcase_add_test(tc, crowded_wait_parks_its_streams);
    tcase_add_test(tc, parked_stream_out_of_memory_for_buffers);
    tcase_add_test(tc, idle_set_wake_out_of_memory_ends_the_stream);
    tcase_add_test(tc, out_of_memory_for_read_event_wakes_waiter);
    tcase_add_test(tc, out_of_memory_for_write_event_ends_the_stream);
    tcase_add_test(tc, free_later_runs_after_the_callback);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadlines");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stale_timer_does_not_end_next_wait);
    tcase_add_test(tc, stale_timer_after_signal);
    tcase_add_test(tc, record_timer_across_loops);
    tcase_add_test(tc, trickle_gets_etimedout_at_deadline);
    tcase_add_test(tc, deadlines_never_early);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, cancel_from_timer_wakes_waiter);
    tcase_add_test(tc, late_callbacks_after_cancel_touch_nothing_freed);
    suite_add_tcase(s, tc);

    tc = tcase_create("connect");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, connect_refused);
    tcase_add_test(tc, connect_timeout);
    tcase_add_test(tc, connect_numeric_skips_dns);
    tcase_add_test(tc, connect_name_synchronous_answer_no_reentry);
    tcase_add_test(tc, connect_name_through_evdns);
    tcase_add_test(tc, connect_name_not_found);
    tcase_add_test(tc, connect_name_late_answer_after_timeout);
    tcase_add_test(tc, connect_name_timeout_not_early);
    tcase_add_test(tc, connect_name_cancelled_during_lookup);
    tcase_add_test(tc, connect_name_watch_ends_during_lookup);
    suite_add_tcase(s, tc);

    tc = tcase_create("splice");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, splice_both_ways_and_half_close);
    tcase_add_test(tc, splice_idle_and_stop);
    tcase_add_test(tc, splice_write_error_ends_it);
    tcase_add_test(tc, splice_backpressure);
    suite_add_tcase(s, tc);

    tc = tcase_create("wrong use");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, wrong_use_wait_twice_on_stream);
    tcase_add_test(tc, wrong_use_resume_from_callback);
    suite_add_tcase(s, tc);

    return check_run(s);
}
