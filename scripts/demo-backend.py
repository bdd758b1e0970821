#!/usr/bin/env python3
"""A small JSON API for the demo (scripts/demo): what conf/ferry.yaml's
`app` upstream points at. Standard library only.

  GET  /api/hello          {"message": "hello from the backend", ...}
  GET  /api/items          a JSON list
  POST /api/echo           echoes the JSON body it got
  GET  /slow?s=N           answers after N seconds (default 5): while it
                           waits, Ferry keeps answering everything else
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ferry-demo-backend"

    def reply(self, status, obj):
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/api/hello":
            self.reply(200, {"message": "hello from the backend",
                             "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                             "x_request_id": self.headers.get("X-Request-Id"),
                             "via": self.headers.get("Via")})
        elif url.path == "/api/items":
            self.reply(200, [{"id": i, "name": "item %d" % i} for i in range(1, 4)])
        elif url.path == "/slow":
            seconds = float(parse_qs(url.query).get("s", ["5"])[0])
            time.sleep(min(seconds, 60))
            self.reply(200, {"slept_seconds": seconds})
        else:
            self.reply(404, {"error": "no such path on the demo backend", "path": url.path})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        try:
            self.reply(200, {"you_sent": json.loads(data or b"null")})
        except ValueError:
            self.reply(400, {"error": "body is not JSON"})

    def log_message(self, fmt, *args):
        pass


def main():
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:3000").rpartition(":")
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
