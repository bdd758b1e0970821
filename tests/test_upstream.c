/*
 * Unit tests for upstream (Check): the max_connections line, against a
 * real loopback listener (the kernel completes the connects; nothing is
 * read or answered).
 *
 * The line is first come, first served: a slot freed while others wait
 * goes to the first of them, never to a newcomer (also not to the
 * coroutine that freed it and asks again at once); a waiter that leaves
 * right after it was handed a slot (cancelled in the same loop turn)
 * passes it on; a waiter whose watched client ends stops with
 * -ECONNABORTED.
 *
 * The process-wide state, with two upstream sets standing for two
 * workers: failures reported by both add up to an ejection, never more
 * than half of the servers are ejected and both sets' picks skip those
 * that are; the retry budget (20 % here) counts both sets' requests and
 * retries.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "../src/config.h"
#include "coro.h"
#include "io.h"
#include "loop.h"
#include "upstream.h"

#define MS(t) ((t) / LOOP_MS)

static int listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A worker with one upstream "u" (one server, max_connections 1) in
 * front of a loopback listener. */
static struct {
    struct loop *loop;
    struct config *cfg;
    struct {
        bool draining;
        unsigned long conns;
        struct upstream_registry *pools;
    } w;
    struct upstream_set *set;
    const struct config_upstream *up;
    int lfd;
    /* what the coroutines did, in order */
    char order[16];
    unsigned norder;
    int rc[8];
    int64_t t[8];
    struct coro *coro[8];
} u;

static void setup(void)
{
    memset(&u, 0, sizeof u);
    uint16_t port;
    u.lfd = listener(&port);
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "listen:\n  - address: 127.0.0.1:1\n"
             "upstreams:\n  u:\n    max_connections: 1\n"
             "    servers:\n      - address: 127.0.0.1:%u\n"
             "routes:\n  - name: r\n    upstream: u\n",
             (unsigned)port);
    FILE *diag = fopen("/dev/null", "w");
    int rc = config_load_string("t.yaml", yaml, strlen(yaml), &u.cfg, diag);
    fclose(diag);
    ck_assert_int_eq(rc, 0);
    u.up = config_upstream_find(u.cfg, "u");
    ck_assert_ptr_nonnull(u.up);
    u.loop = loop_new(CORO_STACK_DEFAULT, 8);
    ck_assert_ptr_nonnull(u.loop);
    u.set =
        upstream_set_new(&(struct upstream_owner){0, &u.w.draining, &u.w.conns, &u.w.pools}, u.cfg);
    ck_assert_ptr_nonnull(u.set);
}

static void teardown(void)
{
    upstream_set_free(u.set);
    upstream_registry_free(&u.w.pools);
    ck_assert_uint_eq(loop_live(u.loop), 0);
    loop_free(u.loop);
    config_unref(u.cfg);
    close(u.lfd);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    loop_stop(arg);
}

/* Runs the loop for ms milliseconds. */
static void run_for(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    ck_assert_int_eq(event_base_once(loop_base(u.loop), -1, EV_TIMEOUT, on_stop, u.loop, &tv), 0);
    loop_run(u.loop);
}

static void mark(char who)
{
    u.order[u.norder++] = who;
}

static int acquire(struct io_stream *watch, int64_t ms, struct upstream_conn **uc)
{
    bool reused;
    return upstream_acquire(u.set, u.up, 0, false, loop_deadline(ms * LOOP_MS), watch, uc, &reused);
}

/* A: holds the slot 200 ms, gives it back and asks again at once (long
 * enough that a loaded machine's late wake-ups do not reorder the line). */
static void holder_fn(void *arg)
{
    (void)arg;
    struct upstream_conn *uc;
    u.rc[0] = acquire(NULL, 2000, &uc);
    ck_assert_int_eq(u.rc[0], 0);
    mark('A');
    io_sleep(loop_deadline(200 * LOOP_MS));
    upstream_release(uc, true);
    u.rc[1] = acquire(NULL, 2000, &uc);
    mark('a');
    if (u.rc[1] == 0) {
        io_sleep(loop_deadline(10 * LOOP_MS));
        upstream_release(uc, true);
    }
}

/* B, C: wait in line, hold the slot 10 ms. */
static void waiter_fn(void *arg)
{
    int i = (int)(intptr_t)arg;
    struct upstream_conn *uc;
    int64_t t0 = loop_now();
    u.rc[i] = acquire(NULL, 2000, &uc);
    u.t[i] = loop_now() - t0;
    if (u.rc[i] != 0)
        return;
    mark((char)('A' + i - 1));
    io_sleep(loop_deadline(10 * LOOP_MS));
    upstream_release(uc, true);
}

START_TEST(line_is_first_come_first_served)
{
    setup();
    ck_assert_int_eq(loop_spawn(u.loop, holder_fn, NULL, NULL), 0);
    run_for(10);
    ck_assert_int_eq(loop_spawn(u.loop, waiter_fn, (void *)(intptr_t)2, NULL), 0);
    run_for(10);
    ck_assert_int_eq(loop_spawn(u.loop, waiter_fn, (void *)(intptr_t)3, NULL), 0);
    run_for(600);
    u.order[u.norder] = '\0';
    /* A's second request (a) waits behind B and C, who came before it. */
    ck_assert_str_eq(u.order, "ABCa");
    ck_assert_int_eq(u.rc[1], 0);
    ck_assert_int_eq(u.rc[2], 0);
    ck_assert_int_eq(u.rc[3], 0);
    teardown();
}
END_TEST

/* A releases, B (first in line, handed the slot) is cancelled in the same
 * loop turn: B returns -ECANCELED and the slot goes on to C at once. */
static void release_then_cancel_fn(void *arg)
{
    (void)arg;
    struct upstream_conn *uc;
    ck_assert_int_eq(acquire(NULL, 2000, &uc), 0);
    io_sleep(loop_deadline(50 * LOOP_MS));
    /* B is spawned 10 ms in: a loop stalled for 50 ms (a loaded machine)
     * gets here first, which is a failed run, not a crash */
    ck_assert_msg(u.coro[2] != NULL, "the loop stalled: B was not in line after 50 ms");
    upstream_release(uc, true);
    coro_cancel(u.coro[2]);
}

START_TEST(handed_slot_passes_on_when_cancelled)
{
    setup();
    ck_assert_int_eq(loop_spawn(u.loop, release_then_cancel_fn, NULL, NULL), 0);
    run_for(10);
    ck_assert_int_eq(loop_spawn(u.loop, waiter_fn, (void *)(intptr_t)2, &u.coro[2]), 0);
    run_for(5);
    ck_assert_int_eq(loop_spawn(u.loop, waiter_fn, (void *)(intptr_t)3, &u.coro[3]), 0);
    run_for(300);
    ck_assert_int_eq(u.rc[2], -ECANCELED);
    ck_assert_int_eq(u.rc[3], 0);
    ck_assert_int_lt(MS(u.t[3]), 200); /* not at its 2 s deadline */
    teardown();
}
END_TEST

/* A waiter whose watched client ends leaves the line with -ECONNABORTED;
 * the one behind it is served when the slot frees. */
static int watch_peer = -1;
static struct io_stream *watch_stream;

static void watched_fn(void *arg)
{
    (void)arg;
    struct upstream_conn *uc;
    int64_t t0 = loop_now();
    u.rc[2] = acquire(watch_stream, 2000, &uc);
    u.t[2] = loop_now() - t0;
    if (u.rc[2] == 0)
        upstream_release(uc, true);
}

static void on_close_peer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    close(watch_peer);
    watch_peer = -1;
}

START_TEST(watched_client_gone_leaves_the_line)
{
    setup();
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    watch_stream = io_stream_from_fd(u.loop, fds[0], 4096);
    watch_peer = fds[1];
    ck_assert_int_eq(loop_spawn(u.loop, holder_fn, NULL, NULL), 0);
    run_for(5);
    ck_assert_int_eq(loop_spawn(u.loop, watched_fn, NULL, NULL), 0);
    run_for(5);
    ck_assert_int_eq(loop_spawn(u.loop, waiter_fn, (void *)(intptr_t)3, NULL), 0);
    struct timeval tv = {0, 20000};
    ck_assert_int_eq(event_base_once(loop_base(u.loop), -1, EV_TIMEOUT, on_close_peer, NULL, &tv),
                     0);
    run_for(600);
    ck_assert_int_eq(u.rc[2], -ECONNABORTED);
    ck_assert_int_lt(MS(u.t[2]), 150); /* before A freed the slot at 200 ms */
    ck_assert_int_eq(u.rc[3], 0);
    u.order[u.norder] = '\0';
    ck_assert_str_eq(u.order, "ACa");
    io_stream_free(watch_stream);
    teardown();
}
END_TEST

/* Process-wide state: two upstream sets (two workers) over one config. */
static struct config *load(const char *yaml)
{
    struct config *cfg;
    FILE *diag = fopen("/dev/null", "w");
    int rc = config_load_string("t.yaml", yaml, strlen(yaml), &cfg, diag);
    fclose(diag);
    ck_assert_int_eq(rc, 0);
    return cfg;
}

static const char SHARED[] = "listen:\n  - address: 127.0.0.1:1\n"
                             "upstreams:\n  s:\n"
                             "    retries: { attempts: 1, budget: 20%, budget_min: 0 }\n"
                             "    passive: { failures: 2, eject_for: 60s }\n"
                             "    servers:\n"
                             "      - address: 127.0.0.1:1\n"
                             "      - address: 127.0.0.1:2\n"
                             "      - address: 127.0.0.1:3\n"
                             "      - address: 127.0.0.1:4\n"
                             "routes:\n  - name: r\n    upstream: s\n";

/* Failures reported by two workers add up; at most half of the servers
 * are ejected, and both workers' picks skip the ejected ones. */
START_TEST(ejection_counts_every_worker_and_caps_at_half)
{
    struct config *cfg = load(SHARED);
    const struct config_upstream *up = config_upstream_find(cfg, "s");
    bool draining = false;
    unsigned long conns = 0;
    struct upstream_registry *pa = NULL, *pb = NULL; /* two workers' pools */
    struct upstream_set *a =
        upstream_set_new(&(struct upstream_owner){0, &draining, &conns, &pa}, cfg);
    struct upstream_set *b =
        upstream_set_new(&(struct upstream_owner){1, &draining, &conns, &pb}, cfg);
    ck_assert(!upstream_report(a, up, 0, false));
    ck_assert(upstream_report(b, up, 0, false)); /* the second failure, another worker */
    ck_assert(upstream_ejected(up, 0));
    ck_assert(!upstream_report(a, up, 1, false));
    ck_assert(!upstream_report(a, up, 1, true)); /* a success starts the count again */
    ck_assert(!upstream_report(b, up, 1, false));
    ck_assert(upstream_report(a, up, 1, false));
    ck_assert(!upstream_report(a, up, 2, false));
    ck_assert(!upstream_report(b, up, 2, false)); /* a third of four: not ejected */
    ck_assert(!upstream_ejected(up, 2));
    for (int i = 0; i < 40; i++) {
        int k = upstream_pick(i % 2 ? a : b, up, NULL, 0, false);
        ck_assert(k == 2 || k == 3);
    }
    upstream_set_free(a);
    upstream_set_free(b);
    upstream_registry_free(&pa);
    upstream_registry_free(&pb);
    config_unref(cfg);
}
END_TEST

/* budget 20 %, budget_min 0: two retries for ten requests, counted over
 * both workers. */
START_TEST(retry_budget_is_process_wide)
{
    struct config *cfg = load(SHARED);
    const struct config_upstream *up = config_upstream_find(cfg, "s");
    bool draining = false;
    unsigned long conns = 0;
    struct upstream_registry *pa = NULL, *pb = NULL; /* two workers' pools */
    struct upstream_set *a =
        upstream_set_new(&(struct upstream_owner){0, &draining, &conns, &pa}, cfg);
    struct upstream_set *b =
        upstream_set_new(&(struct upstream_owner){1, &draining, &conns, &pb}, cfg);
    ck_assert(!upstream_budget_retry(a, up));
    for (int i = 0; i < 10; i++)
        upstream_budget_request(i % 2 ? a : b, up);
    ck_assert(upstream_budget_retry(a, up));
    ck_assert(upstream_budget_retry(b, up));
    ck_assert(!upstream_budget_retry(a, up));
    ck_assert(!upstream_budget_retry(b, up));
    for (int i = 0; i < 5; i++)
        upstream_budget_request(a, up);
    ck_assert(upstream_budget_retry(b, up));
    ck_assert(!upstream_budget_retry(b, up));
    upstream_set_free(a);
    upstream_set_free(b);
    upstream_registry_free(&pa);
    upstream_registry_free(&pb);
    config_unref(cfg);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("max_connections");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, line_is_first_come_first_served);
    tcase_add_test(tc, handed_slot_passes_on_when_cancelled);
    tcase_add_test(tc, watched_client_gone_leaves_the_line);
    suite_add_tcase(s, tc);
    TCase *ts = tcase_create("shared");
    tcase_add_test(ts, ejection_counts_every_worker_and_caps_at_half);
    tcase_add_test(ts, retry_budget_is_process_wide);
    suite_add_tcase(s, ts);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
