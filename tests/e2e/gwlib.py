"""gwlib.py - driving the real Jupyter front ends against the broker's
kernel gateway API (/api/kernelspecs, /api/kernels, the channels
websocket), for tests/e2e/test_gateway.py and test_gateway_ui.py.

  JupyterProc     Debian's jupyter-server (1.23) or the classic notebook
                  (6.4) as a process group of its own, on a free port of
                  127.0.0.1, with its own token and temporary config, data,
                  runtime, root and home directories (nothing of the
                  host's Jupyter set-up leaks in); --gateway-url when given.
  KernelChannel   a Jupyter kernel websocket (the JSON text protocol that
                  both jupyter-server and the gateway speak): execute
                  requests and the messages they produce, input replies.
  Chromium        headless Chromium over the Chrome DevTools Protocol.

Python 3 standard library plus the websocket-client module (Debian's
python3-websocket, installed by bootstrap).
"""

import base64
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
import zlib
from datetime import datetime, timezone

from harness import Resp, _parse_body

try:
    import websocket
    if importlib.util.find_spec("nbformat") is None:  # test_gateway_ui.py writes its notebook with it
        raise ImportError("No module named 'nbformat'")
except ImportError as _e:
    # Not a reason to skip: bootstrap installs Debian's python3-websocket
    # and python3-nbformat, and the tests run under /usr/bin/python3.
    print("not ok 1 - the gateway tests need websocket-client and nbformat: %s" % _e)
    print("# python: %s; configure with PYTHON=/usr/bin/python3 after ./bootstrap" % sys.executable)
    print("1..1")
    sys.exit(1)

JUPYTER_SERVER = "/usr/bin/jupyter-server"
JUPYTER_NOTEBOOK = "/usr/bin/jupyter-notebook"
CHROMIUM = "/usr/bin/chromium"
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kill_group(proc, grace=10.0):
    """SIGTERM the process group of proc (started with
    start_new_session=True), SIGKILL it after grace seconds. True when the
    leader exited within grace."""
    if proc is None:
        return True
    clean = True
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        clean = False
    # Whatever the leader left in its group (kernels, renderers) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()
    return clean


def group_alive(pgid):
    """Pids still in process group pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state, [2] the process group.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


def png_size(data):
    """(width, height) of a PNG, or None when data is not a well-formed
    PNG (signature, IHDR first, every chunk's CRC right, IEND last)."""
    if not data.startswith(PNG_SIG):
        return None
    pos, size, first, last = 8, None, True, None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc = data[pos + 8 + n:pos + 12 + n]
        if len(body) != n or len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            return None
        if first:
            if kind != b"IHDR" or n != 13:
                return None
            size = struct.unpack(">II", body[:8])
            first = False
        last = kind
        pos += 12 + n
    return size if last == b"IEND" and pos == len(data) else None


# --------------------------------------------------------------------------
# Jupyter server processes
# --------------------------------------------------------------------------


class JupyterProc:
    """jupyter-server (kind 'server') or the classic notebook (kind
    'notebook') in a process group of its own.

    gateway_url/auth_token: --gateway-url and --GatewayClient.auth_token
    (None: local kernels). env: extra environment variables (e.g.
    KERNEL_SANDBOX_ID)."""

    def __init__(self, tap, kind="server", gateway_url=None, auth_token=None, env=None, name=None):
        self.tap = tap
        self.kind = kind
        self.name = name or "jupyter-" + kind
        self.gateway_url = gateway_url
        self.auth_token = auth_token
        self.extra_env = dict(env or {})
        self.token = uuid.uuid4().hex
        self.tmp = tempfile.mkdtemp(prefix="sbxjup-", dir="/tmp")
        self.root = os.path.join(self.tmp, "root")
        self.home = os.path.join(self.tmp, "home")
        for d in (self.root, self.home, os.path.join(self.tmp, "config"), os.path.join(self.tmp, "data"),
                  os.path.join(self.tmp, "runtime")):
            os.mkdir(d, 0o700)
        self.log_path = os.path.join(self.tmp, "jupyter.log")
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def env(self):
        # A clean environment: no KERNEL_* or JUPYTER_* of the caller's,
        # the Debian python first on PATH (a local kernel's argv is
        # "python3"), and a home of its own.
        e = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "JUPYTER_CONFIG_DIR": os.path.join(self.tmp, "config"),
            "JUPYTER_DATA_DIR": os.path.join(self.tmp, "data"),
            "JUPYTER_RUNTIME_DIR": os.path.join(self.tmp, "runtime"),
            "IPYTHONDIR": os.path.join(self.home, ".ipython"),
            "MPLCONFIGDIR": os.path.join(self.home, ".mpl"),
            "JUPYTER_PLATFORM_DIRS": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        e.update(self.extra_env)
        return e

    def command(self):
        app = "ServerApp" if self.kind == "server" else "NotebookApp"
        cmd = [JUPYTER_SERVER if self.kind == "server" else JUPYTER_NOTEBOOK,
               "--no-browser", "--allow-root", "--ip=127.0.0.1", "--port=%d" % self.port,
               "--port-retries=0", "--%s.token=%s" % (app, self.token),
               "--%s.password=" % app, "--%s.open_browser=False" % app]
        if self.kind == "server":
            cmd.append("--ServerApp.root_dir=%s" % self.root)
        else:
            cmd.append("--NotebookApp.notebook_dir=%s" % self.root)
        if self.gateway_url:
            cmd.append("--gateway-url=%s" % self.gateway_url)
            # A gateway kernel's start is a sandbox create: give it time.
            cmd.append("--GatewayClient.request_timeout=120")
            cmd.append("--GatewayClient.connect_timeout=60")
        if self.auth_token:
            cmd.append("--GatewayClient.auth_token=%s" % self.auth_token)
        return cmd

    def start(self, timeout=90.0):
        """Start and wait until GET /api answers 200. True on success; on
        failure a failed TAP line with the log."""
        for attempt in range(3):
            self.port = free_port()
            cmd = self.command()
            logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.root,
                                         env=self.env(), start_new_session=True)
            logf.close()
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout and self.proc.poll() is None:
                try:
                    # /api answers without asking the gateway (/api/status
                    # lists kernels, so a refused token would fail it).
                    r = self.request("GET", "/api", timeout=5)
                    if r.status == 200:
                        self.tap.ok(True, "%s starts on 127.0.0.1:%d in %.1f s" % (self.name, self.port,
                                                                                     time.monotonic() - t0))
                        return True
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(0.3)
            # Lost the port to someone else between free_port() and the
            # bind: try another one.
            if self.proc.poll() is not None and "already in use" in self.log_text():
                continue
            break
        self.tap.ok(False, "%s starts" % self.name,
                    "command: %s\nexit status: %s\n%s" % (" ".join(cmd), self.proc.poll(), self.log_tail()))
        return False

    def stop(self):
        """Stop the whole process group and remove the temp dir. True when
        it exited on SIGTERM and nothing of the group is left."""
        clean = True
        if self.proc is not None:
            clean = kill_group(self.proc)
            clean = clean and not group_alive(self.proc.pid)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return clean

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=80):
        text = self.log_text().splitlines()
        return "%s log:\n%s" % (self.name, "\n".join(text[-lines:]))

    def request(self, method, path, body=None, timeout=120):
        """One request to the server's REST API with its token; a Resp."""
        h = {"Authorization": "token " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        desc = "%s %s%s %s" % (method, self.url, path, (data or b"")[:300].decode("utf-8", "replace"))
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        return Resp(r.status, hdrs, _parse_body(hdrs, payload), payload, desc, time.monotonic() - t0)

    def channels(self, kernel_id, timeout=60):
        """A KernelChannel on the server's /api/kernels/{id}/channels."""
        url = "ws://127.0.0.1:%d/api/kernels/%s/channels?session_id=%s" % (self.port, kernel_id, uuid.uuid4().hex)
        return KernelChannel(url, {"Authorization": "token " + self.token}, timeout)


# --------------------------------------------------------------------------
# The kernel websocket
# --------------------------------------------------------------------------


class Reply:
    """What one execute request produced: msgs (every message whose parent
    is the request, in order), reply (the execute_reply content), and
    helpers to pick outputs."""

    def __init__(self, msg_id):
        self.msg_id = msg_id
        self.msgs = []
        self.reply = None
        self.idle = False
        self.input_requests = []

    def of(self, msg_type):
        return [m["content"] for m in self.msgs if m.get("msg_type") == msg_type
                or m.get("header", {}).get("msg_type") == msg_type]

    def stdout(self):
        return "".join(c.get("text", "") for c in self.of("stream") if c.get("name") == "stdout")

    def result_text(self):
        r = self.of("execute_result")
        return r[0].get("data", {}).get("text/plain") if len(r) == 1 else None

    def error(self):
        """The iopub error, else the reply's (ipykernel reports an interrupt
        that lands in its own code around the user's only in the reply)."""
        e = self.of("error")
        if e:
            return e[0]
        if isinstance(self.reply, dict) and self.reply.get("status") == "error":
            return self.reply
        return None

    def summary(self):
        out = []
        for m in self.msgs:
            c = json.dumps(m.get("content"))
            out.append("%s/%s %s" % (m.get("channel"), m.get("header", {}).get("msg_type"),
                                     c if len(c) < 300 else c[:300] + "..."))
        out.append("execute_reply: %s" % json.dumps(self.reply)[:300])
        return "\n".join(out)

    def __str__(self):
        return self.summary()


class KernelChannel:
    """A Jupyter kernel websocket carrying JSON text messages."""

    def __init__(self, url, headers, timeout=60):
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(url, header=["%s: %s" % kv for kv in headers.items()],
                                              timeout=timeout)
        self.pending = []

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass

    def send(self, channel, msg_type, content, metadata=None):
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": msg_type,
                       "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")},
            "parent_header": {},
            "metadata": metadata or {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        self.ws.send(json.dumps(msg))
        return msg_id

    def recv(self, deadline):
        """The next message (a dict), or None when deadline (monotonic)
        passed."""
        if self.pending:
            return self.pending.pop(0)
        # Frame by frame, control frames included: websocket-client's
        # recv() answers a ping and waits again with the full timeout, so
        # a peer that pings more often than that would keep it forever.
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.ws.settimeout(left)
            try:
                op, frame = self.ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                return None
            if op == websocket.ABNF.OPCODE_TEXT:
                return json.loads(frame.data.decode("utf-8"))
            if op == websocket.ABNF.OPCODE_BINARY:
                # Binary frames carry buffers; not used by these tests.
                return {"channel": "?", "header": {"msg_type": "binary"}, "parent_header": {}, "content": {}}
            if op == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("closed by the peer")

    def request(self, channel, msg_type, content, reply_type, timeout=60):
        """Send a request and wait for the reply of reply_type whose parent
        it is; the reply message or None."""
        mid = self.send(channel, msg_type, content)
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(deadline)
            if m is None:
                return None
            if m.get("parent_header", {}).get("msg_id") == mid and m.get("header", {}).get("msg_type") == reply_type:
                return m

    def wait_ready(self, timeout=90):
        """kernel_info until answered: True once the kernel replies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("shell", "kernel_info_request", {}, "kernel_info_reply", timeout=5) is not None:
                return True
        return False

    def start_execute(self, code, allow_stdin=False, silent=False):
        return self.send("shell", "execute_request", {
            "code": code, "silent": silent, "store_history": True, "user_expressions": {},
            "allow_stdin": allow_stdin, "stop_on_error": True})

    def collect(self, msg_id, timeout=60, on_input=None, on_busy=None):
        """Messages of execute request msg_id until both its execute_reply
        and its idle status arrived (or timeout). on_input(prompt) gives
        the value of an input_reply; on_busy() runs once the kernel said
        it is busy with the request."""
        rep = Reply(msg_id)
        deadline = time.monotonic() + timeout
        while not (rep.reply is not None and rep.idle):
            m = self.recv(deadline)
            if m is None:
                break
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            mt = m.get("header", {}).get("msg_type")
            m["msg_type"] = mt
            rep.msgs.append(m)
            if mt == "execute_reply":
                rep.reply = m.get("content")
            elif mt == "status":
                state = m.get("content", {}).get("execution_state")
                if state == "idle":
                    rep.idle = True
                elif state == "busy" and on_busy is not None:
                    fn, on_busy = on_busy, None
                    fn()
            elif mt == "input_request":
                rep.input_requests.append(m.get("content"))
                if on_input is not None:
                    value = on_input(m.get("content", {}).get("prompt"))
                    self.send("stdin", "input_reply", {"value": value})
        return rep

    def execute(self, code, timeout=60, allow_stdin=False, on_input=None, on_busy=None):
        mid = self.start_execute(code, allow_stdin=allow_stdin)
        return self.collect(mid, timeout=timeout, on_input=on_input, on_busy=on_busy)


# --------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol
# --------------------------------------------------------------------------


# Chromium's helper processes outlive its main one by a moment; orphans go
# to the nearest subreaper, and where that is a pid 1 that reaps nothing
# they stay zombies. So Chromium runs under this: a subreaper that ignores
# SIGTERM (its process group's SIGTERM is for Chromium), reaps every
# descendant, and exits with Chromium's status once none is left.
REAPER = r"""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(sys.argv[1], sys.argv[1:])
status = 0
while True:
    try:
        p, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if p == pid:
        status = os.waitstatus_to_exitcode(st)
sys.exit(status if status >= 0 else 128 - status)
"""


class CDPError(Exception):
    pass


class Chromium:
    """Headless Chromium in a process group of its own, with a throwaway
    profile; one page target driven over its DevTools websocket."""

    def __init__(self, tap, width=1280, height=900):
        self.tap = tap
        self.width = width
        self.height = height
        self.tmp = tempfile.mkdtemp(prefix="sbxchr-", dir="/tmp")
        self.profile = os.path.join(self.tmp, "profile")
        os.mkdir(self.profile)
        self.log_path = os.path.join(self.tmp, "chromium.log")
        self.proc = None
        self.ws = None
        self.next_id = 0
        self.events = []

    def start(self, timeout=60.0):
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
               "--user-data-dir=" + self.profile, "--window-size=%d,%d" % (self.width, self.height),
               "about:blank"]
        env = {"PATH": "/usr/bin:/bin", "HOME": self.tmp, "LANG": "C.UTF-8"}
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", REAPER] + cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, env=env, start_new_session=True)
        logf.close()
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        t0 = time.monotonic()
        port = None
        while time.monotonic() - t0 < timeout and self.proc.poll() is None:
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit():
                    port = int(lines[0])
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if port is None:
            self.tap.ok(False, "chromium starts and writes DevToolsActivePort",
                        "command: %s\nexit status %s\n%s" % (" ".join(cmd), self.proc.poll(), self.log_tail()))
            return False
        self.port = port
        page = None
        while time.monotonic() - t0 < timeout and page is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
                page = next((x for x in targets if x.get("type") == "page"), None)
            except (OSError, ValueError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if page is None:
                time.sleep(0.2)
        if page is None:
            self.tap.ok(False, "chromium shows a page target on DevTools port %d" % port, self.log_tail())
            return False
        # No Origin header: DevTools refuses websocket origins it was not
        # told to allow.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.tap.ok(True, "chromium %s starts headless; DevTools on 127.0.0.1:%d in %.1f s"
                    % (self.version(), port, time.monotonic() - t0))
        return True

    def version(self):
        try:
            return self.call("Browser.getVersion").get("product", "?")
        except Exception:
            return "?"

    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("%s: no answer in %d s" % (method, timeout))
            self.ws.settimeout(left)
            try:
                m = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                raise CDPError("%s: no answer in %d s" % (method, timeout))
            if m.get("id") == mid:
                if "error" in m:
                    raise CDPError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)
                del self.events[:-500]

    def evaluate(self, expr, timeout=60):
        """The value of a JavaScript expression in the page (awaited when a
        promise); raises CDPError on an exception."""
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                      timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError("%s: %s" % (expr[:200], d.get("exception", {}).get("description") or d.get("text")))
        return r.get("result", {}).get("value")

    def wait_js(self, expr, timeout, interval=0.25):
        """Poll a JavaScript expression until truthy; its last value
        (exceptions count as false)."""
        deadline = time.monotonic() + timeout
        v = None
        while True:
            try:
                v = self.evaluate(expr, timeout=max(5, deadline - time.monotonic()))
            except CDPError as e:
                v = None
                self.last_error = str(e)
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(interval)

    def navigate(self, url):
        return self.call("Page.navigate", {"url": url})

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, timeout=60)["data"])

    def console(self):
        """Console and exception events seen so far, as text lines."""
        out = []
        for e in self.events:
            if e.get("method") == "Runtime.consoleAPICalled":
                out.append("console.%s: %s" % (e["params"].get("type"), " ".join(
                    str(a.get("value", a.get("description", ""))) for a in e["params"].get("args", []))))
            elif e.get("method") == "Runtime.exceptionThrown":
                d = e["params"].get("exceptionDetails", {})
                out.append("exception: %s" % (d.get("exception", {}).get("description") or d.get("text")))
        return out

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            text = []
        return "chromium log:\n" + "\n".join(text[-lines:])

    def stop(self):
        """Close the browser, kill its process group, remove the profile.
        True when nothing of the group is left."""
        if self.ws is not None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:
                pass
            try:
                self.ws.close()
            except Exception:
                pass
        clean = True
        if self.proc is not None:
            kill_group(self.proc, grace=10)
            clean = not group_alive(self.proc.pid)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return clean


def broker_ws(b, path, tenant="alice", token=None, scheme="token", timeout=30):
    """A websocket straight to the broker; raises
    websocket.WebSocketBadStatusException when the upgrade is refused."""
    headers = []
    tok = token if token is not None else (b.tokens[tenant] if tenant else None)
    if tok is not None:
        headers.append("Authorization: %s %s" % (scheme, tok))
    return websocket.create_connection("ws://127.0.0.1:%d%s" % (b.port, path), header=headers, timeout=timeout)


def quote(s):
    return urllib.parse.quote(s, safe="")
