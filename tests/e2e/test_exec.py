#!/usr/bin/env python3
"""test_exec.py - POST /v1/sandboxes/{id}/exec: output, exit codes, cwd,
env, stdin, timeouts, output cap, UTF-8, user, and SSE streaming."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "ex"
EXEC = "/v1/sandboxes/%s/exec" % SB
RESULT_KEYS = {"stdout", "stderr", "exit_code", "duration_ms", "timed_out", "truncated"}


def pgrep(b, pattern):
    """Processes in the sandbox whose command line matches pattern (use a
    [x] bracket so the pgrep's own shell does not match)."""
    # With a cwd the check runs outside the default session, so it does not
    # queue behind the command it looks for.
    r = b.exec(SB, "pgrep -af '%s'" % pattern, cwd="/")
    return r.get("stdout") if r.status == 200 else "exec failed: %s" % r


def test_setup(t, b):
    r = b.create(id=SB, env={"SBX_A": "from-sandbox", "SBX_B": "from-sandbox"})
    t.eq(r.status, 201, "create the exec sandbox", r)


def test_basic(t, b):
    r = b.exec(SB, "echo hello; echo oops >&2; exit 3")
    t.eq(r.status, 200, "exec answers 200", r)
    t.ok(isinstance(r.body, dict) and RESULT_KEYS <= set(r.body), "the result has all documented fields", r)
    t.eq(r.get("stdout"), "hello\n", "stdout is returned", r)
    t.eq(r.get("stderr"), "oops\n", "stderr is returned separately", r)
    t.eq(r.get("exit_code"), 3, "exit_code is the command's exit status", r)
    t.ok(r.get("timed_out") is False and r.get("truncated") is False, "timed_out and truncated are false", r)
    t.ok(isinstance(r.get("duration_ms"), int) and 0 <= r.get("duration_ms") < 10000, "duration_ms is sane", r)
    r = b.exec(SB, "kill -TERM $$")
    t.eq(r.get("exit_code"), 143, "a command killed by SIGTERM reports exit_code 128+15", r)
    r = b.exec(SB, "echo 'h\u00e9llo \u2713'")
    t.eq(r.get("stdout"), "h\u00e9llo \u2713\n", "valid UTF-8 output comes back intact", r)


def test_cwd(t, b):
    r = b.exec(SB, "pwd")
    t.eq(r.get("stdout"), "/workspace\n", "default cwd is /workspace", r)
    r = b.exec(SB, "pwd", cwd="/tmp")
    t.eq(r.get("stdout"), "/tmp\n", "explicit cwd /tmp is used", r)
    r = b.exec(SB, "pwd", cwd="/no/such/dir")
    t.eq((r.status, r.err_code()), (422, "bad_cwd"), "a cwd that does not exist answers 422 bad_cwd", r)


def test_env_user(t, b):
    r = b.exec(SB, 'echo "$SBX_A|$SBX_B|$SBX_C"', env={"SBX_B": "from-request", "SBX_C": "c"})
    t.eq(r.get("stdout"), "from-sandbox|from-request|c\n", "env merges sandbox env and request env (request wins)",
         r)
    r = b.exec(SB, 'echo "$SBX_B"')
    t.eq(r.get("stdout"), "from-sandbox\n", "request env does not stick to the sandbox", r)
    r = b.exec(SB, 'echo "$HOME"')
    t.eq(r.get("stdout"), "/workspace\n", "HOME is /workspace", r)
    r = b.exec(SB, "id -u; id -un")
    t.eq(r.get("stdout"), "1000\nsandbox\n", "commands run as user sandbox, uid 1000", r)


def test_stdin(t, b):
    r = b.exec(SB, "tr a-z A-Z", stdin="hello\nworld\n")
    t.eq(r.get("stdout"), "HELLO\nWORLD\n", "stdin is fed to the command", r)
    big = ("0123456789abcdef" * 20000)[:300000]
    r = b.exec(SB, "cat", stdin=big)
    t.ok(r.status == 200 and r.get("stdout") == big, "300 kB of stdin comes back through cat (no pipe deadlock)",
         "status %s, stdout %s bytes" % (r.status, len(r.get("stdout") or "")))
    t0 = time.monotonic()
    r = b.exec(SB, "cat; echo end", timeout_ms=5000)
    t.ok(r.get("stdout") == "end\n" and r.get("timed_out") is False and time.monotonic() - t0 < 3,
         "without stdin the command reads EOF at once", r)


def test_timeout(t, b):
    t0 = time.monotonic()
    r = b.exec(SB, "sleep 3171 & sleep 3170", timeout_ms=500)
    dt = time.monotonic() - t0
    t.eq(r.status, 200, "a timed-out exec answers 200", r)
    t.eq(r.get("timed_out"), True, "timed_out is true", r)
    t.eq(r.get("exit_code"), 137, "a timed-out exec has exit_code 137", r)
    t.ok(dt < 3.0, "a 500 ms timeout returns in under 3 s", "took %.2f s" % dt)
    left = wait_until(lambda: pgrep(b, "sleep 317[01]") == "", 1.5, 0.25)
    t.ok(left is True, "the timeout killed the whole process group, background child included",
         "still running: %r" % pgrep(b, "sleep 317[01]"))
    r = b.exec(SB, "echo still-here")
    t.eq(r.get("stdout"), "still-here\n", "the sandbox runs commands after a timeout", r)


def test_output_cap(t, b):
    r = b.exec(SB, "head -c 3000000 /dev/zero | tr '\\0' a")
    out = r.get("stdout") or ""
    t.eq(len(out), harness.MAX_OUTPUT, "stdout is capped at 1 MiB", "status %s" % r.status)
    t.ok(out == "a" * len(out), "the kept stdout is the start of the output", out[:100])
    t.eq(r.get("truncated"), True, "truncated is true when output was cut", {k: r.get(k) for k in RESULT_KEYS - {"stdout"}})
    t.eq(r.get("exit_code"), 0, "the command still runs to completion past the cap", r.get("exit_code"))
    r = b.exec(SB, "head -c 2000000 /dev/zero | tr '\\0' b >&2; echo done")
    t.ok(len(r.get("stderr") or "") == harness.MAX_OUTPUT and r.get("stdout") == "done\n"
         and r.get("truncated") is True, "stderr is capped at 1 MiB too, stdout unaffected",
         "stderr %d bytes, stdout %r" % (len(r.get("stderr") or ""), r.get("stdout")))


def test_non_utf8(t, b):
    r = b.exec(SB, "printf 'a\\xffb\\n'; printf '\\xc3' >&2")
    t.eq(r.status, 200, "non-UTF-8 output answers 200", r)
    t.eq(r.get("stdout"), "a\ufffdb\n", "an invalid byte becomes U+FFFD", r)
    t.eq(r.get("stderr"), "\ufffd", "a truncated UTF-8 sequence at the end becomes U+FFFD", r)


def test_concurrent(t, b):
    # Separate sessions (or a cwd, which runs outside any session) run in
    # parallel; the default session runs its commands one at a time.
    for name in ("par-a", "par-b"):
        b.post("/v1/sandboxes/%s/sessions" % SB, {"id": name})
    t0 = time.monotonic()
    hs = [harness.in_thread(b.exec, SB, "sleep 1; echo 0", session="par-a"),
          harness.in_thread(b.exec, SB, "sleep 1; echo 1", session="par-b"),
          harness.in_thread(b.exec, SB, "sleep 1; echo 2", cwd="/tmp")]
    res = [h.join(30) for h in hs]
    dt = time.monotonic() - t0
    outs = [r.get("stdout") if r is not None else repr(e) for r, e in res]
    t.eq(outs, ["0\n", "1\n", "2\n"], "three concurrent execs all answer", res)
    t.ok(dt < 2.5, "execs on different sessions run in parallel (3 x sleep 1 in under 2.5 s)",
         "took %.2f s" % dt)

    t0 = time.monotonic()
    hs = [harness.in_thread(b.exec, SB, "sleep 0.5; echo %d" % i) for i in range(3)]
    res = [h.join(30) for h in hs]
    dt = time.monotonic() - t0
    outs = sorted(r.get("stdout") if r is not None else repr(e) for r, e in res)
    t.eq(outs, ["0\n", "1\n", "2\n"], "three concurrent execs on the default session all answer", res)
    t.ok(dt >= 1.4, "the default session runs them one at a time (3 x sleep 0.5 take >= 1.4 s)",
         "took %.2f s" % dt)


def test_missing_sandbox(t, b):
    r = b.exec("no-such-box", "true")
    t.eq((r.status, r.err_code()), (404, "not_found"), "exec on a missing sandbox answers 404", r)


def check_event_types(t, evs, what):
    good = all(isinstance(e.data, dict) and e.data.get("type") == e.name and "timestamp" in e.data for e in evs)
    t.ok(good, what + ": every event's data has its type and a timestamp", evs)


def test_stream(t, b):
    h, s = b.sse(EXEC, {"command": "for i in 1 2 3; do echo $i; sleep 0.3; done"})
    if not t.ok(s is not None, "Accept: text/event-stream answers 200 text/event-stream", h):
        return
    evs = s.events()
    names = [e.name for e in evs]
    t.eq(names, ["start", "stdout", "stdout", "stdout", "complete"], "events come as start, stdout x3, complete",
         evs)
    t.eq([e.data.get("data") for e in evs if e.name == "stdout"], ["1\n", "2\n", "3\n"],
         "stdout events carry the lines in order", evs)
    check_event_types(t, evs, "stream")
    if evs and evs[0].name == "start":
        t.ok(isinstance(evs[0].data.get("pid"), int), "start has the pid", evs[0])
    first_out = next((e for e in evs if e.name == "stdout"), None)
    last = evs[-1] if evs else None
    t.ok(first_out is not None and last is not None and last.t - first_out.t >= 0.5,
         "the first stdout arrives at least 0.5 s before complete (output is live)",
         "first stdout at %s, complete at %s" % (first_out and first_out.t - s.t0, last and last.t - s.t0))
    if last is not None and last.name == "complete":
        t.ok(last.data.get("exit_code") == 0 and last.data.get("timed_out") is False
             and isinstance(last.data.get("duration_ms"), int), "complete has exit_code 0 and duration_ms", last)

    h, s = b.sse(EXEC, {"command": "echo out; sleep 0.2; echo err >&2; sleep 0.2; exit 7"})
    evs = s.events() if s else []
    t.eq([(e.name, e.data.get("data") if isinstance(e.data, dict) else None) for e in evs],
         [("start", None), ("stdout", "out\n"), ("stderr", "err\n"), ("complete", None)],
         "stderr is streamed as stderr events, in order with stdout", evs or h)
    t.eq(evs[-1].data.get("exit_code") if evs else None, 7, "complete carries a non-zero exit_code", evs)


def test_stream_errors(t, b):
    h, s = b.sse(EXEC, {"command": "pwd", "cwd": "/no/such/dir"})
    if s is None:
        t.eq((h.status, h.err_code()), (422, "bad_cwd"), "SSE with a bad cwd answers 422 bad_cwd before streaming",
             h)
    else:
        evs = s.events()
        ok = (len(evs) >= 1 and evs[-1].name == "error" and evs[-1].data.get("code") == "bad_cwd"
              and "complete" not in [e.name for e in evs] and "start" not in [e.name for e in evs])
        t.ok(ok, "SSE with a bad cwd ends with one error event, code bad_cwd, and no complete", evs)

    t0 = time.monotonic()
    h, s = b.sse(EXEC, {"command": "sleep 30", "timeout_ms": 500})
    evs = s.events() if s else []
    last = evs[-1] if evs else None
    t.ok(last is not None and last.name == "complete" and last.data.get("timed_out") is True
         and last.data.get("exit_code") == 137 and time.monotonic() - t0 < 3,
         "a streamed exec that times out completes with timed_out true, exit_code 137", evs or h)

    h, s = b.sse(EXEC, {"command": "head -c 3000000 /dev/zero | tr '\\0' a"}, timeout=60)
    evs = s.events() if s else []
    n = sum(len(e.data.get("data", "")) for e in evs if e.name == "stdout")
    last = evs[-1] if evs else None
    t.ok(n == harness.MAX_OUTPUT and last is not None and last.name == "complete"
         and last.data.get("truncated") is True, "a streamed exec is capped at 1 MiB and says truncated",
         "%d stdout bytes; last %r" % (n, last))


def test_stream_disconnect(t, b):
    h, s = b.sse(EXEC, {"command": "sleep 3180 & sleep 3181"})
    if not t.ok(s is not None, "streamed exec starts", h):
        return
    first = None
    for e in s:
        first = e
        break
    t.ok(first is not None and first.name == "start", "the start event arrives", first)
    running = pgrep(b, "sleep 318[01]")
    t.ok("sleep 3181" in running, "the streamed command runs", running)
    s.close()
    gone = wait_until(lambda: pgrep(b, "sleep 318[01]") == "", 3.0, 0.25)
    t.ok(gone is True, "closing the stream kills the command's process group",
         "still running: %r" % pgrep(b, "sleep 318[01]"))


if __name__ == "__main__":
    harness.main([test_setup, test_basic, test_cwd, test_env_user, test_stdin, test_timeout, test_output_cap,
                  test_non_utf8, test_concurrent, test_missing_sandbox, test_stream, test_stream_errors,
                  test_stream_disconnect])
