/*
 * proxy: the request coroutine, one request's life read top to bottom:
 * read head -> route -> build the upstream head -> acquire an upstream
 * connection -> send head and body -> read the response head -> stream the
 * body back -> release the connection -> log.
 *
 * proxy_serve runs as a coroutine (its own stack, started by the owner of
 * a client side, today conn.c, on the first byte of a request) and may
 * yield at every I/O; it serves requests pipelined behind the first, then
 * hands the side back through its done() (request.h).
 */
#ifndef FERRY_PROXY_H
#define FERRY_PROXY_H

struct worker;

/* Coroutine entry: arg is the struct request_side. May yield. */
void proxy_serve(void *arg);

/* Frees the worker's pooled request objects and scratch (its exit). */
void proxy_worker_fini(struct worker *w);

#endif
