/* auth_pool: see auth_pool.h. */
#include "auth_pool.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"

struct job {
    struct job *next;
    int refs;    /* atomic: the waiting coroutine's and the pool's */
    int fd;      /* the pool's end of the socketpair */
    int verdict; /* atomic: 0 pending, 1 match, 2 no match */
    char *hash;
    char *password;
    size_t password_len;
};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static struct job *queue_head, *queue_tail;
static unsigned queued;
static unsigned threads; /* started */

static void job_unref(struct job *j)
{
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (j->password) {
        explicit_bzero(j->password, j->password_len);
        free(j->password);
    }
    free(j->hash);
    free(j);
}

/* Takes j out of the queue if no thread took it yet (its waiter left:
 * its place is free at once, not when a thread reaches it). The queue
 * holds at most AUTH_POOL_QUEUE jobs. True when it was there; the caller
 * then drops the pool's share (its fd and reference). */
static bool queue_remove(struct job *j)
{
    pthread_mutex_lock(&pool_lock);
    struct job *prev = NULL;
    for (struct job **pp = &queue_head; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j)
            continue;
        *pp = j->next;
        if (queue_tail == j)
            queue_tail = prev;
        queued--;
        pthread_mutex_unlock(&pool_lock);
        return true;
    }
    pthread_mutex_unlock(&pool_lock);
    return false;
}

/* A pool thread: takes jobs in order, forever. Its crypt_data (32 KiB
 * and more) lives on the heap, zeroed before first use as crypt_rn asks. */
static void *pool_main(void *arg)
{
    struct crypt_data *cd = arg;
    for (;;) {
        pthread_mutex_lock(&pool_lock);
        while (!queue_head)
            pthread_cond_wait(&pool_cond, &pool_lock);
        struct job *j = queue_head;
        queue_head = j->next;
        if (!queue_head)
            queue_tail = NULL;
        queued--;
        pthread_mutex_unlock(&pool_lock);

        const char *out = crypt_rn(j->password, j->hash, cd, sizeof(*cd));
        size_t hl = strlen(j->hash);
        bool match = out && out[0] != '*' && strlen(out) == hl && auth_equal(out, j->hash, hl);
        explicit_bzero(cd, sizeof(*cd));
        __atomic_store_n(&j->verdict, match ? 1 : 2, __ATOMIC_RELEASE);
        ssize_t w = send(j->fd, "v", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* the waiter may have left: nothing to tell */
        close(j->fd);
        job_unref(j);
    }
    return NULL;
}

/* Starts the threads with every signal blocked (signals are the main
 * thread's business). */
static void pool_start(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < AUTH_POOL_THREADS; i++) {
        pthread_t t;
        struct crypt_data *cd = calloc(1, sizeof(*cd));
        if (!cd || pthread_create(&t, NULL, pool_main, cd) != 0) {
            free(cd);
            log_msg(LOG_LEVEL_ERROR, "auth: cannot start a password-check thread");
            break;
        }
        pthread_detach(t);
        threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* A job with copies of the strings and the pool's end fd; NULL when out
 * of memory. */
static struct job *job_new(const char *hash, const char *password, int fd)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->refs = 2;
    j->fd = fd;
    j->password_len = strlen(password);
    j->hash = strdup(hash);
    j->password = strdup(password);
    if (!j->hash || !j->password) {
        j->refs = 1;
        job_unref(j);
        return NULL;
    }
    return j;
}

int auth_pool_verify(struct loop *loop, const char *hash, const char *password,
                     struct io_stream *watch, int64_t deadline, bool *ok)
{
    pthread_once(&pool_once, pool_start);
    if (!threads)
        return -EAGAIN;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0)
        return -errno;
    struct job *j = job_new(hash, password, sv[1]);
    struct io_stream *s = j ? io_stream_from_fd(loop, sv[0], 16) : NULL; /* owns sv[0] */
    if (!s) {
        if (!j)
            close(sv[0]);
        close(sv[1]);
        if (j) {
            j->refs = 1;
            job_unref(j);
        }
        return -ENOMEM;
    }
    pthread_mutex_lock(&pool_lock);
    bool full = queued >= AUTH_POOL_QUEUE;
    if (!full) {
        if (queue_tail)
            queue_tail->next = j;
        else
            queue_head = j;
        queue_tail = j;
        queued++;
        pthread_cond_signal(&pool_cond);
    }
    pthread_mutex_unlock(&pool_lock);
    if (full) {
        io_stream_free(s);
        close(sv[1]);
        j->refs = 1;
        job_unref(j);
        return -EAGAIN;
    }
    /* The verdict's byte, or the client's end: a client gone while its
     * check waits leaves at once (its job is then dropped unhashed if no
     * thread took it yet), rather than holding its coroutine and the
     * job's place until the verdict or the deadline. */
    int rc = 0;
    while (io_input_length(s) < 1) {
        struct io_want w[2] = {{.stream = s, .events = IO_READABLE, .read_min = 1},
                               {.stream = watch, .events = IO_EOF}};
        rc = io_wait(w, watch ? 2 : 1, deadline);
        if (rc >= 0 && (w[1].fired & IO_EOF))
            rc = -ECONNABORTED;
        if (rc < 0 || (w[0].fired & IO_READABLE))
            break; /* the byte, or the pool's end closed without it */
    }
    io_stream_free(s);
    int v = __atomic_load_n(&j->verdict, __ATOMIC_ACQUIRE);
    if (!v && queue_remove(j)) {
        close(j->fd);
        job_unref(j);
    }
    job_unref(j);
    if (rc == -ECONNABORTED || rc == -ECANCELED)
        return rc; /* nobody to answer, whatever the verdict */
    if (v) {
        *ok = v == 1;
        return 0;
    }
    return rc < 0 ? rc : -EIO;
}

int auth_pool_check(const struct auth_policy *p, struct auth_out *out, struct loop *loop,
                    struct io_stream *watch, int64_t deadline)
{
    bool ok = false;
    int rc = auth_pool_verify(loop, out->hash, out->password, watch, deadline, &ok);
    if (rc == -ECONNABORTED || rc == -ECANCELED)
        return rc;
    if (rc < 0) {
        out->why = rc == -EAGAIN      ? "auth: password checks queue full"
                   : rc == -ETIMEDOUT ? "auth: password check timed out"
                                      : "auth: password check failed";
        return 503;
    }
    return auth_basic_done(p, ok, time(NULL), out);
}
