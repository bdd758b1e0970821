/*
 * tunnel: the byte splice of an upgraded connection (WebSocket after a
 * real `101 Switching Protocols`), client <-> upstream.
 *
 * The one place where callbacks move bytes themselves (a coroutine runs
 * per request, not per connection): no coroutine and no stack is held
 * while a tunnel is open.
 * The bytes are moved by io's splice (io_splice, io.h): each side's input
 * goes to the other side's output as it arrives (chains change hands,
 * nothing is copied). When the other side's output holds TUNNEL_HIGH bytes
 * or more, reading this side stops; it resumes when that output drains to
 * TUNNEL_HIGH / 2. So a tunnel holds at most about 2 x TUNNEL_HIGH of
 * queued data plus the streams' input caps, whatever the peers do.
 *
 * Half-close: an EOF from one side is forwarded once everything it sent
 * is written (a FIN on the other side). The tunnel ends when both
 * directions are shut (TUNNEL_END_CLOSED), on an error or reset of either
 * socket, when no byte has moved either way for idle_ms
 * (TUNNEL_END_IDLE), or on tunnel_stop().
 *
 * Streams: the tunnel borrows both io streams for its lifetime, so nothing
 * may wait on them (io_wait) or use io_set_idle meanwhile. It never frees
 * them: on_close must close both (the client's with the conn, the
 * upstream's with upstream_release(uc, false): never back to a pool, it
 * is no HTTP connection any more), right there or later. Their io state
 * (io_eof) is stale after a tunnel: they are only fit to be closed.
 *
 * on_close(arg, stats) is called exactly once, from a libevent callback of
 * the worker's loop, or from tunnel_stop(); never from inside
 * tunnel_start(). The tunnel is freed when on_close returns: the caller
 * forgets its struct tunnel pointer there.
 *
 * What the proxy must do (headers.h does the header part):
 *  - Forward Upgrade only for a request with http1_request.upgrade (and
 *    the route allowing it): headers_forward.tunnel = true keeps Upgrade
 *    and adds Connection: upgrade. Such a request has no body to forward
 *    other than what its framing says.
 *  - Only a `101` whose http1_response.upgrade is set (101 with Upgrade),
 *    answering a request that asked for an upgrade, turns the connection
 *    into a tunnel: forward its head with headers_forward_response(resp,
 *    true, ...), drain the head from the upstream input (bytes after it
 *    already belong to the new protocol and stay there), flush nothing
 *    more, then tunnel_start(). A 101 to a request that did not ask for
 *    an upgrade, or without Upgrade, is a broken response (502).
 *  - Any other answer (200, 4xx, 426...) leaves the connection in HTTP
 *    mode: the response is forwarded as usual, and the next pipelined
 *    request is parsed as a request; the upstream connection must not be
 *    pooled if the upstream may already have switched (it did not answer
 *    101, so per RFC 9110 7.8 it did not).
 *  - Bytes the client sent after the upgrade request head (a client that
 *    did not wait for the 101) are in the client's input: tunnel_start
 *    forwards them first.
 *
 * Everything runs on the worker's thread; nothing here yields.
 */
#ifndef FERRY_TUNNEL_H
#define FERRY_TUNNEL_H

#include <stdint.h>

struct io_stream;
struct loop;
struct tunnel;

/* Output queued to one side beyond which the other side is not read. */
#define TUNNEL_HIGH (256u * 1024u)

enum tunnel_end {
    TUNNEL_END_CLOSED,         /* both sides closed, every byte delivered */
    TUNNEL_END_IDLE,           /* no byte either way for idle_ms */
    TUNNEL_END_CLIENT_ERROR,   /* the client's socket failed or was reset */
    TUNNEL_END_UPSTREAM_ERROR, /* the upstream's socket failed or was reset */
    TUNNEL_END_STOPPED,        /* tunnel_stop() (draining, shutdown) */
};

struct tunnel_stats {
    uint64_t client_to_upstream; /* bytes read from the client and queued upstream */
    uint64_t upstream_to_client; /* bytes read from the upstream and queued to the client */
    int64_t duration_ns;         /* from tunnel_start to the end */
    enum tunnel_end end;
    int error; /* errno for the *_ERROR ends, else 0 */
};

/*
 * Splices client and upstream (connected io streams of the loop's thread,
 * no coroutine waiting on either) until the tunnel ends, then calls
 * on_close(arg, stats) once (see above). idle_ms <= 0 means no idle
 * timeout. Bytes already in either stream's input are forwarded first; a
 * stream already at EOF counts as half-closed. Returns 0 and sets *out
 * (may be NULL), or -ENOMEM (nothing was changed: the caller still owns
 * and closes both streams; on_close is not called).
 */
int tunnel_start(struct loop *loop, struct io_stream *client, struct io_stream *upstream,
                 int64_t idle_ms, void (*on_close)(void *arg, const struct tunnel_stats *stats),
                 void *arg, struct tunnel **out);

/* Ends the tunnel now (TUNNEL_END_STOPPED): on_close runs before this
 * returns. Bytes still queued are dropped when the caller closes the
 * streams. tunnel_stop(NULL) does nothing. */
void tunnel_stop(struct tunnel *t);

/* Bytes moved so far, for /status or a log line while the tunnel is open. */
void tunnel_get_stats(const struct tunnel *t, struct tunnel_stats *out);

/* "closed", "idle timeout", "client error", "upstream error", "stopped". */
const char *tunnel_end_str(enum tunnel_end end);

/* Tunnels open on the calling thread. */
unsigned tunnel_live(void);

#endif
