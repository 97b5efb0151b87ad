"""harness.py - shared machinery for the sandboxd end-to-end tests.

Each tests/e2e/test_*.py script starts the real broker on 127.0.0.1 with a
random port and a temporary state directory, drives it over HTTP and prints
TAP. This module holds what they share:

  Tap       TAP output: one line per assertion, '# ' diagnostics on failure.
  Broker    a broker process with its own state dir, tokens file (tenants
            'alice' and 'bob') and log; HTTP and SSE helpers; teardown that
            deletes every sandbox, stops the broker and checks that no
            container, mount, cgroup or file was left behind.
  main()    runs a list of test functions against one broker, turning an
            exception in one of them into a failed TAP line instead of
            aborting the file.

Python 3 standard library only. Environment:
  SANDBOXD_BIN        broker binary          (default src/sandboxd)
  SANDBOXD_AGENT_BIN  agent binary           (default src/agent/sandbox-agent)
  SANDBOXD_IMAGE_DIR  cached images          (default /var/cache/sandboxd/images)
  SANDBOXD_RUNTIME    OCI runtime the broker uses (default runc)
"""

import glob
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime

BIN = os.environ.get("SANDBOXD_BIN", "src/sandboxd")
AGENT = os.environ.get("SANDBOXD_AGENT_BIN", "src/agent/sandbox-agent")
SRCDIR = os.environ.get("SANDBOXD_SRCDIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KERNEL_LIB = os.path.join(SRCDIR, "kernels", "python")
IMAGE_DIR = os.environ.get("SANDBOXD_IMAGE_DIR", "/var/cache/sandboxd/images")
RUNTIME = os.environ.get("SANDBOXD_RUNTIME", "runc")

LISTEN_RE = re.compile(rb"sandboxd listening on http://127\.0\.0\.1:(\d+)")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "sandboxd"
MAX_OUTPUT = 1048576


# --------------------------------------------------------------------------
# TAP
# --------------------------------------------------------------------------


class Tap:
    """TAP producer. The plan is printed last, by done()."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        self.lock = threading.Lock()

    def ok(self, cond, desc, diag=None):
        """One assertion. diag (anything printable, e.g. a Resp) is shown
        only when cond is false. Returns bool(cond)."""
        with self.lock:
            self.n += 1
            desc = str(desc).replace("\\", "\\\\").replace("#", "\\#")
            desc = " ".join(desc.split())
            print("%s %d - %s" % ("ok" if cond else "not ok", self.n, desc), flush=True)
            if not cond:
                self.failed += 1
                if diag is not None:
                    self.diag(diag)
        return bool(cond)

    def eq(self, got, want, desc, ctx=None):
        """Assert got == want; the diagnostic shows both and ctx."""
        text = "expected: %s\n     got: %s" % (_short(want), _short(got))
        if ctx is not None:
            text += "\n" + str(ctx)
        return self.ok(got == want, desc, text)

    def diag(self, text):
        text = str(text)
        for line in text.splitlines() or [""]:
            print("# " + line, flush=True)

    def done(self):
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)


def _short(v, limit=600):
    s = repr(v)
    if len(s) > limit:
        s = s[:limit] + "... (%d chars)" % len(s)
    return s


def require_ready():
    """Skip the whole file (TAP '1..0 # SKIP') when not root or when the
    sandbox image is not built. Nothing else is a reason to skip."""
    if os.geteuid() != 0:
        print("1..0 # SKIP end-to-end tests need root (real containers)")
        sys.exit(0)
    rootfs = os.path.join(IMAGE_DIR, "current", "rootfs")
    if not os.path.isdir(rootfs):
        print("1..0 # SKIP no sandbox image at %s (run kernels/build-image.sh)" % rootfs)
        sys.exit(0)


def iso_to_epoch(s):
    """'2026-11-21T10:00:00.000Z' -> seconds since the epoch (float)."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def error_shape_ok(body):
    """True when body is exactly {"error": {"code": str, "message": str}}."""
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
        and isinstance(body["error"]["code"], str)
        and body["error"]["code"] != ""
        and isinstance(body["error"]["message"], str)
    )


def names_field(message, field):
    """True when an error message names field (as a whole word)."""
    return re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(field), message or "") is not None


# --------------------------------------------------------------------------
# HTTP responses and SSE
# --------------------------------------------------------------------------


class Resp(tuple):
    """(status, headers, body): headers is a dict with lower-case names,
    body the parsed JSON or None. .raw holds the body bytes, .req a one-line
    description of the request, .elapsed the seconds the request took."""

    def __new__(cls, status, headers, body, raw=b"", req="", elapsed=0.0):
        self = tuple.__new__(cls, (status, headers, body))
        self.raw = raw
        self.req = req
        self.elapsed = elapsed
        return self

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])

    def err_code(self):
        b = self.body
        if isinstance(b, dict) and isinstance(b.get("error"), dict):
            return b["error"].get("code")
        return None

    def err_message(self):
        b = self.body
        if isinstance(b, dict) and isinstance(b.get("error"), dict):
            return b["error"].get("message")
        return None

    def get(self, key, default=None):
        return self.body.get(key, default) if isinstance(self.body, dict) else default

    def __str__(self):
        raw = self.raw
        if len(raw) > 800:
            raw = raw[:800] + b"... (%d bytes)" % len(self.raw)
        return "request: %s\nresponse: %s %s\nbody: %s" % (
            self.req,
            self.status,
            self.headers.get("content-type", ""),
            raw.decode("utf-8", "replace"),
        )


def _parse_body(headers, raw):
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


class Event:
    """One SSE event: name, data (parsed JSON, or the raw string), t (the
    time.monotonic() at which its terminating blank line arrived)."""

    def __init__(self, name, data, t):
        self.name = name
        self.data = data
        self.t = t

    def __repr__(self):
        return "Event(%r, %s, t=%.3f)" % (self.name, _short(self.data, 200), self.t)


class SSEStream:
    """Iterates the events of a streamed response as they arrive."""

    def __init__(self, conn, resp, t0):
        self.conn = conn
        self.resp = resp
        self.t0 = t0
        self.closed = False

    def __iter__(self):
        name, data = None, []
        while True:
            try:
                line = self.resp.readline()
            except (OSError, http.client.HTTPException):
                break
            if not line:
                break
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if data or name:
                    text = "\n".join(data)
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = text
                    yield Event(name or "message", parsed, time.monotonic())
                name, data = None, []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
        self.close()

    def events(self):
        """Read to the end of the stream; the list of events."""
        return list(self)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                if self.conn.sock is not None:
                    self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()


# --------------------------------------------------------------------------
# Host-side inspection
# --------------------------------------------------------------------------


def runc_list(state_dir):
    """Container ids known to the runtime root <state>/runc."""
    root = os.path.join(state_dir, "runc")
    if not os.path.isdir(root):
        return []
    p = subprocess.run([RUNTIME, "--root", root, "list", "-q"], capture_output=True, text=True)
    return [l.strip() for l in p.stdout.splitlines() if l.strip()]


def runc_state(state_dir, cid):
    """The runtime's status string for cid ('running', 'stopped', ...) or
    None when it does not know the container."""
    p = subprocess.run(
        [RUNTIME, "--root", os.path.join(state_dir, "runc"), "state", cid], capture_output=True, text=True
    )
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout).get("status")
    except ValueError:
        return None


def _unescape_mount(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_under(path):
    """Mount points in this mount namespace at or below path."""
    path = os.path.realpath(path).rstrip("/")
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape_mount(line.split()[4])
            if mp == path or mp.startswith(path + "/"):
                out.append(mp)
    return out


def cgroup_dirs(cid):
    """Cgroup directories named after container cid, in every hierarchy."""
    return sorted(glob.glob(os.path.join(CGROUP_ROOT, "*", CGROUP_PARENT, glob.escape(cid))))


def cgroup_snapshot():
    return set(glob.glob(os.path.join(CGROUP_ROOT, "*", CGROUP_PARENT, "*/")))


def sandbox_dirs(state_dir):
    d = os.path.join(state_dir, "sandboxes")
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


def leftovers(state_dir, cids, cgroups_before=None):
    """What a run left behind, as {kind: [items]} (empty lists when clean):
    runtime containers in <state>/runc, mounts under the state dir, cgroup
    directories named after this run's containers (cids, plus any created
    since cgroups_before whose name is one of ours), and entries in
    <state>/sandboxes/."""
    found = {"containers": runc_list(state_dir), "mounts": mounts_under(state_dir), "cgroups": [], "files": []}
    cgs = set()
    for cid in cids:
        cgs.update(cgroup_dirs(cid))
    if cgroups_before is not None:
        for d in cgroup_snapshot() - cgroups_before:
            if os.path.basename(d.rstrip("/")) in cids:
                cgs.add(d.rstrip("/"))
    found["cgroups"] = sorted(cgs)
    found["files"] = [os.path.join(state_dir, "sandboxes", n) for n in sandbox_dirs(state_dir)]
    return found


# --------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------


class Broker:
    """A sandboxd process on 127.0.0.1:<random port> with a fresh state dir.

    tokens: {'alice': token, 'bob': token}. Every HTTP helper takes
    tenant= (default 'alice'; None sends no Authorization header) or token=
    (sent verbatim after 'Bearer ')."""

    def __init__(self, tap, config=None, name="broker"):
        self.tap = tap
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="sbxe-", dir="/tmp")
        self.state = os.path.join(self.tmp, "st")
        os.mkdir(self.state, 0o700)
        self.tokens = {"alice": secrets.token_hex(24), "bob": secrets.token_hex(24)}
        self.tokens_path = os.path.join(self.tmp, "tokens")
        fd = os.open(self.tokens_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            for tenant, tok in self.tokens.items():
                f.write("%s %s\n" % (tok, tenant))
        # The warm sandbox pool is off unless a test asks for it: with it on,
        # the container of a new sandbox is one that existed before the
        # create, and checks that find a sandbox's container by what
        # appeared around its create could not tell which it is.
        config = dict(config or {})
        config.setdefault("warm_sandboxes", 0)
        self.config_path = None
        if config:
            self.config_path = os.path.join(self.tmp, "sandboxd.conf")
            with open(self.config_path, "w") as f:
                for k, v in config.items():
                    f.write("%s = %s\n" % (k, v))
        self.proc = None
        self.port = None
        self.starts = 0
        self.logs = []
        self.cids = set()
        self.responses = []  # (req, status, body) of every error response
        self.cgroups_before = cgroup_snapshot()
        self.torn_down = False
        self.ever_started = False

    # ---- process control -------------------------------------------------

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15.0):
        """Start the broker and wait for its 'listening' line. True on
        success; on failure emits a TAP failure with the log."""
        self.starts += 1
        log_path = os.path.join(self.tmp, "%s.%d.log" % (self.name, self.starts))
        self.logs.append(log_path)
        cmd = [
            BIN,
            "--listen", "127.0.0.1:0",
            "--state-dir", self.state,
            "--tokens", self.tokens_path,
            "--image-dir", IMAGE_DIR,
            "--agent-path", os.path.abspath(AGENT),
            "--kernel-lib-dir", os.path.abspath(KERNEL_LIB),
        ]
        if self.config_path:
            cmd += ["--config", self.config_path]
        logf = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True
            )
        except OSError as e:
            logf.close()
            self.proc = None
            self.tap.ok(False, "%s starts" % self.name, "cannot run %s: %s" % (" ".join(cmd), e))
            return False
        logf.close()
        deadline = time.monotonic() + timeout
        self.port = None
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                m = LISTEN_RE.search(f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        t = time.monotonic() - (deadline - timeout)
        if self.port is None:
            self.tap.ok(
                False,
                "%s starts and prints its listening line (start %d)" % (self.name, self.starts),
                "command: %s\nexit status: %s (broker log below)" % (" ".join(cmd), self.proc.poll()),
            )
            if self.proc.poll() is None:
                self.kill9()
            return False
        self.ever_started = True
        self.tap.ok(True, "%s starts and listens on 127.0.0.1:%d in %.2f s" % (self.name, self.port, t))
        self.note_cids()
        return True

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL. True if it exited
        within timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        """Stop (if running) and start again on the same state dir."""
        self.stop()
        return self.start()

    def log_text(self):
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    out.append("==> %s <==\n%s" % (p, f.read().decode("utf-8", "replace")))
            except OSError:
                pass
        return "\n".join(out)

    def log_tail(self, lines=150):
        text = self.log_text().splitlines()
        if len(text) > lines:
            text = ["... (%d earlier log lines)" % (len(text) - lines)] + text[-lines:]
        return "broker log:\n" + "\n".join(text)

    # ---- HTTP ------------------------------------------------------------

    def _auth(self, tenant, token):
        if token is not None:
            return {"Authorization": "Bearer " + token}
        if tenant is not None:
            return {"Authorization": "Bearer " + self.tokens[tenant]}
        return {}

    def request(self, method, path, body=None, tenant="alice", token=None, headers=None, raw=None,
                timeout=60, conn=None):
        """One HTTP request; a Resp (status, headers, json body). body is
        sent as JSON; raw (bytes) is sent as is. conn: an existing
        http.client connection to reuse (keep-alive)."""
        h = self._auth(tenant, token)
        data = None
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "%s %s %s" % (method, path, (data or b"")[:300].decode("utf-8", "replace"))
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if own:
                conn.close()
        resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)
        self._record(resp)
        return resp

    def _record(self, resp):
        if resp.status >= 400:
            self.responses.append(resp)
        if resp.status == 201:
            self.note_cids()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def create(self, tenant="alice", **fields):
        """POST /v1/sandboxes with fields; the Resp gets .cid: the container
        id that appeared on the host for it (None if none or ambiguous)."""
        before = self.cids_now()
        r = self.post("/v1/sandboxes", fields, tenant=tenant)
        new = self.cids_now() - before
        r.cid = next(iter(new)) if len(new) == 1 else None
        return r

    def exec(self, sid, command, tenant="alice", timeout=90, **fields):
        body = {"command": command}
        body.update(fields)
        return self.post("/v1/sandboxes/%s/exec" % sid, body, tenant=tenant, timeout=timeout)

    def sse(self, path, body, tenant="alice", token=None, timeout=60):
        """POST with Accept: text/event-stream. Returns (Resp, stream):
        stream is an SSEStream when the answer is a 200 event stream (the
        Resp then has no body), else None and the Resp holds the answer."""
        h = self._auth(tenant, token)
        h["Accept"] = "text/event-stream"
        h["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "POST %s (SSE) %s" % (path, data[:300].decode("utf-8", "replace"))
        t0 = time.monotonic()
        conn.request("POST", path, body=data, headers=h)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.status == 200 and "text/event-stream" in hdrs.get("content-type", ""):
            return Resp(r.status, hdrs, None, b"", desc), SSEStream(conn, r, t0)
        payload = r.read()
        conn.close()
        resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)
        self._record(resp)
        return resp, None

    def raw_request(self, head, body_chunks, timeout=15):
        """Send raw HTTP (head: bytes up to and including the blank line,
        then each of body_chunks) and read the answer, tolerating the
        server closing the connection while the body is still being sent
        (as it may for an oversized body). Returns a Resp, or None when no
        answer could be read."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sent = 0
        try:
            try:
                s.sendall(head)
                for c in body_chunks:
                    s.sendall(c)
                    sent += len(c)
            except OSError:
                pass
            r = http.client.HTTPResponse(s)
            try:
                r.begin()
                payload = r.read()
            except (OSError, http.client.HTTPException):
                return None
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload,
                        "%s ... (%d body bytes sent)" % (head.split(b"\r\n")[0].decode(), sent))
            self._record(resp)
            return resp
        finally:
            s.close()

    def sse_get(self, path, tenant="alice", token=None, timeout=60, headers=None):
        """GET with Accept: text/event-stream (e.g. process logs ?follow=1).
        Returns (Resp, stream) as sse() does."""
        h = self._auth(tenant, token)
        h["Accept"] = "text/event-stream"
        if headers:
            h.update(headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "GET %s (SSE)" % path
        t0 = time.monotonic()
        conn.request("GET", path, headers=h)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.status == 200 and "text/event-stream" in hdrs.get("content-type", ""):
            return Resp(r.status, hdrs, None, b"", desc), SSEStream(conn, r, t0)
        payload = r.read()
        conn.close()
        resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)
        self._record(resp)
        return resp, None

    def put_stream(self, path, chunks, length=None, tenant="alice", token=None, headers=None, timeout=600):
        """PUT a body streamed from the iterable chunks (bytes), never held
        in memory as a whole: with length, sent with that Content-Length;
        without, with Transfer-Encoding: chunked. A Resp (.elapsed: the
        seconds from the first byte sent to the end of the answer)."""
        h = self._auth(tenant, token)
        h.setdefault("Content-Type", "application/octet-stream")
        if headers:
            h.update(headers)
        if length is not None:
            h["Content-Length"] = str(length)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "PUT %s (streamed body%s)" % (path, ", %d bytes" % length if length is not None else ", chunked")
        t0 = time.monotonic()
        try:
            conn.request("PUT", path, body=iter(chunks), headers=h, encode_chunked=length is None)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)
        self._record(resp)
        return resp

    def get_stream(self, path, sink=None, tenant="alice", token=None, headers=None, timeout=600,
                   chunk=1 << 20):
        """GET whose body is read chunk by chunk and handed to sink(bytes)
        (never held as a whole, unless the answer is an error, whose body
        is kept). A Resp; .nbytes is the number of body bytes read."""
        h = self._auth(tenant, token)
        if headers:
            h.update(headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "GET %s (streamed)" % path
        t0 = time.monotonic()
        n = 0
        payload = b""
        try:
            conn.request("GET", path, headers=h)
            r = conn.getresponse()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if r.status >= 300:
                payload = r.read()
                n = len(payload)
            else:
                while True:
                    b = r.read(chunk)
                    if not b:
                        break
                    n += len(b)
                    if sink is not None:
                        sink(b)
        finally:
            conn.close()
        resp = Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)
        resp.nbytes = n
        self._record(resp)
        return resp

    # ---- containers ------------------------------------------------------

    def cids_now(self):
        """Container ids currently on the host for this broker (sandbox dirs
        and runtime containers); also remembered for the leftovers check."""
        now = set(sandbox_dirs(self.state)) | set(runc_list(self.state))
        self.cids |= now
        return now

    note_cids = cids_now

    def container_gone(self, cid):
        """[] when nothing of container cid remains, else what does."""
        left = []
        if cid is None:
            return ["(container id unknown)"]
        st = runc_state(self.state, cid)
        if st is not None:
            left.append("runtime container %s (%s)" % (cid, st))
        d = os.path.join(self.state, "sandboxes", cid)
        left += ["mount " + m for m in mounts_under(d)]
        if os.path.lexists(d):
            left.append("directory " + d)
        left += ["cgroup " + c for c in cgroup_dirs(cid)]
        return left

    # ---- teardown --------------------------------------------------------

    def delete_all(self):
        """Delete every sandbox of every tenant through the API. Returns the
        list of failures (empty when all went)."""
        bad = []
        for tenant in self.tokens:
            r = self.get("/v1/sandboxes", tenant=tenant)
            if r.status != 200 or not isinstance(r.get("sandboxes"), list):
                bad.append("list for %s: %s" % (tenant, r))
                continue
            for sb in r.body["sandboxes"]:
                d = self.delete("/v1/sandboxes/%s" % sb.get("id"), tenant=tenant)
                if d.status != 200:
                    bad.append(str(d))
        return bad

    def teardown(self):
        """Delete all sandboxes, stop the broker, assert nothing was left
        behind and that every error answer had the documented shape; then
        force-clean whatever was left and remove the temp dir."""
        if self.torn_down:
            return
        self.torn_down = True
        t = self.tap
        self.note_cids()
        if self.alive() and self.port:
            try:
                bad = self.delete_all()
            except Exception:
                bad = [traceback.format_exc()]
            t.ok(not bad, "%s: every sandbox deletes through the API at the end" % self.name, "\n".join(bad))
            t.ok(self.alive(), "%s is still running at the end of the file" % self.name,
                 "exit status %s" % (self.proc and self.proc.poll()))
            exited = self.stop()
            t.ok(exited, "%s exits within 10 s of SIGTERM" % self.name)
            t.eq(self.proc.returncode, 0, "%s exits with status 0 (a sanitizer report would change it)"
                 % self.name)
        elif self.ever_started:
            t.ok(False, "%s is still running at the end of the file" % self.name,
                 "exit status %s" % self.proc.poll())
        # Built with --enable-asan, any AddressSanitizer, LeakSanitizer or
        # UBSan report in any of this broker's runs fails the file.
        reports = [line for line in self.log_text().splitlines()
                   if re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |SUMMARY: \w+Sanitizer", line)]
        t.ok(not reports, "%s: no sanitizer report in its logs" % self.name, "\n".join(reports[:20]))
        left = leftovers(self.state, self.cids, self.cgroups_before)
        for kind, what in [("containers", "runtime containers"), ("mounts", "mounts under the state dir"),
                           ("cgroups", "cgroup directories"), ("files", "sandbox directories")]:
            t.ok(not left[kind], "%s: no %s left behind" % (self.name, what), "\n".join(left[kind]))
        # HEAD answers have no body, and the compatibility surfaces answer
        # in the shapes of the services they imitate.
        bad_shape = [r for r in self.responses
                     if not r.req.startswith("HEAD ") and not (r.req.split(" ") + ["", ""])[1].startswith("/compat/")
                     and (not error_shape_ok(r.body)
                          or "application/json" not in r.headers.get("content-type", ""))]
        t.ok(not bad_shape, "%s: all %d error answers were JSON {\"error\":{\"code\",\"message\"}}"
             % (self.name, len(self.responses)), "\n\n".join(str(r) for r in bad_shape[:10]))
        internal = [r for r in self.responses if r.status == 500]
        t.ok(not internal, "%s: no 500 internal error during the run" % self.name,
             "\n\n".join(str(r) for r in internal[:10]))
        if t.failed:
            t.diag(self.log_tail(400))
        self.force_clean()

    def force_clean(self):
        """Remove whatever a failed run left so the host stays usable."""
        self.kill9()
        root = os.path.join(self.state, "runc")
        for cid in runc_list(self.state):
            subprocess.run([RUNTIME, "--root", root, "kill", cid, "KILL"], capture_output=True)
            subprocess.run([RUNTIME, "--root", root, "delete", "-f", cid], capture_output=True)
        for mp in sorted(mounts_under(self.tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
        for cid in self.cids:
            for d in cgroup_dirs(cid):
                for sub, _, _ in sorted(os.walk(d), key=lambda x: len(x[0]), reverse=True):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass
        if mounts_under(self.tmp):
            self.tap.diag("left %s in place: mounts remain under it" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if exc[0] is not None and exc[0] is not KeyboardInterrupt:
            self.tap.ok(False, "%s: test code raised" % self.name,
                        "".join(traceback.format_exception(*exc)))
        self.teardown()
        return exc[0] is not None and exc[0] is not KeyboardInterrupt


# --------------------------------------------------------------------------
# Running a test file
# --------------------------------------------------------------------------


def run_test(tap, fn, *args):
    """Run one test function; an exception becomes a failed TAP line."""
    try:
        fn(tap, *args)
    except Exception:
        tap.ok(False, "%s raised" % fn.__name__, traceback.format_exc())


def main(tests, config=None):
    """Skip unless ready, start a broker, run each test function
    fn(tap, broker), tear down, print the plan and exit."""
    require_ready()
    tap = Tap()
    b = Broker(tap, config=config)
    try:
        if b.start():
            for fn in tests:
                if not b.alive():
                    tap.ok(False, "broker is running before %s" % fn.__name__,
                           "exit status %s" % b.proc.poll())
                    break
                run_test(tap, fn, b)
    except KeyboardInterrupt:
        tap.ok(False, "interrupted")
    finally:
        b.teardown()
    tap.done()


def wait_until(pred, timeout, interval=0.1):
    """Poll pred() until it returns truthy or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def in_thread(fn, *args, **kw):
    """Start fn in a thread; returns a handle whose .join() gives (result,
    exception)."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kw)
        except BaseException as e:
            box["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()

    class Handle:
        thread = th

        def join(self, timeout=None):
            th.join(timeout)
            return box.get("result"), box.get("error")

        def done(self):
            return not th.is_alive()

    return Handle()


def rss_kib(pid):
    """VmRSS of process pid in KiB (None when it cannot be read)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class RssSampler:
    """Samples a process's VmRSS every interval seconds in a thread:
    start(), stop(); then .peak_kib and .samples (count)."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._th = None

    def _run(self):
        while True:
            v = rss_kib(self.pid)
            if v is not None:
                self.samples += 1
                self.peak_kib = max(self.peak_kib, v)
            if self._stop.wait(self.interval):
                break

    def start(self):
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()
        return self

    def stop(self):
        self._stop.set()
        if self._th is not None:
            self._th.join()
        return self.peak_kib


def read_text(path):
    """The text of a small file, or '' when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
