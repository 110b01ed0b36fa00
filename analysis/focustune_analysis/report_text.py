"""The report's numbers in words: cell formats, one sentence per comparison, and the conclusions
of a report's tables (:func:`report_conclusions`)."""

from __future__ import annotations

import math

import pandas as pd

from focustune.tracking_schema import KIND_TRIAL, METRIC_NAMES
from focustune_analysis.audit import audit_sentences
from focustune_analysis.collect import SELECTED_RERUN, SELECTED_TRIAL, Collection
from focustune_analysis.phases import SELECTION_LABELS, phase_sentence
from focustune_analysis.plots import label
from focustune_analysis.references import references_for
from focustune_analysis.reliability import calibration_sentences
from focustune_analysis.report_tables import ReportTables
from focustune_analysis.results import datasets_with_results
from focustune_analysis.stats import NO_INTERVAL, Ranking


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def mean_se(row: pd.Series, metric: str, interval: bool = True) -> str:
    """``mean ± SE [low, high]`` of ``metric`` in a leaderboard row (without the interval if not
    ``interval``; the mean alone for a single run; ``-`` for none)."""
    mean, se = row[metric], row.get(f"{metric}_se", math.nan)
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(se):
        return fmt(mean)
    text = f"{mean:.3f} ± {se:.3f}"
    if not interval:
        return text
    low, high = row.get(f"{metric}_low", math.nan), row.get(f"{metric}_high", math.nan)
    return text + (f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) else f" ({NO_INTERVAL})")


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
    elif row["n"] >= 2:
        text += f" ({NO_INTERVAL} of the difference)"
    if row["n"] >= 2:
        text += (f", paired t-test p={fmt_p(row['t_p'])} (Holm {fmt_p(row['t_p_holm'])}), "
                 f"Wilcoxon p={fmt_p(row['wilcoxon_p'])}, n={row['n']} seeds: ")
        text += (f"**significant** at α={alpha:g} after Holm correction" if row["significant"]
                 else f"not significant at α={alpha:g}")
        return text + "." + (f" Caveat: {row['note']}." if row["note"] else "")
    return text + ", n=1 paired seed: no test."


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
    for metric in METRIC_NAMES:
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
    """One dataset's conclusions: the best method, its comparisons (against the baseline, else the
    runner-up), published references and partial data."""
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


def single_dataset_sentence(c: Collection) -> str:
    found = datasets_with_results(c)
    return (f"Results on {len(found)} dataset{'s' if len(found) != 1 else ''} ({', '.join(found) or 'none'}): no "
            "comparison across datasets (table, Friedman test, critical-difference diagram), which needs at least "
            "two.")


def selection_line(selection: str) -> str:
    return f"Epoch selection: each run's test metrics are those of {SELECTION_LABELS[selection]}."


def report_conclusions(t: ReportTables) -> list[str]:
    """The report's conclusions: per dataset (prefixed by its name when there are several), across
    datasets, phased methods, and the collection's notes."""
    conclusions: list[str] = []
    for dataset in t.c.datasets:
        lines = dataset_conclusions(t.c, dataset, t.board, t.vs_base, t.pairs, t.status, t.metric, t.baseline,
                                    t.alpha)
        lines += audit_sentences(t.audit, t.correlations, dataset, t.baseline, t.alpha)
        lines += calibration_sentences(t.calibration, dataset)
        prefix = f"**{dataset}**: " if len(t.c.datasets) > 1 else ""
        conclusions += [prefix + line for line in lines]
    conclusions.append(ranking_sentence(t.ranking, t.metric) if t.ranking is not None
                       else single_dataset_sentence(t.c))
    conclusions += [phase_sentence(row, label(t.metric)) for _, row in t.phases.iterrows()]
    return conclusions + t.c.notes
