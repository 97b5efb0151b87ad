#!/usr/bin/env python3
"""test_backups.py - backups of a sandbox directory: a tree with binary
files, symlinks (relative, absolute, dangling), modes, an empty dir and odd
names comes back byte for byte in a new sandbox after the source sandbox is
deleted, and in another dir of a running one; excludes (and that a pattern
cannot become a tar option); tenant isolation (bob gets 404 for alice's
backups); validation (400 naming the field, 404 for a missing dir); the
size limit (413, nothing left in the state dir or the sandbox's /tmp); the
per-tenant count limit (429); DELETE removes the archive; backups survive a
broker restart; retention; the free-space guard (507); the tar timeout
(504, nothing left).

The contract is docs/api.md ("Backups") and issue 6."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MAX_BYTES = 2 * 1024 * 1024
MAX_PER_TENANT = 4
CONFIG = {"backup_max_bytes": MAX_BYTES, "max_backups_per_tenant": MAX_PER_TENANT}
STATE = {}
ODD = "name with spaces ünïcödé ☃.txt"

# Builds the tree in sys.argv[1] (run by python3 inside the sandbox).
BUILD = r'''
import os, sys
r = sys.argv[1]
os.makedirs(r + "/sub")
os.makedirs(r + "/empty")
os.makedirs(r + "/private")
os.makedirs(r + "/node_modules/pkg")
data = bytes(range(256)) * 64 + b"\0" * 4096 + os.urandom(200000) + b"\0\0\0"
open(r + "/bin.dat", "wb").write(data)
open(r + "/sub/secret.txt", "w").write("only me\n")
os.chmod(r + "/sub/secret.txt", 0o600)
open(r + "/sub/run.sh", "w").write("#!/bin/sh\necho ran-from-backup\n")
os.chmod(r + "/sub/run.sh", 0o755)
open(r + "/private/key", "wb").write(os.urandom(100))
os.chmod(r + "/private", 0o700)
open(r + "/" + "name with spaces \u00fcn\u00efc\u00f6d\u00e9 \u2603.txt", "w").write("unicode\n")
open(r + "/--help", "w").write("a file named like an option\n")
open(r + "/debug.log", "w").write("log\n")
open(r + "/sub/trace.log", "w").write("log\n")
open(r + "/node_modules/pkg/index.js", "w").write("module.exports = 1\n")
os.symlink("sub/run.sh", r + "/link-rel")
os.symlink(r + "/bin.dat", r + "/link-abs")
os.symlink("does/not/exist", r + "/link-dangling")
os.symlink("sub", r + "/link-dir")
'''

# Prints {relative path: description} of the tree at sys.argv[1]: type,
# mode, sha256 and mtime of files, link targets (never followed).
MANIFEST = r'''
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {".": ["dir", oct(stat.S_IMODE(os.stat(root).st_mode))]}
for dp, dns, fns in os.walk(root):
    for n in dns + fns:
        p = os.path.join(dp, n)
        st = os.lstat(p)
        m = oct(stat.S_IMODE(st.st_mode))
        rel = os.path.relpath(p, root)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ["link", os.readlink(p)]
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ["dir", m]
        else:
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()
            out[rel] = ["file", m, h, int(st.st_mtime), st.st_size]
print(json.dumps(out, sort_keys=True))
'''


def BK(sid):
    return "/v1/sandboxes/%s/backups" % sid


def manifest(b, sid, path, tenant="alice"):
    r = b.exec(sid, "python3 - %s" % path, stdin=MANIFEST, tenant=tenant)
    try:
        return json.loads(r.get("stdout") or "null")
    except ValueError:
        return {"error": str(r)}


def tmp_leftovers(b, sid, tenant="alice"):
    """Names in the sandbox's /tmp that a backup or restore could leave."""
    r = b.exec(sid, "ls -A /tmp", tenant=tenant)
    return [n for n in (r.get("stdout") or "").split("\n")
            if n.startswith(".sandboxd-backup-") or n.startswith(".sandboxd-restore-")]


def state_files(b, tenant="alice"):
    d = os.path.join(b.state, "backups", tenant)
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


def archive(b, bid, tenant="alice"):
    return os.path.join(b.state, "backups", tenant, bid + ".tgz")


def test_roundtrip(t, b):
    c = b.create(id="src")
    t.eq(c.status, 201, "create sandbox src", c)
    r = b.exec("src", "python3 - /workspace/proj", stdin=BUILD)
    t.eq(r.get("exit_code"), 0, "build a tree with binary files, symlinks, modes and odd names", r)
    m = manifest(b, "src", "/workspace/proj")
    STATE["manifest"] = m
    t.ok(isinstance(m, dict) and m.get("link-abs") == ["link", "/workspace/proj/bin.dat"]
         and m.get("private", [None, None])[1] == "0o700" and ODD in m and "empty" in m,
         "the source tree is as built", m)

    # What the tenant sets for its own commands must not steer the broker's tar.
    e = b.post("/v1/sandboxes/src/env", {"TAR_OPTIONS": "--no-such-option", "GZIP": "--bogus"})
    t.eq(e.status, 200, "set TAR_OPTIONS and GZIP in the sandbox env", e)
    t0 = time.time()
    r = b.post(BK("src"), {"dir": "/workspace/proj"}, timeout=300)
    t.eq(r.status, 201, "POST /backups answers 201", r)
    bid = r.get("backup_id") or ""
    STATE["bid"] = bid
    t.ok(harness.ID_RE.match(bid) is not None, "the answer has a backup_id", r)
    t.ok(isinstance(r.get("size"), int) and 200000 < r.get("size") < MAX_BYTES,
         "size is the archive's size in bytes (the random part does not compress)", r)
    ok_times = False
    try:
        created = harness.iso_to_epoch(r.get("created_at"))
        expires = harness.iso_to_epoch(r.get("expires_at"))
        ok_times = abs(created - t0) < 60 and abs(expires - created - 7 * 86400) < 1
    except (TypeError, ValueError):
        pass
    t.ok(ok_times, "created_at is now and expires_at 7 days later (backup_retention_days)", r)
    t.eq((r.get("sandbox_id"), r.get("dir")), ("src", "/workspace/proj"), "it names its source", r)
    path = archive(b, bid)
    t.ok(os.path.isfile(path) and os.path.getsize(path) == r.get("size"),
         "the archive is kept in <state>/backups/alice/<id>.tgz with that size", state_files(b))
    st_dir = os.stat(os.path.dirname(path)).st_mode & 0o777 if os.path.exists(path) else None
    st_file = os.stat(path).st_mode & 0o777 if os.path.exists(path) else None
    st_top = os.stat(os.path.join(b.state, "backups")).st_mode & 0o777
    t.eq((st_top, st_dir, st_file), (0o700, 0o700, 0o600), "archive dirs are 0700 and the archive 0600")
    t.eq(tmp_leftovers(b, "src"), [], "no temporary archive is left in the sandbox's /tmp")

    lst = b.get(BK("src"))
    mine = [x for x in lst.get("backups", []) if x.get("backup_id") == bid]
    t.ok(lst.status == 200 and len(mine) == 1 and mine[0].get("size") == r.get("size")
         and mine[0].get("sandbox_id") == "src" and mine[0].get("dir") == "/workspace/proj"
         and mine[0].get("expires_at") == r.get("expires_at"),
         "GET /backups lists it with sandbox_id, dir, size, created_at, expires_at", lst)
    g = b.get(BK("src") + "/" + bid)
    t.ok(g.status == 200 and g.get("backup_id") == bid, "GET /backups/{id} gives one backup", g)

    # Into another dir of the running sandbox.
    x = b.post(BK("src") + "/" + bid + "/restore", {"dir": "/workspace/copy"}, timeout=300)
    t.eq(x.status, 200, "restore into another dir of the same sandbox", x)
    t.eq(x.get("dir"), "/workspace/copy", "the answer names the dir restored into", x)
    t.eq(manifest(b, "src", "/workspace/copy"), m,
         "the copy is identical: bytes (sha256), modes, mtimes, symlinks, empty dir, odd names")
    t.eq(tmp_leftovers(b, "src"), [], "no temporary archive is left in /tmp after a restore")

    # Excludes: patterns, and one that looks like a tar option stays a pattern.
    ex = ["node_modules", "*.log", "--checkpoint=1", "--checkpoint-action=exec=touch /tmp/pwned"]
    r2 = b.post(BK("src"), {"dir": "/workspace/proj", "excludes": ex}, timeout=300)
    t.eq(r2.status, 201, "a backup with excludes", r2)
    t.eq(r2.get("excludes"), ex, "its record lists the excludes", r2)
    STATE["bid_ex"] = r2.get("backup_id")
    p = b.exec("src", "test -e /tmp/pwned && echo yes || echo no")
    t.eq(p.get("stdout"), "no\n", "an exclude that looks like a tar option is not run as one", p)
    x = b.post(BK("src") + "/" + str(r2.get("backup_id")) + "/restore", {"dir": "/workspace/ex"},
               timeout=300)
    t.eq(x.status, 200, "restore the excluding backup", x)
    want = {k: v for k, v in m.items()
            if not (k == "node_modules" or k.startswith("node_modules/") or k.endswith(".log"))}
    t.eq(manifest(b, "src", "/workspace/ex"), want,
         "node_modules and *.log are left out, everything else is there")

    d = b.delete("/v1/sandboxes/src")
    t.eq(d.status, 200, "delete the source sandbox", d)
    lst = b.get(BK("src"))
    t.ok(lst.status == 200 and bid in [x.get("backup_id") for x in lst.get("backups", [])],
         "its backups are still listed after the sandbox is gone", lst)

    c = b.create(id="dst")
    t.eq(c.status, 201, "create a new sandbox dst", c)
    x = b.post(BK("dst") + "/" + bid + "/restore", None, timeout=300)
    t.eq(x.status, 200, "restore with no body: into the original dir", x)
    t.eq(x.get("dir"), "/workspace/proj", "the default dir is the one backed up", x)
    t.eq(manifest(b, "dst", "/workspace/proj"), m,
         "the restored tree is byte-identical in the new sandbox, modes and links included")
    run = b.exec("dst", "/workspace/proj/sub/run.sh && /workspace/proj/link-rel")
    t.eq(run.get("stdout"), "ran-from-backup\nran-from-backup\n",
         "the restored script is executable, also through its relative link", run)
    own = b.exec("dst", "stat -c %u /workspace/proj/bin.dat /workspace/proj/private")
    t.eq(own.get("stdout"), "1000\n1000\n", "restored files belong to the sandbox user", own)


def test_validation(t, b):
    c = b.create(id="val")
    t.eq(c.status, 201, "create sandbox val", c)
    b.exec("val", "echo x > /workspace/afile")
    cases = [
        ({}, 400, "dir", "missing dir"),
        ({"dir": "workspace"}, 400, "dir", "a relative dir"),
        ({"dir": ""}, 400, "dir", "an empty dir"),
        ({"dir": "/"}, 400, "dir", "the whole file system"),
        ({"dir": "/workspace/../proc/1"}, 400, "dir", "a dir under /proc"),
        ({"dir": 5}, 400, "dir", "a dir that is not a string"),
        ({"dir": "/workspace/" + "a" * 5000}, 400, "dir", "a dir over 4096 bytes"),
        ({"dir": "/workspace", "excludes": "x"}, 400, "excludes", "excludes not an array"),
        ({"dir": "/workspace", "excludes": [1]}, 400, "excludes[0]", "an exclude not a string"),
        ({"dir": "/workspace", "excludes": [""]}, 400, "excludes[0]", "an empty exclude"),
        ({"dir": "/workspace", "excludes": ["a"] * 65}, 400, "excludes", "65 excludes"),
        ({"dir": "/workspace", "excludes": ["a" * 513]}, 400, "excludes[0]", "a 513-byte exclude"),
        ({"dir": "/workspace", "extra": 1}, 400, "extra", "an unknown field"),
    ]
    for body, status, field, desc in cases:
        r = b.post(BK("val"), body)
        t.ok(r.status == status and harness.names_field(r.err_message(), field),
             "%s: %d naming '%s'" % (desc, status, field), r)
    r = b.post(BK("val"), {"dir": "/workspace/nope"})
    t.ok(r.status == 404 and r.err_code() == "not_found", "a missing dir: 404 not_found", r)
    r = b.post(BK("val"), {"dir": "/workspace/afile"})
    t.ok(r.status == 422 and r.err_code() == "not_a_directory", "a file as dir: 422", r)
    r = b.post(BK("nosuch"), {"dir": "/workspace"})
    t.eq(r.status, 404, "a backup of a sandbox that does not exist: 404", r)
    t.eq(tmp_leftovers(b, "val"), [], "failed backups leave nothing in /tmp")
    bid = STATE.get("bid", "bk-000000000000000000000000")
    for path, desc in [(BK("val") + "/bk-000000000000000000000000/restore", "an unknown backup"),
                       (BK("val") + "/nonsense/restore", "a malformed backup id")]:
        r = b.post(path, {})
        t.eq(r.status, 404, "restore of %s: 404" % desc, r)
    r = b.post(BK("val") + "/" + bid + "/restore", {"dir": "rel"})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "dir"),
         "restore into a relative dir: 400 naming dir", r)
    r = b.post(BK("nosuch") + "/" + bid + "/restore", {})
    t.eq(r.status, 404, "restore into a sandbox that does not exist: 404", r)
    r = b.request("PUT", BK("val"), {"dir": "/workspace"})
    t.eq(r.status, 405, "PUT /backups: 405", r)
    b.delete("/v1/sandboxes/val")


def test_tenants(t, b):
    bid = STATE.get("bid", "bk-000000000000000000000000")
    c = b.create(id="bobs", tenant="bob")
    t.eq(c.status, 201, "bob creates a sandbox", c)
    lst = b.get(BK("bobs"), tenant="bob")
    t.ok(lst.status == 200 and bid not in [x.get("backup_id") for x in lst.get("backups", [])],
         "bob's list does not show alice's backup", lst)
    r = b.get(BK("bobs") + "/" + bid, tenant="bob")
    t.eq(r.status, 404, "bob: GET of alice's backup is 404", r)
    r = b.post(BK("bobs") + "/" + bid + "/restore", {"dir": "/workspace/steal"}, tenant="bob")
    t.eq(r.status, 404, "bob: restore of alice's backup into his sandbox is 404", r)
    r = b.delete(BK("bobs") + "/" + bid, tenant="bob")
    t.eq(r.status, 404, "bob: DELETE of alice's backup is 404", r)
    r = b.post(BK("dst") + "/" + bid + "/restore", {"dir": "/workspace/x"}, tenant="bob")
    t.eq(r.status, 404, "bob: restore into alice's sandbox is 404", r)
    t.ok(os.path.isfile(archive(b, bid)), "alice's archive is untouched")
    s = b.exec("bobs", "ls /workspace", tenant="bob")
    t.eq(s.get("stdout"), "", "nothing was restored into bob's sandbox", s)

    # The per-tenant count limit.
    b.exec("bobs", "mkdir -p /workspace/d && echo hi > /workspace/d/f", tenant="bob")
    ids = []
    for i in range(MAX_PER_TENANT):
        r = b.post(BK("bobs"), {"dir": "/workspace/d"}, tenant="bob")
        ids.append(r.get("backup_id"))
        if r.status != 201:
            t.eq(r.status, 201, "bob's backup %d of %d" % (i + 1, MAX_PER_TENANT), r)
    r = b.post(BK("bobs"), {"dir": "/workspace/d"}, tenant="bob")
    t.ok(r.status == 429 and r.err_code() == "quota_exceeded",
         "backup %d: 429 quota_exceeded (max_backups_per_tenant), nothing is deleted silently"
         % (MAX_PER_TENANT + 1), r)
    t.eq(len(b.get(BK("bobs"), tenant="bob").get("backups", [])), MAX_PER_TENANT,
         "bob still has his %d backups" % MAX_PER_TENANT)
    d = b.delete(BK("bobs") + "/" + str(ids[0]), tenant="bob")
    t.ok(d.status == 200 and d.get("status") == "deleted", "DELETE /backups/{id}", d)
    t.ok(not os.path.exists(archive(b, str(ids[0]), "bob"))
         and not any(n.startswith(str(ids[0])) for n in state_files(b, "bob")),
         "DELETE removed the archive and its record from the state dir", state_files(b, "bob"))
    r = b.get(BK("bobs") + "/" + str(ids[0]), tenant="bob")
    t.eq(r.status, 404, "the deleted backup is 404", r)
    r = b.post(BK("bobs"), {"dir": "/workspace/d"}, tenant="bob")
    t.eq(r.status, 201, "with one deleted, bob can back up again", r)
    ids.append(r.get("backup_id"))
    for i in ids[1:]:
        b.delete(BK("bobs") + "/" + str(i), tenant="bob")
    t.eq(state_files(b, "bob"), [], "bob's backup dir is empty once all are deleted")


def test_too_large(t, b):
    c = b.create(id="big")
    t.eq(c.status, 201, "create sandbox big", c)
    r = b.exec("big", "mkdir /workspace/big && head -c 3145728 /dev/urandom > /workspace/big/r")
    t.eq(r.get("exit_code"), 0, "write 3 MiB of random bytes", r)
    before = state_files(b)
    n_before = len(b.get(BK("big")).get("backups", []))
    r = b.post(BK("big"), {"dir": "/workspace/big"}, timeout=300)
    t.ok(r.status == 413 and r.err_code() == "backup_too_large",
         "a backup over backup_max_bytes (%d) is refused with 413" % MAX_BYTES, r)
    t.eq(state_files(b), before, "nothing is left in the state dir (no partial archive)")
    t.eq(tmp_leftovers(b, "big"), [], "nothing is left in the sandbox's /tmp")
    t.eq(len(b.get(BK("big")).get("backups", [])), n_before, "nothing new is listed")
    r = b.post(BK("big"), {"dir": "/workspace/big", "excludes": ["r"]})
    t.eq(r.status, 201, "the same dir with the big file excluded is fine", r)
    if r.status == 201:
        b.delete(BK("big") + "/" + r.get("backup_id"))
    b.delete("/v1/sandboxes/big")


def test_restart(t, b):
    bid, bid_ex = STATE.get("bid"), STATE.get("bid_ex")
    if not bid or not bid_ex:
        t.ok(False, "the round trip made two backups")
        return
    if not b.restart():
        return
    lst = b.get(BK("dst"))
    got = [x.get("backup_id") for x in lst.get("backups", [])]
    t.ok(bid in got and bid_ex in got, "both backups are listed after a broker restart", lst)
    x = b.post(BK("dst") + "/" + bid + "/restore", {"dir": "/workspace/after"}, timeout=300)
    t.eq(x.status, 200, "and restore", x)
    t.eq(manifest(b, "dst", "/workspace/after"), STATE.get("manifest"),
         "the tree restored after the restart is identical")

    # Retention: age the excluding backup's record past 7 days.
    meta = os.path.join(b.state, "backups", "alice", bid_ex + ".json")
    with open(meta) as f:
        rec = json.load(f)
    rec["created_at"] -= 8 * 86400 * 1000
    with open(meta, "w") as f:
        json.dump(rec, f)
    lst = b.get(BK("dst"))
    got = [x.get("backup_id") for x in lst.get("backups", [])]
    t.ok(bid_ex not in got and bid in got, "a backup older than backup_retention_days is gone", lst)
    t.ok(not any(n.startswith(bid_ex) for n in state_files(b)),
         "and its archive was deleted from the state dir", state_files(b))

    # The free-space guard: demand more free space than any disk has.
    with open(b.config_path, "a") as f:
        f.write("backup_min_free_mb = 1099511627776\n")
    if not b.restart():
        return
    before = state_files(b)
    r = b.post(BK("dst"), {"dir": "/workspace/proj"}, timeout=300)
    t.ok(r.status == 507 and r.err_code() == "insufficient_storage",
         "with too little free disk the backup is refused with 507", r)
    t.eq(state_files(b), before, "and nothing is kept")
    t.eq(tmp_leftovers(b, "dst"), [], "nor left in the sandbox's /tmp")

    # The tar timeout: a 50 GB sparse file takes longer than 1 s to read.
    with open(b.config_path) as f:
        lines = [l for l in f if not l.startswith("backup_min_free_mb")]
    with open(b.config_path, "w") as f:
        f.writelines(lines + ["backup_timeout_seconds = 1\n"])
    if not b.restart():
        return
    r = b.exec("dst", "mkdir /workspace/slow && truncate -s 50G /workspace/slow/zeros")
    t.eq(r.get("exit_code"), 0, "make a 50 GB sparse file", r)
    t0 = time.monotonic()
    r = b.post(BK("dst"), {"dir": "/workspace/slow"}, timeout=300)
    took = time.monotonic() - t0
    t.ok(r.status == 504 and r.err_code() == "backup_timeout" and took < 15,
         "tar past backup_timeout_seconds is stopped: 504 backup_timeout (%.1f s)" % took, r)
    t.eq(state_files(b), before, "nothing is kept after the timeout")
    t.eq(tmp_leftovers(b, "dst"), [], "and nothing is left in the sandbox's /tmp")
    ps = b.exec("dst", "ps -eo comm | grep -c -x -e tar -e gzip -e head || true")
    t.eq(ps.get("stdout"), "0\n", "no tar, gzip or head keeps running in the sandbox", ps)

    d = b.delete(BK("dst") + "/" + bid)
    t.eq(d.status, 200, "DELETE alice's backup", d)
    t.ok(not os.path.exists(archive(b, bid)), "its archive is gone from the state dir")
    t.eq(state_files(b), [], "alice's backup dir is empty")


if __name__ == "__main__":
    harness.main([test_roundtrip, test_validation, test_tenants, test_too_large, test_restart],
                 config=CONFIG)
