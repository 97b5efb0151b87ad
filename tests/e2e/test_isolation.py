#!/usr/bin/env python3
"""test_isolation.py - tenants cannot see or touch each other's sandboxes,
bearer tokens are required, and a sandbox sees neither the host nor other
sandboxes (processes, files, network, privileges)."""

import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

A, B = "a-box", "b-box"


def test_setup(t, b):
    for sid in (A, B):
        r = b.create(id=sid)
        t.eq(r.status, 201, "alice creates %s" % sid, r)
    w = b.exec(A, "echo secret > /workspace/f && echo tmp > /tmp/g && cat /workspace/f")
    t.eq(w.get("stdout"), "secret\n", "alice writes /workspace/f in %s" % A, w)


def test_tenants(t, b):
    missing = b.get("/v1/sandboxes/zz-missing", tenant="bob")
    r = b.get("/v1/sandboxes/" + A, tenant="bob")
    t.eq((r.status, r.err_code()), (404, "not_found"), "bob GET alice's sandbox answers 404 not_found", r)
    same = (r.err_message() or "").replace(A, "X") == (missing.err_message() or "").replace("zz-missing", "X")
    t.ok(same, "the 404 for alice's sandbox reads exactly like one for a missing sandbox",
         "other tenant's: %s\nmissing: %s" % (r.raw, missing.raw))
    r = b.patch("/v1/sandboxes/" + A, {"keepalive_longer_by_seconds": 60}, tenant="bob")
    t.eq(r.status, 404, "bob PATCH alice's sandbox answers 404", r)
    r = b.exec(A, "cat /workspace/f", tenant="bob")
    t.eq(r.status, 404, "bob exec in alice's sandbox answers 404", r)
    h, s = b.sse("/v1/sandboxes/%s/exec" % A, {"command": "cat /workspace/f"}, tenant="bob")
    if s is not None:
        s.close()
    t.eq(h.status, 404, "bob streamed exec in alice's sandbox answers 404", h)
    r = b.delete("/v1/sandboxes/" + A, tenant="bob")
    t.eq(r.status, 404, "bob DELETE alice's sandbox answers 404", r)
    g = b.get("/v1/sandboxes/" + A)
    t.eq(g.status, 200, "alice's sandbox survives bob's DELETE", g)
    lst = b.get("/v1/sandboxes", tenant="bob")
    t.eq(lst.get("sandboxes"), [], "bob's list does not show alice's sandboxes", lst)
    r = b.create(tenant="bob", id=A)
    t.eq(r.status, 201, "bob creating the same id gets his own new sandbox (201)", r)
    x = b.exec(A, "cat /workspace/f", tenant="bob")
    t.ok(x.status == 200 and x.get("exit_code") != 0 and "secret" not in (x.get("stdout") or ""),
         "bob's sandbox of the same name does not have alice's file", x)
    x = b.exec(A, "cat /workspace/f")
    t.eq(x.get("stdout"), "secret\n", "alice's sandbox still has its file", x)
    lst = b.get("/v1/sandboxes")
    t.eq(sorted(s.get("id") for s in lst.get("sandboxes", [])), [A, B], "alice's list shows only hers", lst)


def test_auth(t, b):
    for desc, kw in [("no Authorization header", {"tenant": None}),
                     ("an unknown token", {"token": "not-a-token"}),
                     ("alice's token with a character added", {"token": b.tokens["alice"] + "0"}),
                     ("alice's token cut short", {"token": b.tokens["alice"][:-1]}),
                     ("an empty bearer token", {"token": ""})]:
        r = b.get("/v1/sandboxes", **kw)
        t.ok(r.status == 401 and r.err_code() == "unauthorized" and harness.error_shape_ok(r.body),
             "%s answers 401 unauthorized with a JSON error" % desc, r)
    r = b.get("/v1/sandboxes", tenant=None, headers={"Authorization": "Basic " + b.tokens["alice"]})
    t.eq(r.status, 401, "a token under the Basic scheme answers 401", r)
    before = b.cids_now()
    r = b.post("/v1/sandboxes", {"id": "sneaky"}, tenant=None)
    t.eq(r.status, 401, "create without a token answers 401", r)
    t.ok(b.cids_now() == before and b.get("/v1/sandboxes/sneaky").status == 404,
         "an unauthorized create starts nothing", b.cids_now() - before)
    r = b.exec(A, "true", tenant=None)
    t.eq(r.status, 401, "exec without a token answers 401", r)
    r = b.get("/v1/health", tenant=None)
    t.eq(r.status, 200, "/v1/health needs no token", r)


def test_files(t, b):
    x = b.exec(B, "cat /workspace/f")
    t.ok(x.status == 200 and x.get("exit_code") != 0 and "secret" not in (x.get("stdout") or ""),
         "a file written in one sandbox's /workspace is absent in another", x)
    x = b.exec(B, "cat /tmp/g")
    t.ok(x.status == 200 and x.get("exit_code") != 0 and "tmp" not in (x.get("stdout") or ""),
         "a file written in one sandbox's /tmp is absent in another", x)


def test_processes(t, b):
    r = b.exec(A, "tr '\\0' '\\n' < /proc/1/cmdline")
    argv0 = (r.get("stdout") or "").split("\n")[0]
    t.ok(argv0 == "/opt/sandboxd/agent" or os.path.basename(argv0) in ("agent", "sandbox-agent"),
         "PID 1 in the sandbox is the agent", r)
    r = b.exec(A, "ps -e -o pid=,comm=")
    procs = [l.split(None, 1) for l in (r.get("stdout") or "").splitlines() if l.strip()]
    names = [p[1] if len(p) > 1 else "" for p in procs]
    t.ok(r.status == 200 and 1 <= len(procs) <= 6, "ps -e shows only a handful of processes", r)
    t.ok(r.status == 200 and not any(n in ("sandboxd", "runc", "systemd", "init", "sshd") for n in names),
         "no host process (broker, runc, init) is visible", r)
    r = b.exec(A, "nohup sleep 3191 > /dev/null 2>&1 & echo started")
    # The job may not have exec'd sleep yet when the next command runs.
    r = b.exec(A, "for i in $(seq 50); do pgrep -af 'sleep 319[1]' && break; sleep 0.1; done")
    t.ok("sleep 3191" in (r.get("stdout") or ""), "a background process keeps running in sandbox A", r)
    r = b.exec(B, "pgrep -af 'sleep 319[1]'")
    t.ok(r.status == 200 and r.get("stdout") == "", "sandbox B does not see sandbox A's processes", r)
    b.exec(A, "pkill -f 'sleep 319[1]'")
    r = b.exec(A, "cat /proc/sys/kernel/hostname")
    t.ok(r.status == 200 and r.get("stdout", "").strip() not in ("", socket.gethostname()),
         "the sandbox has its own hostname", r)


def test_host_hidden(t, b):
    paths = ["/work", os.path.dirname(os.path.abspath(__file__)), b.state, b.tmp, "/var/lib/sandboxd",
             "/var/cache/sandboxd", harness.IMAGE_DIR]
    for p in sorted(set(paths)):
        r = b.exec(A, "ls -d '%s'" % p)
        t.ok(r.status == 200 and r.get("exit_code") != 0, "host path %s is not visible in the sandbox" % p, r)
    r = b.exec(A, "cat '%s'" % b.tokens_path)
    t.ok(r.status == 200 and r.get("exit_code") != 0 and b.tokens["alice"] not in r.get("stdout", ""),
         "the tokens file cannot be read from the sandbox", r)
    r = b.exec(A, "touch /run/sandboxd/x")
    t.ok(r.status == 200 and r.get("exit_code") != 0, "the broker's control dir /run/sandboxd is read-only", r)


def test_network(t, b):
    r = b.exec(A, "ip -o link")
    links = re.findall(r"^\d+:\s+([^:@\s]+)", r.get("stdout") or "", re.M)
    t.eq(links, ["lo"], "ip -o link shows only lo", r)


def test_privileges(t, b):
    r = b.exec(A, "grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status")
    st = dict(re.findall(r"^(\w+):\s*(\S+)", r.get("stdout") or "", re.M))
    t.eq(st.get("CapEff"), "0000000000000000", "effective capabilities are empty", r)
    t.eq(st.get("CapPrm"), "0000000000000000", "permitted capabilities are empty", r)
    t.eq(st.get("NoNewPrivs"), "1", "no_new_privs is set", r)
    t.eq(st.get("Seccomp"), "2", "a seccomp filter is active", r)
    r = b.exec(A, "mount -t tmpfs x /mnt")
    t.ok(r.status == 200 and r.get("exit_code") != 0, "mount -t tmpfs fails in the sandbox", r)
    r = b.exec(A, "unshare -r true")
    t.ok(r.status == 200 and r.get("exit_code") != 0, "unshare -r (new user namespace) fails in the sandbox", r)
    r = b.exec(A, "touch /usr/bin/x /etc/x")
    t.ok(r.status == 200 and r.get("exit_code") != 0, "the image's system files are not writable", r)


# Run in a sandbox: everything tenant code can do to the agent socket
# (docs/agent-protocol.md, "Authentication"). Prints a JSON summary.
AGENT_SOCKET_ATTACK = r"""
import json, socket, struct, time
out = {"connected": 0, "answered_ok": False}
def zmtp_greeting(mech):
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + mech.ljust(20, b"\0") + b"\0" + b"\0" * 31
def frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    return bytes([flags, len(body)]) + body
def hello(user, password):
    return frame(b"\x05HELLO" + bytes([len(user)]) + user + bytes([len(password)]) + password,
                 command=True)
forged = frame(b"", more=True) + frame(b'{"ev":"hello","version":1,"pid":1}')
forged += frame(b"tag", more=True) + frame(b'{"ev":"exit","exit_code":0}')
payloads = [
    b"GET / HTTP/1.0\r\n\r\n" * 100,                          # garbage
    b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"\x02" + b"\x7f" * 8,  # 2^63-byte frame
    zmtp_greeting(b"NULL") + frame(b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER", command=True)
        + forged,                                                 # no credentials
    zmtp_greeting(b"PLAIN") + hello(b"agent", b"0" * 64) + forged,  # a wrong key
    b"",                                                          # connect and hang up
]
socks = []
for i in range(20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("/run/sandboxd/agent.sock")
        out["connected"] += 1
        s.settimeout(0.3)
        try:
            s.sendall(payloads[i % len(payloads)])
        except OSError:
            pass
        socks.append(s)
    except OSError as e:
        out["error"] = e.errno
time.sleep(0.5)
for s in socks:
    try:
        data = s.recv(65536)
        if b"READY" in data:
            out["answered_ok"] = True
    except OSError:
        pass
    s.close()
print(json.dumps(out))
"""


def test_agent_socket(t, b):
    # Tenant code has the agent's uid and can reach its socket; without the
    # sandbox's key it must change nothing: not a call in flight, not the
    # broker's idea of whether the agent is connected.
    long_exec = harness.in_thread(b.exec, A, "sleep 2; echo ok")
    time.sleep(0.3)
    r = b.exec(A, "python3 - <<'PYEOF'\n%s\nPYEOF" % AGENT_SOCKET_ATTACK)
    try:
        res = json.loads((r.get("stdout") or "").strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {}
    t.ok(r.status == 200 and res.get("connected") == 20,
         "tenant code can connect to /run/sandboxd/agent.sock (and send junk, forged frames)", r)
    t.ok(res.get("answered_ok") is False, "no fake peer gets past the handshake", r)
    got, exc = long_exec.join(30)
    t.ok(exc is None and got is not None and got.status == 200 and got.get("exit_code") == 0
         and got.get("stdout") == "ok\n", "an exec in flight meanwhile completes normally", got or exc)
    t.ok("agent disconnected" not in b.log_text(), "the broker never thought the agent disconnected")
    r = b.exec(A, "echo after")
    t.eq(r.get("stdout"), "after\n", "execs still work afterwards", r)
    r = b.exec(A, "ls -A /run/sandboxd; env | grep -c SANDBOXD_AGENT_KEY; cat /proc/1/environ")
    out = r.get("stdout") or ""
    t.ok(r.status == 200 and out.splitlines()[:2] == ["agent.sock", "0"] and "KEY" not in out
         and "Permission denied" in (r.get("stderr") or ""),
         "the agent's key is in no file, no inherited environment and not in /proc/1/environ", r)


if __name__ == "__main__":
    harness.main([test_setup, test_tenants, test_auth, test_files, test_processes, test_host_hidden,
                  test_network, test_privileges, test_agent_socket])
