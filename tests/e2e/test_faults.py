#!/usr/bin/env python3
"""test_faults.py - faults (issue 8): the broker SIGKILLed twenty times under
load keeps every sandbox, context (with its kernel's state) and file, calls
in flight end with an error or a dropped connection and never hang, and the
registry stays consistent; a killed kernel and a killed container init are
detected, reported to calls in flight and recovered; a full or read-only
state directory gives clean 5xx errors and recovers without a restart.

The contract is docs/operations.md ("Restart and recovery")."""

import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

BOXES = ["f0", "f1", "f2", "f3"]
ROUNDS = 20
CALL_TIMEOUT = 45  # no single call may take longer: past it, it counts as a hang


def code_path(sb):
    return "/v1/sandboxes/%s/code" % sb


def run(b, sb, code, ctx=None, timeout=90, **kw):
    body = {"code": code}
    if ctx is not None:
        body["context_id"] = ctx
    return b.post(code_path(sb), body, timeout=timeout, **kw)


def main_text(r):
    rs = r.get("results") if isinstance(r.get("results"), list) else []
    mains = [x for x in rs if isinstance(x, dict) and x.get("is_main_result") is True]
    return mains[0].get("text") if len(mains) == 1 else None


def err_name(r):
    e = r.get("error")
    return e.get("name") if isinstance(e, dict) else None


def file_path(sb, path):
    return "/v1/sandboxes/%s/files%s" % (sb, path)


def integrity(state):
    """PRAGMA integrity_check on the registry, read-only."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state, "registry.db"), uri=True, timeout=10)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def ctx_of(b, sb, ctx):
    return b.get("/v1/sandboxes/%s/contexts/%s" % (sb, ctx))


# ---------------------------------------------------------------- survival


def test_setup(t, b):
    for sb in BOXES:
        r = b.create(id=sb, keepalive_seconds=3600)
        t.eq(r.status, 201, "create sandbox %s" % sb, r)
        c = b.post("/v1/sandboxes/%s/contexts" % sb, {"cwd": "/tmp", "env": {"FAULT": sb}}, timeout=90)
        t.eq(c.status, 201, "create a context in %s" % sb, c)
        b.ctx = getattr(b, "ctx", {})
        b.ctx[sb] = c.get("id")
        r = run(b, sb, "x = 41\nimport os\nos.getcwd() + ' ' + os.environ['FAULT']", ctx=c.get("id"))
        t.eq(main_text(r), "'/tmp %s'" % sb, "set x = 41 in %s's context (cwd and env applied)" % sb, r)
        r = run(b, sb, "y = 'default'")
        t.eq(r.status, 200, "the default python context of %s holds y" % sb, r)


def check_contexts(t, b, what):
    """Every context is listed and its kernel still holds x."""
    ok = True
    for sb in BOXES:
        ctx = b.ctx.get(sb)
        lst = b.get("/v1/sandboxes/%s/contexts" % sb)
        ids = sorted(c.get("id") for c in lst.get("contexts", []) if isinstance(c, dict))
        if ctx not in ids or "default-python" not in ids:
            t.ok(False, "%s: %s's contexts are listed" % (what, sb), lst)
            ok = False
            continue
        r = run(b, sb, "x + 1", ctx=ctx)
        if main_text(r) != "42":
            t.ok(False, "%s: %s's context still holds x = 41" % (what, sb), r)
            ok = False
        r = run(b, sb, "y")
        if main_text(r) != "'default'":
            t.ok(False, "%s: %s's default context still holds y" % (what, sb), r)
            ok = False
    return ok


def test_graceful_restart_keeps_contexts(t, b):
    t.ok(b.restart(), "the broker stops with SIGTERM and starts again")
    ok = check_contexts(t, b, "after a SIGTERM restart")
    t.ok(ok, "after a SIGTERM restart every context is listed and its kernel kept its variables")
    for sb in BOXES[:1]:
        c = ctx_of(b, sb, b.ctx[sb])
        t.ok(c.get("restarted") is False and c.get("cwd") == "/tmp" and c.get("env", {}).get("FAULT") == sb,
             "the context kept its cwd and env and says restarted: false", c)


def test_sigkill_keeps_contexts(t, b):
    b.kill9()
    if not b.start():
        return
    ok = check_contexts(t, b, "after SIGKILL")
    t.ok(ok, "after SIGKILL every context is listed and its kernel kept its variables")


# ------------------------------------------------------- SIGKILL under load


class Load:
    """Client threads looping over exec, runCode in the named context and
    file upload/download on every sandbox while the broker is killed."""

    def __init__(self, b):
        self.b = b
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.files = {}  # (sb, path) -> sha256 of a body uploaded with a 200
        self.stats = {"ok": 0, "failed": 0, "dropped": 0, "refused": 0, "hangs": 0, "wrong": 0}
        self.wrong = []
        self.threads = []
        self.seq = 0

    def count(self, what, detail=None):
        with self.lock:
            self.stats[what] += 1
            if what in ("wrong", "hangs") and len(self.wrong) < 10:
                self.wrong.append(detail)

    def call(self, method, path, body=None, raw=None):
        """One bounded call: a Resp, or None when the connection failed or
        dropped (counted), or "hang" past CALL_TIMEOUT (counted)."""
        port = self.b.port
        h = {"Authorization": "Bearer " + self.b.tokens["alice"]}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return harness.Resp(r.status, hdrs, harness._parse_body(hdrs, payload), payload, path)
        except socket.timeout:
            self.count("hangs", "%s %s: no answer within %d s" % (method, path, CALL_TIMEOUT))
            return "hang"
        except ConnectionRefusedError:
            self.count("refused")  # the broker is down: not a call in flight
            time.sleep(0.05)
            return None
        except (OSError, http.client.HTTPException):
            self.count("dropped")  # in flight when the broker died
            return None
        finally:
            conn.close()

    def worker(self, k):
        rnd = random.Random(k)
        while not self.stop.is_set():
            sb = rnd.choice(BOXES)
            op = rnd.choice(["exec", "code", "code", "put", "get"])
            if op == "exec":
                r = self.call("POST", "/v1/sandboxes/%s/exec" % sb, {"command": "echo hi; sleep 0.2"})
                if isinstance(r, harness.Resp):
                    if r.status == 200 and r.get("stdout") == "hi\n":
                        self.count("ok")
                    elif r.status >= 500 or r.status == 409:
                        self.count("failed")
                    else:
                        self.count("wrong", ("exec", r.status, str(r)[:300]))
            elif op == "code":
                r = self.call("POST", code_path(sb), {"code": "import time\ntime.sleep(0.3)\nx + 1",
                                                      "context_id": self.b.ctx[sb]})
                if isinstance(r, harness.Resp):
                    if r.status == 200 and main_text(r) == "42":
                        self.count("ok")
                    elif r.status >= 500 or (r.status == 200 and err_name(r) is not None):
                        self.count("failed")  # e.g. interrupted by the recovery
                    else:
                        self.count("wrong", ("code", r.status, str(r)[:300]))
            elif op == "put":
                with self.lock:
                    self.seq += 1
                    n = self.seq
                body = os.urandom(rnd.randint(1, 256 * 1024))
                path = "/workspace/load-%d-%d.bin" % (k, n)
                r = self.call("PUT", file_path(sb, path), raw=body)
                if isinstance(r, harness.Resp):
                    if r.status in (200, 201, 204):
                        with self.lock:
                            self.files[(sb, path)] = hashlib.sha256(body).hexdigest()
                        self.count("ok")
                    elif r.status >= 500:
                        self.count("failed")
                    else:
                        self.count("wrong", ("put", r.status, str(r)[:300]))
            else:
                with self.lock:
                    known = list(self.files.items())
                if not known:
                    continue
                (fsb, path), sha = rnd.choice(known)
                r = self.call("GET", file_path(fsb, path))
                if isinstance(r, harness.Resp):
                    if r.status == 200 and hashlib.sha256(r.raw).hexdigest() == sha:
                        self.count("ok")
                    elif r.status >= 500:
                        self.count("failed")
                    else:
                        self.count("wrong", ("get", path, r.status, len(r.raw)))

    def start(self, n=4):
        for k in range(n):
            th = threading.Thread(target=self.worker, args=(k,), daemon=True)
            th.start()
            self.threads.append(th)

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(CALL_TIMEOUT + 10)
        return all(not th.is_alive() for th in self.threads)


def test_sigkill_under_load(t, b):
    load = Load(b)
    load.start(4)
    rng = random.Random(8)
    listed_ok = ctx_ok = integrity_ok = True
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        time.sleep(rng.uniform(0.2, 1.5))
        b.kill9()
        ic = integrity(b.state)
        if ic != "ok":
            integrity_ok = False
            t.ok(False, "round %d: the registry passes PRAGMA integrity_check" % (rnd + 1), ic)
        if not b.start():
            break
        lst = b.get("/v1/sandboxes")
        ids = sorted(s.get("id") for s in lst.get("sandboxes", []))
        if ids != BOXES:
            listed_ok = False
            t.ok(False, "round %d: every sandbox is listed" % (rnd + 1), lst)
        for sb in BOXES:
            cl = b.get("/v1/sandboxes/%s/contexts" % sb)
            cids = sorted(c.get("id") for c in cl.get("contexts", []) if isinstance(c, dict))
            if cids != sorted([b.ctx[sb], "default-python"]):
                ctx_ok = False
                t.ok(False, "round %d: %s's contexts are listed" % (rnd + 1, sb), cl)
    finished = load.finish()
    t.diag("%d rounds in %.1f s; calls: %s" % (ROUNDS, time.monotonic() - t0, load.stats))
    t.ok(finished, "every client thread finished (no call blocked past its timeout)")
    t.ok(listed_ok, "after each of %d SIGKILLs every sandbox is listed" % ROUNDS)
    t.ok(ctx_ok, "after each SIGKILL every context is listed")
    t.ok(integrity_ok, "after each SIGKILL the registry passes PRAGMA integrity_check")
    t.eq(load.stats["hangs"], 0, "no call hung (each bounded by %d s)" % CALL_TIMEOUT, load.wrong)
    t.eq(load.stats["wrong"], 0, "every call either succeeded with the right answer or failed cleanly",
         load.wrong)
    t.ok(load.stats["ok"] > 100, "the load made progress between kills (%d calls succeeded)" % load.stats["ok"],
         load.stats)
    t.ok(load.stats["dropped"] + load.stats["failed"] > 0,
         "calls in flight at a kill ended with an error or a dropped connection (%d dropped)"
         % load.stats["dropped"],
         load.stats)
    ok = check_contexts(t, b, "after %d SIGKILLs" % ROUNDS)
    t.ok(ok, "after %d SIGKILLs every context's kernel still holds x = 41 and y" % ROUNDS)
    bad = []
    for (sb, path), sha in sorted(load.files.items()):
        r = b.get(file_path(sb, path))
        if r.status != 200 or hashlib.sha256(r.raw).hexdigest() != sha:
            bad.append((sb, path, r.status))
    t.ok(not bad and len(load.files) > 10,
         "all %d files uploaded with a 200 are there byte-identical" % len(load.files), bad[:10])


# ------------------------------------------------------ kernel and init death


def bounded(fn, *a, **kw):
    """Run fn in a thread; (result, error, seconds) — the caller joins with a
    timeout so a hang shows as a failure, not a stuck test."""
    h = harness.in_thread(fn, *a, **kw)
    return h


def host_kernel_pids(cid):
    """Host pids of the IPython kernels in container cid's cgroup."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % d) as f:
                if cid not in f.read():
                    continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if b"ipykernel_launcher" in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def test_kernel_killed(t, b):
    r = b.create(id="kk", keepalive_seconds=600)
    t.eq(r.status, 201, "create sandbox kk", r)
    cid = r.cid
    c = b.post("/v1/sandboxes/kk/contexts", {}, timeout=90)
    ctx = c.get("id")
    run(b, "kk", "x = 41", ctx=ctx)
    h = bounded(run, b, "kk", "import time\ntime.sleep(60)", ctx=ctx, timeout=CALL_TIMEOUT)
    time.sleep(1.0)
    k = b.exec("kk", "pkill -9 -f ipykernel_launcher; echo killed")
    t.eq(k.get("stdout"), "killed\n", "kill -9 every ipykernel from inside the sandbox", k)
    res, exc = h.join(20)
    t.ok(h.done(), "the run in flight ends within 20 s of the kill (no hang)")
    t.ok(res is not None and res.status == 200 and err_name(res) == "KernelDied",
         "the run in flight reports error KernelDied", res if res is not None else exc)
    r = run(b, "kk", "'x' in dir()", ctx=ctx)
    t.eq(main_text(r), "False", "the context runs again on a fresh kernel (state gone)", r)
    t.eq(ctx_of(b, "kk", ctx).get("restarted"), True, "the context says restarted: true", ctx_of(b, "kk", ctx))

    # The same for a kernel re-attached after a broker restart: its death is
    # noticed through the watcher, not the (gone) exec call that started it.
    run(b, "kk", "x = 41", ctx=ctx)
    b.kill9()
    if not b.start():
        return
    t.eq(main_text(run(b, "kk", "x + 1", ctx=ctx)), "42", "after a SIGKILL the context kept x")
    h = bounded(run, b, "kk", "import time\ntime.sleep(60)", ctx=ctx, timeout=CALL_TIMEOUT)
    time.sleep(1.0)
    pids = host_kernel_pids(cid) if cid else []
    for pid in pids:  # this time from the host
        os.kill(pid, 9)
    t.ok(len(pids) >= 1, "kill -9 the sandbox's kernels from the host (%d processes)" % len(pids))
    res, exc = h.join(20)
    t.ok(h.done() and res is not None and err_name(res) == "KernelDied",
         "a re-attached kernel killed during a run: the run reports KernelDied", res if res is not None else exc)
    r = run(b, "kk", "1 + 1", ctx=ctx)
    t.eq(main_text(r), "2", "... and the context gets a fresh kernel", r)
    t.eq(b.delete("/v1/sandboxes/kk").status, 200, "delete kk")


def init_pid(b, cid):
    out = subprocess.run([harness.RUNTIME, "--root", os.path.join(b.state, "runc"), "state", cid],
                         capture_output=True, text=True)
    try:
        return json.loads(out.stdout).get("pid")
    except ValueError:
        return None


def test_init_killed(t, b):
    r = b.create(id="ag", keepalive_seconds=600)
    t.eq(r.status, 201, "create sandbox ag", r)
    cid = r.cid
    w = b.exec("ag", "echo kept > /workspace/keep.txt && cat /workspace/keep.txt")
    t.eq(w.get("stdout"), "kept\n", "write a file in ag", w)
    c = b.post("/v1/sandboxes/ag/contexts", {}, timeout=90)
    ctx = c.get("id")
    run(b, "ag", "x = 41", ctx=ctx)
    pid = init_pid(b, cid) if cid else None
    t.ok(isinstance(pid, int) and pid > 1, "the container's init has a host pid", pid)
    if not isinstance(pid, int):
        return
    he = bounded(b.exec, "ag", "sleep 60", timeout=CALL_TIMEOUT)
    hc = bounded(run, b, "ag", "import time\ntime.sleep(60)", ctx=ctx, timeout=CALL_TIMEOUT)
    time.sleep(1.0)
    t0 = time.monotonic()
    os.kill(pid, 9)
    ex, exc = he.join(15)
    dt = time.monotonic() - t0
    t.ok(he.done() and ex is not None and ex.status == 503 and ex.err_code() == "sandbox_unavailable",
         "an exec in flight ends with 503 sandbox_unavailable (%.2f s after the kill)" % dt,
         ex if ex is not None else exc)
    t.ok(ex is not None and "agent" in (ex.err_message() or ""), "its message says the agent went away", ex)
    cr, exc = hc.join(15)
    t.ok(hc.done() and cr is not None and (cr.status == 503 or err_name(cr) == "KernelDied"),
         "a runCode in flight ends with KernelDied or a 503", cr if cr is not None else exc)
    up = wait_until(lambda: b.exec("ag", "cat /workspace/keep.txt", timeout=20).get("stdout") == "kept\n", 20, 0.5)
    t.ok(up, "the sandbox is restarted within 20 s with its files kept (%.1f s)" % (time.monotonic() - t0))
    t.ok(init_pid(b, cid) not in (None, pid), "on a new init process", init_pid(b, cid))
    lst = b.get("/v1/sandboxes/ag/contexts")
    t.ok(ctx in [x.get("id") for x in lst.get("contexts", [])], "the context is still listed", lst)
    t.eq(ctx_of(b, "ag", ctx).get("restarted"), True, "and says restarted: true (its state was lost)",
         ctx_of(b, "ag", ctx))
    r = run(b, "ag", "'x' in dir()", ctx=ctx)
    t.eq(main_text(r), "False", "it runs code on a fresh kernel", r)
    t.eq(b.get("/v1/sandboxes/ag").get("status"), "running", "the sandbox reports running")
    t.eq(b.delete("/v1/sandboxes/ag").status, 200, "delete ag")


# ------------------------------------------------------- state dir full / ro

DISK_MB = 300


def fill(path):
    """Write a file until the file system is full; the bytes written."""
    n = 0
    chunk = b"\0" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096):
            while True:
                try:
                    n += os.write(fd, chunk[:size])
                except OSError:
                    break
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return n


def writing_calls(b, tag):
    """Every kind of call that must write to the state dir: (what, Resp or
    the exception it raised)."""
    out = []
    calls = [
        ("create a sandbox", lambda: b.post("/v1/sandboxes", {"id": "new-" + tag}, timeout=CALL_TIMEOUT)),
        ("set sandbox env", lambda: b.post("/v1/sandboxes/d1/env", {"T": tag}, timeout=CALL_TIMEOUT)),
        ("create a context", lambda: b.post("/v1/sandboxes/d1/contexts", {}, timeout=CALL_TIMEOUT)),
        ("upload a file", lambda: b.request("PUT", file_path("d1", "/workspace/%s.bin" % tag),
                                            raw=os.urandom(2 << 20), timeout=CALL_TIMEOUT)),
        ("make a backup", lambda: b.post("/v1/sandboxes/d1/backups", {"dir": "/workspace"}, timeout=CALL_TIMEOUT)),
    ]
    for what, fn in calls:
        try:
            out.append((what, fn()))
        except Exception as e:  # a hang (timeout) or a dropped connection
            out.append((what, e))
    return out


def check_faulted(t, b, tag, results):
    for what, r in results:
        if not isinstance(r, harness.Resp):
            t.ok(False, "%s (%s): answered, without hanging or dropping" % (what, tag), repr(r))
            continue
        clean = r.status in (503, 507) and harness.error_shape_ok(r.body) and r.err_message()
        t.ok(clean or r.status in (200, 201),
             "%s (%s): %d %s %s" % (what, tag, r.status, r.err_code() or "", (r.err_message() or "")[:120]), r)
        if clean:
            continue
        # A success must not have lost anything.
        if what == "upload a file":
            g = b.get(file_path("d1", "/workspace/%s.bin" % tag))
            t.eq(g.status, 200, "... and the file it accepted reads back", g)
        if what == "set sandbox env":
            t.eq(b.get("/v1/sandboxes/d1").get("env", {}).get("T"), tag, "... and the env it accepted is kept")
        if what == "create a sandbox":
            t.eq(b.exec("new-" + tag, "echo up").get("stdout"), "up\n", "... and the sandbox it made works")
            b.delete("/v1/sandboxes/new-" + tag)


def test_state_disk(t, b):
    d = harness.Broker(t, config={"default_disk_mb": 64, "disk_reserve_mb": 8, "backup_min_free_mb": 8,
                                  "warm_kernels_python": 0}, name="diskbroker")
    img = os.path.join(d.tmp, "state.img")
    mnt = os.path.join(d.tmp, "disk")
    os.mkdir(mnt)
    mounted = False
    try:
        with open(img, "wb") as f:
            f.truncate(DISK_MB << 20)
        mk = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True, text=True)
        mo = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
        mounted = mo.returncode == 0
        # Private: the bind mounts below must not propagate anywhere.
        subprocess.run(["mount", "--make-private", mnt], capture_output=True)
        t.ok(mk.returncode == 0 and mounted, "a %d MiB ext4 state dir is mounted" % DISK_MB, mk.stderr + mo.stderr)
        if not mounted:
            return
        d.state = os.path.join(mnt, "st")
        os.mkdir(d.state, 0o700)
        if not d.start():
            return
        r = d.create(id="d1", keepalive_seconds=600)
        t.eq(r.status, 201, "create sandbox d1 on the small state dir", r)
        c = d.post("/v1/sandboxes/d1/contexts", {}, timeout=90)
        t.eq(c.status, 201, "create a context in d1", c)
        ctx = c.get("id")
        run(d, "d1", "x = 41", ctx=ctx)
        before = d.request("PUT", file_path("d1", "/workspace/before.txt"), raw=b"before")
        t.ok(before.status in (200, 201), "upload a file before the disk fills", before)

        filler = os.path.join(mnt, "filler")
        n = fill(filler)
        t.ok(os.statvfs(mnt).f_bavail < 64, "fill the state dir's file system (%d MiB written)" % (n >> 20))
        check_faulted(t, d, "full", writing_calls(d, "full"))
        t.ok(d.alive(), "the broker is still running with its state dir full")
        x = d.exec("d1", "cat /workspace/before.txt")
        t.eq(x.get("stdout"), "before", "reads and execs still work while it is full", x)
        t.eq(main_text(run(d, "d1", "x + 1", ctx=ctx)), "42", "code still runs while it is full")

        os.unlink(filler)
        ok = check_recovered(t, d, "space")
        t.ok(ok, "once space returns every writing call works again, without a restart")

        # A file system cannot be remounted read-only while the broker holds
        # files open for writing (the registry, the layer images): a
        # read-only bind of the state dir over itself makes every new open
        # for writing fail with EROFS, as after an error remount.
        ro = [subprocess.run(a, capture_output=True, text=True) for a in
              (["mount", "--rbind", d.state, d.state], ["mount", "--make-rprivate", d.state],
               ["mount", "-o", "remount,bind,ro", d.state])]
        t.ok(all(x.returncode == 0 for x in ro), "make the state dir read-only", [x.stderr for x in ro])
        check_faulted(t, d, "ro", writing_calls(d, "ro"))
        t.ok(d.alive(), "the broker is still running with its state dir read-only")
        t.eq(main_text(run(d, "d1", "x + 1", ctx=ctx)), "42", "code still runs while it is read-only")
        rw = subprocess.run(["umount", "-l", d.state], capture_output=True, text=True)
        t.eq(rw.returncode, 0, "make it writable again", rw.stderr)
        ok = check_recovered(t, d, "rw")
        t.ok(ok, "once it is writable again every writing call works, without a restart")

        t.ok(d.stop(), "stop the broker")
        t.eq(integrity(d.state), "ok", "the registry passes PRAGMA integrity_check")
        if not d.start():
            return
        t.eq(main_text(run(d, "d1", "x + 1", ctx=ctx)), "42", "after a restart the context kept its state")
        t.eq(d.get("/v1/sandboxes/d1").status, 200, "sandbox d1 is there after the restart")
    finally:
        d.teardown()
        if mounted:
            subprocess.run(["umount", mnt], capture_output=True)
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(d.tmp, ignore_errors=True)


def check_recovered(t, d, tag):
    ok = True
    r = d.post("/v1/sandboxes", {"id": "back-" + tag}, timeout=CALL_TIMEOUT)
    ok &= t.eq(r.status, 201, "%s: create works" % tag, r)
    e = d.post("/v1/sandboxes/d1/env", {"T": tag}, timeout=CALL_TIMEOUT)
    ok &= t.eq(e.status, 200, "%s: set env works" % tag, e)
    c = d.post("/v1/sandboxes/d1/contexts", {}, timeout=CALL_TIMEOUT)
    ok &= t.eq(c.status, 201, "%s: create a context works" % tag, c)
    if c.status == 201:
        d.delete("/v1/sandboxes/d1/contexts/" + c.get("id"))
    if r.status == 201:
        d.delete("/v1/sandboxes/back-" + tag)
    body = os.urandom(1 << 20)
    p = d.request("PUT", file_path("d1", "/workspace/after-%s.bin" % tag), raw=body, timeout=CALL_TIMEOUT)
    g = d.get(file_path("d1", "/workspace/after-%s.bin" % tag))
    ok &= t.ok(p.status in (200, 201) and g.raw == body, "%s: upload works" % tag, p)
    return ok


if __name__ == "__main__":
    tests = [test_setup, test_graceful_restart_keeps_contexts, test_sigkill_keeps_contexts,
             test_sigkill_under_load, test_kernel_killed, test_init_killed, test_state_disk]
    only = os.environ.get("FAULTS_ONLY")
    if only:
        tests = [fn for fn in tests if fn.__name__ in only.split(",")]
    harness.main(tests)
