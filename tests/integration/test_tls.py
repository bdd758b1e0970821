#!/usr/bin/env python3
"""TLS on listeners (issue 15): certificates chosen by SNI (exact and
wildcard names from the SAN, the first as default), RSA and ECDSA on one
listener, ALPN, resumption with tickets across workers, TLS 1.1 refused,
plaintext HTTP and garbage on a TLS port, a trickled handshake cut at
client_header, a thousand stalled handshakes cut without memory growth,
bodies both ways through TLS, a PROXY header before the handshake.
Certificates are made at test time (tlscerts.py). ~40 s."""
import os
import re
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from tlscerts import make_pki  # noqa: E402

PKI = None


def pki():
    """One CA and its certificates for the whole file."""
    global PKI
    if PKI is None:
        p = make_pki(tmpdir())
        p.a_rsa = p.issue("a-rsa", ["a.test", "*.wild.test"], kind="rsa")
        p.a_ec = p.issue("a-ec", ["a.test", "*.wild.test"], kind="ec")
        p.b_ec = p.issue("b-ec", ["b.test"], kind="ec")
        PKI = p
    return PKI


def tls_listener(certs=None, **extra):
    p = pki()
    certs = certs if certs is not None else [p.a_rsa, p.a_ec, p.b_ec]
    t = {"certificates": [{"cert": c, "key": k} for c, k in certs]}
    t.update(extra)
    return {"tls": t}


def tls_ferry(routes=None, certs=None, tls_extra=None, listener_extra=None, **kw):
    listener = tls_listener(certs, **(tls_extra or {}))
    listener.update(listener_extra or {})
    return ferry(routes=routes or [respond_route("hello", "/", body="hello\n")],
                 listener=listener, **kw)


def s_client(f, *args, stdin=b"", timeout=10, linger=0.0):
    """openssl s_client against f; returns its stdout+stderr as text. With
    linger, stdin stays open that long (TLS 1.3 tickets arrive after the
    handshake)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % f.port] + list(args)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        if linger:
            p.stdin.write(stdin)
            p.stdin.flush()
            time.sleep(linger)
            p.stdin.close()
            out = p.stdout.read()
            p.wait(timeout)
        else:
            out, _ = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise Fail("openssl s_client %s did not finish" % " ".join(args))
    return out.decode("utf-8", "replace")


def subject_cn(out):
    for line in out.splitlines():
        if line.startswith("subject="):
            return line.split("CN = ", 1)[-1].strip()
    return None


def curl(f, name, path="/", *extra):
    cmd = ["curl", "-sS", "--max-time", "10", "--resolve", "%s:%d:127.0.0.1" % (name, f.port),
           "--cacert", pki().ca_cert, "-w", "\n%{http_code}"] + list(extra) + \
          ["https://%s:%d%s" % (name, f.port, path)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def client_hello():
    """The bytes of a real ClientHello (Python's ssl over memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="a.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_sni_chooses_certificate():
    f = tls_ferry()
    eq(subject_cn(s_client(f, "-servername", "a.test")), "a.test", "SNI a.test")
    eq(subject_cn(s_client(f, "-servername", "b.test")), "b.test", "SNI b.test")
    eq(subject_cn(s_client(f, "-servername", "x.wild.test")), "a.test", "wildcard *.wild.test")
    eq(subject_cn(s_client(f, "-servername", "B.TEST")), "b.test", "SNI is case-insensitive")
    eq(subject_cn(s_client(f, "-servername", "nowhere.test")), "a.test", "unknown name: default")
    eq(subject_cn(s_client(f, "-noservername")), "a.test", "no SNI: the first certificate")
    eq(subject_cn(s_client(f, "-servername", "y.x.wild.test")), "a.test",
       "a wildcard covers one label only (default here)")
    for name in ("a.test", "b.test", "x.wild.test"):
        rc, out, err = curl(f, name)
        eq((rc, out), (0, "hello\n\n200"), "curl https://%s verifies and gets the answer (%s)"
           % (name, err))
    f.assert_alive()


def test_rsa_and_ecdsa_on_one_listener():
    f = tls_ferry()
    ec = s_client(f, "-servername", "a.test")
    check("Peer signature type: ECDSA" in ec, "a client that takes ECDSA gets it:\n" + ec)
    rsa = s_client(f, "-servername", "a.test", "-sigalgs", "rsa_pss_rsae_sha256")
    check("Server public key is 2048 bit" in rsa and "RSA" in rsa,
          "an RSA-only client gets the RSA certificate:\n" + rsa)
    rsa12 = s_client(f, "-servername", "a.test", "-tls1_2", "-cipher",
                     "ECDHE-RSA-AES128-GCM-SHA256")
    check("ECDHE-RSA-AES128-GCM-SHA256" in rsa12, "TLS 1.2 RSA cipher:\n" + rsa12)


def test_alpn():
    f = tls_ferry()
    out = s_client(f, "-servername", "a.test", "-alpn", "http/1.1")
    check("ALPN protocol: http/1.1" in out, "ALPN http/1.1:\n" + out)
    out = s_client(f, "-servername", "a.test", "-alpn", "h2")
    check("ALPN protocol" not in out and "alert" in out.lower(),
          "h2 alone is refused with an alert (Ferry has no HTTP/2):\n" + out)
    rc, body, err = curl(f, "a.test", "/", "--http2")
    eq((rc, body), (0, "hello\n\n200"), "curl --http2 falls back to http/1.1 (%s)" % err)


def test_resumption_across_workers():
    f = tls_ferry(workers=2)
    sess = os.path.join(f.dir, "sess.pem")
    out = s_client(f, "-servername", "a.test", "-sess_out", sess, linger=0.5)
    check("New, TLSv1.3" in out, "first handshake:\n" + out)
    reused = 0
    for i in range(8):
        out = s_client(f, "-servername", "a.test", "-sess_in", sess, linger=0.3)
        reused += "Reused, TLSv1.3" in out
    eq(reused, 8, "resumed handshakes of 8 (two workers share the ticket keys)")
    sess12 = os.path.join(f.dir, "sess12.pem")
    s_client(f, "-servername", "a.test", "-tls1_2", "-sess_out", sess12)
    out = s_client(f, "-servername", "a.test", "-tls1_2", "-sess_in", sess12)
    check("Reused, TLSv1.2" in out, "TLS 1.2 ticket resumption:\n" + out)


def test_resumed_handshake_gets_a_new_ticket():
    """TLS 1.3: two tickets after a full handshake and a fresh one after
    each resumption (a client uses a ticket once: without a new one its
    next connection would be a full handshake), as nginx and HAProxy."""
    f = tls_ferry(workers=2)
    sess = [os.path.join(f.dir, "chain%d.pem" % i) for i in range(4)]
    out = s_client(f, "-servername", "a.test", "-sess_out", sess[0], linger=0.5)
    check("New, TLSv1.3" in out, "first handshake:\n" + out)
    eq(out.count("New Session Ticket arrived"), 2, "tickets after a full handshake")
    for i in range(1, 4):
        out = s_client(f, "-servername", "a.test", "-sess_in", sess[i - 1], "-sess_out", sess[i],
                       linger=0.5)
        check("Reused, TLSv1.3" in out, "resumption %d resumes the last ticket:\n%s" % (i, out))
        eq(out.count("New Session Ticket arrived"), 1, "tickets after resumption %d" % i)
    f.assert_alive()


def test_session_chain_with_client_certificate_within_its_lifetime():
    """A session lives an hour from its full handshake however often it
    resumes (TLS_SESSION_LIFETIME_S, src/tls.h): its birth goes from ticket
    to ticket and a ticket without one is refused. The clock cannot move
    here, so the bound itself is tests/test_tls.c's; this is the normal
    path: the first ticket's lifetime hint says the hour, a renewed one what
    is left of it, and a chain of TLS 1.3 resumptions with a client
    certificate keeps resuming, as does TLS 1.2."""
    p = pki()
    client = p.issue("client-chain", cn="client-chain", client=True)
    f = tls_ferry(tls_extra={"client_ca": p.ca_cert}, workers=2)
    cert = ["-cert", client[0], "-key", client[1]]
    sess = [os.path.join(f.dir, "mtls%d.pem" % i) for i in range(4)]
    out = s_client(f, "-servername", "a.test", "-sess_out", sess[0], *cert, linger=0.5)
    check("New, TLSv1.3" in out, "first handshake:\n" + out)
    check("lifetime hint: 3600 (seconds)" in out, "the tickets live an hour:\n" + out)
    born = time.time()
    time.sleep(2)  # whole seconds of the session gone
    for i in range(1, 4):
        out = s_client(f, "-servername", "a.test", "-sess_in", sess[i - 1], "-sess_out", sess[i],
                       *cert, linger=0.5)
        check("Reused, TLSv1.3" in out, "resumption %d resumes:\n%s" % (i, out))
        hints = [int(h) for h in re.findall(r"lifetime hint: (\d+) \(seconds\)", out)]
        gone = time.time() - born
        check(hints and all(3600 - gone - 2 <= h <= 3600 - 1 for h in hints),
              "resumption %d's tickets say what is left of the hour (%.1f s gone): %r"
              % (i, gone, hints))
    # TLS 1.2: the ticket is renewed only when the previous key made it.
    sess12 = os.path.join(f.dir, "mtls12.pem")
    s_client(f, "-servername", "a.test", "-tls1_2", "-sess_out", sess12, *cert)
    for i in range(1, 3):
        out = s_client(f, "-servername", "a.test", "-tls1_2", "-sess_in", sess12, *cert)
        check("Reused, TLSv1.2" in out, "TLS 1.2 resumption %d resumes:\n%s" % (i, out))
    f.assert_alive()


def _ends_with_close_notify(port, request):
    """Sends request over TLS and reads to the end: (True when the answer
    ended with close_notify, False at a bare EOF; the bytes read)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="a.test", suppress_ragged_eofs=False)
    t.sendall(request)
    got = b""
    try:
        while True:
            d = t.recv(65536)
            if not d:
                return True, got
            got += d
    except ssl.SSLEOFError:
        return False, got
    finally:
        t.close()


def test_close_notify_after_a_whole_answer_only():
    """A connection closed after a whole answer ends with close_notify
    (RFC 8446 6.1), as nginx and HAProxy; one cut short (the upstream died
    mid-body) does not, so a close-delimited body cannot look complete."""
    b = backend()
    f = tls_ferry(routes=[route("up", "/", upstream="be")], upstreams={"be": servers(b)})
    for req in (b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                b"GET /x HTTP/1.0\r\nHost: a.test\r\n\r\n"):
        notify, got = _ends_with_close_notify(f.port, req)
        check(got.startswith(b"HTTP/1.1 200") and notify,
              "a whole answer ends with close_notify (%r, %r)" % (notify, got[:60]))
    for req in (b"GET /cut?bytes=100000&sent=1000 HTTP/1.1\r\nHost: a.test\r\n\r\n",
                b"GET /cut?bytes=100000&sent=1000 HTTP/1.0\r\nHost: a.test\r\n\r\n"):
        notify, got = _ends_with_close_notify(f.port, req)
        check(got.startswith(b"HTTP/1.1 200") and not notify,
              "a body cut short ends without close_notify (%r, %r)" % (notify, got[:60]))
    f.assert_alive()


def test_old_protocols_refused():
    f = tls_ferry()
    out = s_client(f, "-servername", "a.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    check("protocol version" in out or "unsupported protocol" in out,
          "TLS 1.1 is refused by the server:\n" + out)
    wait_until(lambda: "unsupported protocol" in f.stderr_text(), 3)
    check("unsupported protocol" in f.stderr_text(),
          "the refusal is logged:\n" + f.stderr_tail(5))
    f.assert_alive()


def test_plaintext_http_to_tls_port():
    f = tls_ferry()
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    r = parse_response(buf, eof=True)[0]
    eq(r.status, 400, "plaintext HTTP to a TLS port")
    check(b"TLS port" in r.body, "the answer says why: %r" % r.body)
    check(wait_until(lambda: "plain HTTP request sent to a TLS port" in f.stderr_text(), 3),
          "logged:\n" + f.stderr_tail(5))
    f.assert_alive()


def test_garbage_instead_of_client_hello():
    f = tls_ferry()
    for junk in (b"\x00\x01\x02garbage\r\n", b"\x16\x03\x01\x00\x05hello" + b"\xff" * 64,
                 b"\x80\x2e\x01\x00\x02"):
        s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        s.sendall(junk)
        t0 = time.monotonic()
        try:
            data = s.recv(65536)
            while data and data[0:1] == b"\x15":  # a TLS alert record, then the close
                data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        s.close()
        eq(data, b"", "garbage %r: closed without an HTTP answer" % junk[:8])
        check(time.monotonic() - t0 < 3, "garbage %r: closed at once" % junk[:8])
    check(wait_until(lambda: "not a TLS handshake" in f.stderr_text(), 3),
          "the close is logged:\n" + f.stderr_tail(5))
    f.assert_alive()


def test_trickled_handshake_cut_at_client_header():
    f = tls_ferry(timeouts={"client_header": "1s"})
    hello = client_hello()
    check(len(hello) > 100, "a ClientHello of %d bytes" % len(hello))
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    t0 = time.monotonic()
    closed = None
    for i, b in enumerate(hello):
        try:
            s.sendall(bytes([b]))
            r, _, _ = __import__("select").select([s], [], [], 0.1)
            if r and not s.recv(1024):
                closed = time.monotonic() - t0
                break
        except (BrokenPipeError, ConnectionResetError):
            closed = time.monotonic() - t0
            break
        if time.monotonic() - t0 > 8:
            break
    s.close()
    check(closed is not None, "a handshake trickled one byte every 0.1 s is cut")
    check(0.8 <= closed < 4.0, "cut at client_header (1s), after %.2fs" % closed)
    f.assert_alive()


def test_stalled_handshakes_cut_without_memory_growth():
    f = tls_ferry(timeouts={"client_header": "1s"}, workers=1)
    hello = client_hello()
    fd_base = f.fd_count()

    def round_of(n):
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
            s.sendall(hello[:40] if i % 2 else hello)  # half a hello, or a whole one never ended
            socks.append(s)
        # every one is cut by Ferry at client_header
        deadline = time.monotonic() + 10
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
            s.close()
        check(wait_until(lambda: f.fd_count() <= fd_base, 5),
              "descriptors back to %d (now %d)" % (fd_base, f.fd_count()))

    round_of(250)
    round_of(250)  # the allocator's and the stream pool's working set
    rss1 = f.rss_kb()
    round_of(250)
    round_of(250)
    rss2 = f.rss_kb()
    log("rss after 500 stalled handshakes: %d kB; after 1000: %d kB" % (rss1, rss2))
    if not is_sanitized():  # ASan's quarantine keeps freed memory on purpose
        check(rss2 - rss1 < 2048, "memory grew by %d kB over 500 more stalled handshakes"
              % (rss2 - rss1))
    f.assert_alive()


def test_bodies_both_ways_and_keepalive():
    b = backend()
    f = tls_ferry(routes=[route("up", "/", upstream="be")],
                  upstreams={"be": servers(b)})
    data_path = os.path.join(f.dir, "upload.bin")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with open(data_path, "wb") as fh:
        fh.write(payload)
    rc, out, err = curl(f, "a.test", "/upload", "--data-binary", "@" + data_path)
    eq(rc, 0, "upload through TLS (%s)" % err)
    body = out.rsplit("\n", 1)[0]
    check(sha256(payload) in body and str(len(payload)) in body,
          "the backend got the whole body: %s" % body[:200])
    out_path = os.path.join(f.dir, "down.bin")
    rc, out, err = curl(f, "a.test", "/huge?bytes=5000000", "-o", out_path)
    eq((rc, out.strip()), (0, "200"), "download through TLS (%s)" % err)
    eq(os.path.getsize(out_path), 5000000, "downloaded bytes")
    # keep-alive: several requests on one TLS connection
    cmd = ["curl", "-sS", "--resolve", "a.test:%d:127.0.0.1" % f.port, "--cacert", pki().ca_cert,
           "-w", "%{num_connects}\n"] + ["https://a.test:%d/fast" % f.port] * 5
    p = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=20)
    eq(p.stdout.decode().count("ok\n"), 5, "five answers")
    eq([int(x) for x in p.stdout.decode().split() if x.isdigit()], [1, 0, 0, 0, 0],
       "one TLS connection for five requests")
    last = b.requests[-1]
    eq(last.header("X-Forwarded-Proto"), "https", "the upstream is told the client used https")
    check("proto=https" in (last.header("Forwarded") or "proto=https"),
          "Forwarded says https: %r" % last.header("Forwarded"))
    f.assert_alive()


def test_proxy_header_before_handshake():
    f = tls_ferry(listener_extra={"proxy_protocol": True},
                  config={"trusted_proxies": ["127.0.0.1/32"]})
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 443\r\n")
    ctx = ssl.create_default_context(cafile=pki().ca_cert)
    t = ctx.wrap_socket(s, server_hostname="a.test")
    t.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    buf = b""
    while True:
        c = t.recv(65536)
        if not c:
            break
        buf += c
    t.close()
    eq(parse_response(buf, eof=True)[0].status, 200, "TLS after a PROXY header")
    e = f.wait_access(lambda e: e.get("path", "").startswith("/x"))
    eq(e.get("client"), "198.51.100.7", "the client address is the PROXY header's")


def test_ocsp_staple():
    p = pki()
    resp = p.ocsp_response(p.b_ec[0], "b-ec")
    f = ferry(routes=[respond_route("hello", "/", body="hello\n")], listener={"tls": {
        "certificates": [{"cert": p.a_ec[0], "key": p.a_ec[1]},
                         {"cert": p.b_ec[0], "key": p.b_ec[1], "ocsp_staple": resp}]}})
    out = s_client(f, "-servername", "b.test", "-status")
    check("OCSP Response Status: successful" in out and "Cert Status: good" in out,
          "the staple is sent for b.test:\n" + out)
    out = s_client(f, "-servername", "a.test", "-status")
    check("OCSP response: no response sent" in out, "none for a.test:\n" + out)


def test_client_certificates():
    p = pki()
    client = p.issue("client", cn="client-1", client=True)
    other = make_pki(tmpdir(), name="Other CA")
    stranger = other.issue("stranger", cn="stranger", client=True)
    f = tls_ferry(tls_extra={"client_ca": p.ca_cert})
    rc, out, err = curl(f, "a.test")
    check(rc != 0, "required: no certificate, no handshake (%s)" % out)
    rc, out, err = curl(f, "a.test", "/", "--cert", client[0], "--key", client[1])
    eq((rc, out), (0, "hello\n\n200"), "a certificate of the CA is accepted (%s)" % err)
    rc, out, err = curl(f, "a.test", "/", "--cert", stranger[0], "--key", stranger[1])
    check(rc != 0, "a certificate of another CA is refused (%s)" % out)
    f2 = tls_ferry(tls_extra={"client_ca": p.ca_cert, "client_verify": "optional"})
    rc, out, err = curl(f2, "a.test")
    eq((rc, out), (0, "hello\n\n200"), "optional: no certificate is fine (%s)" % err)
    rc, out, err = curl(f2, "a.test", "/", "--cert", stranger[0], "--key", stranger[1])
    check(rc != 0, "optional: an invalid certificate is still refused (%s)" % out)
    f.assert_alive()
    f2.assert_alive()


def _session_then_resume(first_port, second_port, cert=None):
    """A TLS 1.3 session made on first_port (with cert if given), then
    offered on second_port with the same client context (Python resumes
    only there): (resumed, status or None when the handshake failed)."""
    ctx = ssl.create_default_context(cafile=pki().ca_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    s1 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", first_port), timeout=10),
                         server_hostname="a.test")
    s1.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    while s1.recv(65536):
        pass  # the tickets come after the handshake: read to the end
    sess = s1.session
    s1.close()
    try:
        s2 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", second_port), timeout=10),
                              server_hostname="a.test", session=sess)
        s2.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            d = s2.recv(65536)
            if not d:
                break
            buf += d
        resumed = s2.session_reused
        s2.close()
        return resumed, int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.1 ") else None
    except (ssl.SSLError, OSError):
        return False, None


def test_resumption_never_skips_client_certificates():
    """A session resumes only under the trust it was made with: not on a
    listener that requires client certificates, not after a reload that
    replaced the client CA (a resumed session's certificate is not checked
    again)."""
    p = pki()
    client = p.issue("client-r", cn="client-r", client=True)
    open_port = free_port()
    f = tls_ferry(tls_extra={"client_ca": p.ca_cert})  # required
    certs = [{"cert": p.a_ec[0], "key": p.a_ec[1]}]
    listeners = [{"address": f.address, "tls": {"certificates": certs, "client_ca": p.ca_cert}},
                 {"address": "127.0.0.1:%d" % open_port, "tls": {"certificates": certs}}]
    routes = [respond_route("hello", "/", body="hello\n")]
    f.reload({"routes": routes}, listeners=listeners)
    resumed, status = _session_then_resume(open_port, open_port)
    check(resumed and status == 200, "resumption works on one listener (%r, %r)"
          % (resumed, status))
    resumed, status = _session_then_resume(open_port, f.port)
    check(not resumed and status is None,
          "a session without a certificate does not resume on the listener that requires one "
          "(resumed %r, status %r)" % (resumed, status))
    resumed, status = _session_then_resume(f.port, f.port, cert=client)
    check(resumed and status == 200, "a certificate's session resumes where it was made (%r, %r)"
          % (resumed, status))
    # The same CA file path, other contents: sessions made before do not resume.
    ctx = ssl.create_default_context(cafile=pki().ca_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(client[0], client[1])
    s1 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", f.port), timeout=10),
                         server_hostname="a.test")
    s1.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    while s1.recv(65536):
        pass
    sess = s1.session
    s1.close()
    other = make_pki(tmpdir(), name="Replacement CA")
    listeners[0]["tls"]["client_ca"] = other.ca_cert
    f.reload({"routes": routes}, listeners=listeners)
    try:
        s2 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", f.port), timeout=10),
                             server_hostname="a.test", session=sess)
        s2.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        got = s2.recv(65536)
        reused = s2.session_reused
        s2.close()
    except (ssl.SSLError, OSError):
        got, reused = b"", False
    check(not reused and not got.startswith(b"HTTP/1.1 200"),
          "after the CA was replaced a resumed session is refused (reused %r, %r)"
          % (reused, got[:40]))
    f.assert_alive()


def test_route_requires_client_certificate_and_forwards_it():
    import json as _json
    p = pki()
    client = p.issue("client2", cn="client-2", client=True)
    b = backend()
    cc = {"subject_header": "X-Client-Subject", "fingerprint_header": "X-Client-Fingerprint"}
    f = tls_ferry(routes=[route("secure", "/secure", upstream="be", client_cert=cc),
                          route("open", "/", upstream="be",
                                client_cert=dict(cc, required=False))],
                  upstreams={"be": servers(b)},
                  tls_extra={"client_ca": p.ca_cert, "client_verify": "optional"})
    spoof = ["-H", "X-Client-Subject: CN=admin", "-H", "X-Client-Fingerprint: 00"]
    rc, out, err = curl(f, "a.test", "/secure", *spoof)
    eq(out.rsplit("\n", 1)[1], "403", "no certificate: the route refuses (%s)" % out)
    rc, out, err = curl(f, "a.test", "/open", *spoof)
    eq(out.rsplit("\n", 1)[1], "200", "no certificate on a route that does not require one")
    hdrs = dict((k.lower(), v) for k, v in _json.loads(out.rsplit("\n", 1)[0])["headers"])
    check("x-client-subject" not in hdrs and "x-client-fingerprint" not in hdrs,
          "the client's own fields of those names are dropped: %r" % hdrs)
    rc, out, err = curl(f, "a.test", "/secure", "--cert", client[0], "--key", client[1], *spoof)
    eq(out.rsplit("\n", 1)[1], "200", "with a certificate (%s)" % err)
    hdrs = dict((k.lower(), v) for k, v in _json.loads(out.rsplit("\n", 1)[0])["headers"])
    eq(hdrs.get("x-client-subject"), "CN=client-2", "the verified subject goes upstream")
    eq(hdrs.get("x-client-fingerprint"), p.fingerprint(client[0]), "and its SHA-256")
    e = f.wait_access(lambda e: e.get("path") == "/secure" and e.get("status") == 200)
    eq((e.get("tls_client_subject"), e.get("tls_client_fingerprint")),
       ("CN=client-2", p.fingerprint(client[0])), "the access log has both")


def test_long_subjects_go_whole_or_not_at_all():
    """A subject of many RDNs goes upstream whole (it was cut at 1,024
    bytes, maybe inside an escape); one over 4,096 bytes is no identity."""
    import json as _json
    p = pki()

    def subject_of(units):
        ous = "".join("/OU=unit-%02d-%s" % (i, "x" * 52) for i in range(units))
        return p.issue("long%d" % units, cn="long", client=True, subj=ous + "/CN=long")

    mid, huge = subject_of(30), subject_of(70)
    rfc2253 = subprocess.run(["openssl", "x509", "-in", mid[0], "-noout", "-subject", "-nameopt",
                              "RFC2253"], capture_output=True, check=True).stdout.decode()
    want = rfc2253.strip().split("=", 1)[1]
    check(1024 < len(want) < 4096, "the middle subject is %d bytes" % len(want))
    b = backend()
    cc = {"subject_header": "X-Client-Subject"}
    f = tls_ferry(routes=[route("secure", "/", upstream="be", client_cert=cc)],
                  upstreams={"be": servers(b)}, tls_extra={"client_ca": p.ca_cert})
    rc, out, err = curl(f, "a.test", "/", "--cert", mid[0], "--key", mid[1])
    eq(out.rsplit("\n", 1)[1], "200", "a %d-byte subject (%s)" % (len(want), err))
    hdrs = dict((k.lower(), v) for k, v in _json.loads(out.rsplit("\n", 1)[0])["headers"])
    eq(hdrs.get("x-client-subject"), want, "the whole subject goes upstream")
    rc, out, err = curl(f, "a.test", "/", "--cert", huge[0], "--key", huge[1])
    eq(out.rsplit("\n", 1)[1], "403", "a subject over 4,096 bytes is refused (%s)" % out[-200:])
    eq(len(b.requests), 1, "and nothing of it reached the upstream")


def metrics_text(f):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return body


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return line
    return None


def test_metrics_count_handshakes_and_expiry():
    p = pki()
    soon = p.issue("soon", ["soon.test"], days=5)
    f = tls_ferry(certs=[p.a_ec, soon])
    check("soon.pem expires in 5 days" in f.stderr_text(), "an expiring certificate is a warning at load:\n"
          + f.stderr_tail(5))
    eq(curl(f, "a.test")[0], 0, "one handshake")
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    text = metrics_text(f)
    eq(metric(text, "ferry_tls_handshakes_total"), "ferry_tls_handshakes_total 1", "handshakes")
    eq(metric(text, "ferry_tls_plaintext_total"), "ferry_tls_plaintext_total 1", "plaintext")
    lines = [l for l in text.splitlines() if l.startswith("ferry_tls_certificate_expiry_seconds{")]
    eq(len(lines), 2, "an expiry gauge per certificate")
    left = [float(l.rsplit(" ", 1)[1]) for l in lines if soon[0] in l]
    check(left and 4 * 86400 < left[0] <= 5 * 86400, "seconds until expiry: %r" % lines)


if __name__ == "__main__":
    run(globals(), budget=90)
