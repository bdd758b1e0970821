#!/usr/bin/env python3
"""Workers, listeners and client connections (issue 5, points 1 and 2, and
malformed requests): idle connections hold no coroutine and the first byte
starts one; client_idle closes idle keep-alive connections; client_header
is absolute from the first byte; a malformed request gets its 400 and a
closed connection; workers: 2 runs two loop threads; a second instance on the
same port fails with "address in use"; the pid file is locked; max_requests
sheds with 503. ~10 s."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def simple(**kw):
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping"), route("up", "/up", upstream="u",
                                                            strip_prefix="/up")], **kw)
    return be, f


def test_idle_connections_hold_no_coroutine():
    "100 idle connections (50 fresh, 50 after a request) hold no coroutine"
    be, f = simple()
    base = f.live_coroutines()
    clients = []
    try:
        for i in range(100):
            c = Client(f.port)
            if i % 2:
                expect_response(c.request("GET", "/ping"), status=200)
            clients.append(c)
        time.sleep(0.3)
        eq(f.live_coroutines(), base, "live_coroutines with 100 idle connections")
        clients[0].send(b"GET /pi")  # the first byte of a request starts one
        wait_until(lambda: f.live_coroutines() > base, 2.0,
                   what="a coroutine for a request whose first bytes arrived")
        clients[0].send(b"ng HTTP/1.1\r\nHost: x\r\n\r\n")
        expect_response(clients[0].response(5), status=200)
        wait_until(lambda: f.live_coroutines() == base, 2.0,
                   what="the coroutine to end with its response")
    finally:
        for c in clients:
            c.close()


def test_client_idle_timeout():
    "client_idle: 1s closes an idle keep-alive connection after about 1 s"
    be, f = simple(timeouts={"client_idle": "1s"})
    c = Client(f.port)
    try:
        expect_response(c.request("GET", "/ping"), status=200)
        t0 = time.monotonic()
        check(not c.closed(0.6), "closed before client_idle")
        check(c.closed(3.0), "not closed 3.6 s after the response (client_idle 1s)")
        dt = time.monotonic() - t0
        check(0.8 <= dt <= 2.5, "closed after %.2fs, expected about 1 s" % dt)
    finally:
        c.close()


def test_client_header_is_absolute():
    "client_header: 1s fails a head trickled a line every 200 ms at about 1 s"
    be, f = simple(timeouts={"client_header": "1s"})
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        c.send(b"GET /ping HTTP/1.1\r\n")
        closed = False
        for i in range(20):
            try:
                c.send(b"X-Trickle-%d: 1\r\n" % i)
            except OSError:
                closed = True
                break
            if c.closed(0.2):
                closed = True
                break
        dt = time.monotonic() - t0
        check(closed or c.closed(1.0), "a trickled head was still open after %.1fs" % dt)
        check(dt <= 2.0, "trickled head cut after %.2fs, expected about 1 s" % dt)
        rs = parse_responses(c.buf, eof=True)
        check(not rs or rs[0].status == 408, "answer to a late head: %r" % rs)
    finally:
        c.close()


def test_malformed_request_400_and_close():
    "malformed requests get 400 and a closed connection; nothing is forwarded"
    be, f = simple()
    for data in (b"GET /up/echo HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                 b"GET /up/echo HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
                 b"POST /up/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Content-Length: 2\r\n\r\nab",
                 b"GET /up/echo HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE AFTER\r\n\r\n"
                 b"GET /up/echo HTTP/1.1\r\nHost: x\r\n\r\n"):
        res = raw(f, data, timeout=3)
        first = res.response
        if b"GARBAGE" in data:
            eq(first.status, 200, "status of the valid first request")
            check(len(res.responses) == 2 and res.responses[1].status == 400,
                  "pipelined garbage: %r" % res.responses)
        else:
            expect_response(first, status=400, what="answer to %r" % data[:60])
        check(res.how in ("eof", "reset"), "connection left open after a 400 (%r)" % data[:60])
    eq(sum(1 for r in be.requests if r.mode == "echo"), 1, "requests forwarded upstream")


def test_workers_two_threads():
    "workers: 2 starts two loop threads that serve requests"
    be, f = simple(workers=2)
    tasks = len(os.listdir("/proc/%d/task" % f.pid))
    check(tasks >= 3, "ferry has %d threads with workers: 2 (main + 2 expected)" % tasks)
    res = parallel(20, lambda i: request(f, "GET", "/up/fast"), timeout=10)
    bad = [r for r in res if not isinstance(r, Response) or r.status != 200]
    check(not bad, "failed requests with 2 workers: %r" % bad[:3])


def test_second_instance_address_in_use():
    "a second ferry on the same port fails with \"address in use\"; the first keeps serving"
    be, f = simple()
    g = Ferry({"listen": [{"address": f.address}], "routes": [respond_route("p", "/")]})
    rc, out, err = run_ferry_cli(["-c", g.config_path], timeout=5)
    check(rc != 0, "a second instance on %s started" % f.address)
    check(re.search(r"address (already )?in use", err, re.I), "no \"address in use\": %r"
          % err[:300])
    expect_response(request(f, "GET", "/ping"), status=200, what="first instance")


def test_pid_file_locked():
    "a second ferry with the same pid_file (another port) refuses to start"
    be, f = simple()
    g = Ferry({"pid_file": f.pid_file, "routes": [respond_route("p", "/")]})
    rc, out, err = run_ferry_cli(["-c", g.config_path], timeout=5)
    check(rc != 0, "a second instance with a locked pid file started")
    check(f.pid_file in err or "pid" in err.lower(), "the pid file is not named: %r" % err[:300])
    expect_response(request(f, "GET", "/ping"), status=200, what="first instance")
    with open(f.pid_file) as fh:
        eq(fh.read().strip(), str(f.pid), "pid file content")


def test_max_requests_503():
    "max_requests: 2 in one worker: the third concurrent request gets 503"
    be, f = simple(max_requests=2, workers=1)  # max_requests is per worker
    res = parallel(5, lambda i: request(f, "GET", "/up/slow?ms=800&i=%d" % i), timeout=10)
    statuses = sorted(r.status if isinstance(r, Response) else repr(r) for r in res)
    eq(statuses.count(200), 2, "requests served with max_requests 2 (%r)" % statuses)
    eq(statuses.count(503), 3, "requests shed with 503 (%r)" % statuses)
    r503 = [r for r in res if r.status == 503][0]
    expect_response(r503, json={"status": 503})


if __name__ == "__main__":
    run(globals(), budget=45)
