#!/usr/bin/env python3
"""test_files.py - the file API: raw PUT/GET of large binary files with
SHA-256 checks, the broker's memory bound on a 1 GiB upload and download,
the JSON (base64/utf-8) variants, Range reads, HEAD, Content-Type, mkdir,
move, delete, list, ?mkdir and ?mode, ownership and visibility to exec and
to Python, dropped uploads, escape attempts (symlinks, .., percent-encoding,
/proc, NUL) and tenant isolation.

The contract is docs/api.md ("Files") and issue 5."""

import base64
import hashlib
import os
import secrets
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "files"
BASE = "/v1/sandboxes/%s" % SB
MiB = 1 << 20
GiB = 1 << 30
RSS_BOUND_KIB = 32 * 1024

TAG = secrets.token_hex(6)
HOST_SECRET = "/tmp/sbx-host-secret-" + TAG
HOST_SECRET_TEXT = "HOST-SECRET-" + TAG
SECRET_NAME = os.path.basename(HOST_SECRET)
STATE = {}


def F(path):
    return BASE + "/files" + path


def OP(op):
    return BASE + "/files:" + op


def put(b, path, data, tenant="alice", ctype="application/octet-stream", query=""):
    return b.request("PUT", F(path) + query, raw=data, headers={"Content-Type": ctype}, tenant=tenant)


def get(b, path, tenant="alice", headers=None):
    return b.request("GET", F(path), tenant=tenant, headers=headers)


def head(b, path, tenant="alice"):
    return forget_head(b, b.request("HEAD", F(path), tenant=tenant))


def forget_head(b, r):
    """An answer to HEAD has no body by HTTP's rules: keep it out of the
    teardown's check that every error answer is a JSON error body."""
    b.responses[:] = [x for x in b.responses if x is not r]
    return r


def lst(b, path, recursive=0, hidden=0, tenant="alice"):
    return b.get(OP("list") + "?path=%s&recursive=%d&hidden=%d" % (path, recursive, hidden), tenant=tenant)


def sh(b, command):
    """exec outside any session (so that a busy session never blocks)."""
    return b.exec(SB, command, cwd="/workspace")


def out(b, command):
    r = sh(b, command)
    return r.get("stdout") if r.status == 200 else "exec failed: %s" % r


def names(r):
    return [e.get("name") for e in r.get("entries") or [] if isinstance(e, dict)]


def paths(r):
    return [e.get("path") for e in r.get("entries") or [] if isinstance(e, dict)]


def ok2xx(r):
    return 200 <= r.status < 300


def main_text(r):
    rs = r.get("results") if isinstance(r.get("results"), list) else []
    mains = [x for x in rs if isinstance(x, dict) and x.get("is_main_result") is True]
    return mains[0].get("text") if len(mains) == 1 else None


def upper_dir(b):
    cid = STATE.get("cid")
    return os.path.join(b.state, "sandboxes", cid, "upper") if cid else None


def big_files_since(root, since, min_size=512 * 1024):
    """Regular files under root (host side) of at least min_size bytes
    modified at or after since (epoch seconds)."""
    found = []
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_size >= min_size and st.st_mtime >= since:
                found.append("%s (%d bytes)" % (p, st.st_size))
    return found


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the files sandbox", r)
    STATE["cid"] = r.cid
    with open(HOST_SECRET, "w") as f:
        f.write(HOST_SECRET_TEXT)


# ---------------------------------------------------------------- basics


def test_roundtrip_100mib(t, b):
    h_up = hashlib.sha256()

    def gen():
        for _ in range(100):
            c = os.urandom(MiB)
            h_up.update(c)
            yield c

    r = b.put_stream(F("/workspace/rand.bin"), gen())
    t.ok(ok2xx(r), "raw PUT of 100 MiB (chunked transfer encoding) succeeds", r)
    t.eq((r.get("path"), r.get("size")), ("/workspace/rand.bin", 100 * MiB), "the answer is {path, size}", r)
    want = h_up.hexdigest()
    h_down = hashlib.sha256()
    g = b.get_stream(F("/workspace/rand.bin"), h_down.update)
    t.eq(g.status, 200, "raw GET answers 200", g)
    t.eq(g.headers.get("content-length"), str(100 * MiB), "Content-Length is 104857600", g.headers)
    t.eq(g.headers.get("accept-ranges"), "bytes", "Accept-Ranges: bytes", g.headers)
    t.eq(g.nbytes, 100 * MiB, "the download has 100 MiB", g.nbytes)
    t.eq(h_down.hexdigest(), want, "the downloaded SHA-256 matches the uploaded one", None)
    r = sh(b, "sha256sum /workspace/rand.bin")
    t.eq((r.get("stdout") or "").split(" ")[0], want, "sha256sum inside the sandbox matches too", r)
    r = b.get(F("/workspace/rand.bin") + "?encoding=base64")
    t.ok(400 <= r.status < 500, "?encoding=base64 of a 100 MiB file (over 16 x max_body_bytes) is refused with 4xx",
         r)
    sh(b, "rm -f /workspace/rand.bin")


def test_rss_1gib(t, b):
    pid = b.proc.pid
    base = os.urandom(MiB)
    h_up = hashlib.sha256()

    def gen():
        for i in range(1024):
            c = struct.pack(">Q", i) + base[8:]
            h_up.update(c)
            yield c

    before = harness.rss_kib(pid)
    smp = harness.RssSampler(pid).start()
    r = b.put_stream(F("/workspace/big.bin"), gen(), length=GiB)
    peak = smp.stop()
    t.ok(ok2xx(r) and r.get("size") == GiB, "raw PUT of 1 GiB (Content-Length) succeeds in %.1f s" % r.elapsed, r)
    grow = peak - before
    t.ok(grow < RSS_BOUND_KIB, "broker RSS during the 1 GiB upload: %d -> peak %d KiB, +%.1f MiB (< 32 MiB, %d samples)"
         % (before, peak, grow / 1024.0, smp.samples))
    h_down = hashlib.sha256()
    before = harness.rss_kib(pid)
    smp = harness.RssSampler(pid).start()
    g = b.get_stream(F("/workspace/big.bin"), h_down.update)
    peak = smp.stop()
    t.ok(g.status == 200 and g.nbytes == GiB, "raw GET of 1 GiB in %.1f s" % g.elapsed, g)
    grow = peak - before
    t.ok(grow < RSS_BOUND_KIB, "broker RSS during the 1 GiB download: %d -> peak %d KiB, +%.1f MiB (< 32 MiB, %d samples)"
         % (before, peak, grow / 1024.0, smp.samples))
    t.eq(h_down.hexdigest(), h_up.hexdigest(), "the 1 GiB download's SHA-256 matches the upload's", None)
    sh(b, "rm -f /workspace/big.bin")


def test_json_variants(t, b):
    text = "h\u00e9llo \u2713\n"
    r = put(b, "/workspace/t.txt", text.encode())
    t.ok(ok2xx(r) and r.get("size") == len(text.encode()), "raw PUT of a UTF-8 text file", r)
    r = b.get(F("/workspace/t.txt") + "?encoding=utf-8")
    t.eq(r.status, 200, "GET ?encoding=utf-8 answers 200", r)
    t.ok("application/json" in r.headers.get("content-type", ""), "as JSON", r.headers)
    t.eq(r.body, {"path": "/workspace/t.txt", "content": text, "encoding": "utf-8", "size": len(text.encode())},
         "the answer is {path, content, encoding, size}", r)
    binary = bytes(range(256)) * 4
    put(b, "/workspace/bin.dat", binary)
    r = b.get(F("/workspace/bin.dat") + "?encoding=base64")
    t.eq((r.status, r.get("encoding"), r.get("size"), r.get("path")), (200, "base64", 1024, "/workspace/bin.dat"),
         "GET ?encoding=base64 answers 200 with encoding, size, path", r)
    try:
        dec = base64.b64decode(r.get("content") or "", validate=True)
    except ValueError:
        dec = None
    t.ok(dec == binary, "the base64 content decodes to the file's bytes", r)
    r = b.get(F("/workspace/bin.dat") + "?encoding=utf-8")
    t.eq((r.status, r.err_code()), (422, "not_utf8"), "GET ?encoding=utf-8 of a binary file answers 422 not_utf8", r)
    r = b.get(F("/workspace/t.txt") + "?encoding=latin1")
    t.eq(r.status, 400, "an unknown encoding answers 400", r)

    r = b.request("PUT", F("/workspace/j64.bin"), {"content": base64.b64encode(binary).decode(), "encoding": "base64"})
    t.ok(ok2xx(r) and r.get("size") == 1024, "JSON PUT {content, encoding: base64} succeeds", r)
    g = get(b, "/workspace/j64.bin")
    t.ok(g.raw == binary, "the file holds the decoded bytes", g)
    r = b.request("PUT", F("/workspace/jutf.txt"), {"content": text})
    t.ok(ok2xx(r) and r.get("size") == len(text.encode()), "JSON PUT {content} (utf-8 by default) succeeds", r)
    t.eq(get(b, "/workspace/jutf.txt").raw, text.encode(), "the file holds the UTF-8 text", None)
    r = b.request("PUT", F("/workspace/jutf2.txt"), {"content": "x", "encoding": "utf-8"})
    t.ok(ok2xx(r) and get(b, "/workspace/jutf2.txt").raw == b"x", "JSON PUT with encoding utf-8 explicitly", r)
    r = b.request("PUT", F("/workspace/jbad.bin"), {"content": "!!!not base64", "encoding": "base64"})
    t.eq(r.status, 400, "JSON PUT with invalid base64 answers 400", r)
    r = b.request("PUT", F("/workspace/jbad.bin"), {"content": "x", "encoding": "rot13"})
    t.eq(r.status, 400, "JSON PUT with an unknown encoding answers 400", r)
    r = b.request("PUT", F("/workspace/jbad.bin"), {"encoding": "utf-8"})
    t.eq(r.status, 400, "JSON PUT without content answers 400", r)
    t.eq(head(b, "/workspace/jbad.bin").status, 404, "no file was made by the refused JSON PUTs", None)
    r = b.request("PUT", F("/workspace/raw.json"), raw=b'{"not":"parsed"}',
                  headers={"Content-Type": "application/octet-stream"})
    t.ok(ok2xx(r) and get(b, "/workspace/raw.json").raw == b'{"not":"parsed"}',
         "a JSON-looking body sent as application/octet-stream is stored raw", r)


def test_range_head_types(t, b):
    data = bytes((i * 7 + 3) % 251 for i in range(1000))
    put(b, "/workspace/r.bin", data)
    for rng, status, body, cr in [("bytes=0-99", 206, data[:100], "bytes 0-99/1000"),
                                  ("bytes=-10", 206, data[-10:], "bytes 990-999/1000"),
                                  ("bytes=100-", 206, data[100:], "bytes 100-999/1000"),
                                  ("bytes=990-5000", 206, data[990:], "bytes 990-999/1000"),
                                  ("bytes=5-5", 206, data[5:6], "bytes 5-5/1000")]:
        r = get(b, "/workspace/r.bin", headers={"Range": rng})
        t.eq((r.status, r.headers.get("content-range"), r.headers.get("content-length")), (status, cr, str(len(body))),
             "Range %s -> 206, Content-Range %s, Content-Length %d" % (rng, cr, len(body)), r)
        t.ok(r.raw == body, "Range %s -> exactly those bytes" % rng, r)
    for rng in ("bytes=1000-", "bytes=2000-3000"):
        r = get(b, "/workspace/r.bin", headers={"Range": rng})
        t.eq(r.status, 416, "Range %s (past the end of a 1000-byte file) -> 416" % rng, r)
    r = get(b, "/workspace/r.bin")
    t.eq((r.status, r.raw == data, r.headers.get("content-length")), (200, True, "1000"),
         "without Range: 200 and the whole file", r)

    r = head(b, "/workspace/r.bin")
    t.eq((r.status, r.headers.get("x-file-type"), r.headers.get("x-file-size")), (200, "file", "1000"),
         "HEAD of a file: 200, X-File-Type file, X-File-Size 1000", r.headers)
    t.eq(r.headers.get("x-file-mode"), "0644", "X-File-Mode 0644 for a new file", r.headers)
    mt = r.headers.get("x-file-mtime") or ""
    t.ok(harness.TIME_RE.match(mt) and abs(harness.iso_to_epoch(mt) - time.time()) < 120,
         "X-File-Mtime is a recent ISO-8601 time", r.headers)
    t.eq(r.raw, b"", "HEAD has no body", r)
    r = head(b, "/workspace")
    t.eq((r.status, r.headers.get("x-file-type")), (200, "dir"), "HEAD of a directory: X-File-Type dir", r.headers)
    r = head(b, "/workspace/nope.bin")
    t.eq(r.status, 404, "HEAD of a missing file: 404", r)
    r = get(b, "/workspace/nope.bin")
    t.eq((r.status, r.err_code()), (404, "not_found"), "GET of a missing file: 404 not_found", r)

    for name, want in (("a.json", "application/json"), ("a.png", "image/png"), ("a.txt", "text/plain"),
                       ("a.html", "text/html")):
        put(b, "/workspace/" + name, b"x")
        r = get(b, "/workspace/" + name)
        t.ok((r.headers.get("content-type") or "").split(";")[0].strip() == want,
             "Content-Type of .%s is %s" % (name.split(".")[1], want), r.headers)


# ------------------------------------------------------------ operations


def test_put_options(t, b):
    r = put(b, "/workspace/deep/er/f.txt", b"x")
    t.eq(r.status, 404, "PUT into a missing directory without ?mkdir=1 answers 404", r)
    r = put(b, "/workspace/deep/er/f.txt", b"deep", query="?mkdir=1")
    t.ok(ok2xx(r), "PUT ?mkdir=1 creates the missing parents", r)
    t.eq(out(b, "cat /workspace/deep/er/f.txt; stat -c '%a %u:%g' /workspace/deep /workspace/deep/er"),
         "deep755 1000:1000\n755 1000:1000\n", "the parents are 0755 directories owned by uid 1000", None)
    r = put(b, "/workspace/mode.sh", b"#!/bin/sh\necho run\n", query="?mode=0755")
    t.ok(ok2xx(r), "PUT ?mode=0755", r)
    t.eq(out(b, "stat -c '%a %u:%g' /workspace/mode.sh"), "755 1000:1000\n",
         "the file has mode 755 and belongs to uid/gid 1000", None)
    t.eq(out(b, "/workspace/mode.sh"), "run\n", "and is executable in the sandbox", None)
    put(b, "/workspace/plain.txt", b"p")
    t.eq(out(b, "stat -c '%a %u' /workspace/plain.txt"), "644 1000\n", "a new file defaults to 0644, uid 1000", None)
    sh(b, "chmod 600 /workspace/plain.txt")
    put(b, "/workspace/plain.txt", b"p2")
    t.eq(out(b, "stat -c %a /workspace/plain.txt; cat /workspace/plain.txt"), "600\np2",
         "overwriting keeps the old file's mode", None)
    for bad in ("999", "abc", "0x755", "77777"):
        r = put(b, "/workspace/badmode.txt", b"x", query="?mode=" + bad)
        t.eq(r.status, 400, "?mode=%s answers 400" % bad, r)
    r = put(b, "/workspace", b"x")
    t.ok(400 <= r.status < 500, "PUT onto a directory is refused (4xx)", r)
    t.eq(head(b, "/workspace").headers.get("x-file-type"), "dir", "and the directory is still there", None)


def test_visibility(t, b):
    put(b, "/workspace/vis.txt", b"from-api\n")
    t.eq(out(b, "cat /workspace/vis.txt; stat -c %u /workspace/vis.txt"), "from-api\n1000\n",
         "a file written through the API is visible to exec and owned by uid 1000", None)
    r = b.exec(SB, "cat /workspace/vis.txt")
    t.eq(r.get("stdout"), "from-api\n", "... and to a command in the default session", r)
    sh(b, "printf 'from exec' > /workspace/byexec.txt")
    t.eq(get(b, "/workspace/byexec.txt").raw, b"from exec", "a file written by exec is readable through the API",
         None)
    r = b.post(BASE + "/code", {"code": "open('/workspace/vis.txt').read()"}, timeout=90)
    t.eq(main_text(r), "'from-api\\n'", "a Python context reads the file written through the API", r)
    r = b.post(BASE + "/code", {"code": "open('/workspace/fromkernel.txt','w').write('k')\n0"}, timeout=90)
    t.eq(get(b, "/workspace/fromkernel.txt").raw, b"k", "a file written by a Python context is readable", r)
    r = b.post(OP("mkdir"), {"path": "relative/dir", "recursive": True})
    t.ok(ok2xx(r) and head(b, "/workspace/relative/dir").headers.get("x-file-type") == "dir",
         "a relative path is taken relative to /workspace", r)


def test_mkdir(t, b):
    r = b.post(OP("mkdir"), {"path": "/workspace/a/b/c", "recursive": True})
    t.ok(ok2xx(r), "mkdir recursive /workspace/a/b/c", r)
    t.eq(out(b, "stat -c '%F %a %u' /workspace/a/b/c"), "directory 755 1000\n", "it is a 0755 directory of uid 1000",
         None)
    r = b.post(OP("mkdir"), {"path": "/workspace/a/b/c", "recursive": True})
    t.ok(ok2xx(r), "mkdir recursive of an existing directory is fine", r)
    r = b.post(OP("mkdir"), {"path": "/workspace/a/b/c"})
    t.eq((r.status, r.err_code()), (409, "exists"), "mkdir (not recursive) of an existing path -> 409 exists", r)
    r = b.post(OP("mkdir"), {"path": "/workspace/x/y"})
    t.eq(r.status, 404, "mkdir (not recursive) with a missing parent -> 404", r)
    r = b.post(OP("mkdir"), {"path": "/workspace/single"})
    t.ok(ok2xx(r) and head(b, "/workspace/single").headers.get("x-file-type") == "dir",
         "mkdir (not recursive) with an existing parent", r)
    put(b, "/workspace/afile", b"x")
    r = b.post(OP("mkdir"), {"path": "/workspace/afile", "recursive": True})
    t.ok(400 <= r.status < 500, "mkdir over an existing file is refused (4xx)", r)
    r = b.post(OP("mkdir"), {})
    t.eq(r.status, 400, "mkdir without path -> 400", r)


def test_move(t, b):
    put(b, "/workspace/m1.txt", b"one")
    r = b.post(OP("move"), {"from": "/workspace/m1.txt", "to": "/workspace/m2.txt"})
    t.ok(ok2xx(r), "move (rename) a file", r)
    t.eq((head(b, "/workspace/m1.txt").status, get(b, "/workspace/m2.txt").raw), (404, b"one"),
         "the old path is gone, the new one has the content", None)
    put(b, "/workspace/m3.txt", b"three")
    r = b.post(OP("move"), {"from": "/workspace/m3.txt", "to": "/workspace/m2.txt"})
    t.ok(ok2xx(r) and get(b, "/workspace/m2.txt").raw == b"three", "move replaces a file at `to`", r)
    b.post(OP("mkdir"), {"path": "/workspace/md/sub", "recursive": True})
    put(b, "/workspace/md/sub/f", b"f")
    r = b.post(OP("move"), {"from": "/workspace/md", "to": "/workspace/a/moved"})
    t.ok(ok2xx(r) and get(b, "/workspace/a/moved/sub/f").raw == b"f" and head(b, "/workspace/md").status == 404,
         "move a directory tree to another directory", r)
    r = b.post(OP("move"), {"from": "/workspace/nope", "to": "/workspace/nope2"})
    t.eq(r.status, 404, "move of a missing path -> 404", r)
    r = b.post(OP("move"), {"from": "/workspace/m2.txt"})
    t.eq(r.status, 400, "move without `to` -> 400", r)


def test_delete(t, b):
    put(b, "/workspace/d.txt", b"d")
    r = b.delete(F("/workspace/d.txt"))
    t.ok(ok2xx(r) and head(b, "/workspace/d.txt").status == 404, "DELETE a file", r)
    r = b.delete(F("/workspace/d.txt"))
    t.eq(r.status, 404, "DELETE it again -> 404", r)
    b.post(OP("mkdir"), {"path": "/workspace/full/inner", "recursive": True})
    put(b, "/workspace/full/inner/f", b"f")
    r = b.delete(F("/workspace/full"))
    t.eq((r.status, r.err_code()), (409, "not_empty"), "DELETE a non-empty directory without recursive -> 409 not_empty",
         r)
    t.eq(get(b, "/workspace/full/inner/f").raw, b"f", "and nothing in it was removed", None)
    r = b.delete(F("/workspace/full") + "?recursive=1")
    t.ok(ok2xx(r) and head(b, "/workspace/full").status == 404, "DELETE ?recursive=1 removes the tree", r)
    b.post(OP("mkdir"), {"path": "/workspace/emptydir"})
    r = b.delete(F("/workspace/emptydir"))
    t.ok(ok2xx(r) and head(b, "/workspace/emptydir").status == 404, "DELETE an empty directory without recursive", r)

    sh(b, "mkdir -p /workspace/realdir && echo keep > /workspace/realdir/keep && ln -s realdir /workspace/ldir"
          " && ln -s /workspace/realdir /workspace/ldir2")
    r = b.delete(F("/workspace/ldir"))
    t.ok(ok2xx(r), "DELETE a symlink to a directory", r)
    t.eq(out(b, "test -L /workspace/ldir || echo gone; cat /workspace/realdir/keep"), "gone\nkeep\n",
         "only the link went; the directory and its file are intact", None)
    r = b.delete(F("/workspace/ldir2") + "?recursive=1")
    t.ok(ok2xx(r), "DELETE ?recursive=1 of a symlink to a directory", r)
    t.eq(out(b, "test -L /workspace/ldir2 || echo gone; cat /workspace/realdir/keep"), "gone\nkeep\n",
         "with recursive too only the link went", None)
    r = b.delete(F("/"))
    t.ok(400 <= r.status < 500, "DELETE / is refused", r)
    r = b.delete(F("/") + "?recursive=1")
    t.ok(400 <= r.status < 500 and out(b, "echo alive") == "alive\n", "DELETE /?recursive=1 is refused", r)


def test_list(t, b):
    sh(b, "mkdir -p /workspace/lt/sub && cd /workspace/lt && printf 12345 > b.txt && printf 1 > a.txt"
          " && touch .hidden sub/c.txt sub/.h2 && mkdir .hdir && touch .hdir/x && ln -s a.txt lnk"
          " && ln -s /workspace/lt/sub lnsub")
    r = lst(b, "/workspace/lt")
    t.eq(r.status, 200, "list answers 200", r)
    t.eq(r.get("path"), "/workspace/lt", "the answer has the path", r)
    t.eq(r.get("truncated"), False, "truncated is false", r)
    t.eq(paths(r), ["/workspace/lt/a.txt", "/workspace/lt/b.txt", "/workspace/lt/lnk", "/workspace/lt/lnsub",
                    "/workspace/lt/sub"], "non-recursive, no hidden: the direct entries, sorted by path", r)
    ents = {e.get("name"): e for e in r.get("entries") or []}
    e = ents.get("b.txt") or {}
    t.eq(set(e), {"name", "path", "type", "size", "mode", "mtime"}, "entries are {name, path, type, size, mode, mtime}",
         e)
    t.eq((e.get("type"), e.get("size"), e.get("mode")), ("file", 5, "0644"), "b.txt: file, size 5, mode \"0644\"", e)
    t.ok(harness.TIME_RE.match(e.get("mtime") or ""), "mtime is ISO 8601", e)
    t.eq((ents.get("sub") or {}).get("type"), "dir", "sub is a dir", ents.get("sub"))
    t.eq(((ents.get("lnk") or {}).get("type"), (ents.get("lnsub") or {}).get("type")), ("symlink", "symlink"),
         "symlinks are listed as symlink (not followed)", ents)
    r = lst(b, "/workspace/lt", hidden=1)
    t.eq(names(r), [".hdir", ".hidden", "a.txt", "b.txt", "lnk", "lnsub", "sub"], "hidden=1 adds dot-files", r)
    r = lst(b, "/workspace/lt", recursive=1)
    t.eq(paths(r), ["/workspace/lt/a.txt", "/workspace/lt/b.txt", "/workspace/lt/lnk", "/workspace/lt/lnsub",
                    "/workspace/lt/sub", "/workspace/lt/sub/c.txt"],
         "recursive=1 descends (not through the symlink lnsub, not into hidden)", r)
    r = lst(b, "/workspace/lt", recursive=1, hidden=1)
    t.eq(paths(r), sorted(paths(r)), "recursive+hidden is sorted by path", r)
    t.ok({"/workspace/lt/.hdir/x", "/workspace/lt/sub/.h2"} <= set(paths(r)) and
         not any(p.startswith("/workspace/lt/lnsub/") for p in paths(r)),
         "recursive+hidden includes .hdir/x and sub/.h2, still not through lnsub", r)
    r = lst(b, "/workspace/nope")
    t.eq(r.status, 404, "list of a missing directory -> 404", r)
    r = b.get(OP("list") + "?path=lt")
    t.ok(r.status == 200 and "/workspace/lt/a.txt" in paths(r), "list with a relative path (relative to /workspace)",
         r)
    sh(b, "mkdir -p /workspace/many && cd /workspace/many && seq -f 'f%05g' 1 10050 | xargs touch")
    r = lst(b, "/workspace/many")
    t.ok(r.status == 200 and len(r.get("entries") or []) == 10000 and r.get("truncated") is True,
         "a directory of 10050 files lists 10000 entries with truncated: true", {"n": len(r.get("entries") or []),
                                                                                 "truncated": r.get("truncated")})
    sh(b, "rm -rf /workspace/many")


def test_dropped_upload(t, b):
    put(b, "/workspace/keep.txt", b"old content")
    before = names(lst(b, "/workspace", hidden=1))
    t0 = time.time() - 1

    def drop(path):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                   % (F(path), b.tokens["alice"], 10 * MiB)).encode())
        chunk = os.urandom(64 * 1024)
        for _ in range(16):
            s.sendall(chunk)
        time.sleep(0.3)
        s.close()

    drop("/workspace/keep.txt")
    drop("/workspace/newfile.bin")
    time.sleep(1.0)
    t.eq(get(b, "/workspace/keep.txt").raw, b"old content", "an upload dropped after 1 of 10 MiB leaves the old file",
         None)
    t.eq(head(b, "/workspace/newfile.bin").status, 404, "a dropped upload of a new file creates nothing", None)
    after = wait_until(lambda: (lambda n: n if n == before else None)(names(lst(b, "/workspace", hidden=1))), 3.0)
    t.eq(after or names(lst(b, "/workspace", hidden=1)), before, "no temp file is left in /workspace (hidden=1)",
         None)
    up = upper_dir(b)
    if up and os.path.isdir(up):
        left = big_files_since(up, t0)
        t.eq(left, [], "no partial upload is left anywhere in the sandbox's writable layer (host view)", None)
    r = put(b, "/workspace/keep.txt", b"new content")
    t.ok(ok2xx(r) and get(b, "/workspace/keep.txt").raw == b"new content", "a later PUT works", r)


# --------------------------------------------------------------- escapes


def secret_free(r):
    return HOST_SECRET_TEXT.encode() not in (r.raw or b"")


def test_escape_reads(t, b):
    sh(b, "cd /workspace && ln -s /etc/passwd l1 && ln -s ../../../../../../etc l2 && ln -s /proc/1/root p1"
          " && ln -s /proc/self/root p2 && ln -s / p3 && ln -s ../../../../../../tmp/%s l4 && ln -s /tmp/%s l5"
          " && ln -s /proc/self/cwd p4" % (SECRET_NAME, SECRET_NAME))
    sbx_passwd = out(b, "cat /etc/passwd")
    with open("/etc/passwd") as f:
        host_passwd = f.read()
    r = get(b, "/workspace/l1")
    t.eq(r.status, 200, "GET of a symlink /workspace/l1 -> /etc/passwd answers 200", r)
    body = r.raw.decode("utf-8", "replace")
    t.ok("sandbox:x:1000" in body and body == sbx_passwd, "it is the SANDBOX's /etc/passwd (as exec cat sees it)", r)
    t.ok(body != host_passwd, "not the host's /etc/passwd", None)
    r = get(b, "/workspace/l2/hostname")
    t.ok(r.status == 200 and r.raw.decode() == out(b, "cat /etc/hostname"),
         "GET through l2 -> ../../../../../../etc reads the sandbox's /etc/hostname", r)
    r = lst(b, "/workspace/l2")
    sbx_etc = sorted(out(b, "ls -A /etc").split())
    if r.status == 200:
        t.eq(sorted(names(r)), [n for n in sbx_etc if not n.startswith(".")],
             "list through l2 shows the sandbox's /etc", r)
    else:
        t.ok(400 <= r.status < 500, "list through l2 is refused with a 4xx", r)

    shadow_path = os.path.join(harness.IMAGE_DIR, "current", "rootfs", "etc", "shadow")
    with open("/etc/shadow", "rb") as f:
        host_shadow = f.read()
    with open(shadow_path, "rb") as f:
        image_shadow = f.read()
    for p in ("/../../../../etc/shadow", "/workspace/../../../../../etc/shadow", "/%2e%2e/%2e%2e/etc/shadow",
              "/workspace/%2e%2e/%2e%2e/%2e%2e/etc/shadow", "/workspace/..%2f..%2f..%2fetc%2fshadow"):
        r = get(b, p)
        t.ok(r.status != 500 and r.raw != host_shadow and (r.status != 200 or r.raw == image_shadow),
             "GET /files%s is not the host's /etc/shadow (%d)" % (p, r.status), r)
    for p in ("/workspace/../../etc/hostname", "/workspace/%2e%2e/%2e%2e/etc/hostname"):
        r = get(b, p)
        t.ok(r.status == 200 and r.raw.decode() == out(b, "cat /etc/hostname"),
             "GET /files%s is the sandbox's hostname, not the host's" % p, r)

    probes = ["/workspace/l4", "/workspace/l5", "/workspace/p1/tmp/" + SECRET_NAME, "/workspace/p2/tmp/" + SECRET_NAME,
              "/workspace/p3/tmp/" + SECRET_NAME, "/workspace/p4/../../tmp/" + SECRET_NAME,
              "/proc/1/root/tmp/" + SECRET_NAME, "/proc/self/root/tmp/" + SECRET_NAME,
              "/proc/self/cwd/../../tmp/" + SECRET_NAME,
              "/workspace/../../../../../tmp/" + SECRET_NAME, "/%2e%2e/%2e%2e/%2e%2e/tmp/" + SECRET_NAME,
              "/workspace/%2e%2e%2f%2e%2e%2f%2e%2e%2ftmp%2f" + SECRET_NAME, "/%2fproc%2f1%2froot%2ftmp%2f" + SECRET_NAME]
    for p in probes:
        r = get(b, p)
        t.ok(secret_free(r) and r.status != 500 and r.status != 200,
             "GET /files%s does not read the host file (%d)" % (p, r.status), r)
        r = b.get(F(p) + "?encoding=utf-8")
        t.ok(secret_free(r) and r.status != 500, "... nor with ?encoding=utf-8", r)
    for p in ("/workspace/p1/tmp", "/workspace/p2/tmp", "/proc/1/root/tmp", "/workspace/l4/.."):
        r = lst(b, p)
        t.ok(SECRET_NAME not in r.raw.decode("utf-8", "replace") and r.status != 500,
             "list %s does not show the host's /tmp (%d)" % (p, r.status), r)
    r = head(b, "/proc/1/root/tmp/" + SECRET_NAME)
    t.eq(r.status, 404, "HEAD through /proc/1/root does not see the host file", r.headers)


def test_escape_writes(t, b):
    markers = []
    for i, via in enumerate(["/workspace/p1", "/workspace/p2", "/workspace/p3", "/proc/1/root", "/proc/self/root",
                             "/workspace/p4/../..", "/workspace/../../..", "/workspace/%2e%2e/%2e%2e/%2e%2e"]):
        host = "/tmp/sbx-escape-marker-%s-%d" % (TAG, i)
        markers.append(host)
        r = put(b, via + host, b"escaped", query="?mkdir=1")
        exists = os.path.exists(host)
        t.ok(not exists and r.status != 500, "PUT /files%s%s does not write on the host (%d)" % (via, host, r.status),
             r)
        if ok2xx(r):
            g = get(b, via + host)
            t.eq(g.raw, b"escaped", "... it landed inside the sandbox (GET of the same path reads it back)", g)
        if exists:
            os.unlink(host)
    r = put(b, "/workspace/l5", b"pwned")
    with open(HOST_SECRET) as f:
        t.eq(f.read(), HOST_SECRET_TEXT, "PUT to a symlink -> /tmp/<host file> leaves the host file intact", r)
    r = b.request("PUT", F("/workspace/p1/tmp/" + SECRET_NAME), {"content": "pwned"})
    with open(HOST_SECRET) as f:
        t.eq(f.read(), HOST_SECRET_TEXT, "JSON PUT through /proc/1/root leaves the host file intact", r)
    hostdir = "/tmp/sbx-escape-dir-" + TAG
    for via in ("/workspace/p1", "/workspace/p2", "/proc/1/root", "/workspace/.."):
        r = b.post(OP("mkdir"), {"path": via + hostdir, "recursive": True})
        t.ok(not os.path.exists(hostdir) and r.status != 500, "mkdir %s%s does not create on the host" % (via, hostdir),
             r)
        if os.path.isdir(hostdir):
            os.rmdir(hostdir)
    put(b, "/workspace/mvsrc.txt", b"mv")
    hostmv = "/tmp/sbx-escape-mv-" + TAG
    r = b.post(OP("move"), {"from": "/workspace/mvsrc.txt", "to": "/workspace/p1" + hostmv})
    t.ok(not os.path.exists(hostmv) and r.status != 500, "move to /workspace/p1%s does not land on the host" % hostmv,
         r)
    r = b.post(OP("move"), {"from": "/workspace/p2/tmp/" + SECRET_NAME, "to": "/workspace/stolen"})
    g = get(b, "/workspace/stolen")
    t.ok(os.path.exists(HOST_SECRET) and secret_free(g), "move from /workspace/p2/tmp/<host file> steals nothing",
         (r, g))
    for p in ("/workspace/p1/tmp/" + SECRET_NAME, "/proc/self/root/tmp/" + SECRET_NAME,
              "/workspace/../../../tmp/" + SECRET_NAME, "/workspace/l4"):
        r = b.delete(F(p))
        t.ok(os.path.exists(HOST_SECRET) and r.status != 500, "DELETE /files%s leaves the host file" % p, r)
    r = b.delete(F("/workspace/p3") + "?recursive=1")
    t.ok(ok2xx(r) and out(b, "ls /bin/bash; test -L /workspace/p3 || echo gone") == "/bin/bash\ngone\n",
         "DELETE ?recursive=1 of a symlink to / removes only the link", r)
    for m in markers:
        if os.path.exists(m):
            os.unlink(m)


def test_nul_and_bad_paths(t, b):
    r = b.request("PUT", F("/workspace/nul%00.txt"), raw=b"x")
    t.ok(400 <= r.status < 500, "PUT of a path with %%00 answers 4xx (%d)" % r.status, r)
    t.eq(out(b, "ls /workspace | grep '^nul' || true"), "", "no file named nul* was made (no truncation at NUL)",
         None)
    sh(b, "echo keep > /workspace/nul2")
    for method in ("GET", "HEAD", "DELETE"):
        r = b.request(method, F("/workspace/nul2%00.txt"))
        if method == "HEAD":
            forget_head(b, r)
        t.ok(400 <= r.status < 500, "%s of a path with %%00 answers 4xx (%d)" % (method, r.status), r)
    t.eq(out(b, "cat /workspace/nul2"), "keep\n", "DELETE /workspace/nul2%00.txt did not remove /workspace/nul2",
         None)
    r = b.post(OP("mkdir"), {"path": "/workspace/a\u0000b"})
    t.eq(r.status, 400, "mkdir of a path with NUL answers 400", r)
    r = b.post(OP("move"), {"from": "/workspace/afile", "to": "/workspace/x\u0000y"})
    t.eq(r.status, 400, "move to a path with NUL answers 400", r)
    r = put(b, "/workspace/" + "x" * 5000, b"x")
    t.ok(400 <= r.status < 500, "a path over 4096 bytes answers 4xx", r)
    r = b.get("/v1/sandboxes/no-such-box/files/workspace/x")
    t.eq(r.status, 404, "files of a missing sandbox -> 404", r)


def test_tenants(t, b):
    put(b, "/workspace/alice.txt", b"s3cr3t")
    checks = [
        ("GET", F("/workspace/alice.txt"), None, None, "bob GETs alice's file"),
        ("GET", F("/workspace/alice.txt") + "?encoding=utf-8", None, None, "bob GETs alice's file as JSON"),
        ("HEAD", F("/workspace/alice.txt"), None, None, "bob HEADs alice's file"),
        ("PUT", F("/workspace/alice.txt"), None, b"bob", "bob overwrites alice's file"),
        ("DELETE", F("/workspace/alice.txt"), None, None, "bob deletes alice's file"),
        ("GET", OP("list") + "?path=/workspace", None, None, "bob lists alice's files"),
        ("POST", OP("mkdir"), {"path": "/workspace/bobdir"}, None, "bob makes a directory"),
        ("POST", OP("move"), {"from": "/workspace/alice.txt", "to": "/workspace/bob.txt"}, None, "bob moves it"),
    ]
    for method, path, body, raw, what in checks:
        r = b.request(method, path, body, tenant="bob", raw=raw)
        if method == "HEAD":
            forget_head(b, r)
        t.eq(r.status, 404, what + " -> 404", r)
        t.ok("s3cr3t" not in r.raw.decode("utf-8", "replace"), what + ": nothing of alice's leaks", r)
    r = get(b, "/workspace/alice.txt", tenant=None)
    t.eq(r.status, 401, "no token -> 401", r)
    t.eq(get(b, "/workspace/alice.txt").raw, b"s3cr3t", "alice's file is untouched", None)
    t.eq(head(b, "/workspace/bobdir").status, 404, "bob's mkdir made nothing", None)


def test_cleanup(t, b):
    try:
        os.unlink(HOST_SECRET)
    except OSError:
        pass


if __name__ == "__main__":
    harness.main([test_setup, test_roundtrip_100mib, test_rss_1gib, test_json_variants, test_range_head_types,
                  test_put_options, test_visibility, test_mkdir, test_move, test_delete, test_list,
                  test_dropped_upload, test_escape_reads, test_escape_writes, test_nul_and_bad_paths, test_tenants,
                  test_cleanup])
