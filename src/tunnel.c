/*
 * tunnel: see tunnel.h for the contract. The bytes are moved by io's
 * splice (io_splice); this module adds what the flow needs around it: the
 * tunnel's own ends and statistics, its duration, the count of open
 * tunnels.
 */
#include "tunnel.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "io.h"
#include "loop.h"

struct tunnel {
    struct io_splice *sp;
    int64_t start;
    void (*on_close)(void *arg, const struct tunnel_stats *stats);
    void *arg;
};

static __thread unsigned live;

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

static enum tunnel_end end_of(enum io_splice_end e)
{
    switch (e) {
    case IO_SPLICE_CLOSED:
        return TUNNEL_END_CLOSED;
    case IO_SPLICE_IDLE:
        return TUNNEL_END_IDLE;
    case IO_SPLICE_A_ERROR:
        return TUNNEL_END_CLIENT_ERROR;
    case IO_SPLICE_B_ERROR:
        return TUNNEL_END_UPSTREAM_ERROR;
    case IO_SPLICE_STOPPED:
        break;
    }
    return TUNNEL_END_STOPPED;
}

static void fill_stats(const struct tunnel *t, const struct io_splice_stats *ss,
                       struct tunnel_stats *out)
{
    out->client_to_upstream = ss->a_to_b;
    out->upstream_to_client = ss->b_to_a;
    out->duration_ns = loop_now() - t->start;
    out->end = end_of(ss->end);
    out->error = ss->error;
}

void tunnel_get_stats(const struct tunnel *t, struct tunnel_stats *out)
{
    struct io_splice_stats ss;
    io_splice_stats(t->sp, &ss);
    fill_stats(t, &ss, out);
}

/* The splice ended: report, free the tunnel (the caller forgets it in
 * on_close). */
static void on_splice_end(void *arg, const struct io_splice_stats *ss)
{
    struct tunnel *t = arg;
    struct tunnel_stats st;
    fill_stats(t, ss, &st);
    live--;
    void (*on_close)(void *, const struct tunnel_stats *) = t->on_close;
    void *close_arg = t->arg;
    free(t);
    on_close(close_arg, &st);
}

int tunnel_start(struct loop *loop, struct io_stream *client, struct io_stream *upstream,
                 int64_t idle_ms, void (*on_close)(void *arg, const struct tunnel_stats *stats),
                 void *arg, struct tunnel **out)
{
    (void)loop;
    struct tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->on_close = on_close;
    t->arg = arg;
    t->start = loop_now();
    int r = io_splice(client, upstream, TUNNEL_HIGH, idle_ms > 0 ? idle_ms * LOOP_MS : 0,
                      on_splice_end, t, &t->sp);
    if (r < 0) {
        free(t);
        return r;
    }
    live++;
    if (out)
        *out = t;
    return 0;
}

void tunnel_stop(struct tunnel *t)
{
    if (!t)
        return;
    io_splice_stop(t->sp);
}
