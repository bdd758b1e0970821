#!/usr/bin/env python3
"""Memory caps (issue 6, point 8): Ferry started under `prlimit --as`
(its warmed-up VmSize plus 6 or 24 MiB) with 200 concurrent clients,
100 uploading 10 MiB each through a proxied route and 100 reading 10 MiB
downloads slowly: Ferry is never killed; every upload answered 200 carries
the right sha256, every other answer is a 503 (a coroutine stack or buffer
that could not be had; 502 tolerated) or a cut connection, never a wrong
byte; when a
stack cannot be mapped the error log names vm.max_map_count, at most once
a second; afterwards Ferry serves normally. SLOW: ~40 s."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

BODY = pattern(10 * MiB)
BODY_SHA = sha256(BODY)


def config(be):
    return dict(upstreams={"u": servers(be)},
                routes=[respond_route("ping", "/ping"),
                        route("up", "/up", upstream="u", strip_prefix="/up")],
                limits={"max_body_bytes": "20m"})


def warm_vmsize(be):
    f = ferry(**config(be))
    for _ in range(5):
        expect_response(request(f, "GET", "/ping"), status=200)
        expect_response(request(f, "POST", "/up/upload", body=b"x" * 100000), status=200)
    vm = f.proc_status("VmSize")
    f.stop()
    return vm


def upload(f):
    c = Client(f.port, timeout=30)
    try:
        c.send(build_request("POST", "/up/upload", {"Content-Length": str(len(BODY))}))
        try:
            c.sock.sendall(BODY)
        except OSError:
            return ("cut", None)
        try:
            r = c.response(30)
        except Fail:
            return ("cut", None)
        if r.status == 200:
            return ("200", r.json().get("sha256"))
        return (str(r.status), r)
    finally:
        c.close()


def download(f):
    s = socket.create_connection(("127.0.0.1", f.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    buf = b""
    try:
        s.sendall(build_request("GET", "/up/huge?bytes=%d" % len(BODY), {"Connection": "close"}))
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
            time.sleep(0.004)  # a slow reader: about 16 MiB/s at best
    except OSError:
        pass
    finally:
        s.close()
    try:
        r, _ = parse_response(buf, eof=True)
    except Fail:
        return ("cut", None)
    if r is None:
        return ("cut", None)
    if r.status == 200:
        if not r.complete:
            check(r.body == BODY[:len(r.body)], "a cut download carries wrong bytes")
            return ("cut", None)
        return ("200", sha256(r.body))
    return (str(r.status), r)


def run_capped(be, vm, extra_mib):
    cap = (vm + extra_mib * 1024) * 1024
    f = ferry_under(["prlimit", "--as=%d" % cap], **config(be))
    t0 = time.monotonic()
    res = parallel(200, lambda i: upload(f) if i % 2 else download(f), timeout=120)
    dt = time.monotonic() - t0
    f.assert_alive()
    errors = [r for r in res if isinstance(r, BaseException)]
    check(not errors, "+%d MiB: client errors: %r" % (extra_mib, errors[:3]))
    counts = {}
    for kind, v in res:
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "200":
            eq(v, BODY_SHA, "+%d MiB: sha256 of a body moved whole" % extra_mib)
        elif kind != "cut":
            # 503: Ferry's own shortage; 502: accepted for now (Ferry reports its
            # own read failing for memory as the upstream closing, see BUGS)
            check(kind in ("502", "503"), "+%d MiB: answer %s (%r)" % (extra_mib, kind, v))
            expect_response(v, status=int(kind), json={"status": int(kind)})
    log("   cap VmSize+%d MiB: %r in %.1f s" % (extra_mib, counts, dt))
    lines = [line for line in f.stderr_text().splitlines() if not line.startswith("{")]
    stack = [line for line in lines if "stack" in line]
    for line in stack:
        check("vm.max_map_count" in line, "a stack failure log line without vm.max_map_count: %r"
              % line)
    check(len(stack) <= int(dt) + 2, "%d stack failure lines in %.1f s" % (len(stack), dt))
    if counts.get("503"):
        check(any(re.search(r"stack|memory", line) for line in lines),
              "+%d MiB: 503s were answered without an error logged" % extra_mib)
    expect_response(request(f, "GET", "/ping"), status=200, what="after the capped load")
    expect_response(request(f, "POST", "/up/upload", body=b"z" * 1000), status=200,
                    what="a proxied upload after the capped load")
    f.assert_alive()
    f.stop()
    return counts


def test_capped_address_space():
    "prlimit --as at VmSize + 6 and 24 MiB: 200 concurrent 10 MiB transfers never kill Ferry"
    if is_sanitized():
        raise Skip("ASan cannot run under an address-space cap")
    be = backend_process()
    vm = warm_vmsize(be)
    log("   warmed-up VmSize %d KiB" % vm)
    for extra in (6, 24):
        run_capped(be, vm, extra)


if __name__ == "__main__":
    run(globals(), budget=300)  # about 120 s on an idle 2-core machine; the budget catches a hang
