"""An HTTP API that talks to the kv store. /health answers 200 only while the store answers."""
import http.server
import json
import os
import signal
import socket
import sys

KV_PORT = int(os.environ["KV_PORT"])


def kv(command):
    with socket.create_connection(("127.0.0.1", KV_PORT), timeout=1) as s:
        s.sendall((command + "\n").encode())
        return s.makefile().readline().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/health":
                body = {"status": "alive" if kv("PING") == "PONG" else "degraded"}
            else:
                hits = int(kv("GET hits").replace("NIL", "0")) + 1
                kv(f"SET hits {hits}")
                body = {"hits": hits, "schema": kv("GET schema")}
            code = 200
        except OSError as e:
            body, code = {"status": "down", "error": str(e)}, 503
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.path != "/health":  # probes would drown everything else
            print("api:", fmt % args, flush=True)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port = int(os.environ["PORT"])
print(f"api listening on http://127.0.0.1:{port}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
