#!/usr/bin/env python3
"""Upstreams (issue 5, points 4 and 6): weighted smooth round robin, the
keep-alive pool counted at the backend, a pooled connection the backend
closed leaves the pool, one retry on a fresh connection when a reused one
fails before any response byte, max_connections, connect refused and reset
-> 502, no head within upstream_header -> 504, a body stall beyond
upstream_read aborts. Fast (~8 s)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def test_round_robin_weights():
    "weights 3:1 give exactly 30:10 of 40 sequential requests, interleaved (smooth)"
    a, b = backend("a"), backend("b")
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(a, b, weights=[3, 1])},
              routes=[route("all", "/", upstream="u")])
    seq = []
    for i in range(40):
        before = a.stats()["requests"]
        expect_response(request(f, "GET", "/fast"), status=200, body="ok\n")
        seq.append("a" if a.stats()["requests"] > before else "b")
    eq((a.stats()["requests"], b.stats()["requests"]), (30, 10), "requests per server (a, b)")
    for i in range(0, 40, 4):
        eq(seq[i:i + 4].count("b"), 1, "b in each window of 4 (smooth): %s" % "".join(seq))


def test_pool_reuse():
    "20 requests from 20 client connections use one pooled upstream connection"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(be, keepalive=8)}, routes=[route("all", "/", upstream="u")])
    for i in range(20):
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    st = be.stats()
    eq(st["requests"], 20, "requests at the backend")
    eq(st["connections"], 1, "upstream connections opened for 20 sequential requests")
    f.wait_access(lambda e: e.get("path", "").startswith("/fast?i=19") or
                  e.get("path") == "/fast", what="the last request")


def test_pool_drops_connection_closed_by_backend():
    "a pooled connection the backend closes leaves the pool: the next request succeeds"
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[route("all", "/", upstream="u")])
    for i in range(4):
        r = request(f, "GET", "/close-after?n=1&mode=close")
        expect_response(r, status=200, body_contains="req 1")
        time.sleep(0.2)
    eq(be.stats()["connections"], 4, "upstream connections (each closed by the backend)")


def test_surplus_connections_close_after_burst():
    "connections beyond keepalive close once a burst is answered; the pool keeps keepalive"
    be = backend()
    f = ferry(workers=1,  # per worker: pools
              upstreams={"u": servers(be, keepalive=2)}, routes=[route("all", "/", upstream="u")])
    res = parallel(8, lambda i: request(f, "GET", "/slow?ms=300&i=%d" % i), timeout=20)
    for r in res:
        expect_response(r, status=200)
    eq(be.stats()["peak_open_connections"], 8, "upstream connections during the burst")
    wait_until(lambda: be.stats()["open_connections"] == 2, timeout=5,
               what="the 6 surplus connections closed, 2 kept")
    time.sleep(0.3)
    eq(be.stats()["open_connections"], 2, "pooled connections left open")
    for i in range(4):  # the kept ones serve the next requests
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    eq(be.stats()["connections"], 8, "upstream connections opened in all")


def test_retry_on_reused_connection():
    "a GET failing on a reused connection before any byte is retried once on a fresh one"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(be)}, routes=[route("all", "/", upstream="u")])
    expect_response(request(f, "GET", "/close-after?n=1"), status=200, body_contains="conn 1 req 1")
    # the pooled connection 1 gets request 2: the backend reads it and closes silently
    r = request(f, "GET", "/close-after?n=1")
    expect_response(r, status=200, body_contains="conn 2 req 1", what="retried GET")
    eq(be.stats()["connections"], 2, "upstream connections (pooled one + retry)")
    eq(be.stats()["requests"], 3, "requests seen by the backend")


def test_max_connections():
    "max_connections: 2 caps concurrent upstream connections per server"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(be, max_connections=2)},
              routes=[route("all", "/", upstream="u")])
    res = parallel(6, lambda i: request(f, "GET", "/slow?ms=400&i=%d" % i), timeout=20)
    for r in res:
        check(isinstance(r, Response), "request failed: %r" % r)
    statuses = sorted(r.status for r in res)
    check(set(statuses) <= {200, 503}, "statuses %r (expected 200 or 503)" % statuses)
    check(statuses.count(200) >= 2, "fewer than 2 requests served: %r" % statuses)
    st = be.stats()
    check(st["peak_open_connections"] <= 2, "backend saw %d concurrent connections"
          % st["peak_open_connections"])


def test_max_connections_full_503():
    "a request that finds no slot under max_connections within upstream_connect gets 503"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              timeouts={"upstream_connect": "300ms"},
              upstreams={"u": servers(be, max_connections=1)},
              routes=[route("all", "/", upstream="u")])
    res = parallel(2, lambda i: request(f, "GET", "/slow?ms=1500&i=%d" % i), timeout=20)
    statuses = sorted(r.status for r in res if isinstance(r, Response))
    eq(statuses, [200, 503], "statuses")
    busy = [r for r in res if isinstance(r, Response) and r.status == 503][0]
    check("max_connections" in busy.json()["error"], "503 body %r" % busy.body)
    eq(busy.header("Retry-After"), "1", "Retry-After on the 503")


def test_connect_refused_502():
    "connect refused -> 502 JSON, logged"
    f = ferry(upstreams={"u": servers(refused_address())}, routes=[route("all", "/", upstream="u")])
    r = request(f, "GET", "/x")
    expect_response(r, status=502, json={"status": 502, "error": lambda v: bool(v),
                                         "request_id": lambda v: bool(v)})
    f.wait_access(lambda e: e.get("status") == 502, what="the 502")


def test_reset_502():
    "an upstream reset before the head -> 502; ferry keeps serving"
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[route("all", "/", upstream="u")])
    expect_response(request(f, "GET", "/reset"), status=502, json={"status": 502})
    expect_response(request(f, "GET", "/fast"), status=200)


def test_upstream_header_timeout_504():
    "no response head within upstream_header -> 504, upstream connection closed"
    be = backend()
    f = ferry(timeouts={"upstream_header": "500ms"}, upstreams={"u": servers(be)},
              routes=[route("all", "/", upstream="u")])
    r, dt = timed(request, f, "GET", "/slow?ms=4000", timeout=10)
    expect_response(r, status=504, json={"status": 504})
    check(0.4 <= dt <= 2.0, "504 after %.2fs, expected about 0.5s" % dt)
    req = be.wait_for(lambda b: b.last() and b.last().peer_closed, 2.0)
    check(req, "the backend's connection was not closed by ferry after the 504")


def test_upstream_read_stall_aborts():
    "a response body stalling beyond upstream_read reaches the client cut short"
    be = backend()
    f = ferry(timeouts={"upstream_read": "500ms"}, upstreams={"u": servers(be)},
              routes=[route("all", "/", upstream="u")])
    t0 = time.monotonic()
    res = raw(f, b"GET /slow-body?bytes=100000&after=1000&ms=4000 HTTP/1.1\r\nHost: x\r\n\r\n",
              timeout=5)
    dt = time.monotonic() - t0
    r = res.response
    eq(r.status, 200, "status of the stalled response")
    check(not r.complete, "stalled body came back complete: %r" % r)
    check(res.how in ("eof", "reset"), "client connection not closed (%s)" % res.how)
    check(dt < 3.0, "abort after %.2fs, expected about 0.5s" % dt)


def test_connect_error_retried_elsewhere_by_default():
    "without retries:, a connect error is tried once more on another server"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(refused_address(), be)},
              routes=[route("all", "/", upstream="u")])
    for i in range(6):
        eq(request(f, "POST", "/echo", body=b"x=%d" % i).status, 200, "POST %d" % i)
    eq(len(be.requests), 6, "requests at the live server (bodies sent once each)")
    e = f.wait_access(lambda e: e.get("upstream_retries") == 1, what="a retried request")
    eq(e["upstream"], be.address, "logged upstream: the server that answered")
    f0 = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(refused_address(), be, retries={"attempts": 0})},
               routes=[route("all", "/", upstream="u")])
    statuses = sorted(request(f0, "GET", "/fast").status for _ in range(4))
    eq(statuses, [200, 200, 502, 502], "attempts: 0 (round robin over a dead and a live server)")


def test_status_and_reset_retries():
    "retries.on 503 and reset: an idempotent request moves on; a POST or a spent budget does not"
    bad, good = backend("bad"), backend("good")
    bad.force = 503
    f = ferry(upstreams={"u": servers(bad, good, retries={"attempts": 1, "on": [503, "reset"]})},
              routes=[route("all", "/", upstream="u")])
    for i in range(4):
        r = request(f, "GET", "/fast?i=%d" % i)
        eq(r.status, 200, "GET %d answered by the good server" % i)
    check(len(bad.requests) >= 1, "the failing server was tried")
    r = request(f, "POST", "/echo", body=b"once")
    check(r.status in (200, 503), "POST status %r" % r.status)
    posts = [q for q in bad.requests + good.requests if q.method == "POST"]
    eq(len(posts), 1, "a POST is sent once, never retried")
    bad.force = "reset"
    for i in range(4):
        eq(request(f, "GET", "/fast?r=%d" % i).status, 200, "GET %d after resets" % i)
    # Every server failing: the last answer goes back after attempts + 1 tries.
    bad.force = good.force = 503
    n0 = len(bad.requests) + len(good.requests)
    eq(request(f, "GET", "/fast?all").status, 503, "all servers 503")
    eq(len(bad.requests) + len(good.requests) - n0, 2, "tries with attempts: 1")


def test_passive_ejection():
    "passive: a server failing `failures` times in a row is skipped for eject_for, then tried again"
    be = backend()
    f = ferry(workers=1,  # per worker: pools, balancer state, slots, ejection
              upstreams={"u": servers(refused_address(), be, retries={"attempts": 0},
                                      passive={"failures": 2, "eject_for": "1s"})},
              routes=[route("all", "/", upstream="u")])
    statuses = [request(f, "GET", "/fast?i=%d" % i).status for i in range(12)]
    eq(statuses.count(502), 2, "502s before the dead server is ejected: %r" % statuses)
    eq(statuses[-6:], [200] * 6, "after the ejection")
    wait_until(lambda: "ejected for 1000 ms" in f.stderr_text(), what="the ejection warning")
    time.sleep(1.2)
    statuses = [request(f, "GET", "/fast?j=%d" % i).status for i in range(4)]
    check(502 in statuses, "the server was not tried again after eject_for: %r" % statuses)


def test_passive_ejection_logged_per_server():
    "two servers ejected within a second are both logged (the rate limit is per server)"
    dead1, dead2 = refused_address(), refused_address()
    be, be2 = backend(), backend()
    f = ferry(workers=1,  # round robin's order is per worker; two of four may be ejected
              upstreams={"u": servers(dead1, dead2, be, be2, retries={"attempts": 0},
                                      passive={"failures": 1, "eject_for": "5s"})},
              routes=[route("all", "/", upstream="u")])
    t0 = time.monotonic()
    statuses = [request(f, "GET", "/fast?i=%d" % i).status for i in range(6)]
    eq(statuses.count(502), 2, "502s before both dead servers are ejected: %r" % statuses)
    check(time.monotonic() - t0 < 1.0, "the requests took a second or more: no proof")
    for dead in (dead1, dead2):
        wait_until(lambda: "server %s ejected" % dead in f.stderr_text(),
                   what="the ejection warning for " + dead)


if __name__ == "__main__":
    run(globals(), budget=60)
