"""SandboxError: status, code and message for the broker's errors, and for
failures to reach it."""

from __future__ import annotations

import socket

import pytest

from sandboxd import Sandbox, SandboxError, SandboxManager


def test_404_unknown_sandbox(manager: SandboxManager) -> None:
    with pytest.raises(SandboxError) as ei:
        manager.sandbox("no-such-box").exec("true")
    e = ei.value
    assert e.status == 404
    assert e.code == "not_found"
    assert "no-such-box" in e.message
    assert e.body == {"error": {"code": "not_found", "message": e.message}}
    assert "404" in str(e) and "not_found" in str(e)


def test_404_missing_file(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.read_file("/workspace/does-not-exist.txt")
    assert ei.value.status == 404 and ei.value.code == "not_found"


def test_400_invalid_field(manager: SandboxManager) -> None:
    with pytest.raises(SandboxError) as ei:
        manager.create_or_get_sandbox("pyc-bad", limits={"memory_mb": 1})
    e = ei.value
    assert e.status == 400
    assert e.code == "invalid_field"
    assert "limits.memory_mb" in e.message
    assert "pyc-bad" not in [s["id"] for s in manager.list_sandboxes()]


def test_400_cwd_and_session(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.exec("true", cwd="/tmp", session="other")
    assert ei.value.status == 400 and ei.value.code == "invalid_field"


def test_422_bad_cwd(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.exec("true", cwd="/nonexistent/dir")
    assert ei.value.status == 422 and ei.value.code == "bad_cwd"


def test_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with SandboxManager("http://127.0.0.1:%d" % port, "x") as m:
        with pytest.raises(SandboxError) as ei:
            m.list_sandboxes()
    assert ei.value.status is None
    assert ei.value.code == "connection_error"


def test_empty_path_is_a_sandbox_error(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.read_file("")
    assert ei.value.status is None and ei.value.code == "invalid_path"
