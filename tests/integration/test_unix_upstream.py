#!/usr/bin/env python3
"""Upstream servers on unix sockets (issue 19, point 1): a `unix:/path`
server is connected (a unix connect completes at once) and serves
requests, its connections are pooled like TCP ones, and a path nobody
listens on is a 502 at once, not a 504 after upstream_connect. Fast."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


class UnixBackend:
    """A keep-alive HTTP/1.1 server on a unix socket: answers every request
    (heads only; Content-Length bodies are read) with 200 and a body naming
    the connection and the request's target."""

    def __init__(self, path):
        self.path = path
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(64)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()
        _cleanups_add(self.stop)

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                cid = self.connections
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _serve(self, s, cid):
        buf = b""
        s.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    n, _, v = line.partition(":")
                    if n.strip().lower() == "content-length":
                        length = int(v.strip())
                while len(buf) < length:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append((cid, target, body))
                out = ("unix conn %d %s %d\n" % (cid, target, len(body))).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
        except OSError:
            return
        finally:
            s.close()

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _cleanups_add(fn):
    import ferrytest
    ferrytest._cleanups.append(fn)


def sock_path(name):
    return os.path.join(tmpdir(), name)


def test_unix_upstream_serves():
    "a server at unix:/path answers GET and POST through ferry, well before upstream_connect"
    path = sock_path("be1.sock")
    be = UnixBackend(path)
    f = ferry(timeouts={"upstream_connect": "3s"},
              upstreams={"u": servers("unix:" + path)},
              routes=[route("all", "/", upstream="u")])
    r, dt = timed(request, f, "GET", "/hello", timeout=10)
    expect_response(r, status=200, body_contains="/hello")
    check(dt < 2.0, "the answer took %.2fs (waited out upstream_connect?)" % dt)
    r = request(f, "POST", "/post", body=b"x" * 1000)
    expect_response(r, status=200, body_contains="/post 1000")
    eq([t for _, t, _ in be.requests], ["/hello", "/post"], "targets at the unix backend")
    e = f.wait_access(lambda e: e.get("path") == "/post", what="the POST")
    eq(e.get("status"), 200, "logged status")


def test_unix_upstream_pooled():
    "connections to a unix server are pooled: 10 sequential requests, one connection"
    path = sock_path("be2.sock")
    be = UnixBackend(path)
    f = ferry(workers=1,  # pools are per worker
              upstreams={"u": servers("unix:" + path, keepalive=4)},
              routes=[route("all", "/", upstream="u")])
    for i in range(10):
        expect_response(request(f, "GET", "/n%d" % i), status=200, body_contains="/n%d" % i)
    eq(be.connections, 1, "unix connections for 10 sequential requests")


def test_unix_upstream_missing_502():
    "a unix path nobody listens on is a 502 at once (connect fails), not a 504"
    path = sock_path("nobody.sock")
    f = ferry(timeouts={"upstream_connect": "5s"},
              upstreams={"u": servers("unix:" + path)},
              routes=[route("all", "/", upstream="u")])
    r, dt = timed(request, f, "GET", "/x", timeout=10)
    expect_response(r, status=502)
    check(dt < 2.0, "the 502 took %.2fs" % dt)


if __name__ == "__main__":
    run(globals())
