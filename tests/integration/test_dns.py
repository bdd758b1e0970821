#!/usr/bin/env python3
"""DNS names as server addresses: a tiny DNS responder on loopback (UDP,
stdlib) answers A queries for a test name with a 1 s TTL; Ferry asks it
(`resolver:`). Two real backends listen on 127.0.0.1 and 127.0.0.2 with the
same port (an A record carries no port). While a bounded load runs, the
answer moves from A to B: no request fails, traffic reaches B within a few
TTLs and A gets no new request after. A failing resolver (SERVFAIL, then
silence) keeps the last good set, logged once per change of state. A name
that does not resolve at start is a warning; its requests fail until it
resolves. A name flipping every TTL leaves no descriptor behind."""

import re
import socket
import struct
import threading
import time
import http.client

from ferrytest import *

NAME = "api.dns.test"


class Responder:
    """Answers A queries for NAME with self.ips (TTL self.ttl); mode
    "answer", "servfail", "nxdomain" or "silent" (no reply). Other types:
    no error, no answer. Counts the queries for NAME."""

    def __init__(self, ips, ttl=1):
        self.ips = list(ips)
        self.ttl = ttl
        self.mode = "answer"
        self.delay = 0  # seconds before each reply
        self.queries = 0
        self.other_names = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def set(self, ips=None, mode="answer"):
        with self.lock:
            if ips is not None:
                self.ips = list(ips)
            self.mode = mode

    def stop(self):
        self.stopping = True
        self.sock.close()

    def _send_late(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass

    def _loop(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            reply = self._answer(data)
            if reply and self.delay:
                threading.Timer(self.delay, self._send_late, (reply, peer)).start()
            elif reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        if qd != 1:
            return None
        i, labels = 12, []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        i += 1
        if i + 4 > len(q):
            return None
        qtype, _ = struct.unpack("!HH", q[i:i + 4])
        question = q[12:i + 4]  # echoed as asked (evdns randomizes the case)
        with self.lock:
            ours = ".".join(labels).lower() == NAME
            if ours:
                self.queries += 1
            else:
                self.other_names.append(".".join(labels).lower())
            mode, ips, ttl = self.mode, list(self.ips), self.ttl
        if not ours:
            mode = "nxdomain"
        if mode == "silent":
            return None
        rcode = {"servfail": 2, "nxdomain": 3}.get(mode, 0)
        answers = []
        if rcode == 0 and qtype == 1:
            for ip in ips:
                answers.append(struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(ip))
        head = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        return head + question + b"".join(answers)


def two_backends():
    a = backend("A")
    b = Backend(port=a.port, host="127.0.0.2", name="B").start()
    from ferrytest import _cleanups
    _cleanups.append(b.stop)
    return a, b


def dns_ferry(dns, port, up=None, **kw):
    u = dict(up or {})
    u["servers"] = [{"address": "%s:%d" % (NAME, port)}]
    return ferry(resolver=["127.0.0.1:%d" % dns.port],
                 routes=[route("r", "/", upstream="u")], upstreams={"u": u}, **kw)


class Load:
    """Threads sending GET /fast on keep-alive connections until stopped
    (bounded: at most `limit` requests each, and `seconds`)."""

    def __init__(self, f, threads=4, limit=4000, seconds=30.0):
        self.f = f
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.stopping = False
        self.deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self._run, args=(limit,), daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, limit):
        c = None
        for _ in range(limit):
            if self.stopping or time.monotonic() > self.deadline:
                break
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.f.port, timeout=10)
                c.request("GET", "/fast")
                r = c.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append(r.status)
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failed.append(repr(e))
                c = None
            time.sleep(0.002)
        if c:
            c.close()

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(15)


def test_answer_moves_under_load():
    "the answer moves from A to B under load: no failure, B within a few TTLs, A gets nothing after"
    a, b = two_backends()
    dns = Responder(["127.0.0.1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port, up={"host_header": "upstream"})
    load = Load(f)
    try:
        a.wait_for(lambda s: len(s.requests) >= 50, timeout=10)
        check(len(a.requests) >= 50, "A serves the load before the change (%d)" % len(a.requests))
        eq(len(b.requests), 0, "B's requests before the change")
        t0 = time.monotonic()
        dns.set(["127.0.0.2"])
        b.wait_for(lambda s: len(s.requests) >= 1, timeout=10)
        moved = time.monotonic() - t0
        check(len(b.requests) >= 1, "B gets traffic after the answer changed")
        log("traffic reached B %.2f s after the answer changed (TTL 1 s)" % moved)
        check(moved < 6.0, "traffic moves within a few TTLs (took %.2f s)" % moved)
        time.sleep(0.5)  # requests already on their way to A end
        a_after = len(a.requests)
        b_before = len(b.requests)
        time.sleep(2.0)
        eq(len(a.requests), a_after, "A's requests after the move")
        check(len(b.requests) > b_before + 20, "B serves the load (%d)" % (len(b.requests) - b_before))
        host = b.last().header("Host")
        eq(host, "%s:%d" % (NAME, a.port), "Host sent to B (host_header: upstream default)")
    finally:
        load.stop()
    eq(load.failed, [], "failed requests during the move")
    log("%d requests, none failed" % load.ok)
    eq([s["address"] for s in f.status()["upstreams"]["u"]], ["%s:%d@127.0.0.2" % (NAME, a.port)],
       "/status addresses")
    err = f.stderr_text()
    check("dns: %s: 1 addresses (1 new, 1 gone): 127.0.0.2" % NAME in err, "the change is logged")


def test_answer_moves_with_health_checks():
    "with health checks, the moved-to address starts up (it replaces one in service): no 503 during the move"
    a, b = two_backends()
    dns = Responder(["127.0.0.1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port, up={"health_check": {"path": "/fast", "interval": "1s"}})
    wait_until(lambda: request(f, "GET", "/fast").status == 200, timeout=5, what="A checked up")
    load = Load(f)
    try:
        a.wait_for(lambda s: len(s.requests) >= 50, timeout=10)
        dns.set(["127.0.0.2"])
        b.wait_for(lambda s: len(s.requests) >= 50, timeout=10)
        check(len(b.requests) >= 50, "B serves after the move")
        time.sleep(0.5)
    finally:
        load.stop()
    eq(load.failed, [], "failed requests during the move (5 503s before the fix)")
    log("%d requests, none failed" % load.ok)


def test_failure_keeps_last_set():
    "SERVFAIL and then silence keep the last good set, logged once; recovery is logged"
    a, b = two_backends()
    dns = Responder(["127.0.0.1", "127.0.0.2"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port)
    q0 = dns.queries
    dns.set(mode="servfail")
    needle = "dns: %s: " % NAME
    wait_until(lambda: "keeping its last 2 addresses" in f.stderr_text(), timeout=8,
               what="the failure logged")
    # retried (every 5 s) without a new line; silence (timeouts) is the same state
    dns.set(mode="silent")
    q1 = dns.queries
    wait_until(lambda: dns.queries >= q1 + 2, timeout=20, what="the name asked again")
    lines = [ln for ln in f.stderr_text().splitlines() if needle in ln and "keeping" in ln]
    eq(len(lines), 1, "failure lines (once per change of state)")
    check(dns.queries > q0 + 2, "the name was asked again (%d queries)" % (dns.queries - q0))
    for i in range(20):
        r = request(f, "GET", "/fast")
        eq(r.status, 200, "request %d while the resolver fails" % i)
    check(len(a.requests) > 0 and len(b.requests) > 0, "both addresses still serve")
    dns.set(["127.0.0.2"], mode="answer")
    wait_until(lambda: "dns: %s resolves again" % NAME in f.stderr_text(), timeout=10,
               what="the recovery logged")


def test_unresolved_at_start():
    "a name that does not resolve at start is a warning; 503 (JSON, naming the upstream) until it resolves"
    a = backend("A")
    dns = Responder(["127.0.0.1"])
    _cleanups_add(dns.stop)
    dns.set(mode="nxdomain")
    f = dns_ferry(dns, a.port)
    err = f.stderr_text()
    check("no such name (NXDOMAIN); its servers have no address until it resolves" in err,
          "the warning at start")
    check(re.search(r"ferry\.yaml:\d+:\d+: upstreams\.u\.servers\[0\]\.address: warning: "
                    + re.escape(NAME) + " does not resolve", err),
          "the warning names FILE:LINE:COLUMN:\n%s" % err[-1500:])
    r = request(f, "GET", "/fast")
    eq(r.status, 503, "a request before the name resolves")
    check("upstream u" in r.json().get("error", ""), "the 503 names the upstream: %r" % r.body)
    eq(len(a.requests), 0, "requests that reached the backend")
    dns.set(mode="answer")

    def ok():
        return request(f, "GET", "/fast").status == 200
    wait_until(ok, timeout=15, interval=0.5, what="the name resolving")


def test_flapping_name_leaks_nothing():
    "a name flipping every TTL under load: no failure, no descriptor or pool left behind"
    a, b = two_backends()
    dns = Responder(["127.0.0.1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port, workers=2)
    request(f, "GET", "/fast")
    time.sleep(0.3)
    fd0 = f.fd_count()
    load = Load(f, threads=2, limit=3000, seconds=20)
    try:
        for i in range(6):
            dns.set(["127.0.0.2"] if i % 2 == 0 else ["127.0.0.1"])
            time.sleep(1.3)
    finally:
        load.stop()
    eq(load.failed, [], "failed requests while the name flips")
    check(len(a.requests) > 0 and len(b.requests) > 0, "both served")
    applied = f.stderr_text().count("dns: new addresses applied")
    check(applied >= 3, "changes applied (%d)" % applied)
    # idle pooled connections of the gone address close; a descriptor per
    # worker may stay pooled for the current one
    wait_until(lambda: f.fd_count() <= fd0 + 4, timeout=10, what="descriptors back near the baseline")
    f.assert_alive()
    stop_clean(f)


def stop_clean(f):
    """Stops f: every pool, registry entry and name is freed at exit
    (LeakSanitizer fails the exit status of a sanitized build)."""
    rc = f.stop(timeout=15)
    err = f.stderr_text()
    check("Sanitizer" not in err, "sanitizer report:\n%s" % err[-3000:])
    eq(rc, 0, "ferry's exit status")


def test_reload_keeps_pools_and_ignores_late_answers():
    "a reload keeps a name's addresses and pooled connections; a late answer after a reload that drops the name changes nothing"
    a, b = two_backends()
    dns = Responder(["127.0.0.1"], ttl=1)
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port, workers=1)
    c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=10)
    for i in range(3):
        c.request("GET", "/fast")
        eq(c.getresponse().read(), b"ok\n", "request %d" % i)
    conns = a.stats()["connections"]
    f.reload()
    for i in range(3):
        c.request("GET", "/fast")
        eq(c.getresponse().read(), b"ok\n", "request %d after the reload" % i)
    eq(a.stats()["connections"], conns, "A's connections (the pool carried over the reload)")
    # the next answer comes late; meanwhile a reload drops the name
    dns.set(["127.0.0.2"])
    dns.delay = 1.5
    q = dns.queries
    wait_until(lambda: dns.queries > q, timeout=5, what="a query in flight")
    f.reload(config={"resolver": ["127.0.0.1:%d" % dns.port],
                     "routes": [route("r", "/", upstream="u")],
                     "upstreams": {"u": {"servers": [{"address": "127.0.0.1:%d" % a.port}]}}})
    time.sleep(2.5)  # the late answer arrives, to a cancelled query
    for i in range(5):
        c.request("GET", "/fast")
        eq(c.getresponse().read(), b"ok\n", "request %d after the late answer" % i)
    c.close()
    eq(len(b.requests), 0, "requests that went to the late answer's address")
    eq([s["address"] for s in f.status()["upstreams"]["u"]], ["127.0.0.1:%d" % a.port],
       "/status addresses")
    check("dns: new addresses applied" not in f.stderr_text(), "no DNS change applied")
    f.assert_alive()
    stop_clean(f)


def test_large_answer_bounded():
    "an answer with 70 A records gives at most 32 servers (evdns keeps 32; Ferry's own cap is 64)"
    dns = Responder(["127.0.1.%d" % i for i in range(1, 71)], ttl=300)
    _cleanups_add(dns.stop)
    f = ferry(resolver=["127.0.0.1:%d" % dns.port], routes=[route("r", "/", upstream="u")],
              upstreams={"u": {"servers": [{"address": "%s:9" % NAME}]}})
    addrs = [s["address"] for s in f.status()["upstreams"]["u"]]
    check(0 < len(addrs) <= 32, "servers from a 70-address answer: %d" % len(addrs))
    eq(len(set(addrs)), len(addrs), "distinct servers")
    log("%d servers from a 70-address answer" % len(addrs))
    f.assert_alive()


def test_hosts_file_first():
    "a name in /etc/hosts (localhost) is taken from it, never asked of the nameserver"
    names = open("/etc/hosts").read().split()
    if "localhost" not in names:
        raise Skip("no localhost in /etc/hosts")
    a = backend("A")
    dns = Responder(["127.0.0.2"])
    _cleanups_add(dns.stop)
    f = ferry(resolver=["127.0.0.1:%d" % dns.port], routes=[route("r", "/", upstream="u")],
              upstreams={"u": {"servers": [{"address": "localhost:%d" % a.port}]}})
    for i in range(5):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    eq(len(a.requests), 5, "requests that reached the backend")
    eq([s["address"] for s in f.status()["upstreams"]["u"]], ["localhost:%d@127.0.0.1" % a.port],
       "/status addresses")
    eq(dns.other_names, [], "names asked of the nameserver")


def _cleanups_add(fn):
    from ferrytest import _cleanups
    _cleanups.append(fn)


if __name__ == "__main__":
    run(globals(), budget=150.0)
