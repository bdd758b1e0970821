#!/usr/bin/env python3
"""Shared rate limits, the slow parts (issue 17, item 2): a store named by
a host name (resolved with evdns, not a blocking lookup) works; after a
reload to another store, the old store's connections are closed once no
request has used them for 30 s (any unused connection is; the next request
opens it again and waits for the connect rather than falling back). Skipped only when redis-server is not
installed. About 40 s."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403
from test_redis_ratelimit import Redis, limited_routes  # noqa: E402


def connected_clients(r):
    "Redis's connected_clients, less the connection asking"
    with socket.create_connection(("127.0.0.1", r.port), timeout=2) as s:
        s.sendall(b"INFO clients\r\n")
        data = b""
        deadline = time.monotonic() + 2
        while b"connected_clients:" not in data or not data.endswith(b"\r\n"):
            if time.monotonic() > deadline:
                break
            data += s.recv(4096)
    for line in data.decode().splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1]) - 1
    raise Fail("no connected_clients in INFO: %r" % data)


def test_host_name_then_reload_closes_the_old_store():
    "redis://localhost:PORT resolves; a reload to another store closes the old one when unused"
    a = Redis().start()
    b = Redis().start()
    f = ferry(workers=1, routes=limited_routes("redis://localhost:%d/0" % a.port, "n-"))
    c = Client(f.port)
    # while the name resolves, requests fall back at once (deny: 503)
    wait_until(lambda: c.request("GET", "/small").status == 200, 10.0,
               what="the store reached through its host name")
    st = [c.request("GET", "/small").status for _ in range(6)]
    eq(st, [200] * 4 + [429] * 2, "the named store decides (5 tokens, 1 taken)")
    eq(connected_clients(a), 1, "one connection from the one worker")
    f.reload({"routes": limited_routes(b.url(), "n-")})
    st = [c.request("GET", "/small").status for _ in range(6)]
    eq(st, [200] * 5 + [429], "the new store decides after the reload")
    c.close()
    eq(connected_clients(a), 1, "the old store's connection is still open right after")
    wait_until(lambda: connected_clients(a) == 0, 45.0, interval=1.0,
               what="the old store's connection closed (unused for 30 s)")
    # every unused connection goes (the new store's too); the next request
    # opens one again and waits for it rather than falling back
    c = Client(f.port)
    eq(c.request("GET", "/small").status, 429, "the new store decides again (bucket drained)")
    c.close()
    eq(connected_clients(b), 1, "the new store's connection is open again")
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=120.0)
