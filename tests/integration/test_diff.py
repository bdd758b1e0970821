#!/usr/bin/env python3
"""`ferry diff -c FILE` against a running ferry: exit 0 and "no changes"
for the running file, 1 with each route, upstream, server, listener and
timeout added, removed or changed, 2 when the file is invalid or nothing
answers on its admin.listen. GET /config shows no header value or
respond body in clear. ~5 s."""
import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403


def _diff(path):
    return run_ferry_cli(["diff", "-c", path])


def _cfg(be, be2=None, extra_route=False, header="s3cret-token", timeout="30s"):
    ups = {"api": servers(*([be] + ([be2] if be2 else [])))}
    routes = [route("api", "/", upstream="api",
                    request_headers={"set": {"Authorization": "Bearer " + header}})]
    if extra_route:
        routes.insert(0, respond_route("status", "/status"))
    return {"upstreams": ups, "routes": routes, "timeouts": {"upstream_header": timeout}}


def test_no_changes():
    """The running file: exit 0, "no changes"."""
    be = backend()
    f = ferry(**_cfg(be))
    rc, out, err = _diff(f.config_path)
    eq((rc, out.strip()), (0, "no changes"), "diff of the running file (stderr %r)" % err)


def test_changes_listed():
    """Added route and server, changed timeout and header, a new listener."""
    be, be2 = backend("a"), backend("b")
    f = ferry(**_cfg(be))
    p2 = free_port()
    f.write_config(_cfg(be, be2, extra_route=True, header="other", timeout="5s"),
                   listeners=[{"address": f.address}, {"address": "127.0.0.1:%d" % p2}])
    rc, out, err = _diff(f.config_path)
    eq(rc, 1, "exit status with changes (stderr %r)" % err)
    log(out)
    check("+ route status" in out, "added route: %s" % out)
    check("+ server api/%s" % be2.address in out, "added server: %s" % out)
    check("+ listener 127.0.0.1:%d" % p2 in out, "added listener: %s" % out)
    check("~ timeouts -: upstream_header 30s -> 5s" in out, "changed timeout: %s" % out)
    check("~ route api:" in out and "position 1 -> 2" in out and
          "request_headers.set.Authorization" in out, "changed route: %s" % out)
    check("s3cret" not in out and "other" not in out, "no header value in clear: %s" % out)
    f.reload()
    rc, out, _ = _diff(f.config_path)
    eq((rc, out.strip()), (0, "no changes"), "after the reload")
    f.write_config(_cfg(be))
    rc, out, _ = _diff(f.config_path)
    eq(rc, 1, "removals")
    check("- route status" in out and "- server api/%s" % be2.address in out and
          "- listener 127.0.0.1:%d" % p2 in out, "removed objects: %s" % out)


def test_balancing_and_health_changes_listed():
    """balance, its hash key, health_check, retry budget and backoff,
    max_eject_for: each change is listed, and the running file is "no changes"."""
    be = backend()
    base = {"balance": "least_conn", "health_check": {"path": "/hc", "interval": "5s"},
            "retries": {"attempts": 1, "budget": "20%", "backoff": "10ms"},
            "passive": {"failures": 3, "eject_for": "10s", "max_eject_for": "60s"}}
    f = ferry(upstreams={"api": servers(be, **base)}, routes=[route("api", "/", upstream="api")])
    rc, out, err = _diff(f.config_path)
    eq((rc, out.strip()), (0, "no changes"), "diff of the running file (stderr %r)" % err)
    changes = [
        ({"balance": "hash", "hash_key": "header:X-User"}, ["balance least_conn -> hash",
                                                            "hash_key"]),
        ({"health_check": {"path": "/hc", "interval": "2s"}}, ["health_check.interval 5s -> 2s"]),
        ({"health_check": None}, ["health_check.path /hc -> -"]),
        ({"retries": {"attempts": 1, "budget": "50%", "backoff": "10ms"}}, ["retries.budget"]),
        ({"retries": {"attempts": 1, "budget": "20%", "backoff": "25ms"}}, ["retries.backoff"]),
        ({"passive": {"failures": 3, "eject_for": "10s", "max_eject_for": "120s"}},
         ["passive.max_eject_for 60s -> 120s"]),
    ]
    for change, wants in changes:
        up = dict(base, **change)
        up = {k: v for k, v in up.items() if v is not None}
        f.write_config({"upstreams": {"api": servers(be, **up)},
                        "routes": [route("api", "/", upstream="api")]})
        rc, out, err = _diff(f.config_path)
        eq(rc, 1, "exit status after %r (stderr %r, out %r)" % (change, err, out))
        for want in wants:
            check(want in out, "%r listed after %r: %s" % (want, change, out))


def test_errors_exit_2():
    """An invalid file, or no ferry on admin.listen: exit 2."""
    f = ferry(routes=[respond_route("r", "/")])
    f.write_config(yaml_text="routes: [\n")
    rc, out, err = _diff(f.config_path)
    eq(rc, 2, "invalid file")
    check("ferry.yaml:" in err, "the error is printed: %r" % err)
    f.write_config({"routes": [respond_route("r", "/")]})
    f.stop()
    rc, out, err = _diff(f.config_path)
    eq(rc, 2, "nobody on admin.listen")
    check("admin.listen" in err, "says what it tried: %r" % err)


def test_config_endpoint_hides_secrets():
    """GET /config: the normalized form, header values only as a hash."""
    be = backend()
    f = ferry(**_cfg(be))
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    c.request("GET", "/config")
    r = c.getresponse()
    body = r.read().decode()
    eq(r.status, 200, "GET /config")
    check("route api " in body and "server api/%s" % be.address in body, "objects: %s" % body)
    check("s3cret" not in body, "no secret in /config: %s" % body)


if __name__ == "__main__":
    run(globals(), budget=60)
