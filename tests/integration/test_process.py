#!/usr/bin/env python3
"""The process around the workers (issue 19, items 7 and 12): a signal
sent from the moment the pid file names the process (logrotate's SIGUSR1, an operator's SIGHUP)
does not kill ferry during start-up; it comes up, serves, and its pid file
is removed at exit, also by the exit(1) when a worker thread cannot start
(pthread_create failed by an LD_PRELOAD shim; skipped under sanitizers).
Draining: the admin listener answers, /healthz 503 "draining", SIGUSR1
reopens the log; a second SIGTERM or SIGINT exits at once. ~15 s."""
import os
import resource
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
    "while draining: /healthz 503 draining; logrotate's rename + SIGUSR1 moves the in-flight request's line to the new file"
    be = backend()
    access = os.path.join(ferrytest.tmpdir(), "drain-access.log")
    f = ferry(upstreams={"u": servers(be)}, routes=[route("up", "/up", upstream="u", strip_prefix="/up")],
              shutdown_timeout="10s", access_log={"path": access, "format": "json"})
    t, out, r = _draining(f, be)
    check(b"draining" in r, "/healthz during the drain: %r" % r[:200])
    os.rename(access, access + ".1")
    os.kill(f.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(access), timeout=3.0, what="the access log reopened while draining")
    t.join(15)
    f.expect_exit = True
    eq(out["r"].status, 200, "the in-flight request")

    def logged():
        with open(access) as fh:
            return "/slow" in fh.read()
    # The line is written after the answer is handed to the kernel.
    wait_until(logged, timeout=5.0, what="the in-flight request's line in the reopened log")
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



THREAD_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
static int calls;
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    const char *s = getenv("FERRY_FAIL_THREAD");
    if (s && __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) == atoi(s))
        return EAGAIN;
    int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT, "pthread_create");
    return real(t, a, fn, arg);
}
"""


def test_out_of_threads_removes_pid_file():
    "the second worker thread cannot start (EAGAIN, as under RLIMIT_NPROC): exit 1, the pid file removed"
    if is_sanitized():
        raise Skip("LD_PRELOAD shim under a sanitizer build")
    d = ferrytest.tmpdir()
    src = os.path.join(d, "thread_shim.c")
    lib = os.path.join(d, "thread_shim.so")
    with open(src, "w") as fh:
        fh.write(THREAD_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl"], check=True)
    f = ferry(workers=2, routes=[respond_route("ping", "/ping")], start=False)
    with open(f.stderr_path, "ab") as err:
        p = subprocess.Popen([FERRY_BIN, "-c", f.config_path], stdin=subprocess.DEVNULL,
                             stdout=err, stderr=err, cwd=f.dir,
                             env=dict(os.environ, LD_PRELOAD=lib, FERRY_FAIL_THREAD="2"))
        ferrytest._register(p)
        try:
            rc = p.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
    check(rc is not None, "ferry did not exit when a worker thread could not start")
    eq(rc, 1, "exit status")
    check("out of threads" in f.stderr_text(), "no error said why: %r" % f.stderr_tail())
    check(not os.path.exists(f.pid_file), "pid file left behind by the exit(1) at start-up")


def _fd_table_size(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("FDSize:"):
                return int(line.split()[1])
    raise Fail("no FDSize in /proc/%d/status" % pid)


def test_descriptor_table_grown_at_start():
    "the descriptor table holds a client and an upstream socket per connection from the start"
    # Grown later, by the kernel's doubling, each growth in a threaded
    # process waits for an RCU grace period (tens of ms with no answers).
    f = ferry(workers=2, limits={"max_connections": 1500}, routes=[respond_route("ping", "/ping")])
    eq(request(f, "GET", "/ping").status, 200, "ping")
    want = 2 * 1500 * 2 + 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    size = _fd_table_size(f.pid)
    check(size >= min(want, soft), "descriptor table of %d slots, want %d" % (size, min(want, soft)))
    # Capped: a large max_connections does not take a table of millions.
    g = ferry(limits={"max_connections": 10000000}, routes=[respond_route("ping", "/ping")])
    check(_fd_table_size(g.pid) <= 2 * 65536, "descriptor table past the cap: %d" % _fd_table_size(g.pid))


if __name__ == "__main__":
    run(globals(), budget=60)
