#!/usr/bin/env python3
"""bench_exec.py - sandbox create and exec latency through sandboxd, and the
same exec done with `runc exec` into the same container, with the ratios
and the targets of docs/performance.md.

  python3 bench/bench_exec.py [--n 200] [--create-n 20] [--runc-n 50] [--json]
      starts its own broker (tests/e2e/harness.Broker: temp state dir,
      random port; needs root and the cached image), as `make bench` does.
  python3 bench/bench_exec.py --url http://127.0.0.1:8080 --token T
      [--state-dir /var/lib/sandboxd]
      measures a running broker; the runc comparison needs its state dir.

Targets: exec p50 <= 0.3 x runc exec p50 and < 5 ms; create p50 < 150 ms.
--check exits 1 when a target is missed. Python 3 standard library only.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402
from benchlib import Client, StderrTap, start_broker, summary  # noqa: E402

TARGET_EXEC_MS = 5.0
TARGET_EXEC_RATIO = 0.3
TARGET_CREATE_MS = 150.0


def bench_create(c, n, prefix):
    samples = []
    for i in range(n):
        sid = "%s-c%d" % (prefix, i)
        t0 = time.perf_counter()
        c.must("POST", "/v1/sandboxes", {"id": sid})
        samples.append(time.perf_counter() - t0)
        c.must("DELETE", "/v1/sandboxes/" + sid, want=(200,))
    return samples


def bench_exec(c, sid, n, warmup):
    path = "/v1/sandboxes/%s/exec" % sid
    for _ in range(warmup):
        c.must("POST", path, {"command": "true"}, want=(200,))
    c.reconnects = 0
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = c.must("POST", path, {"command": "true"}, want=(200,))
        samples.append(time.perf_counter() - t0)
        if r.get("exit_code") != 0:
            raise RuntimeError("exec true -> %s" % r)
    return samples


def bench_runc(state_dir, cid, n, warmup=3):
    cmd = [harness.RUNTIME, "--root", os.path.join(state_dir, "runc"), "exec", cid, "true"]
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError("%s -> %d: %s" % (" ".join(cmd), p.returncode, p.stderr.decode(errors="replace")))
        if i >= warmup:
            samples.append(dt)
    return samples


def run(args, url, token, state_dir):
    c = Client(url, token)
    prefix = "bench%d" % os.getpid()
    res = {"url": url, "results": {}}
    res["results"]["create"] = summary(bench_create(c, args.create_n, prefix))

    sid = prefix + "-exec"
    before = set(harness.runc_list(state_dir)) if state_dir else set()
    c.must("POST", "/v1/sandboxes", {"id": sid})
    try:
        res["results"]["exec"] = summary(bench_exec(c, sid, args.n, args.warmup))
        res["keepalive_reconnects"] = c.reconnects
        cid = None
        if state_dir:
            new = set(harness.runc_list(state_dir)) - before
            cid = next(iter(new)) if len(new) == 1 else None
            if cid is None:
                res["runc_error"] = "could not identify the sandbox's container (new: %s)" % sorted(new)
        if cid:
            res["container"] = cid
            res["results"]["runc_exec"] = summary(bench_runc(state_dir, cid, args.runc_n))
    finally:
        c.call("DELETE", "/v1/sandboxes/" + sid)

    r = res["results"]
    ratio = r["exec"]["p50_ms"] / r["runc_exec"]["p50_ms"] if "runc_exec" in r else None
    res["exec_vs_runc_p50_ratio"] = ratio
    res["targets"] = {
        "exec_p50_under_5ms": r["exec"]["p50_ms"] < TARGET_EXEC_MS,
        "exec_ratio_at_most_0.3": (ratio <= TARGET_EXEC_RATIO) if ratio is not None else None,
        "create_p50_under_150ms": r["create"]["p50_ms"] < TARGET_CREATE_MS,
    }
    return res


def print_table(res):
    r = res["results"]
    print("sandboxd benchmark against %s" % res["url"])
    print()
    print("%-38s %6s %10s %10s %10s" % ("operation", "n", "p50 ms", "p95 ms", "max ms"))
    rows = [("create sandbox (POST /v1/sandboxes)", "create"),
            ("exec `true` via broker (keep-alive)", "exec"),
            ("runc exec `true`, same container", "runc_exec")]
    for label, key in rows:
        if key in r:
            s = r[key]
            print("%-38s %6d %10.2f %10.2f %10.2f" % (label, s["n"], s["p50_ms"], s["p95_ms"], s["max_ms"]))
        else:
            print("%-38s %6s %10s %10s %10s" % (label, "-", "n/a", "n/a", "n/a"))
    print()
    if res.get("runc_error"):
        print("runc comparison: %s" % res["runc_error"])
    ratio = res["exec_vs_runc_p50_ratio"]
    print("ratio exec p50 / runc exec p50: %s" % ("%.3f" % ratio if ratio is not None else "n/a"))
    if "runc_exec" in r:
        print("broker exec is %.1fx faster than runc exec (p50)" % (r["runc_exec"]["p50_ms"] / r["exec"]["p50_ms"]))
    print("keep-alive reconnects during the exec run: %s" % res.get("keepalive_reconnects"))
    print()

    def mark(v):
        return "n/a" if v is None else ("met" if v else "MISSED")

    t = res["targets"]
    print("%-32s %s" % ("target exec p50 < %.0f ms:" % TARGET_EXEC_MS, mark(t["exec_p50_under_5ms"])))
    print("%-32s %s" % ("target exec <= %.1fx runc exec:" % TARGET_EXEC_RATIO, mark(t["exec_ratio_at_most_0.3"])))
    print("%-32s %s" % ("target create p50 < %.0f ms:" % TARGET_CREATE_MS, mark(t["create_p50_under_150ms"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="exec samples (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="exec warmup calls (default 10)")
    ap.add_argument("--create-n", type=int, default=20, help="create samples (default 20)")
    ap.add_argument("--runc-n", type=int, default=50, help="runc exec samples (default 50)")
    ap.add_argument("--url", help="a running broker, e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", default=os.environ.get("SANDBOXD_TOKEN"), help="bearer token for --url")
    ap.add_argument("--state-dir", help="the running broker's state dir (for the runc comparison)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()

    broker = None
    if args.url:
        url, token, state_dir = args.url, args.token, args.state_dir
    else:
        quiet = StderrTap()
        broker = start_broker("bench_exec.py", quiet)
        url, token, state_dir = broker.url, broker.tokens["alice"], broker.state
    try:
        res = run(args, url, token, state_dir)
    finally:
        if broker is not None:
            broker.teardown()
    if broker is not None and quiet.failed:
        res["harness_failures"] = quiet.failed
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print_table(res)
    if args.check and not all(v for v in res["targets"].values() if v is not None):
        sys.exit(1)
    if res.get("harness_failures"):
        sys.exit(1)


if __name__ == "__main__":
    main()
