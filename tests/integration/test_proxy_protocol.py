#!/usr/bin/env python3
"""PROXY protocol on a listener with `proxy_protocol: true` (issue 6, point
6): v1 (TCP4, TCP6, UNKNOWN) and v2 (TCP4, TCP6, LOCAL) headers set the
client address seen in X-Forwarded-For and in the access log's "client";
the header is read once per connection (keep-alive keeps the address), may
arrive split across packets, and client-sent X-Forwarded-For is still
dropped for an untrusted client. A connection without the header, or with
a broken one, is closed without an answer; a silent one at client_header.
A listener without proxy_protocol treats "PROXY ..." as a bad request. ~8 s."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst=None, sport=40000, dport=80, proto=None):
    proto = proto or ("TCP6" if ":" in src else "TCP4")
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2(src, dst, sport=40000, dport=80, command=1, tlvs=b""):
    if ":" in src:
        fam, addrs = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(
            socket.AF_INET6, dst)
    else:
        fam, addrs = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    payload = addrs + struct.pack(">HH", sport, dport) + tlvs
    return V2SIG + bytes([0x20 | command, fam]) + struct.pack(">H", len(payload)) + payload


def v2_local():
    return V2SIG + b"\x20\x00\x00\x00"


def pp_ferry(be, plain_listener=False, **kw):
    """A ferry whose listener expects the PROXY header (and optionally a
    second, plain listener on f.plain_port). ferrytest writes the listen
    list itself, so the config file is rewritten here before starting."""
    cfg = {"upstreams": {"u": servers(be)},
           "routes": [route("up", "/up/", upstream="u", strip_prefix="/up")]}
    cfg.update(kw)
    f = Ferry(cfg)
    listen = [{"address": f.address, "proxy_protocol": True}]
    if plain_listener:
        f.plain_port = free_port()
        listen.append({"address": "127.0.0.1:%d" % f.plain_port})
    full = {"workers": 1, "pid_file": f.pid_file, "listen": listen,
            "access_log": {"path": "stderr", "format": "json"},
            "admin": {"listen": "127.0.0.1:%d" % f.admin_port}}
    full.update(cfg)
    f.config_text = "# written by test_proxy_protocol.py\n" + to_yaml(full) + "\n"
    with open(f.config_path, "w") as fh:
        fh.write(f.config_text)
    return f.start()


def forwarded_for(resp):
    vals = [v for n, v in resp.json()["headers"] if n.lower() == "x-forwarded-for"]
    check(len(vals) == 1, "X-Forwarded-For upstream: %r" % vals)
    return vals[0]


def ask(f, header, path="/up/echo", headers=None, pieces=None):
    """Sends header + a GET on a fresh connection (in pieces, with pauses,
    when pieces is given); returns the response."""
    c = Client(f.port)
    try:
        data = header + build_request("GET", path, headers)
        if pieces:
            cuts = sorted(set(pieces))
            last = 0
            for cut in cuts + [len(data)]:
                c.send(data[last:cut])
                last = cut
                time.sleep(0.05)
        else:
            c.send(data)
        return c.response(5)
    finally:
        c.close()


def test_v1_sets_client():
    "v1 TCP4 and TCP6 headers set X-Forwarded-For and the access log client"
    be = backend()
    f = pp_ferry(be)
    for src in ("203.0.113.7", "2001:db8::7"):
        r = ask(f, v1(src))
        expect_response(r, status=200)
        eq(forwarded_for(r), src, "X-Forwarded-For from a v1 header")
        e = f.wait_access(lambda e, s=src: e.get("client") == s,
                          what="an access-log line with client " + src)
        eq(e.get("status"), 200, "status logged for " + src)


def test_v2_sets_client():
    "v2 TCP4 and TCP6 headers (with TLVs) set X-Forwarded-For and the access log client"
    be = backend()
    f = pp_ferry(be)
    for src, dst in (("198.51.100.23", "10.0.0.1"), ("2001:db8:1::23", "2001:db8::1")):
        tlvs = b"\x04\x00\x02\x00\x00" + b"\x01\x00\x08http/1.1"  # NOOP, ALPN
        r = ask(f, v2(src, dst, tlvs=tlvs))
        expect_response(r, status=200)
        eq(forwarded_for(r), src, "X-Forwarded-For from a v2 header")
        e = f.wait_access(lambda e, s=src: e.get("client") == s, what="the request from " + src)
        eq(e.get("status"), 200, "status logged for " + src)


def test_local_and_unknown_keep_peer():
    "v2 LOCAL and v1 UNKNOWN keep the real peer address"
    be = backend()
    f = pp_ferry(be)
    for hdr in (v2_local(), b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"):
        r = ask(f, hdr)
        expect_response(r, status=200, what="answer after %r" % hdr[:20])
        eq(forwarded_for(r), "127.0.0.1", "X-Forwarded-For after %r" % hdr[:20])


def test_split_header():
    "a header split across packets (byte by byte for v1, in 3 pieces for v2) works"
    be = backend()
    f = pp_ferry(be)
    h = v1("192.0.2.55")
    r = ask(f, h, pieces=range(1, len(h) + 1))
    expect_response(r, status=200)
    eq(forwarded_for(r), "192.0.2.55", "X-Forwarded-For after a trickled v1 header")
    h = v2("192.0.2.66", "192.0.2.1")
    r = ask(f, h, pieces=[5, 14, 20])
    expect_response(r, status=200)
    eq(forwarded_for(r), "192.0.2.66", "X-Forwarded-For after a split v2 header")
    # header and the request's first bytes in one packet, the rest later
    h = v1("192.0.2.77")
    r = ask(f, h, pieces=[len(h) + 5])
    eq(forwarded_for(r), "192.0.2.77", "X-Forwarded-For, header sharing a packet")


def test_keepalive_keeps_address():
    "the header is read once; later requests on the connection keep its address"
    be = backend()
    f = pp_ferry(be)
    c = Client(f.port)
    try:
        c.send(v1("203.0.113.99"))
        for i in range(3):
            r = c.request("GET", "/up/echo?i=%d" % i)
            expect_response(r, status=200)
            eq(forwarded_for(r), "203.0.113.99", "X-Forwarded-For on request %d" % i)
    finally:
        c.close()


def test_client_xff_dropped():
    "an X-Forwarded-For sent by the (untrusted) client behind the balancer is replaced"
    be = backend()
    f = pp_ferry(be)
    r = ask(f, v1("203.0.113.8"), headers={"X-Forwarded-For": "6.6.6.6"})
    eq(forwarded_for(r), "203.0.113.8", "X-Forwarded-For with a forged client value")


def test_missing_or_broken_header_refused():
    "no header, a broken v1 or v2 header, or a TLS hello: closed without an answer"
    be = backend()
    f = pp_ferry(be)
    bad = [
        build_request("GET", "/up/echo"),
        b"PROXY TCP4 1.2.3.4 garbage\r\n" + build_request("GET", "/up/echo"),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + build_request("GET", "/up/echo"),
        b"PROXY TCP4 192.0.2.01 5.6.7.8 1 2\r\n" + build_request("GET", "/up/echo"),
        V2SIG + b"\x31\x11\x00\x0c" + bytes(12) + build_request("GET", "/up/echo"),
        V2SIG + b"\x21\x12\x00\x0c" + bytes(12) + build_request("GET", "/up/echo"),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),
        b"PROXY " + b"x" * 200 + b"\r\n",
    ]
    before = be.stats()["requests"]
    for data in bad:
        res = raw(f, data, timeout=3)
        check(res.how in ("eof", "reset"), "%r: connection left open (%s)" % (data[:30], res.how))
        eq(res.data, b"", "bytes answered to %r" % data[:30])
    eq(be.stats()["requests"], before, "requests forwarded from refused connections")
    f.assert_alive()
    r = ask(f, v1("192.0.2.9"))
    expect_response(r, status=200, what="a good connection after the refused ones")


def test_silent_connection_times_out():
    "a connection that sends no header is closed at client_header"
    be = backend()
    f = pp_ferry(be, timeouts={"client_header": "1s"})
    c = Client(f.port)
    try:
        t0 = time.monotonic()
        c.send(b"PROXY TCP4 1.2.")  # a prefix, then nothing
        check(c.closed(3.0), "a stalled PROXY header still open after 3 s (client_header 1s)")
        dt = time.monotonic() - t0
        check(dt <= 2.0, "stalled header closed after %.2fs, expected about 1 s" % dt)
        eq(c.buf, b"", "bytes answered to a stalled header")
    finally:
        c.close()


def test_plain_listener_unaffected():
    "a listener without proxy_protocol answers 400 to a PROXY line and serves plain requests"
    be = backend()
    f = pp_ferry(be, plain_listener=True)
    r = request(f.plain_port, "GET", "/up/echo")
    expect_response(r, status=200)
    eq(forwarded_for(r), "127.0.0.1", "X-Forwarded-For on the plain listener")
    res = raw(f.plain_port, v1("203.0.113.1") + build_request("GET", "/up/echo"), timeout=3)
    eq(res.response.status, 400, "a PROXY line on a plain listener")


if __name__ == "__main__":
    run(globals(), budget=90)
