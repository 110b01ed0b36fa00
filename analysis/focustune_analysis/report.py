"""The comparison report: figures first, short conclusions in words, tables for the details;
written as Markdown + PNGs and one self-contained HTML page, plus CSVs, and logged to MLflow as
a ``summary`` run next to the sweep's runs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from focustune.errors import ConfigError
from focustune_analysis import plots
from focustune.tracking_schema import KIND_SUMMARY, KIND_TRIAL, LEADERBOARD_TABLE, NOTE_TAG, TAG, source_tags
from focustune_analysis.collect import METRICS, SELECTED_RERUN, SELECTED_TRIAL, Collection
from focustune_analysis.convergence import epochs_to_target, epochs_to_target_summary, mean_curves
from focustune_analysis.document import Document, latex_tabular
from focustune_analysis.phases import BEST, SELECTION_LABELS, phase_counts, phase_sentence, select_epochs
from focustune_analysis.plots import label
from focustune_analysis.references import references_for
from focustune_analysis.results import (check_usable, compare_to_baseline, confusion_matrices, cross_dataset_table,
                                        datasets_with_results, leaderboard, pairwise_comparisons, per_class_recall,
                                        rank_across_datasets, status_counts)
from focustune_analysis.search import param_importance, search_progress, slices
from focustune_analysis.stats import Ranking

ACROSS = "across_datasets"  # file name stem of the table across datasets


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


# ---------------------------------------------------------------- formatting

def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def mean_se(row: pd.Series, metric: str, interval: bool = True) -> str:
    mean, se = row[metric], row.get(f"{metric}_se", math.nan)
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(se):
        return fmt(mean)
    text = f"{mean:.3f} ± {se:.3f}"
    return text + f" [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]" if interval else text


def comparison_sentence(row: pd.Series, metric: str, alpha: float) -> str:
    """One comparison in words: direction, size with its interval, p-values, n, verdict, caveats."""
    who = f"{row['method']} vs {row['versus']}"
    if row["n"] == 0:
        return f"{who}: {row['note']}."
    d = row["diff"]
    verb = "beats" if d > 0 else "trails" if d < 0 else "ties with"
    text = f"{row['method']} {verb} {row['versus']} by {d:+.3f} {label(metric)}" if d >= 0 else \
        f"{row['method']} {verb} {row['versus']} by {-d:.3f} {label(metric)}"
    if math.isfinite(row["diff_low"]):
        text += f" (95% CI of the difference {row['diff_low']:+.3f} to {row['diff_high']:+.3f})"
    if row["n"] >= 2:
        text += (f", paired t-test p={fmt_p(row['t_p'])} (Holm {fmt_p(row['t_p_holm'])}), "
                 f"Wilcoxon p={fmt_p(row['wilcoxon_p'])}, n={row['n']} seeds: ")
        text += (f"**significant** at α={alpha:g} after Holm correction" if row["significant"]
                 else f"not significant at α={alpha:g}")
        return text + "." + (f" Caveat: {row['note']}." if row["note"] else "")
    return text + ", n=1 paired seed: no test."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def _text_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, rows)])


# ---------------------------------------------------------------- conclusions

def _partial_data(c: Collection, dataset: str, status: pd.DataFrame) -> list[str]:
    notes = []
    table = status[status["dataset"] == dataset]
    for _, row in table.iterrows():
        problems = [f"{row[s]} {word}" for s, word in (("FAILED", "failed"), ("KILLED", "stopped early"),
                                                        ("RUNNING", "still running")) if row.get(s, 0)]
        if problems:
            total = sum(int(row.get(s, 0)) for s in ("FINISHED", "KILLED", "FAILED", "RUNNING"))
            kind = "search trials" if row["kind"] == KIND_TRIAL else "seed re-runs"
            notes.append(f"{row['method']}: {', '.join(problems)} of {total} {kind}")
    chosen = c.selected(dataset)
    for method in c.methods(dataset):
        source = chosen.loc[chosen["method"] == method, "selected_as"]
        if source.empty:
            notes.append(f"{method}: no finished run at all; it is missing from the leaderboard")
        elif source.iloc[0] == SELECTED_TRIAL:
            notes.append(f"{method}: no finished seed re-runs; its row is its best search trial (n=1, no interval)")
    return notes


def _references_sentence(dataset: str, board: pd.DataFrame) -> str | None:
    refs = references_for(dataset)
    if not refs:
        return None
    ours = board[(board["dataset"] == dataset) & (board["source"] != "published")]
    parts = []
    for metric in ("acc", "auc"):
        values = [r.metrics[metric] for r in refs if metric in r.metrics]
        if not values or ours[metric].isna().all():
            continue
        best = ours.loc[ours[metric].idxmax()]
        parts.append(f"published test {label(metric)} {min(values):.3f}–{max(values):.3f}, best here "
                     f"{best[metric]:.3f} ({best['method']})")
    return ("Reference: " + "; ".join(parts) + " (sources in the leaderboard table).") if parts else None


def dataset_conclusions(c: Collection, dataset: str, board: pd.DataFrame, vs_base: pd.DataFrame,
                        pairs: pd.DataFrame, status: pd.DataFrame, metric: str, baseline: str,
                        alpha: float) -> list[str]:
    ours = board[(board["dataset"] == dataset) & (board["source"] != "published")]
    methods = c.methods(dataset)
    lines = []
    if not ours.empty:
        top = ours.iloc[0]
        n_text = f"n={int(top['n'])} seed{'s' if top['n'] > 1 else ''}" if top["source"] == SELECTED_RERUN \
            else "n=1, best search trial"
        lines.append(f"Highest mean test {label(metric)}: **{top['method']}** {mean_se(top, metric, False)} "
                     f"(mean ± SE, {n_text}).")
    if len(methods) < 2:
        lines.append(f"Only {', '.join(methods) or 'no method'} was run on {dataset}: a comparison needs at least "
                     "two methods.")
    elif baseline in methods:
        rows = vs_base[vs_base["dataset"] == dataset].sort_values("diff", ascending=False)
        lines += [comparison_sentence(row, metric, alpha) for _, row in rows.iterrows()]
    else:
        lines.append(f"No {baseline} runs on {dataset}, so no baseline comparison; best against runner-up:")
        rows = pairs[pairs["dataset"] == dataset]
        lines += [comparison_sentence(row, metric, alpha) for _, row in rows.head(1).iterrows()]
    reference = _references_sentence(dataset, board)
    if reference:
        lines.append(reference)
    partial = _partial_data(c, dataset, status)
    if partial:
        lines.append("Partial data: " + "; ".join(partial) + ".")
    return lines


def ranking_sentence(ranking: Ranking, metric: str) -> str:
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in ranking.average_rank.items())
    text = f"Across {len(ranking.scores)} datasets, average rank by test {label(metric)} (1 = best): {ranks}"
    if math.isfinite(ranking.friedman_p):
        average = ranking.average_rank
        apart = [f"{a} vs {b}" for i, a in enumerate(average.index) for b in average.index[i + 1:]
                 if average[b] - average[a] > ranking.critical_difference]
        text += (f"; Friedman p={fmt_p(ranking.friedman_p)}, Nemenyi CD={ranking.critical_difference:.2f}: "
                 + (f"significantly different pairs: {', '.join(apart)}" if apart else "no pair differs by more "
                    "than the CD"))
    return text + (f" ({ranking.note})." if ranking.note else ".")


# ---------------------------------------------------------------- tables for the document

def _leaderboard_rows(board: pd.DataFrame, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
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


def _cross_dataset_section(doc: Document, table: pd.DataFrame, ranking: Ranking, metric: str) -> None:
    columns, rows, bold = cross_dataset_cells(table)
    doc.paragraph(ranking_sentence(ranking, metric))
    doc.table(columns, [[f"**{text}**" if strong else text for text, strong in zip(row, marks)]
                        for row, marks in zip(rows, bold)])
    doc.paragraph(_cross_dataset_caption(metric))


def _cross_dataset_caption(metric: str) -> str:
    return (f"Test {label(metric)}: mean ± SE over the seed re-runs of each dataset and method (a value without SE "
            "is a single run). Avg: mean of the per-dataset means (- where a method misses a dataset). Avg rank: "
            "rank within each dataset (1 = best, ties share), averaged over datasets, for the methods run on every "
            "dataset. Best of each column in bold.")


def _write_cross_dataset(out: Path, table: pd.DataFrame, ranking: Ranking, metric: str) -> list[Path]:
    """``across_datasets.md`` and ``across_datasets.tex`` (a booktabs tabular); the CSV is written
    with the report's other tables."""
    doc = Document(f"Across datasets: test {label(metric)}")
    _cross_dataset_section(doc, table, ranking, metric)
    markdown, latex = out / f"{ACROSS}.md", out / f"{ACROSS}.tex"
    markdown.write_text(doc.to_markdown(out))
    notes = [_cross_dataset_caption(metric), ranking_sentence(ranking, metric), r"needs \usepackage{booktabs}"]
    latex.write_text(latex_tabular(*cross_dataset_cells(table), comments=notes))
    return [markdown, latex]


def _single_dataset_sentence(c: Collection) -> str:
    found = datasets_with_results(c)
    return (f"Results on {len(found)} dataset{'s' if len(found) != 1 else ''} ({', '.join(found) or 'none'}): no "
            "comparison across datasets (table, Friedman test, critical-difference diagram), which needs at least "
            "two.")


# ---------------------------------------------------------------- the report

def build_report(c: Collection, out: str | Path, metric: str = "balanced_acc", baseline: str = "erm",
                 fraction: float = 0.95, alpha: float = 0.05, confidence: float = 0.95,
                 selection: str = BEST) -> Report:
    """Compute everything, draw the figures and write ``report.md``, ``report.html``, ``runs.csv``,
    ``history.csv``, ``leaderboard.csv`` and ``comparisons.csv`` into ``out``; with results on
    several datasets also ``across_datasets.csv``, ``.md`` and ``.tex``; with phased methods
    ``phases.csv``. ``selection`` (see :mod:`focustune_analysis.phases`) picks each run's epoch."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--target-fraction must be in (0, 1], got {fraction}")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    metric = check_usable(c, metric)
    phases = phase_counts(c, metric, confidence)  # both views, from the runs as logged
    c = select_epochs(c, selection)
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in [*figures.glob("*.png"), *out.glob(f"{ACROSS}.*")]:  # files of an earlier report in this folder
        stale.unlink()

    metrics = [metric, *(m for m in METRICS if m != metric)]
    series = f"val_{metric}"
    board = leaderboard(c, metrics, primary=metric, confidence=confidence)
    vs_base = compare_to_baseline(c, metric, baseline, confidence, alpha)
    pairs = pairwise_comparisons(c, metric, confidence, alpha)
    ranking = rank_across_datasets(c, metric, alpha)
    across = cross_dataset_table(c, metric, confidence) if ranking is not None else None
    curves, loss = mean_curves(c, series, confidence), mean_curves(c, "train_loss", confidence)
    to_target = epochs_to_target(c, series, fraction)
    to_target_summary = epochs_to_target_summary(to_target, confidence)
    recall = per_class_recall(c, confidence=confidence)
    progress, importance, slice_table = search_progress(c), param_importance(c), slices(c)
    status = status_counts(c)
    palette = plots.Palette(sorted(c.runs["method"].dropna().unique()))

    doc = Document(f"Method comparison: {c.experiment}")
    doc.paragraph(f"Test {label(metric)} of each method's configuration selected on validation, over its seed "
                  f"re-runs (paired by seed against `{baseline}`). MLflow `{c.tracking_uri}`, experiment "
                  f"`{c.experiment}` (id {c.experiment_id}); {len(c.runs)} runs; generated "
                  f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    doc.paragraph(selection_line(selection))
    written: list[Path] = []

    def figure(fig: Figure | None, name: str, caption: str) -> None:
        if fig is not None:
            path = plots.save(fig, figures / name)
            written.append(path)
            doc.figure(path, caption)

    doc.heading("At a glance")
    for dataset in c.datasets:
        slug = _slug(dataset)
        figure(plots.leaderboard_figure(c.selected(dataset), board[board["dataset"] == dataset], dataset, metrics,
                                        palette), f"{slug}_leaderboard.png",
               f"{dataset}: test metrics per method (dots = seeds, diamond = mean, bar = 95% CI)")
        figure(plots.differences_figure(vs_base, dataset, metric, baseline, palette), f"{slug}_vs_{baseline}.png",
               f"{dataset}: difference to {baseline} in test {label(metric)}, paired by seed (95% CI)")
    if ranking is not None:
        figure(plots.ranking_figure(ranking, palette), "ranking.png",
               "critical-difference diagram: average rank across datasets; a bar joins methods not significantly "
               "different (Nemenyi)")

    conclusions: list[str] = []
    doc.heading("Conclusions")
    for dataset in c.datasets:
        lines = dataset_conclusions(c, dataset, board, vs_base, pairs, status, metric, baseline, alpha)
        prefix = f"**{dataset}**: " if len(c.datasets) > 1 else ""
        conclusions += [prefix + line for line in lines]
    conclusions.append(ranking_sentence(ranking, metric) if ranking is not None else _single_dataset_sentence(c))
    conclusions += [phase_sentence(row, label(metric)) for _, row in phases.iterrows()]
    conclusions += c.notes
    doc.bullets(conclusions)
    if not phases.empty:
        _phases_section(doc, phases, metric)

    for dataset in c.datasets:
        slug = _slug(dataset)
        doc.heading(f"Dataset: {dataset}")
        doc.heading("Leaderboard", 3)
        doc.table(*_leaderboard_rows(board[board["dataset"] == dataset], metrics))
        doc.paragraph("Mean ± standard error [95% t-interval] over n seed re-runs (first metric column), mean ± SE "
                      "elsewhere. Published rows are the sources' own numbers, not re-computed.")
        doc.heading("Significance", 3)
        doc.table(*_comparison_rows(vs_base[vs_base["dataset"] == dataset]))
        if len(c.methods(dataset)) > 2 or baseline not in c.methods(dataset):
            doc.paragraph("All pairs (better mean first):")
            doc.table(*_comparison_rows(pairs[pairs["dataset"] == dataset]))
        doc.heading("Convergence", 3)
        figure(plots.convergence_figure(curves, loss, dataset, series, palette), f"{slug}_convergence.png",
               f"{dataset}: mean {label(series)} and training loss per epoch (band: ± 1 SE over seeds)")
        rows = to_target_summary[to_target_summary["dataset"] == dataset]
        doc.table(["method", f"epochs to {fraction:.0%} of the run's best {label(series)}", "range", "n", "epochs"],
                  [[r["method"], fmt(r["mean"], 1) + (f" ± {r['se']:.1f}" if math.isfinite(r["se"]) else ""),
                    f"{r['min']}–{r['max']}", str(r["n"]), str(r["epochs"])] for _, r in rows.iterrows()])
        doc.heading("Per-class results", 3)
        figure(plots.per_class_figure(recall, dataset, palette), f"{slug}_per_class_recall.png",
               f"{dataset}: test recall per class")
        matrices = confusion_matrices(c, dataset)
        if matrices:
            figure(plots.confusion_figure(matrices, dataset), f"{slug}_confusion.png",
                   f"{dataset}: test confusion matrices summed over seeds")
        doc.heading("Hyperparameter search", 3)
        figure(plots.search_figure(progress, dataset, palette), f"{slug}_search_progress.png",
               f"{dataset}: best search objective so far by trial")
        figure(plots.importance_figure(importance, dataset, palette), f"{slug}_importance.png",
               f"{dataset}: hyperparameter importance (Optuna fANOVA on each method's finished trials)")
        figure(plots.slices_figure(slice_table, dataset, palette), f"{slug}_slices.png",
               f"{dataset}: search objective vs each method's own hyperparameters")
        skipped = importance[(importance["dataset"] == dataset) & importance["param"].isna()]
        doc.bullets([f"{r['method']}: no importance ({r['note']})" for _, r in skipped.iterrows()])
        doc.heading("Runs", 3)
        table = status[status["dataset"] == dataset]
        doc.table(list(table.columns[1:]), table.iloc[:, 1:].astype(str).values.tolist())
        failed = c.runs[(c.runs["dataset"] == dataset) & c.runs["failed_reason"].notna()]
        doc.bullets([f"{r['method']} {r['kind']} {r['run_name']}: {str(r['failed_reason'])[:200]}"
                     for _, r in failed.iterrows()])

    if ranking is not None:
        doc.heading("Across datasets")
        _cross_dataset_section(doc, across, ranking, metric)
        written += _write_cross_dataset(out, across, ranking, metric)

    doc.heading("How these numbers were computed")
    doc.bullets(_method_notes(metric, baseline, fraction, alpha))

    tables = {"runs": c.runs, "history": c.history, "leaderboard": board,
              "comparisons": pd.concat([vs_base.assign(family=f"vs {baseline}"), pairs.assign(family="pairwise")],
                                       ignore_index=True)}
    if across is not None:
        tables[ACROSS] = across
    if not phases.empty:
        tables["phases"] = phases
    for name, table in tables.items():
        path = out / f"{name}.csv"
        table.to_csv(path, index=False)
        written.append(path)
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(doc.to_markdown(out))
    page.write_text(doc.to_html())
    tables.update(vs_baseline=vs_base, pairwise=pairs, epochs_to_target=to_target, per_class_recall=recall,
                  search_progress=progress, importance=importance, status=status)
    terminal = _terminal(board, metrics, across, conclusions, markdown) + "\n" + selection_line(selection)
    return Report(out, markdown, page, [markdown, page, *written], conclusions, terminal, doc.headings(), tables,
                  metric, baseline, selection)


def selection_line(selection: str) -> str:
    return f"Epoch selection: each run's test metrics are those of {SELECTION_LABELS[selection]}."


def _phases_section(doc: Document, phases: pd.DataFrame, metric: str) -> None:
    """Phased methods: seeds that selected an epoch before the mechanism acted, and both views."""
    doc.heading("Phased methods: which epochs were selected")
    doc.table(["dataset", "method", "mechanism from epoch", "seeds", "selected before the mechanism", "phases",
               f"test {label(metric)}, best epoch (`--selection best`)",
               f"test {label(metric)}, best epoch after the mechanism (`--selection after-mechanism`)"],
              [[r["dataset"], r["method"], str(r["mechanism_epoch"]), str(r["n"]), str(r["before_mechanism"]),
                r["phases"] or "-", _view_cell(r, "best"), _view_cell(r, "after")] for _, r in phases.iterrows()])
    doc.paragraph("A phased method's best validation epoch can come from before its mechanism acted (IMET's "
                  "equal-class iteration 0, mdgan's pretraining): its test score is then that of a plain model. "
                  "Mean ± SE [95% t-interval] over the selected seed re-runs.")


def _view_cell(row: pd.Series, view: str) -> str:
    mean, se, low, high = (row[f"{view}_{k}"] for k in ("mean", "se", "low", "high"))
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3f} ± {se:.3f} [{low:.3f}, {high:.3f}]" if math.isfinite(se) else f"{mean:.3f}"


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
        "(per-epoch values), leaderboard.csv, comparisons.csv; with several datasets across_datasets.csv/.md/.tex "
        "(the table across datasets, the .tex a booktabs tabular).",
    ]


def _terminal(board: pd.DataFrame, metrics: list[str], across: pd.DataFrame | None, conclusions: list[str],
              markdown: Path) -> str:
    parts = []
    for dataset, rows in board.groupby("dataset", sort=False):
        columns = ["method", "n", f"test {metrics[0]} (mean ± SE [95% CI])", *metrics[1:]]
        table = [[r["method"], "" if not math.isfinite(r["n"]) else str(int(r["n"])),
                  mean_se(r, metrics[0]), *(mean_se(r, m, False) for m in metrics[1:])] for _, r in rows.iterrows()]
        parts += [f"{dataset}:", _text_table(columns, table), ""]
    if across is not None:
        columns, rows, _ = cross_dataset_cells(across)
        parts += [f"Across datasets (test {metrics[0]}, mean ± SE):", _text_table(columns, rows), ""]
    parts += ["Conclusions:", *(f"- {re.sub(r'[*]{2}', '', line)}" for line in conclusions), "",
              f"Report: {markdown} (and report.html next to it)"]
    return "\n".join(parts)


def leaderboard_table(board: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The leaderboard as text cells (mean ± SE [95% CI] of ``metric``, mean ± SE of the others), one
    row per dataset and method: what the summary run shows as an MLflow table."""
    metrics = [metric, *(m for m in METRICS if m != metric and m in board)]
    columns, rows = _leaderboard_rows(board, metrics)
    return pd.DataFrame([[dataset, *row] for dataset, row in zip(board["dataset"], rows)], columns=["dataset", *columns])


def log_summary_run(c: Collection, report: Report) -> str:
    """Log the report as a new ``summary`` run of the experiment; earlier summary runs are deleted
    (MLflow's soft delete: restorable), the sweep's own runs are not touched. Returns the run id."""
    from mlflow.entities import Metric, Param

    client = c.client()
    earlier = client.search_runs([c.experiment_id], filter_string=f"tags.`{TAG}kind` = '{KIND_SUMMARY}'")
    note = "\n".join(f"- {line}" for line in report.conclusions)
    run = client.create_run(c.experiment_id, run_name=f"compare-{report.metric}", tags={
        f"{TAG}kind": KIND_SUMMARY, f"{TAG}metric": report.metric, f"{TAG}baseline": report.baseline,
        NOTE_TAG: note, **source_tags("compare")})
    board = report.tables["leaderboard"]
    ours = board[board["source"] != "published"]
    stamp = int(datetime.now(timezone.utc).timestamp() * 1000)
    metrics = [Metric(f"{_slug(r['dataset'])}.{_slug(r['method'])}.test_{report.metric}", float(r[report.metric]),
                      stamp, 0) for _, r in ours.iterrows() if math.isfinite(r[report.metric])]
    params = [Param("metric", report.metric), Param("baseline", report.baseline),
              Param("datasets", ",".join(c.datasets)[:500])]
    for start in range(0, max(len(metrics), 1), 100):  # MLflow's batch limit
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 100], params=params if start == 0 else [],
                         synchronous=True)
    for path in report.files:
        folder = path.parent.relative_to(report.out).as_posix()
        client.log_artifact(run.info.run_id, str(path), artifact_path=None if folder == "." else folder)
    client.log_table(run.info.run_id, leaderboard_table(board, report.metric), LEADERBOARD_TABLE)
    client.set_terminated(run.info.run_id, "FINISHED")
    for old in earlier:
        client.delete_run(old.info.run_id)
    return run.info.run_id
