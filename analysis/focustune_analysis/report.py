"""The comparison report: figures first, short conclusions in words, tables for the details;
written as Markdown + PNGs and one self-contained HTML page, plus CSVs.

:func:`build_report` computes the tables (:mod:`focustune_analysis.report_tables`), puts them in
words (:mod:`focustune_analysis.report_text`, :mod:`focustune_analysis.report_compose`) and
publishes them here: the figures and the files. ``focustune compare`` also logs the report into
the experiment as a ``summary`` run (:mod:`focustune.tracking.summary_run`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from focustune.files import write_atomic
from focustune_analysis import pareto, plots
from focustune_analysis.collect import Collection
from focustune_analysis.phases import BEST
from focustune_analysis.report_compose import (FigureKey, compose_report, cross_dataset_document, cross_dataset_latex,
                                               terminal_text)
from focustune_analysis.report_tables import ACROSS, ReportTables, compute_tables
from focustune_analysis.report_text import report_conclusions


@dataclass
class Report:
    """What :func:`build_report` wrote and computed."""

    out: Path
    markdown: Path
    html: Path
    files: list[Path]
    conclusions: list[str]
    terminal: str
    headings: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metric: str = "balanced_acc"
    baseline: str = "erm"
    selection: str = BEST


def build_report(c: Collection, out: str | Path, metric: str = "balanced_acc", baseline: str = "erm",
                 fraction: float = 0.95, alpha: float = 0.05, confidence: float = 0.95,
                 selection: str = BEST) -> Report:
    """Compute everything, draw the figures and write ``report.md``, ``report.html``, ``runs.csv``,
    ``history.csv``, ``leaderboard.csv``, ``comparisons.csv``, ``per_class_audit.csv``,
    ``recall_by_frequency.csv`` and ``calibration.csv`` into ``out``; with results on
    several datasets also ``across_datasets.csv``, ``.md`` and ``.tex``; with phased methods
    ``phases.csv``. ``selection`` (see :mod:`focustune_analysis.phases`) picks each run's epoch."""
    t = compute_tables(c, metric, baseline, fraction, alpha, confidence, selection)
    out = Path(out)
    _clear_earlier_report(out)
    figures = draw_figures(t, out / "figures")
    conclusions = report_conclusions(t)
    doc = compose_report(t, conclusions, figures)
    fronts = pareto.add_front_section(doc, c, out / "figures")  # studies searched for several objectives
    written = [*figures.values(), *fronts, *_write_cross_dataset(t, out), *_write_csv(t.csv_tables(), out)]
    markdown = write_atomic(out / "report.md", doc.to_markdown(out))
    page = write_atomic(out / "report.html", doc.to_html())
    return Report(out, markdown, page, [markdown, page, *written], conclusions, terminal_text(t, conclusions, markdown),
                  doc.headings(), t.all_tables(), t.metric, t.baseline, t.selection)


def slug(text: str) -> str:
    """``text`` as a file-name (and MLflow key) part: runs of other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def _clear_earlier_report(out: Path) -> None:
    """Create ``out/figures``; remove the figures and cross-dataset files of an earlier report there."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in [*figures.glob("*.png"), *out.glob(f"{ACROSS}.*")]:
        stale.unlink()


def draw_figures(t: ReportTables, folder: Path) -> dict[FigureKey, Path]:
    """Draw and save every figure with something to show, in report order; ``(dataset, kind)`` ->
    PNG path (dataset None for the ranking across datasets)."""
    palette = plots.Palette(sorted(t.c.runs["method"].dropna().unique()))
    drawn: dict[FigureKey, Path] = {}

    def draw(dataset: str | None, kind: str, make: Callable[[], Figure | None], name: str) -> None:
        fig = make()
        if fig is not None:
            drawn[dataset, kind] = plots.save(fig, folder / name)

    for dataset in t.c.datasets:
        draw(dataset, "leaderboard", lambda: plots.leaderboard_figure(
            t.c.selected(dataset), t.board[t.board["dataset"] == dataset], dataset, t.metrics, palette),
            f"{slug(dataset)}_leaderboard.png")
        draw(dataset, "vs_baseline", lambda: plots.differences_figure(t.vs_base, dataset, t.metric, t.baseline,
                                                                       palette), f"{slug(dataset)}_vs_{t.baseline}.png")
    if t.ranking is not None:
        draw(None, "ranking", lambda: plots.ranking_figure(t.ranking, palette), "ranking.png")
    for dataset in t.c.datasets:
        s = slug(dataset)
        draw(dataset, "convergence", lambda: plots.convergence_figure(t.curves, t.loss, dataset, t.series, palette),
             f"{s}_convergence.png")
        draw(dataset, "per_class_recall", lambda: plots.per_class_figure(t.recall, dataset, palette),
             f"{s}_per_class_recall.png")
        draw(dataset, "recall_frequency", lambda: plots.recall_frequency_figure(t.class_recall, t.correlations,
                                                                                dataset, palette),
             f"{s}_recall_vs_frequency.png")
        draw(dataset, "reliability", lambda: plots.reliability_figure(t.reliability, dataset, palette),
             f"{s}_reliability.png")
        if t.confusion[dataset]:
            draw(dataset, "confusion", lambda: plots.confusion_figure(t.confusion[dataset], dataset),
                 f"{s}_confusion.png")
        draw(dataset, "search_progress", lambda: plots.search_figure(t.progress, dataset, palette),
             f"{s}_search_progress.png")
        draw(dataset, "importance", lambda: plots.importance_figure(t.importance, dataset, palette),
             f"{s}_importance.png")
        draw(dataset, "slices", lambda: plots.slices_figure(t.slices, dataset, palette), f"{s}_slices.png")
    return drawn


def _write_cross_dataset(t: ReportTables, out: Path) -> list[Path]:
    """``across_datasets.md`` and ``across_datasets.tex`` (with results on several datasets; the CSV
    is written with the report's other tables)."""
    if t.ranking is None:
        return []
    markdown = cross_dataset_document(t.across, t.ranking, t.metric).to_markdown(out)
    return [write_atomic(out / f"{ACROSS}.md", markdown),
            write_atomic(out / f"{ACROSS}.tex", cross_dataset_latex(t.across, t.ranking, t.metric))]


def _write_csv(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    return [write_atomic(out / f"{name}.csv", lambda tmp, table=table: table.to_csv(tmp, index=False))
            for name, table in tables.items()]
