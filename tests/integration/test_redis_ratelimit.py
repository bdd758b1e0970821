#!/usr/bin/env python3
"""Shared rate limits (issue 17, item 2): rate_limit.store in a real
redis-server (the Debian binary, started here on a free loopback port,
killed by PID). Two Ferry processes share one limit: burst + rate x T
admitted within 2 %, and a small bucket's last token taken exactly once
across both; Redis stopped: on_store_error allow (200) and deny (503),
fast, counted in /metrics; Redis restarted on the same port: sharing
resumes. A silent store (accepts, never answers) hits Ferry's deadline;
its outstanding commands are bounded (queue_full fails at once). A reload
to another store URL takes effect. Skipped only when redis-server is not
installed. About 20 s."""
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402

REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None

    def start(self):
        if not REDIS:
            raise Skip("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", tmpdir()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ferrytest._register(self.proc)
        ferrytest._cleanups.append(self.stop)
        wait_until(lambda: self.ping(), 10.0, what="redis-server answering PING")
        return self

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc:
            kill_pid(self.proc, 3.0)
            self.proc = None

    def url(self, db=0):
        return "redis://127.0.0.1:%d/%d" % (self.port, db)


def limited_routes(url, prefix=""):
    return [
        respond_route("big", "/big", rate_limit={
            "requests": 50, "per": "1s", "burst": 20, "key": "const:" + prefix + "big",
            "store": url, "on_store_error": "allow"}),
        respond_route("small", "/small", rate_limit={
            "requests": 1, "per": "60s", "burst": 4, "key": "const:" + prefix + "small",
            "store": url, "on_store_error": "deny"}),
    ]


def metrics(f):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()
    finally:
        c.close()


def store_errors(f, route, outcome):
    n = 0
    for line in metrics(f).splitlines():
        if line.startswith("ferry_ratelimit_store_errors_total{") and \
                ('route="%s"' % route) in line and ('outcome="%s"' % outcome) in line:
            n += int(line.rsplit(" ", 1)[1])
    return n


def small_bucket_shared(fa, fb, what):
    "requests + burst = 5 tokens for a minute: exactly 5 of 20 admitted across both"
    ca, cb = Client(fa.port), Client(fb.port)
    statuses = []
    for i in range(10):
        statuses.append(ca.request("GET", "/small").status)
        statuses.append(cb.request("GET", "/small").status)
    ca.close()
    cb.close()
    log("%s: %r" % (what, statuses))
    eq(statuses.count(200), 5, "%s: admitted across both instances" % what)
    eq(statuses.count(429), 15, "%s: refused" % what)


def test_two_instances_share_then_fallback_then_resume():
    "two Ferrys, one Redis: burst + rate x T within 2 %; Redis down: fallback; back: shared"
    r = Redis().start()
    fa = ferry(workers=2, routes=limited_routes(r.url()))
    fb = ferry(workers=2, routes=limited_routes(r.url()))
    small_bucket_shared(fa, fb, "shared small bucket")

    counts = {"a": 0, "b": 0, "limited": 0, "other": 0}
    lock = threading.Lock()
    duration = 4.0
    start = time.monotonic()
    stop_at = start + duration
    ends = []

    def hammer(f, name):
        c = Client(f.port)
        n = 0
        while time.monotonic() < stop_at and n < 20000:
            n += 1
            st = c.request("GET", "/big").status
            with lock:
                if st == 200:
                    counts[name] += 1
                elif st == 429:
                    counts["limited"] += 1
                else:
                    counts["other"] += 1
        with lock:
            ends.append(time.monotonic())
        c.close()

    threads = [threading.Thread(target=hammer, args=(f, n))
               for f, n in ((fa, "a"), (fb, "b")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = max(ends) - start
    ok = counts["a"] + counts["b"]
    expected = 70 + 50 * elapsed  # capacity (requests + burst) + rate x T
    log("admitted %d (a %d, b %d), limited %d in %.2fs: expected %.1f, off by %.2f %%"
        % (ok, counts["a"], counts["b"], counts["limited"], elapsed, expected,
           100.0 * (ok - expected) / expected))
    eq(counts["other"], 0, "answers other than 200 and 429")
    check(counts["a"] > 0 and counts["b"] > 0, "both instances admitted some: %r" % counts)
    check(counts["limited"] > ok, "the limit was reached: %r" % counts)
    check(abs(ok - expected) <= 0.02 * expected,
          "admitted %d, expected %.1f within 2 %%" % (ok, expected))

    # Redis stopped: allow -> 200, deny -> 503, quickly (the connection is
    # known down: no wait for the deadline), counted
    allowed0 = store_errors(fa, "big", "allow")
    r.stop()
    time.sleep(0.3)
    c = Client(fa.port)
    for i in range(20):
        t0 = time.monotonic()
        eq(c.request("GET", "/big").status, 200, "allow with Redis down (%d)" % i)
        resp = c.request("GET", "/small")
        took = time.monotonic() - t0
        eq(resp.status, 503, "deny with Redis down (%d)" % i)
        eq(resp.header("Retry-After"), "1", "deny's Retry-After")
        check(took < 1.0, "two answers with Redis down took %.3fs" % took)
    c.close()
    moved = store_errors(fa, "big", "allow") - allowed0
    check(moved >= 20, "allow decisions counted: %d" % moved)
    check(store_errors(fa, "small", "deny") >= 20, "deny decisions counted")
    check("on_store_error" in fa.stderr_text(), "the fallback is logged")
    check(fa.stderr_text().count("on_store_error") < 20, "... not once per request")

    # Redis back on the same port: the background reconnect finds it
    r2 = Redis(r.port).start()

    def both_back():
        return all(Client(f.port).request("GET", "/small").status != 503 for f in (fa, fb))
    wait_until(both_back, 15.0, what="both instances reconnected (backoff at most 5 s)")
    r2.stop()
    r2.start()  # an empty Redis again: a full bucket for the next check
    wait_until(both_back, 15.0, what="both instances reconnected again")
    # both_back took one token per instance from the fresh bucket
    ca, cb = Client(fa.port), Client(fb.port)
    st = [ca.request("GET", "/small").status for _ in range(5)] + \
         [cb.request("GET", "/small").status for _ in range(5)]
    ca.close()
    cb.close()
    log("after the restart: %r" % st)
    eq(st.count(200), 3, "shared again: 5 tokens, 2 taken by the reconnect probes")
    fa.assert_alive()
    fb.assert_alive()


def silent_server():
    "a loopback TCP server that accepts, reads and never answers"
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    stop = threading.Event()
    conns = []

    def serve():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                s, _ = ls.accept()
                s.settimeout(0.2)
                conns.append(s)
            except OSError:
                pass
            for s in list(conns):
                try:
                    s.recv(65536)
                except OSError:
                    pass
        for s in conns:
            s.close()
        ls.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join(5)
    ferrytest._cleanups.append(close)
    return ls.getsockname()[1], conns


def test_silent_store_deadline_and_bound():
    "a store that never answers: deadline + fallback in time; outstanding commands bounded"
    if not REDIS:
        raise Skip("redis-server is not installed (apt-get install redis-server)")
    port, accepted = silent_server()
    url = "redis://127.0.0.1:%d" % port
    f = ferry(workers=1, routes=[
        respond_route("allow", "/allow", rate_limit={
            "requests": 5, "store": url, "store_timeout": "100ms"}),
        respond_route("deny", "/deny", rate_limit={
            "requests": 5, "store": url, "store_timeout": "100ms", "on_store_error": "deny"})])
    c = Client(f.port)
    for path, want in (("/allow", 200), ("/deny", 503), ("/allow", 200)):
        t0 = time.monotonic()
        eq(c.request("GET", path).status, want, "GET %s through a silent store" % path)
        took = time.monotonic() - t0
        log("GET %s: %.3fs" % (path, took))
        check(0.09 <= took < 0.1 + 1.0, "answered at the deadline (100 ms) + slack: %.3fs" % took)
    c.close()
    check("timeout" in metrics(f), "timeouts counted")

    # 1,024 commands may be outstanding; beyond, a request fails at once
    done = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + 20

    def flood():
        cl = Client(f.port)
        for _ in range(22):
            if time.monotonic() > stop_at:
                break
            st = cl.request("GET", "/allow").status
            with lock:
                done[0] += st == 200
        cl.close()
    threads = [threading.Thread(target=flood) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    eq(done[0], 50 * 22, "every flooded request allowed")
    page = metrics(f)
    check('reason="queue_full"' in page, "beyond 1024 outstanding: queue_full\n%s" % page)
    c = Client(f.port)
    t0 = time.monotonic()
    eq(c.request("GET", "/deny").status, 503, "deny with the queue full")
    took = time.monotonic() - t0
    check(took < 0.09, "the queue is full: no wait for the deadline (%.3fs)" % took)
    c.close()
    # no reply for 10 s with commands outstanding: the connection is dropped
    # and made again (a dead peer that sent no FIN)
    wait_until(lambda: len(accepted) >= 2, 20.0, what="a reconnect after 10 s of silence")
    c = Client(f.port)
    t0 = time.monotonic()
    eq(c.request("GET", "/deny").status, 503, "deny through the new connection")
    took = time.monotonic() - t0
    check(0.09 <= took < 1.1, "a fresh queue: the deadline again (%.3fs)" % took)
    c.close()
    f.assert_alive()


class FakeRedis:
    """A loopback server speaking just enough RESP: it parses each command
    and answers it as self.mode says: "error" (-ERR), "type" (a bulk
    string), "short" (an array of 2), "midclose" (half a reply, then it
    closes), "late" (a valid admit 300 ms late), "ok" (a valid admit)."""

    def __init__(self):
        self.mode = "ok"
        self.commands = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.accept_loop, daemon=True)]
        self.threads[0].start()
        ferrytest._cleanups.append(self.stop)

    def stop(self):
        self.stop_ev.set()
        for t in list(self.threads):
            t.join(5)
        self.ls.close()

    def accept_loop(self):
        self.ls.settimeout(0.2)
        while not self.stop_ev.is_set():
            try:
                s, _ = self.ls.accept()
            except OSError:
                continue
            t = threading.Thread(target=self.serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def parse(buf):
        "one command off buf: (args, rest) or (None, buf)"
        if not buf.startswith(b"*") or b"\r\n" not in buf:
            return None, buf
        head, rest = buf.split(b"\r\n", 1)
        args = []
        for _ in range(int(head[1:])):
            if b"\r\n" not in rest:
                return None, buf
            ln, rest2 = rest.split(b"\r\n", 1)
            n = int(ln[1:])
            if len(rest2) < n + 2:
                return None, buf
            args.append(rest2[:n])
            rest = rest2[n + 2:]
        return args, rest

    def serve(self, s):
        s.settimeout(0.2)
        buf = b""
        admit = b"*4\r\n:1\r\n:3\r\n:0\r\n:20000\r\n"
        with s:
            while not self.stop_ev.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while True:
                    args, buf = self.parse(buf)
                    if args is None:
                        break
                    self.commands += 1
                    mode = self.mode
                    try:
                        if mode == "error":
                            s.sendall(b"-ERR boom\r\n")
                        elif mode == "type":
                            s.sendall(b"$5\r\nhello\r\n")
                        elif mode == "short":
                            s.sendall(b"*2\r\n:1\r\n:2\r\n")
                        elif mode == "midclose":
                            s.sendall(b"*4\r\n:1\r\n:3")
                            return
                        elif mode == "hugearray":  # 3.2 GB announced in 14 bytes
                            s.sendall(b"*400000000\r\n")
                        elif mode == "late":
                            time.sleep(0.3)
                            s.sendall(admit)
                        else:
                            s.sendall(admit)
                    except OSError:
                        return


def test_bad_replies_and_late_replies():
    "an error, a wrong type, a short array, a close mid-reply, a late reply: fallback, no crash"
    fake = FakeRedis()
    url = "redis://127.0.0.1:%d" % fake.port
    f = ferry(workers=1, routes=[respond_route("deny", "/", rate_limit={
        "requests": 5, "store": url, "store_timeout": "100ms", "on_store_error": "deny",
        "key": "header:X-Key"})])
    c = Client(f.port)
    # the first request may find the connection still being made: it waits
    eq(c.request("GET", "/").status, 200, "a valid admit from the fake store")
    for mode in ("error", "type", "short"):
        fake.mode = mode
        eq(c.request("GET", "/").status, 503, "a reply of kind %s: deny" % mode)
    page = metrics(f)
    check('reason="bad_reply"' in page, "bad replies counted:\n%s" % page)
    fake.mode = "ok"
    eq(c.request("GET", "/").status, 200, "good replies again")
    fake.mode = "midclose"
    eq(c.request("GET", "/").status, 503, "the store closed mid-reply: deny")
    fake.mode = "ok"
    wait_until(lambda: c.request("GET", "/").status == 200, 10.0,
               what="reconnected after the close mid-reply")
    # late replies: each request gives up at 100 ms; the reply comes at 300 ms
    # and finds an orphaned wait record (ASan builds would see a use after free)
    fake.mode = "late"
    for i in range(5):
        hdr = {"X-Key": "k%%n%%s\"evil-key\"\\%d" % i}
        eq(c.request("GET", "/", headers=hdr).status, 503, "late reply %d: deny" % i)
    c.close()
    # clients that leave while their request waits for the store
    for i in range(5):
        cl = Client(f.port)
        cl.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Key: gone\r\n\r\n")
        cl.close()
    time.sleep(2.0)  # every late reply is in
    fake.mode = "ok"
    c = Client(f.port)
    wait_until(lambda: c.request("GET", "/").status == 200, 10.0, what="prompt replies again")
    c.close()
    check("evil-key" not in f.stderr_text(), "a key's bytes are never logged")
    f.assert_alive()


def test_unreachable_at_start_then_reload_to_live_store():
    "a dead store at start: a warning, Ferry starts, deny; a reload to a live store applies"
    r = Redis().start()
    dead = "redis://127.0.0.1:%d/0" % free_port()
    f = ferry(routes=limited_routes(dead, "reload-"))
    wait_until(lambda: "rate_limit store " + dead in f.stderr_text(), 5.0,
               what="a warning naming the store, before any request")
    c = Client(f.port)
    eq(c.request("GET", "/big").status, 200, "allow with a dead store")
    eq(c.request("GET", "/small").status, 503, "deny with a dead store")
    f.reload({"routes": limited_routes(r.url(3), "reload-")})
    st = [c.request("GET", "/small").status for _ in range(7)]
    log("after the reload: %r" % st)
    eq(st, [200] * 5 + [429] * 2, "the new store decides")
    c.close()
    f.assert_alive()


def test_huge_array_header_is_refused():
    """A store announcing an array of 400,000,000 replies: hiredis would
    allocate it whole and free it element by element, holding up the
    worker (1.4-3 s under ASan, found by the attack review); Ferry refuses
    arrays longer than its script's reply, drops the connection, and the
    deny route answers 503 while another route is served at once."""
    fake = FakeRedis()
    fake.mode = "hugearray"
    f = ferry(workers=1, routes=[respond_route("n", "/nolimit"), respond_route("r", "/lim", rate_limit={
        "requests": 5, "store": "redis://127.0.0.1:%d" % fake.port, "on_store_error": "deny"})])
    c = Client(f.port)
    got = []
    t = threading.Thread(target=lambda: got.append(c.request("GET", "/lim").status))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    st = Client(f.port).request("GET", "/nolimit").status
    took = time.monotonic() - t0
    t.join(10)
    eq(st, 200, "another route on the same worker")
    check(took < 1.0, "the worker was held up %.3f s by one reply header" % took)
    eq(got, [503], "the deny route falls back")
    f.assert_alive()


def test_database_the_store_lacks_never_admits():
    """redis://.../99 on a Redis with 16 databases: every command fails
    (the script selects its database), none runs in database 0 (a SELECT
    sent once on connect failed while the EVALs queued behind it ran in
    database 0: a deny route admitted)."""
    r = Redis().start()
    f = ferry(workers=1, routes=[respond_route("r", "/", rate_limit={
        "requests": 5, "key": "const:k", "store": "redis://127.0.0.1:%d/99" % r.port,
        "on_store_error": "deny"})])
    sts = []
    lock = threading.Lock()

    def go():
        c = Client(f.port)
        for _ in range(10):
            st = c.request("GET", "/").status
            with lock:
                sts.append(st)
    ts = [threading.Thread(target=go) for _ in range(10)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    eq(sorted(set(sts)), [503], "every request of a deny route falls back: %r" % sts)


if __name__ == "__main__":
    run(globals(), budget=120.0)
