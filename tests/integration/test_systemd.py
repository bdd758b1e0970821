#!/usr/bin/env python3
"""systemd without systemd: the notify protocol on a unix datagram socket
given as NOTIFY_SOCKET (READY=1 at start; RELOADING=1 with MONOTONIC_USEC
then READY=1 around a reload, good or bad, with STATUS= saying which;
STATUS= with connections, requests/s and the config's load time;
WATCHDOG=1 when WATCHDOG_USEC is set; STOPPING=1), and a listening socket
inherited the way systemd passes it (LISTEN_FDS/LISTEN_PID, fd 3), matched
to the YAML's address, given the options ferry sets on its own listeners
and kept across a reload. ~20 s."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402


class Notify:
    def __init__(self, d):
        self.path = os.path.join(d, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []

    def wait(self, pred, timeout=5.0, what="a notification"):
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.msgs):
                if pred(m):
                    del self.msgs[:i + 1]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("no %s within %.0fs; got %r" % (what, timeout, self.msgs))
            self.sock.settimeout(left)
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass


def _start(f, env, pass_fd=None):
    f._err = open(f.stderr_path, "ab")
    e = dict(os.environ, **env)
    args = [FERRY_BIN, "-c", f.config_path]
    pre = None
    if pass_fd is not None:
        # As systemd does: the socket at fd 3, LISTEN_PID = the process's own pid.
        args = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -c "$1"',
                FERRY_BIN, f.config_path]

        def pre():
            os.dup2(pass_fd, 3)
    f.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f._err, stderr=f._err,
                              cwd=f.dir, env=e, preexec_fn=pre,
                              pass_fds=(3,) if pass_fd is not None else ())
    ferrytest._register(f.proc)
    ferrytest._cleanups.append(f.stop)
    f.pid = f.proc.pid
    wait_until(lambda: _accepts(f.port) or f.proc.poll() is not None, 10)
    f.assert_alive()


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_notify_protocol():
    """READY, WATCHDOG, STATUS, RELOADING/READY (good and bad), STOPPING."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")], start=False)
    n = Notify(f.dir)
    _start(f, {"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "400000"})
    m = n.wait(lambda m: "READY=1" in m, what="READY=1 at start")
    check("STATUS=serving" in m and "MAINPID=%d" % f.pid in m, "start notification: %r" % m)
    n.wait(lambda m: m == "WATCHDOG=1", what="WATCHDOG=1")
    n.wait(lambda m: m == "WATCHDOG=1", what="a second WATCHDOG=1")
    eq(request(f, "GET", "/").status, 200, "a request")
    m = n.wait(lambda m: "requests/s" in m, 6, what="STATUS= with requests/s")
    check(re.search(r"STATUS=serving: \d+ connections, \d+ requests/s, config loaded in [0-9.]+ ms",
                    m), "periodic STATUS: %r" % m)

    f.reload({"routes": [respond_route("r", "/", body="two\n")]})
    m = n.wait(lambda m: "RELOADING=1" in m, what="RELOADING=1")
    check(re.search(r"MONOTONIC_USEC=\d+", m), "MONOTONIC_USEC with RELOADING=1: %r" % m)
    m = n.wait(lambda m: "READY=1" in m, what="READY=1 after a reload")
    check("reloaded" in m, "STATUS after a good reload: %r" % m)

    f.reload(yaml_text="routes: [\n", expect="keeping")
    n.wait(lambda m: "RELOADING=1" in m, what="RELOADING=1 (bad file)")
    m = n.wait(lambda m: "READY=1" in m, what="READY=1 after a bad reload")
    check("reload failed" in m and "ferry.yaml:" in m, "STATUS after a bad reload: %r" % m)
    eq(request(f, "GET", "/").body, b"two\n", "the good config serves on")

    f.stop()
    n.wait(lambda m: "STOPPING=1" in m, what="STOPPING=1")


def test_socket_activation():
    """fd 3 from LISTEN_FDS serves the YAML's address; a reload keeps it."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    port = ls.getsockname()[1]
    f = ferry(routes=[respond_route("r", "/", body="one\n")], start=False)
    f.port = port
    f.address = "127.0.0.1:%d" % port
    f.write_config({"routes": [respond_route("r", "/", body="one\n")]})
    _start(f, {}, pass_fd=ls.fileno())
    ls.close()  # only ferry holds it now
    eq(request(f, "GET", "/").body, b"one\n", "served on the inherited socket")
    check("socket activation: listen 127.0.0.1:%d from descriptor 3" % port in f.stderr_text(),
          "the log says where the socket came from")
    f.reload({"routes": [respond_route("r", "/", body="two\n")]})
    eq(request(f, "GET", "/").body, b"two\n", "the inherited socket after a reload")
    check(re.search(r"socket:\[\d+\]", f.fds().get(3, "")), "fd 3 still open: %r" % f.fds())


def _tcp_opt(sock, opt):
    return sock.getsockopt(socket.IPPROTO_TCP, opt)


def _backlog(port):
    """A listening socket's queue limit (ss shows it as Send-Q), or None
    without ss."""
    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2]) if len(out) >= 3 else -1


def _inherited_ferry(ls, listeners):
    port = ls.getsockname()[1]
    f = ferry(routes=[respond_route("r", "/", body="one\n")], start=False)
    f.port = port
    f.address = "127.0.0.1:%d" % port
    for ln in listeners:
        ln["address"] = f.address
    f.write_config({"routes": [respond_route("r", "/", body="one\n")]}, listeners=listeners)
    _start(f, {}, pass_fd=ls.fileno())
    # Served: the workers run, so ferry has matched the socket (and set its
    # options). The test's copy of the socket is the same open file
    # description: its options are what ferry set.
    eq(request(f, "GET", "/").body, b"one\n", "served on the inherited socket")
    return f


def test_socket_activation_sets_listener_options():
    """A socket from a unit without NoDelay=, DeferAcceptSec= or Backlog=
    gets what ferry sets on the sockets it binds itself: TCP_NODELAY (the
    accepted connections inherit it; without it an answer written in two
    writes waits for the client's delayed ACK), TCP_DEFER_ACCEPT
    (defer_accept: true) and the YAML's backlog; a reload applies a new
    backlog and defer_accept: false."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    eq(_tcp_opt(ls, socket.TCP_NODELAY), 0, "TCP_NODELAY before ferry")
    eq(_tcp_opt(ls, socket.TCP_DEFER_ACCEPT), 0, "TCP_DEFER_ACCEPT before ferry")
    f = _inherited_ferry(ls, [{"backlog": 100}])
    port = f.port
    check(_tcp_opt(ls, socket.TCP_NODELAY) != 0, "TCP_NODELAY set by ferry on the passed socket")
    check(_tcp_opt(ls, socket.TCP_DEFER_ACCEPT) != 0, "TCP_DEFER_ACCEPT set (defer_accept: true)")
    if _backlog(port) is not None:
        eq(_backlog(port), 100, "the YAML's backlog")
    # A connection accepted from that socket has it: accepted here, with
    # ferry stopped so that it does not take the connection first.
    with stopped(f.pid):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"G")  # deferred accept: handed over once bytes came
        ls.settimeout(10)
        while True:  # this connection, not one queued before ferry set the options
            a, peer = ls.accept()
            if peer == c.getsockname():
                break
            a.close()
        check(_tcp_opt(a, socket.TCP_NODELAY) != 0, "an accepted connection has TCP_NODELAY")
        a.close()
        c.close()

    f.reload({"routes": [respond_route("r", "/", body="two\n")]},
             listeners=[{"address": f.address, "backlog": 50, "defer_accept": False}])
    eq(_tcp_opt(ls, socket.TCP_DEFER_ACCEPT), 0, "defer_accept: false after a reload")
    check(_tcp_opt(ls, socket.TCP_NODELAY) != 0, "TCP_NODELAY kept")
    if _backlog(port) is not None:
        eq(_backlog(port), 50, "a new backlog after a reload")
    eq(request(f, "GET", "/").body, b"two\n", "served after the reload")
    ls.close()


def test_socket_activation_keeps_unit_defer_accept():
    """defer_accept: true keeps a unit's longer DeferAcceptSec= (ferry says
    on or off, not how long); defer_accept: false turns a unit's off."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    ls.listen(16)
    unit = _tcp_opt(ls, socket.TCP_DEFER_ACCEPT)  # the kernel rounds it up (7)
    check(unit >= 5, "DeferAcceptSec=5 as a unit sets it: %d" % unit)
    f = _inherited_ferry(ls, [{}])
    eq(_tcp_opt(ls, socket.TCP_DEFER_ACCEPT), unit, "the unit's delay kept")
    f.stop()

    f = _inherited_ferry(ls, [{"defer_accept": False}])
    eq(_tcp_opt(ls, socket.TCP_DEFER_ACCEPT), 0, "defer_accept: false turns it off")
    ls.close()


def test_socket_activation_unix_path_stays():
    """A unix socket from the socket unit serves its listen: address and its
    path survives ferry's exit and reloads (the unit owns it: removing it
    would leave the unit unreachable after a restart)."""
    f = ferry(routes=[respond_route("r", "/", body="one\n")], start=False)
    path = os.path.join(f.dir, "inherited.sock")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen(16)
    listeners = [{"address": f.address}, {"address": "unix:" + path}]
    f.write_config({"routes": [respond_route("r", "/", body="one\n")]}, listeners=listeners)
    _start(f, {}, pass_fd=ls.fileno())
    ls.close()

    def get():
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(10)
        c.connect(path)
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
        c.close()
        return buf
    check(get().endswith(b"one\n"), "served on the inherited unix socket")
    f.reload({"routes": [respond_route("r", "/", body="two\n")]}, listeners=listeners)
    check(get().endswith(b"two\n"), "and after a reload")
    f.stop()
    check(os.path.exists(path), "the socket unit's path survives ferry's exit")


def test_user_unknown():
    """user: naming no user: a clear error, no start."""
    f = ferry(routes=[respond_route("r", "/")], user="no-such-user-ferry", start=False)
    rc, out, err = run_ferry_cli(["-c", f.config_path])
    eq(rc, 1, "exit status")
    check("user no-such-user-ferry: no such user" in err, "the error: %r" % err)


def test_user_switch():
    """Started as root with user: nobody, the process runs as nobody after
    binding; a reload that cannot read the file keeps the old config."""
    if os.geteuid() != 0:
        raise Skip("not root")
    import pwd
    nobody = pwd.getpwnam("nobody")
    f = ferry(routes=[respond_route("r", "/", body="one\n")], user="nobody")
    uids = f.proc_status("Uid").split()
    eq(set(int(u) for u in uids), {nobody.pw_uid}, "every uid of the process")
    eq(request(f, "GET", "/").body, b"one\n", "serves")
    os.chmod(f.config_path, 0o600)  # root-only now, as a key file would be
    line = f.reload({"routes": [respond_route("r", "/", body="two\n")], "user": "nobody"},
                    expect="keeping")
    os.chmod(f.config_path, 0o600)
    check("ermission denied" in line, "the reload says why: %r" % line)
    eq(request(f, "GET", "/").body, b"one\n", "the old config serves on")


if __name__ == "__main__":
    run(globals(), budget=60)
