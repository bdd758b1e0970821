#!/usr/bin/env python3
"""Upstream and policy side under an operator's reloads and a hostile
upstream, what earlier reviews did not cover: max_connections raised or
lowered by a reload while requests wait in line, the keep-alive race of a
request at max_connections, upstream_idle shortened by a reload, password
checks of requests that gave up, WebSocket half-closes either way (raw
sockets on both sides), health checks answered with 1xx heads first or a
four-digit status, a rate-limit store that accepts and refuses (Redis at
maxclients). ~11 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def test_reload_raising_max_connections_frees_the_queue():
    "max_connections 1 -> 8 by a reload: requests waiting in line get a connection at once"
    be = backend()
    cfg = {"timeouts": {"upstream_connect": "2s"},
           "routes": [route("all", "/", upstream="u")]}
    # workers: 1 -- max_connections is per worker
    f = ferry(workers=1, upstreams={"u": servers(be, max_connections=1)}, **cfg)
    res = {}

    def one(i):
        res[i] = request(f, "GET", "/slow?ms=1200&id=%d" % i, timeout=10)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.03)
    check(be.wait_for(lambda b: b.stats()["requests"] >= 1, 3.0), "no request reached the backend")
    time.sleep(0.1)
    eq(be.stats()["active"], 1, "requests at the backend before the reload (max_connections 1)")
    f.reload(dict(cfg, workers=1, upstreams={"u": servers(be, max_connections=8)}))
    # The three that waited in line are served now, not one at a time
    # (which would leave the last two past upstream_connect: 503).
    check(be.wait_for(lambda b: b.stats()["active"] >= 4, 1.0),
          "the queued requests did not reach the backend after max_connections went up "
          "(active %d)" % be.stats()["active"])
    for t in threads:
        t.join(10)
    eq(sorted(res), [0, 1, 2, 3], "requests finished")
    eq([res[i].status for i in range(4)], [200] * 4, "statuses")


def test_reload_lowering_max_connections_holds_the_new_limit():
    "max_connections 4 -> 1 by a reload while 4 are busy and 2 wait: never above 1 again once drained"
    be = backend()
    cfg = {"timeouts": {"upstream_connect": "5s"},
           "routes": [route("all", "/", upstream="u")]}
    f = ferry(workers=1, upstreams={"u": servers(be, max_connections=4)}, **cfg)
    res = {}

    def one(i, ms):
        res[i] = request(f, "GET", "/slow?ms=%d&id=%d" % (ms, i), timeout=15)
    threads = [threading.Thread(target=one, args=(i, 700), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    check(be.wait_for(lambda b: b.stats()["active"] >= 4, 3.0), "four requests not at the backend")
    f.reload(dict(cfg, workers=1, upstreams={"u": servers(be, max_connections=1)}))
    more = [threading.Thread(target=one, args=(i, 300), daemon=True) for i in range(4, 7)]
    for t in more:
        t.start()
        time.sleep(0.03)
    for t in threads + more:
        t.join(15)
    eq(sorted(res), list(range(7)), "requests finished")
    eq([res[i].status for i in range(7)], [200] * 7, "statuses")
    late = sorted((r for r in be.requests if r.query.get("id", ["?"])[0] in ("4", "5", "6")),
                  key=lambda r: r.t_start)
    eq(len(late), 3, "requests that came after the reload")
    for a, b in zip(late, late[1:]):
        check(b.t_start >= a.t_end - 0.01,
              "two requests at the backend at once under max_connections 1 (%s and %s)"
              % (a.target, b.target))


def test_stale_pooled_connection_keeps_its_place_in_line():
    "max_connections 1: a request whose pooled connection closed under it (keep-alive race) is retried on a fresh one at once, not sent behind the request waiting in line"
    conns = []

    def handler(s, head, rest, ev):
        conns.append(1)
        first = len(conns) == 1
        n, buf = 0, rest
        while True:
            n += 1
            if first and n == 2:  # the keep-alive race: closed as the request came
                time.sleep(0.3)
                return
            if b"/slow" in head.split(b"\r\n")[0]:
                time.sleep(1.5)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
    up = RawUpstream(handler)
    f = ferry(workers=1, timeouts={"upstream_connect": "1s"},
              upstreams={"u": servers(up.address, max_connections=1)},
              routes=[route("all", "/", upstream="u")])
    eq(request(f, "GET", "/a1").status, 200, "the first request (its connection is pooled)")
    res = {}

    def one(name, path):
        t0 = time.monotonic()
        res[name] = (request(f, "GET", path, timeout=10).status, time.monotonic() - t0)
    a = threading.Thread(target=one, args=("A", "/a2"), daemon=True)
    a.start()
    time.sleep(0.05)  # A is on the pooled connection; B waits in line
    b = threading.Thread(target=one, args=("B", "/slow"), daemon=True)
    b.start()
    a.join(10)
    b.join(10)
    eq(sorted(res), ["A", "B"], "requests finished")
    eq(res["A"][0], 200, "A, retried after the race (%.2fs)" % res["A"][1])
    eq(res["B"][0], 200, "B, in line behind A (%.2fs)" % res["B"][1])
    check(res["A"][1] < 1.0, "A waited %.2fs" % res["A"][1])



def test_reload_shortening_upstream_idle_applies_to_pooled_connections():
    "upstream_idle 10s -> 300ms by a reload: a connection pooled before it is not reused 700 ms later"
    be = backend()
    cfg = {"workers": 1, "routes": [route("all", "/", upstream="u")],
           "upstreams": {"u": servers(be)}}
    f = ferry(timeouts={"upstream_idle": "10s"}, **cfg)
    eq(request(f, "GET", "/fast").status, 200, "first request")
    eq(be.stats()["connections"], 1, "upstream connections")
    f.reload(dict(cfg, timeouts={"upstream_idle": "300ms"}))
    time.sleep(0.7)
    eq(request(f, "GET", "/fast").status, 200, "request after the reload")
    eq(be.stats()["connections"], 2,
       "upstream connections (the one idle 700 ms past upstream_idle 300ms was reused)")


def basic_status(f, user, pw, timeout=10):
    import base64
    cred = base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
    c = Client(f.port, timeout=timeout)
    try:
        return c.request("GET", "/b/fast", {"Authorization": "Basic " + cred}, timeout=timeout).status
    finally:
        c.close()


def test_basic_checks_nobody_waits_for_are_skipped():
    "Basic auth: password checks whose requests gave up (503 at timeouts.total) are not hashed; the next user is checked at once"
    be = backend()
    users_file = os.path.join(tmpdir(), "users-s8")
    with open(users_file, "w") as fh:
        fh.write("ana:%s\n" % crypt_hash("ana-pw", "$2b$", 10))
    auth = {"basic": {"users_file": users_file, "cache_ttl": "0s"}}

    def start(total):
        return ferry(workers=1, timeouts={"total": total},
                     routes=[route("basic", "/b/", upstream="u", auth=auth)],
                     upstreams={"u": servers(be)})
    f = start("10s")
    t0 = time.monotonic()
    eq(basic_status(f, "ana", "ana-pw"), 200, "ana's password")
    one = time.monotonic() - t0
    f.stop()
    # Each request of the flood gives up after `total` (at least 5 checks);
    # n wrong passwords are n / 2 checks' time on the pool's 2 threads: 4
    # times `total`, so that ana's check would queue far past it.
    total_ms = max(300, int(one * 5000))
    n = min(120, max(24, int(8 * total_ms / (one * 1000)) + 1))
    f = start("%dms" % total_ms)
    out = parallel(n, lambda i: basic_status(f, "ana", "wrong-%d" % i), timeout=60)
    check(all(isinstance(o, int) for o in out), "flood requests failed: %r" % out[:3])
    check(set(out) <= {401, 503}, "flood statuses %r" % sorted(set(out)))
    check(503 in out, "no flood request gave up (one check %.0f ms): %r" % (one * 1000, out))
    # every flood request has given up: ana's check must not queue behind theirs
    t0 = time.monotonic()
    st = basic_status(f, "ana", "ana-pw")
    took = time.monotonic() - t0
    log("one check %.0f ms, total %d ms, %d wrong passwords; then: %s in %.0f ms"
        % (one * 1000, total_ms, n, st, took * 1000))
    eq(st, 200, "ana's password right after a flood that gave up (%.0f ms)" % (took * 1000))


# --- a raw upstream: one handler thread per connection --------------------------------------
class RawUpstream:
    """A loopback server that hands each accepted socket (and what was
    read of its request head) to handler(sock, head) in a thread."""

    def __init__(self, handler):
        self.handler = handler
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.address = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.events = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()
        _cleanups_add(self.stop)

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, _, rest = buf.partition(b"\r\n\r\n")
            self.handler(s, head + b"\r\n\r\n", rest, self.events)
        except OSError as e:
            self.events.append(("error", repr(e)))
        finally:
            s.close()

    def stop(self):
        try:
            self.lsock.close()
        except OSError:
            pass


def _cleanups_add(fn):
    import ferrytest
    ferrytest._cleanups.append(fn)


def read_all(s, timeout=5.0):
    """Reads s until EOF; returns (bytes, "eof" | "reset" | "timeout")."""
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = s.recv(262144)
        except socket.timeout:
            return out, "timeout"
        except ConnectionResetError:
            return out, "reset"
        if not d:
            return out, "eof"
        out += d
    return out, "timeout"


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def open_tunnel(f):
    """A client socket through which the 101 has been read; returns (sock, bytes after the head)."""
    c = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    c.sendall(UPGRADE)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        check(d, "ferry closed before the 101 (got %r)" % buf)
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 101"), "not a 101: %r" % head[:200])
    return c, rest


def test_tunnel_client_half_close():
    "WebSocket tunnel: the client shuts its write side; the upstream still sends 1 MiB, then closes: the client gets every byte, then EOF"
    big = pattern(1 << 20)

    def handler(s, head, rest, ev):
        s.sendall(SWITCH)
        got = rest
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        ev.append(("got", got))
        s.sendall(big)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
    up = RawUpstream(handler)
    f = ferry(upstreams={"ws": servers(up.address)}, routes=[route("ws", "/", upstream="ws")])
    fd0 = f.fd_count()
    c, rest = open_tunnel(f)
    c.sendall(b"hello from the client")
    c.shutdown(socket.SHUT_WR)
    data, how = read_all(c, 10)
    c.close()
    data = rest + data
    eq(how, "eof", "how the client's read ended")
    eq(len(data), len(big), "bytes the client got after its half-close")
    check(data == big, "the bytes differ")
    eq([e for e in up.events if e[0] == "got"], [("got", b"hello from the client")],
       "what the upstream read before the forwarded EOF")
    wait_until(lambda: f.fd_count() <= fd0, 5, what="ferry's descriptors back to %d" % fd0)


def test_tunnel_upstream_half_close():
    "WebSocket tunnel: the upstream shuts its write side first; the client's later bytes still reach it, then the client's close ends the tunnel"
    def handler(s, head, rest, ev):
        s.sendall(SWITCH + b"bye")
        s.shutdown(socket.SHUT_WR)
        got = rest
        s.settimeout(5)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        ev.append(("got", got))
    up = RawUpstream(handler)
    f = ferry(upstreams={"ws": servers(up.address)}, routes=[route("ws", "/", upstream="ws")])
    fd0 = f.fd_count()
    c, rest = open_tunnel(f)
    data, how = read_all(c, 5)
    eq((rest + data, how), (b"bye", "eof"), "the upstream's bytes and its EOF")
    time.sleep(0.2)
    payload = pattern(300000)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    wait_until(lambda: [e for e in up.events if e[0] == "got"], 5,
               what="the upstream to see the client's EOF")
    got = [e for e in up.events if e[0] == "got"][0][1]
    eq(len(got), len(payload), "bytes the upstream got after its half-close")
    c.close()
    wait_until(lambda: f.fd_count() <= fd0, 5, what="ferry's descriptors back to %d" % fd0)



def test_health_check_skips_interim_answers():
    "A health check answered 103 Early Hints (or an unsolicited 100) before its 200 passes: 1xx heads are interim (RFC 9110 15.2)"
    def handler(s, head, rest, ev):
        if b" /hc" in head.split(b"\r\n")[0]:
            s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                      b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        else:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nserved\n")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(2)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    up = RawUpstream(handler)
    hc = {"path": "/hc", "interval": "200ms", "timeout": "500ms", "healthy_after": 1,
          "unhealthy_after": 1}
    f = ferry(upstreams={"u": servers(up.address, health_check=hc)},
              routes=[route("all", "/", upstream="u")])
    wait_until(lambda: up.accepted >= 2, 5, what="two health checks")
    r = request(f, "GET", "/x")
    eq((r.status, r.body), (200, b"served\n"), "a request after the first check (%s)"
       % [ln for ln in f.stderr_text().splitlines() if "health check" in ln][:1])



def test_health_check_refuses_a_four_digit_status():
    "A health check answered \"HTTP/1.1 2000 OK\" fails (not read as 200)"
    def handler(s, head, rest, ev):
        s.sendall(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
    up = RawUpstream(handler)
    hc = {"path": "/hc", "interval": "200ms", "timeout": "500ms", "healthy_after": 1,
          "unhealthy_after": 1}
    f = ferry(upstreams={"u": servers(up.address, health_check=hc)},
              routes=[route("all", "/", upstream="u")])
    wait_until(lambda: up.accepted >= 2, 5, what="two health checks")
    eq(request(f, "GET", "/x").status, 503, "a request while the only server fails its checks")


def test_health_check_status_line_with_a_bare_lf():
    "A health check answered \"HTTP/1.1 200\\n\" (no reason, bare LF) passes, as \"HTTP/1.1 200\\r\\n\" does"
    def handler(s, head, rest, ev):
        if b" /hc" in head.split(b"\r\n")[0]:
            s.sendall(b"HTTP/1.1 200\nContent-Length: 0\nConnection: close\n\n")
        else:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nserved\n")
        s.shutdown(socket.SHUT_WR)
    up = RawUpstream(handler)
    hc = {"path": "/hc", "interval": "200ms", "timeout": "500ms", "healthy_after": 1,
          "unhealthy_after": 1}
    f = ferry(upstreams={"u": servers(up.address, health_check=hc)},
              routes=[route("all", "/", upstream="u")])
    wait_until(lambda: up.accepted >= 2, 5, what="two health checks")
    r = request(f, "GET", "/x")
    eq((r.status, r.body), (200, b"served\n"), "a request after the checks")



def test_redis_refusing_after_connect_backs_off():
    "A rate-limit store that accepts and then refuses (Redis at maxclients) is reconnected with a growing backoff, not every 100 ms"
    refused = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]

    def serve():
        while True:
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            refused.append(time.monotonic())
            try:
                s.sendall(b"-ERR max number of clients reached\r\n")
            except OSError:
                pass
            s.close()
    threading.Thread(target=serve, daemon=True).start()
    _cleanups_add(lsock.close)
    rl = {"requests": 10, "per": "1s", "key": "const:k", "store": "redis://127.0.0.1:%d" % port,
          "on_store_error": "allow"}
    f = ferry(workers=1, routes=[respond_route("r", "/", rate_limit=rl)])
    t0 = time.monotonic()
    eq(request(f, "GET", "/").status, 200, "a request while the store refuses (allow)")
    time.sleep(3.0 - (time.monotonic() - t0))
    n = len(refused)
    log("connections to the refusing store in 3 s: %d" % n)
    # backoff 100, 200, 400, 800, 1600 ms: about 5 (every 100 ms: about 25)
    check(n <= 8, "%d connections in 3 s to a store that refuses each" % n)


if __name__ == "__main__":
    run(globals())
