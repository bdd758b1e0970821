#!/usr/bin/env python3
"""Attacks on request bodies around Ferry's own answers, early upstream
answers, pooled connections and retries (issue 12, tried as an attacker):
every answer Ferry writes itself (respond routes of every kind, HEAD, 400,
404, 413, 414, 417, 431, 501, 502 for a refused 101, 503 max_requests) with
a Content-Length body, a chunked body, chunked with trailers or extensions,
an Expect: 100-continue body sent only after the answer, and a request
pipelined behind: no body byte is ever parsed as a request; a lingering
close is bounded in bytes and memory; an early upstream answer never puts
its connection back in the pool; a retry carries the whole body at and
around replay_bytes; a request without a body that is not idempotent
(POST, PATCH) is never sent twice once the server may have acted on it.
~25 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from test_bodies import Reader, answer, raw_backend  # noqa: E402

SMUGGLED = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n"  # answered "ok\n" if ever parsed
BEHIND = b"GET /r204 HTTP/1.1\r\nHost: a\r\n\r\n"    # a request pipelined behind the body
RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"             # SO_LINGER {on, 0}: close with a reset


def bodies():
    """(name, framing headers, wire bytes) of a body that is a request."""
    n = len(SMUGGLED)
    yield "CL", {"Content-Length": str(n)}, SMUGGLED
    yield "chunked", {"Transfer-Encoding": "chunked"}, b"%x\r\n%s\r\n0\r\n\r\n" % (n, SMUGGLED)
    yield ("chunked+trailers", {"Transfer-Encoding": "chunked"},
           b"%x\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (n, SMUGGLED))
    yield ("chunked+extensions", {"Transfer-Encoding": "chunked"},
           b"%x;a=b\r\n%s\r\n0;c\r\n\r\n" % (n, SMUGGLED))
    yield ("chunked in two", {"Transfer-Encoding": "chunked"},
           b"5\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (SMUGGLED[:5], n - 5, SMUGGLED[5:]))


def one_answer_then_close(f, method, path, extra, what, mode, forwarded=False):
    """Sends method path with each body of bodies() and BEHIND after it:
    together with the head (mode "together"), after the answer ("after"),
    or with Expect: 100-continue, the body sent only after an answer, 100
    or final ("continue"). Exactly one final answer, Connection: close, the
    connection closes, nothing after it; unless the body was consumed whole
    (it came with the head and was discarded, or forwarded: it reached the
    upstream), and then only the request behind it may be answered.
    Returns the statuses seen."""
    seen = set()
    head_req = method == "HEAD"
    for bname, hdrs, wire in bodies():
        h = dict(hdrs)
        h.update(extra)
        if mode == "continue":
            h["Expect"] = "100-continue"
        head = build_request(method, path, h)
        label = "%s, %s, body %s" % (what, mode, bname)
        c = Client(f.port, timeout=10)
        try:
            if mode == "together":
                c.send(head + wire + BEHIND)
                r = c.response(8, head_request=head_req)
            else:
                c.send(head)
                r = c.response(8, head_request=head_req)
                try:
                    c.send(wire + BEHIND)
                except OSError:
                    pass  # closed already
                if r.status == 100:  # a chunked body's size is known only as it comes
                    r = c.response(8, head_request=head_req)
            seen.add(r.status)
            consumed = forwarded or mode == "together"
            closed = c.closed(1.0 if consumed else 6.0)
            if consumed and not closed:  # consumed whole: only BEHIND may be answered
                after = parse_responses(c.buf, eof=False)
                check([x.status for x in after] == [204], "%s: after the answer: %r"
                      % (label, c.buf[:120]))
                continue
            check(not c.buf, "%s: bytes after the answer (the body or the request behind it "
                  "was parsed): %r" % (label, c.buf[:120]))
            check(closed, "%s: the connection stayed open with its body unread" % label)
            eq((r.header("Connection") or "").lower(), "close", "%s: Connection" % label)
        finally:
            c.close()
    return seen


def test_own_answers_never_parse_the_body():
    "every answer Ferry writes itself: CL, chunked, trailers, extensions, 100-continue; one answer"
    def switcher(be, s, n):
        Reader(s).head()
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        time.sleep(2)
    switch = raw_backend(switcher, "switch")
    be = backend()
    f = ferry(upstreams={"u": servers(be), "switch": servers(switch)},
              routes=[respond_route("ping", "/ping"),
                      respond_route("r204", "/r204", status=204),
                      respond_route("r304", "/r304", status=304),
                      respond_route("r500", "/r500", status=500, body="down\n"),
                      route("small", "/small", upstream="u", max_body_bytes=10),
                      route("params", "/params", upstream="u", reject_path_params=True),
                      route("switch", "/switch", upstream="switch"),
                      route("u", "/up", upstream="u", strip_prefix="/up")],
              timeouts={"upstream_header": "2s", "client_body": "2s"})
    cases = [
        ("POST", "/nope", {}, "404 no route", {404}),
        ("POST", "/ping", {}, "respond 200", {200}),
        ("HEAD", "/ping", {}, "respond to HEAD", {200}),
        ("POST", "/r204", {}, "respond 204", {204}),
        ("POST", "/r304", {}, "respond 304", {304}),
        ("DELETE", "/r500", {}, "respond 500", {500}),
        ("PUT", "/small/x", {}, "413 max_body_bytes", {413, 408}),
        ("POST", "/params/a;b=c", {}, "400 path parameters", {400}),
        ("POST", "/up/%2F", {}, "400 encoded slash", {400}),
        ("POST", "/up/echo", {"Expect": "x-unknown"}, "417", {417}),
        ("POST", "/up/" + "a" * 9000, {}, "414", {414}),
        ("POST", "/up/echo", {"X-Big": "a" * 40000}, "431", {431}),
        ("GET", "/switch/x", {}, "502 for a 101 nobody asked for", {502}),
    ]
    for method, path, extra, what, want in cases:
        for mode in ("together", "after", "continue"):
            if what == "417" and mode == "continue":
                continue  # the Expect header is the case itself
            seen = one_answer_then_close(f, method, path, extra, what, mode,
                                         forwarded=path.startswith("/switch"))
            check(seen <= want, "%s, %s: statuses %r (want %r)" % (what, mode, seen, want))
    f.assert_alive()


def test_max_requests_503_never_parses_the_body():
    "the 503 of max_requests (answered without a coroutine): one answer, close, nothing parsed"
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping"), respond_route("r204", "/r204", status=204),
                      route("u", "/", upstream="u")],
              max_requests=1, workers=1)
    holder = Client(f.port, timeout=15)
    try:
        holder.send(build_request("GET", "/slow?ms=4000"))
        time.sleep(0.3)
        seen = one_answer_then_close(f, "POST", "/ping", {}, "503 max_requests", "together")
        eq(seen, {503}, "statuses while max_requests is reached")
    finally:
        holder.close()
    f.assert_alive()


def test_linger_bounded_in_bytes_and_memory():
    "a client that sends 1 GiB after a 404 is cut off after ~32 MiB; 500 lingering cost little"
    f = ferry(routes=[respond_route("ping", "/ping")])
    base = f.rss_kb()
    for path, chunked in (("/nope", False), ("/ping", True)):
        s = socket.create_connection(("127.0.0.1", f.port))
        s.settimeout(10)
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (1 << 30)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: a\r\n%s\r\n\r\n" % (path.encode(), framing))
        block = b"x" * 65536
        if chunked:
            block = b"10000\r\n" + block + b"\r\n"
        sent, t0 = 0, time.monotonic()
        try:
            while sent < (1 << 30) and time.monotonic() - t0 < 20:
                s.sendall(block)
                sent += len(block)
        except OSError:
            pass
        dt = time.monotonic() - t0
        s.close()
        # the kernel's buffers on both sides take some more than Ferry's cap
        check(sent < 128 * MiB, "%s: Ferry took %d MiB of a body it does not want"
              % (path, sent // MiB))
        check(dt < 10, "%s: the lingering close lasted %.1f s" % (path, dt))
    socks = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", f.port))
            s.setblocking(False)
            try:
                s.send(b"POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n"
                       + b"y" * 60000)
            except OSError:
                pass
            socks.append(s)
        for _ in range(5):
            for s in socks:
                try:
                    s.send(b"z" * 60000)
                except OSError:
                    pass
        grown = f.rss_kb() - base
        if not is_sanitized():  # ASan's quarantine keeps what was freed
            check(grown < 64 * 1024, "500 lingering connections grew RSS by %d kB" % grown)
    finally:
        for s in socks:
            s.close()
    f.assert_alive()


# --- an early upstream answer: the connection is never pooled ------------------------------------
def test_early_answer_connection_not_pooled():
    "an upstream answering before the body was forwarded: next request on a fresh connection"
    lines, lock = {}, threading.Lock()

    def handler(be, s, n):
        rd = Reader(s)
        with lock:
            lines[n] = []
        while True:
            try:
                line, hdrs = rd.head()
            except EOFError:
                return
            with lock:
                lines[n].append(line)
            if line.split()[1].startswith("/early"):
                # answers at once, keep-alive, and does not read the body: a
                # naive server would parse the body as its next request
                s.sendall(b"HTTP/1.1 401 No\r\nContent-Length: 4\r\n\r\nnope")
                continue
            rd.body(hdrs)
            answer(s, b"fine")
    be = raw_backend(handler)
    f = ferry(upstreams={"u": servers(be)}, routes=[route("u", "/", upstream="u")],
              timeouts={"upstream_header": "3s"})
    expect_response(request(f, "GET", "/warm"), status=200, body="fine")
    c = Client(f.port)
    try:
        c.send(build_request("PUT", "/early", {"Content-Length": str(len(SMUGGLED) + 10)}))
        r = c.response(5)
        eq(r.status, 401, "early answer forwarded")
        try:
            c.send(SMUGGLED + b"x" * 10)
        except OSError:
            pass
        check(c.closed(5), "the client connection stayed open with its body unread")
        check(not c.buf, "bytes after the early answer: %r" % c.buf[:120])
    finally:
        c.close()
    expect_response(request(f, "GET", "/probe"), status=200, body="fine")
    with lock:
        snap = {k: list(v) for k, v in lines.items()}
    for n, ls in snap.items():
        if any(line.startswith("PUT /early") for line in ls):
            eq(ls[-1].split()[:2], ["PUT", "/early"],
               "the connection of the early answer carried another request: %r" % snap)
        for line in ls:
            check(line.split()[1] != "/ping", "the body reached the server as a request: %r"
                  % snap)


# --- retries: the whole body, at and around replay_bytes ----------------------------------------
def test_retry_on_503_replay_boundaries():
    "503 after reading the body (retries on 503): PUT resent whole up to replay_bytes; POST never"
    got, lock = [], threading.Lock()

    def make(name, status):
        def handler(be, s, n):
            rd = Reader(s)
            while True:
                try:
                    line, hdrs = rd.head()
                except EOFError:
                    return
                body = rd.body(hdrs)
                with lock:
                    got.append((name, line.split()[0], body))
                if status == 503:
                    s.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
                else:
                    answer(s, b"len:%d" % len(body))
        return handler
    a = raw_backend(make("a", 503), "a")
    b = raw_backend(make("b", 200), "b")
    f = ferry(upstreams={"u": servers(a, b, retries={"attempts": 1, "on": ["503"],
                                                     "replay_bytes": "1k"})},
              routes=[route("u", "/", upstream="u")])
    cases = [("PUT", 1024, False, True), ("PUT", 1025, False, False),
             ("PUT", 900, True, True),    # framed: 384\r\n ... 0\r\n\r\n = 912 bytes
             ("PUT", 1015, True, False),  # framed: 1027 bytes, over 1k
             ("POST", 10, False, False), ("POST", 0, False, False)]
    for method, size, chunked, retried in cases:
        body = pattern(size)
        hdrs, wire = ({"Transfer-Encoding": "chunked"},
                      b"%x\r\n%s\r\n0\r\n\r\n" % (size, body)) if chunked else \
            ({"Content-Length": str(size)}, body)
        what = "%s %d bytes%s" % (method, size, " chunked" if chunked else "")
        on_a = False
        for _ in range(6):  # until a try starts on a (the balancer's turn)
            with lock:
                del got[:]
            c = Client(f.port)
            try:
                c.send(build_request(method, "/x", hdrs, wire))
                r = c.response(8)
            finally:
                c.close()
            with lock:
                seen = list(got)
            for name, m, b2 in seen:
                eq((m, len(b2), b2 == body), (method, size, True),
                   "%s: what server %s got" % (what, name))
            if seen and seen[0][0] == "a":
                on_a = True
                eq(r.status, 200 if retried else 503, "%s after a's 503" % what)
                eq(len(seen), 2 if retried else 1, "%s: tries %r" % (what, seen))
                break
            eq(r.status, 200, "%s on b" % what)
        check(on_a, "%s: no try started on the failing server" % what)


# --- a request without a body that is not idempotent is sent once --------------------------------
def bodyless_replay(kind):
    """A keep-alive server; the second request on its first connection is
    read whole, then answered per kind (a cut head, an invalid head, or
    nothing) and the connection closes (FIN). Returns how many times the server
    received POST /charge and PATCH /charge (no body each)."""
    got, lock = [], threading.Lock()

    def handler(be, s, n):
        rd = Reader(s)
        k = 0
        while True:
            try:
                line, hdrs = rd.head()
            except EOFError:
                return
            k += 1
            body = rd.body(hdrs)
            with lock:
                got.append(line)
            if n == 1 and k == 2:
                if kind == "partial":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
                elif kind == "invalid":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                return  # closes (a FIN after what was sent)
            answer(s, b"done:" + body)
    counts = {}
    for method in ("POST", "PATCH"):
        del got[:]
        be = raw_backend(handler)
        f = ferry(upstreams={"u": servers(be)}, routes=[route("u", "/", upstream="u")],
                  timeouts={"upstream_header": "3s"})
        c = Client(f.port)
        try:
            expect_response(c.request("GET", "/warm"), status=200)
            c.send(b"%s /charge HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
                   % method.encode())
            c.response(8)
        finally:
            c.close()
        time.sleep(0.2)
        with lock:
            counts[method] = sum(1 for line in got if line.startswith(method + " /charge"))
        be.stop()
        f.stop()
    return counts


def test_bodyless_post_not_replayed_after_partial_response():
    "a POST with no body, answered in part on a reused connection, is not resent"
    eq(bodyless_replay("partial"), {"POST": 1, "PATCH": 1},
       "times the server received a non-idempotent request (it began answering the first)")


def test_bodyless_post_not_replayed_after_invalid_response():
    "a POST with no body, answered invalidly on a reused connection, is not resent"
    eq(bodyless_replay("invalid"), {"POST": 1, "PATCH": 1},
       "times the server received a non-idempotent request (it answered the first)")


def test_bodyless_post_not_replayed_after_silent_close():
    "a POST with no body, read whole then closed unanswered, is not resent (as nginx)"
    eq(bodyless_replay("close"), {"POST": 1, "PATCH": 1},
       "times the server received a non-idempotent request it had read whole")


if __name__ == "__main__":
    run(globals(), budget=150)
