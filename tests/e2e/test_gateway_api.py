#!/usr/bin/env python3
"""test_gateway_api.py - the Jupyter gateway API (docs/api.md "Jupyter
gateway API", docs/jupyter.md) spoken to directly, as a Jupyter server in
gateway mode would: REST shapes, auth and tenant isolation, kernels in a
sandbox of their own or a named one, the channels websocket (JSON and
binary messages, stdin, dropped garbage, protocol violations with their
close codes), websockets that follow a restart and a dead kernel, close on
delete, and kernels that survive a broker restart.

The same API driven by the real jupyter-server and by the classic
notebook in Chromium is in test_gateway.py and test_gateway_ui.py."""

import base64
import json
import os
import socket
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

import websocket  # noqa: E402  (Debian python3-websocket, installed by bootstrap)

UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def jauth(b, tenant="alice", scheme="token"):
    return {"Authorization": "%s %s" % (scheme, b.tokens[tenant])}


def jreq(b, method, path, body=None, tenant="alice", scheme="token", timeout=120):
    return b.request(method, path, body=body, tenant=None, headers=jauth(b, tenant, scheme),
                     timeout=timeout)


def ws_url(b, kid):
    return b.url.replace("http://", "ws://", 1) + "/api/kernels/%s/channels" % kid


def connect(b, kid, tenant="alice"):
    return websocket.create_connection(
        ws_url(b, kid), header=["Authorization: token " + b.tokens[tenant]], timeout=60)


def msg(msg_type, content, channel="shell", parent=None):
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "sess-test",
                       "username": "tester", "version": "5.3", "date": ""},
            "parent_header": parent or {}, "metadata": {}, "content": content,
            "channel": channel}


def execute(ws, code, stdin=False, answer=None, timeout=60, binary_buffers=None):
    """Send an execute_request; collect replies for it until its
    execute_reply and iopub idle. Returns (reply content, [iopub msgs],
    [stdin msgs])."""
    m = msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": stdin,
                                "stop_on_error": True})
    if binary_buffers is None:
        ws.send(json.dumps(m))
    else:
        ws.send_binary(pack_binary(m, binary_buffers))
    mid = m["header"]["msg_id"]
    reply, iopub, stdin_msgs, idle = None, [], [], False
    deadline = time.monotonic() + timeout
    while not (reply is not None and idle):
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        raw = ws.recv()
        r = unpack_binary(raw) if isinstance(raw, bytes) else json.loads(raw)
        if r.get("parent_header", {}).get("msg_id") != mid:
            continue
        if r["channel"] == "shell" and r["msg_type"] == "execute_reply":
            reply = r["content"]
        elif r["channel"] == "iopub":
            iopub.append(r)
            if r["msg_type"] == "status" and r["content"].get("execution_state") == "idle":
                idle = True
        elif r["channel"] == "stdin":
            stdin_msgs.append(r)
            if r["msg_type"] == "input_request" and answer is not None:
                ws.send(json.dumps(msg("input_reply", {"value": answer}, "stdin",
                                       parent=r["header"])))
    return reply, iopub, stdin_msgs


def pack_binary(m, buffers):
    """Jupyter Server's binary websocket form."""
    parts = [json.dumps(m).encode()] + list(buffers)
    offsets, pos = [], 4 * (len(parts) + 1)
    for p in parts:
        offsets.append(pos)
        pos += len(p)
    return struct.pack("!%dI" % (len(parts) + 1), len(parts), *offsets) + b"".join(parts)


def unpack_binary(raw):
    n = struct.unpack("!I", raw[:4])[0]
    offs = list(struct.unpack("!%dI" % n, raw[4:4 + 4 * n])) + [len(raw)]
    m = json.loads(raw[offs[0]:offs[1]])
    m["buffers"] = [raw[offs[i]:offs[i + 1]] for i in range(1, n)]
    return m


def text_of(iopub, kind="execute_result"):
    for r in iopub:
        if r["msg_type"] == kind:
            return r["content"].get("data", {}).get("text/plain")
    return None


def stdout_of(iopub):
    return "".join(r["content"]["text"] for r in iopub
                   if r["msg_type"] == "stream" and r["content"]["name"] == "stdout")


def new_kernel(t, b, name="python3", **fields):
    body = {"name": name}
    body.update(fields)
    r = jreq(b, "POST", "/api/kernels", body)
    t.ok(r.status == 201 and isinstance(r.get("id"), str), "POST /api/kernels (%s): 201" % name, r)
    return r.get("id") if r.status == 201 else None


class RawWS:
    """A websocket client that can break the protocol on purpose."""

    def __init__(self, b, kid, tenant="alice"):
        host, port = b.url.split("//")[1].split(":")
        self.s = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /api/kernels/%s/channels HTTP/1.1\r\nHost: x\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
                        "Authorization: token %s\r\n\r\n" % (kid, key, b.tokens[tenant])).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            head += chunk
        self.head = head.decode("latin-1")
        self.rest = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""

    def send_frame(self, op, payload, masked=True, fin=True):
        h = bytes([(0x80 if fin else 0) | op])
        n, m = len(payload), 0x80 if masked else 0
        if n < 126:
            h += bytes([m | n])
        elif n < 65536:
            h += bytes([m | 126]) + struct.pack("!H", n)
        else:
            h += bytes([m | 127]) + struct.pack("!Q", n)
        if masked:
            k = os.urandom(4)
            h += k
            payload = bytes(c ^ k[i % 4] for i, c in enumerate(payload))
        self.s.sendall(h + payload)

    def close_code(self, timeout=10):
        """Read frames until a close frame; its code (None if the socket
        just closed)."""
        self.s.settimeout(timeout)
        buf = self.rest
        try:
            while True:
                while len(buf) >= 2:
                    n = buf[1] & 0x7F
                    hl = 2 if n < 126 else 4 if n == 126 else 10
                    if len(buf) < hl:
                        break
                    if n == 126:
                        n = struct.unpack("!H", buf[2:4])[0]
                    elif n == 127:
                        n = struct.unpack("!Q", buf[2:10])[0]
                    if len(buf) < hl + n:
                        break
                    op, payload = buf[0] & 0x0F, buf[hl:hl + n]
                    buf = buf[hl + n:]
                    if op == 0x8:
                        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                chunk = self.s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
        except socket.timeout:
            return "timeout"

    def close(self):
        self.s.close()


# --- tests ---------------------------------------------------------------------------------


def test_rest_shapes(t, b):
    r = jreq(b, "GET", "/api")
    t.ok(r.status == 200 and isinstance(r.get("version"), str), "GET /api: a version", r)
    r = jreq(b, "GET", "/api/kernelspecs")
    specs = r.get("kernelspecs") or {}
    t.ok(r.status == 200 and r.get("default") == "python3"
         and set(specs) == {"python3", "javascript", "typescript"},
         "GET /api/kernelspecs: python3 (default), javascript and typescript", r)
    langs = {k: v.get("spec", {}).get("language") for k, v in specs.items()}
    t.eq(langs, {"python3": "python", "javascript": "javascript", "typescript": "typescript"},
         "each spec names its language")
    t.ok(all(v.get("spec", {}).get("display_name") and v.get("name") == k
             for k, v in specs.items()), "and has a name and a display name", r)
    r = jreq(b, "GET", "/api/kernelspecs/typescript")
    t.ok(r.status == 200 and r.get("spec", {}).get("language") == "typescript",
         "GET /api/kernelspecs/typescript", r)
    r = jreq(b, "GET", "/api/kernelspecs/cobol")
    t.eq(r.status, 404, "an unknown kernelspec: 404", r)
    r = jreq(b, "GET", "/kernelspecs/python3/logo-64x64.png")
    t.eq(r.status, 404, "kernelspec resources: 404 (Jupyter falls back)", r)
    r = jreq(b, "GET", "/api/contents")
    t.eq(r.status, 404, "routes not served (contents): 404", r)
    r = jreq(b, "PUT", "/api/kernels")
    t.eq(r.status, 405, "PUT /api/kernels: 405", r)
    r = jreq(b, "GET", "/api/kernels/not-a-kernel-id")
    t.eq(r.status, 404, "a malformed kernel id: 404", r)
    r = jreq(b, "GET", "/api/kernels/%s" % uuid.uuid4())
    t.eq(r.status, 404, "an unknown kernel id: 404", r)


def test_auth(t, b):
    r = b.request("GET", "/api/kernels", tenant=None)
    t.eq(r.status, 401, "no token: 401", r)
    r = b.request("GET", "/api/kernels", tenant=None, headers={"Authorization": "token nope"})
    t.eq(r.status, 401, "a wrong token: 401", r)
    r = jreq(b, "GET", "/api/kernels", scheme="Bearer")
    t.eq(r.status, 200, "Bearer works as well as token", r)
    try:
        websocket.create_connection(ws_url(b, uuid.uuid4()), timeout=10)
        t.ok(False, "a websocket without a token is refused")
    except websocket.WebSocketBadStatusException as e:
        t.eq(e.status_code, 401, "a websocket without a token: 401 before any upgrade")


def test_kernel_lifecycle_and_isolation(t, b):
    kid = new_kernel(t, b)
    if not kid:
        return
    import re
    t.ok(re.match(UUID_RE, kid), "the kernel id is a UUID (Jupyter's routes require one)", kid)
    r = jreq(b, "GET", "/api/kernels/" + kid)
    t.ok(r.status == 200 and r.get("name") == "python3" and r.get("connections") == 0
         and r.get("execution_state") in ("idle", "starting")
         and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", r.get("last_activity", "")),
         "GET /api/kernels/{id}: the model with Jupyter's timestamp shape", r)
    sid = "gw-" + kid
    t.eq(r.get("sandbox_id"), sid, "in a sandbox of its own, gw-<id>")
    r = b.get("/v1/sandboxes/%s/contexts" % sid)
    t.ok(r.status == 200 and [c["id"] for c in r.get("contexts", [])] == [kid],
         "the native API shows the kernel as a context of that sandbox", r)
    r = b.post("/v1/sandboxes/%s/code" % sid, {"code": "gw_native = 41 + 1", "context_id": kid})
    t.eq(r.status, 200, "native runCode runs in the kernel's context", r)
    r = jreq(b, "GET", "/api/kernels")
    t.ok(r.status == 200 and kid in [k["id"] for k in r.body], "listed for its tenant", r)
    r = jreq(b, "GET", "/api/kernels", tenant="bob")
    t.ok(r.status == 200 and kid not in [k["id"] for k in r.body], "not listed for another", r)
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/interrupt"),
                         ("POST", "/restart")):
        r = jreq(b, method, "/api/kernels/%s%s" % (kid, path), tenant="bob")
        t.eq(r.status, 404, "bob: %s /api/kernels/<alice's>%s is 404" % (method, path), r)
    try:
        connect(b, kid, tenant="bob")
        t.ok(False, "bob cannot open alice's kernel's channels")
    except websocket.WebSocketBadStatusException as e:
        t.eq(e.status_code, 404, "bob: alice's kernel's channels websocket is 404")
    ws = connect(b, kid)
    reply, iopub, _ = execute(ws, "gw_native")
    t.eq(text_of(iopub), "42", "the websocket sees what native runCode left in the kernel")
    r = jreq(b, "GET", "/api/kernels/" + kid)
    t.eq(r.get("connections"), 1, "connections counts the open websocket", r)
    ws.close()
    t.ok(wait_until(lambda: jreq(b, "GET", "/api/kernels/" + kid).get("connections") == 0, 5),
         "and drops when the client goes away")
    r = jreq(b, "DELETE", "/api/kernels/" + kid)
    t.ok(r.status == 204 and not r.raw, "DELETE: 204, no body", r)
    t.eq(jreq(b, "GET", "/api/kernels/" + kid).status, 404, "the kernel is gone")
    t.eq(b.get("/v1/sandboxes/" + sid).status, 404, "and so is its own sandbox")


def test_create_errors_and_named_sandbox(t, b):
    r = jreq(b, "POST", "/api/kernels", {"name": "fortran"})
    t.ok(r.status == 404 and harness.names_field(r.err_message(), "name"),
         "an unknown kernel name: 404 naming 'name'", r)
    r = jreq(b, "POST", "/api/kernels", {"name": "python3", "env": "x"})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "env"),
         "env not an object: 400 naming 'env'", r)
    r = jreq(b, "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_SANDBOX_ID": "../x"}})
    t.ok(r.status == 400 and "KERNEL_SANDBOX_ID" in r.err_message(),
         "a malformed KERNEL_SANDBOX_ID: 400 naming it", r)
    r = jreq(b, "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_SANDBOX_ID": "nobox"}})
    t.eq(r.status, 404, "KERNEL_SANDBOX_ID of no sandbox: 404", r)
    r = b.request("POST", "/api/kernels", raw=b"{not json", tenant=None, headers=jauth(b))
    t.eq(r.status, 400, "a body that is not JSON: 400", r)

    r = b.create(id="gw-named")
    t.ok(r.status in (200, 201), "a sandbox created natively", r)
    r = jreq(b, "POST", "/api/kernels", {"name": "python3",
                                         "env": {"KERNEL_SANDBOX_ID": "gw-named",
                                                 "KERNEL_USERNAME": "ann"}})
    t.ok(r.status == 201 and r.get("sandbox_id") == "gw-named",
         "KERNEL_SANDBOX_ID puts the kernel in that sandbox", r)
    kid = r.get("id")
    if not kid:
        return
    r = jreq(b, "POST", "/api/kernels", {"name": "python3", "sandbox_id": "gw-named"}, tenant="bob")
    t.eq(r.status, 404, "bob cannot put a kernel into alice's sandbox", r)
    ws = connect(b, kid)
    reply, iopub, _ = execute(ws, "import os; open('/workspace/from-gw.txt','w').write('hi'); "
                                  "print(os.environ.get('KERNEL_USERNAME'))")
    t.eq(stdout_of(iopub), "ann\n", "the request's env reaches the kernel")
    r = b.get("/v1/sandboxes/gw-named/files/workspace/from-gw.txt")
    t.ok(r.status == 200 and r.raw == b"hi", "its files are the sandbox's (native files API)", r)
    ws.close()
    t.eq(jreq(b, "DELETE", "/api/kernels/" + kid).status, 204, "delete the kernel")
    r = b.get("/v1/sandboxes/gw-named")
    t.eq(r.status, 200, "a named sandbox stays when its kernel goes", r)
    r = b.get("/v1/sandboxes/gw-named/contexts")
    t.ok(kid not in [c["id"] for c in r.get("contexts", [])], "without the kernel's context", r)
    b.delete("/v1/sandboxes/gw-named")


def test_channels(t, b):
    kid = new_kernel(t, b)
    if not kid:
        return
    ws = connect(b, kid)
    ws.send(json.dumps(msg("kernel_info_request", {})))
    info = None
    while info is None:
        r = json.loads(ws.recv())
        if r["channel"] == "shell" and r["msg_type"] == "kernel_info_reply":
            info = r
    t.ok(info["content"].get("language_info", {}).get("name") == "python"
         and info["msg_id"] == info["header"]["msg_id"] and info["msg_type"] == "kernel_info_reply"
         and isinstance(info.get("buffers"), list),
         "kernel_info_request → kernel_info_reply with channel, msg_id, msg_type, buffers", info)

    reply, iopub, _ = execute(ws, "print('out'); 6*7")
    kinds = [r["msg_type"] for r in iopub]
    t.ok(reply.get("status") == "ok" and stdout_of(iopub) == "out\n" and text_of(iopub) == "42"
         and kinds[0] == "status" and "execute_input" in kinds,
         "execute: status, execute_input, stream and execute_result on iopub, reply on shell",
         kinds)
    reply, iopub, _ = execute(ws, "from IPython.display import HTML, display\n"
                                  "display(HTML('<b>bold</b>'))")
    d = [r for r in iopub if r["msg_type"] == "display_data"]
    t.ok(d and d[0]["content"]["data"].get("text/html") == "<b>bold</b>",
         "display_data carries the HTML bundle", iopub)
    reply, iopub, _ = execute(ws, "1/0")
    e = [r for r in iopub if r["msg_type"] == "error"]
    t.ok(reply.get("status") == "error" and e and e[0]["content"]["ename"] == "ZeroDivisionError"
         and e[0]["content"]["traceback"], "an error: error on iopub with a traceback", reply)

    # ipykernel aborts execute requests that reach it right after a failed
    # cell (until its queue is flushed); any Jupyter client sees that too.
    time.sleep(0.5)
    reply, iopub, stdin_msgs = execute(ws, "name = input('who? ')\nprint('hello', name)",
                                       stdin=True, answer="ada")
    t.ok(stdin_msgs and stdin_msgs[0]["msg_type"] == "input_request"
         and stdin_msgs[0]["content"].get("prompt") == "who? ",
         "input(): input_request arrives on the stdin channel", stdin_msgs)
    t.eq(stdout_of(iopub), "hello ada\n", "and the input_reply sent back answers it")

    reply, iopub, _ = execute(ws, "bufs_seen = 'binary ok'; bufs_seen", binary_buffers=[b"\x00\x01" * 10])
    t.eq(text_of(iopub), "'binary ok'", "a message in the binary form (with a buffer) is taken")

    # Garbage is dropped, the connection and the kernel carry on.
    for bad in ("not json", "[1,2]", json.dumps({"channel": "shell"}),
                json.dumps(dict(msg("execute_request", {"code": "gw_bad = 1"}), channel="iopub")),
                json.dumps(dict(msg("execute_request", {"code": "gw_bad = 1"}), channel="hb")),
                json.dumps(dict(msg("execute_request", {"code": "gw_bad = 1"}), content=[1]))):
        ws.send(bad)
    ws.send_binary(b"\x00\x00\x00\x09garbage")
    reply, iopub, _ = execute(ws, "'gw_bad' in globals()")
    t.eq(text_of(iopub), "False", "malformed messages and other channels are dropped, not run")
    ws.ping(b"hello")
    t.ok(ws.connected, "a ping is answered and the connection stays")

    # Protocol violations close the connection with the right code.
    raw = RawWS(b, kid)
    t.ok(raw.head.startswith("HTTP/1.1 101"), "a raw upgrade: 101", raw.head[:200])
    raw.send_frame(0x1, b'{"x":1}', masked=False)
    t.eq(raw.close_code(), 1002, "an unmasked client frame: close 1002")
    raw.close()
    raw = RawWS(b, kid)
    # Only the header: the limit is applied before any of the payload is read.
    raw.s.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 16 * 1024 * 1024 + 1) + os.urandom(4))
    t.eq(raw.close_code(timeout=30), 1009, "a message over 16 MiB: close 1009")
    raw.close()
    raw = RawWS(b, kid)
    raw.send_frame(0x8, struct.pack("!H", 1000))
    t.eq(raw.close_code(), 1000, "a client's close is answered with a close")
    raw.close()
    r = b.request("GET", "/api/kernels/%s/channels" % kid, tenant=None, headers=jauth(b))
    t.ok(r.status == 400 and r.err_code() == "upgrade_required",
         "the channels path without Upgrade: 400 upgrade_required", r)

    reply, iopub, _ = execute(ws, "'still here'")
    t.eq(text_of(iopub), "'still here'", "the first websocket is unaffected by the others")
    ws.close()
    jreq(b, "DELETE", "/api/kernels/" + kid)


def test_follow_restart_death_delete(t, b):
    kid = new_kernel(t, b)
    if not kid:
        return
    ws = connect(b, kid)
    execute(ws, "before_restart = 1")
    r = jreq(b, "POST", "/api/kernels/%s/restart" % kid, {})
    t.ok(r.status == 200 and r.get("id") == kid, "POST restart: 200 with the model", r)
    reply, iopub, _ = execute(ws, "'before_restart' in globals()")
    t.eq(text_of(iopub), "False", "the open websocket follows the restarted kernel (state gone)")

    m = msg("execute_request", {"code": "import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
                                "silent": False, "allow_stdin": False, "stop_on_error": True})
    ws.send(json.dumps(m))
    mid = m["header"]["msg_id"]

    def next_of_cell(deadline):
        while time.monotonic() < deadline:
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                x = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                return None
            if x.get("parent_header", {}).get("msg_id") == mid:
                return x
        return None
    # The cell is running once its first output arrives (ipykernel ignores
    # SIGINT until its handler for the request is entered).
    running = False
    deadline = time.monotonic() + 20
    while not running:
        x = next_of_cell(deadline)
        if x is None:
            break
        running = x["msg_type"] == "stream"
    t.ok(running, "a long cell prints that it started")
    t.eq(jreq(b, "GET", "/api/kernels/" + kid).get("execution_state"), "busy",
         "execution_state is busy while a cell runs")
    got = None
    for attempt in range(2):  # as a user would, interrupt again if the first was missed
        r = jreq(b, "POST", "/api/kernels/%s/interrupt" % kid, {})
        if attempt == 0:
            t.ok(r.status == 204 and not r.raw, "POST interrupt: 204", r)
        deadline = time.monotonic() + 10
        while got is None:
            x = next_of_cell(deadline)
            if x is None:
                break
            # ipykernel reports an interrupt that lands in its own code
            # around the user's (e.g. a stream flush) only in the reply.
            if x["msg_type"] in ("error", "execute_reply") and x["content"].get("ename"):
                got = x["content"]["ename"]
        if got:
            break
    t.eq(got, "KeyboardInterrupt", "the interrupted cell ends with KeyboardInterrupt")
    t.ok(wait_until(lambda: jreq(b, "GET", "/api/kernels/" + kid).get("execution_state") == "idle", 10),
         "and the kernel is idle again")

    # A kernel that dies is started again; the websocket follows it.
    ws.send(json.dumps(msg("execute_request", {"code": "import os; os._exit(1)", "silent": False})))
    states = []
    deadline = time.monotonic() + 30
    try:
        while "starting" not in states and time.monotonic() < deadline:
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            x = json.loads(ws.recv())
            if x["channel"] == "iopub" and x["msg_type"] == "status" and not x["parent_header"]:
                states.append(x["content"]["execution_state"])
    except Exception:
        pass
    t.eq(states, ["restarting", "starting"],
         "a kernel that died: the websocket says restarting, then starting (as Jupyter's restarter)")

    def answered():
        try:
            reply, iopub, _ = execute(ws, "'alive again'", timeout=5)
            return text_of(iopub) == "'alive again'"
        except Exception:
            return False
    t.ok(wait_until(answered, 60, interval=0.5),
         "after the kernel died, the same websocket reaches a fresh kernel")

    r = jreq(b, "DELETE", "/api/kernels/" + kid)
    t.eq(r.status, 204, "delete the kernel with its websocket open")
    try:
        ws.settimeout(10)
        while True:
            ws.recv()
    except websocket.WebSocketConnectionClosedException:
        closed = True
    except Exception as e:
        closed = "closed" in str(e).lower() or isinstance(e, OSError)
    t.ok(closed, "the open websocket is closed when its kernel is deleted")


def test_broker_restart(t, b):
    kid = new_kernel(t, b)
    if not kid:
        return
    ws = connect(b, kid)
    execute(ws, "kept = 'across restarts'")
    t0 = time.monotonic()
    b.restart()
    took = time.monotonic() - t0
    t.ok(took < 15, "the broker stops promptly with a websocket open (%.1f s)" % took)
    r = jreq(b, "GET", "/api/kernels")
    t.ok(r.status == 200 and kid in [k["id"] for k in r.body],
         "after a broker restart the kernel is still listed", r)
    ws2 = connect(b, kid)
    reply, iopub, _ = execute(ws2, "kept")
    t.eq(text_of(iopub), "'across restarts'", "and keeps its state")
    ws2.close()
    t.eq(jreq(b, "DELETE", "/api/kernels/" + kid).status, 204, "and can be deleted")
    t.eq(b.get("/v1/sandboxes/gw-" + kid).status, 404, "with its sandbox")


def test_typescript(t, b):
    kid = new_kernel(t, b, "typescript")
    if not kid:
        return
    ws = connect(b, kid)
    reply, iopub, _ = execute(ws, "const a: number = 40; console.log('ts'); a + 2", timeout=90)
    t.eq(stdout_of(iopub), "ts\n42\n",
         "a TypeScript kernel runs typed code (TSLab prints the value after console.log's line)")
    ws.close()
    r = b.get("/v1/sandboxes/gw-%s/contexts" % kid)
    t.eq([c.get("language") for c in r.get("contexts", [])], ["typescript"],
         "its context's language is typescript")
    jreq(b, "DELETE", "/api/kernels/" + kid)


if __name__ == "__main__":
    harness.main([test_rest_shapes, test_auth, test_kernel_lifecycle_and_isolation,
                  test_create_errors_and_named_sandbox, test_channels,
                  test_follow_restart_death_delete, test_broker_restart, test_typescript])
