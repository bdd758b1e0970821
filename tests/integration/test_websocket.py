#!/usr/bin/env python3
"""WebSocket through Ferry (issue 6, point 4), with a real client and server
(Debian's python3-websockets): echo, ping/pong both ways, a 16 MiB message
under bounded memory, close handshakes from either side, the tunnel's idle
timeout (timeouts.tunnel_idle), open tunnels visible as connections and
holding no coroutine, and a non-101 answer to an Upgrade request leaving
the connection in HTTP mode (the next pipelined request is parsed as a
request). ~15 s."""
import os
import sys

# Debian's python3-websockets is installed for /usr/bin/python3; a python
# from elsewhere (pyenv) runs this file again with Debian's.
try:
    import websockets
    import websockets.exceptions
except ImportError:
    _deb = "/usr/bin/python3"
    if (os.path.exists(_deb) and not os.environ.get("FERRY_WS_REEXEC")
            and os.path.realpath(sys.executable) != os.path.realpath(_deb)):
        os.environ["FERRY_WS_REEXEC"] = "1"
        os.execv(_deb, [_deb] + sys.argv)
    websockets = None

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

WS_OPTS = dict(max_size=None, ping_interval=None, open_timeout=5, close_timeout=5)


# --- a websockets server in its own thread and asyncio loop ---------------------------------
class WSBackend:
    """A WebSocket server on an ephemeral loopback port. The path picks the
    behaviour: /echo (default) echoes every message; /server-ping pings the
    client, then sends "pong received"; /server-close?code=N closes with N;
    /silent never sends. Seen request heads are kept in self.heads."""

    def __init__(self):
        self.heads = []
        self.close_codes = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise Fail("the websockets server did not start")
        self.address = "127.0.0.1:%d" % self.port

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            websockets.serve(self._handler, "127.0.0.1", 0, max_size=None, ping_interval=None,
                             close_timeout=5))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()

    async def _handler(self, ws, path=None):
        path = ws.path
        self.heads.append((path, dict(ws.request_headers.raw_items())))
        try:
            if path.endswith("/server-ping"):
                waiter = await ws.ping(b"from-server")
                await asyncio.wait_for(waiter, 5)
                await ws.send("pong received")
                await ws.wait_closed()
            elif "/server-close" in path:
                code = int(path.split("code=")[1]) if "code=" in path else 1000
                await ws.close(code, "server bye")
            elif path.endswith("/silent"):
                await ws.wait_closed()
            else:
                async for msg in ws:
                    await ws.send(msg)
        finally:
            self.close_codes.append(ws.close_code)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def ws_ferry(be, **kw):
    return ferry(upstreams={"ws": servers(be.address)},
                 routes=[route("ws", "/ws/", upstream="ws", strip_prefix="/ws")], **kw)


def ws_url(f, path="/ws/echo"):
    return "ws://127.0.0.1:%d%s" % (f.port, path)


def run_async(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connections(f):
    return f.status()["connections"]


# --- tests -------------------------------------------------------------------------------------
def test_echo():
    "text and binary messages echo through the tunnel; the backend saw the upgrade"
    with WSBackend() as be:
        f = ws_ferry(be)

        async def go():
            async with websockets.connect(ws_url(f), **WS_OPTS) as ws:
                for msg in ("hello", "", "é" * 1000, b"\x00\x01\xff" * 100):
                    await ws.send(msg)
                    got = await asyncio.wait_for(ws.recv(), 5)
                    eq(got, msg, "echoed message")
        run_async(go())
        path, head = be.heads[0]
        eq(path, "/echo", "path seen by the backend (prefix stripped)")
        eq(head.get("Upgrade", "").lower(), "websocket", "Upgrade forwarded")
        check("upgrade" in head.get("Connection", "").lower(),
              "Connection: upgrade forwarded (got %r)" % head.get("Connection"))
        check(head.get("X-Forwarded-For") == "127.0.0.1", "X-Forwarded-For: %r" % head)
        e = f.wait_access(lambda e: e.get("status") == 101, what="the 101 upgrade")
        eq(e.get("path"), "/ws/echo", "access-log path of the upgrade")


def test_ping_pong():
    "client pings get pongs; a server ping gets the client's pong"
    with WSBackend() as be:
        f = ws_ferry(be)

        async def go():
            async with websockets.connect(ws_url(f), **WS_OPTS) as ws:
                for i in range(5):
                    waiter = await ws.ping(b"ping-%d" % i)
                    await asyncio.wait_for(waiter, 5)
            async with websockets.connect(ws_url(f, "/ws/server-ping"), **WS_OPTS) as ws:
                eq(await asyncio.wait_for(ws.recv(), 5), "pong received", "server-side ping")
        run_async(go())


def test_16mib_message():
    "a 16 MiB message each way arrives intact; Ferry's RSS grows far less than that"
    with WSBackend() as be:
        f = ws_ferry(be)
        rss0 = f.rss_kb()
        data = os.urandom(16 * MiB)
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], f.rss_kb())
                except Exception:
                    pass
                time.sleep(0.01)
        t = threading.Thread(target=sample, daemon=True)
        t.start()

        async def go():
            async with websockets.connect(ws_url(f), **WS_OPTS) as ws:
                t0 = time.monotonic()
                await ws.send(data)
                got = await asyncio.wait_for(ws.recv(), 30)
                return got, time.monotonic() - t0
        try:
            got, dt = run_async(go())
        finally:
            stop.set()
            t.join(2)
        eq(len(got), len(data), "echoed length")
        check(hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "echo differs")
        growth = peak[0] - rss0
        log("   16 MiB round trip in %.2fs; ferry RSS peak growth %d KiB" % (dt, growth))
        if not is_sanitized():
            check(growth < 8 * 1024, "ferry RSS grew %d KiB for a 16 MiB message: buffered "
                  "instead of spliced with watermarks" % growth)


def test_close_handshake():
    "a client close and a server close complete their handshakes; the connection then ends"
    with WSBackend() as be:
        f = ws_ferry(be)
        fd0 = f.fd_count()
        conn0 = connections(f)

        async def go():
            ws = await websockets.connect(ws_url(f), **WS_OPTS)
            await ws.send("x")
            await ws.recv()
            await ws.close(1000, "client bye")
            eq(ws.close_code, 1000, "close code the client got back")
            ws = await websockets.connect(ws_url(f, "/ws/server-close?code=4001"), **WS_OPTS)
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise Fail("a message instead of the server's close")
            except websockets.exceptions.ConnectionClosed as e:
                eq(e.code, 4001, "server close code seen by the client")
                eq(e.reason, "server bye", "server close reason")
            await ws.wait_closed()
        run_async(go())
        wait_until(lambda: 1000 in be.close_codes and 4001 in be.close_codes, 5,
                   what="both closes seen by the server (got %r)" % be.close_codes)
        wait_until(lambda: connections(f) <= conn0 and f.fd_count() <= fd0, 5,
                   what="ferry's connections and descriptors back to baseline")


def test_tunnel_is_a_connection_without_coroutine():
    "20 open tunnels count as connections and hold no coroutine; closing them frees all"
    with WSBackend() as be:
        f = ws_ferry(be)
        fd0, coro0, conn0 = f.fd_count(), f.live_coroutines(), connections(f)

        async def go():
            socks = [await websockets.connect(ws_url(f), **WS_OPTS) for _ in range(20)]
            for i, ws in enumerate(socks):
                await ws.send("m%d" % i)
                eq(await asyncio.wait_for(ws.recv(), 5), "m%d" % i, "echo on tunnel %d" % i)
            await asyncio.sleep(0.2)
            st = f.status()
            check(st["connections"] >= conn0 + 20, "open tunnels not counted as connections: %r"
                  % st)
            eq(st["live_coroutines"], coro0, "live coroutines while 20 tunnels are open")
            for ws in socks:
                await ws.close()
        run_async(go())
        f.wait_baseline(fd0, coro0)
        wait_until(lambda: connections(f) <= conn0, 5, what="connections back to baseline")


def test_idle_timeout():
    "timeouts.tunnel_idle: 1s closes a silent tunnel after about 1 s, not a busy one"
    with WSBackend() as be:
        f = ws_ferry(be, timeouts={"tunnel_idle": "1s"})

        async def busy():
            async with websockets.connect(ws_url(f), **WS_OPTS) as ws:
                for i in range(8):  # 2.4 s of traffic, a message every 300 ms
                    await ws.send("tick %d" % i)
                    eq(await asyncio.wait_for(ws.recv(), 5), "tick %d" % i, "busy tunnel echo")
                    await asyncio.sleep(0.3)

        async def silent():
            async with websockets.connect(ws_url(f, "/ws/silent"), **WS_OPTS) as ws:
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    raise Fail("a message on a silent tunnel")
                except websockets.exceptions.ConnectionClosed:
                    pass
                except asyncio.TimeoutError:
                    raise Fail("a silent tunnel still open after 5 s (tunnel_idle 1s)")
                return time.monotonic() - t0
        run_async(busy())
        dt = run_async(silent())
        log("   silent tunnel closed after %.2fs" % dt)
        check(0.8 <= dt <= 2.5, "silent tunnel closed after %.2fs, expected about 1 s" % dt)


def test_non_101_stays_http():
    "an Upgrade request answered 403 or 200 leaves the connection in HTTP mode"
    be = backend()
    f = ferry(upstreams={"u": servers(be)}, routes=[route("up", "/up/", upstream="u",
                                                          strip_prefix="/up")])
    up_hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    for code in (403, 200, 426):
        c = Client(f.port)
        try:
            c.send(build_request("GET", "/up/status?code=%d" % code, up_hdrs) +
                   build_request("GET", "/up/echo?second=1"))
            r1 = c.response(5)
            eq(r1.status, code, "answer to the upgrade request")
            check((r1.header("Upgrade") or "") == "", "Upgrade in a %d answer" % code)
            r2 = c.response(5)
            expect_response(r2, status=200, json={"path": "/echo", "query": {"second": ["1"]}},
                            what="pipelined request after a %d to an upgrade" % code)
            check(not any(n.lower() == "upgrade" for n, _ in r2.json()["headers"]),
                  "the second request carried an Upgrade upstream")
        finally:
            c.close()
    first = [r for r in be.requests if r.path == "/status"]
    check(first and (first[0].header("Upgrade") or "").lower() == "websocket",
          "Upgrade was not forwarded to the backend")


if __name__ == "__main__":
    if websockets is None:
        print("SKIP: python3-websockets is not installed (apt-get install python3-websockets)")
        sys.exit(77)
    run(globals(), budget=120)
