"""Files: text and bytes, streamed big uploads and downloads, listing,
mkdir, move, delete, exists, stat."""

from __future__ import annotations

import hashlib
import io
import os
import resource
from typing import Iterator

import pytest

from sandboxd import Sandbox, SandboxError


def test_text_and_bytes(sandbox: Sandbox) -> None:
    r = sandbox.write_file("/workspace/f/hello.txt", "héllo\n", mkdir=True)
    assert r["size"] == len("héllo\n".encode())
    assert sandbox.read_file("/workspace/f/hello.txt") == "héllo\n"
    blob = bytes(range(256)) * 4
    sandbox.write_file("/workspace/f/blob.bin", blob)
    assert sandbox.read_bytes("/workspace/f/blob.bin") == blob
    # A relative path is under /workspace, and the file is the sandbox user's.
    assert sandbox.read_file("f/hello.txt") == "héllo\n"
    r = sandbox.exec("stat -c '%U %a' /workspace/f/hello.txt", cwd="/tmp")
    assert r.stdout == "sandbox 644\n"


def test_mode_and_odd_names(sandbox: Sandbox) -> None:
    sandbox.write_file("/workspace/f/run me #1.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert sandbox.exec("'/workspace/f/run me #1.sh'", cwd="/tmp").stdout == "ran\n"
    st = sandbox.stat("/workspace/f/run me #1.sh")
    assert st is not None and st.type == "file" and st.mode == "0755"


def test_file_object_upload(sandbox: Sandbox) -> None:
    sandbox.write_file("/workspace/f/fo.bin", io.BytesIO(b"x" * 100000))
    assert sandbox.stat("/workspace/f/fo.bin").size == 100000


def _chunks(n_chunks: int, seed: bytes) -> Iterator[bytes]:
    block = hashlib.sha256(seed).digest() * (1 << 15)  # 1 MiB
    for i in range(n_chunks):
        yield bytes([i & 0xFF]) + block[1:]


def test_big_binary_streaming(sandbox: Sandbox, tmp_path) -> None:
    mib = 96
    want = hashlib.sha256()
    for c in _chunks(mib, b"pyc"):
        want.update(c)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    r = sandbox.write_file("/workspace/big.bin", _chunks(mib, b"pyc"))
    assert r["size"] == mib << 20
    inside = sandbox.exec("sha256sum /workspace/big.bin", cwd="/tmp").stdout.split()[0]
    assert inside == want.hexdigest()
    # upload_file from a local file, download_file to a local file
    local = tmp_path / "big.bin"
    with open(local, "wb") as f:
        for c in _chunks(mib, b"pyc"):
            f.write(c)
    sandbox.upload_file(local, "/workspace/big2.bin")
    out = tmp_path / "down.bin"
    n = sandbox.download_file("/workspace/big2.bin", out)
    assert n == mib << 20
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    assert h.hexdigest() == want.hexdigest()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < mib / 2, "uploads and downloads are streamed, not held in memory (+%.0f MiB)" % grown_mib
    sandbox.delete_file("/workspace/big.bin")
    sandbox.delete_file("/workspace/big2.bin")


def test_list_mkdir_move_delete_exists(sandbox: Sandbox) -> None:
    sandbox.mkdir("/workspace/tree/a/b", recursive=True)
    sandbox.write_file("/workspace/tree/a/b/x.txt", "x")
    sandbox.write_file("/workspace/tree/.hidden", "h")
    with pytest.raises(SandboxError) as ei:
        sandbox.mkdir("/workspace/tree/a")
    assert ei.value.status == 409 and ei.value.code == "exists"
    assert [e.name for e in sandbox.list_files("/workspace/tree", hidden=True)] == [".hidden", "a"]
    assert [e.name for e in sandbox.list_files("/workspace/tree", hidden=False)] == ["a"]
    deep = {e.path: e for e in sandbox.list_files("/workspace/tree", recursive=True)}
    assert "/workspace/tree/a/b/x.txt" in deep
    assert deep["/workspace/tree/a/b"].is_dir and deep["/workspace/tree/a/b/x.txt"].size == 1
    sandbox.move("/workspace/tree/a", "/workspace/tree/c")
    assert not sandbox.exists("/workspace/tree/a")
    assert sandbox.exists("/workspace/tree/c/b/x.txt")
    assert sandbox.stat("/workspace/tree/c").type == "dir"
    with pytest.raises(SandboxError) as ei:
        sandbox.delete_file("/workspace/tree/c")
    assert ei.value.status == 409 and ei.value.code == "not_empty"
    sandbox.delete_file("/workspace/tree/c", recursive=True)
    sandbox.delete_file("/workspace/tree/.hidden")
    assert sandbox.list_files("/workspace/tree", hidden=True) == []
    assert sandbox.exists("/workspace/tree") and not sandbox.exists("/workspace/tree/c")
    assert sandbox.stat("/workspace/nothing-here") is None


def test_paths_stay_inside(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.read_file("/../../../etc/shadow")
    # Resolved inside the sandbox: the sandbox's own /etc/shadow, unreadable
    # to the sandbox user or absent; never the host's.
    assert ei.value.status in (403, 404)
    assert os.path.exists("/etc/shadow")
