#!/usr/bin/env python3
"""Basic proxying (issue 5, points 3 and 8): a respond route, the 404 JSON
answer, GET and POST through to a backend with http.client, curl and raw
sockets, client keep-alive, and the access-log line. Fast (~3 s)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

LOG_FIELDS = ["time", "client", "method", "host", "path", "status", "bytes", "route", "upstream",
              "upstream_status", "request_id", "duration_ms"]


def setup():
    be = backend()
    f = ferry(upstreams={"api": servers(be)},
              routes=[respond_route("ping", "/ping", status=200, body="pong\n"),
                      respond_route("teapot", "/teapot", status=418, body='{"tea":1}',
                                    content_type="application/json"),
                      route("api", "/api", upstream="api")])
    return be, f


def test_respond_route():
    "respond routes answer directly with their status, body and content type"
    be, f = setup()
    run_cases(f, [
        Case("GET /ping -> 200 pong", path="/ping", status=200, resp_body="pong\n",
             resp_headers={"Content-Type": re.compile(r"^text/plain")}, backend=be,
             upstream=False),
        Case("GET /teapot -> 418 JSON", path="/teapot", status=418, json={"tea": 1},
             resp_headers={"Content-Type": re.compile(r"^application/json")}, backend=be,
             upstream=False),
        Case("HEAD /ping -> 200, no body", method="HEAD", path="/ping", status=200,
             resp_body=b""),
    ])


def test_no_route_404_json():
    "no matching route: 404 with a JSON error body whose request_id is the logged one"
    be, f = setup()
    r = request(f, "GET", "/nowhere/at/all")
    expect_response(r, status=404, headers={"Content-Type": re.compile(r"^application/json")},
                    json={"error": lambda v: isinstance(v, str) and v != "", "status": 404,
                          "request_id": lambda v: isinstance(v, str) and v != ""})
    rid = r.json()["request_id"]
    e = f.wait_access(lambda e: e.get("request_id") == rid, what="the 404 (request_id %s)" % rid)
    eq(e["status"], 404, "logged status")
    eq(be.stats()["requests"], 0, "requests that reached the backend")


def test_proxy_get_post():
    "GET and POST are proxied (http.client, curl, raw socket) with their bodies"
    be, f = setup()
    r = request(f, "GET", "/api/echo?x=1")
    expect_response(r, status=200, json={"method": "GET", "target": "/api/echo?x=1"})
    r = request(f, "POST", "/api/echo", body=b"hello=world",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    expect_response(r, status=200, json={"method": "POST", "body": "hello=world", "body_len": 11})
    eq(be.last().header("Content-Type"), "application/x-www-form-urlencoded",
       "Content-Type at the backend")
    rc, out, err = curl("-d", "via-curl", f.url("/api/echo"))
    eq(rc, 0, "curl exit status (stderr %r)" % err)
    check(b'"body": "via-curl"' in out, "curl POST body not echoed: %r" % out[:300])
    res = raw(f, b"GET /api/fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    expect_response(res.response, status=200, body="ok\n")
    eq(res.how, "eof", "how the Connection: close exchange ended")


def test_client_keepalive():
    "one client connection carries several requests (respond and proxied)"
    be, f = setup()
    c = Client(f.port)
    try:
        for i in range(5):
            r = c.request("GET", "/api/echo?i=%d" % i)
            expect_response(r, status=200, json={"target": "/api/echo?i=%d" % i})
            r = c.request("GET", "/ping")
            expect_response(r, status=200, body="pong\n")
        check(not c.closed(0.2), "ferry closed a keep-alive connection after 10 requests")
    finally:
        c.close()


def test_connection_close_honoured():
    "Connection: close from the client: answer, then ferry closes"
    be, f = setup()
    c = Client(f.port)
    try:
        r = c.request("GET", "/ping", headers={"Connection": "close"})
        expect_response(r, status=200)
        expect_closed(c, 2.0)
    finally:
        c.close()


def test_access_log_line():
    "one JSON access-log line per request with the documented fields"
    be, f = setup()
    r = request(f, "GET", "/api/echo?q=1", host="logged.test")
    expect_response(r, status=200)
    rid = be.last().header("X-Request-Id")
    check(rid, "the backend got no X-Request-Id")
    e = f.wait_access(lambda e: e.get("request_id") == rid, what="the proxied request")
    missing = [k for k in LOG_FIELDS if k not in e]
    check(not missing, "access-log line lacks %s: %r" % (missing, e))
    eq(e["status"], 200, "logged status")
    eq(e["upstream_status"], 200, "logged upstream_status")
    eq(e["method"], "GET", "logged method")
    check(e["path"].startswith("/api/echo"), "logged path %r" % e["path"])
    eq(e["host"], "logged.test", "logged host")
    eq(e["route"], "api", "logged route")
    eq(e["upstream"], be.address, "logged upstream server")
    check(str(e["client"]).startswith("127.0.0.1"), "logged client %r" % e["client"])
    check(isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0,
          "logged duration_ms %r" % e["duration_ms"])
    check(isinstance(e["bytes"], int) and e["bytes"] >= len(r.body),
          "logged bytes %r < body %d" % (e["bytes"], len(r.body)))
    request(f, "GET", "/ping")
    e = f.wait_access(lambda e: e.get("route") == "ping", what="the respond route")
    eq(e["status"], 200, "respond route logged status")
    n = len([e for e in f.access_log() if e.get("request_id") == rid])
    eq(n, 1, "access-log lines for one request")


if __name__ == "__main__":
    run(globals(), budget=30)
