#!/usr/bin/env python3
"""Active health checks (issue 16, point 2): one checker per server for the
process, its verdict followed by every worker: a server failing its checks
gets no requests, every server down is a 503 naming the upstream (or, with
fail_open, they are all used), a server that passes again is back within
(healthy_after + 1) x interval + timeout; changes are logged and exported in
/metrics and /status. Fast (~10 s)."""
import http.client
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from backend import Backend  # noqa: E402

HC = {"path": "/hc/fast", "interval": "200ms", "timeout": "200ms", "healthy_after": 2,
      "unhealthy_after": 2}


def gauge(f, server):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    key = 'ferry_upstream_server_healthy{upstream="u",server="%s"} ' % server
    for line in body.splitlines():
        if line.startswith(key):
            return int(line[len(key):])
    return None


def proxied(b):
    """Requests a backend saw that were not health checks."""
    with b.lock:
        return sum(1 for r in b.requests if not r.target.startswith("/hc/"))


def test_health_checks_route_around_and_recover():
    "a server failing its checks gets nothing; all down: 503 naming the upstream; recovery in time"
    a, b = backend("a"), backend("b")
    f = ferry(upstreams={"u": servers(a, b, retries={"attempts": 0}, health_check=HC)},
              routes=[route("all", "/", upstream="u")])
    wait_until(lambda: gauge(f, a.address) == 1 and gauge(f, b.address) == 1, timeout=5,
               what="both servers up after their first pass")
    check(any(r.header("User-Agent") == "ferry-health-check" for r in a.requests),
          "health checks reach the backend")
    b.force = 503
    wait_until(lambda: gauge(f, b.address) == 0, timeout=5, what="b down")
    wait_until(lambda: "server %s is down" % b.address in f.stderr_text(), what="the log line")
    before = proxied(b)
    for i in range(20):
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    eq(proxied(b) - before, 0, "requests sent to the server that fails its checks")
    a.stop()
    wait_until(lambda: gauge(f, a.address) == 0, timeout=5, what="a down")
    r = request(f, "GET", "/fast")
    expect_response(r, status=503, json={"status": 503,
                                         "error": lambda v: "upstream u" in v})
    st = {s["address"]: s for s in f.status()["upstreams"]["u"]}
    eq((st[a.address]["healthy"], st[b.address]["healthy"]), (False, False), "/status healthy")
    # both come back: requests succeed within (healthy_after + 1) x interval + timeout
    a2 = Backend(port=a.port, name="a2").start()
    from ferrytest import _cleanups
    _cleanups.append(a2.stop)
    b.force = None
    t0 = time.monotonic()
    wait_until(lambda: request(f, "GET", "/fast").status == 200, timeout=5, interval=0.02,
               what="a request served again")
    dt = time.monotonic() - t0
    bound = (2 + 1) * 0.2 + 0.2
    log("served again %.2fs after the servers came back (bound %.1fs)" % (dt, bound))
    check(dt <= bound + 0.5, "recovery took %.2fs, more than %.1fs (+0.5s slack)" % (dt, bound))
    wait_until(lambda: "server %s is up" % b.address in f.stderr_text(), what="the up log line")


def test_fail_open():
    "fail_open: true: every server failing its checks still gets the requests"
    be = backend()
    hc = dict(HC, path="/hc/status?code=404", fail_open=True)
    f = ferry(upstreams={"u": servers(be, health_check=hc)},
              routes=[route("all", "/", upstream="u")])
    time.sleep(0.6)
    eq(gauge(f, be.address), 0, "the server's health gauge")
    expect_response(request(f, "GET", "/fast"), status=200)


def test_new_server_starts_down_without_fail_open():
    "a server whose checks never pass is never used: 503 naming the upstream"
    be = backend()
    hc = dict(HC, path="/hc/status?code=500")
    f = ferry(upstreams={"u": servers(be, health_check=hc)},
              routes=[route("all", "/", upstream="u")])
    for i in range(3):
        expect_response(request(f, "GET", "/fast"), status=503,
                        json={"error": "upstream u: no server is up"})
        time.sleep(0.2)
    eq(proxied(be), 0, "requests proxied to the never-healthy server")


if __name__ == "__main__":
    run(globals(), budget=60)
