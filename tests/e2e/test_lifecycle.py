#!/usr/bin/env python3
"""test_lifecycle.py - create, get-or-create, list, get, keep-alive, delete
and expiry of sandboxes, against a real broker and real containers."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import iso_to_epoch, wait_until  # noqa: E402

DEFAULT_LIMITS = {"memory_mb": 1024, "cpus": 1.0, "pids": 512, "disk_mb": 2048}


def check_sandbox_fields(t, r, what):
    b = r.body if isinstance(r.body, dict) else {}
    t.ok(isinstance(b.get("id"), str) and harness.ID_RE.match(b.get("id", "")), what + ": has a valid id", r)
    t.eq(b.get("status"), "running", what + ": status is running", r)
    ok_times = all(isinstance(b.get(k), str) and harness.TIME_RE.match(b[k]) for k in ("created_at", "expires_at"))
    t.ok(ok_times, what + ": created_at and expires_at are RFC 3339 UTC times", r)
    return ok_times


def test_health(t, b):
    r = b.get("/v1/health", tenant=None)
    t.eq(r.status, 200, "GET /v1/health answers 200 without a token", r)
    t.ok(r.get("status") == "ok" and isinstance(r.get("version"), str), "health says status ok with a version", r)


def test_create_generated(t, b):
    now = time.time()
    r = b.create()
    if not t.eq(r.status, 201, "create without id answers 201", r):
        return
    if not check_sandbox_fields(t, r, "generated sandbox"):
        return
    c, e = iso_to_epoch(r.body["created_at"]), iso_to_epoch(r.body["expires_at"])
    t.ok(abs(c - now) < 30, "created_at is the current time", "created_at %s, host time %.3f" % (c, now))
    t.ok(c < e and abs((e - c) - 600) < 1.5, "expires_at is created_at + 600 s (default keepalive)", r)
    t.eq(r.get("limits"), DEFAULT_LIMITS, "default limits are reported", r)
    t.eq(r.get("env"), {}, "default env is empty", r)
    sid = r.body["id"]
    t.eq(harness.runc_state(b.state, r.cid) if r.cid else None, "running",
         "a running container exists on the host for the new sandbox", "cid %s; %s" % (r.cid, r))
    x = b.exec(sid, "echo hi")
    t.ok(x.status == 200 and x.get("stdout") == "hi\n", "the generated sandbox runs a command", x)
    r2 = b.create()
    t.ok(r2.status == 201 and r2.get("id") not in (None, sid), "a second create without id gets a different id",
         r2)
    b.generated = [sid, r2.get("id")]


def test_create_with_id(t, b):
    body = {"id": "box-1", "keepalive_seconds": 900, "env": {"FOO": "bar"},
            "limits": {"memory_mb": 512, "cpus": 0.5, "pids": 256, "disk_mb": 256}}
    r = b.create(**body)
    if not t.eq(r.status, 201, "create with client id answers 201", r):
        return
    check_sandbox_fields(t, r, "box-1")
    t.eq(r.get("id"), "box-1", "the client's id is kept", r)
    t.eq(r.get("env"), {"FOO": "bar"}, "env is stored", r)
    t.eq(r.get("limits"), body["limits"], "limits are stored", r)
    c, e = iso_to_epoch(r.body["created_at"]), iso_to_epoch(r.body["expires_at"])
    t.ok(abs((e - c) - 900) < 1.5, "expires_at is created_at + keepalive_seconds", r)
    b.box1 = r
    time.sleep(1.1)  # so that a re-create would show a different created_at
    r2 = b.create(id="box-1", keepalive_seconds=60, env={"OTHER": "x"})
    t.eq(r2.status, 200, "create with an existing id answers 200", r2)
    same = all(r2.get(k) == r.get(k) for k in ("id", "created_at", "expires_at", "env", "limits"))
    t.ok(same, "create with an existing id returns the sandbox unchanged (same created_at, expires_at, env)",
         "first: %s\nsecond: %s" % (r.raw, r2.raw))
    t.eq(r2.cid, None, "create with an existing id starts no new container", r2)


def test_list_and_get(t, b):
    r = b.get("/v1/sandboxes")
    t.eq(r.status, 200, "list answers 200", r)
    items = r.get("sandboxes")
    ids = sorted(s.get("id") for s in items) if isinstance(items, list) else None
    want = sorted(getattr(b, "generated", []) + ["box-1"])
    t.eq(ids, want, "list holds exactly the tenant's sandboxes", r)
    if isinstance(items, list):
        t.ok(all(harness.TIME_RE.match(str(s.get("expires_at"))) and s.get("status") == "running" for s in items),
             "every listed sandbox has status and expires_at", r)
    g = b.get("/v1/sandboxes/box-1")
    t.eq(g.status, 200, "get box-1 answers 200", g)
    first = getattr(b, "box1", None)
    t.ok(first is not None and all(g.get(k) == first.get(k) for k in ("id", "created_at", "expires_at", "limits")),
         "get returns the sandbox as created", g)


def test_patch(t, b):
    before = b.get("/v1/sandboxes/box-1")
    if not t.eq(before.status, 200, "box-1 exists before PATCH", before):
        return
    e0 = iso_to_epoch(before.body["expires_at"])
    p = b.patch("/v1/sandboxes/box-1", {"keepalive_longer_by_seconds": 300})
    t.eq(p.status, 200, "PATCH keepalive_longer_by_seconds answers 200", p)
    after = b.get("/v1/sandboxes/box-1")
    e1 = iso_to_epoch(after.body["expires_at"])
    t.ok(abs((e1 - e0) - 300) < 1.5, "PATCH moves expires_at 300 s later",
         "before %s after %s" % (before.body["expires_at"], after.body["expires_at"]))
    t.eq(after.get("created_at"), before.get("created_at"), "PATCH leaves created_at alone", after)
    if isinstance(p.body, dict) and "expires_at" in p.body:
        t.eq(p.body["expires_at"], after.body["expires_at"], "PATCH answer shows the new expires_at", p)
    now = time.time()
    p2 = b.patch("/v1/sandboxes/box-1", {"keepalive_longer_by_seconds": 3 * 86400})
    t.eq(p2.status, 200, "PATCH by 3 days answers 200", p2)
    g = b.get("/v1/sandboxes/box-1")
    e2 = iso_to_epoch(g.body["expires_at"])
    t.ok(now + 86400 - 5 <= e2 <= time.time() + 86400 + 1.5,
         "PATCH never moves expires_at further than 86400 s from now",
         "now %.0f expires %.0f (delta %.0f)" % (now, e2, e2 - now))


def test_delete(t, b):
    cid = b.box1.cid if getattr(b, "box1", None) is not None else None
    t.ok(cid is not None and harness.runc_state(b.state, cid) == "running", "box-1 has a running container",
         "cid %s" % cid)
    w = b.exec("box-1", "echo old > /workspace/old")
    t.eq(w.get("exit_code"), 0, "box-1 writes a file in /workspace", w)
    d = b.delete("/v1/sandboxes/box-1")
    t.eq((d.status, d.body), (200, {"id": "box-1", "status": "deleted"}), "DELETE answers 200 status deleted", d)
    g = b.get("/v1/sandboxes/box-1")
    t.eq((g.status, g.err_code()), (404, "not_found"), "GET after DELETE answers 404 not_found", g)
    lst = b.get("/v1/sandboxes")
    t.ok("box-1" not in [s.get("id") for s in lst.get("sandboxes", [])], "deleted sandbox is not listed", lst)
    left = b.container_gone(cid)
    t.ok(not left, "DELETE removes the container, its mounts, cgroups and directory", "\n".join(left))
    x = b.exec("box-1", "true")
    t.eq(x.status, 404, "exec on a deleted sandbox answers 404", x)
    d2 = b.delete("/v1/sandboxes/box-1")
    t.eq(d2.status, 404, "DELETE again answers 404", d2)
    r = b.create(id="box-1")
    t.eq(r.status, 201, "the id can be created again after DELETE (201, a new sandbox)", r)
    x = b.exec("box-1", "test -e /workspace/old && echo present || echo absent")
    t.ok(x.status == 200 and x.get("stdout") == "absent\n", "the re-created sandbox does not have the old files", x)


def test_expiry(t, b):
    t0 = time.monotonic()
    r = b.create(id="short", keepalive_seconds=2)
    if not t.eq(r.status, 201, "create with keepalive_seconds 2 answers 201", r):
        return
    c, e = iso_to_epoch(r.body["created_at"]), iso_to_epoch(r.body["expires_at"])
    t.ok(abs((e - c) - 2) < 1.0, "its expires_at is created_at + 2 s", r)
    g = b.get("/v1/sandboxes/short")
    t.eq(g.status, 200, "it is there right after creation", g)
    gone = wait_until(lambda: b.get("/v1/sandboxes/short").status == 404, 6.0, 0.2)
    dt = time.monotonic() - t0
    t.ok(gone and dt <= 5.0, "an expired sandbox is reaped within 5 s of creation (keepalive 2 s)",
         "gone=%s after %.2f s" % (gone, dt))
    t.ok(dt >= 1.5, "it is not reaped before it expires", "gone after %.2f s" % dt)
    lst = b.get("/v1/sandboxes")
    t.ok("short" not in [s.get("id") for s in lst.get("sandboxes", [])], "the reaped sandbox is not listed", lst)
    left = wait_until(lambda: not b.container_gone(r.cid), 2.0) or b.container_gone(r.cid)
    t.ok(left is True, "reaping removes the container, its mounts, cgroups and directory",
         "\n".join(left) if isinstance(left, list) else "")


if __name__ == "__main__":
    harness.main([test_health, test_create_generated, test_create_with_id, test_list_and_get, test_patch,
                  test_delete, test_expiry])
