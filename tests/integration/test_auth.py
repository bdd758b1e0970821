#!/usr/bin/env python3
"""Authentication on a route (issue 17, item 3), through a real Ferry with
curl and raw sockets: API keys from a header or the query (hide_credentials),
JWT bearer tokens made at test time with the openssl command (RS256 from a
PEM, ES256 and EdDSA from a JWKS, HS256 from a secret), the identity and
claims sent upstream in place of a client's own fields, the access log's
identity field, 401 with WWW-Authenticate and 403 outside allow, alg none
and algorithm confusion refused, expired tokens, oversized and malformed
Authorization headers (401, Ferry alive), an unread body after a 401 (the
connection closes), bad keys files refused at load with FILE:LINE; basic
auth against bcrypt and SHA-crypt hashes, checked off the event loop.
Fast (~8 s on an idle machine; bcrypt makes it slower on a busy one)."""
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

KEYS = """# test keys: KEY [NAME]
alice-key-0123456789 alice
sha256:%s bob
""" % sha256(b"bob-key-9876543210")
SECRET = b"an-hs256-secret-for-the-tests-of-ferry"


def write(d, name, data):
    path = os.path.join(d, name)
    with open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    return path


def openssl(*args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    check(p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr.decode()))
    return p.stdout


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


_KEYS = []


def Keys():
    """The file's keys (made once: RSA generation is slow on a busy machine)."""
    if not _KEYS:
        _KEYS.append(KeySet())
    return _KEYS[0]


class KeySet:
    """Keys made with the openssl command in a temporary directory."""

    def __init__(self):
        self.dir = tmpdir()
        self.rsa = os.path.join(self.dir, "rsa.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.rsa)
        self.rsa_pub = os.path.join(self.dir, "rsa.pub")
        openssl("pkey", "-in", self.rsa, "-pubout", "-out", self.rsa_pub)
        self.ec = os.path.join(self.dir, "ec.pem")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.ec)
        self.ed = os.path.join(self.dir, "ed.pem")
        openssl("genpkey", "-algorithm", "ED25519", "-out", self.ed)

    def pub_bytes(self, key):
        """The public key bytes openssl prints (pub: hex lines)."""
        text = openssl("pkey", "-in", key, "-pubout", "-text_pub", "-noout").decode()
        m = re.search(r"pub:\s*\n((?:\s+[0-9a-f:]+\n?)+)", text)
        check(m, "no pub: in %r" % text)
        return bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))

    def jwks(self):
        ec = self.pub_bytes(self.ec)
        ed = self.pub_bytes(self.ed)
        return json.dumps({"keys": [
            {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64u(ec[1:33]), "y": b64u(ec[33:65])},
            {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64u(ed)},
        ]})

    def token(self, alg, payload, key=None, header=None):
        hdr = dict(header or {"alg": alg, "typ": "JWT"})
        signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(payload).encode())).encode()
        if alg == "none":
            return signing.decode() + "."
        inp = write(self.dir, "input", signing)
        if alg == "HS256":
            sig = openssl("dgst", "-sha256", "-mac", "HMAC", "-macopt",
                          "hexkey:" + (key or SECRET).hex(), "-binary", inp)
        elif alg == "RS256":
            sig = openssl("dgst", "-sha256", "-sign", key or self.rsa, inp)
        elif alg == "ES256":
            der = openssl("dgst", "-sha256", "-sign", key or self.ec, inp)
            sig = der_to_raw(der)
        else:
            sig = openssl("pkeyutl", "-sign", "-rawin", "-inkey", key or self.ed, "-in", inp)
        return signing.decode() + "." + b64u(sig)


def der_to_raw(der):
    """An ECDSA DER signature as r || s (32 bytes each)."""
    def integer(b, i):
        check(b[i] == 2, "DER INTEGER expected")
        n = b[i + 1]
        return int.from_bytes(b[i + 2:i + 2 + n], "big"), i + 2 + n
    i = 2 if der[1] < 0x80 else 3
    r, i = integer(der, i)
    s, _ = integer(der, i)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def get(f, path, *headers, extra=()):
    """curl: (status, headers dict lower-cased, body bytes)."""
    args = ["-i", f.url(path)]
    for h in headers:
        args += ["-H", h]
    rc, out, err = curl(*(list(extra) + args))
    check(rc == 0, "curl %s: %s" % (path, err))
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), v.strip())
    return status, hdrs, body


def upstream_headers(body):
    d = json.loads(body)
    out = {}
    for k, v in d["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return d, out


def test_api_key_header():
    "API key in X-Api-Key: 401 with Key challenge without or with a wrong one; the identity replaces the client's X-Consumer upstream and is logged"
    d = tmpdir()
    be = backend()
    auth = {"identity_header": "X-Consumer", "realm": "gw",
            "api_keys": {"header": "X-Api-Key", "keys_file": write(d, "keys", KEYS)}}
    f = ferry(routes=[route("api", "/", upstream="u", auth=auth)], upstreams={"u": servers(be)})
    st, h, body = get(f, "/echo")
    eq(st, 401, "no key")
    eq(h.get("www-authenticate"), 'Key realm="gw"', "challenge")
    eq(json.loads(body)["error"], "unauthorized", "body names only the status")
    st, h, body = get(f, "/echo", "X-Api-Key: alice-key-012345678")
    eq(st, 401, "wrong key")
    eq(json.loads(body)["error"], "unauthorized", "the body says nothing of which part")
    eq(be.stats()["requests"], 0, "nothing reached the backend")
    st, h, body = get(f, "/echo", "X-Api-Key: alice-key-0123456789", "X-Consumer: admin")
    eq(st, 200, "alice's key")
    _, up = upstream_headers(body)
    eq(up.get("x-consumer"), ["alice"], "identity upstream, the client's own replaced")
    eq(up.get("x-api-key"), ["alice-key-0123456789"], "the key is forwarded (hide_credentials false)")
    st, h, body = get(f, "/echo", "X-Api-Key: bob-key-9876543210")
    eq(st, 200, "bob's key (a sha256: line)")
    eq(upstream_headers(body)[1].get("x-consumer"), ["bob"], "bob upstream")
    e = f.wait_access(lambda e: e.get("identity") == "bob", what="bob's line")
    eq(e["status"], 200, "logged status")
    e = f.wait_access(lambda e: e["status"] == 401, what="a 401 line")
    check("identity" not in e, "no identity on a 401: %r" % e)


def test_api_key_query_hidden_and_allow():
    "API key in the query with hide_credentials: taken out of the query sent upstream; allow: another identity gets 403"
    d = tmpdir()
    be = backend()
    auth = {"identity_header": "X-Consumer", "hide_credentials": True, "allow": ["alice"],
            "api_keys": {"query": "api_key", "keys_file": write(d, "keys", KEYS)}}
    f = ferry(routes=[route("api", "/", upstream="u", auth=auth)], upstreams={"u": servers(be)})
    st, _, body = get(f, "/echo?a=1&api_key=alice-key-0123456789&b=2")
    eq(st, 200, "alice by query")
    up, hdrs = upstream_headers(body)
    eq(up["query"], {"a": ["1"], "b": ["2"]}, "the key left the query")
    eq(up["target"], "/echo?a=1&b=2", "the target sent upstream")
    eq(hdrs.get("x-consumer"), ["alice"], "identity")
    st, _, body = get(f, "/echo?api_key=bob-key-9876543210")
    eq(st, 403, "bob is not allowed here")
    eq(json.loads(body)["error"], "forbidden", "403 body")
    f.wait_access(lambda e: e["status"] == 403 and e.get("identity") == "bob", what="bob's 403")
    st, h, _ = get(f, "/echo", "X-Api-Key: alice-key-0123456789")
    eq(st, 401, "the header is not read when only query is configured")


def jwt_ferry(keys, be, d, **jwt):
    cfg = {"jwks_file": write(d, "jwks.json", keys.jwks()), "public_key_file": keys.rsa_pub,
           "secret_file": write(d, "secret", SECRET + b"\n"), "issuer": "https://idp.test",
           "audience": ["api"], "leeway": "5s",
           "claims_to_headers": {"email": "X-Email", "tenant": "X-Tenant"}}
    cfg.update(jwt)
    auth = {"identity_header": "X-User", "jwt": cfg}
    return ferry(routes=[route("api", "/", upstream="u", auth=auth),
                         ], upstreams={"u": servers(be)})


def claims(**kw):
    c = {"sub": "carol", "iss": "https://idp.test", "aud": "api", "exp": int(time.time()) + 600,
         "email": "carol@example.com"}
    c.update(kw)
    return c


def test_jwt_each_algorithm():
    "JWT RS256 (PEM), ES256 and EdDSA (JWKS), HS256 (secret): identity and claims upstream, an absent claim's client field removed"
    d = tmpdir()
    keys = Keys()
    be = backend()
    f = jwt_ferry(keys, be, d)
    for alg in ("RS256", "ES256", "EdDSA", "HS256"):
        tok = keys.token(alg, claims())
        st, _, body = get(f, "/echo", "Authorization: Bearer " + tok, "X-User: root",
                          "X-Tenant: evil")
        eq(st, 200, alg)
        _, up = upstream_headers(body)
        eq(up.get("x-user"), ["carol"], alg + ": identity")
        eq(up.get("x-email"), ["carol@example.com"], alg + ": claim")
        eq(up.get("x-tenant"), None, alg + ": absent claim, client's field removed")
        check(up.get("authorization"), "the token is forwarded (hide_credentials false)")
    f.wait_access(lambda e: e.get("identity") == "carol", what="carol's line")


def test_jwt_refused():
    "JWT refused with 401 Bearer error=invalid_token: expired, wrong iss/aud, alg none, HS256 signed with the RSA public key, tampered, malformed; no token: a bare challenge"
    d = tmpdir()
    keys = Keys()
    be = backend()
    f = jwt_ferry(keys, be, d)
    now = int(time.time())
    with open(keys.rsa_pub, "rb") as fh:
        pem = fh.read()
    good = keys.token("RS256", claims())
    parts = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
    forged["sub"] = "admin"
    tampered = parts[0] + "." + b64u(json.dumps(forged).encode()) + "." + parts[2]
    bad = {
        "expired": keys.token("RS256", claims(exp=now - 60)),
        "not yet": keys.token("ES256", claims(nbf=now + 600)),
        "wrong issuer": keys.token("RS256", claims(iss="https://evil.test")),
        "wrong audience": keys.token("EdDSA", claims(aud="other")),
        "alg none": keys.token("none", claims()),
        "alg none, signed": keys.token("RS256", claims(), header={"alg": "none"}),
        "confusion": keys.token("HS256", claims(), key=pem),
        "tampered": tampered,
        "garbage": "abc.def.ghi",
        "two parts": parts[0] + "." + parts[1],
        "padding": good + "==",
    }
    for what, tok in bad.items():
        st, h, body = get(f, "/echo", "Authorization: Bearer " + tok)
        eq(st, 401, what)
        eq(h.get("www-authenticate"), 'Bearer realm="ferry", error="invalid_token"', what)
        eq(json.loads(body)["error"], "unauthorized", what + ": body")
    st, h, _ = get(f, "/echo")
    eq(st, 401, "no token")
    eq(h.get("www-authenticate"), 'Bearer realm="ferry"', "no error code without a token")
    st, h, _ = get(f, "/echo", "Authorization: Basic YWxpY2U6cHc=")
    eq(st, 401, "another scheme")
    st, _, _ = get(f, "/echo", "Authorization: Bearer " + good)
    eq(st, 200, "the good token still passes")


def test_oversized_and_malformed_headers():
    "Oversized and hostile Authorization headers: 401 (or 431 past the head limit), never a crash"
    d = tmpdir()
    keys = Keys()
    be = backend()
    f = jwt_ferry(keys, be, d)
    deep = b64u(b'{"alg":"RS256"}') + "." + b64u(b"[" * 20000) + ".AAAA"
    cases = [("A" * 9000, 401), ("a.b." + "A" * 20000, 401), (deep, 401),
             ("\x01\x02", 400), ("x" * 40000, 431)]
    for tok, want in cases:
        c = Client(f.port)
        c.send(build_request("GET", "/echo", headers={"Authorization": "Bearer " + tok}))
        r = c.response()
        eq(r.status, want, "Authorization of %d bytes" % len(tok))
        c.close()
    f.assert_alive()
    st, _, _ = get(f, "/echo", "Authorization: Bearer " + keys.token("RS256", claims()))
    eq(st, 200, "still serving")


def test_unread_body_closes_after_401():
    "A 401 to a request whose body was not read says Connection: close and closes (no smuggling)"
    d = tmpdir()
    be = backend()
    auth = {"api_keys": {"keys_file": write(d, "keys", KEYS)}}
    f = ferry(routes=[route("api", "/", upstream="u", auth=auth)], upstreams={"u": servers(be)})
    c = Client(f.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    r = c.response()
    eq(r.status, 401, "no key")
    eq(r.header("Connection"), "close", "closes")
    c.close()
    # without a body the connection stays open for the retry with a key
    c = Client(f.port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    r = c.response()
    eq(r.status, 401, "no key")
    eq(r.header("Connection"), None, "keep-alive after a 401 without a body")
    c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Api-Key: alice-key-0123456789\r\n\r\n")
    eq(c.response().status, 200, "the key on the same connection")
    c.close()


def test_bad_files_refused_at_load():
    "Bad keys files and key files stop the start, with FILE:LINE of the bad line"
    d = tmpdir()
    keys_path = write(d, "keys", "good-key-000001 a\nbad key with spaces\nsha256:12 b\n")
    cfg = """listen:
  - address: 127.0.0.1:%d
upstreams:
  u: { servers: [ { address: 127.0.0.1:9 } ] }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: u
    auth:
      api_keys: { keys_file: %s }
""" % (free_port(), keys_path)
    path = write(d, "ferry.yaml", cfg)
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0, "ferry -t accepted a bad keys file")
    check("%s:2: " % keys_path in err, "line 2 reported: %r" % err)
    check("%s:3: " % keys_path in err, "line 3 reported: %r" % err)
    check(re.search(r"ferry\.yaml:10:\d+: routes\[0\]\.auth\.api_keys\.keys_file: ", err),
          "at the keys_file key: %r" % err)
    jwks = write(d, "jwks.json", '{"keys":[{"kty":"XYZ","kid":"k1"}]}')
    path = write(d, "ferry2.yaml", cfg.replace("api_keys: { keys_file: %s }" % keys_path,
                                               "jwt: { jwks_file: %s }" % jwks))
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0 and "kty XYZ" in err, "unknown kty refused: %r" % err)
    path = write(d, "ferry3.yaml", cfg.replace("api_keys: { keys_file: %s }" % keys_path,
                                               "jwt: { issuer: x }"))
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0 and "names no key" in err, "jwt without keys refused: %r" % err)
    secret = write(d, "secret", SECRET)
    path = write(d, "ferry4.yaml", cfg.replace(
        "api_keys: { keys_file: %s }" % keys_path,
        "identity_header: X-User\n      jwt: { secret_file: %s, claims_to_headers: { email: x-user } }"
        % secret))
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0 and "set twice" in err, "a field set twice refused: %r" % err)


def basic_ferry(be, d, users, workers=2, **basic):
    cfg = {"users_file": write(d, "users", users)}
    cfg.update(basic)
    auth = {"identity_header": "X-User", "basic": cfg}
    return ferry(routes=[route("basic", "/b/", upstream="u", auth=auth),
                         route("plain", "/", upstream="u")],
                 upstreams={"u": servers(be)}, workers=workers)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def test_basic_auth():
    "Basic auth against bcrypt and SHA-crypt hashes: 401 Basic challenge, identity upstream, wrong password and unknown user 401"
    d = tmpdir()
    be = backend()
    users = "# users\nana:%s\nben:%s\n" % (crypt_hash("ana-pw", "$2b$", 5),
                                            crypt_hash("ben-pw", "$6$", 5000))
    f = basic_ferry(be, d, users)
    st, h, _ = get(f, "/b/echo")
    eq(st, 401, "no credentials")
    eq(h.get("www-authenticate"), 'Basic realm="ferry", charset="UTF-8"', "challenge")
    for user, pw in (("ana", "ana-pw"), ("ben", "ben-pw")):
        for _ in range(2):  # the second from the cache
            st, _, body = get(f, "/b/echo", "Authorization: Basic " + b64(user + ":" + pw),
                              "X-User: root")
            eq(st, 200, user)
            eq(upstream_headers(body)[1].get("x-user"), [user], user + " upstream")
    for cred in ("ana:wrong", "nobody:ana-pw", "ana", "ben:"):
        st, h, body = get(f, "/b/echo", "Authorization: Basic " + b64(cred))
        eq(st, 401, cred)
        eq(json.loads(body)["error"], "unauthorized", cred)
    rc, out, err = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "ana:ana-pw",
                        f.url("/b/echo"))
    eq(out, b"200", "curl -u")
    f.wait_access(lambda e: e.get("identity") == "ana", what="ana's line")


def test_basic_hashing_off_the_loop():
    "While bcrypt checks run (one worker), the worker keeps answering other requests at once"
    d = tmpdir()
    be = backend()
    users = "slow:%s\n" % crypt_hash("pw", "$2b$", 12)
    f = basic_ferry(be, d, users, workers=1, cache_ttl="0s")
    t0 = time.monotonic()
    st, _, _ = get(f, "/b/echo", "Authorization: Basic " + b64("slow:pw"))
    one = time.monotonic() - t0
    eq(st, 200, "slow's password")
    n = 4  # on 2 pool threads: about 2 checks' time in all
    # wrong passwords being hashed, and a plain request in the middle
    out = []
    ts = [threading.Thread(target=lambda: out.append(
        get(f, "/b/echo", "Authorization: Basic " + b64("slow:no"))[0])) for _ in range(n)]
    for t in ts:
        t.start()
    time.sleep(min(one / 2, 0.2))
    t0 = time.monotonic()
    st, _, _ = get(f, "/fast")
    plain = time.monotonic() - t0
    for t in ts:
        t.join(30)
    eq(st, 200, "plain route")
    eq(out, [401] * n, "the checks finished")
    log("one bcrypt check %.0f ms; a plain request during %d checks %.0f ms"
        % (one * 1000, n, plain * 1000))
    # blocked, the loop would hash the 4 in turn: the plain request would
    # wait about 3 checks' time; free, it waits for a curl start (on a busy
    # 2-core machine the two hashing threads may still slow it by a check)
    check(plain < 2 * one, "the plain request waited %.0f ms for the hashing (one check "
          "%.0f ms): the loop is blocked" % (plain * 1000, one * 1000))


if __name__ == "__main__":
    # bcrypt at cost 12 on a loaded machine (and ASan builds) takes seconds
    run(globals(), budget=150.0)
