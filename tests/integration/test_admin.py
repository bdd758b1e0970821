#!/usr/bin/env python3
"""The admin listener's limits (issue 12, item 3): an 8 KiB head, no body,
client_header for the whole exchange from accept, at most 64 connections
at once; GET/HEAD on its paths only.
A 16 MiB header line to /healthz is refused early and RSS does not grow by
megabytes; a stalled client is cut after the timeout, and so is one that
trickles its head a byte at a time; 256 clients each holding a nearly full
head do not grow memory by more than 8 MiB; beyond the cap a client is
closed at once while those already in are still answered. An answer is
not lost to bytes the client sends after it (lingering close), and the
linger is bounded. ~20 s."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

CAP = 64  # ADMIN_MAX_CONNS in src/admin.c


def admin_raw(f, data, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        return None, buf
    finally:
        s.close()


def status_of(buf):
    line = buf.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 else None


def setup():
    return ferry(routes=[respond_route("ping", "/ping")], timeouts={"client_header": "1s"})


def test_methods_and_paths():
    f = setup()
    _, b = admin_raw(f, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 200, "GET /healthz")
    _, b = admin_raw(f, b"HEAD /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 200, "HEAD /status")
    _, b = admin_raw(f, b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 405, "POST /healthz")
    check(b"allow: get, head" in b.lower(), "405 without Allow: %r" % b[:300])
    _, b = admin_raw(f, b"DELETE /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 404, "DELETE /nope")
    _, b = admin_raw(f, b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 404, "GET /nope")
    _, b = admin_raw(f, b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                        b"Connection: close\r\n\r\nhello")
    check(status_of(b) in (400, 413), "GET with a body: %r" % b[:200])


def test_answer_survives_unread_bytes():
    "an answer larger than the client's window, to a client that sent more than its request, arrives whole"
    f = setup()
    for i in range(5):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.settimeout(5)
        s.connect(("127.0.0.1", f.admin_port))
        try:
            # bytes after the request that the admin server never reads
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.1)  # the answer fills the window; the server is done writing
            s.sendall(b"GET /status HTTP/1.1\r\n" * 50)
            time.sleep(0.1)
            buf = b""
            try:
                while True:
                    d = s.recv(512)
                    if not d:
                        break
                    buf += d
                    time.sleep(0.001)
            except ConnectionResetError:
                pass
        finally:
            s.close()
        r, _ = parse_response(buf, eof=True)
        check(r is not None and r.status == 200, "GET /metrics lost its answer: %d bytes %r"
              % (len(buf), buf[:80]))
        n = int(r.header("content-length", "-1"))
        eq(len(r.body), n, "metrics body bytes (Content-Length %d)" % n)
        log("   %d bytes" % len(buf))


def test_linger_bounded():
    "after its answer a client that keeps sending is cut within the linger bounds (1 MiB, 2 s)"
    f = setup()
    s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=5)
    sent, t0, cut = 0, time.monotonic(), False
    try:
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n")
        while time.monotonic() - t0 < 6 and sent < 64 << 20:
            try:
                sent += s.send(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            except socket.timeout:
                continue
    finally:
        s.close()
    log("   cut after %.1f s and %d KiB" % (time.monotonic() - t0, sent >> 10))
    check(cut, "still accepting bytes after %.1f s and %d KiB" % (time.monotonic() - t0, sent >> 10))
    check(sent < 16 << 20, "%d KiB taken after the answer" % (sent >> 10))


def test_closed_clients_freed_at_once():
    "a client that closes after its answer is freed at once (the linger ends at its EOF)"
    f = setup()
    fd0 = f.fd_count()
    for _ in range(10):
        f.status()
    f.wait_baseline(fd0, 0, timeout=1.0)


def test_huge_header_line():
    f = setup()
    base = f.rss_kb()
    s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ")
    sent, refused = 0, False
    chunk = b"a" * 65536
    deadline = time.monotonic() + 10
    while sent < 16 << 20 and time.monotonic() < deadline:
        try:
            s.sendall(chunk)
            sent += len(chunk)
        except OSError:
            refused = True
            break
    if not refused:
        # everything fitted in socket buffers: the answer must say no
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        check(status_of(data) in (431, 400, 413, None), "a 16 MiB header line answered %r" % data[:100])
    s.close()
    check(sent < 16 << 20 or not refused, "never refused")
    grown = f.rss_kb() - base
    check(grown < 4096, "RSS grew by %d KiB on a 16 MiB header line (sent %d bytes)" % (grown, sent))
    _, b = admin_raw(f, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    eq(status_of(b), 200, "/healthz afterwards")


def test_stalled_client_cut():
    f = setup()
    s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=8)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
    t0 = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    took = time.monotonic() - t0
    s.close()
    check(took < 6, "a stalled admin client held for %.1fs (client_header 1s)" % took)


def test_many_held_clients():
    f = setup()
    base = f.rss_kb()
    socks = []
    try:
        for _ in range(CAP * 4):
            try:
                s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=2)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 7000)
                socks.append(s)
            except OSError:
                pass
        time.sleep(0.3)
        grown = f.rss_kb() - base
        check(grown < 8192, "RSS grew by %d KiB with %d held admin clients" % (grown, len(socks)))
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: status_of(admin_raw(f, b"GET /healthz HTTP/1.1\r\nHost: a\r\n"
                                              b"Connection: close\r\n\r\n", timeout=2)[1]) == 200,
               timeout=5, what="/healthz after the held clients leave")


def test_trickled_head_cut():
    "a head trickled a byte every 0.3 s is cut at client_header (1 s) from accept, not held"
    f = setup()
    s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=8)
    t0 = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 200
    cut = None
    for byte in head:
        try:
            s.sendall(bytes([byte]))
        except OSError:
            cut = time.monotonic() - t0
            break
        time.sleep(0.3)
        if time.monotonic() - t0 > 8:
            break
    if cut is None:
        s.settimeout(2)
        try:
            data = s.recv(4096)
            cut = time.monotonic() - t0 if not data else None
        except ConnectionResetError:
            cut = time.monotonic() - t0
        except socket.timeout:
            pass
    s.close()
    check(cut is not None and cut < 4, "a trickled admin head was held for %s s (client_header 1s)"
          % ("%.1f" % cut if cut is not None else "8+"))


def test_connection_cap():
    "beyond 64 admin connections a client is closed at once; one already in is still answered"
    f = setup_long()
    held = []
    try:
        for _ in range(CAP):
            s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")  # head not finished
            held.append(s)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", f.admin_port), timeout=3)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            data = extra.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except socket.timeout:
            data = None
        extra.close()
        eq(data, b"", "a client beyond the cap (closed at once, no answer)")
        # One of those already in finishes its head and gets its answer.
        held[0].sendall(b"\r\n")
        held[0].settimeout(3)
        eq(status_of(held[0].recv(4096)), 200, "a held client's /healthz")
    finally:
        for s in held:
            s.close()
    wait_until(lambda: status_of(admin_raw(f, b"GET /healthz HTTP/1.1\r\nHost: a\r\n"
                                              b"Connection: close\r\n\r\n", timeout=2)[1]) == 200,
               timeout=5, what="/healthz once the held clients left")


def setup_long():
    return ferry(routes=[respond_route("ping", "/ping")], timeouts={"client_header": "20s"})


if __name__ == "__main__":
    run(globals(), budget=60)
