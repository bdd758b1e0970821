/*
 * io_splice: io_splice() of io.h, two streams moved into each other by
 * callbacks (a WebSocket tunnel), with no coroutine.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "io_internal.h"
#include "loop.h"

static void misuse(const char *call, const char *what)
{
    fprintf(stderr, "ferry: BUG: %s: %s\n", call, what);
    abort();
}

/* ---- splicing two streams ---------------------------------------------------------- */

/*
 * Each stream of a splice points at its side; a side knows its peer. The
 * stream callbacks (on_readable, on_writable, the end) call the splice_*
 * functions below instead of waking a waiter, and return right after:
 * splice_finish may have freed both streams through on_end.
 */
struct splice_side {
    struct io_splice *sp;
    struct io_stream *s;
    struct splice_side *peer;
    bool read_eof;  /* nothing more to read from this side */
    bool shut;      /* the peer's EOF was forwarded: this side's write end is shut */
    bool paused;    /* not read: the peer's output is over `high` */
    uint64_t moved; /* bytes read from this side and queued to the peer */
};

struct io_splice {
    struct splice_side side[2];
    struct event timer; /* idle timeout; also the deferred end */
    size_t high;
    int64_t idle_ns;
    int64_t last_activity;
    bool ending; /* an end is decided: splice_finish runs from the timer */
    enum io_splice_end end;
    int error;
    void (*on_end)(void *arg, const struct io_splice_stats *st);
    void *arg;
};

void io_splice_stats(const struct io_splice *sp, struct io_splice_stats *out)
{
    out->a_to_b = sp->side[0].moved;
    out->b_to_a = sp->side[1].moved;
    out->end = sp->end;
    out->error = sp->error;
}

static void splice_arm_timer(struct io_splice *sp, int64_t after_ns)
{
    if (after_ns < 0)
        after_ns = 0;
    struct timeval tv = {.tv_sec = (time_t)(after_ns / LOOP_SEC),
                         .tv_usec = (suseconds_t)((after_ns % LOOP_SEC) / 1000)};
    event_add(&sp->timer, &tv);
}

/* Ends the splice: the streams stop reading and are left to the owner
 * (only fit to be closed), on_end runs, sp is freed. Callers return at
 * once afterwards. */
static void splice_finish(struct io_splice *sp, enum io_splice_end end, int error)
{
    sp->end = end;
    sp->error = error;
    struct io_splice_stats st;
    io_splice_stats(sp, &st);
    event_del(&sp->timer);
    for (int i = 0; i < 2; i++) {
        struct io_stream *s = sp->side[i].s;
        s->splice = NULL;
        s->reading = false;
        io_rev_update(s);
    }
    void (*on_end)(void *, const struct io_splice_stats *) = sp->on_end;
    void *arg = sp->arg;
    free(sp);
    on_end(arg, &st);
}

/* Decides an end outside the callback chain that found it (io_splice
 * itself must not call on_end). */
static void splice_end_later(struct io_splice *sp, enum io_splice_end end, int error)
{
    if (sp->ending)
        return;
    sp->ending = true;
    sp->end = end;
    sp->error = error;
    event_del(&sp->timer);
    event_active(&sp->timer, EV_TIMEOUT, 1);
}

static void splice_set_reading(struct splice_side *sd, bool on)
{
    sd->paused = !on;
    sd->s->reading = on;
    io_rev_update(sd->s);
}

/* Moves what sd's input holds to the peer's output and writes it; stops
 * reading sd while the peer's output is over `high`. */
static void splice_pump(struct splice_side *sd)
{
    struct io_stream *peer = sd->peer->s;
    size_t n = evbuffer_get_length(sd->s->in);
    if (n > 0) {
        evbuffer_add_buffer(peer->out, sd->s->in);
        sd->moved += n;
        sd->sp->last_activity = loop_now();
        io_write_now(peer);
        if (!sd->s->rev_added)
            io_rev_update(sd->s); /* below read_max again */
    }
    if (!sd->read_eof && !sd->paused && evbuffer_get_length(peer->out) >= sd->sp->high)
        splice_set_reading(sd, false);
}

/*
 * Resumes sides whose peer drained to high / 2 and forwards an EOF once
 * everything before it is written (the peer's write end is shut). Returns
 * true when the splice ended (both directions shut): sp is gone.
 */
static bool splice_progress(struct io_splice *sp)
{
    for (int i = 0; i < 2; i++) {
        struct splice_side *sd = &sp->side[i];
        struct io_stream *peer = sd->peer->s;
        size_t left = evbuffer_get_length(peer->out);
        if (sd->paused && !sd->read_eof && left <= sp->high / 2)
            splice_set_reading(sd, true);
        if (sd->read_eof && !sd->peer->shut && left == 0) {
            peer->tp->shutdown(peer);
            sd->peer->shut = true;
        }
    }
    if (sp->side[0].shut && sp->side[1].shut) {
        splice_finish(sp, IO_SPLICE_CLOSED, 0);
        return true;
    }
    return false;
}

void splice_readable(struct io_stream *s)
{
    struct splice_side *sd = s->splice;
    if (sd->sp->ending)
        return;
    splice_pump(sd);
    splice_progress(sd->sp);
}

void splice_drained(struct io_stream *s)
{
    struct io_splice *sp = s->splice->sp;
    if (sp->ending)
        return;
    sp->last_activity = loop_now();
    splice_progress(sp);
}

void splice_ended(struct io_stream *s)
{
    struct splice_side *sd = s->splice;
    struct io_splice *sp = sd->sp;
    if (sp->ending)
        return;
    if (s->error) {
        splice_finish(sp, sd == &sp->side[0] ? IO_SPLICE_A_ERROR : IO_SPLICE_B_ERROR, s->error);
        return;
    }
    sd->read_eof = true;
    sd->paused = false;
    splice_pump(sd); /* whatever arrived with the FIN */
    splice_progress(sp);
}

static void on_splice_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct io_splice *sp = arg;
    if (sp->ending) {
        splice_finish(sp, sp->end, sp->error);
        return;
    }
    int64_t idle = loop_now() - sp->last_activity;
    if (idle >= sp->idle_ns) {
        splice_finish(sp, IO_SPLICE_IDLE, 0);
        return;
    }
    splice_arm_timer(sp, sp->idle_ns - idle);
}

int io_splice(struct io_stream *a, struct io_stream *b, size_t high, int64_t idle_ns,
              void (*on_end)(void *arg, const struct io_splice_stats *st), void *arg,
              struct io_splice **out)
{
    if (io_waited(a) || io_waited(b))
        misuse("io_splice", "a coroutine waits on a stream to splice");
    if (a->splice || b->splice)
        misuse("io_splice", "a stream is already spliced");
    if (!io_attach(a) || !io_attach(b)) /* its chains change hands */
        return -ENOMEM;
    struct io_splice *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return -ENOMEM;
    sp->high = high ? high : 1;
    sp->idle_ns = idle_ns > 0 ? idle_ns : 0;
    sp->last_activity = loop_now();
    sp->on_end = on_end;
    sp->arg = arg;
    event_assign(&sp->timer, loop_base(a->loop), -1, 0, on_splice_timer, sp);
    struct io_stream *streams[2] = {a, b};
    int failed = -1;
    for (int i = 0; i < 2; i++) {
        struct splice_side *sd = &sp->side[i];
        struct io_stream *s = streams[i];
        sd->sp = sp;
        sd->s = s;
        sd->peer = &sp->side[1 - i];
        /* A stream that already failed ends the splice; one already at
         * EOF is half-closed. */
        if (io_eof(s) && s->error && failed < 0)
            failed = i;
        else if (s->read_done)
            sd->read_eof = true;
        s->on_idle = NULL;
        s->splice = sd;
        s->lazy = false;
        s->reading = true;
        io_rev_update(s);
    }
    if (out)
        *out = sp;
    if (failed >= 0) {
        splice_end_later(sp, failed == 0 ? IO_SPLICE_A_ERROR : IO_SPLICE_B_ERROR,
                         streams[failed]->error);
        return 0;
    }
    /* Bytes that arrived before the splice go first. */
    splice_pump(&sp->side[0]);
    splice_pump(&sp->side[1]);
    for (int i = 0; i < 2; i++) {
        struct splice_side *sd = &sp->side[i];
        if (sd->read_eof && !sd->peer->shut && evbuffer_get_length(sd->peer->s->out) == 0) {
            sd->peer->s->tp->shutdown(sd->peer->s);
            sd->peer->shut = true;
        }
    }
    if (sp->side[0].shut && sp->side[1].shut) {
        splice_end_later(sp, IO_SPLICE_CLOSED, 0);
        return 0;
    }
    if (sp->idle_ns > 0)
        splice_arm_timer(sp, sp->idle_ns);
    return 0;
}

void io_splice_stop(struct io_splice *sp)
{
    if (!sp)
        return;
    splice_finish(sp, IO_SPLICE_STOPPED, 0);
}
