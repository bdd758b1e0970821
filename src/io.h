/*
 * io: the await layer, the only bridge from callbacks to coroutines.
 *
 * Owns: streams (a socket, its input and output evbuffers, its events, its
 * transport, and the record of who waits on it) and wait records. Nothing
 * above io touches a stream's socket or events: it reads io_input, queues
 * to io_output and awaits. A stream's transport moves its bytes (plain TCP
 * today; TLS plugs in below io, and nothing above it changes). A wait
 * record belongs to io.c, never to a coroutine stack, and carries a
 * generation number: a stale timer or a late library callback (evdns)
 * that finds its record finished or orphaned touches nothing else and
 * never wakes the next await.
 *
 * Callbacks here only record what fired on the wait record and call
 * loop_wake(). The coroutine, resumed by the scheduler, reads the result.
 *
 * Every function named "may yield" must be called from a coroutine, never
 * from a libevent callback. Every wait takes an absolute deadline
 * (loop.h; LOOP_NEVER for none) and returns -ETIMEDOUT at it, -ECANCELED
 * when the coroutine was cancelled (coro_cancel), or -errno from the
 * socket. A cancelled coroutine's later waits return -ECANCELED at once so
 * it unwinds without blocking.
 *
 * Calls: loop, coro, libevent (core, evdns).
 */
#ifndef FERRY_IO_H
#define FERRY_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct coro;
struct evbuffer;
struct io_stream;
struct loop;

/* What a wait may ask for on a stream (bits of io_want.events). */
enum io_event {
    IO_READABLE = 1u << 0,  /* input holds at least read_min bytes (or EOF) */
    IO_WRITABLE = 1u << 1,  /* output holds at most write_below bytes */
    IO_EOF = 1u << 2,       /* the peer closed, or the socket failed */
    IO_CONNECTED = 1u << 3, /* a connect in progress completed */
    IO_SIGNAL = 1u << 4,    /* io_signal() was called for this coroutine */
    /* Not an event: the stream may be parked (io_park) for the wait
     * when more than IO_PARK_CROWD coroutines of the thread wait, so that
     * a crowd of waits (answers of a slow upstream) holds no buffers,
     * while a few (a quick answer takes them back at once) cost no
     * park and take-back. The caller fetches io_input/io_output again
     * after the wait. */
    IO_PARK = 1u << 5,
};
#define IO_PARK_CROWD 256u

/* One entry of a wait set. stream is NULL for IO_SIGNAL alone. */
struct io_want {
    struct io_stream *stream;
    unsigned events;
    size_t read_min;    /* IO_READABLE: bytes wanted, at least 1 */
    size_t write_below; /* IO_WRITABLE: output length to drain to */
    unsigned fired;     /* out: which of events hold */
};

/*
 * Waits until one event of the set holds, or the deadline passes. Events
 * that already hold return at once without yielding. Returns the number of
 * entries with fired != 0 (at least 1), or -ETIMEDOUT / -ECANCELED.
 * A stream may have only one waiting coroutine: waiting twice aborts with a
 * message naming io_wait. May yield.
 */
int io_wait(struct io_want *wants, unsigned n, int64_t deadline);

/* Wakes c if it waits with IO_SIGNAL; otherwise its next such wait returns
 * at once. Safe from callbacks and from other coroutines of the thread. */
void io_signal(struct coro *c);

/* Suspends the calling coroutine until the deadline. Returns 0 at the
 * deadline or -ECANCELED. May yield. */
int io_sleep(int64_t deadline);

/* Creates a stream on an accepted or connected socket (reads and writes
 * are recvfrom and sendto: a pipe or file does not work; non-blocking and
 * TCP_NODELAY set here), which it owns. Reads stay enabled once
 * connected, the input capped at read_max bytes (backpressure on the
 * peer). Returns NULL when out of memory (fd is then closed). */
struct io_stream *io_stream_from_fd(struct loop *loop, int fd, size_t read_max);
/*
 * The same for a socket from accept4(SOCK_NONBLOCK) on a listener that has
 * TCP_NODELAY (accepted sockets inherit it), and lazy: no syscall here, and
 * the socket is not polled (no epoll_ctl) until input is needed. The owner
 * calls io_read_soon() to read what already arrived (a client's request
 * usually has: the idle callback reports it, or the socket is polled from
 * then on if nothing had); a coroutine's wait for input starts polling;
 * a wait for the stream's end alone starts it only after IO_LAZY_EOF_MS;
 * io_poll() or io_set_reading(s, true) start it outright. A request
 * answered on a fresh connection that then closes so costs no epoll_ctl
 * (nor the failed EPOLL_CTL_DEL libevent issues after the close).
 */
struct io_stream *io_stream_accepted(struct loop *loop, int fd, size_t read_max);
#define IO_LAZY_EOF_MS 500
/* Reads once at the end of this loop turn, as if the socket were readable
 * (reports to the idle callback, which may free the stream). Polls if
 * nothing was there. */
void io_read_soon(struct io_stream *s);
/* Polls the socket from now on (reads ahead, idle callback), also after
 * reading paused at read_max and the input was drained without an await. */
void io_poll(struct io_stream *s);
/*
 * Frees the stream (closing the socket at once). No coroutine may be
 * waiting on it, and it may not be spliced. io_stream_free(NULL) does
 * nothing.
 */
void io_stream_free(struct io_stream *s);

/* The stream's input and output. A parked stream (io_park) takes its
 * buffers back here, so these pointers are valid until the next io_park.
 * Out of memory for them, the stream fails (io_eof, io_error ENOMEM: see
 * there) and both return an empty evbuffer that refuses adds. */
struct evbuffer *io_input(struct io_stream *s);
struct evbuffer *io_output(struct io_stream *s);
/* Bytes the input holds, without taking buffers back. */
size_t io_input_length(const struct io_stream *s);
/*
 * Parks an idle stream: gives its input and output evbuffers back to the
 * thread's pool (its write event is pooled whenever it is not in the loop)
 * until bytes move again (a read takes them back, as do io_input,
 * io_output and the writes), and watches its socket for the idle callback
 * (as io_poll) from the thread's idle set: an epoll set of its own, with
 * no libevent event for the stream, which gives its read event back too
 * (Linux; see io.c). A read already scheduled (io_read_soon) goes first,
 * and the stream joins the set only if it finds nothing. A stream whose
 * transport holds input (TLS) is polled as usual. Does nothing while
 * anything is queued either way, a coroutine waits on it, it is spliced,
 * connecting or handshaking. The owner calls it when nobody holds the
 * stream's evbuffers and no request is expected soon: a keep-alive
 * connection between requests, a new one, when the worker has many. A
 * new stream starts without buffers.
 */
void io_park(struct io_stream *s);
/* The socket, for its addresses and options only: bytes go through io. */
int io_fd(struct io_stream *s);
/* True once the peer closed or the socket failed; io_error() gives the
 * errno (0 for a clean EOF). Out of memory for what the stream needs (its
 * buffers, its read or write event) fails it both ways too, with ENOMEM,
 * never the process: a coroutine waiting on it is woken at once; with
 * none, the idle callback (or the splice) hears IO_EOF from the loop, on
 * the turn it failed (a stream waiting in the idle set: when its socket
 * next reports), never from inside the call that failed. */
bool io_eof(const struct io_stream *s);
/* When bytes last arrived on the stream (loop_now() instant; its creation
 * before any). Deadlines "between two reads" count from it. */
int64_t io_last_read(const struct io_stream *s);
int io_error(const struct io_stream *s);
/* True while a coroutine waits on the stream. */
bool io_waited(const struct io_stream *s);
/* Changes the input cap (read high watermark). */
void io_set_read_max(struct io_stream *s, size_t read_max);
/* Stops (false) or resumes (true) reading from the socket. Reading also
 * pauses by itself while the input holds read_max bytes; it resumes when
 * the consumer awaits more (io_wait, io_read) or calls this with true
 * after draining from a callback. */
void io_set_reading(struct io_stream *s, bool on);

/*
 * Idle callback: what a stream reports when no coroutine waits on it
 * (a keep-alive client between requests, a pooled upstream connection).
 * what is IO_READABLE or IO_EOF. Runs in a libevent callback: it may spawn
 * or wake coroutines and free the stream (io_stream_free), nothing that yields.
 * NULL removes it.
 */
void io_set_idle(struct io_stream *s,
                 void (*on_idle)(struct io_stream *s, unsigned what, void *arg), void *arg);

/*
 * Reads: waits until input has at least one byte, then moves at most max
 * bytes into dst. Returns the bytes moved (>= 1), 0 at a clean EOF, or
 * -ETIMEDOUT, -ECANCELED, -ECONNRESET / -errno. May yield.
 */
ssize_t io_read(struct io_stream *s, struct evbuffer *dst, size_t max, int64_t deadline);
/* Waits until input holds at least n bytes. Returns 0, -EPIPE at EOF first,
 * or as io_read. May yield. */
int io_read_at_least(struct io_stream *s, size_t n, int64_t deadline);

/*
 * Writes: moves all of src (or len bytes of data) to the output and, when
 * the output holds more than high bytes, waits until it drains to high
 * (backpressure). Returns 0, or -ETIMEDOUT, -ECANCELED, -EPIPE/-errno.
 * May yield.
 */
int io_write_buffer(struct io_stream *s, struct evbuffer *src, size_t high, int64_t deadline);
int io_write(struct io_stream *s, const void *data, size_t len, size_t high, int64_t deadline);
/* Writes what the output holds now (io_wait, io_write* and io_flush do it
 * themselves; output queued otherwise is not written until one of them
 * or this runs). Never waits; a write error shows later as IO_EOF. */
void io_kick(struct io_stream *s);
/* Ends the write direction (a half-close: TCP's FIN) right now; what the
 * output still holds is not sent. Returns 0 or -errno. */
int io_shutdown_write(struct io_stream *s);
/* Makes the stream's close a reset (TCP RST, SO_LINGER 0) instead of a
 * clean end: how a peer learns that a message it cannot otherwise tell
 * from a complete one (a close-delimited body) was cut short. */
void io_reset_on_close(struct io_stream *s);
/* Waits until the output is empty, failing with -ETIMEDOUT only when no
 * byte leaves for `stall` ns (a slow but steady reader is never cut), or
 * at the absolute deadline. May yield. */
int io_flush_progress(struct io_stream *s, int64_t stall, int64_t deadline);
/* Waits until the output is empty (everything handed to the kernel).
 * May yield. */
int io_flush(struct io_stream *s, int64_t deadline);

/*
 * Connects to host:port. A numeric host (IPv4, IPv6 without brackets) is
 * used as is; a name goes through the worker's evdns (which may call back
 * synchronously; the run queue absorbs it). watch (may be NULL) is a
 * stream whose end aborts the lookup and the connect: the client the
 * connection is for, so that nothing goes on for a client that left.
 * Returns 0 and a stream in *out, or -ECONNREFUSED, -ETIMEDOUT,
 * -ECANCELED, -ECONNABORTED (watch ended, also before the call),
 * -EHOSTUNREACH (no address), -EMFILE/-ENFILE (no descriptor: the caller
 * answers 503), -errno. May yield.
 */
int io_connect(struct loop *loop, const char *host, uint16_t port, size_t read_max,
               int64_t deadline, struct io_stream *watch, struct io_stream **out);
/* As io_connect, to an address already resolved (also AF_UNIX). May yield. */
int io_connect_addr(struct loop *loop, const struct sockaddr *sa, socklen_t len, size_t read_max,
                    int64_t deadline, struct io_stream *watch, struct io_stream **out);

/* Wait records currently allocated (in use or orphaned), for tests. */
unsigned io_records_live(void);
/* Frees this thread's pool of unused wait records (a worker's exit). */
void io_thread_cleanup(void);
/* Bytes written but not yet taken by the peer: the output evbuffer plus
 * the socket's send queue (SIOCOUTQ). Shrinking means the peer reads. */
size_t io_unsent(struct io_stream *s);
/*
 * Has the peer taken at least IO_PROGRESS_MIN bytes since *mark (a value
 * of io_unsent)? Updates *mark. The kernel wakes a writer only once a
 * third of a (large, autotuned) send buffer is free, so a peer reading
 * steadily can look stalled to the output evbuffer alone; a peer that
 * stopped reading still trickles a little in window probes, hence the
 * minimum.
 */
#define IO_PROGRESS_MIN (16u * 1024u)
bool io_peer_took(struct io_stream *s, size_t *mark);

/*
 * Splice: moves bytes both ways between two streams by callbacks, with no
 * coroutine (a WebSocket tunnel). Each side's input goes to the other
 * side's output as it arrives (chains change hands, nothing is copied)
 * and is written at once; a side is not read while the other's output
 * holds `high` bytes or more, and is read again once that drained to
 * high / 2. An EOF from one side is forwarded (io_shutdown_write on the
 * other) once everything before it is written. The splice ends when both
 * directions are shut (IO_SPLICE_CLOSED), on an error or reset of either
 * stream, when no byte moved either way for idle_ns (> 0; 0: no idle
 * limit), or on io_splice_stop. Bytes already in either input go first;
 * a stream already at EOF counts as half-closed, one already failed ends
 * the splice at once.
 *
 * Neither stream may have a waiting coroutine; their idle callbacks are
 * removed; nothing may wait on them while spliced. on_end(arg, stats)
 * runs exactly once, from a callback of the loop or from io_splice_stop,
 * never from inside io_splice; the splice is freed when it returns. The
 * streams are then only fit to be freed (there or later), never pooled
 * as HTTP connections. Returns 0 and sets *out (may be NULL), or -ENOMEM
 * (nothing changed; on_end is not called).
 */
struct io_splice;
enum io_splice_end {
    IO_SPLICE_CLOSED,  /* both directions shut, every byte delivered */
    IO_SPLICE_IDLE,    /* no byte either way for idle_ns */
    IO_SPLICE_A_ERROR, /* stream a failed or was reset */
    IO_SPLICE_B_ERROR, /* stream b failed or was reset */
    IO_SPLICE_STOPPED, /* io_splice_stop() */
};
struct io_splice_stats {
    uint64_t a_to_b; /* bytes read from a and queued to b */
    uint64_t b_to_a;
    enum io_splice_end end; /* valid in on_end */
    int error;              /* errno for the *_ERROR ends, else 0 */
};
int io_splice(struct io_stream *a, struct io_stream *b, size_t high, int64_t idle_ns,
              void (*on_end)(void *arg, const struct io_splice_stats *st), void *arg,
              struct io_splice **out);
/* Ends the splice now (IO_SPLICE_STOPPED): on_end runs before this
 * returns. io_splice_stop(NULL) does nothing. */
void io_splice_stop(struct io_splice *sp);
/* Bytes moved so far. */
void io_splice_stats(const struct io_splice *sp, struct io_splice_stats *out);

/*
 * Transports, for the modules below io that provide one (TLS): how a
 * stream's bytes move. readv/writev return bytes (> 0), 0 (readv: EOF)
 * or -errno (-EAGAIN: nothing now; the stream waits for the socket to be
 * readable, resp. writable); a transport whose read needs the socket
 * writable first (or its write readable) returns IO_TP_WANT_WRITE (resp.
 * IO_TP_WANT_READ) instead, and io retries the call once the socket is.
 * shutdown ends the write direction; fini (may be NULL) frees the
 * transport's state before io closes the socket. handshake (may be NULL)
 * runs first, until it returns 0: -EAGAIN or IO_TP_WANT_WRITE to be
 * called again when the socket is readable (writable), -errno when it
 * failed; meanwhile nothing is read or written and IO_CONNECTED does not
 * hold. pending (may be NULL) says the transport holds input the socket
 * will not signal (decrypted, or read ahead): io reads again without
 * waiting for the socket. All run on the stream's thread from io.c only,
 * on a coroutine stack or in a callback, and never yield.
 */
struct iovec;
#define IO_TP_WANT_READ (-100000)
#define IO_TP_WANT_WRITE (-100001)
struct io_transport {
    const char *name;
    ssize_t (*readv)(struct io_stream *s, struct iovec *v, int n);
    ssize_t (*writev)(struct io_stream *s, const struct iovec *v, int n);
    int (*shutdown)(struct io_stream *s);
    void (*fini)(struct io_stream *s);
    int (*handshake)(struct io_stream *s);
    bool (*pending)(struct io_stream *s);
};
/* Puts tp (NULL: plain) with its state ctx under the stream, before any
 * byte moved. A transport with a handshake starts it at once (an
 * accepted stream: when input is first read). */
void io_stream_set_transport(struct io_stream *s, const struct io_transport *tp, void *ctx);
void *io_transport_ctx(const struct io_stream *s);
const struct io_transport *io_stream_transport(const struct io_stream *s);
int io_transport_fd(const struct io_stream *s);
/* Waits until the stream's transport handshake is done. Returns 0, or
 * -ETIMEDOUT, -ECANCELED, -ECONNABORTED (watch, may be NULL, ended),
 * -errno of the handshake (io_error). May yield. */
int io_handshake(struct io_stream *s, int64_t deadline, struct io_stream *watch);
/* True while the stream's transport handshake is not done. */
bool io_handshaking(const struct io_stream *s);

#endif
