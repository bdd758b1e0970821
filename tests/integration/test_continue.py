#!/usr/bin/env python3
"""Expect: 100-continue (issue 6, point 1): Ferry answers `100 Continue`
itself when the route accepts the request and the client waits for it; a
client that waits is never left hanging (curl with a 10 s expect timeout
finishes in well under it); a body over max_body_bytes announced with
Expect gets its 413 at once, without a 100 and without a byte of it read
or forwarded; an unknown expectation gets 417; an HTTP/1.0 request's
100-continue is ignored (RFC 9110 10.1.1). ~8 s."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def NONEMPTY(v):
    return isinstance(v, str) and len(v) > 0


def setup(**kw):
    be = backend()
    f = ferry(upstreams={"u": servers(be), "dead": servers(refused_address())},
              routes=[respond_route("ping", "/ping"),
                      route("small", "/small", upstream="u", strip_prefix="/small",
                            max_body_bytes=1024),
                      route("dead", "/dead", upstream="dead"),
                      route("up", "/up", upstream="u", strip_prefix="/up")], **kw)
    return be, f


def expect_head(method, path, length, expect="100-continue", extra=None, version="1.1"):
    h = "%s %s HTTP/%s\r\nHost: test.local\r\nContent-Length: %d\r\nExpect: %s\r\n" % (
        method, path, version, length, expect)
    for n, v in (extra or []):
        h += "%s: %s\r\n" % (n, v)
    return (h + "\r\n").encode()


def read_interim(c, timeout):
    """Reads one response head (1xx or final) from Client c, or None on timeout."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in c.buf:
        if c.eof or not c._fill(deadline):
            break
    if b"\r\n\r\n" not in c.buf:
        return None
    if c.buf.startswith(b"HTTP/1.1 1"):
        i = c.buf.index(b"\r\n\r\n") + 4
        head, c.buf = c.buf[:i], c.buf[i:]
        r, _ = parse_response(head)
        return r
    return c.response(timeout)


def test_continue_sent_then_body_forwarded():
    "a proxied POST that waits: 100 Continue within 1 s, then the body reaches the backend whole"
    be, f = setup()
    body = pattern(50000)
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        c.send(expect_head("POST", "/up/echo", len(body)))
        r = read_interim(c, 2.0)
        dt = time.monotonic() - t0
        check(r is not None, "no 100 Continue within 2 s for a client waiting for it (got %r)"
              % c.buf[:200])
        eq(r.status, 100, "first answer to a waiting client")
        check(dt < 1.5, "100 Continue after %.2fs" % dt)
        c.send(body)
        r = c.response(5)
        expect_response(r, status=200, json={"body_len": len(body)}, what="final answer")
        check(r.json()["body"].encode("latin-1") == body, "body altered on the way up")
        # exactly one 100: the backend's own (none here) or Ferry's, never two
        c._fill(time.monotonic() + 0.1)
        check(not c.buf, "bytes after the final answer: %r" % c.buf[:200])
        # the connection stays usable
        expect_response(c.request("GET", "/ping"), status=200, what="next request")
    finally:
        c.close()


def test_continue_for_slow_backend():
    "the 100 does not wait for the backend's answer (slow backend, 1.5 s)"
    be, f = setup()
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        c.send(expect_head("POST", "/up/slow?ms=1500", 10))
        r = read_interim(c, 1.0)
        check(r is not None and r.status == 100,
              "no 100 Continue within 1 s while the backend is slow (got %r)" % (r or c.buf[:200]))
        c.send(b"0123456789")
        r = c.response(5)
        expect_response(r, status=200, body="slow\n")
        check(time.monotonic() - t0 >= 1.4, "final answer before the backend's")
    finally:
        c.close()


def test_body_sent_without_waiting():
    "a client that sends the body at once (no wait) gets its answer, and at most one 100"
    be, f = setup()
    body = b"x" * 3000
    res = raw(f, expect_head("POST", "/up/echo", len(body), extra=[("Connection", "close")]) + body,
              timeout=5)
    finals = [r for r in res.responses if r.status >= 200]
    interim = [r for r in res.responses if r.status < 200]
    check(len(finals) == 1, "answers: %r" % res.responses)
    check(len(interim) <= 1 and all(r.status == 100 for r in interim), "interim: %r" % interim)
    expect_response(finals[0], status=200, json={"body_len": len(body)})


def test_curl_never_waits_for_timeout():
    "curl with --expect100-timeout 10 uploads 200 KiB through Ferry in well under 10 s"
    be, f = setup()
    path = os.path.join(tmpdir(), "upload.bin")
    data = pattern(200 * 1024)
    with open(path, "wb") as fh:
        fh.write(data)
    for url in ("/up/upload", "/ping"):
        t0 = time.monotonic()
        rc, out, err = curl("-H", "Expect: 100-continue", "--expect100-timeout", "10",
                            "--data-binary", "@" + path, f.url(url), "-o", "-",
                            "-w", "\n%{http_code}", timeout=20)
        dt = time.monotonic() - t0
        eq(rc, 0, "curl exit status for %s (%s)" % (url, err))
        check(dt < 3.0, "curl took %.1fs for %s: it waited for a 100 Continue" % (dt, url))
        code = out.rsplit(b"\n", 1)[-1]
        eq(code, b"200", "status for %s" % url)
    eq(be.last().sha256, sha256(data), "body received by the backend")


def test_413_without_reading():
    "Expect with a Content-Length over max_body_bytes: 413 at once, no 100, nothing forwarded"
    be, f = setup()
    before = be.stats()["requests"]
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        c.send(expect_head("POST", "/small/echo", 1 << 30))
        r = read_interim(c, 2.0)
        dt = time.monotonic() - t0
        check(r is not None, "no answer within 2 s to an oversized body with Expect")
        check(r.status != 100, "a 100 Continue was sent for a body that will be refused")
        expect_response(r, status=413, json={"status": 413, "error": NONEMPTY, "request_id": NONEMPTY})
        check(dt < 1.5, "413 after %.2fs" % dt)
        expect_closed(c, 4.0, "the connection after the 413")
    finally:
        c.close()
    eq(be.stats()["requests"] - before, 0, "requests forwarded to the backend")


def test_413_global_limit():
    "limits.max_body_bytes 2 KiB: Expect and 10 KiB: 413 without a 100"
    be, f = setup(limits={"max_body_bytes": 2048})
    res = raw(f, expect_head("PUT", "/up/echo", 10240), timeout=3)
    check(res.responses, "no answer (%s, %r)" % (res.how, res.data[:200]))
    check(all(r.status != 100 for r in res.responses), "100 sent: %r" % res.responses)
    expect_response(res.responses[0], status=413)
    eq(be.stats()["requests"], 0, "requests forwarded to the backend")


def test_417_unknown_expectation():
    "an unknown expectation: 417 JSON, nothing forwarded; with a body, the connection closes"
    be, f = setup()
    for path in ("/up/echo", "/ping"):
        c = Client(f.port)
        try:
            c.send(expect_head("POST", path, 5, expect="something-else"))
            r = read_interim(c, 2.0)
            check(r is not None, "no answer to an unknown expectation on %s" % path)
            expect_response(r, status=417, json={"status": 417, "request_id": NONEMPTY},
                            what="answer on %s" % path)
            expect_closed(c, 4.0, "the connection after a 417 with an unread body")
        finally:
            c.close()
    # without a body the connection may stay open; the answer is still 417
    c = Client(f.port)
    try:
        r = c.request("GET", "/up/echo", headers={"Expect": "x-unknown"})
        expect_response(r, status=417)
    finally:
        c.close()
    eq(be.stats()["requests"], 0, "requests forwarded to the backend")


def test_no_continue_when_refused_or_unrouted():
    "Expect on a 404 or an unreachable upstream: the final error at once, no 100"
    be, f = setup()
    for path, status in (("/nowhere", 404), ("/dead/x", 502)):
        c = Client(f.port)
        try:
            c.send(expect_head("POST", path, 100))
            r = read_interim(c, 3.0)
            check(r is not None, "no answer for %s with Expect" % path)
            check(r.status != 100 or status == 502,
                  "100 Continue sent for a request Ferry refuses (%s)" % path)
            if r.status == 100:  # allowed only when the body might still be needed
                r = read_interim(c, 3.0)
            expect_response(r, status=status, what="answer for %s" % path)
        finally:
            c.close()


def test_http10_expect_ignored():
    "HTTP/1.0 with Expect: 100-continue: ignored (no 100, no 417), the body is read and forwarded"
    be, f = setup()
    c = Client(f.port)
    try:
        c.send(expect_head("POST", "/up/echo", 5, version="1.0"))
        time.sleep(0.5)
        c._fill(time.monotonic() + 0.1)
        check(not c.buf.startswith(b"HTTP/1.1 100"),
              "a 100 Continue was sent to an HTTP/1.0 client: %r" % c.buf[:100])
        c.send(b"hello")
        r = read_interim(c, 3.0)
        check(r is not None, "no answer to an HTTP/1.0 request with Expect")
        check(r.status != 100, "a 100 Continue was sent to an HTTP/1.0 client")
        expect_response(r, status=200, json={"body": "hello"})
    finally:
        c.close()


if __name__ == "__main__":
    run(globals(), budget=40)
