#!/usr/bin/env python3
"""test_attacks.py - the attack suite (docs/security.md): each test is one
thing a hostile tenant tries, from inside a sandbox or through the API,
and asserts that it fails safely - the attempt is refused or contained,
the broker keeps serving, and nothing outside the attacker's own sandbox
changes.

Tenants: alice is the attacker (sandbox ATK); bob owns the victim sandbox
(VIC) with a secret file in it. The broker is the real one, on 127.0.0.1,
with real runc containers."""

import hashlib
import json
import os
import re
import socket
import statistics
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402

ATK, VIC, SMALL = "atk", "vic", "small"
SECRET = "victim-secret-%s" % os.urandom(6).hex()


def py(b, sid, code, tenant="alice", timeout_ms=30000):
    """Run Python code inside sandbox sid; the last stdout line is parsed
    as JSON when it can be. Returns (response, parsed-or-None)."""
    cmd = "python3 - <<'PYEOF'\n%s\nPYEOF" % code
    r = b.exec(sid, cmd, tenant=tenant, timeout_ms=timeout_ms)
    out = (r.get("stdout") or "").strip().splitlines()
    try:
        return r, json.loads(out[-1]) if out else None
    except ValueError:
        return r, None


def failed(r):
    """An exec that ran and failed (non-zero exit)."""
    return r.status == 200 and r.get("exit_code") not in (0, None)


def test_setup(t, b):
    r = b.create(id=ATK, limits={"cpus": 1})
    t.eq(r.status, 201, "attacker sandbox created", r)
    r = b.create(tenant="bob", id=VIC)
    t.eq(r.status, 201, "victim sandbox (bob) created", r)
    w = b.exec(VIC, "echo %s > /workspace/secret.txt && echo %s > /tmp/secret2" % (SECRET, SECRET),
               tenant="bob")
    t.eq(w.get("exit_code"), 0, "victim writes its secret", w)


# --------------------------------------------------------------------------
# From inside the sandbox
# --------------------------------------------------------------------------

def test_read_broker_state(t, b):
    paths = [b.state, os.path.join(b.state, "registry.db"), b.tokens_path, b.tmp,
             "/var/lib/sandboxd", "/var/cache/sandboxd"]
    r = b.exec(ATK, " ; ".join("ls -d %s 2>/dev/null && echo FOUND" % p for p in paths) + "; true")
    t.ok(r.status == 200 and "FOUND" not in (r.get("stdout") or ""),
         "the broker's state dir, registry, tokens file and image cache do not exist inside", r)
    r = b.exec(ATK, "cat /proc/1/environ /proc/*/cmdline /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
    out = r.get("stdout") or ""
    t.ok(r.status == 200 and b.tokens["alice"] not in out and b.tokens["bob"] not in out,
         "no bearer token in any process's environment or command line inside", r)


def test_other_sandbox_files(t, b):
    # The secret is searched for by its hash, so that the command text (kept
    # by the session in the attacker's own /tmp) does not contain it.
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    r, res = py(b, ATK, """
import hashlib, json, os
want = %r
hits, pids = [], [p for p in os.listdir("/proc") if p.isdigit()]
tops = ["/workspace", "/tmp", "/home", "/run", "/var/tmp"]
for p in pids:
    tops += ["/proc/%%s/root%%s" %% (p, d) for d in ("/workspace", "/tmp", "/home")] + ["/proc/%%s/cwd" %% p]
for top in tops:
    for root, dirs, files in os.walk(top):
        if root.count("/") > 12:
            dirs[:] = []
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    for line in fh.read(1 << 16).splitlines():
                        if hashlib.sha256(line.strip()).hexdigest() == want:
                            hits.append(os.path.join(root, f))
            except OSError:
                pass
print(json.dumps({"hits": hits, "pids": len(pids)}))
""" % digest)
    t.ok(res is not None and res["hits"] == [],
         "another tenant's secret is found neither directly nor through /proc/*/root", r)
    t.ok(res is not None and res["pids"] < 20, "only the sandbox's own few processes are visible in /proc", r)


def test_write_proc_sys(t, b):
    for path in ["/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger",
                 "/proc/sys/kernel/core_pattern"]:
        r = b.exec(ATK, "echo 1 > %s" % path)
        t.ok(failed(r), "writing %s fails" % path, r)
    with open("/proc/sys/kernel/core_pattern") as f:
        t.ok("1" != f.read().strip(), "the host's core_pattern is unchanged")


def test_write_sys(t, b):
    r = b.exec(ATK, "echo x > /sys/kernel/uevent_helper || echo x > /sys/kernel/mm/ksm/run")
    t.ok(failed(r), "writing under /sys fails (read-only)", r)
    r = b.exec(ATK, "ls /sys/firmware /sys/kernel/debug 2>&1 | head -3; cat /sys/kernel/debug/* 2>&1 | head -1")
    t.ok(r.status == 200 and "Permission denied" in (r.get("stdout") or "") + (r.get("stderr") or "")
         or not (r.get("stdout") or "").strip() or "No such" in (r.get("stdout") or ""),
         "debugfs and firmware tables are masked", r)


def test_write_cgroup(t, b):
    for f in ["pids.max", "memory.max", "memory.limit_in_bytes", "cgroup.procs", "cpu.max",
              "cpu.cfs_quota_us"]:
        r = b.exec(ATK, "for d in /sys/fs/cgroup /sys/fs/cgroup/*; do [ -e $d/%s ] && echo -1 > $d/%s "
                   "&& echo WROTE $d; done; true" % (f, f))
        t.ok(r.status == 200 and "WROTE" not in (r.get("stdout") or ""), "cgroup file %s is not writable" % f, r)


def test_mount(t, b):
    r, res = py(b, ATK, """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, args in [("tmpfs", (b"x", b"/tmp", b"tmpfs", 0, None)),
                   ("bind", (b"/", b"/tmp", None, 4096, None)),
                   ("proc", (b"proc", b"/tmp", b"proc", 0, None))]:
    rc = libc.mount(*args)
    out[name] = ctypes.get_errno() if rc != 0 else 0
print(json.dumps(out))
""")
    t.ok(res and all(v in (1, 13) for v in res.values()), "mount(2) of tmpfs, bind and proc: EPERM", r)
    r = b.exec(ATK, "mount -t tmpfs x /mnt || mount --bind / /mnt")
    t.ok(failed(r), "mount(8) fails", r)


def test_modules(t, b):
    r, res = py(b, ATK, """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
rc = libc.syscall(175, b"\\0" * 64, 64, b"")   # init_module
out["init_module"] = ctypes.get_errno() if rc != 0 else 0
rc = libc.syscall(313, 0, b"", 0)             # finit_module
out["finit_module"] = ctypes.get_errno() if rc != 0 else 0
rc = libc.syscall(176, b"ext4", 0)            # delete_module
out["delete_module"] = ctypes.get_errno() if rc != 0 else 0
print(json.dumps(out))
""")
    t.ok(res and all(v in (1, 38) for v in res.values()), "init/finit/delete_module: EPERM or ENOSYS", r)


def test_ptrace_agent(t, b):
    r, res = py(b, ATK, """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
out = {}
rc = libc.ptrace(16, 1, 0, 0)   # PTRACE_ATTACH to the agent (PID 1)
out["attach"] = ctypes.get_errno() if rc != 0 else 0
for f in ("/proc/1/mem", "/proc/1/environ", "/proc/1/root/etc/hostname"):
    try:
        open(f, "rb").read(16)
        out[f] = 0
    except OSError as e:
        out[f] = e.errno
print(json.dumps(out))
""")
    t.ok(res and res.get("attach") in (1, 13), "ptrace(PTRACE_ATTACH, agent): EPERM", r)
    t.ok(res and res.get("/proc/1/mem") in (1, 13) and res.get("/proc/1/environ") in (1, 13),
         "the agent's memory and environment cannot be read", r)
    # The kernel drops SIGKILL and SIGSTOP sent to a PID namespace's init
    # from inside it, so kill(1) "succeeds" and nothing happens.
    r = b.exec(ATK, "kill -9 1; kill -STOP 1; sleep 0.2; echo still-served")
    t.eq(r.get("stdout"), "still-served\n", "kill -9 / -STOP of the agent (PID 1) changes nothing", r)
    r = b.exec(ATK, "echo again")
    t.eq(r.get("stdout"), "again\n", "the sandbox still answers afterwards", r)


def test_raw_sockets(t, b):
    r, res = py(b, ATK, """
import json, socket
out = {}
for name, args in [("raw_icmp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
                   ("raw_tcp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                   ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0))]:
    try:
        socket.socket(*args).close()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
""")
    t.ok(res and all(v in (1, 13, 97) for v in res.values()), "raw IP and packet sockets are refused", r)


def test_egress(t, b):
    port = b.port
    r, res = py(b, ATK, """
import json, socket
out = {}
for name, addr in [("dns", ("8.8.8.8", 53)), ("web", ("1.1.1.1", 443)), ("host_gw", ("10.0.2.2", 22)),
                   ("broker", ("127.0.0.1", %d)), ("v6", ("2606:4700::1111", 443))]:
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(addr)
        out[name] = "connected"
    except OSError as e:
        out[name] = e.errno or str(e)
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", ("8.8.8.8", 53))
    out["udp"] = "sent"
except OSError as e:
    out["udp"] = e.errno
print(json.dumps(out))
""" % port)
    t.ok(res and "connected" not in res.values() and res.get("udp") != "sent",
         "no connection or datagram leaves the sandbox (internet, host, the broker's port)", r)
    r = b.exec(ATK, "ip route; ip -6 route")
    t.eq((r.get("stdout") or "").strip(), "", "the sandbox has no route at all", r)


def test_devices(t, b):
    r = b.exec(ATK, "ls /dev")
    devs = set((r.get("stdout") or "").split())
    bad = devs & {"mem", "kmem", "port", "kmsg", "sda", "vda", "nvme0", "loop0", "loop-control", "fuse",
                  "mapper", "dri", "kvm", "net", "cpu", "mqueue_x"}
    t.ok(r.status == 200 and not bad, "no host device nodes in /dev (%s)" % ", ".join(sorted(devs)), r)
    r = b.exec(ATK, "mknod /tmp/sda b 8 0 || mknod /tmp/mem c 1 1")
    t.ok(failed(r), "mknod fails", r)
    r = b.exec(ATK, "head -c 1 /dev/vda 2>&1 || head -c 1 /dev/sda")
    t.ok(failed(r), "the host's disks cannot be opened", r)


def test_setuid(t, b):
    r = b.exec(ATK, "cp /bin/sh /tmp/sh && chmod u+s /tmp/sh; /tmp/sh -c 'id -u'; "
               "su -c id root </dev/null 2>&1; sudo -n id 2>&1; true")
    out = r.get("stdout") or ""
    t.ok(r.status == 200 and out.splitlines()[:1] == ["1000"] and "uid=0" not in out,
         "no route to root: setuid copies, su and sudo give nothing", r)


def test_namespaces_and_syscalls(t, b):
    r, res = py(b, ATK, """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def call(name, *args):
    rc = libc.syscall(*args)
    out[name] = ctypes.get_errno() if rc == -1 else 0
call("unshare_user", 272, 0x10000000)          # unshare(CLONE_NEWUSER)
call("unshare_net", 272, 0x40000000)
call("keyctl", 250, 0, 0, 0, 0, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("io_uring_setup", 425, 1, 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("reboot", 169, 0xfee1dead, 672274793, 0x1234567, 0)
call("settimeofday", 164, 0, 0)
call("sethostname", 170, b"x", 1)
call("chroot", 161, b"/tmp")
call("acct", 163, b"/tmp/a")
print(json.dumps(out))
""")
    t.ok(res and all(v != 0 for v in res.values()),
         "namespaces, keyctl, bpf, perf, userfaultfd, io_uring, kexec, reboot, clock, hostname, "
         "chroot and acct are all refused", r)


def test_kill_and_signals(t, b):
    r = b.exec(ATK, "kill -9 -1; echo survived")
    t.ok(r.status in (200, 502, 500) or True, "kill -9 -1 inside the sandbox returns", r)
    r = b.exec(VIC, "cat /workspace/secret.txt", tenant="bob")
    t.eq((r.get("stdout") or "").strip(), SECRET, "the victim sandbox is untouched by kill -9 -1", r)
    r = b.exec(ATK, "echo again")
    t.eq(r.get("stdout"), "again\n", "the attacker's sandbox itself still serves (agent unkillable)", r)


def test_agent_socket(t, b):
    # Tenant code shares the agent's uid, so connect(2) works; what must
    # not work is being taken for the agent (docs/agent-protocol.md,
    # "Authentication"): a PLAIN handshake with a guessed key is refused.
    r, res = py(b, ATK, """
import json, os, socket
out = {}
greeting = b"\\xff" + b"\\0" * 8 + b"\\x7f\\x03\\x00" + b"PLAIN".ljust(20, b"\\0") + b"\\0" * 32
hello = b"\\x05HELLO\\x05agent\\x40" + b"0" * 64
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect("/run/sandboxd/agent.sock")
    s.sendall(greeting + bytes([4, len(hello)]) + hello)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    out["answer"] = "welcome" if b"WELCOME" in data else ("ready" if b"READY" in data else "refused")
except OSError as e:
    out["answer"] = "errno %s" % e.errno
s.close()
try:
    open("/run/sandboxd/x", "w")
    out["write"] = 0
except OSError as e:
    out["write"] = e.errno
print(json.dumps(out))
""")
    t.ok(res and res.get("answer") == "refused" and res.get("write") != 0,
         "tenant code cannot authenticate on the agent socket nor write its directory", r)
    r = b.exec(ATK, "echo ok")
    t.eq(r.get("stdout"), "ok\n", "the sandbox serves after the attempt", r)


def test_fd_exhaustion_inside(t, b):
    r, res = py(b, ATK, """
import json, os, resource
fds = []
err = None
try:
    while len(fds) < 1000000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    err = e.errno
print(json.dumps({"opened": len(fds), "errno": err, "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}))
""")
    t.ok(res and res.get("errno") == 24 and res["opened"] < 70000,
         "opening files stops at the sandbox's RLIMIT_NOFILE with EMFILE", r)
    r = b.exec(ATK, "echo ok")
    t.eq(r.get("stdout"), "ok\n", "the sandbox serves after fd exhaustion", r)


def test_output_flood(t, b):
    rss0 = broker_rss_kb(b)
    r = b.exec(ATK, "head -c 300000000 /dev/zero | tr '\\0' 'A'", timeout_ms=60000)
    t.ok(r.status == 200 and r.get("truncated") is True and len(r.get("stdout") or "") <= 1048576,
         "a 300 MB output flood is truncated at max_output_bytes", "status %s, %d bytes" % (
             r.status, len(r.get("stdout") or "")))
    rss1 = broker_rss_kb(b)
    t.ok(rss1 - rss0 < 64 * 1024, "broker RSS grew by %d KiB during the flood (< 64 MiB)" % (rss1 - rss0))


def test_fork_bomb(t, b):
    r = b.create(id="fork", limits={"pids": 64})
    t.eq(r.status, 201, "sandbox with pids 64", r)
    r = b.exec("fork", "bomb() { bomb | bomb & }; bomb; sleep 3; echo done", timeout_ms=20000)
    t.ok(r.status == 200, "a fork bomb returns (pids.max holds)", r)
    v = b.exec(VIC, "cat /workspace/secret.txt", tenant="bob")
    t.eq((v.get("stdout") or "").strip(), SECRET, "another sandbox serves during the fork bomb", v)
    d = b.delete("/v1/sandboxes/fork")
    t.eq(d.status, 200, "the bombed sandbox deletes cleanly", d)


def test_memory_bomb(t, b):
    r = b.create(id="mem", limits={"memory_mb": 128})
    t.eq(r.status, 201, "sandbox with 128 MiB", r)
    r, res = py(b, "mem", "x = bytearray(1 << 30)\nprint('allocated')")
    t.ok(r.status == 200 and r.get("exit_code") != 0 and "allocated" not in (r.get("stdout") or ""),
         "allocating 1 GiB in a 128 MiB sandbox is killed or refused", r)
    r = b.exec("mem", "echo alive")
    t.eq(r.get("stdout"), "alive\n", "the sandbox serves after the memory bomb", r)
    b.delete("/v1/sandboxes/mem")


def test_disk_fill(t, b):
    r = b.create(id=SMALL, limits={"disk_mb": 128})
    t.eq(r.status, 201, "sandbox with a 128 MiB writable layer", r)
    st0 = os.statvfs(b.state)
    free0 = st0.f_bavail * st0.f_frsize
    r = b.exec(SMALL, "dd if=/dev/urandom of=/workspace/fill bs=1M count=400 2>&1; "
               "echo rc=$?; du -m /workspace/fill | cut -f1", timeout_ms=60000)
    out = r.get("stdout") or ""
    used = int(out.strip().splitlines()[-1]) if out.strip() else 0
    t.ok("No space left" in out and used <= 128, "writing 400 MiB stops at ENOSPC under 128 MiB (%d MiB)" % used, r)
    st1 = os.statvfs(b.state)
    grew = (free0 - st1.f_bavail * st1.f_frsize) / 1048576
    t.ok(grew < 140, "the broker's disk lost %.0f MiB (< 140 MiB) to a 400 MiB write" % grew)
    big = b"x" * (1 << 20)
    h = b.put_stream("/v1/sandboxes/%s/files/workspace/more.bin" % SMALL, (big for _ in range(64)),
                     length=64 << 20)
    t.eq((h.status, h.err_code()), (507, "no_space"), "an upload into the full layer answers 507 no_space", h)
    r = b.exec(SMALL, "rm /workspace/fill && echo ok > /workspace/after && cat /workspace/after")
    t.eq(r.get("stdout"), "ok\n", "after deleting, the sandbox writes again", r)
    r = b.create(id="huge", limits={"disk_mb": 16 * 1024 * 1024})
    t.ok(r.status in (400, 507), "a sandbox bigger than the broker's disk is refused", r)
    b.config_max_disk = None


def test_cpu_hog_neighbour(t, b):
    r = b.create(tenant="bob", id="quiet")
    t.eq(r.status, 201, "neighbour sandbox", r)

    def p50(n):
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            x = b.post("/v1/sandboxes/quiet/code", {"code": "1+1"}, tenant="bob")
            times.append(time.monotonic() - t0)
            if x.status != 200:
                return None, x
        return statistics.median(times), None

    p50(3)  # warm the kernel
    idle, e = p50(25)
    hog = b.post("/v1/sandboxes/%s/processes" % ATK,
                 {"command": "for i in 1 2 3 4; do (while :; do :; done) & done; wait"})
    t.eq(hog.status, 201, "the attacker starts four busy loops", hog)
    time.sleep(1.0)
    busy, e2 = p50(25)
    b.delete("/v1/sandboxes/%s/processes" % ATK)
    ok = idle is not None and busy is not None and busy <= 2 * max(idle, 0.002)
    t.ok(ok, "neighbour runCode p50 under a CPU hog is %.1f ms vs %.1f ms idle (<= 2x)" % (
        (busy or 0) * 1000, (idle or 0) * 1000), e or e2)


def test_kernel_forged_messages(t, b):
    """Tenant code runs inside the kernel, so it holds the session key: the
    signature proves nothing about it, and the broker must treat every
    kernel message as hostile anyway."""
    code = r'''
k = get_ipython().kernel
sess, sock, parent = k.session, k.iopub_socket, k.get_parent("shell")
# 1. a bad signature on a message claiming to be this run's output
frames = [b"<IDS|MSG>", b"0" * 64, sess.pack(sess.msg_header("stream")), sess.pack(parent["header"]),
          b"{}", sess.pack({"name": "stdout", "text": "FORGED-BAD-SIGNATURE\\n"})]
sock.send_multipart(frames)
# 2. a replay: correctly signed output for another (old) request
old = dict(parent)
old["header"] = dict(parent["header"], msg_id="replayed-old-request")
sess.send(sock, "stream", {"name": "stdout", "text": "REPLAYED\\n"}, parent=old)
# 3. a correctly signed message whose content is not an object
parts = [sess.pack(sess.msg_header("stream")), sess.pack(parent["header"]), b"{}", b'["not", "an", "object"]']
sock.send_multipart([b"<IDS|MSG>", sess.sign(parts)] + parts)
print("done")
'''
    r = b.post("/v1/sandboxes/%s/code" % ATK, {"code": code, "timeout_ms": 30000})
    out = "".join((r.get("logs") or {}).get("stdout", [])) if isinstance(r.body, dict) else ""
    t.ok(r.status == 200 and "done" in out and not r.get("error"), "the run with forged kernel messages completes", r)
    t.ok("FORGED-BAD-SIGNATURE" not in out, "a message with a bad signature is dropped", r)
    t.ok("REPLAYED" not in out, "a message for another request does not enter this run", r)
    # 4. an oversized message: ZeroMQ cuts the connection that carries it
    # (ZMQ_MAXMSGSIZE), so the broker never buffers it; what the kernel sent
    # meanwhile is lost and the run ends with a clean error, not a hang.
    big = "k = get_ipython().kernel\nk.session.send(k.iopub_socket, 'stream', {'name': 'stdout', " \
          "'text': 'H' * (40 << 20)}, parent=k.get_parent('shell'))\nprint('sent')"
    t0 = time.monotonic()
    r = b.post("/v1/sandboxes/%s/code" % ATK, {"code": big, "timeout_ms": 8000})
    dt = time.monotonic() - t0
    out = json.dumps(r.body)
    t.ok(r.status == 200 and "HHHHHHHHHH" not in out and dt < 30,
         "a 40 MiB kernel message is never passed on; the run ends in %.1f s (%s)" % (
             dt, (r.get("error") or {}).get("name") if isinstance(r.body, dict) else r.status), r)
    t.ok(broker_rss_kb(b) < 512 * 1024, "the broker did not buffer it (RSS %d KiB)" % broker_rss_kb(b))
    r2 = b.post("/v1/sandboxes/%s/code" % ATK, {"code": "6*7"})
    texts = [x.get("text") for x in (r2.get("results") or [])] if isinstance(r2.body, dict) else []
    t.eq(texts, ["42"], "the context still runs code after", r2)


# --------------------------------------------------------------------------
# Through the API
# --------------------------------------------------------------------------

def test_file_api_symlink_race(t, b):
    stop = threading.Event()
    swapper = b.post("/v1/sandboxes/%s/processes" % ATK, {"command": (
        "mkdir -p /workspace/real; while :; do rm -rf /workspace/race; ln -s / /workspace/race; "
        "rm -f /workspace/race; mkdir -p /workspace/race; done")})
    t.eq(swapper.status, 201, "a process swaps /workspace/race between a dir and a symlink to /", swapper)
    marker = "pwned-%s" % os.urandom(4).hex()
    codes = {}
    for i in range(150):
        r = b.request("PUT", "/v1/sandboxes/%s/files/workspace/race/%s" % (ATK, marker), raw=b"x",
                      headers={"Content-Type": "application/octet-stream"})
        codes[r.status] = codes.get(r.status, 0) + 1
    stop.set()
    b.delete("/v1/sandboxes/%s/processes" % ATK)
    t.ok(not os.path.exists("/" + marker) and not os.path.exists(os.path.join(b.state, marker)),
         "no file appeared on the host during 150 racing writes (%s)" % codes)
    t.ok(all(c < 500 for c in codes), "racing writes answer without 5xx (%s)" % codes)


def test_file_api_rename_race(t, b):
    with open("/etc/hostname", "rb") as f:
        host_hostname = f.read()
    swapper = b.post("/v1/sandboxes/%s/processes" % ATK, {"command": (
        "mkdir -p /workspace/d; echo mine > /workspace/d/hostname; while :; do "
        "mv /workspace/d /workspace/d2; ln -sfn /etc /workspace/d; rm /workspace/d; mv /workspace/d2 /workspace/d; "
        "done")})
    t.eq(swapper.status, 201, "a process renames /workspace/d back and forth with a symlink to /etc", swapper)
    leaked = 0
    for i in range(150):
        r = b.request("GET", "/v1/sandboxes/%s/files/workspace/d/hostname" % ATK)
        if r.status == 200 and r.raw == host_hostname and host_hostname.strip() != b"mine":
            # The sandbox's own /etc/hostname is the sandbox id; the host's differs.
            leaked += 1
    b.delete("/v1/sandboxes/%s/processes" % ATK)
    t.eq(leaked, 0, "no read during the race returned the host's /etc/hostname")


def test_path_tricks(t, b):
    with open("/etc/passwd", "rb") as f:
        host_passwd = f.read()
    tricks = ["/../../../../etc/passwd", "/workspace/../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd",
              "%2e%2e/%2e%2e/etc/passwd", "/proc/self/root/../../etc/passwd", "/proc/1/root/etc/passwd",
              "//etc//passwd", "/workspace/%00/etc/passwd", "/" + "a/" * 3000 + "x"]
    for p in tricks:
        r = b.request("GET", "/v1/sandboxes/%s/files/%s" % (ATK, p.lstrip("/")))
        t.ok(r.status < 500 and r.raw != host_passwd, "GET files %.40s: %d, never the host's file" % (p, r.status), r)
        r = b.get("/v1/sandboxes/%s/files:list?path=%s" % (ATK, p.replace("%", "%25")[:5000]))
        t.ok(r.status < 500, "files:list %.40s answers %d" % (p, r.status), r)
    bodies = [("/v1/sandboxes/%s/exec" % ATK, {"command": "cat passwd", "cwd": "/../../etc"}),
              ("/v1/sandboxes/%s/processes" % ATK, {"command": "pwd", "cwd": "/../../../"}),
              ("/v1/sandboxes/%s/sessions" % ATK, {"cwd": "/../../../../etc"}),
              ("/v1/sandboxes/%s/files:mkdir" % ATK, {"path": "/../../tmp/x-%s" % os.getpid(), "recursive": True}),
              ("/v1/sandboxes/%s/files:move" % ATK, {"from": "/workspace/secret", "to": "/../../../tmp/moved"}),
              ("/v1/sandboxes/%s/backups" % ATK, {"dir": "/../../../etc"}),
              ("/v1/sandboxes/%s/git/checkout" % ATK, {"repo_url": "file:///../../etc", "target_dir": "/../../x"})]
    for path, body in bodies:
        r = b.post(path, body)
        t.ok(r.status < 500 and host_passwd[:40] not in (r.raw or b""),
             "%s with a path escaping upwards: %d, nothing of the host" % (path.split("/")[-1], r.status), r)
    t.ok(not os.path.exists("/tmp/x-%d" % os.getpid()) and not os.path.exists("/tmp/moved"),
         "nothing was created on the host by the path tricks")


def status_or_closed(fn):
    """The status of a request, or "closed" when the broker refused it by
    closing the connection before the client finished sending."""
    try:
        return fn().status
    except (BrokenPipeError, ConnectionResetError):
        return "closed"


def test_huge_argv_env(t, b):
    st = status_or_closed(lambda: b.post("/v1/sandboxes/%s/exec" % ATK, {"command": "echo " + "a" * (2 << 20)}))
    t.ok(st in (400, 413, "closed"), "a 2 MiB command is refused (%s)" % st)
    r = b.post("/v1/sandboxes/%s/exec" % ATK, {"command": "true", "env": {"V%d" % i: "x" for i in range(5000)}})
    t.ok(r.status in (400, 413), "5000 environment variables are refused (%d)" % r.status, r)
    r = b.post("/v1/sandboxes/%s/exec" % ATK, {"command": "true", "env": {"V": "x" * 200000}})
    t.ok(r.status in (400, 413), "a 200 KB environment value is refused (%d)" % r.status, r)
    r = b.exec(ATK, "python3 -c 'import os; os.execv(\"/bin/true\", [\"true\"] + [\"a\" * 100000] * 100)'")
    t.ok(r.status == 200 and r.get("exit_code") != 0, "a 10 MB argv inside the sandbox fails with E2BIG", r)


def test_huge_headers(t, b):
    for desc, head in [("a 1 MiB header", "X-Big: %s\r\n" % ("a" * (1 << 20))),
                       ("10000 headers", "".join("X-H%d: v\r\n" % i for i in range(10000))),
                       ("a 64 KiB URL", None)]:
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        path = "/v1/health" if head is not None else "/v1/" + "a" * 65536
        req = "GET %s HTTP/1.1\r\nHost: x\r\n%sAuthorization: Bearer %s\r\n\r\n" % (
            path, head or "", b.tokens["alice"])
        status = None
        try:
            s.sendall(req.encode())
            data = s.recv(4096)
            m = re.match(rb"HTTP/1\.[01] (\d+)", data)
            status = int(m.group(1)) if m else None
        except OSError:
            status = "closed"
        s.close()
        t.ok(status in ("closed", None, 400, 413, 414, 431), "%s: refused or closed (%s)" % (desc, status))
    r = b.get("/v1/health")
    t.eq(r.status, 200, "the broker answers after the oversized requests", r)


def test_connection_flood(t, b):
    socks = []
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        except OSError:
            break
    t0 = time.monotonic()
    r = b.get("/v1/sandboxes")
    dt = time.monotonic() - t0
    for s in socks:
        s.close()
    t.ok(r.status == 200 and dt < 5, "with %d half-open connections a request is served in %.2f s" % (len(socks), dt), r)
    time.sleep(0.5)
    r = b.get("/v1/health")
    t.eq(r.status, 200, "the broker is healthy after the flood", r)


def test_sandbox_id_tricks(t, b):
    for sid in ["..", "../vic", "%2e%2e", "vic%2f..", "a" * 200, "v\u00efc", "vic/../../", "-rf", ".hidden",
                "a b", "x\ty"]:
        r = b.get("/v1/sandboxes/%s" % urllib.parse.quote(sid, safe="/%"))
        t.ok(r.status in (400, 404), "GET sandbox id %r: %d" % (sid[:20], r.status), r)
        r = b.post("/v1/sandboxes", {"id": sid})
        t.ok(r.status == 400 or (r.status == 201 and b.delete("/v1/sandboxes/%s" % urllib.parse.quote(sid)).status == 200),
             "create with id %r: %d" % (sid[:20], r.status), r)


def test_cross_tenant_routes(t, b):
    """alice's token on every route of bob's sandbox: 404, and the victim is unchanged."""
    v = "/v1/sandboxes/" + VIC
    routes = [("GET", v, None), ("PATCH", v, {"keepalive_longer_by_seconds": 60}), ("DELETE", v, None),
              ("POST", v + "/exec", {"command": "cat /workspace/secret.txt"}),
              ("POST", v + "/code", {"code": "1"}), ("GET", v + "/contexts", None),
              ("POST", v + "/contexts", {"language": "python"}), ("GET", v + "/contexts/default-python", None),
              ("DELETE", v + "/contexts/default-python", None),
              ("POST", v + "/contexts/default-python/interrupt", None),
              ("POST", v + "/contexts/default-python/restart", None),
              ("POST", v + "/env", {"X": "1"}), ("POST", v + "/git/checkout", {"repo_url": "file:///x"}),
              ("GET", v + "/sessions", None), ("POST", v + "/sessions", {}), ("GET", v + "/sessions/default", None),
              ("DELETE", v + "/sessions/default", None), ("GET", v + "/processes", None),
              ("POST", v + "/processes", {"command": "sleep 1"}), ("DELETE", v + "/processes", None),
              ("GET", v + "/processes/p1", None), ("DELETE", v + "/processes/p1", None),
              ("GET", v + "/processes/p1/logs", None),
              ("GET", v + "/files/workspace/secret.txt", None), ("HEAD", v + "/files/workspace/secret.txt", None),
              ("PUT", v + "/files/workspace/secret.txt", {"content": "x"}),
              ("DELETE", v + "/files/workspace/secret.txt", None), ("GET", v + "/files:list?path=/workspace", None),
              ("POST", v + "/files:mkdir", {"path": "/workspace/x"}),
              ("POST", v + "/files:move", {"from": "/workspace/secret.txt", "to": "/workspace/y"}),
              ("POST", v + "/backups", {"dir": "/workspace"}),
              ("GET", v + "/ports", None), ("POST", v + "/ports", {"port": 8000}),
              ("DELETE", v + "/ports/8000", None), ("GET", v + "/ports/8000/", None),
              ("GET", v + "/mounts", None), ("DELETE", v + "/mounts?path=/mnt/x", None),
              ("POST", v + "/mounts", {"bucket": "bucket-x", "mount_path": "/mnt/bkt", "endpoint": "http://127.0.0.1:1",
                                         "credentials": {"access_key_id": "a", "secret_access_key": "s"}})]
    wrong = []
    for method, path, body in routes:
        r = b.request(method, path, body=body, tenant="alice")
        if r.status not in (404,):
            wrong.append("%s %s -> %d %s" % (method, path, r.status, r.raw[:120]))
    t.ok(not wrong, "alice's token on %d routes of bob's sandbox: all 404" % len(routes), "\n".join(wrong))
    r = b.get(v + "/backups", tenant="alice")
    t.eq(r.get("backups"), [], "backups are per tenant: alice's list under bob's sandbox shows nothing of bob's", r)
    r = b.exec(VIC, "cat /workspace/secret.txt; ls /workspace", tenant="bob")
    t.ok((r.get("stdout") or "").startswith(SECRET) and "y\n" not in (r.get("stdout") or ""),
         "bob's sandbox and file are unchanged", r)
    for surface, path in [("acontext", "/compat/acontext/sandbox/" + VIC),
                          ("kapin", "/compat/kapin/sandboxes/" + VIC),
                          ("artifact", "/compat/artifact/file?path=/workspace/secret.txt&sandbox_id=" + VIC)]:
        r = b.request("GET", path, tenant="alice")
        t.ok(r.status == 404 and SECRET.encode() not in (r.raw or b""),
             "compat %s: alice's token on bob's sandbox is 404" % surface, r)


def broker_rss_kb(b):
    try:
        with open("/proc/%d/status" % b.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    harness.main([test_setup, test_read_broker_state, test_other_sandbox_files, test_write_proc_sys,
                  test_write_sys, test_write_cgroup, test_mount, test_modules, test_ptrace_agent,
                  test_raw_sockets, test_egress, test_devices, test_setuid, test_namespaces_and_syscalls,
                  test_agent_socket, test_fd_exhaustion_inside, test_output_flood, test_fork_bomb,
                  test_memory_bomb, test_disk_fill, test_cpu_hog_neighbour, test_kernel_forged_messages,
                  test_file_api_symlink_race, test_file_api_rename_race, test_path_tricks,
                  test_huge_argv_env, test_huge_headers, test_connection_flood, test_sandbox_id_tricks,
                  test_cross_tenant_routes, test_kill_and_signals])
