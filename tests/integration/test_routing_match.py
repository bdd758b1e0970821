#!/usr/bin/env python3
"""Routing beyond host and path (issue 16, point 6), through a real Ferry
with real backends: match.path_regex on the normalised path with its
captures in rewrite (query kept, a dot segment made by a capture refused),
a pattern that backtracks without bound answered 500 and logged (Ferry
stays up and fast), match.headers (exact, prefix, regex, present, absent;
names case-insensitive, values byte for byte), match.query, a weighted
split (random: both upstreams get their share) and a sticky one (by header
and by cookie), and bad configs refused with FILE:LINE:COLUMN. Fast."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def mroute(name, match, **kw):
    r = {"name": name, "match": match}
    r.update(kw)
    return r


def setup():
    a = backend("a")
    b = backend("b")
    f = ferry(upstreams={"a": servers(a), "b": servers(b)}, routes=[
        mroute("users", {"path_regex": r"^/users/([0-9]+)(/[a-z]+)?$"}, upstream="a",
               rewrite="/api/user/$1$2"),
        mroute("evil", {"path_regex": r"^/evil/(a+)+$"}, upstream="a"),
        mroute("dots", {"path_regex": r"^/d/x(.*)$"}, upstream="a", rewrite="/s/$1"),
        mroute("canary", {"path_prefix": "/h", "headers": {
            "X-Canary": "1", "X-Ver": {"prefix": "2."}, "User-Agent": {"regex": "^curl/"},
            "X-Debug": {"absent": True}, "X-Team": {"present": True}}}, upstream="b"),
        mroute("query", {"path_prefix": "/q", "query": {"v": "2", "debug": {"present": True}}},
               upstream="b"),
        mroute("rest", {"path_prefix": "/"}, upstream="a"),
    ])
    return a, b, f


def test_path_regex_and_rewrite():
    "path_regex on the normalised path, captures in rewrite, the query kept"
    a, b, f = setup()
    run_cases(f, [
        Case("/users/42/posts?x=1 -> /api/user/42/posts?x=1", path="/users/42/posts?x=1",
             status=200, backend=a, upstream={"target": "/api/user/42/posts?x=1"}),
        Case("/users/7 -> /api/user/7 (a group that took no part is empty)", path="/users/7",
             status=200, backend=a, upstream={"target": "/api/user/7"}),
        Case("/users/9/../42 is matched as /users/42", path="/users/9/../42", status=200,
             backend=a, upstream={"target": "/api/user/42"}),
        Case("/users/x1 does not match: rest, path as sent", path="/users/x1", status=200,
             backend=a, upstream={"target": "/users/x1"}),
        Case("/d/xabc -> /s/abc", path="/d/xabc", status=200, backend=a,
             upstream={"target": "/s/abc"}),
        Case("a capture that makes '..' upstream -> 400, nothing sent", path="/d/x..",
             status=400, backend=a, upstream=False),
    ])


def test_regex_match_limit():
    "a pattern that backtracks without bound: 500 within the match limit, logged, Ferry up"
    a, b, f = setup()
    t0 = time.monotonic()
    r = request(f, "GET", "/evil/" + "a" * 60 + "b")
    took = time.monotonic() - t0
    expect_response(r, status=500, what="catastrophic backtracking")
    check(took < 3.0, "the bounded match took %.1fs" % took)
    wait_until(lambda: "match limit" in f.stderr_text(), what="the match-limit log line")
    r = request(f, "GET", "/evil/aaaa")
    expect_response(r, status=200, what="the same route on a short path")
    # logged once per worker per 10 s, not per request
    for _ in range(20):
        expect_response(request(f, "GET", "/evil/" + "a" * 40 + "b"), status=500)
    n = f.stderr_text().count("warn: route evil: a pattern hit its match limit")
    check(n <= 2, "the limit was logged %d times for 21 hits (2 workers)" % n)
    f.assert_alive()


def test_header_and_query_conditions():
    "headers: exact, prefix, regex, present, absent; query: exact and present"
    a, b, f = setup()
    good = {"x-canary": "1", "X-VER": "2.4", "User-Agent": "curl/8.0", "X-Team": "t"}

    def without(k, **extra):
        d = {n: v for n, v in good.items() if n != k}
        d.update(extra)
        return d
    run_cases(f, [
        Case("every condition holds -> b", path="/h", headers=good, status=200, backend=b,
             upstream={"target": "/h"}),
        Case("X-Canary: 2 -> a", path="/h", headers=without("x-canary", **{"X-Canary": "2"}),
             status=200, backend=b, upstream=False),
        Case("X-Ver 3.2. (prefix) -> a", path="/h", headers=without("X-VER", **{"X-Ver": "3.2."}),
             status=200, backend=b, upstream=False),
        Case("User-Agent wget (regex) -> a", path="/h",
             headers=without("User-Agent", **{"User-Agent": "wget/1"}), status=200, backend=b,
             upstream=False),
        Case("X-Debug present (absent) -> a", path="/h", headers=without("", **{"X-Debug": "0"}),
             status=200, backend=b, upstream=False),
        Case("no X-Team (present) -> a", path="/h", headers=without("X-Team"), status=200,
             backend=b, upstream=False),
        Case("query v=2&debug -> b", path="/q?v=2&debug", status=200, backend=b,
             upstream={"target": "/q?v=2&debug"}),
        Case("query v=20&debug -> a", path="/q?v=20&debug", status=200, backend=b,
             upstream=False),
        Case("query v=2 only -> a", path="/q?v=2", status=200, backend=a,
             upstream={"target": "/q?v=2"}),
    ])


def count_by_backend(f, a, b, n, headers_of):
    """Sends n requests on one keep-alive connection; returns how many
    each backend received and the backend of each request."""
    a0, b0 = a.stats()["requests"], b.stats()["requests"]
    which = []
    cl = Client(f.port)
    try:
        for i in range(n):
            r = cl.request("GET", "/s/%d" % i, headers=headers_of(i))
            expect_response(r, status=200, what="request %d" % i)
            which.append(a if a.stats()["requests"] - a0 > which.count(a) else b)
    finally:
        cl.close()
    return a.stats()["requests"] - a0, b.stats()["requests"] - b0, which


def test_split_random_shares():
    "split 80/20 without a key: each upstream gets its share"
    a = backend("a")
    b = backend("b")
    f = ferry(upstreams={"a": servers(a), "b": servers(b)}, routes=[
        mroute("split", {"path_prefix": "/s"},
               split=[{"upstream": "a", "weight": 80}, {"upstream": "b", "weight": 20}]),
    ])
    na, nb, _ = count_by_backend(f, a, b, 1000, lambda i: {})
    eq(na + nb, 1000, "requests at the backends")
    # 20 % of 1000 = 200, sd ~12.6: 140..260 is more than 4.5 sd
    check(140 <= nb <= 260, "canary got %d of 1000 (want about 200)" % nb)


def test_split_sticky():
    "split_key header:X-User and cookie:uid: a key keeps its upstream; both get keys"
    for key, hdr in (("header:X-User", lambda u: {"X-User": "user-%d" % u}),
                     ("cookie:uid", lambda u: {"Cookie": "theme=dark; uid=%d" % u})):
        a = backend("a")
        b = backend("b")
        f = ferry(upstreams={"a": servers(a), "b": servers(b)}, routes=[
            mroute("split", {"path_prefix": "/s"}, split_key=key,
                   split=[{"upstream": "a", "weight": 50}, {"upstream": "b", "weight": 50}]),
        ])
        users, rounds = 40, 5
        _, _, which = count_by_backend(f, a, b, users * rounds, lambda i: hdr(i % users))
        for u in range(users):
            picks = {which[u + k * users].name for k in range(rounds)}
            check(len(picks) == 1, "%s: user %d went to %s" % (key, u, sorted(picks)))
        to_b = sum(1 for u in range(users) if which[u].name == "b")
        check(5 <= to_b <= 35, "%s: %d of %d users on b" % (key, to_b, users))
        f.stop()


def test_bad_config_positions():
    "a regex that does not compile, a bad header form, split weight 0, unknown upstream"
    d = tmpdir()
    path = os.path.join(d, "bad.yaml")
    with open(path, "w") as fh:
        fh.write("listen: [{address: 127.0.0.1:1}]\n"
                 "upstreams:\n"
                 "  a: {servers: [{address: 127.0.0.1:9}]}\n"
                 "routes:\n"
                 "  - name: r1\n"
                 "    match: {path_regex: '^/(x'}\n"
                 "    upstream: a\n"
                 "  - name: r2\n"
                 "    match: {headers: {X-A: {prefix: p, absent: true}}}\n"
                 "    upstream: a\n"
                 "  - name: r3\n"
                 "    split: [{upstream: a, weight: 0}, {upstream: nope}]\n")
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    eq(rc, 1, "ferry -t exit status")
    for pat in (r"bad\.yaml:6:30: routes\[0\]\.match\.path_regex: does not compile: "
                r"missing closing parenthesis at offset 4",
                r"bad\.yaml:9:28: routes\[1\]\.match\.headers\.X-A: give exactly one of",
                r"bad\.yaml:12:35: routes\[2\]\.split\[0\]\.weight: expected a weight",
                r"bad\.yaml:12:50: routes\[2\]\.split\[1\]\.upstream: unknown upstream"):
        check(re.search(pat, err), "no %r in:\n%s" % (pat, err))


if __name__ == "__main__":
    run(globals())
