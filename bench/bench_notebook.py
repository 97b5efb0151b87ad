#!/usr/bin/env python3
"""bench_notebook.py - running a whole notebook through sandboxd, next to
Debian's `jupyter nbconvert --to notebook --execute` on the same machine,
with the target of issue 9 / docs/performance.md.

  python3 bench/bench_notebook.py [--rounds 5] [--cells 50] [--refill 3]
                                  [--runner src/run/sandboxd-run] [--json] [--check]

The notebook is generated: --cells Python code cells (default 50) of small
work, prints and displays (arithmetic, a list comprehension, a dict, a
sorted list, an f-string, IPython.display of HTML and Markdown), with a
markdown cell every ten cells. Nothing needs pandas, so the host kernel can
run it too.

Each round times, as wall-clock time of the whole command, in alternating
order:

  (a) sandboxd: `sandboxd-run nb.ipynb -o out.ipynb` against a broker of
      our own with its warm pools on, as by default (warm_sandboxes = 1,
      warm_kernels_python = 1): the runner's start, POST
      /v1/sandboxes (a new sandbox, from the warm sandbox pool), the
      notebook run over SSE (a fresh Python context from the warm kernel
      pool, every cell executed, the context deleted), writing out.ipynb,
      and DELETE of the sandbox. What a user pays for one notebook. The
      pools refill (--refill seconds) between rounds, as they would between
      a user's runs.
  (b) nbconvert: `jupyter nbconvert --to notebook --execute nb.ipynb
      --output out` with Debian's nbconvert/nbclient and a local ipykernel
      on the host: its start, a kernel start, the cells, the write.

Target: median (a) / median (b) <= 0.7. Both executed notebooks are
checked to hold the same stream outputs (so neither side skipped work).
It starts its own broker (needs root and the cached image);
--check exits 1 when the target is missed.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

TARGET_RATIO = 0.7
HOST_JUPYTER = os.environ.get("BENCH_HOST_JUPYTER", "/usr/bin/jupyter")


def make_notebook(n_cells):
    """An nbformat 4 notebook (dict) with n_cells small Python code cells."""
    bodies = [
        "x = {i} * 7 + 3\nx",
        "squares = [k * k for k in range({i} % 9 + 3)]\nprint(squares)",
        "d = {{'cell': {i}, 'even': {i} % 2 == 0}}\nd",
        "words = sorted(['pear', 'apple', 'fig', 'kiwi', str({i})])\nprint(' '.join(words))",
        "from IPython.display import HTML, display\ndisplay(HTML('<b>cell {i}</b>'))",
        "total = sum(range({i} * 100))\nprint(f'sum below {{ {i} * 100 }}: {{total}}')",
        "from IPython.display import Markdown, display\ndisplay(Markdown('**{i}** squared is {sq}'))",
        "import math\nround(math.sqrt({i} + 1), 6)",
        "s = 'abc' * ({i} % 5 + 1)\nprint(len(s), s[:6])",
        "fib = [0, 1]\nfor _ in range(20):\n    fib.append(fib[-1] + fib[-2])\nprint(fib[{i} % 20])",
    ]
    cells = []
    for i in range(n_cells):
        if i % 10 == 0:
            cells.append({"cell_type": "markdown", "id": "md-%d" % i, "metadata": {},
                          "source": "## Part %d\n\nSmall computations." % (i // 10 + 1)})
        src = bodies[i % len(bodies)].format(i=i, sq=i * i)
        cells.append({"cell_type": "code", "id": "code-%d" % i, "metadata": {}, "execution_count": None,
                      "outputs": [], "source": src})
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def streams(path):
    """Per code cell, the stream text and the text/plain of results: what
    both runs must agree on."""
    with open(path) as f:
        nb = json.load(f)
    out = []
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        parts = []
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                t = o.get("text")
                parts.append("".join(t) if isinstance(t, list) else t)
            elif o.get("output_type") == "execute_result":
                t = o.get("data", {}).get("text/plain")
                parts.append("".join(t) if isinstance(t, list) else t)
            elif o.get("output_type") == "error":
                parts.append("ERROR %s" % o.get("ename"))
        out.append("".join(parts))
    return out


def timed_runner(cmd, env):
    """Run sandboxd-run; (seconds, returncode, stderr, phases): phases are the
    moments (seconds from the start) its progress lines arrived: the sandbox
    created, the first and last cell done, the notebook written, exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=env)
    lines, marks = [], {}
    for line in p.stderr:
        t = time.perf_counter() - t0
        lines.append(line)
        if "created sandbox" in line:
            marks["created"] = t
        elif line.startswith("cell "):
            marks.setdefault("first_cell", t)
            marks["last_cell"] = t
        elif "wrote " in line:
            marks["written"] = t
    rc = p.wait()
    dt = time.perf_counter() - t0
    marks["exit"] = dt
    return dt, rc, "".join(lines), marks


def timed(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    return time.perf_counter() - t0, p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--refill", type=float, default=3.0,
                    help="seconds between rounds for the warm pools to refill")
    ap.add_argument("--runner", default=os.environ.get("SANDBOXD_RUN_BIN", "src/run/sandboxd-run"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    runner = os.path.abspath(args.runner)
    if not os.access(runner, os.X_OK):
        sys.exit("bench_notebook: no runner at %s (build it: make)" % runner)
    if not os.access(HOST_JUPYTER, os.X_OK):
        sys.exit("bench_notebook: %s not found: the comparison needs Debian's jupyter-nbconvert "
                 "(apt-get install jupyter-nbconvert python3-ipykernel)" % HOST_JUPYTER)

    tmp = tempfile.mkdtemp(prefix="bench-notebook-")
    nb_path = os.path.join(tmp, "bench.ipynb")
    with open(nb_path, "w") as f:
        json.dump(make_notebook(args.cells), f, indent=1)

    tap = benchlib.StderrTap()
    # The broker's defaults (the test harness turns the sandbox pool off).
    broker = benchlib.start_broker("bench_notebook", tap, "bench broker (warm pools)", {"warm_sandboxes": 1})
    svc, host, svc_inner, phases = [], [], [], []
    try:
        env = dict(os.environ, SANDBOXD_URL=broker.url, SANDBOXD_TOKEN=broker.tokens["alice"])
        # One untimed run each: the page cache, the image's files, the
        # host's Python modules; and the pools are full after the refill.
        for warm in range(1):
            dt, p = timed([runner, "--quiet", nb_path, "-o", os.path.join(tmp, "warm.out.ipynb")], env)
            if p.returncode != 0:
                sys.exit("bench_notebook: sandboxd-run failed (exit %d): %s" % (p.returncode, p.stderr[-2000:]))
            dt, p = timed([HOST_JUPYTER, "nbconvert", "--to", "notebook", "--execute", nb_path,
                           "--output", os.path.join(tmp, "warm-host.ipynb")])
            if p.returncode != 0:
                sys.exit("bench_notebook: nbconvert failed (exit %d): %s" % (p.returncode, p.stderr[-2000:]))
        for rnd in range(args.rounds):
            time.sleep(args.refill)
            svc_out = os.path.join(tmp, "svc-%d.ipynb" % rnd)
            host_out = os.path.join(tmp, "host-%d.ipynb" % rnd)
            order = ["svc", "host"] if rnd % 2 == 0 else ["host", "svc"]
            for which in order:
                if which == "svc":
                    dt, rc, err, marks = timed_runner([runner, nb_path, "-o", svc_out], env)
                    if rc != 0:
                        sys.exit("bench_notebook: sandboxd-run failed (exit %d): %s" % (rc, err[-2000:]))
                    svc.append(dt)
                    phases.append(marks)
                    # "wrote X: 50 of 50 code cells run, 0 errors, 0.31 s"
                    for line in err.splitlines():
                        if "wrote " in line and line.endswith(" s"):
                            svc_inner.append(float(line.rsplit(" ", 2)[-2]))
                else:
                    dt, p = timed([HOST_JUPYTER, "nbconvert", "--to", "notebook", "--execute", nb_path,
                                   "--output", host_out])
                    if p.returncode != 0:
                        sys.exit("bench_notebook: nbconvert failed (exit %d): %s"
                                 % (p.returncode, p.stderr[-2000:]))
                    host.append(dt)
            a, b = streams(svc_out), streams(host_out)
            if a != b:
                diff = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y][:5]
                sys.exit("bench_notebook: the two executed notebooks differ: %r" % diff)
            if len(a) != args.cells:
                sys.exit("bench_notebook: %d code cells in the output, expected %d" % (len(a), args.cells))
    finally:
        broker.teardown()
        shutil.rmtree(tmp, ignore_errors=True)

    med_svc = statistics.median(svc)
    med_host = statistics.median(host)
    ratio = med_svc / med_host
    # Where (a)'s time goes, from the moments the runner's lines arrived.
    steps = [("runner start + POST /v1/sandboxes", None, "created"),
             ("to the first cell done (request, context)", "created", "first_cell"),
             ("the cells (first to last cell done)", "first_cell", "last_cell"),
             ("to the notebook written (done event)", "last_cell", "written"),
             ("DELETE the sandbox, exit", "written", "exit")]
    breakdown = []
    for name, a, b in steps:
        vals = [m[b] - (m[a] if a else 0.0) for m in phases if b in m and (a is None or a in m)]
        breakdown.append((name, statistics.median(vals) if vals else float("nan")))
    res = {
        "cells": args.cells,
        "rounds": args.rounds,
        "sandboxd_s": svc,
        "sandboxd_run_s": svc_inner,
        "nbconvert_s": host,
        "median_sandboxd_s": med_svc,
        "median_sandboxd_run_s": statistics.median(svc_inner) if svc_inner else None,
        "median_nbconvert_s": med_host,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "breakdown_median_s": dict(breakdown),
        "teardown_failures": tap.failed,
    }
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print("notebook of %d code cells, %d rounds (wall-clock seconds per notebook)" % (args.cells, args.rounds))
        print("%-44s %8s %8s %8s" % ("", "median", "min", "max"))
        print("%-44s %8.3f %8.3f %8.3f" % ("(a) sandboxd-run: create, run, write, delete", med_svc, min(svc), max(svc)))
        if svc_inner:
            print("%-44s %8.3f %8.3f %8.3f" % ("    of which the run (summary.duration_ms)", statistics.median(svc_inner),
                                                min(svc_inner), max(svc_inner)))
        print("%-44s %8.3f %8.3f %8.3f" % ("(b) jupyter nbconvert --execute (host)", med_host, min(host), max(host)))
        print("(a) step by step (medians):")
        for name, v in breakdown:
            print("    %-44s %8.3f" % (name, v))
        print("ratio (a)/(b): %.3f  (target <= %.2f: %s)" % (ratio, TARGET_RATIO,
                                                            "met" if ratio <= TARGET_RATIO else "MISSED"))
    if tap.failed:
        sys.stderr.write("bench_notebook: %d broker checks failed at teardown\n" % tap.failed)
    if args.check and (ratio > TARGET_RATIO or tap.failed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
