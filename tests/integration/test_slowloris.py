#!/usr/bin/env python3
"""Slowloris (issue 6, point 5): Debian's slowhttptest opens 1,000
connections at 500/s against Ferry, in -H mode (a head trickled a line a
second: client_header 2s is absolute, so each is cut at 2 s although it
never stalls) and in -B mode (a POST body trickled every 5 s to a proxied
route: client_body 2s cuts each 2 s after its last byte). Throughout, a
probe makes a fresh request every 20 ms: every one answers and their p99 is
under 500 ms (the failure this guards against, a loop held up by slow
clients, costs seconds; tighter bounds only measure the shared machine).
Afterwards every slow connection was closed by Ferry (as slowhttptest
counts them), each with a 408 logged no later than its deadline plus 0.5 s
(a body's deadline moves with each byte: two gaps), and connections,
coroutines and descriptors are back at baseline. SLOW: ~25 s."""
import csv
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

SLOWHTTPTEST = shutil.which("slowhttptest") or "/usr/bin/slowhttptest"
CONNS = 1000
RATE = 500
DEADLINE_MS = 2000


class Probe:
    """Fresh-connection GETs every 20 ms in a thread; latencies in seconds."""

    def __init__(self, port, path="/ping"):
        self.port, self.path = port, path
        self.lat, self.failures = [], []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _one(self):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
                      % self.path.encode())
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
                r, _ = parse_response(buf)
                if r is not None:
                    break
            r, _ = parse_response(buf, eof=True)
            if r is None or r.status != 200:
                raise Fail("probe answer %r" % buf[:100])
            return time.monotonic() - t0
        finally:
            s.close()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.lat.append(self._one())
            except Exception as e:  # noqa: B902 -- reported by check()
                self.failures.append("%s: %s" % (type(e).__name__, e))
            self.stop.wait(0.02)

    def finish(self):
        self.stop.set()
        self.t.join(5)

    def check(self, what):
        check(not self.failures, "%s: %d probes failed: %r" % (what, len(self.failures),
                                                               self.failures[:3]))
        check(len(self.lat) >= 50, "%s: only %d probes ran" % (what, len(self.lat)))
        lat = sorted(self.lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        log("   %s: %d probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
            % (what, len(lat), lat[len(lat) // 2] * 1e3, p99 * 1e3, lat[-1] * 1e3))
        check(p99 < 0.500, "%s: probe p99 %.1f ms (limit 500 ms)" % (what, p99 * 1e3))


def slowhttptest(mode, url, interval, length=10):
    prefix = os.path.join(tmpdir(), "slowhttptest-%s" % mode.strip("-"))
    args = [SLOWHTTPTEST, mode, "-c", str(CONNS), "-r", str(RATE), "-i", str(interval),
            "-l", str(length), "-x", "10", "-p", "3", "-s", "4096", "-u", url,
            "-g", "-o", prefix]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    import ferrytest
    ferrytest._register(p)
    try:
        out, _ = p.communicate(timeout=length + 30)
    except subprocess.TimeoutExpired:
        kill_pid(p, 1.0)
        raise Fail("slowhttptest %s ran past %d s" % (mode, length + 30))
    text = out.decode("utf-8", "replace")
    check(p.returncode == 0, "slowhttptest %s exit status %s: %s" % (mode, p.returncode, text[-500:]))
    with open(prefix + ".csv") as fh:
        rows = [r for r in csv.DictReader(fh)]
    check(rows, "slowhttptest wrote no statistics")
    return rows, text


def setup():
    if not os.access(SLOWHTTPTEST, os.X_OK):
        raise Skip("slowhttptest is not installed")
    be = backend_process()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping"),
                      route("up", "/up", upstream="u", strip_prefix="/up")],
              timeouts={"client_header": "%dms" % DEADLINE_MS, "client_body": "%dms" % DEADLINE_MS})
    return be, f


def run_mode(mode, path, interval, late_ms):
    be, f = setup()
    fd0 = f.fd_count()
    probe = Probe(f.port)
    try:
        t0 = time.monotonic()
        rows, text = slowhttptest(mode, f.url(path), interval)
        log("   slowhttptest %s ran %.1fs; last: %r" % (mode, time.monotonic() - t0, rows[-1]))
        time.sleep(0.5)
    finally:
        probe.finish()
    f.assert_alive()
    probe.check("probes during slowhttptest " + mode)
    peak = max(int(r["Connected"]) for r in rows)
    log("   peak connected %d (slowhttptest's csv, sampled each second)" % peak)
    # The guard is that the load happened at all: on a loaded machine
    # slowhttptest opens slower than 500/s (peak 498 seen with two busy
    # cores), so a quarter of CONNS at once is the bar.
    check(peak >= CONNS // 4, "slowhttptest %s never had many connections up (peak %d)"
          % (mode, peak))
    # slowhttptest ends before its 10 s when no connection is left open:
    # every one was closed by Ferry (its last csv row is written earlier)
    check("No open connections left" in text,
          "slowhttptest %s ended with connections still open: %r" % (mode, text[-400:]))
    # every answer but the probes' 200s (a cut head has no path to log)
    slow = [e for e in f.access_log() if e.get("status") != 200]
    statuses = {}
    for e in slow:
        statuses[e["status"]] = statuses.get(e["status"], 0) + 1
    check(len(slow) >= CONNS * 0.98, "%s: %d slow requests logged (%r), expected about %d"
          % (mode, len(slow), statuses, CONNS))
    check(set(statuses) == {408}, "%s: statuses of the slow requests: %r" % (mode, statuses))
    late = [e["duration_ms"] for e in slow if e["duration_ms"] > late_ms]
    check(not late, "%s: %d slow requests lived past %d ms (max %.0f ms)"
          % (mode, len(late), late_ms, max(late) if late else 0))
    # a request's clock starts when its coroutine does, which on a loaded
    # machine can be a little after the head's bytes arrived
    early = [e["duration_ms"] for e in slow if e["duration_ms"] < DEADLINE_MS - 500]
    check(not early, "%s: %d slow requests cut before their deadline (min %.0f ms)"
          % (mode, len(early), min(early) if early else 0))
    wait_until(lambda: f.status()["connections"] == 0, 5.0, 0.1,
               what="connections back to 0 after slowhttptest " + mode)
    f.wait_baseline(fd0, 0, timeout=10)


def test_slow_headers():
    "slowhttptest -H, 1,000 connections, a header line a second: cut at client_header 2s, probes fast"
    # never cut would be slowhttptest's whole 10 s: 1.5 s of slack leaves
    # room for a loaded machine and still tells the two apart
    run_mode("-H", "/ping", 1, DEADLINE_MS + 1500)


def test_slow_body():
    "slowhttptest -B, 1,000 proxied POSTs, body bits every 5 s: cut at client_body 2s, probes fast"
    # client_body is a gap between reads, and slowhttptest sends its body
    # bits on one clock for all connections: one made shortly before a
    # tick gets bytes inside its first gap and lives up to two gaps (the
    # next tick is 5 s away, past both). Never cut would be 10 s.
    run_mode("-B", "/up/upload", 5, 2 * DEADLINE_MS + 1500)


if __name__ == "__main__":
    run(globals(), budget=120)
