/*
 * tunnel: see tunnel.h for the contract.
 *
 * Each side has its own callback argument (struct side), so a callback
 * knows which direction it serves. finish() is the only way out: it puts
 * io.c's callbacks back, calls on_close and frees the tunnel, so every
 * callback returns right after calling it.
 */
#include "tunnel.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "io.h"
#include "loop.h"

struct side {
    struct tunnel *t;
    struct io_stream *s;
    struct bufferevent *bev;
    struct side *peer;
    bool client;    /* this is the client's side */
    bool read_eof;  /* this side sent EOF: nothing more to read from it */
    bool shut;      /* the peer's EOF was forwarded: our write side is shut */
    bool paused;    /* reading stopped: the peer's output is over TUNNEL_HIGH */
    uint64_t moved; /* bytes read from this side and queued to the peer */
    /* io.c's callbacks and write watermarks, restored at the end */
    bufferevent_data_cb saved_read, saved_write;
    bufferevent_event_cb saved_event;
    void *saved_arg;
    size_t saved_wlow, saved_whigh;
};

struct tunnel {
    struct side side[2]; /* [0] client, [1] upstream */
    struct event *timer; /* idle timeout; also the deferred end */
    int64_t idle_ns;
    int64_t start;
    int64_t last_activity;
    bool ending; /* an end is decided, finish() runs from the timer */
    enum tunnel_end pending_end;
    int pending_error;
    void (*on_close)(void *arg, const struct tunnel_stats *stats);
    void *arg;
};

static __thread unsigned live;

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

unsigned tunnel_live(void)
{
    return live;
}

const char *tunnel_end_str(enum tunnel_end end)
{
    switch (end) {
    case TUNNEL_END_CLOSED:
        return "closed";
    case TUNNEL_END_IDLE:
        return "idle timeout";
    case TUNNEL_END_CLIENT_ERROR:
        return "client error";
    case TUNNEL_END_UPSTREAM_ERROR:
        return "upstream error";
    case TUNNEL_END_STOPPED:
        return "stopped";
    }
    return "unknown";
}

void tunnel_get_stats(const struct tunnel *t, struct tunnel_stats *out)
{
    out->client_to_upstream = t->side[0].moved;
    out->upstream_to_client = t->side[1].moved;
    out->duration_ns = loop_now() - t->start;
    out->end = t->pending_end;
    out->error = t->pending_error;
}

static void arm_timer(struct tunnel *t, int64_t after_ns)
{
    if (after_ns < 0)
        after_ns = 0;
    struct timeval tv = {.tv_sec = (time_t)(after_ns / LOOP_SEC),
                         .tv_usec = (suseconds_t)((after_ns % LOOP_SEC) / 1000)};
    event_add(t->timer, &tv);
}

/*
 * Ends the tunnel: gives the streams their io.c callbacks back (reads and
 * writes left as they are: the caller closes them), calls on_close, frees
 * t. Callers return at once afterwards.
 */
static void finish(struct tunnel *t, enum tunnel_end end, int error)
{
    struct tunnel_stats st;
    t->pending_end = end;
    t->pending_error = error;
    tunnel_get_stats(t, &st);
    event_free(t->timer);
    for (int i = 0; i < 2; i++) {
        struct side *sd = &t->side[i];
        bufferevent_setcb(sd->bev, sd->saved_read, sd->saved_write, sd->saved_event, sd->saved_arg);
        bufferevent_setwatermark(sd->bev, EV_WRITE, sd->saved_wlow, sd->saved_whigh);
    }
    live--;
    void (*on_close)(void *, const struct tunnel_stats *) = t->on_close;
    void *arg = t->arg;
    free(t);
    on_close(arg, &st);
}

/* Decides an end outside the callback chain that discovered it (used where
 * on_close must not run yet: inside tunnel_start). */
static void end_later(struct tunnel *t, enum tunnel_end end, int error)
{
    if (t->ending)
        return;
    t->ending = true;
    t->pending_end = end;
    t->pending_error = error;
    event_del(t->timer);
    event_active(t->timer, EV_TIMEOUT, 1);
}

/* Both directions shut: the tunnel is over. */
static bool all_shut(const struct tunnel *t)
{
    return t->side[0].shut && t->side[1].shut;
}

/*
 * Moves what sd's input holds to the peer's output; stops reading sd when
 * the peer's output is over TUNNEL_HIGH.
 */
static void pump(struct side *sd)
{
    struct evbuffer *in = bufferevent_get_input(sd->bev);
    struct evbuffer *out = bufferevent_get_output(sd->peer->bev);
    size_t n = evbuffer_get_length(in);
    if (n > 0) {
        evbuffer_add_buffer(out, in);
        sd->moved += n;
        sd->t->last_activity = loop_now();
    }
    if (!sd->read_eof && !sd->paused && evbuffer_get_length(out) >= TUNNEL_HIGH) {
        bufferevent_disable(sd->bev, EV_READ);
        sd->paused = true;
    }
}

/*
 * Forwards sd's EOF to its peer once the peer's output is empty:
 * shutdown(SHUT_WR) on the peer's socket. Returns true when the tunnel is
 * then over (both directions shut).
 */
static bool forward_eof(struct side *sd)
{
    struct side *peer = sd->peer;
    if (!sd->read_eof || peer->shut)
        return false;
    if (evbuffer_get_length(bufferevent_get_output(peer->bev)) > 0) {
        /* Be told when it is all written. */
        bufferevent_setwatermark(peer->bev, EV_WRITE, 0, 0);
        return false;
    }
    shutdown(bufferevent_getfd(peer->bev), SHUT_WR);
    peer->shut = true;
    return all_shut(sd->t);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct side *sd = arg;
    if (sd->t->ending)
        return;
    pump(sd);
}

/* The side's output drained to its low watermark. */
static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct side *sd = arg;
    struct side *src = sd->peer; /* the side whose bytes this output carries */
    struct tunnel *t = sd->t;
    if (t->ending)
        return;
    t->last_activity = loop_now();
    if (src->paused && !src->read_eof) {
        src->paused = false;
        bufferevent_enable(src->bev, EV_READ);
    }
    if (forward_eof(src))
        finish(t, TUNNEL_END_CLOSED, 0);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct side *sd = arg;
    struct tunnel *t = sd->t;
    if (t->ending)
        return;
    if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        finish(t, sd->client ? TUNNEL_END_CLIENT_ERROR : TUNNEL_END_UPSTREAM_ERROR,
               err ? err : ECONNRESET);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        sd->read_eof = true;
        sd->paused = false;
        pump(sd); /* whatever arrived with the FIN */
        if (forward_eof(sd))
            finish(t, TUNNEL_END_CLOSED, 0);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct tunnel *t = arg;
    if (t->ending) {
        finish(t, t->pending_end, t->pending_error);
        return;
    }
    int64_t idle = loop_now() - t->last_activity;
    if (idle >= t->idle_ns) {
        finish(t, TUNNEL_END_IDLE, 0);
        return;
    }
    arm_timer(t, t->idle_ns - idle);
}

int tunnel_start(struct loop *loop, struct io_stream *client, struct io_stream *upstream,
                 int64_t idle_ms, void (*on_close)(void *arg, const struct tunnel_stats *stats),
                 void *arg, struct tunnel **out)
{
    struct tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->timer = event_new(loop_base(loop), -1, 0, on_timer, t);
    if (!t->timer) {
        free(t);
        return -ENOMEM;
    }
    t->on_close = on_close;
    t->arg = arg;
    t->idle_ns = idle_ms > 0 ? idle_ms * LOOP_MS : 0;
    t->start = t->last_activity = loop_now();
    struct io_stream *streams[2] = {client, upstream};
    for (int i = 0; i < 2; i++) {
        struct side *sd = &t->side[i];
        sd->t = t;
        sd->s = streams[i];
        sd->bev = io_bev(streams[i]);
        sd->peer = &t->side[1 - i];
        sd->client = i == 0;
        bufferevent_getcb(sd->bev, &sd->saved_read, &sd->saved_write, &sd->saved_event,
                          &sd->saved_arg);
        bufferevent_getwatermark(sd->bev, EV_WRITE, &sd->saved_wlow, &sd->saved_whigh);
    }
    live++;
    /* A stream that already failed ends the tunnel; one already at EOF is
     * half-closed. Decided before taking the callbacks over. */
    int failed = -1;
    for (int i = 0; i < 2; i++) {
        struct side *sd = &t->side[i];
        if (io_eof(sd->s) && io_error(sd->s) && failed < 0)
            failed = i;
        else if (io_eof(sd->s))
            sd->read_eof = true;
    }
    for (int i = 0; i < 2; i++) {
        struct side *sd = &t->side[i];
        io_detach_reads(sd->s);
        bufferevent_setcb(sd->bev, on_read, on_write, on_event, sd);
        bufferevent_setwatermark(sd->bev, EV_WRITE, TUNNEL_HIGH / 2, 0);
        bufferevent_enable(sd->bev, sd->read_eof ? EV_WRITE : EV_READ | EV_WRITE);
    }
    if (out)
        *out = t;
    if (failed >= 0) {
        end_later(t, failed == 0 ? TUNNEL_END_CLIENT_ERROR : TUNNEL_END_UPSTREAM_ERROR,
                  io_error(t->side[failed].s));
        return 0;
    }
    /* Bytes that arrived before the switch: the client's (sent without
     * waiting for the 101) and the upstream's after its 101 head. */
    pump(&t->side[0]);
    pump(&t->side[1]);
    for (int i = 0; i < 2; i++) {
        if (forward_eof(&t->side[i])) {
            end_later(t, TUNNEL_END_CLOSED, 0);
            return 0;
        }
    }
    if (t->idle_ns > 0)
        arm_timer(t, t->idle_ns);
    return 0;
}

void tunnel_stop(struct tunnel *t)
{
    if (!t)
        return;
    finish(t, TUNNEL_END_STOPPED, 0);
}
