"""A background worker that polls the API and reports what it sees."""
import json
import os
import signal
import sys
import time
import urllib.request

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
url = os.environ["API_URL"]
while True:
    with urllib.request.urlopen(url, timeout=2) as r:
        print("worker saw", json.load(r), flush=True)
    time.sleep(2)
