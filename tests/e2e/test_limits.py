#!/usr/bin/env python3
"""test_limits.py - per-sandbox pids, memory and CPU limits hold while the
broker and other sandboxes keep answering; the per-tenant quota."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402


def test_setup(t, b):
    r = b.create(id="other")
    t.eq(r.status, 201, "create a bystander sandbox", r)


def probe_while(t, b, handle, what):
    """Health and the bystander's exec, repeatedly, while handle runs.
    Returns (probes done while it ran, failures)."""
    during, bad = 0, []
    while not handle.done():
        h = b.get("/v1/health", tenant=None, timeout=10)
        x = b.exec("other", "echo fine", timeout=20)
        running = not handle.done()
        if h.status != 200:
            bad.append(str(h))
        if x.get("stdout") != "fine\n":
            bad.append(str(x))
        if running:
            during += 1
        time.sleep(0.2)
    return during, bad


def test_pids(t, b):
    r = b.create(id="pids", limits={"pids": 64})
    if not t.eq(r.status, 201, "create a sandbox with pids 64", r):
        return
    h = harness.in_thread(b.exec, "pids", "for i in $(seq 200); do sleep 5 & done; wait", timeout_ms=8000,
                          timeout=60)
    time.sleep(1.0)
    during, bad = probe_while(t, b, h, "fork bomb")
    res, err = h.join(60)
    t.ok(res is not None and res.status == 200, "the fork bomb's exec answers", res or err)
    if res is None:
        return
    stderr = res.get("stderr") or ""
    t.ok(re.search(r"fork|Resource temporarily unavailable", stderr, re.I),
         "forks past the pids limit fail (bash reports fork: Resource temporarily unavailable)", res)
    t.ok(during >= 1 and not bad, "health and another sandbox answer while the fork bomb runs",
         "probes during: %d\n%s" % (during, "\n".join(bad)))
    x = wait_until(lambda: b.exec("pids", "echo alive").get("stdout") == "alive\n", 10.0, 0.5)
    t.ok(x is True, "the sandbox runs commands again after the fork bomb", "")
    g = b.get("/v1/sandboxes")
    t.eq(g.status, 200, "the broker still answers after the fork bomb", g)


def test_memory(t, b):
    r = b.create(id="mem", limits={"memory_mb": 128})
    if not t.eq(r.status, 201, "create a sandbox with memory_mb 128", r):
        return
    h = harness.in_thread(b.exec, "mem", "sleep 1; python3 -c 'b=bytearray(512*1024*1024)'", timeout_ms=30000,
                          timeout=60)
    time.sleep(0.2)
    during, bad = probe_while(t, b, h, "memory hog")
    res, err = h.join(60)
    t.ok(res is not None and res.status == 200, "the memory hog's exec answers", res or err)
    if res is None:
        return
    killed = res.get("exit_code") == 137 or (res.get("exit_code") not in (None, 0)
                                             and "MemoryError" in (res.get("stderr") or ""))
    t.ok(killed, "a 512 MB allocation in a 128 MB sandbox is killed (137) or fails (MemoryError)", res)
    t.ok(during >= 1 and not bad, "health and another sandbox answer while the memory hog runs",
         "probes during: %d\n%s" % (during, "\n".join(bad)))
    x = b.exec("mem", "echo alive")
    t.eq(x.get("stdout"), "alive\n", "the sandbox survives its memory hog", x)
    x = b.exec("mem", "python3 -c 'b=bytearray(32*1024*1024); print(len(b))'")
    t.eq(x.get("stdout"), "33554432\n", "allocations under the limit still work", x)


def test_cpu(t, b):
    r = b.create(id="cpu", limits={"cpus": 0.5})
    if not t.eq(r.status, 201, "create a sandbox with cpus 0.5", r):
        return
    prog = "import time\nt=time.time()\nwhile time.time()-t<2: pass\nprint(time.process_time())"
    x = b.exec("cpu", "python3 -c '%s'" % prog)
    try:
        used = float(x.get("stdout"))
    except (TypeError, ValueError):
        used = None
    t.ok(used is not None and used < 1.4,
         "a busy loop of 2 s wall time gets about 1 s of CPU with cpus 0.5", x)


def test_quota(t, b):
    with harness.Broker(t, config={"max_sandboxes_per_tenant": 2}, name="quota broker") as q:
        if not q.port:
            return
        for i in (1, 2):
            r = q.create(id="q%d" % i)
            t.eq(r.status, 201, "quota 2: sandbox %d is created" % i, r)
        r = q.create(id="q3")
        t.eq((r.status, r.err_code()), (429, "quota_exceeded"), "quota 2: the third create answers 429 quota_exceeded",
             r)
        t.eq(r.cid, None, "the refused create starts no container", r)
        r = q.create()
        t.eq(r.status, 429, "quota 2: a create without id is refused too", r)
        r = q.create(id="q1")
        t.eq(r.status, 200, "at the quota, create of an existing id still returns it (200)", r)
        r = q.create(tenant="bob", id="q1")
        t.eq(r.status, 201, "the quota is per tenant: bob can still create", r)
        d = q.delete("/v1/sandboxes/q1")
        t.eq(d.status, 200, "delete one of alice's sandboxes", d)
        r = q.create(id="q3")
        t.eq(r.status, 201, "after a delete alice can create again", r)


if __name__ == "__main__":
    harness.main([test_setup, test_pids, test_memory, test_cpu, test_quota])
