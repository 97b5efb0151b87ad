#!/usr/bin/env python3
"""test_gateway_ui.py - the classic Jupyter Notebook (Debian's 6.4) in a
real headless Chromium, its kernels in sandboxd.

The notebook server starts with --gateway-url pointing at the broker and
alice's token; a notebook with a matplotlib cell is opened in Chromium,
driven over the Chrome DevTools Protocol like a user's browser: the page
connects to its kernel, runs all cells, and shows the figure. The
screenshot is kept as tests/e2e/artifacts/gateway_notebook.png (in the
build directory). The kernel the page ran on is a context in a sandbox of
alice's on the broker, and a file its cell wrote is in that sandbox. Then
what a user does next: Kernel > Restart & Run All (a new kernel process
draws the figure again), answering input() by typing into the notebook's
text box (real key events), and Kernel > Interrupt on a cell that loops."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import gwlib  # noqa: E402
import nbformat  # noqa: E402
from harness import wait_until  # noqa: E402

WIDTH, HEIGHT = 1280, 900
NB_NAME = "sandboxd plot.ipynb"
PLOT_CELL = '%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2, 4]); plt.title("sandboxd")'
PROOF_CELL = "import os\nopen('/workspace/from-notebook.txt', 'w').write('drawn in sandboxd\\n')\nos.getpid()"
ARTIFACT_DIR = os.path.join(os.getcwd(), "tests", "e2e", "artifacts")
ARTIFACT = os.path.join(ARTIFACT_DIR, "gateway_notebook.png")

JS_CONNECTED = ("!!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
                " && Jupyter.notebook.kernel.is_connected())")
# The figure: a loaded <img> in the first cell's output, the kernel idle
# again and the cell numbered.
JS_FIGURE = """(function () {
  var cells = Jupyter.notebook.get_cells();
  if (!cells.length || Jupyter.notebook.kernel_busy !== false) return null;
  var img = cells[0].element[0].querySelector('.output_area img');
  if (!img || !img.complete || img.naturalWidth === 0) return null;
  return {naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
          src: img.src.slice(0, 22), count: cells[0].input_prompt_number,
          text: cells[0].element[0].querySelector('.output_area').innerText,
          proof: cells.length > 1 ? cells[1].input_prompt_number : null,
          pid: cells.length > 1 && cells[1].output_area.outputs.length
               ? (cells[1].output_area.outputs[0].data || {})['text/plain'] : null};
})()"""


def write_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(PLOT_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(PROOF_CELL))
    nbformat.write(nb, path)


def test_notebook(t, b, nbsrv, chrome):
    write_notebook(os.path.join(nbsrv.root, NB_NAME))
    if not nbsrv.start() or not chrome.start():
        return
    chrome.call("Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    chrome.call("Runtime.enable")
    chrome.call("Page.enable")
    url = "%s/notebooks/%s?token=%s" % (nbsrv.url, gwlib.quote(NB_NAME), nbsrv.token)
    chrome.navigate(url)
    t0 = time.monotonic()
    connected = chrome.wait_js(JS_CONNECTED, 120)
    if not t.ok(connected, "the notebook page connects to its kernel (%.1f s)" % (time.monotonic() - t0),
                "%s\n%s\n%s" % ("\n".join(chrome.console()[-30:]), nbsrv.log_tail(40), b.log_tail(40))):
        return
    kid = chrome.evaluate("Jupyter.notebook.kernel.id")
    r = nbsrv.request("GET", "/api/sessions")
    sess = [s for s in (r.body if isinstance(r.body, list) else []) if (s.get("path") or "") == NB_NAME]
    t.ok(len(sess) == 1 and (sess[0].get("kernel") or {}).get("id") == kid,
         "the notebook server's /api/sessions has the notebook's session on the page's kernel %s" % kid, r)
    r = b.get("/api/kernels/%s" % kid)
    t.ok(r.status == 200 and r.get("name") == "python3", "the broker knows that kernel as alice's", r)
    r = b.get("/v1/sandboxes/gw-%s/contexts" % kid)
    ids = [c.get("id") for c in r.get("contexts") or [] if isinstance(c, dict)]
    t.ok(kid in ids, "the kernel is a code context in alice's sandbox gw-<kernel id> (native API)", r)

    t1 = time.monotonic()
    chrome.evaluate("Jupyter.notebook.execute_all_cells()")
    fig = chrome.wait_js("(function () { var f = %s; return f && f.proof ? f : null; })()" % JS_FIGURE.strip(), 120)
    took = time.monotonic() - t1
    ok = t.ok(isinstance(fig, dict), "running all cells shows an <img> in the first cell's output (%.1f s)" % took,
              "%s\n%s" % ("\n".join(chrome.console()[-30:]), nbsrv.log_tail(40)))
    fig = fig if ok else {}
    t.ok(fig.get("naturalWidth", 0) > 100 and fig.get("naturalHeight", 0) > 100,
         "the figure is a real image (%sx%s)" % (fig.get("naturalWidth"), fig.get("naturalHeight")), fig)
    t.eq(fig.get("src"), "data:image/png;base64,", "the image is the kernel's image/png output", fig)
    t.eq((fig.get("count"), fig.get("proof")), (1, 2), "the cells are numbered In [1] and In [2]", fig)
    t.ok("sandboxd" in (fig.get("text") or ""), "the output shows the title's Text(..., 'sandboxd')", fig)

    png = chrome.screenshot()
    os.makedirs(ARTIFACT_DIR, exist_ok=True)
    with open(ARTIFACT, "wb") as f:
        f.write(png)
    t.diag("screenshot: %s" % ARTIFACT)
    t.eq(gwlib.png_size(png), (WIDTH, HEIGHT), "the screenshot is a valid %dx%d PNG (%d bytes)"
         % (WIDTH, HEIGHT, len(png)))

    r = b.get("/v1/sandboxes/gw-%s/files/workspace/from-notebook.txt" % kid)
    t.eq((r.status, r.raw), (200, b"drawn in sandboxd\n"),
         "the file the notebook's second cell wrote is in the kernel's sandbox", r)

    # Kernel > Restart & Run All, as the menu does it (without the dialog).
    pid = fig.get("pid")
    t.ok(isinstance(pid, str) and pid.isdigit(), "the second cell shows the kernel's pid (%s)" % pid, fig)
    t2 = time.monotonic()
    chrome.evaluate("Jupyter.notebook.restart_run_all({confirm: false}), true")
    again = chrome.wait_js("(function () { var f = %s; return f && f.proof && f.pid && f.pid !== %s ? f : null; })()"
                           % (JS_FIGURE.strip(), json.dumps(pid)), 120)
    t.ok(isinstance(again, dict) and again.get("naturalWidth", 0) > 100 and again.get("count") == 1,
         "Restart & Run All: a new kernel process (pid %s -> %s) draws the figure again as In [1] (%.1f s)"
         % (pid, (again or {}).get("pid"), time.monotonic() - t2),
         "%s\n%s\n%s" % (again, "\n".join(chrome.console()[-30:]), b.log_tail(30)))
    t.eq(chrome.evaluate("Jupyter.notebook.kernel.id"), kid, "... on the same kernel id")
    ids = [c.get("id") for c in b.get("/v1/sandboxes/gw-%s/contexts" % kid).get("contexts") or []]
    t.ok(kid in ids, "... still the context %s in sandboxd" % kid, ids)
    test_input_box(t, chrome)
    test_interrupt(t, chrome)
    return kid


def add_cell(chrome, code):
    """Append a code cell, select it and run it; its index."""
    return chrome.evaluate("""(function () {
      var nb = Jupyter.notebook, i = nb.ncells();
      var cell = nb.insert_cell_at_index('code', i);
      cell.set_text(%s);
      nb.select(i);
      cell.execute();
      return i;
    })()""" % json.dumps(code))


def cell_text(chrome, i):
    return chrome.evaluate("Jupyter.notebook.get_cell(%d).output_area.element[0].innerText" % i)


def test_input_box(t, chrome):
    """input(): the notebook shows a text box under the cell; typing into it
    and pressing Enter answers the kernel."""
    i = add_cell(chrome, "name = input('who? ')\nprint('hello', name)")
    box = chrome.wait_js("(function () { var e = Jupyter.notebook.get_cell(%d).element[0]"
                         ".querySelector('.raw_input_container input'); if (!e) return null; e.focus();"
                         " return document.activeElement === e; })()" % i, 60)
    if not t.ok(box, "input() shows a text box under the cell, and it takes the focus", cell_text(chrome, i)):
        return
    t.ok("who?" in (cell_text(chrome, i) or ""), "... after the prompt 'who?'", cell_text(chrome, i))
    chrome.call("Input.insertText", {"text": "Ada"})
    for kind in ("keyDown", "keyUp"):
        chrome.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                               "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13})
    out = chrome.wait_js("(function () { var t = Jupyter.notebook.get_cell(%d).output_area.element[0].innerText;"
                         " return t.indexOf('hello Ada') >= 0 ? t : null; })()" % i, 60)
    t.ok(out, "typing 'Ada' and Enter answers input(): the cell prints 'hello Ada'", cell_text(chrome, i))


def test_interrupt(t, chrome):
    """Kernel > Interrupt stops a cell that loops forever."""
    i = add_cell(chrome, "import time\nwhile True:\n    time.sleep(0.05)")
    busy = chrome.wait_js("Jupyter.notebook.kernel_busy === true", 30)
    t.ok(busy, "a looping cell leaves the kernel busy")
    time.sleep(1)
    chrome.evaluate("Jupyter.notebook.kernel.interrupt(), true")
    out = chrome.wait_js("(function () { var t = Jupyter.notebook.get_cell(%d).output_area.element[0].innerText;"
                         " return t.indexOf('KeyboardInterrupt') >= 0 && Jupyter.notebook.kernel_busy === false"
                         " ? t : null; })()" % i, 60)
    t.ok(out, "Kernel > Interrupt ends it: the cell shows KeyboardInterrupt and the kernel is idle again",
         cell_text(chrome, i))


def main():
    harness.require_ready()
    t = harness.Tap()
    b = harness.Broker(t)
    try:
        if b.start():
            nbsrv = gwlib.JupyterProc(t, "notebook", gateway_url=b.url, auth_token=b.tokens["alice"])
            chrome = gwlib.Chromium(t, WIDTH, HEIGHT)
            kid = None
            try:
                try:
                    kid = test_notebook(t, b, nbsrv, chrome)
                except Exception:
                    import traceback
                    t.ok(False, "test_notebook raised", traceback.format_exc())
            finally:
                pgid = chrome.proc.pid if chrome.proc else None
                t.ok(chrome.stop(), "chromium's process group is gone after Browser.close and SIGTERM",
                     "left: %s" % (pgid and gwlib.group_alive(pgid)))
                log = nbsrv.log_tail(60)
                t.ok(nbsrv.stop(), "the notebook server's process group exits on SIGTERM and leaves nothing", log)
                left = [d for d in (chrome.tmp, nbsrv.tmp) if os.path.exists(d)]
                t.ok(not left, "no temp dir of chromium or the notebook server is left", left)
            if kid:
                # The notebook server shuts its kernels down on the way out.
                gone = wait_until(lambda: b.get("/v1/sandboxes/gw-%s" % kid).status == 404, 30, 0.5)
                t.ok(gone, "the stopped notebook server's kernel and its sandbox are deleted on the broker",
                     "%s\n%s" % (b.get("/v1/sandboxes/gw-%s" % kid), log))
    except KeyboardInterrupt:
        t.ok(False, "interrupted")
    finally:
        b.teardown()
    t.done()


if __name__ == "__main__":
    main()
