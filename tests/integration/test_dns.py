#!/usr/bin/env python3
"""DNS names as server addresses: a tiny DNS responder on loopback (UDP,
stdlib) answers A queries for a test name with a 1 s TTL; Ferry asks it
(`resolver:`). Two real backends listen on 127.0.0.1 and 127.0.0.2 with the
same port (an A record carries no port). While a bounded load runs, the
answer moves from A to B: no request fails, traffic reaches B within a few
TTLs and A gets no new request after. A failing resolver (SERVFAIL, then
silence) keeps the last good set, logged once per change of state. A name
that does not resolve at start is a warning; its requests fail until it
resolves. A name flipping every TTL leaves no descriptor behind.

AAAA: the responder answers AAAA with ::1 (a backend on [::1] with the
same port): A and AAAA addresses are all servers and all get traffic; an
IPv6-only name works; `resolve: ipv4` asks no AAAA (`ipv6` no A); a
failing AAAA keeps its last addresses while A answers. A name answering
ever new addresses (127.0.0.x) leaves no registry entry behind
(ferry_registry_servers in /metrics stays bounded). A link-local AAAA
(fe80::1) is skipped: only the usable ::1 becomes a server.

NODATA with an SOA in the authority section (RFC 2308 negative caching):
the name is asked again at the SOA's negative TTL, also when it is shorter
than the TTL of the other family's addresses, and when the name has no
address at all (instead of every 5 s)."""

import re
import socket
import struct
import threading
import time
import http.client

from ferrytest import *

NAME = "api.dns.test"


class Responder:
    """Answers A and AAAA queries for NAME with the IPv4 and IPv6 addresses
    of self.ips (TTL self.ttl, or self.ttls[qtype]); mode "answer",
    "servfail", "nxdomain" or "silent" (no reply), or per query type
    self.type_mode[qtype]. Other types, or a family without addresses: no
    error, no answer (NODATA), with an SOA in the authority section when
    self.soa[qtype] = (TTL, MINIMUM). Counts the queries for NAME (by type
    in qtypes, their times in times)."""

    def __init__(self, ips, ttl=1):
        self.ips = list(ips)
        self.ttl = ttl
        self.ttls = {}
        self.soa = {}
        self.times = {}
        self.mode = "answer"
        self.type_mode = {}
        self.delay = 0  # seconds before each reply
        self.queries = 0
        self.qtypes = {}
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
                self.qtypes[qtype] = self.qtypes.get(qtype, 0) + 1
                self.times.setdefault(qtype, []).append(time.monotonic())
            else:
                self.other_names.append(".".join(labels).lower())
            mode, ips = self.type_mode.get(qtype, self.mode), list(self.ips)
            ttl = self.ttls.get(qtype, self.ttl)
            soa = self.soa.get(qtype)
        if not ours:
            mode = "nxdomain"
        if mode == "silent":
            return None
        rcode = {"servfail": 2, "nxdomain": 3}.get(mode, 0)
        answers = []
        if rcode == 0 and qtype in (1, 28):
            for ip in ips:
                if (":" in ip) != (qtype == 28):
                    continue
                data = socket.inet_pton(socket.AF_INET6 if qtype == 28 else socket.AF_INET, ip)
                answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(data)) + data)
        authority = []
        if rcode == 0 and not answers and soa:
            soa_ttl, minimum = soa
            rdata = dns_name("ns.dns.test") + dns_name("hostmaster.dns.test") + \
                struct.pack("!IIIII", 1, 3600, 600, 86400, minimum)
            authority.append(dns_name("dns.test") + struct.pack("!HHIH", 6, 1, soa_ttl, len(rdata))
                             + rdata)
        head = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100) | rcode, 1, len(answers),
                           len(authority), 0)
        return head + question + b"".join(answers) + b"".join(authority)


def dns_name(name):
    """A domain name in wire form (labels, uncompressed)."""
    return b"".join(bytes([len(l)]) + l.encode("ascii") for l in name.split(".")) + b"\0"


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


def hosts_addresses(name):
    """The IPv4 and IPv6 addresses /etc/hosts lists for name (IPv4 first)."""
    v4, v6 = [], []
    for line in open("/etc/hosts"):
        words = line.split("#")[0].split()
        if len(words) < 2 or name not in [w.lower() for w in words[1:]]:
            continue
        for fam, out in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
            try:
                packed = socket.inet_pton(fam, words[0])
            except OSError:
                continue
            if packed not in [p for p, _ in out]:
                out.append((packed, socket.inet_ntop(fam, packed)))
    return [t for _, t in sorted(v4)], [t for _, t in sorted(v6)]


def test_hosts_file_first():
    "a name in /etc/hosts (localhost) is taken from it, IPv4 and IPv6 lines, never asked of the nameserver"
    v4, v6 = hosts_addresses("localhost")
    if not v4 and not v6:
        raise Skip("no localhost in /etc/hosts")
    if v6 and not ipv6_usable():
        raise Skip("/etc/hosts lists localhost as %s but ::1 is not usable here" % v6)
    a = backend("A") if "127.0.0.1" in v4 else None
    if set(v4) - {"127.0.0.1"} or set(v6) - {"::1"} or not a and not v6:
        raise Skip("localhost in /etc/hosts is %s: no backend for those" % (v4 + v6))
    port = a.port if a else free_port()
    b6 = backend6(port) if v6 else None
    dns = Responder(["127.0.0.2"])
    _cleanups_add(dns.stop)
    f = ferry(resolver=["127.0.0.1:%d" % dns.port], routes=[route("r", "/", upstream="u")],
              upstreams={"u": {"servers": [{"address": "localhost:%d" % port}]}})
    for i in range(6):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    served = (len(a.requests) if a else 0) + (len(b6.requests) if b6 else 0)
    eq(served, 6, "requests that reached the backends")
    want = ["localhost:%d@%s" % (port, ip) for ip in v4] + \
        ["localhost:%d@[%s]" % (port, ip) for ip in v6]
    eq([s["address"] for s in f.status()["upstreams"]["u"]], want, "/status addresses")
    eq(dns.other_names, [], "names asked of the nameserver")


def ipv6_usable():
    """::1 can listen and be connected to here."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            s.listen(1)
            socket.create_connection(("::1", s.getsockname()[1]), timeout=2).close()
        finally:
            s.close()
        return True
    except OSError:
        return False


def need_ipv6():
    if not ipv6_usable():
        raise Skip("::1 cannot listen or be connected to on this machine (no IPv6 loopback)")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend6(port, name="B6"):
    """A backend listening on [::1]:port."""
    b = Backend(name=name)
    b.lsock.close()
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::1", port))
    ls.listen(1024)
    b.lsock, b.port, b.address = ls, port, "[::1]:%d" % port
    b.start()
    _cleanups_add(b.stop)
    return b


def addresses(f):
    return [s["address"] for s in f.status()["upstreams"]["u"]]


def test_a_and_aaaa_all_serve():
    "A 127.0.0.1 and AAAA ::1: both are servers and both get traffic; asked again at the shorter TTL"
    need_ipv6()
    a = backend("A")
    b6 = backend6(a.port)
    dns = Responder(["127.0.0.1", "::1"])
    dns.ttls = {1: 300, 28: 1}
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port, up={"host_header": "upstream"})
    eq(addresses(f), ["%s:%d@127.0.0.1" % (NAME, a.port), "%s:%d@[::1]" % (NAME, a.port)],
       "/status addresses")
    for i in range(20):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    # round robin per worker (and restarted by each re-expansion): about half each
    n4, n6 = len(a.requests), len(b6.requests)
    eq(n4 + n6, 20, "requests that reached the backends")
    check(n4 >= 5 and n6 >= 5, "both servers get traffic: IPv4 %d, IPv6 %d" % (n4, n6))
    eq(b6.last().header("Host"), "%s:%d" % (NAME, a.port), "Host sent to the IPv6 server")
    # the A answer says 300 s, the AAAA 1 s: the name is asked at the shorter
    q = dict(dns.qtypes)
    wait_until(lambda: dns.qtypes.get(1, 0) >= q.get(1, 0) + 2, timeout=8,
               what="A asked again at the AAAA's TTL")
    err = f.stderr_text()
    check("dns: %s: 2 addresses (2 new, 0 gone): 127.0.0.1 ::1" % NAME in err,
          "the addresses logged:\n%s" % err[-1500:])
    stop_clean(f)


def test_aaaa_failing_keeps_its_addresses():
    "AAAA fails (SERVFAIL, then silence) while A answers: the IPv6 server stays, logged once; recovery logged"
    need_ipv6()
    a = backend("A")
    b6 = backend6(a.port)
    dns = Responder(["127.0.0.1", "::1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port)
    dns.type_mode[28] = "servfail"
    needle = "dns: %s: AAAA: " % NAME
    wait_until(lambda: "keeping its last 1 IPv6 addresses" in f.stderr_text(), timeout=8,
               what="the AAAA failure logged")
    dns.set(["127.0.0.1", "127.0.0.2", "::1"])  # A moves on meanwhile: applied
    dns.type_mode[28] = "silent"
    wait_until(lambda: len(addresses(f)) == 3, timeout=15, what="the new A address applied")
    eq(addresses(f), ["%s:%d@127.0.0.1" % (NAME, a.port), "%s:%d@127.0.0.2" % (NAME, a.port),
                      "%s:%d@[::1]" % (NAME, a.port)], "/status addresses: the IPv6 one kept")
    lines = [ln for ln in f.stderr_text().splitlines() if needle in ln]
    eq(len(lines), 1, "AAAA failure lines (once per change of state): %s" % lines)
    del dns.type_mode[28]
    wait_until(lambda: "dns: %s: AAAA answers again" % NAME in f.stderr_text(), timeout=15,
               what="the AAAA recovery logged")
    n6 = len(b6.requests)
    for i in range(12):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    check(len(b6.requests) > n6, "the IPv6 server still serves")
    stop_clean(f)


def test_aaaa_nxdomain_is_no_record():
    "NXDOMAIN for AAAA while A has records (what a search list ends with) is no IPv6 address, not a failure"
    a = backend("A")
    dns = Responder(["127.0.0.1"])
    dns.type_mode[28] = "nxdomain"
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port)
    q = dns.qtypes.get(1, 0)
    wait_until(lambda: dns.qtypes.get(1, 0) >= q + 2, timeout=8, what="asked again at the TTL")
    check(dns.qtypes.get(28, 0) >= 2, "AAAA asked too (%s)" % dns.qtypes)
    err = f.stderr_text()
    check("AAAA:" not in err and "keeping" not in err, "no failure logged:\n%s" % err[-1500:])
    eq(addresses(f), ["%s:%d@127.0.0.1" % (NAME, a.port)], "/status addresses")
    eq(request(f, "GET", "/fast").status, 200, "a request")


def query_gaps(dns, qtype, n):
    """The seconds between the first n queries of qtype."""
    t = dns.times.get(qtype, [])[:n]
    return [round(t[i + 1] - t[i], 2) for i in range(len(t) - 1)]


def test_nodata_negative_ttl():
    "AAAA NODATA whose SOA says 3 s while A says 300 s: the name is asked again about every 3 s (at 300 s before)"
    a = backend("A")
    dns = Responder(["127.0.0.1"], ttl=300)
    dns.soa = {28: (600, 3)}  # the negative TTL is the lower of the SOA's TTL and MINIMUM
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port)
    wait_until(lambda: len(dns.times.get(28, [])) >= 3, timeout=12,
               what="AAAA asked twice more")
    gaps = query_gaps(dns, 28, 3)
    log("AAAA asked again after %s s (negative TTL 3 s, A's TTL 300 s)" % gaps)
    for g in gaps:
        check(2.5 <= g <= 5.0, "AAAA asked again after about 3 s: %s" % gaps)
    check(dns.qtypes.get(1, 0) >= 3, "A asked with it (%s)" % dns.qtypes)
    eq(addresses(f), ["%s:%d@127.0.0.1" % (NAME, a.port)], "/status addresses")
    err = f.stderr_text()
    check("AAAA:" not in err and "keeping" not in err, "no failure logged:\n%s" % err[-1500:])
    eq(request(f, "GET", "/fast").status, 200, "a request")


def test_nodata_only_negative_ttl():
    "a name without address, every family NODATA: asked again at the SOA's negative TTL (8 s; every 5 s before), every 5 s without an SOA"
    a = backend("A")
    soa = Responder([])
    soa.soa = {1: (8, 3600), 28: (8, 3600)}
    _cleanups_add(soa.stop)
    bare = Responder([])
    _cleanups_add(bare.stop)
    f = dns_ferry(soa, a.port)
    g = dns_ferry(bare, a.port)
    for x in (f, g):
        check("no address (no A or AAAA record); its servers have no address" in x.stderr_text(),
              "the warning at start")
    wait_until(lambda: len(soa.times.get(1, [])) >= 2 and len(bare.times.get(1, [])) >= 3,
               timeout=16, what="both names asked again")
    with_soa, without = query_gaps(soa, 1, 2), query_gaps(bare, 1, 3)
    log("asked again after %s s with an SOA (negative TTL 8 s), after %s s without"
        % (with_soa, without))
    check(6.5 <= with_soa[0] <= 10.0, "asked again after about 8 s: %s" % with_soa)
    for x in without:
        check(4.0 <= x <= 6.5, "without an SOA, asked again after about 5 s: %s" % without)
    eq(request(f, "GET", "/fast").status, 503, "a request while the name has no address")


def test_ipv6_only_name():
    "a name with only an AAAA record (::1) resolves and serves"
    need_ipv6()
    port = free_port()
    b6 = backend6(port)
    dns = Responder(["::1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, port)
    eq(addresses(f), ["%s:%d@[::1]" % (NAME, port)], "/status addresses")
    for i in range(5):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    eq(len(b6.requests), 5, "requests that reached the IPv6 backend")
    check("does not resolve" not in f.stderr_text(), "no warning at start")


def test_link_local_aaaa_skipped():
    "AAAA fe80::1 and ::1: only ::1 becomes a server (a record carries no scope id), warned once; fe80::1 as the only AAAA: no IPv6 server, no failure"
    need_ipv6()
    a = backend("A")
    b6 = backend6(a.port)
    dns = Responder(["fe80::1", "::1"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, a.port)
    eq(addresses(f), ["%s:%d@[::1]" % (NAME, a.port)], "/status addresses")
    for i in range(6):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    eq(len(b6.requests), 6, "requests that reached the IPv6 backend")
    q = dns.qtypes.get(28, 0)
    wait_until(lambda: dns.qtypes.get(28, 0) >= q + 2, timeout=8, what="AAAA asked again")
    warn = "dns: %s: fe80::1 is link-local; not used" % NAME
    eq(f.stderr_text().count(warn), 1, "link-local warnings (once per name)")
    # the only AAAA link-local while A answers: no IPv6 address, not a failure
    dns.set(["127.0.0.1", "fe80::1"])
    wait_until(lambda: addresses(f) == ["%s:%d@127.0.0.1" % (NAME, a.port)], timeout=8,
               what="the IPv4 address alone")
    for i in range(4):
        eq(request(f, "GET", "/fast").status, 200, "request %d after the move" % i)
    err = f.stderr_text()
    check("AAAA:" not in err and "keeping" not in err, "no failure logged:\n%s" % err[-1500:])
    eq(err.count(warn), 1, "link-local warnings after the move")
    stop_clean(f)


def test_resolve_family_key():
    "resolve: ipv4 asks no AAAA and serves only IPv4; resolve: ipv6 asks no A"
    a = backend("A")
    d4 = Responder(["127.0.0.1", "::1"])
    _cleanups_add(d4.stop)
    f = dns_ferry(d4, a.port, up={"resolve": "ipv4"})
    eq(addresses(f), ["%s:%d@127.0.0.1" % (NAME, a.port)], "/status addresses with ipv4")
    q = d4.qtypes.get(1, 0)
    wait_until(lambda: d4.qtypes.get(1, 0) >= q + 2, timeout=8, what="A asked again")
    eq(d4.qtypes.get(28, 0), 0, "AAAA queries with resolve: ipv4")
    for i in range(4):
        eq(request(f, "GET", "/fast").status, 200, "request %d" % i)
    eq(len(a.requests), 4, "requests to the IPv4 backend")
    d6 = Responder(["127.0.0.1", "::1"])
    _cleanups_add(d6.stop)
    g = dns_ferry(d6, a.port, up={"resolve": "ipv6"})
    eq(addresses(g), ["%s:%d@[::1]" % (NAME, a.port)], "/status addresses with ipv6")
    q = d6.qtypes.get(28, 0)
    wait_until(lambda: d6.qtypes.get(28, 0) >= q + 2, timeout=8, what="AAAA asked again")
    eq(d6.qtypes.get(1, 0), 0, "A queries with resolve: ipv6")
    stop_clean(f)
    stop_clean(g)


class ManyAddressBackend:
    """One thread answering "ok" to every HTTP/1.1 request (keep-alive) on
    127.0.0.1..127.0.0.<last>, one port: the servers of a name whose
    answers keep changing. Counts requests per address."""

    def __init__(self, last):
        import selectors
        self.sel = selectors.DefaultSelector()
        self.port = free_port()
        self.count = {}
        self.lock = threading.Lock()
        self.listeners = []
        for x in range(1, last + 1):
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.%d" % x, self.port))
            ls.listen(128)
            ls.setblocking(False)
            self.sel.register(ls, 1, ("listen", "127.0.0.%d" % x))
            self.listeners.append(ls)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()

    def _loop(self):
        while not self.stopping:
            for key, _ in self.sel.select(0.1):
                kind, data = key.data
                if kind == "listen":
                    try:
                        c, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.sel.register(c, 1, ("conn", [data, b""]))
                    continue
                c, state = key.fileobj, data
                try:
                    chunk = c.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.sel.unregister(c)
                    c.close()
                    continue
                state[1] += chunk
                while b"\r\n\r\n" in state[1]:
                    _, state[1] = state[1].split(b"\r\n\r\n", 1)
                    with self.lock:
                        self.count[state[0]] = self.count.get(state[0], 0) + 1
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")


def metric(f, name):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise Fail("no %s in /metrics" % name)


def test_new_addresses_leave_nothing_behind():
    "a name answering ever new addresses (127.0.0.2..200, 16 at a time, TTL 1) under light load: registry entries stay bounded, no failure"
    srv = ManyAddressBackend(200)
    _cleanups_add(srv.stop)
    dns = Responder(["127.0.0.2"])
    _cleanups_add(dns.stop)
    f = dns_ferry(dns, srv.port, workers=2)
    base = metric(f, "ferry_registry_servers")
    eq(base, 1, "registry entries at start (one address)")
    load = Load(f, threads=2, limit=20000, seconds=60)
    seen, step, peak = 1, 16, 0
    try:
        for start in range(3, 201, step):
            ips = ["127.0.0.%d" % x for x in range(start, min(start + step, 201))]
            dns.set(ips)
            seen += len(ips)
            want = "%s:%d@%s" % (NAME, srv.port, ips[0])
            wait_until(lambda: want in addresses(f), timeout=10, interval=0.1,
                       what="the answer %s.. applied" % ips[0])
            peak = max(peak, metric(f, "ferry_registry_servers"))
    finally:
        load.stop()
    log("%d distinct addresses answered; registry entries peaked at %d; %d requests"
        % (seen, peak, load.ok))
    eq(load.failed, [], "failed requests while the addresses change")
    check(load.ok > 100, "the load ran (%d requests)" % load.ok)
    check(len(srv.count) > 30, "many addresses served (%d)" % len(srv.count))
    # the running config's 16 (the last answer has 6), and those of configs
    # still finishing requests: never the ~200 seen
    check(peak <= 3 * step, "registry entries stay bounded: peak %d for %d addresses" % (peak, seen))
    # at rest: the running config's servers, and the start config's one
    # (kept for the process's life: it names the inherited listeners)
    first = "%s:%d@127.0.0.2" % (NAME, srv.port)
    wait_until(lambda: metric(f, "ferry_registry_servers") == len(set(addresses(f)) | {first}),
               timeout=10, what="registry entries back to the configs alive (%s)"
               % metric(f, "ferry_registry_servers"))
    f.assert_alive()
    stop_clean(f)


def _cleanups_add(fn):
    from ferrytest import _cleanups
    _cleanups.append(fn)


if __name__ == "__main__":
    run(globals(), budget=150.0)
