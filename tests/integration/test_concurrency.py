#!/usr/bin/env python3
"""Concurrency (issue 5, point 10): while 200 requests wait on a 3-second
backend, a respond route and a fast proxied route each answer in under
500 ms (a held-up loop would cost the 3 s; bench/ measures latency), and the 200 slow requests all finish together (not one after the
other). The slow backend runs as a subprocess so its 200 threads do not
share the test's GIL. ~6 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

N = 200
LIMIT_MS = 500.0  # a loop held up by the waiting requests costs seconds


def one_shot(port, path, timeout=5.0):
    """Connect, send, read one response on a fresh connection; (status, ms)."""
    t0 = time.monotonic()
    c = Client(port, timeout)
    try:
        c.send(build_request("GET", path, {"Connection": "close"}))
        r = c.response(timeout)
    finally:
        c.close()
    return r.status, (time.monotonic() - t0) * 1000


def test_fast_route_not_blocked():
    "200 requests on a 3 s backend; /ping and /fast answer in < 50 ms meanwhile"
    slow = backend_process()
    fast = backend()
    f = ferry(upstreams={"slow": servers(slow), "fast": servers(fast)},
              routes=[respond_route("ping", "/ping", body="pong\n"),
                      route("slow", "/slow", upstream="slow"),
                      route("fast", "/fast", upstream="fast")])
    one_shot(f.port, "/fast")  # warm up
    one_shot(f.port, "/ping")
    t0 = time.monotonic()

    def slow_one(i):
        s = socket.create_connection(("127.0.0.1", f.port), timeout=15)
        try:
            s.sendall(build_request("GET", "/slow?ms=3000&i=%d" % i, {"Connection": "close"}))
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            r, _ = parse_response(buf, eof=True)
            return r.status if r else None
        finally:
            s.close()

    results = {}
    runner = threading.Thread(target=lambda: results.update(r=parallel(N, slow_one, timeout=20)),
                              daemon=True)
    runner.start()
    # wait until (nearly) all 200 are waiting at the backend (its own counters)
    wait_until(lambda: slow.stats()["active"] >= N, timeout=5, interval=0.05,
               what="%d requests waiting at the slow backend" % N)
    samples = {"/ping": [], "/fast": []}
    for _ in range(10):
        for path in samples:
            status, ms = one_shot(f.port, path)
            eq(status, 200, "%s status while the slow requests wait" % path)
            samples[path].append(ms)
    check(time.monotonic() - t0 < 3.0, "sampling ended after the slow requests")
    for path, ms in samples.items():
        ms.sort()
        log("   %s while %d wait: median %.1f ms, p90 %.1f ms, max %.1f ms"
            % (path, N, ms[5], ms[8], ms[-1]))
        check(ms[8] < LIMIT_MS, "%s took %.1f ms (p90 of 10), limit %.0f ms: %r"
              % (path, ms[8], LIMIT_MS, ["%.1f" % x for x in ms]))
    runner.join(20)
    check("r" in results, "the slow requests did not finish")
    elapsed = time.monotonic() - t0
    statuses = [r for r in results["r"]]
    bad = [s for s in statuses if s != 200]
    check(not bad, "%d slow requests failed: %r" % (len(bad), bad[:5]))
    check(elapsed < 6.5, "200 x 3 s requests took %.1fs: not concurrent" % elapsed)
    n = sum(1 for r in slow.requests() if r["mode"] == "slow")
    eq(n, N, "slow requests that reached the backend")


if __name__ == "__main__":
    run(globals(), budget=40)
