#!/usr/bin/env python3
"""Rolling deploys on the admin listener: POST
/upstreams/NAME/servers/ADDRESS/drain takes a server out of rotation (its
pooled connections close, requests in flight finish), /ready puts it back,
GET /upstreams shows each server's state, and the state survives a reload.
Every server drained: 503. ~5 s."""
import http.client
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def _admin(f, method, path):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _states(f):
    st, body = _admin(f, "GET", "/upstreams")
    eq(st, 200, "GET /upstreams")
    return {s["address"]: s["state"] for u in json.loads(body)["upstreams"] for s in u["servers"]}


def test_drain_ready_across_reload():
    """Drain, requests avoid it, a reload keeps it drained, ready again."""
    a, b = backend("a"), backend("b")
    cfg = {"upstreams": {"api": servers(a, b)}, "routes": [route("api", "/", upstream="api")]}
    f = ferry(**cfg)
    eq(_states(f), {a.address: "ready", b.address: "ready"}, "both ready")
    for _ in range(4):
        eq(request(f, "GET", "/fast").status, 200, "warm both pools")
    check(b.stats()["open_connections"] >= 1, "b has a pooled connection")
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=request(f, "GET", "/x/slow?ms=800")))
    # in flight on a or b; whichever it is finishes
    t.start()
    time.sleep(0.2)
    st, body = _admin(f, "POST", "/upstreams/api/servers/%s/drain" % b.address)
    eq(st, 200, "drain: %s" % body)
    eq(json.loads(body)["state"], "drained", "the answer")
    before = b.stats()["requests"]
    for _ in range(10):
        eq(request(f, "GET", "/fast").status, 200, "requests while b is drained")
    eq(b.stats()["requests"], before, "b got no new request")
    check(wait_until(lambda: b.stats()["open_connections"] == 0, 5),
          "b's pooled connections closed: %r" % b.stats())
    t.join(5)
    eq(slow["r"].status, 200, "the request in flight finished")
    cfg["routes"] = [route("api2", "/", upstream="api")]
    f.reload(cfg)
    eq(_states(f)[b.address], "drained", "drained after a reload")
    for _ in range(4):
        request(f, "GET", "/fast")
    eq(b.stats()["requests"], before, "still no request to b")
    st, _ = _admin(f, "POST", "/upstreams/api/servers/%s/drain" % a.address)
    eq(request(f, "GET", "/fast").status, 503, "every server drained")
    _admin(f, "POST", "/upstreams/api/servers/%s/ready" % b.address)
    eq(request(f, "GET", "/fast").status, 200, "b is back")
    check(b.stats()["requests"] > before, "b serves again")
    eq(_states(f), {a.address: "drained", b.address: "ready"}, "the states")


def test_ready_a_drained_server_a_reload_removed():
    """A server drained, then removed by a reload: /ready still clears it
    (404 before: nothing could, and a reload adding it back found it
    drained); a server never drained and not in the config stays a 404."""
    a, b = backend("a"), backend("b")
    cfg = {"upstreams": {"api": servers(a, b)}, "routes": [route("api", "/", upstream="api")]}
    f = ferry(**cfg)
    eq(_admin(f, "POST", "/upstreams/api/servers/%s/drain" % b.address)[0], 200, "drain b")
    cfg["upstreams"] = {"api": servers(a)}
    f.reload(cfg)
    eq(_admin(f, "POST", "/upstreams/api/servers/%s/drain" % b.address)[0], 404,
       "drain of a server not in the config")
    st, body = _admin(f, "POST", "/upstreams/api/servers/%s/ready" % b.address)
    eq(st, 200, "ready of the removed, drained b: %s" % body)
    eq(json.loads(body)["state"], "ready", "the answer")
    eq(_admin(f, "POST", "/upstreams/api/servers/%s/ready" % b.address)[0], 404,
       "ready again: no entry left")
    cfg["upstreams"] = {"api": servers(a, b)}
    f.reload(cfg)
    eq(_states(f), {a.address: "ready", b.address: "ready"}, "b added back: ready")
    before = b.stats()["requests"]
    for _ in range(4):
        eq(request(f, "GET", "/fast").status, 200, "requests")
    check(b.stats()["requests"] > before, "b serves")


def test_bad_admin_requests():
    """Unknown upstream or server: 404; GET on a drain path: 405."""
    a = backend("a")
    f = ferry(upstreams={"api": servers(a)}, routes=[route("api", "/", upstream="api")])
    eq(_admin(f, "POST", "/upstreams/nope/servers/%s/drain" % a.address)[0], 404, "upstream")
    eq(_admin(f, "POST", "/upstreams/api/servers/127.0.0.1:1/drain")[0], 404, "server")
    eq(_admin(f, "POST", "/upstreams/api/servers/%s/explode" % a.address)[0], 404, "action")
    eq(_admin(f, "GET", "/upstreams/api/servers/%s/drain" % a.address)[0], 405, "method")
    eq(_admin(f, "POST", "/upstreams/api/servers/%s%%00/drain" % a.address)[0], 404, "NUL")
    eq(request(f, "GET", "/fast").status, 200, "still serving")


def test_admin_unix_socket_mode():
    """A unix admin socket is made 0660 whatever the umask: owner and group."""
    path = os.path.join(tmpdir(), "admin-%d.sock" % os.getpid())
    old = os.umask(0)
    try:
        f = ferry(config={"admin": {"listen": "unix:" + path}}, admin=False,
                  routes=[respond_route("r", "/")])
    finally:
        os.umask(old)
    def listening():
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    # Ferry binds, chmods, then listens: once a connect succeeds the mode is
    # final (the file exists with the umask's mode a moment before, but
    # nobody can connect to it yet; a check then saw 0777 on a busy machine).
    check(wait_until(listening, 5), "the socket listens")
    eq(oct(os.stat(path).st_mode & 0o777), oct(0o660), "its mode")
    f.stop()


if __name__ == "__main__":
    run(globals(), budget=60)
