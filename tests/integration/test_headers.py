#!/usr/bin/env python3
"""Forwarded headers (issue 5, point 3): X-Forwarded-* kept only from
trusted_proxies, Via, X-Request-Id, hop-by-hop removal both ways, host_header
modes, request re-serialisation. Fast (~2 s)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def joined(req, name):
    v = req.header_all(name)
    return ", ".join(v) if v else None


def setup(trusted):
    be = backend()
    f = ferry(trusted_proxies=trusted, upstreams={"u": servers(be)},
              routes=[route("all", "/", upstream="u")])
    return be, f


FORGED = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https",
          "X-Forwarded-Host": "evil.test", "Forwarded": "for=1.2.3.4;proto=https"}


def test_untrusted_peer():
    "from a peer outside trusted_proxies, X-Forwarded-*/Forwarded are replaced by ferry's own"
    be, f = setup(["10.0.0.0/8"])

    def upstream(req):
        eq(joined(req, "X-Forwarded-For"), "127.0.0.1", "upstream X-Forwarded-For")
        eq(req.header("X-Forwarded-Proto"), "http", "upstream X-Forwarded-Proto")
        check(req.header("X-Forwarded-Host") in (None, "client.test"),
              "upstream X-Forwarded-Host %r" % req.header("X-Forwarded-Host"))
        check("1.2.3.4" not in (joined(req, "Forwarded") or ""),
              "forged Forwarded kept: %r" % joined(req, "Forwarded"))
    run_cases(f, [Case("forged headers dropped", path="/echo", host="client.test",
                       headers=FORGED, status=200, backend=be, upstream=upstream),
                  Case("no headers -> ferry adds its own", path="/echo", status=200, backend=be,
                       upstream={"headers": {"X-Forwarded-For": "127.0.0.1",
                                             "X-Forwarded-Proto": "http"}})])


def test_trusted_peer():
    "from a trusted peer, X-Forwarded-For is kept and the peer appended"
    be, f = setup(["127.0.0.1/32"])

    def upstream(req):
        eq(joined(req, "X-Forwarded-For"), "1.2.3.4, 127.0.0.1", "upstream X-Forwarded-For")
        eq(req.header("X-Forwarded-Proto"), "https", "upstream X-Forwarded-Proto (trusted)")
    run_cases(f, [Case("trusted chain kept", path="/echo", headers=FORGED, status=200,
                       backend=be, upstream=upstream)])


def test_via_and_request_id():
    "Via added (appended to the client's), X-Request-Id sent upstream and logged, unique"
    be, f = setup([])
    run_cases(f, [
        Case("Via added", path="/echo", status=200, backend=be,
             upstream={"headers": {"Via": re.compile(r"^1\.1 \S+$")}}),
        Case("Via appended", path="/echo", headers={"Via": "1.0 edge"}, status=200, backend=be,
             upstream=lambda req: check(re.match(r"^1\.0 edge, 1\.1 \S+$",
                                                 joined(req, "Via") or ""),
                                        "upstream Via %r" % joined(req, "Via"))),
    ])
    ids = set()
    for i in range(5):
        expect_response(request(f, "GET", "/echo?i=%d" % i), status=200)
        rid = be.last().header("X-Request-Id")
        check(rid, "no X-Request-Id upstream: %r" % be.last().head_raw)
        ids.add(rid)
        f.wait_access(lambda e: e.get("request_id") == rid, what="request_id %s" % rid)
    eq(len(ids), 5, "distinct request ids for 5 requests")
    for i in range(45):
        expect_response(request(f, "GET", "/echo?j=%d" % i), status=200)
        ids.add(be.last().header("X-Request-Id"))
    bad = [r for r in ids if not re.fullmatch(r"[0-9a-f]{16}", r or "")]
    check(not bad, "ids are 16 lowercase hex digits: %r" % bad)
    # 50 ids of 16 random digits use every digit in every position often
    # enough: a digit stuck or never made (a wrong conversion) shows here
    eq(set("".join(ids)), set("0123456789abcdef"), "every hex digit appears")


def test_hop_by_hop_request():
    "hop-by-hop request headers (and those named in Connection) are not forwarded"
    be, f = setup([])

    def upstream(req):
        for h in ("X-Drop", "Keep-Alive", "Proxy-Connection", "Upgrade"):
            check(req.header(h) is None, "upstream got hop-by-hop %s: %r" % (h, req.head_raw))
        conn = (joined(req, "Connection") or "").lower()
        check("x-drop" not in conn, "upstream Connection %r" % conn)
        eq(req.header("X-Keep"), "1", "end-to-end header X-Keep")
        eq(req.version, "HTTP/1.1", "upstream request version")
    run_cases(f, [Case("Connection-named and hop-by-hop removed", path="/echo",
                       headers=[("Connection", "keep-alive, X-Drop"), ("X-Drop", "1"),
                                ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                ("Upgrade", "h2c"), ("X-Keep", "1")],
                       status=200, backend=be, upstream=upstream)])


def test_hop_by_hop_response():
    "hop-by-hop response headers from the backend do not reach the client"
    be, f = setup([])
    r = request(f, "GET", "/headers?h=Connection:X-Secret&h=X-Secret:1&h=Keep-Alive:timeout=99"
                "&h=X-Public:2")
    expect_response(r, status=200, body="headers\n",
                    headers={"X-Public": "2", "X-Secret": None,
                             "Keep-Alive": lambda v: v is None or "99" not in v,
                             "Connection": lambda v: v is None or "secret" not in v.lower()})


def test_request_reserialised():
    "the upstream head is re-serialised: one framing header, values trimmed"
    be, f = setup([])

    def upstream(req):
        eq(req.header("X-Pad"), "padded", "trimmed value")
        check(b"X-Pad:   padded" not in req.head_raw, "client bytes copied: %r" % req.head_raw)
        framing = [n.lower() for n, _ in req.headers
                   if n.lower() in ("content-length", "transfer-encoding")]
        check(len(framing) == 1, "framing headers upstream: %r" % framing)
        eq(req.body, b"abc", "body")
    run_cases(f, [Case("X-Pad trimmed", method="POST", path="/echo",
                       headers=[("X-Pad", "  padded  ")], body=b"abc", status=200, backend=be,
                       upstream=upstream)])


def test_host_header_modes():
    "host_header: preserve (client's Host), upstream (server address), a literal"
    be = backend()
    f = ferry(upstreams={"keep": servers(be, host_header="preserve"),
                         "srv": servers(be, host_header="upstream"),
                         "lit": servers(be, host_header="internal.example")},
              routes=[route("keep", "/keep", upstream="keep"),
                      route("srv", "/srv", upstream="srv"),
                      route("lit", "/lit", upstream="lit")])
    run_cases(f, [
        Case("preserve", path="/keep", host="client.test", status=200, backend=be,
             upstream={"headers": {"Host": "client.test"}}),
        Case("upstream", path="/srv", host="client.test", status=200, backend=be,
             upstream={"headers": {"Host": re.compile(r"^127\.0\.0\.1(:%d)?$" % be.port)}}),
        Case("literal", path="/lit", host="client.test", status=200, backend=be,
             upstream={"headers": {"Host": "internal.example"}}),
    ])
    for n in ("Host",):
        eq(len(be.last().header_all(n)), 1, "Host headers upstream")


def test_route_header_rules():
    "request_headers and response_headers: set replaces, add appends, remove drops, both ways"
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[route("rw", "/", upstream="u",
                            request_headers={"set": {"X-Gateway": "ferry", "X-Env": "prod"},
                                             "add": {"X-Tag": "second"},
                                             "remove": ["X-Debug", "user-agent"]},
                            response_headers={"set": {"Server": "ferry",
                                                      "Strict-Transport-Security":
                                                      "max-age=31536000"},
                                              "add": {"X-Extra": "2"},
                                              "remove": ["X-Powered-By"]})])
    r = request(f, "GET", "/headers?h=Server:backend/1.0&h=X-Powered-By:php&h=X-Extra:1",
                headers={"X-Env": "dev", "x-env": "staging", "X-Debug": "1", "X-Tag": "first",
                         "User-Agent": "test/1"})
    expect_response(r, status=200, body="headers\n",
                    headers={"Server": "ferry", "Strict-Transport-Security": "max-age=31536000",
                             "X-Powered-By": None})
    eq(r.header_all("X-Extra"), ["1", "2"], "response X-Extra: the backend's, then the added one")
    eq(r.header_all("Server"), ["ferry"], "response Server replaced, not doubled")
    req = be.last()
    eq(req.header_all("X-Gateway"), ["ferry"], "upstream X-Gateway")
    eq(req.header_all("X-Env"), ["prod"], "upstream X-Env: every client field replaced")
    eq(req.header_all("X-Tag"), ["first", "second"], "upstream X-Tag: the client's, then added")
    eq(req.header_all("X-Debug"), [], "upstream X-Debug removed")
    eq(req.header_all("User-Agent"), [], "upstream User-Agent removed (case-insensitive)")
    check(req.header("X-Forwarded-For") == "127.0.0.1", "Ferry's own forwarding headers kept")


def test_respond_route_header_rules():
    "response_headers apply to a respond route's answer; set replaces its Content-Type"
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping", status=200, body="pong\n",
                                    response_headers={"set": {"Content-Type": "text/x-pong",
                                                              "Cache-Control": "no-store"},
                                                      "add": {"X-Served-By": "ferry"}})])
    r = request(f, "GET", "/ping")
    expect_response(r, status=200, body="pong\n",
                    headers={"Cache-Control": "no-store", "X-Served-By": "ferry"})
    eq(r.header_all("Content-Type"), ["text/x-pong"], "Content-Type replaced, not doubled")


UNDERSCORED = {"X_Forwarded_For": "7.7.7.7", "X_Real_IP": "8.8.8.8", "My_Header": "1",
               "My-Header": "2"}


def test_underscore_names_dropped():
    "names with '_' are dropped (as nginx's underscores_in_headers off) unless the route allows them"
    be = backend()
    f = ferry(trusted_proxies=["127.0.0.1/32"], upstreams={"u": servers(be)},
              routes=[route("open", "/open", upstream="u", underscores_in_headers=True),
                      route("all", "/", upstream="u")])

    def dropped(req):
        names = [n for n, _ in req.headers]
        check(not any("_" in n for n in names), "underscored names forwarded: %r" % names)
        eq(req.header_all("My-Header"), ["2"], "upstream My-Header")
        eq(joined(req, "X-Forwarded-For"), "127.0.0.1", "upstream X-Forwarded-For")

    def kept(req):
        # Spellings of Ferry's own fields stay out even here.
        eq(req.header_all("X_Forwarded_For"), [], "upstream X_Forwarded_For")
        eq(req.header_all("X_Real_IP"), [], "upstream X_Real_IP")
        eq(req.header_all("My_Header"), ["1"], "upstream My_Header")
        eq(joined(req, "X-Forwarded-For"), "127.0.0.1", "upstream X-Forwarded-For")
    run_cases(f, [Case("default route: dropped, also from a trusted peer", path="/x",
                       headers=UNDERSCORED, status=200, backend=be, upstream=dropped),
                  Case("underscores_in_headers: true: forwarded (but X_Forwarded_For)", path="/open/x",
                       headers=UNDERSCORED, status=200, backend=be, upstream=kept)])


def test_real_ip():
    "X-Real-IP: replaced by the client address for untrusted peers, kept from trusted ones"
    be = backend()
    untrusted = ferry(trusted_proxies=["10.0.0.0/8"], upstreams={"u": servers(be)},
                      routes=[route("all", "/", upstream="u")])
    trusted = ferry(trusted_proxies=["127.0.0.1/32"], upstreams={"u": servers(be)},
                    routes=[route("all", "/", upstream="u")])
    forged = [("X-Real-IP", "8.8.8.8"), ("x-real-ip", "9.9.9.9")]
    run_cases(untrusted, [
        Case("untrusted: forged X-Real-IP replaced", path="/x", headers=forged, status=200,
             backend=be, upstream=lambda req: eq(req.header_all("X-Real-IP"), ["127.0.0.1"],
                                                 "upstream X-Real-IP")),
        Case("untrusted: none sent, Ferry sets it", path="/x", status=200, backend=be,
             upstream=lambda req: eq(req.header_all("X-Real-IP"), ["127.0.0.1"],
                                     "upstream X-Real-IP"))])
    run_cases(trusted, [
        Case("trusted: the first X-Real-IP kept", path="/x", headers=forged, status=200,
             backend=be, upstream=lambda req: eq(req.header_all("X-Real-IP"), ["8.8.8.8"],
                                                 "upstream X-Real-IP")),
        Case("trusted: none sent, Ferry sets it", path="/x", status=200, backend=be,
             upstream=lambda req: eq(req.header_all("X-Real-IP"), ["127.0.0.1"],
                                     "upstream X-Real-IP"))])


def head_of(size, path="/big"):
    """A request head of exactly `size` bytes (one large X-Big field)."""
    base = build_request("GET", path, headers={"X-Big": ""})
    return build_request("GET", path, headers={"X-Big": "b" * (size - len(base))})


def test_largest_head_limit_end_to_end():
    "max_header_bytes: 128k (the largest accepted): a head of 128k passes, 128k + 1 gets 431 at once"
    be = backend()
    f = ferry(limits={"max_header_bytes": "128k"}, upstreams={"u": servers(be)},
              routes=[route("all", "/", upstream="u")],
              timeouts={"client_header": "20s"})
    limit = 128 * 1024
    data = head_of(limit)
    eq(len(data), limit, "head size")
    c = Client(f.port, timeout=10)
    c.send(data)
    r = c.response()
    c.close()
    expect_response(r, status=200)
    req = be.last()
    want = limit - len(build_request("GET", "/big", headers={"X-Big": ""}))
    eq(len(req.header("X-Big") or ""), want, "X-Big length at the backend")
    for size in (limit + 1, limit + 4096, 200 * 1024):
        c = Client(f.port, timeout=10)
        try:
            c.send(head_of(size))
        except OSError:
            pass  # Ferry may answer and close before the whole head is sent
        (r, secs) = timed(c.response, 5)
        c.close()
        expect_response(r, status=431)
        check(secs < 3, "431 for a %d-byte head took %.1fs" % (size, secs))


if __name__ == "__main__":
    run(globals(), budget=30)
