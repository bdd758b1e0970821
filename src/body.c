/* body: see body.h. */
#include "body.h"

#include <errno.h>
#include <string.h>

#include <event2/buffer.h>

void body_init(struct body *b, enum http1_body in, uint64_t length, bool chunk_out,
               uint64_t max_body)
{
    memset(b, 0, sizeof(*b));
    b->in = in;
    b->chunk_out = chunk_out;
    b->remaining = length;
    struct http1_limits lim = {.max_body_bytes = max_body};
    if (in == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&b->dec, &lim);
    b->done = in == HTTP1_BODY_NONE || (in == HTTP1_BODY_LENGTH && length == 0);
    if (b->done && b->chunk_out)
        b->chunk_out = false;
}

/* Moves n bytes; false if out refused them (out of memory, or a stream's
 * frozen stand-in buffer): the body's count must not run ahead of its
 * bytes, or what stays in `in` would be read as the next message. */
static bool moved(struct evbuffer *in, struct evbuffer *out, size_t n)
{
    return evbuffer_remove_buffer(in, out, n) == (int)n;
}

/* The chunk line before n re-encoded payload bytes, and the CRLF after
 * them; false when out refused it. Moving the payload without its framing
 * would hand the receiver the sender's bytes as chunk lines (a payload
 * holding "0\r\n\r\nGET /admin ..." would end the body there and be
 * read as the next request), so the move fails instead. Nothing when the
 * body is not re-encoded. */
static bool chunk_start(const struct body *b, struct evbuffer *out, size_t n)
{
    char line[HTTP1_CHUNK_HEADER_MAX];
    return !b->chunk_out || evbuffer_add(out, line, http1_chunk_header(line, n)) == 0;
}

static bool chunk_end(const struct body *b, struct evbuffer *out)
{
    return !b->chunk_out || evbuffer_add(out, HTTP1_CHUNK_END, 2) == 0;
}

int body_move(struct body *b, struct evbuffer *in, struct evbuffer *out)
{
    size_t len = evbuffer_get_length(in);
    if (b->done || len == 0)
        return 0;
    if (b->in == HTTP1_BODY_LENGTH) {
        size_t n = len < b->remaining ? len : (size_t)b->remaining;
        if (!moved(in, out, n))
            return HTTP1_E_NOMEM;
        b->remaining -= n;
        b->bytes += n;
        b->done = b->remaining == 0;
        return 0;
    }
    if (b->in == HTTP1_BODY_CLOSE) {
        if (!chunk_start(b, out, len) || !moved(in, out, len) || !chunk_end(b, out))
            return HTTP1_E_NOMEM;
        b->bytes += len;
        return 0;
    }
    while (!b->done && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t off = 0, dlen = 0;
        ssize_t n = http1_chunked_decode(&b->dec, v.iov_base, v.iov_len, &off, &dlen);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        if (dlen > 0) {
            evbuffer_drain(in, off);
            if (!chunk_start(b, out, dlen) || !moved(in, out, dlen) || !chunk_end(b, out))
                return HTTP1_E_NOMEM;
            evbuffer_drain(in, (size_t)n - off - dlen);
            b->bytes += dlen;
        } else {
            evbuffer_drain(in, (size_t)n);
        }
        if (http1_chunked_done(&b->dec)) {
            if (b->chunk_out && evbuffer_add(out, HTTP1_LAST_CHUNK, 5) != 0)
                return HTTP1_E_NOMEM; /* not done: the receiver never sees an end */
            b->done = true;
        }
    }
    return 0;
}

int body_close_end(struct body *b, struct evbuffer *out)
{
    /* Not done without its last chunk: the answer would pass for a whole
     * one, and the next answer's bytes be read as its chunk lines. */
    if (b->chunk_out && evbuffer_add(out, HTTP1_LAST_CHUNK, 5) != 0)
        return HTTP1_E_NOMEM;
    b->done = true;
    return 0;
}

int body_copy(struct evbuffer *dst, struct evbuffer *src)
{
    size_t len = evbuffer_get_length(src);
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(src, &pos, 0, EVBUFFER_PTR_SET) < 0)
        return -ENOMEM;
    while (len > 0) {
        struct evbuffer_iovec v[8];
        int k = evbuffer_peek(src, (ev_ssize_t)len, &pos, v, 8);
        size_t took = 0;
        for (int i = 0; i < k && i < 8; i++) {
            if (evbuffer_add(dst, v[i].iov_base, v[i].iov_len) < 0)
                return -ENOMEM;
            took += v[i].iov_len;
        }
        if (took == 0 || took > len)
            return took > len ? 0 : -ENOMEM;
        len -= took;
        if (len && evbuffer_ptr_set(src, &pos, took, EVBUFFER_PTR_ADD) < 0)
            return -ENOMEM;
    }
    return 0;
}
