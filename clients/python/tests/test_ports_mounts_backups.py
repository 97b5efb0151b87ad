"""Ports, bucket mounts and backups. These endpoints are built on other
branches: each test skips (saying why) only when the broker answers
404 "no such route" for the route, and runs for real otherwise."""

from __future__ import annotations

import time

import pytest
from conftest import route_or_skip

from sandboxd import Sandbox, SandboxError


def test_ports(fresh_sandbox: Sandbox) -> None:
    sb = fresh_sandbox
    sb.write_file("/workspace/www/index.html", "hello from the sandbox\n", mkdir=True)
    sb.start_process("cd /workspace/www && exec python3 -m http.server 8000 --bind 127.0.0.1")
    p = route_or_skip("POST /v1/sandboxes/{id}/ports", lambda: sb.expose_port(8000, name="web"))
    assert p["port"] == 8000 and p["name"] == "web"
    assert p["url"] and p["token"]
    listed = sb.list_ports()
    assert [x["port"] for x in listed] == [8000]
    import requests

    body = None
    for _ in range(50):
        try:
            r = requests.get(p["url"], headers={"Authorization": "Bearer " + p["token"]}, timeout=5)
            if r.status_code == 200:
                body = r.text
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert body == "hello from the sandbox\n"
    sb.unexpose_port(8000)
    assert sb.list_ports() == []
    with pytest.raises(SandboxError) as ei:
        sb.unexpose_port(8000)
    assert ei.value.status == 404


def test_mounts(fresh_sandbox: Sandbox) -> None:
    sb = fresh_sandbox
    mounts = route_or_skip("GET /v1/sandboxes/{id}/mounts", sb.list_mounts)
    assert mounts == []
    # No object store is reachable in the test environment: a mount of an
    # endpoint nobody listens on is refused with a SandboxError naming why,
    # and leaves nothing mounted.
    with pytest.raises(SandboxError) as ei:
        sb.mount_bucket("bucket", "/workspace/bucket", endpoint="http://127.0.0.1:9",
                        access_key_id="AK", secret_access_key="SK", read_only=True)
    assert 400 <= (ei.value.status or 0) < 600 and ei.value.message
    assert sb.list_mounts() == []
    with pytest.raises(SandboxError) as ei:
        sb.unmount_bucket("/workspace/not-mounted")
    assert ei.value.status in (404, 422)


def test_backups(fresh_sandbox: Sandbox) -> None:
    sb = fresh_sandbox
    sb.write_file("/workspace/proj/a.txt", "one\n", mkdir=True)
    sb.write_file("/workspace/proj/skip.log", "log\n")
    b = route_or_skip("POST /v1/sandboxes/{id}/backups",
                      lambda: sb.create_backup("/workspace/proj", excludes=["*.log"]))
    assert b["backup_id"] and b["size"] > 0 and b["created_at"]
    assert b["backup_id"] in [x["backup_id"] for x in sb.list_backups()]
    sb.write_file("/workspace/proj/a.txt", "two\n")
    sb.write_file("/workspace/proj/new.txt", "new\n")
    sb.restore_backup(b["backup_id"])
    assert sb.read_file("/workspace/proj/a.txt") == "one\n"
    assert not sb.exists("/workspace/proj/skip.log") or sb.read_file("/workspace/proj/skip.log") == "log\n"
    sb.delete_backup(b["backup_id"])
    assert b["backup_id"] not in [x["backup_id"] for x in sb.list_backups()]
    with pytest.raises(SandboxError) as ei:
        sb.restore_backup(b["backup_id"])
    assert ei.value.status == 404
