#!/usr/bin/env python3
"""Framing on the way back (issue 6, point 3): answers to HEAD and 204, 304
and 1xx answers from the upstream reach the client framed right (no body,
no stray byte on the client connection, the next keep-alive request
answered normally, no Content-Length or Transfer-Encoding on a 204); body
bytes an upstream sends after such an answer -- in the same write or a
little later -- are discarded and that upstream connection is not reused
(counted at the backend), while a clean answer's connection is. Uses a
scripted raw-socket upstream so every byte sent is chosen. ~5 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402

PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def body_200(method, stray):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
    return head + (b"0123456789" if method != "HEAD" or stray else b"")


def chunked_200(method, stray):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + (b"5\r\nhello\r\n0\r\n\r\n" if method != "HEAD" or stray else b"")


# name -> (bytes now, bytes 150 ms later); a callable gets the method
SCRIPTS = {
    "plain": (PLAIN, b""),
    "s204": (b"HTTP/1.1 204 No Content\r\nX-Kind: clean\r\n\r\n", b""),
    "s204-stray": (b"HTTP/1.1 204 No Content\r\n\r\nSTRAYBYTES", b""),
    "s204-cl": (b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n0123456789", b""),
    "s204-chunked": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n", b""),
    "s204-late": (b"HTTP/1.1 204 No Content\r\n\r\n", b"LATE STRAY BYTES"),
    "s304": (b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n", b""),
    "s304-stray": (b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n"
                   b"0123456789", b""),
    "s304-chunked": (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n", b""),
    "s304-late": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"0123456789"),
    "head-body": (lambda m: body_200(m, False), b""),
    "head-stray": (lambda m: body_200(m, True), b""),
    "head-chunked": (lambda m: chunked_200(m, False), b""),
    "head-chunked-stray": (lambda m: chunked_200(m, True), b""),
    "head-late": (lambda m: body_200(m, False), b"0123456789"),
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal", b""),
    "interim-split": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n",
                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"),
}


class ScriptedUpstream:
    """A keep-alive upstream that answers each request with the bytes of
    SCRIPTS[last path segment] and records (connection id, method, name)."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.nconns = 0
        self.log = []  # (conn id, method, name)
        self.closed = set()  # connection ids the proxy closed
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.nconns += 1
                cid = self.nconns
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _serve(self, s, cid):
        buf = b""
        s.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                i = buf.index(b"\r\n\r\n")
                head, buf = buf[:i].decode("latin-1"), buf[i + 4:]
                lines = head.split("\r\n")
                method, target = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    n, _, v = line.partition(":")
                    if n.strip().lower() == "content-length":
                        length = int(v.strip())
                while len(buf) < length:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[length:]
                name = target.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                with self.lock:
                    self.log.append((cid, method, name))
                now, later = SCRIPTS.get(name, (PLAIN, b""))
                if callable(now):
                    now = now(method)
                s.sendall(now)
                if later:
                    time.sleep(0.15)
                    try:
                        s.sendall(later)
                    except OSError:
                        return
        except OSError:
            return
        finally:
            with self.lock:
                self.closed.add(cid)
            s.close()

    def conn_of(self, name, nth=-1):
        with self.lock:
            ids = [c for c, _, n in self.log if n == name]
        check(ids, "the upstream never received %r" % name)
        return ids[nth]

    def stop(self):
        self.stopping = True
        try:
            self.ls.close()
        except OSError:
            pass


def setup():
    up = ScriptedUpstream()
    ferrytest._cleanups.append(up.stop)
    f = ferry(upstreams={"s": servers(up.address, keepalive=8)},
              routes=[route("s", "/", upstream="s")])
    return up, f


def exchange(c, method, name):
    """Sends one request on Client c and reads the final answer, returning
    (interim answers, final answer)."""
    c.send(build_request(method, "/" + name))
    interim = []
    while True:
        r = c.response(5, head_request=(method == "HEAD"))
        if r.status >= 200:
            return interim, r
        interim.append(r)


def then_plain(up, c, after, reuse, what):
    """The next request on the same client connection is answered cleanly
    (no stray byte in front of it); the upstream connection is reused
    (reuse=True) or a new one is used (reuse=False)."""
    _, r = exchange(c, "GET", "plain")
    expect_response(r, status=200, body=b"ok\n", what="the request after " + what)
    a, b = up.conn_of(after), up.conn_of("plain")
    if reuse:
        check(a == b, "%s: a clean answer's upstream connection was not reused (conn %d, then %d)"
              % (what, a, b))
    else:
        check(a != b, "%s: the upstream connection was reused after stray bytes (conn %d)"
              % (what, a))
        check(wait_until(lambda: a in up.closed, 2.0),
              "%s: Ferry kept the upstream connection with stray bytes open" % what)


def check_no_body_head(r, what, status):
    eq(r.status, status, what + " status")
    check(r.header("Transfer-Encoding") is None,
          "%s: Transfer-Encoding sent on a %d: %r" % (what, status, r.head_raw))
    if status == 204 or status < 200:
        check(r.header("Content-Length") is None,
              "%s: Content-Length sent on a %d (RFC 9110 8.6): %r" % (what, status, r.head_raw))


def test_204_clean_connection_reused():
    "a clean 204: framed without a body, and its upstream connection is reused (control)"
    up, f = setup()
    c = Client(f.port)
    try:
        _, r = exchange(c, "GET", "s204")
        check_no_body_head(r, "clean 204", 204)
        eq(r.header("X-Kind"), "clean", "204 header")
        then_plain(up, c, "s204", True, "a clean 204")
    finally:
        c.close()
    eq(up.nconns, 1, "upstream connections")


def test_204_with_stray_bytes():
    "204 followed by bytes (bare, with Content-Length, chunked, 150 ms late): discarded, not reused"
    for name in ("s204-stray", "s204-cl", "s204-chunked", "s204-late"):
        up, f = setup()
        c = Client(f.port)
        try:
            _, r = exchange(c, "GET", name)
            check_no_body_head(r, name, 204)
            if name == "s204-late":
                time.sleep(0.4)  # the stray bytes reach the idle pooled connection
            then_plain(up, c, name, False, name)
        finally:
            c.close()
        f.stop()
        up.stop()


def test_304_framing():
    "304: clean one reused; with Content-Length body, chunked body or late bytes: no body, not reused"
    up, f = setup()
    c = Client(f.port)
    try:
        _, r = exchange(c, "GET", "s304")
        check_no_body_head(r, "s304", 304)
        eq(r.header("ETag"), '"v1"', "304 ETag")
        then_plain(up, c, "s304", True, "a clean 304")
    finally:
        c.close()
    for name in ("s304-stray", "s304-chunked", "s304-late"):
        up, f = setup()
        c = Client(f.port)
        try:
            _, r = exchange(c, "GET", name)
            check_no_body_head(r, name, 304)
            if name == "s304-late":
                time.sleep(0.4)
            then_plain(up, c, name, False, name)
        finally:
            c.close()
        f.stop()
        up.stop()


def test_head_framing():
    "HEAD: Content-Length kept, no body; a body sent anyway (length, chunked, late) is dropped, not reused"
    up, f = setup()
    c = Client(f.port)
    try:
        _, r = exchange(c, "HEAD", "head-body")
        eq(r.status, 200, "HEAD status")
        eq(r.header("Content-Length"), "10", "Content-Length of the answer to HEAD")
        then_plain(up, c, "head-body", True, "a clean answer to HEAD")
        _, r = exchange(c, "HEAD", "head-chunked")
        eq(r.status, 200, "HEAD on a chunked resource")
        then_plain(up, c, "head-chunked", True, "a clean chunked answer to HEAD")
    finally:
        c.close()
    for name in ("head-stray", "head-chunked-stray", "head-late"):
        up, f = setup()
        c = Client(f.port)
        try:
            _, r = exchange(c, "HEAD", name)
            eq(r.status, 200, name + " status")
            if name == "head-late":
                time.sleep(0.4)
            then_plain(up, c, name, False, name)
        finally:
            c.close()
        f.stop()
        up.stop()


def test_head_pipelined():
    "HEAD, GET, HEAD, GET pipelined: four answers, the HEADs without bodies, in order"
    up, f = setup()
    data = b"".join(build_request(m, "/" + n) for m, n in
                    (("HEAD", "head-stray"), ("GET", "head-body"), ("HEAD", "head-body"),
                     ("GET", "plain")))
    c = Client(f.port)
    try:
        c.send(data)
        rs = [c.response(5, head_request=(i % 2 == 0)) for i in range(4)]
        eq([r.status for r in rs], [200] * 4, "statuses")
        eq(rs[1].body, b"0123456789", "GET after a HEAD")
        eq(rs[3].body, b"ok\n", "last GET")
        c._fill(time.monotonic() + 0.2)
        check(not c.buf, "stray bytes on the client connection: %r" % c.buf[:100])
    finally:
        c.close()


def test_interim_answers():
    "100/103/102 before a 200: any 1xx passed on has no body and no framing; the final 200 is whole"
    for name in ("interim", "interim-split"):
        up, f = setup()
        c = Client(f.port)
        try:
            interim, r = exchange(c, "GET", name)
            for i in interim:
                check_no_body_head(i, "interim answer %d" % i.status, i.status)
                check(i.status != 100, "the upstream's 100 Continue was passed to a client that "
                      "did not ask for it")
            expect_response(r, status=200, body=b"final", what=name + " final answer")
            then_plain(up, c, name, True, name)
        finally:
            c.close()
        f.stop()
        up.stop()


if __name__ == "__main__":
    run(globals(), budget=40)
