/*
 * io_idle: the per-thread pool of read and write events, and the idle set
 * (below): what an idle stream gives back. Part of io (io_internal.h);
 * io.c is the rest.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "io_internal.h"
#include "loop.h"

/* Read and write events not in use, per thread (at most EV_POOL_CAP). */
#define EV_POOL_CAP 1024u
static __thread struct io_ev *evpool;
static __thread unsigned evpool_len;

struct io_ev *io_ev_get(void)
{
    struct io_ev *e = evpool;
    if (e) {
        evpool = e->next_free;
        evpool_len--;
        return e;
    }
    return malloc(sizeof(*e));
}

/* e is out of the loop (or only in it from its own running callback:
 * libevent no longer touches an event once its callback runs). */
void io_ev_put(struct io_ev *e)
{
    if (evpool_len >= EV_POOL_CAP) {
        free(e);
        return;
    }
    e->next_free = evpool;
    evpool = e;
    evpool_len++;
}

/*
 * The idle set. A connection idle for long while its worker has many (a
 * keep-alive client between requests, a silent new one: its owner calls
 * io_park) waits with no libevent event at all: its socket is in the
 * thread's idle set, an epoll instance of its own that is in the loop as
 * one read event, and the stream gives its read event (128 bytes) back to
 * the pool; libevent keeps no per-fd entry for a socket it never polled.
 * When the set reports the socket, the stream takes an event back and
 * reads at once, as if libevent had reported it, lazy from then on (as a
 * new connection: not polled until a coroutine needs more input).
 *
 * EPOLLONESHOT: the set reports a socket once and disarms it, so a wake
 * costs no epoll_ctl; the next park re-arms it (EPOLL_CTL_MOD), the first
 * adds it. A disarmed socket can report nothing, and leaves the set with
 * its file when closed (sockets are never duplicated: CLOEXEC, no fork);
 * an armed one is deleted from the set before its close, so the set never
 * holds a pointer to a freed stream. A wake only assigns and activates
 * the stream's event (no callback runs while a batch is handled), so no
 * stream of a batch is freed before the batch is done. Level-triggered:
 * bytes that arrived before the park are reported at once. A stream that
 * finds no memory for its event ends as a failed read (ENOMEM) once the
 * batch is done: its owner is told and closes it, rather than it sitting
 * unread, its client waiting, until its deadline.
 */
#define IDLE_SET_BATCH 128
static __thread struct {
    struct loop *loop; /* the loop its event is in; NULL: none open */
    int fd;
    unsigned socks; /* registered (armed or not); closed when none is left */
    struct event ev;
} idle_set;

/* Gives s a read event from the pool, assigned and not added. */
static bool rev_take(struct io_stream *s)
{
    struct io_ev *e = io_ev_get();
    if (!e)
        return false;
    s->rev = e;
    s->rev_added = false;
    event_assign(&e->ev, loop_base(s->loop), s->fd, EV_READ | EV_PERSIST, io_on_readable, s);
    return true;
}

/* The set reported s: it reads now (its callback runs later in this loop
 * turn). False when out of memory for the event (s is left disarmed and
 * unread). */
static bool idle_wake(struct io_stream *s)
{
    if (!rev_take(s))
        return false;
    s->lazy = true;
    event_active(&s->rev->ev, EV_READ, 1);
    return true;
}

static void on_idle_set(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    struct epoll_event evs[IDLE_SET_BATCH];
    /* One batch a turn: the set stays readable while more are ready. */
    int n = epoll_wait(fd, evs, IDLE_SET_BATCH, 0);
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!idle_wake(evs[i].data.ptr))
            evs[failed++].data.ptr = evs[i].data.ptr;
    /* Told after the batch, one at a time: an owner may free its own
     * stream (io.h), never another's, so the ones still listed stay. */
    for (int i = 0; i < failed; i++)
        io_read_failed(evs[i].data.ptr, ENOMEM);
}

static bool idle_set_open(struct loop *loop)
{
    if (idle_set.loop)
        return false; /* another loop of this thread has it */
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        return false;
    event_assign(&idle_set.ev, loop_base(loop), fd, EV_READ | EV_PERSIST, on_idle_set, NULL);
    if (event_add(&idle_set.ev, NULL) != 0) {
        close(fd);
        return false;
    }
    idle_set.fd = fd;
    idle_set.loop = loop;
    idle_set.socks = 0;
    return true;
}

/* When its last socket left, or before the loop goes (stream_pool_drain):
 * a worker that had many connections keeps no descriptor for it. */
static void idle_set_close(void)
{
    if (!idle_set.loop)
        return;
    event_del(&idle_set.ev);
    close(idle_set.fd);
    idle_set.loop = NULL;
}

/* Takes s out of the set: with EPOLL_CTL_DEL when it may be armed (to
 * poll it again, or before its close), else it leaves with its file. */
void io_idle_del(struct io_stream *s, bool armed)
{
    if (!s->idle_reg)
        return;
    s->idle_reg = false;
    if (idle_set.loop != s->loop)
        return;
    if (armed)
        (void)epoll_ctl(idle_set.fd, EPOLL_CTL_DEL, s->fd, NULL);
    if (--idle_set.socks == 0)
        idle_set_close();
}

/* Whether s may wait in the set: idle in every way, reading, nothing
 * buffered, not even in its transport (TLS plaintext OpenSSL decrypted
 * ahead: the socket would not report it). */
static bool idle_parkable(struct io_stream *s)
{
    return s->rev && !s->bufs && s->on_idle && !s->splice && !io_waited(s) && s->connected &&
           !s->connecting && !s->handshaking && s->reading && !s->read_done && !s->write_err &&
           !s->wev_added && !s->read_wants_write && !s->write_wants_read &&
           s->loop == io_pool_loop() && !(s->tp->pending && s->tp->pending(s));
}

/* Moves s's socket into the set, armed, and gives its read event back.
 * False (s unchanged) when the set cannot be had or refuses it. */
static bool idle_add(struct io_stream *s)
{
    if (idle_set.loop != s->loop && !idle_set_open(s->loop))
        return false;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = s};
    if (epoll_ctl(idle_set.fd, s->idle_reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->fd, &ev) != 0) {
        if (!idle_set.socks)
            idle_set_close();
        return false;
    }
    if (!s->idle_reg)
        idle_set.socks++;
    s->idle_reg = true;
    event_del(&s->rev->ev); /* from the loop, and from its active queue */
    io_ev_put(s->rev);
    s->rev = NULL;
    s->rev_added = false;
    s->lazy = false;
    s->park_idle = false;
    return true;
}

/* A stream in the set that must be polled by the loop again (or whose
 * wake found no memory) takes a read event back. */
bool io_rev_restore(struct io_stream *s)
{
    if (!rev_take(s))
        return false;
    io_idle_del(s, true);
    return true;
}

bool io_idle_park(struct io_stream *s)
{
    return idle_parkable(s) && idle_add(s);
}

void io_ev_pool_drain(void)
{
    while (evpool) {
        struct io_ev *e = evpool;
        evpool = e->next_free;
        free(e);
    }
    evpool_len = 0;
    idle_set_close();
}
