"""run_code: the Execution (text, results and their formats, PNG, chart,
DataFrame data, logs, error), run_code_stream typed events, callbacks."""

from __future__ import annotations

import time
from typing import List

from sandboxd import (EndEvent, ExecutionCountEvent, ExecutionError, OutputEvent, Result, ResultEvent, Sandbox,
                      CodeErrorEvent)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PLOT = """
import matplotlib
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1, 2, 3], [0, 1, 4, 9], label="squares")
ax.set_title("Growth")
ax.set_xlabel("Time (s)")
plt.show()
"""


def test_text_and_logs(sandbox: Sandbox) -> None:
    ex = sandbox.run_code("print('hi')\nimport sys; print('warn', file=sys.stderr)\n6 * 7")
    assert ex.text == "42"
    assert ex.error is None
    assert "".join(ex.logs.stdout) == "hi\n"
    assert "".join(ex.logs.stderr) == "warn\n"
    assert len(ex.results) == 1 and ex.results[0].is_main_result
    assert ex.results[0].formats() == ["text"]
    assert isinstance(ex.execution_count, int)


def test_state_kept_in_default_context(sandbox: Sandbox) -> None:
    sandbox.run_code("pyc_state = 'kept'")
    assert sandbox.run_code("pyc_state").text == "'kept'"


def test_error(sandbox: Sandbox) -> None:
    ex = sandbox.run_code("x = 1\n1 / 0")
    assert ex.text is None
    assert isinstance(ex.error, ExecutionError)
    assert ex.error.name == "ZeroDivisionError"
    assert "division by zero" in ex.error.value
    assert any("ZeroDivisionError" in line for line in ex.error.traceback)


def test_png_and_chart(sandbox: Sandbox) -> None:
    ex = sandbox.run_code(PLOT)
    assert ex.error is None, ex.error
    figs = [r for r in ex.results if "png" in r.formats()]
    assert len(figs) == 1, ex.results
    r = figs[0]
    assert "chart" in r.formats()
    png = r.png_bytes()
    assert png is not None and png.startswith(PNG_MAGIC)
    assert r.metadata["png"]["width"] > 0
    assert r.chart["type"] == "line"
    assert r.chart["title"] == "Growth"
    assert r.chart["x_unit"] == "s"
    assert r.chart["elements"][0]["label"] == "squares"
    assert r.chart["elements"][0]["points"] == [[0, 0], [1, 1], [2, 4], [3, 9]]
    assert r.jpeg_bytes() is None


def test_dataframe_data(sandbox: Sandbox) -> None:
    ex = sandbox.run_code("import pandas as pd\npd.DataFrame({'x': [1, 2], 'y': ['a', None]})")
    assert ex.error is None, ex.error
    r = ex.results[0]
    assert {"text", "html", "data"} <= set(r.formats())
    assert r.data is not None
    assert "x" in str(r.data) and r.html and "<table" in r.html


def test_display_results(sandbox: Sandbox) -> None:
    ex = sandbox.run_code("from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n'end'")
    assert [r.is_main_result for r in ex.results] == [False, True]
    assert ex.results[0].html == "<b>x</b>"
    assert ex.text == "'end'"


def test_timeout(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    ex = sandbox.run_code("import time\ntime.sleep(30)", timeout=1.0)
    assert time.monotonic() - t0 < 15
    assert ex.error is not None and ex.error.name == "TimeoutError"


def test_run_code_stream_events(sandbox: Sandbox) -> None:
    code = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.3)\nraise ValueError('boom')"
    events = []
    times: List[float] = []
    t0 = time.monotonic()
    with sandbox.run_code_stream(code) as stream:
        for ev in stream:
            events.append(ev)
            times.append(time.monotonic() - t0)
    assert isinstance(events[0], ExecutionCountEvent)
    outs = [e for e in events if isinstance(e, OutputEvent)]
    assert "".join(e.text for e in outs) == "0\n1\n2\n" and all(e.type == "stdout" for e in outs)
    errs = [e for e in events if isinstance(e, CodeErrorEvent)]
    assert len(errs) == 1 and errs[0].error.name == "ValueError" and errs[0].error.value == "boom"
    assert isinstance(events[-1], EndEvent)
    ex = events[-1].execution
    assert ex.error is not None and ex.error.name == "ValueError"
    assert "".join(ex.logs.stdout) == "0\n1\n2\n"
    first = events.index(outs[0])
    assert times[-1] - times[first] >= 0.5, "events arrive live: %r" % times


def test_run_code_stream_result_event(sandbox: Sandbox) -> None:
    events = list(sandbox.run_code_stream("21 * 2"))
    results = [e for e in events if isinstance(e, ResultEvent)]
    assert len(results) == 1 and results[0].result.text == "42" and results[0].result.is_main_result


def test_callbacks(sandbox: Sandbox) -> None:
    out: List[str] = []
    res: List[Result] = []
    errs: List[ExecutionError] = []
    ex = sandbox.run_code(
        "print('a', flush=True)\nfrom IPython.display import display\ndisplay(7)\nprint('b')\n'done'",
        on_stdout=out.append, on_result=res.append, on_error=errs.append,
    )
    assert "".join(out) == "a\nb\n"
    assert [r.text for r in res] == ["7", "'done'"]
    assert errs == []
    assert ex.text == "'done'"
    errs2: List[ExecutionError] = []
    ex2 = sandbox.run_code("raise KeyError('k')", on_error=errs2.append)
    assert len(errs2) == 1 and errs2[0].name == "KeyError" and ex2.error.name == "KeyError"
