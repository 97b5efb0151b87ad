#!/usr/bin/env python3
"""bench_ports.py - an exposed port through the broker's preview proxy
against the same server hit directly, in one run: `wrk` on loopback at the
preview-host form (Host {port}-{id}-{token}.localhost) and `wrk` run by
`nsenter --net=/proc/<pid>/ns/net` inside the sandbox's own network
namespace at 127.0.0.1:{port}. Prints requests/s and p50 for both and the
ratio; the target (issue 6) is at least 0.7x direct.

  python3 bench/bench_ports.py [--server python|node] [--duration 5]
      [--connections 16] [--rounds 3] [--json]
      starts its own broker (tests/e2e/harness.Broker: temp state dir,
      random port; needs root, the cached image and wrk), as `make bench`
      does.

The server inside the sandbox answers GET / with 13 bytes over HTTP/1.1
keep-alive. `python` is a stdlib ThreadingHTTPServer; `node` is node's http
module (both are in the image). Rounds alternate direct and proxied; each
side keeps its best round. wrk, the broker and the server share the same
cores, as they would on one machine. Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402
from benchlib import Client, StderrTap, start_broker  # noqa: E402

PORT = 8000
TARGET = 0.7

PY_SERVER = r'''
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"hello, world\n")
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

NODE_SERVER = r'''
const http = require("http");
http.createServer((req, res) => {
  res.writeHead(200, {"Content-Type": "text/plain", "Content-Length": "13"});
  res.end("hello, world\n");
}).listen(+process.argv[2], "127.0.0.1");
'''


def parse_wrk(out):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:.*", out)
    ms = None
    if p50:
        v, unit = float(p50.group(1)), p50.group(2)
        ms = v / 1000.0 if unit == "us" else v * 1000.0 if unit == "s" else v
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": ms,
            "non2xx": int(errs.group(1)) if errs else 0, "socket_errors": sock.group(0) if sock else ""}


def cpu_seconds(pid):
    """utime + stime of a process and all its threads, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(prefix, url, host, args, broker_pid=None):
    cmd = prefix + ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", "%ds" % args.duration,
                    "--latency", url]
    if host:
        cmd[len(prefix) + 1:len(prefix) + 1] = ["-H", "Host: " + host]
    cpu0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    cpu1 = cpu_seconds(broker_pid) if broker_pid else 0.0
    if p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), p.stderr.strip()))
    r = parse_wrk(p.stdout)
    nreq = r["rps"] * args.duration
    r["broker_cpu_us_per_request"] = (cpu1 - cpu0) / nreq * 1e6 if broker_pid and nreq else None
    r["cmd"] = " ".join(cmd)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=("python", "node"), default="python")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of direct + proxied (default 3)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    for tool in ("wrk", "nsenter"):
        if not shutil.which(tool):
            sys.exit("bench_ports.py: %s is not installed (Debian package %s)" %
                     (tool, "wrk" if tool == "wrk" else "util-linux"))

    tap = StderrTap()
    b = start_broker("bench_ports.py", tap, config={"warm_kernels_python": 0})
    try:
        c = Client(b.url, b.tokens["alice"])
        r = b.create(id="bench")
        if r.status != 201 or not r.cid:
            raise RuntimeError("create: %s" % (r,))
        script, cmd = (("/workspace/srv.py", "python3 /workspace/srv.py %d" % PORT) if args.server == "python"
                       else ("/workspace/srv.js", "node /workspace/srv.js %d" % PORT))
        w = b.request("PUT", "/v1/sandboxes/bench/files" + script,
                      raw=(PY_SERVER if args.server == "python" else NODE_SERVER).encode())
        if w.status != 200:
            raise RuntimeError("writing the server: %s" % (w,))
        c.must("POST", "/v1/sandboxes/bench/processes", {"command": cmd})
        e = c.must("POST", "/v1/sandboxes/bench/ports", {"port": PORT})
        host = "%d-bench-%s.localhost:%d" % (PORT, e["token"], b.port)
        deadline = time.monotonic() + 20
        while True:
            h = {"Host": host}
            st = b.request("GET", "/", tenant=None, headers=h).status
            if st == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not come up (last status %d)" % st)
            time.sleep(0.2)
        state = subprocess.run([harness.RUNTIME, "--root", os.path.join(b.state, "runc"), "state", r.cid],
                               capture_output=True, text=True)
        pid = json.loads(state.stdout)["pid"]
        direct_prefix = ["nsenter", "--net=/proc/%d/ns/net" % pid]
        results = {"direct": [], "proxied": []}
        # A short warm-up of each, not counted.
        warm = argparse.Namespace(**dict(vars(args), duration=1))
        run_wrk(direct_prefix, "http://127.0.0.1:%d/" % PORT, None, warm)
        run_wrk([], "http://127.0.0.1:%d/" % b.port, host, warm)
        for _ in range(args.rounds):
            results["direct"].append(run_wrk(direct_prefix, "http://127.0.0.1:%d/" % PORT, None, args))
            results["proxied"].append(run_wrk([], "http://127.0.0.1:%d/" % b.port, host, args,
                                              broker_pid=b.proc.pid))
        best = {k: max(v, key=lambda x: x["rps"]) for k, v in results.items()}
        ratio = best["proxied"]["rps"] / best["direct"]["rps"] if best["direct"]["rps"] else 0.0
        bad = [k for k, v in best.items() if v["non2xx"] or v["socket_errors"]]
        out = {"server": args.server, "connections": args.connections, "threads": args.threads,
               "duration_s": args.duration, "rounds": args.rounds,
               "direct": best["direct"], "proxied": best["proxied"], "ratio": ratio,
               "target": TARGET, "met": ratio >= TARGET,
               "all_rounds": {k: [(x["rps"], x["p50_ms"]) for x in v] for k, v in results.items()}}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print("exposed port, %s server, wrk -t%d -c%d -d%ds, best of %d rounds" %
                  (args.server, args.threads, args.connections, args.duration, args.rounds))
            print("%-34s %12s %10s" % ("path", "requests/s", "p50 ms"))
            print("%-34s %12.0f %10.3f" % ("direct (nsenter into the sandbox)", best["direct"]["rps"],
                                           best["direct"]["p50_ms"] or float("nan")))
            print("%-34s %12.0f %10.3f" % ("preview URL through the broker", best["proxied"]["rps"],
                                           best["proxied"]["p50_ms"] or float("nan")))
            print("ratio proxied/direct: %.2fx (target >= %.1fx: %s)" %
                  (ratio, TARGET, "met" if ratio >= TARGET else "MISSED"))
            print("broker CPU per proxied request: %.1f us" % best["proxied"]["broker_cpu_us_per_request"])
            for k in bad:
                print("warning: %s had errors: %s non-2xx, %s" % (k, best[k]["non2xx"], best[k]["socket_errors"]))
    finally:
        b.teardown()
    return 0 if tap.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
