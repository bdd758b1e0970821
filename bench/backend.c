/*
 * bench/backend.c - the upstream every benchmark run talks to.
 *
 * One thread, one epoll, level-triggered. It must never be the reason a
 * proxy looks slow, so the fast path is one read() and one writev() per
 * request and nothing is allocated per request.
 *
 *   GET /<anything>   200, a 40-byte JSON body, keep-alive unless the client
 *                     said "Connection: close" (or spoke HTTP/1.0 without
 *                     keep-alive)
 *   GET /slow/<ms>    the same answer after <ms> milliseconds; the wait is a
 *                     timer in a heap, other connections are served meanwhile
 *   GET /big          a 10 MiB body (size set with -B), written from one
 *                     static buffer with EPOLLOUT for the remainder
 *   GET /__stats      {"accepted":N,"requests":N,"open":N,"max_open":N}
 *                     where the connection asking is not counted in
 *                     "accepted"; /__stats?reset also sets max_open = open.
 *                     The harness reads "accepted" before and after each run
 *                     to print how many upstream connections a proxy opened.
 *
 * Usage: backend -l 127.0.0.1:PORT [-b backlog] [-B big_bytes]
 * Built by bench/run with cc -O2; not part of the autotools build.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE 8192
#define HEAD_MAX 512
#define BODY "{\"ok\":true,\"service\":\"bench-backend-1\"}\n"

struct conn {
    int fd;
    uint32_t gen;    /* bumped on close: stale timers are ignored */
    uint32_t events; /* current epoll interest */
    bool keepalive;  /* after the current response */
    bool waiting;    /* a /slow timer is pending */
    bool is_stats;   /* this connection asked for /__stats */
    size_t rlen;     /* bytes in rbuf */
    size_t skip;     /* request body bytes still to discard */
    /* pending output: head[hoff..hlen) then body[boff..blen) */
    size_t hlen, hoff;
    const char *body;
    size_t blen, boff;
    char head[HEAD_MAX];
    char rbuf[RBUF_SIZE];
};

struct timer {
    uint64_t due_ns;
    int fd;
    uint32_t gen;
};

static struct conn **conns; /* indexed by fd */
static size_t nconns_max;
static int epfd;
static char *big_body;
static size_t big_size = 10u << 20;

static struct timer *heap;
static size_t heap_len, heap_cap;

static uint64_t st_accepted, st_requests, st_open, st_max_open;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void heap_push(struct timer t)
{
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof(*heap));
        if (!heap) {
            perror("backend: realloc");
            exit(1);
        }
    }
    size_t i = heap_len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p].due_ns <= t.due_ns)
            break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = t;
}

static struct timer heap_pop(void)
{
    struct timer top = heap[0];
    struct timer last = heap[--heap_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_len)
            break;
        if (c + 1 < heap_len && heap[c + 1].due_ns < heap[c].due_ns)
            c++;
        if (last.due_ns <= heap[c].due_ns)
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_len)
        heap[i] = last;
    return top;
}

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.fd = c->fd};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from epoll */
    c->fd = -1;
    c->gen++;
    st_open--;
}

/* Writes what is pending. Returns false if the connection was closed. */
static bool flush_out(struct conn *c)
{
    while (c->hoff < c->hlen || c->boff < c->blen) {
        struct iovec iov[2];
        int n = 0;
        if (c->hoff < c->hlen)
            iov[n++] = (struct iovec){c->head + c->hoff, c->hlen - c->hoff};
        if (c->boff < c->blen)
            iov[n++] = (struct iovec){(char *)c->body + c->boff, c->blen - c->boff};
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                set_events(c, EPOLLOUT);
                return true;
            }
            conn_close(c);
            return false;
        }
        size_t left = (size_t)w;
        size_t h = c->hlen - c->hoff;
        if (left >= h) {
            c->hoff = c->hlen;
            c->boff += left - h;
        } else {
            c->hoff += left;
        }
    }
    if (!c->keepalive) {
        conn_close(c);
        return false;
    }
    set_events(c, EPOLLIN);
    return true;
}

static void queue_response(struct conn *c, const char *body, size_t blen)
{
    int n = snprintf(c->head, sizeof(c->head),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n",
                     blen, c->keepalive ? "" : "Connection: close\r\n");
    c->hlen = (size_t)n;
    c->hoff = 0;
    c->body = body;
    c->blen = blen;
    c->boff = 0;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return false;
    const char *v = line + nl + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

static bool contains_token(const char *v, size_t vlen, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= vlen; i++)
        if (strncasecmp(v + i, tok, tl) == 0)
            return true;
    return false;
}

/*
 * Parses and answers the requests in rbuf until one must wait (a timer or a
 * blocked write) or the buffer holds no complete head. Returns false if the
 * connection was closed.
 */
static bool handle_requests(struct conn *c)
{
    for (;;) {
        if (c->skip) {
            size_t k = c->skip < c->rlen ? c->skip : c->rlen;
            memmove(c->rbuf, c->rbuf + k, c->rlen - k);
            c->rlen -= k;
            c->skip -= k;
            if (c->skip)
                return true;
        }
        if (c->waiting || c->hoff < c->hlen || c->boff < c->blen)
            return true;
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end) {
            if (c->rlen == RBUF_SIZE) { /* head too large for a benchmark */
                conn_close(c);
                return false;
            }
            return true;
        }
        size_t headlen = (size_t)(end - c->rbuf) + 4;
        /* request line: METHOD SP PATH SP VERSION */
        char *eol = memmem(c->rbuf, headlen, "\r\n", 2);
        char *sp1 = memchr(c->rbuf, ' ', (size_t)(eol - c->rbuf));
        char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
        if (!sp1 || !sp2) {
            conn_close(c);
            return false;
        }
        const char *path = sp1 + 1;
        size_t plen = (size_t)(sp2 - path);
        bool http10 = (size_t)(eol - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
        bool ka = !http10;
        size_t clen = 0;
        for (char *line = eol + 2; line < end;) {
            char *le = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
            size_t ll = (size_t)(le - line);
            const char *v;
            size_t vl;
            if (header_is(line, ll, "connection", &v, &vl)) {
                if (contains_token(v, vl, "close"))
                    ka = false;
                else if (contains_token(v, vl, "keep-alive"))
                    ka = true;
            } else if (header_is(line, ll, "content-length", &v, &vl)) {
                clen = strtoul(v, NULL, 10);
            }
            line = le + 2;
        }
        c->keepalive = ka;

        if (plen >= 8 && memcmp(path, "/__stats", 8) == 0) {
            if (!c->is_stats) {
                c->is_stats = true;
                st_accepted--;
            }
            if (plen >= 14 && memcmp(path + 8, "?reset", 6) == 0)
                st_max_open = st_open;
            static char sbuf[256];
            int n = snprintf(sbuf, sizeof(sbuf),
                             "{\"accepted\":%llu,\"requests\":%llu,\"open\":%llu,"
                             "\"max_open\":%llu}\n",
                             (unsigned long long)st_accepted, (unsigned long long)st_requests,
                             (unsigned long long)st_open, (unsigned long long)st_max_open);
            queue_response(c, sbuf, (size_t)n);
        } else if (plen >= 6 && memcmp(path, "/slow/", 6) == 0) {
            st_requests++;
            unsigned long ms = strtoul(path + 6, NULL, 10);
            queue_response(c, BODY, sizeof(BODY) - 1);
            c->waiting = true;
            heap_push((struct timer){now_ns() + ms * 1000000u, c->fd, c->gen});
        } else if (plen == 4 && memcmp(path, "/big", 4) == 0) {
            st_requests++;
            queue_response(c, big_body, big_size);
        } else {
            st_requests++;
            queue_response(c, BODY, sizeof(BODY) - 1);
        }
        memmove(c->rbuf, c->rbuf + headlen, c->rlen - headlen);
        c->rlen -= headlen;
        c->skip = clen;
        if (c->waiting) {
            set_events(c, 0); /* read nothing more until the answer is out */
            return true;
        }
        if (!flush_out(c))
            return false;
    }
}

static void on_readable(struct conn *c)
{
    if (c->rlen == RBUF_SIZE) /* parked: a pipelined head while we wait */
        return;
    ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
    c->rlen += (size_t)r;
    handle_requests(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                perror("backend: accept");
            return;
        }
        if ((size_t)fd >= nconns_max) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = conns[fd];
        if (!c) {
            c = calloc(1, sizeof(*c));
            if (!c) {
                close(fd);
                continue;
            }
            conns[fd] = c;
        }
        uint32_t gen = c->gen;
        memset(c, 0, offsetof(struct conn, head));
        c->gen = gen;
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
            close(fd);
            continue;
        }
        st_accepted++;
        if (++st_open > st_max_open)
            st_max_open = st_open;
    }
}

static void fire_timers(void)
{
    uint64_t now = now_ns();
    while (heap_len && heap[0].due_ns <= now) {
        struct timer t = heap_pop();
        struct conn *c = conns[t.fd];
        if (!c || c->fd != t.fd || c->gen != t.gen || !c->waiting)
            continue;
        c->waiting = false;
        if (flush_out(c))
            handle_requests(c);
    }
}

static int listen_on(const char *spec, int backlog)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
        fprintf(stderr, "backend: -l wants HOST:PORT\n");
        exit(2);
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "backend: bad address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
        perror("backend: bind/listen");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:18080";
    int backlog = 4096;
    int opt;
    while ((opt = getopt(argc, argv, "l:b:B:")) != -1) {
        switch (opt) {
        case 'l':
            addr = optarg;
            break;
        case 'b':
            backlog = atoi(optarg);
            break;
        case 'B':
            big_size = strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: backend -l HOST:PORT [-b backlog] [-B big_bytes]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        nconns_max = rl.rlim_cur;
    }
    if (nconns_max == 0 || nconns_max > 1u << 20)
        nconns_max = 1u << 20;
    conns = calloc(nconns_max, sizeof(*conns));
    big_body = malloc(big_size);
    if (!conns || !big_body) {
        perror("backend: malloc");
        return 1;
    }
    memset(big_body, 'x', big_size);

    int lfd = listen_on(addr, backlog);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);

    enum { MAXEV = 256 };
    static struct epoll_event evs[MAXEV];
    for (;;) {
        int timeout = -1;
        if (heap_len) {
            uint64_t now = now_ns();
            timeout = heap[0].due_ns <= now ? 0 : (int)((heap[0].due_ns - now + 999999) / 1000000);
        }
        int n = epoll_wait(epfd, evs, MAXEV, timeout);
        if (n < 0 && errno != EINTR) {
            perror("backend: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
                continue;
            }
            struct conn *c = conns[fd];
            if (!c || c->fd != fd)
                continue;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                conn_close(c);
            } else if (evs[i].events & EPOLLOUT) {
                if (flush_out(c))
                    handle_requests(c);
            } else if (evs[i].events & EPOLLIN) {
                on_readable(c);
            }
        }
        fire_timers();
    }
}
