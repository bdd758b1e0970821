#!/usr/bin/env python3
"""TLS files named by a config (issue 15): each fixture in tests/data/tls
is a config whose {pki} is a directory of certificates made now; `ferry
-t` must print exactly its .expected ({config} is the config's path):
missing files, a key that does not match its certificate, a file without
a certificate, an encrypted key, a CA file without a certificate, each
at the line and column of the key naming it; an expiring certificate a
warning. The same checks refuse a start. ~5 s."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from tlscerts import make_pki  # noqa: E402

FIXTURES = os.path.join(os.environ.get("FERRY_SRCDIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "data", "tls")


def make_files():
    p = make_pki(tmpdir())
    for stem, kw in (("a", {}), ("b", {}), ("soon", {"days": 3})):
        p.issue(stem, [stem + ".test"], **kw)
    p.encrypted_key("enc")
    return p


def run_fixture(p, name):
    with open(os.path.join(FIXTURES, name + ".yaml")) as fh:
        text = fh.read().replace("{pki}", p.dir)
    d = tmpdir()
    config = os.path.join(d, name + ".yaml")
    with open(config, "w") as fh:
        fh.write(text)
    rc, out, err = run_ferry_cli(["-t", "-c", config])
    with open(os.path.join(FIXTURES, name + ".expected")) as fh:
        expected = fh.read().replace("{pki}", p.dir).replace("{config}", config)
    return rc, out, err, expected, config


def test_fixtures():
    p = make_files()
    names = sorted(f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".yaml"))
    check(len(names) >= 3, "fixtures found in %s" % FIXTURES)
    for name in names:
        rc, out, err, expected, _ = run_fixture(p, name)
        eq(err, expected, "%s: ferry -t diagnostics" % name)
        if name.startswith("err-"):
            check(rc != 0, "%s: ferry -t fails" % name)
        else:
            eq(rc, 0, "%s: ferry -t succeeds (%s)" % (name, out))


def test_bad_files_refuse_a_start():
    p = make_files()
    rc, out, err, expected, config = run_fixture(p, "err-client-ca")
    text = open(config).read().replace("127.0.0.1:9", "127.0.0.1:%d" % free_port())
    with open(config, "w") as fh:
        fh.write(text)
    rc, out, err = run_ferry_cli(["-c", config])
    check(rc != 0, "ferry does not start with a CA file holding no certificate")
    check("no CA certificate could be read" in err, "and says why: %r" % err)


def test_world_readable_key_warns():
    p = make_pki(tmpdir())
    cert, key = p.issue("open", ["open.test"])
    os.chmod(key, 0o644)
    d = tmpdir()
    config = os.path.join(d, "open.yaml")
    with open(config, "w") as fh:
        fh.write("listen:\n  - address: 127.0.0.1:9\n    tls:\n      certificates:\n"
                 "        - {cert: %s, key: %s}\nroutes:\n  - name: r\n    match: {path_prefix: /}\n"
                 "    respond: {status: 200}\n" % (cert, key))
    rc, out, err = run_ferry_cli(["-t", "-c", config])
    eq(rc, 0, "a world-readable key still loads")
    check("readable by every user" in err, "but is a warning: %r" % err)


if __name__ == "__main__":
    run(globals(), budget=30)
