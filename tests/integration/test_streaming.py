#!/usr/bin/env python3
"""Streaming with backpressure (issue 5, point 5): 100 MiB download and
upload with ferry's RSS growing < 4 MiB (sampled from /proc/PID/status every
20 ms; skipped under ASan), chunked both ways re-framed correctly, a client
reading at 1 MiB/s and a backend reading at 1 MiB/s without ferry buffering.
SLOW (~25 s)."""
import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

RSS_LIMIT_KB = 4 * 1024
BIG = 100 * MiB


class RssSampler:
    """Samples ferry's VmRSS while a transfer runs."""

    def __init__(self, f):
        self.f = f
        self.base = f.rss_kb()
        self.peak = self.base
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.f.rss_kb())
            except Exception:
                return
            time.sleep(0.02)

    def check(self, what):
        self.stop.set()
        self.t.join(2)
        growth = self.peak - self.base
        log("   %s: RSS %d kB -> peak %d kB (+%d kB)" % (what, self.base, self.peak, growth))
        if is_sanitized():
            log("   (ASan build: RSS limit not checked)")
            return
        check(growth < RSS_LIMIT_KB, "%s: ferry's RSS grew by %d kB (limit %d kB)"
              % (what, growth, RSS_LIMIT_KB))


def setup():
    be = backend()
    f = ferry(limits={"max_body_bytes": 0},
              timeouts={"upstream_read": "30s", "upstream_send": "30s", "client_body": "30s",
                        "client_send": "30s"},
              upstreams={"u": servers(be)}, routes=[route("all", "/", upstream="u")])
    # warm up: stacks, pools and buffers reach their steady size first
    for path in ("/huge?bytes=4194304", "/huge?bytes=4194304&chunked=1"):
        expect_response(request(f, "GET", path), status=200)
    expect_response(request(f, "POST", "/upload", body=b"x" * 4 * MiB), status=200)
    time.sleep(0.2)
    return be, f


def download(f, path, expect_len, rate=None, timeout=60):
    """GETs path on a raw socket, hashing the body as it comes; rate limits
    reading (bytes/s). Returns (Response head, body length, sha256)."""
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        s.sendall(build_request("GET", path, {"Connection": "close"}))
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                d = s.recv(65536)
            except socket.timeout:
                raise Fail("GET %s: no response head within 10s" % path)
            check(d, "connection closed before the head")
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head, _ = parse_response(buf[:i] + b"", eof=False, head_request=True)
        body = buf[i:]
        h = hashlib.sha256()
        raw_len = 0
        chunked = "chunked" in (head.header("Transfer-Encoding") or "").lower()
        spool = bytearray()
        t0 = time.monotonic()
        deadline = t0 + timeout

        def eat(d):
            nonlocal raw_len
            raw_len += len(d)
            if chunked:
                spool.extend(d)
            else:
                h.update(d)
        eat(body)
        while time.monotonic() < deadline:
            if rate:
                ahead = raw_len / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                d = s.recv(65536 if not rate else 16384)
            except socket.timeout:
                raise Fail("GET %s: body stalled for 10s after %d bytes" % (path, raw_len))
            if not d:
                break
            eat(d)
            if not chunked and raw_len >= expect_len:
                break
        if chunked:
            r, _ = parse_response(head.head_raw + bytes(spool), eof=True)
            check(r.complete, "chunked body incomplete (%d raw bytes)" % raw_len)
            return head, len(r.body), hashlib.sha256(r.body).hexdigest()
        return head, raw_len, h.hexdigest()
    finally:
        s.close()


def send_body(c, block, count, budget):
    """Sends block count times within budget seconds, or fails."""
    c.sock.settimeout(10)
    deadline = time.monotonic() + budget
    for i in range(count):
        try:
            c.sock.sendall(block)
        except socket.timeout:
            raise Fail("request body stalled for 10s after %d bytes" % (i * len(block)))
        except OSError as e:
            raise Fail("request body cut after %d bytes: %s" % (i * len(block), e))
        check(time.monotonic() < deadline, "request body not sent within %ds" % budget)


def pattern_sha(n):
    h = hashlib.sha256()
    block = pattern(65536)
    for _ in range(n // 65536):
        h.update(block)
    h.update(block[:n % 65536])
    return h.hexdigest()


def test_download_100mib():
    "a 100 MiB download passes with ferry's RSS growing < 4 MiB"
    be, f = setup()
    rss = RssSampler(f)
    (head, n, digest), dt = timed(download, f, "/huge?bytes=%d" % BIG, BIG)
    rss.check("100 MiB download")
    eq(head.status, 200, "status")
    eq(n, BIG, "bytes received")
    eq(digest, pattern_sha(BIG), "sha256 of the body")
    log("   %.1f MiB/s" % (BIG / MiB / dt))


def test_upload_100mib():
    "a 100 MiB upload passes with ferry's RSS growing < 4 MiB, body intact"
    be, f = setup()
    rss = RssSampler(f)
    c = Client(f.port, timeout=60)
    try:
        c.send(build_request("POST", "/upload", {"Content-Length": str(BIG)}))
        send_body(c, pattern(MiB), BIG // MiB, 60)
        r = c.response(60)
    finally:
        c.close()
    rss.check("100 MiB upload")
    expect_response(r, status=200, json={"bytes": BIG, "sha256": pattern_sha(BIG)})


def test_chunked_download():
    "a chunked response is re-framed correctly (small exact body and 10 MiB)"
    be, f = setup()
    r = request(f, "GET", "/chunked?n=5&size=7")
    expect_response(r, status=200, body=pattern(35))
    head, n, digest = download(f, "/huge?bytes=%d&chunked=1" % (10 * MiB), 10 * MiB)
    eq((n, digest), (10 * MiB, pattern_sha(10 * MiB)), "10 MiB chunked body (length, sha256)")


def test_chunked_upload():
    "a chunked request body of odd-sized chunks reaches the backend intact"
    be, f = setup()
    data = pattern(3 * MiB + 12345)
    body = bytearray()
    pos, sizes = 0, [1, 10, 4096, 65536, 100000, 777777]
    i = 0
    while pos < len(data):
        k = min(sizes[i % len(sizes)], len(data) - pos)
        body += b"%x\r\n" % k + data[pos:pos + k] + b"\r\n"
        pos += k
        i += 1
    body += b"0\r\n\r\n"
    c = Client(f.port, timeout=20)
    try:
        c.send(build_request("POST", "/upload", {"Transfer-Encoding": "chunked"}, bytes(body)))
        r = c.response(20)
    finally:
        c.close()
    expect_response(r, status=200, json={"bytes": len(data), "sha256": sha256(data)})
    # small body echoed: the backend sees one framing header and the exact bytes
    c = Client(f.port)
    try:
        c.send(build_request("POST", "/echo", {"Transfer-Encoding": "chunked"},
                             b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"))
        r = c.response(5)
    finally:
        c.close()
    expect_response(r, status=200, json={"body": "abcde", "body_len": 5})


def test_slow_reader():
    "a client reading at 1 MiB/s: 6 MiB pass, ferry's RSS grows < 4 MiB"
    be, f = setup()
    rss = RssSampler(f)
    n = 6 * MiB
    (head, got, digest), dt = timed(download, f, "/huge?bytes=%d" % n, n, rate=MiB, timeout=30)
    rss.check("slow reader")
    eq((got, digest), (n, pattern_sha(n)), "slowly read body (length, sha256)")
    check(dt >= 4.0, "6 MiB read in %.1fs: the rate limit did not hold" % dt)


def test_slow_backend_reader():
    "a backend reading at 1 MiB/s: a 6 MiB upload passes, ferry's RSS grows < 4 MiB"
    be, f = setup()
    rss = RssSampler(f)
    n = 6 * MiB
    c = Client(f.port, timeout=30)
    try:
        c.send(build_request("POST", "/upload?rate=%d" % MiB, {"Content-Length": str(n)}))
        send_body(c, pattern(MiB), n // MiB, 30)
        r = c.response(30)
    finally:
        c.close()
    rss.check("slow backend reader")
    expect_response(r, status=200, json={"bytes": n, "sha256": pattern_sha(n)})


if __name__ == "__main__":
    run(globals(), budget=120)
