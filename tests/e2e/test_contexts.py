#!/usr/bin/env python3
"""test_contexts.py - code contexts: create (fields, cwd, env, validation),
list and get, interrupt, restart, delete (with a run in progress),
serialisation of runs on one context, parallelism across contexts, tenant
isolation, and the context_id/language rules of runCode.

The contract is docs/api.md ("Code contexts", "runCode") and issue 3."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SB = "ctxs"
CTXS = "/v1/sandboxes/%s/contexts" % SB
CODE = "/v1/sandboxes/%s/code" % SB
CTX_KEYS = {"id", "language", "cwd", "status", "restarted", "created_at", "env"}
SLACK = 1.5


def run(b, code, ctx=None, tenant="alice", timeout=90, **fields):
    body = {"code": code}
    if ctx is not None:
        body["context_id"] = ctx
    body.update(fields)
    return b.post(CODE, body, tenant=tenant, timeout=timeout)


def create_ctx(b, tenant="alice", **fields):
    return b.post(CTXS, fields, tenant=tenant, timeout=90)


def ctx_path(ctx, suffix=""):
    return "%s/%s%s" % (CTXS, ctx, suffix)


def main_text(r):
    rs = r.get("results") if isinstance(r.get("results"), list) else []
    mains = [x for x in rs if isinstance(x, dict) and x.get("is_main_result") is True]
    return mains[0].get("text") if len(mains) == 1 else None


def err_name(r):
    e = r.get("error")
    return e.get("name") if isinstance(e, dict) else None


def status_of(b, ctx):
    return b.get(ctx_path(ctx)).get("status")


def warm_up(t, b, ctx, what):
    r = run(b, "0", ctx)
    return t.eq(main_text(r), "0", "%s: the context runs code" % what, r)


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the contexts sandbox", r)


def test_create(t, b):
    r = create_ctx(b, language="python")
    t.eq(r.status, 201, "POST contexts {language: python} answers 201", r)
    body = r.body if isinstance(r.body, dict) else {}
    t.ok(CTX_KEYS <= set(body), "the context has id, language, cwd, status, restarted, created_at, env", r)
    t.ok(isinstance(body.get("id"), str) and harness.ID_RE.match(body["id"] or "") is not None,
         "id is a non-empty identifier", r)
    t.eq((body.get("language"), body.get("cwd"), body.get("status"), body.get("restarted"), body.get("env")),
         ("python", "/workspace", "idle", False, {}), "defaults: python, /workspace, idle, not restarted, env {}", r)
    t.ok(isinstance(body.get("created_at"), str) and harness.TIME_RE.match(body["created_at"]) is not None,
         "created_at is an ISO-8601 UTC time", r)
    if body.get("id"):
        r = run(b, "import os\nos.getcwd()", body["id"])
        t.eq(main_text(r), "'/workspace'", "the kernel runs in /workspace", r)
    r = create_ctx(b)
    t.eq((r.status, r.get("language")), (201, "python"), "language defaults to python", r)
    if r.get("id"):
        d = b.delete(ctx_path(r.get("id")))
        t.eq(d.status, 200, "delete it", d)


def test_cwd_env(t, b):
    r = create_ctx(b, language="python", cwd="/tmp", env={"SBX_CTX_A": "alpha", "SBX_CTX_B": "b\u00e9ta"})
    t.eq(r.status, 201, "create a context with cwd /tmp and env", r)
    t.eq((r.get("cwd"), r.get("env")), ("/tmp", {"SBX_CTX_A": "alpha", "SBX_CTX_B": "b\u00e9ta"}),
         "the context reports the cwd and env it was given", r)
    ctx = r.get("id")
    if ctx:
        r = run(b, "import os\n(os.getcwd(), os.environ.get('SBX_CTX_A'), os.environ.get('SBX_CTX_B'))", ctx)
        t.eq(main_text(r), "('/tmp', 'alpha', 'b\u00e9ta')", "os.getcwd() and os.environ reflect them", r)
        r = run(b, "import os\nrepr(os.environ.get('SBX_CTX_A'))")
        t.eq(main_text(r), "'None'", "another context (the default one) does not get that env", r)
    r = create_ctx(b, language="python", cwd="/no/such/dir")
    t.eq((r.status, r.err_code()), (422, "bad_cwd"), "a cwd that does not exist -> 422 bad_cwd", r)
    r = create_ctx(b, language="javascript", cwd="/no/such/dir")
    t.eq((r.status, r.err_code()), (422, "bad_cwd"), "... for a javascript context too", r)
    r = create_ctx(b, language="python", cwd="relative/dir")
    t.ok(r.status == 400 and r.err_code() == "invalid_field" and harness.names_field(r.err_message(), "cwd"),
         "a relative cwd -> 400 invalid_field naming 'cwd'", r)
    r = create_ctx(b, language="python", env={"A": 1})
    t.ok(r.status == 400 and r.err_code() == "invalid_field" and "env" in (r.err_message() or ""),
         "a non-string env value -> 400 naming env", r)


def test_bad_language(t, b):
    for lang in ("cobol", "Python", 3, ""):
        r = create_ctx(b, language=lang)
        t.ok(r.status == 400 and r.err_code() == "invalid_field" and harness.names_field(r.err_message(), "language"),
             "language %r -> 400 invalid_field naming 'language'" % (lang,), r)
    r = create_ctx(b, language="python", colour="blue")
    t.ok(r.status == 400 and r.err_code() == "invalid_field" and harness.names_field(r.err_message(), "colour"),
         "an unknown field -> 400 naming it", r)
    r = b.post(CTXS, raw=b"[1,2]")
    t.eq((r.status, r.err_code()), (400, "invalid_json"), "a body that is not an object -> 400 invalid_json", r)
    r = b.post("/v1/sandboxes/no-such-box/contexts", {"language": "python"})
    t.eq((r.status, r.err_code()), (404, "not_found"), "contexts on a missing sandbox -> 404", r)


def test_list_get(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(r.status == 201 and ctx, "create a context to list", r):
        return
    created = r.body
    lst = b.get(CTXS)
    t.eq(lst.status, 200, "GET contexts answers 200", lst)
    items = lst.get("contexts") if isinstance(lst.get("contexts"), list) else []
    ids = [c.get("id") for c in items]
    t.ok(ctx in ids, "the list has the new context", lst)
    t.eq(len(ids), len(set(ids)), "no context is listed twice", ids)
    t.ok(all(CTX_KEYS <= set(c) for c in items), "every listed context has all fields", lst)
    g = b.get(ctx_path(ctx))
    t.eq(g.status, 200, "GET one context answers 200", g)
    t.eq({k: g.get(k) for k in CTX_KEYS}, {k: created.get(k) for k in CTX_KEYS},
         "GET answers the same object the create did", g)
    g = b.get(ctx_path("ctx-0000000000000000"))
    t.eq((g.status, g.err_code()), (404, "not_found"), "GET an unknown context -> 404 not_found", g)
    run(b, "1")
    lst = b.get(CTXS)
    ids = [c.get("id") for c in lst.get("contexts") or []]
    t.ok("default-python" in ids, "after a runCode without context_id, default-python is listed", lst)
    g = b.get(ctx_path("default-python"))
    t.eq((g.status, g.get("language")), (200, "python"), "default-python can be fetched", g)


def test_interrupt(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(ctx, "create a context to interrupt", r) or not warm_up(t, b, ctx, "interrupt"):
        return
    run(b, "before_loop = 'kept'", ctx)
    h = harness.in_thread(run, b, "import time\nwhile True:\n    time.sleep(0.01)", ctx, timeout_ms=60000)
    busy = wait_until(lambda: status_of(b, ctx) == "busy", 5.0, 0.05)
    t.ok(busy, "the context reports busy while the loop runs", b.get(ctx_path(ctx)))
    time.sleep(0.3)
    t0 = time.monotonic()
    i = b.post(ctx_path(ctx, "/interrupt"))
    t.eq(i.status, 200, "POST interrupt answers 200", i)
    r, e = h.join(10)
    dt = time.monotonic() - t0
    t.ok(r is not None and dt < 2.0, "the interrupted run ends within 2 s of the interrupt (%.2f s)" % dt, r or e)
    if r is not None:
        t.eq(err_name(r), "KeyboardInterrupt", "the run ends with a KeyboardInterrupt error", r)
    r = run(b, "before_loop", ctx)
    t.eq(main_text(r), "'kept'", "the context works after the interrupt and keeps its state", r)
    g = b.get(ctx_path(ctx))
    t.eq((g.get("status"), g.get("restarted")), ("idle", False), "the context is idle and not restarted", g)
    i = b.post(ctx_path(ctx, "/interrupt"))
    t.eq(i.status, 200, "interrupting an idle context answers 200", i)
    r = run(b, "before_loop", ctx)
    t.eq(main_text(r), "'kept'", "an interrupt while idle does not disturb the next run", r)
    i = b.post(ctx_path("ctx-0000000000000000", "/interrupt"))
    t.eq((i.status, i.err_code()), (404, "not_found"), "interrupt an unknown context -> 404", i)


def test_interrupt_javascript(t, b):
    r = create_ctx(b, language="javascript")
    ctx = r.get("id")
    if not t.ok(ctx, "create a javascript context to interrupt", r):
        return
    t.eq(r.get("language"), "javascript", "the context's language is javascript", r)
    run(b, "let spins = 0", ctx)
    time.sleep(0.1)
    h = harness.in_thread(run, b, "while (true) { spins++ }", ctx, timeout_ms=60000)
    busy = wait_until(lambda: status_of(b, ctx) == "busy", 5.0, 0.05)
    t.ok(busy, "the javascript context reports busy", b.get(ctx_path(ctx)))
    time.sleep(0.3)
    t0 = time.monotonic()
    i = b.post(ctx_path(ctx, "/interrupt"))
    t.eq(i.status, 200, "POST interrupt on the javascript context answers 200", i)
    r, e = h.join(10)
    dt = time.monotonic() - t0
    t.ok(r is not None and dt < 2.0, "the javascript loop ends within 2 s of the interrupt (%.2f s)" % dt, r or e)
    time.sleep(0.35)  # TSLab aborts requests for 200 ms after a failed cell
    r = run(b, "console.log(spins > 0)", ctx)
    t.eq(r.get("logs", {}).get("stdout"), ["true\n"], "the javascript context keeps its state after an interrupt", r)


def test_restart(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(ctx, "create a context to restart", r):
        return
    run(b, "rv = 1", ctx)
    r = run(b, "rv + 1", ctx)
    t.eq(main_text(r), "2", "state before the restart", r)
    rs = b.post(ctx_path(ctx, "/restart"), timeout=60)
    t.eq(rs.status, 200, "POST restart answers 200", rs)
    t.eq((rs.get("id"), rs.get("restarted"), rs.get("status")), (ctx, True, "idle"),
         "restart answers the context with restarted: true, idle", rs)
    r = run(b, "rv", ctx)
    t.eq(err_name(r), "NameError", "after the restart the state is empty", r)
    t.eq(r.get("execution_count"), 1, "the execution count starts again at 1", r)
    g = b.get(ctx_path(ctx))
    t.eq(g.get("restarted"), True, "GET shows restarted: true", g)

    # 10 s, not longer: if the restart waits for the run, the file stays short
    h = harness.in_thread(run, b, "import time\ntime.sleep(10)", ctx, timeout_ms=60000)
    wait_until(lambda: status_of(b, ctx) == "busy", 5.0, 0.05)
    t0 = time.monotonic()
    rs = b.post(ctx_path(ctx, "/restart"), timeout=60)
    t.ok(rs.elapsed < 5.0, "restart during a run answers promptly (%.2f s)" % rs.elapsed, rs)
    t.eq(rs.status, 200, "restart during a run answers 200", rs)
    r, e = h.join(20)
    dt = time.monotonic() - t0
    t.ok(r is not None and err_name(r) == "KernelDied", "the run in progress ends with KernelDied", r or e)
    t.ok(dt < 5.0, "... promptly (%.2f s after the restart request)" % dt)
    r = run(b, "'alive'", ctx)
    t.eq(main_text(r), "'alive'", "the context runs code after that restart", r)
    rs = b.post(ctx_path("ctx-0000000000000000", "/restart"))
    t.eq((rs.status, rs.err_code()), (404, "not_found"), "restart an unknown context -> 404", rs)


def test_delete(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(ctx, "create a context to delete", r) or not warm_up(t, b, ctx, "delete"):
        return
    h = harness.in_thread(run, b, "import time\ntime.sleep(30)", ctx, timeout_ms=60000)
    busy = wait_until(lambda: status_of(b, ctx) == "busy", 5.0, 0.05)
    t.ok(busy, "the context is busy before the delete", b.get(ctx_path(ctx)))
    t0 = time.monotonic()
    d = b.delete(ctx_path(ctx))
    t.eq(d.status, 200, "DELETE a busy context answers 200", d)
    r, e = h.join(10)
    dt = time.monotonic() - t0
    t.ok(r is not None and err_name(r) == "KernelDied", "the run in progress ends with KernelDied", r or e)
    t.ok(dt < 5.0, "... promptly (%.2f s)" % dt)
    g = b.get(ctx_path(ctx))
    t.eq((g.status, g.err_code()), (404, "not_found"), "GET the deleted context -> 404", g)
    r = run(b, "1", ctx)
    t.eq((r.status, r.err_code()), (404, "not_found"), "runCode on the deleted context -> 404", r)
    d = b.delete(ctx_path(ctx))
    t.eq((d.status, d.err_code()), (404, "not_found"), "DELETE it again -> 404", d)
    lst = b.get(CTXS)
    t.ok(ctx not in [c.get("id") for c in lst.get("contexts") or []], "it is no longer listed", lst)
    k = b.exec(SB, "pgrep -c -f '[i]pykernel_launcher' || true")
    t.ok(k.status == 200, "exec still works in the sandbox after the delete", k)


def test_serialised(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(ctx, "create a context for serialisation", r) or not warm_up(t, b, ctx, "serialisation"):
        return
    run(b, "order = []", ctx)
    hs = []
    for i in range(5):
        code = "import time\norder.append(('start', %d))\ntime.sleep(0.15)\norder.append(('end', %d))\n%d" % (i, i, i)
        hs.append(harness.in_thread(run, b, code, ctx, timeout_ms=30000))
        time.sleep(0.05)
    res = [h.join(30) for h in hs]
    got = [main_text(r) if r is not None else repr(e) for r, e in res]
    t.eq(got, ["0", "1", "2", "3", "4"], "five queued runs all answer with their own result", res)
    counts = [r.get("execution_count") if r is not None else None for r, _ in res]
    t.ok(all(isinstance(c, int) for c in counts) and counts == sorted(counts) and len(set(counts)) == 5,
         "their execution counts increase in arrival order", counts)
    r = run(b, "print(order)", ctx)
    want = [(k, i) for i in range(5) for k in ("start", "end")]
    t.eq(r.get("logs", {}).get("stdout"), [repr(want) + "\n"], "they ran one at a time, in arrival order (no overlap)",
         r)


def test_parallel(t, b):
    a = create_ctx(b, language="python").get("id")
    c = create_ctx(b, language="python").get("id")
    if not t.ok(a and c, "create two contexts for parallelism"):
        return
    warm_up(t, b, a, "parallel A")
    warm_up(t, b, c, "parallel B")
    t0 = time.monotonic()
    hs = [harness.in_thread(run, b, "import time\ntime.sleep(1)\n'%s'" % x, x) for x in (a, c)]
    res = [h.join(30) for h in hs]
    dt = time.monotonic() - t0
    t.eq([main_text(r) if r is not None else repr(e) for r, e in res], ["'%s'" % a, "'%s'" % c],
         "two sleeping runs on two contexts both answer", res)
    t.ok(dt < 1.8, "different contexts run in parallel: 2 x sleep(1) in %.2f s (< 1.8 s)" % dt)


def test_tenants(t, b):
    r = create_ctx(b, language="python")
    ctx = r.get("id")
    if not t.ok(ctx, "alice creates a context", r):
        return
    run(b, "secret = 's3cr3t'", ctx)
    checks = [
        ("GET", ctx_path(ctx), None, "bob GETs alice's context"),
        ("GET", CTXS, None, "bob lists alice's contexts"),
        ("POST", CTXS, {"language": "python"}, "bob creates a context in alice's sandbox"),
        ("POST", CODE, {"code": "secret", "context_id": ctx}, "bob runs code in alice's context"),
        ("POST", CODE, {"code": "1"}, "bob runs code in alice's sandbox's default context"),
        ("POST", ctx_path(ctx, "/interrupt"), None, "bob interrupts alice's context"),
        ("POST", ctx_path(ctx, "/restart"), None, "bob restarts alice's context"),
        ("DELETE", ctx_path(ctx), None, "bob deletes alice's context"),
    ]
    for method, path, body, what in checks:
        r = b.request(method, path, body, tenant="bob")
        t.eq((r.status, r.err_code()), (404, "not_found"), what + " -> 404", r)
        t.ok("s3cr3t" not in r.raw.decode("utf-8", "replace"), what + ": nothing of alice's leaks", r)
    r = b.get(ctx_path(ctx), tenant=None)
    t.eq(r.status, 401, "no token -> 401", r)
    r = run(b, "secret", ctx)
    t.eq(main_text(r), "'s3cr3t'", "alice's context is untouched (state kept)", r)
    g = b.get(ctx_path(ctx))
    t.eq(g.get("restarted"), False, "alice's context reports restarted: false", g)


def test_code_context_rules(t, b):
    r = run(b, "1", "default-python", language="python")
    t.eq((r.status, r.err_code()), (400, "invalid_field"), "context_id and language together -> 400", r)
    t.ok(harness.names_field(r.err_message(), "context_id") or harness.names_field(r.err_message(), "language"),
         "the message names the fields", r)
    r = run(b, "1", "ctx-0000000000000000")
    t.eq((r.status, r.err_code()), (404, "not_found"), "an unknown context_id -> 404 not_found", r)
    r = run(b, "1", 42)
    t.ok(r.status == 400 and harness.names_field(r.err_message(), "context_id"),
         "a non-string context_id -> 400 naming it", r)
    h, s = b.sse(CODE, {"code": "1", "context_id": "ctx-0000000000000000"})
    if s is not None:
        s.close()
    t.eq((s is None, h.status), (True, 404), "SSE with an unknown context_id -> plain 404", h)


if __name__ == "__main__":
    harness.main([test_setup, test_create, test_cwd_env, test_bad_language, test_list_get, test_interrupt,
                  test_interrupt_javascript, test_restart, test_delete, test_serialised, test_parallel,
                  test_tenants, test_code_context_rules])
