#!/usr/bin/env python3
"""TLS to upstreams (issue 15): a Python ssl backend on loopback; the
server's certificate and name verified (on by default) against `ca`; a
failure is a 502 whose JSON body says why, logged with the server's
address; pooled TLS connections reused, new ones resuming the server's
last session; SNI from `sni`, a literal Host or the server's name; a
client certificate presented on request. ~15 s."""
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from backend import Backend, Conn  # noqa: E402
from tlscerts import make_pki  # noqa: E402

PKI = None


def pki():
    global PKI
    if PKI is None:
        p = make_pki(tmpdir())
        p.good = p.issue("up", ["up.test", "localhost"], ips=["127.0.0.1"])
        p.expired = p.issue("old", ["up.test"], days=0)
        p.client = p.issue("ferry-client", cn="ferry-client", client=True)
        PKI = p
    return PKI


class TlsBackend(Backend):
    """backend.Backend with TLS on each accepted connection; records the
    SNI each handshake asked for and whether it resumed a session."""

    def __init__(self, cert, key, client_ca=None, record_sni=True, **kw):
        super().__init__(**kw)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.snis = []
        self.peer_certs = []
        if record_sni:
            self.ctx.sni_callback = lambda sock, name, ctx: self.snis.append(name) and None
        if client_ca:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED

    def _accept_loop(self):
        while not self.stopping:
            try:
                raw, _ = self.lsock.accept()
            except OSError:
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._tls_serve, args=(raw,), daemon=True).start()

    def _tls_serve(self, raw):
        raw.settimeout(10)
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        sock.settimeout(None)
        with self.lock:
            self.peer_certs.append(sock.getpeercert())
            c = Conn(self, sock, len(self.conns) + 1)
            c.resumed = sock.session_reused
            self.conns.append(c)
            self.open_conns += 1
            self.cond.notify_all()
        self._serve(c)


def tls_backend(cert=None, **kw):
    p = pki()
    cert = cert or p.good
    b = TlsBackend(cert[0], cert[1], **kw).start()
    cleanup = getattr(sys.modules["ferrytest"], "_cleanups")
    cleanup.append(b.stop)
    return b


def get(f, path="/fast", host="front.test"):
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return parse_response(buf, eof=True)[0]


def up_ferry(b, tls, workers=1, **upstream_keys):
    up = servers(b, **upstream_keys)
    up["tls"] = tls
    return ferry(routes=[route("r", "/", upstream="up")], upstreams={"up": up}, workers=workers)


def test_verify_success_and_pooling():
    b = tls_backend()
    f = up_ferry(b, {"ca": pki().ca_cert, "sni": "up.test"})
    for i in range(5):
        r = get(f)
        eq(r.status, 200, "request %d over TLS to the upstream" % i)
        eq(r.body, b"ok\n", "body")
    eq(len(b.conns), 1, "one pooled TLS connection carried five requests")
    eq(b.snis[0], "up.test", "SNI sent")
    r = get(f, "/upload")
    eq(r.status, 200, "another request")
    f.assert_alive()


def test_health_checks_speak_tls():
    "health_check on a TLS upstream: checks go over TLS, verified like requests"
    b = tls_backend()
    hc = {"path": "/hc/fast", "interval": "200ms", "timeout": "1s"}
    f = up_ferry(b, {"ca": pki().ca_cert, "sni": "up.test"}, health_check=hc)
    wait_until(lambda: get(f).status == 200, timeout=5, what="served once its check passed")
    with b.lock:
        checks = [r for r in b.requests if r.header("User-Agent") == "ferry-health-check"]
    check(checks, "health checks reached the TLS backend")
    check("up.test" in b.snis, "SNI of the checks and requests: %r" % b.snis)
    # a certificate the checks cannot verify: the server is down, and why is logged
    b2 = tls_backend(cert=pki().expired)
    f2 = up_ferry(b2, {"ca": pki().ca_cert, "sni": "up.test"}, health_check=hc)
    time.sleep(0.6)  # three checks
    eq(get(f2).status, 503, "the server whose certificate fails verification is down")


def test_default_name_is_the_server_ip():
    b = tls_backend()
    f = up_ferry(b, {"ca": pki().ca_cert})
    r = get(f)
    eq(r.status, 200, "verified against the certificate's IP address 127.0.0.1")
    eq(b.snis, [None], "no SNI for an IP address")


def test_literal_host_is_the_name():
    b = tls_backend()
    f = up_ferry(b, {"ca": pki().ca_cert}, host_header="up.test")
    eq(get(f).status, 200, "verified as the literal Host")
    eq(b.snis, ["up.test"], "SNI is the literal Host")


def test_a_name_too_long_to_verify_fails_closed():
    """A literal Host longer than any DNS name cannot be verified: a 502
    saying so (it was sent with the chain checked and no name at all, so
    any certificate the CA signed passed)."""
    b = tls_backend()
    f = up_ferry(b, {"ca": pki().ca_cert}, host_header="a" * 300 + ".test")
    r = get(f)
    eq(r.status, 502, "no name to verify against")
    check("too long" in r.json().get("error", ""), "says why: %r" % r.json())
    eq(len(b.requests), 0, "nothing was sent")
    f3 = up_ferry(b, {"verify": False}, host_header="a" * 300 + ".test")
    eq(get(f3).status, 200, "verify: false does not need a name")


def test_sessions_resumed_on_new_connections():
    b = tls_backend()
    f = up_ferry(b, {"ca": pki().ca_cert, "sni": "up.test"}, keepalive=0)
    for i in range(4):
        eq(get(f).status, 200, "request %d" % i)
    check(wait_until(lambda: len(b.conns) == 4, 3), "four connections (keepalive: 0)")
    resumed = [c.resumed for c in b.conns]
    eq(resumed[0], False, "the first handshake is full")
    eq(resumed[1:], [True, True, True], "later connections resume the server's session")


def test_verify_failure_unknown_ca():
    b = tls_backend()
    f = up_ferry(b, {"sni": "up.test"})  # the system's CA store does not know the test CA
    r = get(f)
    eq(r.status, 502, "an unverifiable server")
    err = r.json().get("error", "")
    check("certificate verify failed" in err and "issuer" in err,
          "the JSON body says why: %r" % err)
    check(wait_until(lambda: "certificate verify failed" in f.stderr_text(), 3),
          "logged")
    line = [l for l in f.stderr_text().splitlines() if "certificate verify failed" in l and
            "upstream up" in l]
    check(line and b.address in line[0], "the log names the server: %r" % line)
    eq(len(b.requests), 0, "nothing was sent to the unverified server")
    f.assert_alive()


def test_verify_failure_expired_and_name():
    b = tls_backend(cert=pki().expired)
    f = up_ferry(b, {"ca": pki().ca_cert, "sni": "up.test"})
    r = get(f)
    eq(r.status, 502, "an expired certificate")
    check("expired" in r.json().get("error", ""), "says expired: %r" % r.json())
    b2 = tls_backend()
    f2 = up_ferry(b2, {"ca": pki().ca_cert, "sni": "other.test"})
    r = get(f2)
    eq(r.status, 502, "a name the certificate does not hold")
    check("hostname mismatch" in r.json().get("error", ""), "says why: %r" % r.json())
    # verify: false accepts both
    f3 = up_ferry(b, {"verify": False})
    eq(get(f3).status, 200, "verify: false")


def test_plaintext_upstream_is_a_tls_failure():
    """A cleartext HTTP server answers the ClientHello with a 400 (as
    nginx does): the handshake fails at once, a 502; one that says
    nothing leaves the handshake to upstream_connect, a 504."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.recv(4096)
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            c.close()
    threading.Thread(target=serve, daemon=True).start()

    class Addr:
        address = "127.0.0.1:%d" % ls.getsockname()[1]
    f = up_ferry(Addr, {"ca": pki().ca_cert})
    r = get(f)
    ls.close()
    eq(r.status, 502, "a cleartext server behind tls:")
    check("upstream TLS: handshake failed" in r.json().get("error", ""),
          "says TLS: %r" % r.json())
    b = backend()  # reads a head that never ends
    f2 = ferry(routes=[route("r", "/", upstream="up")], timeouts={"upstream_connect": "500ms"},
               upstreams={"up": dict(servers(b), tls={"verify": False})})
    r = get(f2)
    eq(r.status, 504, "a silent server: the handshake counts in upstream_connect")
    f.assert_alive()


def test_client_certificate():
    p = pki()
    b = tls_backend(client_ca=p.ca_cert)
    f = up_ferry(b, {"ca": p.ca_cert, "sni": "up.test"})
    eq(get(f).status, 502, "without a client certificate the server refuses")
    f2 = up_ferry(b, {"ca": p.ca_cert, "sni": "up.test", "cert": p.client[0],
                      "key": p.client[1]})
    eq(get(f2).status, 200, "with one it accepts")
    check(any(pc and ("commonName", "ferry-client") in sum(pc.get("subject", ()), ())
              for pc in b.peer_certs), "the backend saw Ferry's certificate: %r" % b.peer_certs)


if __name__ == "__main__":
    run(globals(), budget=60)
