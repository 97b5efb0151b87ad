"""Background processes: start, status, logs, following logs live, kill,
kill all."""

from __future__ import annotations

import time

import pytest

from sandboxd import CompleteEvent, Sandbox, SandboxError, StderrEvent, StdoutEvent


def test_start_logs_wait(sandbox: Sandbox) -> None:
    p = sandbox.start_process("echo out; echo err >&2; sleep 0.3; exit 4", cwd="/tmp", env={"A": "1"})
    assert p.id.startswith("p-") and p.pid and p.status == "running"
    p.wait(timeout=15)
    assert p.status == "exited" and p.exit_code == 4 and p.ended_at
    logs = p.logs()
    assert logs["stdout"] == "out\n" and logs["stderr"] == "err\n" and logs["truncated"] is False
    assert sandbox.get_process(p.pid).id == p.id
    assert p.id in [q.id for q in sandbox.list_processes()]


def test_follow_stream(sandbox: Sandbox) -> None:
    p = sandbox.start_process("echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three; exit 2", cwd="/tmp")
    events = []
    times = []
    t0 = time.monotonic()
    with p.follow_logs() as stream:
        for ev in stream:
            events.append(ev)
            times.append(time.monotonic() - t0)
    assert [type(e) for e in events] == [StdoutEvent, StderrEvent, StdoutEvent, CompleteEvent], events
    assert [getattr(e, "data", None) for e in events[:3]] == ["one\n", "two\n", "three\n"]
    end = events[-1]
    assert isinstance(end, CompleteEvent) and end.type == "exit" and end.exit_code == 2
    assert times[-1] - times[0] >= 0.7, "output is followed live: %r" % times


def test_kill(sandbox: Sandbox) -> None:
    p = sandbox.start_process("sleep 300", cwd="/tmp")
    assert p.refresh().running
    p.kill("TERM")
    p.wait(timeout=10)
    assert p.status == "exited" and p.signal == "TERM"


def test_kill_all(fresh_sandbox: Sandbox) -> None:
    ps = [fresh_sandbox.start_process("sleep 300") for _ in range(3)]
    assert fresh_sandbox.kill_all_processes() == 3
    for p in ps:
        p.wait(timeout=10)
        assert p.signal == "KILL"


def test_unknown_process(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as ei:
        sandbox.get_process("p-999999")
    assert ei.value.status == 404
