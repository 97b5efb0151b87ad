"""Chart / DataFrame / PIL extraction for sandboxd_display.

Loaded lazily by sandboxd_display on the first display of a matplotlib
figure, DataFrame or PIL image (so the kernel does not pay for compiling it at
start-up).  Chart schema: docs/charts.md.  Only the standard library is
imported at module level; matplotlib, numpy, pandas are imported inside the
functions, when such an object is being displayed (so they are loaded).
"""

import math
import re
import sys

# Bounds (documented in docs/charts.md).
MAX_POINTS = 10000       # points per line/scatter series (evenly sampled beyond)
MAX_ELEMENTS = 10000     # elements (series, bars, wedges, boxes) per chart
MAX_AXES = 64            # charts in a superchart
DATA_MAX_ROWS = 10000
DATA_MAX_COLUMNS = 1000
DATA_MAX_CELLS = 200000  # rows are cut further so rows * columns stays below
DATA_MAX_STR = 10000     # characters per string cell
_MAX_DEPTH = 3           # nesting of lists/dicts inside a cell
_MAX_NESTED = 1000       # items of a list/dict inside a cell


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _short_error(exc):
    msg = "%s: %s" % (type(exc).__name__, exc)
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _num(v):
    """A JSON-safe number (None for NaN/inf/non-numbers)."""
    try:
        f = float(v)
    except Exception:
        return None
    if not math.isfinite(f):
        return None
    if f.is_integer() and abs(f) < 2 ** 53 and type(v).__name__.startswith(("int", "uint")):
        return int(f)
    return f


def _text(s):
    """Matplotlib text as plain text: mathtext markers simplified, the
    Unicode minus replaced by '-'."""
    if s is None:
        return ""
    s = str(s)
    if "$" in s:
        s = re.sub(r"\\mathdefault\{(.*)\}", r"\1", s)
        s = s.replace("$", "")
        s = re.sub(r"\^\{([^{}]*)\}", r"^\1", s)
        s = s.replace("\\times", "\u00d7").replace("\\cdot", "\u00b7")
        s = s.replace("\\minus", "-").replace("\\mathrm", "")
    return s.replace("\u2212", "-")


_UNIT_RE = re.compile(r"^(.*?)(?:\s+\(([^()]*)\)|\s*\[([^\[\]]*)\])\s*$", re.S)


def split_unit(label):
    """'Time (s)' -> 's'; 'Speed [m/s]' -> 'm/s'; 'f(x)' -> None.
    Round brackets need white space before them (so 'f(x)' is no unit);
    square brackets do not."""
    if not label:
        return None
    m = _UNIT_RE.match(label)
    if not m:
        return None
    unit = (m.group(2) if m.group(2) is not None else m.group(3)).strip()
    return unit or None


def _series_label(artist):
    try:
        label = artist.get_label()
    except Exception:
        return None
    if label is None:
        return None
    label = str(label)
    if not label or label.startswith("_"):
        return None
    return _text(label)


def _num_label(v):
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return "%.12g" % f


# --------------------------------------------------------------------------
# Axes: value conversion, ticks, scales
# --------------------------------------------------------------------------

class _AxisInfo:
    """How to turn an axis' internal float values into chart values."""

    def __init__(self, axis):
        self.axis = axis
        self.kind = "number"   # number | datetime | period | categorical
        self.tz = None
        self.categories = None
        self.freq = None
        try:
            self.scale = str(axis.get_scale())
        except Exception:
            self.scale = "linear"
        try:
            self._detect()
        except Exception:
            self.kind = "number"

    def _detect(self):
        import datetime

        import matplotlib.category as mcat
        import matplotlib.dates as mdates

        axis = self.axis
        get_conv = getattr(axis, "get_converter", None)
        conv = get_conv() if get_conv else getattr(axis, "converter", None)
        units = axis.get_units() if hasattr(axis, "get_units") else getattr(axis, "units", None)
        fmt = axis.get_major_formatter()
        loc = axis.get_major_locator()
        if isinstance(conv, mcat.StrCategoryConverter) or isinstance(fmt, mcat.StrCategoryFormatter):
            mapping = getattr(units, "_mapping", None)
            if mapping is None:
                mapping = getattr(fmt, "_units", None)
            if mapping is not None:
                self.kind = "categorical"
                self.categories = {int(round(float(v))): str(k) for k, v in mapping.items()}
                return
        if type(fmt).__name__ == "TimeSeries_DateFormatter" and getattr(fmt, "freq", None) is not None:
            # pandas time-series plots: x values are Period ordinals.
            self.kind = "period"
            self.freq = fmt.freq
            return
        date_types = (mdates.DateFormatter, mdates.AutoDateFormatter, mdates.ConciseDateFormatter)
        date_convs = tuple(c for c in (getattr(mdates, "DateConverter", None),
                                       getattr(mdates, "ConciseDateConverter", None),
                                       getattr(mdates, "_SwitchableDateConverter", None))
                           if c is not None)
        if (isinstance(fmt, date_types) or isinstance(loc, mdates.DateLocator)
                or (date_convs and isinstance(conv, date_convs))):
            self.kind = "datetime"
            if isinstance(units, datetime.tzinfo):
                self.tz = units

    def scale_name(self):
        if self.kind in ("datetime", "period"):
            return "datetime"
        if self.kind == "categorical":
            return "categorical"
        return {"function": "linear", "functionlog": "log"}.get(self.scale, self.scale)

    def convert(self, values):
        """Internal floats -> JSON-safe list (None for missing values)."""
        import numpy as np

        arr = np.asarray(np.ma.filled(np.ma.asarray(values, dtype=float), np.nan), dtype=float).ravel()
        finite = np.isfinite(arr)
        if self.kind == "number":
            out = arr.tolist()
            if not finite.all():
                for i in np.flatnonzero(~finite).tolist():
                    out[i] = None
            return out
        out = [None] * len(arr)
        idx = np.flatnonzero(finite).tolist()
        if not idx:
            return out
        if self.kind == "categorical":
            cats = self.categories
            for i in idx:
                v = arr[i]
                r = int(round(v))
                if abs(v - r) < 1e-6 and r in cats:
                    out[i] = cats[r]
                else:
                    out[i] = float(v)
        elif self.kind == "datetime":
            import matplotlib.dates as mdates
            dts = mdates.num2date(arr[idx], tz=self.tz)
            for i, d in zip(idx, dts):
                if self.tz is None:
                    d = d.replace(tzinfo=None)
                out[i] = d.isoformat()
        elif self.kind == "period":
            import pandas as pd
            for i in idx:
                out[i] = pd.Period(ordinal=int(round(arr[i])), freq=self.freq).to_timestamp().isoformat()
        return out

    def convert_one(self, v):
        return self.convert([v])[0]

    def raw_ticks(self):
        """(locations, labels) of the visible major ticks, as drawn."""
        import numpy as np

        axis = self.axis
        locs = np.asarray(axis.get_majorticklocs(), dtype=float)
        try:
            labels = [_text(s) for s in axis.get_major_formatter().format_ticks(locs)]
        except Exception:
            labels = [""] * len(locs)
        if len(labels) != len(locs):
            labels = [""] * len(locs)
        lo, hi = sorted(float(v) for v in axis.get_view_interval())
        tol = (hi - lo) * 1e-9 if math.isfinite(hi - lo) else 0.0
        keep = [i for i, v in enumerate(locs.tolist())
                if math.isfinite(v) and lo - tol <= v <= hi + tol]
        return [float(locs[i]) for i in keep], [labels[i] for i in keep]

    def position_label(self, v, ticks=None):
        """Category label for a bar/box centred at internal position v."""
        if self.kind != "number":
            out = self.convert_one(v)
            return out if isinstance(out, str) or out is None else _num_label(out)
        import matplotlib.ticker as mticker
        # Explicit ticks (set_xticks(pos, labels), boxplot, pandas bar plots):
        # the nearest tick's label names the category.
        if isinstance(self.axis.get_major_locator(), mticker.FixedLocator) or \
                isinstance(self.axis.get_major_formatter(), mticker.FixedFormatter):
            locs, labels = ticks if ticks is not None else self.raw_ticks()
            if locs:
                gaps = [b - a for a, b in zip(locs, locs[1:]) if b > a]
                half = min(gaps) / 2 if gaps else math.inf
                j = min(range(len(locs)), key=lambda k: abs(locs[k] - v))
                if abs(locs[j] - v) <= half * (1 + 1e-9) and labels[j]:
                    return labels[j]
        return _num_label(v)


def _axis_fields(prefix, ax, info):
    axis = info.axis
    label = _text(axis.get_label_text())
    locs, labels = info.raw_ticks()
    return {
        prefix + "_label": label,
        prefix + "_unit": split_unit(label),
        prefix + "_scale": info.scale_name(),
        prefix + "_ticks": info.convert(locs),
        prefix + "_tick_labels": labels,
    }


def _axes_title(ax):
    for loc in ("center", "left", "right"):
        try:
            t = ax.get_title(loc)
        except Exception:
            t = ""
        if t:
            return _text(t)
    return ""


def _figure_title(fig):
    try:
        st = getattr(fig, "_suptitle", None)
        return _text(st.get_text()) if st is not None else ""
    except Exception:
        return ""


# --------------------------------------------------------------------------
# Artist extraction
# --------------------------------------------------------------------------

def _no_line(line):
    ls = line.get_linestyle()
    return ls in (None, "", " ", "None", "none")


def _has_marker(line):
    m = line.get_marker()
    return m not in (None, "", " ", "None", "none")


def _to_data(ax, transform, xy):
    """xy in the artist's coordinates -> data coordinates."""
    if transform is ax.transData or transform == ax.transData:
        return xy
    return (transform - ax.transData).transform(xy)


def _points(ax, xy, xinfo, yinfo):
    import numpy as np

    n = len(xy)
    elem = {}
    if n > MAX_POINTS:
        idx = np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(int))
        xy = xy[idx]
        elem["truncated"] = True
        elem["total_points"] = n
    if len(xy):
        xs = xinfo.convert(xy[:, 0])
        ys = yinfo.convert(xy[:, 1])
        pts = [list(p) for p in zip(xs, ys)]
    else:
        pts = []
    return pts, elem


def _line_element(ax, line, xinfo, yinfo):
    import numpy as np

    xy = np.asarray(line.get_xydata(), dtype=float)
    if xy.ndim != 2 or xy.shape[0] == 0:
        return None
    xy = _to_data(ax, line.get_transform(), xy)
    pts, extra = _points(ax, xy, xinfo, yinfo)
    elem = {"label": _series_label(line), "points": pts}
    elem.update(extra)
    return elem


def _scatter_element(ax, coll, xinfo, yinfo):
    import numpy as np

    offs = coll.get_offsets()
    offs = np.asarray(np.ma.filled(np.ma.asarray(offs, dtype=float), np.nan), dtype=float)
    if offs.ndim != 2 or offs.shape[0] == 0 or offs.shape[1] != 2:
        return None
    get_tr = getattr(coll, "get_offset_transform", None) or getattr(coll, "get_transOffset")
    offs = _to_data(ax, get_tr(), offs)
    pts, extra = _points(ax, offs, xinfo, yinfo)
    elem = {"label": _series_label(coll), "points": pts}
    elem.update(extra)
    return elem


def _pie_elements(wedges):
    out = []
    for w in wedges:
        out.append({
            "label": _series_label(w),
            "angle": _num(float(w.theta2) - float(w.theta1)),
            "radius": _num(w.r),
        })
    return out


def _bar_elements(ax, xinfo, yinfo):
    from matplotlib.container import BarContainer

    elements = []
    xticks = yticks = None
    for c in ax.containers:
        if not isinstance(c, BarContainer):
            continue
        group = _series_label(c)
        horizontal = getattr(c, "orientation", None) == "horizontal"
        for rect in c.patches:
            if not rect.get_visible():
                continue
            if horizontal:
                if yticks is None:
                    yticks = yinfo.raw_ticks()
                pos = rect.get_y() + rect.get_height() / 2.0
                value = rect.get_width()
                label = yinfo.position_label(pos, yticks)
            else:
                if xticks is None:
                    xticks = xinfo.raw_ticks()
                pos = rect.get_x() + rect.get_width() / 2.0
                value = rect.get_height()
                label = xinfo.position_label(pos, xticks)
            elements.append({"label": label, "group": group, "value": _num(value)})
    return elements


def _box_elements(ax, lines, xinfo, yinfo):
    """Find matplotlib boxplot()/bxp() artists: a closed box outline (Line2D or
    PathPatch) with a vertical whisker from each end (or horizontal, for
    vert=False), a median line inside, caps, and marker-only flier lines.
    Returns (elements, set of ids of the lines that belong to boxes)."""
    import numpy as np
    from matplotlib.patches import PathPatch

    data = []  # (index, line, xy)
    for i, line in enumerate(lines):
        try:
            xy = np.asarray(line.get_xydata(), dtype=float)
        except Exception:
            continue
        if xy.ndim == 2 and xy.shape[1] == 2 and (line.get_transform() is ax.transData
                                                  or line.get_transform() == ax.transData):
            data.append((i, line, xy))

    shapes = []  # (order, owner, xy)
    for i, line, xy in data:
        if len(xy) >= 5 and not _no_line(line) and np.allclose(xy[0], xy[-1]) and np.isfinite(xy).all():
            shapes.append((i, line, xy))
    for j, p in enumerate(ax.patches):
        if isinstance(p, PathPatch) and p.get_visible():
            try:
                if not (p.get_transform() is ax.transData or p.get_transform() == ax.transData):
                    continue
                v = np.asarray(p.get_path().vertices, dtype=float)
            except Exception:
                continue
            if len(v) >= 5 and np.isfinite(v).all():
                shapes.append((len(lines) + j, p, v))
    if not shapes:
        return [], set()

    segs = [(i, line, xy) for i, line, xy in data
            if len(xy) == 2 and not _no_line(line) and np.isfinite(xy).all()]
    markers = [(i, line, xy) for i, line, xy in data if _no_line(line) and _has_marker(line)]

    used = set()
    boxes = []
    for order, owner, xy in shapes:
        for orient in ("v", "h"):
            p_i, v_i = (0, 1) if orient == "v" else (1, 0)
            pmin, pmax = float(xy[:, p_i].min()), float(xy[:, p_i].max())
            vmin, vmax = float(xy[:, v_i].min()), float(xy[:, v_i].max())
            if not pmax > pmin:
                continue
            pos = (pmin + pmax) / 2.0
            half = (pmax - pmin) / 2.0
            tolp = half * 1e-6
            tolv = max(vmax - vmin, abs(vmin), abs(vmax), 1e-300) * 1e-9

            # Whiskers: segments along the box centre line whose inner end
            # is on the outline (q1 / q3; a notched outline can reach beyond
            # the quartiles, so its extremes are not used).
            vs = xy[:, v_i]
            los, his = [], []
            for s in segs:
                _, line, sxy = s
                if id(line) in used:
                    continue
                if not (abs(sxy[0, p_i] - pos) <= tolp and abs(sxy[1, p_i] - pos) <= tolp):
                    continue
                a, b = float(sxy[0, v_i]), float(sxy[1, v_i])
                for near, far in ((a, b), (b, a)):
                    if np.any(np.abs(vs - near) <= tolv):
                        if far <= near + tolv:
                            los.append((near, far, s))
                        if far >= near - tolv:
                            his.append((near, far, s))
            if not los or not his:
                continue
            q1, wlo, lo = min(los, key=lambda t: t[0])
            rest = [t for t in his if t[2] is not lo]
            if not rest:
                continue
            q3, whi, hi = max(rest, key=lambda t: t[0])
            if q3 < q1:
                continue
            taken = {id(owner), id(lo[1]), id(hi[1])}

            # Median: a flat segment across the box; prefer strictly inside,
            # then the widest, then the first after the box outline.
            cands = []
            for s in segs:
                i, line, sxy = s
                if id(line) in used or id(line) in taken:
                    continue
                if abs(sxy[0, v_i] - sxy[1, v_i]) > tolv:
                    continue
                v = float(sxy[0, v_i])
                c = (sxy[0, p_i] + sxy[1, p_i]) / 2.0
                span = abs(sxy[1, p_i] - sxy[0, p_i]) / 2.0
                if abs(c - pos) > tolp or span > half * (1 + 1e-6) or not (q1 - tolv <= v <= q3 + tolv):
                    continue
                inside = q1 + tolv < v < q3 - tolv
                cands.append(((0 if inside else 1, -round(span / half, 6), 0 if i > order else 1, i), s))
            cands.sort(key=lambda t: t[0])
            median = float(cands[0][1][2][0, v_i]) if cands else None
            if cands:
                taken.add(id(cands[0][1][1]))

            # Caps and other flat segments centred on the box (mean lines)
            # within the whisker range belong to the box as well.
            for s in segs:
                i, line, sxy = s
                if abs(sxy[0, v_i] - sxy[1, v_i]) <= tolv:
                    c = (sxy[0, p_i] + sxy[1, p_i]) / 2.0
                    v = float(sxy[0, v_i])
                    if abs(c - pos) <= tolp and wlo - tolv <= v <= whi + tolv:
                        taken.add(id(line))

            outliers = []
            for i, line, mxy in markers:
                if id(line) in used or len(mxy) == 0:
                    continue
                if not np.all(np.abs(mxy[:, p_i] - pos) <= tolp):
                    continue
                taken.add(id(line))
                for v in mxy[:, v_i].tolist():
                    if math.isfinite(v) and (v < wlo - tolv or v > whi + tolv):
                        outliers.append(v)

            used |= taken
            boxes.append((order, orient, pos, wlo, q1, median, q3, whi, outliers))
            break

    if not boxes:
        return [], set()
    elements = []
    ticks = {}
    for order, orient, pos, wlo, q1, median, q3, whi, outliers in sorted(boxes, key=lambda b: b[0]):
        pinfo, vinfo = (xinfo, yinfo) if orient == "v" else (yinfo, xinfo)
        if orient not in ticks:
            ticks[orient] = pinfo.raw_ticks()
        vals = vinfo.convert([wlo, q1, median if median is not None else float("nan"), q3, whi])
        elements.append({
            "label": pinfo.position_label(pos, ticks[orient]),
            "min": vals[0],
            "first_quartile": vals[1],
            "median": vals[2],
            "third_quartile": vals[3],
            "max": vals[4],
            "outliers": vinfo.convert(outliers) if outliers else [],
        })
    return elements, used


def _unknown(title, error=None):
    out = {"type": "unknown", "title": title, "elements": []}
    if error:
        out["error"] = error
    return out


def _cap(chart):
    els = chart.get("elements")
    if isinstance(els, list) and len(els) > MAX_ELEMENTS:
        chart["elements"] = els[:MAX_ELEMENTS]
        chart["truncated"] = True
    return chart


def _axes_chart(ax):
    from matplotlib.collections import PathCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.patches import Wedge

    title = _axes_title(ax)
    name = getattr(ax, "name", "rectilinear")
    if name != "rectilinear":
        return _unknown(title, "%s axes" % name)
    if ax.images:
        return _unknown(title, "image axes")

    wedges = [p for p in ax.patches if isinstance(p, Wedge) and p.get_visible()]
    if wedges:
        return _cap({"type": "pie", "title": title, "elements": _pie_elements(wedges)})

    xinfo, yinfo = _AxisInfo(ax.xaxis), _AxisInfo(ax.yaxis)

    def chart(kind, elements):
        out = {"type": kind, "title": title}
        out.update(_axis_fields("x", ax, xinfo))
        out.update(_axis_fields("y", ax, yinfo))
        out["elements"] = elements
        return _cap(out)

    lines = [l for l in ax.lines if l.get_visible()]
    boxes, used = _box_elements(ax, lines, xinfo, yinfo)
    if boxes:
        return chart("box_and_whisker", boxes)

    bars = _bar_elements(ax, xinfo, yinfo)
    if bars:
        return chart("bar", bars)

    # Error bar caps are marker-only lines; they are not data series.
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            try:
                for cap in c.lines[1] or ():
                    used.add(id(cap))
            except Exception:
                pass

    line_els, scatter_els = [], []
    for line in lines:
        if id(line) in used:
            continue
        if _no_line(line):
            if not _has_marker(line):
                continue
            target = scatter_els
        else:
            target = line_els
        el = _line_element(ax, line, xinfo, yinfo)
        if el is not None:
            target.append(el)
    for coll in ax.collections:
        # Scatter markers are drawn in display units at data offsets; a
        # PathCollection whose paths are in data coordinates (contourf in
        # matplotlib < 3.8) is no scatter.
        if isinstance(coll, PathCollection) and coll.get_visible() and \
                not coll.get_transform().contains_branch(ax.transData):
            el = _scatter_element(ax, coll, xinfo, yinfo)
            if el is not None:
                scatter_els.append(el)
    if line_els:
        return chart("line", line_els + scatter_els)
    if scatter_els:
        return chart("scatter", scatter_els)
    return _unknown(title, "no recognised chart elements")


def _safe_axes_chart(ax):
    try:
        return _axes_chart(ax)
    except Exception as e:
        try:
            title = _axes_title(ax)
        except Exception:
            title = ""
        return _unknown(title, _short_error(e))


def _is_chart_axes(ax):
    if not ax.get_visible():
        return False
    if getattr(ax, "_colorbar", None) is not None or hasattr(ax, "_colorbar_info"):
        return False
    try:
        return bool(ax.has_data())
    except Exception:
        return True


def figure_to_chart(fig):
    """The chart object for a matplotlib figure; never raises."""
    try:
        ftitle = _figure_title(fig)
        axes = [ax for ax in fig.get_axes() if _is_chart_axes(ax)]
        if not axes:
            return _unknown(ftitle, "no axes with data")
        if len(axes) == 1:
            chart = _safe_axes_chart(axes[0])
            if not chart.get("title"):
                chart["title"] = ftitle
            return chart
        out = {"type": "superchart", "title": ftitle,
               "elements": [_safe_axes_chart(ax) for ax in axes[:MAX_AXES]]}
        if len(axes) > MAX_AXES:
            out["truncated"] = True
        return out
    except Exception as e:
        try:
            title = _figure_title(fig)
        except Exception:
            title = ""
        return _unknown(title, _short_error(e))


# --------------------------------------------------------------------------
# DataFrames
# --------------------------------------------------------------------------

class _Flag:
    truncated = False


def _jsonable(v, flag, depth=0):
    """One cell value -> JSON-safe Python value."""
    import datetime
    import decimal

    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        if len(v) > DATA_MAX_STR:
            flag.truncated = True
            return v[:DATA_MAX_STR]
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if pd is not None and (v is pd.NaT or v is pd.NA):
        return None
    if np is not None:
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return f if math.isfinite(f) else None
        if isinstance(v, (np.datetime64, np.timedelta64)):
            if np.isnat(v):
                return None
            if pd is not None:
                v = pd.Timestamp(v) if isinstance(v, np.datetime64) else pd.Timedelta(v)
                return v.isoformat()
            return str(v)
        if isinstance(v, np.ndarray):
            v = v.tolist() if v.size <= _MAX_NESTED else v.ravel()[:_MAX_NESTED].tolist()
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        if pd is not None:
            return pd.Timedelta(v).isoformat()
        return str(v)
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, complex):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return _jsonable(bytes(v).decode("utf-8", "replace"), flag, depth)
    if pd is not None and isinstance(v, pd.Period):
        return str(v)
    if depth < _MAX_DEPTH:
        if isinstance(v, dict):
            items = list(v.items())
            if len(items) > _MAX_NESTED:
                flag.truncated = True
            return {str(k): _jsonable(x, flag, depth + 1) for k, x in items[:_MAX_NESTED]}
        if isinstance(v, (list, tuple, set, frozenset)):
            items = list(v)
            if len(items) > _MAX_NESTED:
                flag.truncated = True
            return [_jsonable(x, flag, depth + 1) for x in items[:_MAX_NESTED]]
    try:
        s = str(v)
    except Exception:
        s = "<%s>" % type(v).__name__
    return _jsonable(s, flag, depth)


def _values(obj, flag):
    """A Series or Index -> JSON-safe list."""
    import numpy as np

    dtype = obj.dtype
    if isinstance(dtype, np.dtype):
        kind = dtype.kind
        if kind == "f":
            arr = obj.to_numpy()
            out = arr.tolist()
            bad = ~np.isfinite(arr)
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    out[i] = None
            return out
        if kind in "iub":
            return obj.to_numpy().tolist()
    return [_jsonable(v, flag) for v in obj.tolist()]


def _column_name(name):
    if isinstance(name, tuple):
        return " / ".join(str(p) for p in name if p is not None and str(p) != "")
    return str(name)


def dataframe_to_data(df, max_rows=None, max_columns=None, max_cells=None):
    """A DataFrame as JSON-safe data; returns None on failure."""
    try:
        max_rows = DATA_MAX_ROWS if max_rows is None else max_rows
        max_columns = DATA_MAX_COLUMNS if max_columns is None else max_columns
        max_cells = DATA_MAX_CELLS if max_cells is None else max_cells
        n_rows, n_cols = df.shape
        flag = _Flag()
        cols = min(n_cols, max_columns)
        rows = min(n_rows, max_rows, max(1, max_cells // max(cols, 1)))
        part = df.iloc[:rows, :cols]
        if rows < n_rows or cols < n_cols:
            flag.truncated = True

        names, seen = [], {}
        for name in part.columns:
            base = _column_name(name)
            key = base
            while key in seen:
                seen[base] += 1
                key = "%s.%d" % (base, seen[base])
            seen.setdefault(key, 0)
            names.append(key)

        data, dtypes = {}, {}
        for j, key in enumerate(names):
            col = part.iloc[:, j]
            data[key] = _values(col, flag)
            dtypes[key] = str(col.dtype)

        index = part.index
        if getattr(index, "nlevels", 1) > 1:
            idx_values = [_jsonable(list(t), flag) for t in index.tolist()]
            idx_name = [None if n is None else str(n) for n in index.names]
        else:
            idx_values = _values(index, flag)
            idx_name = None if index.name is None else str(index.name)
        return {
            "columns": names,
            "index": idx_values,
            "index_name": idx_name,
            "data": data,
            "dtypes": dtypes,
            "n_rows": int(n_rows),
            "n_columns": int(n_cols),
            "truncated": bool(flag.truncated),
        }
    except Exception:
        return None


# --------------------------------------------------------------------------
# PIL images
# --------------------------------------------------------------------------

def pil_to_png(img):
    """PNG bytes for a PIL image; converts modes PNG cannot store (CMYK, F,
    YCbCr, ...) instead of raising.  Returns None if nothing works."""
    import io

    def save(im):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    try:
        return save(img)
    except Exception:
        pass
    try:
        if img.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
            import numpy as np
            arr = np.asarray(img, dtype=float)
            finite = np.isfinite(arr)
            lo = float(arr[finite].min()) if finite.any() else 0.0
            hi = float(arr[finite].max()) if finite.any() else 1.0
            scaled = np.where(finite, (arr - lo) / ((hi - lo) or 1.0) * 255.0, 0.0)
            from PIL import Image
            return save(Image.fromarray(scaled.round().astype("uint8"), "L"))
        bands = img.getbands()
        return save(img.convert("RGBA" if ("A" in bands or "a" in bands) else "RGB"))
    except Exception:
        return None
