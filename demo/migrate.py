"""A one-shot task: write the schema version into the store, then exit 0."""
import os
import socket

with socket.create_connection(("127.0.0.1", int(os.environ["KV_PORT"])), timeout=2) as s:
    s.sendall(b"SET schema v3\n")
    assert s.makefile().readline().strip() == "OK"
print("migrated schema to v3")
