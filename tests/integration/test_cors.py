#!/usr/bin/env python3
"""CORS on a route (issue 17, item 4) through a real Ferry: a preflight is
answered 204 by Ferry and never reaches the upstream, with the route's
Access-Control-* fields for an allowed origin (exact or a subdomain
pattern) and none for another; actual requests get Access-Control-Allow-
Origin (replacing the upstream's own), -Allow-Credentials, -Expose-Headers
and Vary: Origin; "*" without credentials answers "*" without Vary;
credentials with "*" is a config error; a 429 carries the CORS fields.
Fast (~2 s)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

CORS = {"allow_origins": ["https://app.example.com", "https://*.example.org"],
        "allow_methods": ["GET", "PUT", "DELETE"],
        "allow_headers": ["Authorization", "X-Trace"],
        "expose_headers": ["X-Total"],
        "allow_credentials": True,
        "max_age": "10m"}


def setup():
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[
        route("api", "/api", upstream="u", cors=CORS),
        route("open", "/open", upstream="u", cors={"allow_origins": ["*"]}),
        route("plain", "/", upstream="u")])
    return be, f


def preflight(f, path, origin, method="PUT"):
    return request(f, "OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, x-trace"})


def test_preflight_answered_by_ferry():
    "a preflight from an allowed origin: 204 with the route's fields, upstream untouched"
    be, f = setup()
    for origin in ("https://app.example.com", "https://eu.shop.example.org"):
        r = preflight(f, "/api/things", origin)
        eq(r.status, 204, "preflight status (%s)" % origin)
        eq(r.header("Access-Control-Allow-Origin"), origin, "Allow-Origin echoes the origin")
        eq(r.header("Access-Control-Allow-Methods"), "GET, PUT, DELETE", "Allow-Methods")
        eq(r.header("Access-Control-Allow-Headers"), "Authorization, X-Trace", "Allow-Headers")
        eq(r.header("Access-Control-Allow-Credentials"), "true", "Allow-Credentials")
        eq(r.header("Access-Control-Max-Age"), "600", "Max-Age in seconds")
        eq(r.header("Vary"), "Origin", "Vary")
        eq(r.body, b"", "no body")
    eq(be.stats()["requests"], 0, "preflights never reach the upstream")


def test_preflight_disallowed_origin():
    "a preflight from another origin: 204 without any Access-Control field"
    be, f = setup()
    for origin in ("https://evil.com", "https://example.org", "http://app.example.com",
                   "https://app.example.com.evil.com", "null"):
        r = preflight(f, "/api/things", origin)
        eq(r.status, 204, "status (%s)" % origin)
        names = [n.lower() for n, _ in r.headers]
        check(not any(n.startswith("access-control-") for n in names),
              "no CORS fields for %s: %r" % (origin, r.headers))
        eq(r.header("Vary"), "Origin", "Vary")
    eq(be.stats()["requests"], 0, "upstream untouched")


def test_options_without_cors_goes_upstream():
    "OPTIONS that is not a preflight, or on a route without cors, is proxied"
    be, f = setup()
    eq(request(f, "OPTIONS", "/api/x", headers={"Origin": "https://app.example.com"}).status,
       200, "OPTIONS without Access-Control-Request-Method")
    r = preflight(f, "/plain", "https://app.example.com")
    eq(r.status, 200, "a route without cors")
    eq(r.header("Access-Control-Allow-Origin"), None, "no CORS fields from Ferry")
    eq(be.stats()["requests"], 2, "both reached the upstream")


def test_actual_requests():
    "actual requests: fields for an allowed origin replace the upstream's; none for another"
    be, f = setup()
    path = "/api/headers?h=Access-Control-Allow-Origin:*&h=Vary:Accept-Encoding"
    r = request(f, "GET", path, headers={"Origin": "https://app.example.com"})
    eq(r.status, 200, "status")
    eq(r.header_all("Access-Control-Allow-Origin"), ["https://app.example.com"],
       "Allow-Origin: Ferry's, the upstream's replaced")
    eq(r.header("Access-Control-Allow-Credentials"), "true", "Allow-Credentials")
    eq(r.header("Access-Control-Expose-Headers"), "X-Total", "Expose-Headers")
    check("Origin" in ", ".join(r.header_all("Vary")), "Vary names Origin: %r" % r.headers)
    check("Accept-Encoding" in ", ".join(r.header_all("Vary")), "the upstream's Vary is kept")
    eq(r.header("Access-Control-Allow-Methods"), None, "no preflight fields")
    r = request(f, "GET", path, headers={"Origin": "https://evil.com"})
    eq(r.status, 200, "status")
    eq(r.header("Access-Control-Allow-Origin"), None, "the upstream's field is removed")
    eq(r.header("Access-Control-Allow-Credentials"), None, "no credentials field")
    check("Origin" in ", ".join(r.header_all("Vary")), "Vary: Origin also here")
    r = request(f, "GET", "/api/fast")
    check("Origin" in ", ".join(r.header_all("Vary")), "Vary: Origin without an Origin")
    eq(r.header("Access-Control-Allow-Origin"), None, "no Allow-Origin without an Origin")


def test_any_origin():
    "allow_origins [*] without credentials: Allow-Origin *, no Vary: Origin"
    be, f = setup()
    r = preflight(f, "/open/x", "https://anyone.net", method="POST")
    eq(r.status, 204, "preflight")
    eq(r.header("Access-Control-Allow-Origin"), "*", "Allow-Origin")
    eq(r.header("Access-Control-Allow-Methods"), "GET, HEAD, POST", "default methods")
    eq(r.header("Vary"), None, "no Vary: the answer is the same for every origin")
    r = request(f, "GET", "/open/fast", headers={"Origin": "https://anyone.net"})
    eq(r.header("Access-Control-Allow-Origin"), "*", "actual request")
    eq(be.stats()["requests"], 1, "only the actual request went upstream")


def test_429_carries_cors_fields():
    "a rate-limited answer on a cors route carries the CORS fields (a script can read it)"
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[
        route("api", "/", upstream="u", cors=CORS, rate_limit={"requests": 1, "per": "1m"})])
    hdr = {"Origin": "https://app.example.com"}
    eq(request(f, "GET", "/fast", headers=hdr).status, 200, "the one token")
    r = request(f, "GET", "/fast", headers=hdr)
    eq(r.status, 429, "limited")
    eq(r.header("Access-Control-Allow-Origin"), "https://app.example.com", "Allow-Origin")
    eq(r.header("Vary"), "Origin", "Vary")
    # a preflight is answered before the limit and takes no token
    eq(preflight(f, "/x", "https://app.example.com").status, 204, "preflight while limited")


def test_credentials_with_any_origin_refused():
    "allow_credentials: true with allow_origins [*] is FILE:LINE:COLUMN and no start"
    d = tmpdir()
    path = os.path.join(d, "bad.yaml")
    with open(path, "w") as fh:
        fh.write("listen: [{address: 127.0.0.1:1}]\nroutes:\n  - name: r\n"
                 "    respond: {status: 200}\n    cors:\n      allow_origins: [\"*\"]\n"
                 "      allow_credentials: true\n")
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0, "ferry -t refuses it")
    check("bad.yaml:7:26: routes[0].cors.allow_credentials: cannot be true" in err,
          "the place is named: %r" % err)


if __name__ == "__main__":
    run(globals())
