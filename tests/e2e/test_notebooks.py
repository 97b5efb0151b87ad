#!/usr/bin/env python3
"""test_notebooks.py - POST /v1/sandboxes/{id}/notebooks:run: a real
notebook run in a real IPython or TSLab kernel comes back as an executed
nbformat 4 notebook that Debian's nbformat validates; outputs in arrival
order (streams merged, execute_result, display_data with PNG, errors),
execution counts, stop_on_error both ways, per-cell timeouts, language
resolution (option, kernelspec), context_id, the query-string and raw
.ipynb forms, SSE events, a client that disconnects mid-run, and every
4xx with the field named.

The contract is docs/api.md ("Notebooks"). One sandbox serves every test."""

import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

try:
    import nbformat  # noqa: E402  (Debian python3-nbformat)
except ImportError:
    # $(PYTHON) may be one without it; Debian's python3 has it.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

SB = "nbs"
RUN = "/v1/sandboxes/%s/notebooks:run" % SB
CTXS = "/v1/sandboxes/%s/contexts" % SB
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def notebook(*cells, kernelspec=None, language_info=None):
    """An nbformat 4.5 notebook; cells are ("code"|"markdown"|"raw", source)."""
    nb = nbformat.v4.new_notebook()
    for kind, src in cells:
        maker = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                 "raw": nbformat.v4.new_raw_cell}[kind]
        nb.cells.append(maker(src))
    if kernelspec:
        nb.metadata["kernelspec"] = kernelspec
    if language_info:
        nb.metadata["language_info"] = language_info
    return json.loads(nbformat.writes(nb))


def run(b, nb, tenant="alice", timeout=120, sid=SB, **opts):
    body = {"notebook": nb}
    body.update(opts)
    return b.post("/v1/sandboxes/%s/notebooks:run" % sid, body, tenant=tenant, timeout=timeout)


def validates(nb):
    """None when nbformat.validate accepts nb, else the reason."""
    try:
        nbformat.validate(nbformat.from_dict(nb))
        return None
    except Exception as e:  # ValidationError and friends
        return "%s: %s" % (type(e).__name__, str(e)[:800])


def cells_of(r):
    nb = r.get("notebook")
    return nb.get("cells") if isinstance(nb, dict) and isinstance(nb.get("cells"), list) else []


def summary(r):
    s = r.get("summary")
    return s if isinstance(s, dict) else {}


def outs(cell):
    o = cell.get("outputs")
    return o if isinstance(o, list) else []


def context_ids(b):
    r = b.get(CTXS)
    return {c.get("id") for c in (r.get("contexts") or [])}


def bad(t, b, body, field, what, status=400, code="invalid_field", path=RUN, **kw):
    r = b.post(path, body, **kw)
    t.ok(r.status == status and r.err_code() == code and harness.error_shape_ok(r.body)
         and harness.names_field(r.err_message(), field),
         "%s -> %d %s naming '%s'" % (what, status, code, field), r)
    return r


# --------------------------------------------------------------------------


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the notebooks sandbox", r)


def test_python(t, b):
    before = context_ids(b)
    nb = notebook(
        ("markdown", "# A title\n\nSome *prose*."),
        # flushed one by one: IPython buffers stdout and stderr apart otherwise
        ("code", "import sys\nprint('hello', flush=True)\nprint('world', flush=True)\n"
                 "print('oops', file=sys.stderr, flush=True)\nprint('again', flush=True)"),
        ("code", "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\ndf"),
        ("code", "   \n"),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 6])\nplt.show()\n'after the plot'"),
        ("raw", "raw text, left alone"),
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
    )
    nb["metadata"]["custom"] = {"kept": [1, 2, 3]}
    nb["cells"][1]["metadata"]["tags"] = ["keep-me"]
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "stale\n"}]
    nb["cells"][1]["execution_count"] = 99
    r = run(b, nb)
    if not t.eq(r.status, 200, "a Python notebook runs: 200", r):
        return
    t.eq(validates(r.get("notebook")), None, "the executed notebook passes nbformat.validate()", r)
    cells = cells_of(r)
    if not t.eq(len(cells), 6, "every cell comes back", r):
        return
    t.eq(cells[0], nb["cells"][0], "the markdown cell is returned unchanged")
    t.eq(cells[5], nb["cells"][5], "the raw cell is returned unchanged")
    t.eq([c.get("id") for c in cells], [c["id"] for c in nb["cells"]], "cell ids are kept")
    t.eq(cells[1].get("metadata"), {"tags": ["keep-me"]}, "cell metadata is kept")
    t.eq(r.get("notebook", {}).get("metadata", {}).get("custom"), {"kept": [1, 2, 3]}, "notebook metadata is kept")
    t.eq(r.get("notebook", {}).get("metadata", {}).get("kernelspec", {}).get("name"), "python3",
         "the kernelspec is kept")
    t.eq(outs(cells[1]), [
        {"output_type": "stream", "name": "stdout", "text": "hello\nworld\n"},
        {"output_type": "stream", "name": "stderr", "text": "oops\n"},
        {"output_type": "stream", "name": "stdout", "text": "again\n"},
    ], "prints become stream outputs in order, consecutive same-name streams merged; stale outputs gone", cells[1])
    counts = [c.get("execution_count") for c in cells]
    c1 = counts[1]
    t.ok(isinstance(c1, int) and c1 >= 1, "the first code cell gets an execution count", counts)
    if isinstance(c1, int):
        t.eq(counts, [None, c1, c1 + 1, None, c1 + 2, None],
             "counts go up by one per executed cell; the blank cell is skipped (null)", counts)
    t.eq(outs(cells[3]), [], "the blank code cell has no outputs")
    o2 = outs(cells[2])
    t.eq([o.get("output_type") for o in o2], ["execute_result"], "the DataFrame is one execute_result", o2)
    if o2:
        data = o2[0].get("data") or {}
        t.ok("<table" in (data.get("text/html") or ""), "it carries text/html with a table", data)
        t.ok("a" in (data.get("text/plain") or "") and "x" in (data.get("text/plain") or ""),
             "and text/plain", data)
        t.eq(o2[0].get("execution_count"), counts[2], "execute_result.execution_count is the cell's")
        t.ok(isinstance(data.get("application/vnd.sandboxd.data+json"), dict),
             "the DataFrame's columns come as application/vnd.sandboxd.data+json", sorted(data))
    o4 = outs(cells[4])
    t.eq([o.get("output_type") for o in o4], ["display_data", "execute_result"],
         "the plot is a display_data before the cell's execute_result", o4)
    if len(o4) == 2:
        png = o4[0].get("data", {}).get("image/png")
        try:
            raw = base64.b64decode("".join(png.split()), validate=True) if isinstance(png, str) else b""
        except ValueError:
            raw = b""
        t.ok(raw.startswith(PNG_SIG) and len(raw) > 1000, "image/png is a base64 PNG (%d bytes)" % len(raw))
        t.eq(o4[1].get("data", {}).get("text/plain"), "'after the plot'", "the last expression follows it")
        chart = o4[0].get("data", {}).get("application/vnd.sandboxd.chart+json")
        t.eq(chart.get("type") if isinstance(chart, dict) else None, "line",
             "the plot also carries its chart as application/vnd.sandboxd.chart+json", sorted(o4[0].get("data", {})))
    s = summary(r)
    t.eq({k: s.get(k) for k in ("cells", "code_cells", "executed", "errors", "failed_cell", "language")},
         {"cells": 6, "code_cells": 4, "executed": 3, "errors": 0, "failed_cell": None, "language": "python"},
         "summary counts cells, code cells, executed cells, no errors", s)
    t.ok(isinstance(s.get("duration_ms"), int) and s["duration_ms"] >= 0, "summary.duration_ms", s)
    t.eq(context_ids(b), before, "the notebook's fresh context is deleted afterwards")
    r2 = run(b, notebook(("code", "df")))
    t.eq(outs(cells_of(r2)[0])[0].get("output_type") if outs(cells_of(r2)[0]) else None, "error",
         "each run gets a fresh context: a name from the last run is undefined", r2)


def test_display_semantics(t, b):
    nb = notebook(
        ("code", "from IPython.display import display, clear_output\n"
                 "h = display('first', display_id=True)\ndisplay('other')\nh.update('updated')"),
        ("code", "from IPython.display import clear_output\nprint('old', flush=True)\n"
                 "clear_output(wait=True)\nprint('new', flush=True)"),
        ("code", "from IPython.display import clear_output, display\ndisplay('gone')\nclear_output()\n"
                 "display('kept')"),
        ("code", "from IPython.display import display, SVG, Latex\n"
                 "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"/>'))\n"
                 "display(Latex(r'$x^2$'))"),
    )
    r = run(b, nb)
    cells = cells_of(r)
    if not t.eq((r.status, len(cells)), (200, 4), "a notebook of displays runs", r):
        return
    t.eq([(o.get("output_type"), (o.get("data") or {}).get("text/plain")) for o in outs(cells[0])],
         [("display_data", "'updated'"), ("display_data", "'other'")],
         "update_display_data replaces the data of the output with that display_id, in place", outs(cells[0]))
    t.eq(outs(cells[1]), [{"output_type": "stream", "name": "stdout", "text": "new\n"}],
         "clear_output(wait=True) clears when the next output arrives", outs(cells[1]))
    t.eq([(o.get("data") or {}).get("text/plain") for o in outs(cells[2])], ["'kept'"],
         "clear_output() clears at once; what follows is kept", outs(cells[2]))
    d3 = [sorted((o.get("data") or {})) for o in outs(cells[3])]
    t.eq(d3, [["image/svg+xml", "text/plain"], ["text/latex", "text/plain"]],
         "SVG and LaTeX keep their MIME types", outs(cells[3]))
    t.eq(validates(r.get("notebook")), None, "and the notebook validates", r)


def test_stop_on_error(t, b):
    nb = notebook(("code", "a = 1\nprint('one')"), ("code", "print('two')\n1/0"), ("code", "print(a + 1)"),
                  ("markdown", "end"))
    r = run(b, nb)
    t.eq(r.status, 200, "a failing notebook still answers 200", r)
    t.eq(validates(r.get("notebook")), None, "and validates", r)
    cells = cells_of(r)
    if len(cells) != 4:
        return t.ok(False, "four cells back", r)
    o1 = outs(cells[1])
    t.eq([o.get("output_type") for o in o1], ["stream", "error"], "the failing cell: its print, then the error", o1)
    if len(o1) == 2:
        t.eq((o1[1].get("ename"), o1[1].get("evalue")), ("ZeroDivisionError", "division by zero"),
             "the error output has ename and evalue", o1[1])
        t.ok(isinstance(o1[1].get("traceback"), list) and o1[1]["traceback"], "and a traceback", o1[1])
    t.eq((cells[2].get("execution_count"), outs(cells[2])), (None, []),
         "with stop_on_error (default) the next cell is not run: count null, outputs []", cells[2])
    s = summary(r)
    t.eq((s.get("executed"), s.get("errors"), s.get("failed_cell")), (2, 1, 1),
         "summary: 2 executed, 1 error, failed_cell 1", s)
    r = run(b, nb, stop_on_error=False)
    cells = cells_of(r)
    t.eq(outs(cells[2]) if len(cells) == 4 else None,
         [{"output_type": "stream", "name": "stdout", "text": "2\n"}],
         "with stop_on_error false the cell after the failure runs (and sees earlier state)", r)
    s = summary(r)
    t.eq((s.get("executed"), s.get("errors"), s.get("failed_cell")), (3, 1, 1),
         "summary: 3 executed, 1 error, failed_cell 1", s)


def test_timeout(t, b):
    nb = notebook(("code", "print('before', flush=True)\nwhile True:\n    pass"), ("code", "print('after')"))
    t0 = time.monotonic()
    r = run(b, nb, timeout_ms=1500, stop_on_error=False)
    el = time.monotonic() - t0
    cells = cells_of(r)
    if not t.eq((r.status, len(cells)), (200, 2), "a notebook with a runaway cell answers 200", r):
        return
    o0 = outs(cells[0])
    errs = [o for o in o0 if o.get("output_type") == "error"]
    t.eq([e.get("ename") for e in errs], ["TimeoutError"], "the runaway cell ends with one TimeoutError output", o0)
    t.eq(o0[0] if o0 else None, {"output_type": "stream", "name": "stdout", "text": "before\n"},
         "what it printed before is kept", o0)
    t.eq(outs(cells[1]), [{"output_type": "stream", "name": "stdout", "text": "after\n"}],
         "the next cell still runs (stop_on_error false)", cells[1])
    t.ok(el < 15, "the timeout cut the cell short (%.1f s)" % el)
    s = summary(r)
    t.eq((s.get("errors"), s.get("failed_cell")), (1, 0), "a timeout counts as a failure", s)
    t.eq(validates(r.get("notebook")), None, "and the notebook validates", r)


def test_typescript(t, b):
    nb = notebook(("code", "const x: number = 2;\nx * 21"), ("code", "console.log('hi ' + x)"),
                  kernelspec={"name": "tslab", "display_name": "TypeScript", "language": "typescript"})
    r = run(b, nb)
    cells = cells_of(r)
    t.eq(summary(r).get("language"), "typescript", "a tslab kernelspec runs as TypeScript", r)
    if len(cells) == 2:
        o = outs(cells[0])
        # TSLab prints a cell's value to stdout; it sends no execute_result
        t.eq(o, [{"output_type": "stream", "name": "stdout", "text": "42\n"}],
             "`const x: number = 2; x * 21` gives 42 (TSLab prints the value)", o)
        t.eq(outs(cells[1]), [{"output_type": "stream", "name": "stdout", "text": "hi 2\n"}],
             "console.log is a stdout stream", cells[1])
        t.ok(isinstance(cells[0].get("execution_count"), int), "TSLab cells get counts", cells[0])
    t.eq(r.get("notebook", {}).get("metadata", {}).get("language_info", {}).get("name"), "typescript",
         "metadata.language_info.name is filled in when missing")
    t.eq(validates(r.get("notebook")), None, "the TypeScript notebook validates", r)
    # the option beats the kernelspec
    nb = notebook(("code", "[1, 2, 3].map(v => v * 2).join(',')"),
                  kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"})
    r = run(b, nb, language="javascript")
    o = outs(cells_of(r)[0]) if cells_of(r) else []
    t.eq((summary(r).get("language"), [x.get("text") for x in o]),
         ("javascript", ["2,4,6\n"]), "language javascript overrides a python kernelspec", r)
    # language_info.name when there is no kernelspec
    r = run(b, notebook(("code", "typeof 1"), language_info={"name": "javascript"}))
    t.eq(summary(r).get("language"), "javascript", "metadata.language_info.name picks the language", r)


def test_context_id(t, b):
    r = b.post(CTXS, {"language": "python"}, timeout=90)
    ctx = r.get("id")
    if not t.ok(r.status == 201 and ctx, "create a context", r):
        return
    r = b.post("/v1/sandboxes/%s/code" % SB, {"code": "secret = 21", "context_id": ctx})
    t.eq(r.get("error"), None, "set state in it with runCode", r)
    r = run(b, notebook(("code", "secret * 2")), context_id=ctx)
    o = outs(cells_of(r)[0]) if cells_of(r) else []
    t.eq([(x.get("data") or {}).get("text/plain") for x in o], ["42"], "context_id runs in that context's state", r)
    t.ok(ctx in context_ids(b), "a given context is not deleted after the run")
    bad(t, b, {"notebook": notebook(("code", "1")), "context_id": ctx, "language": "typescript"}, "language",
        "language contradicting the context's")
    r = run(b, notebook(("code", "1")), context_id="ctx-nope")
    t.eq((r.status, r.err_code()), (404, "not_found"), "an unknown context_id -> 404", r)
    b.delete("%s/%s" % (CTXS, ctx))


def test_query_and_raw_forms(t, b):
    nb = notebook(("code", "1/0"), ("code", "print('ran')"))
    r = b.post(RUN + "?stop_on_error=false&timeout_ms=20000", nb)
    cells = cells_of(r)
    t.eq((r.status, outs(cells[1]) if len(cells) == 2 else None),
         (200, [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]),
         "a bare notebook body takes stop_on_error from the query string", r)
    raw = json.dumps(nb).encode()
    r = b.request("POST", RUN, raw=raw, headers={"Content-Type": "application/x-ipynb+json"})
    cells = cells_of(r)
    t.eq((r.status, outs(cells[1]) if len(cells) == 2 else None, summary(r).get("failed_cell")), (200, [], 0),
         "a raw application/x-ipynb+json upload runs with the defaults (stop_on_error)", r)
    nbts = notebook(("code", "const y: string = 'ts'; y"))
    r = b.request("POST", RUN + "?language=typescript", raw=json.dumps(nbts).encode(),
                  headers={"Content-Type": "application/x-ipynb+json"})
    t.eq(summary(r).get("language"), "typescript", "?language= picks the language of a raw upload", r)
    bad(t, b, nb, "stop_on_error", "?stop_on_error=maybe", path=RUN + "?stop_on_error=maybe")
    bad(t, b, nb, "timeout_ms", "?timeout_ms=0", path=RUN + "?timeout_ms=0")
    bad(t, b, nb, "language", "?language=cobol", path=RUN + "?language=cobol")


def test_sse(t, b):
    nb = notebook(("markdown", "m"), ("code", "print('a')\ndisplay('d')\nprint('b')\n'r'"), ("code", ""),
                  ("code", "raise ValueError('v')"), ("code", "print('never')"))
    h, s = b.sse(RUN, {"notebook": nb}, timeout=120)
    if not t.ok(s is not None, "Accept: text/event-stream streams the run", h):
        return
    evs = s.events()
    names = [e.name for e in evs]
    want = ["start", "cell_start", "output", "output", "output", "output", "cell_done", "cell_start", "cell_done",
            "cell_start", "output", "cell_done", "done"]
    t.eq(names, want, "events: start, per code cell cell_start/outputs/cell_done, then done; "
         "nothing for the cell after the failure", evs)
    if names != want:
        return
    t.eq({k: evs[0].data.get(k) for k in ("cells", "code_cells", "language")},
         {"cells": 5, "code_cells": 4, "language": "python"}, "start tells cells, code_cells, language", evs[0])
    t.eq([(e.data.get("index"), e.data.get("code_index")) for e in evs if e.name == "cell_start"],
         [(1, 0), (2, 1), (3, 2)], "cell_start gives the cell's index and its index among code cells")
    outputs = [(e.data.get("index"), e.data.get("output", {}).get("output_type"),
                e.data.get("output", {}).get("text") or (e.data.get("output", {}).get("data") or {}).get("text/plain")
                or e.data.get("output", {}).get("ename")) for e in evs if e.name == "output"]
    t.eq(outputs, [(1, "stream", "a\n"), (1, "display_data", "'d'"), (1, "stream", "b\n"),
                   (1, "execute_result", "'r'"), (3, "error", "ValueError")],
         "output events carry nbformat outputs in arrival order", outputs)
    done = [e.data for e in evs if e.name == "cell_done"]
    t.eq([(d.get("index"), d.get("status")) for d in done], [(1, "ok"), (2, "skipped"), (3, "error")],
         "cell_done status ok, skipped (blank), error", done)
    t.ok(isinstance(done[0].get("execution_count"), int) and done[1].get("execution_count") is None
         and isinstance(done[0].get("duration_ms"), int), "cell_done has execution_count and duration_ms", done)
    fin = evs[-1].data
    t.eq(validates(fin.get("notebook")), None, "done carries the executed notebook, which validates", fin)
    t.eq((fin.get("summary") or {}).get("failed_cell"), 3, "and the summary", fin)
    cells = (fin.get("notebook") or {}).get("cells") or []
    t.eq(len(outs(cells[1])) if len(cells) == 5 else None, 4, "the done notebook has the streamed outputs")


def test_disconnect(t, b):
    before = context_ids(b)
    nb = notebook(("code", "import time\nprint('started', flush=True)\ntime.sleep(120)"), ("code", "print('no')"))
    h, s = b.sse(RUN, {"notebook": nb}, timeout=120)
    if not t.ok(s is not None, "a long notebook run starts streaming", h):
        return
    seen = None
    for e in s:
        if e.name == "output":
            seen = e
            break
    t.ok(seen is not None, "its first output arrives", seen)
    during = context_ids(b) - before
    t.eq(len(during), 1, "while it runs, its temporary context is listed", during)
    s.close()
    left = wait_until(lambda: not (context_ids(b) - before), 15.0)
    t.ok(left, "after the client disconnects, the temporary context is deleted", context_ids(b))
    t.eq(context_ids(b), set(), "GET contexts shows none left", context_ids(b))
    r = run(b, notebook(("code", "'alive'")), timeout=60)
    t.eq([(o.get("data") or {}).get("text/plain") for o in outs(cells_of(r)[0])] if cells_of(r) else None,
         ["'alive'"], "the sandbox runs the next notebook", r)


def test_bad_requests(t, b):
    good = notebook(("code", "1"))
    nb3 = dict(good, nbformat=3)
    bad(t, b, {"notebook": nb3}, "notebook.nbformat", "nbformat 3")
    bad(t, b, nb3, "nbformat", "a bare notebook with nbformat 3")
    bad(t, b, {"notebook": dict(good, cells={})}, "notebook.cells", "cells not an array")
    bad(t, b, {"notebook": dict(good, cells=[1])}, "notebook.cells[0]", "a cell that is not an object")
    bad(t, b, {"notebook": dict(good, cells=[{"source": "1"}])}, "notebook.cells[0].cell_type", "no cell_type")
    bad(t, b, {"notebook": dict(good, cells=[{"cell_type": "code", "source": 7}])}, "notebook.cells[0].source",
        "a source that is a number")
    bad(t, b, {"notebook": dict(good, cells=[{"cell_type": "markdown", "source": ["a", 1]}])},
        "notebook.cells[0].source", "a source array holding a number")
    bad(t, b, {"notebook": dict(good, metadata=[])}, "notebook.metadata", "metadata not an object")
    bad(t, b, {"notebook": dict(good, cells=[{"cell_type": "raw", "source": ""}] * 10001)}, "notebook.cells",
        "10001 cells")
    bad(t, b, {"notebook": dict(good, cells=[{"cell_type": "code", "source": "x" * (1024 * 1024 + 1),
                                               "metadata": {}, "outputs": []}])},
        "notebook.cells[0].source", "a code cell over max_body_bytes")
    bad(t, b, {"notebook": good, "language": "cobol"}, "language", "language cobol")
    bad(t, b, {"notebook": good, "timeout_ms": 0}, "timeout_ms", "timeout_ms 0")
    bad(t, b, {"notebook": good, "timeout_ms": 3600001}, "timeout_ms", "timeout_ms over the maximum")
    bad(t, b, {"notebook": good, "stop_on_error": "yes"}, "stop_on_error", "stop_on_error a string")
    bad(t, b, {"notebook": good, "colour": "red"}, "colour", "an unknown wrapper field")
    bad(t, b, {"notebook": "x"}, "notebook", "notebook a string")
    bad(t, b, {"hello": 1}, "notebook", "neither a wrapper nor a notebook")
    bad(t, b, {"notebook": notebook(("code", "1"), kernelspec={"name": "ir", "display_name": "R",
                                                             "language": "R"})},
        "metadata.kernelspec", "an R kernelspec")
    bad(t, b, {"notebook": notebook(("code", "1"), language_info={"name": "ruby"})},
        "metadata.language_info.name", "language_info ruby")
    r = b.request("POST", RUN, raw=b"{not json", headers={"Content-Type": "application/json"})
    t.eq((r.status, r.err_code()), (400, "invalid_json"), "a body that is not JSON -> 400 invalid_json", r)
    r = b.get(RUN)
    t.eq(r.status, 405, "GET -> 405", r)
    r = run(b, good, sid="no-such-box")
    t.eq((r.status, r.err_code()), (404, "not_found"), "an unknown sandbox -> 404", r)
    r = run(b, good, tenant="bob")
    t.eq((r.status, r.err_code()), (404, "not_found"), "bob running a notebook in alice's sandbox -> 404", r)
    r = run(b, good, tenant=None)
    t.eq(r.status, 401, "no token -> 401", r)


def test_sizes(t, b):
    # Between max_body_bytes (1 MiB) and max_notebook_bytes (16 MiB): a
    # notebook is accepted where another JSON body is refused.
    big = "y" * (3 * 1024 * 1024)
    nb = notebook(("markdown", big), ("code", "'ok'"))
    r = run(b, nb)
    src = cells_of(r)[0].get("source") if cells_of(r) else None
    t.ok(r.status == 200 and "".join(src or []) == big and summary(r).get("executed") == 1,
         "a 3 MiB notebook runs (max_notebook_bytes), its big markdown cell returned whole", r.status)
    body = json.dumps({"code": "'" + big + "'"}).encode()
    head = ("POST /v1/sandboxes/%s/code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (SB, b.tokens["alice"], len(body))).encode()
    r = b.raw_request(head, [body])
    t.ok(r is not None and (r.status, r.err_code()) == (413, "body_too_large"),
         "the same size to /code is 413 (max_body_bytes)", r)
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (RUN, b.tokens["alice"], 17 * 1024 * 1024)).encode()
    r = b.raw_request(head, [b"{" + b" " * 65536])
    t.ok(r is not None and r.status == 413 and r.err_code() == "body_too_large",
         "a declared 17 MiB notebook -> 413 body_too_large before it is read", r)
    chunked = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n" % (RUN, b.tokens["alice"])).encode()
    piece = b" " * (1024 * 1024)
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * 17 + [b"0\r\n\r\n"]
    r = b.raw_request(chunked, chunks, timeout=60)
    t.ok(r is not None and r.status == 413 and r.err_code() == "body_too_large",
         "a chunked body growing past 16 MiB -> 413 body_too_large", r)


def test_sandbox_deleted_midrun(t, b):
    # Last: it deletes the file's sandbox.
    nb = notebook(("code", "import time\nprint('started', flush=True)\ntime.sleep(120)"), ("code", "print('x')"))
    h, s = b.sse(RUN, {"notebook": nb, "stop_on_error": False}, timeout=120)
    if not t.ok(s is not None, "a long notebook run starts streaming", h):
        return
    evs = []
    for e in s:
        evs.append(e)
        if e.name == "output" and len([x for x in evs if x.name == "output"]) == 1:
            r = b.delete("/v1/sandboxes/%s" % SB, timeout=60)
            t.eq(r.status, 200, "delete the sandbox while a cell runs", r)
    names = [e.name for e in evs]
    t.ok(names and names[-1] == "error" and "done" not in names,
         "the stream ends with an error event, no done", names)
    last = evs[-1].data if evs and isinstance(evs[-1].data, dict) else {}
    # conflict while the delete is still under way, not_found once it is done
    t.ok(last.get("code") in ("not_found", "conflict") and "nbs" in (last.get("message") or ""),
         "the error event says the sandbox is gone (or going), with a message naming it", last)
    died = [e.data.get("output", {}).get("ename") for e in evs if e.name == "output"
            and e.data.get("output", {}).get("output_type") == "error"]
    t.eq(died, ["KernelDied"], "the running cell first reports its kernel's death as an error output", evs)


if __name__ == "__main__":
    harness.main([test_setup, test_python, test_display_semantics, test_stop_on_error, test_timeout, test_typescript, test_context_id,
                  test_query_and_raw_forms, test_sse, test_disconnect, test_bad_requests, test_sizes,
                  test_sandbox_deleted_midrun])
