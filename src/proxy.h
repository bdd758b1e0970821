/*
 * proxy: the request coroutine, one request's life read top to bottom:
 * read head -> route -> build the upstream head -> acquire an upstream
 * connection -> send head and body -> read the response head -> stream the
 * body back -> release the connection -> log.
 *
 * proxy_serve runs as a coroutine (its own stack, started by conn.c on the
 * first byte of a request) and may yield at every I/O; it serves requests
 * pipelined behind the first, then hands the connection back to conn.c.
 */
#ifndef FERRY_PROXY_H
#define FERRY_PROXY_H

struct worker;

/* Coroutine entry: arg is the struct conn. May yield. */
void proxy_serve(void *arg);

/* Frees the worker's pooled request objects and scratch (its exit). */
void proxy_worker_fini(struct worker *w);

#endif
