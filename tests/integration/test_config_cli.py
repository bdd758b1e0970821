#!/usr/bin/env python3
"""Config and CLI (issue 5 "Bad input", issue 4's contract): `ferry -t`
accepts conf/ferry.yaml and a generated config; a bad config refuses to start
with FILE:LINE:COLUMN: PATH: message on stderr (unknown key with a
suggestion, bad value, unknown upstream, YAML syntax), and nothing listens.
Fast (~2 s)."""
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def write(name, text):
    d = tmpdir()
    path = os.path.join(d, name)
    with open(path, "w") as fh:
        fh.write(text)
    return path


def located(err, path, line, cols, what):
    """Checks stderr has PATH:LINE:COL: (path as given or its basename)."""
    names = "(?:%s|%s)" % (re.escape(path), re.escape(os.path.basename(path)))
    m = re.search(r"%s:(\d+):(\d+): " % names, err)
    check(m, "%s: no FILE:LINE:COLUMN: in stderr: %r" % (what, err[:500]))
    eq(int(m.group(1)), line, "%s: reported line (stderr %r)" % (what, err[:300]))
    check(int(m.group(2)) in cols, "%s: reported column %s, expected one of %r (stderr %r)"
          % (what, m.group(2), cols, err[:300]))


def refuses(path, what):
    """ferry -t and ferry -c both refuse path; returns -t's stderr."""
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0, "%s: ferry -t accepted it (stdout %r stderr %r)" % (what, out, err))
    return err


BASE = """listen:
  - address: 127.0.0.1:{port}
upstreams:
  api:
    {servers_key}:
      - address: 127.0.0.1:9001
        weight: {weight}
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: {upstream}
"""


def config(port=None, servers_key="servers", weight="2", upstream="api"):
    return BASE.format(port=port or free_port(), servers_key=servers_key, weight=weight,
                       upstream=upstream)


def test_check_shipped_config():
    "ferry -t accepts conf/ferry.yaml"
    path = os.path.join(FERRY_SRCDIR, "conf", "ferry.yaml")
    check(os.path.exists(path), "no %s" % path)
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    eq(rc, 0, "ferry -t -c conf/ferry.yaml exit status (stderr %r)" % err[:500])


def test_check_good_config():
    "ferry -t accepts a small valid config"
    path = write("good.yaml", config())
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    eq(rc, 0, "ferry -t exit status (stderr %r)" % err[:500])


def test_unknown_key():
    "an unknown key: FILE:5:5: ... unknown key \"servrs\" (did you mean \"servers\"?)"
    path = write("unknown.yaml", config(servers_key="servrs"))
    err = refuses(path, "unknown key")
    located(err, path, 5, (5,), "unknown key")
    check("servrs" in err and re.search(r'did you mean "?servers"?', err),
          "no suggestion in %r" % err[:300])


def test_bad_value():
    "a bad value names its path: upstreams.api.servers[0].weight"
    path = write("weight.yaml", config(weight="two"))
    err = refuses(path, "bad weight")
    located(err, path, 7, (9, 17), "bad weight")
    check("upstreams.api.servers[0].weight" in err, "no key path in %r" % err[:300])


def test_unknown_upstream():
    "a route naming an undefined upstream is refused at its line"
    path = write("noup.yaml", config(upstream="nope"))
    err = refuses(path, "unknown upstream")
    located(err, path, 11, (5, 15), "unknown upstream")
    check("nope" in err, "the upstream name is not in %r" % err[:300])


def test_yaml_syntax_error():
    "a YAML syntax error is reported with its position"
    path = write("syntax.yaml", "listen:\n  - address: [127.0.0.1:1\nroutes: []\n")
    err = refuses(path, "syntax error")
    check(re.search(r"syntax\.yaml:\d+:\d+: ", err), "no position in %r" % err[:300])


def test_bad_config_refuses_to_start():
    "ferry -c with a bad config exits non-zero at once and listens on nothing"
    port = free_port()
    path = write("start.yaml", config(port=port, servers_key="servrs"))
    rc, out, err = run_ferry_cli(["-c", path], timeout=5)
    check(rc != 0, "ferry started with a bad config (status %s)" % rc)
    located(err, path, 5, (5,), "ferry -c")
    s = socket.socket()
    try:
        check(s.connect_ex(("127.0.0.1", port)) != 0, "something listens on %d" % port)
    finally:
        s.close()


def test_missing_file():
    "a missing config file is named in the error"
    path = os.path.join(tmpdir(), "does-not-exist.yaml")
    rc, out, err = run_ferry_cli(["-t", "-c", path])
    check(rc != 0, "ferry -t accepted a missing file")
    check("does-not-exist.yaml" in err, "the path is not named: %r" % err[:300])


if __name__ == "__main__":
    run(globals(), budget=30)
