#!/usr/bin/env python3
"""test_mounts.py - S3-compatible bucket mounts (POST/GET/DELETE
/v1/sandboxes/{id}/mounts) against a real S3 server on 127.0.0.1: npm's
s3rver, which bootstrap installs into /var/cache/sandboxd/npm.

Files go both ways (sandbox -> S3 and S3 -> sandbox, also to a Python
kernel); prefix and read-only mounts; the credentials never reach the
sandbox (env, files, ps) nor stay on the host; every failure (bad
credentials, bucket, endpoint, mount path, a second mount on one path,
the limit) is a clear error that leaves nothing behind; bob cannot touch
alice's mounts; unmounting on DELETE, on sandbox delete, on expiry and
after a broker restart whose s3fs died leaves no s3fs process, no FUSE
mount and no passwd file.

The contract is docs/api.md ("Bucket mounts") and docs/operations.md.
s3rver checks the access key id of every signed request and the full
signature of V2 ones only; the client here signs with V2 so that its own
requests are checked, and wrong credentials are a wrong access key id."""

import base64
import ctypes
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

NPM_CACHE = os.environ.get("SANDBOXD_NPM_CACHE", "/var/cache/sandboxd/npm")
S3RVER = os.environ.get("S3RVER_BIN", os.path.join(NPM_CACHE, "node_modules", "s3rver", "bin", "s3rver.js"))
AK = "S3RVER"
S3_SECRET = "S3RVER"
# s3fs signs with V4, whose signature s3rver does not check: any secret
# works with the right key id, so the one given to the broker is unique
# and can be searched for.
SECRET = "sk" + secrets.token_hex(16)
MAX_MOUNTS = 3
MOUNT_TIMEOUT_MS = 5000
SB = "mnt"
MOUNTS = "/v1/sandboxes/%s/mounts"
STATE = {}


# --------------------------------------------------------------------------
# A small S3 client (path-style, AWS signature V2, which s3rver verifies)
# --------------------------------------------------------------------------


class S3:
    def __init__(self, port, access=AK, secret=S3_SECRET):
        self.port, self.access, self.secret = port, access, secret

    def request(self, method, bucket, key="", body=b"", query=""):
        path = "/" + bucket + ("/" + key if key else "")
        date = email.utils.formatdate(usegmt=True)
        ctype = "application/octet-stream" if body else ""
        # s3rver 3.7 leaves the date line of a header-signed V2 request
        # empty when it computes the string to sign; sign what it checks.
        sts = "%s\n\n%s\n\n%s" % (method, ctype, path)
        sig = base64.b64encode(hmac.new(self.secret.encode(), sts.encode(), hashlib.sha1).digest()).decode()
        headers = {"Date": date, "Authorization": "AWS %s:%s" % (self.access, sig)}
        if ctype:
            headers["Content-Type"] = ctype
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path + ("?" + query if query else ""), body=body or None, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def make_bucket(self, bucket):
        return self.request("PUT", bucket)[0]

    def put(self, bucket, key, data):
        return self.request("PUT", bucket, key, data)[0]

    def get(self, bucket, key):
        st, data = self.request("GET", bucket, key)
        return data if st == 200 else None

    def keys(self, bucket, prefix=""):
        st, data = self.request("GET", bucket, query="prefix=" + prefix if prefix else "")
        return sorted(re.findall(r"<Key>([^<]*)</Key>", data.decode())) if st == 200 else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_s3rver(t, port):
    if not os.path.exists(S3RVER):
        t.ok(False, "s3rver is installed in %s (bootstrap installs it)" % NPM_CACHE, S3RVER)
        return None
    d = tempfile.mkdtemp(prefix="sbxe-s3-", dir="/tmp")
    log = open(os.path.join(d, "s3rver.log"), "wb")
    p = subprocess.Popen(["node", S3RVER, "-d", os.path.join(d, "data"), "-a", "127.0.0.1", "-p", str(port)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    ok = wait_until(lambda: b"listening" in open(os.path.join(d, "s3rver.log"), "rb").read() or p.poll() is not None, 20)
    up = ok and p.poll() is None
    t.ok(up, "s3rver listens on 127.0.0.1:%d" % port, open(os.path.join(d, "s3rver.log")).read())
    STATE.update(s3=S3(port), s3proc=p, s3dir=d, endpoint="http://127.0.0.1:%d" % port)
    return up


def stop_s3rver():
    p = STATE.get("s3proc")
    if p and p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if STATE.get("s3dir"):
        shutil.rmtree(STATE["s3dir"], ignore_errors=True)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def mount(b, sid=SB, tenant="alice", creds=True, **fields):
    body = {"endpoint": STATE["endpoint"]}
    if creds:
        body["credentials"] = {"access_key_id": AK, "secret_access_key": SECRET}
    body.update(fields)
    return b.post(MOUNTS % sid, body, tenant=tenant, timeout=60)


def sh(b, command, sid=SB):
    r = b.exec(sid, command, cwd="/workspace")
    return r.get("stdout", "") if r.status == 200 else "exec failed: %s" % (r,)


def s3fs_procs(b):
    """s3fs processes serving a mount under this broker's state dir."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"s3fs" and any(b.state.encode() in a for a in argv):
            out.append(int(pid))
    return out


def fuse_mounts(b):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" - ")
            if len(parts) == 2 and parts[1].startswith("fuse") and b.state in line:
                out.append(line.split()[4])
    return out


def passwd_files(b):
    found = []
    for root, dirs, files in os.walk(os.path.join(b.state, "sandboxes")):
        dirs[:] = [d for d in dirs if d not in ("bundle", "upper", "work", "mnt", "kernels")]
        found += [os.path.join(root, f) for f in files if f.startswith("passwd")]
    return found


def host_files_with_secret(b):
    found = []
    for root, dirs, files in os.walk(b.state):
        dirs[:] = [d for d in dirs if d not in ("bundle", "mnt")]
        for f in files:
            p = os.path.join(root, f)
            try:
                if os.path.isfile(p) and not os.path.islink(p) and SECRET.encode() in open(p, "rb").read():
                    found.append(p)
            except OSError:
                pass
    return found


def nothing_left(t, b, what):
    """No s3fs, FUSE mount nor passwd file of this broker remains."""
    gone = wait_until(lambda: not s3fs_procs(b) and not fuse_mounts(b), 10)
    t.ok(gone, "%s: no s3fs process and no FUSE mount left on the host" % what,
         "s3fs: %s\nmounts: %s" % (s3fs_procs(b), fuse_mounts(b)))
    t.eq(passwd_files(b), [], "%s: no credentials file left" % what)


def err_ok(t, r, status, field, what, code=None):
    good = r.status == status and harness.error_shape_ok(r.body) and harness.names_field(r.err_message(), field)
    if code:
        good = good and r.err_code() == code
    t.ok(good, "%s -> %d naming '%s'%s" % (what, status, field, " (%s)" % code if code else ""), r)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_setup(t, b):
    t.ok(shutil.which("s3fs") is not None, "s3fs is installed (bootstrap installs it)")
    if not start_s3rver(t, STATE["port"]):
        raise RuntimeError("no s3rver")
    s3 = STATE["s3"]
    for bk in ("data-bkt", "pfx-bkt", "ro-bkt", "life-bkt"):
        t.eq(s3.make_bucket(bk), 200, "create bucket %s through the S3 API" % bk)
    t.eq(S3(s3.port, secret="wrong").make_bucket("never"), 403,
         "s3rver checks the signature of the test's own V2 requests")
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the sandbox", r)
    STATE["cid"] = r.cid


def test_roundtrip(t, b):
    s3 = STATE["s3"]
    t0 = time.monotonic()
    r = mount(b, bucket="data-bkt", mount_path="/workspace/bucket")
    took = time.monotonic() - t0
    t.eq(r.status, 201, "mount data-bkt at /workspace/bucket -> 201 (%.2f s)" % took, r)
    want = {"path": "/workspace/bucket", "bucket": "data-bkt", "endpoint": STATE["endpoint"], "provider": "s3",
            "read_only": False, "prefix": None, "credentials_source": "request"}
    t.eq({k: r.get(k) for k in want}, want, "the answer describes the mount", r)
    t.ok(SECRET not in r.raw.decode() and "secret" not in json.dumps(r.body), "the answer holds no secret", r)

    out = sh(b, "echo from-sandbox > /workspace/bucket/hello.txt && mkdir -p /workspace/bucket/d && "
                "echo nested > /workspace/bucket/d/n.txt && cat /workspace/bucket/hello.txt && id -un")
    t.eq(out, "from-sandbox\nsandbox\n", "the sandbox user writes and reads files in the mount", out)
    t.eq(s3.get("data-bkt", "hello.txt"), b"from-sandbox\n", "a file written in the sandbox is in the bucket")
    t.eq(s3.get("data-bkt", "d/n.txt"), b"nested\n", "a file in a new directory is in the bucket under d/")

    t.eq(s3.put("data-bkt", "from-s3.txt", b"written through S3\n"), 200, "put an object through S3")
    out = sh(b, "cat /workspace/bucket/from-s3.txt; ls /workspace/bucket | sort | tr '\\n' ' '")
    t.eq(out, "written through S3\nd from-s3.txt hello.txt ", "an object put through S3 is a file in the sandbox", out)

    r = b.post("/v1/sandboxes/%s/code" % SB, {"code": "open('/workspace/bucket/from-s3.txt').read()"}, timeout=90)
    res = [x.get("text") for x in r.get("results") or []]
    t.eq(res, ["'written through S3\\n'"], "a Python kernel (runCode) reads the bucket's file", r)
    r = b.post("/v1/sandboxes/%s/code" % SB,
               {"code": "open('/workspace/bucket/kernel.txt', 'w').write('k'); sorted(__import__('os').listdir('/workspace/bucket'))"},
               timeout=90)
    t.ok(r.status == 200 and s3.get("data-bkt", "kernel.txt") == b"k", "a kernel's write reaches the bucket", r)

    g = b.get(MOUNTS % SB)
    t.ok(g.status == 200 and [m.get("path") for m in g.get("mounts") or []] == ["/workspace/bucket"],
         "GET lists the mount", g)
    t.ok(SECRET not in g.raw.decode(), "GET shows no secret", g)


def test_credentials_hidden(t, b):
    out = sh(b, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; ps -eo args 2>/dev/null; "
                "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '")
    t.ok(out and SECRET not in out and "passwd_file" not in out,
         "the secret is in no environment, command line or ps output inside the sandbox", out[-2000:])
    out = sh(b, "grep -rl %s /workspace /tmp /run /etc /home /root /var/tmp /opt 2>/dev/null; echo done" % SECRET)
    t.eq(out, "done\n", "no file in the sandbox holds the secret", out)
    out = sh(b, "ls /run/sandboxd-mounts 2>&1; echo rc=$?")
    t.ok("Permission denied" in out, "the sandbox user cannot list the broker's mount point", out)
    t.eq(host_files_with_secret(b), [], "no file under the broker's state dir holds the secret after the mount")
    t.eq(passwd_files(b), [], "s3fs's passwd file is gone once the mount is up")
    cmdlines = []
    for pid in s3fs_procs(b):
        cmdlines.append(open("/proc/%d/cmdline" % pid, "rb").read())
    t.ok(cmdlines and all(SECRET.encode() not in c and b"S3RVER" not in c for c in cmdlines),
         "the host's s3fs command line holds no key (%d s3fs)" % len(cmdlines), cmdlines)
    t.eq(s3fs_procs(b) and open("/proc/%d/environ" % s3fs_procs(b)[0], "rb").read().find(SECRET.encode()), -1,
         "nor does its environment")


def test_prefix_and_read_only(t, b):
    s3 = STATE["s3"]
    s3.put("pfx-bkt", "team/a/inside.txt", b"in\n")
    s3.put("pfx-bkt", "outside.txt", b"out\n")
    r = mount(b, bucket="pfx-bkt", prefix="/team/a/", mount_path="/mnt/team")
    t.eq((r.status, r.get("prefix")), (201, "team/a"), "mount pfx-bkt with prefix team/a at /mnt/team", r)
    out = sh(b, "ls /mnt/team; echo new > /mnt/team/new.txt && echo wrote")
    t.eq(out, "inside.txt\nwrote\n", "a prefix mount shows only what is under the prefix and takes writes", out)
    t.eq(s3.keys("pfx-bkt"), ["outside.txt", "team/a/inside.txt", "team/a/new.txt"],
         "a file written in a prefix mount lands under the prefix")

    s3.put("ro-bkt", "r.txt", b"read me\n")
    r = mount(b, bucket="ro-bkt", mount_path="/mnt/ro", read_only=True)
    t.eq((r.status, r.get("read_only")), (201, True), "mount ro-bkt read-only at /mnt/ro", r)
    out = sh(b, "cat /mnt/ro/r.txt; touch /mnt/ro/x 2>&1; (echo more >> /mnt/ro/r.txt) 2>&1; rm /mnt/ro/r.txt 2>&1; true")
    t.ok(out.startswith("read me\n") and out.count("Read-only file system") == 3,
         "a read-only mount reads, and refuses create, append and delete with EROFS", out)
    r = b.post("/v1/sandboxes/%s/code" % SB,
               {"code": "import errno\ntry:\n    open('/mnt/ro/k', 'w')\nexcept OSError as e:\n    print(e.errno == errno.EROFS)"},
               timeout=90)
    t.eq((r.get("logs") or {}).get("stdout"), ["True\n"], "a kernel's write to it fails with EROFS", r)
    t.eq(s3.keys("ro-bkt"), ["r.txt"], "the read-only bucket is unchanged")
    g = b.get(MOUNTS % SB)
    t.eq(sorted(m.get("path") for m in g.get("mounts") or []), ["/mnt/ro", "/mnt/team", "/workspace/bucket"],
         "GET lists the three mounts", g)


def test_errors(t, b):
    ep = STATE["endpoint"]
    r = mount(b, bucket="life-bkt", mount_path="/x1")
    t.ok(r.status == 429 and r.err_code() == "quota_exceeded",
         "a mount past max_mounts_per_sandbox (%d) -> 429 quota_exceeded" % MAX_MOUNTS, r)
    d = b.delete(MOUNTS % SB + "?path=/mnt/team")
    t.ok(d.status == 200 and d.get("status") == "unmounted", "DELETE ?path=/mnt/team unmounts it", d)

    r = mount(b, bucket="data-bkt", mount_path="/work2", credentials={"access_key_id": "WRONGKEY", "secret_access_key": SECRET})
    err_ok(t, r, 422, "credentials", "wrong credentials", "invalid_credentials")
    r = mount(b, bucket="no-such-bucket", mount_path="/work2")
    err_ok(t, r, 422, "bucket", "a bucket that does not exist", "bucket_not_found")
    t0 = time.monotonic()
    r = mount(b, bucket="data-bkt", mount_path="/work2", endpoint="http://127.0.0.1:%d" % free_port())
    err_ok(t, r, 502, "endpoint", "an endpoint nothing listens on (%.1f s)" % (time.monotonic() - t0),
           "endpoint_unreachable")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never answers
    t0 = time.monotonic()
    r = mount(b, bucket="data-bkt", mount_path="/work2", endpoint="http://127.0.0.1:%d" % silent.getsockname()[1])
    took = time.monotonic() - t0
    err_ok(t, r, 502, "endpoint", "an endpoint that never answers (%.1f s)" % took, "endpoint_unreachable")
    t.ok(took < MOUNT_TIMEOUT_MS / 1000.0 + 3, "it gives up after mount_timeout_ms (%d ms)" % MOUNT_TIMEOUT_MS)
    silent.close()
    for bad in ("ftp://127.0.0.1", "127.0.0.1:9000", "http://h,passwd_file=/etc/shadow", "http://u@h", "http://h/path"):
        err_ok(t, mount(b, bucket="data-bkt", mount_path="/work2", endpoint=bad), 400, "endpoint",
               "endpoint %r" % bad, "invalid_field")
    for bad in ("/", "/etc", "/etc/foo", "/proc/x", "/usr/local/x", "/dev/x", "/run/x", "/opt/sandboxd/x",
                "relative/path", "/a/../etc", "/tmp", "/workspace"):
        err_ok(t, mount(b, bucket="data-bkt", mount_path=bad), 400, "mount_path",
               "mount_path %r" % bad, "invalid_field")
    r = mount(b, bucket="data-bkt", mount_path="/workspace/bucket/")
    err_ok(t, r, 409, "mount_path", "a path already mounted", "already_mounted")
    r = mount(b, bucket="data-bkt", mount_path="/workspace/bucket/sub")
    err_ok(t, r, 409, "mount_path", "a path inside a mount", "already_mounted")
    r = mount(b, bucket="data-bkt", mount_path="/dev/shm/x")
    err_ok(t, r, 400, "mount_path", "mount_path under /dev", "invalid_field")
    sh(b, "ln -s /etc /workspace/link")
    r = mount(b, bucket="data-bkt", mount_path="/workspace/link/x")
    err_ok(t, r, 400, "mount_path", "a mount_path through a symlink the tenant made", "invalid_field")
    t.eq(sh(b, "ls /etc/x 2>&1 | head -c 0; test -e /etc/x && echo created || echo absent"), "absent\n",
         "nothing was created through the symlink")
    r = mount(b, creds=False, bucket="data-bkt", mount_path="/work2", endpoint="http://127.0.0.1:1")
    err_ok(t, r, 400, "credentials", "no credentials and none on the broker for this tenant and endpoint",
           "invalid_field")
    err_ok(t, mount(b, bucket="Bad_Bucket!", mount_path="/work2"), 400, "bucket", "a bad bucket name")
    err_ok(t, mount(b, bucket="data-bkt", mount_path="/work2", provider="azure"), 400, "provider", "provider azure")
    err_ok(t, mount(b, bucket="data-bkt", mount_path="/work2", prefix="a/../b"), 400, "prefix", "prefix with ..")
    err_ok(t, mount(b, bucket="data-bkt", mount_path="/work2", credentials={"access_key_id": "a:b", "secret_access_key": "x"}),
           400, "credentials.access_key_id", "an access key with ':'")
    err_ok(t, mount(b, bucket="data-bkt", mount_path="/work2", color="red"), 400, "color", "an unknown field")
    err_ok(t, b.post(MOUNTS % SB, {"mount_path": "/work2", "endpoint": STATE["endpoint"]}), 400, "bucket", "no bucket")
    d = b.delete(MOUNTS % SB + "?path=/nowhere")
    t.ok(d.status == 404 and harness.error_shape_ok(d.body), "DELETE of a path with no mount -> 404", d)
    d = b.delete(MOUNTS % SB)
    err_ok(t, d, 400, "path", "DELETE without ?path")
    t.eq(sorted(m.get("path") for m in b.get(MOUNTS % SB).get("mounts") or []), ["/mnt/ro", "/workspace/bucket"],
         "failed mounts are not listed")
    # Each mount shows twice inside: at its path and below /run/sandboxd-mounts.
    t.eq(sh(b, "ls -d /work2 2>&1 >/dev/null | wc -l; grep fuse /proc/self/mountinfo | grep -vc sandboxd-mounts"),
         "1\n2\n", "failed mounts left no directory or mount in the sandbox")
    t.eq(len(s3fs_procs(b)), 2, "failed mounts left no s3fs process (2 remain for 2 mounts)", s3fs_procs(b))
    t.eq(len(fuse_mounts(b)), 2, "failed mounts left no FUSE mount on the host", fuse_mounts(b))
    t.eq(passwd_files(b), [], "failed mounts left no credentials file")
    t.ok(ep == STATE["endpoint"], "endpoint unchanged")


def test_broker_credentials(t, b):
    """mount_credentials holds a key for alice at this endpoint only; the
    allow-list (mount_endpoint_hosts) lets 127.0.0.1 through only."""
    d = b.delete(MOUNTS % SB + "?path=/mnt/ro")
    t.eq(d.status, 200, "make room: unmount /mnt/ro", d)
    r = mount(b, creds=False, bucket="ro-bkt", mount_path="/mnt/ro", read_only=True)
    t.ok(r.status == 201 and r.get("credentials_source") == "broker",
         "without credentials, alice's key from mount_credentials is used (credentials_source: broker)", r)
    t.eq(sh(b, "cat /mnt/ro/r.txt"), "read me\n", "and the bucket is readable")
    t.eq(host_files_with_secret(b), [], "the broker's key is in no file under the state dir")
    r = b.create(tenant="bob", id="bobs")
    t.eq(r.status, 201, "bob creates a sandbox", r)
    r = mount(b, sid="bobs", tenant="bob", creds=False, bucket="ro-bkt", mount_path="/mnt/x")
    err_ok(t, r, 400, "credentials", "bob has no broker-side key", "invalid_field")
    t.eq(b.delete("/v1/sandboxes/bobs", tenant="bob").status, 200, "bob deletes his sandbox")
    r = mount(b, bucket="ro-bkt", mount_path="/mnt/y", endpoint="http://localhost:%d" % STATE["port"])
    err_ok(t, r, 403, "endpoint", "an endpoint host outside mount_endpoint_hosts", "endpoint_not_allowed")


def umount_in_container(pid, path):
    """Unmount path inside the container of init pid (lazily): makes the
    container look like one started before the shared mount point existed."""
    rootfd = os.open("/proc/%d/root" % pid, os.O_RDONLY | os.O_DIRECTORY)
    nsfd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY)
    child = os.fork()
    if child == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(nsfd, 0x00020000) != 0:
                os._exit(2)
            os.fchdir(rootfd)
            os.chroot(".")
            os._exit(0 if libc.umount2(path.encode(), 2) == 0 else 3)
        except BaseException:
            os._exit(4)
    os.close(rootfd)
    os.close(nsfd)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])


def test_old_sandbox(t, b):
    r = b.create(id="old")
    t.eq(r.status, 201, "create sandbox old", r)
    pid = int(open(os.path.join(b.state, "sandboxes", r.cid, "init.pid")).read())
    t.eq(umount_in_container(pid, "/run/sandboxd-mounts"), 0,
         "take the shared mount point out of old's container (as in a sandbox from before mounts)")
    t.eq(sh(b, "grep -c sandboxd-mounts /proc/self/mountinfo", sid="old"), "0\n", "old has no shared point")
    r = mount(b, sid="old", bucket="data-bkt", mount_path="/data")
    t.eq(r.status, 201, "a bucket still mounts into it", r)
    t.eq(sh(b, "cat /data/hello.txt", sid="old"), "from-sandbox\n", "and its files are there")
    d = b.delete(MOUNTS % "old" + "?path=/data")
    t.eq(d.status, 200, "and it unmounts", d)
    t.eq(sh(b, "grep -c fuse /proc/self/mountinfo", sid="old"), "0\n", "leaving no mount in the sandbox")
    t.eq(b.delete("/v1/sandboxes/old").status, 200, "delete old")


def test_tenants(t, b):
    for method, path, body in (("GET", MOUNTS % SB, None), ("POST", MOUNTS % SB, {"bucket": "data-bkt", "mount_path": "/bob",
                                                                                   "endpoint": STATE["endpoint"]}),
                               ("DELETE", MOUNTS % SB + "?path=/workspace/bucket", None)):
        r = b.request(method, path, body, tenant="bob")
        t.ok(r.status == 404 and r.err_code() == "not_found", "bob's %s on alice's mounts -> 404" % method, r)
    t.eq(len(b.get(MOUNTS % SB).get("mounts") or []), 2, "alice's mounts are untouched")
    r = b.request("GET", MOUNTS % SB, tenant=None)
    t.eq(r.status, 401, "no token -> 401", r)
    r = b.request("PUT", MOUNTS % SB, {})
    t.eq(r.status, 405, "PUT -> 405", r)


def test_delete_unmounts(t, b):
    d = b.delete(MOUNTS % SB + "?path=/mnt/ro")
    t.ok(d.status == 200 and d.get("path") == "/mnt/ro", "DELETE ?path=/mnt/ro -> 200", d)
    out = sh(b, "grep -c ' /mnt/ro ' /proc/self/mountinfo; ls -A /mnt/ro | wc -l")
    t.eq(out, "0\n0\n", "the sandbox no longer sees the bucket at /mnt/ro", out)
    t.eq(len(s3fs_procs(b)), 1, "its s3fs is gone (one left, for /workspace/bucket)", s3fs_procs(b))
    t.eq(len(fuse_mounts(b)), 1, "its FUSE mount is gone on the host", fuse_mounts(b))
    t.eq(sh(b, "cat /workspace/bucket/hello.txt"), "from-sandbox\n", "the other mount still works")


def test_restart(t, b):
    t.ok(b.restart(), "the broker restarts (SIGTERM, start)")
    g = b.get(MOUNTS % SB)
    t.eq([m.get("path") for m in g.get("mounts") or []], ["/workspace/bucket"], "GET lists the mount after a restart", g)
    t.eq(sh(b, "cat /workspace/bucket/hello.txt"), "from-sandbox\n", "the mount still works after a restart")
    # The container dies while the broker is down, s3fs lives on: recovery
    # restarts the container and binds the bucket into it again.
    b.stop()
    cid = STATE["cid"]
    subprocess.run([harness.RUNTIME, "--root", os.path.join(b.state, "runc"), "kill", cid, "KILL"],
                   capture_output=True)
    t.ok(wait_until(lambda: harness.runc_state(b.state, cid) != "running", 5),
         "the sandbox's container is stopped while the broker is down")
    t.ok(b.start(), "the broker starts and restarts the container")
    t.eq(sh(b, "cat /workspace/bucket/hello.txt"), "from-sandbox\n",
         "the bucket is bound into the restarted container again")
    t.ok("bound into the container again" in b.log_text(), "and the broker logs it")
    # s3fs dies while the broker is down: recovery drops the mount.
    b.stop()
    for pid in s3fs_procs(b):
        os.kill(pid, signal.SIGKILL)
    # and a broker killed mid-mount would have left a passwd file
    stale = os.path.join(b.state, "sandboxes", STATE["cid"], "s3fs", "passwd-99")
    with open(stale, "w") as f:
        f.write("X:Y\n")
    t.ok(b.start(), "the broker starts again after its s3fs was killed")
    g = b.get(MOUNTS % SB)
    t.eq(g.get("mounts"), [], "a mount whose s3fs died is dropped at recovery", g)
    t.ok("dropped after restart" in b.log_text(), "and the broker logs it")
    nothing_left(t, b, "after recovery dropped the dead mount")
    t.ok(not os.path.exists(stale), "recovery removed a stale credentials file")
    out = sh(b, "grep -c fuse /proc/self/mountinfo; ls /workspace/bucket 2>&1 | wc -l")
    t.eq(out, "0\n0\n", "the dead mount is gone inside the sandbox too", out)
    r = mount(b, bucket="data-bkt", mount_path="/workspace/bucket")
    t.eq(r.status, 201, "the same path mounts again", r)
    t.eq(sh(b, "cat /workspace/bucket/hello.txt"), "from-sandbox\n", "with the bucket's files")


def test_container_revive(t, b):
    """The container's init dies while the broker runs: the watchdog starts
    the container again on the same files, and the bucket (s3fs lives on,
    on the host) is bound into the new container."""
    cid = STATE["cid"]
    p = subprocess.run([harness.RUNTIME, "--root", os.path.join(b.state, "runc"), "state", cid],
                       capture_output=True, text=True)
    pid = json.loads(p.stdout).get("pid") if p.returncode == 0 else None
    t.ok(pid, "the container's init pid", p.stdout + p.stderr)
    if not pid:
        return
    os.kill(pid, signal.SIGKILL)
    ok = wait_until(lambda: sh(b, "cat /workspace/bucket/hello.txt") == "from-sandbox\n", 20, 0.5)
    t.ok(ok, "after the watchdog restarted the container, the bucket is there again",
         b.log_tail(40))
    g = b.get(MOUNTS % SB)
    t.eq([m.get("path") for m in g.get("mounts") or []], ["/workspace/bucket"],
         "GET still lists the mount", g)


def test_sandbox_delete_and_expiry(t, b):
    r = b.create(id="gone")
    t.eq(r.status, 201, "create sandbox gone", r)
    t.eq(mount(b, sid="gone", bucket="life-bkt", mount_path="/data").status, 201, "mount in gone")
    n = len(s3fs_procs(b))
    t.eq(b.delete("/v1/sandboxes/gone").status, 200, "delete sandbox gone")
    t.ok(wait_until(lambda: len(s3fs_procs(b)) == n - 1, 10), "its s3fs is gone with the sandbox", s3fs_procs(b))
    t.eq(b.container_gone(r.cid), [], "nothing of the deleted sandbox remains (mounts included)")

    r = b.create(id="short", keepalive_seconds=3)
    t.eq(r.status, 201, "create sandbox short (keepalive 3 s)", r)
    t.eq(mount(b, sid="short", bucket="life-bkt", mount_path="/data", read_only=True).status, 201, "mount in short")
    t.eq(len(s3fs_procs(b)), n, "one more s3fs while short lives")
    gone = wait_until(lambda: b.get("/v1/sandboxes/short").status == 404, 15)
    t.ok(gone, "short expires")
    t.ok(wait_until(lambda: len(s3fs_procs(b)) == n - 1 and not b.container_gone(r.cid), 10),
         "expiry unmounted it: no s3fs, mount or directory of short remains",
         "%s %s" % (s3fs_procs(b), b.container_gone(r.cid)))


def test_last_sandbox_delete(t, b):
    t.eq(b.delete("/v1/sandboxes/%s" % SB).status, 200, "delete the main sandbox with its mount")
    nothing_left(t, b, "after every sandbox is deleted")
    t.eq(host_files_with_secret(b), [], "no file on the host holds the secret")


def main():
    harness.require_ready()
    tap = harness.Tap()
    STATE["port"] = free_port()
    creds_dir = tempfile.mkdtemp(prefix="sbxe-creds-", dir="/tmp")
    creds = os.path.join(creds_dir, "mount-credentials")
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# tenant endpoint access_key_id secret_access_key\n")
        f.write("bob http://127.0.0.1:1 %s %s\n" % (AK, SECRET))
        f.write("alice http://127.0.0.1:%d/ %s %s\n" % (STATE["port"], AK, SECRET))
    b = harness.Broker(tap, config={"max_mounts_per_sandbox": MAX_MOUNTS, "reap_interval_ms": 200,
                                    "mount_credentials": creds, "mount_endpoint_hosts": "127.0.0.1",
                                    "mount_timeout_ms": MOUNT_TIMEOUT_MS})
    try:
        if b.start():
            for fn in (test_setup, test_roundtrip, test_credentials_hidden, test_prefix_and_read_only, test_errors,
                       test_broker_credentials, test_old_sandbox, test_tenants, test_delete_unmounts, test_restart, test_container_revive, test_sandbox_delete_and_expiry,
                       test_last_sandbox_delete):
                if not b.alive():
                    tap.ok(False, "broker is running before %s" % fn.__name__)
                    break
                harness.run_test(tap, fn, b)
                if fn is test_setup and "s3" not in STATE:
                    break
    except KeyboardInterrupt:
        tap.ok(False, "interrupted")
    finally:
        b.teardown()
        stop_s3rver()
        shutil.rmtree(creds_dir, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
