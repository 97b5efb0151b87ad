"""exec and exec_stream: exit codes, output, env, cwd, stdin, timeouts,
live events, callbacks, and disconnecting."""

from __future__ import annotations

import time
from typing import List

from sandboxd import CompleteEvent, ErrorEvent, Sandbox, StartEvent, StderrEvent, StdoutEvent


def test_exit_code_stdout_stderr(sandbox: Sandbox) -> None:
    r = sandbox.exec("echo hello; echo oops >&2; exit 3", cwd="/workspace")
    assert r.stdout == "hello\n"
    assert r.stderr == "oops\n"
    assert r.exit_code == 3 and not r.ok
    assert not r.timed_out and not r.truncated
    ok = sandbox.exec("true", cwd="/workspace")
    assert ok.exit_code == 0 and ok.ok


def test_env_and_cwd(sandbox: Sandbox) -> None:
    r = sandbox.exec('echo "$GREETING $WHO"; pwd', cwd="/tmp", env={"GREETING": "hi", "WHO": "there"})
    assert r.stdout == "hi there\n/tmp\n"
    r = sandbox.exec("pwd; id -u; echo $HOME", cwd="/usr")
    assert r.stdout == "/usr\n1000\n/workspace\n"


def test_stdin(sandbox: Sandbox) -> None:
    r = sandbox.exec("tr a-z A-Z", cwd="/tmp", stdin="shout\n")
    assert r.stdout == "SHOUT\n"


def test_timeout(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    r = sandbox.exec("echo before; sleep 30; echo after", cwd="/tmp", timeout=1.0)
    took = time.monotonic() - t0
    assert r.timed_out is True
    assert r.exit_code == 137
    assert r.stdout == "before\n"
    assert took < 10, "a 1 s timeout ends the call long before the 30 s sleep (took %.1f s)" % took


def test_exec_stream_events_in_order(sandbox: Sandbox) -> None:
    events = []
    times: List[float] = []
    t0 = time.monotonic()
    for ev in sandbox.exec_stream("for i in 1 2 3; do echo $i; sleep 0.3; done; echo bye >&2; exit 5"):
        events.append(ev)
        times.append(time.monotonic() - t0)
    kinds = [type(e) for e in events]
    assert kinds[0] is StartEvent and events[0].pid
    assert kinds[-1] is CompleteEvent
    out = "".join(e.data for e in events if isinstance(e, StdoutEvent))
    err = "".join(e.data for e in events if isinstance(e, StderrEvent))
    assert out == "1\n2\n3\n" and err == "bye\n"
    end = events[-1]
    assert isinstance(end, CompleteEvent) and end.exit_code == 5 and end.type == "complete"
    # Live: the first line arrives well before the command ends.
    first_out = next(i for i, e in enumerate(events) if isinstance(e, StdoutEvent))
    assert times[-1] - times[first_out] >= 0.5, "events arrive as they happen, not all at the end: %r" % times


def test_exec_stream_error_before_start(sandbox: Sandbox) -> None:
    import pytest

    from sandboxd import SandboxError

    with pytest.raises(SandboxError) as ei:
        sandbox.exec_stream("true", cwd="/no/such/dir")
    assert ei.value.status == 422 and ei.value.code == "bad_cwd"


def test_exec_stream_close_kills_command(sandbox: Sandbox) -> None:
    marker = "/tmp/pyc-after-%d" % time.monotonic_ns()
    stream = sandbox.exec_stream("echo started; sleep 2; touch %s" % marker, cwd="/tmp")
    with stream:
        for ev in stream:
            if isinstance(ev, StdoutEvent):
                break
    assert stream.closed
    time.sleep(3)
    assert not sandbox.exists(marker), "disconnecting killed the command before it touched the marker"


def test_callbacks(sandbox: Sandbox) -> None:
    out: List[str] = []
    err: List[str] = []
    r = sandbox.exec("echo a; sleep 0.1; echo b >&2; echo c", cwd="/tmp", on_stdout=out.append,
                     on_stderr=err.append)
    assert "".join(out) == "a\nc\n" and "".join(err) == "b\n"
    assert r.stdout == "a\nc\n" and r.stderr == "b\n" and r.exit_code == 0


def test_stream_timeout_complete_event(sandbox: Sandbox) -> None:
    events = list(sandbox.exec_stream("sleep 20", cwd="/tmp", timeout=0.5))
    end = events[-1]
    assert isinstance(end, CompleteEvent), events
    assert end.timed_out and end.exit_code == 137
    assert not any(isinstance(e, ErrorEvent) for e in events)


def test_threads_share_one_manager(sandbox: Sandbox) -> None:
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: sandbox.exec("sleep 1; echo %d" % i, cwd="/tmp"), range(4)))
    took = time.monotonic() - t0
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert took < 3.5, "four 1 s commands from four threads run in parallel (%.1f s)" % took
