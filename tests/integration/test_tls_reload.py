#!/usr/bin/env python3
"""TLS across live reloads (issue 15 item 4): certificates and keys
reload with the rest of the config without dropping connections; a
certificate that does not parse, a key that does not match or a missing
file keeps the old ones and names the file and the key's FILE:LINE:COLUMN;
a handshake in progress over a reload completes; a pooled upstream TLS
connection is not reused under changed TLS settings. ~20 s."""
import os
import re
import shutil
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from test_tls import metrics_text, pki, s_client  # noqa: E402
from test_tls_upstream import tls_backend  # noqa: E402
from test_tls_upstream import pki as up_pki  # noqa: E402


def serial(out):
    """The serial number s_client printed for the server's certificate."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        return None
    der = ssl.PEM_cert_to_DER_cert(m.group(0))
    return der[:64]  # the TBS prefix holds the serial: enough to tell two apart


def cert_files(f, stem, names, kind="ec"):
    """A certificate issued now, copied to fixed paths in f's directory (the
    config keeps naming the same files while their contents change)."""
    cert, key = pki().issue(stem, names, kind=kind)
    dst = (os.path.join(f.dir, "site.pem"), os.path.join(f.dir, "site.key"))
    shutil.copy(cert, dst[0] + ".new")
    shutil.copy(key, dst[1] + ".new")
    os.rename(dst[0] + ".new", dst[0])
    os.rename(dst[1] + ".new", dst[1])
    os.chmod(dst[1], 0o600)
    return dst


def site_ferry():
    f = ferry(routes=[respond_route("hello", "/", body="hello\n")],
              listener={"tls": {"certificates": [{"cert": pki().a_ec[0], "key": pki().a_ec[1]}]}})
    cert, key = cert_files(f, "site-1", ["a.test"])
    f.reload({"routes": [respond_route("hello", "/", body="hello\n")]},
             listeners=[{"address": f.address,
                         "tls": {"certificates": [{"cert": cert, "key": key}]}}])
    return f, cert, key


def tls_client(f):
    ctx = ssl.create_default_context(cafile=pki().ca_cert)
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="a.test")


def get_on(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    buf = b""
    while True:
        r, rest = parse_response(buf) if buf else (None, None)
        if r:
            return r
        c = s.recv(65536)
        if not c:
            raise Fail("connection closed before a response: %r" % buf[:200])
        buf += c


def test_certificate_reloads_without_dropping_connections():
    f, cert, key = site_ferry()
    before = serial(s_client(f, "-servername", "a.test"))
    check(before, "s_client showed a certificate")
    kept = tls_client(f)
    eq(get_on(kept).status, 200, "a keep-alive TLS connection before the reload")
    cert_files(f, "site-2", ["a.test"])
    f.reload()
    after = serial(s_client(f, "-servername", "a.test"))
    check(after and after != before, "the new certificate is served after the reload")
    eq(get_on(kept).status, 200, "the connection made before the reload still serves")
    kept.close()
    f.assert_alive()


def test_expiring_certificate_warns_on_reload():
    """A certificate under 14 days from expiry: the reload applies, with a
    warning naming the file, and /metrics shows the new expiry."""
    f, cert, key = site_ferry()
    c, k = pki().issue("site-short", ["a.test"], days=5)
    shutil.copy(c, cert)
    shutil.copy(k, key)
    f.reload()
    warned = [ln for ln in f.reload_lines() if "warning" in ln and "expires in 5 days" in ln]
    check(warned and "site.pem" in warned[0], "a warning names the file: %r" % f.reload_lines())
    m = re.search(r'^ferry_tls_certificate_expiry_seconds\{[^}]*\} (-?[\d.e+]+)$',
                  metrics_text(f), re.M)
    check(m and 3 * 86400 < float(m.group(1)) < 6 * 86400,
          "the gauge shows the new certificate's expiry: %r" % (m and m.group(0)))
    f.assert_alive()


def test_bad_files_keep_the_old_certificate():
    f, cert, key = site_ferry()
    before = serial(s_client(f, "-servername", "a.test"))
    good = (open(cert, "rb").read(), open(key, "rb").read())
    # a certificate that does not parse
    with open(cert, "wb") as fh:
        fh.write(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    line = f.reload(expect="keeping")
    check(re.search(r"ferry\.yaml:\d+:\d+: .*site\.pem", line),
          "the file and the key's FILE:LINE:COLUMN named: %r" % line)
    eq(serial(s_client(f, "-servername", "a.test")), before, "the old certificate serves on")
    # a key that does not match its certificate
    with open(cert, "wb") as fh:
        fh.write(good[0])
    other_key = pki().b_ec[1]
    shutil.copy(other_key, key)
    line = f.reload(expect="keeping")
    check(re.search(r"ferry\.yaml:\d+:\d+: ", line) and "site.key" in line,
          "a mismatched key named: %r" % line)
    eq(serial(s_client(f, "-servername", "a.test")), before, "still the old certificate")
    # a missing file
    os.unlink(key)
    line = f.reload(expect="keeping")
    check("site.key" in line, "a missing key named: %r" % line)
    eq(serial(s_client(f, "-servername", "a.test")), before, "still the old certificate")
    with open(key, "wb") as fh:
        fh.write(good[1])
    f.reload()
    eq(serial(s_client(f, "-servername", "a.test")), before, "the good files apply again")
    f.assert_alive()


def test_handshake_in_progress_over_a_reload():
    """A ClientHello cut in two around a reload that replaces the
    certificates: the handshake completes (with the contexts it started
    on), the request is served."""
    f, cert, key = site_ferry()
    ctx = ssl.create_default_context(cafile=pki().ca_cert)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="a.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    s.sendall(hello[:20])
    time.sleep(0.2)
    cert_files(f, "site-3", ["a.test"])
    f.reload()
    for _ in range(3):  # the old snapshot goes once nothing holds it
        f.reload()
    s.sendall(hello[20:])
    deadline = time.monotonic() + 10
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        data = out.read()
        if data:
            s.sendall(data)
        check(time.monotonic() < deadline, "the handshake did not finish")
        c = s.recv(65536)
        if not c:
            raise Fail("closed during the handshake")
        inc.write(c)
    s.sendall(out.read())
    obj.write(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    s.sendall(out.read())
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        inc.write(c)
        try:
            while True:
                d = obj.read(65536)
                if not d:  # close_notify: the answer is whole
                    break
                buf += d
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    s.close()
    check(buf.startswith(b"HTTP/1.1 200"), "served after the reload: %r" % buf[:80])
    f.assert_alive()


def test_pooled_upstream_tls_follows_new_settings():
    """A pooled connection verified under the old `ca` is not reused once a
    reload names a CA that does not know the server: 502, not a request
    sent over the old verification."""
    b = tls_backend()
    up = servers(b)
    up["tls"] = {"ca": up_pki().ca_cert, "sni": "up.test"}
    f = ferry(routes=[route("r", "/", upstream="up")], upstreams={"up": up})
    eq(request(f, "GET", "/fast").status, 200, "over TLS before the reload")
    eq(len(b.conns), 1, "one pooled connection")
    f.reload({"routes": [route("r", "/", upstream="up")], "upstreams": {"up": up}})
    eq(request(f, "GET", "/fast").status, 200, "same settings after a reload")
    other_ca = pki().ca_cert  # the listener tests' CA: it did not sign the backend
    up2 = dict(up, tls={"ca": other_ca, "sni": "up.test"})
    f.reload({"routes": [route("r", "/", upstream="up")], "upstreams": {"up": up2}})
    n = len(b.requests)
    r = request(f, "GET", "/fast")
    eq(r.status, 502, "the new CA does not verify the server")
    eq(len(b.requests), n, "nothing sent over the connection verified by the old CA")
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=60)
