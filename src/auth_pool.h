/*
 * auth_pool: password hashes (bcrypt, SHA-crypt, yescrypt: crypt(3) from
 * libxcrypt) checked off the event loop, in a small pool of threads the
 * request coroutine awaits. A bcrypt check takes 100-250 ms; run on a
 * worker's loop it would stall every request of that worker.
 *
 * Owns: the pool (AUTH_POOL_THREADS threads, started on first use, shared
 * by every worker, living until the process exits) and its queue of jobs
 * (at most AUTH_POOL_QUEUE waiting: beyond, the request gets 503 at once,
 * so a flood of wrong passwords cannot queue without bound).
 *
 * Waking the coroutine: each job has a socketpair. The pool thread writes
 * one byte to its end when the verdict is stored; the coroutine awaits the
 * other end as an io stream, so the wait is io's own (deadline,
 * cancellation, the scheduler's rule that callbacks never resume) and no
 * libevent object is touched from another thread. A job is reference
 * counted: a coroutine that stops waiting (deadline, client gone) closes
 * its end and drops its reference; the thread's write then fails quietly
 * (MSG_NOSIGNAL) and the last reference frees the job. A job whose
 * coroutine left before a thread took it is taken out of the queue then
 * (its place is free at once) and never hashed.
 *
 * Policy layer; calls io, loop and auth. Functions marked "may yield" run
 * in a request coroutine only.
 */
#ifndef FERRY_AUTH_POOL_H
#define FERRY_AUTH_POOL_H

#include <stdbool.h>
#include <stdint.h>

#define AUTH_POOL_THREADS 2
#define AUTH_POOL_QUEUE 256
#define AUTH_POOL_TIMEOUT_MS 10000 /* the longest a request waits for its verdict */

struct auth_out;
struct auth_policy;
struct io_stream;
struct loop;

/*
 * Checks password against hash (a crypt(3) string) in the pool, watching
 * `watch` (the client's stream, or NULL) meanwhile. Returns 0 with the
 * verdict in *ok, -EAGAIN (the queue is full), -ETIMEDOUT at the deadline,
 * -ECONNABORTED (watch ended: the client left), -ECANCELED, -ENOMEM or
 * -errno. The strings are copied. May yield.
 */
int auth_pool_verify(struct loop *loop, const char *hash, const char *password,
                     struct io_stream *watch, int64_t deadline, bool *ok);

/*
 * After auth_check returned AUTH_PENDING for out: awaits the check of its
 * password and finishes it (auth_basic_done). Returns 0, 401, 403 or 503
 * (queue full, timed out, out of memory), or -ECONNABORTED / -ECANCELED
 * when the client left (watch ended) or the coroutine was cancelled:
 * nothing to answer. May yield.
 */
int auth_pool_check(const struct auth_policy *p, struct auth_out *out, struct loop *loop,
                    struct io_stream *watch, int64_t deadline);

#endif
