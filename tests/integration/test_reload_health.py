#!/usr/bin/env python3
"""Health checks and passive ejection across a live reload (issues 14 and
16): the process-wide state of a server lives in its registry entry, so a
reload that keeps the server keeps its ejection and its health verdict (and
its checker keeps its schedule: no extra probe); a server a reload adds is
checked and starts down until its first pass (start_healthy: up at once),
one already in service that gets checks afresh stays up; a server a reload
removes is no longer probed. ~15 s."""
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from backend import refused_address  # noqa: E402


def status(f):
    """/status's servers: {upstream: {address: state}}."""
    return {u: {s["address"]: s for s in lst} for u, lst in f.status()["upstreams"].items()}


def gauge(f, up, server):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    key = 'ferry_upstream_server_healthy{upstream="%s",server="%s"} ' % (up, server)
    for line in body.splitlines():
        if line.startswith(key):
            return int(line[len(key):])
    return None


def probes(b):
    """Health checks a backend received."""
    with b.lock:
        return sum(1 for r in b.requests if r.header("User-Agent") == "ferry-health-check")


def proxied(b):
    with b.lock:
        return sum(1 for r in b.requests if r.header("User-Agent") != "ferry-health-check")


def test_unchanged_servers_keep_ejection_and_health():
    "a reload keeps an ejected server out and a down server down, with no re-probe"
    a, b = backend("a"), backend("b")
    dead = refused_address()
    slow = {"path": "/hc/fast", "interval": "60s", "timeout": "500ms", "healthy_after": 1,
            "unhealthy_after": 1}

    def config(generation):
        return {"upstreams": {
            "h": servers(a, b, retries={"attempts": 0}, health_check=slow),
            "e": servers(a, dead, retries={"attempts": 0},
                         passive={"failures": 1, "eject_for": "60s"})},
            "routes": [route("e", "/e/", upstream="e"), route("h", "/", upstream="h",
                       response_headers={"set": {"X-Generation": str(generation)}})]}

    b.force = 503  # b fails its first check: down (checked once a minute)
    f = ferry(**config(0))
    wait_until(lambda: gauge(f, "h", a.address) == 1 and probes(b) >= 1, timeout=5,
               what="a up and b checked")
    eq(gauge(f, "h", b.address), 0, "b's gauge after a failed first check")
    b.force = None  # would pass now, but is not checked again for a minute
    # the dead server of "e" fails once: ejected for 60 s
    codes = [request(f, "GET", "/e/fast?i=%d" % i).status for i in range(6)]
    check(codes.count(502) == 1, "one 502 before the dead server is ejected: %r" % codes)
    st = status(f)
    check(st["e"][dead]["ejected"], "dead ejected before the reload: %r" % st["e"][dead])
    eq(st["e"][dead]["ejections"], 1, "ejections before the reload")
    pa, pb = probes(a), probes(b)

    f.reload(config(1))
    r = request(f, "GET", "/fast")
    eq(r.header("X-Generation"), "1", "the new config serves")
    time.sleep(1.0)  # a re-probe (a restarted checker) would have come by now
    eq((probes(a), probes(b)), (pa, pb), "health checks of kept servers after the reload")
    eq(gauge(f, "h", b.address), 0, "b still down after the reload")
    st = status(f)
    eq(st["h"][b.address]["healthy"], False, "/status: b healthy after the reload")
    check(st["e"][dead]["ejected"], "dead still ejected after the reload: %r" % st["e"][dead])
    eq(st["e"][dead]["ejections"], 1, "ejections after the reload")
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    c.request("GET", "/upstreams")
    ups = {u["name"]: {s["address"]: s for s in u["servers"]}
           for u in json.loads(c.getresponse().read())["upstreams"]}
    c.close()
    eq((ups["h"][b.address]["healthy"], ups["e"][dead]["ejected"], ups["e"][dead]["state"]),
       (False, True, "ready"), "GET /upstreams: b healthy, dead ejected, dead state")
    before = proxied(b)
    for i in range(10):
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
        expect_response(request(f, "GET", "/e/fast?i=%d" % i), status=200)
    eq(proxied(b) - before, 0, "requests sent to b (down) after the reload")


def metric(f, name, upstream):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    key = '%s{upstream="%s"} ' % (name, upstream)
    for line in body.splitlines():
        if line.startswith(key):
            return int(line[len(key):])
    return None


def test_retry_counters_run_on():
    "retries and budget refusals counted before a reload are still counted after it"
    a = backend("a")
    dead = refused_address()

    def config(generation):
        return {"upstreams": {"u": servers(dead, a, retries={"attempts": 1, "budget": "1%",
                                                             "budget_min": 1})},
                "routes": [route("u", "/", upstream="u",
                                 response_headers={"set": {"X-Generation": str(generation)}})]}
    f = ferry(**config(0))
    for i in range(40):
        request(f, "GET", "/fast?i=%d" % i)
    retries = metric(f, "ferry_upstream_retries_total", "u")
    denied = metric(f, "ferry_upstream_retry_budget_exhausted_total", "u")
    check(retries and denied, "retries %r and refusals %r before the reload" % (retries, denied))
    f.reload(config(1))
    wait_until(lambda: request(f, "GET", "/fast").header("X-Generation") == "1", timeout=5,
               what="the new config serves")  # (a 502 from the dead server has no header)
    check(metric(f, "ferry_upstream_retries_total", "u") >= retries,
          "retries after the reload: %r, before %r"
          % (metric(f, "ferry_upstream_retries_total", "u"), retries))
    check(metric(f, "ferry_upstream_retry_budget_exhausted_total", "u") >= denied,
          "budget refusals after the reload: %r, before %r"
          % (metric(f, "ferry_upstream_retry_budget_exhausted_total", "u"), denied))


def test_added_server_starts_down_until_first_pass():
    "a reload adding checks and a server: the old one stays up, the new one is down until it passes"
    a, c, d = backend("a"), backend("c"), backend("d")
    # unhealthy_after 5: a server that started up would take 5 failed checks
    # (a second) to go down; the added one must be down from the start
    hc = {"path": "/hc/fast", "interval": "200ms", "timeout": "200ms", "healthy_after": 3,
          "unhealthy_after": 5}
    f = ferry(upstreams={"u": servers(a, retries={"attempts": 0})},
              routes=[route("u", "/", upstream="u")])
    expect_response(request(f, "GET", "/fast"), status=200)
    c.force = 503  # fails its checks until told otherwise
    f.reload({"upstreams": {"u": servers(a, c, retries={"attempts": 0}, health_check=hc),
                            "s": servers(d, health_check=dict(hc, start_healthy=True,
                                                              interval="60s"))},
              "routes": [route("s", "/s/", upstream="s"), route("u", "/", upstream="u")]})
    # a was in service without checks: up at once, no 503 while its first
    # check runs; c gets nothing (round robin would send it every other one)
    for i in range(20):
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    eq(proxied(c), 0, "requests sent to the added server right after the reload")
    # d is new with start_healthy: served at once
    expect_response(request(f, "GET", "/s/fast"), status=200)
    wait_until(lambda: probes(c) >= 2, timeout=5, what="the added server is checked")
    eq(gauge(f, "u", c.address), 0, "c's gauge while it fails its checks")
    before = proxied(c)
    for i in range(20):
        expect_response(request(f, "GET", "/fast?i=%d" % i), status=200)
    eq(proxied(c) - before, 0, "requests sent to the added server before its first pass")
    # its first pass brings it up (healthy_after is for a server coming back)
    c.force = None
    wait_until(lambda: gauge(f, "u", c.address) == 1, timeout=3,
               what="c up after its first pass")
    wait_until(lambda: any(request(f, "GET", "/fast?i=%d" % i).status == 200 and proxied(c) > before
                           for i in range(4)), timeout=5, what="requests reach c")
    check("server %s is up" % c.address in f.stderr_text(), "the up log line")


def test_removed_server_is_no_longer_probed():
    "a reload removing a server (or every check) stops its probes within a bounded wait"
    a, c = backend("a"), backend("c")
    hc = {"path": "/hc/fast", "interval": "100ms", "timeout": "200ms"}
    f = ferry(upstreams={"u": servers(a, c, health_check=hc)},
              routes=[route("u", "/", upstream="u")])
    wait_until(lambda: probes(c) >= 2 and probes(a) >= 2, timeout=5, what="both checked")
    f.reload({"upstreams": {"u": servers(a, health_check=hc)},
              "routes": [route("u", "/", upstream="u")]})
    time.sleep(0.5)  # a check in progress at the reload ends within its timeout
    pc, pa = probes(c), probes(a)
    time.sleep(1.0)  # ten intervals
    eq(probes(c), pc, "health checks of the removed server")
    check(probes(a) >= pa + 3, "the kept server is still checked: %d -> %d" % (pa, probes(a)))
    # no upstream checks any more: the checker thread idles
    f.reload({"upstreams": {"u": servers(a)}, "routes": [route("u", "/", upstream="u")]})
    time.sleep(0.5)
    pa = probes(a)
    time.sleep(1.0)
    eq(probes(a), pa, "health checks once no upstream has health_check")
    expect_response(request(f, "GET", "/fast"), status=200)
    # and they come back with a reload that checks again
    f.reload({"upstreams": {"u": servers(a, health_check=hc)},
              "routes": [route("u", "/", upstream="u")]})
    wait_until(lambda: probes(a) >= pa + 2, timeout=5, what="checks again after the reload")
    expect_response(request(f, "GET", "/fast"), status=200)
    f.assert_alive()


def test_reload_storm_with_checks():
    "SIGHUP 50/s for 3 s, servers and checks added and removed: no failed request, no crash"
    import signal
    import threading
    a, c = backend("a"), backend("c")
    # checks every 20 ms, but no flapping on a busy machine (a stalled
    # second is not what this test is about)
    hc = {"path": "/hc/fast", "interval": "20ms", "timeout": "2s", "healthy_after": 1,
          "unhealthy_after": 3}

    def config(i):
        ups = [a] + ([c] if i % 2 else [])
        keys = {"health_check": hc} if i % 5 else {}  # checks come and go too
        return {"upstreams": {"u": servers(*ups, **keys)},
                "routes": [route("u", "/", upstream="u")]}

    f = ferry(**config(1))
    wait_until(lambda: request(f, "GET", "/fast").status == 200, timeout=5, what="served")
    stop = threading.Event()
    bad, count = [], [0]

    def load():
        cl = Client(f.port)
        while not stop.is_set():
            cl.send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            r = cl.response()
            if r.status != 200:
                bad.append(r)
            count[0] += 1
        cl.close()
    ts = [threading.Thread(target=load) for _ in range(3)]
    for t in ts:
        t.start()
    end = time.monotonic() + 3
    i = 0
    while time.monotonic() < end:
        i += 1
        f.write_config(config(i))
        os.kill(f.pid, signal.SIGHUP)
        time.sleep(0.02)
    stop.set()
    for t in ts:
        t.join(10)
    f.assert_alive()
    eq(bad, [], "answers during the storm")
    check(count[0] > 50, "requests were served during the storm (%d)" % count[0])
    f.reload(config(2))  # a only, checked
    time.sleep(0.5)
    pc = probes(c)
    time.sleep(0.5)
    eq(probes(c), pc, "checks of c once the last config removed it")
    expect_response(request(f, "GET", "/fast"), status=200)


def test_reloads_while_checkers_sleep():
    "150 reloads while every checker sleeps: each keeps only the newest config (no stale pointer)"
    import signal
    a, c = backend("a"), backend("c")
    hc = {"path": "/hc/fast", "interval": "60s", "timeout": "200ms"}

    def config(i):  # each reload a new config; the checkers sleep through all of them
        return {"upstreams": {"u": servers(a, c, health_check=hc, keepalive=1 + i % 7)},
                "routes": [route("u", "/", upstream="u")]}

    f = ferry(**config(0))
    wait_until(lambda: probes(a) == 1 and probes(c) == 1, timeout=5, what="first checks")
    for i in range(1, 150):
        f.write_config(config(i))
        os.kill(f.pid, signal.SIGHUP)
        time.sleep(0.01)
    f.reload(config(999))
    f.assert_alive()
    expect_response(request(f, "GET", "/fast"), status=200)
    eq((probes(a), probes(c)), (1, 1), "checks during the reloads")


if __name__ == "__main__":
    run(globals(), budget=60)
