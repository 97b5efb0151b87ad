"""benchlib.py - what the benchmarks share: nearest-rank percentiles, a JSON
client over one keep-alive HTTP/1.1 connection, and a harness Tap that
reports to stderr so that stdout holds only the table or the JSON.

Python 3 standard library only (it also runs under Debian's /usr/bin/python3).
"""

import http.client
import json
import math
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402


def pct(samples, p):
    """Nearest-rank percentile of samples (seconds) in milliseconds."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k] * 1000.0


def summary(samples, high=95):
    """n, p50, p<high>, min and max of samples (seconds), in milliseconds."""
    return {"n": len(samples), "p50_ms": pct(samples, 50), "p%d_ms" % high: pct(samples, high),
            "min_ms": pct(samples, 0), "max_ms": pct(samples, 100)}


class Client:
    """Minimal JSON client over one keep-alive HTTP/1.1 connection; counts
    how often it had to reconnect (a benchmark must not pay for that)."""

    def __init__(self, url, token):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.reconnects = -1
        self.sock = None

    def call(self, method, path, body=None):
        h = {"Authorization": "Bearer " + self.token} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=h)
                if self.conn.sock is not self.sock:
                    self.sock = self.conn.sock
                    self.reconnects += 1
                r = self.conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed the kept-alive connection: reconnect once
                self.conn.close()
                self.sock = None
                if attempt:
                    raise
        payload = r.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        if r.status >= 400 or r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.sock = None
        return r.status, parsed

    def must(self, method, path, body=None, want=(200, 201)):
        status, parsed = self.call(method, path, body)
        if status not in want:
            raise RuntimeError("%s %s %s -> %s %s" % (method, path, json.dumps(body)[:200], status, parsed))
        return parsed


class StderrTap(harness.Tap):
    """The harness's own assertions (broker start, teardown checks) go to
    stderr, so that stdout holds only the table or the JSON."""

    def ok(self, cond, desc, diag=None):
        self.n += 1
        if not cond:
            self.failed += 1
            sys.stderr.write("bench: FAILED: %s\n" % desc)
            if diag is not None:
                self.diag(diag)
        return bool(cond)

    def diag(self, text):
        sys.stderr.write(str(text) + "\n")


def start_broker(script, tap, name="bench broker", config=None):
    """Start a broker of our own (tests/e2e/harness.Broker: temporary state
    dir, random port, tenants alice and bob). Exits with a message when not
    root, when the image is missing, or when the broker does not start."""
    if os.geteuid() != 0:
        sys.exit("%s: starting a broker needs root (or use --url)" % script)
    if not os.path.isdir(os.path.join(harness.IMAGE_DIR, "current", "rootfs")):
        sys.exit("%s: no image in %s; run kernels/build-image.sh" % (script, harness.IMAGE_DIR))
    broker = harness.Broker(tap, config=config, name=name)
    if not broker.start():
        sys.stderr.write(broker.log_tail() + "\n")
        broker.force_clean()
        sys.exit("%s: %s did not start" % (script, name))
    return broker
