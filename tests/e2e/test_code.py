#!/usr/bin/env python3
"""test_code.py - POST /v1/sandboxes/{id}/code (runCode): results, logs,
rich MIME output, display updates, clear_output, errors, timeouts, kernel
death, input(), SSE streaming and disconnects, JavaScript and TypeScript
(TSLab), concurrency across sandboxes, and forged kernel messages.

The contract is docs/api.md ("Code contexts", "runCode") and issue 3.
Sandboxes and contexts are reused to keep kernel starts few: a warm Python
kernel hands over in ~20 ms, a cold one takes ~0.5 s, TSLab ~1.7 s."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "code"
CODE = "/v1/sandboxes/%s/code" % SB
CTXS = "/v1/sandboxes/%s/contexts" % SB
EXECUTION_KEYS = {"results", "logs", "error", "execution_count", "truncated"}
PNG_SIG = b"\x89PNG\r\n\x1a\n"
# Slack on top of documented deadlines: a loaded 2-core box.
SLACK = 1.5
# TSLab aborts requests that arrive within 200 ms of a failed cell (its
# execQueue.reset(200)); tests that are not about that wait this long.
TSLAB_ABORT_WINDOW = 0.35


def run(b, code, sid=SB, tenant="alice", timeout=90, **fields):
    body = {"code": code}
    body.update(fields)
    return b.post("/v1/sandboxes/%s/code" % sid, body, tenant=tenant, timeout=timeout)


def new_ctx(t, b, language="python", sid=SB, what=None, **fields):
    body = {"language": language}
    body.update(fields)
    r = b.post("/v1/sandboxes/%s/contexts" % sid, body, timeout=90)
    ok = t.ok(r.status == 201 and isinstance(r.get("id"), str),
              "create a %s context%s" % (language, " for " + what if what else ""), r)
    return r.get("id") if ok else None


def get_ctx(b, ctx, sid=SB):
    return b.get("/v1/sandboxes/%s/contexts/%s" % (sid, ctx))


def results(r):
    return r.get("results") if isinstance(r.get("results"), list) else []


def logs(r, stream="stdout"):
    lg = r.get("logs")
    return lg.get(stream) if isinstance(lg, dict) else None


def err(r):
    return r.get("error") if isinstance(r.get("error"), dict) else None


def err_name(r):
    e = err(r)
    return e.get("name") if e else None


def main_text(r):
    mains = [x for x in results(r) if isinstance(x, dict) and x.get("is_main_result") is True]
    return mains[0].get("text") if len(mains) == 1 else None


# --------------------------------------------------------------------------
# Python basics
# --------------------------------------------------------------------------


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the code sandbox", r)


def test_basic(t, b):
    r = run(b, "1+1")
    t.eq(r.status, 200, "runCode `1+1` answers 200", r)
    t.ok(isinstance(r.body, dict) and set(r.body) >= EXECUTION_KEYS,
         "the Execution has results, logs, error, execution_count, truncated", r)
    t.eq(len(results(r)), 1, "`1+1` gives exactly one result", r)
    res = results(r)[0] if results(r) else {}
    t.eq((res.get("is_main_result"), res.get("text")), (True, "2"), "the result is the main result with text \"2\"", r)
    t.ok("text" in (res.get("formats") or []), "formats lists text", r)
    t.eq(r.get("error"), None, "error is null", r)
    t.eq((logs(r, "stdout"), logs(r, "stderr")), ([], []), "no stdout or stderr", r)
    t.eq(r.get("truncated"), False, "truncated is false", r)
    n1 = r.get("execution_count")
    t.ok(isinstance(n1, int) and n1 >= 1, "execution_count is a positive integer", r)
    r2 = run(b, "2+3")
    t.eq(main_text(r2), "5", "a second run answers `2+3` -> 5", r2)
    t.eq(r2.get("execution_count"), (n1 or 0) + 1, "execution_count increments by one per run", r2)
    r3 = run(b, "None")
    t.eq((results(r3), r3.get("execution_count")), ([], (n1 or 0) + 2),
         "an expression whose value is None gives no result; the count still increments", r3)


def test_print_order(t, b):
    code = "print('a')\ndisplay('d1')\nprint('b')\n'main'"
    r = run(b, code)
    t.eq(logs(r, "stdout"), ["a\n", "b\n"], "print output is in logs.stdout, one entry per stream message, in order", r)
    t.eq([(x.get("text"), x.get("is_main_result")) for x in results(r)], [("'d1'", False), ("'main'", True)],
         "the display and the main result are both results, in order", r)
    r = run(b, "import sys\nprint('to-err', file=sys.stderr)\nprint('to-out')")
    t.eq((logs(r, "stdout"), logs(r, "stderr")), (["to-out\n"], ["to-err\n"]), "stderr is kept apart from stdout", r)
    h, s = b.sse(CODE, {"code": code})
    if not t.ok(s is not None, "the same run streams as text/event-stream", h):
        return
    evs = s.events()
    seq = [(e.name, e.data.get("text")) for e in evs if e.name in ("stdout", "result")]
    t.eq(seq, [("stdout", "a\n"), ("result", "'d1'"), ("stdout", "b\n"), ("result", "'main'")],
         "streamed stdout and results interleave in the order the code produced them", evs)


def test_state(t, b):
    r = run(b, "state_var = 12345")
    t.eq((r.status, r.get("error"), results(r)), (200, None, []), "an assignment runs without a result", r)
    r = run(b, "state_var * 2")
    t.eq(main_text(r), "24690", "state is kept between runs in the default context", r)
    other = new_ctx(t, b, what="state isolation")
    if other:
        r = run(b, "state_var", context_id=other)
        t.eq(err_name(r), "NameError", "the variable does not exist in another context", r)
        r = run(b, "'state_var' in dir()", context_id=other)
        t.eq(main_text(r), "False", "... and is not in its namespace", r)
        r = run(b, "state_var")
        t.eq(main_text(r), "12345", "the default context still has it", r)


def test_pandas(t, b):
    r = run(b, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    t.eq(len(results(r)), 1, "a pandas DataFrame gives exactly one result", r)
    res = results(r)[0] if results(r) else {}
    t.ok(res.get("is_main_result") is True, "the DataFrame is the main result", r)
    t.ok(isinstance(res.get("html"), str) and "<table" in res.get("html")
         and isinstance(res.get("text"), str) and "a" in res.get("text") and "4" in res.get("text"),
         "the one result has both html (a <table>) and text", r)
    t.ok({"html", "text"} <= set(res.get("formats") or []), "formats lists html and text", r)


def test_matplotlib(t, b):
    r = run(b, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 6])\nplt.show()")
    pngs = [x for x in results(r) if isinstance(x.get("png"), str)]
    t.eq((r.get("error"), len(pngs)), (None, 1), "plt.show() gives one result with png", r)
    if pngs:
        try:
            # base64 as Jupyter sends it: line breaks allowed, nothing else
            raw = base64.b64decode("".join(pngs[0]["png"].split()), validate=True)
        except ValueError as e:
            raw = b"(not base64: %s)" % str(e).encode()
        t.ok(raw.startswith(PNG_SIG) and len(raw) > 1000, "png is base64 of a PNG image (signature, %d bytes)"
             % len(raw), raw[:40])
        t.ok("png" in (pngs[0].get("formats") or []), "formats lists png", pngs[0].get("formats"))


def test_display_kinds(t, b):
    code = "\n".join([
        "from IPython.display import display, SVG, Markdown, Latex, JSON",
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"><circle r=\"3\"/></svg>'))",
        "display(Markdown('# Title *here*'))",
        "display(Latex(r'$\\alpha^2 + \\beta$'))",
        "display(JSON({'k': [1, 2], 'n': None}))",
    ])
    r = run(b, code)
    rs = results(r)
    t.eq(len(rs), 4, "four display() calls give four results", r)
    if len(rs) != 4:
        return
    t.ok(isinstance(rs[0].get("svg"), str) and rs[0]["svg"].startswith("<svg") and "circle" in rs[0]["svg"],
         "SVG -> svg", rs[0])
    t.eq(rs[1].get("markdown"), "# Title *here*", "Markdown -> markdown", rs[1])
    t.eq(rs[2].get("latex"), "$\\alpha^2 + \\beta$", "Latex -> latex", rs[2])
    t.eq(rs[3].get("json"), {"k": [1, 2], "n": None}, "JSON -> json as a JSON value", rs[3])
    t.eq([sorted(x.get("formats") or []) for x in rs],
         [["svg", "text"], ["markdown", "text"], ["latex", "text"], ["json", "text"]],
         "each result's formats lists exactly its MIME fields", rs)
    t.ok(all(x.get("is_main_result") is False for x in rs), "display() results are not main results", rs)


def test_display_update(t, b):
    code = "h = display('first', display_id=True)\nprint('between')\nh.update('second')"
    h, s = b.sse(CODE, {"code": code})
    if not t.ok(s is not None, "display + update streams", h):
        return
    evs = s.events()
    names = [e.name for e in evs]
    res_ev = next((e for e in evs if e.name == "result"), None)
    upd_ev = next((e for e in evs if e.name == "display_update"), None)
    did = res_ev.data.get("display_id") if res_ev else None
    t.ok(isinstance(did, str) and did != "", "the displayed result carries a display_id", res_ev)
    t.ok(res_ev is not None and res_ev.data.get("text") == "'first'", "the result event has the first value", evs)
    t.ok(upd_ev is not None and upd_ev.data.get("display_id") == did
         and isinstance(upd_ev.data.get("result"), dict) and upd_ev.data["result"].get("text") == "'second'",
         "a display_update event names the display_id and carries the new result", evs)
    t.ok("result" in names and "display_update" in names and names.index("result") < names.index("display_update"),
         "display_update comes after the result it updates", names)
    end = evs[-1] if evs else None
    ex = end.data.get("execution") if end is not None and end.name == "end" else None
    ex = ex if isinstance(ex, dict) else {}
    t.eq([(x.get("text"), x.get("display_id")) for x in ex.get("results", [])], [("'second'", did)],
         "the final Execution has one result, updated in place to the new value", ex)
    t.eq(ex.get("logs", {}).get("stdout"), ["between\n"], "the stdout between them is kept", ex)

    r = run(b, "from IPython.display import display, update_display\n"
               "display('a', display_id='same')\nprint('x')\ndisplay('b', display_id='same')\n"
               "update_display('c', display_id='same')\ndisplay('other')")
    t.eq([(x.get("text"), x.get("display_id")) for x in results(r)],
         [("'c'", "same"), ("'c'", "same"), ("'other'", None)],
         "update_display updates every earlier result with that id and no other", r)


def test_clear_output(t, b):
    r = run(b, "from IPython.display import clear_output\n"
               "print('a'); display('x'); clear_output(); print('b'); display('y')")
    t.eq((logs(r, "stdout"), [x.get("text") for x in results(r)]), (["b\n"], ["'y'"]),
         "clear_output() drops the earlier stdout and results, keeps what follows", r)
    r = run(b, "from IPython.display import clear_output\nprint('a'); display('x')\n"
               "clear_output(wait=True)\nimport time; time.sleep(0.3)\nprint('b')")
    t.eq((logs(r, "stdout"), results(r)), (["b\n"], []), "clear_output(wait=True) clears just before the next output",
         r)
    r = run(b, "from IPython.display import clear_output\nprint('a'); display('x'); clear_output(wait=True)")
    t.eq((logs(r, "stdout"), [x.get("text") for x in results(r)]), (["a\n"], ["'x'"]),
         "clear_output(wait=True) with no later output clears nothing", r)
    h, s = b.sse(CODE, {"code": "from IPython.display import clear_output\nprint('a'); clear_output(wait=True)\n"
                                "print('b')"})
    evs = s.events() if s else []
    co = [e for e in evs if e.name == "clear_output"]
    t.ok(len(co) == 1 and co[0].data.get("wait") is True, "a clear_output event with wait: true is streamed",
         evs or h)


def test_error(t, b):
    r = run(b, "x_before = 1\n1/0")
    e = err(r) or {}
    t.eq(r.status, 200, "an exception in the code still answers 200", r)
    t.eq((e.get("name"), e.get("value")), ("ZeroDivisionError", "division by zero"),
         "ZeroDivisionError -> error name and value", r)
    tb = e.get("traceback")
    t.ok(isinstance(tb, list) and tb and all(isinstance(x, str) for x in tb)
         and any("ZeroDivisionError" in x for x in tb) and any("1/0" in x or "1\x1b" in x for x in tb),
         "the traceback is a list of strings naming the error and the line", r)
    t.eq(results(r), [], "a failed run has no results", r)
    t.ok(isinstance(r.get("execution_count"), int), "a failed run still has an execution_count", r)
    r = run(b, "x_before")
    t.eq(main_text(r), "1", "the context works after an exception and keeps what ran before it", r)


# --------------------------------------------------------------------------
# Timeouts, kernel death, input()
# --------------------------------------------------------------------------


def test_timeout_interruptible(t, b):
    ctx = new_ctx(t, b, what="the interruptible timeout")
    if not ctx:
        return
    run(b, "tval = 7", context_id=ctx)
    r = run(b, "while True:\n    pass", context_id=ctx, timeout_ms=1000)
    t.eq(err_name(r), "TimeoutError", "an infinite loop with timeout_ms 1000 ends with TimeoutError", r)
    t.ok(0.9 <= r.elapsed <= 1.0 + 3.0 + SLACK, "it returns within timeout + 3 s grace (took %.2f s)" % r.elapsed, r)
    g = get_ctx(b, ctx)
    t.eq((g.get("status"), g.get("restarted")), ("idle", False),
         "a pure-Python loop is interrupted, not restarted: context idle, restarted false", g)
    r = run(b, "tval + 1", context_id=ctx)
    t.eq(main_text(r), "8", "the context works after the timeout and kept its state", r)


def test_timeout_sigint_ignored(t, b):
    ctx = new_ctx(t, b, what="the stubborn timeout")
    if not ctx:
        return
    run(b, "keep_me = 1", context_id=ctx)
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    r = run(b, code, context_id=ctx, timeout_ms=1000)
    t.eq(err_name(r), "TimeoutError", "a loop that ignores SIGINT still ends with TimeoutError", r)
    t.ok(1.0 <= r.elapsed <= 1.0 + 3.0 + SLACK,
         "it returns within timeout + 3 s grace + slack (took %.2f s)" % r.elapsed, r)
    g = get_ctx(b, ctx)
    t.eq(g.get("restarted"), True, "the context reports restarted: true", g)
    r = run(b, "'keep_me' in dir()", context_id=ctx)
    t.eq(main_text(r), "False", "the restarted kernel has empty state", r)
    r = run(b, "6*7", context_id=ctx)
    t.eq(main_text(r), "42", "the restarted context runs code", r)


def test_kernel_died(t, b):
    ctx = new_ctx(t, b, what="kernel death")
    if not ctx:
        return
    g = get_ctx(b, ctx)
    t.eq(g.get("restarted"), False, "a new context has restarted: false", g)
    run(b, "lost = 1", context_id=ctx)
    r = run(b, "import os\nos._exit(1)", context_id=ctx, timeout_ms=30000)
    t.eq(err_name(r), "KernelDied", "os._exit(1) ends the run with error KernelDied", r)
    t.ok(r.elapsed < 5.0, "... promptly (%.2f s)" % r.elapsed, r)
    r = run(b, "1+1", context_id=ctx)
    t.eq((main_text(r), r.get("error")), ("2", None), "the next run works in a fresh kernel", r)
    g = get_ctx(b, ctx)
    t.eq(g.get("restarted"), True, "the context reports restarted: true", g)
    r = run(b, "lost", context_id=ctx)
    t.eq(err_name(r), "NameError", "the fresh kernel's state is empty", r)


def test_input(t, b):
    r = run(b, "input('name? ')", timeout_ms=20000, timeout=30)
    t.ok(r.status == 200 and err(r) is not None, "input() ends the run with an error", r)
    t.ok(r.elapsed < 5.0, "input() fails fast (%.2f s, limit 5 s)" % r.elapsed, r)
    t.eq(err_name(r), "StdinNotImplementedError", "the error is StdinNotImplementedError, as documented", r)
    r = run(b, "'after-input'")
    t.eq(main_text(r), "'after-input'", "the context works after input()", r)


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------


def test_stream(t, b):
    run(b, "0")  # the default context exists and is warm
    code = "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.5)\n'done'"
    h, s = b.sse(CODE, {"code": code})
    if not t.ok(s is not None and "text/event-stream" in h.headers.get("content-type", ""),
                "Accept: text/event-stream answers 200 text/event-stream", h):
        return
    evs = s.events()
    outs = [e for e in evs if e.name == "stdout"]
    first = outs[0] if outs else None
    t.ok(first is not None and first.t - s.t0 <= 0.3,
         "the first stdout event arrives within 300 ms of the request (%s)"
         % ("%.0f ms" % ((first.t - s.t0) * 1000) if first else "none"), evs)
    t.eq("".join(e.data.get("text", "") for e in outs), "".join("line %d\n" % i for i in range(6)),
         "stdout events carry the lines in order", evs)
    t.ok(len(outs) >= 2 and outs[-1].t - outs[0].t >= 2.0,
         "the output is live: last line %.2f s after the first" % (outs[-1].t - outs[0].t if outs else -1), evs)
    t.ok(all(isinstance(e.data, dict) and e.data.get("type") == e.name for e in evs),
         "every event's data has type equal to the event name", evs)
    names = [e.name for e in evs]
    t.ok(names and names[-1] == "end" and names.count("end") == 1, "the stream ends with exactly one end event",
         names)
    t.ok("execution_count" in names and "result" in names
         and names.index("execution_count") < names.index("stdout") < names.index("result"),
         "execution_count, then stdout, then the main result", names)
    ex = evs[-1].data.get("execution") if names and names[-1] == "end" else None
    ex = ex if isinstance(ex, dict) else {}
    t.ok(set(ex) >= EXECUTION_KEYS and "".join(ex.get("logs", {}).get("stdout", [])) ==
         "".join("line %d\n" % i for i in range(6)) and [x.get("text") for x in ex.get("results", [])] == ["'done'"],
         "end carries the whole Execution (logs and the result)", ex)
    cnt = next((e.data.get("execution_count") for e in evs if e.name == "execution_count"), None)
    t.ok(cnt is not None and ex.get("execution_count") == cnt, "the execution_count event matches the Execution", evs)

    h, s = b.sse(CODE, {"code": "1/0"})
    evs = s.events() if s else []
    errs = [e for e in evs if e.name == "error"]
    t.ok(len(errs) == 1 and errs[0].data.get("name") == "ZeroDivisionError" and evs[-1].name == "end"
         and (evs[-1].data.get("execution") or {}).get("error", {}).get("name") == "ZeroDivisionError",
         "an exception streams an error event, then end with the error in the Execution", evs or h)

    h, s = b.sse(CODE, {"code": "1", "context_id": "ctx-does-not-exist"})
    t.eq((s is None, h.status, h.err_code()), (True, 404, "not_found"),
         "an unknown context answers a plain 404 JSON error, not a stream", h)


def test_stream_disconnect(t, b):
    ctx = new_ctx(t, b, what="the disconnect")
    if not ctx:
        return
    code = "marker = 42\nimport time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.1)"
    h, s = b.sse(CODE, {"code": code, "context_id": ctx})
    if not t.ok(s is not None, "a long streamed run starts", h):
        return
    first = None
    for e in s:
        if e.name == "stdout":
            first = e
            break
    t.ok(first is not None, "its first stdout arrives", first)
    busy = get_ctx(b, ctx)
    t.eq(busy.get("status"), "busy", "the context is busy while it runs", busy)
    s.close()
    r = run(b, "marker", context_id=ctx, timeout_ms=20000, timeout=30)
    t.eq(main_text(r), "42", "after the client disconnects, the next run on the context sees the state", r)
    t.ok(r.elapsed < 2.0, "... and starts promptly: the disconnect interrupted the loop (%.2f s)" % r.elapsed, r)
    g = get_ctx(b, ctx)
    t.eq((g.get("status"), g.get("restarted")), ("idle", False), "the context is idle and was not restarted", g)


# --------------------------------------------------------------------------
# JavaScript and TypeScript (TSLab)
# --------------------------------------------------------------------------


def test_javascript(t, b):
    r = run(b, "console.log('hello from js'); 6 * 7", language="javascript")
    t.eq(r.status, 200, "runCode with language javascript answers 200", r)
    t.eq(logs(r, "stdout"), ["hello from js\n", "42\n"],
         "console.log and the last expression's value (TSLab prints it) go to stdout, in order", r)
    t.eq((results(r), r.get("error")), ([], None), "no results and no error (TSLab has no execute_result)", r)
    g = get_ctx(b, "default-javascript")
    t.eq((g.status, g.get("language")), (200, "javascript"), "the default-javascript context now exists", g)
    r = run(b, "let jsv = {a: 1, b: [2, 3]}; jsv", language="javascript")
    t.eq(logs(r, "stdout"), ["{ a: 1, b: [ 2, 3 ] }\n"], "an object expression is printed as Node inspects it", r)
    run(b, "let jsn = 41", language="javascript")
    r = run(b, "console.error('to stderr')", language="javascript")
    t.eq(logs(r, "stderr"), ["to stderr\n"], "console.error goes to stderr", r)
    n_before = r.get("execution_count")

    r = run(b, "throw new Error('boom')", language="javascript")
    t.ok(any("Error: boom" in x for x in logs(r, "stderr") or []), "a thrown Error's message is in stderr", r)
    t.ok(err(r) is not None, "a thrown Error gives a non-null error in the Execution", r)
    # the very next run, sent at once: TSLab aborts requests arriving within
    # 200 ms of a failed cell; the broker must not pass that off as success.
    r = run(b, "console.log('after the error')", language="javascript")
    t.ok(logs(r, "stdout") == ["after the error\n"] or err(r) is not None,
         "a run sent right after a failed run either runs or reports an error (never a silent empty success)", r)
    time.sleep(TSLAB_ABORT_WINDOW)
    # (a number: TSLab itself was seen to forget some object-valued
    # declarations from earlier cells; that is not what this checks)
    r = run(b, "console.log(jsn + 1)", language="javascript")
    t.eq(logs(r, "stdout"), ["42\n"], "the JavaScript context keeps its state after an error", r)
    t.ok(isinstance(n_before, int) and isinstance(r.get("execution_count"), int)
         and r.get("execution_count") > n_before, "execution_count increases in the JavaScript context", r)


def test_typescript(t, b):
    r = run(b, "let tn: number = 5;\nfunction twice(x: number): number { return 2 * x }\ntwice(tn)",
            language="typescript")
    t.eq((r.status, logs(r, "stdout"), r.get("error")), (200, ["10\n"], None),
         "TypeScript with type annotations runs; the value is printed to stdout", r)
    r = run(b, "console.log(`tn=${tn}`)", language="typescript")
    t.eq(logs(r, "stdout"), ["tn=5\n"], "TypeScript console.log and state across runs", r)
    r = run(b, "const bad: number = 'a string';", language="typescript")
    se = "".join(logs(r, "stderr") or [])
    t.ok("Type 'string' is not assignable to type 'number'" in se,
         "a type error is reported on stderr with TypeScript's diagnostic", r)
    t.eq(logs(r, "stdout"), [], "a cell with a type error prints nothing to stdout (it does not run)", r)
    time.sleep(TSLAB_ABORT_WINDOW)
    r = run(b, "throw new Error('ts-boom')", language="typescript")
    t.ok(any("Error: ts-boom" in x for x in logs(r, "stderr") or []) and err(r) is not None,
         "a thrown Error in TypeScript is in stderr and gives a non-null error", r)
    time.sleep(TSLAB_ABORT_WINDOW)
    r = run(b, "twice(21)", language="typescript")
    t.eq(logs(r, "stdout"), ["42\n"], "the TypeScript context works after the errors", r)
    r = run(b, "typeof tn", language="javascript")
    t.ok(logs(r, "stdout") == ["undefined\n"] or "Cannot find name 'tn'" in "".join(logs(r, "stderr") or []),
         "TypeScript state is not visible in the JavaScript context (undefined, or TSLab's unknown-name diagnostic)",
         r)


# --------------------------------------------------------------------------
# Concurrency and forged messages
# --------------------------------------------------------------------------


def test_concurrent(t, b):
    sids = ["cc%d" % i for i in range(5)]
    for sid in sids:
        r = b.create(id=sid)
        t.eq(r.status, 201, "create concurrency sandbox %s" % sid, r)
    jobs = []
    for i in range(20):
        sid = sids[i % 5]
        code = "import time\ntime.sleep(0.05)\n'%s:%d:' + str(sum(range(%d)))" % (sid, i, 1000 + i)
        want = "'%s:%d:%d'" % (sid, i, sum(range(1000 + i)))
        jobs.append((want, harness.in_thread(run, b, code, sid=sid, timeout=120)))
    got = []
    for want, h in jobs:
        r, e = h.join(150)
        got.append(main_text(r) if r is not None else "exception: %r" % e)
    wants = [w for w, _ in jobs]
    bad = ["%s != %s" % (g, w) for g, w in zip(got, wants) if g != w]
    t.ok(not bad, "twenty concurrent runs across five sandboxes each return their own correct result",
         "\n".join(bad))
    for sid in sids:
        d = b.delete("/v1/sandboxes/%s" % sid)
        t.eq(d.status, 200, "delete concurrency sandbox %s" % sid, d)


FORGE = r'''
from jupyter_client.session import Session
k = get_ipython().kernel
parent = k.get_parent()
def inject(session, text):
    m = session.msg("stream", content={"name": "stdout", "text": text}, parent=parent)
    k.iopub_socket.send_multipart(session.serialize(m, ident=[b"stream.stdout"]))
inject(Session(key=b"not-the-kernel-key", username=k.session.username, session=k.session.session), "FORGED-WRONG-SIG\n")
inject(Session(key=b"", username=k.session.username, session=k.session.session), "FORGED-UNSIGNED\n")
inject(k.session, "CONTROL-SIGNED\n")
import time
time.sleep(0.3)
print("genuine output")
'''


def count_drops(b):
    return sum(1 for l in b.log_text().splitlines() if "WARN" in l and "dropped" in l)


def test_forged(t, b):
    ctx = new_ctx(t, b, what="forged messages")
    if not ctx:
        return
    drops_before = count_drops(b)
    r = run(b, FORGE, context_id=ctx)
    t.eq(r.get("error"), None, "the injecting code runs without error", r)
    raw = r.raw.decode("utf-8", "replace")
    t.ok("FORGED-WRONG-SIG" not in raw, "a stream message with a wrong signature never reaches the Execution", r)
    t.ok("FORGED-UNSIGNED" not in raw, "an unsigned stream message never reaches the Execution", r)
    t.ok("genuine output\n" in (logs(r, "stdout") or []), "the genuine output is there", r)
    t.ok("CONTROL-SIGNED\n" in (logs(r, "stdout") or []),
         "control: the same injection signed with the kernel's key does arrive (the path is real)", r)
    drops = wait_until(lambda: count_drops(b) - drops_before >= 2, 2.0)
    t.ok(drops, "the broker log has a WARN about each dropped message (%d new)" % (count_drops(b) - drops_before),
         b.log_tail(30))
    r = run(b, "'still fine'", context_id=ctx)
    t.eq(main_text(r), "'still fine'", "the context works after the forged messages", r)


def test_bad_requests(t, b):
    r = run(b, "1", language="python", context_id="default-python")
    t.eq((r.status, r.err_code()), (400, "invalid_field"), "context_id and language together -> 400 invalid_field", r)
    r = run(b, "1", context_id="ctx-nope")
    t.eq((r.status, r.err_code()), (404, "not_found"), "an unknown context_id -> 404", r)
    r = run(b, "1", sid="no-such-box")
    t.eq((r.status, r.err_code()), (404, "not_found"), "runCode on an unknown sandbox -> 404", r)
    r = run(b, "1", language="cobol")
    t.ok(r.status == 400 and r.err_code() == "invalid_field" and harness.names_field(r.err_message(), "language"),
         "an unknown language -> 400 naming 'language'", r)
    r = b.post(CODE, {"language": "python"})
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "code"), "a missing code -> 400 naming 'code'", r)
    r = run(b, "1", timeout_ms=0)
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "timeout_ms"), "timeout_ms 0 -> 400 naming it", r)
    r = run(b, "1", tenant="bob")
    t.eq((r.status, r.err_code()), (404, "not_found"), "bob's runCode on alice's sandbox -> 404", r)


if __name__ == "__main__":
    harness.main([test_setup, test_basic, test_print_order, test_state, test_pandas, test_matplotlib,
                  test_display_kinds, test_display_update, test_clear_output, test_error,
                  test_timeout_interruptible, test_timeout_sigint_ignored, test_kernel_died, test_input,
                  test_stream, test_stream_disconnect, test_javascript, test_typescript, test_concurrent,
                  test_forged, test_bad_requests])
