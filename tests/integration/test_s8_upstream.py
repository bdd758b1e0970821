#!/usr/bin/env python3
"""Upstream and policy side under an operator's reloads and a hostile
upstream (session 8 review): what earlier reviews did not cover. Fast."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def test_reload_raising_max_connections_frees_the_queue():
    "max_connections 1 -> 8 by a reload: requests waiting in line get a connection at once"
    be = backend()
    cfg = {"timeouts": {"upstream_connect": "2s"},
           "routes": [route("all", "/", upstream="u")]}
    # workers: 1 -- max_connections is per worker
    f = ferry(workers=1, upstreams={"u": servers(be, max_connections=1)}, **cfg)
    res = {}

    def one(i):
        res[i] = request(f, "GET", "/slow?ms=1200&id=%d" % i, timeout=10)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.03)
    check(be.wait_for(lambda b: b.stats()["requests"] >= 1, 3.0), "no request reached the backend")
    time.sleep(0.1)
    eq(be.stats()["active"], 1, "requests at the backend before the reload (max_connections 1)")
    f.reload(dict(cfg, workers=1, upstreams={"u": servers(be, max_connections=8)}))
    # The three that waited in line are served now, not one at a time
    # (which would leave the last two past upstream_connect: 503).
    check(be.wait_for(lambda b: b.stats()["active"] >= 4, 1.0),
          "the queued requests did not reach the backend after max_connections went up "
          "(active %d)" % be.stats()["active"])
    for t in threads:
        t.join(10)
    eq(sorted(res), [0, 1, 2, 3], "requests finished")
    eq([res[i].status for i in range(4)], [200] * 4, "statuses")


def test_reload_lowering_max_connections_holds_the_new_limit():
    "max_connections 4 -> 1 by a reload while 4 are busy and 2 wait: never above 1 again once drained"
    be = backend()
    cfg = {"timeouts": {"upstream_connect": "5s"},
           "routes": [route("all", "/", upstream="u")]}
    f = ferry(workers=1, upstreams={"u": servers(be, max_connections=4)}, **cfg)
    res = {}

    def one(i, ms):
        res[i] = request(f, "GET", "/slow?ms=%d&id=%d" % (ms, i), timeout=15)
    threads = [threading.Thread(target=one, args=(i, 700), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    check(be.wait_for(lambda b: b.stats()["active"] >= 4, 3.0), "four requests not at the backend")
    f.reload(dict(cfg, workers=1, upstreams={"u": servers(be, max_connections=1)}))
    more = [threading.Thread(target=one, args=(i, 300), daemon=True) for i in range(4, 7)]
    for t in more:
        t.start()
        time.sleep(0.03)
    for t in threads + more:
        t.join(15)
    eq(sorted(res), list(range(7)), "requests finished")
    eq([res[i].status for i in range(7)], [200] * 7, "statuses")
    late = sorted((r for r in be.requests if r.query.get("id", ["?"])[0] in ("4", "5", "6")),
                  key=lambda r: r.t_start)
    eq(len(late), 3, "requests that came after the reload")
    for a, b in zip(late, late[1:]):
        check(b.t_start >= a.t_end - 0.01,
              "two requests at the backend at once under max_connections 1 (%s and %s)"
              % (a.target, b.target))

if __name__ == "__main__":
    run(globals())
