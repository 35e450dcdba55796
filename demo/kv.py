"""A tiny line-based key-value store over TCP, standing in for a database.

Protocol: `SET key value` -> `OK`, `GET key` -> value or `NIL`, `PING` -> `PONG`.
"""
import os
import signal
import socketserver
import sys
import time

store = {}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            parts = raw.decode().strip().split(" ", 2)
            cmd = parts[0].upper() if parts else ""
            if cmd == "PING":
                reply = "PONG"
            elif cmd == "SET" and len(parts) == 3:
                store[parts[1]] = parts[2]
                reply = "OK"
            elif cmd == "GET" and len(parts) == 2:
                reply = store.get(parts[1], "NIL")
            else:
                reply = "ERR unknown command"
            self.wfile.write((reply + "\n").encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    port = int(os.environ["PORT"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("loading data...", flush=True)
    time.sleep(0.5)  # pretend to warm up, so dependents visibly wait
    with Server(("127.0.0.1", port), Handler) as server:
        print(f"ready to accept connections on port {port}", flush=True)
        server.serve_forever()


main()
