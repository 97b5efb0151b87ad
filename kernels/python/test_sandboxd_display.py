"""Tests for sandboxd_display (run inside the sandbox image):

    python3 -m unittest -v test_sandboxd_display      (from this directory)
    python3 test_sandboxd_display.py

Plots with known numbers -> the extracted chart is compared with those
numbers; DataFrames -> strict JSON; IPython formatters in-process; and, when
jupyter_client is available, a real ipykernel started the way the broker
starts it.
"""

import datetime as dt
import decimal
import json
import math
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

_TMP = tempfile.mkdtemp(prefix="sbx-test-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "mpl"))
os.environ.setdefault("IPYTHONDIR", os.path.join(_TMP, "ipython"))
os.environ.setdefault("JUPYTER_RUNTIME_DIR", os.path.join(_TMP, "runtime"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import sandboxd_display as sbx  # noqa: E402
import sandboxd_extract as sbe  # noqa: E402


def strict_json(obj):
    return json.loads(json.dumps(obj, allow_nan=False))


class Base(unittest.TestCase):
    def tearDown(self):
        plt.close("all")

    def chart(self, fig):
        c = sbx.figure_to_chart(fig)
        self.assertIsInstance(c, dict)
        self.assertEqual(strict_json(c), c)  # JSON-safe, nothing lost
        return c

    def assertNear(self, a, b, tol=1e-9):
        if isinstance(b, (list, tuple)):
            self.assertEqual(len(a), len(b), (a, b))
            for x, y in zip(a, b):
                self.assertNear(x, y, tol)
        elif isinstance(b, float) or isinstance(a, float):
            self.assertTrue(a is not None and abs(a - b) <= tol * max(1.0, abs(b)), (a, b))
        else:
            self.assertEqual(a, b)


class TestCharts(Base):
    def test_line_two_series(self):
        fig, ax = plt.subplots()
        x = [0, 1, 2, 3]
        ax.plot(x, [0, 1, 4, 9], label="squares")
        ax.plot(x, [1, 2, 3, 4], label="linear")
        ax.set_title("Growth")
        ax.set_xlabel("Time (s)")
        ax.set_ylabel("Distance [m]")
        c = self.chart(fig)
        self.assertEqual(c["type"], "line")
        self.assertEqual(c["title"], "Growth")
        self.assertEqual((c["x_label"], c["x_unit"]), ("Time (s)", "s"))
        self.assertEqual((c["y_label"], c["y_unit"]), ("Distance [m]", "m"))
        self.assertEqual((c["x_scale"], c["y_scale"]), ("linear", "linear"))
        self.assertEqual([e["label"] for e in c["elements"]], ["squares", "linear"])
        self.assertNear(c["elements"][0]["points"], [[0, 0], [1, 1], [2, 4], [3, 9]])
        self.assertNear(c["elements"][1]["points"], [[0, 1], [1, 2], [2, 3], [3, 4]])
        lo, hi = ax.get_xlim()
        self.assertTrue(c["x_ticks"] and all(lo <= t <= hi for t in c["x_ticks"]))
        self.assertEqual(len(c["x_ticks"]), len(c["x_tick_labels"]))
        self.assertIn("1.0", c["x_tick_labels"])

    def test_line_nan_and_markers_and_axhline(self):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1.0, float("nan"), 3.0], "-o")
        ax.plot([0, 1, 2], [5, 6, 7], "o", label="dots")  # marker-only -> scatter series
        ax.axhline(2.5, label="threshold")
        c = self.chart(fig)
        self.assertEqual(c["type"], "line")
        first = c["elements"][0]
        self.assertIsNone(first["label"])
        self.assertEqual(first["points"][1], [1.0, None])
        th = [e for e in c["elements"] if e["label"] == "threshold"][0]
        self.assertNear([p[1] for p in th["points"]], [2.5, 2.5])
        self.assertNear([p[0] for p in th["points"]], list(ax.get_xlim()), 1e-7)
        dots = [e for e in c["elements"] if e["label"] == "dots"][0]
        self.assertNear(dots["points"], [[0, 5], [1, 6], [2, 7]])

    def test_errorbar_caps_are_not_series(self):
        fig, ax = plt.subplots()
        ax.errorbar([1, 2, 3], [2, 4, 6], yerr=[0.5, 0.5, 0.5], capsize=3, label="m")
        c = self.chart(fig)
        self.assertEqual(c["type"], "line")
        self.assertEqual(len(c["elements"]), 1)
        self.assertNear(c["elements"][0]["points"], [[1, 2], [2, 4], [3, 6]])

    def test_scatter(self):
        fig, ax = plt.subplots()
        ax.scatter([1, 2, 3, 4], [10, 20, 15, 5], label="obs")
        ax.scatter([0.5], [7.5])
        c = self.chart(fig)
        self.assertEqual(c["type"], "scatter")
        self.assertEqual(c["elements"][0]["label"], "obs")
        self.assertNear(c["elements"][0]["points"], [[1, 10], [2, 20], [3, 15], [4, 5]])
        self.assertNear(c["elements"][1]["points"], [[0.5, 7.5]])
        self.assertIsNone(c["elements"][1]["label"])

    def test_grouped_bars(self):
        fig, ax = plt.subplots()
        x = np.arange(3)
        w = 0.35
        ax.bar(x - w / 2, [20, 34, 30], w, label="Men")
        ax.bar(x + w / 2, [25, 32, 34], w, label="Women")
        ax.set_xticks(x, ["G1", "G2", "G3"])
        ax.set_ylabel("Score")
        c = self.chart(fig)
        self.assertEqual(c["type"], "bar")
        got = [(e["label"], e["group"], e["value"]) for e in c["elements"]]
        self.assertEqual(got, [("G1", "Men", 20), ("G2", "Men", 34), ("G3", "Men", 30),
                               ("G1", "Women", 25), ("G2", "Women", 32), ("G3", "Women", 34)])
        self.assertEqual(c["x_tick_labels"], ["G1", "G2", "G3"])

    def test_categorical_and_horizontal_bars(self):
        fig, ax = plt.subplots()
        ax.bar(["apples", "pears", "plums"], [3, 5.5, 1])
        c = self.chart(fig)
        self.assertEqual(c["x_scale"], "categorical")
        self.assertEqual(c["x_ticks"], ["apples", "pears", "plums"])
        self.assertEqual([(e["label"], e["value"]) for e in c["elements"]],
                         [("apples", 3), ("pears", 5.5), ("plums", 1)])
        self.assertIsNone(c["elements"][0]["group"])

        fig, ax = plt.subplots()
        ax.barh(["a", "b"], [7, -2], label="h")
        c = self.chart(fig)
        self.assertEqual([(e["label"], e["group"], e["value"]) for e in c["elements"]],
                         [("a", "h", 7), ("b", "h", -2)])
        self.assertEqual(c["y_scale"], "categorical")

    def test_pandas_bar_plot(self):
        df = pd.DataFrame({"q1": [1, 2], "q2": [3, 4]}, index=["north", "south"])
        ax = df.plot.bar()
        c = self.chart(ax.figure)
        self.assertEqual(c["type"], "bar")
        self.assertEqual([(e["label"], e["group"], e["value"]) for e in c["elements"]],
                         [("north", "q1", 1), ("south", "q1", 2),
                          ("north", "q2", 3), ("south", "q2", 4)])

    def test_histogram_is_bar(self):
        fig, ax = plt.subplots()
        ax.hist([1, 1, 2, 3, 3, 3], bins=[0.5, 1.5, 2.5, 3.5])
        c = self.chart(fig)
        self.assertEqual(c["type"], "bar")
        self.assertEqual([(e["label"], e["value"]) for e in c["elements"]],
                         [("1", 2), ("2", 1), ("3", 3)])

    def test_pie(self):
        fig, ax = plt.subplots()
        ax.pie([1, 2, 3, 4], labels=["a", "b", "c", "d"], autopct="%1.0f%%")
        ax.set_title("Shares")
        c = self.chart(fig)
        self.assertEqual(c["type"], "pie")
        self.assertEqual(c["title"], "Shares")
        self.assertEqual([e["label"] for e in c["elements"]], ["a", "b", "c", "d"])
        self.assertNear([e["angle"] for e in c["elements"]], [36.0, 72.0, 108.0, 144.0], 1e-6)
        self.assertNear([e["radius"] for e in c["elements"]], [1.0] * 4)

    @staticmethod
    def _stats(d):
        d = np.asarray(d, float)
        q1, med, q3 = np.percentile(d, [25, 50, 75])
        iqr = q3 - q1
        lo = d[d >= q1 - 1.5 * iqr].min()
        hi = d[d <= q3 + 1.5 * iqr].max()
        out = sorted(d[(d < lo) | (d > hi)].tolist())
        return [lo, q1, med, q3, hi], out

    def _check_boxes(self, c, datasets, labels):
        self.assertEqual(c["type"], "box_and_whisker")
        self.assertEqual(len(c["elements"]), len(datasets))
        for e, d, label in zip(c["elements"], datasets, labels):
            want, outliers = self._stats(d)
            got = [e["min"], e["first_quartile"], e["median"], e["third_quartile"], e["max"]]
            self.assertNear(got, want)
            self.assertNear(sorted(e["outliers"]), outliers)
            self.assertEqual(e["label"], label)

    def test_box_plot(self):
        a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 40]
        b = [-30, 10, 11, 12, 12, 13, 14, 15, 60, 70]
        fig, ax = plt.subplots()
        ax.boxplot([a, b], labels=["A", "B"])
        ax.set_ylabel("Latency (ms)")
        c = self.chart(fig)
        self._check_boxes(c, [a, b], ["A", "B"])
        self.assertEqual(c["y_unit"], "ms")

    def test_box_plot_variants(self):
        a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 40]
        b = [5, 5, 6, 7, 9]
        for kw in ({"vert": False}, {"patch_artist": True}, {"showmeans": True},
                   {"showmeans": True, "meanline": True}, {"notch": True}):
            with self.subTest(**kw):
                fig, ax = plt.subplots()
                ax.boxplot([a, b], **kw)
                self._check_boxes(self.chart(fig), [a, b], ["1", "2"])
                plt.close(fig)

    def test_log_scale_line(self):
        fig, ax = plt.subplots()
        x = [0, 1, 2, 3]
        ax.plot(x, [1, 10, 100, 1000])
        ax.set_yscale("log")
        c = self.chart(fig)
        self.assertEqual(c["type"], "line")
        self.assertEqual(c["y_scale"], "log")
        self.assertNear(c["elements"][0]["points"], [[0, 1], [1, 10], [2, 100], [3, 1000]])
        for t in (1, 10, 100, 1000):
            self.assertIn(float(t), c["y_ticks"])
        self.assertIn("10^2", c["y_tick_labels"])

    def test_date_axis(self):
        fig, ax = plt.subplots()
        days = [dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(4)]
        ax.plot(days, [3, 1, 4, 1])
        c = self.chart(fig)
        self.assertEqual(c["x_scale"], "datetime")
        self.assertEqual([p[0] for p in c["elements"][0]["points"]],
                         ["2024-01-01T00:00:00", "2024-01-02T00:00:00",
                          "2024-01-03T00:00:00", "2024-01-04T00:00:00"])
        self.assertNear([p[1] for p in c["elements"][0]["points"]], [3, 1, 4, 1])
        self.assertTrue(all(isinstance(t, str) and t.startswith("2024-01") for t in c["x_ticks"]))

    def test_date_axis_tz_and_pandas(self):
        fig, ax = plt.subplots()
        idx = pd.date_range("2024-03-01 12:00", periods=3, freq="H", tz="UTC")
        ax.plot(idx, [1, 2, 3])
        c = self.chart(fig)
        self.assertEqual(c["elements"][0]["points"][0][0], "2024-03-01T12:00:00+00:00")

        s = pd.Series([1.5, 2.5, 3.5], index=pd.date_range("2024-01-01", periods=3, freq="D"),
                      name="temp")
        fig, ax = plt.subplots()
        s.plot(ax=ax)
        c = self.chart(ax.figure)
        self.assertEqual(c["type"], "line")
        self.assertEqual(c["x_scale"], "datetime")
        self.assertEqual(c["elements"][0]["label"], "temp")
        self.assertEqual([p[0] for p in c["elements"][0]["points"]],
                         ["2024-01-01T00:00:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00"])
        self.assertNear([p[1] for p in c["elements"][0]["points"]], [1.5, 2.5, 3.5])

    def test_subplots_2x2(self):
        fig, axs = plt.subplots(2, 2)
        axs[0, 0].plot([0, 1], [2, 3], label="l")
        axs[0, 1].scatter([1, 2], [3, 4])
        axs[1, 0].bar(["x", "y"], [5, 6])
        axs[1, 1].pie([1, 3])
        axs[0, 0].set_title("first")
        fig.suptitle("Overview")
        c = self.chart(fig)
        self.assertEqual(c["type"], "superchart")
        self.assertEqual(c["title"], "Overview")
        self.assertEqual([e["type"] for e in c["elements"]], ["line", "scatter", "bar", "pie"])
        self.assertEqual(c["elements"][0]["title"], "first")
        self.assertNear(c["elements"][0]["elements"][0]["points"], [[0, 2], [1, 3]])
        self.assertNear(c["elements"][1]["elements"][0]["points"], [[1, 3], [2, 4]])
        self.assertEqual([(e["label"], e["value"]) for e in c["elements"][2]["elements"]],
                         [("x", 5), ("y", 6)])
        self.assertNear([e["angle"] for e in c["elements"][3]["elements"]], [90.0, 270.0], 1e-6)

    def test_unused_subplot_and_colorbar_are_skipped(self):
        fig, axs = plt.subplots(1, 2)
        sc = axs[0].scatter([1, 2], [1, 2], c=[0.1, 0.9])
        fig.colorbar(sc, ax=axs[0])
        axs[1].axis("off")
        c = self.chart(fig)
        self.assertEqual(c["type"], "scatter")

    def test_weird_figures_are_unknown(self):
        fig, ax = plt.subplots()
        ax.imshow(np.arange(12).reshape(3, 4))
        c = self.chart(fig)
        self.assertEqual(c["type"], "unknown")

        fig = plt.figure()
        ax = fig.add_subplot(projection="3d")
        ax.plot([0, 1], [0, 1], [0, 1])
        self.assertEqual(self.chart(fig)["type"], "unknown")

        self.assertEqual(self.chart(plt.figure())["type"], "unknown")

        fig, ax = plt.subplots()
        ax.contourf(np.random.default_rng(0).random((5, 5)))
        self.assertEqual(self.chart(fig)["type"], "unknown")

        fig, ax = plt.subplots(subplot_kw={"projection": "polar"})
        ax.plot([0, 1], [1, 2])
        self.assertEqual(self.chart(fig)["type"], "unknown")

    def test_broken_artist_gives_unknown_not_exception(self):
        fig, ax = plt.subplots()
        ax.set_title("broken")
        (line,) = ax.plot([1, 2], [3, 4])

        def boom():
            raise RuntimeError("kaputt")

        line.get_xydata = boom
        c = self.chart(fig)
        self.assertEqual(c["type"], "unknown")
        self.assertEqual(c["title"], "broken")
        self.assertIn("kaputt", c["error"])
        self.assertIsNone(sbx.dataframe_to_data(object()))
        self.assertEqual(sbx.figure_to_chart(object())["type"], "unknown")

    def test_many_points_are_bounded(self):
        fig, ax = plt.subplots()
        n = sbe.MAX_POINTS * 3 + 7
        ax.plot(np.arange(n), np.arange(n) * 2.0)
        c = self.chart(fig)
        el = c["elements"][0]
        self.assertTrue(el["truncated"])
        self.assertEqual(el["total_points"], n)
        self.assertLessEqual(len(el["points"]), sbe.MAX_POINTS)
        self.assertEqual(el["points"][0], [0.0, 0.0])
        self.assertEqual(el["points"][-1], [float(n - 1), 2.0 * (n - 1)])


class TestModule(unittest.TestCase):
    def test_units(self):
        self.assertEqual(sbe.split_unit("Time (s)"), "s")
        self.assertEqual(sbe.split_unit("Speed [m/s]"), "m/s")
        self.assertEqual(sbe.split_unit("Rate[1/s]"), "1/s")
        self.assertIsNone(sbe.split_unit("f(x)"))
        self.assertIsNone(sbe.split_unit("Temperature"))
        self.assertIsNone(sbe.split_unit(""))

    def test_import_is_light(self):
        import subprocess
        code = ("import sys; sys.path.insert(0, %r); import sandboxd_display; "
                "print(sorted(m for m in ('matplotlib', 'pandas', 'numpy', 'PIL', 'sandboxd_extract') "
                "if m in sys.modules))" % HERE)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]")


class TestDataFrame(unittest.TestCase):
    def test_nan_dates_and_friends(self):
        df = pd.DataFrame({
            "f": [1.5, np.nan, np.inf],
            "i": [1, 2, 3],
            "when": pd.to_datetime(["2024-01-01", None, "2024-01-03 04:05:06"]),
            "aware": pd.date_range("2024-01-01", periods=3, freq="D", tz="Europe/Berlin"),
            "dec": [decimal.Decimal("1.25"), decimal.Decimal("NaN"), None],
            "obj": [dt.date(2020, 5, 6), {"k": np.int64(3)}, object],
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "cat": pd.Categorical(["a", None, "b"]),
            "td": pd.to_timedelta(["1s", None, "2h"]),
            "b": [True, False, True],
        })
        data = sbx.dataframe_to_data(df)
        self.assertEqual(strict_json(data), data)
        d = data["data"]
        self.assertEqual(data["columns"], list(df.columns))
        self.assertEqual(data["index"], [0, 1, 2])
        self.assertEqual(d["f"], [1.5, None, None])
        self.assertEqual(d["i"], [1, 2, 3])
        self.assertEqual(d["when"], ["2024-01-01T00:00:00", None, "2024-01-03T04:05:06"])
        self.assertEqual(d["aware"][0], "2024-01-01T00:00:00+01:00")
        self.assertEqual(d["dec"], [1.25, None, None])
        self.assertEqual(d["obj"][:2], ["2020-05-06", {"k": 3}])
        self.assertIsInstance(d["obj"][2], str)
        self.assertEqual(d["nullable"], [1, None, 3])
        self.assertEqual(d["cat"], ["a", None, "b"])
        self.assertEqual(d["td"], ["P0DT0H0M1S", None, "P0DT2H0M0S"])
        self.assertEqual(d["b"], [True, False, True])
        self.assertEqual(data["dtypes"]["f"], "float64")
        self.assertFalse(data["truncated"])
        self.assertEqual((data["n_rows"], data["n_columns"]), (3, 10))

    def test_index_and_column_names(self):
        cols = pd.MultiIndex.from_tuples([("a", "x"), ("a", "y"), ("b", "")])
        df = pd.DataFrame([[1, 2, 3]], columns=cols,
                          index=pd.DatetimeIndex(["2024-02-03"], name="day"))
        data = sbx.dataframe_to_data(df)
        self.assertEqual(data["columns"], ["a / x", "a / y", "b"])
        self.assertEqual(data["index"], ["2024-02-03T00:00:00"])
        self.assertEqual(data["index_name"], "day")

        df = pd.DataFrame([[1, 2, 3]], columns=["a", "a", 1])
        data = sbx.dataframe_to_data(df)
        self.assertEqual(data["columns"], ["a", "a.1", "1"])
        self.assertEqual(data["data"]["a.1"], [2])

        df = pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)],
                                                                         names=["k", None]))
        data = strict_json(sbx.dataframe_to_data(df))
        self.assertEqual(data["index"], [["x", 1], ["y", 2]])
        self.assertEqual(data["index_name"], ["k", None])

    def test_truncation(self):
        df = pd.DataFrame(np.zeros((sbe.DATA_MAX_ROWS + 5, 3)))
        data = sbx.dataframe_to_data(df)
        self.assertTrue(data["truncated"])
        self.assertEqual(len(data["data"]["0"]), sbe.DATA_MAX_ROWS)
        self.assertEqual(data["n_rows"], sbe.DATA_MAX_ROWS + 5)

        df = pd.DataFrame(np.ones((300, sbe.DATA_MAX_COLUMNS + 1)))
        data = sbx.dataframe_to_data(df)
        self.assertTrue(data["truncated"])
        self.assertEqual(len(data["columns"]), sbe.DATA_MAX_COLUMNS)
        self.assertEqual(len(data["index"]), sbe.DATA_MAX_CELLS // sbe.DATA_MAX_COLUMNS)

        data = sbx.dataframe_to_data(pd.DataFrame({"s": ["x" * (sbe.DATA_MAX_STR + 1)]}))
        self.assertTrue(data["truncated"])
        self.assertEqual(len(data["data"]["s"][0]), sbe.DATA_MAX_STR)

        data = sbx.dataframe_to_data(pd.DataFrame())
        self.assertEqual((data["columns"], data["index"], data["data"]), ([], [], {}))


class TestIPython(Base):
    @classmethod
    def setUpClass(cls):
        from IPython.core.interactiveshell import InteractiveShell
        cls.ip = InteractiveShell.instance()
        sbx.install(cls.ip)
        # Activating the inline backend pops Figure from every formatter
        # (select_figure_formats); the chart must survive that.
        from IPython.core.pylabtools import select_figure_formats
        select_figure_formats(cls.ip, {"png"})

    def test_figure_bundle(self):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [4, 5, 6], label="a")
        fmt, _ = self.ip.display_formatter.format(fig)
        self.assertTrue(fmt["image/png"])
        chart = fmt[sbx.CHART_MIME]
        self.assertEqual(chart["type"], "line")
        self.assertNear(chart["elements"][0]["points"], [[1, 4], [2, 5], [3, 6]])

    def test_figure_bundle_survives_broken_extraction(self):
        fig, ax = plt.subplots()
        (line,) = ax.plot([1, 2], [3, 4])
        line.get_xydata = lambda: 1 / 0
        fmt, _ = self.ip.display_formatter.format(fig)
        self.assertTrue(fmt["image/png"])
        self.assertEqual(fmt[sbx.CHART_MIME]["type"], "unknown")

    def test_dataframe_bundle(self):
        df = pd.DataFrame({"x": [1.0, np.nan], "t": pd.to_datetime(["2024-01-01", None])})
        fmt, _ = self.ip.display_formatter.format(df)
        self.assertIn("text/html", fmt)
        self.assertIn("text/plain", fmt)
        data = fmt[sbx.DATA_MIME]
        self.assertEqual(strict_json(data)["data"], {"x": [1.0, None], "t": ["2024-01-01T00:00:00", None]})
        fmt, _ = self.ip.display_formatter.format(pd.Series([1, 2]))
        self.assertNotIn(sbx.DATA_MIME, fmt)
        fmt, _ = self.ip.display_formatter.format(42)
        self.assertEqual(set(fmt), {"text/plain"})

    def test_pil_images(self):
        from PIL import Image
        for mode in ("RGB", "RGBA", "L", "P", "CMYK", "F", "I", "YCbCr", "LAB", "HSV"):
            with self.subTest(mode=mode):
                img = Image.new(mode, (7, 5))
                fmt, _ = self.ip.display_formatter.format(img)
                png = fmt.get("image/png")
                self.assertTrue(png, mode)
                if isinstance(png, str):
                    import base64
                    png = base64.b64decode(png)
                self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"))
                self.assertEqual(Image.open(__import__("io").BytesIO(png)).size, (7, 5))


@unittest.skipUnless(__import__("importlib").util.find_spec("jupyter_client"), "no jupyter_client")
class TestKernel(unittest.TestCase):
    """A real ipykernel started with the broker's exec_lines."""

    @classmethod
    def setUpClass(cls):
        from jupyter_client.manager import start_new_kernel
        os.makedirs(os.environ["JUPYTER_RUNTIME_DIR"], exist_ok=True)
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)
        line = ("import sys; sys.path.insert(0, %r); import sandboxd_display as _sbx; "
                "_sbx.install(get_ipython()); del _sbx" % HERE)
        cls.km, cls.kc = start_new_kernel(
            kernel_name="python3", startup_timeout=60, env=env,
            extra_arguments=["--IPKernelApp.exec_lines=%s" % line])

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=True)

    def run_cell(self, code):
        outputs = []

        def hook(msg):
            if msg["msg_type"] in ("display_data", "execute_result", "stream", "error"):
                outputs.append(msg)

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=60)
        self.assertEqual(reply["content"]["status"], "ok", outputs)
        return outputs

    def test_plt_show_figure_value_and_display(self):
        out = self.run_cell(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([0, 1, 2], [0, 1, 4], label='sq')\n"
            "plt.plot([0, 1, 2], [1, 2, 3], label='lin')\n"
            "plt.title('T')\n"
            "plt.show()\n")
        shown = [m for m in out if m["msg_type"] == "display_data"]
        self.assertEqual(len(shown), 1, out)
        data = shown[0]["content"]["data"]
        self.assertIn("image/png", data)
        chart = data[sbx.CHART_MIME]
        self.assertEqual(chart["type"], "line")
        self.assertEqual(chart["title"], "T")
        self.assertEqual([e["label"] for e in chart["elements"]], ["sq", "lin"])
        self.assertEqual(chart["elements"][0]["points"], [[0, 0], [1, 1], [2, 4]])
        self.assertFalse([m for m in out if m["msg_type"] in ("stream", "error")], out)

        out = self.run_cell("fig, ax = plt.subplots(); ax.bar(['a', 'b'], [1, 2]); fig")
        kinds = [(m["msg_type"], m["content"]["data"][sbx.CHART_MIME]["type"])
                 for m in out if sbx.CHART_MIME in m["content"].get("data", {})]
        self.assertIn(("execute_result", "bar"), kinds)

        out = self.run_cell("fig, ax = plt.subplots(); ax.pie([1, 1]); display(fig); plt.close(fig)")
        self.assertEqual([m["content"]["data"][sbx.CHART_MIME]["type"] for m in out
                          if m["msg_type"] == "display_data"], ["pie"])

    def test_dataframe_result_and_pil(self):
        out = self.run_cell(
            "import pandas as pd, numpy as np\n"
            "pd.DataFrame({'x': [1.0, np.nan], 't': pd.to_datetime(['2024-01-01', None])})")
        res = [m for m in out if m["msg_type"] == "execute_result"][0]["content"]["data"]
        self.assertIn("text/html", res)
        self.assertEqual(res[sbx.DATA_MIME]["data"], {"x": [1.0, None], "t": ["2024-01-01T00:00:00", None]})

        out = self.run_cell("from PIL import Image\nImage.new('CMYK', (3, 2))")
        res = [m for m in out if m["msg_type"] == "execute_result"][0]["content"]["data"]
        self.assertIn("image/png", res)
        self.assertFalse([m for m in out if m["msg_type"] in ("stream", "error")], out)

    def test_user_namespace_is_clean(self):
        out = self.run_cell("print(sorted(n for n in dir() if 'sbx' in n or 'sandboxd' in n))")
        self.assertEqual(out[0]["content"]["text"].strip(), "[]")


if __name__ == "__main__":
    unittest.main(verbosity=2)
