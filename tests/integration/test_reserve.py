#!/usr/bin/env python3
"""The spare descriptor kept for running out of descriptors (issue 19,
item 10). When accept fails with EMFILE a worker closes its spare, accepts
and closes one client (who sees a close instead of hanging in the backlog),
and opens the spare again. Workers share one descriptor table, so another
thread can take the freed slot first and that re-open fails; the spare must
then be re-armed as soon as a descriptor is free, or every later shortage
leaves clients hanging.

The lost re-open is made deterministic with a small LD_PRELOAD shim,
compiled here, that fails the Nth open("/dev/null") with EMFILE (the spare
is the only /dev/null ferry opens), as the other thread's accept would.
Skipped under sanitizer builds (their runtime must come first in the
preload list). The same loss, provoked for real: two workers under
RLIMIT_NOFILE 64 race for the slots their spares free in a burst of clients
during a shortage; before the re-arm, clients after such a burst hung
(seen in round 2 or 4 of 4). ~20 s."""
import os
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
static int calls;
static int fail_at(void)
{
    const char *s = getenv("FERRY_FAIL_DEVNULL_OPEN");
    return s ? atoi(s) : 0;
}
static int shim(const char *name, const char *path, int flags, va_list ap)
{
    mode_t mode = (flags & O_CREAT) ? va_arg(ap, mode_t) : 0;
    if (strcmp(path, "/dev/null") == 0 && __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) == fail_at()) {
        errno = EMFILE;
        return -1;
    }
    int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name);
    return real(path, flags, mode);
}
int open(const char *path, int flags, ...)
{ va_list ap; va_start(ap, flags); int r = shim("open", path, flags, ap); va_end(ap); return r; }
int open64(const char *path, int flags, ...)
{ va_list ap; va_start(ap, flags); int r = shim("open64", path, flags, ap); va_end(ap); return r; }
"""

NOFILE = 64


def sanitized():
    out = subprocess.run(["ldd", FERRY_BIN], capture_output=True, text=True).stdout
    return "libasan" in out or "libubsan" in out


def fill(port, limit=200):
    """Opens connections until Ferry closes new ones at once (out of
    descriptors). Returns the open sockets and whether a close was seen."""
    held = []
    for _ in range(limit):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.settimeout(1.5)
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            data = s.recv(4096)
        except socket.timeout:
            s.close()
            return held, False  # a client left hanging: no spare to spend
        except ConnectionResetError:
            data = b""  # closed with our request unread: a reset
        if data == b"":
            s.close()
            return held, True  # accepted and closed: the spare was spent
        held.append(s)  # answered; the keep-alive connection holds a descriptor
    return held, False


def test_spare_rearmed_after_a_lost_reopen():
    "after the spare's re-open fails, the next descriptor shortage still closes clients instead of leaving them hanging"
    if sanitized():
        raise Skip("LD_PRELOAD shim under a sanitizer build")
    d = ferrytest.tmpdir()
    src = os.path.join(d, "shim.c")
    lib = os.path.join(d, "shim.so")
    with open(src, "w") as fh:
        fh.write(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl"], check=True)
    f = ferry(workers=1, routes=[respond_route("ping", "/ping")], admin=False, start=False,
              timeouts={"client_idle": "60s"})
    env = dict(os.environ, LD_PRELOAD=lib,
               # 1: the spare at start-up; 2: its re-open after the first
               # shortage, which the shim fails as another thread would.
               FERRY_FAIL_DEVNULL_OPEN="2")
    f._err = open(f.stderr_path, "ab")
    f.proc = subprocess.Popen(
        [FERRY_BIN, "-c", f.config_path], stdin=subprocess.DEVNULL, stdout=f._err,
        stderr=f._err, cwd=f.dir, env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))
    ferrytest._register(f.proc)
    ferrytest._cleanups.append(f.stop)
    f.pid = f.proc.pid
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", f.port), timeout=0.5).close()
            break
        except OSError:
            check(time.monotonic() < deadline and f.proc.poll() is None, "ferry did not start")
            time.sleep(0.05)
    for round_ in (1, 2, 3):
        held, closed = fill(f.port)
        log("   round %d: %d connections held, then %s" % (
            round_, len(held), "a client accepted and closed" if closed else "a client left hanging"))
        check(closed, "round %d: a client beyond the descriptor limit hung instead of being closed"
              % round_)
        for s in held:
            s.close()
        time.sleep(0.5)  # the listener resumes (100 ms) and the spare is re-armed
    r = request(f, "GET", "/ping")
    eq(r.status, 200, "status once descriptors are free")



def _burst(port, n, timeout):
    """n clients at once while Ferry is out of descriptors. Returns how many
    were answered, closed, and left hanging past timeout."""
    out = {"answered": 0, "closed": 0, "hung": 0}
    lock = threading.Lock()

    def one():
        kind = "closed"
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            s.settimeout(timeout)
            try:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                kind = "answered" if s.recv(4096) else "closed"
            except socket.timeout:
                kind = "hung"
            except OSError:
                kind = "closed"
            finally:
                s.close()
        except socket.timeout:
            kind = "hung"
        except OSError:
            kind = "closed"
        with lock:
            out[kind] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return out


def test_two_workers_under_rlimit():
    "workers: 2 under RLIMIT_NOFILE 64: in each shortage clients are accepted and closed, not left hanging; afterwards served"
    f = ferry(workers=2, routes=[respond_route("ping", "/ping")], admin=False, start=False,
              timeouts={"client_idle": "60s"})
    f._err = open(f.stderr_path, "ab")
    f.proc = subprocess.Popen(
        [FERRY_BIN, "-c", f.config_path], stdin=subprocess.DEVNULL, stdout=f._err,
        stderr=f._err, cwd=f.dir,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))
    ferrytest._register(f.proc)
    ferrytest._cleanups.append(f.stop)
    f.pid = f.proc.pid
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", f.port), timeout=0.5).close()
            break
        except OSError:
            check(time.monotonic() < deadline and f.proc.poll() is None, "ferry did not start")
            time.sleep(0.05)
    for round_ in (1, 2, 3, 4):
        held, closed = fill(f.port)
        try:
            check(closed, "round %d: a client beyond the descriptor limit hung instead of being closed"
                  % round_)
            # Both workers in the shortage at once: their spares race for
            # the slots each frees (a lost re-open is what this provokes).
            b = _burst(f.port, 40, 8.0)
            probes = []
            for _ in range(6):
                more, c = fill(f.port, limit=1)
                held += more
                probes.append("closed" if c else "answered" if more else "hung")
            log("   round %d: %d held; burst %r; then probes %s" % (
                round_, len(held), b, " ".join(probes)))
            eq(b["hung"], 0, "round %d: clients of a burst left hanging" % round_)
            # A probe that was answered took a descriptor that freed up;
            # the spare could not be re-opened in it (threads share one
            # descriptor table), so a probe after it may wait until one
            # frees again. Without an answered probe before it, a hang
            # means the spare was never re-armed.
            first_hang = probes.index("hung") if "hung" in probes else None
            check(first_hang is None or "answered" in probes[:first_hang],
                  "round %d: a client after the burst hung instead of being closed" % round_)
        finally:
            for s in held:
                s.close()
        t0 = time.monotonic()
        while True:  # the listeners resume within 100 ms once descriptors are free
            try:
                if request(f, "GET", "/ping", timeout=1).status == 200:
                    break
            except Fail:
                pass
            check(time.monotonic() - t0 < 3, "round %d: not served again 3 s after the shortage"
                  % round_)
            time.sleep(0.05)
    f.assert_alive()


if __name__ == "__main__":
    run(globals())
