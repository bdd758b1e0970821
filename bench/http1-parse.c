/*
 * Micro-benchmark: parse rate of a typical ~500-byte API request head
 * (http1_parse_request, whole head in one call, as the proxy does after
 * evbuffer_pullup), in ns per head on one core. Also the cost of the
 * upstream re-serialisation and of header forwarding, for scale.
 * Build a release tree (the default -O2) and run: make bench &&
 * bench/http1-parse [iterations]. Bounded: at most the given iterations
 * (default 2,000,000) and about 10 s of CPU time. Times are thread CPU
 * time, not wall time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "headers.h"
#include "http1.h"

static const char head[] =
    "POST /v1/orders/12345/items?expand=product&limit=20 HTTP/1.1\r\n"
    "Host: api.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) ExampleClient/2.3\r\n"
    "Accept: application/json\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghij\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 128\r\n"
    "X-Request-Id: 7f3c2a10-9b1e-4c55-8d2f-0a1b2c3d4e5f\r\n"
    "Cookie: session=abc123def456; theme=dark\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

/* CPU time of this thread: the machine may be shared, and wall time
 * would count other processes' turns. The deadline uses it too. */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    static struct http1_header hdrs[100], fwd_out[120];
    static char out[2048], scratch[2048];
    struct http1_request req;
    size_t len = sizeof(head) - 1;
    volatile size_t sink = 0;

    if (iters <= 0)
        iters = 1;
    http1_request_init(&req, hdrs, 100);
    if (http1_parse_request(head, len, NULL, &req) != (ssize_t)len) {
        fprintf(stderr, "bench: the sample head does not parse\n");
        return 1;
    }

    double deadline = now_ns() + 10e9;
    long done = 0;
    double t0 = now_ns();
    for (; done < iters; done++) {
        http1_request_init(&req, hdrs, 100);
        sink += (size_t)http1_parse_request(head, len, NULL, &req);
        if ((done & 0xffff) == 0 && now_ns() > deadline)
            break;
    }
    double parse_ns = (now_ns() - t0) / (double)done;

    struct headers_forward fwd = {.client_addr = "192.0.2.10",
                                  .host = "backend:9001",
                                  .host_len = 12,
                                  .request_id = "x",
                                  .request_id_len = 1};
    long done2 = 0;
    t0 = now_ns();
    for (; done2 < iters / 4 + 1; done2++) {
        int n = headers_forward_request(&req, &fwd, fwd_out, 120, scratch, sizeof(scratch));
        struct http1_head_out o = {.method = req.method_str,
                                   .method_len = req.method_len,
                                   .path = req.path,
                                   .path_len = req.path_len,
                                   .query = req.query,
                                   .query_len = req.query_len,
                                   .headers = fwd_out,
                                   .nheaders = (size_t)n,
                                   .body = req.body,
                                   .content_length = req.content_length};
        sink += (size_t)http1_write_request_head(out, sizeof(out), &o);
        if ((done2 & 0xffff) == 0 && now_ns() > deadline)
            break;
    }
    double fwd_ns = (now_ns() - t0) / (double)done2;

    printf("http1_parse_request: %zu-byte head, %zu headers: %.1f ns/head (%.0f MB/s), %ld runs\n",
           len, req.nheaders, parse_ns, (double)len / parse_ns * 1e3, done);
    printf("headers_forward_request + http1_write_request_head: %.1f ns/head, %ld runs\n", fwd_ns,
           done2);
    return sink == 0;
}
