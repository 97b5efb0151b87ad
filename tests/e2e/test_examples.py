#!/usr/bin/env python3
"""test_examples.py - the example notebooks through the real broker with the
built command-line runner, src/run/sandboxd-run.

What a reader of examples/notebooks/ would look for in the executed copies:
the summary table's numbers, the chart's title and series, the TypeScript
outputs, the figures computed from the uploaded CSV; that the copies are
valid notebooks; and what a user of sandboxd-run notices: exit status 1 and
the failing cell named for a notebook with an error, one progress line per
cell (a bar with N/M on a terminal), --upload, usage errors with exit 2 and
a message, the sandbox it made deleted afterwards (also after Ctrl-C)."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import nbformat  # noqa: E402  (Debian python3-nbformat; configure prefers Debian's python3)

RUNNER = os.environ.get("SANDBOXD_RUN_BIN", "src/run/sandboxd-run")
EXAMPLES = os.path.join(harness.SRCDIR, "examples", "notebooks")
PROGRESS_RE = re.compile(r"^cell (\d+)/(\d+) \(index (\d+)\) (ok|error|skipped) [0-9.]+ s")
TMP = tempfile.mkdtemp(prefix="sandboxd-examples-")


def run(b, args, env_extra=None, timeout=300, token=True):
    """Run the runner against broker b; (returncode, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("SANDBOXD_URL", None)
    env.pop("SANDBOXD_TOKEN", None)
    if b is not None:
        env["SANDBOXD_URL"] = b.url
        if token:
            env["SANDBOXD_TOKEN"] = b.tokens["alice"]
    if env_extra:
        env.update(env_extra)
    p = subprocess.run([os.path.abspath(RUNNER)] + args, capture_output=True, text=True, env=env,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def load(path):
    with open(path) as f:
        return json.load(f)


def text_of(v):
    return "".join(v) if isinstance(v, list) else (v or "")


def cell_text(cell):
    """Everything a reader sees as text in a code cell's outputs."""
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append(text_of(o["text"]))
        elif o["output_type"] in ("execute_result", "display_data"):
            parts.append(text_of(o["data"].get("text/plain")))
        elif o["output_type"] == "error":
            parts.append("%s: %s" % (o["ename"], o["evalue"]))
    return "".join(parts)


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def valid(t, path, what):
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
        t.ok(True, "%s validates under nbformat %s" % (what, nbformat.__version__))
    except Exception as e:  # noqa: BLE001 - the message is the diagnostic
        t.ok(False, "%s validates under nbformat" % what, str(e)[:2000])


def no_sandboxes(t, b, what):
    r = b.get("/v1/sandboxes")
    t.eq(r.get("sandboxes"), [], "%s: the sandbox it created is gone" % what, r)


def progress_lines(stderr):
    return [m for m in (PROGRESS_RE.match(l) for l in stderr.splitlines()) if m]


def markdown_unchanged(t, src, out, what):
    a = [(c.get("id"), c["source"]) for c in src["cells"] if c["cell_type"] == "markdown"]
    b = [(c.get("id"), c["source"]) for c in out["cells"] if c["cell_type"] == "markdown"]
    t.eq(b, a, "%s: markdown cells come back unchanged, ids kept" % what)


# --------------------------------------------------------------------------


def test_analysis(t, b):
    src_path = os.path.join(EXAMPLES, "analysis.ipynb")
    out = os.path.join(TMP, "analysis.out.ipynb")
    rc, _, err = run(b, [src_path, "-o", out])
    t.eq(rc, 0, "analysis.ipynb runs with exit 0", err)
    if not os.path.exists(out):
        t.ok(False, "analysis: the executed notebook is written", err)
        return
    valid(t, out, "analysis.out.ipynb")
    src, nb = load(src_path), load(out)
    markdown_unchanged(t, src, nb, "analysis")
    cells = code_cells(nb)
    t.eq([c["execution_count"] for c in cells], list(range(1, len(cells) + 1)),
         "analysis: every code cell executed, counted 1..%d" % len(cells))
    lines = progress_lines(err)
    t.eq([(int(m.group(1)), int(m.group(2)), m.group(4)) for m in lines],
         [(i + 1, len(cells), "ok") for i in range(len(cells))],
         "analysis: one progress line per code cell on stderr (not a tty)", err)

    # the summary table: HTML and data with the totals
    table = [o for o in cells[1]["outputs"] if o["output_type"] == "execute_result"]
    t.eq(len(table), 1, "analysis: the summary cell has one result", cells[1]["outputs"])
    if table:
        html = text_of(table[0]["data"].get("text/html"))
        t.ok("<table" in html and all(re.search(r"<td>%s</td>" % n, html) for n in ("895", "686", "500")),
             "analysis: the summary table is HTML with the totals 895, 686, 500", html[:1500])
        t.ok(re.search(r"<th>North</th>\s*<td>895</td>\s*<td>149.2</td>\s*<td>Jun</td>\s*<td>43.3</td>", html),
             "analysis: North's row reads 895, 149.2, Jun, 43.3 %", html[:2000])
        data = table[0]["data"].get("application/vnd.sandboxd.data+json") or {}
        t.eq((data.get("index"), (data.get("data") or {}).get("total")), (["North", "South", "West"], [895, 686, 500]),
             "analysis: the table also comes as data (regions and totals)", data)
    t.ok("2081 units in total; North sold the most (895)." in cell_text(cells[2]),
         "analysis: the printed sentence has the grand total", cell_text(cells[2]))

    # the chart: PNG and chart data
    shown = [o for o in cells[3]["outputs"] if o["output_type"] == "display_data"]
    chart = next((o["data"]["application/vnd.sandboxd.chart+json"] for o in shown
                  if "application/vnd.sandboxd.chart+json" in o["data"]), None)
    t.ok(any("image/png" in o["data"] for o in shown), "analysis: the chart cell shows a PNG", cells[3]["outputs"])
    t.ok(chart is not None, "analysis: the chart comes with application/vnd.sandboxd.chart+json",
         [list(o["data"]) for o in shown])
    if chart:
        t.eq((chart.get("type"), chart.get("title"), chart.get("x_label"), chart.get("y_label")),
             ("line", "Units sold per month", "Month", "Units"), "analysis: chart type, title and axis labels")
        series = {e.get("label"): [p[1] for p in e.get("points", [])] for e in chart.get("elements", [])}
        t.eq(series, {"North": [120, 135, 150, 160, 158, 172], "South": [90, 95, 110, 120, 131, 140],
                      "West": [60, 72, 80, 85, 99, 104]}, "analysis: the chart's three series and their values")
        t.eq([p[0] for p in chart["elements"][0]["points"]], ["Jan", "Feb", "Mar", "Apr", "May", "Jun"],
             "analysis: the x values are the month names")
    last = cell_text(cells[4])
    t.ok("title: Units sold per month" in last and "North  [120.0, 135.0, 150.0, 160.0, 158.0, 172.0]" in last,
         "analysis: the last cell prints the chart's data", last)
    no_sandboxes(t, b, "analysis")


def test_typescript(t, b):
    src_path = os.path.join(EXAMPLES, "typescript.ipynb")
    out = os.path.join(TMP, "typescript.out.ipynb")
    rc, _, err = run(b, [src_path, "-o", out])
    t.eq(rc, 0, "typescript.ipynb runs with exit 0 (language from the tslab kernelspec)", err)
    if not os.path.exists(out):
        t.ok(False, "typescript: the executed notebook is written", err)
        return
    valid(t, out, "typescript.out.ipynb")
    nb = load(out)
    markdown_unchanged(t, load(src_path), nb, "typescript")
    cells = code_cells(nb)
    t.ok(all(isinstance(c["execution_count"], int) for c in cells), "typescript: every code cell executed")
    t.ok(not any(o["output_type"] == "error" for c in cells for o in c["outputs"]),
         "typescript: no cell has an error (the types check)", [cell_text(c) for c in cells])
    t.eq(cell_text(cells[1]), "orders: 4\ntotal: 14.15\n", "typescript: console.log output of the function cell")
    t.ok("[ 'apple', 'cheese', 'pear' ]" in cell_text(cells[2]), "typescript: the value of the filter/map cell",
         cell_text(cells[2]))
    t.ok("distinct quantities: 1, 2, 3, 6" in cell_text(cells[3]) and "28.3" in cell_text(cells[3]),
         "typescript: the generic groupBy and the numeric value", cell_text(cells[3]))
    t.eq(len(progress_lines(err)), len(cells), "typescript: a progress line per code cell", err)


def test_files_upload(t, b):
    src_path = os.path.join(EXAMPLES, "files.ipynb")
    out = os.path.join(TMP, "files.out.ipynb")
    csv = os.path.join(EXAMPLES, "data", "sales.csv")
    rc, _, err = run(b, ["--upload", csv, src_path, "-o", out])
    t.eq(rc, 0, "files.ipynb runs with --upload data/sales.csv, exit 0", err)
    t.ok("uploaded %s to /workspace/sales.csv" % csv in err, "the runner says where the upload went", err)
    if not os.path.exists(out):
        t.ok(False, "files: the executed notebook is written", err)
        return
    valid(t, out, "files.out.ipynb")
    cells = code_cells(load(out))
    t.ok("12 rows, columns: date, region, product, units, unit_price" in cell_text(cells[0]),
         "files: the notebook read the uploaded CSV (12 rows)", cell_text(cells[0]))
    rev = cell_text(cells[1])
    t.ok(all(s in rev for s in ("North   43 units    234.10", "South   40 units    180.70",
                                "West    19 units    125.05", "total           539.85")),
         "files: revenue per region and the total from the CSV", rev)
    t.eq(cell_text(cells[3]), "region,units,revenue\nNorth,43,234.10\nSouth,40,180.70\nWest,19,125.05\n",
         "files: the result file written by one cell reads back in the next")
    no_sandboxes(t, b, "files")

    # LOCAL:REMOTE into a named sandbox that is kept afterwards
    nb_path = os.path.join(TMP, "remote.ipynb")
    with open(nb_path, "w") as f:
        json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [],
             "source": "import os\nprint(os.path.getsize('in/q1/sales.csv'))\n"
                       "open('/workspace/out.txt', 'w').write('done')"}]}, f)
    rc, _, err = run(b, ["--sandbox", "keep-me", "--upload", csv + ":in/q1/sales.csv", nb_path])
    t.eq(rc, 0, "--upload LOCAL:REMOTE into a subdirectory, --sandbox keep-me: exit 0", err)
    out = os.path.join(TMP, "remote.out.ipynb")
    t.ok(os.path.exists(out), "without -o the copy is written next to the notebook as NAME.out.ipynb")
    if os.path.exists(out):
        t.eq(cell_text(code_cells(load(out))[0]).split("\n")[0], str(os.path.getsize(csv)),
             "the file arrived at /workspace/in/q1/sales.csv with its size")
    r = b.get("/v1/sandboxes/keep-me/files/workspace/out.txt")
    t.eq((r.status, r.raw), (200, b"done"), "--sandbox: the sandbox is kept, with the file the notebook wrote")
    b.delete("/v1/sandboxes/keep-me")


def test_failing_cell(t, b):
    nb_path = os.path.join(TMP, "fails.ipynb")
    cells = ["x = 1", "print('before')\n1 / 0", "print('after')", "x + 1"]
    with open(nb_path, "w") as f:
        json.dump({"nbformat": 4, "nbformat_minor": 5,
                   "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
                   "cells": [{"cell_type": "code", "id": "c%d" % i, "metadata": {}, "execution_count": None,
                              "outputs": [], "source": s} for i, s in enumerate(cells)]}, f)
    rc, _, err = run(b, [nb_path])
    out = os.path.join(TMP, "fails.out.ipynb")
    t.eq(rc, 1, "a notebook whose second cell raises: exit 1", err)
    t.ok("cell index 1 failed" in err and "ZeroDivisionError" in err,
         "stderr names the failing cell and the error", err)
    t.ok(os.path.exists(out), "the executed notebook is still written", err)
    lines = [(int(m.group(1)), m.group(4)) for m in progress_lines(err)]
    t.eq(lines[:2], [(1, "ok"), (2, "error")], "progress lines: cell 1 ok, cell 2 error", err)
    if os.path.exists(out):
        valid(t, out, "the notebook with an error")
        nb = load(out)
        c = nb["cells"]
        t.ok(any(o["output_type"] == "error" and o["ename"] == "ZeroDivisionError" for o in c[1]["outputs"])
             and "before" in cell_text(c[1]), "the failing cell holds its output and the error", c[1])
        t.eq([(x["execution_count"], x["outputs"]) for x in c[2:]], [(None, []), (None, [])],
             "the cells after it did not run (stop on error)")
    no_sandboxes(t, b, "failing run")

    rc, out, err = run(b, ["--quiet", "-o", "-", nb_path])
    t.eq(rc, 1, "--quiet -o -: exit 1 too", err)
    t.eq([l for l in err.splitlines() if l], ["sandboxd-run: cell index 1 failed: ZeroDivisionError: division by zero"],
         "--quiet: stderr holds only the failure")
    try:
        streamed = json.loads(out)
    except ValueError:
        streamed = None
    t.ok(isinstance(streamed, dict) and cell_text(streamed["cells"][0]) == ""
         and "ZeroDivisionError" in cell_text(streamed["cells"][1]),
         "-o -: the executed notebook is written to stdout", out[:500])

    rc, _, err = run(b, ["--no-stop-on-error", nb_path, "-o", os.path.join(TMP, "fails2.ipynb")])
    t.eq(rc, 1, "--no-stop-on-error: still exit 1", err)
    if os.path.exists(os.path.join(TMP, "fails2.ipynb")):
        c = load(os.path.join(TMP, "fails2.ipynb"))["cells"]
        t.ok(cell_text(c[2]) == "after\n" and cell_text(c[3]) == "2",
             "--no-stop-on-error: the cells after the error ran", [cell_text(x) for x in c])


def test_cell_timeout(t, b):
    nb_path = os.path.join(TMP, "sleepy.ipynb")
    with open(nb_path, "w") as f:
        json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [],
             "source": "import time\ntime.sleep(30)"}]}, f)
    t0 = time.monotonic()
    rc, _, err = run(b, ["--timeout-ms", "1500", nb_path])
    took = time.monotonic() - t0
    t.eq(rc, 1, "--timeout-ms 1500 on a 30 s cell: exit 1", err)
    t.ok("TimeoutError" in err and took < 20, "the cell timed out (TimeoutError) in %.1f s" % took, err)
    no_sandboxes(t, b, "cell timeout")


def test_usage(t, b):
    nb_path = os.path.join(EXAMPLES, "analysis.ipynb")
    rc, out, _ = run(None, ["--help"])
    t.ok(rc == 0 and "--upload" in out and "Exit status" in out, "--help: exit 0 and the options", out)
    cases = [
        ([], "no NOTEBOOK"),
        (["--bogus", nb_path], "unknown option '--bogus'"),
        (["--timeout-ms", "0", nb_path], "--timeout-ms '0'"),
        (["--timeout-ms"], "needs a value"),
        (["--language", "cobol", nb_path], "--language 'cobol'"),
        (["--sandbox", "../x", nb_path], "--sandbox '../x'"),
        ([nb_path, nb_path], "one NOTEBOOK at a time"),
        ([os.path.join(TMP, "missing.ipynb")], "missing.ipynb: No such file or directory"),
        (["--upload", os.path.join(TMP, "nope.csv"), nb_path], "nope.csv: No such file or directory"),
        (["--url", "https://example.org", nb_path], "https is not supported"),
    ]
    for args, want in cases:
        rc, _, err = run(b, args)
        t.ok(rc == 2 and want in err, "usage error %s: exit 2 and says %r" % (args[:2], want),
             "rc=%s stderr=%s" % (rc, err))
    bad = os.path.join(TMP, "bad.ipynb")
    with open(bad, "w") as f:
        f.write('{"cells": [,]}')
    rc, _, err = run(b, [bad])
    t.ok(rc == 2 and "invalid JSON at line 1" in err, "a file that is not JSON: exit 2 naming the line", err)
    rc, _, err = run(b, [nb_path], token=False)
    t.ok(rc == 2 and "SANDBOXD_TOKEN" in err, "no token: exit 2 saying how to give one", err)
    rc, _, err = run(b, [nb_path], env_extra={"SANDBOXD_TOKEN": "not-a-valid-token-at-all"})
    t.ok(rc == 2 and "401" in err and "POST /v1/sandboxes" in err, "a wrong token: exit 2 with the 401", err)
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, _, err = run(b, ["--url", "http://127.0.0.1:%d" % port, nb_path])
    t.ok(rc == 2 and "cannot connect to 127.0.0.1:%d" % port in err, "nothing listening: exit 2, says so", err)
    # a notebook the broker refuses (nbformat 3): the HTTP error, exit 2
    old = os.path.join(TMP, "v3.ipynb")
    with open(old, "w") as f:
        json.dump({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "cells": []}, f)
    rc, _, err = run(b, [old])
    t.ok(rc == 2 and "400" in err and "nbformat" in err, "a notebook the broker refuses: exit 2, its message", err)
    t.ok(not os.path.exists(os.path.join(TMP, "v3.out.ipynb")), "and nothing is written")
    no_sandboxes(t, b, "usage errors")


def test_progress_bar_on_pty(t, b):
    nb_path = os.path.join(TMP, "bar.ipynb")
    with open(nb_path, "w") as f:
        json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "id": "c%d" % i, "metadata": {}, "execution_count": None, "outputs": [],
             "source": "import time\ntime.sleep(0.3)\n%d" % i} for i in range(6)]}, f)
    master, slave = pty.openpty()
    env = dict(os.environ, SANDBOXD_URL=b.url, SANDBOXD_TOKEN=b.tokens["alice"])
    p = subprocess.Popen([os.path.abspath(RUNNER), nb_path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave, env=env)
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    rc = p.wait(30)
    text = buf.decode("utf-8", "replace")
    t.eq(rc, 0, "on a terminal: exit 0", text)
    counts = re.findall(r"\[[#-]{30}\] (\d+)/(\d+) cells +[0-9.]+ s", text)
    t.ok(("6", "6") in counts, "on a terminal the bar reaches 6/6 cells", repr(text[-2000:]))
    t.ok(len({c for c, _ in counts}) >= 4, "the bar is redrawn as cells finish (saw %s)"
         % sorted({int(c) for c, _ in counts}), repr(text[-2000:]))
    t.ok("\r" in text and not PROGRESS_RE.search(text), "a bar redrawn with \\r, not the line-per-cell form",
         repr(text[-1000:]))


def test_sigint_deletes_sandbox(t, b):
    nb_path = os.path.join(TMP, "slow.ipynb")
    with open(nb_path, "w") as f:
        json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [],
             "source": "print('started', flush=True)"},
            {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
             "source": "import time\ntime.sleep(120)"}]}, f)
    env = dict(os.environ, SANDBOXD_URL=b.url, SANDBOXD_TOKEN=b.tokens["alice"])
    p = subprocess.Popen([os.path.abspath(RUNNER), nb_path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True)
    # wait for the first cell's progress line, then interrupt the sleep
    line = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line or line.startswith("cell 1/2"):
            break
    t.ok(line.startswith("cell 1/2"), "the slow notebook started (first cell done)", line)
    r = b.get("/v1/sandboxes")
    t.eq(len(r.get("sandboxes") or []), 1, "while it runs, its sandbox exists")
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    rest = p.stderr.read()
    t.eq(rc, -signal.SIGINT, "SIGINT: the runner ends by the signal (a shell sees 130)", rest)
    t.ok(time.monotonic() - t0 < 30, "and does so within 30 s (took %.1f s)" % (time.monotonic() - t0))
    t.ok("interrupted" in rest, "it says it was interrupted", rest)
    no_sandboxes(t, b, "SIGINT")
    t.ok(not os.path.exists(os.path.join(TMP, "slow.out.ipynb")), "an interrupted run writes no notebook")


if __name__ == "__main__":
    try:
        harness.main([test_usage, test_analysis, test_typescript, test_files_upload, test_failing_cell, test_cell_timeout,
                      test_progress_bar_on_pty, test_sigint_deletes_sandbox])
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
