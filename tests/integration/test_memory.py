#!/usr/bin/env python3
"""Memory under many idle connections (issue 6, point 8): 10,000 keep-alive
client connections, each after one request, then idle, cost Ferry at most
40 MiB of RSS over its baseline (4 KiB each), hold no coroutine, and a
fresh request still answers in under 10 ms (p50 of 20, p90 under 50; also one on an idle
connection); closing them brings connections back to 0. Raises this
process's RLIMIT_NOFILE to its hard limit (skips if under 10,500). SLOW:
~15 s."""
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

N = 10000
BATCH = 500
RSS_LIMIT_KB = 40 * 1024
REQ = b"GET /ping HTTP/1.1\r\nHost: test.local\r\n\r\n"


def open_batch(port, n):
    """Opens n connections, sends one request on each, reads each answer;
    returns the sockets (kept open, idle)."""
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        for s in socks:
            s.send(REQ)
            sel.register(s, selectors.EVENT_READ, b"")
        pending = len(socks)
        bufs = {}
        deadline = time.monotonic() + 10
        while pending:
            left = deadline - time.monotonic()
            check(left > 0, "%d of %d answers missing after 10 s" % (pending, n))
            for key, _ in sel.select(min(left, 1.0)):
                s = key.fileobj
                d = s.recv(4096)
                check(d, "a connection closed before its answer")
                bufs[s] = bufs.get(s, b"") + d
                r, used = parse_response(bufs[s])
                if r is not None:
                    check(r.status == 200 and used == len(bufs[s]),
                          "answer on a keep-alive connection: %r" % r)
                    sel.unregister(s)
                    pending -= 1
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def fresh_latency(f, n=20):
    out = []
    for _ in range(n):
        r, dt = timed(request, f, "GET", "/ping", timeout=5)
        expect_response(r, status=200)
        out.append(dt)
    return sorted(out)


def test_ten_thousand_idle_connections():
    "10,000 idle keep-alive connections: <= 40 MiB RSS over baseline, no coroutine, fresh request < 10 ms"
    if is_sanitized():
        raise Skip("RSS and latency are meaningless under ASan")
    raise_nofile(N + 500)
    f = ferry(routes=[respond_route("ping", "/ping")],
              timeouts={"client_idle": "120s", "client_header": "120s"})
    for _ in range(50):
        request(f, "GET", "/ping")
    base = f.rss_kb()
    log("   baseline RSS %d KiB" % base)
    socks = []
    try:
        t0 = time.monotonic()
        while len(socks) < N:
            socks += open_batch(f.port, min(BATCH, N - len(socks)))
        log("   %d connections opened and served in %.1f s" % (len(socks), time.monotonic() - t0))
        wait_until(lambda: f.status()["connections"] >= N, 5.0, 0.1,
                   what="ferry to count %d connections" % N)
        time.sleep(0.5)
        st = f.status()
        eq(st["live_coroutines"], 0, "live_coroutines with %d idle connections" % N)
        rss = f.rss_kb()
        grown = rss - base
        log("   RSS %d KiB: +%d KiB for %d connections (%.2f KiB each)"
            % (rss, grown, N, grown / float(N)))
        check(grown <= RSS_LIMIT_KB, "RSS grew %d KiB for %d idle connections (limit %d KiB)"
              % (grown, N, RSS_LIMIT_KB))
        lat = fresh_latency(f)
        p90 = lat[int(len(lat) * 0.9) - 1]
        log("   fresh requests: p50 %.2f ms, p90 %.2f ms, max %.2f ms"
            % (lat[len(lat) // 2] * 1e3, p90 * 1e3, lat[-1] * 1e3))
        # The typical fresh request must answer in under 10 ms. The tail is
        # the Python client's own scheduling when `make check -j2` runs other
        # tests beside this one on a 2-core machine (measured: p50 ~2 ms,
        # p90 up to 12 ms there), so it gets a looser bound.
        p50 = lat[len(lat) // 2]
        check(p50 < 0.010, "a fresh request takes %.1f ms (p50) beside %d idle connections"
              % (p50 * 1e3, N))
        check(p90 < 0.050, "a fresh request takes %.1f ms (p90) beside %d idle connections"
              % (p90 * 1e3, N))
        # one of the idle connections is served as fast
        s = socks[N // 2]
        s.setblocking(True)
        s.settimeout(5)
        t1 = time.monotonic()
        s.sendall(REQ)
        buf = b""
        while True:
            buf += s.recv(4096)
            r, _ = parse_response(buf)
            if r is not None:
                break
        dt = time.monotonic() - t1
        eq(r.status, 200, "request on an idle connection")
        check(dt < 0.010, "a request on one of the idle connections took %.1f ms" % (dt * 1e3))
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: f.status()["connections"] == 0, 10.0, 0.1,
               what="connections back to 0 after closing the %d" % N)
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=90)
