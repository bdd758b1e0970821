#!/usr/bin/env python3
"""Reload under load: 20 reloads, each changing a route or an upstream
(with active health checks on every upstream), while wrk keeps 50
keep-alive connections busy through ferry. wrk must see
no socket error (connect, read, write, timeout: a reset connection is a
read error) and no non-2xx answer. Prints the reload times and RSS before
and after. ~30 s."""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
import ferrytest  # noqa: E402

RELOADS = 20


# Health checks on every upstream: checkers follow each reload (a server
# added to "a" starts down until its first pass, removed: no more checks).
HC = {"path": "/fast", "interval": "200ms", "timeout": "500ms"}


def _config(i, a, b):
    ups = {"a": servers(a, health_check=HC), "b": servers(b, health_check=HC)}
    if i % 2:
        ups["a"] = servers(a, b, health_check=HC)  # a server added to an upstream
    up = "a" if i % 4 < 2 else "b"  # the route moves between upstreams
    hdr = {"set": {"X-Generation": str(i)}}
    return {"upstreams": ups,
            "routes": [route("main-%d" % (i % 3), "/", upstream=up, response_headers=hdr)]}


def test_reloads_under_wrk():
    """20 reloads under wrk -c50: zero errors, zero non-2xx."""
    if not shutil.which("wrk"):
        raise Skip("wrk is not installed")
    a = backend_process()
    b = backend_process()
    f = ferry(**_config(0, a, b))
    # servers start down until their first health check passes
    wait_until(lambda: request(f, "GET", "/fast").status == 200, timeout=5, what="warm-up")
    p = subprocess.Popen(["wrk", "-t2", "-c50", "-d14s", "--latency", f.url("/fast")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ferrytest._register(p)
    time.sleep(2)
    rss_before = f.rss_kb()
    times = []
    for i in range(1, RELOADS + 1):
        line = f.reload(_config(i, a, b))
        times.append(float(re.search(r"applied in ([0-9.]+) ms", line).group(1)))
        time.sleep(0.45)
    rss_after = f.rss_kb()
    out, _ = p.communicate(timeout=40)
    out = out.decode("utf-8", "replace")
    log(out)
    m = re.search(r"(\d+) requests in", out)
    check(m and int(m.group(1)) > 1000, "wrk made requests: %s" % out)
    check("Socket errors" not in out, "wrk saw socket errors:\n%s" % out)
    check("Non-2xx" not in out, "wrk saw non-2xx answers:\n%s" % out)
    times.sort()
    log("reload times (ms): median %.1f, max %.1f; RSS %d kB before, %d kB after 20 reloads"
        % (times[len(times) // 2], times[-1], rss_before, rss_after))
    f.assert_alive()
    # Per-reload leaks would add up; allocator noise under load does not reach this.
    check(rss_after < rss_before + 32 * 1024, "RSS grew from %d to %d kB" % (rss_before, rss_after))


if __name__ == "__main__":
    run(globals(), budget=120)
