#!/usr/bin/env python3
"""Pipelining (issue 6, point 2): requests sent back to back in one write
are answered in order, whatever mix of respond routes, proxied GETs, POSTs
with bodies, HEADs (no body in their answer) and a slow backend; a parse
error on one request ends the connection after its 400, and nothing after
it -- neither the valid requests that follow nor bytes smuggled in a body --
reaches the backend. ~6 s."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def setup(**kw):
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping", body="pong\n"),
                      route("up", "/up", upstream="u", strip_prefix="/up")], **kw)
    return be, f


def req(method, path, body=b"", headers=None):
    return build_request(method, path, headers, body)


def test_http10_keep_alive_confirmed():
    "HTTP/1.0 with Connection: keep-alive: every answer says keep-alive (as the client needs) and the next is served"
    be, f = setup()
    c = Client(f.port)
    try:
        for path, want in (("/ping", 200), ("/nope", 404), ("/up/echo", 200)):
            c.send(b"GET %s HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n" % path.encode())
            r = c.response(5)
            eq(r.status, want, "HTTP/1.0 %s" % path)
            eq((r.header("Connection") or "").lower(), "keep-alive", "HTTP/1.0 %s: Connection" % path)
    finally:
        c.close()
    c = Client(f.port)
    try:
        c.send(b"GET /ping HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.response(5)
        eq((r.header("Connection") or "").lower(), "close", "HTTP/1.0 without keep-alive: Connection")
        check(c.closed(3.0), "HTTP/1.0 without keep-alive: the connection stayed open")
    finally:
        c.close()


def test_mixed_in_order():
    "12 mixed requests in one write (respond, GET, POST, HEAD, slow): 12 answers in order"
    be, f = setup()
    seq = [
        ("GET", "/up/echo?i=0", b""),
        ("GET", "/ping", b""),
        ("POST", "/up/echo?i=2", b"body-two"),
        ("HEAD", "/up/echo?i=3", b""),
        ("GET", "/up/slow?ms=300&i=4", b""),
        ("GET", "/ping", b""),
        ("HEAD", "/ping", b""),
        ("POST", "/up/echo?i=7", pattern(70000)),
        ("GET", "/up/chunked?n=4&size=100&i=8", b""),
        ("HEAD", "/up/chunked?n=4&size=100&i=9", b""),
        ("DELETE", "/up/echo?i=10", b""),
        ("GET", "/up/echo?i=11", b""),
    ]
    data = b"".join(req(m, p, b) for m, p, b in seq[:-1])
    data += req(seq[-1][0], seq[-1][1], headers={"Connection": "close"})
    heads = {i for i, (m, _, _) in enumerate(seq) if m == "HEAD"}
    res = raw(f, data, timeout=10, head_requests=heads)
    eq(len(res.responses), len(seq), "number of answers (ended by %s)" % res.how)
    for i, ((m, p, b), r) in enumerate(zip(seq, res.responses)):
        what = "answer %d (%s %s)" % (i, m, p)
        expect_response(r, status=200, what=what)
        if m == "HEAD":
            check(r.body == b"", "%s: a body in the answer to HEAD" % what)
            continue
        if p == "/ping":
            eq(r.body, b"pong\n", what)
        elif "echo" in p:
            j = r.json()
            eq(j["query"].get("i"), [str(i)], "%s: answered out of order" % what)
            eq(j["method"], m, what + " method")
            eq(j["body_len"], len(b), what + " body length")
        elif "slow" in p:
            eq(r.body, b"slow\n", what)
        elif "chunked" in p:
            eq(r.body, pattern(400), what)
    check(res.how == "eof", "the connection did not end after Connection: close (%s)" % res.how)
    f.assert_alive()


def test_hundred_back_to_back():
    "100 pipelined proxied GETs in one write: 100 answers, in order, on one connection"
    be, f = setup()
    n = 100
    data = b"".join(req("GET", "/up/echo?i=%d" % i) for i in range(n))
    data += req("GET", "/ping", headers={"Connection": "close"})
    res = raw(f, data, timeout=15)
    eq(len(res.responses), n + 1, "number of answers")
    order = [r.json()["query"]["i"][0] for r in res.responses[:n]]
    eq(order, [str(i) for i in range(n)], "order of the answers")
    eq(res.responses[n].body, b"pong\n", "last answer")
    forwarded = [r for r in be.requests if r.mode == "echo"]
    eq(len(forwarded), n, "requests the backend received")


def test_body_is_not_a_request():
    "a pipelined POST whose body looks like a request: the body goes up as a body, not a request"
    be, f = setup()
    smuggled = b"GET /up/echo?smuggled=1 HTTP/1.1\r\nHost: test.local\r\n\r\n"
    data = (req("POST", "/up/echo?i=0", smuggled)
            + req("GET", "/up/echo?i=1", headers={"Connection": "close"}))
    res = raw(f, data, timeout=5)
    eq(len(res.responses), 2, "number of answers")
    eq(res.responses[0].json()["body"].encode("latin-1"), smuggled, "first request's body")
    eq(res.responses[1].json()["query"], {"i": ["1"]}, "second answer")
    check(not any("smuggled" in r.target for r in be.requests),
          "the body was forwarded as a request: %r" % [r.target for r in be.requests])


BAD = [
    ("a header without a colon", b"GET /up/echo?bad=1 HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n"),
    ("two Content-Lengths", b"POST /up/echo?bad=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                            b"Content-Length: 4\r\n\r\nabcd"),
    ("Content-Length and chunked", b"POST /up/echo?bad=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("garbage request line", b"THIS IS NOT HTTP\r\n\r\n"),
    ("space before colon", b"GET /up/echo?bad=1 HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n"),
    ("bare LF line", b"GET /up/echo?bad=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: 2\r\n\r\n"),
]


def test_parse_error_closes_and_forwards_nothing_after():
    "ok, ok, BAD, ok, ok in one write: 200, 200, 400, then EOF; the backend sees only the first two"
    for name, bad in BAD:
        be, f = setup()
        data = (req("GET", "/up/echo?i=0") + req("GET", "/ping") + bad
                + req("GET", "/up/echo?after=1") + req("POST", "/up/echo?after=2", b"x" * 10))
        res = raw(f, data, timeout=5)
        sts = [r.status for r in res.responses]
        eq(sts, [200, 200, 400], "answers with %s in the middle (%s)" % (name, res.how))
        expect_response(res.responses[2], json={"status": 400}, what="the 400 for %s" % name)
        check(res.how in ("eof", "reset"), "connection open after the 400 for %s" % name)
        time.sleep(0.1)
        targets = [r.target for r in be.requests]
        eq(targets, ["/echo?i=0"], "requests the backend received with %s in the middle" % name)
        f.stop()
        be.stop()


def test_bad_chunked_body_closes():
    "a bad chunk in a pipelined POST: 400 after the head went up, nothing after it is forwarded"
    be, f = setup()
    data = (req("GET", "/up/echo?i=0")
            + b"POST /up/echo?i=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\nzz\r\nGET /up/echo?after=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            + req("GET", "/up/echo?after=2"))
    res = raw(f, data, timeout=5)
    sts = [r.status for r in res.responses]
    check(len(sts) == 2 and sts[0] == 200 and sts[1] in (400, 502),
          "answers: %r (%s)" % (sts, res.how))
    check(res.how in ("eof", "reset"), "connection open after a bad chunk")
    time.sleep(0.1)
    check(not any("after" in r.target for r in be.requests),
          "bytes after the bad chunk were forwarded: %r" % [r.target for r in be.requests])


def test_parse_error_after_slow_one():
    "GET slow then a bad request: the slow answer first, then the 400, then EOF"
    be, f = setup()
    data = req("GET", "/up/slow?ms=500") + BAD[0][1] + req("GET", "/up/echo?after=1")
    res = raw(f, data, timeout=5)
    eq([r.status for r in res.responses], [200, 400], "answers")
    eq(res.responses[0].body, b"slow\n", "the slow answer comes first")
    check(not any("after" in r.target for r in be.requests), "a request after the 400 was forwarded")


def test_pipelined_early_close_request():
    "Connection: close on the 2nd of 4: two answers, EOF, the 3rd and 4th never forwarded"
    be, f = setup()
    data = (req("GET", "/up/echo?i=0") + req("GET", "/up/echo?i=1", headers={"Connection": "close"})
            + req("GET", "/up/echo?after=1") + req("GET", "/up/echo?after=2"))
    res = raw(f, data, timeout=5)
    eq([r.status for r in res.responses], [200, 200], "answers")
    eq(res.how, "eof", "end of the connection")
    time.sleep(0.1)
    eq([r.target for r in be.requests], ["/echo?i=0", "/echo?i=1"], "forwarded requests")


if __name__ == "__main__":
    run(globals(), budget=40)
