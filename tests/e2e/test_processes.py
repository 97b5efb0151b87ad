#!/usr/bin/env python3
"""test_processes.py - background processes: start, status by id and by
pid, logs (buffered and followed live over SSE), signals, kill-all, the
1 MiB log ring, a server that keeps serving, processes started from a
session, processes dying with their sandbox, validation and tenant
isolation.

The contract is docs/api.md ("Background processes") and issue 5."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "proc"
PROCS = "/v1/sandboxes/%s/processes" % SB
PROC_KEYS = {"id", "pid", "command", "status", "exit_code", "signal", "started_at", "ended_at"}
LOG_RING = 1048576
TICKER = "for i in $(seq 1 10); do echo line$i; sleep 0.5; done"


def start(b, command, tenant="alice", sb=SB, **fields):
    body = {"command": command}
    body.update(fields)
    return b.post("/v1/sandboxes/%s/processes" % sb, body, tenant=tenant)


def pget(b, pid, sb=SB):
    return b.get("/v1/sandboxes/%s/processes/%s" % (sb, pid))


def logs(b, pid):
    return b.get("%s/%s/logs" % (PROCS, pid))


def wait_exited(b, pid, timeout=10.0):
    r = wait_until(lambda: (lambda g: g if g.get("status") == "exited" else None)(pget(b, pid)), timeout, 0.1)
    return r or pget(b, pid)


def pgrep(b, pattern):
    r = b.exec(SB, "pgrep -af '%s'" % pattern, cwd="/workspace")
    return r.get("stdout") if r.status == 200 else "exec failed: %s" % r


def host_pgrep(pattern):
    p = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return p.stdout.strip()


def test_setup(t, b):
    r = b.create(id=SB, env={"SBX_PE": "from-sandbox"})
    t.eq(r.status, 201, "create the processes sandbox", r)


def test_start_logs_follow(t, b):
    t0 = time.monotonic()
    r = start(b, TICKER)
    dt = time.monotonic() - t0
    t.eq(r.status, 201, "POST processes answers 201", r)
    body = r.body if isinstance(r.body, dict) else {}
    t.ok(PROC_KEYS <= set(body), "the process has id, pid, command, status, exit_code, signal, started_at, ended_at",
         r)
    pid, pno = body.get("id"), body.get("pid")
    t.ok(isinstance(pid, str) and pid.startswith("p-"), "id is p-...", r)
    t.ok(isinstance(pno, int) and pno > 1, "pid is a process id", r)
    t.eq((body.get("command"), body.get("status"), body.get("exit_code"), body.get("signal"), body.get("ended_at")),
         (TICKER, "running", None, None, None), "command echoed, status running, no exit_code/signal/ended_at", r)
    t.ok(isinstance(body.get("started_at"), str) and harness.TIME_RE.match(body["started_at"]),
         "started_at is an ISO-8601 UTC time", r)
    t.ok(dt < 1.0, "POST returns at once, not when the process ends (%.2f s)" % dt)
    if not pid:
        return
    time.sleep(0.3)
    g = pget(b, pid)
    t.eq((g.status, g.get("status"), g.get("id"), g.get("pid")), (200, "running", pid, pno),
         "it keeps running after the call: GET by id shows running", g)
    g = pget(b, pno)
    t.eq((g.status, g.get("id"), g.get("status")), (200, pid, "running"), "GET by pid finds the same process", g)
    lst = b.get(PROCS)
    items = lst.get("processes") if isinstance(lst.get("processes"), list) else []
    t.ok(lst.status == 200 and any(p.get("id") == pid and p.get("status") == "running" for p in items),
         "GET processes lists it as running", lst)
    ps = pgrep(b, "seq 1 1[0]")
    t.ok("seq 1 10" in ps, "the command runs in the sandbox", ps)

    while time.monotonic() - t0 < 1.3:
        time.sleep(0.05)
    lg = logs(b, pid)
    t.eq(lg.status, 200, "GET logs answers 200", lg)
    t.ok(isinstance(lg.body, dict) and {"id", "stdout", "stderr", "truncated"} <= set(lg.body),
         "logs are {id, stdout, stderr, truncated}", lg)
    out = lg.get("stdout") or ""
    t.ok(out.startswith("line1\nline2\n") and "line10" not in out and lg.get("truncated") is False
         and lg.get("stderr") == "", "logs (not follow) hold what was printed so far (%r)" % out, lg)

    h, s = b.sse_get("%s/%s/logs?follow=1" % (PROCS, pid), timeout=30)
    if not t.ok(s is not None, "logs?follow=1 with Accept: text/event-stream answers an event stream", h):
        return
    tf = time.monotonic()
    evs = s.events()
    tend = time.monotonic()
    names = [e.name for e in evs]
    outs = [e for e in evs if e.name == "stdout"]
    t.ok(names and names[-1] == "exit" and set(names[:-1]) <= {"stdout"},
         "the stream is stdout events then one exit event", evs)
    t.eq("".join(e.data.get("data", "") for e in outs if isinstance(e.data, dict)),
         "".join("line%d\n" % i for i in range(1, 11)), "the stdout events carry everything, buffered then live",
         evs)
    t.ok(all(isinstance(e.data, dict) and e.data.get("type") == e.name and "timestamp" in e.data for e in evs),
         "every event's data has its type and a timestamp", evs)
    arrivals = ["%.2f" % (e.t - t0) for e in outs]
    t.ok(len(outs) >= 5 and outs[-1].t - outs[0].t >= 2.5,
         "stdout events arrive live, spread over the run (at %s s)" % ", ".join(arrivals), evs)
    t.ok(tend - t0 >= 4.5 and tend - tf < 6, "the stream ends when the process ends (%.2f s after start)"
         % (tend - t0))
    last = evs[-1] if evs else None
    t.ok(last is not None and last.name == "exit" and last.data.get("exit_code") == 0,
         "the exit event carries exit_code 0", last)
    g = pget(b, pid)
    t.eq((g.get("status"), g.get("exit_code"), g.get("signal")), ("exited", 0, None),
         "after it ends: status exited, exit_code 0, signal null", g)
    t.ok(isinstance(g.get("ended_at"), str) and harness.TIME_RE.match(g.get("ended_at") or "")
         and harness.iso_to_epoch(g.get("ended_at")) - harness.iso_to_epoch(g.get("started_at")) >= 4.5,
         "ended_at is set, about 5 s after started_at", g)
    lg = logs(b, pid)
    t.eq(lg.get("stdout"), "".join("line%d\n" % i for i in range(1, 11)), "logs after exit hold all ten lines", lg)

    h, s = b.sse_get("%s/%s/logs?follow=1" % (PROCS, pid), timeout=10)
    evs = s.events() if s else []
    t.ok([e.name for e in evs][-1:] == ["exit"] and "line10" in "".join(
        e.data.get("data", "") for e in evs if e.name == "stdout"),
        "following a finished process gives its buffered output then exit at once", evs or h)


def test_stderr_exit_code(t, b):
    r = start(b, "echo out; echo err >&2; sleep 0.3; echo err2 >&2; exit 5")
    pid = r.get("id")
    if not t.ok(r.status == 201 and pid, "start a process that writes stderr and exits 5", r):
        return
    h, s = b.sse_get("%s/%s/logs?follow=1" % (PROCS, pid), timeout=10)
    evs = s.events() if s else []
    t.eq("".join(e.data.get("data", "") for e in evs if e.name == "stderr"), "err\nerr2\n",
         "stderr is streamed as stderr events", evs or h)
    t.ok(evs and evs[-1].name == "exit" and evs[-1].data.get("exit_code") == 5, "the exit event has exit_code 5",
         evs)
    g = wait_exited(b, pid)
    t.eq((g.get("status"), g.get("exit_code"), g.get("signal")), ("exited", 5, None),
         "status exited, exit_code 5, signal null", g)
    lg = logs(b, pid)
    t.eq((lg.get("stdout"), lg.get("stderr")), ("out\n", "err\nerr2\n"), "logs keep stdout and stderr apart", lg)


def test_kill(t, b):
    r = start(b, "sleep 3300")
    pid = r.get("id")
    if not t.ok(r.status == 201 and pid, "start sleep 3300", r):
        return
    time.sleep(0.2)
    d = b.delete("%s/%s?signal=TERM" % (PROCS, pid))
    t.eq((d.status, d.get("id")), (200, pid), "DELETE processes/{id}?signal=TERM answers 200 with the process", d)
    g = wait_exited(b, pid, 5)
    t.eq(g.get("status"), "exited", "the process has exited", g)
    t.eq(g.get("signal"), "TERM", "signal is \"TERM\" (docs: exit_code or signal tell how it ended)", g)
    # docs: "exit_code (or signal, e.g. "TERM") tell how it ended"; whether
    # exit_code is then null or exec's 128+N is not said: either is accepted.
    t.ok(g.get("exit_code") in (None, 143), "exit_code is null or 143 (128+15, as exec reports it)", g)
    t.ok(pgrep(b, "sleep 330[0]") == "", "nothing of it runs in the sandbox", pgrep(b, "sleep 330[0]"))

    r = start(b, "sleep 3301")
    pno = r.get("pid")
    d = b.delete("%s/%s?signal=KILL" % (PROCS, pno))
    t.eq(d.status, 200, "DELETE by pid with signal=KILL answers 200", d)
    g = wait_exited(b, r.get("id"), 5)
    t.eq((g.get("status"), g.get("signal")), ("exited", "KILL"), "it exited with signal KILL", g)

    r = start(b, "sleep 3302")
    d = b.delete("%s/%s" % (PROCS, r.get("id")))
    g = wait_exited(b, r.get("id"), 5)
    t.eq((d.status, g.get("signal")), (200, "TERM"), "DELETE without signal sends TERM", g)

    r = start(b, "trap 'echo got-int; exit 7' INT; while :; do sleep 0.1; done")
    time.sleep(0.3)
    d = b.delete("%s/%s?signal=INT" % (PROCS, r.get("id")))
    g = wait_exited(b, r.get("id"), 5)
    lg = logs(b, r.get("id"))
    t.ok(d.status == 200 and g.get("exit_code") == 7 and "got-int" in (lg.get("stdout") or ""),
         "signal=INT reaches a process that traps it (it exits 7)", (g, lg))

    r = start(b, "sleep 3303")
    d = b.delete("%s/%s?signal=BOGUS" % (PROCS, r.get("id")))
    t.eq(d.status, 400, "an unknown signal answers 400", d)
    t.eq(pget(b, r.get("id")).get("status"), "running", "and the process keeps running", pget(b, r.get("id")))
    b.delete("%s/%s?signal=KILL" % (PROCS, r.get("id")))
    for what, path in (("GET", "%s/p-999999" % PROCS), ("GET", "%s/999999" % PROCS),
                       ("DELETE", "%s/p-999999" % PROCS), ("GET", "%s/p-999999/logs" % PROCS)):
        r = b.request(what, path)
        t.eq((r.status, r.err_code()), (404, "not_found"), "%s %s answers 404" % (what, path), r)


def test_log_ring(t, b):
    cmd = ("python3 -c \"import sys; d=b''.join(b'%09d\\n' % i for i in range(314573)); "
           "sys.stdout.buffer.write(d[:3145728])\"")
    data = b"".join(b"%09d\n" % i for i in range(314573))[:3145728]
    r = start(b, cmd)
    pid = r.get("id")
    if not t.ok(r.status == 201 and pid, "start a process that prints 3 MiB", r):
        return
    g = wait_exited(b, pid, 20)
    t.eq((g.get("status"), g.get("exit_code")), ("exited", 0), "it exits 0", g)
    lg = logs(b, pid)
    out = (lg.get("stdout") or "").encode()
    t.eq(lg.get("truncated"), True, "logs of a 3 MiB output say truncated: true", {k: lg.get(k) for k in
                                                                                    ("id", "truncated")})
    t.eq(len(out), LOG_RING, "stdout holds exactly 1 MiB", len(out))
    t.ok(out == data[-LOG_RING:], "stdout is the last 1 MiB of the output", (out[:40], out[-40:]))


def test_server(t, b):
    b.exec(SB, "mkdir -p /workspace/www && echo served > /workspace/www/hello.txt", cwd="/workspace")
    r = start(b, "python3 -m http.server 8000 --bind 127.0.0.1", cwd="/workspace/www")
    pid = r.get("id")
    if not t.ok(r.status == 201 and pid, "start python3 -m http.server on 127.0.0.1:8000", r):
        return
    probe = ("python3 -c \"import urllib.request as u; r=u.urlopen('http://127.0.0.1:8000/hello.txt', timeout=5); "
             "print(r.status, r.read().decode().strip())\"")

    def get_ok():
        x = b.exec(SB, probe, cwd="/workspace")
        return x if x.get("stdout") == "200 served\n" else None

    x = wait_until(get_ok, 10, 0.3)
    t.ok(x, "an exec in the sandbox gets 200 from the server", b.exec(SB, probe, cwd="/workspace"))
    time.sleep(2)
    g = pget(b, pid)
    t.eq(g.get("status"), "running", "the server is still running 2 s later", g)
    x = b.exec(SB, probe)
    t.eq(x.get("stdout"), "200 served\n", "and still serves (from the default session)", x)
    lg = logs(b, pid)
    t.ok("GET /hello.txt" in (lg.get("stderr") or ""), "its access log is in the process's stderr", lg)


def test_kill_all(t, b):
    ids = [start(b, "sleep %d" % n).get("id") for n in (3310, 3311, 3312)]
    running = [p for p in b.get(PROCS).get("processes") or [] if p.get("status") == "running"]
    d = b.delete(PROCS)
    t.eq(d.status, 200, "DELETE processes answers 200", d)
    t.eq(d.get("count"), len(running), "it answers {count} = the %d running processes" % len(running), d)
    gs = [wait_exited(b, i, 5) for i in ids]
    t.ok(all(g.get("status") == "exited" and g.get("signal") == "KILL" for g in gs),
         "every process exited with signal KILL (the default for kill-all)", gs)
    left = pgrep(b, "sleep 331[012]|http.serve[r]")
    t.eq(left, "", "none of them (nor the http server) runs in the sandbox", left)
    r = b.get(PROCS)
    t.ok(all(p.get("status") == "exited" for p in r.get("processes") or []), "the list shows all exited", r)
    d = b.delete(PROCS + "?signal=TERM")
    t.eq((d.status, d.get("count")), (200, 0), "kill-all with nothing running answers count 0", d)


def test_session_env_cwd(t, b):
    r = b.post("/v1/sandboxes/%s/sessions" % SB, {"id": "ps", "cwd": "/tmp"})
    t.eq(r.status, 201, "create session ps in /tmp", r)
    b.exec(SB, "cd /etc; export SBX_PSV=hello", session="ps")
    r = start(b, 'pwd; echo "$SBX_PSV|$SBX_PE"', session="ps")
    pid = r.get("id")
    wait_exited(b, pid)
    lg = logs(b, pid)
    t.eq(lg.get("stdout"), "/etc\nhello|from-sandbox\n",
         "a process with session starts in the session's cwd with its exported env", lg)
    r = start(b, "sleep 0.5", session="ps")
    r2 = b.exec(SB, "echo free", session="ps", timeout_ms=5000)
    t.eq(r2.get("stdout"), "free\n", "a process started from a session does not keep the session busy", r2)
    r = start(b, 'pwd; echo "$SBX_P1|$SBX_PE"; id -u', cwd="/tmp", env={"SBX_P1": "x", "SBX_PE": "override"})
    wait_exited(b, r.get("id"))
    lg = logs(b, r.get("id"))
    t.eq(lg.get("stdout"), "/tmp\nx|override\n1000\n", "cwd and env are used (env over the sandbox env), uid 1000",
         lg)
    r = start(b, "pwd")
    wait_exited(b, r.get("id"))
    t.eq(logs(b, r.get("id")).get("stdout"), "/workspace\n", "the default cwd is /workspace", r)
    r = start(b, "true", session="nope")
    t.eq(r.status, 404, "an unknown session answers 404", r)
    r = start(b, "true", cwd="/no/such/dir")
    t.ok(r.status in (400, 422), "a cwd that does not exist is refused (400/422; exec uses 422 bad_cwd)", r)
    r = b.post(PROCS, {})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "command"), "a missing command answers 400 naming it",
         r)
    r = b.post(PROCS, {"command": "true", "colour": 1})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "colour"), "an unknown field answers 400 naming it",
         r)
    r = start(b, "true", sb="no-such-box")
    t.eq(r.status, 404, "processes on a missing sandbox answer 404", r)


def test_tenants(t, b):
    r = start(b, "echo s3cr3t; sleep 3320")
    pid, pno = r.get("id"), r.get("pid")
    if not t.ok(pid, "alice starts a process", r):
        return
    checks = [
        ("GET", PROCS, None, "bob lists alice's processes"),
        ("GET", "%s/%s" % (PROCS, pid), None, "bob GETs alice's process"),
        ("GET", "%s/%s" % (PROCS, pno), None, "bob GETs alice's process by pid"),
        ("GET", "%s/%s/logs" % (PROCS, pid), None, "bob reads alice's process logs"),
        ("DELETE", "%s/%s?signal=KILL" % (PROCS, pid), None, "bob kills alice's process"),
        ("DELETE", PROCS, None, "bob kills all of alice's processes"),
        ("POST", PROCS, {"command": "true"}, "bob starts a process in alice's sandbox"),
    ]
    for method, path, body, what in checks:
        r = b.request(method, path, body, tenant="bob")
        t.eq((r.status, r.err_code()), (404, "not_found"), what + " -> 404", r)
        t.ok("s3cr3t" not in r.raw.decode("utf-8", "replace"), what + ": nothing of alice's leaks", r)
    h, s = b.sse_get("%s/%s/logs?follow=1" % (PROCS, pid), tenant="bob")
    if s is not None:
        s.close()
    t.ok(s is None and h.status == 404, "bob follows alice's process logs -> 404", h)
    g = pget(b, pid)
    t.eq(g.get("status"), "running", "alice's process still runs", g)
    b.delete("%s/%s?signal=KILL" % (PROCS, pid))


def test_die_with_sandbox(t, b):
    sb2 = "proc2"
    r = b.create(id=sb2)
    t.eq(r.status, 201, "create a second sandbox", r)
    r = start(b, "sleep 3399", sb=sb2)
    t.eq(r.status, 201, "start sleep 3399 in it", r)
    r2 = start(b, "python3 -m http.server 8001 --bind 127.0.0.1", sb=sb2)
    t.eq(r2.status, 201, "and an http server", r2)
    running = wait_until(lambda: host_pgrep("sleep 339[9]"), 3.0)
    t.ok(running, "the host sees the sandbox's sleep 3399 running", running)
    d = b.delete("/v1/sandboxes/%s" % sb2)
    t.eq(d.status, 200, "delete the sandbox", d)
    left = host_pgrep("sleep 339[9]|http.server 800[1]")
    t.eq(left, "", "its background processes died with it (nothing left on the host)", left)
    r = pget(b, r.get("id"), sb=sb2)
    t.eq(r.status, 404, "its processes answer 404 afterwards", r)


if __name__ == "__main__":
    harness.main([test_setup, test_start_logs_follow, test_stderr_exit_code, test_kill, test_log_ring, test_server,
                  test_kill_all, test_session_env_cwd, test_tenants, test_die_with_sandbox])
