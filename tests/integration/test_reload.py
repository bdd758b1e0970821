#!/usr/bin/env python3
"""Live reload (SIGHUP): a valid file applies whole to new requests while
requests in flight finish on the old config; listeners that stay keep their
socket, new ones are bound, removed ones stop accepting; pools of unchanged
servers carry over; an invalid file, a missing one or a listen address in
use is one log line and the old config keeps serving. ~20 s."""
import base64
import hashlib
import http.client
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def _get(port, path):
    c = Client(port)
    try:
        c.send("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        return c.response()
    finally:
        c.close()


def _listen_inodes(f, port):
    """Inodes of ferry's listening sockets on port (from /proc/net/tcp)."""
    out = set()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                out.add(parts[9])
    mine = set(re.findall(r"socket:\[(\d+)\]", " ".join(f.fds().values())))
    return out & mine


def test_route_change_applies_to_keepalive_client():
    """A keep-alive client gets the new route's answer on its next request."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")])
    c = Client(f.port)
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    eq(c.response().body, b"one\n", "before the reload")
    line = f.reload({"routes": [respond_route("r", "/", body="two\n")]})
    check(re.search(r"applied in [0-9.]+ ms", line), "reload line names its time: %s" % line)
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.response()
    eq(r.body, b"two\n", "same connection after the reload")
    check(r.header("Connection", "").lower() != "close", "the connection stays open")
    eq(_get(f.port, "/").body, b"two\n", "a new connection")
    c.close()


def _metric(f, pattern):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    m = re.search(pattern, text, re.M)
    return int(m.group(1)) if m else None


def _metric_reaches(f, pattern, want, timeout=3.0):
    """The metric once it equals want (or its last value after timeout): a
    request is counted once its answer is out, which the client may see
    before the worker counts it."""
    last = [None]

    def probe():
        last[0] = _metric(f, pattern)
        return last[0] == want
    wait_until(probe, timeout)
    return last[0]


def test_metrics_run_on():
    """Counters of a route kept by name run on across a reload; a new
    route starts at zero, a removed one is gone."""
    f = ferry(routes=[respond_route("keep", "/k"), respond_route("gone", "/g")])
    for _ in range(3):
        _get(f.port, "/k")
    _get(f.port, "/g")
    f.reload({"routes": [respond_route("new", "/n"), respond_route("keep", "/k")]})
    _get(f.port, "/k")
    eq(_metric_reaches(f, r'^ferry_requests_total\{route="keep",code="2xx"\} (\d+)', 4), 4,
       "the kept route's count")
    eq(_metric(f, r'^ferry_requests_total\{route="new",code="2xx"\} (\d+)'), 0, "the new route")
    eq(_metric(f, r'^ferry_requests_total\{route="gone",code="2xx"\} (\d+)'), None,
       "the removed route")


def test_metrics_count_requests_in_flight():
    """A request that finishes on the old config after the reload is
    counted in the kept route's counters."""
    slow = backend("slow")
    cfg = {"upstreams": {"u": servers(slow)}, "routes": [route("s", "/", upstream="u")],
           "workers": 1}
    f = ferry(**cfg)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=_get(f.port, "/x/slow?ms=800")))
    t.start()
    slow.wait_for(lambda b: b.active >= 1, 5)
    cfg["routes"] = [respond_route("other", "/other"), route("s", "/", upstream="u")]
    f.reload(cfg)
    t.join(10)
    eq(result["r"].status, 200, "the request in flight")
    _get(f.port, "/other")  # a turn of the loop after the old snapshot went
    eq(_metric_reaches(f, r'^ferry_requests_total\{route="s",code="2xx"\} (\d+)', 1), 1,
       "counted after the reload")
    eq(_metric(f, r'^ferry_upstream_responses_total\{upstream="u",server="%s",code="2xx"\} (\d+)'
               % re.escape(slow.address)), 1, "the server's count")


def test_invalid_file_keeps_serving():
    """Invalid YAML, a schema error, a missing file: one log line with
    FILE:LINE:COLUMN (or the file's error), the old config serves on."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")])
    line = f.reload(yaml_text="listen: [\n  - address: {\n", expect="keeping")
    check(re.search(r"ferry\.yaml:\d+:\d+: ", line), "FILE:LINE:COLUMN in %r" % line)
    eq(_get(f.port, "/").body, b"one\n", "old config after a YAML error")
    line = f.reload({"routes": [respond_route("r", "/", body="two\n")], "wrokers": 2},
                    expect="keeping")
    check(re.search(r"ferry\.yaml:\d+:\d+: .*wrokers", line), "unknown key named: %r" % line)
    eq(_get(f.port, "/").body, b"one\n", "old config after a schema error")
    os.unlink(f.config_path)
    line = f.reload(expect="keeping")
    check(f.config_path in line, "the missing file named: %r" % line)
    eq(_get(f.port, "/").body, b"one\n", "old config with the file gone")
    f.reload({"routes": [respond_route("r", "/", body="three\n")]})
    eq(_get(f.port, "/").body, b"three\n", "a good file after bad ones applies")
    lines = [ln for ln in f.stderr_text().splitlines() if "keeping the running config" in ln]
    eq(len(lines), 3, "one log line per refused reload")


def test_listeners_kept_added_removed():
    """The kept listener keeps its sockets; a new one is bound; a removed one
    stops accepting while its open keep-alive connection is still served."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")])
    before = _listen_inodes(f, f.port)
    check(before, "listening sockets found")
    p2 = free_port()
    two = [{"address": f.address}, {"address": "127.0.0.1:%d" % p2}]
    f.reload({"routes": [respond_route("r", "/", body="two\n")]}, listeners=two)
    eq(_listen_inodes(f, f.port), before, "the kept listener's sockets")
    eq(_get(p2, "/").body, b"two\n", "the new listener")
    c = Client(p2)
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    eq(c.response().status, 200, "keep-alive on the second listener")
    f.reload({"routes": [respond_route("r", "/", body="three\n")]})
    refused = False
    try:
        socket.create_connection(("127.0.0.1", p2), timeout=2).close()
    except OSError:
        refused = True
    check(refused, "the removed listener refuses new connections")
    time.sleep(0.3)  # idle after the reload: not cut meanwhile
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.response()
    eq(r.body, b"three\n", "its open connection is served, not cut")
    eq(r.header("Connection", "").lower(), "close", "...and told it closes")
    c._fill(time.monotonic() + 2)
    check(c.eof and not c.reset, "closed after that answer, without a reset")
    c.close()
    eq(_listen_inodes(f, f.port), before, "the kept listener's sockets, again")


def test_listen_address_in_use():
    """A new listen address someone else holds: the reload is refused whole."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")])
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen(1)
    busy = hold.getsockname()[1]
    two = [{"address": f.address}, {"address": "127.0.0.1:%d" % busy}]
    line = f.reload({"routes": [respond_route("r", "/", body="two\n")]}, listeners=two,
                    expect="keeping")
    check("127.0.0.1:%d" % busy in line and "in use" in line, "names the address: %r" % line)
    eq(_get(f.port, "/").body, b"one\n", "no half-applied config")
    hold.close()


def test_pool_and_inflight_across_reloads():
    """An unchanged server keeps its pooled connection; a request in flight
    to an upstream the new config removes finishes on the old config."""
    be = backend("a")
    slow = backend("slow")
    ups = {"api": servers(be), "slowup": servers(slow)}
    routes = [route("s", "/slow", upstream="slowup"), route("a", "/", upstream="api")]
    f = ferry(routes=routes, upstreams=ups, workers=1)
    eq(_get(f.port, "/fast").status, 200, "warm the pool")
    conns = be.stats()["connections"]
    result = {}

    def inflight():
        result["r"] = _get(f.port, "/slow/slow?ms=1500")
    t = threading.Thread(target=inflight)
    t.start()
    slow.wait_for(lambda b: b.active >= 1, 5)
    f.reload({"upstreams": {"api": servers(be)}, "workers": 1,
              "routes": [respond_route("s", "/slow", status=410, body="gone\n"),
                         route("a", "/", upstream="api")]})
    eq(_get(f.port, "/fast").status, 200, "the kept upstream")
    eq(be.stats()["connections"], conns, "the pooled connection carried over")
    eq(_get(f.port, "/slow/x").status, 410, "new requests see the new route")
    t.join(10)
    eq(result["r"].status, 200, "the request in flight finished on the old config")
    eq(result["r"].body, b"slow\n", "its body")


def _echo_upgrade_backend():
    """A raw backend answering an Upgrade with 101, then echoing bytes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        try:
            c, _ = ls.accept()
        except OSError:
            return
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(4096)
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head).group(1)
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                               .digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    return ls


def test_tunnel_survives_reload():
    """A WebSocket tunnel stays open across a reload that removes its
    upstream and route."""
    ls = _echo_upgrade_backend()
    addr = "127.0.0.1:%d" % ls.getsockname()[1]
    f = ferry(routes=[route("ws", "/ws", upstream="ws")],
              upstreams={"ws": {"servers": [{"address": addr}]}})
    c = Client(f.port)
    c.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    r = c.response()
    eq(r.status, 101, "upgraded")
    c.send(b"\x81\x05hello")
    check(wait_until(lambda: c._fill(time.monotonic() + 0.2) and b"hello" in c.buf, 5),
          "echo before the reload")
    c.buf = b""
    f.reload({"routes": [respond_route("other", "/", body="new\n")]})
    c.send(b"\x81\x05again")
    check(wait_until(lambda: c._fill(time.monotonic() + 0.2) and b"again" in c.buf, 5),
          "echo after the reload: the tunnel stayed open")
    c.close()
    ls.close()
    eq(_get(f.port, "/").body, b"new\n", "the new config serves")


def test_reload_storm():
    """SIGHUP 50 times a second for 5 s, good and bad files in turn, under
    requests: no failed request, no crash, whole configs only."""
    f = ferry(routes=[respond_route("r", "/", body="v0\n")])
    stop = threading.Event()
    bad = []
    count = [0]

    def load():
        c = Client(f.port)
        while not stop.is_set():
            c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.response()
            if r.status != 200 or not re.match(rb"^v\d+\n$", r.body):
                bad.append(r)
            count[0] += 1
        c.close()
    ts = [threading.Thread(target=load) for _ in range(4)]
    for t in ts:
        t.start()
    end = time.monotonic() + 5
    i = 0
    while time.monotonic() < end:
        i += 1
        if i % 3 == 0:
            f.write_config(yaml_text="routes: [\n")
        else:
            f.write_config({"routes": [respond_route("r", "/", body="v%d\n" % i)]})
        os.kill(f.pid, signal.SIGHUP)
        time.sleep(0.02)
    stop.set()
    for t in ts:
        t.join(10)
    f.assert_alive()
    eq(bad, [], "answers during the storm")
    check(count[0] > 50, "requests were served during the storm (%d)" % count[0])
    f.reload({"routes": [respond_route("r", "/", body="last\n")]})
    eq(_get(f.port, "/").body, b"last\n", "the last file applies")


if __name__ == "__main__":
    run(globals(), budget=90)
