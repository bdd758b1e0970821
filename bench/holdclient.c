/*
 * bench/holdclient.c - N clients at once, one request each, all held open.
 *
 * wrk cannot measure "5,000 requests waiting 5 s on a slow backend": its
 * timeout is 2 s and its connections are reused. This client issues N
 * non-blocking connect()s back to back, sends one "Connection: close"
 * request on each as soon as it is connected, waits for every answer (bounded
 * by -t seconds) and prints one JSON line:
 *
 *   {"n":5000,"ok":5000,"failed":0,"connect_errors":0,"resets":0,
 *    "bad_status":0,"timeouts":0,"p50_ms":..,"p99_ms":..,"max_ms":..,
 *    "connect_spread_ms":..}
 *
 * Latency is per request, from its own connect() call to the last byte of
 * its response (Content-Length, or EOF without one). "ok" means status 200.
 *
 * Usage: holdclient -a 127.0.0.1:PORT [-n 5000] [-p /slow/5000] [-t 30]
 * Built by bench/run with cc -O2; not part of the autotools build.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HBUF 1024

enum state { ST_CONNECTING, ST_READING, ST_DONE };

struct client {
    int fd;
    enum state st;
    uint64_t t0_ns;
    size_t hlen;      /* bytes of the response head buffered */
    long clen;        /* Content-Length, -1 if none */
    size_t body_seen; /* body bytes received */
    int status;
    char head[HBUF];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return -1;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

/* Parses the buffered head once it is complete; returns false while incomplete. */
static bool parse_head(struct client *c, size_t *body_off)
{
    char *end = memmem(c->head, c->hlen, "\r\n\r\n", 4);
    if (!end)
        return false;
    *body_off = (size_t)(end - c->head) + 4;
    c->status = 0;
    if (c->hlen > 12 && memcmp(c->head, "HTTP/1.", 7) == 0)
        c->status = atoi(c->head + 9);
    c->clen = -1;
    for (char *p = c->head; p < end; p++) {
        if (*p == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0)
            c->clen = strtol(p + 16, NULL, 10);
    }
    return true;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:8080";
    const char *path = "/slow/5000";
    int n = 5000;
    double tmax = 30;
    int opt;
    while ((opt = getopt(argc, argv, "a:n:p:t:")) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'p':
            path = optarg;
            break;
        case 't':
            tmax = atof(optarg);
            break;
        default:
            fprintf(stderr, "usage: holdclient -a HOST:PORT [-n N] [-p PATH] [-t SECONDS]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host) || n <= 0) {
        fprintf(stderr, "holdclient: bad arguments\n");
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "holdclient: bad address %s\n", host);
        return 2;
    }
    char req[512];
    int reqlen = snprintf(req, sizeof(req),
                          "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: holdclient\r\n"
                          "Connection: close\r\n\r\n",
                          path, addr);

    struct client *cl = calloc((size_t)n, sizeof(*cl));
    uint64_t *lat = calloc((size_t)n, sizeof(*lat));
    if (!cl || !lat) {
        perror("holdclient: calloc");
        return 1;
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int connect_errors = 0, resets = 0, bad_status = 0, timeouts = 0, ok = 0;
    size_t nlat = 0;
    int pending = 0;

    uint64_t start = now_ns();
    for (int i = 0; i < n; i++) {
        struct client *c = &cl[i];
        c->t0_ns = now_ns();
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            connect_errors++;
            c->st = ST_DONE;
            continue;
        }
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
            connect_errors++;
            close(c->fd);
            c->st = ST_DONE;
            continue;
        }
        /* On loopback the handshake usually completes inside connect(). */
        c->st = ST_CONNECTING;
        if (send(c->fd, req, (size_t)reqlen, MSG_NOSIGNAL) == reqlen)
            c->st = ST_READING;
        struct epoll_event e = {.events = c->st == ST_READING ? EPOLLIN : EPOLLOUT,
                                .data.u32 = (uint32_t)i};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
        pending++;
    }
    uint64_t spread = now_ns() - start;
    uint64_t deadline = start + (uint64_t)(tmax * 1e9);

    enum { MAXEV = 512 };
    static struct epoll_event evs[MAXEV];
    static char rbuf[65536];
    while (pending > 0) {
        uint64_t now = now_ns();
        if (now >= deadline)
            break;
        int k = epoll_wait(epfd, evs, MAXEV, (int)((deadline - now) / 1000000) + 1);
        if (k < 0 && errno != EINTR) {
            perror("holdclient: epoll_wait");
            break;
        }
        for (int j = 0; j < k; j++) {
            struct client *c = &cl[evs[j].data.u32];
            if (c->st == ST_DONE)
                continue;
            bool fail = false, done = false;
            if (c->st == ST_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || send(c->fd, req, (size_t)reqlen, MSG_NOSIGNAL) != reqlen) {
                    connect_errors++;
                    fail = true;
                } else {
                    c->st = ST_READING;
                    struct epoll_event e = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
                }
            } else {
                ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r < 0) {
                    resets++;
                    fail = true;
                } else if (r == 0) {
                    size_t off;
                    if (c->hlen && parse_head(c, &off) && c->clen < 0)
                        done = true; /* body delimited by close */
                    else {
                        resets++;
                        fail = true;
                    }
                } else {
                    size_t got = (size_t)r;
                    size_t off;
                    bool had_head = c->status != 0;
                    if (!had_head) {
                        size_t take = got < HBUF - c->hlen ? got : HBUF - c->hlen;
                        memcpy(c->head + c->hlen, rbuf, take);
                        c->hlen += take;
                        if (parse_head(c, &off)) {
                            if (c->status == 0)
                                c->status = -1;
                            /* body bytes in this read: total buffered minus head */
                            size_t before = c->hlen - take;
                            c->body_seen = before + got - off;
                        } else if (c->hlen == HBUF) {
                            bad_status++;
                            fail = true;
                        }
                    } else {
                        c->body_seen += got;
                    }
                    if (!fail && c->status != 0 && c->clen >= 0 && c->body_seen >= (size_t)c->clen)
                        done = true;
                }
            }
            if (done) {
                if (c->status == 200) {
                    ok++;
                    lat[nlat++] = now_ns() - c->t0_ns;
                } else {
                    bad_status++;
                }
            }
            if (done || fail) {
                close(c->fd);
                c->st = ST_DONE;
                pending--;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (cl[i].st != ST_DONE) {
            timeouts++;
            close(cl[i].fd);
        }
    }
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    printf("{\"n\":%d,\"ok\":%d,\"failed\":%d,\"connect_errors\":%d,\"resets\":%d,"
           "\"bad_status\":%d,\"timeouts\":%d,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
           "\"max_ms\":%.1f,\"connect_spread_ms\":%.1f}\n",
           n, ok, n - ok, connect_errors, resets, bad_status, timeouts, pct_ms(lat, nlat, 0.50),
           pct_ms(lat, nlat, 0.99), nlat ? (double)lat[nlat - 1] / 1e6 : -1.0,
           (double)spread / 1e6);
    return ok == n ? 0 : 1;
}
