#!/usr/bin/env python3
"""Balancers and resilience through Ferry (issue 16, points 1, 3, 4, 7),
with several real backends that die, refuse, answer 5xx and come back:

- the spread of round_robin, least_conn, random_two and hash measured
  through Ferry (two workers), hash sticky per key (header, cookie);
- least_conn counts requests in flight over all workers: while one server
  holds a slow request, the others get the rest;
- passive ejection counts failures over all workers (exactly `failures`
  502s before the ejection with two workers), doubles a repeated
  ejection, never ejects more than half of the servers, and is exported in
  /metrics;
- no client error while one healthy server remains, for idempotent
  requests, through servers dying, refusing, answering 503 and coming back;
- the retry budget: retries and refused retries counted in /metrics;
  timeouts.total bounds a retry's backoff.
Fast (~20 s)."""
import http.client
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from backend import Backend  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def metrics(f):
    """{(name, labels text): value} of GET /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metric(f, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    return metrics(f).get((name, want), 0)


def served_by(backends, fn):
    """Runs fn (one request, sequential) and returns the index of the
    backend that saw it (-1: none), with fn's result."""
    before = [b.stats()["requests"] for b in backends]
    r = fn()
    after = [b.stats()["requests"] for b in backends]
    hit = [i for i in range(len(backends)) if after[i] > before[i]]
    return (hit[-1] if hit else -1), r


def restart(b):
    """A stopped in-process backend listening again on its port."""
    nb = Backend(port=b.port, name=b.name).start()
    from ferrytest import _cleanups
    _cleanups.append(nb.stop)
    return nb


def spread(balance, n=600, **keys):
    bes = [backend("b%d" % i) for i in range(3)]
    f = ferry(upstreams={"u": servers(*bes, weights=[3, 2, 1], balance=balance, **keys)},
              routes=[route("all", "/", upstream="u")])
    for i in range(n):
        r = request(f, "GET", "/fast?i=%d" % i, headers={"X-User": "user-%d" % i})
        eq(r.status, 200, "request %d" % i)
    counts = [b.stats()["requests"] for b in bes]
    shares = [c / n for c in counts]
    log("%s: %r of %d requests, shares %s (weights 3:2:1 = 0.50, 0.33, 0.17)"
        % (balance, counts, n, ", ".join("%.3f" % s for s in shares)))
    return shares


def test_spread_every_balancer():
    "weights 3:2:1 through Ferry (2 workers, 600 requests): each balancer within 6 points"
    want = [3 / 6, 2 / 6, 1 / 6]
    for balance, keys in (("round_robin", {}), ("least_conn", {}), ("random_two", {}),
                          ("hash", {"hash_key": "header:X-User"})):
        shares = spread(balance, **keys)
        for i in range(3):
            check(abs(shares[i] - want[i]) < 0.06, "%s: server %d share %.3f, want %.3f"
                  % (balance, i, shares[i], want[i]))


def test_hash_sticky_header_and_cookie():
    "balance: hash keeps a key on its server (header and cookie); a request without one still works"
    bes = [backend("b%d" % i) for i in range(3)]
    f = ferry(upstreams={"h": servers(*bes, balance="hash", hash_key="header:X-User"),
                         "c": servers(*bes, balance="hash", hash_key="cookie:sid")},
              routes=[route("h", "/h/", upstream="h"), route("c", "/c/", upstream="c")])
    owners = set()
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        seen = set()
        for i in range(4):
            k, r = served_by(bes, lambda: request(f, "GET", "/h/fast?i=%d" % i,
                                                  headers={"X-User": user}))
            eq(r.status, 200, "status")
            seen.add(k)
        eq(len(seen), 1, "servers seen by %s (header)" % user)
        owners |= seen
        seen = set()
        for i in range(4):
            k, r = served_by(bes, lambda: request(f, "GET", "/c/fast?i=%d" % i,
                                                  headers={"Cookie": "a=1; sid=%s; b=2" % user}))
            eq(r.status, 200, "status")
            seen.add(k)
        eq(len(seen), 1, "servers seen by %s (cookie)" % user)
    check(len(owners) > 1, "six keys all on one server: %r" % owners)
    expect_response(request(f, "GET", "/h/fast"), status=200, what="no key: round robin")


def test_hash_dead_server_moves_only_its_keys():
    "hash + passive: a server that dies moves its own keys only; no client error (retries)"
    bes = [backend("b%d" % i) for i in range(4)]
    f = ferry(workers=1,
              upstreams={"u": servers(*bes, balance="hash", hash_key="header:X-User",
                                      retries={"attempts": 2}, passive={"failures": 1})},
              routes=[route("all", "/", upstream="u")])
    users = ["user-%d" % i for i in range(40)]
    owner = {}
    for u in users:
        owner[u], r = served_by(bes, lambda: request(f, "GET", "/fast", headers={"X-User": u}))
        eq(r.status, 200, "status")
    dead = owner[users[0]]
    bes[dead].stop()
    moved = 0
    for u in users:
        k, r = served_by(bes, lambda: request(f, "GET", "/fast", headers={"X-User": u}))
        eq(r.status, 200, "status for %s after server %d died" % (u, dead))
        if owner[u] != dead:
            eq(k, owner[u], "server of %s (its own server is alive)" % u)
        else:
            moved += 1
            check(k != dead, "served by the dead server")
    check(moved >= 1, "no key was on the dead server")


def test_least_conn_counts_in_flight_over_workers():
    "least_conn: while one server holds a slow request (any worker), fast ones go to the other"
    a, b = backend("a"), backend("b")
    f = ferry(workers=2, upstreams={"u": servers(a, b, balance="least_conn")},
              routes=[route("all", "/", upstream="u")])
    slow = {}
    t = threading.Thread(target=lambda: slow.setdefault("r", request(f, "GET", "/slow?ms=2000")))
    t.start()
    wait_until(lambda: a.stats()["active"] + b.stats()["active"] == 1, what="the slow request")
    busy = a if a.stats()["active"] else b
    idle = b if busy is a else a
    before = idle.stats()["requests"]
    for i in range(10):  # new connections: both workers serve some
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    eq(idle.stats()["requests"] - before, 10, "fast requests on the idle server")
    t.join(10)
    eq(slow["r"].status, 200, "the slow request")


def test_passive_ejection_process_wide():
    "two workers: exactly `failures` 502s eject a server; ejection doubles; /metrics shows it"
    dead = refused_address()
    be = backend()
    f = ferry(workers=2,
              upstreams={"u": servers(dead, be, retries={"attempts": 0},
                                      passive={"failures": 4, "eject_for": "1s",
                                               "max_eject_for": "3s"})},
              routes=[route("all", "/", upstream="u")])
    statuses = [request(f, "GET", "/fast?i=%d" % i).status for i in range(24)]
    eq(statuses.count(502), 4, "502s before the dead server is ejected (all workers count): %r"
       % statuses)
    wait_until(lambda: "ejected for 1000 ms" in f.stderr_text(), what="the ejection warning")
    eq(metric(f, "ferry_upstream_ejections_total", upstream="u", server=dead), 1,
       "ferry_upstream_ejections_total")
    eq(metric(f, "ferry_upstream_server_ejected", upstream="u", server=dead), 1,
       "ferry_upstream_server_ejected while out")
    eq(metric(f, "ferry_upstream_server_ejected", upstream="u", server=be.address), 0,
       "the healthy server's ejected gauge")
    time.sleep(1.2)
    # back in, fails again at once: ejected twice as long
    statuses = [request(f, "GET", "/fast?j=%d" % i).status for i in range(24)]
    eq(statuses.count(502), 4, "502s before the second ejection: %r" % statuses)
    wait_until(lambda: "ejected for 2000 ms" in f.stderr_text(), what="the doubled ejection")
    eq(metric(f, "ferry_upstream_ejections_total", upstream="u", server=dead), 2,
       "ferry_upstream_ejections_total after the second")


def test_never_more_than_half_ejected():
    "both servers of two dead: one is ejected, the other stays in (502s, not an empty upstream)"
    d1, d2 = refused_address(), refused_address()
    f = ferry(workers=1,
              upstreams={"u": servers(d1, d2, retries={"attempts": 0},
                                      passive={"failures": 1, "eject_for": "10s"})},
              routes=[route("all", "/", upstream="u")])
    statuses = [request(f, "GET", "/x%d" % i).status for i in range(6)]
    eq(statuses, [502] * 6, "statuses")
    wait_until(lambda: "not ejected: half" in f.stderr_text(), what="the half cap's warning")
    total = sum(metric(f, "ferry_upstream_server_ejected", upstream="u", server=d)
                for d in (d1, d2))
    eq(total, 1, "servers ejected")


def test_no_client_error_while_one_server_is_healthy():
    "servers refuse, answer 503, reset, die and come back: every GET gets 200 from a healthy one"
    bes = [backend("b%d" % i) for i in range(4)]
    f = ferry(upstreams={"u": servers(*bes, balance="round_robin",
                                      retries={"attempts": 3,
                                               "on": ["connect_error", "reset", 502, 503, 504],
                                               "budget": "100%"},
                                      passive={"failures": 2, "eject_for": "500ms",
                                               "max_eject_for": "500ms"})},
              routes=[route("all", "/", upstream="u")])
    bad = []

    def phase(what, n=40):
        for i in range(n):
            r = request(f, "GET", "/fast?%s=%d" % (what, i))
            check(isinstance(r, Response) and r.status == 200,
                  "%s: request %d: %r (bad servers: %s)" % (what, i, r, bad))

    phase("all-up")
    bes[0].force = 503
    bes[1].force = "reset"
    bad = ["b0 503", "b1 reset"]
    phase("503-and-reset")
    bes[2].stop()
    bad.append("b2 dead")
    phase("one-healthy")
    bes[0].force = None
    bes[1].force = None
    bes[2] = restart(bes[2])
    bad = []
    phase("back")
    time.sleep(0.6)
    before = [b.stats()["requests"] for b in bes]
    phase("recovered", n=40)
    got = [b.stats()["requests"] - before[i] for i, b in enumerate(bes)]
    check(all(g > 0 for g in got), "every server back in service: %r" % got)
    check(metric(f, "ferry_upstream_retries_total", upstream="u") > 0, "retries counted")


def test_retry_budget_counted():
    "budget 20%, budget_min 0: retries of 503s capped near 20% of requests, the rest refused"
    bad, good = backend("bad"), backend("good")
    bad.force = 503
    f = ferry(workers=1,
              upstreams={"u": servers(bad, good, retries={"attempts": 1, "on": [503],
                                                          "budget": "20%", "budget_min": 0})},
              routes=[route("all", "/", upstream="u")])
    n = 100
    statuses = [request(f, "GET", "/fast?i=%d" % i).status for i in range(n)]
    retries = metric(f, "ferry_upstream_retries_total", upstream="u")
    refused = metric(f, "ferry_upstream_retry_budget_exhausted_total", upstream="u")
    log("%d requests: %d retried, %d refused by the budget, %d answered 503"
        % (n, retries, refused, statuses.count(503)))
    eq(retries + refused, bad.stats()["requests"], "every 503 from bad was retried or refused")
    eq(statuses.count(503), refused, "503s answered = retries refused")
    check(15 <= retries <= 21, "retries %d: the budget is 20%% of %d requests" % (retries, n))


def test_total_bounds_backoff():
    "a retry whose backoff would end past timeouts.total is not made; a short backoff is"
    be = backend()
    f = ferry(timeouts={"total": "1s"},
              upstreams={"slow": servers(refused_address(), be, balance="round_robin",
                                         retries={"attempts": 1, "backoff": "5s"}),
                         "quick": servers(refused_address(), be, balance="round_robin",
                                          retries={"attempts": 1, "backoff": "100ms"})},
              routes=[route("slow", "/slow/", upstream="slow"),
                      route("quick", "/quick/", upstream="quick")],
              workers=1)
    t0 = time.monotonic()
    r = request(f, "GET", "/slow/fast")  # round robin starts on the refused server
    dt = time.monotonic() - t0
    eq(r.status, 502, "no retry: its backoff ends past timeouts.total")
    check(dt < 0.9, "answered in %.2fs: it waited" % dt)
    t0 = time.monotonic()
    r = request(f, "GET", "/quick/fast")
    dt = time.monotonic() - t0
    eq(r.status, 200, "retried after its backoff")
    check(dt >= 0.05, "answered in %.3fs: no backoff (at least half of 100ms)" % dt)


def test_client_leaves_during_backoff():
    "a client that leaves while its retry waits out the backoff: 499 logged, Ferry serves on"
    bad, good = backend("bad"), backend("good")
    bad.force = 503
    f = ferry(workers=1,
              upstreams={"u": servers(bad, good, retries={"attempts": 1, "on": [503],
                                                          "backoff": "3s"})},
              routes=[route("all", "/", upstream="u")])
    c = Client(f.port)
    c.send(build_request("GET", "/gone"))
    wait_until(lambda: bad.stats()["requests"] == 1, what="the first try (on bad)")
    time.sleep(0.2)
    c.close()
    f.wait_access(lambda e: e.get("path") == "/gone", what="the abandoned request")
    e = [e for e in f.access_log() if e.get("path") == "/gone"][0]
    eq(e.get("status"), 499, "the abandoned request's status")
    f.assert_alive()
    eq(good.stats()["requests"], 0, "nothing sent to the other server for a client that left")


if __name__ == "__main__":
    run(globals(), budget=120)
