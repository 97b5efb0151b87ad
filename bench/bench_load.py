#!/usr/bin/env python3
"""bench_load.py - a bounded load test of sandboxd on loopback: 50 concurrent
clients for 10 minutes mixing exec, runCode, file upload and download across
20 sandboxes, with wrk hammering a cheap authenticated GET beside them.

  python3 bench/bench_load.py [--duration 600] [--clients 50] [--sandboxes 20]
      [--warmup 20] [--wrk-connections 8] [--json]
      starts its own broker (tests/e2e/harness.Broker: temp state dir,
      random port; needs root and the cached image), as `make bench` does.
  python3 bench/bench_load.py --url http://127.0.0.1:8080 --token T [--pid PID]
      loads a running broker; its RSS and fds are sampled only with --pid.

How a run goes:
  1. create the sandboxes (keepalive 2 h) and prime each one: an exec, a
     runCode (which starts its default Python context), a seed file for the
     downloads and a 1 KiB file for wrk;
  2. warm-up: --warmup seconds (60) of the full load (clients and wrk), so
     that lazily filled caches, thread stacks and malloc's arenas have
     grown to what this load needs before the first sample (measured: the
     arenas' retained memory settles within the first minute; see
     docs/performance.md "Load");
  3. the start sample, with the load stopped and every client connection
     closed: the broker's VmRSS (/proc/PID/status), open fds (/proc/PID/fd)
     and threads, read once the fd and thread counts are steady;
  4. the measured run: the rest of --duration (the warm-up is part of it)
     in --checkpoints parts (one a minute), each followed by a quiet sample
     taken like the start one; RSS, fds and threads are also sampled every
     5 s under load. The end sample is the last quiet one;
  5. every sandbox must still answer: GET shows it running, an exec and a
     runCode give the right output. The sandboxes are deleted.

--malloc-stats (own broker, needs gdb) adds malloc's in-use and system
bytes to every quiet sample: in-use growing means a leak, system growing
with in-use flat means memory malloc keeps for reuse.

Each client is a thread with its own keep-alive HTTP/1.1 connection. Each
call picks a random sandbox and an operation by weight: exec (`echo` in the
default session, or `ls | wc -l` with a cwd, i.e. a fresh bash), runCode
(`1+1`, or a small loop that prints), a raw PUT of 64 KiB to 1 MiB of random
bytes to one of the client's own files, and a raw GET of one of the files
the client uploaded (or of the sandbox's seed file), checked by SHA-256.
Every answer is checked (status, and the output it must contain). Every
call is bounded by a socket timeout (--call-timeout, 60 s); one that passes
it counts as a timeout (a hung call).

The run fails (exit 1, with the reasons) on any 5xx, any timeout, any wrong
answer (other statuses, bad output, a hash mismatch, a dropped
connection), any wrk socket error, a sandbox not healthy at the end, or an
RSS or fd growth of 5 % or more between the start and end samples
(shrinking, e.g. glibc trimming an arena, does not fail the run).

Python 3 standard library and wrk (Debian package `wrk`).
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402
from benchlib import StderrTap, pct, start_broker  # noqa: E402

KiB = 1024
MiB = 1 << 20
DRIFT_LIMIT_PCT = 5.0
WEIGHTS = [("exec", 35), ("runcode", 25), ("upload", 15), ("download", 25)]
FILES_PER_CLIENT = 2  # per sandbox: the upload set stays bounded
WRK_FILE = "/workspace/wrk.txt"
SEED_FILE = "/workspace/seed.bin"


class Timeout(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection with a bounded wait per call."""

    def __init__(self, url, token, timeout):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.token = token
        self.timeout = timeout
        self.conn = None
        self.connections = 0  # opened, the first one included

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, ctype=None):
        """(status, headers, payload). Raises Timeout when the socket
        timeout passes; reconnects once when a kept-alive connection turns
        out to be closed by the server."""
        h = {"Authorization": "Bearer " + self.token} if self.token else {}
        if ctype:
            h["Content-Type"] = ctype
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.connections += 1
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                payload = r.read()
                break
            except socket.timeout:
                self.close()
                raise Timeout("%s %s: no answer within %d s" % (method, path, self.timeout))
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        return r.status, r, payload


class Stats:
    """Per operation: latencies of the calls that were answered, statuses,
    timeouts, other errors (with the first few described)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.elapsed = 0.0
        self.stuck = 0
        self.connections = 0

    def op(self, name):
        return self.ops.setdefault(name, {"lat": [], "status": {}, "timeouts": 0, "errors": 0,
                                          "conn_errors": 0, "examples": [], "max_s": 0.0})

    def record(self, name, dt, status=None, error=None, timeout=False, conn_error=False):
        with self.lock:
            o = self.op(name)
            o["max_s"] = max(o["max_s"], dt)
            if status is not None:
                o["lat"].append(dt)
                o["status"][status] = o["status"].get(status, 0) + 1
            if timeout:
                o["timeouts"] += 1
            if conn_error:
                o["conn_errors"] += 1
            if error is not None:
                o["errors"] += 1
                if len(o["examples"]) < 5:
                    o["examples"].append(error[:400])


class Load:
    def __init__(self, args, url, token, sids):
        self.args = args
        self.url = url
        self.token = token
        self.sids = sids
        self.owned = {}  # client -> {(sid, path): sha256}
        self.seed_sha = {}  # sid -> sha256 of its SEED_FILE
        self.counter = 0
        self.clock = threading.Lock()

    def seq(self):
        with self.clock:
            self.counter += 1
            return self.counter

    # ---- one call of each kind ------------------------------------------

    def _json(self, c, method, path, body):
        st, r, payload = c.request(method, path, json.dumps(body).encode(), "application/json")
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return st, parsed, payload

    def do_exec(self, c, rng, sid):
        n = self.seq()
        if rng.random() < 0.7:
            body = {"command": "echo load-%d" % n, "timeout_ms": 30000}
            want = "load-%d\n" % n
        else:
            body = {"command": "ls -a | wc -l", "cwd": "/workspace", "timeout_ms": 30000}
            want = None
        st, p, raw = self._json(c, "POST", "/v1/sandboxes/%s/exec" % sid, body)
        if st != 200:
            return st, "exec %s -> %d %s" % (sid, st, raw[:300])
        if not isinstance(p, dict) or p.get("exit_code") != 0:
            return st, "exec %s %r -> %s" % (sid, body["command"], raw[:300])
        out = p.get("stdout", "")
        if (want is not None and out != want) or (want is None and not out.strip().isdigit()):
            return st, "exec %s %r -> stdout %r" % (sid, body["command"], out[:200])
        return st, None

    def do_runcode(self, c, rng, sid):
        if rng.random() < 0.6:
            a, b = rng.randrange(1000), rng.randrange(1000)
            body = {"code": "%d+%d" % (a, b), "timeout_ms": 30000}
            check = ("text", str(a + b))
        else:
            k = rng.randrange(1000, 20000)
            body = {"code": "s = 0\nfor i in range(%d):\n    s += i\nprint(s)" % k, "timeout_ms": 30000}
            check = ("stdout", "%d\n" % (k * (k - 1) // 2))
        st, p, raw = self._json(c, "POST", "/v1/sandboxes/%s/code" % sid, body)
        if st != 200:
            return st, "runCode %s -> %d %s" % (sid, st, raw[:300])
        if not isinstance(p, dict) or p.get("error") is not None:
            return st, "runCode %s -> %s" % (sid, raw[:300])
        if check[0] == "text":
            got = [r.get("text") for r in p.get("results", []) if r.get("is_main_result")]
            if got != [check[1]]:
                return st, "runCode %s %r -> results %s" % (sid, body["code"], raw[:300])
        elif "".join(p.get("logs", {}).get("stdout", [])) != check[1]:
            return st, "runCode %s -> stdout %s" % (sid, raw[:300])
        return st, None

    def do_upload(self, c, rng, sid, client):
        size = rng.randrange(64 * KiB, MiB + 1)
        data = rng.randbytes(size)
        path = "/workspace/load/c%d-%d.bin" % (client, rng.randrange(FILES_PER_CLIENT))
        st, r, raw = c.request("PUT", "/v1/sandboxes/%s/files%s?mkdir=1" % (sid, path), data,
                               "application/octet-stream")
        if st not in (200, 201):
            return st, "PUT %s %s -> %d %s" % (sid, path, st, raw[:300])
        try:
            size_ok = json.loads(raw).get("size") == size
        except (ValueError, AttributeError):
            size_ok = False
        if not size_ok:
            return st, "PUT %s %s (%d bytes) -> %s" % (sid, path, size, raw[:300])
        self.owned.setdefault(client, {})[(sid, path)] = hashlib.sha256(data).hexdigest()
        return st, None

    def do_download(self, c, rng, sid, client):
        mine = self.owned.get(client) or {}
        if mine and rng.random() < 0.8:
            (sid, path), want = rng.choice(sorted(mine.items()))
        else:
            path, want = SEED_FILE, self.seed_sha[sid]
        st, r, raw = c.request("GET", "/v1/sandboxes/%s/files%s" % (sid, path))
        if st != 200:
            return st, "GET %s %s -> %d %s" % (sid, path, st, raw[:300])
        if hashlib.sha256(raw).hexdigest() != want:
            return st, "GET %s %s: %d bytes, SHA-256 differs from what was uploaded" % (sid, path, len(raw))
        return st, None

    # ---- the clients ----------------------------------------------------

    def client(self, idx, stop, stats, seed):
        rng = random.Random(seed)
        names = [w[0] for w in WEIGHTS]
        weights = [w[1] for w in WEIGHTS]
        c = Conn(self.url, self.token, self.args.call_timeout)
        try:
            while not stop.is_set():
                op = rng.choices(names, weights)[0]
                sid = rng.choice(self.sids)
                t0 = time.monotonic()
                try:
                    if op == "exec":
                        st, err = self.do_exec(c, rng, sid)
                    elif op == "runcode":
                        st, err = self.do_runcode(c, rng, sid)
                    elif op == "upload":
                        st, err = self.do_upload(c, rng, sid, idx)
                    else:
                        st, err = self.do_download(c, rng, sid, idx)
                    stats.record(op, time.monotonic() - t0, status=st, error=err)
                    if st >= 400:
                        c.close()
                except Timeout as e:
                    stats.record(op, time.monotonic() - t0, error=str(e), timeout=True)
                except (OSError, http.client.HTTPException) as e:
                    c.close()
                    stats.record(op, time.monotonic() - t0, error="%s %s: %r" % (op, sid, e), conn_error=True)
        finally:
            c.close()
            with stats.lock:
                stats.connections += c.connections

    def phase(self, seconds, seed, stats=None):
        """Run the clients and wrk for seconds, adding to stats (a new Stats
        when None); (stats, wrk result)."""
        stats = stats or Stats()
        stop = threading.Event()
        wrk = Wrk(self.args, self.url, self.token, self.sids, seconds) if self.args.wrk_connections else None
        threads = [threading.Thread(target=self.client, args=(i, stop, stats, seed * 1000 + i), daemon=True)
                   for i in range(self.args.clients)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        if wrk:
            wrk.start()
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        stop.set()
        # every call is bounded by call_timeout: a thread still busy after
        # that has hung in something else, which is a failure too
        deadline = time.monotonic() + self.args.call_timeout + 30
        for th in threads:
            th.join(max(0.1, deadline - time.monotonic()))
        stats.elapsed += time.monotonic() - t0
        stats.stuck += sum(1 for th in threads if th.is_alive())
        wres = wrk.finish() if wrk else None
        return stats, wres


class Wrk:
    """wrk -d seconds against a round robin of GET /v1/sandboxes/{id} and
    GET of a 1 KiB file in each sandbox; a Lua script adds the bearer
    token and counts statuses (wrk itself only counts non-2xx/3xx)."""

    LUA = r"""
local paths = %(paths)s
wrk.headers["Authorization"] = "Bearer %(token)s"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s5xx = 0; other = 0; idx = 0 end
function request()
  idx = idx %% #paths + 1
  return wrk.format("GET", paths[idx])
end
function response(status, headers, body)
  if status >= 500 then s5xx = s5xx + 1 elseif status ~= 200 then other = other + 1 end
end
function done(summary, latency, requests)
  local a5, ao = 0, 0
  for _, t in ipairs(threads) do a5 = a5 + t:get("s5xx"); ao = ao + t:get("other") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"s5xx":%%d,"other_status":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d,"err_connect":%%d,"err_read":%%d,"err_write":%%d,' ..
    '"err_status":%%d,"err_timeout":%%d}\n',
    summary.requests, summary.duration, a5, ao, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

    def __init__(self, args, url, token, sids, seconds):
        self.url = url
        self.seconds = int(seconds)
        self.args = args
        paths = []
        for sid in sids:
            paths.append("/v1/sandboxes/%s" % sid)
            paths.append("/v1/sandboxes/%s/files%s" % (sid, WRK_FILE))
        self.tmp = tempfile.mkdtemp(prefix="sbx-wrk-")
        self.script = os.path.join(self.tmp, "load.lua")
        fd = os.open(self.script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.LUA % {"paths": "{" + ", ".join('"%s"' % p for p in paths) + "}", "token": token})
        self.proc = None

    def start(self):
        cmd = ["wrk", "-t", str(self.args.wrk_threads), "-c", str(self.args.wrk_connections),
               "-d", "%ds" % self.seconds, "--timeout", "%ds" % self.args.call_timeout,
               "-s", self.script, self.url]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def finish(self):
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + self.args.call_timeout + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            return {"error": "wrk did not finish", "output": out.decode(errors="replace")[-2000:]}
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        text = out.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("WRKJSON "):
                res = json.loads(line[len("WRKJSON "):])
                res["rps"] = res["requests"] / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
                return res
        return {"error": "wrk exited with %s" % self.proc.returncode, "output": text[-2000:]}


def merge_wrk(results):
    """One wrk result for several runs: counts add up; p50 is the median
    of the runs' p50s, p99 and max the largest of theirs (percentiles do
    not add, this errs on the slow side)."""
    if not results or results[0] is None:
        return None
    bad = [r for r in results if r.get("error")]
    if bad:
        return bad[0]
    out = {k: sum(r[k] for r in results) for k in ("requests", "duration_us", "s5xx", "other_status",
                                                    "err_connect", "err_read", "err_write", "err_status",
                                                    "err_timeout")}
    p50s = sorted(r["p50_us"] for r in results)
    out["p50_us"] = p50s[len(p50s) // 2]
    out["p99_us"] = max(r["p99_us"] for r in results)
    out["max_us"] = max(r["max_us"] for r in results)
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6) if out["duration_us"] else 0.0
    out["runs"] = len(results)
    return out


# ---- the broker process -------------------------------------------------


def proc_sample(pid):
    """{rss_kib, fds, threads} of process pid."""
    out = {"rss_kib": harness.rss_kib(pid), "fds": None, "threads": None}
    try:
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def smaps(pid):
    """[(start-end, name, Rss KiB)] of process pid's mappings."""
    out, cur = [], None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if "-" in parts[0] and not parts[0].endswith(":"):
                    cur = [parts[0], parts[5] if len(parts) > 5 else "[anon]", 0]
                    out.append(cur)
                elif parts[0] == "Rss:" and cur is not None:
                    cur[2] = int(parts[1])
    except OSError:
        pass
    return out


MALLOC_STATS_LOG = None  # --malloc-stats: the broker's log, where malloc_stats() prints


def malloc_stats(pid, log):
    """(system bytes, in-use bytes) of the broker's malloc, all arenas, from
    glibc's malloc_stats() called in it by gdb (it prints to the broker's
    stderr, which is log). (None, None) when that fails."""
    try:
        n0 = os.path.getsize(log)
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (void) malloc_stats()"],
                       capture_output=True, timeout=60)
        time.sleep(0.3)
        with open(log, "rb") as f:
            f.seek(n0)
            text = f.read().decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None, None
    m = re.search(r"Total \(incl\. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def quiet_sample(pid, max_wait=15.0):
    """A sample once the load has stopped and the broker's fd and thread
    counts have been the same for 1 s (connection threads gone)."""
    time.sleep(1.0)
    deadline = time.monotonic() + max_wait
    last, same = None, 0
    while True:
        s = proc_sample(pid)
        key = (s["fds"], s["threads"])
        same = same + 1 if key == last else 0
        last = key
        if same >= 4 or time.monotonic() >= deadline:
            s["smaps"] = smaps(pid)
            s["malloc_arenas"] = arenas(s["smaps"])
            if MALLOC_STATS_LOG:
                s["malloc_system"], s["malloc_in_use"] = malloc_stats(pid, MALLOC_STATS_LOG)
            return s
        time.sleep(0.25)


class Sampler(threading.Thread):
    def __init__(self, pid, interval=5.0):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop_ev.wait(self.interval):
            s = proc_sample(self.pid)
            s["t"] = round(time.monotonic() - self.t0, 1)
            self.samples.append(s)

    def stop(self):
        self.stop_ev.set()
        self.join()


# ---- setup and checks ---------------------------------------------------


def setup_sandboxes(load, c, prefix, n):
    sids = []
    rng = random.Random(1)
    for i in range(n):
        sid = "%s-%02d" % (prefix, i)
        st, p, raw = load._json(c, "POST", "/v1/sandboxes", {"id": sid, "keepalive_seconds": 7200})
        if st != 201:
            raise RuntimeError("create %s -> %d %s" % (sid, st, raw[:300]))
        sids.append(sid)
        seed = rng.randbytes(256 * KiB)
        st, _, raw = c.request("PUT", "/v1/sandboxes/%s/files%s" % (sid, SEED_FILE), seed, "application/octet-stream")
        if st not in (200, 201):
            raise RuntimeError("seed upload %s -> %d %s" % (sid, st, raw[:300]))
        load.seed_sha[sid] = hashlib.sha256(seed).hexdigest()
        st, _, raw = c.request("PUT", "/v1/sandboxes/%s/files%s" % (sid, WRK_FILE), b"w" * 1023 + b"\n",
                               "application/octet-stream")
        if st not in (200, 201):
            raise RuntimeError("wrk file upload %s -> %d %s" % (sid, st, raw[:300]))
    return sids


def health(load, c, sids):
    """The sandboxes that do not answer as they should: [description]."""
    bad = []
    rng = random.Random(2)
    for sid in sids:
        try:
            st, r, raw = c.request("GET", "/v1/sandboxes/%s" % sid)
            info = json.loads(raw) if st == 200 else None
            if st != 200 or info.get("status") != "running":
                bad.append("GET %s -> %d %s" % (sid, st, raw[:200]))
                c.close()
                continue
            for fn in (load.do_exec, load.do_runcode):
                st, err = fn(c, rng, sid)
                if err:
                    bad.append(err)
                    c.close()
        except (Timeout, OSError, http.client.HTTPException, ValueError) as e:
            bad.append("%s: %r" % (sid, e))
            c.close()
    return bad


def smaps_diff(start, end, top=8):
    """Where the RSS changed between two samples: [(mapping, kib before,
    kib after)], the largest changes first. Anonymous mappings are told
    apart by their address range (malloc arenas, thread stacks)."""
    a = {(r.split("-")[0], n): k for r, n, k in start}
    b = {(r.split("-")[0], n): k for r, n, k in end}
    rows = []
    for key in set(a) | set(b):
        if a.get(key, 0) != b.get(key, 0):
            rows.append(("%s %s" % key, a.get(key, 0), b.get(key, 0)))
    rows.sort(key=lambda r: -abs(r[2] - r[1]))
    return rows[:top]


def arenas(maps):
    """glibc malloc arenas other than the main one (which is [heap]): their
    heaps are anonymous mappings aligned to 64 MiB (HEAP_MAX_SIZE)."""
    return sum(1 for r, n, k in maps if n == "[anon]" and int(r.split("-")[0], 16) % (64 * MiB) == 0)


def drift(a, b):
    if not a or b is None:
        return None
    return (b - a) * 100.0 / a


def summarize(stats):
    out = {}
    for name, _ in WEIGHTS:
        o = stats.ops.get(name)
        if not o:
            continue
        n = len(o["lat"])
        out[name] = {"count": n, "per_s": n / stats.elapsed, "p50_ms": pct(o["lat"], 50),
                     "p99_ms": pct(o["lat"], 99), "max_ms": o["max_s"] * 1000.0,
                     "status": {str(k): v for k, v in sorted(o["status"].items())},
                     "timeouts": o["timeouts"], "conn_errors": o["conn_errors"], "errors": o["errors"],
                     "examples": o["examples"]}
    return out


def count_5xx(summary, wrk):
    n = sum(v for s in summary.values() for k, v in s["status"].items() if k.startswith("5"))
    return n + (wrk or {}).get("s5xx", 0)


def run(args, url, token, pid):
    prefix = "load%d" % os.getpid()
    load = Load(args, url, token, [])
    c = Conn(url, token, args.call_timeout)
    res = {"url": url, "clients": args.clients, "sandboxes": args.sandboxes, "duration_s": args.duration,
           "warmup_s": args.warmup, "wrk_connections": args.wrk_connections, "weights": dict(WEIGHTS),
           "call_timeout": args.call_timeout}
    sids = []
    try:
        t0 = time.monotonic()
        sids = setup_sandboxes(load, c, prefix, args.sandboxes)
        load.sids = sids
        for sid in sids:  # prime: the default session and the Python context
            for fn in (load.do_exec, load.do_runcode):
                st, err = fn(c, random.Random(3), sid)
                if err:
                    raise RuntimeError("priming: " + err)
        c.close()
        res["setup_s"] = time.monotonic() - t0
        sys.stderr.write("bench_load: %d sandboxes ready in %.1f s; warm-up %d s\n"
                         % (len(sids), res["setup_s"], args.warmup))
        sampler = None
        if pid:
            sampler = Sampler(pid)
        warm, warm_wrk = load.phase(args.warmup, seed=1)
        res["warmup"] = {"ops": summarize(warm), "wrk": warm_wrk, "stuck_clients": warm.stuck}
        if pid:
            res["start"] = quiet_sample(pid)
            sampler.start()
        main_s = args.duration - args.warmup
        parts = args.checkpoints or max(1, main_s // 60)
        sys.stderr.write("bench_load: start sample %s; measured load for %d s in %d parts\n"
                         % ({k: v for k, v in res.get("start", {}).items() if k != "smaps"}, main_s, parts))
        stats, wrks, res["checkpoints"] = Stats(), [], []
        for k in range(parts):
            secs = main_s * (k + 1) // parts - main_s * k // parts
            _, w = load.phase(secs, seed=2 + k, stats=stats)
            wrks.append(w)
            if pid:
                q = quiet_sample(pid)
                res["checkpoints"].append({k: v for k, v in q.items() if k != "smaps"})
                res["checkpoints"][-1]["t_s"] = round(stats.elapsed)
                sys.stderr.write("bench_load: after %d s: %s\n" % (stats.elapsed, res["checkpoints"][-1]))
                if k == parts - 1:
                    res["end"] = q
        if pid:
            sampler.stop()
            res["under_load"] = sampler.samples
        res["ops"] = summarize(stats)
        res["elapsed_s"] = stats.elapsed
        res["wrk"] = merge_wrk(wrks)
        res["stuck_clients"] = stats.stuck
        res["connections"] = stats.connections
        res["unhealthy"] = health(load, c, sids)
    finally:
        c.close()
        for sid in sids:
            try:
                st, _, raw = c.request("DELETE", "/v1/sandboxes/%s" % sid)
            except Exception:
                pass
        c.close()
    return res


def verdict(res):
    """The reasons the run failed ([] when it passed)."""
    why = []
    warm = res["warmup"]
    for label, ops, wrk, stuck in (("warm-up", warm["ops"], warm["wrk"], warm["stuck_clients"]),
                                   ("run", res["ops"], res["wrk"], res["stuck_clients"])):
        n5 = count_5xx(ops, wrk)
        if n5:
            why.append("%s: %d 5xx answers" % (label, n5))
        for name, o in ops.items():
            if o["timeouts"]:
                why.append("%s: %d %s calls got no answer within %d s" % (label, o["timeouts"], name,
                                                                           res["call_timeout"]))
            if o["errors"] - o["timeouts"]:
                why.append("%s: %d wrong %s answers, e.g. %s" % (label, o["errors"] - o["timeouts"], name,
                                                               o["examples"][:2]))
        if stuck:
            why.append("%s: %d clients still busy long after the end" % (label, stuck))
        if wrk is not None:
            if wrk.get("error"):
                why.append("%s: %s: %s" % (label, wrk["error"], wrk.get("output", "")[-500:]))
            else:
                errs = {k: wrk[k] for k in ("err_connect", "err_read", "err_write", "err_timeout") if wrk[k]}
                if errs:
                    why.append("%s: wrk socket errors %s" % (label, errs))
                if wrk["other_status"]:
                    why.append("%s: wrk got %d answers other than 200" % (label, wrk["other_status"]))
    if res.get("unhealthy"):
        why.append("sandboxes not healthy at the end: %s" % res["unhealthy"][:5])
    for key, label in (("rss_kib", "RSS"), ("fds", "open fds")):
        d = res.get("drift_pct", {}).get(key)
        # Growth is what a leak looks like; memory returned to the system
        # (a trimmed malloc arena) is not a failure.
        if d is not None and d >= DRIFT_LIMIT_PCT:
            why.append("broker %s drifted %.1f %% (%s -> %s)" % (label, d, res["start"][key], res["end"][key]))
    return why


def evaluate(res):
    """Add the drifts, the 5xx counts and the failures to a run's result."""
    if "start" in res:
        res["drift_pct"] = {k: drift(res["start"][k], res["end"][k]) for k in ("rss_kib", "fds", "threads")}
        res["rss_changes"] = smaps_diff(res["start"].pop("smaps"), res["end"].pop("smaps"))
    res["5xx"] = count_5xx(res["ops"], res["wrk"])
    res["warmup_5xx"] = count_5xx(res["warmup"]["ops"], res["warmup"]["wrk"])
    res["failures"] = verdict(res)
    return res


def print_table(res):
    print("sandboxd load test against %s: %d clients, %d sandboxes, %d s (%d s warm-up), wrk -c %d"
          % (res["url"], res["clients"], res["sandboxes"], res["duration_s"], res["warmup_s"],
             res["wrk_connections"]))
    print()
    print("measured part: %.0f s" % res["elapsed_s"])
    print("%-10s %8s %8s %9s %9s %9s  %s" % ("operation", "count", "per s", "p50 ms", "p99 ms", "max ms",
                                           "statuses / errors"))
    for name, o in res["ops"].items():
        extra = " ".join("%s:%d" % kv for kv in o["status"].items())
        if o["timeouts"] or o["conn_errors"] or o["errors"]:
            extra += " timeouts:%d conn_errors:%d wrong:%d" % (o["timeouts"], o["conn_errors"], o["errors"])
        print("%-10s %8d %8.1f %9.2f %9.2f %9.1f  %s" % (name, o["count"], o["per_s"], o["p50_ms"], o["p99_ms"],
                                                       o["max_ms"], extra))
    w = res.get("wrk")
    if w and not w.get("error"):
        errs = " ".join("%s:%d" % (k[4:], w[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
        print("%-10s %8d %8.1f %9.2f %9.2f %9.1f  5xx:%d other:%d %s" % (
            "wrk GET", w["requests"], w["rps"], w["p50_us"] / 1000.0, w["p99_us"] / 1000.0, w["max_us"] / 1000.0,
            w["s5xx"], w["other_status"], errs))
    elif w:
        print("wrk: %s" % w["error"])
    total = sum(o["count"] for o in res["ops"].values()) + (w or {}).get("requests", 0)
    print()
    print("total requests answered: %d (%.1f per s); 5xx: %d (warm-up: %d)" % (
        total, total / res["elapsed_s"], res["5xx"], res["warmup_5xx"]))
    print("client connections opened: %d (one per client unless the broker closed one)" % res["connections"])
    if "start" in res:
        s, e, d = res["start"], res["end"], res["drift_pct"]
        print("broker RSS: %d KiB -> %d KiB (%+.2f %%); open fds: %d -> %d (%+.2f %%); threads %d -> %d; "
              "malloc arenas %d -> %d" % (s["rss_kib"], e["rss_kib"], d["rss_kib"], s["fds"], e["fds"], d["fds"],
                                         s["threads"], e["threads"], s["malloc_arenas"], e["malloc_arenas"]))
        ul = res.get("under_load") or []
        if ul:
            print("under load (every 5 s): RSS %d..%d KiB, fds %d..%d, threads %d..%d" % (
                min(x["rss_kib"] for x in ul), max(x["rss_kib"] for x in ul), min(x["fds"] for x in ul),
                max(x["fds"] for x in ul), min(x["threads"] for x in ul), max(x["threads"] for x in ul)))
        if len(res.get("checkpoints", [])) > 1:
            print("quiet samples (t s: RSS KiB / fds): " + ", ".join(
                "%d: %d/%d" % (q["t_s"], q["rss_kib"], q["fds"]) for q in res["checkpoints"]))
        if s.get("malloc_in_use") is not None:
            print("malloc in use (KiB), start then quiet samples: %d, %s" % (s["malloc_in_use"] // 1024, ", ".join(
                "%d" % (q["malloc_in_use"] // 1024) for q in res["checkpoints"] if q.get("malloc_in_use"))))
            print("malloc system (KiB), start then quiet samples: %d, %s" % (s["malloc_system"] // 1024, ", ".join(
                "%d" % (q["malloc_system"] // 1024) for q in res["checkpoints"] if q.get("malloc_system"))))
        if res["rss_changes"]:
            print("largest RSS changes by mapping (KiB, start -> end):")
            for m, a, b in res["rss_changes"]:
                print("  %-60s %7d -> %7d" % (m, a, b))
    else:
        print("broker RSS and fds: not sampled (give --pid)")
    if res.get("broker_log_warnings"):
        print("broker log warnings and errors (by kind):")
        for k, n in res["broker_log_warnings"]:
            print("  %6d  %s" % (n, k))
    print("sandboxes healthy at the end: %d of %d" % (res["sandboxes"] - len(res["unhealthy"]), res["sandboxes"]))
    print()
    print("PASS" if not res["failures"] else "FAIL:\n  " + "\n  ".join(res["failures"]))


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=600, help="seconds of load, warm-up included (default 600)")
    ap.add_argument("--warmup", type=int, default=60, help="seconds of load before the start sample (default 60)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument("--sandboxes", type=int, default=20, help="sandboxes (default 20)")
    ap.add_argument("--wrk-connections", type=int, default=8, help="wrk connections, 0 = no wrk (default 8)")
    ap.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--checkpoints", type=int, default=0,
                    help="pauses in the measured part for a quiet RSS/fd sample (default: one a minute)")
    ap.add_argument("--call-timeout", type=int, default=60, help="seconds one call may take (default 60)")
    ap.add_argument("--url", help="a running broker, e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", default=os.environ.get("SANDBOXD_TOKEN"), help="bearer token for --url")
    ap.add_argument("--pid", type=int, help="the running broker's pid (for RSS and fds)")
    ap.add_argument("--malloc-stats", action="store_true",
                    help="own broker only, needs gdb: also read malloc's in-use and system bytes at each "
                    "quiet sample (tells a leak from memory malloc keeps for reuse)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--json-out", metavar="FILE", help="also write the JSON to FILE")
    return ap


def main():
    ap = parser()
    args = ap.parse_args()
    if args.duration <= args.warmup:
        ap.error("--duration must be longer than --warmup")
    if args.wrk_connections and not shutil.which("wrk"):
        sys.exit("bench_load.py: wrk not found (Debian package wrk; or --wrk-connections 0)")

    broker = None
    if args.url:
        url, token, pid = args.url, args.token, args.pid
    else:
        quiet = StderrTap()
        # sandboxes_per_tenant: ours, plus none to spare
        broker = start_broker("bench_load.py", quiet,
                              config={"max_sandboxes_per_tenant": max(20, args.sandboxes)})
        url, token, pid = broker.url, broker.tokens["alice"], broker.proc.pid
        if args.malloc_stats:
            global MALLOC_STATS_LOG
            MALLOC_STATS_LOG = broker.logs[-1]
    try:
        res = run(args, url, token, pid)
        if broker is not None:
            # what the broker logged as a warning or an error, by kind
            lines = [l for l in broker.log_text().splitlines() if re.search(r" (WARN|ERROR) ", l)]
            kinds = {}
            for line in lines:
                k = re.sub(r"[0-9a-f]{8,}|\d+", "N", line.split(" ", 1)[-1])[:160]
                kinds[k] = kinds.get(k, 0) + 1
            res["broker_log_warnings"] = sorted(kinds.items(), key=lambda kv: -kv[1])[:10]
    finally:
        if broker is not None:
            broker.teardown()
    evaluate(res)
    if broker is not None and quiet.failed:
        res["failures"].append("%d harness checks failed at teardown (see stderr)" % quiet.failed)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print_table(res)
    sys.exit(1 if res["failures"] else 0)


if __name__ == "__main__":
    main()
