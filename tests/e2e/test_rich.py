#!/usr/bin/env python3
"""test_rich.py - rich results of runCode (issue 4): charts as data from
matplotlib figures, compared with the numbers the test plotted; images
verified by the broker (a corrupt PNG or JPEG is dropped and reported in
`errors`, never passed on); PNGs downscaled on request (`max_image_side`,
`max_image_pixels`) with the original size in `metadata`; DataFrames as
strict JSON `data`; PIL images as PNG; the kernel-side unit tests run inside
the real image; HTML/SVG/PNG displays from TSLab.

The contract is docs/charts.md, docs/api.md ("runCode") and
docs/operations.md (limits). Every PNG the broker returns is decoded here
with the standard library (chunks, CRCs, zlib stream, row filters) and its
IHDR compared with `metadata`. One sandbox and its default Python context
are reused throughout."""

import base64
import json
import math
import os
import re
import struct
import sys
import zlib
from datetime import date, datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SB = "rich"
CODE = "/v1/sandboxes/%s/code" % SB
PNG_SIG = b"\x89PNG\r\n\x1a\n"
TOL = 1e-6
# The truncated PNG of issue 4's checklist: signature and a cut IHDR.
TRUNCATED_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAA"


def run(b, code, sid=SB, timeout=120, **fields):
    body = {"code": code}
    body.update(fields)
    return b.post("/v1/sandboxes/%s/code" % sid, body, timeout=timeout)


def results(r):
    return r.get("results") if isinstance(r.get("results"), list) else []


def logs(r, stream="stdout"):
    lg = r.get("logs")
    return lg.get(stream) if isinstance(lg, dict) else None


def by_text(r):
    """Results keyed by their text field (the tests label raw bundles)."""
    return {x.get("text"): x for x in results(r) if isinstance(x, dict)}


def ran_clean(t, r, what):
    """The run answered 200 with error null and nothing on stderr."""
    return t.ok(r.status == 200 and isinstance(r.body, dict) and r.get("error") is None
                and logs(r, "stderr") == [], "%s: runs, error null, no stderr" % what, r)


# --------------------------------------------------------------------------
# PNG, decoded with the standard library
# --------------------------------------------------------------------------

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def b64bytes(s):
    """Strict base64 (line breaks allowed, as Jupyter sends it) to bytes."""
    if not isinstance(s, str):
        raise ValueError("not a base64 string: %r" % type(s).__name__)
    return base64.b64decode("".join(s.split()), validate=True)


def _passes(w, h, interlace):
    """(x0, y0, dx, dy, pass_width, pass_height) of each non-empty pass."""
    out = []
    for x0, y0, dx, dy in (ADAM7 if interlace else [(0, 0, 1, 1)]):
        pw, ph = (w - x0 + dx - 1) // dx if w > x0 else 0, (h - y0 + dy - 1) // dy if h > y0 else 0
        if pw and ph:
            out.append((x0, y0, dx, dy, pw, ph))
    return out


def decode_png(data, pixels=False):
    """Parse and decompress a whole PNG: signature, every chunk's CRC, IHDR,
    IDAT zlib stream to its end with exactly the expected size, valid
    filter bytes, IEND. With pixels (8/16-bit images only) also unfilter:
    info['px'][y][x] is a tuple of channel values (palette expanded).
    Raises ValueError naming the first problem."""
    if not data.startswith(PNG_SIG):
        raise ValueError("no PNG signature: %r" % data[:8])
    pos, chunks = 8, []
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated at byte %d (no IEND)" % pos)
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + n > len(data):
            raise ValueError("chunk %r truncated" % typ)
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(typ + body) != crc:
            raise ValueError("CRC error in %r" % typ)
        chunks.append((typ, body))
        pos += 12 + n
        if typ == b"IEND":
            break
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError("first chunk is not a 13-byte IHDR")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if ctype not in CHANNELS or comp or filt or interlace > 1 or not w or not h:
        raise ValueError("bad IHDR %r" % ((w, h, depth, ctype, comp, filt, interlace),))
    d = zlib.decompressobj()
    raw = d.decompress(b"".join(body for typ, body in chunks if typ == b"IDAT"))
    if not d.eof:
        raise ValueError("zlib stream does not end")
    bits = CHANNELS[ctype] * depth
    bpp = max(1, bits // 8)
    want = sum(ph * (1 + (pw * bits + 7) // 8) for _, _, _, _, pw, ph in _passes(w, h, interlace))
    if len(raw) != want:
        raise ValueError("image data is %d bytes, IHDR implies %d" % (len(raw), want))
    plte = next((body for typ, body in chunks if typ == b"PLTE"), None)
    if ctype == 3 and plte is None:
        raise ValueError("palette image without PLTE")
    info = {"width": w, "height": h, "depth": depth, "color_type": ctype, "interlace": interlace,
            "chunks": [typ.decode("latin-1") for typ, _ in chunks]}
    px = [[None] * w for _ in range(h)] if pixels else None
    if pixels and depth not in (8, 16):
        raise ValueError("pixel decoding supports 8/16-bit only")
    pos = 0
    for x0, y0, dx, dy, pw, ph in _passes(w, h, interlace):
        rowbytes = (pw * bits + 7) // 8
        prev = bytearray(rowbytes)
        for j in range(ph):
            ft = raw[pos]
            if ft > 4:
                raise ValueError("bad filter type %d" % ft)
            line = bytearray(raw[pos + 1:pos + 1 + rowbytes])
            pos += 1 + rowbytes
            if not pixels:
                continue
            for i in range(rowbytes):
                a = line[i - bpp] if i >= bpp else 0
                c = prev[i - bpp] if i >= bpp else 0
                up = prev[i]
                if ft == 1:
                    line[i] = (line[i] + a) & 255
                elif ft == 2:
                    line[i] = (line[i] + up) & 255
                elif ft == 3:
                    line[i] = (line[i] + ((a + up) >> 1)) & 255
                elif ft == 4:
                    p = a + up - c
                    pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
                    pr = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
                    line[i] = (line[i] + pr) & 255
            prev = line
            nb, ch = depth // 8, CHANNELS[ctype]
            for k in range(pw):
                vals = tuple(int.from_bytes(line[(k * ch + m) * nb:(k * ch + m + 1) * nb], "big")
                             for m in range(ch))
                if ctype == 3:
                    vals = tuple(plte[3 * vals[0]:3 * vals[0] + 3])
                px[y0 + j * dy][x0 + k * dx] = vals
    info["px"] = px
    return info


def png_chunk(typ, body):
    return struct.pack(">I", len(body)) + typ + body + struct.pack(">I", zlib.crc32(typ + body))


def make_png(w, h, pixel, ctype=2, depth=8, interlace=0, palette=None):
    """A PNG built here: pixel(x, y) gives the channel values (palette
    index for ctype 3); filter 0 on every row; Adam7 when interlace."""
    nb = depth // 8
    raw = bytearray()
    for x0, y0, dx, dy, pw, ph in _passes(w, h, interlace):
        for y in range(y0, h, dy):
            raw.append(0)
            for x in range(x0, w, dx):
                for v in pixel(x, y):
                    raw += v.to_bytes(nb, "big")
    out = PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if palette:
        out += png_chunk(b"PLTE", b"".join(bytes(c) for c in palette))
    return out + png_chunk(b"IDAT", zlib.compress(bytes(raw))) + png_chunk(b"IEND", b"")


def png_md(res):
    """metadata.png of a result, or {}."""
    md = res.get("metadata") if isinstance(res, dict) else None
    md = md.get("png") if isinstance(md, dict) else None
    return md if isinstance(md, dict) else {}


def check_png(t, res, what, want_size=None):
    """Assert a result carries a PNG that decodes completely and whose IHDR
    size equals metadata.png width/height (and want_size when given).
    Returns the decoded info or None."""
    md = (res.get("metadata") or {}).get("png") if isinstance(res.get("metadata"), dict) else None
    try:
        data = b64bytes(res.get("png"))
        info = decode_png(data)
        problem = None
    except (ValueError, zlib.error, TypeError) as e:
        data, info, problem = b"", None, str(e)
    t.ok(info is not None, "%s: png is base64 of a PNG that decodes completely" % what,
         "%s\nfirst bytes: %r" % (problem, data[:40]))
    if info is None:
        return None
    got = (info["width"], info["height"])
    t.ok(isinstance(md, dict) and (md.get("width"), md.get("height")) == got and "png" in (res.get("formats") or []),
         "%s: IHDR %dx%d equals metadata.png width/height, formats lists png" % ((what,) + got),
         "metadata: %r formats: %r" % (res.get("metadata"), res.get("formats")))
    if want_size is not None:
        t.eq(got, want_size, "%s: the PNG is %dx%d" % ((what,) + tuple(want_size)))
    return info


# --------------------------------------------------------------------------
# Comparing charts with what was plotted
# --------------------------------------------------------------------------


def approx(got, want, tol=TOL):
    """Deep comparison; numbers within tol (relative and absolute), dicts
    with exactly the same keys."""
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return got == want and type(got) is type(want)
    if isinstance(want, (int, float)):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isclose(got, want, rel_tol=tol, abs_tol=tol))
    if isinstance(want, (list, tuple)):
        return isinstance(got, list) and len(got) == len(want) and all(approx(g, w, tol) for g, w in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(approx(got[k], want[k], tol) for k in want)
    return got == want


def quantile(xs, p):
    """numpy's default (linear) percentile, as matplotlib's boxplot uses."""
    s = sorted(xs)
    pos = p * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def box_stats(xs, whis=1.5):
    q1, med, q3 = quantile(xs, 0.25), quantile(xs, 0.5), quantile(xs, 0.75)
    iqr = q3 - q1
    lo = min(x for x in xs if x >= q1 - whis * iqr)
    hi = max(x for x in xs if x <= q3 + whis * iqr)
    return {"min": lo, "first_quartile": q1, "median": med, "third_quartile": q3, "max": hi,
            "outliers": sorted(x for x in xs if x < lo or x > hi)}


def figure(t, b, code, what, **fields):
    """Run code that shows one figure; assert one result with png and chart,
    the PNG intact and not resized. Returns the chart (or {})."""
    r = run(b, code, **fields)
    ran_clean(t, r, what)
    pngs = [x for x in results(r) if isinstance(x, dict) and "png" in x]
    if not t.ok(len(results(r)) == 1 and len(pngs) == 1 and isinstance(pngs[0].get("chart"), dict),
                "%s: exactly one result, with png and chart" % what, r):
        return {}
    res = pngs[0]
    t.ok({"png", "chart"} <= set(res.get("formats") or []), "%s: formats lists png and chart" % what,
         res.get("formats"))
    info = check_png(t, res, what)
    md = png_md(res)
    t.ok(md.get("resized") is False and (md.get("original_width"), md.get("original_height"))
         == (md.get("width"), md.get("height")),
         "%s: without limits the PNG keeps its size (resized false, original = size)" % what, md)
    return res["chart"]


PLT = "import matplotlib.pyplot as plt\nimport numpy as np\n"


def test_setup(t, b):
    r = b.create(id=SB)
    t.eq(r.status, 201, "create the rich-results sandbox", r)
    r = run(b, PLT + "None")
    ran_clean(t, r, "import matplotlib and numpy")


def test_line_two_series(t, b):
    code = PLT + (
        "fig, ax = plt.subplots()\n"
        "ax.plot([0, 1, 2, 3], [0, 1, 4, 9], label='squares')\n"
        "ax.plot([0, 1, 2, 3], [1, 2.5, 3, -4.25], label='linear')\n"
        "ax.set_title('Growth'); ax.set_xlabel('Time (s)'); ax.set_ylabel('Distance [m]'); ax.legend()\n"
        "plt.show()")
    c = figure(t, b, code, "line with two series")
    t.eq((c.get("type"), c.get("title")), ("line", "Growth"), "line: type line, title Growth", c)
    t.eq((c.get("x_label"), c.get("x_unit"), c.get("y_label"), c.get("y_unit")),
         ("Time (s)", "s", "Distance [m]", "m"), "line: axis labels as drawn, units from (s) and [m]", c)
    t.eq((c.get("x_scale"), c.get("y_scale")), ("linear", "linear"), "line: both scales linear", c)
    want = [{"label": "squares", "points": [[0, 0], [1, 1], [2, 4], [3, 9]]},
            {"label": "linear", "points": [[0, 1], [1, 2.5], [2, 3], [3, -4.25]]}]
    t.ok(approx(c.get("elements"), want), "line: both series with their legend labels and exact points",
         "expected: %r\n     got: %r" % (want, c.get("elements")))
    ticks, labels = c.get("x_ticks"), c.get("x_tick_labels")
    t.ok(isinstance(ticks, list) and isinstance(labels, list) and len(ticks) == len(labels) >= 2
         and all(isinstance(v, (int, float)) and 0 <= v <= 3 for v in ticks)
         and all(approx(float(s), v) for s, v in zip(labels, ticks)),
         "line: x_ticks are numbers inside the data range, x_tick_labels their text", c)

    r = run(b, PLT + "fig, ax = plt.subplots()\nax.plot([0, 1, 2], [1.0, float('nan'), np.inf])\nplt.show()")
    ch = next((x.get("chart") for x in results(r) if isinstance(x, dict) and "chart" in x), None) or {}
    els = ch.get("elements") or [{}]
    t.ok(approx(els[0].get("points"), [[0, 1], [1, None], [2, None]]),
         "line with NaN and inf: the missing points are null", ch)
    strict_json(t, r, "line with NaN and inf")


def test_scatter(t, b):
    code = PLT + ("fig, ax = plt.subplots()\n"
                  "ax.scatter([1.5, 2.5, 3.5, -1], [10, -2, 7.25, 0.125], label='pts')\n"
                  "ax.set_xlabel('Speed [m/s]')\nplt.show()")
    c = figure(t, b, code, "scatter")
    t.eq(c.get("type"), "scatter", "scatter: type scatter", c)
    t.ok(approx(c.get("elements"), [{"label": "pts", "points": [[1.5, 10], [2.5, -2], [3.5, 7.25], [-1, 0.125]]}]),
         "scatter: one series labelled pts with the four points in order", c.get("elements"))
    t.eq(c.get("x_unit"), "m/s", "scatter: x_unit m/s from [m/s]", c)


def test_grouped_bars(t, b):
    code = PLT + ("fig, ax = plt.subplots()\nx = np.arange(3)\n"
                  "ax.bar(x - 0.2, [5, 7, 3.5], width=0.4, label='2023')\n"
                  "ax.bar(x + 0.2, [6, 8, -4], width=0.4, label='2024')\n"
                  "ax.set_xticks(x, ['a', 'b', 'c'])\nax.set_ylabel('Sales (kEUR)')\nplt.show()")
    c = figure(t, b, code, "grouped bars")
    t.eq(c.get("type"), "bar", "bars: type bar", c)
    want = [("2023", "a", 5), ("2023", "b", 7), ("2023", "c", 3.5), ("2024", "a", 6), ("2024", "b", 8),
            ("2024", "c", -4)]
    els = c.get("elements") or []
    got = sorted((e.get("group"), e.get("label"), e.get("value")) for e in els if isinstance(e, dict))
    t.ok(len(els) == 6 and all(isinstance(e, dict) and set(e) == {"label", "group", "value"} for e in els)
         and all(g[:2] == w[:2] and approx(g[2], w[2]) for g, w in zip(got, want)),
         "bars: six bars {label, group, value}: categories from the explicit ticks, groups from label=",
         "expected: %r\n     got: %r" % (want, got))
    t.eq(c.get("y_unit"), "kEUR", "bars: y_unit kEUR", c)

    c = figure(t, b, PLT + "fig, ax = plt.subplots()\nax.bar(['p', 'q', 'r'], [2, 5, 1])\nplt.show()",
               "categorical bars")
    t.ok(approx(c.get("elements"), [{"label": "p", "group": None, "value": 2},
                                    {"label": "q", "group": None, "value": 5},
                                    {"label": "r", "group": None, "value": 1}])
         and c.get("x_scale") == "categorical" and c.get("x_ticks") == ["p", "q", "r"],
         "categorical bars: labels are the category names, x_scale categorical, ticks the names", c)


def test_pie(t, b):
    code = PLT + "fig, ax = plt.subplots()\nax.pie([1, 2, 3, 6], labels=['w', 'x', 'y', 'z'])\nplt.show()"
    c = figure(t, b, code, "pie")
    t.eq(c.get("type"), "pie", "pie: type pie", c)
    want = [{"label": l, "angle": 360.0 * v / 12, "radius": 1} for l, v in zip("wxyz", [1, 2, 3, 6])]
    t.ok(approx(c.get("elements"), want, tol=1e-5),
         "pie: four wedges in order, angle = share x 360 (30, 60, 90, 180), radius 1",
         "expected: %r\n     got: %r" % (want, c.get("elements")))
    t.ok("x_scale" not in c and "x_ticks" not in c, "pie: no axis fields (not a 2-D chart)", c)


def test_box(t, b):
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 40]
    bb = [-20, 10, 11, 12, 13, 14, 15, 16]
    code = PLT + "fig, ax = plt.subplots()\nax.boxplot([%r, %r], labels=['A', 'B'])\nplt.show()" % (a, bb)
    c = figure(t, b, code, "box plot")
    t.eq(c.get("type"), "box_and_whisker", "box: type box_and_whisker", c)
    els = c.get("elements") or []
    for label, data, e in zip("AB", (a, bb), els + [{}] * 2):
        want = dict(box_stats(data), label=label)
        got = dict(e, outliers=sorted(e.get("outliers") or [])) if isinstance(e, dict) else e
        t.ok(approx(got, want), "box %s: min/q1/median/q3/max/outliers = %s/%s/%s/%s/%s/%s" % (
            label, want["min"], want["first_quartile"], want["median"], want["third_quartile"], want["max"],
            want["outliers"]), "expected: %r\n     got: %r" % (want, e))
    t.eq(len(els), 2, "box: exactly two boxes", els)


def test_log_scale(t, b):
    code = PLT + "fig, ax = plt.subplots()\nax.plot([1, 2, 3], [10, 100, 1000])\nax.set_yscale('log')\nplt.show()"
    c = figure(t, b, code, "log-scale line")
    t.eq((c.get("type"), c.get("y_scale"), c.get("x_scale")), ("line", "log", "linear"),
         "log: type line, y_scale log, x_scale linear", c)
    t.ok(approx(c.get("elements"), [{"label": None, "points": [[1, 10], [2, 100], [3, 1000]]}]),
         "log: the points in data values (not log-transformed), label null", c.get("elements"))
    t.ok(approx(c.get("y_ticks"), [10, 100, 1000]) and c.get("y_tick_labels") == ["10^1", "10^2", "10^3"],
         "log: y_ticks 10, 100, 1000 with mathtext simplified to 10^1, 10^2, 10^3", c)


def test_date_axis(t, b):
    code = PLT + ("import datetime as dt\nfig, ax = plt.subplots()\n"
                  "ax.plot([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 12), dt.datetime(2024, 1, 4)],"
                  " [3, 1, 2.5])\nplt.show()")
    c = figure(t, b, code, "date axis")
    t.eq((c.get("type"), c.get("x_scale")), ("line", "datetime"), "dates: type line, x_scale datetime", c)
    want = [["2024-01-01T00:00:00", 3], ["2024-01-02T12:00:00", 1], ["2024-01-04T00:00:00", 2.5]]
    pts = ((c.get("elements") or [{}])[0] or {}).get("points")

    def iso_ok(got, w):
        try:
            d = datetime.fromisoformat(got)
        except (TypeError, ValueError):
            return False
        return d.tzinfo is None and d == datetime.fromisoformat(w)

    t.ok(isinstance(pts, list) and len(pts) == 3
         and all(isinstance(p, list) and len(p) == 2 and iso_ok(p[0], w[0]) and approx(p[1], w[1])
                 for p, w in zip(pts, want)),
         "dates: x values are ISO 8601 strings without offset (naive axis) equal to the plotted datetimes",
         "expected: %r\n     got: %r" % (want, pts))
    ticks = c.get("x_ticks") or []
    t.ok(len(ticks) >= 2 and all(isinstance(x, str) and iso_ok(x, x) for x in ticks),
         "dates: x_ticks are ISO strings", ticks)


def test_subplots(t, b):
    code = PLT + ("fig, axs = plt.subplots(2, 2)\n"
                  "axs[0, 0].plot([0, 1], [1, 0]); axs[0, 0].set_title('L')\n"
                  "axs[0, 1].scatter([1, 2], [3, 4]); axs[0, 1].set_title('S')\n"
                  "axs[1, 0].bar(['p', 'q'], [2, 5]); axs[1, 0].set_title('B')\n"
                  "axs[1, 1].pie([1, 3]); axs[1, 1].set_title('P')\n"
                  "fig.suptitle('Four')\nplt.show()")
    c = figure(t, b, code, "2x2 subplots")
    els = c.get("elements") or []
    t.eq((c.get("type"), c.get("title")), ("superchart", "Four"), "2x2: a superchart titled by the suptitle", c)
    t.eq([(e.get("type"), e.get("title")) for e in els if isinstance(e, dict)],
         [("line", "L"), ("scatter", "S"), ("bar", "B"), ("pie", "P")],
         "2x2: four charts in fig.axes order: line, scatter, bar, pie, with their titles", els)
    if len(els) == 4:
        t.ok(approx(els[0].get("elements"), [{"label": None, "points": [[0, 1], [1, 0]]}])
             and approx(els[1].get("elements"), [{"label": None, "points": [[1, 3], [2, 4]]}])
             and approx(els[2].get("elements"), [{"label": "p", "group": None, "value": 2},
                                                 {"label": "q", "group": None, "value": 5}])
             and approx(els[3].get("elements"), [{"label": None, "angle": 90, "radius": 1},
                                                 {"label": None, "angle": 270, "radius": 1}], tol=1e-5),
             "2x2: each sub-chart carries the plotted numbers", els)


def test_unknown(t, b):
    c = figure(t, b, PLT + "fig, ax = plt.subplots()\nax.imshow(np.arange(12).reshape(3, 4))\nplt.show()",
               "imshow")
    t.eq((c.get("type"), c.get("elements")), ("unknown", []), "imshow: chart type unknown, no elements", c)
    c = figure(t, b, PLT + ("fig = plt.figure()\nax = fig.add_subplot(projection='3d')\n"
                            "ax.plot([0, 1], [0, 1], [0, 1])\nplt.show()"), "3-D axes")
    t.eq(c.get("type"), "unknown", "3-D axes: chart type unknown", c)
    code = PLT + ("fig, ax = plt.subplots()\nax.set_title('broken')\n(ln,) = ax.plot([1, 2], [3, 4])\n"
                  "def _boom():\n    raise RuntimeError('kaputt')\nln.get_xydata = _boom\nplt.show()")
    c = figure(t, b, code, "an artist that raises")
    t.ok(c.get("type") == "unknown" and c.get("title") == "broken" and isinstance(c.get("error"), str),
         "an artist that raises: chart unknown with title and error, the user's plot unharmed", c)


# --------------------------------------------------------------------------
# Images the broker must refuse, and images it must pass on
# --------------------------------------------------------------------------


def test_corrupt_png(t, b):
    r = run(b, "from IPython.display import display; display({'image/png': %r}, raw=True)" % TRUNCATED_PNG)
    ran_clean(t, r, "display of a truncated PNG")
    rs = results(r)
    res = rs[0] if len(rs) == 1 and isinstance(rs[0], dict) else {}
    t.eq(len(rs), 1, "truncated PNG: one result", r)
    t.ok("png" not in res and "png" not in (res.get("formats") or []),
         "truncated PNG: the result has no png and formats does not list it", res)
    msg = (res.get("errors") or {}).get("png") if isinstance(res.get("errors"), dict) else None
    t.ok(isinstance(msg, str) and re.search(r"truncat|end of (file|data|stream)|too short", msg, re.I),
         "truncated PNG: errors.png names the problem (%r)" % (msg,), res)
    t.ok("metadata" not in res or "png" not in (res.get("metadata") or {}),
         "truncated PNG: no png metadata for the dropped image", res)

    good = make_png(3, 2, lambda x, y: (255 * (x == 0), 80 * y, 7))
    bad_crc = bytearray(good)
    i = bad_crc.index(b"IDAT")
    n = struct.unpack(">I", bad_crc[i - 4:i])[0]
    bad_crc[i + 4 + n] ^= 0xFF  # first CRC byte of IDAT
    bad_zlib = good[:i - 4] + png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(200, 240))) + png_chunk(b"IEND", b"")
    short_data = good[:i - 4] + png_chunk(b"IDAT", zlib.compress(b"\x00\x01")) + png_chunk(b"IEND", b"")
    too_wide = make_png(1, 1, lambda x, y: (0,), ctype=0)
    too_wide = (PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 70000, 1, 8, 0, 0, 0, 0))
                + too_wide[33:])
    too_many = (PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + png_chunk(b"IEND", b""))
    cases = [("bad-crc", bytes(bad_crc), "an IDAT CRC error"),
             ("bad-zlib", bad_zlib, "an IDAT that is not a zlib stream"),
             ("short-data", short_data, "too little image data for the IHDR"),
             ("too-wide", too_wide, "a 70000-pixel-wide IHDR (over 65535 a side)"),
             ("too-many", too_many, "a 20000x20000 IHDR (400 M pixels, over 100 M)"),
             ("good", good, None)]
    code = "from IPython.display import display\n" + "".join(
        "display({'text/plain': %r, 'image/png': %r}, raw=True)\n" % (label, base64.b64encode(data).decode())
        for label, data, _ in cases)
    r = run(b, code)
    ran_clean(t, r, "six hand-made PNGs in one run")
    got = by_text(r)
    for label, data, what in cases[:-1]:
        res = got.get(label) or {}
        msg = (res.get("errors") or {}).get("png") if isinstance(res.get("errors"), dict) else None
        t.ok(res and "png" not in res and res.get("formats") == ["text"] and isinstance(msg, str) and msg.strip(),
             "PNG with %s: png dropped, text kept (formats [text]), errors.png says why (%r)" % (what, msg), res)
    res = got.get("good") or {}
    try:
        same = b64bytes(res.get("png")) == good
    except ValueError:
        same = False
    t.ok(same and "errors" not in res, "a valid PNG in the same run is passed on byte for byte, no errors", res)
    t.eq((res.get("metadata") or {}).get("png"),
         {"width": 3, "height": 2, "original_width": 3, "original_height": 2, "resized": False},
         "... with metadata.png {3, 2, original 3x2, resized false}", res)


def test_corrupt_jpeg(t, b):
    code = ("from IPython.display import display\n"
            "display({'text/plain': 'garbage', 'image/jpeg': 'bm90IGEganBlZyBhdCBhbGw='}, raw=True)\n"
            "display({'text/plain': 'cut', 'image/jpeg': '/9j/4AAQSkZJRgABAQAAAQABAAD/'}, raw=True)\n"
            "display({'image/jpeg': 'Zm9v'}, raw=True)\n")
    r = run(b, code)
    ran_clean(t, r, "garbage JPEGs")
    got = by_text(r)
    for label, what in (("garbage", "bytes that are not a JPEG"), ("cut", "a JPEG cut inside its APP0 segment")):
        res = got.get(label) or {}
        msg = (res.get("errors") or {}).get("jpeg") if isinstance(res.get("errors"), dict) else None
        t.ok(res and "jpeg" not in res and res.get("formats") == ["text"] and isinstance(msg, str) and msg.strip(),
             "JPEG of %s: jpeg dropped, text kept, errors.jpeg says why (%r)" % (what, msg), res)
    res = got.get(None) or {}
    t.ok(res and "jpeg" not in res and res.get("formats") == [] and "jpeg" in (res.get("errors") or {}),
         "a bundle holding only a garbage JPEG: a result with empty formats and errors.jpeg", r)

    code = ("import io\nfrom PIL import Image as PImage\nfrom IPython.display import Image, display\n"
            "_buf = io.BytesIO(); PImage.new('RGB', (37, 21), (0, 128, 255)).save(_buf, 'JPEG')\n"
            "display(Image(data=_buf.getvalue(), format='jpeg'))")
    for limits in ({}, {"max_image_side": 10, "max_image_pixels": 100}):
        r = run(b, code, **limits)
        rs = [x for x in results(r) if isinstance(x, dict) and "jpeg" in x]
        res = rs[0] if rs else {}
        try:
            raw = b64bytes(res.get("jpeg"))
        except ValueError:
            raw = b""
        t.ok(r.get("error") is None and raw[:3] == b"\xff\xd8\xff" and raw[-2:] == b"\xff\xd9"
             and (res.get("metadata") or {}).get("jpeg") == {"width": 37, "height": 21},
             "a valid 37x21 JPEG%s is passed on whole with metadata.jpeg {width 37, height 21}"
             % (" with limits 10 px / 100 px (JPEGs are not resized)" if limits else ""), r)


def big_image(t, b):
    """Keep a 4000x3000 PNG of a matplotlib figure in the kernel as BIG."""
    code = PLT + ("import io\nfig = plt.figure(figsize=(40, 30), dpi=100)\nplt.plot([0, 1, 2], [0, 1, 0.5])\n"
                  "_buf = io.BytesIO(); fig.savefig(_buf, format='png', dpi=100); plt.close(fig)\n"
                  "BIG = _buf.getvalue()\nfrom IPython.display import Image, display\nNone")
    r = run(b, code)
    return ran_clean(t, r, "render a 40x30 in figure at 100 dpi")


def test_downscale(t, b):
    if not big_image(t, b):
        return
    show = "display(Image(data=BIG))"

    def one(limits, what):
        r = run(b, show, **limits)
        rs = [x for x in results(r) if isinstance(x, dict)]
        ok = t.ok(r.get("error") is None and len(rs) == 1 and "png" in rs[0],
                  "%s: one result with a png" % what, r)
        return rs[0] if ok else {}

    res = one({}, "4000x3000 without limits")
    check_png(t, res, "4000x3000 without limits", (4000, 3000))
    t.eq((res.get("metadata") or {}).get("png"),
         {"width": 4000, "height": 3000, "original_width": 4000, "original_height": 3000, "resized": False},
         "without limits: metadata keeps the original 4000x3000, resized false", res.get("metadata"))

    res = one({"max_image_side": 1024}, "max_image_side 1024")
    check_png(t, res, "max_image_side 1024", (1024, 768))
    t.eq((res.get("metadata") or {}).get("png"),
         {"width": 1024, "height": 768, "original_width": 4000, "original_height": 3000, "resized": True},
         "max_image_side 1024: metadata 1024x768, original 4000x3000, resized true", res.get("metadata"))

    budget = 1000000
    res = one({"max_image_pixels": budget}, "max_image_pixels 1e6")
    info = check_png(t, res, "max_image_pixels 1e6")
    if info:
        w, h = info["width"], info["height"]
        t.ok(w * h <= budget and w * h >= 0.95 * budget and abs(w * 3000 - h * 4000) <= 4000,
             "max_image_pixels 1e6: %dx%d = %d pixels: within the budget, not far below it, aspect 4:3 kept"
             % (w, h, w * h))
        md = png_md(res)
        t.eq((md.get("original_width"), md.get("original_height"), md.get("resized")), (4000, 3000, True),
             "max_image_pixels: metadata reports original 4000x3000 and resized true", md)

    res = one({"max_image_side": 2000, "max_image_pixels": 300000}, "both limits")
    info = check_png(t, res, "both limits (2000 side, 300000 pixels)")
    if info:
        w, h = info["width"], info["height"]
        t.ok(max(w, h) <= 2000 and w * h <= 300000 and abs(w * 3000 - h * 4000) <= 4000,
             "both limits: %dx%d is within both, aspect kept" % (w, h))

    res = one({"max_image_side": 4000, "max_image_pixels": 12000000}, "limits the image already meets")
    md = (res.get("metadata") or {}).get("png") or {}
    t.eq((md.get("width"), md.get("height"), md.get("resized")), (4000, 3000, False),
         "limits the image already meets (4000 side, 12 M pixels): not resized", md)

    for field, value in (("max_image_side", -1), ("max_image_side", 65536), ("max_image_pixels", -5),
                         ("max_image_side", "1024"), ("max_image_pixels", 1.5)):
        r = run(b, "1", **{field: value})
        t.ok(r.status == 400 and r.err_code() == "invalid_field" and harness.names_field(r.err_message(), field),
             "%s %r -> 400 invalid_field naming it" % (field, value), r)

    # the same through the inline backend (plt.show(), bbox tight): the
    # original is whatever the kernel sent; with a limit it is reported
    code = PLT + "fig = plt.figure(figsize=(40, 30), dpi=100)\nplt.plot([0, 1], [0, 1])\nplt.show()"
    r0 = run(b, code)
    r1 = run(b, code, max_image_side=1024)
    s0 = next((x for x in results(r0) if isinstance(x, dict) and "png" in x), {})
    s1 = next((x for x in results(r1) if isinstance(x, dict) and "png" in x), {})
    i0 = check_png(t, s0, "inline 40x30 in figure without limits")
    i1 = check_png(t, s1, "inline 40x30 in figure with max_image_side 1024")
    if i0 and i1:
        W, H = i0["width"], i0["height"]
        md = png_md(s1)
        t.ok(max(W, H) > 1024 and max(i1["width"], i1["height"]) == 1024
             and abs(i1["width"] * H - i1["height"] * W) <= max(W, H)
             and (md.get("original_width"), md.get("original_height"), md.get("resized")) == (W, H, True),
             "inline figure (%dx%d as sent) comes back %dx%d, original_width/height %sx%s, resized true"
             % (W, H, i1["width"], i1["height"], md.get("original_width"), md.get("original_height")), md)
    t.ok(isinstance(s1.get("chart"), dict) and s1["chart"].get("type") == "line",
         "the downscaled figure still carries its chart", s1.get("chart"))


def test_downscale_pixels(t, b):
    """Downscaled PNGs from unusual inputs decode and keep their picture."""
    half = make_png(200, 100, lambda x, y: (255, 0, 0) if x < 100 else (0, 0, 255))
    inter = make_png(64, 48, lambda x, y: (0, 200, 0) if y < 24 else (250, 250, 250), interlace=1)
    gray16 = make_png(300, 10, lambda x, y: (0 if x < 150 else 65535,), ctype=0, depth=16)
    pal = make_png(40, 40, lambda x, y: (0 if x < 20 else 1,), ctype=3, palette=[(10, 20, 30), (200, 100, 50)])
    rgba = make_png(80, 80, lambda x, y: (255, 255, 0, 255 if y < 40 else 0), ctype=6)
    cases = [("half", half, (20, 10), {(2, 5): (255, 0, 0), (17, 5): (0, 0, 255)}),
             ("interlaced", inter, (20, 15), {(10, 2): (0, 200, 0), (10, 13): (250, 250, 250)}),
             ("gray16", gray16, (20, 1), {(2, 0): (0,), (17, 0): (255,)}),
             ("palette", pal, (20, 20), {(3, 10): (10, 20, 30), (16, 10): (200, 100, 50)}),
             ("rgba", rgba, (20, 20), {(10, 3): (255, 255, 0, 255), (10, 17): (None, None, None, 0)})]
    code = "from IPython.display import display\n" + "".join(
        "display({'text/plain': %r, 'image/png': %r}, raw=True)\n" % (label, base64.b64encode(data).decode())
        for label, data, _, _ in cases)
    r0 = run(b, code)
    r = run(b, code, max_image_side=20)
    ran_clean(t, r, "five hand-made PNGs with max_image_side 20")
    got0, got = by_text(r0), by_text(r)
    for label, data, size, probes in cases:
        res0 = got0.get(label) or {}
        try:
            same = b64bytes(res0.get("png")) == data
        except ValueError:
            same = False
        t.ok(same, "%s PNG without limits: passed on byte for byte" % label, res0)
        res = got.get(label) or {}
        info = check_png(t, res, "%s PNG downscaled" % label, size)
        if not info:
            continue
        try:
            px = decode_png(b64bytes(res["png"]), pixels=True)["px"]
        except ValueError as e:
            t.ok(False, "%s PNG downscaled: pixels decode" % label, str(e))
            continue
        bad = []
        for (x, y), want in probes.items():
            have = px[y][x]
            # compare on the channels the result has: RGB(A) from gray gives
            # equal channels; a 16-bit source is 8-bit now
            if len(have) in (3, 4) and len(want) == 1:
                have = have[:1] if have[0] == have[1] == have[2] else have
            if len(want) == 4 and len(have) == 3:
                have = have + (255,)
            if len(have) != len(want) or any(w is not None and abs(h - w) > 2 for h, w in zip(have, want)):
                bad.append("(%d,%d): want %r got %r" % (x, y, want, px[y][x]))
        t.ok(not bad, "%s PNG downscaled to %dx%d keeps its picture (%s)"
             % (label, size[0], size[1], ", ".join("%r@%r" % (w, p) for p, w in probes.items())),
             "\n".join(bad) + "\ndepth %d color type %d" % (info["depth"], info["color_type"]))
        md = (res.get("metadata") or {}).get("png") or {}
        t.eq((md.get("original_width"), md.get("original_height"), md.get("resized")),
             (struct.unpack(">II", data[16:24]) + (True,)), "%s PNG downscaled: original size reported" % label, md)


def test_stream(t, b):
    code = PLT + ("from IPython.display import display\n"
                  "display({'image/png': %r}, raw=True)\n"
                  "fig, ax = plt.subplots(figsize=(8, 6), dpi=100)\nax.plot([0, 1], [2, 3])\nplt.show()"
                  % TRUNCATED_PNG)
    h, s = b.sse(CODE, {"code": code, "max_image_side": 200})
    if not t.ok(s is not None, "a rich run streams as text/event-stream", h):
        return
    evs = s.events()
    res = [{k: v for k, v in e.data.items() if k != "type"} for e in evs
           if e.name == "result" and isinstance(e.data, dict)]
    t.ok(len(res) == 2 and "png" not in res[0] and "png" in (res[0].get("errors") or {}),
         "streamed: the bad PNG's result event has errors.png and no png", evs)
    md = ((res[1].get("metadata") or {}).get("png") or {}) if len(res) == 2 else {}
    t.ok(len(res) == 2 and isinstance(res[1].get("chart"), dict) and md.get("resized") is True
         and max(md.get("width") or 0, md.get("height") or 0) == 200,
         "streamed: the figure's result event has its chart and the PNG downscaled to 200 px", res)
    end = evs[-1].data.get("execution") if evs and evs[-1].name == "end" else {}
    t.ok(isinstance(end, dict) and end.get("error") is None and end.get("results") == res,
         "streamed: end carries the same results and error null", end)


def test_server_default(t, b):
    """The broker's max_image_side setting applies when a request gives
    none; a request's value (0 = no limit) overrides it."""
    b2 = harness.Broker(t, config={"max_image_side": 16}, name="broker with max_image_side = 16")
    try:
        if not b2.start():
            return
        r = b2.create(id="dflt")
        if not t.eq(r.status, 201, "create a sandbox on the broker with max_image_side = 16", r):
            return
        png = make_png(64, 32, lambda x, y: (0, 0, 0))
        code = "display({'image/png': %r}, raw=True)" % base64.b64encode(png).decode()
        for fields, want, what in (({}, (16, 8, True), "no limit in the request: the server default 16 applies"),
                                   ({"max_image_side": 0}, (64, 32, False), "max_image_side 0 in the request: no "
                                    "limit, overriding the default"),
                                   ({"max_image_side": 32}, (32, 16, True), "max_image_side 32 in the request "
                                    "overrides the default")):
            r = run(b2, code, sid="dflt", **fields)
            res = next((x for x in results(r) if isinstance(x, dict)), {})
            md = png_md(res)
            t.eq((md.get("width"), md.get("height"), md.get("resized"), md.get("original_width")),
                 want + (64,), "a 64x32 PNG, %s" % what, r)
            if "png" in res:
                check_png(t, res, "%s" % what, want[:2])
    finally:
        b2.teardown()


# --------------------------------------------------------------------------
# DataFrames and PIL images
# --------------------------------------------------------------------------


def _no_constant(name):
    raise ValueError("non-standard JSON constant %s" % name)


def strict_json(t, r, what):
    """The raw body parses as strict JSON (no NaN/Infinity tokens)."""
    try:
        json.loads(r.raw.decode("utf-8"), parse_constant=_no_constant)
        problem = None
    except ValueError as e:
        problem = str(e)
    t.ok(problem is None, "%s: the raw response body is strict JSON (no NaN/Infinity tokens)" % what,
         "%s\n%s" % (problem, r))


def test_dataframe(t, b):
    code = ("import pandas as pd, numpy as np, datetime as dt\n"
            "df = pd.DataFrame({\n"
            "  'x': [1.5, np.nan, np.inf, -np.inf],\n"
            "  't': pd.to_datetime(['2024-01-01', None, '2024-03-05 12:30', '2024-12-31 23:59:59']),\n"
            "  'tz': pd.to_datetime(['2024-01-01 00:00', '2024-07-01 12:00', None, '2024-01-02'])"
            ".tz_localize('Europe/Paris'),\n"
            "  'd': [dt.date(2024, 2, 29), None, dt.date(2000, 1, 1), dt.date(1999, 12, 31)],\n"
            "  's': ['a', None, 'c', 'NaN'],\n"
            "  'n': pd.array([1, None, 3, 4], dtype='Int64'),\n"
            "})\ndf")
    r = run(b, code)
    ran_clean(t, r, "a DataFrame with NaN, inf, NaT, dates, tz-aware times, NA")
    strict_json(t, r, "DataFrame")
    rs = results(r)
    res = rs[0] if len(rs) == 1 and isinstance(rs[0], dict) else {}
    t.ok(res.get("is_main_result") is True and isinstance(res.get("html"), str) and "<table" in res["html"]
         and isinstance(res.get("text"), str) and "NaN" in res["text"] and isinstance(res.get("data"), dict),
         "DataFrame: one main result with html (a <table>), text and data", r)
    t.ok({"text", "html", "data"} <= set(res.get("formats") or []), "DataFrame: formats lists text, html, data",
         res.get("formats"))
    d = res.get("data") or {}
    try:
        json.dumps(d, allow_nan=False)
        nan_free = True
    except ValueError:
        nan_free = False
    t.ok(nan_free, "DataFrame: data passes json.dumps(allow_nan=False)", d)
    t.eq((d.get("columns"), d.get("index"), d.get("index_name"), d.get("n_rows"), d.get("n_columns"),
          d.get("truncated")), (["x", "t", "tz", "d", "s", "n"], [0, 1, 2, 3], None, 4, 6, False),
         "DataFrame: columns, index, index_name, n_rows, n_columns, truncated", d)
    cols = d.get("data") if isinstance(d.get("data"), dict) else {}
    t.ok(approx(cols.get("x"), [1.5, None, None, None]), "DataFrame: NaN, inf and -inf are null", cols.get("x"))
    t.eq(cols.get("t"), ["2024-01-01T00:00:00", None, "2024-03-05T12:30:00", "2024-12-31T23:59:59"],
         "DataFrame: timestamps are ISO 8601 strings, NaT is null", cols.get("t"))
    t.eq(cols.get("tz"), ["2024-01-01T00:00:00+01:00", "2024-07-01T12:00:00+02:00", None,
                          "2024-01-02T00:00:00+01:00"],
         "DataFrame: tz-aware timestamps carry their offset (+01:00 winter, +02:00 summer)", cols.get("tz"))
    dd = cols.get("d")
    t.ok(isinstance(dd, list) and len(dd) == 4 and dd[1] is None
         and all(isinstance(v, str) and datetime.fromisoformat(v).date() == w
                 for v, w in zip(dd[::2] + dd[3:], [date(2024, 2, 29), date(2000, 1, 1), date(1999, 12, 31)])),
         "DataFrame: date objects are ISO strings, None is null", dd)
    t.eq(cols.get("s"), ["a", None, "c", "NaN"], "DataFrame: strings stay strings (even 'NaN'), None is null",
         cols.get("s"))
    t.eq(cols.get("n"), [1, None, 3, 4], "DataFrame: nullable Int64 with pd.NA gives numbers and null",
         cols.get("n"))
    t.ok(isinstance(d.get("dtypes"), dict) and d["dtypes"].get("x") == "float64"
         and str(d["dtypes"].get("t", "")).startswith("datetime64"),
         "DataFrame: dtypes per column", d.get("dtypes"))

    r = run(b, "display(df.head(2))\ndf['x']")
    rs = results(r)
    t.ok(len(rs) == 2 and isinstance(rs[0].get("data"), dict) and rs[0]["data"].get("n_rows") == 2
         and rs[0].get("is_main_result") is False and "data" not in rs[1],
         "display(DataFrame) carries data too; a Series result has none", r)


def test_pil(t, b):
    r = run(b, "from PIL import Image as PImage\nPImage.new('RGB', (30, 20), (255, 0, 0))")
    ran_clean(t, r, "a PIL image as the cell value")
    rs = results(r)
    res = rs[0] if len(rs) == 1 and isinstance(rs[0], dict) else {}
    t.ok(res.get("is_main_result") is True and "png" in res, "PIL image value: one main result with png", r)
    info = check_png(t, res, "PIL image value", (30, 20))
    if info:
        px = decode_png(b64bytes(res["png"]), pixels=True)["px"]
        t.ok(px[10][15][:3] == (255, 0, 0), "PIL image value: the pixels are the image's (red)", px[10][15])
    r = run(b, "display(PImage.new('CMYK', (5, 4), (0, 255, 255, 0)))\ndisplay(PImage.new('F', (6, 3), 0.5))")
    rs = [x for x in results(r) if isinstance(x, dict)]
    t.ok(r.get("error") is None and len(rs) == 2 and all("png" in x and x.get("is_main_result") is False for x in rs),
         "display() of CMYK and F-mode PIL images: two png results (converted)", r)
    if len(rs) == 2:
        check_png(t, rs[0], "CMYK PIL image", (5, 4))
        check_png(t, rs[1], "F-mode PIL image", (6, 3))


# --------------------------------------------------------------------------
# Kernel-side unit tests inside the real image
# --------------------------------------------------------------------------


def test_kernel_unit_tests(t, b):
    r = b.exec(SB, "cd /tmp && python3 /opt/sandboxd/python/test_sandboxd_display.py", timeout=200,
               timeout_ms=180000)
    out = (r.get("stdout") or "") + (r.get("stderr") or "")
    tail = "\n".join(out.splitlines()[-40:])
    m = re.search(r"^Ran (\d+) tests?", out, re.M)
    t.ok(r.status == 200 and r.get("exit_code") == 0 and m and int(m.group(1)) > 0
         and re.search(r"^OK\b", out, re.M),
         "kernel-side unit tests (test_sandboxd_display.py) pass inside the sandbox image (%s tests)"
         % (m.group(1) if m else "?"),
         "status %s exit_code %r\n--- output tail ---\n%s" % (r.status, r.get("exit_code"), tail))


# --------------------------------------------------------------------------
# TSLab
# --------------------------------------------------------------------------


def test_tslab(t, b):
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'
    png = make_png(2, 3, lambda x, y: (x * 100, y * 50, 9))
    code = ('import * as tslab from "tslab";\n'
            'tslab.display.html("<b>hi</b>");\n'
            'tslab.display.svg(%s);\n'
            'tslab.display.png(new Uint8Array([%s]));\n'
            'tslab.display.png(new Uint8Array([137, 80, 78, 71, 1, 2, 3]));\n'
            'tslab.display.jpeg(new Uint8Array([255, 216, 255, 0]));\n'
            % (json.dumps(svg), ", ".join(str(x) for x in png)))
    r = run(b, code, language="javascript")
    t.ok(r.status == 200 and r.get("error") is None, "TSLab display code runs (javascript)", r)
    rs = [x for x in results(r) if isinstance(x, dict)]
    t.eq(len(rs), 5, "TSLab: five displays give five results", r)
    if len(rs) != 5:
        return
    t.eq((rs[0].get("html"), rs[0].get("formats"), rs[0].get("is_main_result")), ("<b>hi</b>", ["html"], False),
         "TSLab display.html -> html field, formats [html]", rs[0])
    t.eq((rs[1].get("svg"), rs[1].get("formats")), (svg, ["svg"]), "TSLab display.svg -> svg field, formats [svg]",
         rs[1])
    try:
        same = b64bytes(rs[2].get("png")) == png
    except ValueError:
        same = False
    t.ok(same and (rs[2].get("metadata") or {}).get("png", {}).get("width") == 2,
         "TSLab display.png of a valid PNG -> png passed on, metadata width 2", rs[2])
    t.ok("png" not in rs[3] and "png" in (rs[3].get("errors") or {}),
         "TSLab display.png of garbage -> no png, errors.png", rs[3])
    t.ok("jpeg" not in rs[4] and "jpeg" in (rs[4].get("errors") or {}),
         "TSLab display.jpeg of garbage -> no jpeg, errors.jpeg", rs[4])

    r = run(b, 'import * as tslab from "tslab";\nconst s: string = "<i>ts</i>";\ntslab.display.html(s);',
            language="typescript")
    rs = [x for x in results(r) if isinstance(x, dict)]
    t.eq([(x.get("html"), x.get("formats")) for x in rs], [("<i>ts</i>", ["html"])],
         "TSLab (typescript) display.html -> html field", r)


if __name__ == "__main__":
    harness.main([test_setup, test_line_two_series, test_scatter, test_grouped_bars, test_pie, test_box,
                  test_log_scale, test_date_axis, test_subplots, test_unknown, test_corrupt_png, test_corrupt_jpeg,
                  test_downscale, test_downscale_pixels, test_server_default, test_stream, test_dataframe, test_pil,
                  test_kernel_unit_tests, test_tslab])
