#!/usr/bin/env python3
"""test_cli.py - the daemon's command line, config file and start-up refusals.

What an operator notices: a broker without tokens must not listen beyond
loopback, a bad config file or tokens file stops it with a message naming
the problem, and with no tokens on loopback every caller is tenant
'default'."""

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

LISTEN_RE = re.compile(rb"sandboxd listening on http://127\.0\.0\.1:(\d+)")


def run_broker(args, tmp, timeout=10):
    """Start the broker with args; return (proc, log path)."""
    log = os.path.join(tmp, "broker-%d.log" % time.monotonic_ns())
    f = open(log, "wb")
    proc = subprocess.Popen([harness.BIN] + args, stdout=f, stderr=subprocess.STDOUT)
    f.close()
    return proc, log


def wait_exit(proc, timeout=10):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def base_args(tmp):
    return ["--state-dir", os.path.join(tmp, "state"), "--image-dir", harness.IMAGE_DIR,
            "--agent-path", os.path.abspath(harness.AGENT),
            "--kernel-lib-dir", os.path.abspath(harness.KERNEL_LIB)]


def main():
    harness.require_ready()
    t = harness.Tap()
    tmp = tempfile.mkdtemp(prefix="sandboxd-cli-")
    try:
        # 1. No tokens file: only loopback.
        proc, log = run_broker(["--listen", "0.0.0.0:0"] + base_args(tmp), tmp)
        rc = wait_exit(proc)
        t.ok(rc is not None and rc != 0, "without tokens, listening on 0.0.0.0 is refused (rc=%r)" % rc)
        t.ok("tokens" in read(log), "the refusal says a tokens file is needed", read(log))

        # 2. No tokens on loopback: served, every caller is tenant 'default'.
        proc, log = run_broker(["--listen", "127.0.0.1:0"] + base_args(tmp), tmp)
        port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and port is None and proc.poll() is None:
            m = LISTEN_RE.search(open(log, "rb").read())
            if m:
                port = int(m.group(1))
            time.sleep(0.05)
        t.ok(port is not None, "without tokens the broker serves on 127.0.0.1", read(log))
        if port:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/v1/sandboxes")
            r = c.getresponse()
            body = json.loads(r.read() or b"null")
            t.eq(r.status, 200, "no Authorization header needed in loopback-only mode")
            t.eq(body, {"sandboxes": []}, "an empty list for tenant 'default'")
            c.request("GET", "/v1/sandboxes", headers={"Authorization": "Bearer anything-at-all-here"})
            r = c.getresponse()
            r.read()
            t.eq(r.status, 200, "any token is tenant 'default' in loopback-only mode")
            c.close()
        proc.terminate()
        t.eq(wait_exit(proc), 0, "SIGTERM stops the broker with status 0")

        # 3. Config file errors name the file and line.
        conf = os.path.join(tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("# comment\nlisten = 127.0.0.1:0\nmax_sandboxes_per_tenantt = 3\n")
        proc, log = run_broker(["--config", conf] + base_args(tmp), tmp)
        rc = wait_exit(proc)
        t.eq(rc, 2, "an unknown config key stops the broker with status 2")
        t.ok("bad.conf:3" in read(log) and "max_sandboxes_per_tenantt" in read(log),
             "the message names the file, line and key", read(log))

        with open(conf, "w") as f:
            f.write("max_pids = lots\n")
        proc, log = run_broker(["--config", conf] + base_args(tmp), tmp)
        t.eq(wait_exit(proc), 2, "a non-numeric limit stops the broker")
        t.ok("max_pids" in read(log), "and names the setting", read(log))

        # 4. Tokens file checks.
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("short alice\n")
        proc, log = run_broker(["--listen", "127.0.0.1:0", "--tokens", tokens] + base_args(tmp), tmp)
        t.ok(wait_exit(proc) not in (None, 0), "a token shorter than 16 characters is refused")
        t.ok("tokens:1" in read(log), "the message names the tokens file line", read(log))

        with open(tokens, "w") as f:
            f.write("0123456789abcdef0123 alice\n")
        os.chmod(tokens, 0o666)
        proc, log = run_broker(["--listen", "127.0.0.1:0", "--tokens", tokens] + base_args(tmp), tmp)
        t.ok(wait_exit(proc) not in (None, 0), "a world-writable tokens file is refused")
        t.ok("world-writable" in read(log), "with a message saying why", read(log))

        # 5. Usage.
        r = subprocess.run([harness.BIN, "--help"], capture_output=True, timeout=10)
        t.eq(r.returncode, 0, "--help exits 0")
        t.ok(b"--state-dir" in r.stdout and b"--tokens" in r.stdout, "--help lists the options")
        r = subprocess.run([harness.BIN, "--no-such-option"], capture_output=True, timeout=10)
        t.eq(r.returncode, 2, "an unknown option exits 2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
