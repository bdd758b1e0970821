#!/usr/bin/env python3
"""TLS as an attacker and an operator would try it (session 8 review),
with real certificates (openssl) and clients: a certificate file whose
chain does not parse is an error, not a listener silently serving without
its intermediate; an upstream's name given as a bracketed IPv6 literal or
with a trailing dot is verified as the address or name it is; a session
resumes only under a name its certificates serve; an expired chain
certificate is a warning. ~8 s."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from tlscerts import make_pki  # noqa: E402
import test_tls_upstream as up  # noqa: E402
import test_tls as lst  # noqa: E402

PKI = None


def pki():
    global PKI
    if PKI is None:
        p = make_pki(tmpdir())
        p.site = p.issue("site", ["a.test"])
        p.v6 = p.issue("v6", ["up.test"], ips=["::1", "127.0.0.1"])
        PKI = p
    return PKI


def check_config(cert, key):
    """ferry -t on a TLS listener with cert and key: (rc, stderr)."""
    f = ferry(routes=[respond_route("h", "/")], start=False,
              listener={"tls": {"certificates": [{"cert": cert, "key": key}]}})
    rc, out, err = run_ferry_cli(["-t", "-c", f.config_path])
    return rc, err


def test_chain_that_does_not_parse_is_an_error():
    """A certificate after the leaf that does not parse (bad base64, cut
    off) was dropped without a word: Ferry started and served the leaf
    without its intermediate, and clients failed to verify. Now it is an
    error at the key, as for a leaf that does not parse (nginx too)."""
    p = pki()
    leaf, key = p.site
    ca = open(p.ca_cert).read()
    cases = {
        "bad-base64.pem": open(leaf).read() +
        "-----BEGIN CERTIFICATE-----\nMIIB!!not base64!!\n-----END CERTIFICATE-----\n",
        "cut.pem": open(leaf).read() + ca[:len(ca) // 2],
    }
    for name, text in cases.items():
        path = p.path(name)
        with open(path, "w") as fh:
            fh.write(text)
        rc, err = check_config(path, key)
        check(rc != 0, "%s: ferry -t fails (%r)" % (name, err))
        check(re.search(r"ferry\.yaml:\d+:\d+: listen\[0\]\.tls\.certificates\[0\]\.cert: .*%s: "
                        r"certificate #2 in the file does not parse" % re.escape(name), err),
              "%s: the file and the key's FILE:LINE:COLUMN named: %r" % (name, err))
    # What still loads: leaf, chain, the key in the same file, a comment after.
    path = p.path("full.pem")
    with open(path, "w") as fh:
        fh.write(open(leaf).read() + ca + open(key).read() + "# made by the test\n")
    rc, err = check_config(path, key)
    eq(rc, 0, "leaf, chain, key and a trailing comment load (%r)" % err)


def test_upstream_name_ipv6_literal_and_trailing_dot():
    """A literal Host of "[::1]:8443" was sent as SNI "[::1]:8443" and
    verified as a DNS name (always a mismatch); "up.test." was sent with
    its dot (RFC 6066 forbids it) and OpenSSL's host check refused it. The
    address in brackets is verified against the IP SANs and not sent; the
    trailing dot is dropped."""
    p = pki()
    up.PKI = p
    b = up.tls_backend(cert=p.v6)
    for host_header, tls, sni in (("[::1]:8443", {}, None), ("[::1]", {}, None),
                                  ("up.test.", {}, "up.test"),
                                  ("x.other", {"sni": "up.test."}, "up.test")):
        b.snis.clear()
        tls = dict(tls, ca=p.ca_cert)
        f = up.up_ferry(b, tls, host_header=host_header)
        r = up.get(f)
        eq(r.status, 200, "%s / %r: verified (%r)" % (host_header, tls, r.body[:160]))
        eq(b.snis, [sni], "%s / %r: SNI sent" % (host_header, tls))
        f.stop()


def test_expired_chain_certificate_warns():
    """An intermediate in the cert file that expired fails every client as
    an expired leaf does, but only the leaf was checked: nothing was said.
    Now it is a warning naming its place in the file, as for the leaf."""
    p = pki()
    leaf, key = p.site
    old, _ = p.issue("old-intermediate", ["old.test"], days=0)
    soon, _ = p.issue("soon-intermediate", ["soon.test"], days=5)
    path = p.path("chain-old.pem")
    with open(path, "w") as fh:
        fh.write(open(leaf).read() + open(soon).read() + open(old).read())
    rc, err = check_config(path, key)
    eq(rc, 0, "a warning, not an error (%r)" % err)
    check(re.search(r"ferry\.yaml:\d+:\d+: listen\[0\]\.tls\.certificates\[0\]\.cert: warning: "
                    r"certificate #3 in .*chain-old\.pem \(its chain\) expired", err),
          "the expired one named: %r" % err)
    check("certificate #2 in %s (its chain) expires in 5 days" % path in err,
          "the expiring one named: %r" % err)
    rc, err = check_config(*p.site)
    check("warning" not in err, "a good certificate: no warning (%r)" % err)


def resumes(f, sess_in, sess_out, *args):
    """Whether an s_client handshake resumed sess_in (saving its session
    to sess_out), and the certificate subject it reports."""
    out = lst.s_client(f, "-sess_in", sess_in, "-sess_out", sess_out, *args, linger=0.3)
    return ("Reused," in out), lst.subject_cn(out)


def test_session_does_not_cross_certificates_by_sni():
    """A session made under a.test resumed under SNI b.test (TLS 1.2 and
    1.3): the connection to b.test was "authenticated" by a.test's
    certificate, which RFC 6066 forbids (TLS 1.2) and the virtual-host
    confusion attacks use. It now resumes only under a name served by the
    same certificates (another name of the certificate, a wildcard's
    names, the default for no SNI or an unknown name); else a full
    handshake with the right certificate."""
    lst.pki()
    f = lst.tls_ferry(tls_extra={"protocols": ["TLSv1.2", "TLSv1.3"]})
    d = tmpdir()
    for ver in ("-tls1_2", "-tls1_3"):
        first = os.path.join(d, "first" + ver)
        out = lst.s_client(f, ver, "-servername", "a.test", "-sess_out", first, linger=0.3)
        check("New," in out and os.path.exists(first), "%s: a full handshake, a session" % ver)
        for sni, same in (("b.test", False), ("A.TEST", True), ("x.wild.test", True),
                          ("unknown.test", True), (None, True)):
            args = [ver] + (["-servername", sni] if sni else ["-noservername"])
            reused, cn = resumes(f, first, os.path.join(d, "next"), *args)
            eq(reused, same, "%s: a.test's session under SNI %s resumed" % (ver, sni))
            if not same:
                eq(cn, "b.test", "%s: the full handshake shows b.test's certificate" % ver)
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=60)
