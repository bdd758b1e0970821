#!/usr/bin/env python3
"""What an attack review of the client-facing request path (session 8)
found, against the real binary: requests pipelined behind a long answer
whose bytes end where the client's input buffer filled are all answered
(the connection stalled until client_idle, then reset). ~3 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferrytest import *  # noqa: E402,F401,F403

CONN_READ_MAX = 128 * 1024  # src/conn.h: what a client connection's input holds


def setup(**kw):
    be = backend()
    f = ferry(upstreams={"u": servers(be)},
              routes=[respond_route("ping", "/ping", body="pong\n"),
                      route("up", "/up", upstream="u", strip_prefix="/up")], **kw)
    return be, f


def pipelined_answers(port, first, req, n, pause):
    """Sends first and n copies of req in one go (a thread), reads nothing
    for `pause` seconds, then every answer: returns how many status lines
    came before the server stopped answering for 2 s, closed or reset."""
    s = socket.create_connection(("127.0.0.1", port))
    data = first + req * n
    threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
    time.sleep(pause)
    got, tail, marker = 0, b"", b"HTTP/1.1 "
    s.settimeout(2.0)
    try:
        while got < n + 1:
            d = s.recv(1 << 20)
            if not d:
                break
            got += (tail + d).count(marker)
            tail = (tail + d)[-(len(marker) - 1):]
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return got


def test_pipelined_heads_ending_where_the_input_filled():
    "requests pipelined behind a long answer, ending where the 128 KiB input filled: all answered"
    be, f = setup(timeouts={"client_idle": "10s"}, workers=1)
    # While the first answer (30 MB, not read for a while) goes out, the
    # input fills with the pipelined requests to its 128 KiB and reading
    # pauses; 128-byte requests end exactly there. They are all answered
    # without another wait, and reading must go on for the rest (it did
    # not: the connection stalled until client_idle, then reset).
    head = b"GET /ping HTTP/1.1\r\nHost: a\r\nX-Pad: "
    for size in (128, 256):
        req = head + b"p" * (size - len(head) - 4) + b"\r\n\r\n"
        eq(len(req), size, "request size")
        n = 3 * CONN_READ_MAX // size
        got = pipelined_answers(f.port, build_request("GET", "/up/huge?bytes=30000000"), req, n,
                                1.0)
        eq(got, n + 1, "answers to %d requests of %d bytes behind a 30 MB answer (%d fill the "
           "input)" % (n + 1, size, CONN_READ_MAX // size))
    f.assert_alive()


if __name__ == "__main__":
    run(globals(), budget=60)
