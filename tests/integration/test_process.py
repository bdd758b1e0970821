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


if __name__ == "__main__":
    run(globals(), budget=60)
