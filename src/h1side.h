/*
 * h1side: the HTTP/1 implementation of the request side's response
 * writers (struct request_side_ops, request.h). It turns the flow's
 * transport-neutral response head into an HTTP/1 head on the client
 * connection's output: the status line, Connection: close or keep-alive
 * as the request's version needs, and the framing fields; Ferry's own
 * answers (reply_write) and the interim 100 Continue go the same way.
 *
 * conn.c gives every HTTP/1 side these ops; an HTTP/2 stream would give
 * its own (HEADERS frames, no Connection field, END_STREAM for the end).
 *
 * Never yields. Flow layer: may call reply, http1, io (buffers only).
 */
#ifndef FERRY_H1SIDE_H
#define FERRY_H1SIDE_H

struct request_side_ops;

extern const struct request_side_ops h1side_ops;

#endif
