/* listener: see listener.h. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "daemon.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "sys.h"
#include "worker.h"

/* Connections accepted per wake-up before the loop serves the others: a
 * burst of thousands must leave the accept queue faster than it fills.
 * Accepting is cheap (no epoll_ctl, no read yet); the requests' work
 * comes after. 512 overflowed a 4,096 backlog in one run of five under
 * bench/run's 5,000-client burst; 4,096 held every read buffer of the
 * burst at once (+1.5 KiB RSS per waiting request, +100 ms p99). */
#define ACCEPT_BATCH 1024

static int open_socket(const struct config_listener *l, bool reuseport)
{
    const struct config_addr *a = &l->addr;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (!a->is_unix) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (a->sa.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/*
 * Listens on a bound socket with the options that can be set after bind,
 * as the listener's config says: on a socket Ferry just bound, on one the
 * socket unit passed, and on one a reload keeps. TCP_NODELAY on TCP
 * sockets: accepted connections inherit it, so there is no setsockopt per
 * connection (a unit without NoDelay=yes would otherwise leave every
 * client connection with Nagle on, and an answer written in two writes
 * would wait ~40 ms for the client's delayed ACK). TCP_DEFER_ACCEPT on or
 * off as defer_accept says: HTTP clients speak first, so the kernel hands
 * over a connection once its first bytes arrived (a silent one after
 * ~1 s) and the first read after accept finds the request instead of
 * polling for it (an epoll ADD, a wait and a DEL per connection; 10 % of
 * a new-connection request's CPU here; nginx's "deferred", HAProxy's
 * "defer-accept"); a unit's own DeferAcceptSec= is kept while it is on:
 * only on or off is Ferry's to say. Then the backlog (listen(2) again
 * changes only the queue's limit). SO_REUSEADDR, SO_REUSEPORT and
 * IPV6_V6ONLY mean something only before bind (open_socket): a passed
 * socket keeps the unit's. Returns listen's 0, or -1 with errno set.
 */
static int listen_options(int fd, const struct config_listener *l)
{
    if (!l->addr.is_unix) {
        int one = 1, on = 0;
        socklen_t len = sizeof(on);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &on, &len) == 0 &&
            (on != 0) != l->defer_accept) {
            int v = l->defer_accept ? 1 : 0;
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v, sizeof(v));
        }
    }
    return listen(fd, (int)l->backlog);
}

int listener_claim_unix(const char *what, const struct config_addr *a)
{
    struct stat st;
    if (lstat(a->path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "ferry: %s %s: %s\n", what, a->text, strerror(errno));
        return -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "ferry: %s %s: %s exists and is not a socket; not removing it\n", what,
                a->text, a->path);
        return -EEXIST;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        fprintf(stderr, "ferry: %s %s: %s\n", what, a->text, strerror(errno));
        return -errno;
    }
    int rc = connect(probe, (const struct sockaddr *)&a->sa, a->salen) == 0 ? 0 : errno;
    close(probe);
    if (rc != ECONNREFUSED) {
        fprintf(stderr, "ferry: %s %s: %s is in use (%s)\n", what, a->text, a->path,
                rc == 0 ? "something accepts on it" : strerror(rc));
        return -EADDRINUSE;
    }
    /* Nobody listens: a stale socket from a run that did not exit cleanly. */
    if (unlink(a->path) != 0 && errno != ENOENT) {
        fprintf(stderr, "ferry: %s %s: %s\n", what, a->text, strerror(errno));
        return -errno;
    }
    fprintf(stderr, "ferry: %s %s: removed a stale socket\n", what, a->text);
    return 0;
}

bool listener_inherited(const struct config *start, const int *inherited, const char *text)
{
    for (size_t i = 0; inherited && i < start->nlisteners; i++)
        if (inherited[i] >= 0 && strcmp(start->listeners[i].addr.text, text) == 0)
            return true;
    return false;
}

void listener_unlink_unix(const struct config *cfg, const struct config *start,
                          const int *inherited)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_addr *a = &cfg->listeners[i].addr;
        if (a->is_unix && !listener_inherited(start, inherited, a->text))
            unlink(a->path);
    }
}

int listener_inherit(const struct config *cfg, int *inherited)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        inherited[i] = -1;
    int n = daemon_listen_fds();
    for (int fd = DAEMON_LISTEN_FDS_START; fd < DAEMON_LISTEN_FDS_START + n; fd++) {
        size_t i;
        for (i = 0; i < cfg->nlisteners; i++) {
            const struct config_addr *a = &cfg->listeners[i].addr;
            if (inherited[i] < 0 &&
                daemon_fd_is_listener(fd, (const struct sockaddr *)&a->sa, a->salen))
                break;
        }
        if (i == cfg->nlisteners) {
            log_warn("socket activation: descriptor %d matches no listen address; closing it", fd);
            close(fd);
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        (void)listen_options(fd, &cfg->listeners[i]);
        inherited[i] = fd;
        log_info("socket activation: listen %s from descriptor %d", cfg->listeners[i].addr.text,
                 fd);
    }
    return n;
}

int listener_probe(const struct config *cfg, const int *inherited)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        if (inherited && inherited[i] >= 0)
            continue;
        if (l->addr.is_unix) {
            int rc = listener_claim_unix("listen", &l->addr);
            if (rc != 0)
                return rc;
            continue;
        }
        int fd = open_socket(l, false);
        if (fd < 0) {
            fprintf(stderr, "ferry: listen %s: %s\n", l->addr.text,
                    fd == -EADDRINUSE ? "address in use (another ferry or server holds it)"
                                      : strerror(-fd));
            return fd;
        }
        close(fd);
    }
    return 0;
}

int listener_open(const struct config *cfg, int *fds, const int *first, const int *inherited)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        int fd;
        if (inherited && inherited[i] >= 0) {
            /* From the socket unit: every worker accepts on its own
             * duplicate (one queue, as for a unix path). */
            fd = fcntl(inherited[i], F_DUPFD_CLOEXEC, 0);
            if (fd >= 0) {
                fds[i] = fd;
                continue;
            }
            fd = -errno;
        } else if (first && l->addr.is_unix) {
            /* A path binds once (no SO_REUSEPORT for unix sockets): the
             * workers share the first worker's socket, each accepting. */
            fd = fcntl(first[i], F_DUPFD_CLOEXEC, 0);
            if (fd >= 0) {
                fds[i] = fd;
                continue;
            }
            fd = -errno;
        } else {
            fd = open_socket(l, true);
        }
        if (fd >= 0 && listen_options(fd, l) != 0) {
            close(fd);
            fd = -errno;
        }
        if (fd < 0) {
            fprintf(stderr, "ferry: listen %s: %s\n", l->addr.text, strerror(-fd));
            while (i-- > 0)
                close(fds[i]);
            return fd;
        }
        fds[i] = fd;
    }
    return 0;
}

/* One listening socket of a worker. */
struct acceptor {
    struct worker *w;
    struct event *ev;
    struct event *resume; /* re-enables ev after a pause for descriptors */
    int fd;
    /* its listener in the config the worker runs (the acceptors are
     * swapped with the snapshot, so it lives as long as the acceptor) */
    const struct config_listener *l;
    int64_t last_shortage_log; /* this worker's own rate limit for the log line */
};

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct acceptor *a = arg;
    /* Threads share the descriptor table: another worker may have taken
     * the slot the reserve freed. Re-arm it as soon as one is free. */
    if (a->w->reserve_fd < 0)
        a->w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    event_add(a->ev, NULL);
}

/* Out of descriptors: spend the reserve one to accept and close a
 * connection (the client sees a close, not a hang in the backlog), then
 * stop polling the socket for 100 ms so the loop does not spin. */
static void out_of_descriptors(struct acceptor *a, int err)
{
    struct worker *w = a->w;
    log_ratelimited(&a->last_shortage_log, 1000, CONFIG_LOG_ERROR,
                    "worker %u: accept: %s: closing new connections until descriptors free up",
                    w->id, strerror(err));
    /* accept fails with EMFILE before it looks at the queue (the batch's
     * next accept after one took the last slot). With nobody waiting, keep
     * the reserve: spending it opens a window in which another worker can
     * take its slot for good. Level-triggered, the next client wakes us. */
    struct pollfd p = {.fd = a->fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 1)
        return;
    if (w->reserve_fd >= 0) {
        close(w->reserve_fd);
        int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    event_del(a->ev);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    event_add(a->resume, &tv);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct acceptor *a = arg;
    struct worker *w = a->w;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = sys_accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                out_of_descriptors(a, errno);
            else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("worker %u: accept: %s", w->id, strerror(errno));
            return;
        }
        if (WORKER_STAT_GET(w, connections) >= w->cfg->limits.max_connections) {
            close(fd);
            continue;
        }
        if (peer.ss_family == AF_UNIX || len == 0) {
            memset(&peer, 0, sizeof(peer));
            peer.ss_family = AF_UNIX;
            len = sizeof(sa_family_t);
        }
        conn_accept(w, fd, (struct sockaddr *)&peer, len, a->l);
    }
}

/* Acceptors for fds[0..n) (cfg's listeners, in order). NULL when out of
 * memory (nothing left allocated). */
static struct acceptor *acceptors_new(struct worker *w, const struct config *cfg, const int *fds,
                                      unsigned n)
{
    struct acceptor *acc = calloc(n ? n : 1, sizeof(*acc));
    if (!acc)
        return NULL;
    for (unsigned i = 0; i < n; i++) {
        struct acceptor *a = &acc[i];
        a->w = w;
        a->fd = fds[i];
        a->l = i < cfg->nlisteners ? &cfg->listeners[i] : NULL;
        a->ev = event_new(loop_base(w->loop), a->fd, EV_READ | EV_PERSIST, on_accept, a);
        a->resume = evtimer_new(loop_base(w->loop), on_resume, a);
        if (!a->ev || !a->resume || event_add(a->ev, NULL) != 0) {
            for (unsigned j = 0; j <= i; j++) {
                if (acc[j].ev)
                    event_free(acc[j].ev);
                if (acc[j].resume)
                    event_free(acc[j].resume);
            }
            free(acc);
            return NULL;
        }
    }
    return acc;
}

int listener_start(struct worker *w)
{
    w->acceptors = acceptors_new(w, w->cfg, w->listen_fds, w->nlisten);
    if (!w->acceptors)
        return -ENOMEM;
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

static bool has_fd(const int *fds, unsigned n, int fd)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] == fd)
            return true;
    return false;
}

/* True when a connection's local address ca is one listening address la
 * accepts on (la may be a wildcard address). */
static bool accepted_on(const struct sockaddr_storage *la, const struct sockaddr_storage *ca,
                        socklen_t clen, socklen_t llen)
{
    if (la->ss_family != ca->ss_family)
        return false;
    if (la->ss_family == AF_INET) {
        const struct sockaddr_in *l = (const void *)la, *c = (const void *)ca;
        return l->sin_port == c->sin_port && (l->sin_addr.s_addr == htonl(INADDR_ANY) ||
                                              l->sin_addr.s_addr == c->sin_addr.s_addr);
    }
    if (la->ss_family == AF_INET6) {
        const struct sockaddr_in6 *l = (const void *)la, *c = (const void *)ca;
        return l->sin6_port == c->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&l->sin6_addr) ||
                memcmp(&l->sin6_addr, &c->sin6_addr, sizeof(c->sin6_addr)) == 0);
    }
    return clen == llen && memcmp(la, ca, llen) == 0;
}

/* The client connections a removed listener accepted answer their next
 * request with Connection: close and close then: never cut while idle (a
 * request may be on its way), and not kept on an address that is gone. */
static void close_after_next(struct worker *w, int lfd)
{
    struct sockaddr_storage la, ca;
    socklen_t llen = sizeof(la);
    if (getsockname(lfd, (struct sockaddr *)&la, &llen) != 0)
        return;
    for (struct conn *c = w->conns; c; c = c->next) {
        socklen_t clen = sizeof(ca);
        if (getsockname(io_fd(c->side.s), (struct sockaddr *)&ca, &clen) == 0 &&
            accepted_on(&la, &ca, clen, llen))
            c->side.close_after = true;
    }
}

int listener_swap(struct worker *w, const struct config *cfg, int *fds, unsigned n)
{
    struct acceptor *acc = acceptors_new(w, cfg, fds, n);
    if (!acc)
        return -ENOMEM;
    for (unsigned i = 0; i < w->nlisten; i++) {
        struct acceptor *a = &w->acceptors[i];
        if (!has_fd(fds, n, a->fd)) {
            on_accept(a->fd, EV_READ, a); /* its queue: served, not reset */
            close_after_next(w, a->fd);
        }
        event_free(a->ev);
        event_free(a->resume);
        if (!has_fd(fds, n, a->fd))
            close(a->fd);
    }
    free(w->acceptors);
    free(w->listen_fds);
    w->acceptors = acc;
    w->listen_fds = fds;
    w->nlisten = n;
    return 0;
}

/* The listener of old with the same address as l, or -1. */
static int find_same(const struct config *old, const struct config_listener *l)
{
    for (size_t k = 0; old && k < old->nlisteners; k++)
        if (strcmp(old->listeners[k].addr.text, l->addr.text) == 0)
            return (int)k;
    return -1;
}

int listener_reopen(const struct config *old, const int *oldfds, const struct config *cfg, int *fds,
                    const int *first, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct config_listener *l = &cfg->listeners[i];
        int k = find_same(old, l);
        int fd;
        if (k >= 0) {
            fd = oldfds[k];
            (void)listen_options(fd, l); /* a new backlog or defer_accept applies at once */
        } else if (first && l->addr.is_unix) {
            fd = fcntl(first[i], F_DUPFD_CLOEXEC, 0);
            fd = fd >= 0 ? fd : -errno;
        } else {
            fd = 0;
            if (!first && !l->addr.is_unix) {
                /* Probe without SO_REUSEPORT: someone else on the port. */
                fd = open_socket(l, false);
                if (fd >= 0)
                    close(fd);
            } else if (!first && listener_claim_unix("listen", &l->addr) != 0) {
                fd = -EADDRINUSE;
            }
            if (fd >= 0)
                fd = open_socket(l, true);
            if (fd >= 0 && listen_options(fd, l) != 0) {
                int e = -errno;
                close(fd);
                fd = e;
            }
        }
        if (fd < 0) {
            snprintf(err, errlen, "listen %s: %s", l->addr.text,
                     fd == -EADDRINUSE ? "address in use" : strerror(-fd));
            listener_close_new(old, oldfds, fds, i);
            return fd;
        }
        fds[i] = fd;
    }
    return 0;
}

void listener_close_new(const struct config *old, const int *oldfds, const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!has_fd(oldfds, old ? (unsigned)old->nlisteners : 0, fds[i]))
            close(fds[i]);
}

void listener_stop(struct worker *w)
{
    if (!w->acceptors)
        return;
    for (unsigned i = 0; i < w->nlisten; i++) {
        struct acceptor *a = &w->acceptors[i];
        if (a->ev)
            event_free(a->ev);
        if (a->resume)
            event_free(a->resume);
        close(a->fd);
    }
    free(w->acceptors);
    w->acceptors = NULL;
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    w->reserve_fd = -1;
}
