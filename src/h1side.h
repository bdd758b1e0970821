/*
 * h1side: the HTTP/1 side of the request seam (struct request_side,
 * request.h). It owns what is HTTP/1 about a client connection's
 * requests: the loop over the requests of a connection (pipelined ones
 * included) on one coroutine, reading and parsing each head, the
 * flush of the answers, the request body's framing (Content-Length or
 * chunked, read from the connection's input by the body mover), the
 * response head and body's framing (chunked to a 1.1 client when the
 * length is unknown, close-delimited to 1.0; Connection fields), the
 * interim 100 Continue, waits on the connection's stream, a reset when a
 * close-delimited body is cut, and the tunnel after a 101.
 *
 * conn.c gives every HTTP/1 connection a side with these ops and starts
 * h1side_serve on it; an HTTP/2 stream would give its own (HEADERS and
 * DATA frames, no Connection field, END_STREAM for the end, RST_STREAM
 * for a cut) and call proxy_request for each stream.
 *
 * Flow layer: may call proxy, request, reply, body, http1, io, tls.
 */
#ifndef FERRY_H1SIDE_H
#define FERRY_H1SIDE_H

#include <stdbool.h>

struct evbuffer;
struct request_side_ops;

extern const struct request_side_ops h1side_ops;

/* Coroutine entry: arg is the connection's struct request_side. Serves
 * its requests in order, then leaves it through done(). May yield. */
void h1side_serve(void *arg);

/*
 * RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
 * received before a request line; some clients send one after a body
 * they framed by its length. Drops every CRLF at the start of in (a head
 * never starts with one), whatever its chains; a CR whose LF has not come
 * stays. True when any was dropped. Used when a head's input starts with
 * CR; public for its unit test (tests/test_h1side.c).
 */
bool h1side_drop_empty_lines(struct evbuffer *in);

#endif
