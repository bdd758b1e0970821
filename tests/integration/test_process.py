#!/usr/bin/env python3
"""The process around the workers (issue 19, items 7 and 12): a signal
sent from the moment the pid file names the process (logrotate's SIGUSR1, an operator's SIGHUP)
does not kill ferry during start-up; it comes up, serves, and its pid file
is removed at exit. ~10 s."""
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402


def _pid_in(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _storm(sig):
    f = ferry(routes=[respond_route("ping", "/ping")], start=False)
    f._err = open(f.stderr_path, "ab")
    f.proc = subprocess.Popen([FERRY_BIN, "-c", f.config_path], stdin=subprocess.DEVNULL,
                              stdout=f._err, stderr=f._err, cwd=f.dir)
    ferrytest._register(f.proc)
    ferrytest._cleanups.append(f.stop)
    f.pid = f.proc.pid
    # As logrotate does: `kill -USR1 $(cat pidfile)`, from the moment the pid
    # file names the process (nothing can guard the instants before main runs).
    deadline = time.monotonic() + 10.0
    while f.proc.poll() is None and _pid_in(f.pid_file) != f.pid and time.monotonic() < deadline:
        pass  # a tight loop: the window being tested is short
    sent, up = 0, False
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and f.proc.poll() is None:
        try:
            os.kill(f.pid, sig)
            sent += 1
        except ProcessLookupError:
            break
        if not up:
            try:
                socket.create_connection(("127.0.0.1", f.admin_port), timeout=0.2).close()
                up = True
                deadline = min(deadline, time.monotonic() + 0.3)  # a few more once serving
            except OSError:
                pass
        if up:
            time.sleep(0.001)
    check(f.proc.poll() is None, "ferry died under %s at start-up (%d sent): status %s; stderr:\n%s"
          % (signal.Signals(sig).name, sent, f.proc.returncode, f.stderr_tail()))
    check(up, "ferry never accepted")
    r = request(f, "GET", "/ping")
    eq(r.status, 200, "status after the signals")
    rc = f.stop()
    eq(rc, 0, "exit status")
    check(not os.path.exists(f.pid_file), "pid file left behind")


def test_usr1_at_startup():
    _storm(signal.SIGUSR1)


def test_hup_at_startup():
    _storm(signal.SIGHUP)


def _draining(f, be):
    """Starts a 4 s request, sends SIGTERM, waits for /healthz to say so."""
    import threading
    out = {}
    def slow():
        try:
            out["r"] = request(f, "GET", "/up/slow?ms=4000", timeout=15)
        except Exception as e:  # cut by a second SIGTERM
            out["error"] = e
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_until(lambda: f.status()["live_coroutines"] >= 1, what="the slow request in flight")
    os.kill(f.pid, signal.SIGTERM)
    r = wait_until(lambda: _healthz(f), timeout=3.0, what="/healthz during the drain")
    return t, out, r


def _healthz(f):
    try:
        s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=1)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            buf += c
        s.close()
        return buf if b" 503 " in buf.split(b"\r\n", 1)[0] else None
    except OSError:
        return None


def test_drain_admin_answers_and_usr1():
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[route("up", "/up", upstream="u", strip_prefix="/up")],
              shutdown_timeout="10s")
    t, out, r = _draining(f, be)
    check(b"draining" in r, "/healthz during the drain: %r" % r[:200])
    os.kill(f.pid, signal.SIGUSR1)
    wait_until(lambda: "SIGUSR1" in f.stderr_text(), timeout=3.0, what="SIGUSR1 handled while draining")
    t.join(15)
    f.expect_exit = True
    eq(out["r"].status, 200, "the in-flight request")
    eq(f.proc.wait(10), 0, "exit status after the drain")
    check(not os.path.exists(f.pid_file), "pid file left behind")


def test_second_sigterm_exits_at_once():
    for sig in (signal.SIGTERM, signal.SIGINT):
        be = backend()
        f = ferry(upstreams={"u": servers(be)},
                  routes=[route("up", "/up", upstream="u", strip_prefix="/up")], shutdown_timeout="10s")
        _draining(f, be)
        t0 = time.monotonic()
        os.kill(f.pid, sig)
        try:
            rc = f.proc.wait(3)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc is not None, "a second %s did not end the drain" % signal.Signals(sig).name)
        log("second %s: exit %s after %.2fs" % (signal.Signals(sig).name, rc, time.monotonic() - t0))
        f.expect_exit = True
        check(not os.path.exists(f.pid_file), "pid file left behind")


if __name__ == "__main__":
    run(globals(), budget=60)
