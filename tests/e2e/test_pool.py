#!/usr/bin/env python3
"""test_pool.py - the warm pool of ready sandboxes (warm_sandboxes = 1).

What a user notices: a new sandbox answers its first runCode at once
(container and kernel were already running), it still gets the limits it
asked for, nobody sees the pooled sandbox, and it is gone with the broker."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ADOPTED_RE = re.compile(r"sandbox=(\S+) cid=(sbx-[0-9a-f]+): created from the warm pool")
READY_RE = re.compile(r"cid=(sbx-[0-9a-f]+) kernel=\S+ \(python\): ready")


def adopted_cid(b, sid):
    for m in ADOPTED_RE.finditer(b.log_text()):
        if m.group(1) == sid:
            return m.group(2)
    return None


def pool_ready(b, exclude=()):
    """True once a pooled container (one not in exclude) runs with a warm
    Python kernel."""
    ready = set(READY_RE.findall(b.log_text())) - set(exclude)
    return bool(b.cids_now() & ready)


def test_pool(t, b):
    t.ok(harness.wait_until(lambda: pool_ready(b), 30), "the broker warms a sandbox at start-up")
    t.eq(b.get("/v1/sandboxes").body, {"sandboxes": []}, "the pooled sandbox is not listed for a tenant")
    t.eq(b.get("/v1/sandboxes", tenant="bob").body, {"sandboxes": []}, "nor for another tenant")

    t0 = time.monotonic()
    r = b.post("/v1/sandboxes", {"id": "warm", "limits": {"memory_mb": 256, "pids": 128}})
    run = b.post("/v1/sandboxes/warm/code", {"code": "6*7"})
    elapsed = time.monotonic() - t0
    t.eq(r.status, 201, "create answers 201", r)
    t.eq(run.status, 200, "the first runCode answers", run)
    texts = [x.get("text") for x in (run.body or {}).get("results", [])]
    t.eq(texts, ["42"], "with the right result", run)
    t.ok(elapsed < 1.0, "new sandbox + first runCode from the pools in %.0f ms (< 1 s; a cold "
         "container + kernel start is slower)" % (elapsed * 1000))
    cid = adopted_cid(b, "warm")
    t.ok(cid is not None, "the broker says the sandbox came from the pool", b.log_tail(20))
    if cid:
        mem = harness.read_text("/sys/fs/cgroup/memory/sandboxd/%s/memory.limit_in_bytes" % cid)
        pids = harness.read_text("/sys/fs/cgroup/pids/sandboxd/%s/pids.max" % cid)
        t.eq(mem.strip(), str(256 * 1024 * 1024), "the adopted sandbox has the memory limit asked for")
        t.eq(pids.strip(), "128", "and the pids limit asked for")
    env = b.exec("warm", "echo $HOME; id -u")
    t.eq(env.body.get("stdout") if env.body else None, "/workspace\n1000\n", "exec works in it", env)

    t.ok(harness.wait_until(lambda: pool_ready(b, exclude=[cid]), 30),
         "the pool refills behind the adoption")
    r2 = b.post("/v1/sandboxes", {"id": "warm2"})
    t.eq(r2.status, 201, "a second create adopts the refilled one", r2)
    t.ok(adopted_cid(b, "warm2") not in (None, cid), "with a different container")

    # A quota or validation refusal does not consume the pool.
    before = b.cids_now()
    bad = b.post("/v1/sandboxes", {"limits": {"memory_mb": 1}})
    t.eq(bad.status, 400, "a bad create is refused", bad)
    t.eq(b.cids_now(), before, "and takes no sandbox from the pool")


if __name__ == "__main__":
    harness.main([test_pool], config={"warm_sandboxes": 1})
