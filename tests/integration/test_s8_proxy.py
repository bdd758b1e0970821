#!/usr/bin/env python3
"""Request flow review (session 8): clients that close while their basic-auth
password checks wait in the pool's queue are let go at once (499, a short
duration_ms) and free their places in the queue (256) rather than holding
both until the verdict or the pool's 10 s limit; balance: hash on client_ip
keys one client alike whether its address comes as IPv4 or IPv4-mapped
IPv6 (PROXY protocol headers, TCP4 and TCP6), and never on the port. ~6 s."""
import base64
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def basic_header(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def basic_status(f, user, pw, timeout=15):
    c = Client(f.port, timeout=timeout)
    try:
        return c.request("GET", "/b/fast", {"Authorization": basic_header(user, pw)},
                         timeout=timeout).status
    finally:
        c.close()


def first_status(s):
    """The status of what s has received (non-blocking), or None."""
    try:
        data = s.recv(4096, socket.MSG_DONTWAIT)
    except OSError:
        return None
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None


def test_basic_check_of_a_client_gone_ends_at_once():
    "Basic auth: clients that close while their password checks wait in the pool's queue are let go at once (499) and free their places in the queue"
    be = backend()
    users_file = os.path.join(tmpdir(), "users-s8-proxy")
    with open(users_file, "w") as fh:
        fh.write("ana:%s\n" % crypt_hash("ana-pw", "$2b$", 13))
    f = ferry(workers=1,
              routes=[route("basic", "/b/", upstream="u",
                            auth={"basic": {"users_file": users_file, "cache_ttl": "0s"}})],
              upstreams={"u": servers(be)})
    one = 1e9
    for _ in range(2):  # the first starts the pool's threads
        t0 = time.monotonic()
        eq(basic_status(f, "ana", "ana-pw"), 200, "ana's password")
        one = min(one, time.monotonic() - t0)
    # A few wrong passwords keep the pool's 2 threads busy for about 3.5 s
    # (each is hashed: failures are not cached), within the pool's 10 s;
    # the rest of the queue's 256 places is for the clients that close.
    n = min(60, max(4, int(2 * 3.5 / one) + 1))
    flood = {}

    def run_flood():
        flood["out"] = parallel(n, lambda i: basic_status(f, "ana", "wrong-%d" % i), timeout=40)
        flood["end"] = time.monotonic()
    t0 = time.monotonic()
    ft = threading.Thread(target=run_flood, daemon=True)
    ft.start()
    time.sleep(0.3)  # the flood is queued: what comes now waits behind it
    # Clients that fill the rest of the queue (256 checks), then close.
    gone = []
    for i in range(250 - n):
        s = socket.create_connection(("127.0.0.1", f.port))
        s.sendall(build_request("GET", "/b/gone%d" % i,
                                {"Authorization": basic_header("ana", "wrong-gone")}))
        gone.append(s)
    time.sleep(0.2)
    early = [st for st in (first_status(s) for s in gone) if st is not None]
    for s in gone:
        s.close()
    closed = time.monotonic()
    check(not early, "clients answered before they closed: %r (the queue was full)" % early[:5])

    def gone_lines():
        out = [e for e in f.access_log() if "/gone" in (e.get("path") or "")]
        return out if len(out) == len(gone) else None
    lines = wait_until(gone_lines, 12.0) or []
    seen = time.monotonic()
    # More checks while the flood still runs: their places are free again.
    late = []
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", f.port))
        s.sendall(build_request("GET", "/b/late%d" % i,
                                {"Authorization": basic_header("ana", "wrong-late")}))
        late.append(s)
    time.sleep(0.3)
    late_503 = sum(1 for s in late if first_status(s) == 503)
    late_sent = time.monotonic()
    for s in late:
        s.close()
    ft.join(40)
    check("out" in flood, "the flood did not end")
    logged = [e for e in f.access_log() if "/gone" in (e.get("path") or "")]
    log("one check %.0f ms, %d wrong passwords for %.1f s; %d clients that closed logged within "
        "%.0f ms of closing (%s); %d of 40 checks after them refused (503)"
        % (one * 1000, n, flood["end"] - t0, len(logged), (seen - closed) * 1000,
           sorted(set((e.get("status"), int(e.get("duration_ms", 0) // 500) * 500)
                      for e in logged)), late_503))
    check(flood["end"] - closed > 1.0,
          "the flood ended %.2f s after the clients closed: the pool was not busy enough to "
          "show anything" % (flood["end"] - closed))
    eq(len(lines), len(gone), "access-log lines of the clients that closed, within 12 s")
    for e in lines:
        eq(e.get("status"), 499, "status logged for %s (the client closed while its check waited)"
           % e.get("path"))
        check(e.get("duration_ms", 1e9) < 1500,
              "%s: %.0f ms: held after its client closed" % (e.get("path"), e.get("duration_ms")))
    check(flood["end"] - late_sent > 0.2,
          "the flood ended %.2f s after the last checks came: the pool was not busy enough to "
          "show their places" % (flood["end"] - late_sent))
    eq(late_503, 0, "checks refused (queue full) after %d queued clients had closed" % len(gone))
    out = flood["out"]
    check(all(isinstance(o, int) for o in out), "flood requests failed: %r" % out[:3])
    check(set(out) <= {401}, "flood statuses %r" % sorted(set(out)))
    eq(basic_status(f, "ana", "ana-pw"), 200, "ana's password after it all")


# --- balance: hash on client_ip, the peer given by PROXY protocol headers --------------------
def served_by(backends, fn):
    """Runs fn (one request, sequential) and returns the index of the
    backend that saw it (-1: none), with fn's result."""
    before = [b.stats()["requests"] for b in backends]
    r = fn()
    after = [b.stats()["requests"] for b in backends]
    hit = [i for i in range(len(backends)) if after[i] > before[i]]
    return (hit[-1] if hit else -1), r


def pp_request(f, header):
    c = Client(f.port)
    try:
        c.send(header + build_request("GET", "/fast"))
        return c.response(5)
    finally:
        c.close()


def test_hash_client_ip_same_for_ipv4_and_mapped():
    "balance: hash on client_ip: a client seen as IPv4 (PROXY TCP4) and as IPv4-mapped IPv6 (TCP6) goes to the same server, whatever its port"
    bes = [backend("b%d" % i) for i in range(6)]
    f = Ferry({"workers": 1,
               "upstreams": {"u": servers(*bes, balance="hash", hash_key="client_ip")},
               "routes": [route("all", "/", upstream="u")]},
              listener={"proxy_protocol": True}).start()
    owners = set()
    for i in range(10):
        ip = "198.51.100.%d" % (10 + i)
        got = []
        for hdr in ("PROXY TCP4 %s 127.0.0.1 %d 80\r\n" % (ip, 40000 + i),
                    "PROXY TCP4 %s 127.0.0.1 %d 80\r\n" % (ip, 50000 + i),
                    "PROXY TCP6 ::ffff:%s ::1 %d 80\r\n" % (ip, 40000 + i),
                    "PROXY TCP6 ::FFFF:%s ::1 %d 80\r\n" % (ip, 60000 + i)):
            k, r = served_by(bes, lambda: pp_request(f, hdr.encode()))
            eq(r.status, 200, "status for %r" % hdr)
            got.append(k)
        eq(len(set(got)), 1, "servers of %s (IPv4, IPv4 another port, mapped, mapped another "
                             "port): %r" % (ip, got))
        owners |= set(got)
    # native IPv6: the port is not part of the key
    for i in range(4):
        ip = "2001:db8::%x" % (0x10 + i)
        got = []
        for port in (40000, 50001, 65535):
            k, r = served_by(bes, lambda: pp_request(
                f, ("PROXY TCP6 %s ::1 %d 80\r\n" % (ip, port)).encode()))
            eq(r.status, 200, "status")
            got.append(k)
        eq(len(set(got)), 1, "servers of %s from three ports: %r" % (ip, got))
        owners |= set(got)
    check(len(owners) > 1, "fourteen clients all on one server: %r" % owners)


if __name__ == "__main__":
    run(globals())
