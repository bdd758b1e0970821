#!/usr/bin/env python3
"""Layers the build enforces (README "Layout of src/"): every module of
src/ has a rank, and an #include of a Ferry header may point to the same
rank or below, never up; the module graph has no cycle (a cycle among
modules of one rank is as bad as an upward include). A module missing
from RANKS fails, so a new file must be placed. config_*.c/h belong to the
config module.

Known violations are listed in EXCEPTIONS with their reason; an exception
that no longer occurs fails too, so the list only shrinks.

`check-layers.py --selftest` plants an upward include, a cycle and an
unranked module in copies of src/ and expects each to fail (and the copy
untouched to pass): the checker is tested like any other code."""
import os
import re
import shutil
import sys
import tempfile

RANKS = {
    # runtime
    "coro": 0, "loop": 0, "evmem": 0, "sys": 0,
    # usable by every layer: own types only, include nothing of Ferry's
    "log": 0,
    # await
    "io": 1, "io_internal": 1, "io_splice": 1, "io_idle": 1,
    # protocol
    "http1": 2, "headers": 2, "proxyproto": 2, "body": 2,
    "jwt": 2,
    # policy
    "config": 3, "route": 3, "balancer": 3, "upstream": 3,
    # tls builds its contexts from the config's tables (io sees it only as a transport)
    "tls": 3,
    "regex": 3, "registry": 3,
    "auth": 3, "auth_pool": 3,
    "ratelimit": 3, "cors": 3,
    "ratelimit_redis": 3,
    "health": 3,
    "addrset": 3, "resolve": 3,
    # flow (metrics counts per worker and reads the config: flow rank)
    "worker": 4, "conn": 4, "proxy": 4, "request": 4, "reply": 4, "tunnel": 4, "metrics": 4,
    "snapshot": 4,
    "h1side": 4,
    # process
    "main": 5, "server": 5, "listener": 5, "daemon": 5, "admin": 5,
    "diff": 5,
}
NAMES = ["runtime", "await", "protocol", "policy", "flow", "process"]

# (including module, included module): why it is still there.
EXCEPTIONS = {
}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([A-Za-z0-9_]+)\.h"', re.M)


def module(name):
    return "config" if name.startswith("config_") else name


def check(src, exceptions=None):
    exceptions = EXCEPTIONS if exceptions is None else exceptions
    errors, edges, seen, present = [], {}, set(), set()
    for fn in sorted(os.listdir(src)):
        if not fn.endswith((".c", ".h")):
            continue
        m = module(fn.rsplit(".", 1)[0])
        present.add(m)
        if m not in RANKS:
            errors.append("%s: module %r has no rank in tests/check-layers.py" % (fn, m))
            continue
        with open(os.path.join(src, fn), errors="replace") as fh:
            text = fh.read()
        for inc in INCLUDE.findall(text):
            t = module(inc)
            if t == m:
                continue
            if t not in RANKS:
                errors.append("%s: includes %s.h, a module with no rank" % (fn, inc))
                continue
            edges.setdefault(m, set()).add(t)
            if RANKS[t] > RANKS[m]:
                if (m, t) in exceptions:
                    seen.add((m, t))
                    continue
                errors.append("%s: includes %s.h: %s (%s) may not include %s (%s), a layer above"
                              % (fn, inc, m, NAMES[RANKS[m]], t, NAMES[RANKS[t]]))
    for e in sorted(set(exceptions) - seen):
        errors.append("stale exception %s -> %s: it no longer occurs; remove it" % e)
    for m in sorted(set(RANKS) - present):
        errors.append("RANKS names module %r, which src/ does not have; remove it" % m)
    # cycles, transitively (depth-first search over the module graph)
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(edges.get(n, ())):
            if state.get(t) == 1:
                errors.append("include cycle: %s" % " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return errors


def selftest(src):
    def planted(edit, exceptions=None):
        d = tempfile.mkdtemp(prefix="layers-")
        try:
            shutil.copytree(src, os.path.join(d, "src"))
            edit(os.path.join(d, "src"))
            return check(os.path.join(d, "src"), exceptions)
        finally:
            shutil.rmtree(d)

    def append(path, line):
        with open(path, "a") as fh:
            fh.write("\n" + line + "\n")

    cases = [
        ("untouched", lambda s: None, False),
        ("upward include (http1 -> proxy)",
         lambda s: append(os.path.join(s, "http1.c"), '#include "proxy.h"'), True),
        ("cycle within a rank (proxy -> conn -> proxy)",
         lambda s: append(os.path.join(s, "proxy.c"), '#include "conn.h"'), True),
        ("unranked module",
         lambda s: open(os.path.join(s, "zzz_new.c"), "w").write('#include "log.h"\n'), True),
        # an exception for an include that does not occur (planted, so the
        # case holds whether or not real exceptions remain)
        ("stale exception", lambda s: None, True,
         {**EXCEPTIONS, ("http1", "proxy"): "planted"}),
        ("a ranked module gone",
         lambda s: [os.remove(os.path.join(s, f)) for f in ("tunnel.c", "tunnel.h")], True),
    ]
    ok = True
    for what, edit, should_fail, *exc in cases:
        errs = planted(edit, exc[0] if exc else None)
        good = bool(errs) == should_fail
        ok &= good
        print("%s: %s (%s)" % ("ok" if good else "WRONG", what,
                               errs[0] if errs else "no error"))
    return ok


def main():
    src = os.path.join(os.environ.get("FERRY_SRCDIR") or
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), "src")
    if "--selftest" in sys.argv:
        return 0 if selftest(src) else 1
    errors = check(src)
    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if not errors:
        print("check-layers: %d modules ranked, no upward include, no cycle" % len(RANKS))
    # The checker's own test runs with it.
    return 1 if errors or not selftest(src) else 0


if __name__ == "__main__":
    sys.exit(main())
