/*
 * body: moving a message body from one evbuffer to another, re-framed:
 * Content-Length stays a length, chunked is decoded and re-encoded as
 * whole chunks (extensions and trailers dropped), close-delimited passes
 * as is or is re-encoded as chunked (so a receiver can tell a cut body
 * from a complete one). Chains change hands (evbuffer_remove_buffer); nothing is copied
 * but chunk lines. Used for request bodies (client to upstream) and
 * response bodies (upstream to client).
 *
 * Pure over evbuffers: never waits, no sockets. Flow layer: calls http1
 * (the chunked decoder) and libevent's buffers only.
 */
#ifndef FERRY_BODY_H
#define FERRY_BODY_H

#include <stdbool.h>
#include <stdint.h>

#include "http1.h"

struct evbuffer;

/* How a body is read from one side and written to the other. */
struct body {
    enum http1_body in; /* framing as received */
    bool chunk_out;     /* re-encode as chunked (else pass raw bytes) */
    uint64_t remaining; /* HTTP1_BODY_LENGTH */
    struct http1_chunked dec;
    bool done;
    uint64_t bytes; /* payload bytes moved */
};

/* Starts a body framed `in` (length: HTTP1_BODY_LENGTH's), re-encoded as
 * chunked when chunk_out; max_body (0: none) bounds a chunked body's
 * total (HTTP1_E_BODY_TOO_LARGE). An empty body is done at once. */
void body_init(struct body *b, enum http1_body in, uint64_t length, bool chunk_out,
               uint64_t max_body);

/*
 * Moves what `in` holds of the body to `out`, re-framing chunked bodies.
 * Never waits. Returns 0 or an HTTP1_E_* error (HTTP1_E_NOMEM when out
 * refused the bytes or, re-encoding, a chunk line: nothing of them is
 * counted, and no payload goes out without its chunk line). An error is
 * final: the body is not moved again. b->done turns true at the body's
 * end (for CLOSE framing the caller decides at EOF); bytes after the end
 * stay in `in`.
 */
int body_move(struct body *b, struct evbuffer *in, struct evbuffer *out);

/* Ends a close-delimited body at the sender's clean EOF (the last chunk
 * when it is re-encoded as chunked). Returns 0, or HTTP1_E_NOMEM when out
 * refused the last chunk (the body is then not done). */
int body_close_end(struct body *b, struct evbuffer *out);

/* Appends a copy of src (left as is) to dst. Returns 0 or -ENOMEM. */
int body_copy(struct evbuffer *dst, struct evbuffer *src);

#endif
