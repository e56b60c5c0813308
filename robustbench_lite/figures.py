"""Report figures: matplotlib (object API, Agg/SVG canvases, no pyplot state) to inline data URIs.

Each figure is an SVG embedded as ``data:image/svg+xml;base64,...`` in an ``<img>``: vector, so it
prints sharply, and isolated, so the ids matplotlib writes into SVGs cannot clash between figures.
Text stays text (``svg.fonttype: none``) in the page's font; output is deterministic (no date, a
fixed hash salt).

Where a plotted value has a confidence interval (the block's ``ci``), the figure draws it: error
bars on bars and severity points, a shaded band along robustness curves. Interval arguments are
optional, so figures of results written before intervals existed look as they did. The interval
artists carry SVG ids starting ``ci-`` (:data:`INTERVAL_ID`), so a page or a test can find them.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from robustbench_lite.formatting import finite
from robustbench_lite.pixels import LUMA

RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "robust-eval",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.edgecolor": "#9ca3af",
    "xtick.color": "#374151",
    "ytick.color": "#374151",
    "axes.labelcolor": "#111827",
    "legend.frameon": False,
    "legend.fontsize": 8,
}
COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]
CLEAN_COLOR = "#111827"
HEATMAP = "viridis"
#: SVG id prefix of every artist that draws a confidence interval (error bars, bands).
INTERVAL_ID = "ci-"
#: A value's confidence interval (low, high), or None where it has none.
Interval = tuple[float, float] | None


@contextmanager
def _figure(width: float, height: float, out: list[str]) -> Iterator[Figure]:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    out.append("data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = to_rgb(rgba)
    return "#111827" if LUMA[0] * r + LUMA[1] * g + LUMA[2] * b > 0.55 else "white"


def _pct_axis(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=0))


def _errors(values: Sequence[float | None], intervals: Sequence[Interval] | None) -> np.ndarray | None:
    """Distances below and above each value, shape (2, n), for ``errorbar``; None when no value has an interval.

    A value without an interval gets NaN (nothing drawn). The distances are clipped at 0: a
    bootstrap interval of a ratio need not contain the point estimate, and matplotlib refuses
    negative lengths.
    """
    if not intervals or all(c is None for c in intervals):
        return None
    err = np.full((2, len(values)), np.nan)
    for i, (v, c) in enumerate(zip(values, intervals, strict=True)):
        if c is not None and finite(v) and finite(c[0]) and finite(c[1]):
            err[0, i], err[1, i] = max(v - c[0], 0.0), max(c[1] - v, 0.0)
    return None if np.isnan(err).all() else err


def _mark_intervals(container: Any, name: str) -> None:
    """Give an errorbar container's bar lines an SVG id (``ci-<name>``)."""
    for k, lines in enumerate(container.lines[2]):
        lines.set_gid(f"{INTERVAL_ID}{name}-{k}")


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Row-normalised confusion matrix (true rows, predicted columns), counts written in small matrices."""
    cm = np.asarray(matrix, dtype=float)
    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = min(6.0, 2.2 + 0.32 * n)
    out: list[str] = []
    with _figure(size + 0.9, size, out) as fig:
        ax = fig.add_subplot()
        ax.grid(False)
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        labels = [str(c)[:14] for c in classes][:n]
        ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels), default=0) > 2 else 0, ha="right"
                      if max(map(len, labels), default=0) > 2 else "center")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                                color=_text_color(im.cmap(im.norm(share[i, j]))))
        cbar = fig.colorbar(im, ax=ax, shrink=0.8)
        cbar.set_label("share of the true class")
    return out[0]


def reliability(curves: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Reliability diagram: accuracy against confidence per bin; marker area ~ images in the bin."""
    out: list[str] = []
    with _figure(4.6, 3.6, out) as fig:
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", color="#9ca3af", lw=1, label="perfect calibration")
        for k, (label, rel) in enumerate(curves):
            conf, acc, count = rel.get("confidence", []), rel.get("accuracy", []), rel.get("count", [])
            pts = [(c, a, n) for c, a, n in zip(conf, acc, count, strict=False) if c is not None and a is not None]
            if not pts:
                continue
            xs, ys, ns = zip(*pts, strict=True)
            total = max(sum(ns), 1)
            color = CLEAN_COLOR if k == 0 else COLORS[(k - 1) % len(COLORS)]
            ax.plot(xs, ys, color=color, lw=1.4, label=label)
            ax.scatter(xs, ys, s=[8 + 120 * n / total for n in ns], color=color, alpha=0.75, zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left")
    return out[0]


def robust_curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], clean_accuracy: float | None,
                  intervals: Mapping[str, Sequence[Interval]] | None = None, clean_interval: Interval = None) -> str:
    """Robust accuracy against eps, one panel per norm; each series starts at (0, clean accuracy).

    Args:
        series: per label (``pgd.Linf``, ``worst case.Linf``), the budgets and robust accuracies.
        clean_accuracy: the eps-0 point of every series, or None for none.
        intervals: per label, each budget's interval (or None), drawn as a shaded band.
        clean_interval: the clean accuracy's interval, the band's width at eps 0 (else none there).
    """
    norms: dict[str, list[str]] = {}
    for label in series:
        norm = label.split(".")[-1] if "." in label else label.split(" ")[0]
        norms.setdefault(norm, []).append(label)
    out: list[str] = []
    with _figure(3.4 * len(norms) + 0.4, 3.2, out) as fig:
        axes = fig.subplots(1, len(norms), squeeze=False)[0]
        for ax, (norm, labels) in zip(axes, norms.items(), strict=True):
            for k, label in enumerate(labels):
                eps, acc = series[label]
                xs, ys = list(eps), list(acc)
                cis = list((intervals or {}).get(label) or [None] * len(xs))
                if clean_accuracy is not None:
                    xs, ys = [0.0, *xs], [clean_accuracy, *ys]
                    cis = [clean_interval or (clean_accuracy, clean_accuracy), *cis]
                pts = [(x, y, c) for x, y, c in zip(xs, ys, cis, strict=True) if y is not None]
                if not pts:
                    continue
                px, py, pc = zip(*pts, strict=True)
                worst = label.startswith("worst")
                color = CLEAN_COLOR if worst else COLORS[k % len(COLORS)]
                ax.plot(px, py, marker="o", ms=4, lw=2.2 if worst else 1.5, ls="--" if worst else "-",
                        color=color, label=label)
                band = [(x, c) for x, c in zip(px, pc, strict=True) if c is not None]
                if len(band) > 1 and any(c[0] != c[1] for _, c in band):
                    band_x = [x for x, _ in band]
                    fill = ax.fill_between(band_x, [c[0] for _, c in band], [c[1] for _, c in band], color=color,
                                           alpha=0.15, lw=0)
                    fill.set_gid(f"{INTERVAL_ID}band-{norm}-{k}")
            ax.set_xlabel(f"eps ({norm}, pixel units)")
            ax.set_ylabel("robust accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(left=0)
            _pct_axis(ax)
            ax.legend(loc="upper right")
            ax.set_title(f"{norm} threat model")
    return out[0]


def corruption_heatmap(accuracy: Mapping[str, Mapping[str, float | None]], corruptions: Sequence[str],
                       severities: Sequence[int | str]) -> str:
    """Corruption x severity accuracy, annotated in percent."""
    grid = np.array([[np.nan if accuracy.get(c, {}).get(str(s)) is None else accuracy[c][str(s)]
                      for s in severities] for c in corruptions], dtype=float)
    out: list[str] = []
    with _figure(1.9 + 0.62 * len(severities) + 0.9, 0.8 + 0.27 * len(corruptions), out) as fig:
        ax = fig.add_subplot()
        ax.grid(False)
        im = ax.imshow(grid, cmap=HEATMAP, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_yticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions])
        ax.set_xlabel("severity")
        for i in range(len(corruptions)):
            for j in range(len(severities)):
                v = grid[i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color=_text_color(im.cmap(im.norm(v))))
        cbar = fig.colorbar(im, ax=ax, shrink=0.85)
        cbar.set_label("accuracy")
        _pct_axis(cbar.ax)
    return out[0]


def corruption_bars(by_family: Mapping[str, float], by_severity: Mapping[str, float],
                    clean_accuracy: float | None, family_intervals: Mapping[str, Interval] | None = None,
                    severity_intervals: Mapping[str, Interval] | None = None, clean_interval: Interval = None) -> str:
    """Mean accuracy per corruption family (bars) and per severity (line), clean accuracy for reference.

    ``family_intervals`` and ``severity_intervals`` (by the same keys) and ``clean_interval`` are
    drawn as error bars where given.
    """
    out: list[str] = []
    with _figure(7.2, 2.8, out) as fig:
        ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.2, 1])
        fams = list(by_family)
        vals = [by_family[f] for f in fams]
        xerr = _errors(vals, [(family_intervals or {}).get(f) for f in fams])
        bars = ax1.barh(range(len(fams)), vals, color=COLORS[0], height=0.6, xerr=xerr,
                        error_kw={"ecolor": CLEAN_COLOR, "capsize": 2, "lw": 0.9})
        if xerr is not None:
            _mark_intervals(bars.errorbar, "family")
        ax1.set_yticks(range(len(fams)), fams)
        ax1.set_ylim(max(len(fams), 4) - 0.5, -0.5)  # top-down, bars as thick as with the four families
        for i, v in enumerate(vals):
            inside = v > 0.3
            # outside labels start past the error bar, so the bar's end stays readable
            right = v + (0.0 if xerr is None or math.isnan(xerr[1, i]) else xerr[1, i])
            ax1.text(v - 0.01 if inside else right + 0.01, i, f"{100 * v:.1f}%", va="center", fontsize=8,
                     ha="right" if inside else "left", color="white" if inside else CLEAN_COLOR)
        if clean_accuracy is not None:
            ax1.axvline(clean_accuracy, color=CLEAN_COLOR, ls="--", lw=1, label="clean")
            ax1.legend(loc="lower right")
        ax1.set_xlim(0, 1.12)
        _pct_axis(ax1, "x")
        ax1.set_xlabel("mean accuracy")
        ax1.set_title("per family")
        sev = list(by_severity)
        xs = [0] + [int(s) for s in sev] if clean_accuracy is not None else [int(s) for s in sev]
        ys = ([clean_accuracy] if clean_accuracy is not None else []) + [by_severity[s] for s in sev]
        cis = ([clean_interval] if clean_accuracy is not None else []) + [(severity_intervals or {}).get(s)
                                                                          for s in sev]
        ax2.plot(xs, ys, marker="o", color=COLORS[1], lw=1.6)
        yerr = _errors(ys, cis)
        if yerr is not None:
            _mark_intervals(ax2.errorbar(xs, ys, yerr=yerr, fmt="none", ecolor=COLORS[1], capsize=3, lw=0.9),
                            "severity")
        ax2.set_xticks(xs, ["clean" if x == 0 else str(x) for x in xs])
        ax2.set_ylim(0, 1.02)
        _pct_axis(ax2)
        ax2.set_xlabel("severity")
        ax2.set_ylabel("mean accuracy")
        ax2.set_title("per severity")
    return out[0]


def shift_bars(splits: Sequence[tuple[str, float | None, float | None]],
               intervals: Mapping[str, Interval] | None = None) -> str:
    """Accuracy per shift split (bars, with error bars from ``intervals`` by split name) against its
    reference accuracy (tick)."""
    out: list[str] = []
    with _figure(6.4, 0.9 + 0.3 * len(splits), out) as fig:
        ax = fig.add_subplot()
        names = [s[0] for s in splits]
        accs = [np.nan if s[1] is None else s[1] for s in splits]
        refs = [np.nan if s[2] is None else s[2] for s in splits]
        xerr = _errors(accs, [(intervals or {}).get(n) for n in names])
        bars = ax.barh(range(len(names)), accs, color=COLORS[0], height=0.6, label="accuracy", xerr=xerr,
                       error_kw={"ecolor": "#6b7280", "capsize": 2, "lw": 0.9})
        if xerr is not None:
            _mark_intervals(bars.errorbar, "split")
        ax.scatter(refs, range(len(names)), marker="|", s=160, color=CLEAN_COLOR, zorder=3, label="reference")
        for i, v in enumerate(accs):
            if math.isfinite(v):
                right = v + (0.0 if xerr is None or math.isnan(xerr[1, i]) else xerr[1, i])
                ax.text(right + 0.01, i, f"{100 * v:.1f}%", va="center", fontsize=8)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        _pct_axis(ax, "x")
        ax.set_xlabel("accuracy")
        ax.legend(loc="lower right")
    return out[0]


def pareto(points: Sequence[tuple[str, float | None, float | None, float | None]], ylabel: str) -> str:
    """Robustness against latency and against size; the Pareto front (faster/smaller and more robust) is drawn.

    ``points``: (label, latency ms, size MB, robustness); a panel is drawn for each axis some point has.
    """
    out: list[str] = []
    panels = [(col, xlabel) for col, xlabel in ((1, "latency (ms, batch 1)"), (2, "size (MB)"))
              if any(p[col] is not None and p[3] is not None for p in points)]  # an axis nobody measured is left out
    with _figure(3.7 * len(panels), 3.2, out) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (col, xlabel) in zip(axes, panels, strict=True):
            pts = [(p[0], p[col], p[3]) for p in points if p[col] is not None and p[3] is not None]
            for k, (label, x, y) in enumerate(pts):
                ax.scatter([x], [y], s=40, color=COLORS[k % len(COLORS)], zorder=3)
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            front, best = [], -math.inf
            for _, x, y in sorted(pts, key=lambda p: (p[1], -p[2])):
                if y > best:
                    front.append((x, y))
                    best = y
            if len(front) > 1:
                fx, fy = zip(*front, strict=True)
                ax.step(fx, fy, where="post", color="#9ca3af", ls="--", lw=1, label="Pareto front")
                ax.legend(loc="lower right")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            _pct_axis(ax)
            ax.margins(x=0.25, y=0.15)
    return out[0]


def stress_curves(family: str, xlabel: str, log_x: bool,
                  lines: Mapping[str, Sequence[tuple[float, Sequence[float | None]]]],
                  metrics: Sequence[str]) -> str:
    """Metrics against the level of one training-data stress, one line per remedy, one panel per metric.

    ``lines``: remedy -> [(level, [value of each metric or None])], levels ascending.
    """
    out: list[str] = []
    with _figure(3.3 * len(metrics) + 0.4, 3.0, out) as fig:
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for m, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
            for k, (remedy, points) in enumerate(lines.items()):
                pts = [(x, v[m]) for x, v in points if v[m] is not None and math.isfinite(v[m])]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=4, lw=1.6, color=COLORS[k % len(COLORS)], label=remedy)
            if log_x:
                from matplotlib.ticker import FuncFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 1, 10, 100, not 10^k
            ax.set_xlabel(xlabel)
            ax.set_title(metric, fontsize=9)
            _pct_axis(ax)
            if m == 0:
                ax.legend(loc="lower left", fontsize=8)
        fig.suptitle(family, fontsize=10)
    return out[0]
