#!/usr/bin/env python3
"""The max_connections queue (issue 19, point 3): requests waiting for a
connection slot are served first come, first served. A freed slot goes to
the first waiter; a newcomer (also the next pipelined request of the
connection that freed it) never takes a slot while others wait. Fast."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def served_order(be):
    return [r.query.get("id", ["?"])[0] for r in be.requests]


def test_pipelined_request_queues_behind_waiters():
    "max_connections 1: A1 (slow), then B and C wait; A's pipelined A2 is served after them"
    be = backend()
    # workers: 1 -- max_connections is per worker
    f = ferry(workers=1, timeouts={"upstream_connect": "10s"},
              upstreams={"u": servers(be, max_connections=1)},
              routes=[route("all", "/", upstream="u")])
    a = Client(f.port, timeout=15)
    a.send(build_request("GET", "/slow?ms=600&id=A1") +
           build_request("GET", "/fast?id=A2"))
    check(be.wait_for(lambda b: b.stats()["requests"] >= 1, 5.0), "A1 never reached the backend")
    results = {}

    def one(name):
        results[name] = request(f, "GET", "/fast?id=" + name, timeout=15)
    threads = []
    for name in ("B", "C"):
        t = threading.Thread(target=one, args=(name,), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.15)  # B queues before C
    r1 = a.response(15)
    r2 = a.response(15)
    for t in threads:
        t.join(15)
    a.close()
    eq((r1.status, r2.status), (200, 200), "statuses of A1, A2")
    for name in ("B", "C"):
        check(name in results, "request %s did not finish" % name)
        eq(results[name].status, 200, "status of " + name)
    eq(served_order(be), ["A1", "B", "C", "A2"], "order of service at the backend")
    check(be.stats()["peak_open_connections"] <= 1, "more than one upstream connection at once")


def test_queue_order_many_waiters():
    "max_connections 1: eight requests queued one after another are served in arrival order"
    be = backend()
    f = ferry(workers=1, timeouts={"upstream_connect": "10s"},
              upstreams={"u": servers(be, max_connections=1)},
              routes=[route("all", "/", upstream="u")])
    first = threading.Thread(target=lambda: request(f, "GET", "/slow?ms=500&id=0", timeout=15),
                             daemon=True)
    first.start()
    check(be.wait_for(lambda b: b.stats()["requests"] >= 1, 5.0), "the first request never came")
    res = {}

    def one(i):
        res[i] = request(f, "GET", "/slow?ms=30&id=%d" % i, timeout=20)
    threads = []
    for i in range(1, 9):
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.04)
    for t in threads + [first]:
        t.join(20)
    eq(sorted(res), list(range(1, 9)), "requests finished")
    eq([res[i].status for i in range(1, 9)], [200] * 8, "statuses")
    eq(served_order(be), [str(i) for i in range(9)], "order of service at the backend")


if __name__ == "__main__":
    run(globals())
