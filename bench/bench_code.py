#!/usr/bin/env python3
"""bench_code.py - the code interpreter's latencies through sandboxd, next to
jupyter_client talking directly to an IPython kernel on the host, with the
targets of issue 3 / docs/performance.md.

  python3 bench/bench_code.py [--n 200] [--warmup 20] [--ctx-n 10]
                              [--cold-n 5] [--first-n 10] [--json] [--check]

In one run:
  (a) runCode `1+1` over one keep-alive HTTP connection against a warm
      Python context (n after warm-up), p50/p99;
  (b) jupyter_client BlockingKernelClient.execute(`1+1`) until both the
      execute_reply and iopub status idle arrived, against an IPython kernel
      on the host started by KernelManager (transport ipc), n after warm-up;
      target (a)/(b) p50 <= 0.75;
  (c) createCodeContext from the warm pool: POST contexts {language:
      python}, only the POST timed, each deleted after and the pool left to
      refill between samples; target p50 <= 20 ms;
  (d) cold createCodeContext: a second broker with warm_kernels_python = 0,
      against a bare KernelManager.start_kernel() + wait_for_ready() on the
      host; target (d) p50 <= 1.1 x the bare start p50;
  (e) new sandbox + first runCode result (POST /v1/sandboxes, then POST code
      `1+1`) with the warm sandbox pool on, the pool refilled between
      samples; target p50 <= 300 ms.

It starts its own brokers (tests/e2e/harness.Broker: temp state dir, random
port; needs root and the cached image). The broker side is standard library
only. (b) and the bare kernel start need Debian's python3-jupyter-client and
python3-ipykernel under /usr/bin/python3 (the python3 on PATH may be another
interpreter): this script runs that part as a child
`/usr/bin/python3 bench_code.py --host-helper`, and when it cannot, says so
and reports those rows and ratios as n/a. --check exits 1 when a target is
missed (or cannot be judged).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_PYTHON = os.environ.get("BENCH_HOST_PYTHON", "/usr/bin/python3")

TARGET_RUN_RATIO = 0.75
TARGET_WARM_CTX_MS = 20.0
TARGET_COLD_RATIO = 1.1
TARGET_FIRST_RUN_MS = 300.0


# --------------------------------------------------------------------------
# Host side: jupyter_client against a local IPython kernel (run under
# /usr/bin/python3 as a child process; prints one JSON object)
# --------------------------------------------------------------------------


def host_helper(args):
    import tempfile

    from jupyter_client import KernelManager

    tmp = tempfile.mkdtemp(prefix="bench-code-kernels-")
    out = {"python": sys.executable, "versions": {}}
    try:
        import ipykernel
        import jupyter_client
        out["versions"] = {"jupyter_client": jupyter_client.__version__, "ipykernel": ipykernel.__version__}
    except Exception:  # noqa: BLE001 - informative only
        pass

    def manager(i):
        km = KernelManager(kernel_name="python3")
        km.transport = "ipc"
        km.ip = os.path.join(tmp, "k%d" % i)
        km.connection_file = os.path.join(tmp, "k%d.json" % i)
        return km

    def wait_reply_and_idle(kc, msg_id):
        while True:
            m = kc.get_shell_msg(timeout=30)
            if m["parent_header"].get("msg_id") == msg_id:
                reply = m
                break
        while True:
            m = kc.get_iopub_msg(timeout=30)
            if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                    and m["content"].get("execution_state") == "idle"):
                return reply

    # (b) execute round trips
    km = manager(0)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        for _ in range(args.warmup):
            wait_reply_and_idle(kc, kc.execute("1+1"))
        samples = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            msg_id = kc.execute("1+1")
            reply = wait_reply_and_idle(kc, msg_id)
            samples.append(time.perf_counter() - t0)
            if reply["content"].get("status") != "ok":
                raise RuntimeError("execute 1+1 -> %s" % reply["content"])
        out["execute"] = samples
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    # bare kernel starts
    starts = []
    for i in range(args.cold_n):
        km = manager(i + 1)
        t0 = time.perf_counter()
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            starts.append(time.perf_counter() - t0)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    out["start"] = starts
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


def run_host_part(args):
    """(result dict, None) or (None, reason)."""
    if not os.access(HOST_PYTHON, os.X_OK):
        return None, "%s not found: the jupyter_client comparison needs Debian's python3" % HOST_PYTHON
    probe = subprocess.run([HOST_PYTHON, "-c", "import jupyter_client, ipykernel, zmq"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        return None, ("%s cannot import jupyter_client/ipykernel (apt-get install python3-jupyter-client "
                      "python3-ipykernel): %s" % (HOST_PYTHON, (probe.stderr.strip().splitlines() or ["?"])[-1]))
    cmd = [HOST_PYTHON, os.path.abspath(__file__), "--host-helper", "--n", str(args.n), "--warmup",
           str(args.warmup), "--cold-n", str(args.cold_n)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return None, "host helper failed (exit %d): %s" % (p.returncode, p.stderr.strip()[-2000:])
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, "host helper printed no JSON: %r" % p.stdout[-500:]


# --------------------------------------------------------------------------
# Broker side
# --------------------------------------------------------------------------


def main_text(ex):
    for r in (ex or {}).get("results") or []:
        if r.get("is_main_result"):
            return r.get("text")
    return None


def check_two(ex, what):
    if main_text(ex) != "2" or ex.get("error") is not None:
        raise RuntimeError("%s: `1+1` did not answer 2: %s" % (what, json.dumps(ex)[:500]))


def bench_run(c, sid, n, warmup, refill_s):
    """(a) runCode 1+1 on a warm context over keep-alive. Taking the context
    makes the pool start a kernel in the background; measuring before that
    settles would time the refill's CPU use (runs then take ~45 ms on 2
    cores), so wait refill_s first."""
    ctx = c.must("POST", "/v1/sandboxes/%s/contexts" % sid, {"language": "python"})["id"]
    time.sleep(refill_s)
    path = "/v1/sandboxes/%s/code" % sid
    body = {"code": "1+1", "context_id": ctx}
    for _ in range(warmup):
        check_two(c.must("POST", path, body, want=(200,)), "warm-up")
    c.reconnects = 0
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        ex = c.must("POST", path, body, want=(200,))
        samples.append(time.perf_counter() - t0)
        check_two(ex, "runCode")
    c.must("DELETE", "/v1/sandboxes/%s/contexts/%s" % (sid, ctx), want=(200,))
    return samples


def bench_ctx_create(c, sid, n, refill_s):
    """(c) and (d): time only the POST contexts; delete after; let the
    pool refill (refill_s) before the next sample."""
    samples = []
    for _ in range(n):
        time.sleep(refill_s)
        t0 = time.perf_counter()
        ctx = c.must("POST", "/v1/sandboxes/%s/contexts" % sid, {"language": "python"}, want=(201,))
        samples.append(time.perf_counter() - t0)
        check_two(c.must("POST", "/v1/sandboxes/%s/code" % sid, {"code": "1+1", "context_id": ctx["id"]},
                         want=(200,)), "new context")
        c.must("DELETE", "/v1/sandboxes/%s/contexts/%s" % (sid, ctx["id"]), want=(200,))
    return samples


def bench_first_run(c, n, refill_s, prefix):
    """(e) POST /v1/sandboxes + POST code 1+1, timed together."""
    samples, create_ms, run_ms = [], [], []
    for i in range(n):
        time.sleep(refill_s)
        sid = "%s-first%d" % (prefix, i)
        t0 = time.perf_counter()
        c.must("POST", "/v1/sandboxes", {"id": sid}, want=(201,))
        t1 = time.perf_counter()
        ex = c.must("POST", "/v1/sandboxes/%s/code" % sid, {"code": "1+1"}, want=(200,))
        t2 = time.perf_counter()
        check_two(ex, "first runCode")
        samples.append(t2 - t0)
        create_ms.append(t1 - t0)
        run_ms.append(t2 - t1)
        c.must("DELETE", "/v1/sandboxes/" + sid, want=(200,))
    return samples, create_ms, run_ms


def run(args):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
    import harness
    from benchlib import Client, StderrTap, start_broker, summary

    def summary_99(samples):
        return summary(samples, high=99)

    res = {"results": {}, "notes": []}
    tap = StderrTap()
    prefix = "bc%d" % os.getpid()

    # host side first, while no broker is running
    host, why = run_host_part(args)
    if host is None:
        res["notes"].append("jupyter_client comparison not run: " + why)
    else:
        res["results"]["jupyter_client_execute"] = summary_99(host["execute"])
        res["results"]["bare_kernel_start"] = summary_99(host["start"])
        res["host"] = {"python": host.get("python"), "versions": host.get("versions")}

    # broker A: defaults (warm_kernels_python = 1) with the warm sandbox pool on
    b = start_broker("bench_code.py", tap, "bench broker (warm pools)", {"warm_sandboxes": 1})
    try:
        c = Client("http://127.0.0.1:%d" % b.port, b.tokens["alice"])
        sid = prefix + "-warm"
        c.must("POST", "/v1/sandboxes", {"id": sid}, want=(201,))
        c.must("POST", "/v1/sandboxes/%s/code" % sid, {"code": "1+1"}, want=(200,))  # kernels up
        time.sleep(args.refill)
        res["results"]["runcode"] = summary_99(bench_run(c, sid, args.n, args.warmup, args.refill))
        res["keepalive_reconnects"] = c.reconnects
        res["results"]["ctx_warm"] = summary_99(bench_ctx_create(c, sid, args.ctx_n, args.refill))
        c.must("DELETE", "/v1/sandboxes/" + sid, want=(200,))
        time.sleep(args.refill)
        first, cr, rn = bench_first_run(c, args.first_n, args.first_refill, prefix)
        res["results"]["first_run"] = summary_99(first)
        res["results"]["first_run_create_part"] = summary_99(cr)
        res["results"]["first_run_code_part"] = summary_99(rn)
    finally:
        b.teardown()

    # broker B: no warm kernels, no warm sandboxes
    b = start_broker("bench_code.py", tap, "bench broker (cold)",
                     {"warm_kernels_python": 0, "warm_sandboxes": 0})
    try:
        c = Client("http://127.0.0.1:%d" % b.port, b.tokens["alice"])
        sid = prefix + "-cold"
        c.must("POST", "/v1/sandboxes", {"id": sid}, want=(201,))
        res["results"]["ctx_cold"] = summary_99(bench_ctx_create(c, sid, args.cold_n, 0.2))
        c.must("DELETE", "/v1/sandboxes/" + sid, want=(200,))
    finally:
        b.teardown()
    if tap.failed:
        res["harness_failures"] = tap.failed

    r = res["results"]
    run_ratio = (r["runcode"]["p50_ms"] / r["jupyter_client_execute"]["p50_ms"]
                 if "jupyter_client_execute" in r else None)
    cold_ratio = (r["ctx_cold"]["p50_ms"] / r["bare_kernel_start"]["p50_ms"]
                  if "bare_kernel_start" in r else None)
    res["ratios"] = {"runcode_vs_jupyter_client_p50": run_ratio, "ctx_cold_vs_bare_start_p50": cold_ratio}
    res["targets"] = {
        "runcode_ratio_at_most_0.75": None if run_ratio is None else run_ratio <= TARGET_RUN_RATIO,
        "ctx_warm_p50_at_most_20ms": r["ctx_warm"]["p50_ms"] <= TARGET_WARM_CTX_MS,
        "ctx_cold_ratio_at_most_1.1": None if cold_ratio is None else cold_ratio <= TARGET_COLD_RATIO,
        "first_run_p50_at_most_300ms": r["first_run"]["p50_ms"] <= TARGET_FIRST_RUN_MS,
    }
    res["params"] = {"n": args.n, "warmup": args.warmup, "ctx_n": args.ctx_n, "cold_n": args.cold_n,
                     "first_n": args.first_n, "refill_s": args.refill, "first_refill_s": args.first_refill,
                     "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}
    return res


def print_table(res):
    r = res["results"]
    print("sandboxd code-interpreter benchmark (%d CPUs, load average at end %.2f)"
          % (res["params"]["cpus"], res["params"]["loadavg_at_end"][0]))
    print()
    print("%-52s %5s %9s %9s %9s" % ("operation", "n", "p50 ms", "p99 ms", "max ms"))
    rows = [
        ("(a) runCode `1+1`, warm context, keep-alive HTTP", "runcode"),
        ("(b) jupyter_client execute `1+1` (reply+idle), host", "jupyter_client_execute"),
        ("(c) createCodeContext from the warm pool (POST)", "ctx_warm"),
        ("(d) createCodeContext cold (warm_kernels_python=0)", "ctx_cold"),
        ("    bare KernelManager start + wait_for_ready, host", "bare_kernel_start"),
        ("(e) new sandbox + first runCode `1+1` (pools on)", "first_run"),
        ("    of which POST /v1/sandboxes", "first_run_create_part"),
        ("    of which POST code", "first_run_code_part"),
    ]
    for label, key in rows:
        if key in r:
            s = r[key]
            print("%-52s %5d %9.2f %9.2f %9.2f" % (label, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]))
        else:
            print("%-52s %5s %9s %9s %9s" % (label, "-", "n/a", "n/a", "n/a"))
    print()
    for n in res["notes"]:
        print("note: " + n)
    if res.get("host"):
        print("host kernel: %s %s" % (res["host"].get("python"), res["host"].get("versions")))
    print("keep-alive reconnects during (a): %s" % res.get("keepalive_reconnects"))
    rr = res["ratios"]

    def f(v):
        return "n/a" if v is None else "%.3f" % v

    def mark(v):
        return "n/a (not measured)" if v is None else ("met" if v else "MISSED")

    t = res["targets"]
    print()
    print("ratio (a)/(b) p50: %s   target <= %.2f: %s" % (f(rr["runcode_vs_jupyter_client_p50"]), TARGET_RUN_RATIO,
                                                       mark(t["runcode_ratio_at_most_0.75"])))
    print("(c) p50: %.2f ms        target <= %.0f ms: %s" % (r["ctx_warm"]["p50_ms"], TARGET_WARM_CTX_MS,
                                                         mark(t["ctx_warm_p50_at_most_20ms"])))
    print("ratio (d)/bare p50: %s  target <= %.1f: %s" % (f(rr["ctx_cold_vs_bare_start_p50"]), TARGET_COLD_RATIO,
                                                        mark(t["ctx_cold_ratio_at_most_1.1"])))
    print("(e) p50: %.2f ms       target <= %.0f ms: %s" % (r["first_run"]["p50_ms"], TARGET_FIRST_RUN_MS,
                                                         mark(t["first_run_p50_at_most_300ms"])))
    if res.get("harness_failures"):
        print("harness checks failed: %d (see stderr)" % res["harness_failures"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="runCode / execute samples (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up runs before (a) and (b) (default 20)")
    ap.add_argument("--ctx-n", type=int, default=10, help="warm createCodeContext samples (default 10)")
    ap.add_argument("--cold-n", type=int, default=5, help="cold context / bare kernel start samples (default 5)")
    ap.add_argument("--first-n", type=int, default=10, help="new sandbox + first runCode samples (default 10)")
    ap.add_argument("--refill", type=float, default=1.2, help="seconds for the kernel pool to refill (default 1.2)")
    ap.add_argument("--first-refill", type=float, default=2.5,
                    help="seconds for the sandbox pool (container + kernel) to refill (default 2.5)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed or not measured")
    ap.add_argument("--host-helper", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.host_helper:
        host_helper(args)
        return
    if os.geteuid() != 0:
        sys.exit("bench_code.py: starting a broker needs root")
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
    import harness
    if not os.path.isdir(os.path.join(harness.IMAGE_DIR, "current", "rootfs")):
        sys.exit("bench_code.py: no image in %s; run kernels/build-image.sh" % harness.IMAGE_DIR)
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print_table(res)
    if args.check and not all(v is True for v in res["targets"].values()):
        sys.exit(1)
    if res.get("harness_failures"):
        sys.exit(1)


if __name__ == "__main__":
    main()
