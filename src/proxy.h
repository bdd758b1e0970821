/*
 * proxy: the request flow, one request's life read top to bottom, on a
 * head its side (request.h) delivered: route -> policies -> build the
 * upstream head -> acquire an upstream connection -> send head and body
 * -> read the response head -> stream the body back -> release the
 * connection.
 *
 * It runs on the request coroutine of its side (today h1side.c's loop
 * over the requests of an HTTP/1 connection) and may yield at every I/O.
 */
#ifndef FERRY_PROXY_H
#define FERRY_PROXY_H

#include <stdbool.h>

struct request;
struct worker;

/*
 * Serves one request whose head the side delivered (request_reset, then
 * r->req and r->req_body set up); head_status > 0 is the status to answer
 * a head that could not be parsed (its framing unknown: the connection
 * closes). Returns true when the side may carry another request. Its
 * answer is queued, not flushed; the caller logs it (request_log). May
 * yield.
 */
bool proxy_request(struct request *r, int head_status);

/* Frees the worker's pooled request objects and scratch (its exit). */
void proxy_worker_fini(struct worker *w);

#endif
