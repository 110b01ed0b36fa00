"""Figures of the report, drawn on plain matplotlib ``Figure`` objects (no pyplot state, no display
needed). Every function returns the figure; :func:`save` writes it as PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator, PercentFormatter

from focustune.files import write_atomic
from focustune.metric_table import metric_label
from focustune_analysis.references import references_for
from focustune_analysis.stats import Ranking


def label(metric: str) -> str:
    """Readable metric name (``val_``/``test_``/``best_val_`` prefixes kept as words)."""
    for prefix, word in (("best_val_", "best validation "), ("val_", "validation "), ("test_", "test ")):
        if metric.startswith(prefix):
            return word + label(metric[len(prefix):])
    return metric_label(metric)


class Palette:
    """One colour per method, the same in every figure."""

    def __init__(self, methods: Sequence[str]):
        from matplotlib import colormaps

        cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
        self.colors = {m: cmap(i % cmap.N) for i, m in enumerate(sorted(methods))}

    def __call__(self, method: str) -> tuple:
        return self.colors.get(method, (0.4, 0.4, 0.4, 1.0))


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG (atomically; the folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _legend(ax: Axes, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _grid(n: int, columns: int, width: float, height: float) -> tuple[Figure, list]:
    rows = max(1, math.ceil(n / columns))
    columns = max(1, min(columns, n))
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def leaderboard_figure(selected: pd.DataFrame, board: pd.DataFrame, dataset: str, metrics: Sequence[str],
                       palette: Palette) -> Figure:
    """Per metric: each seed's test value (dots), the mean and its 95% interval, published values."""
    ours = board[board["source"] != "published"]
    order = list(ours["method"])[::-1]  # best at the top
    fig, axes = _grid(len(metrics), len(metrics), 2.6, 0.45 * len(order) + 1.4)
    refs = references_for(dataset)
    for ax, metric in zip(axes, metrics):
        for y, method in enumerate(order):
            runs = selected[selected["method"] == method]
            row = ours[ours["method"] == method].iloc[0]
            color = palette(method)
            values = runs.get(f"test_{metric}", pd.Series(dtype=float)).dropna()
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(values, y + jitter, s=14, color=color, alpha=0.55, linewidths=0)
            if math.isfinite(row[f"{metric}_low"]):
                ax.plot([row[f"{metric}_low"], row[f"{metric}_high"]], [y, y], color=color, lw=2)
            ax.plot([row[metric]], [y], marker="D", color=color, ms=6, mec="black", mew=0.6)
        for ref in (r for r in refs if metric in r.metrics):
            ax.axvline(ref.metrics[metric], color="grey", ls=":", lw=1)
            ax.annotate(ref.model, (ref.metrics[metric], 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=6, color="grey", va="top", ha="right")
        shown = [v for v in (*selected.get(f"test_{metric}", []), *(r.metrics.get(metric, math.nan) for r in refs))
                 if math.isfinite(v)]
        if shown:  # frame the values themselves; a wide interval runs out of the frame
            pad = max(0.03, 0.2 * (max(shown) - min(shown)))
            ax.set_xlim(max(min(shown) - pad, -0.02), min(max(shown) + pad, 1.02))
        ax.set_yticks(range(len(order)), order if ax is axes[0] else [""] * len(order))
        ax.set_ylim(-0.6, len(order) - 0.4)
        ax.set_title(f"test {label(metric)}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{dataset}: test metrics of each method's selected configuration "
                 "(dots: seeds; diamond: mean; bar: 95% CI; dotted: published)", fontsize=9)
    return fig


def differences_figure(comparisons: pd.DataFrame, dataset: str, metric: str, baseline: str,
                       palette: Palette) -> Figure | None:
    """Forest plot: each method minus the baseline, paired by seed, with its 95% interval."""
    rows = comparisons[(comparisons["dataset"] == dataset) & comparisons["diff"].notna()].sort_values("diff")
    if rows.empty:
        return None
    fig = Figure(figsize=(6.5, 0.5 * len(rows) + 1.3), layout="constrained")
    ax = fig.subplots()
    for y, (_, row) in enumerate(rows.iterrows()):
        color = palette(row["method"])
        seeds = np.asarray(row["differences"], dtype=float)
        ax.scatter(seeds, np.full(len(seeds), y + 0.18), s=12, color=color, alpha=0.5, linewidths=0)
        if math.isfinite(row["diff_low"]):
            ax.plot([row["diff_low"], row["diff_high"]], [y, y], color=color, lw=2.5)
        ax.plot([row["diff"]], [y], marker="o", color=color, mec="black", mew=0.6)
        p = row["t_p_holm"]
        text = f"n={row['n']}" + (f", p={p:.2g} (Holm)" if math.isfinite(p) else "")
        ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), fontsize=7, va="center")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), list(rows["method"]))
    ax.set_xlabel(f"difference in test {label(metric)} vs {baseline} (paired by seed)")
    ax.set_title(f"{dataset}: better than {baseline} to the right; dot = mean, bar = 95% CI, small dots = seeds",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def convergence_figure(curves: pd.DataFrame, loss: pd.DataFrame, dataset: str, series: str,
                       palette: Palette) -> Figure | None:
    """Mean validation curve and mean training loss per method; band: ± one standard error over seeds."""
    if curves[curves["dataset"] == dataset].empty:
        return None
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, table, name in ((left, curves, label(series)), (right, loss, "training loss")):
        table = table[table["dataset"] == dataset]
        for method, group in table.groupby("method"):
            color = palette(method)
            ax.plot(group["epoch"], group["mean"], color=color, label=f"{method} (n={group['n'].max()})", lw=1.6)
            band = group.dropna(subset=["se"])
            if not band.empty:
                ax.fill_between(band["epoch"], band["mean"] - band["se"], band["mean"] + band["se"], color=color,
                                alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    _legend(left, fontsize=7)
    fig.suptitle(f"{dataset}: mean over the seed re-runs of each method's selected configuration "
                 "(band: ± 1 SE)", fontsize=9)
    return fig


def per_class_figure(recall: pd.DataFrame, dataset: str, palette: Palette) -> Figure | None:
    """Grouped bars: test recall of each class per method (error bar: ± 1 SE over seeds)."""
    table = recall[recall["dataset"] == dataset]
    if table.empty:
        return None
    methods = sorted(table["method"].unique())
    classes = sorted(table["class"].unique())
    fig = Figure(figsize=(min(12.0, max(5.0, 0.5 * len(classes) * len(methods) + 2)), 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        rows = table[table["method"] == method].set_index("class").reindex(classes)
        x = np.arange(len(classes)) + (i - (len(methods) - 1) / 2) * width
        err = rows["se"].to_numpy(dtype=float)
        ax.bar(x, rows["mean"], width, color=palette(method), label=method,
               yerr=np.where(np.isfinite(err), err, 0), capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(range(len(classes)), [f"class {c}" for c in classes])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test recall")
    _legend(ax, fontsize=7, ncols=min(4, len(methods)))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{dataset}: per-class test recall (bar: mean over seeds, whisker: ± 1 SE)", fontsize=9)
    return fig


def confusion_figure(matrices: dict[str, tuple[np.ndarray, int]], dataset: str) -> Figure:
    """Confusion matrices summed over seeds; colour = row-normalised (recall), text = counts."""
    fig, axes = _grid(len(matrices), 4, 3.0, 3.0)
    for ax, (method, (matrix, n)) in zip(axes, sorted(matrices.items())):
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        k = len(matrix)
        if k <= 10:
            for (i, j), count in np.ndenumerate(matrix):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.6 else "black")
        ax.set_title(f"{method} (sum of {n} run{'s' if n > 1 else ''})", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{dataset}: test confusion matrices", fontsize=9)
    return fig


def search_figure(progress: pd.DataFrame, dataset: str, palette: Palette) -> Figure | None:
    """Best finished objective so far vs trial number; each trial as a dot (open: stopped early,
    x: failed)."""
    table = progress[progress["dataset"] == dataset]
    if table.empty:
        return None
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    markers = {"FINISHED": ("o", None), "KILLED": ("o", "none"), "FAILED": ("x", None), "RUNNING": ("^", "none")}
    for method, group in table.groupby("method"):
        color = palette(method)
        ax.step(group["trial"], group["best_so_far"], where="post", color=color, lw=1.8, label=method)
        for status, (marker, face) in markers.items():
            points = group[group["status"] == status]
            ax.scatter(points["trial"], points["objective"], marker=marker, s=18, color=color,
                       facecolors=face if face else color, alpha=0.7)
    ax.set_xlabel("trial (in start order)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("search objective (best validation score)")
    _legend(ax, fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: search progress (line: best finished trial so far; open dot: stopped early; "
                 "x: failed)", fontsize=8)
    return fig


def importance_figure(importance: pd.DataFrame, dataset: str, palette: Palette) -> Figure | None:
    table = importance[(importance["dataset"] == dataset) & importance["param"].notna()]
    methods = sorted(table["method"].unique())
    if not methods:
        return None
    fig, axes = _grid(len(methods), 3, 3.4, 0.35 * table.groupby("method").size().max() + 1.2)
    for ax, method in zip(axes, methods):
        rows = table[table["method"] == method].sort_values("importance")
        ax.barh(rows["param"], rows["importance"], color=palette(method))
        ax.set_xlim(0, 1)
        ax.set_title(f"{method} ({rows['trials'].iloc[0]} trials)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{dataset}: hyperparameter importance for the search objective (Optuna fANOVA)", fontsize=9)
    return fig


def slices_figure(slices: pd.DataFrame, dataset: str, palette: Palette) -> Figure | None:
    """The search objective against each of a method's own hyperparameters, one panel each."""
    table = slices[slices["dataset"] == dataset]
    panels = list(table.groupby(["method", "param"], sort=True))
    if not panels:
        return None
    fig, axes = _grid(len(panels), 4, 2.8, 2.5)
    for ax, ((method, param), group) in zip(axes, panels):
        color = palette(method)
        values = group["value"]
        numeric = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
        if numeric:
            x = values.astype(float)
            if x.min() > 0 and x.max() / x.min() >= 20:
                ax.set_xscale("log")
        else:
            categories = sorted(values.map(str).unique())
            x = values.map(str).map(categories.index).astype(float)
            ax.set_xticks(range(len(categories)), categories, fontsize=7)
        finished = group["status"] == "FINISHED"
        ax.scatter(x[finished], group["objective"][finished], s=16, color=color)
        ax.scatter(x[~finished], group["objective"][~finished], s=16, facecolors="none", edgecolors=color)
        ax.set_title(f"{method}: {param}", fontsize=8)
        ax.set_ylabel("search objective", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset}: search objective vs each method's own hyperparameters (open: not finished)",
                 fontsize=9)
    return fig


def ranking_figure(ranking: Ranking, palette: Palette) -> Figure:
    """Critical-difference diagram (Demšar 2006): the average-rank axis (1 = best, on the left), each
    method joined to its average rank (better half labelled on the left), the Nemenyi critical
    difference as a scale bar, and thick bars joining methods not significantly different."""
    average, groups = ranking.average_rank, ranking.groups
    k = len(average)
    rows = math.ceil(k / 2)  # label rows per side
    bar_step, row_step = 0.12, 0.3
    first_row = -bar_step * (len(groups) + 1) - 0.1
    last_rank = max(k, 2)
    fig = Figure(figsize=(7, 1.3 + 0.3 * rows + 0.12 * len(groups)), layout="constrained")
    ax = fig.subplots()
    ax.plot([1, last_rank], [0, 0], color="black", lw=1)
    for tick in range(1, last_rank + 1):
        ax.plot([tick, tick], [0, 0.06], color="black", lw=1)
        ax.text(tick, 0.09, str(tick), ha="center", va="bottom", fontsize=8)
    for i, (method, rank) in enumerate(average.items()):
        on_left = i < rows
        y = first_row - row_step * (i if on_left else k - 1 - i)
        end = 0.8 if on_left else last_rank + 0.2
        ax.plot([rank, rank, end], [0, y, y], color=palette(method), lw=1.2)
        ax.text(end + (-0.05 if on_left else 0.05), y, f"{method} ({rank:.2f})", ha="right" if on_left else "left",
                va="center", fontsize=8)
    for i, group in enumerate(groups):
        y = -bar_step * (i + 1)
        ax.plot([average[group[0]] - 0.04, average[group[-1]] + 0.04], [y, y], color="black", lw=4,
                solid_capstyle="round")
    cd = ranking.critical_difference
    if math.isfinite(cd):
        ax.plot([1, 1 + cd], [0.45, 0.45], color="black", lw=1.5, marker="|", ms=8)
        ax.text(1 + cd / 2, 0.5, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
        title = (f"average rank over {len(ranking.scores)} datasets (1 = best); Friedman p = {ranking.friedman_p:.3g}; "
                 "a bar joins methods not significantly different (Nemenyi)")
    else:
        title = f"average rank over {len(ranking.scores)} datasets (1 = best); no Nemenyi test: {ranking.note}"
    ax.set_xlim(0.8, last_rank + 0.2)
    ax.set_ylim(first_row - row_step * rows, 0.75)
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    return fig


def recall_frequency_figure(recall: pd.DataFrame, correlations: pd.DataFrame, dataset: str,
                            palette: Palette) -> Figure | None:
    """Test recall of each class (mean over seeds) against its training-class frequency, one series
    per method (classes joined in frequency order); the legend gives each method's Spearman rho."""
    table = recall[(recall["dataset"] == dataset)].dropna(subset=["recall", "train_frequency"])
    if table.empty:
        return None
    rho = correlations[correlations["dataset"] == dataset].set_index("method")["spearman_rho"]
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for method, group in table.groupby("method"):
        group = group.sort_values("train_frequency")
        r = rho.get(method, math.nan)
        name = f"{method} (Spearman ρ={r:+.2f})" if math.isfinite(r) else method
        ax.plot(group["train_frequency"], group["recall"], marker="o", ms=5, lw=1.2, color=palette(method),
                label=name, alpha=0.85)
    if table["train_frequency"].min() > 0 and table["train_frequency"].max() / table["train_frequency"].min() >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    classes = table.drop_duplicates("class").sort_values("train_frequency")
    top = ax.secondary_xaxis("top")
    top.set_xticks(list(classes["train_frequency"]), [str(c) for c in classes["class"]], rotation=90, fontsize=6)
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(length=2)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("training-class frequency (share of the training split)")
    ax.set_ylabel("test recall (mean over seeds)")
    _legend(ax, fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: per-class test recall against training-class frequency (top: the classes)", fontsize=9)
    return fig


def reliability_figure(bins: pd.DataFrame, dataset: str, palette: Palette) -> Figure | None:
    """Reliability diagram per method: accuracy against mean confidence per bin, pooled over seeds,
    before (grey) and after (the method's colour) temperature scaling; the diagonal is perfect."""
    table = bins[(bins["dataset"] == dataset) & (bins["count"] > 0)]
    methods = sorted(table["method"].unique())
    if not methods:
        return None
    fig, axes = _grid(len(methods), 4, 3.0, 3.0)
    for ax, method in zip(axes, methods):
        rows = table[table["method"] == method]
        ax.plot([0, 1], [0, 1], ls="--", color="black", lw=0.8)
        for stage, color, text in (("before", (0.6, 0.6, 0.6, 1.0), "before"),
                                   ("after", palette(method), "after temperature scaling")):
            part = rows[rows["stage"] == stage].sort_values("bin")
            ax.plot(part["confidence"], part["accuracy"], marker="o", ms=3, lw=1.2, color=color, label=text)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{method} ({rows['runs'].iloc[0]} run{'s' if rows['runs'].iloc[0] > 1 else ''})", fontsize=8)
        ax.set_xlabel("confidence (top-label)", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    _legend(axes[0], fontsize=6, loc="upper left")
    fig.suptitle(f"{dataset}: test reliability (bins pooled over seeds, weighted by count)", fontsize=9)
    return fig
