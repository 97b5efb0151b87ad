"""Ports, bucket mounts and backups. These endpoints are built on other
branches: each test skips (saying why) only when the broker answers
404 "no such route" for the route, and runs for real otherwise."""

from __future__ import annotations

import time
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest
import requests
from conftest import route_or_skip

from sandboxd import Sandbox, SandboxError, SandboxManager


def _get(url: str, **kw: Any) -> Optional[requests.Response]:
    """GET url, retrying while the server in the sandbox starts."""
    for _ in range(50):
        try:
            r = requests.get(url, timeout=5, **kw)
            if r.status_code == 200:
                return r
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return None


def test_ports(fresh_sandbox: Sandbox, manager: SandboxManager) -> None:
    sb = fresh_sandbox
    sb.write_file("/workspace/www/index.html", "hello from the sandbox\n", mkdir=True)
    sb.start_process("cd /workspace/www && exec python3 -m http.server 8000 --bind 127.0.0.1")
    p = route_or_skip("POST /v1/sandboxes/{id}/ports", lambda: sb.expose_port(8000, name="web"))
    assert p["port"] == 8000 and p["name"] == "web"
    assert p["url"] and p["token"]
    assert [x["port"] for x in sb.list_ports()] == [8000]
    # The preview URL's host names the port and carries its token; send it
    # to the broker's own address so no DNS for *.localhost is needed.
    u = urlsplit(p["url"])
    r = _get(manager.base_url + (u.path or "/"), headers={"Host": u.netloc})
    assert r is not None and r.text == "hello from the sandbox\n"
    if p.get("path"):  # the path form, with the tenant's bearer token
        r = _get(manager.base_url + p["path"], headers={"Authorization": "Bearer " + (manager.token or "")})
        assert r is not None and r.text == "hello from the sandbox\n"
    sb.unexpose_port(8000)
    assert sb.list_ports() == []
    with pytest.raises(SandboxError) as ei:
        sb.unexpose_port(8000)
    assert ei.value.status == 404


def test_mounts(fresh_sandbox: Sandbox) -> None:
    sb = fresh_sandbox
    mounts = route_or_skip("GET /v1/sandboxes/{id}/mounts", sb.list_mounts)
    assert mounts == []
    # No object store is known to be reachable here (nothing listens on
    # port 9): whether the broker refuses the mount at once or mounts
    # lazily, the client must report it faithfully.
    try:
        m = sb.mount_bucket("bucket", "/workspace/bucket", endpoint="http://127.0.0.1:9", access_key_id="AK",
                            secret_access_key="SK", read_only=True, prefix="data/")
    except SandboxError as e:
        assert e.status is not None and 400 <= e.status < 600 and e.code and e.message
        assert sb.list_mounts() == []
    else:
        assert isinstance(m, dict)
        listed = sb.list_mounts()
        assert [x.get("mount_path") for x in listed] == ["/workspace/bucket"]
        assert "SK" not in str(listed), "the secret key is never echoed back"
        sb.unmount_bucket("/workspace/bucket")
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
    assert sb.get_backup(b["backup_id"])["size"] == b["size"]
    sb.write_file("/workspace/proj/a.txt", "two\n")
    sb.write_file("/workspace/proj/new.txt", "new\n")
    sb.restore_backup(b["backup_id"])
    assert sb.read_file("/workspace/proj/a.txt") == "one\n"
    sb.restore_backup(b["backup_id"], dir="/workspace/copy")
    assert sb.read_file("/workspace/copy/a.txt") == "one\n"
    assert not sb.exists("/workspace/copy/skip.log"), "excluded files are not in the backup"
    sb.delete_backup(b["backup_id"])
    assert b["backup_id"] not in [x["backup_id"] for x in sb.list_backups()]
    with pytest.raises(SandboxError) as ei:
        sb.restore_backup(b["backup_id"])
    assert ei.value.status == 404
