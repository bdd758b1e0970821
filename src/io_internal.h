/*
 * io_internal: what io.c and io_splice.c share (not part of io's API,
 * which is io.h, included first): the stream itself and the few steps the
 * splice drives.
 */
#ifndef FERRY_IO_INTERNAL_H
#define FERRY_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event_struct.h>
#include <event2/util.h>

struct evbuffer;
struct io_transport;
struct loop;
struct wait_rec;

struct splice_side;

/* A stream's buffers: taken when bytes first move and given back while
 * it is idle (io_park), so an idle connection holds only its socket and
 * the struct below (its read event too, unless it waits in the thread's
 * idle set: see io_park in io.c). */
struct io_bufs {
    struct evbuffer *in, *out;
    struct io_bufs *next_free;
};
/* A read or write event, from the thread's pool: a write event is taken
 * only while it is in the loop (output left over, a connect or handshake
 * waiting for the socket), a read event except while the stream waits in
 * the idle set. */
struct io_ev {
    struct event ev;
    struct io_ev *next_free;
};

/* Laid out for an idle connection's sake (one per client connection):
 * sizes in 32 bits (clamped where set). The flags read on every request
 * stay whole bytes (as bits they cost ~20 instructions a keep-alive
 * request, for 8 bytes that malloc's 16-byte rounding does not give back). */
struct io_stream {
    const struct io_transport *tp;
    union {
        void *tp_ctx;
        struct io_stream *next_free; /* in the pool of freed streams */
    };
    struct loop *loop;
    /* The buffers' evbuffers, or (parked, bufs NULL) both the thread's
     * shared empty one, which only lengths are read from. */
    struct evbuffer *in, *out;
    struct io_bufs *bufs;    /* NULL while parked */
    struct io_ev *wev;       /* while wev_added */
    struct wait_rec *waiter; /* valid only while waiter_gen == waiter->gen */
    void (*on_idle)(struct io_stream *s, unsigned what, void *arg);
    void *idle_arg;
    struct splice_side *splice; /* spliced to another stream (io_splice) */
    struct io_ev *rev;          /* NULL while it waits in the idle set */
    int64_t last_read;          /* when bytes last arrived (loop_now) */
    uint32_t read_min;
    uint32_t write_below; /* the waiter (or a splice) is woken at or below this */
    uint32_t read_max;
    int fd;
    int error;
    uint32_t waiter_gen;
    uint32_t read_chunk; /* the next read's size (IO_READ_MIN..IO_READ_MAX_CHUNK) */
    uint8_t want;        /* the waiter's events on this stream */
    bool read_done;      /* EOF or a read error: nothing more will arrive */
    bool write_err;      /* writing failed (or the connect did) */
    bool connected;
    bool connecting;       /* a connect in progress: wev reports its end */
    bool handshaking;      /* the transport's handshake is not done */
    bool hs_want_write;    /* ...and waits for the socket to be writable */
    bool read_wants_write; /* the transport's read waits for writable */
    bool write_wants_read; /* the transport's write waits for readable */
    bool reading;          /* the owner wants reads (io_set_reading) */
    bool rev_added;        /* rev is in the loop */
    bool wev_added;        /* wev is in the loop: output is left, or connecting */
    bool lazy;             /* not polled until a read is needed (io_stream_accepted) */
    bool park_idle : 1;    /* io_park asked: a read that finds nothing puts it in the idle set */
    bool idle_reg : 1;     /* registered in the idle set (armed only while rev is NULL) */
    bool end_pending : 1;  /* failed with nobody waiting: the read event tells the owner */
};

/* A size for the 32-bit fields above (anything larger means "no limit"). */
static inline uint32_t io_clamp32(size_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Gives a parked stream its buffers back. Returns false when out of
 * memory. */
bool io_attach(struct io_stream *s);
/* Keeps the read event in the loop exactly while a read may be done. */
void io_rev_update(struct io_stream *s);
/* Writes what the output holds now (never waits; errors show later). */
void io_write_now(struct io_stream *s);

/* io_idle.c: read and write events from a per-thread pool (io_ev_get
 * returns NULL when out of memory), and the idle set (io.h's io_park):
 * io_idle_park puts an idle stream's socket there and gives its read
 * event back (false: not idle in every way, or the set refused it; s is
 * unchanged); io_rev_restore takes a read event back and the socket out
 * of the set (false: out of memory); io_idle_del takes the socket out
 * (with EPOLL_CTL_DEL when it may be armed); io_ev_pool_drain frees the
 * pool and closes the set before the loop goes. */
struct io_ev *io_ev_get(void);
void io_ev_put(struct io_ev *e);
bool io_idle_park(struct io_stream *s);
bool io_rev_restore(struct io_stream *s);
void io_idle_del(struct io_stream *s, bool armed);
void io_ev_pool_drain(void);
/* io.c, for io_idle.c: the read event's callback; the loop whose pools
 * the thread keeps (NULL: none yet); ends s's reading, at the peer's EOF
 * (err 0) or as a failed read with err (io_eof, io_error), and tells its
 * waiter or owner (from a callback only: the idle callback may free s). */
void io_on_readable(evutil_socket_t fd, short what, void *arg);
struct loop *io_pool_loop(void);
void io_read_failed(struct io_stream *s, int err);

/* io_splice.c: what a spliced stream's callbacks report instead of waking
 * a waiter (each may end the splice: return right after). */
void splice_readable(struct io_stream *s);
void splice_drained(struct io_stream *s);
void splice_ended(struct io_stream *s);

#endif
