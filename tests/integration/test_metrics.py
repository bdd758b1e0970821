#!/usr/bin/env python3
"""GET /metrics on the admin listener: Prometheus text format, requests by
route and status class, the duration histogram, upstream responses and
failures, the gauges and process metrics. Fast (~2 s)."""
import http.client
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def scrape(f):
    """GET /metrics, parsed strictly: {(name, frozenset(labels)): value},
    and the TYPE of each family."""
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        eq(r.status, 200, "GET /metrics status")
        check(r.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"),
              "Content-Type %r" % r.getheader("Content-Type"))
    finally:
        c.close()
    samples, types = {}, {}
    check(body.endswith("\n"), "the exposition ends with a newline")
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            check(name not in types, "TYPE %s given twice" % name)
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        check(m, "not a sample line: %r" % line)
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = LABEL.match(rest, pos)
                check(lm, "bad labels in %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        check(m.group(1) in types or family in types, "sample %s before its TYPE" % m.group(1))
        key = (m.group(1), frozenset(labels.items()))
        check(key not in samples, "sample given twice: %r" % line)
        samples[key] = float(m.group(4))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def setup():
    be = backend()
    f = ferry(workers=1,  # ferry_workers and per-worker gauges
              upstreams={"api": servers(be), "dead": servers(refused_address())},
              routes=[respond_route("ping", "/ping", status=200, body="pong\n"),
                      route("api", "/api", upstream="api"),
                      route("dead", "/dead", upstream="dead")])
    return be, f


def test_counts_by_route_and_class():
    "requests are counted by route and status class, upstream responses by server"
    be, f = setup()
    for _ in range(3):
        eq(request(f, "GET", "/api/fast").status, 200, "GET /api/fast")
    eq(request(f, "GET", "/api/status?code=503").status, 503, "GET /api/status?code=503")
    eq(request(f, "GET", "/ping").status, 200, "GET /ping")
    eq(request(f, "GET", "/nowhere").status, 404, "GET /nowhere")
    eq(request(f, "GET", "/dead/x").status, 502, "GET /dead/x")
    wait_until(lambda: value(scrape(f)[0], "ferry_requests_total", route="dead", code="5xx"),
               what="the 502 counted")
    s, types = scrape(f)
    eq(types.get("ferry_requests_total"), "counter", "TYPE ferry_requests_total")
    eq(types.get("ferry_request_duration_seconds"), "histogram", "TYPE of the histogram")
    eq(value(s, "ferry_requests_total", route="api", code="2xx"), 3, "api 2xx")
    eq(value(s, "ferry_requests_total", route="api", code="5xx"), 1, "api 5xx")
    eq(value(s, "ferry_requests_total", route="ping", code="2xx"), 1, "ping 2xx")
    eq(value(s, "ferry_requests_total", route="", code="4xx"), 1, "no route 4xx")
    eq(value(s, "ferry_requests_total", route="dead", code="5xx"), 1, "dead 5xx")
    addr = "127.0.0.1:%d" % be.port
    eq(value(s, "ferry_upstream_responses_total", upstream="api", server=addr, code="2xx"), 3,
       "upstream 2xx")
    eq(value(s, "ferry_upstream_responses_total", upstream="api", server=addr, code="5xx"), 1,
       "upstream 5xx (the backend's own 503)")
    eq(value(s, "ferry_upstream_failures_total", upstream="api", server=addr), 0,
       "upstream failures of a healthy server")
    dead = [v for (n, l), v in s.items()
            if n == "ferry_upstream_failures_total" and ("upstream", "dead") in l]
    eq(dead, [1], "failures of the refusing server")


def test_histogram_is_consistent():
    "buckets are cumulative, +Inf equals _count equals the requests, _sum is their time"
    be, f = setup()
    for _ in range(4):
        request(f, "GET", "/api/fast")
    eq(request(f, "GET", "/api/slow?ms=300").status, 200, "GET /api/slow?ms=300")
    # a request is counted once its answer is out: the client may be first
    wait_until(lambda: value(scrape(f)[0], "ferry_request_duration_seconds_count",
                             route="api") == 5, 3)
    s, _ = scrape(f)
    buckets = sorted(((float(dict(l)["le"]), v) for (n, l), v in s.items()
                      if n == "ferry_request_duration_seconds_bucket" and ("route", "api") in l))
    check(len(buckets) > 5, "buckets of route api: %r" % buckets)
    eq(buckets[-1][0], float("inf"), "the last bucket")
    for (a, va), (b, vb) in zip(buckets, buckets[1:]):
        check(va <= vb, "bucket le=%g (%g) above le=%g (%g)" % (a, va, b, vb))
    count = value(s, "ferry_request_duration_seconds_count", route="api")
    eq(buckets[-1][1], 5, "requests in +Inf")
    eq(count, 5, "_count")
    below = [v for le, v in buckets if le == 0.25][0]
    eq(below, 4, "requests under 250 ms (the slow one is 300 ms)")
    total = value(s, "ferry_request_duration_seconds_sum", route="api")
    check(0.3 <= total < 5, "_sum %r: the 300 ms request and four fast ones" % total)


def test_gauges_and_process():
    "gauges follow the live state; process metrics are there and plausible"
    be, f = setup()
    c = Client(f.port)
    c.send(build_request("GET", "/api/slow?ms=1500"))
    # The request is in flight before its upstream connect completes: wait
    # for both, so that a loaded machine does not catch the gap between.
    wait_until(lambda: be.stats()["requests"] == 1, what="the request at the backend")
    wait_until(lambda: value(scrape(f)[0], "ferry_requests_in_flight") == 1,
               what="one request in flight")
    s, types = scrape(f)
    eq(value(s, "ferry_connections"), 1, "ferry_connections")
    eq(value(s, "ferry_upstream_connections"), 1, "ferry_upstream_connections")
    eq(types.get("ferry_connections"), "gauge", "TYPE ferry_connections")
    eq(value(s, "ferry_workers"), 1, "ferry_workers")
    check(value(s, "process_resident_memory_bytes") > 1 << 20, "RSS above 1 MiB")
    check(value(s, "process_open_fds") >= 5, "open fds")
    start = value(s, "process_start_time_seconds")
    check(abs(start - time.time()) < 120, "start time %r vs now %r" % (start, time.time()))
    check(value(s, "process_cpu_seconds_total") >= 0, "cpu seconds")
    builds = [dict(l) for (n, l), v in s.items() if n == "ferry_build_info" and v == 1]
    check(builds and builds[0].get("version"), "ferry_build_info{version}: %r" % builds)
    r = c.response(5)
    eq(r.status, 200, "the slow request")
    c.close()
    wait_until(lambda: value(scrape(f)[0], "ferry_requests_in_flight") == 0,
               what="no request in flight")


def total_requests(s):
    return sum(v for (n, l), v in s.items() if n == "ferry_requests_total")


def failures(s, upstream):
    return sum(v for (n, l), v in s.items()
               if n == "ferry_upstream_failures_total" and ("upstream", upstream) in l)


def test_requests_total_agrees_with_status():
    "every request counts once: pipelined ones, 404s, and 503s answered without a coroutine"
    be = backend()
    f = ferry(workers=1,  # max_requests is per worker
              upstreams={"api": servers(be)},
              routes=[respond_route("ping", "/ping"), route("api", "/api", upstream="api")],
              max_requests=1)
    c = Client(f.port)
    try:  # three pipelined requests: one coroutine, three requests
        c.send(build_request("GET", "/ping") * 2 + build_request("GET", "/nowhere"))
        for want in (200, 200, 404):
            eq(c.response(5).status, want, "pipelined answer")
    finally:
        c.close()
    busy = Client(f.port)  # holds the only request slot
    busy.send(build_request("GET", "/api/slow?ms=1500"))
    time.sleep(0.3)
    eq(request(f, "GET", "/ping").status, 503, "over max_requests (no coroutine)")
    eq(busy.response(5).status, 200, "the slow request")
    busy.close()
    def agree():
        s, _ = scrape(f)
        return total_requests(s) == f.status()["requests_total"] == 5 and s
    s = wait_until(agree, 5.0)
    check(s, "requests: /metrics %r, /status %r, expected 5 each"
          % (total_requests(scrape(f)[0]), f.status()["requests_total"]))
    eq(value(s, "ferry_requests_total", route="", code="5xx"), 1, "the 503 without a route")


def test_upstream_failures_only_blame_servers():
    "ferry_upstream_failures_total: not for 499, bad bodies or max_connections; yes for resets"
    be = backend()
    f = ferry(workers=1,  # max_connections is per worker
              upstreams={"api": servers(be), "one": servers(be, max_connections=1),
                         "dead": servers(refused_address())},
              routes=[route("api", "/api", upstream="api", strip_prefix="/api"),
                      route("one", "/one", upstream="one", strip_prefix="/one"),
                      route("dead", "/dead", upstream="dead")],
              timeouts={"upstream_connect": "300ms"})
    # a client that leaves while the server works: 499, not the server's fault
    c = Client(f.port)
    c.send(build_request("GET", "/api/slow?ms=2000"))
    check(be.wait_for(lambda b: b.stats()["active"] >= 1, 3.0), "the request reached the backend")
    c.close()
    f.wait_access(lambda e: e.get("status") == 499, what="the 499")
    # a bad chunked request body: 400, not the server's fault
    c = Client(f.port)
    try:
        c.send(b"PUT /api/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"zz\r\nhello\r\n0\r\n\r\n")
        eq(c.response(5).status, 400, "bad chunked body")
    finally:
        c.close()
    # the server at max_connections: 503, busy is not failing
    hold = Client(f.port)
    hold.send(build_request("GET", "/one/slow?ms=1500"))
    time.sleep(0.3)
    eq(request(f, "GET", "/one/fast").status, 503, "no max_connections slot")
    eq(hold.response(5).status, 200, "the slot holder")
    hold.close()
    # a reset and a refused connect are the servers' failures
    eq(request(f, "GET", "/api/reset").status, 502, "reset")
    eq(request(f, "GET", "/dead/x").status, 502, "refused")
    s, _ = scrape(f)
    eq(failures(s, "api"), 1, "api failures (the reset only; not the 499 nor the bad body)")
    eq(failures(s, "one"), 0, "failures of a busy server")
    eq(failures(s, "dead"), 1, "failures of the refusing server")
    err = f.stderr_text()
    check("Device or resource busy" not in err, "the busy warning reads as a connect error")
    check("no connection free within upstream_connect (max_connections 1)" in err,
          "no warning naming max_connections: %s" % f.stderr_tail(10))


def test_upstream_responses_count_every_attempt():
    "ferry_upstream_responses_total counts a 503 dropped for a retry, and the retry's answer"
    a, b = backend("a"), backend("b")
    a.force = 503
    f = ferry(workers=1,  # round robin is per worker
              upstreams={"u": servers(a, b, retries={"attempts": 1, "on": [503]})},
              routes=[route("u", "/", upstream="u")])
    for _ in range(2):
        eq(request(f, "GET", "/fast").status, 200, "retried past the 503")
    s, _ = scrape(f)
    eq(value(s, "ferry_upstream_responses_total", upstream="u", server=a.address, code="5xx"), 1,
       "a's 503, dropped for the retry")
    eq(value(s, "ferry_upstream_responses_total", upstream="u", server=b.address, code="2xx"), 2,
       "b's answers")
    eq(failures(s, "u"), 0, "a 503 is a response, not a failure")


if __name__ == "__main__":
    run(globals(), budget=45)
