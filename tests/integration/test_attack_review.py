#!/usr/bin/env python3
"""What an attack review of io, upstream, headers and log (issues 12 and
19) found, against the real binary: a cut close-delimited body must not
look complete to the client (HTTP/1.1 clients get it re-chunked, HTTP/1.0
clients a reset), underscore spellings of framing and client-address
fields never pass even where underscores are allowed; and what held: a
body is never a request after an upstream reset, max_connections: 1 keeps
serving after clients leave at every phase. ~10 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

BODY = bytes(range(256)) * 4096  # 1 MiB


class Scripted:
    """A TCP server that reads one request head, then runs fn(sock)."""

    def __init__(self, fn):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.address = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.fn = fn
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            self.fn(c)
        except OSError:
            pass


def reset(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()


def ends_cleanly(f, data):
    """Sends data; True when the connection ended with a FIN (how == eof)
    after a response the client cannot tell from a complete one."""
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(data)
    got, how = b"", "eof"
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        how = "reset"
    finally:
        s.close()
    return how, got


def test_close_delimited_body_cut_by_reset():
    "a close-delimited response body cut by an upstream RST must not reach the client as a clean end"
    def fn(c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n" + BODY[:300000])
        time.sleep(0.2)
        reset(c)
    up = Scripted(fn)
    f = ferry(upstreams={"u": servers(up.address)}, routes=[route("all", "/", upstream="u")])
    for ver in ("1.1", "1.0"):
        how, got = ends_cleanly(f, ("GET /x HTTP/%s\r\nHost: a\r\n\r\n" % ver).encode())
        r = parse_responses(got, eof=True)[0]
        eq(r.status, 200, "status")
        check(len(r.body) < len(BODY), "the body was cut (%d bytes)" % len(r.body))
        # A client (or cache) can only tell a cut from the end if the
        # framing says so (chunked without its last chunk) or the
        # connection is reset; Ferry knows (its log says so).
        chunked = (r.header("Transfer-Encoding") or "").lower() == "chunked"
        check(how == "reset" or (chunked and not got.endswith(b"0\r\n\r\n")),
              "HTTP/%s: a truncated close-delimited body ended with a clean FIN (%d bytes, "
              "headers %r): indistinguishable from a complete response" % (ver, len(r.body),
                                                                         r.headers))


def test_close_delimited_body_whole_is_rechunked():
    "a whole close-delimited body reaches an HTTP/1.1 client chunked, intact, on a connection kept open; an HTTP/1.0 client gets it close-delimited"
    def fn(c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n" + BODY[:300000])
        c.close()
    up = Scripted(fn)
    f = ferry(upstreams={"u": servers(up.address)}, routes=[route("all", "/", upstream="u")])
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    got = b""
    while not got.endswith(b"0\r\n\r\n"):
        d = s.recv(65536)
        check(d, "the connection ended before the last chunk (%d bytes)" % len(got))
        got += d
    s.close()
    r = parse_responses(got)[0]
    eq((r.header("Transfer-Encoding") or "").lower(), "chunked", "HTTP/1.1 framing")
    check(r.header("Connection") is None, "kept open (Connection: %r)" % r.header("Connection"))
    check(got.endswith(b"0\r\n\r\n"), "ends with the last chunk")
    eq(r.body, BODY[:300000], "body")
    how, got = ends_cleanly(f, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    r = parse_responses(got, eof=True)[0]
    eq(how, "eof", "HTTP/1.0 end")
    eq(r.body, BODY[:300000], "HTTP/1.0 body")


def test_chunked_cut_to_http10_client():
    "a chunked body cut by the upstream, relayed close-delimited to an HTTP/1.0 client, must not end cleanly"
    def fn(c):
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 300000
                  + BODY[:300000] + b"\r\n")
        time.sleep(0.2)
        c.close()
    up = Scripted(fn)
    f = ferry(upstreams={"u": servers(up.address)}, routes=[route("all", "/", upstream="u")])
    how, got = ends_cleanly(f, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    r = parse_responses(got, eof=True)[0]
    eq(r.status, 200, "status")
    check(how == "reset", "HTTP/1.0 client: a cut chunked body ended with a clean FIN after %d "
          "bytes (looks complete)" % len(r.body))


def test_underscores_allowed_never_forward_framing_or_owned_names():
    "underscores_in_headers: true still drops _-spellings of framing and client-address fields"
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[route("r", "/", upstream="u", underscores_in_headers=True)])
    hdrs = [("Transfer_Encoding", "chunked"), ("Content_Length", "0"),
            ("X_Forwarded_For", "7.7.7.7"), ("X_Real_IP", "8.8.8.8"), ("X_Custom", "kept"),
            ("Connection", "close")]
    r = raw(f, build_request("POST", "/echo", headers=hdrs, body=b"hello")).response
    names = [n for n, _ in r.json()["headers"]]
    check("X_Custom" in names, "an ordinary underscored name is forwarded when allowed")
    bad = [n for n in names if n in ("Transfer_Encoding", "Content_Length", "X_Forwarded_For",
                                     "X_Real_IP")]
    check(not bad, "forwarded from an untrusted client: %r (servers that fold '_' into '-' "
          "see a second framing or client-address field)" % bad)


def test_body_never_a_request_after_upstream_reset():
    "upstream resets after the head, before the body: 502, Connection: close, the body is never a request"
    up = Scripted(lambda c: (time.sleep(0.1), reset(c)))
    f = ferry(upstreams={"u": servers(up.address)}, routes=[route("all", "/", upstream="u")])
    size = 900000
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    time.sleep(0.3)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    try:
        s.sendall(smuggled + b"z" * (size - len(smuggled)))
    except OSError:
        pass
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError:
        pass
    s.close()
    rs = parse_responses(got, eof=True)
    eq([x.status for x in rs], [502], "answers")
    time.sleep(0.2)
    check(not any(e.get("path") == "/smuggled" for e in f.access_log()),
          "the body was served as a request: %r" % f.access_log())


def test_max_connections_one_survives_clients_leaving_at_every_phase():
    "max_connections 1 keeps serving after clients leave queued, mid-body, after the head, mid-response, by RST"
    be = backend()
    f = ferry(upstreams={"u": servers(be, max_connections=1)},
              routes=[route("r", "/", upstream="u")], timeouts={"upstream_connect": "2s"})
    fd_base = f.fd_count()

    def leave(phase, i):
        s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        try:
            if phase == 0:
                s.sendall(build_request("POST", "/slow?ms=50", body=b"x" * 10))
            elif phase == 1:
                s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
                          + b"z" * 30000)
            elif phase == 2:
                s.sendall(build_request("GET", "/slow?ms=200"))
            elif phase == 3:
                s.sendall(build_request("GET", "/slow-body?bytes=200000&after=1000&ms=100"))
                s.recv(100)
            else:
                s.sendall(build_request("GET", "/huge?bytes=3000000"))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
            time.sleep(0.01 * (i % 5))
        except OSError:
            pass
        finally:
            s.close()
    threads = [threading.Thread(target=leave, args=(p, i), daemon=True)
               for i in range(10) for p in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for k in range(3):
        expect_response(request(f, "GET", "/fast?k=%d" % k, timeout=10), status=200)
    f.wait_baseline(fd_base + 1, 0, 10)  # + the pooled upstream connection


if __name__ == "__main__":
    run(globals(), budget=90)
