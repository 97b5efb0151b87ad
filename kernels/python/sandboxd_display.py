"""sandboxd display extensions for IPython kernels.

Loaded in every Python kernel by the broker::

    python3 -m ipykernel_launcher -f FILE --IPKernelApp.exec_lines="import sys; \
sys.path.insert(0, '/opt/sandboxd/python'); import sandboxd_display as _sbx; \
_sbx.install(get_ipython()); del _sbx"

``install(ip)`` adds display formatters so that

* a matplotlib ``Figure`` (``plt.show()`` under the inline backend, a figure
  as a cell's value, ``display(fig)``) carries, beside its usual PNG,
  ``application/vnd.sandboxd.chart+json``: the chart as data (schema in
  docs/charts.md);
* a pandas ``DataFrame`` carries ``application/vnd.sandboxd.data+json``:
  ``{"columns": [...], "index": [...], "data": {column: [values]}, ...}``,
  JSON-safe (NaN/NaT/inf -> null, timestamps -> ISO 8601 strings);
* a PIL image always comes out as PNG (modes PNG cannot store are converted
  instead of raising a traceback into the user's output).

Nothing here may break the user's output: every extractor catches all
exceptions and degrades to ``{"type": "unknown", "error": ...}`` or no extra
MIME type at all.  Start-up cost is kept small: this module only imports the
standard library (and IPython/traitlets, already loaded in a kernel); the
extractors live in sandboxd_extract.py, compiled and imported on the first
display of a figure, DataFrame or PIL image.
"""

import os
import sys

__all__ = [
    "CHART_MIME",
    "DATA_MIME",
    "install",
    "figure_to_chart",
    "dataframe_to_data",
    "pil_to_png",
]

CHART_MIME = "application/vnd.sandboxd.chart+json"
DATA_MIME = "application/vnd.sandboxd.data+json"

_IMPL_NAME = "sandboxd_extract"
_IMPL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), _IMPL_NAME + ".py")


def _impl():
    """sandboxd_extract, loaded from beside this file (not from sys.path,
    where a user's module of the same name could shadow it)."""
    mod = sys.modules.get(_IMPL_NAME)
    if mod is not None and os.path.abspath(getattr(mod, "__file__", "") or "") == _IMPL_PATH:
        return mod
    import importlib.util
    spec = importlib.util.spec_from_file_location(_IMPL_NAME, _IMPL_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[_IMPL_NAME] = mod
    return mod


def figure_to_chart(fig):
    """The chart object (dict) for a matplotlib figure; never raises."""
    try:
        return _impl().figure_to_chart(fig)
    except Exception as e:  # the extractor itself catches everything
        return {"type": "unknown", "title": "", "elements": [],
                "error": ("%s: %s" % (type(e).__name__, e))[:200]}


def dataframe_to_data(df, **limits):
    """JSON-safe data (dict) for a pandas DataFrame, or None; never raises."""
    try:
        return _impl().dataframe_to_data(df, **limits)
    except Exception:
        return None


def pil_to_png(img):
    """PNG bytes for a PIL image, or None; never raises."""
    try:
        return _impl().pil_to_png(img)
    except Exception:
        return None


# --------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------

def _make_formatter_class(mime, name):
    """A BaseFormatter for our MIME type whose built-in handlers are kept
    outside type_printers/deferred_printers: IPython's select_figure_formats()
    (run when the inline backend activates, or on %matplotlib/%config)
    pops Figure from *every* formatter's printers, which would silently drop
    a plain for_type registration."""
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class _Formatter(BaseFormatter):
        format_type = Unicode(mime)
        _return_type = (dict,)
        print_method = ObjectName("_repr_sandboxd_%s_" % name)

        def __init__(self, handlers=None, **kwargs):
            super().__init__(**kwargs)
            self._sbx_handlers = dict(handlers or {})

        def _sbx_lookup(self, obj):
            for cls in getattr(type(obj), "__mro__", ()):
                key = (getattr(cls, "__module__", None), getattr(cls, "__name__", None))
                func = self._sbx_handlers.get(key)
                if func is not None:
                    return func
            return None

        def __call__(self, obj):
            if not self.enabled:
                return None
            try:
                try:
                    printer = self.lookup(obj)  # user registrations win
                except KeyError:
                    printer = self._sbx_lookup(obj)
                if printer is None:
                    method = getattr(type(obj), self.print_method, None)
                    if method is None:
                        return None
                    printer = lambda o: method(o)  # noqa: E731
                result = printer(obj)
            except Exception:  # never disturb the user's output
                return None
            return result if isinstance(result, dict) else None

    _Formatter.__name__ = "Sandboxd%sFormatter" % name.capitalize()
    _Formatter.__qualname__ = _Formatter.__name__
    return _Formatter


def install(ip=None):
    """Register the sandboxd formatters on an IPython shell (idempotent).
    Never raises: a failure is reported on the kernel's own stderr (its log),
    and the kernel carries on without charts."""
    try:
        _install(ip)
    except Exception as e:
        try:
            sys.__stderr__.write("sandboxd_display: not installed: %s: %s\n" % (type(e).__name__, e))
        except Exception:
            pass


def _install(ip):
    if ip is None:
        from IPython import get_ipython
        ip = get_ipython()
        if ip is None:
            return
    dfmt = ip.display_formatter
    chart_cls = _make_formatter_class(CHART_MIME, "chart")
    data_cls = _make_formatter_class(DATA_MIME, "data")
    dfmt.formatters[CHART_MIME] = chart_cls(
        parent=dfmt, handlers={("matplotlib.figure", "Figure"): figure_to_chart})
    dfmt.formatters[DATA_MIME] = data_cls(
        parent=dfmt, handlers={("pandas.core.frame", "DataFrame"): dataframe_to_data})
    png = dfmt.formatters.get("image/png")
    if png is not None:
        png.for_type_by_name("PIL.Image", "Image", pil_to_png)
