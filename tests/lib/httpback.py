#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Plain-HTTP backend behind the lab's nginx (tests/lib/lab.py).

nginx terminates TLS and proxies the paths that need more than a static file
here, naming the route in the `X-Lab-Route` header: responses with any status
and headers, slow responses (a delay before the headers, then the body
dribbled a few bytes at a time), and POST capture (TLSRPT report endpoints).

Usage: httpback.py CONFIG.json [READY_FD]
CONFIG: {"listen": ["127.N.0.254", 8080], "posts_dir": DIR,
         "routes": {"ID": {"host": H, "path": P, "status": 200,
                           "content_type": "text/plain", "body_b64": "...",
                           "headers": {}, "delay": 0,
                           "dribble": {"interval": 0.5, "chunk": 1},
                           "capture": false}}}
A captured request becomes POSTS_DIR/<host>/<time>.json with method, path,
headers and body (base64).
"""

import base64
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CFG = {}
COUNTER = [0]
LOCK = threading.Lock()


def log(msg):
    sys.stderr.write("%s httpback: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-httpback"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.headers.get("X-Lab-Route", "-"), fmt % args))

    def handle_any(self):
        rid = self.headers.get("X-Lab-Route", "")
        route = CFG["routes"].get(rid)
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        if route is None:
            self.send_error(404, "no lab route %r" % rid)
            return
        if route.get("capture") or self.command == "POST":
            self.capture(route, body_in)
        delay = float(route.get("delay") or 0)
        if delay:
            time.sleep(delay)
        body = base64.b64decode(route.get("body_b64", ""))
        self.send_response(int(route.get("status", 200)))
        self.send_header("Content-Type", route.get("content_type", "text/plain"))
        for k, v in (route.get("headers") or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        dribble = route.get("dribble")
        try:
            if dribble:
                chunk = max(1, int(dribble.get("chunk", 1)))
                interval = float(dribble.get("interval", 0.5))
                for i in range(0, len(body), chunk):
                    self.wfile.write(body[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(interval)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log("client went away during the body of %s" % rid)

    def capture(self, route, body):
        with LOCK:
            COUNTER[0] += 1
            n = COUNTER[0]
        d = os.path.join(CFG["posts_dir"], route["host"])
        os.makedirs(d, exist_ok=True)
        rec = {"host": route["host"], "path": self.path, "method": self.command,
               "headers": {k: v for k, v in self.headers.items()},
               "body": base64.b64encode(body).decode(), "received_ts": time.time()}
        name = "%d-%04d" % (time.time_ns(), n)
        tmp = os.path.join(d, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f, indent=1)
        os.rename(tmp, os.path.join(d, name + ".json"))

    do_GET = do_POST = do_PUT = do_HEAD = handle_any


def main():
    global CFG
    with open(sys.argv[1]) as f:
        CFG = json.load(f)
    ready_fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
    host, port = CFG["listen"]
    try:
        ThreadingHTTPServer.allow_reuse_address = True
        ThreadingHTTPServer.daemon_threads = True
        srv = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (host, port, e))
        if ready_fd is not None:
            os.write(ready_fd, ("ERROR cannot listen on %s:%d: %s\n" % (host, port, e)).encode())
        sys.exit(1)
    log("listening on %s:%d" % (host, port))
    if ready_fd is not None:
        os.write(ready_fd, b"READY\n")
    def on_term(*_):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    try:
        srv.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    log("exiting")


if __name__ == "__main__":
    main()
