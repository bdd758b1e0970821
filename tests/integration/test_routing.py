#!/usr/bin/env python3
"""Routing (issue 5, point 3): host (exact, wildcard, case, port, trailing
dot, absolute-form), exact path, path_prefix on segment boundaries, dot-segment
normalisation before matching, methods, strip_prefix/add_prefix with the
query kept, first match wins. Fast (~2 s)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def setup():
    a = backend("a")
    b = backend("b")
    f = ferry(upstreams={"a": servers(a), "b": servers(b)}, routes=[
        route("host-exact", "/", upstream="a", host="api.test"),
        route("host-wild", "/", upstream="b", host="*.wild.test"),
        respond_route("exact", None, body="exact\n", path="/exact"),
        route("v1", "/v1", upstream="a", strip_prefix="/v1", add_prefix="/internal"),
        respond_route("get-only", "/get-only", body="get-only\n", methods=["GET"]),
        respond_route("first", "/first", body="first\n"),
        respond_route("second", "/first/sub", body="second\n"),
        route("strip", "/strip", upstream="b", strip_prefix="/strip"),
        route("prefix-slash", "/pre/", upstream="b"),
    ])
    return a, b, f


def test_host_matching():
    "exact and wildcard hosts, case-insensitive, without port or trailing dot"
    a, b, f = setup()
    run_cases(f, [
        Case("Host api.test -> a", host="api.test", path="/x", status=200, backend=a,
             upstream={"target": "/x"}),
        Case("Host API.Test:8080 -> a", host="API.Test:8080", path="/y", status=200, backend=a,
             upstream={"target": "/y"}),
        Case("Host api.test. -> a", host="api.test.", path="/z", status=200, backend=a,
             upstream={"target": "/z"}),
        Case("Host x.wild.test -> b", host="x.wild.test", path="/w", status=200, backend=b,
             upstream={"target": "/w"}),
        Case("Host deep.x.wild.test -> b", host="deep.x.wild.test", path="/w2", status=200,
             backend=b, upstream={"target": "/w2"}),
        Case("Host wild.test is not *.wild.test -> 404", host="wild.test", path="/w", status=404,
             backend=b, upstream=False),
        Case("Host other.test -> 404", host="other.test", path="/x", status=404, backend=a,
             upstream=False),
        Case("absolute-form target overrides Host", raw=b"GET http://api.test/abs HTTP/1.1\r\n"
             b"Host: other.test\r\n\r\n", status=200, backend=a, upstream={"path": "/abs"}),
    ])


def test_paths_and_prefixes():
    "exact path, prefix on segment boundaries, dot segments resolved before routing"
    a, b, f = setup()
    run_cases(f, [
        Case("/exact -> exact", path="/exact", status=200, resp_body="exact\n"),
        Case("/exact/more -> 404 (path is exact)", path="/exact/more", status=404),
        Case("/first/sub/x -> first (first match wins)", path="/first/sub/x", status=200,
             resp_body="first\n"),
        Case("/first -> first", path="/first", status=200, resp_body="first\n"),
        Case("/firstly -> 404 (segment boundary)", path="/firstly", status=404),
        Case("/v1evil -> 404 (segment boundary)", path="/v1evil", status=404, backend=a,
             upstream=False),
        Case("/v1/../exact -> /exact", path="/v1/../exact", status=200, resp_body="exact\n"),
        Case("/a/./b/../../first -> /first", path="/a/./b/../../first", status=200,
             resp_body="first\n"),
        Case("/pre/x -> prefix-slash", path="/pre/x", status=200, backend=b,
             upstream={"target": "/pre/x"}),
        Case("%2F in the path -> 400", path="/v1%2Fusers", status=400, backend=a,
             upstream=False),
    ])


def test_methods():
    "methods restrict a route; no other route -> 404"
    a, b, f = setup()
    run_cases(f, [
        Case("GET /get-only -> 200", path="/get-only", status=200, resp_body="get-only\n"),
        Case("POST /get-only -> 404", method="POST", path="/get-only", body=b"x", status=404),
        Case("DELETE /get-only -> 404", method="DELETE", path="/get-only", status=404),
    ])


def test_strip_add_prefix():
    "strip_prefix/add_prefix rewrite the forwarded path, query kept"
    a, b, f = setup()
    run_cases(f, [
        Case("/v1/users?x=1&y=2 -> /internal/users?x=1&y=2", path="/v1/users?x=1&y=2",
             status=200, backend=a, upstream={"target": "/internal/users?x=1&y=2"}),
        Case("/v1 -> /internal[/]", path="/v1", status=200, backend=a,
             upstream={"target": re.compile(r"^/internal/?$")}),
        Case("/v1/ -> /internal/", path="/v1/", status=200, backend=a,
             upstream={"target": "/internal/"}),
        Case("/x/../v1/a -> /internal/a", path="/x/../v1/a", status=200, backend=a,
             upstream={"target": "/internal/a"}),
        Case("/strip/a/b -> /a/b", path="/strip/a/b", status=200, backend=b,
             upstream={"target": "/a/b"}),
        Case("/strip -> /", path="/strip", status=200, backend=b, upstream={"target": "/"}),
        Case("/strip?q=1 -> /?q=1", path="/strip?q=1", status=200, backend=b,
             upstream={"target": "/?q=1"}),
    ])


def test_path_params_and_case():
    "';' and case: routes match the normalised path as is; reject_path_params: true answers 400"
    guarded = backend("guarded")
    open_ = backend("open")
    f = ferry(upstreams={"g": servers(guarded), "o": servers(open_)}, routes=[
        respond_route("admin", "/admin", status=403, body="no\n"),
        route("strict", "/app", upstream="g", reject_path_params=True),
        route("rest", "/", upstream="o"),
    ])
    run_cases(f, [
        Case("/admin/x: the guard answers", path="/admin/x", status=403, backend=open_,
             upstream=False),
        Case("/app/admin;x/y: refused on a reject_path_params route", path="/app/admin;x/y",
             status=400, json={"status": 400}, backend=guarded, upstream=False),
        Case("/app/a;jsessionid=1: refused", path="/app/a;jsessionid=1", status=400,
             backend=guarded, upstream=False),
        Case("/app/a%3Bb (encoded ';'): refused", path="/app/a%3Bb", status=400,
             backend=guarded, upstream=False),
        Case("/app/a%3bb (lower-case hex): refused", path="/app/a%3bb", status=400,
             backend=guarded, upstream=False),
        Case("/app/x?a=1;b=2: ';' in the query is not a path parameter", path="/app/x?a=1;b=2",
             status=200, backend=guarded, upstream={"target": "/app/x?a=1;b=2"}),
        Case("/app/x: served", path="/app/x", status=200, backend=guarded,
             upstream={"target": "/app/x"}),
        # Without the option, ';' is forwarded as sent: a server that strips
        # ";params" sees /admin/x, which no route guarded (documented).
        Case("/admin;x/y: not under /admin, forwarded as is", path="/admin;x/y", status=200,
             backend=open_, upstream={"target": "/admin;x/y"}),
        # Matching is case-sensitive: a case-insensitive server sees /admin.
        Case("/ADMIN/x: not under /admin, forwarded as is", path="/ADMIN/x", status=200,
             backend=open_, upstream={"target": "/ADMIN/x"}),
    ])
    e = f.wait_access(lambda e: e.get("path") == "/app/admin;x/y", what="the refused request")
    eq((e["status"], e["route"]), (400, "strict"), "refused request's log line")


if __name__ == "__main__":
    run(globals(), budget=30)
