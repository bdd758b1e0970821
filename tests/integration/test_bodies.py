#!/usr/bin/env python3
"""Request bodies around Ferry's own answers (issue 12): no request body is
ever parsed as a request, whatever way the upstream exchange ends early
(refused, closed after the head, an invalid head, a stall, no
max_connections slot), with Content-Length, chunked or no body, the body
sent with the head or after the answer; a body that is itself a request,
or the unterminated prefix of one, is never answered. Retries carry the
whole body (replay buffer) or do not happen. A response head larger than
the upstream read cap is a 502, never a hang. ~25 s."""
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

SMUGGLED = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n"  # answered "ok" if ever parsed
PREFIX = b"GET /ping HTTP/1.1\r\nX-Ignore: x"         # an unterminated head


# --- raw backends --------------------------------------------------------------------------
class Raw:
    """A backend that hands each accepted connection to handler(server, sock,
    index) in its own thread (index: 1-based connection count). Closed after
    the test."""

    def __init__(self, handler, name="raw"):
        self.handler = handler
        self.name = name
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.conns = 0
        self.bodies = []  # complete bodies received (handlers append)
        self.socks = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                n = self.conns
                self.socks.append(s)
            threading.Thread(target=self._run, args=(s, n), daemon=True).start()

    def _run(self, s, n):
        try:
            s.settimeout(10)
            self.handler(self, s, n)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def raw_backend(handler, name="raw"):
    b = Raw(handler, name)
    import ferrytest
    ferrytest._cleanups.append(b.stop)
    return b


class Reader:
    """Buffered reads on a backend socket."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        h = self.until(b"\r\n\r\n").decode("latin-1")
        lines = h.split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        return lines[0], hdrs

    def body(self, hdrs, stop_after=None):
        """The whole body (Content-Length or chunked); stop_after: return
        None after that many body bytes were read (the rest unread)."""
        if "chunked" in hdrs.get("transfer-encoding", ""):
            out = b""
            while True:
                size = int(self.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self.until(b"\r\n") != b"\r\n":
                        pass
                    return out
                out += self.exact(size)
                self.exact(2)
                if stop_after is not None and len(out) >= stop_after:
                    return None
        n = int(hdrs.get("content-length", "0"))
        if stop_after is not None and n > stop_after:
            self.exact(stop_after)
            return None
        return self.exact(n)


def answer(sock, body, close=False):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                 % (len(body), b"Connection: close\r\n" if close else b"", body))


def h_close_after_head(be, s, n):
    Reader(s).head()
    s.close()


def h_garbage(be, s, n):
    Reader(s).head()
    s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    s.settimeout(3)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def h_stall(be, s, n):
    time.sleep(8)  # never reads: Ferry's upstream_send passes


# --- the client side -----------------------------------------------------------------------
def framed(body, chunked):
    if not chunked:
        return {"Content-Length": str(len(body))}, body
    return {"Transfer-Encoding": "chunked"}, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def smuggle_once(f, path, body, chunked, split, what, want):
    """Sends a POST whose body is `body`, with the head (split: the body
    only after the first answer arrived) and checks that exactly one answer
    (want) came. A body sent after the answer is never read: the answer
    says Connection: close and the connection closes. A body that came
    whole with the head was forwarded or discarded: the connection may stay,
    and then its next request is answered, alone."""
    hdrs, wire = framed(body, chunked)
    head = build_request("POST", path, hdrs)
    c = Client(f.port, timeout=10)
    try:
        if split:
            c.send(head)
            r = c.response(8)
            try:
                c.send(wire)
                if body is PREFIX or body.endswith(b"x"):
                    c.send(b"GET /up/echo HTTP/1.1\r\nHost: b\r\n\r\n")
            except OSError:
                pass  # closed already: what we want
        else:
            c.send(head + wire)
            r = c.response(8)
        eq(r.status, want, "%s: status" % what)
        closed = c.closed(0.3 if not split else 6.0)
        check(not c.buf, "%s: bytes after the answer (the body was parsed as a request): %r"
              % (what, c.buf[:200]))
        if not split and not closed:
            # the body came whole with the head, and was forwarded or
            # discarded: the connection carries the next request, alone
            check((r.header("Connection") or "").lower() != "close",
                  "%s: open after Connection: close" % what)
            r2 = c.request("GET", "/ping?next=1", timeout=5)
            eq(r2.status, 200, "%s: the next request on the connection" % what)
            c._fill(time.monotonic() + 0.3)
            check(not c.buf, "%s: bytes after the next answer: %r" % (what, c.buf[:200]))
            return
        check(closed, "%s: the connection was kept open with its body unread" % what)
        eq((r.header("Connection") or "").lower(), "close", "%s: Connection header" % what)
    finally:
        c.close()


def setup_smuggle():
    be = backend()
    closer = raw_backend(h_close_after_head, "closer")
    garbage = raw_backend(h_garbage, "garbage")
    stall = raw_backend(h_stall, "stall")
    f = ferry(workers=1,  # busy slots are per worker
              upstreams={"u": servers(be), "dead": servers(refused_address()),
                         "closer": servers(closer), "garbage": servers(garbage),
                         "stall": servers(stall),
                         "busy": servers(be, max_connections=1)},
              routes=[respond_route("ping", "/ping"),
                      route("up", "/up", upstream="u", strip_prefix="/up"),
                      route("dead", "/dead", upstream="dead"),
                      route("closer", "/closer", upstream="closer"),
                      route("garbage", "/garbage", upstream="garbage"),
                      route("stall", "/stall", upstream="stall"),
                      route("busy", "/busy", upstream="busy", strip_prefix="/busy")],
              timeouts={"upstream_connect": "400ms", "upstream_send": "500ms",
                        "upstream_header": "5s"},
              limits={"max_body_bytes": "64m"})
    return be, f


def occupy_busy(f):
    """Holds the one max_connections slot of /busy for ~3 s."""
    c = Client(f.port, timeout=10)
    c.send(build_request("GET", "/busy/slow?ms=3000"))
    time.sleep(0.3)
    return c


def test_no_body_keeps_connection():
    "a request without a body answered 502 by Ferry keeps its connection (nothing unread)"
    be, f = setup_smuggle()
    c = Client(f.port)
    try:
        expect_response(c.request("GET", "/dead/x"), status=502, json={"status": 502})
        expect_response(c.request("GET", "/ping"), status=200, body="ok\n")
    finally:
        c.close()


def test_arrived_body_discarded_keeps_connection():
    "404, respond route, 502: a body that came whole with the head is discarded and the connection kept"
    be, f = setup_smuggle()
    for path, want in (("/nope", 404), ("/ping", 200), ("/dead/x", 502)):
        for chunked in (False, True):
            for body in (b"hello", SMUGGLED, PREFIX):
                what = "%s %s %r" % (path, "chunked" if chunked else "CL", body[:12])
                hdrs, wire = framed(body, chunked)
                c = Client(f.port, timeout=10)
                try:
                    # the body and a next request, in one packet
                    c.send(build_request("POST", path, hdrs) + wire
                           + build_request("GET", "/ping?next=1"))
                    r = c.response(8)
                    eq(r.status, want, what + ": status")
                    check((r.header("Connection") or "").lower() != "close",
                          what + ": Connection: close for a body that was all there")
                    r2 = c.response(5)
                    eq((r2.status, r2.body), (200, b"ok\n"), what + ": the next request")
                    c._fill(time.monotonic() + 0.3)
                    check(not c.buf, "%s: a third answer (the body was parsed): %r"
                          % (what, c.buf[:200]))
                finally:
                    c.close()
    # a body that has not all arrived is not waited for: the answer closes
    c = Client(f.port, timeout=10)
    try:
        c.send(build_request("POST", "/nope", {"Content-Length": "100"}) + b"12345")
        r = c.response(8)
        eq(r.status, 404, "partial body: status")
        eq((r.header("Connection") or "").lower(), "close", "partial body: Connection")
        check(c.closed(6.0), "partial body: the connection stayed open")
    finally:
        c.close()
    # a broken chunked body is not skipped over: the answer closes
    c = Client(f.port, timeout=10)
    try:
        c.send(build_request("POST", "/nope", {"Transfer-Encoding": "chunked"})
               + b"zz\r\n" + SMUGGLED)
        r = c.response(8)
        eq(r.status, 404, "broken chunk: status")
        check(c.closed(6.0), "broken chunk: the connection stayed open")
        check(not c.buf.startswith(b"HTTP/1.1 200"), "broken chunk: the body was parsed")
    finally:
        c.close()


def test_body_never_parsed_after_failure():
    "refused, closed, garbage, busy: a body that is a request is never answered, the client closes"
    be, f = setup_smuggle()
    kinds = [("/dead/x", 502), ("/closer/x", 502), ("/garbage/x", 502), ("/busy/x", 503)]
    for path, want in kinds:
        for chunked in (False, True):
            for split in (False, True):
                for body in (SMUGGLED, PREFIX):
                    what = "%s %s %s %s" % (path, "chunked" if chunked else "CL",
                                            "split" if split else "together",
                                            "prefix" if body is PREFIX else "request")
                    holder = occupy_busy(f) if path == "/busy/x" else None
                    try:
                        smuggle_once(f, path, body, chunked, split, what, want)
                    finally:
                        if holder:
                            holder.close()
    f.assert_alive()


def test_stall_body_never_parsed():
    "an upstream that stops reading (upstream_send): 504, the rest of the body is never a request"
    be, f = setup_smuggle()
    for chunked in (False, True):
        body = SMUGGLED * (24 * MiB // len(SMUGGLED))
        if chunked:  # chunks of 64 KiB, each holding requests
            hdrs, step = {"Transfer-Encoding": "chunked"}, 65536
            wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                            for i in range(0, len(body), step)) + b"0\r\n\r\n"
        else:
            hdrs, wire = {"Content-Length": str(len(body))}, body
        c = Client(f.port, timeout=15)
        stop = threading.Event()
        try:
            c.send(build_request("POST", "/stall/x", hdrs))

            def pump():
                view = memoryview(wire)
                c.sock.settimeout(8)
                try:
                    for i in range(0, len(wire), 65536):
                        if stop.is_set():
                            return
                        c.sock.sendall(view[i:i + 65536])
                except OSError:
                    pass
            t = threading.Thread(target=pump, daemon=True)
            t.start()
            r = c.response(10)
            eq(r.status, 504, "stalled upstream: status")
            closed = c.closed(6.0)
            check(not c.buf, "bytes after the 504 (the body was parsed as a request): %r"
                  % c.buf[:200])
            check(closed, "the connection was kept open with its body unread")
            stop.set()
            t.join(10)
        finally:
            c.close()


def test_property_error_paths():
    "random bodies, framings and split points over every early end: no second answer, ever"
    be, f = setup_smuggle()
    rnd = random.Random(12)
    kinds = [("/dead/x", 502), ("/closer/x", 502), ("/garbage/x", 502)]
    for i in range(24):
        path, want = kinds[i % len(kinds)]
        chunked = rnd.random() < 0.5
        pad = b"y" * rnd.randrange(0, 3000)
        body = pad + SMUGGLED * rnd.randrange(1, 4)
        split = rnd.random() < 0.5
        smuggle_once(f, path, body, chunked, split, "case %d %s" % (i, path), want)
    # and without a body: the connection may stay, no extra answer either
    for path, want in kinds + [("/busy/x", 503)]:
        holder = occupy_busy(f) if path == "/busy/x" else None
        c = Client(f.port)
        try:
            r = c.request("GET", path)
            eq(r.status, want, "%s without a body" % path)
            c._fill(time.monotonic() + 0.2)
            check(not c.buf, "%s: bytes after the answer: %r" % (path, c.buf[:200]))
        finally:
            c.close()
            if holder:
                holder.close()
    f.assert_alive()


# --- retries carry the whole body ----------------------------------------------------------
def keepalive_handler(fail_on, stop_after):
    """Each connection: requests answered keep-alive with the body they
    carried; request number fail_on of a connection is read up to
    stop_after body bytes, then the connection closes unanswered."""
    def handler(be, s, n):
        rd = Reader(s)
        k = 0
        while True:
            try:
                line, hdrs = rd.head()
            except EOFError:
                return
            k += 1
            if k == fail_on:
                rd.body(hdrs, stop_after=stop_after)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            body = rd.body(hdrs)
            with be.lock:
                be.bodies.append((line, body))
            answer(s, b"got:" + body)
    return handler


def test_stale_retry_resends_body():
    "a pooled connection closed after part of the body: the retry resends all of it (CL)"
    be = raw_backend(keepalive_handler(fail_on=2, stop_after=2))
    f = ferry(upstreams={"u": servers(be)}, routes=[route("u", "/", upstream="u")],
              timeouts={"upstream_header": "3s"})
    c = Client(f.port)
    try:
        expect_response(c.request("GET", "/warm"), status=200, body="got:")
        r = c.request("PUT", "/x", body=b"hello", timeout=8)
        expect_response(r, status=200, body="got:hello", what="PUT retried on a fresh connection")
    finally:
        c.close()


def test_stale_retry_chunked_in_two_parts():
    "a chunked PUT sent in two parts: the server gets the complete body or nothing is retried"
    be = raw_backend(keepalive_handler(fail_on=2, stop_after=5))
    f = ferry(upstreams={"u": servers(be)}, routes=[route("u", "/", upstream="u")],
              timeouts={"upstream_header": "3s"})
    c = Client(f.port)
    try:
        expect_response(c.request("GET", "/warm"), status=200, body="got:")
        c.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        wait_until(lambda: be.conns >= 2, 3.0, what="the retry's fresh connection")
        time.sleep(0.2)
        c.send(b"6\r\n world\r\n0\r\n\r\n")
        r = c.response(8)
        expect_response(r, status=200, body="got:hello world", what="chunked PUT")
        with be.lock:
            bodies = [b for _, b in be.bodies]
        check(b"hello world" in bodies and b" world" not in bodies,
              "the server stored %r" % bodies)
    finally:
        c.close()


def test_body_over_replay_buffer_not_retried():
    "a body over retries.replay_bytes is not retried: 502, and no truncated body reaches a server"
    be = raw_backend(keepalive_handler(fail_on=2, stop_after=100))
    f = ferry(upstreams={"u": servers(be, retries={"attempts": 1, "replay_bytes": "1k"})},
              routes=[route("u", "/", upstream="u")], timeouts={"upstream_header": "3s"})
    c = Client(f.port)
    try:
        expect_response(c.request("GET", "/warm"), status=200, body="got:")
        body = b"z" * 5000
        r = c.request("PUT", "/x", body=body, timeout=8)
        eq(r.status, 502, "PUT over replay_bytes on a closed pooled connection")
        with be.lock:
            bodies = [b for _, b in be.bodies]
        eq(bodies, [b""], "bodies the server completed")
    finally:
        c.close()


def test_retry_elsewhere_resends_body():
    "retries on another server after a reset resend the whole body (idempotent PUT)"
    state = {"failed": False}
    lock = threading.Lock()

    def handler(be, s, n):
        rd = Reader(s)
        line, hdrs = rd.head()
        with lock:
            fail = not state["failed"]
            state["failed"] = True
        if fail:
            rd.body(hdrs, stop_after=3)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return
        body = rd.body(hdrs)
        with be.lock:
            be.bodies.append((line, body))
        answer(s, b"got:" + body, close=True)
    a = raw_backend(handler, "a")
    b = raw_backend(handler, "b")
    f = ferry(upstreams={"u": servers(a, b, retries={"attempts": 1, "on": ["reset"]})},
              routes=[route("u", "/", upstream="u")], timeouts={"upstream_header": "3s"})
    r = request(f, "PUT", "/x", body=b"hello world", timeout=8)
    expect_response(r, status=200, body="got:hello world", what="PUT retried elsewhere")
    e = f.wait_access(lambda e: e.get("status") == 200, what="the retried PUT")
    eq(e.get("upstream_retries"), 1, "logged upstream_retries")


# --- a response head over the upstream read cap ----------------------------------------------
def test_huge_response_head_502():
    "a response head over the largest max_header_bytes: 502 at once, never a hang"
    def handler(be, s, n):
        Reader(s).head()
        try:
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (600 * 1024))
            time.sleep(8)
        except OSError:
            pass
    big = raw_backend(handler, "big")
    f = ferry(upstreams={"u": servers(big)}, routes=[route("u", "/", upstream="u")],
              limits={"max_header_bytes": "128k"}, timeouts={"upstream_header": "10s"})
    r, dt = timed(request, f, "GET", "/x", timeout=15)
    eq(r.status, 502, "huge response head: status")
    check(dt < 8, "the 502 took %.1fs (waited for upstream_header)" % dt)


def test_huge_request_head_431():
    "a request head over the largest max_header_bytes (the read buffer's size): 431, no wait"
    f = ferry(routes=[respond_route("ping", "/")], limits={"max_header_bytes": "128k"},
              timeouts={"client_header": "10s"})
    c = Client(f.port, timeout=15)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (300 * 1024))
        r, dt = timed(c.response, 12)
        eq(r.status, 431, "huge request head: status")
        check(dt < 8, "the 431 took %.1fs (waited for client_header)" % dt)
    finally:
        c.close()


# --- per-request state held across a yield ----------------------------------------------------
def slow_reset_handler(seen, lock):
    """Records (server, X-Request-Id), waits 0.3 s, then resets."""
    def handler(be, s, n):
        rd = Reader(s)
        try:
            line, hdrs = rd.head()
        except (EOFError, OSError):
            return
        with lock:
            seen.append((be.name, hdrs.get("x-request-id")))
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return handler


def test_concurrent_retries_keep_their_own_tried_servers():
    "two requests retrying on one upstream at once: neither goes back to a server it tried"
    seen, lock = [], threading.Lock()
    bes = [raw_backend(slow_reset_handler(seen, lock), "s%d" % i) for i in range(4)]
    dead = set()
    while len(dead) < 70:  # distinct: a freed port may come back
        dead.add(refused_address())
    dead = sorted(dead)
    f = ferry(upstreams={"u": servers(*bes, retries={"attempts": 3, "on": ["reset"]}),
                         "many": servers(*dead, retries={"attempts": 10})},
              routes=[route("many", "/many", upstream="many"), route("u", "/", upstream="u")])

    def one(i):
        time.sleep(0.45 * i)  # the second starts after the first's first failure
        return request(f, "GET", "/x", headers={"X-Request-Id": "req-%d" % i}, timeout=10)

    def many(_):
        # meanwhile: requests over 70 servers, each growing any shared list
        for _ in range(6):
            time.sleep(0.1)
            request(f, "GET", "/many", timeout=10)
    results = parallel(3, lambda i: one(i) if i < 2 else many(i), timeout=20)
    for r in results[:2]:
        check(not isinstance(r, Exception), "request failed: %r" % r)
        eq(r.status, 502, "every server reset: status")
    f.assert_alive()
    with lock:
        pairs = list(seen)
    for rid in ("req-0", "req-1"):
        tried = [name for name, x in pairs if x == rid]
        eq(len(tried), 4, "%s: attempts (1 + 3 retries) on %r" % (rid, tried))
        eq(len(set(tried)), len(tried), "%s went back to a server it tried: %r" % (rid, tried))


if __name__ == "__main__":
    run(globals(), budget=150)
