#!/usr/bin/env python3
"""A scriptable HTTP/1.1 backend for Ferry's integration tests (stdlib only).

One thread per connection, raw sockets, so every byte the proxy sends is
seen as sent and every fault is produced on purpose. The behaviour of a
request is chosen by the LAST segment of its path (so prefix rewriting in
front of it does not matter) and by its query string:

  echo (default)     200, JSON: method, target, path, query, version,
                     headers [[name, value]...], body (latin-1 text), body_len
  fast               200 "ok\\n"
  slow?ms=N          wait N ms before the head (watching for the peer closing
                     its side: recorded as peer_closed on the request)
  slow-body?bytes=N&after=K&ms=M
                     head with Content-Length N, K bytes, then a stall of M ms,
                     then the rest
  chunked?n=N&size=S chunked response: N chunks of S bytes (pattern bytes)
  huge?bytes=N[&chunked=1]
                     N bytes streamed from one reused 64 KiB block
  early[?code=413&close=linger|reset]
                     answers right after the head, before reading the body,
                     with Connection: close; then lingers (drains the body for
                     up to 2 s) or resets
  broken-head?kind=K invalid response head: K = garbage | no-colon | both-cl-te |
                     dup-cl | bad-cl | bad-chunk | space-before-colon | http09
  cut?bytes=N&sent=M[&chunked=1]
                     announces N bytes, sends M, closes (chunked: no last chunk)
  close-after?n=N[&mode=drop|close|reset][&after=MS]
                     per connection: requests 1..N are answered keep-alive;
                     mode=close closes right after the N-th answer (FIN),
                     mode=reset resets it (SO_LINGER 0), either MS ms later
                     if after= is given (reading nothing meanwhile: what
                     arrives is never answered); mode=drop (default) reads
                     request N+1 and closes without answering
  reset              reads the head, closes with RST
  status?code=N      answers N (no body for 1xx/204/304), JSON body otherwise
  headers?h=Name:Value&h=...
                     200 with the given response headers added verbatim
  upload[?rate=BYTES_PER_S]
                     reads the body (Content-Length or chunked) counting it and
                     hashing it, optionally slowly; 200 JSON {bytes, sha256}
  __stats            JSON of the counters (for subprocess use)

A "refuse" server is just a port with nothing listening: refused_address().

In-process:   b = Backend().start(); b.port; b.stats(); b.last(); b.stop()
Subprocess:   python3 backend.py [--port N]  (prints "listening PORT", then
              serves until killed; counters at GET /__stats)
"""

import hashlib
import json
import select
import socket
import sys
import threading
import time
import urllib.parse

BLOCK = bytes(range(256)) * 256  # 64 KiB pattern used for generated bodies


def pattern(n, offset=0):
    """n bytes of the repeating 0..255 pattern starting at offset."""
    out = bytearray()
    while len(out) < n:
        start = (offset + len(out)) % len(BLOCK)
        out += BLOCK[start:start + (n - len(out))]
    return bytes(out)


def refused_address():
    """Returns "127.0.0.1:PORT" for a port that was free a moment ago and on
    which nothing listens (connect gets ECONNREFUSED)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "127.0.0.1:%d" % port


class PeerClosed(Exception):
    pass


class Conn:
    """One accepted connection with a read buffer."""

    def __init__(self, backend, sock, cid):
        self.backend = backend
        self.sock = sock
        self.id = cid
        self.buf = b""
        self.nreq = 0
        self.opened = time.monotonic()
        self.closed_at = None
        self.closed_by = None  # "peer" (we saw EOF/reset) or "self"

    def fill(self, timeout=30.0):
        """Reads more bytes into buf; raises PeerClosed on EOF/reset."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            raise TimeoutError("backend: read timeout")
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            raise PeerClosed()
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i + len(sep)], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise ValueError("backend: line too long")
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def peer_closed_now(self):
        """True if the peer closed its side (EOF or reset) -- non-blocking.
        Pipelined bytes are kept in buf."""
        r, _, _ = select.select([self.sock], [], [], 0)
        if not r:
            return False
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""


class Request:
    def __init__(self):
        self.conn_id = None
        self.index = 0  # 1-based index of the request on its connection
        self.head_raw = b""
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []  # [(name, value)] as received
        self.path = ""
        self.query = {}
        self.mode = ""
        self.body_len = 0
        self.body = b""
        self.sha256 = None
        self.peer_closed = False  # the proxy closed while we made it wait
        self.t_start = time.monotonic()
        self.t_end = None

    def header(self, name, default=None):
        """First value of a header (case-insensitive)."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def as_dict(self):
        return {
            "conn_id": self.conn_id, "index": self.index, "method": self.method,
            "target": self.target, "path": self.path, "version": self.version,
            "headers": [[n, v] for n, v in self.headers], "body_len": self.body_len,
            "peer_closed": self.peer_closed, "mode": self.mode,
            "head_raw": self.head_raw.decode("latin-1"),
        }


def _q(req, name, default=None, conv=int):
    v = req.query.get(name)
    if v is None:
        return default
    return conv(v[0])


def _response(status, body=b"", headers=None, reason=None):
    reasons = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
               404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable"}
    reason = reason or reasons.get(status, "Status")
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    has_len = False
    for n, v in headers or []:
        head += "%s: %s\r\n" % (n, v)
        if n.lower() in ("content-length", "transfer-encoding"):
            has_len = True
    if not has_len and not (100 <= status < 200 or status in (204, 304)):
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode("latin-1") + b"\r\n" + body


class Backend:
    """A threaded backend. All counters are guarded by self.lock."""

    def __init__(self, port=0, host="127.0.0.1", name="backend"):
        self.name = name
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(1024)
        self.port = self.lsock.getsockname()[1]
        self.address = "%s:%d" % (host, self.port)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.conns = []  # every Conn ever accepted
        self.requests = []  # every Request, in arrival order (head received)
        self.active = 0  # requests being handled now
        self.peak_active = 0
        self.open_conns = 0
        self.peak_open_conns = 0
        self.stopping = False
        self.thread = None
        self.conn_threads = []
        # Every request answered this status (an int) or reset ("reset"),
        # whatever its path: one failing server among healthy ones.
        self.force = None

    # --- lifecycle -----------------------------------------------------------
    def start(self):
        self.thread = threading.Thread(target=self._accept_loop, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            if c.closed_at is None:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- what the tests read -------------------------------------------------
    def stats(self):
        with self.lock:
            return {
                "connections": len(self.conns),
                "open_connections": self.open_conns,
                "peak_open_connections": self.peak_open_conns,
                "requests": len(self.requests),
                "active": self.active,
                "peak_active": self.peak_active,
                "closed_by_peer": sum(1 for c in self.conns if c.closed_by == "peer"),
            }

    def last(self):
        """The last request whose head was received (a Request), or None."""
        with self.lock:
            return self.requests[-1] if self.requests else None

    def reset_stats(self):
        with self.lock:
            self.requests = []
            self.conns = [c for c in self.conns if c.closed_at is None]
            self.peak_active = self.active
            self.peak_open_conns = self.open_conns

    def wait_for(self, pred, timeout=5.0):
        """Waits until pred(self) is true; returns its last value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.cond.wait(min(left, 0.05))

    # --- serving -------------------------------------------------------------
    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                c = Conn(self, sock, len(self.conns) + 1)
                self.conns.append(c)
                self.open_conns += 1
                self.peak_open_conns = max(self.peak_open_conns, self.open_conns)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()

    def _serve(self, c):
        closed_by = "self"
        try:
            while not self.stopping:
                try:
                    if not c.buf:
                        c.fill(timeout=120.0)
                    head = c.read_until(b"\r\n\r\n")
                except PeerClosed:
                    closed_by = "peer"
                    return
                req = self._parse_head(c, head)
                with self.lock:
                    self.requests.append(req)
                    self.active += 1
                    self.peak_active = max(self.peak_active, self.active)
                    self.cond.notify_all()
                try:
                    keep = self._handle(c, req)
                except PeerClosed:
                    req.peer_closed = True
                    closed_by = "peer"
                    keep = False
                except (BrokenPipeError, ConnectionResetError):
                    req.peer_closed = True
                    closed_by = "peer"
                    keep = False
                finally:
                    req.t_end = time.monotonic()
                    with self.lock:
                        self.active -= 1
                        self.cond.notify_all()
                if not keep:
                    return
        except (TimeoutError, ValueError, OSError):
            return
        finally:
            try:
                c.sock.close()
            except OSError:
                pass
            with self.lock:
                c.closed_at = time.monotonic()
                c.closed_by = c.closed_by or closed_by
                self.open_conns -= 1
                self.cond.notify_all()

    def _parse_head(self, c, head):
        c.nreq += 1
        req = Request()
        req.conn_id = c.id
        req.index = c.nreq
        req.head_raw = head
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) == 3:
            req.method, req.target, req.version = parts
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            req.headers.append((name, value.strip(" \t")))
        u = urllib.parse.urlsplit(req.target)
        req.path = u.path
        req.query = urllib.parse.parse_qs(u.query)
        req.mode = req.path.rstrip("/").rsplit("/", 1)[-1]
        return req

    def _read_body(self, c, req, sink, rate=None):
        """Reads the request body (Content-Length or chunked), passing each
        piece to sink; rate limits the reading speed in bytes/s."""
        te = (req.header("Transfer-Encoding") or "").lower()
        t0 = time.monotonic()
        got = 0

        def pace(n):
            nonlocal got
            got += n
            if rate:
                ahead = got / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

        if "chunked" in te:
            while True:
                line = c.read_until(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while c.read_until(b"\r\n") != b"\r\n":
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    if not c.buf:
                        c.fill()
                    piece = c.buf[:min(remaining, 65536)]
                    c.buf = c.buf[len(piece):]
                    remaining -= len(piece)
                    sink(piece)
                    pace(len(piece))
                c.read_exact(2)
        else:
            remaining = int(req.header("Content-Length") or 0)
            while remaining:
                if not c.buf:
                    c.fill()
                piece = c.buf[:min(remaining, 65536)]
                c.buf = c.buf[len(piece):]
                remaining -= len(piece)
                sink(piece)
                pace(len(piece))

    def _read_body_all(self, c, req):
        parts = []
        self._read_body(c, req, parts.append)
        req.body = b"".join(parts)
        req.body_len = len(req.body)
        return req.body

    def _wait(self, c, req, ms):
        """Sleeps ms while watching whether the peer closes (-> PeerClosed)."""
        deadline = time.monotonic() + ms / 1000.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([c.sock], [], [], min(left, 0.05))
            if r and c.peer_closed_now():
                raise PeerClosed()
            if r:
                # pipelined or body bytes: keep them, keep waiting
                time.sleep(min(left, 0.02))

    def _handle(self, c, req):
        """Answers one request; returns True to keep the connection open."""
        m = req.mode
        keep = (req.header("Connection") or "").lower() != "close"
        conn_hdr = [] if keep else [("Connection", "close")]

        force = self.force
        if force == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        if isinstance(force, int):
            self._read_body_all(c, req)
            body = json.dumps({"status": force, "backend": self.name}).encode() + b"\n"
            c.send(_response(force, body, [("Content-Type", "application/json")] + conn_hdr))
            return keep

        if m == "early":
            code = _q(req, "code", 413)
            c.send(_response(code, b'{"early":true}\n',
                             [("Content-Type", "application/json"), ("Connection", "close")]))
            how = req.query.get("close", ["linger"])[0]
            if how == "reset":
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return False
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                return False
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                r, _, _ = select.select([c.sock], [], [], 0.1)
                if r:
                    try:
                        if not c.sock.recv(65536):
                            break
                    except OSError:
                        break
            return False

        if m == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False

        if m == "close-after":
            n = _q(req, "n", 1)
            mode = req.query.get("mode", ["drop"])[0]
            if req.index > n:
                return False  # drop: close without answering
            self._read_body_all(c, req)
            close_now = mode in ("close", "reset") and req.index >= n
            c.send(_response(200, ("conn %d req %d\n" % (c.id, req.index)).encode(), conn_hdr))
            if close_now:
                time.sleep(_q(req, "after", 0) / 1000.0)
                if mode == "reset":
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return keep and not close_now

        if m == "upload":
            rate = _q(req, "rate", None)
            h = hashlib.sha256()
            count = [0]

            def sink(piece):
                h.update(piece)
                count[0] += len(piece)

            self._read_body(c, req, sink, rate=rate)
            req.body_len = count[0]
            req.sha256 = h.hexdigest()
            body = json.dumps({"bytes": count[0], "sha256": req.sha256}).encode() + b"\n"
            c.send(_response(200, body, [("Content-Type", "application/json")] + conn_hdr))
            return keep

        # every other mode reads the whole body first
        self._read_body_all(c, req)

        if m == "fast":
            c.send(_response(200, b"ok\n", [("Content-Type", "text/plain")] + conn_hdr))
        elif m == "slow":
            self._wait(c, req, _q(req, "ms", 1000))
            c.send(_response(200, b"slow\n", [("Content-Type", "text/plain")] + conn_hdr))
        elif m == "slow-body":
            n = _q(req, "bytes", 1000)
            k = _q(req, "after", n // 2)
            c.send(_response(200, b"", [("Content-Length", str(n))] + conn_hdr) + pattern(k))
            self._wait(c, req, _q(req, "ms", 1000))
            c.send(pattern(n - k, k))
        elif m == "chunked":
            n = _q(req, "n", 3)
            size = _q(req, "size", 10)
            c.send(_response(200, b"", [("Transfer-Encoding", "chunked")] + conn_hdr))
            off = 0
            for _ in range(n):
                c.send(b"%x\r\n" % size + pattern(size, off) + b"\r\n")
                off += size
            c.send(b"0\r\n\r\n")
        elif m == "huge":
            n = _q(req, "bytes", 1 << 20)
            chunked = _q(req, "chunked", 0)
            hdr = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(n))]
            c.send(_response(200, b"", hdr + conn_hdr))
            view = memoryview(BLOCK)
            sent = 0
            while sent < n:
                k = min(len(BLOCK), n - sent)
                if chunked:
                    c.send(b"%x\r\n" % k)
                c.sock.sendall(view[:k])
                if chunked:
                    c.send(b"\r\n")
                sent += k
            if chunked:
                c.send(b"0\r\n\r\n")
        elif m == "broken-head":
            kind = req.query.get("kind", ["no-colon"])[0]
            heads = {
                "garbage": b"NOT HTTP AT ALL\r\n\r\n",
                "no-colon": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nBad Header\r\n\r\nhello",
                "both-cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "dup-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
                "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
                "http09": b"hello without any head\n",
                "bad-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
            }
            c.send(heads[kind])
            # then wait for the proxy to close (it must not reuse this)
            try:
                self._wait(c, req, 3000)
            except PeerClosed:
                req.peer_closed = True
                raise
            return False
        elif m == "cut":
            n = _q(req, "bytes", 1000)
            sent = _q(req, "sent", n // 2)
            if _q(req, "chunked", 0):
                c.send(_response(200, b"", [("Transfer-Encoding", "chunked")])
                       + b"%x\r\n" % sent + pattern(sent) + b"\r\n")
            else:
                c.send(_response(200, b"", [("Content-Length", str(n))]) + pattern(sent))
            time.sleep(0.05)
            return False
        elif m == "status":
            code = _q(req, "code", 200)
            if 100 <= code < 200 or code in (204, 304):
                c.send(_response(code, b"", conn_hdr))
            else:
                body = json.dumps({"status": code}).encode() + b"\n"
                c.send(_response(code, body, [("Content-Type", "application/json")] + conn_hdr))
        elif m == "headers":
            extra = []
            for hv in req.query.get("h", []):
                n, _, v = hv.partition(":")
                extra.append((n, v))
            c.send(_response(200, b"headers\n", extra + conn_hdr))
        elif m == "__stats":
            body = json.dumps(self.stats()).encode()
            c.send(_response(200, body, [("Content-Type", "application/json")] + conn_hdr))
        elif m == "__requests":
            with self.lock:
                body = json.dumps([r.as_dict() for r in self.requests]).encode()
            c.send(_response(200, body, [("Content-Type", "application/json")] + conn_hdr))
        else:  # echo
            body = json.dumps({
                "method": req.method, "target": req.target, "path": req.path,
                "query": {k: v for k, v in req.query.items()}, "version": req.version,
                "headers": [[n, v] for n, v in req.headers],
                "body": req.body.decode("latin-1"), "body_len": len(req.body),
                "conn_id": c.id, "index": req.index,
            }).encode() + b"\n"
            c.send(_response(200, body, [("Content-Type", "application/json")] + conn_hdr))
        return keep


def main(argv):
    port = 0
    if "--port" in argv:
        port = int(argv[argv.index("--port") + 1])
    b = Backend(port=port).start()
    print("listening %d" % b.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
