#!/usr/bin/env python3
"""Idle connections among many (issue 18, point 1): while a worker has more
than 256 connections, an idle one (silent since its accept, or between
requests) waits in the worker's idle epoll set with no libevent event of
its own (io_park). Holds 400 connections on one worker and checks, through
/proc/PID/fdinfo, that they are armed in that set; then that every way a
parked connection can go is served or closed right: a whole request, a
head split across the park (part, pause, rest), a pipelined pair, a client
that closes while parked, the client_header and client_idle deadlines, and
a SIGTERM drain; and TLS connections parked between requests. ~10 s."""
import os
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from tlscerts import make_pki  # noqa: E402

N = 400  # CONN_PARK_ABOVE is 256
REQ = b"GET /ping HTTP/1.1\r\nHost: test.local\r\n\r\n"
EPOLLIN, EPOLLRDHUP, EPOLLONESHOT = 0x1, 0x2000, 1 << 30


def armed_in_idle_set(f):
    """Sockets armed one-shot for input in an epoll set of ferry's: the
    idle set's parked connections (libevent never uses EPOLLONESHOT)."""
    pid = f.proc.pid
    n = 0
    for fd in os.listdir("/proc/%d/fdinfo" % pid):
        try:
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("tfd:"):
                continue
            ev = int(line.split("events:")[1].split()[0], 16)
            if ev & EPOLLONESHOT and ev & EPOLLIN and ev & EPOLLRDHUP:
                n += 1
    return n


def connect(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def read_response(s, timeout=5.0):
    s.settimeout(timeout)
    buf = b""
    while True:
        r, used = parse_response(buf)
        if r is not None:
            return r, buf[used:]
        d = s.recv(4096)
        check(d, "the connection closed before its answer")
        buf += d


def closed_by_peer(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def one_worker(**kw):
    raise_nofile(N * 2 + 200)
    return ferry(routes=[respond_route("ping", "/ping")], workers=1,
                 listener={"defer_accept": False}, **kw)


def test_parked_connections_served_and_closed():
    "400 connections: parked ones in the idle set; whole, split and pipelined requests, closes"
    f = one_worker(timeouts={"client_idle": "60s", "client_header": "60s"})
    socks = []
    try:
        socks = connect(f.port, N)
        wait_until(lambda: f.status()["connections"] >= N, 5.0, 0.05,
                   what="ferry to count %d connections" % N)
        # Silent: those accepted beyond the first 256 wait in the idle set.
        wait_until(lambda: armed_in_idle_set(f) >= N - 256 - 8, 5.0, 0.05,
                   what="silent connections to wait in the idle set")
        log("   silent: %d armed in the idle set" % armed_in_idle_set(f))
        # One request on each: every connection parks after its answer.
        for s in socks:
            s.sendall(REQ)
        for s in socks:
            r, rest = read_response(s)
            eq(r.status, 200, "first request")
            eq(rest, b"", "bytes after the answer")
        wait_until(lambda: armed_in_idle_set(f) >= N - 8, 5.0, 0.05,
                   what="connections after one request to wait in the idle set")
        log("   after one request: %d armed" % armed_in_idle_set(f))
        eq(f.live_coroutines(), 0, "live coroutines with every connection idle")

        # A head split across the park: part, a pause, the rest.
        split = socks[0:40]
        for s in split:
            s.sendall(REQ[:17])
        time.sleep(0.3)
        for s in split:
            s.sendall(REQ[17:])
        for s in split:
            r, rest = read_response(s)
            eq(r.status, 200, "a head split across the park")
        # Two pipelined requests in one write, on parked connections.
        piped = socks[40:80]
        for s in piped:
            s.sendall(REQ + REQ)
        for s in piped:
            r, rest = read_response(s)
            eq(r.status, 200, "first of a pipelined pair")
            if not rest or parse_response(rest)[0] is None:
                r2, _ = read_response_buf(s, rest)
            else:
                r2 = parse_response(rest)[0]
            eq(r2.status, 200, "second of a pipelined pair")
        # Clients that close while parked: counted out, nothing served.
        gone = socks[80:180]
        for s in gone:
            s.close()
        socks = [s for s in socks if s not in gone]
        wait_until(lambda: f.status()["connections"] == len(socks), 5.0, 0.05,
                   what="connections closed while parked to be counted out")
        # And every connection left (parked again) is served once more.
        wait_until(lambda: armed_in_idle_set(f) >= len(socks) - 8, 5.0, 0.05,
                   what="connections to park again")
        for s in socks:
            s.sendall(REQ)
        for s in socks:
            r, rest = read_response(s)
            eq(r.status, 200, "a request after the park")
        f.assert_alive()
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: f.status()["connections"] == 0, 10.0, 0.05,
               what="connections back to 0")
    f.stop()


def read_response_buf(s, buf, timeout=5.0):
    s.settimeout(timeout)
    while True:
        r, used = parse_response(buf)
        if r is not None:
            return r, buf[used:]
        d = s.recv(4096)
        check(d, "the connection closed before its answer")
        buf += d


def test_deadlines_cut_parked_connections():
    "client_header and client_idle close parked connections (silent and after a request)"
    f = one_worker(timeouts={"client_idle": "1s", "client_header": "1s"})
    socks = []
    try:
        silent = connect(f.port, N // 2)
        used = connect(f.port, N // 2)
        socks = silent + used
        for s in used:
            s.sendall(REQ)
        for s in used:
            r, _ = read_response(s)
            eq(r.status, 200, "first request")
        check(armed_in_idle_set(f) > 0, "no connection waits in the idle set")
        t0 = time.monotonic()
        for s in socks:
            check(closed_by_peer(s, timeout=max(0.1, t0 + 6 - time.monotonic())),
                  "a parked connection outlived its deadline")
        wait_until(lambda: f.status()["connections"] == 0, 5.0, 0.05,
                   what="every connection cut")
        eq(armed_in_idle_set(f), 0, "sockets left in the idle set")
        f.assert_alive()
    finally:
        for s in socks:
            s.close()
    f.stop()


def test_drain_closes_parked_connections():
    "SIGTERM: parked connections are closed at once and ferry exits cleanly"
    f = one_worker(timeouts={"client_idle": "60s", "client_header": "60s"})
    socks = []
    try:
        silent = connect(f.port, N // 2)
        used = connect(f.port, N // 2)
        socks = silent + used
        for s in used:
            s.sendall(REQ)
        for s in used:
            r, _ = read_response(s)
            eq(r.status, 200, "first request")
        wait_until(lambda: armed_in_idle_set(f) >= N // 2 - 8, 5.0, 0.05,
                   what="connections to wait in the idle set")
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        for s in socks:
            check(closed_by_peer(s, timeout=max(0.1, t0 + 5 - time.monotonic())),
                  "a parked connection still open after SIGTERM")
        rc = f.proc.wait(timeout=10)
        eq(rc, 0, "exit status after SIGTERM")
        log("   drained %d connections in %.2f s" % (len(socks), time.monotonic() - t0))
        f.expect_exit = True
    finally:
        for s in socks:
            s.close()
    f.stop()


def test_tls_connections_parked_between_requests():
    "TLS: connections parked after a request are served again, a pipelined pair too"
    p = make_pki(tmpdir())
    cert = p.issue("a-ec", ["a.test"], kind="ec")
    raise_nofile(N * 2 + 200)
    f = ferry(routes=[respond_route("ping", "/ping")], workers=1,
              listener={"defer_accept": False,
                        "tls": {"certificates": [{"cert": cert[0], "key": cert[1]}]}},
              timeouts={"client_idle": "60s", "client_header": "60s"})
    ctx = ssl.create_default_context(cafile=p.ca_cert)
    n = 300
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
            socks.append(ctx.wrap_socket(s, server_hostname="a.test"))
        for s in socks:
            s.sendall(REQ)
        for s in socks:
            r, _ = read_response(s)
            eq(r.status, 200, "first request over TLS")
        wait_until(lambda: armed_in_idle_set(f) >= n - 8, 5.0, 0.05,
                   what="TLS connections to wait in the idle set")
        for i, s in enumerate(socks):
            s.sendall(REQ + REQ if i % 2 else REQ)
        for i, s in enumerate(socks):
            r, rest = read_response(s)
            eq(r.status, 200, "a request over TLS after the park")
            if i % 2:
                r2, _ = read_response_buf(s, rest)
                eq(r2.status, 200, "the second of a pipelined pair over TLS")
        f.assert_alive()
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: f.status()["connections"] == 0, 10.0, 0.05,
               what="connections back to 0")
    f.stop()


if __name__ == "__main__":
    run(globals(), budget=60)
