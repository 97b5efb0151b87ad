#!/usr/bin/env python3
"""test_restart.py - SIGKILL the broker and start it again on the same state
dir: sandboxes are kept (listed, reachable, files intact), a stopped
container is restarted, and one that expired meanwhile is reaped."""

import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402


def test_restart(t, b):
    keep = b.create(id="keep", keepalive_seconds=600, env={"K": "v"})
    t.eq(keep.status, 201, "create sandbox keep", keep)
    w = b.exec("keep", "echo persisted > /workspace/p && cat /workspace/p")
    t.eq(w.get("stdout"), "persisted\n", "write a file in keep", w)
    revive = b.create(id="revive")
    t.eq(revive.status, 201, "create sandbox revive", revive)
    w = b.exec("revive", "echo revived > /workspace/r && cat /workspace/r")
    t.eq(w.get("stdout"), "revived\n", "write a file in revive", w)
    short = b.create(id="short", keepalive_seconds=2)
    t_short = time.monotonic()
    t.eq(short.status, 201, "create sandbox short with keepalive 2 s", short)

    b.kill9()
    t.ok(b.proc.returncode == -9, "the broker dies of SIGKILL", b.proc.returncode)

    # The runtime stops revive's container while the broker is down.
    root = os.path.join(b.state, "runc")
    if revive.cid:
        subprocess.run([harness.RUNTIME, "--root", root, "kill", revive.cid, "KILL"], capture_output=True)
    stopped = wait_until(lambda: harness.runc_state(b.state, revive.cid) != "running", 5.0)
    t.ok(revive.cid is not None and stopped, "revive's container is stopped while the broker is down",
         "cid %s state %s" % (revive.cid, harness.runc_state(b.state, revive.cid) if revive.cid else None))
    t.eq(harness.runc_state(b.state, keep.cid) if keep.cid else None, "running",
         "keep's container keeps running while the broker is down", keep.cid)
    time.sleep(max(0.0, t_short + 3.5 - time.monotonic()))  # short expires while the broker is down

    if not b.start():
        return
    t_up = time.monotonic()

    g = b.get("/v1/sandboxes/keep")
    t.eq(g.status, 200, "keep is still there after the restart", g)
    t.ok(g.get("created_at") == keep.get("created_at") and g.get("expires_at") == keep.get("expires_at")
         and g.get("env") == {"K": "v"}, "keep has the same created_at, expires_at and env", g)
    t.eq(g.get("status"), "running", "keep is running", g)
    lst = b.get("/v1/sandboxes")
    ids = sorted(s.get("id") for s in lst.get("sandboxes", []))
    t.ok("keep" in ids and "revive" in ids, "keep and revive are listed after the restart", lst)
    x = b.exec("keep", "cat /workspace/p; echo $K")
    t.eq(x.get("stdout"), "persisted\nv\n", "exec works in keep after the restart and its file is intact", x)
    h, s = b.sse("/v1/sandboxes/keep/exec", {"command": "echo streamed"})
    evs = s.events() if s else []
    t.eq([e.name for e in evs], ["start", "stdout", "complete"], "streamed exec works after the restart", evs or h)
    p = b.patch("/v1/sandboxes/keep", {"keepalive_longer_by_seconds": 60})
    t.eq(p.status, 200, "PATCH works after the restart", p)

    gone = wait_until(lambda: b.get("/v1/sandboxes/short").status == 404, 3.0, 0.2)
    t.ok(gone is True, "short, expired while the broker was down, is reaped within 3 s of the restart",
         "after %.2f s" % (time.monotonic() - t_up))
    left = wait_until(lambda: not b.container_gone(short.cid), 2.0) or b.container_gone(short.cid)
    t.ok(left is True, "reaping short removed its container, mounts, cgroups and directory",
         "\n".join(left) if isinstance(left, list) else "")

    up = wait_until(lambda: b.get("/v1/sandboxes/revive").get("status") == "running", 10.0, 0.25)
    t.ok(up is True, "revive, whose container had stopped, is running again after the restart",
         b.get("/v1/sandboxes/revive"))
    x = b.exec("revive", "cat /workspace/r")
    t.eq(x.get("stdout"), "revived\n", "revive runs commands and its file is intact", x)

    n = b.create(id="fresh")
    t.eq(n.status, 201, "new sandboxes can be created after the restart", n)
    x = b.exec("fresh", "echo new")
    t.eq(x.get("stdout"), "new\n", "and run commands", x)


def test_second_restart(t, b):
    b.kill9()
    if not b.start():
        return
    x = b.exec("keep", "cat /workspace/p")
    t.eq(x.get("stdout"), "persisted\n", "a second SIGKILL and restart keeps keep and its file", x)


def test_keyless_agent(t, b):
    """A sandbox whose container predates agent keys (simulated by removing
    its agent.key while the broker is down) is restarted on its files by
    recovery, and answers again."""
    r = b.create(id="old", keepalive_seconds=600)
    t.eq(r.status, 201, "create sandbox old", r)
    w = b.exec("old", "echo kept > /workspace/k")
    t.eq(w.get("exit_code"), 0, "write a file in it", w)
    b.stop()
    keys = [os.path.join(d, "agent.key") for d in glob.glob(os.path.join(b.state, "sandboxes", "*"))]
    for k in keys:
        os.unlink(k)
    t.ok(keys, "agent.key files removed while the broker is down (%d)" % len(keys))
    if not b.start():
        return
    r = b.exec("old", "cat /workspace/k")
    t.eq(r.get("stdout"), "kept\n", "the keyless sandbox was restarted on its files and answers", r)
    t.ok("started without an agent key" in b.log_text(), "recovery logged the restart")


if __name__ == "__main__":
    harness.main([test_restart, test_second_restart, test_keyless_agent])
