#!/usr/bin/env python3
"""test_gateway.py - the broker as a Jupyter kernel gateway: Debian's real
jupyter-server (1.23), started with --gateway-url pointing at the broker,
runs its kernels in sandboxd.

Everything a Jupyter front end does goes through that server's own REST
API and kernel websocket: kernelspecs, a Python kernel (print, HTML and
matplotlib displays, results, errors, input(), interrupt, restart, death),
a TypeScript kernel, delete. What the broker must make of it is checked on
its native API: each kernel is a code context in a sandbox of the tenant
whose token the server holds (gw-<kernel id>, or the sandbox named by the
server's KERNEL_SANDBOX_ID, with the server's other KERNEL_* variables in
the kernel's environment), invisible to another tenant; a server with a
wrong token gets 401s. Then the gateway API straight on the broker:
websocket authentication before the upgrade, malformed, fragmented,
unmasked and oversized frames, two clients on one kernel, a broker
restart, refused creates, and the culling of idle kernels (a second broker
with a 3 s idle timeout checked every second).

The contract is the lead's gateway description (issue 9) and the Jupyter
Server REST and websocket API that jupyter_server.gateway speaks."""

import base64
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import gwlib  # noqa: E402
import websocket  # noqa: E402
from harness import wait_until  # noqa: E402

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JUPYTER_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# The broker refuses websocket messages larger than this (GATEWAY_MAX_MESSAGE).
MAX_MESSAGE = 16 << 20
SHARED_SB = "jupyter-shared-box"


class State:
    server = None  # the jupyter-server on the gateway, alice's token
    kid = None  # its Python kernel
    ch = None  # the channels websocket of that kernel, through the server
    started = False


S = State()


def ctx_ids(b, sid, tenant="alice"):
    r = b.get("/v1/sandboxes/%s/contexts" % sid, tenant=tenant)
    cs = r.get("contexts") if isinstance(r.get("contexts"), list) else []
    return [c.get("id") for c in cs if isinstance(c, dict)], r


def kernel_ids(resp):
    return [k.get("id") for k in resp.body if isinstance(k, dict)] if isinstance(resp.body, list) else []


def plain(tb):
    return ANSI_RE.sub("", "\n".join(tb)) if isinstance(tb, list) else ""


def new_kernel(t, srv, name, what):
    r = srv.request("POST", "/api/kernels", {"name": name})
    ok = t.ok(r.status == 201 and isinstance(r.get("id"), str) and UUID_RE.match(r.get("id") or ""),
              "POST /api/kernels {name: %s} through jupyter-server answers 201 with a uuid kernel id (%s)"
              % (name, what), "%s\n%s" % (r, srv.log_tail(30)))
    return r.get("id") if ok else None


def open_channels(t, srv, kid, what):
    try:
        ch = srv.channels(kid)
    except Exception as e:
        t.ok(False, "open the channels websocket of the %s kernel through jupyter-server" % what,
             "%r\n%s" % (e, srv.log_tail(30)))
        return None
    ready = ch.wait_ready(90)
    t.ok(ready, "the %s kernel answers kernel_info over jupyter-server's websocket" % what, srv.log_tail(30))
    if not ready:
        ch.close()
        return None
    return ch


def after_error():
    """IPython aborts (execute_reply "aborted", nothing run) a request that
    reaches it in the moment after a failed cell, before it leaves the
    stop_on_error state (ipykernel 6 _abort_queues; seen through
    jupyter-server). A user never types that fast; tests that are not
    about it wait this long after an error."""
    time.sleep(0.5)


def ws_close_code(ws, timeout):
    """Read until the peer closes ws: its close code (0 when closed without
    a close frame), or None when it is still open after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            op, frame = ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError):
            return 0
        if op == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
    return None


def direct_channels(b, kid, tenant="alice"):
    ws = gwlib.broker_ws(b, "/api/kernels/%s/channels" % kid, tenant=tenant)
    ch = gwlib.KernelChannel.__new__(gwlib.KernelChannel)
    ch.session = "direct-" + kid[:8]
    ch.ws = ws
    ch.pending = []
    return ch


# --------------------------------------------------------------------------
# Through jupyter-server
# --------------------------------------------------------------------------


def test_server(t, b):
    srv = gwlib.JupyterProc(t, "server", gateway_url=b.url, auth_token=b.tokens["alice"])
    S.server = srv
    S.started = srv.start()
    if not S.started:
        raise RuntimeError("jupyter-server did not start; the rest of the file needs it")
    r = b.get("/api")
    t.ok(r.status == 200 and isinstance(r.get("version"), str), "GET /api on the broker answers {version}", r)


def test_kernelspecs(t, b):
    srv = S.server
    r = srv.request("GET", "/api/kernelspecs")
    specs = r.get("kernelspecs") if isinstance(r.get("kernelspecs"), dict) else {}
    t.ok(r.status == 200 and {"python3", "javascript", "typescript"} <= set(specs),
         "jupyter-server's GET /api/kernelspecs lists the gateway's python3, javascript and typescript", r)
    t.eq(r.get("default"), "python3", "the default kernelspec is python3", r)
    langs = {n: (s.get("spec") or {}).get("language") for n, s in specs.items() if isinstance(s, dict)}
    t.eq((langs.get("python3"), langs.get("javascript"), langs.get("typescript")),
         ("python", "javascript", "typescript"), "each spec names its language", r)
    t.ok(all(isinstance((s.get("spec") or {}).get("display_name"), str) for s in specs.values()
             if isinstance(s, dict)), "each spec has a display_name", r)
    r = srv.request("GET", "/api/kernelspecs/typescript")
    t.ok(r.status == 200 and (r.get("spec") or {}).get("language") == "typescript",
         "jupyter-server's GET /api/kernelspecs/typescript answers the gateway's spec", r)
    # The broker itself, with both header schemes a client may send.
    for scheme in ("token", "Bearer"):
        r = b.get("/api/kernelspecs", tenant=None,
                  headers={"Authorization": "%s %s" % (scheme, b.tokens["alice"])})
        t.ok(r.status == 200 and "python3" in (r.get("kernelspecs") or {}),
             "the broker's GET /api/kernelspecs accepts 'Authorization: %s <token>'" % scheme, r)
    r = b.get("/api/kernelspecs", tenant=None)
    t.eq(r.status, 401, "the broker's GET /api/kernelspecs without a token answers 401", r)


def test_python_kernel(t, b):
    srv = S.server
    kid = new_kernel(t, srv, "python3", "Python")
    if not kid:
        return
    S.kid = kid
    r = srv.request("GET", "/api/kernels/%s" % kid)
    t.ok(r.status == 200 and r.get("name") == "python3" and JUPYTER_TIME_RE.match(r.get("last_activity") or ""),
         "the kernel model has name python3 and a Jupyter last_activity timestamp", r)
    r = srv.request("GET", "/api/kernels")
    t.ok(kid in kernel_ids(r), "jupyter-server's GET /api/kernels lists the kernel", r)
    ch = open_channels(t, srv, kid, "Python")
    if not ch:
        return
    S.ch = ch
    rep = ch.execute("print('hello from', 'sandboxd')")
    t.eq(rep.stdout(), "hello from sandboxd\n", "print() arrives as a stdout stream message", rep)
    t.eq((rep.reply or {}).get("status"), "ok", "... and the execute_reply says ok", rep)
    rep = ch.execute("1+1")
    t.eq(rep.result_text(), "2", "`1+1` gives an execute_result with text/plain '2'", rep)
    n = (rep.reply or {}).get("execution_count")
    t.ok(isinstance(n, int) and n >= 1 and rep.of("execute_result")[0].get("execution_count") == n
         if rep.of("execute_result") else False, "the result carries the reply's execution_count", rep)
    rep = ch.execute("from IPython.display import HTML, display\ndisplay(HTML('<b id=\"sbx\">bold</b>'))")
    html = [d.get("data", {}).get("text/html") for d in rep.of("display_data")]
    t.eq(html, ['<b id="sbx">bold</b>'], "IPython.display.HTML arrives as display_data with text/html", rep)
    rep = ch.execute("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                     "plt.plot([1, 3, 2, 4]); plt.title('sandboxd'); plt.show()", timeout=90)
    pngs = [d.get("data", {}).get("image/png") for d in rep.of("display_data") if "image/png" in d.get("data", {})]
    size = None
    if len(pngs) == 1 and isinstance(pngs[0], str):
        try:
            size = gwlib.png_size(base64.b64decode(pngs[0]))
        except ValueError:
            size = None
    t.ok(size is not None and size[0] > 100 and size[1] > 100,
         "a matplotlib figure arrives as display_data with a valid image/png (%s)" % (size,), rep)
    rep = ch.execute("1/0")
    e = rep.error() or {}
    t.eq(e.get("ename"), "ZeroDivisionError", "`1/0` gives an error message named ZeroDivisionError", rep)
    t.ok("1/0" in plain(e.get("traceback")) and "division by zero" in plain(e.get("traceback")),
         "... whose traceback shows the line and the message", rep)
    t.eq((rep.reply or {}).get("status"), "error", "... and the execute_reply status is error", rep)
    after_error()


def test_input(t, b):
    ch = S.ch
    if not ch:
        t.ok(False, "a Python kernel to run input() in")
        return
    prompts = []

    def answer(prompt):
        prompts.append(prompt)
        return "Ada Lovelace"

    rep = ch.execute("x = input('name? ')\nprint('got', x)", allow_stdin=True, on_input=answer, timeout=60)
    t.eq(rep.input_requests, [{"prompt": "name? ", "password": False}],
         "input() sends one input_request on the stdin channel with its prompt", rep)
    t.eq(rep.stdout(), "got Ada Lovelace\n", "the input_reply's value is what input() returned", rep)
    rep = ch.execute("x")
    t.eq(rep.result_text(), "'Ada Lovelace'", "the variable keeps the value", rep)


def test_interrupt_restart(t, b):
    srv, ch, kid = S.server, S.ch, S.kid
    if not ch:
        t.ok(False, "a Python kernel to interrupt")
        return
    status = []

    def interrupt():
        time.sleep(1.0)
        status.append(srv.request("POST", "/api/kernels/%s/interrupt" % kid))

    t0 = time.monotonic()
    rep = ch.execute("n = 0\nwhile True:\n    n += 1", on_busy=interrupt, timeout=60)
    t.ok(status and status[0].status == 204, "POST /api/kernels/{id}/interrupt through jupyter-server answers 204",
         status[0] if status else "never sent")
    t.eq((rep.error() or {}).get("ename"), "KeyboardInterrupt",
         "the `while True` loop ends with a KeyboardInterrupt error (%.1f s)" % (time.monotonic() - t0), rep)
    after_error()
    rep = ch.execute("n > 0")
    t.eq(rep.result_text(), "True", "the kernel keeps its state after an interrupt (the loop ran)", rep)
    r = srv.request("POST", "/api/kernels/%s/restart" % kid)
    t.ok(r.status == 200 and r.get("id") == kid, "POST /api/kernels/{id}/restart answers 200 with the kernel", r)
    # Straight away, as a front end does: the first request after the
    # restart's answer must not be lost.
    rep = ch.execute("x", timeout=30)
    t.eq((rep.error() or {}).get("ename"), "NameError",
         "right after the restart, `x` on the same websocket is answered: NameError, the state is gone", rep)
    after_error()
    rep = ch.execute("21*2")
    t.eq(rep.result_text(), "42", "... and the restarted kernel answers", rep)


def test_kernel_death(t, b):
    """A kernel that dies: the front end is told on iopub (status
    'restarting' or 'dead', what Jupyter's own kernel restarter sends and
    the notebook turns into "The kernel appears to have died"), and the
    next cell runs in a fresh kernel."""
    ch = S.ch
    if not ch:
        t.ok(False, "a Python kernel to kill")
        return
    ch.execute("doomed = 1")
    t0 = time.monotonic()
    mid = ch.start_execute("import os; os._exit(1)")
    states = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = ch.recv(deadline)
        if m is None:
            break
        if m.get("header", {}).get("msg_type") == "status":
            states.append(m.get("content", {}).get("execution_state"))
            if states[-1] in ("restarting", "dead", "autorestarting"):
                break
    t.ok(any(s in ("restarting", "dead", "autorestarting") for s in states),
         "after os._exit(1) in a cell, the websocket says the kernel died (iopub status restarting/dead) (%.1f s)"
         % (time.monotonic() - t0), "statuses seen in 20 s: %s (request %s)" % (states, mid))
    rep = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rep = ch.execute("'doomed' in dir()", timeout=10)
        if rep.result_text() is not None:
            break
        time.sleep(0.5)
    t.eq(rep.result_text() if rep else None, "False",
         "the next cell runs in a fresh kernel (the old variable is gone)", rep)


def test_wrong_token(t, b):
    """A jupyter-server holding a token the broker does not know: its users
    get errors, and nothing is made on the broker."""
    before = sorted(x.get("id") for tenant in b.tokens for x in b.get("/v1/sandboxes", tenant=tenant)
                    .get("sandboxes") or [])
    srv = gwlib.JupyterProc(t, "server", gateway_url=b.url, auth_token="not-" + b.tokens["alice"][4:],
                            name="jupyter-server (wrong gateway token)")
    try:
        if not srv.start():
            return
        r = srv.request("GET", "/api/kernelspecs")
        t.ok(r.status >= 400, "its GET /api/kernelspecs fails (%d), it does not list kernels" % r.status, r)
        r = srv.request("POST", "/api/kernels", {"name": "python3"})
        t.ok(r.status >= 400, "its POST /api/kernels fails (%d)" % r.status, r)
        after = sorted(x.get("id") for tenant in b.tokens for x in b.get("/v1/sandboxes", tenant=tenant)
                       .get("sandboxes") or [])
        t.eq(after, before, "no sandbox was created on the broker", after)
        t.ok("401" in srv.log_text(), "the server's log shows the broker's 401", srv.log_tail(10))
    finally:
        t.ok(srv.stop(), "that jupyter-server's process group exits on SIGTERM and leaves nothing")


def test_native_view(t, b):
    kid = S.kid
    if not kid:
        t.ok(False, "a Python kernel to look for")
        return
    sid = "gw-" + kid
    ids, r = ctx_ids(b, sid)
    t.ok(kid in ids, "the kernel is a code context in alice's sandbox %s (native GET .../contexts)" % sid, r)
    r = b.get("/api/kernels/%s" % kid)
    t.ok(r.status == 200 and r.get("id") == kid and r.get("name") == "python3",
         "the broker's GET /api/kernels/{id} as alice answers the kernel", r)
    rep = S.ch.execute("import os; open('/workspace/gw-proof.txt', 'w').write(str(os.getpid())); os.getcwd()")
    r = b.get("/v1/sandboxes/%s/files/workspace/gw-proof.txt" % sid)
    t.ok(r.status == 200 and r.raw.isdigit(),
         "a file the kernel wrote is in that sandbox (native files API)", "%s\n%s" % (r, rep))
    r = b.get("/api/kernels/%s" % kid, tenant="bob")
    t.eq(r.status, 404, "bob's GET /api/kernels/{alice's kernel} answers 404", r)
    r = b.get("/api/kernels", tenant="bob")
    t.ok(r.status == 200 and kid not in kernel_ids(r), "bob's GET /api/kernels does not list it", r)
    for method, path in [("DELETE", "/api/kernels/%s" % kid), ("POST", "/api/kernels/%s/interrupt" % kid),
                         ("POST", "/api/kernels/%s/restart" % kid)]:
        r = b.request(method, path, tenant="bob")
        t.eq(r.status, 404, "bob's %s %s answers 404" % (method, path.replace(kid, "{id}")), r)
    try:
        ws = gwlib.broker_ws(b, "/api/kernels/%s/channels" % kid, tenant="bob")
        ws.close()
        t.ok(False, "bob cannot open the channels of alice's kernel")
    except websocket.WebSocketBadStatusException as e:
        t.eq(e.status_code, 404, "bob's websocket to alice's kernel is refused with 404 before the upgrade")
    r = b.get("/v1/sandboxes/%s" % sid, tenant="bob")
    t.eq(r.status, 404, "bob does not see the sandbox %s" % sid, r)
    rep = S.ch.execute("1+2")
    t.eq(rep.result_text(), "3", "alice's kernel still answers after bob's attempts", rep)


def test_typescript(t, b):
    srv = S.server
    kid = new_kernel(t, srv, "typescript", "TypeScript")
    if not kid:
        return
    ch = open_channels(t, srv, kid, "TypeScript")
    if ch:
        rep = ch.execute("const a: number = 40; a + 2", timeout=90)
        # TSLab shows the last expression's value as stdout, not as an
        # execute_result: what a notebook displays either way.
        t.eq(rep.result_text() or rep.stdout(), "42\n" if rep.stdout() else "42",
             "TypeScript `const a: number = 40; a + 2` shows 42", rep)
        rep = ch.execute("const s: string = 'sand' + 'boxd'; console.log(s)", timeout=60)
        t.eq(rep.stdout(), "sandboxd\n", "console.log arrives as a stdout stream", rep)
        ch.close()
    ids, r = ctx_ids(b, "gw-" + kid)
    t.ok(kid in ids, "the TypeScript kernel is a context in gw-<its id>", r)
    r = srv.request("DELETE", "/api/kernels/%s" % kid)
    t.eq(r.status, 204, "delete the TypeScript kernel through jupyter-server", r)


def test_delete(t, b):
    srv, kid = S.server, S.kid
    if not kid:
        t.ok(False, "a Python kernel to delete")
        return
    if S.ch:
        S.ch.close()
        S.ch = None
    r = srv.request("DELETE", "/api/kernels/%s" % kid)
    t.eq(r.status, 204, "DELETE /api/kernels/{id} through jupyter-server answers 204", r)
    gone = wait_until(lambda: b.get("/v1/sandboxes/gw-%s" % kid).status == 404, 30, 0.5)
    t.ok(gone, "the broker's sandbox gw-<kernel id> is gone", b.get("/v1/sandboxes/gw-%s" % kid))
    r = b.get("/api/kernels/%s" % kid)
    t.eq(r.status, 404, "the broker's GET /api/kernels/{id} answers 404 after the delete", r)
    r = srv.request("GET", "/api/kernels")
    t.ok(r.status == 200 and kid not in kernel_ids(r), "jupyter-server no longer lists it", r)


def test_kernel_sandbox_id(t, b):
    r = b.create(id=SHARED_SB)
    if not t.eq(r.status, 201, "create sandbox %s natively" % SHARED_SB, r):
        return
    # This one finds the gateway and its token in the environment, the
    # other way Jupyter documents (JUPYTER_GATEWAY_URL, ..._AUTH_TOKEN).
    srv = gwlib.JupyterProc(t, "server", env={"JUPYTER_GATEWAY_URL": b.url,
                                              "JUPYTER_GATEWAY_AUTH_TOKEN": b.tokens["alice"],
                                              "JUPYTER_GATEWAY_REQUEST_TIMEOUT": "120",
                                              "KERNEL_SANDBOX_ID": SHARED_SB, "KERNEL_SBX_GREETING": "hello kernel"},
                            name="jupyter-server (environment, KERNEL_SANDBOX_ID)")
    try:
        if not srv.start():
            return
        kid = new_kernel(t, srv, "python3", "KERNEL_SANDBOX_ID")
        if not kid:
            return
        ids, r = ctx_ids(b, SHARED_SB)
        t.ok(kid in ids, "the kernel is a context in the sandbox named by KERNEL_SANDBOX_ID", r)
        r = b.get("/v1/sandboxes/gw-%s" % kid)
        t.eq(r.status, 404, "... and no sandbox gw-<kernel id> was made for it", r)
        ch = open_channels(t, srv, kid, "KERNEL_SANDBOX_ID")
        if ch:
            rep = ch.execute("open('/workspace/from-jupyter.txt', 'w').write('written by a gateway kernel\\n')")
            t.eq((rep.reply or {}).get("status"), "ok", "the kernel writes /workspace/from-jupyter.txt", rep)
            rep = ch.execute("import os; (os.environ.get('KERNEL_SBX_GREETING'), 'KERNEL_WORKING_DIR' in os.environ,"
                             " 'KERNEL_SANDBOX_ID' in os.environ)")
            t.eq(rep.result_text(), "('hello kernel', False, False)",
                 "the server's KERNEL_* variables reach the kernel, but not the host's working dir or the sandbox"
                 " id", rep)
            ch.close()
        r = b.get("/v1/sandboxes/%s/files/workspace/from-jupyter.txt" % SHARED_SB)
        t.eq((r.status, r.raw), (200, b"written by a gateway kernel\n"),
             "the native files API of %s reads what the kernel wrote" % SHARED_SB, r)
        r = srv.request("DELETE", "/api/kernels/%s" % kid)
        t.eq(r.status, 204, "delete that kernel through jupyter-server", r)
        ids, r = ctx_ids(b, SHARED_SB)
        t.ok(r.status == 200 and kid not in ids, "its context is gone; the sandbox stays", r)
    finally:
        t.ok(srv.stop(), "the second jupyter-server's process group exits on SIGTERM and leaves nothing")


# --------------------------------------------------------------------------
# Straight to the broker
# --------------------------------------------------------------------------


def test_direct_ws(t, b):
    r = b.post("/api/kernels", {"name": "python3", "env": {}},
               headers={"Authorization": "token " + b.tokens["alice"]})
    if not t.ok(r.status == 201 and UUID_RE.match(r.get("id") or ""),
                "the broker's POST /api/kernels with 'Authorization: token' answers 201 with a kernel", r):
        return
    kid = r.get("id")
    t.ok(JUPYTER_TIME_RE.match(r.get("last_activity") or "") and isinstance(r.get("execution_state"), str)
         and isinstance(r.get("connections"), int), "the model has last_activity, execution_state, connections", r)
    path = "/api/kernels/%s/channels" % kid
    for what, kw in [("without a token", {"tenant": None}), ("with a wrong token", {"token": "x" * 48})]:
        try:
            gwlib.broker_ws(b, path, **kw).close()
            t.ok(False, "the channels websocket %s is refused" % what)
        except websocket.WebSocketBadStatusException as e:
            t.eq(e.status_code, 401, "the channels websocket %s is refused with 401 before the upgrade" % what)
    try:
        gwlib.broker_ws(b, "/api/kernels/00000000-0000-4000-8000-000000000000/channels").close()
        t.ok(False, "a websocket to an unknown kernel is refused")
    except websocket.WebSocketBadStatusException as e:
        t.eq(e.status_code, 404, "a websocket to an unknown kernel is refused with 404")

    ch = direct_channels(b, kid)
    t.ok(ch.wait_ready(60), "the broker's channels websocket answers kernel_info")
    rep = ch.execute("1+1")
    t.eq(rep.result_text(), "2", "`1+1` straight on the broker's websocket gives '2'", rep)

    def still_works(what):
        """After a bad message: the same connection still answers, or it
        was closed and a new one does."""
        code = None
        try:
            rep = ch.execute("6*7", timeout=20)
            if rep.result_text() == "42":
                t.ok(True, "after %s the connection still answers (the message was dropped)" % what)
                return ch
            code = "no answer: %s" % rep
        except (websocket.WebSocketConnectionClosedException, OSError) as e:
            code = "closed (%r)" % e
        ch.close()
        t.ok(b.alive(), "the broker survives %s" % what, b.log_tail(40))
        n = direct_channels(b, kid)
        rep = n.execute("6*7", timeout=30)
        t.eq(rep.result_text(), "42", "after %s (old connection: %s) a new connection answers" % (what, code), rep)
        return n

    bad = [
        ("a non-JSON text message", "this is {not json"),
        ("a message on a channel that does not exist",
         json.dumps({"channel": "bogus", "header": {"msg_id": "m1", "msg_type": "execute_request", "session": "s",
                                                     "username": "u", "version": "5.3", "date": ""},
                     "parent_header": {}, "metadata": {}, "content": {"code": "1"}})),
        ("a shell message whose header is a string",
         json.dumps({"channel": "shell", "header": "x", "parent_header": {}, "metadata": {}, "content": {}})),
        ("a JSON array", "[1, 2, 3]"),
    ]
    for what, payload in bad:
        ch.ws.send(payload)
        ch = still_works(what)
    ch.ws.send_binary(b"\x00\x01\x02 not a buffers frame")
    ch = still_works("a binary frame of garbage")

    # A message in fragments (RFC 6455 continuation frames, a ping between
    # them) is one message.
    frag = json.dumps({"header": {"msg_id": "frag-1", "username": "u", "session": ch.session,
                                  "msg_type": "execute_request", "version": "5.3", "date": ""},
                       "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                       "content": {"code": "6*7", "silent": False, "store_history": True, "user_expressions": {},
                                   "allow_stdin": False, "stop_on_error": True}})
    A = websocket.ABNF
    ch.ws.send_frame(A.create_frame(frag[:10], A.OPCODE_TEXT, 0))
    ch.ws.ping("between fragments")
    ch.ws.send_frame(A.create_frame(frag[10:60], A.OPCODE_CONT, 0))
    ch.ws.send_frame(A.create_frame(frag[60:], A.OPCODE_CONT, 1))
    rep = ch.collect("frag-1", timeout=30)
    t.eq(rep.result_text(), "42", "a message sent in three fragments with a ping between them is answered", rep)
    # Fragments adding up to more than the limit close the connection as
    # soon as they pass it.
    ch.ws.send_frame(A.create_frame("{", A.OPCODE_TEXT, 0))
    sent = 0
    try:
        while sent < MAX_MESSAGE + (4 << 20):
            ch.ws.send_frame(A.create_frame("x" * (1 << 20), A.OPCODE_CONT, 0))
            sent += 1 << 20
    except (websocket.WebSocketConnectionClosedException, OSError):
        pass
    code = ws_close_code(ch.ws, 20)
    t.ok(sent <= MAX_MESSAGE + (2 << 20) and code is not None,
         "fragments adding up past %d MiB close the connection (after %d MiB sent, close code %s)"
         % (MAX_MESSAGE >> 20, sent >> 20, code))
    ch.close()
    t.ok(b.alive(), "the broker survives the endless fragmented message", b.log_tail(40))
    ch = direct_channels(b, kid)
    # An unmasked client frame is a protocol error (RFC 6455 5.1): 1002.
    ch.ws.sock.sendall(b"\x81\x05hello")
    code = ws_close_code(ch.ws, 20)
    t.eq(code, 1002, "an unmasked client frame closes the connection with 1002")
    ch.close()
    ch = direct_channels(b, kid)

    # One frame over the limit: the connection is closed (1009), the broker lives.
    big = json.dumps({"channel": "shell", "header": {}, "content": {"code": "#" + "x" * (MAX_MESSAGE + 1024)}})
    t0 = time.monotonic()
    try:
        ch.ws.send(big)
    except (websocket.WebSocketConnectionClosedException, OSError):
        pass
    code = ws_close_code(ch.ws, 20)
    t.ok(code in (1009, 1002, 0), "a %d MiB frame (limit %d MiB) closes the connection (close code %s, %.1f s)"
         % (len(big) >> 20, MAX_MESSAGE >> 20, code, time.monotonic() - t0))
    ch.close()
    t.ok(b.alive(), "the broker survives the oversized frame", b.log_tail(40))
    ch = direct_channels(b, kid)
    rep = ch.execute("'still here'", timeout=30)
    t.eq(rep.result_text(), "'still here'", "a new connection to the kernel answers after the oversized frame", rep)
    ch.close()
    r = b.delete("/api/kernels/%s" % kid, headers={"Authorization": "token " + b.tokens["alice"]})
    t.eq(r.status, 204, "the broker's DELETE /api/kernels/{id} answers 204", r)
    r = b.get("/api/kernels/%s" % kid)
    t.eq(r.status, 404, "the deleted kernel answers 404", r)


def test_two_clients_and_broker_restart(t, b):
    """Two front ends on one kernel (a notebook and a console) both see its
    output; a kernel and its state outlive a restart of the broker."""
    r = b.post("/api/kernels", {"name": "python3"})
    if not t.ok(r.status == 201 and r.get("id"), "create a kernel on the broker for two clients", r):
        return
    kid = r.get("id")
    a, c = direct_channels(b, kid), direct_channels(b, kid)
    t.ok(a.wait_ready(60) and c.wait_ready(60), "two websockets on the same kernel both answer kernel_info")
    r = b.get("/api/kernels/%s" % kid)
    t.eq(r.get("connections"), 2, "the kernel model counts 2 connections", r)
    rep = a.execute("persist = 41\nprint('to everyone')")
    t.eq(rep.stdout(), "to everyone\n", "the first client's run prints", rep)
    seen = []
    deadline = time.monotonic() + 10
    while not any(x[1] == "status" and x[2] == "idle" for x in seen):
        m = c.recv(deadline)
        if m is None:
            break
        if m.get("parent_header", {}).get("msg_id") == rep.msg_id:
            seen.append((m.get("channel"), m["header"].get("msg_type"),
                         m.get("content", {}).get("execution_state") or m.get("content", {}).get("text")))
    t.ok(("iopub", "stream", "to everyone\n") in seen and ("iopub", "execute_input", None) in seen,
         "the second client sees the first one's execute_input and output on iopub", seen)
    t.ok(not any(x[0] == "shell" for x in seen), "... but not its execute_reply (shell goes to the requester)", seen)
    a.close()
    c.close()
    if not b.restart():
        return
    r = b.get("/api/kernels/%s" % kid)
    t.ok(r.status == 200 and r.get("id") == kid, "after a broker restart the kernel is still listed", r)
    try:
        n = direct_channels(b, kid)
        rep = n.execute("persist + 1", timeout=60)
        n.close()
    except Exception as e:
        rep = repr(e)
    t.eq(getattr(rep, "result_text", lambda: None)(), "42",
         "... and a new websocket finds its state (`persist + 1` -> 42)", rep)
    r = b.delete("/api/kernels/%s" % kid)
    t.eq(r.status, 204, "delete it", r)


def test_create_refusals(t, b):
    bob_sb = "bobs-box"
    r = b.create(tenant="bob", id=bob_sb)
    t.eq(r.status, 201, "bob creates sandbox %s" % bob_sb, r)
    before, _ = ctx_ids(b, bob_sb, tenant="bob")
    cases = [
        ("KERNEL_SANDBOX_ID naming bob's sandbox", {"name": "python3", "env": {"KERNEL_SANDBOX_ID": bob_sb}}, 404),
        ("KERNEL_SANDBOX_ID naming no sandbox", {"name": "python3", "env": {"KERNEL_SANDBOX_ID": "no-such-box"}},
         404),
        ("KERNEL_SANDBOX_ID that is not an id", {"name": "python3", "env": {"KERNEL_SANDBOX_ID": "../../etc"}}, 400),
        ("an unknown kernelspec", {"name": "cobol"}, 404),
        ("env that is not an object", {"name": "python3", "env": ["KERNEL_X=1"]}, 400),
        ("a name that is not a string", {"name": 3}, 400),
    ]
    n0 = len((b.get("/api/kernels").body or []))
    sbs0 = [x.get("id") for x in b.get("/v1/sandboxes").get("sandboxes") or []]
    for what, body, want in cases:
        r = b.post("/api/kernels", body)
        t.eq(r.status, want, "the broker's POST /api/kernels with %s answers %d" % (what, want), r)
    r = b.post("/api/kernels", raw=b"{not json", headers={"Content-Type": "application/json"})
    t.eq(r.status, 400, "POST /api/kernels with a body that is not JSON answers 400", r)
    after, r = ctx_ids(b, bob_sb, tenant="bob")
    t.eq(after, before, "bob's sandbox got no context from alice's attempts", r)
    r = b.get("/api/kernels")
    t.eq(len(r.body or []), n0, "no kernel was made by a refused create", r)
    r = b.get("/v1/sandboxes")
    t.eq([x.get("id") for x in r.get("sandboxes") or []], sbs0, "and no sandbox was left behind by a refused create",
         r)


def test_idle_cull(t, _b):
    """A broker of its own with a 3 s idle timeout checked every second."""
    cb = harness.Broker(t, config={"gateway_idle_timeout_seconds": 3, "gateway_cull_interval_seconds": 1},
                        name="cull broker")
    try:
        if not cb.start():
            return
        ids = []
        for what in ("idle", "connected"):
            r = cb.post("/api/kernels", {"name": "python3"})
            if not t.ok(r.status == 201 and r.get("id"), "create the %s kernel on the cull broker" % what, r):
                return
            ids.append(r.get("id"))
        idle, held = ids
        ch = direct_channels(cb, held)
        t.ok(ch.wait_ready(60), "the connected kernel answers over its websocket")
        t0 = time.monotonic()
        gone = wait_until(lambda: cb.get("/api/kernels/%s" % idle).status == 404, 15, 0.5)
        took = time.monotonic() - t0
        t.ok(gone and took <= 12, "the kernel without a websocket is culled (404) within ~10 s (%.1f s)" % took,
             cb.get("/api/kernels/%s" % idle))
        t.ok(wait_until(lambda: cb.get("/v1/sandboxes/gw-%s" % idle).status == 404, 10, 0.5),
             "... and its sandbox gw-<id> is deleted with it")
        time.sleep(4)
        r = cb.get("/api/kernels/%s" % held)
        t.eq(r.status, 200, "the kernel with an open websocket is still there %.0f s later"
             % (time.monotonic() - t0), r)
        rep = ch.execute("'alive'", timeout=30)
        t.eq(rep.result_text(), "'alive'", "... and answers on that websocket", rep)
        ch.close()
        # Once its websocket is gone, the connected one is idle too.
        t.ok(wait_until(lambda: cb.get("/api/kernels/%s" % held).status == 404, 15, 0.5),
             "after its websocket closes, that kernel is culled as well")
        # The kernel answers 404 as soon as the cull takes it; its sandbox
        # may still be deleting for a moment.
        t.ok(wait_until(lambda: cb.get("/v1/sandboxes/gw-%s" % held).status == 404, 15, 0.5),
             "... and its sandbox is deleted with it")
    finally:
        cb.teardown()


def main():
    harness.require_ready()
    t = harness.Tap()
    b = harness.Broker(t)
    try:
        if b.start():
            try:
                for fn in [test_server, test_kernelspecs, test_python_kernel, test_input, test_interrupt_restart,
                           test_native_view, test_kernel_death, test_typescript, test_delete,
                           test_kernel_sandbox_id, test_wrong_token, test_direct_ws,
                           test_two_clients_and_broker_restart, test_create_refusals, test_idle_cull]:
                    if not b.alive():
                        t.ok(False, "broker is running before %s" % fn.__name__, "exit status %s" % b.proc.poll())
                        break
                    harness.run_test(t, fn, b)
                    if fn is test_server and not S.started:
                        break
            finally:
                if S.ch:
                    S.ch.close()
                if S.server:
                    log = S.server.log_tail(60)
                    clean = S.server.stop()
                    t.ok(clean, "jupyter-server's process group exits on SIGTERM and leaves nothing", log)
                    if t.failed:
                        t.diag(log)
    except KeyboardInterrupt:
        t.ok(False, "interrupted")
    finally:
        b.teardown()
    t.done()


if __name__ == "__main__":
    main()
