/*
 * conn: one client connection.
 *
 * An idle keep-alive connection is this struct and a parked stream (io.h:
 * a socket and a read event, no buffers; among more than CONN_PARK_ABOVE
 * connections not even the event: the socket waits in the worker's idle
 * epoll set), with no coroutine, no stack and no timer (a coroutine per
 * request, not per connection). The first byte
 * of a request starts a request coroutine (h1side_serve); when the response
 * is done and nothing is pipelined behind it, the coroutine ends and the
 * connection is idle again. Closing is immediate, or lingering after an
 * early answer: the unread request body is drained for up to
 * CONN_LINGER_MS so the client reads the answer instead of a reset.
 *
 * The connection is the request coroutine's client side (struct
 * request_side, request.h): the coroutine reads and writes through it and
 * calls its done() when it leaves, so proxy.c never sees a struct conn.
 *
 * Everything here runs on the worker's thread; conn_accept and the idle
 * handlers run in callbacks, the side's done() in the request coroutine.
 */
#ifndef FERRY_CONN_H
#define FERRY_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include "request.h"

/* What a client connection's input buffers at most: a request head must
 * fit in it (a larger one is refused with 431, never waited for). */
#define CONN_READ_MAX (128u * 1024u)

/* A keep-alive connection, and a new one whose first read found nothing,
 * gives its buffers and read event back (io_park: its socket waits in the
 * worker's idle set) while the worker has more connections than this. */
#define CONN_PARK_ABOVE 256u

#define CONN_LINGER_MS 2000
/* ...and at most this many bytes of it. */
#define CONN_LINGER_BYTES (32u * 1024u * 1024u)

struct coro;
struct io_stream;
struct worker;

/* The deadline queue a connection waits in (conn.c), if any. */
enum { CONN_Q_NONE, CONN_Q_HEADER, CONN_Q_IDLE, CONN_Q_LINGER, CONN_Q_COUNT };

/*
 * An idle connection is this struct (216 bytes) and its stream (io.h: a
 * socket, no buffers, a read event unless it waits in the idle set),
 * nothing else: no timer of its own (its deadline is its place in a
 * queue), the peer's address in the room an IPv6 one needs (an AF_UNIX
 * peer keeps its family only).
 */
struct conn {
    struct request_side side; /* what the request coroutine sees: its w and s are the
                               * connection's worker and stream */
    struct coro *req;         /* the request coroutine, NULL when idle */
    struct conn *next, *prev; /* the worker's list */
    union {
        struct {
            struct conn *dq_next, *dq_prev; /* its deadline queue */
        };
        struct {                   /* after a 101 (tunneled): in no queue any more */
            struct tunnel *tunnel; /* the splice, no coroutine */
            struct upstream_conn *tunnel_uc;
        };
    };
    int64_t due; /* when its wait in that queue ends */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    socklen_t peer_len;
    char client[INET6_ADDRSTRLEN]; /* peer address as text */
    uint8_t dq;                    /* CONN_Q_* */
    bool lingering : 1;
    bool await_proxy : 1; /* PROXY header expected, not yet read */
    bool tls : 1;         /* the stream is TLS: a failed handshake is logged */
    bool tunneled : 1;    /* tunnel and tunnel_uc are set (not the queue's links) */
    unsigned served;      /* requests answered */
    uint32_t lingered;    /* bytes discarded while lingering (capped: CONN_LINGER_BYTES) */
    /* TLS: the config whose certificates the handshake uses (their SNI
     * and OCSP callbacks point into it), held until the handshake ends so
     * that a reload meanwhile cannot free them. */
    struct config *hs_cfg;
};

/* Takes a socket accepted on listener l (NULL: plain, no PROXY header):
 * wraps it in TLS when l has tls. Closes it when out of memory. */
struct config_listener;
void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len,
                 const struct config_listener *l);
/* Draining (SIGTERM): closes c now if it is idle, else marks it to close
 * after its current response. */
void conn_drain(struct conn *c);

#endif
