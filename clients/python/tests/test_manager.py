"""SandboxManager: create_or_get_sandbox and its handle cache, listing,
get, keepalive, env, delete, health."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import unique

from sandboxd import Sandbox, SandboxError, SandboxManager


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_health(manager: SandboxManager) -> None:
    h = manager.health()
    assert h["status"] == "ok"
    assert h["version"]


def test_create_or_get_caches_handle(manager: SandboxManager) -> None:
    sid = unique("pyc")
    a = manager.create_or_get_sandbox(sid, env={"FOO": "bar"}, limits={"memory_mb": 256, "pids": 128})
    try:
        assert isinstance(a, Sandbox)
        assert a.id == sid and a.created is True
        assert a.info["status"] == "running"
        assert a.info["env"] == {"FOO": "bar"}
        assert a.info["limits"]["memory_mb"] == 256
        b = manager.create_or_get_sandbox(sid, env={"OTHER": "x"})
        assert b is a, "the second call returns the same cached handle"
        assert b.created is False, "the second call found the sandbox rather than creating it"
        assert b.info["env"] == {"FOO": "bar"}, "an existing sandbox is left unchanged"
        assert manager.sandbox(sid) is a
        assert manager.get_sandbox(sid) is a
        assert a.exec("echo $FOO").stdout == "bar\n"
        assert sid in [s["id"] for s in manager.list_sandboxes()]
    finally:
        a.delete()
    assert sid not in [s["id"] for s in manager.list_sandboxes()]
    with pytest.raises(SandboxError) as ei:
        manager.get_sandbox(sid)
    assert ei.value.status == 404
    c = manager.sandbox(sid)
    assert c is not a, "a deleted sandbox's handle is forgotten"


def test_generated_id(manager: SandboxManager) -> None:
    sb = manager.create_or_get_sandbox()
    try:
        assert sb.id and sb.created
        assert manager.sandbox(sb.id) is sb
    finally:
        manager.delete_sandbox(sb.id)


def test_keepalive_and_refresh(sandbox: Sandbox) -> None:
    before = _epoch(sandbox.refresh()["expires_at"])
    info = sandbox.keepalive(120)
    assert _epoch(info["expires_at"]) >= before + 119
    assert sandbox.info is info


def test_set_env_reaches_exec(sandbox: Sandbox) -> None:
    env = sandbox.set_env({"PYC_A": "1", "PYC_B": "2"})
    assert env["PYC_A"] == "1" and env["PYC_B"] == "2"
    env = sandbox.set_env({"PYC_B": None})
    assert "PYC_B" not in env
    r = sandbox.exec("echo ${PYC_A}-${PYC_B:-unset}", cwd="/tmp")
    assert r.stdout == "1-unset\n"


def test_token_selects_tenant(broker_url: str, manager: SandboxManager, sandbox: Sandbox) -> None:
    import os

    bob_token = os.environ.get("SANDBOXD_TOKEN_BOB")
    if not bob_token:
        pytest.skip("SANDBOXD_TOKEN_BOB is not set")
    with SandboxManager(broker_url, bob_token) as bob:
        assert sandbox.id not in [s["id"] for s in bob.list_sandboxes()]
        with pytest.raises(SandboxError) as ei:
            bob.sandbox(sandbox.id).exec("true")
        assert ei.value.status == 404 and ei.value.code == "not_found"
    with SandboxManager(broker_url, "wrong-token") as nobody:
        with pytest.raises(SandboxError) as ei:
            nobody.list_sandboxes()
        assert ei.value.status == 401 and ei.value.code == "unauthorized"


def test_env_defaults(monkeypatch: pytest.MonkeyPatch, broker_url: str, token: str) -> None:
    monkeypatch.setenv("SANDBOXD_URL", broker_url + "/")
    monkeypatch.setenv("SANDBOXD_TOKEN", token)
    with SandboxManager() as m:
        assert m.base_url == broker_url
        assert isinstance(m.list_sandboxes(), list)
