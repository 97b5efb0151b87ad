"""ExecutionSession: the lazy default session and named sessions keep
their directory, exports and shell state between calls."""

from __future__ import annotations

import pytest
from conftest import unique

from sandboxd import ExecutionSession, Sandbox, SandboxError, StdoutEvent


def test_default_session_is_lazy_and_keeps_state(fresh_sandbox: Sandbox) -> None:
    sb = fresh_sandbox
    assert sb._default_session is None, "no session handle before the first use"
    d = sb.default_session
    assert isinstance(d, ExecutionSession) and d.id == "default"
    assert sb.default_session is d
    assert sb.exec("cd /tmp && mkdir -p s1 && cd s1; export PYC_X=42; f() { echo fn-$1; }").exit_code == 0
    r = sb.exec("pwd; echo $PYC_X; f ok")
    assert r.stdout == "/tmp/s1\n42\nfn-ok\n"
    assert d.exec("pwd").stdout == "/tmp/s1\n", "the default session is the one Sandbox.exec uses"
    assert d.cwd == "/tmp/s1"
    # cwd= runs outside the session and leaves it alone.
    assert sb.exec("pwd; echo ${PYC_X:-none}", cwd="/usr").stdout == "/usr\nnone\n"
    assert sb.exec("pwd").stdout == "/tmp/s1\n"


def test_named_sessions_are_independent(sandbox: Sandbox) -> None:
    a = sandbox.create_session(unique("a"), cwd="/tmp", env={"WHO": "a"})
    b = sandbox.create_session(unique("b"))
    try:
        assert a.info["cwd"] == "/tmp"
        a.exec("mkdir -p sa && cd sa; export N=1")
        b.exec("cd /usr; export N=2")
        assert a.exec("pwd; echo $N $WHO").stdout == "/tmp/sa\n1 a\n"
        assert b.exec("pwd; echo $N").stdout == "/usr\n2\n"
        info = a.refresh()
        assert info["cwd"] == "/tmp/sa" and info["env"].get("N") == "1"
        ids = [s["id"] for s in sandbox.list_sessions()]
        assert a.id in ids and b.id in ids
        with pytest.raises(SandboxError) as ei:
            sandbox.create_session(a.id)
        assert ei.value.status == 409 and ei.value.code == "exists"
        events = list(a.exec_stream("echo streamed-from-$(pwd)"))
        assert "".join(e.data for e in events if isinstance(e, StdoutEvent)) == "streamed-from-/tmp/sa\n"
        p = a.start_process("pwd; echo $N")
        p.wait(timeout=10)
        assert p.logs()["stdout"] == "/tmp/sa\n1\n", "a session's process starts where the session is"
    finally:
        a.delete()
        b.delete()
    ids = [s["id"] for s in sandbox.list_sessions()]
    assert a.id not in ids and b.id not in ids
    with pytest.raises(SandboxError) as ei:
        a.exec("true")
    assert ei.value.status == 404


def test_session_reset_after_exit(sandbox: Sandbox) -> None:
    s = sandbox.create_session(unique("r"), cwd="/tmp")
    try:
        s.exec("cd /usr")
        r = s.exec("exit 7")
        assert r.exit_code == 7 and r.session_reset
        assert s.exec("pwd").stdout == "/tmp\n", "a reset session starts again from its initial directory"
    finally:
        s.delete()


def test_default_session_process(fresh_sandbox: Sandbox) -> None:
    p = fresh_sandbox.default_session.start_process("pwd")
    p.wait(timeout=10)
    assert p.logs()["stdout"] == "/workspace\n"
