/*
 * io: see io.h for the contract.
 *
 * A wait is: register a wait record (from this thread's pool) on every
 * stream of the set, arm its timer, set the coroutine's cancel hook, yield.
 * Callbacks that find a stream's waiter (matching generation) whose wanted
 * condition now holds call loop_wake(); the coroutine, resumed by the
 * scheduler, unregisters everything, bumps the generation and re-checks the
 * conditions itself from the streams' state. So the callbacks carry no
 * result worth trusting except "look again", "timed out" and "cancelled",
 * and a late one (generation mismatch) does nothing at all.
 */
#include "io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "coro.h"
#include "loop.h"
#include "sys.h"

struct wait_rec {
    uint32_t gen;
    bool timer_armed;
    int result; /* 0: look again; -ETIMEDOUT; -ECANCELED */
    struct coro *coro;
    struct event timer;
    struct wait_rec *next_free;
};

struct io_stream {
    struct bufferevent *bev;
    struct loop *loop;
    struct wait_rec *waiter; /* valid only while waiter_gen == waiter->gen */
    uint32_t waiter_gen;
    unsigned want; /* the waiter's events on this stream */
    size_t read_min;
    size_t write_below;
    bool read_done; /* EOF or a read error: nothing more will arrive */
    bool write_err; /* writing failed (or the connect did) */
    bool connected;
    int error;
    void (*on_idle)(struct io_stream *s, unsigned what, void *arg);
    void *idle_arg;
    /* Reads are ours, not the bufferevent's (see on_readable). */
    struct event rev;
    size_t read_max;
    bool reading;   /* the owner wants reads (io_set_reading) */
    bool rev_added; /* rev is in the loop */
    bool detached;  /* reads handed back to the bufferevent (a tunnel) */
    bool lazy;      /* not polled until a read is needed (io_stream_accepted) */
    int64_t last_read; /* when bytes last arrived (loop_now) */
    uint32_t read_chunk; /* the next read's size (IO_READ_MIN..IO_READ_MAX_CHUNK) */
    struct io_stream *next_free; /* in the pool of freed streams */
};

/* What one read asks of the kernel adapts per stream between these: it
 * doubles when a read fills it (a large body is streaming) and halves
 * when reads stay small, so an idle or waiting connection holds a small
 * buffer and a large body is read 128 KiB at a time. */
#define IO_READ_MIN (4u * 1024u)
#define IO_READ_MAX_CHUNK (128u * 1024u)

static __thread struct wait_rec *rec_free_list;
static __thread unsigned recs_live;

static void misuse(const char *call, const char *what)
{
    fprintf(stderr, "ferry: BUG: %s: %s\n", call, what);
    abort();
}

static struct wait_rec *rec_get(void)
{
    struct wait_rec *rec = rec_free_list;
    if (rec) {
        rec_free_list = rec->next_free;
    } else {
        rec = calloc(1, sizeof(*rec));
        if (!rec)
            return NULL;
    }
    recs_live++;
    rec->result = 0;
    rec->timer_armed = false;
    rec->next_free = NULL;
    return rec;
}

/* Ends a record's use: the generation changes, so anything still holding
 * (rec, old gen) is stale from now on. */
static void rec_put(struct wait_rec *rec)
{
    if (rec->timer_armed)
        event_del(&rec->timer);
    rec->gen++;
    rec->coro = NULL;
    rec->next_free = rec_free_list;
    rec_free_list = rec;
    recs_live--;
}

unsigned io_records_live(void)
{
    return recs_live;
}

void io_thread_cleanup(void)
{
    while (rec_free_list) {
        struct wait_rec *rec = rec_free_list;
        rec_free_list = rec->next_free;
        free(rec);
    }
}

/* Wakes the stream's waiter if it is current and wants one of `events`. */
static void wake_waiter(struct io_stream *s, unsigned events)
{
    struct wait_rec *rec = s->waiter;
    if (!rec || rec->gen != s->waiter_gen || !rec->coro)
        return;
    if (s->want & events)
        loop_wake(rec->coro);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wait_rec *rec = arg;
    rec->timer_armed = false;
    if (!rec->coro)
        return;
    rec->result = -ETIMEDOUT;
    loop_wake(rec->coro);
}

static void on_cancel(struct coro *c, void *arg)
{
    struct wait_rec *rec = arg;
    if (rec->coro != c)
        return;
    rec->result = -ECANCELED;
    loop_wake(c);
}

/* ---- streams --------------------------------------------------------------- */

/* New bytes arrived: wake the waiter that wants them, or tell the owner
 * of an idle stream. The owner may free the stream in its callback. */
static void notify_readable(struct io_stream *s)
{
    if (s->waiter && s->waiter->gen == s->waiter_gen) {
        if ((s->want & IO_READABLE) &&
            evbuffer_get_length(bufferevent_get_input(s->bev)) >= s->read_min)
            wake_waiter(s, IO_READABLE);
        return;
    }
    if (s->on_idle)
        s->on_idle(s, IO_READABLE, s->idle_arg);
}

/* The stream ended or failed (flags already set). */
static void notify_end(struct io_stream *s)
{
    if (s->waiter && s->waiter->gen == s->waiter_gen) {
        wake_waiter(s, IO_READABLE | IO_WRITABLE | IO_EOF | IO_CONNECTED);
        return;
    }
    if (s->on_idle)
        s->on_idle(s, IO_EOF, s->idle_arg);
}

/* Keeps the read event in the loop exactly while a read may be done:
 * reading wanted, connected, not ended, input below read_max. */
static void rev_update(struct io_stream *s)
{
    bool want = !s->lazy && s->reading && s->connected && !s->read_done && !s->detached &&
                evbuffer_get_length(bufferevent_get_input(s->bev)) < s->read_max;
    if (want && !s->rev_added) {
        event_add(&s->rev, NULL);
        s->rev_added = true;
    } else if (!want && s->rev_added) {
        event_del(&s->rev);
        s->rev_added = false;
    }
}

/* Ends a lazy stream's wait-free start: from now on it is polled. */
static void start_polling(struct io_stream *s)
{
    if (s->lazy) {
        s->lazy = false;
        rev_update(s);
    }
}

/*
 * Reads straight into the input evbuffer: one readv of up to
 * IO_READ_CHUNK (never past read_max) into reserved space. A socket
 * bufferevent would ask FIONREAD first and read at most 4 KiB: two
 * syscalls per 4 KiB of a large body.
 */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct io_stream *s = arg;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t len = evbuffer_get_length(in);
    if (len >= s->read_max) {
        rev_update(s);
        return;
    }
    size_t room = s->read_max - len;
    size_t want = room < s->read_chunk ? room : s->read_chunk;
    struct evbuffer_iovec v[2];
    /* The bufferevent keeps its input's end frozen: thaw it to add. */
    evbuffer_unfreeze(in, 0);
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
    ssize_t n = -1;
    int err = ENOMEM;
    if (nv > 0) {
        /* The reservation may be larger than asked: never read past it. */
        size_t cap = want;
        for (int i = 0; i < nv; i++) {
            if (v[i].iov_len > cap)
                v[i].iov_len = cap;
            cap -= v[i].iov_len;
        }
        n = sys_readv(fd, (struct iovec *)v, nv);
        err = errno;
    }
    if (n > 0) {
        size_t left = (size_t)n;
        for (int i = 0; i < nv; i++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, nv);
    }
    evbuffer_freeze(in, 0);
    if (n < 0 && (err == EAGAIN || err == EINTR)) {
        start_polling(s); /* a lazy stream's speculative read found nothing */
        return;
    }
    if (n <= 0) {
        s->read_done = true;
        if (n < 0)
            s->error = err;
        rev_update(s);
        notify_end(s);
        return;
    }
    s->last_read = loop_now();
    if ((size_t)n == want && s->read_chunk < IO_READ_MAX_CHUNK)
        s->read_chunk *= 2;
    else if ((size_t)n < want / 4 && s->read_chunk > IO_READ_MIN)
        s->read_chunk /= 2;
    rev_update(s);
    notify_readable(s);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct io_stream *s = arg;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));
    if (left == 0)
        bufferevent_disable(bev, EV_WRITE); /* until write_now leaves some */
    if ((s->want & IO_WRITABLE) && left <= s->write_below)
        wake_waiter(s, IO_WRITABLE);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct io_stream *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        s->connected = true;
        rev_update(s);
        wake_waiter(s, IO_CONNECTED | IO_WRITABLE);
        return;
    }
    int err = (what & BEV_EVENT_ERROR) ? EVUTIL_SOCKET_ERROR() : 0;
    if (what & BEV_EVENT_ERROR) {
        if (!s->connected)
            err = err ? err : ECONNREFUSED;
        else if (err == 0)
            err = ECONNRESET;
        s->error = err;
        if (!(what & BEV_EVENT_READING) || !s->connected)
            s->write_err = true;
        if (!(what & BEV_EVENT_WRITING) || !s->connected)
            s->read_done = true;
    }
    if (what & BEV_EVENT_EOF)
        s->read_done = true;
    rev_update(s);
    notify_end(s);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * Freed streams are kept for reuse, per thread and for one loop at a time
 * (at most STREAM_POOL_CAP): a new connection then costs no
 * bufferevent_socket_new (the bufferevent, two evbuffers, their events)
 * and its close no bufferevent finalizer. The pool is emptied when its
 * loop is freed, before the event base the bufferevents are bound to.
 */
#define STREAM_POOL_CAP 1024u
static __thread struct {
    struct loop *loop;
    struct io_stream *head; /* linked through next_free */
    unsigned len;
} spool;

static void stream_pool_drain(void *arg)
{
    (void)arg;
    while (spool.head) {
        struct io_stream *s = spool.head;
        spool.head = s->next_free;
        bufferevent_free(s->bev);
        free(s);
    }
    spool.len = 0;
    spool.loop = NULL;
}

/* Keeps s (its fd already closed) for reuse if it is in a state a new
 * connection can start from. */
static bool stream_pool_put(struct io_stream *s)
{
    /* A tunnel drove the bufferevent itself; a connect that never
     * completed leaves it connecting. Those are freed. */
    if (s->detached || !s->connected || spool.len >= STREAM_POOL_CAP)
        return false;
    if (spool.loop != s->loop) {
        if (spool.loop)
            return false; /* another loop of this thread holds the pool */
        spool.loop = s->loop;
        loop_on_free(s->loop, stream_pool_drain, NULL);
    }
    struct bufferevent *bev = s->bev;
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_freeze(out, 1);
    s->next_free = spool.head;
    spool.head = s;
    spool.len++;
    return true;
}

/*
 * A stream on fd, which it owns. The bufferevent does not close the fd
 * (no BEV_OPT_CLOSE_ON_FREE): libevent 2.1 frees a bufferevent in a
 * finalizer that runs later in the loop turn, and a client would see its
 * connection end only then, after the whole batch of answers; so
 * io_stream_free closes the fd itself, at once. Closes fd on failure.
 */
static struct io_stream *stream_new(struct loop *loop, int fd, size_t read_max)
{
    struct io_stream *s = NULL;
    struct bufferevent *bev;
    if (spool.head && spool.loop == loop) {
        s = spool.head;
        spool.head = s->next_free;
        spool.len--;
        bev = s->bev;
        memset(s, 0, sizeof(*s));
        bufferevent_setfd(bev, fd);
        /* Some 2.1 releases thaw both buffers in setfd: the socket
         * bufferevent's usual state is input end and output start frozen. */
        evbuffer_freeze(bufferevent_get_input(bev), 0);
        evbuffer_freeze(bufferevent_get_output(bev), 1);
    } else {
        s = calloc(1, sizeof(*s));
        bev = s ? bufferevent_socket_new(loop_base(loop), fd, 0) : NULL;
        if (!bev) {
            free(s);
            close(fd);
            return NULL;
        }
    }
    s->bev = bev;
    s->loop = loop;
    s->read_max = read_max;
    s->reading = true;
    s->last_read = loop_now();
    s->read_chunk = IO_READ_MIN;
    /* No bufferevent read watermark: reads are ours (and libevent 2.1's
     * bufferevent_setwatermark dereferences an allocation it does not
     * check, a crash when memory runs out). */
    bufferevent_setcb(bev, NULL, on_write, on_event, s);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    event_assign(&s->rev, loop_base(loop), fd, EV_READ | EV_PERSIST, on_readable, s);
    return s;
}

struct io_stream *io_stream_accepted(struct loop *loop, int fd, size_t read_max)
{
    struct io_stream *s = stream_new(loop, fd, read_max);
    if (s) {
        s->connected = true;
        s->lazy = true;
    }
    return s;
}

void io_read_soon(struct io_stream *s)
{
    /* An active event that was never added costs no epoll_ctl; its
     * callback runs after the others of this loop turn, giving the
     * client's request the most time to arrive. */
    event_active(&s->rev, EV_READ, 1);
}

void io_poll(struct io_stream *s)
{
    start_polling(s);
}

struct io_stream *io_stream_from_fd(struct loop *loop, int fd, size_t read_max)
{
    evutil_make_socket_nonblocking(fd);
    set_nodelay(fd);
    struct io_stream *s = io_stream_accepted(loop, fd, read_max);
    if (s)
        start_polling(s);
    return s;
}

void io_stream_free(struct io_stream *s)
{
    if (!s)
        return;
    if (s->waiter && s->waiter->gen == s->waiter_gen && s->waiter->coro)
        misuse("io_stream_free", "a coroutine is still waiting on the stream");
    int fd = (int)bufferevent_getfd(s->bev);
    event_del(&s->rev); /* also when only made active by io_read_soon */
    bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    /* libevent's epoll backend ignores the EBADF of a pending
     * EPOLL_CTL_DEL, and turns a MOD on a reused fd number into an ADD. */
    if (fd >= 0)
        sys_close(fd);
    if (stream_pool_put(s))
        return;
    bufferevent_free(s->bev);
    free(s);
}

struct evbuffer *io_input(struct io_stream *s)
{
    return bufferevent_get_input(s->bev);
}

struct evbuffer *io_output(struct io_stream *s)
{
    return bufferevent_get_output(s->bev);
}

struct bufferevent *io_bev(struct io_stream *s)
{
    return s->bev;
}

int io_fd(struct io_stream *s)
{
    return (int)bufferevent_getfd(s->bev);
}

int64_t io_last_read(const struct io_stream *s)
{
    return s->last_read;
}

bool io_eof(const struct io_stream *s)
{
    return s->read_done || s->write_err;
}

int io_error(const struct io_stream *s)
{
    return s->error;
}

bool io_waited(const struct io_stream *s)
{
    return s->waiter && s->waiter->gen == s->waiter_gen && s->waiter->coro;
}

void io_set_read_max(struct io_stream *s, size_t read_max)
{
    s->read_max = read_max;
    rev_update(s);
}

void io_set_reading(struct io_stream *s, bool on)
{
    if (s->detached) {
        if (on)
            bufferevent_enable(s->bev, EV_READ);
        else
            bufferevent_disable(s->bev, EV_READ);
        return;
    }
    s->reading = on;
    if (on)
        s->lazy = false;
    rev_update(s);
}

void io_detach_reads(struct io_stream *s)
{
    s->detached = true;
    rev_update(s);
}

void io_set_idle(struct io_stream *s, void (*on_idle)(struct io_stream *s, unsigned what, void *arg),
                 void *arg)
{
    s->on_idle = on_idle;
    s->idle_arg = arg;
}

/* evbuffer_write() made with sys_writev: at most IO_WRITE_IOV chains. */
#define IO_WRITE_IOV 16 /* 256 bytes of a coroutine stack */
static ssize_t write_out(struct evbuffer *out, int fd)
{
    struct evbuffer_iovec v[IO_WRITE_IOV];
    int nv = evbuffer_peek(out, -1, NULL, v, IO_WRITE_IOV);
    if (nv > IO_WRITE_IOV)
        nv = IO_WRITE_IOV;
    ssize_t n = sys_writev(fd, (const struct iovec *)v, nv);
    if (n > 0)
        evbuffer_drain(out, (size_t)n);
    return n;
}

/*
 * Writes what the stream's output holds now, from the coroutine, instead
 * of on the next loop turn after an EPOLLOUT. The bufferevent's write side
 * stays disabled while the output is empty, so queueing data arms no event
 * at all; only a write that could not finish enables it (its callback then
 * writes the rest and on_write disables it again). A response written
 * whole costs one writev and no epoll_ctl. A write error is left for the
 * bufferevent to find and report.
 */
static void write_now(struct io_stream *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (evbuffer_get_length(out) == 0 || s->write_err || !s->connected)
        return;
    /* A socket bufferevent keeps its output's start frozen so that only it
     * drains the buffer; thaw it for this write, as its own callback does. */
    evbuffer_unfreeze(out, 1);
    ssize_t n = write_out(out, (int)bufferevent_getfd(s->bev));
    evbuffer_freeze(out, 1);
    bool writing = bufferevent_get_enabled(s->bev) & EV_WRITE;
    if (n < 0 || evbuffer_get_length(out) > 0) {
        if (!writing)
            bufferevent_enable(s->bev, EV_WRITE);
    } else if (writing) {
        bufferevent_disable(s->bev, EV_WRITE);
    }
}

void io_kick(struct io_stream *s)
{
    write_now(s);
}

/* ---- waiting ---------------------------------------------------------------- */

/* Which of w's events hold now. */
static unsigned evaluate(struct io_want *w, struct coro_slots *slots)
{
    unsigned fired = 0;
    struct io_stream *s = w->stream;
    if (s) {
        size_t in = evbuffer_get_length(bufferevent_get_input(s->bev));
        size_t out = evbuffer_get_length(bufferevent_get_output(s->bev));
        size_t min = w->read_min ? w->read_min : 1;
        if ((w->events & IO_READABLE) && (in >= min || s->read_done))
            fired |= IO_READABLE;
        if ((w->events & IO_WRITABLE) && (s->write_err || (s->connected && out <= w->write_below)))
            fired |= IO_WRITABLE;
        if ((w->events & IO_EOF) && (s->read_done || s->write_err))
            fired |= IO_EOF;
        if ((w->events & IO_CONNECTED) && (s->connected || s->write_err))
            fired |= IO_CONNECTED;
    }
    if ((w->events & IO_SIGNAL) && slots->signalled)
        fired |= IO_SIGNAL;
    return fired;
}

static unsigned evaluate_all(struct io_want *wants, unsigned n, struct coro_slots *slots)
{
    unsigned count = 0;
    for (unsigned i = 0; i < n; i++) {
        wants[i].fired = evaluate(&wants[i], slots);
        if (wants[i].fired)
            count++;
    }
    for (unsigned i = 0; i < n; i++)
        if (wants[i].fired & IO_SIGNAL)
            slots->signalled = false;
    return count;
}

/*
 * Suspends c on rec (fresh from rec_get(), released here) until a callback
 * wakes it, the deadline passes or it is cancelled. wants (may be NULL) are
 * registered on their streams for the duration. Returns 0 ("look again"),
 * -ETIMEDOUT or -ECANCELED.
 */
static int park(struct coro *c, struct wait_rec *rec, struct io_want *wants, unsigned n,
                int64_t deadline)
{
    struct coro_slots *slots = coro_slots(c);
    rec->coro = c;
    for (unsigned i = 0; i < n; i++) {
        struct io_stream *s = wants[i].stream;
        if (!s)
            continue;
        if (s->waiter && s->waiter != rec && s->waiter->gen == s->waiter_gen && s->waiter->coro)
            misuse("io_wait", "a second coroutine waits on a stream that already has a waiter");
        if (s->waiter != rec)
            s->want = 0;
        s->waiter = rec;
        s->waiter_gen = rec->gen;
        s->want |= wants[i].events;
        if (wants[i].events & IO_READABLE)
            s->read_min = wants[i].read_min ? wants[i].read_min : 1;
        if (wants[i].events & IO_WRITABLE) {
            s->write_below = wants[i].write_below;
            bufferevent_setwatermark(s->bev, EV_WRITE, wants[i].write_below, 0);
        }
    }
    if (deadline != LOOP_NEVER) {
        int64_t left = deadline - loop_now();
        if (left < 0)
            left = 0;
        struct timeval tv = {.tv_sec = (time_t)(left / LOOP_SEC),
                             .tv_usec = (suseconds_t)((left % LOOP_SEC) / 1000)};
        struct loop *loop = slots->loop;
        event_assign(&rec->timer, loop_base(loop), -1, 0, on_timer, rec);
        event_add(&rec->timer, &tv);
        rec->timer_armed = true;
    }
    coro_set_cancel_hook(c, on_cancel, rec);
    slots->wait = rec;

    coro_yield();

    slots->wait = NULL;
    coro_set_cancel_hook(c, NULL, NULL);
    for (unsigned i = 0; i < n; i++) {
        struct io_stream *s = wants[i].stream;
        if (s && s->waiter == rec) {
            s->waiter = NULL;
            s->want = 0;
        }
    }
    int result = rec->result;
    rec_put(rec);
    return result;
}

int io_wait(struct io_want *wants, unsigned n, int64_t deadline)
{
    struct coro *c = coro_current();
    if (!c)
        misuse("io_wait", "called outside a coroutine (from a callback?)");
    struct coro_slots *slots = coro_slots(c);
    if (slots->wait)
        misuse("io_wait", "the coroutine is already waiting");
    /* A wake not consumed yet belongs to an earlier wait: drop it. */
    loop_consume_wake(c);
    for (unsigned i = 0; i < n; i++) {
        if (wants[i].stream) {
            write_now(wants[i].stream);
            /* Reading paused at read_max resumes once the consumer, who
             * comes back here for more, has drained the input. */
            if (!wants[i].stream->rev_added)
                rev_update(wants[i].stream);
        }
    }
    for (;;) {
        if (coro_cancelled(c))
            return -ECANCELED;
        int count = (int)evaluate_all(wants, n, slots);
        if (count > 0)
            return count;
        if (deadline != LOOP_NEVER && loop_now() >= deadline)
            return -ETIMEDOUT;
        /* A lazy stream is polled once input is awaited from it. Its end
         * alone is looked for only if the wait outlasts IO_LAZY_EOF_MS:
         * most waits (an upstream's answer) are shorter than that, and a
         * fresh connection answered and closed meanwhile costs no
         * epoll_ctl at all. */
        int64_t park_until = deadline;
        bool lazy_eof = false;
        for (unsigned i = 0; i < n; i++) {
            struct io_stream *s = wants[i].stream;
            if (!s || !s->lazy)
                continue;
            if (wants[i].events & IO_READABLE)
                start_polling(s);
            else if (wants[i].events & IO_EOF)
                lazy_eof = true;
        }
        if (lazy_eof)
            park_until = loop_deadline_min(deadline, loop_now() + IO_LAZY_EOF_MS * LOOP_MS);
        struct wait_rec *rec = rec_get();
        if (!rec)
            return -ENOMEM;
        int r = park(c, rec, wants, n, park_until);
        if (r == -ECANCELED)
            return r;
        if (r == -ETIMEDOUT) {
            /* The event may have arrived in the same loop turn. */
            count = (int)evaluate_all(wants, n, slots);
            if (count > 0)
                return count;
            for (unsigned i = 0; lazy_eof && i < n; i++)
                if (wants[i].stream && (wants[i].events & IO_EOF))
                    start_polling(wants[i].stream);
            /* libevent's clock may run ahead of ours by a little (its time
             * is cached per loop turn): never end a wait early. */
            if (loop_now() < deadline)
                continue;
            return -ETIMEDOUT;
        }
    }
}

void io_signal(struct coro *c)
{
    struct coro_slots *slots = coro_slots(c);
    slots->signalled = true;
    struct wait_rec *rec = slots->wait;
    if (rec && rec->coro == c)
        loop_wake(c);
}

int io_sleep(int64_t deadline)
{
    int r = io_wait(NULL, 0, deadline);
    return r == -ETIMEDOUT ? 0 : r;
}

/* ---- reads and writes ------------------------------------------------------------ */

/* A cancelled coroutine gets -ECANCELED from every await, also from one
 * that would not have needed to wait. */
static bool cancelled_now(void)
{
    struct coro *c = coro_current();
    return c && coro_cancelled(c);
}

static int stream_error(const struct io_stream *s, int clean)
{
    return s->error ? -s->error : clean;
}

ssize_t io_read(struct io_stream *s, struct evbuffer *dst, size_t max, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len > 0) {
            size_t n = len < max ? len : max;
            int moved = evbuffer_remove_buffer(in, dst, n);
            if (!s->rev_added)
                rev_update(s); /* below read_max again: read on */
            return moved < 0 ? -ENOMEM : moved;
        }
        if (s->read_done)
            return stream_error(s, 0);
        struct io_want w = {.stream = s, .events = IO_READABLE, .read_min = 1};
        int r = io_wait(&w, 1, deadline);
        if (r < 0)
            return r;
    }
}

int io_read_at_least(struct io_stream *s, size_t n, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    for (;;) {
        if (evbuffer_get_length(in) >= n)
            return 0;
        if (s->read_done)
            return stream_error(s, -EPIPE);
        struct io_want w = {.stream = s, .events = IO_READABLE, .read_min = n};
        int r = io_wait(&w, 1, deadline);
        if (r < 0)
            return r;
    }
}

/*
 * Writes now, then waits until the output holds at most high bytes. With
 * a stall (ns, nonzero) the wait fails only when no byte left for that
 * long (every byte the peer takes re-arms it, also below the kernel's
 * wake-up threshold: io_peer_took), or at the absolute deadline.
 */
static int drain_to(struct io_stream *s, size_t high, int64_t stall, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    write_now(s);
    size_t unsent = SIZE_MAX; /* measured before the first wait only */
    for (;;) {
        if (s->write_err)
            return stream_error(s, -EPIPE);
        size_t len = evbuffer_get_length(out);
        if (len <= high)
            return 0;
        struct io_want w = {.stream = s, .events = IO_WRITABLE, .write_below = high};
        int64_t until = deadline;
        if (stall) {
            if (unsent == SIZE_MAX)
                unsent = io_unsent(s);
            w.write_below = len - 1; /* any progress re-arms the stall */
            until = loop_deadline_min(loop_deadline(stall), deadline);
        }
        int r = io_wait(&w, 1, until);
        if (stall && r == -ETIMEDOUT && (deadline == LOOP_NEVER || loop_now() < deadline) &&
            io_peer_took(s, &unsent))
            continue;
        if (r < 0)
            return r;
        if (stall)
            unsent = io_unsent(s);
    }
}

int io_write_buffer(struct io_stream *s, struct evbuffer *src, size_t high, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    if (s->write_err)
        return stream_error(s, -EPIPE);
    if (evbuffer_add_buffer(bufferevent_get_output(s->bev), src) != 0)
        return -ENOMEM;
    return drain_to(s, high, 0, deadline);
}

int io_write(struct io_stream *s, const void *data, size_t len, size_t high, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    if (s->write_err)
        return stream_error(s, -EPIPE);
    if (evbuffer_add(bufferevent_get_output(s->bev), data, len) != 0)
        return -ENOMEM;
    return drain_to(s, high, 0, deadline);
}

int io_flush(struct io_stream *s, int64_t deadline)
{
    return drain_to(s, 0, 0, deadline);
}

size_t io_unsent(struct io_stream *s)
{
    int queued = 0;
    if (ioctl(bufferevent_getfd(s->bev), SIOCOUTQ, &queued) != 0 || queued < 0)
        queued = 0;
    return evbuffer_get_length(bufferevent_get_output(s->bev)) + (size_t)queued;
}

bool io_peer_took(struct io_stream *s, size_t *mark)
{
    size_t now = io_unsent(s);
    bool took = now + IO_PROGRESS_MIN <= *mark;
    *mark = now;
    return took;
}

int io_flush_progress(struct io_stream *s, int64_t stall, int64_t deadline)
{
    return drain_to(s, 0, stall > 0 ? stall : 1, deadline);
}

/* ---- connecting ----------------------------------------------------------------- */

/* True once the watched stream (may be NULL) ended: its owner is gone. */
static bool watch_ended(const struct io_stream *watch)
{
    return watch && io_eof(watch);
}

int io_connect_addr(struct loop *loop, const struct sockaddr *sa, socklen_t len, size_t read_max,
                    int64_t deadline, struct io_stream *watch, struct io_stream **out)
{
    if (watch_ended(watch))
        return -ECONNABORTED;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (sa->sa_family != AF_UNIX)
        set_nodelay(fd);
    struct io_stream *s = stream_new(loop, fd, read_max);
    if (!s)
        return -ENOMEM;
    /* Connected at once (a unix socket always is, or fails at once):
     * libevent 2.1 would only schedule a write callback for it, and with
     * the write side off nothing would ever say "connected". */
    if (connect(fd, sa, len) == 0) {
        s->connected = true;
        rev_update(s);
        *out = s;
        return 0;
    }
    if (errno != EINPROGRESS) {
        int err = errno;
        io_stream_free(s);
        return -err;
    }
    /* In progress: the bufferevent reports its end (no address: the fd
     * is connecting already). */
    if (bufferevent_socket_connect(s->bev, NULL, 0) != 0) {
        int err = errno ? errno : ECONNREFUSED;
        io_stream_free(s);
        return -err;
    }
    struct io_want w[2] = {{.stream = s, .events = IO_CONNECTED},
                           {.stream = watch, .events = IO_EOF}};
    int r = io_wait(w, watch ? 2 : 1, deadline);
    if (r >= 0 && (w[1].fired & IO_EOF))
        r = -ECONNABORTED;
    if (r < 0) {
        io_stream_free(s);
        return r;
    }
    if (!s->connected || s->write_err) {
        int err = s->error ? s->error : ECONNREFUSED;
        io_stream_free(s);
        return -err;
    }
    *out = s;
    return 0;
}

/* A name lookup in flight. If its coroutine stops waiting (deadline,
 * cancel), the request is orphaned and the late callback frees it. */
struct dns_req {
    struct coro *coro;
    struct wait_rec *rec; /* the record to wake, valid while gen matches */
    uint32_t gen;
    bool done;
    bool orphaned;
    int err;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static void on_dns(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct dns_req *req = arg;
    if (req->orphaned) {
        if (ai)
            evutil_freeaddrinfo(ai);
        free(req);
        recs_live--;
        return;
    }
    req->done = true;
    if (result == 0 && ai && ai->ai_addrlen <= sizeof(req->addr)) {
        memcpy(&req->addr, ai->ai_addr, ai->ai_addrlen);
        req->addrlen = (socklen_t)ai->ai_addrlen;
    } else {
        req->err = EHOSTUNREACH;
    }
    if (ai)
        evutil_freeaddrinfo(ai);
    /* Synchronous answers arrive while the coroutine runs: it sees done. */
    struct coro_slots *slots = coro_slots(req->coro);
    if (slots->wait && slots->wait == req->rec && req->rec->gen == req->gen)
        loop_wake(req->coro);
}

/* Resolves host with evdns, waiting on a record like any other await. */
static int resolve(struct loop *loop, const char *host, uint16_t port, int64_t deadline,
                   struct io_stream *watch, struct sockaddr_storage *addr, socklen_t *addrlen)
{
    struct evdns_base *dns = loop_dns(loop);
    if (!dns)
        return -EHOSTUNREACH;
    struct dns_req *req = calloc(1, sizeof(*req));
    if (!req)
        return -ENOMEM;
    recs_live++;
    req->coro = coro_current();
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                    .ai_flags = EVUTIL_AI_ADDRCONFIG};
    struct evdns_getaddrinfo_request *handle =
        evdns_getaddrinfo(dns, host, portstr, &hints, on_dns, req);
    int r = 0;
    /* A lookup can take seconds: the watched stream is polled meanwhile
     * (a lazy one would be only after IO_LAZY_EOF_MS). */
    struct io_want w = {.stream = watch, .events = IO_EOF};
    if (watch)
        start_polling(watch);
    while (!req->done) {
        if (coro_cancelled(req->coro)) {
            r = -ECANCELED;
            break;
        }
        if (watch_ended(watch)) {
            r = -ECONNABORTED;
            break;
        }
        if (deadline != LOOP_NEVER && loop_now() >= deadline) {
            r = -ETIMEDOUT;
            break;
        }
        struct wait_rec *rec = rec_get();
        if (!rec) {
            r = -ENOMEM;
            break;
        }
        req->rec = rec;
        req->gen = rec->gen;
        loop_consume_wake(req->coro);
        r = park(req->coro, rec, watch ? &w : NULL, watch ? 1 : 0, deadline);
        if (r == -ECANCELED && !req->done)
            break;
        /* An early timer (libevent's cached clock) is caught at the top. */
        r = 0;
    }
    if (!req->done) {
        req->orphaned = true;
        if (handle)
            evdns_getaddrinfo_cancel(handle);
        return r;
    }
    int err = req->err;
    if (!err) {
        memcpy(addr, &req->addr, req->addrlen);
        *addrlen = req->addrlen;
    }
    free(req);
    recs_live--;
    return -err;
}

int io_connect(struct loop *loop, const char *host, uint16_t port, size_t read_max,
               int64_t deadline, struct io_stream *watch, struct io_stream **out)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        len = sizeof(*v6);
    } else {
        int r = resolve(loop, host, port, deadline, watch, &ss, &len);
        if (r < 0)
            return r;
    }
    return io_connect_addr(loop, (struct sockaddr *)&ss, len, read_max, deadline, watch, out);
}
