#!/usr/bin/env python3
"""What an attack review of the client-facing request path (session 8)
found, against the real binary: empty lines (CRLF) before a request line
are ignored as RFC 9112 2.2 asks (a 400 answered to a CRLF sent after a
body reached the client as the answer to its next request); requests
pipelined behind a long answer whose bytes end where the client's input
buffer filled are all answered (the connection stalled until
client_idle, then reset); Ferry's own answers on a cors route carry its
CORS fields and Vary (only 429 and preflights did). ~4 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

CONN_READ_MAX = 128 * 1024  # src/conn.h: what a client connection's input holds


def setup(**kw):
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping", body="pong\n"),
                      route("up", "/up", upstream="u", strip_prefix="/up")], **kw)
    return be, f


def test_empty_lines_before_a_request_ignored():
    "CRLFs before a request line: ignored (new connection, after a body, alone between requests)"
    be, f = setup()
    # A client that ends a length-framed body with a CRLF (old clients do):
    # the CRLF is not a request, and the next request on the connection
    # gets its own answer, not a 400 meant for the CRLF.
    for path in ("/ping", "/up/echo"):
        c = Client(f.port, timeout=5)
        try:
            c.send(build_request("POST", path, body=b"ab") + b"\r\n")
            r = c.response(3)
            eq(r.status, 200, "POST %s with a CRLF after its body" % path)
            c._fill(time.monotonic() + 0.3)
            check(not c.buf and not c.eof, "POST %s: after the answer, unasked bytes %r%s"
                  % (path, c.buf[:80], " and the connection closed" if c.eof else ""))
            r = c.request("GET", "/up/echo?next=1")
            eq(r.status, 200, "the next request after the CRLF (%s)" % path)
            eq(r.json()["target"], "/echo?next=1", "the next request's answer is its own")
        finally:
            c.close()
    # A new connection whose request starts with empty lines.
    res = raw(f, b"\r\n\r\nGET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=3)
    eq([r.status for r in res.responses], [200], "CRLF CRLF then a request: answers")
    # A lone CRLF on an idle keep-alive connection, then a request later.
    c = Client(f.port, timeout=5)
    try:
        eq(c.request("GET", "/ping").status, 200, "first request")
        c.send(b"\r\n")
        c._fill(time.monotonic() + 0.3)
        check(not c.buf and not c.eof, "a lone CRLF: %s"
              % ("the connection closed" if c.eof else "answered %r" % c.buf[:80]))
        eq(c.request("GET", "/ping").status, 200, "a request after the lone CRLF")
    finally:
        c.close()
    # A flood of them costs little and ends in the request behind it.
    cpu0 = cpu_seconds(f.pid)
    c = Client(f.port, timeout=10)
    try:
        c.send(b"\r\n" * (1 << 20) + build_request("GET", "/ping"))
        eq(c.response(10).status, 200, "2 MiB of CRLFs, then a request")
    finally:
        c.close()
    used = cpu_seconds(f.pid) - cpu0
    log("   2 MiB of CRLFs: %.3f s of CPU" % used)
    check(used < 1.0, "2 MiB of CRLFs cost %.2f s of CPU" % used)
    # Behind a long answer (not read for a while) the input fills with
    # them: all dropped (tests/test_h1side.c splits them every way).
    got = pipelined_answers(f.port, build_request("GET", "/up/huge?bytes=30000000"),
                            b"\r\n" * (CONN_READ_MAX // 2) + build_request("GET", "/ping"), 1, 1.0)
    eq(got, 2, "answers to a request behind 128 KiB of CRLFs behind a 30 MB answer")
    # Still strict: a bare LF, or a CR alone, before the request line.
    for junk in (b"\n", b"\r\r\n"):
        res = raw(f, junk + b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n", timeout=3)
        eq([r.status for r in res.responses], [400], "%r before a request" % junk)
    f.assert_alive()


def pipelined_answers(port, first, req, n, pause):
    """Sends first and n copies of req in one go (a thread), reads nothing
    for `pause` seconds, then every answer: returns how many status lines
    came before the server stopped answering for 2 s, closed or reset."""
    s = socket.create_connection(("127.0.0.1", port))
    data = first + req * n
    threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
    time.sleep(pause)
    got, tail, marker = 0, b"", b"HTTP/1.1 "
    s.settimeout(2.0)
    try:
        while got < n + 1:
            d = s.recv(1 << 20)
            if not d:
                break
            got += (tail + d).count(marker)
            tail = (tail + d)[-(len(marker) - 1):]
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return got


def test_pipelined_heads_ending_where_the_input_filled():
    "requests pipelined behind a long answer, ending where the 128 KiB input filled: all answered"
    be, f = setup(timeouts={"client_idle": "10s"}, workers=1)
    # While the first answer (30 MB, not read for a while) goes out, the
    # input fills with the pipelined requests to its 128 KiB and reading
    # pauses; 128-byte requests end exactly there. They are all answered
    # without another wait, and reading must go on for the rest (it did
    # not: the connection stalled until client_idle, then reset).
    head = b"GET /ping HTTP/1.1\r\nHost: a\r\nX-Pad: "
    for size in (128, 256):
        req = head + b"p" * (size - len(head) - 4) + b"\r\n\r\n"
        eq(len(req), size, "request size")
        n = 3 * CONN_READ_MAX // size
        got = pipelined_answers(f.port, build_request("GET", "/up/huge?bytes=30000000"), req, n,
                                1.0)
        eq(got, n + 1, "answers to %d requests of %d bytes behind a 30 MB answer (%d fill the "
           "input)" % (n + 1, size, CONN_READ_MAX // size))
    f.assert_alive()


def test_cors_fields_on_ferrys_own_answers():
    "a cors route's own answers (413, 417, 502, respond) carry Vary and, for an allowed origin, its CORS fields"
    be = backend()
    cors = {"allow_origins": ["https://app.test"], "allow_credentials": True,
            "expose_headers": ["X-Total"]}
    f = ferry(upstreams={"u": servers(be), "dead": servers(refused_address())},
              routes=[route("small", "/small", upstream="u", max_body_bytes=4, cors=cors),
                      respond_route("resp", "/resp", cors=cors),
                      route("dead", "/dead", upstream="dead", cors=cors),
                      route("limited", "/limited", upstream="u", cors=cors,
                            rate_limit={"requests": 1, "per": "1m"}),
                      route("u", "/", upstream="u", cors=cors)], workers=1)
    cases = [("GET", "/echo", None, {}, 200), ("POST", "/small", b"123456", {}, 413),
             ("GET", "/resp", None, {}, 200), ("GET", "/dead", None, {}, 502),
             ("POST", "/echo", b"x", {"Expect": "x-foo"}, 417),
             ("GET", "/limited", None, {}, 200), ("GET", "/limited", None, {}, 429)]
    for origin, allowed in (("https://app.test", True), ("https://evil.test", False)):
        for method, path, body, extra, status in cases:
            if not allowed and path == "/limited":
                continue
            h = dict(extra, Origin=origin)
            r = request(f, method, path, headers=h, body=body)
            what = "%s %s from %s" % (method, path, origin)
            eq(r.status, status, what)
            eq(r.header_all("Vary"), ["Origin"], what + ": Vary")
            if allowed:
                eq(r.header_all("Access-Control-Allow-Origin"), [origin], what + ": ACAO")
                eq(r.header_all("Access-Control-Allow-Credentials"), ["true"], what + ": ACAC")
                eq(r.header_all("Access-Control-Expose-Headers"), ["X-Total"], what + ": ACEH")
            else:
                for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
                             "Access-Control-Expose-Headers"):
                    eq(r.header(name), None, what + ": " + name)
    # A preflight keeps its own fields, nothing twice and no Expose.
    r = request(f, "OPTIONS", "/resp", headers={"Origin": "https://app.test",
                                               "Access-Control-Request-Method": "PUT"})
    eq(r.status, 204, "preflight")
    names = [n.lower() for n, _ in r.headers]
    eq(sorted(set(names)) == sorted(names), True, "preflight fields once each: %r" % names)
    eq(r.header("Access-Control-Expose-Headers"), None, "preflight: no Expose")
    f.assert_alive()


def test_crlfs_alone_do_not_hold_a_connection():
    "CRLFs alone, one every 0.3 s: the connection is closed at client_header, not held for ever"
    be, f = setup(timeouts={"client_header": "1s", "client_idle": "3s"})
    c = Client(f.port, timeout=5)
    try:
        eq(c.request("GET", "/ping").status, 200, "first request")
        t0 = time.monotonic()
        closed = None
        while time.monotonic() - t0 < 6 and closed is None:
            try:
                c.send(b"\r\n")
            except OSError:
                closed = time.monotonic() - t0
                break
            c._fill(time.monotonic() + 0.3)
            if c.eof:
                closed = time.monotonic() - t0
        check(closed is not None and closed < 3.0,
              "closed %s (client_header 1s; client_idle 3s)"
              % ("after %.1f s" % closed if closed is not None else "never within 6 s"))
        check(not c.buf, "nothing answered to CRLFs: %r" % c.buf[:80])
    finally:
        c.close()
    # A CRLF then a request within client_header is served.
    c = Client(f.port, timeout=5)
    try:
        eq(c.request("GET", "/ping").status, 200, "first request")
        c.send(b"\r\n")
        time.sleep(0.3)
        eq(c.request("GET", "/ping").status, 200, "a request 0.3 s after a CRLF")
    finally:
        c.close()
    f.assert_alive()


def test_lowercase_method_refused():
    "a method with a lowercase letter: 400, never routed nor forwarded (a backend would upper-case it)"
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("guard", "/admin", status=403, body="no\n", methods=["GET"]),
                      route("all", "/", upstream="u")])
    for method in ("get", "Get", "head", "pOST"):
        res = raw(f, b"%s /admin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                  % method.encode(), timeout=3)
        eq([r.status for r in res.responses], [400], "%s /admin/x" % method)
        check(b"method not in upper case" in res.responses[0].body,
              "%s: the 400 says why: %r" % (method, res.responses[0].body))
    eq(be.stats()["requests"], 0, "requests that reached the backend")
    eq(request(f, "GET", "/admin/x").status, 403, "GET still meets the guard")
    eq(request(f, "PROPFIND", "/x").status, 200, "an upper-case extension method still passes")
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=60)
