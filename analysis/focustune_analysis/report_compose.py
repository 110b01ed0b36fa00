"""The report's pages composed from its tables: the report document (Markdown and HTML through
:class:`~focustune_analysis.document.Document`), the table across datasets (its own document and a
LaTeX tabular) and the terminal summary. Figures are placed from a mapping ``(dataset, kind) ->
PNG path`` of those drawn (``dataset`` None for the ranking): see :func:`focustune_analysis.report.draw_figures`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from focustune.records import MECHANISM_EPOCH
from focustune.text_table import text_table
from focustune_analysis.document import Document, latex_tabular
from focustune_analysis.plots import label
from focustune_analysis.report_tables import ReportTables
from focustune_analysis.report_text import fmt, fmt_p, mean_se, ranking_sentence, selection_line
from focustune_analysis.stats import NO_INTERVAL, Ranking

FigureKey = tuple[str | None, str]  # (dataset, kind), dataset None for a figure across datasets


# ---------------------------------------------------------------- tables as cells

def leaderboard_rows(board: pd.DataFrame, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a leaderboard: mean ± SE [95% CI] of the first metric, mean ± SE of the
    others, and the selected configuration."""
    columns = ["method", "n", "source", *(f"test {label(m)}" for m in metrics), "selected configuration"]
    rows = []
    for _, row in board.iterrows():
        n = "" if not math.isfinite(row["n"]) else str(int(row["n"]))
        rows.append([row["method"], n, row["source"], *(mean_se(row, m, i == 0) for i, m in enumerate(metrics)),
                     row["config"] or "(defaults)"])
    return columns, rows


def _comparison_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    columns = ["method", "versus", "n", "mean difference [95% CI]", "t-test p", "Holm p", "Wilcoxon p",
               "Wilcoxon Holm p", "significant", "note"]
    rows = [[r["method"], r["versus"], str(r["n"]),
             f"{r['diff']:+.3f}" + (f" [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
                                    if math.isfinite(r["diff_low"]) else "") if math.isfinite(r["diff"]) else "-",
             fmt_p(r["t_p"]), fmt_p(r["t_p_holm"]), fmt_p(r["wilcoxon_p"]), fmt_p(r["wilcoxon_p_holm"]),
             "yes" if r["significant"] else "no", r["note"]] for _, r in table.iterrows()]
    return columns, rows


def cross_dataset_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """:func:`cross_dataset_table` as text: header, rows (mean ± SE per dataset, Avg, Avg rank; "-"
    where a method misses a dataset) and which cells are best in their column (highest mean, lowest
    average rank)."""
    datasets = [column.removesuffix("_se") for column in table.columns if column.endswith("_se")]
    columns = ["method", *datasets, "Avg", "Avg rank"]
    rows = [[r["method"], *(mean_se(r, d, interval=False) for d in datasets), fmt(r["avg"]), fmt(r["avg_rank"], 2)]
            for _, r in table.iterrows()]
    best = [table[column] == table[column].max() for column in [*datasets, "avg"]]
    best.append(table["avg_rank"] == table["avg_rank"].min())
    return columns, rows, [[False, *marks] for marks in zip(*best)]


def _view_cell(row: pd.Series, view: str) -> str:
    mean, se, low, high = (row[f"{view}_{k}"] for k in ("mean", "se", "low", "high"))
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3f} ± {se:.3f} [{low:.3f}, {high:.3f}]" if math.isfinite(se) else f"{mean:.3f}"


# ---------------------------------------------------------------- across datasets

def _cross_dataset_caption(metric: str) -> str:
    return (f"Test {label(metric)}: mean ± SE over the seed re-runs of each dataset and method (a value without SE "
            "is a single run). Avg: mean of the per-dataset means (- where a method misses a dataset). Avg rank: "
            "rank within each dataset (1 = best, ties share), averaged over datasets, for the methods run on every "
            "dataset. Best of each column in bold.")


def _cross_dataset_section(doc: Document, table: pd.DataFrame, ranking: Ranking, metric: str) -> None:
    columns, rows, bold = cross_dataset_cells(table)
    doc.paragraph(ranking_sentence(ranking, metric))
    doc.table(columns, [[f"**{text}**" if strong else text for text, strong in zip(row, marks)]
                        for row, marks in zip(rows, bold)])
    doc.paragraph(_cross_dataset_caption(metric))


def cross_dataset_document(table: pd.DataFrame, ranking: Ranking, metric: str) -> Document:
    """The table across datasets on its own (``across_datasets.md``)."""
    doc = Document(f"Across datasets: test {label(metric)}")
    _cross_dataset_section(doc, table, ranking, metric)
    return doc


def cross_dataset_latex(table: pd.DataFrame, ranking: Ranking, metric: str) -> str:
    """The table across datasets as a booktabs tabular (``across_datasets.tex``)."""
    notes = [_cross_dataset_caption(metric), ranking_sentence(ranking, metric), r"needs \usepackage{booktabs}"]
    return latex_tabular(*cross_dataset_cells(table), comments=notes)


# ---------------------------------------------------------------- the report document

def compose_report(t: ReportTables, conclusions: list[str], figures: Mapping[FigureKey, Path]) -> Document:
    """The report: figures at a glance, conclusions, one section per dataset, the table across
    datasets and how the numbers were computed."""
    c = t.c
    doc = Document(f"Method comparison: {c.experiment}")
    doc.paragraph(f"Test {label(t.metric)} of each method's configuration selected on validation, over its seed "
                  f"re-runs (paired by seed against `{t.baseline}`). MLflow `{c.tracking_uri}`, experiment "
                  f"`{c.experiment}` (id {c.experiment_id}); {len(c.runs)} runs; generated "
                  f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    doc.paragraph(selection_line(t.selection))
    doc.heading("At a glance")
    for dataset in c.datasets:
        _figure(doc, figures, dataset, "leaderboard",
                f"{dataset}: test metrics per method (dots = seeds, diamond = mean, bar = 95% CI)")
        _figure(doc, figures, dataset, "vs_baseline",
                f"{dataset}: difference to {t.baseline} in test {label(t.metric)}, paired by seed (95% CI)")
    _figure(doc, figures, None, "ranking", "critical-difference diagram: average rank across datasets; a bar joins "
            "methods not significantly different (Nemenyi)")
    doc.heading("Conclusions")
    doc.bullets(conclusions)
    if not t.phases.empty:
        _phases_section(doc, t.phases, t.metric)
    for dataset in c.datasets:
        _dataset_section(doc, t, dataset, figures)
    if t.ranking is not None:
        doc.heading("Across datasets")
        _cross_dataset_section(doc, t.across, t.ranking, t.metric)
    doc.heading("How these numbers were computed")
    doc.bullets(_method_notes(t.metric, t.baseline, t.fraction, t.alpha))
    return doc


def _figure(doc: Document, figures: Mapping[FigureKey, Path], dataset: str | None, kind: str, caption: str) -> None:
    if (dataset, kind) in figures:
        doc.figure(figures[dataset, kind], caption)


def _dataset_section(doc: Document, t: ReportTables, dataset: str, figures: Mapping[FigureKey, Path]) -> None:
    c = t.c
    doc.heading(f"Dataset: {dataset}")
    doc.heading("Leaderboard", 3)
    doc.table(*leaderboard_rows(t.board[t.board["dataset"] == dataset], t.metrics))
    doc.paragraph("Mean ± standard error [95% t-interval] over n seed re-runs (first metric column), mean ± SE "
                  "elsewhere. Published rows are the sources' own numbers, not re-computed.")
    doc.heading("Significance", 3)
    doc.table(*_comparison_rows(t.vs_base[t.vs_base["dataset"] == dataset]))
    if len(c.methods(dataset)) > 2 or t.baseline not in c.methods(dataset):
        doc.paragraph("All pairs (better mean first):")
        doc.table(*_comparison_rows(t.pairs[t.pairs["dataset"] == dataset]))
    doc.heading("Convergence", 3)
    _figure(doc, figures, dataset, "convergence",
            f"{dataset}: mean {label(t.series)} and training loss per epoch (band: ± 1 SE over seeds)")
    rows = t.to_target_summary[t.to_target_summary["dataset"] == dataset]
    doc.table(["method", f"epochs to {t.fraction:.0%} of the run's best {label(t.series)}", "range", "n", "epochs"],
              [[r["method"], fmt(r["mean"], 1) + (f" ± {r['se']:.1f}" if math.isfinite(r["se"]) else ""),
                f"{r['min']}–{r['max']}", str(r["n"]), str(r["epochs"])] for _, r in rows.iterrows()])
    doc.heading("Per-class results", 3)
    _figure(doc, figures, dataset, "per_class_recall", f"{dataset}: test recall per class")
    _figure(doc, figures, dataset, "confusion", f"{dataset}: test confusion matrices summed over seeds")
    _audit_section(doc, t, dataset, figures)
    _calibration_section(doc, t, dataset, figures)
    doc.heading("Hyperparameter search", 3)
    _figure(doc, figures, dataset, "search_progress", f"{dataset}: best search objective so far by trial")
    _figure(doc, figures, dataset, "importance",
            f"{dataset}: hyperparameter importance (Optuna fANOVA on each method's finished trials)")
    _figure(doc, figures, dataset, "slices", f"{dataset}: search objective vs each method's own hyperparameters")
    skipped = t.importance[(t.importance["dataset"] == dataset) & t.importance["param"].isna()]
    doc.bullets([f"{r['method']}: no importance ({r['note']})" for _, r in skipped.iterrows()])
    doc.heading("Runs", 3)
    table = t.status[t.status["dataset"] == dataset]
    doc.table(list(table.columns[1:]), table.iloc[:, 1:].astype(str).values.tolist())
    failed = c.runs[(c.runs["dataset"] == dataset) & c.runs["failed_reason"].notna()]
    doc.bullets([f"{r['method']} {r['kind']} {r['run_name']}: {str(r['failed_reason'])[:200]}"
                 for _, r in failed.iterrows()])


def _interval(low: float, high: float) -> str:
    return f" [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else ""


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "-"


def _plus_minus(mean: float, se: float) -> str:
    return fmt(mean) + (f" ± {se:.3f}" if math.isfinite(se) else "")


def _audit_section(doc: Document, t: ReportTables, dataset: str, figures: Mapping[FigureKey, Path]) -> None:
    """Per class: each method's test recall against the baseline, paired by seed, the classes it fixes
    or breaks, and recall against training-class frequency."""
    doc.heading(f"Per-class audit against {t.baseline}", 3)
    rows = t.audit[t.audit["dataset"] == dataset]
    if t.baseline not in t.c.methods(dataset):
        doc.paragraph(f"No {t.baseline} runs on {dataset}: no per-class audit.")
    elif rows.empty:
        doc.paragraph("No per-class test recall recorded by these runs: no per-class audit.")
    else:
        doc.table(["method", "class", "training images (share)", "n", f"{t.baseline} recall", "recall",
                   f"difference to {t.baseline} [95% CI]", "Holm p", "verdict", "note"],
                  [[r["method"], r["class"], _count_cell(r["train_count"], r["train_frequency"]), str(r["n"]),
                    fmt(r["baseline_recall"]), fmt(r["recall"]),
                    _signed(r["diff"]) + _interval(r["diff_low"], r["diff_high"]),
                    fmt_p(r["t_p_holm"]), f"**{r['verdict']}**" if r["verdict"] else "", r["note"]]
                   for _, r in rows.iterrows()])
        doc.paragraph(f"Difference: the method's test recall of the class minus {t.baseline}'s, paired by seed over "
                      "the seed re-runs both have (mean and 95% t-interval; with the same difference on every seed, "
                      "the exact sign-flip test's). **fixes** / **breaks**: that interval excludes 0 (not corrected "
                      "for the many classes; Holm p: the paired test's p, Holm-adjusted over every per-class test of "
                      f"the report). '{NO_INTERVAL}': fewer than 2 paired seeds, or a t-interval leaving [-1, 1], the "
                      "range of a difference of recalls. The "
                      "interval holds seed-to-seed variation only: a class with few test images has a recall that "
                      "moves in large steps (see the confusion matrices). Classes rarest first where training counts "
                      "were recorded.")
    _figure(doc, figures, dataset, "recall_frequency",
            f"{dataset}: test recall per class (mean over seeds) against the class's share of the training split")
    correlations = t.correlations[t.correlations["dataset"] == dataset]
    if (dataset, "recall_frequency") not in figures:
        if not correlations.empty:
            doc.paragraph("Training-class counts not recorded by these runs (the `train_count/<class>` metrics of "
                          "sweeps from this version on): no recall against class frequency.")
        return
    doc.table(["method", "classes", "Pearson r (p)", "Spearman ρ (p)", "note"],
              [[r["method"], str(r["classes"]), _correlation_cell(r["pearson_r"], r["pearson_p"]),
                _correlation_cell(r["spearman_rho"], r["spearman_p"]), r["note"]] for _, r in correlations.iterrows()])


def _count_cell(count: float, share: float) -> str:
    return f"{count:.0f} ({share:.1%})" if math.isfinite(count) else "not recorded"


def _correlation_cell(r: float, p: float) -> str:
    return f"{r:+.2f} ({fmt_p(p)})" if math.isfinite(r) else "-"


def _calibration_section(doc: Document, t: ReportTables, dataset: str, figures: Mapping[FigureKey, Path]) -> None:
    """Test ECE, Brier score and NLL before and after temperature scaling, and the reliability diagram."""
    doc.heading("Calibration", 3)
    rows = t.calibration[t.calibration["dataset"] == dataset]
    if rows.empty:
        doc.paragraph("Calibration not recorded: these runs have no test calibration metrics (`test_ece`, "
                      "`test_ece_calibrated`, ...) and no `calibration.json` artifacts (a sweep older than "
                      "temperature scaling); sweep again to see it.")
        return
    first = ~rows.duplicated("method")
    doc.table(["method", "temperature", "metric", "n", "before scaling", "after scaling",
               "change (after − before) [95% CI]", "note"],
              [[r["method"], _plus_minus(r["temperature"], r["temperature_se"]) if shown else "", label(r["metric"]),
                str(r["n"]), _plus_minus(r["before"], r["before_se"]), _plus_minus(r["after"], r["after_se"]),
                _signed(r["change"]) + _interval(r["change_low"], r["change_high"]), r["note"]]
               for (_, r), shown in zip(rows.iterrows(), first)])
    missing = sorted(set(t.c.methods(dataset)) - set(rows["method"]))
    doc.bullets([f"{method}: calibration not recorded (older runs)" for method in missing])
    doc.paragraph("Test split, mean ± SE over each method's selected runs; the temperature is fitted on validation "
                  "after selection, never on test. Change: paired by run, 95% t-interval (none where it leaves the "
                  "range of the change). "
                  "Lower is better for all three.")
    if (dataset, "reliability") in figures:
        _figure(doc, figures, dataset, "reliability", f"{dataset}: reliability diagrams of each run's selected model "
                "(test split; bins pooled over seeds, weighted by their counts), before and after temperature scaling")
    else:
        doc.paragraph("No `calibration.json` artifacts in these runs: no reliability diagram.")


def _phases_section(doc: Document, phases: pd.DataFrame, metric: str) -> None:
    """Phased methods: seeds that selected an epoch before the mechanism acted, and both views."""
    doc.heading("Phased methods: which epochs were selected")
    doc.table(["dataset", "method", "mechanism from epoch", "seeds", "selected before the mechanism", "phases",
               f"test {label(metric)}, best epoch (`--selection best`)",
               f"test {label(metric)}, best epoch after the mechanism (`--selection after-mechanism`)"],
              [[r["dataset"], r["method"], str(r[MECHANISM_EPOCH]), str(r["n"]), str(r["before_mechanism"]),
                r["phases"] or "-", _view_cell(r, "best"), _view_cell(r, "after")] for _, r in phases.iterrows()])
    doc.paragraph("A phased method's best validation epoch can come from before its mechanism acted (IMET's "
                  "equal-class iteration 0, mdgan's pretraining): its test score is then that of a plain model. "
                  "Mean ± SE [95% t-interval] over the selected seed re-runs.")


def _method_notes(metric: str, baseline: str, fraction: float, alpha: float) -> list[str]:
    return [
        "Each method's configuration is the sweep's choice: the search trial with the best best-epoch "
        "validation score (never test). Its seed re-runs (seeds 1..K, the same for every method) give the test "
        "numbers; a method without finished re-runs falls back to that best search trial (n=1, no interval).",
        "Intervals: mean ± t(0.975, n−1) × SE over seeds. They describe seed-to-seed variation of this training "
        "set-up on this data split, not variation over datasets.",
        f"Significance: differences in test {label(metric)} paired by seed; paired t-test and Wilcoxon "
        "signed-rank (scipy.stats, two-sided); p-values Holm-corrected over all comparisons of a table (against "
        f"{baseline}; all pairs). 'Significant' = Holm-corrected t-test p < {alpha:g}. The exact Wilcoxon test "
        "cannot give p < 0.05 with fewer than 6 seeds.",
        "Across datasets: methods ranked within each dataset by mean test score (ties share the average rank), "
        "ranks averaged over datasets; Friedman test and Nemenyi critical difference (studentized range, "
        "scipy.stats), drawn as a critical-difference diagram.",
        f"Convergence: mean per-epoch validation curves of the seed re-runs; epochs to target = first epoch at "
        f"which a run reaches {fraction:.0%} of its own best validation value.",
        "Search: a trial's score is its objective (best validation value of the selection metric, what "
        "Optuna and ASHA saw); only full-budget trials count as best so far. Importance: Optuna's fANOVA "
        "evaluator on a study rebuilt from the finished trials (distributions spanning the observed values).",
        "Files: report.md + figures/, report.html (self-contained), runs.csv (one row per run), history.csv "
        "(per-epoch values), leaderboard.csv, comparisons.csv, per_class_audit.csv, recall_by_frequency.csv, "
        "calibration.csv; with several datasets across_datasets.csv/.md/.tex "
        "(the table across datasets, the .tex a booktabs tabular).",
    ]


# ---------------------------------------------------------------- the terminal

def terminal_text(t: ReportTables, conclusions: list[str], markdown: Path) -> str:
    """What ``focustune compare`` prints: each dataset's leaderboard, the table across datasets,
    the conclusions (plain text), where the report is, and the epoch selection."""
    metrics = t.metrics
    parts = []
    for dataset, rows in t.board.groupby("dataset", sort=False):
        columns = ["method", "n", f"test {metrics[0]} (mean ± SE [95% CI])", *metrics[1:]]
        table = [[r["method"], "" if not math.isfinite(r["n"]) else str(int(r["n"])),
                  mean_se(r, metrics[0]), *(mean_se(r, m, False) for m in metrics[1:])] for _, r in rows.iterrows()]
        parts += [f"{dataset}:", text_table(columns, table), ""]
    if t.across is not None:
        columns, rows, _ = cross_dataset_cells(t.across)
        parts += [f"Across datasets (test {metrics[0]}, mean ± SE):", text_table(columns, rows), ""]
    parts += ["Conclusions:", *(f"- {re.sub(r'[*]{2}', '', line)}" for line in conclusions), "",
              f"Report: {markdown} (and report.html next to it)", selection_line(t.selection)]
    return "\n".join(parts)
