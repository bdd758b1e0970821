#!/usr/bin/env python3
"""Unix-socket listeners (issue 19, items 5 and 6): two workers serve one
unix listener; start-up replaces only a stale socket at a listener or
admin path (a regular file or a live socket: a clear error, no start, the
file untouched); a clean exit removes the sockets. ~5 s."""
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def make(sock_path, admin_path=None):
    f = ferry(routes=[respond_route("ping", "/ping")], start=False)
    cfg = {"workers": 2, "pid_file": f.pid_file,
           "listen": [{"address": f.address}, {"address": "unix:" + sock_path}],
           "access_log": {"path": "stderr", "format": "json"},
           "admin": {"listen": ("unix:" + admin_path) if admin_path else "127.0.0.1:%d" % f.admin_port},
           "routes": [respond_route("ping", "/ping")]}
    if admin_path:
        f.admin_port = None
    with open(f.config_path, "w") as fh:
        fh.write(to_yaml(cfg) + "\n")
    f.config_text = to_yaml(cfg)
    return f


def unix_get(path, target="/ping"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n")
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return buf


def test_two_workers_one_unix_listener():
    d = tmpdir()
    path = os.path.join(d, "l.sock")
    admin = os.path.join(d, "admin.sock")
    f = make(path, admin_path=admin).start()
    for _ in range(20):
        r = unix_get(path)
        check(r.startswith(b"HTTP/1.1 200"), "unix GET: %r" % r[:100])
    check(unix_get(admin, "/healthz").startswith(b"HTTP/1.1 200"), "admin on a unix socket")
    eq(f.stop(), 0, "exit status")
    check(not os.path.exists(path), "the unix socket is left behind after a clean exit")
    check(not os.path.exists(admin), "the admin socket is left behind after a clean exit")


def test_stale_socket_replaced():
    d = tmpdir()
    path = os.path.join(d, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # a socket file nobody listens on: what a crash leaves
    f = make(path).start()
    check(unix_get(path).startswith(b"HTTP/1.1 200"), "served on the replaced socket")
    f.stop()


def _refused(path_kind, admin):
    d = tmpdir()
    path = os.path.join(d, "%s-%s.sock" % (path_kind, "admin" if admin else "listen"))
    holder = None
    if path_kind == "file":
        with open(path, "w") as fh:
            fh.write("precious\n")
    else:
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(path)
        holder.listen(1)
    f = make(os.path.join(d, "ok-%s.sock" % path_kind) if admin else path, admin_path=path if admin else None)
    try:
        f.start(timeout=5)  # the TCP listener may accept before the admin fails
    except Fail:
        pass
    f.expect_exit = True
    try:
        rc = f.proc.wait(10)
    except subprocess.TimeoutExpired:
        rc = None
    eq(rc, 1, "exit status of ferry over a %s at %s" % (path_kind, path))
    check(not os.path.exists(f.pid_file), "pid file left behind by the failed start")
    err = f.stderr_text()
    check(path in err, "no error naming %s: %r" % (path, err[-300:]))
    if path_kind == "file":
        with open(path) as fh:
            eq(fh.read(), "precious\n", "the regular file")
    else:
        check(os.path.exists(path), "the live socket was removed")
        holder.close()


def test_regular_file_refused():
    _refused("file", admin=False)
    _refused("file", admin=True)


def test_live_socket_refused():
    _refused("live", admin=False)
    _refused("live", admin=True)


if __name__ == "__main__":
    run(globals(), budget=60)
