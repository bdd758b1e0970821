#!/usr/bin/env python3
"""A client that leaves while its request waits (issue 19, point 4): the
request is watched while it waits for a max_connections slot or for its
upstream connect; when the client closes, the request stops at once, is
never sent to the server, and the access log says 499. Fast."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def post_and_leave(f, path, after=0.3):
    """Sends a whole POST, then closes the connection after `after` s."""
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(build_request("POST", path, body=b"payload=" + b"x" * 100))
    time.sleep(after)
    s.close()


def test_gone_while_waiting_for_a_slot():
    "max_connections 1 busy: a queued POST whose client leaves never reaches the server (499); the next in line is served"
    be = backend()
    f = ferry(workers=1, timeouts={"upstream_connect": "10s"},
              upstreams={"u": servers(be, max_connections=1)},
              routes=[route("all", "/", upstream="u")])
    slow = threading.Thread(target=lambda: request(f, "GET", "/slow?ms=3000&id=slow", timeout=15),
                            daemon=True)
    slow.start()
    check(be.wait_for(lambda b: b.stats()["requests"] >= 1, 5.0), "the slow request never came")
    t0 = time.monotonic()
    gone = threading.Thread(target=post_and_leave, args=(f, "/echo?id=gone"), daemon=True)
    gone.start()
    time.sleep(0.1)
    res = {}
    after = threading.Thread(target=lambda: res.update(r=request(f, "GET", "/fast?id=after",
                                                                 timeout=15)), daemon=True)
    after.start()
    e = f.wait_access(lambda e: e.get("method") == "POST", timeout=5,
                      what="the abandoned POST")
    eq(e.get("status"), 499, "logged status of the abandoned POST")
    check(time.monotonic() - t0 < 2.5, "499 logged only after the slot freed (%.2fs)"
          % (time.monotonic() - t0))
    for t in (slow, gone, after):
        t.join(15)
    check("r" in res, "the request queued behind did not finish")
    eq(res["r"].status, 200, "status of the request queued behind")
    ids = [r.query.get("id", ["?"])[0] for r in be.requests]
    eq(ids, ["slow", "after"], "requests at the backend")


def blackhole():
    """A listener whose accept queue is full: a connect to it hangs (the
    SYN is dropped). Returns (address, sockets to close)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    held = [ls]
    addr = ls.getsockname()
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(addr)
        except BlockingIOError:
            pass
        held.append(c)
    time.sleep(0.1)
    # the probe must hang: the queue is full
    p = socket.socket()
    p.settimeout(0.3)
    try:
        p.connect(addr)
        hangs = False
    except socket.timeout:
        hangs = True
    except OSError:
        hangs = False
    p.close()
    if not hangs:
        for s in held:
            s.close()
        raise Skip("cannot make a connect hang on this host")
    return "127.0.0.1:%d" % addr[1], held


def test_gone_while_connecting():
    "a POST whose client leaves while the upstream connect hangs is dropped at once (499), not after upstream_connect"
    addr, held = blackhole()
    try:
        f = ferry(workers=1, timeouts={"upstream_connect": "6s"},
                  upstreams={"u": servers(addr)},
                  routes=[route("all", "/", upstream="u")])
        fd_base = f.fd_count()
        t0 = time.monotonic()
        post_and_leave(f, "/echo?id=gone")
        e = f.wait_access(lambda e: e.get("method") == "POST", timeout=8,
                          what="the abandoned POST")
        dt = time.monotonic() - t0
        eq(e.get("status"), 499, "logged status")
        check(dt < 3.0, "499 logged after %.2fs (the connect went on)" % dt)
        wait_until(lambda: f.fd_count() <= fd_base, 3.0)
        check(f.fd_count() <= fd_base, "descriptors left open: %r" % f.fds())
    finally:
        for s in held:
            s.close()


if __name__ == "__main__":
    run(globals())
