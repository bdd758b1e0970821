#!/usr/bin/env python3
"""Slow clients (issue 6, point 5, the timeouts): client_header is absolute
(a head trickled one byte every 50 ms, or not sent at all, is cut at the
deadline, not reset by each byte; a silent connection first waits ~1 s in
the kernel under the default defer_accept); client_body bounds the gap between two
body reads (a body trickled with gaps under it completes, a stall over it
gets 408 at about the deadline after the last byte, and the upstream
connection is dropped); client_send bounds a client that stops reading
(a proxied 64 MiB download and a flood of pipelined answers are cut about
client_send after the stall, descriptors back at baseline). The slowloris
run with slowhttptest is in test_slowloris.py. ~15 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def setup(listener=None, **timeouts):
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping"),
                      route("up", "/up", upstream="u", strip_prefix="/up")],
              timeouts={k: v for k, v in timeouts.items()}, listener=listener)
    return be, f


def baseline_fds(f):
    """Ferry's descriptor count once its worker is fully up (after a request)."""
    expect_response(request(f, "GET", "/ping"), status=200, what="warm-up")
    time.sleep(0.2)
    return f.fd_count()


def closed_at(c, deadline):
    """Reads from Client c until EOF/reset or deadline; returns the time it
    was closed, or None."""
    while time.monotonic() < deadline:
        if c.eof:
            return time.monotonic()
        c._fill(min(deadline, time.monotonic() + 0.02))
    return time.monotonic() if c.eof else None


def test_header_trickled_byte_by_byte():
    "client_header 1s: a head sent one byte every 50 ms is cut at about 1 s (408), not extended"
    be, f = setup(client_header="1s")
    head = b"GET /ping HTTP/1.1\r\nHost: test.local\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        cut = None
        for i in range(len(head)):
            try:
                c.sock.send(head[i:i + 1])
            except OSError:
                cut = time.monotonic()
                break
            c._fill(time.monotonic() + 0.05)
            if c.eof:
                cut = time.monotonic()
                break
            if time.monotonic() - t0 > 4.0:
                break
        check(cut is not None, "a head trickled for %.1fs was not cut (client_header 1s)"
              % (time.monotonic() - t0))
        dt = cut - t0
        check(0.9 <= dt <= 1.6, "trickled head cut after %.2fs, expected about 1 s" % dt)
        rs = parse_responses(c.buf, eof=True)
        check(not rs or rs[0].status == 408, "answer to the trickled head: %r" % rs)
    finally:
        c.close()
    e = f.wait_access(lambda e: e.get("status") == 408, what="the 408 of the trickled head")
    check(e.get("duration_ms", 0) <= 1600, "logged duration %r" % e.get("duration_ms"))
    eq(be.stats()["requests"], 0, "requests forwarded")


def silent_connection_closed_after(listener):
    be, f = setup(listener=listener, client_header="1s")
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        t = closed_at(c, t0 + 5.0)
        check(t is not None, "a silent connection still open after 5 s")
        eq(c.buf, b"", "bytes sent to a silent connection")
        return t - t0
    finally:
        c.close()


def test_silent_connection_cut():
    "client_header 1s, defer_accept: false: a connection that never sends a byte is closed at about 1 s"
    dt = silent_connection_closed_after({"defer_accept": False})
    check(0.9 <= dt <= 1.6, "silent connection closed after %.2fs, expected about 1 s" % dt)


def test_silent_connection_cut_deferred():
    "client_header 1s, defer_accept (default): the kernel holds a silent connection ~1 s, then client_header runs"
    dt = silent_connection_closed_after(None)
    check(1.8 <= dt <= 2.8, "silent connection closed after %.2fs, expected about 2 s "
          "(1 s in the kernel's deferred accept, then client_header)" % dt)


def test_body_gaps_under_client_body():
    "client_body 1s: an 8-byte body sent one byte every 300 ms (2.4 s in all) is accepted whole"
    be, f = setup(client_body="1s")
    body = b"abcdefgh"
    c = Client(f.port)
    try:
        c.send(build_request("POST", "/up/echo", {"Content-Length": str(len(body))}))
        for i in range(len(body)):
            time.sleep(0.3)
            c.send(body[i:i + 1])
        r = c.response(5)
        expect_response(r, status=200, json={"body": body.decode()})
    finally:
        c.close()


def test_body_stall_408():
    "client_body 1s: 5 bytes of 100 then a stall: 408 about 1 s after the last byte, upstream dropped"
    be, f = setup(client_body="1s")
    c = Client(f.port)
    try:
        c.send(build_request("POST", "/up/echo", {"Content-Length": "100"}))
        time.sleep(0.2)
        c.send(b"12345")
        t0 = time.monotonic()
        t = closed_at(c, t0 + 4.0)
        check(t is not None or c.buf, "nothing happened 4 s into a stalled body")
        dt = (t or time.monotonic()) - t0
        rs = parse_responses(c.buf, eof=True)
        check(rs and rs[0].status == 408, "answer to a stalled body: %r" % (rs or c.buf[:200]))
        check(0.9 <= dt <= 1.8, "stalled body cut after %.2fs, expected about 1 s" % dt)
    finally:
        c.close()
    check(wait_until(lambda: be.stats()["open_connections"] == 0, 2.0),
          "the upstream connection of a timed-out body stayed open")


def _drain(sock, stop):
    while not stop.is_set():
        try:
            if not sock.recv(65536):
                return
        except OSError:
            return


def test_client_send_stalled_download():
    "client_send 1s: a client that stops reading a 64 MiB download is cut about 1 s after the stall"
    be, f = setup(client_send="1s")
    fd0 = baseline_fds(f)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", f.port))
    try:
        s.sendall(build_request("GET", "/up/huge?bytes=%d" % (64 * MiB)))
        t0 = time.monotonic()
        e = f.wait_access(lambda e: e.get("status") == 200 and "huge" in (e.get("path") or ""),
                          timeout=6.0, what="the stalled download's log line")
        dt = time.monotonic() - t0
        check(1.0 <= dt <= 3.0, "stalled reader cut after %.2fs (client_send 1s)" % dt)
        check("client_send" in (e.get("error") or ""), "logged error: %r" % e.get("error"))
        # the client's side: what it reads ends (EOF or reset) short of 64 MiB
        s.settimeout(5)
        got = 0
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                got += len(d)
        except OSError:
            pass
        check(got < 32 * MiB, "the client could still read %d bytes" % got)
    finally:
        s.close()
    f.wait_baseline(fd0, 0, timeout=5)


def test_client_send_pipelined_flood():
    "client_send 1s: 40,000 pipelined requests never read: connection cut, Ferry keeps serving"
    be, f = setup(client_send="1s")
    fd0 = baseline_fds(f)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", f.port))
    one = build_request("GET", "/ping")
    stop = threading.Event()
    err = []

    def pump():
        s.settimeout(6)
        try:
            for _ in range(40):
                if stop.is_set():
                    return
                s.sendall(one * 1000)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        gone = wait_until(lambda: f.status()["connections"] == 0 and time.monotonic() - t0 > 0.3,
                          6.0, 0.05)
        dt = time.monotonic() - t0
        check(gone, "a client that never reads its pipelined answers is still connected after 6 s")
        check(dt <= 4.0, "pipelined flood cut after %.2fs" % dt)
        expect_response(request(f, "GET", "/ping"), status=200, what="another client meanwhile")
    finally:
        stop.set()
        s.close()
        t.join(7)
    f.wait_baseline(fd0, 0, timeout=5)


def test_slow_but_steady_reader_not_cut():
    "client_send 1s: a reader taking 256 KiB every 300 ms (gaps < 1 s) gets all 4 MiB"
    be, f = setup(client_send="1s")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", f.port))
    try:
        n = 4 * MiB
        s.sendall(build_request("GET", "/up/huge?bytes=%d" % n, {"Connection": "close"}))
        s.settimeout(5)
        buf = b""
        while True:
            time.sleep(0.3)
            chunk = b""
            while len(chunk) < 256 * 1024:
                d = s.recv(256 * 1024 - len(chunk))
                if not d:
                    break
                chunk += d
            buf += chunk
            if len(chunk) < 256 * 1024:
                break
        r, _ = parse_response(buf, eof=True)
        expect_response(r, status=200)
        eq(len(r.body), n, "bytes received by a slow but steady reader")
    finally:
        s.close()


if __name__ == "__main__":
    run(globals(), budget=60)
