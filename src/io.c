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
 *
 * A stream is a socket, two plain evbuffers and two events, all io.c's
 * own (no bufferevent): reads are one readv of an adaptive size into
 * reserved space of the input (never FIONREAD and 4 KiB at a time, as a
 * socket bufferevent reads); writes are made from the coroutine when it
 * queues output (write_now), and the write event is in the loop only
 * while output is left over. Bytes go through the stream's transport
 * (struct io_transport): plain TCP here; a TLS transport plugs in below
 * this file and nothing above io changes.
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
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "coro.h"
#include "io_internal.h"
#include "loop.h"
#include "sys.h"

/*
 * A wait's record. Its timer is armed lazily, as nginx does: a record
 * keeps a pending timer across waits (and in the free list), and a new
 * wait whose deadline is no earlier than the pending instant leaves it
 * alone; when it fires early, on_timer() arms it again for the rest. Most
 * waits end before their deadline, so most cost no event_add/event_del.
 */
struct wait_rec {
    uint32_t gen;
    int result; /* 0: look again; -ETIMEDOUT; -ECANCELED */
    struct coro *coro;
    int64_t due;         /* this wait's deadline; LOOP_NEVER: none or unused */
    int64_t armed;       /* the instant the timer is pending for; 0: not pending */
    uint64_t timer_loop; /* loop_id() of the loop the timer belongs to; 0: none */
    struct event timer;
    struct wait_rec *next_free;
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
    rec->due = LOOP_NEVER;
    rec->next_free = NULL;
    return rec;
}

/* Ends a record's use: the generation changes, so anything still holding
 * (rec, old gen) is stale from now on. A pending timer stays (see struct
 * wait_rec): it finds no deadline when it fires. */
static void rec_put(struct wait_rec *rec)
{
    rec->gen++;
    rec->coro = NULL;
    rec->due = LOOP_NEVER;
    rec->next_free = rec_free_list;
    rec_free_list = rec;
    recs_live--;
}

unsigned io_records_live(void)
{
    return recs_live;
}

/* After loop_free(): freeing the event base took the records' pending
 * timers out of it, so the records can go without event_del. */
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

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* The record's timer pending no later than at (see struct wait_rec). */
static void timer_arm(struct wait_rec *rec, struct loop *loop, int64_t at)
{
    uint64_t id = loop_id(loop);
    if (rec->timer_loop != id) {
        /* New, or its loop was freed (a thread has one live loop at a
         * time, loop.h): event_base_free() took the timer out of it. */
        event_assign(&rec->timer, loop_base(loop), -1, 0, on_timer, rec);
        rec->timer_loop = id;
        rec->armed = 0;
    }
    if (rec->armed && rec->armed <= at)
        return; /* fires first; on_timer() arms it again for the rest */
    int64_t left = at - loop_now();
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = (time_t)(left / LOOP_SEC),
                         .tv_usec = (suseconds_t)((left % LOOP_SEC) / 1000)};
    /* A failed add leaves the record unarmed: the next wait tries again. */
    rec->armed = event_add(&rec->timer, &tv) == 0 ? at : 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wait_rec *rec = arg;
    rec->armed = 0;
    if (!rec->coro || rec->due == LOOP_NEVER)
        return;                  /* a finished wait's timer, or one without a deadline */
    if (loop_now() < rec->due) { /* armed for an earlier wait */
        timer_arm(rec, coro_slots(rec->coro)->loop, rec->due);
        return;
    }
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

/* ---- the plain TCP transport ------------------------------------------------- */

static ssize_t plain_readv(struct io_stream *s, struct iovec *v, int n)
{
    ssize_t r = sys_readv(s->fd, v, n);
    return r < 0 ? -errno : r;
}

static ssize_t plain_writev(struct io_stream *s, const struct iovec *v, int n)
{
    ssize_t r = sys_writev(s->fd, v, n);
    return r < 0 ? -errno : r;
}

static int plain_shutdown(struct io_stream *s)
{
    return shutdown(s->fd, SHUT_WR) == 0 ? 0 : -errno;
}

static const struct io_transport plain_transport = {
    .name = "plain",
    .readv = plain_readv,
    .writev = plain_writev,
    .shutdown = plain_shutdown,
    .fini = NULL,
};

/* ---- streams --------------------------------------------------------------- */

/* New bytes arrived: wake the waiter that wants them, or tell the owner
 * of an idle stream (or the splice). The owner may free the stream in its
 * callback. */
static void notify_readable(struct io_stream *s)
{
    if (s->waiter && s->waiter->gen == s->waiter_gen) {
        if ((s->want & IO_READABLE) && evbuffer_get_length(s->in) >= s->read_min)
            wake_waiter(s, IO_READABLE);
        return;
    }
    if (s->splice)
        splice_readable(s);
    else if (s->on_idle)
        s->on_idle(s, IO_READABLE, s->idle_arg);
}

/* The stream ended or failed (flags already set). */
static void notify_end(struct io_stream *s)
{
    if (s->waiter && s->waiter->gen == s->waiter_gen) {
        wake_waiter(s, IO_READABLE | IO_WRITABLE | IO_EOF | IO_CONNECTED);
        return;
    }
    if (s->splice)
        splice_ended(s);
    else if (s->on_idle)
        s->on_idle(s, IO_EOF, s->idle_arg);
}

/*
 * Freed streams are kept for reuse, per thread and for one loop at a time
 * (at most STREAM_POOL_CAP): a new connection then costs no allocation
 * (the stream, its two evbuffers). The pool is emptied when its loop is
 * freed.
 */
#define STREAM_POOL_CAP 1024u
static __thread struct {
    struct loop *loop;
    struct io_stream *head; /* linked through next_free */
    unsigned len;
} spool;

static void stream_nomem(struct io_stream *s);

/* Keeps the read event in the loop exactly while a read may be done:
 * reading wanted, connected, not ended, input below read_max. */
void io_rev_update(struct io_stream *s)
{
    bool want;
    if (s->handshaking)
        want = !s->lazy && s->connected && !s->read_done && !s->hs_want_write;
    else
        want = (!s->lazy && s->reading && s->connected && !s->read_done &&
                evbuffer_get_length(s->in) < s->read_max && !s->read_wants_write) ||
               s->write_wants_read;
    if (want && !s->rev_added) {
        /* A stream in the idle set is polled by the loop again. */
        if (__builtin_expect(!s->rev, 0) && !io_rev_restore(s)) {
            stream_nomem(s); /* no memory for the read event */
            return;
        }
        event_add(&s->rev->ev, NULL);
        s->rev_added = true;
    } else if (!want && s->rev_added) {
        event_del(&s->rev->ev);
        s->rev_added = false;
    }
    /* Input the transport holds (decrypted, read ahead) is never
     * signalled by the socket: read it on this loop turn. */
    if (want && s->tp->pending && !s->handshaking && s->tp->pending(s))
        event_active(&s->rev->ev, EV_READ, 1);
}

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Adds (on) or removes the write event; wev_set() is the cheap check. */
__attribute__((noinline)) static void wev_change(struct io_stream *s, bool on)
{
    if (on) {
        struct io_ev *e = io_attach(s) ? io_ev_get() : NULL;
        if (!e) {
            stream_nomem(s); /* no memory for its buffers or the write event */
            return;
        }
        event_assign(&e->ev, loop_base(s->loop), s->fd, EV_WRITE | EV_PERSIST, on_writable, s);
        event_add(&e->ev, NULL);
        s->wev = e;
        s->wev_added = true;
    } else {
        /* Also from its own callback: libevent no longer touches an
         * event once its callback runs. */
        struct io_ev *e = s->wev;
        event_del(&e->ev);
        s->wev = NULL;
        s->wev_added = false;
        io_ev_put(e);
    }
}

static inline void wev_set(struct io_stream *s, bool on)
{
    if (on != s->wev_added)
        wev_change(s, on);
}

/*
 * Out of memory for what the stream needs to go on (its buffers, its
 * read or write event): it fails both ways, as a failed read and write
 * would (io_eof, io_error ENOMEM), instead of the process, and whoever
 * uses it learns at once. Called on a coroutine's stack, in a callback,
 * and inside io_wait's own steps, and its callers go on using s after it
 * returns, so the owner's idle callback or a splice (either may free s)
 * is not called from here. A waiting coroutine is woken: wake_waiter only
 * queues it (loop_wake), from any of those places; inside io_wait's steps
 * no waiter is registered yet (only a coroutine suspended in park() is),
 * and the evaluation that follows sees the failure. With nobody waiting,
 * the read event is made active instead: io_on_readable tells the end
 * (end_pending) from the loop's stack on this loop turn; a stream in the
 * idle set has no read event and is told when the set next reports its
 * socket (bytes or the peer's close).
 */
__attribute__((noinline, cold)) static void stream_nomem(struct io_stream *s)
{
    s->read_done = true;
    s->write_err = true;
    s->connecting = false;
    s->read_wants_write = false;
    s->write_wants_read = false;
    if (!s->error)
        s->error = ENOMEM;
    if (s->rev_added) {
        event_del(&s->rev->ev);
        s->rev_added = false;
    }
    wev_set(s, false);
    if (io_waited(s)) {
        wake_waiter(s, IO_READABLE | IO_WRITABLE | IO_EOF | IO_CONNECTED);
        return;
    }
    s->end_pending = true;
    if (s->rev)
        event_active(&s->rev->ev, EV_READ, 1);
}

static void write_failed(struct io_stream *s, int err);

/*
 * One step of the transport's handshake, when the socket is ready in the
 * direction it waited for. Once done, the stream reads and writes as any
 * other, and a waiter (io_handshake) is woken; a failure ends the stream
 * as a write error would (the owner is told, io_error says why).
 */
static void handshake_step(struct io_stream *s)
{
    int r = s->tp->handshake(s);
    if (r == -EAGAIN || r == -EINTR || r == IO_TP_WANT_WRITE) {
        s->lazy = false;
        s->hs_want_write = r == IO_TP_WANT_WRITE;
        wev_set(s, s->hs_want_write);
        io_rev_update(s);
        return;
    }
    if (r < 0) {
        s->read_done = true;
        write_failed(s, -r);
        return;
    }
    s->handshaking = false;
    s->hs_want_write = false;
    s->lazy = false;
    wev_set(s, false);
    io_rev_update(s);
    io_write_now(s);
    wake_waiter(s, IO_CONNECTED | IO_WRITABLE);
}

/* Ends a lazy stream's wait-free start: from now on it is polled. */
static void start_polling(struct io_stream *s)
{
    if (s->lazy) {
        s->lazy = false;
        io_rev_update(s);
    }
}

/*
 * Reads straight into the input evbuffer: one readv of up to read_chunk
 * bytes (never past read_max) into reserved space.
 */
void io_on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct io_stream *s = arg;
    if (__builtin_expect(s->end_pending, 0)) {
        /* It failed (stream_nomem) with nobody waiting: tell its owner. */
        s->end_pending = false;
        notify_end(s);
        return;
    }
    if (s->write_wants_read) {
        s->write_wants_read = false;
        io_write_now(s);
        io_rev_update(s);
    }
    if (s->handshaking) {
        handshake_step(s);
        return;
    }
    size_t len = evbuffer_get_length(s->in);
    if (len >= s->read_max) {
        io_rev_update(s);
        return;
    }
    size_t room = s->read_max - len;
    size_t want = room < s->read_chunk ? room : s->read_chunk;
    static __thread struct evbuffer_iovec v[2]; /* see io_sys_args */
    ssize_t n = -ENOMEM;
    int nv;
    if (len == 0 && want <= IO_READ_MIN) {
        /* An empty input reads into the thread's scratch first: space
         * reserved in the evbuffer stays allocated when the read finds
         * nothing (a keep-alive or new connection that is silent would
         * hold an 8 KiB chain), and a small request gets a chain its size. */
        static __thread unsigned char scratch[IO_READ_MIN];
        static __thread struct iovec one;
        one = (struct iovec){.iov_base = scratch, .iov_len = want};
        n = s->tp->readv(s, &one, 1);
        /* A parked stream takes its buffers only now that bytes came. */
        if (n > 0 && (!io_attach(s) || evbuffer_add(s->in, scratch, (size_t)n) != 0))
            n = -ENOMEM;
        nv = 0;
    } else if (!io_attach(s)) {
        nv = 0;
    } else if ((nv = evbuffer_reserve_space(s->in, (ev_ssize_t)want, v, 2)) > 0) {
        /* The reservation may be larger than asked: never read past it. */
        size_t cap = want;
        for (int i = 0; i < nv; i++) {
            if (v[i].iov_len > cap)
                v[i].iov_len = cap;
            cap -= v[i].iov_len;
        }
        n = s->tp->readv(s, (struct iovec *)v, nv);
    }
    if (n > 0 && nv > 0) {
        size_t left = (size_t)n;
        for (int i = 0; i < nv; i++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(s->in, v, nv);
    }
    if (n == -EAGAIN || n == -EINTR) {
        /* A lazy stream's speculative read found nothing: it is polled,
         * or waits in the idle set if its owner parked it. */
        if (!s->park_idle || !io_idle_park(s))
            start_polling(s);
        return;
    }
    if (n == IO_TP_WANT_WRITE) {
        s->read_wants_write = true;
        s->lazy = false;
        io_rev_update(s);
        wev_set(s, true);
        return;
    }
    if (n <= 0) {
        io_read_failed(s, n < 0 ? (int)-n : 0);
        return;
    }
    s->last_read = loop_now();
    if ((size_t)n == want && s->read_chunk < IO_READ_MAX_CHUNK)
        s->read_chunk *= 2;
    else if ((size_t)n < want / 4 && s->read_chunk > IO_READ_MIN)
        s->read_chunk /= 2;
    io_rev_update(s);
    notify_readable(s);
}

void io_read_failed(struct io_stream *s, int err)
{
    s->read_done = true;
    if (err)
        s->error = err;
    io_rev_update(s);
    notify_end(s);
}

/* At most this many chains per writev. */
#define IO_WRITE_IOV 16

/* One writev of what the output holds. Returns bytes written or -errno. */
static ssize_t write_out(struct io_stream *s)
{
    static __thread struct evbuffer_iovec v[IO_WRITE_IOV]; /* see io_sys_args */
    int nv = evbuffer_peek(s->out, -1, NULL, v, IO_WRITE_IOV);
    if (nv > IO_WRITE_IOV)
        nv = IO_WRITE_IOV;
    ssize_t n = s->tp->writev(s, (const struct iovec *)v, nv);
    if (n > 0)
        evbuffer_drain(s->out, (size_t)n);
    return n;
}

/* A write or a connect failed: nothing more leaves; the waiter or owner
 * is told. */
static void write_failed(struct io_stream *s, int err)
{
    s->write_err = true;
    s->error = err;
    if (s->connecting) {
        s->connecting = false;
        s->read_done = true; /* a failed connect reads nothing either */
    }
    wev_set(s, false);
    io_rev_update(s);
    notify_end(s);
}

/*
 * The socket is writable: a connect in progress ended, or output is left
 * over from write_now. Writes (once per wake-up), then wakes a waiter
 * whose output drained to its mark; leaves the loop once all is written.
 */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct io_stream *s = arg;
    if (s->connecting) {
        int err = 0;
        socklen_t elen = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY || err == EINTR)
            return;
        if (err) {
            write_failed(s, err);
            return;
        }
        s->connecting = false;
        s->connected = true;
        io_rev_update(s);
        if (evbuffer_get_length(s->out) == 0)
            wev_set(s, false);
        wake_waiter(s, IO_CONNECTED | IO_WRITABLE);
        return;
    }
    if (s->write_err) {
        wev_set(s, false);
        return;
    }
    if (s->handshaking) {
        handshake_step(s);
        return;
    }
    if (s->read_wants_write) {
        s->read_wants_write = false;
        io_rev_update(s);
        if (s->rev)
            event_active(&s->rev->ev, EV_READ, 1);
    }
    ssize_t n = evbuffer_get_length(s->out) ? write_out(s) : 0;
    if (n == IO_TP_WANT_READ) {
        s->write_wants_read = true;
        wev_set(s, false);
        io_rev_update(s);
        return;
    }
    if (n < 0 && n != -EAGAIN && n != -EINTR) {
        write_failed(s, (int)-n);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    if (left == 0)
        wev_set(s, false); /* until write_now leaves some */
    if (s->splice) {
        splice_drained(s);
        return;
    }
    if ((s->want & IO_WRITABLE) && left <= s->write_below)
        wake_waiter(s, IO_WRITABLE);
}

/*
 * Writes what the stream's output holds now, from the coroutine (or a
 * splice), instead of on the next loop turn after an EPOLLOUT. The write
 * event is in the loop only while output is left: queueing data arms
 * nothing, and a response written whole costs one writev and no
 * epoll_ctl. A write error is left for on_writable to find and report
 * from the loop (never from here: the idle callback it may call must not
 * run on a coroutine's stack).
 */
void io_write_now(struct io_stream *s)
{
    if (evbuffer_get_length(s->out) == 0 || s->write_err || !s->connected || s->handshaking ||
        s->write_wants_read)
        return;
    ssize_t n = write_out(s);
    if (n == IO_TP_WANT_READ) {
        s->write_wants_read = true;
        io_rev_update(s);
        return;
    }
    wev_set(s, n < 0 || evbuffer_get_length(s->out) > 0);
}

/*
 * io_sys_args: what a system call reads from or writes to user memory
 * (iovec arrays, option values) is kept in per-thread or static memory,
 * never on a coroutine stack. A new coroutine's stack pages are fresh,
 * and under hypervisors that shadow the guest's page tables the kernel's
 * first access to a fresh user page costs an exit: on this project's
 * benchmark VM, the iovec copy of a writev and the option of a
 * setsockopt were 4.6 % and 6 % of Ferry's CPU in a burst of 5,000 new
 * requests, and near nothing once moved. Elsewhere it costs nothing.
 */
static void set_nodelay(int fd)
{
    static const int one = 1; /* see io_sys_args */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * Buffers (struct io_bufs) given back by parked and freed streams, per
 * thread, at most BUFS_POOL_CAP; the thread's empty evbuffer, which every
 * parked stream's in and out point to (lengths are read from it, nothing
 * is ever added: it is frozen at both ends, so an add is refused rather
 * than seen by every parked stream).
 */
#define BUFS_POOL_CAP 1024u
static __thread struct io_bufs *bpool;
static __thread unsigned bpool_len;
static __thread struct evbuffer *empty_buf;

static void bufs_free(struct io_bufs *b)
{
    evbuffer_free(b->in);
    evbuffer_free(b->out);
    free(b);
}

/* Puts the attached stream's buffers back (wev not pending; emptied
 * unless known empty) and points it at the empty evbuffer. */
static void bufs_put(struct io_stream *s, bool empty)
{
    struct io_bufs *b = s->bufs;
    s->bufs = NULL;
    s->in = s->out = empty_buf;
    if (!empty) {
        evbuffer_drain(b->in, evbuffer_get_length(b->in));
        evbuffer_drain(b->out, evbuffer_get_length(b->out));
    }
    if (bpool_len >= BUFS_POOL_CAP) {
        bufs_free(b);
        return;
    }
    b->next_free = bpool;
    bpool = b;
    bpool_len++;
}

static bool attach_slow(struct io_stream *s)
{
    struct io_bufs *b = bpool;
    if (b) {
        bpool = b->next_free;
        bpool_len--;
    } else {
        b = malloc(sizeof(*b));
        if (!b)
            return false;
        b->in = evbuffer_new();
        b->out = b->in ? evbuffer_new() : NULL;
        if (!b->out) {
            if (b->in)
                evbuffer_free(b->in);
            free(b);
            return false;
        }
    }
    s->bufs = b;
    s->in = b->in;
    s->out = b->out;
    return true;
}

bool io_attach(struct io_stream *s)
{
    return s->bufs || attach_slow(s);
}

struct loop *io_pool_loop(void)
{
    return spool.loop;
}

/* Gives an idle stream's buffers back (io_park's first half; all that a
 * wait with IO_PARK does). False when the stream is not idle. */
static bool bufs_park(struct io_stream *s)
{
    if (s->wev_added || s->splice || io_waited(s) || s->connecting || s->handshaking)
        return false;
    if (!s->bufs)
        return true;
    if (evbuffer_get_length(s->in) || evbuffer_get_length(s->out))
        return false;
    bufs_put(s, true);
    return true;
}

void io_park(struct io_stream *s)
{
    if (!bufs_park(s) || !s->rev)
        return;
    if (s->lazy && event_pending(&s->rev->ev, EV_READ, NULL)) {
        /* A read is scheduled (io_read_soon): what it finds decides. */
        s->park_idle = true;
        return;
    }
    if (!io_idle_park(s))
        start_polling(s);
}

/*
 * io_input, io_output on a parked stream: its buffers back. Out of memory
 * for them, the stream fails (stream_nomem) instead of the process: the
 * caller gets the thread's frozen empty evbuffer, reads nothing from it
 * and cannot add to it, and its next await or write on the stream fails.
 */
__attribute__((noinline, cold)) static void attach_or_fail(struct io_stream *s)
{
    if (!attach_slow(s))
        stream_nomem(s);
}

size_t io_input_length(const struct io_stream *s)
{
    return evbuffer_get_length(s->in);
}

static void stream_release(struct io_stream *s)
{
    if (s->bufs)
        bufs_put(s, false);
    if (s->rev)
        io_ev_put(s->rev);
    free(s);
}

static void stream_pool_drain(void *arg)
{
    (void)arg;
    while (spool.head) {
        struct io_stream *s = spool.head;
        spool.head = s->next_free;
        stream_release(s);
    }
    spool.len = 0;
    spool.loop = NULL;
    while (bpool) {
        struct io_bufs *b = bpool;
        bpool = b->next_free;
        bufs_free(b);
    }
    bpool_len = 0;
    io_ev_pool_drain();
    if (empty_buf)
        evbuffer_free(empty_buf);
    empty_buf = NULL;
}

/* Keeps s (its fd closed, its events out of the loop) for reuse. */
static bool stream_pool_put(struct io_stream *s)
{
    if (spool.len >= STREAM_POOL_CAP)
        return false;
    if (spool.loop != s->loop) {
        if (spool.loop)
            return false; /* another loop of this thread holds the pool */
        spool.loop = s->loop;
        loop_on_free(s->loop, stream_pool_drain, NULL);
    }
    if (s->bufs)
        bufs_put(s, false);
    s->next_free = spool.head;
    spool.head = s;
    spool.len++;
    return true;
}

/* A stream on fd, which it owns (closes it on failure). */
static struct io_stream *stream_new(struct loop *loop, int fd, size_t read_max)
{
    struct io_stream *s = NULL;
    if (!spool.loop) {
        /* The thread's pools and empty evbuffer go when its loop does. */
        spool.loop = loop;
        loop_on_free(loop, stream_pool_drain, NULL);
    }
    if (!empty_buf && (empty_buf = evbuffer_new())) {
        evbuffer_freeze(empty_buf, 0);
        evbuffer_freeze(empty_buf, 1);
    }
    struct io_ev *rev = NULL;
    if (spool.head && spool.loop == loop) {
        s = spool.head;
        spool.head = s->next_free;
        spool.len--;
        rev = s->rev; /* a stream freed in the idle set has none */
    } else {
        s = empty_buf ? malloc(sizeof(*s)) : NULL;
    }
    if (s && !rev && !(rev = io_ev_get())) {
        free(s);
        s = NULL;
    }
    if (!s) {
        sys_close(fd);
        return NULL;
    }
    /* Parked from the start: buffers come with the first bytes. */
    memset(s, 0, sizeof(*s));
    s->rev = rev;
    s->fd = fd;
    s->tp = &plain_transport;
    s->in = empty_buf;
    s->out = empty_buf;
    s->loop = loop;
    s->read_max = io_clamp32(read_max);
    s->reading = true;
    s->last_read = loop_now();
    s->read_chunk = IO_READ_MIN;
    event_assign(&rev->ev, loop_base(loop), fd, EV_READ | EV_PERSIST, io_on_readable, s);
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
    if (s->rev || io_rev_restore(s))
        event_active(&s->rev->ev, EV_READ, 1);
}

void io_poll(struct io_stream *s)
{
    /* Also a read event that left the loop at read_max (the input was
     * full) and was not put back (it was drained without an await). */
    if (s->lazy || (s->rev && !s->rev_added)) {
        s->lazy = false;
        io_rev_update(s);
    }
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
    if (s->splice)
        misuse("io_stream_free", "the stream is still spliced");
    if (s->rev)
        event_del(&s->rev->ev); /* also when only made active by io_read_soon */
    if (s->idle_reg)
        io_idle_del(s, !s->rev); /* armed in the idle set: out of it before the close */
    wev_set(s, false);
    if (s->tp->fini)
        s->tp->fini(s);
    /* libevent's epoll backend ignores the EBADF of a pending
     * EPOLL_CTL_DEL, and turns a MOD on a reused fd number into an ADD. */
    if (s->fd >= 0)
        sys_close(s->fd);
    if (!stream_pool_put(s))
        stream_release(s);
}

void io_stream_set_transport(struct io_stream *s, const struct io_transport *tp, void *ctx)
{
    s->tp = tp ? tp : &plain_transport;
    s->tp_ctx = ctx;
    s->handshaking = s->tp->handshake != NULL;
}

bool io_handshaking(const struct io_stream *s)
{
    return s->handshaking;
}

int io_handshake(struct io_stream *s, int64_t deadline, struct io_stream *watch)
{
    if (s->handshaking && !s->write_err)
        handshake_step(s);
    while (s->handshaking && !s->write_err) {
        struct io_want w[2] = {{.stream = s, .events = IO_CONNECTED},
                               {.stream = watch, .events = IO_EOF}};
        int r = io_wait(w, watch ? 2 : 1, deadline);
        if (r >= 0 && (w[1].fired & IO_EOF))
            r = -ECONNABORTED;
        if (r < 0)
            return r;
    }
    return s->write_err ? -(s->error ? s->error : EPROTO) : 0;
}

const struct io_transport *io_stream_transport(const struct io_stream *s)
{
    return s->tp;
}

void *io_transport_ctx(const struct io_stream *s)
{
    return s->tp_ctx;
}

int io_transport_fd(const struct io_stream *s)
{
    return s->fd;
}

struct evbuffer *io_input(struct io_stream *s)
{
    if (__builtin_expect(!s->bufs, 0))
        attach_or_fail(s);
    return s->in;
}

struct evbuffer *io_output(struct io_stream *s)
{
    if (__builtin_expect(!s->bufs, 0))
        attach_or_fail(s);
    return s->out;
}

int io_fd(struct io_stream *s)
{
    return s->fd;
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
    if (!s->rev)
        (void)io_rev_restore(s); /* out of the idle set: the loop decides */
    s->read_max = io_clamp32(read_max);
    io_rev_update(s);
}

void io_set_reading(struct io_stream *s, bool on)
{
    if (!s->rev)
        (void)io_rev_restore(s); /* out of the idle set: the loop decides */
    s->reading = on;
    if (on)
        s->lazy = false;
    io_rev_update(s);
}

void io_set_idle(struct io_stream *s,
                 void (*on_idle)(struct io_stream *s, unsigned what, void *arg), void *arg)
{
    s->on_idle = on_idle;
    s->idle_arg = arg;
}

void io_kick(struct io_stream *s)
{
    io_write_now(s);
}

int io_shutdown_write(struct io_stream *s)
{
    if (s->write_err)
        return -s->error;
    return s->tp->shutdown(s);
}

void io_reset_on_close(struct io_stream *s)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* ---- waiting ---------------------------------------------------------------- */

/* Which of w's events hold now. */
static unsigned evaluate(struct io_want *w, struct coro_slots *slots)
{
    unsigned fired = 0;
    struct io_stream *s = w->stream;
    if (s) {
        size_t min = w->read_min ? w->read_min : 1;
        if ((w->events & IO_READABLE) && (s->read_done || evbuffer_get_length(s->in) >= min))
            fired |= IO_READABLE;
        bool up = s->connected && !s->handshaking;
        if ((w->events & IO_WRITABLE) &&
            (s->write_err || (up && evbuffer_get_length(s->out) <= w->write_below)))
            fired |= IO_WRITABLE;
        if ((w->events & IO_EOF) && (s->read_done || s->write_err))
            fired |= IO_EOF;
        if ((w->events & IO_CONNECTED) && (up || s->write_err))
            fired |= IO_CONNECTED;
    }
    if ((w->events & IO_SIGNAL) && slots->signalled)
        fired |= IO_SIGNAL;
    return fired;
}

static unsigned evaluate_all(struct io_want *wants, unsigned n, struct coro_slots *slots)
{
    unsigned count = 0, all = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned fired = evaluate(&wants[i], slots);
        wants[i].fired = fired;
        count += fired != 0;
        all |= fired;
    }
    if (all & IO_SIGNAL) /* consumed, once every want has seen it */
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
        s->want |= (uint8_t)wants[i].events;
        if (wants[i].events & IO_READABLE)
            s->read_min = wants[i].read_min ? io_clamp32(wants[i].read_min) : 1;
        if (wants[i].events & IO_WRITABLE)
            s->write_below = io_clamp32(wants[i].write_below);
    }
    rec->due = deadline;
    if (deadline != LOOP_NEVER)
        timer_arm(rec, slots->loop, deadline);
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
            io_write_now(wants[i].stream);
            /* Reading paused at read_max resumes once the consumer, who
             * comes back here for more, has drained the input. */
            if (!wants[i].stream->rev_added)
                io_rev_update(wants[i].stream);
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
            if (!s)
                continue;
            if ((wants[i].events & IO_PARK) && recs_live >= IO_PARK_CROWD)
                (void)bufs_park(s);
            if (!s->lazy)
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
    for (;;) {
        /* s->in each time: a parked stream's buffers come with its bytes. */
        size_t len = evbuffer_get_length(s->in);
        if (len > 0) {
            size_t n = len < max ? len : max;
            int moved = evbuffer_remove_buffer(s->in, dst, n);
            if (!s->rev_added)
                io_rev_update(s); /* below read_max again: read on */
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
    for (;;) {
        if (evbuffer_get_length(s->in) >= n)
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
    io_write_now(s);
    size_t unsent = SIZE_MAX; /* measured before the first wait only */
    for (;;) {
        if (s->write_err)
            return stream_error(s, -EPIPE);
        size_t len = evbuffer_get_length(s->out);
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
    if (!io_attach(s) || evbuffer_add_buffer(s->out, src) != 0)
        return -ENOMEM;
    return drain_to(s, high, 0, deadline);
}

int io_write(struct io_stream *s, const void *data, size_t len, size_t high, int64_t deadline)
{
    if (cancelled_now())
        return -ECANCELED;
    if (s->write_err)
        return stream_error(s, -EPIPE);
    if (!io_attach(s) || evbuffer_add(s->out, data, len) != 0)
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
    if (ioctl(s->fd, SIOCOUTQ, &queued) != 0 || queued < 0)
        queued = 0;
    return evbuffer_get_length(s->out) + (size_t)queued;
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
    /* Connected at once (a unix socket always is, or fails at once). On
     * loopback the handshake has usually completed inside connect() even
     * when it says EINPROGRESS: a second connect() tells (0 or EISCONN,
     * or the error), and saves the loop turn, the epoll_ctl and the
     * SO_ERROR read of waiting for the socket to be writable. */
    int rc = connect(fd, sa, len);
    if (rc != 0 && errno == EINPROGRESS)
        rc = connect(fd, sa, len);
    if (rc == 0 || errno == EISCONN) {
        s->connected = true;
        io_rev_update(s);
        *out = s;
        return 0;
    }
    if (errno != EINPROGRESS && errno != EALREADY) {
        int err = errno;
        io_stream_free(s);
        return -err;
    }
    /* In progress: the write event reports its end. */
    s->connecting = true;
    wev_set(s, true);
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
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = EVUTIL_AI_ADDRCONFIG};
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
