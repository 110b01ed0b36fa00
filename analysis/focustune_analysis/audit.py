"""Which classes each method fixes or breaks: per dataset, method and class, the difference in test
recall to the baseline paired by seed, with its 95% interval, and each method's recall against the
training-class frequency (Pearson and Spearman correlation over classes).

Per-class recall is read from the runs' ``test_recall/<class>`` metrics
(``tracking_schema.class_metric_name``), or from older runs' ``test_recall_class_<i>`` (class
``class <i>``); training-class counts from ``train_count/<class>``, which each run logs for its own
training split (a method with a probe split trains on fewer images than one without)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from focustune.metric_table import metric_row
from focustune.tracking_schema import TRAIN_COUNT_PREFIX, class_metric_name
from focustune_analysis.collect import SELECTED_RERUN, Collection
from focustune_analysis.stats import NO_INTERVAL, PairedTest, estimate, holm, paired_test, within

RECALL_PREFIX = class_metric_name("test", "recall", "")
LEGACY_RECALL_PREFIX = f"test_{metric_row('per_class_recall').class_prefix}"
FIXES, BREAKS = "fixes", "breaks"
#: Random pairings of a correlation's permutation test beyond 7 classes (up to 7, all of them).
PERMUTATIONS = 9999
AUDIT_COLUMNS = ["dataset", "method", "versus", "class", "train_count", "train_frequency", "n", "seeds",
                 "baseline_recall", "recall", "diff", "diff_se", "diff_low", "diff_high", "t_p", "t_p_holm", "verdict",
                 "note", "differences"]
CORRELATION_COLUMNS = ["dataset", "method", "classes", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "note"]


def class_recall_columns(runs: pd.DataFrame) -> dict[str, str]:
    """Class name -> the runs' column of its test recall: ``test_recall/<class>`` where any run logged
    one, else the older ``test_recall_class_<i>`` (named ``class <i>``)."""
    named = {col[len(RECALL_PREFIX):]: col for col in runs.columns
             if col.startswith(RECALL_PREFIX) and runs[col].notna().any()}
    if named:
        return dict(sorted(named.items()))
    legacy = sorted((col for col in runs.columns if col.startswith(LEGACY_RECALL_PREFIX) and runs[col].notna().any()),
                    key=lambda col: int(col[len(LEGACY_RECALL_PREFIX):]))
    return {f"class {col[len(LEGACY_RECALL_PREFIX):]}": col for col in legacy}


def training_counts(runs: pd.DataFrame) -> pd.Series:
    """Class name -> mean training count over ``runs`` (empty when no run logged ``train_count/*``)."""
    columns = [col for col in runs.columns if col.startswith(TRAIN_COUNT_PREFIX) and runs[col].notna().any()]
    means = runs[columns].mean() if columns else pd.Series(dtype=float)
    means.index = [col[len(TRAIN_COUNT_PREFIX):] for col in columns]
    return means


def difference_range(metric: str) -> tuple[float, float] | None:
    """Where a difference of two values of ``metric`` lies (from its range in ``metric_table``; None
    for an unbounded metric)."""
    bounds = metric_row(metric).bounds
    return None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])


def bounded_interval(test: PairedTest, bounds: tuple[float, float] | None) -> tuple[float, float, str]:
    """The interval of a paired difference as compare prints it (:func:`stats.within`): none, with the
    note that n is too small, below 2 pairs or where the t-interval leaves ``bounds`` (the range of
    the difference); with no spread, the exact sign-flip test's inverted interval (the note says so)."""
    e = within(test.difference, bounds)
    if not math.isfinite(e.low):
        return math.nan, math.nan, f"{NO_INTERVAL} (n={e.n})"
    return e.low, e.high, "the same difference on every seed: exact sign-flip test" if test.exact else ""


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return FIXES
    if high < 0:
        return BREAKS
    return ""


def _paired(runs: pd.DataFrame, column: str) -> pd.Series:
    reruns = runs[runs["selected_as"] == SELECTED_RERUN]
    if column not in reruns:
        return pd.Series(dtype=float)
    return reruns.set_index("seed")[column].dropna().astype(float)


def per_class_audit(c: Collection, baseline: str = "erm", confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset, method (not ``baseline``) and class: test recall minus the baseline's, paired by
    seed over the selected seed re-runs: mean (``diff``) with its 95% interval (``diff_low``/
    ``diff_high``, :func:`bounded_interval`; NaN and a ``note`` where the seeds give none), the paired
    test's p (t-test; exact sign-flip without spread) and its Holm adjustment over the whole table,
    and ``verdict`` ``fixes``/``breaks`` where the interval excludes 0. Classes are listed rarest
    first where training counts were logged."""
    rows = []
    for dataset in c.datasets:
        chosen = c.selected(dataset)
        if baseline not in set(chosen["method"]):
            continue
        base = chosen[chosen["method"] == baseline]
        for method, runs in chosen.groupby("method"):
            if method == baseline:
                continue
            counts = training_counts(runs)
            total = counts.sum()
            base_columns = class_recall_columns(base)
            for name, column in class_recall_columns(runs).items():
                a = _paired(runs, column)
                b = _paired(base, base_columns[name]) if name in base_columns else pd.Series(dtype=float)
                seeds = sorted(set(a.index) & set(b.index))
                test = paired_test(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy(), confidence)
                low, high, note = bounded_interval(test, difference_range("per_class_recall"))
                if a.empty or b.empty:
                    missing = method if a.empty else baseline
                    note = f"no seed re-runs of {missing} with this class's recall: no paired difference"
                count = counts.get(name, math.nan)
                rows.append({"dataset": dataset, "method": method, "versus": baseline, "class": name,
                             "train_count": count, "train_frequency": count / total if total else math.nan,
                             "n": test.n, "seeds": ",".join(map(str, seeds)),
                             "baseline_recall": float(b.loc[seeds].mean()) if seeds else math.nan,
                             "recall": float(a.loc[seeds].mean()) if seeds else math.nan,
                             "diff": test.difference.mean, "diff_se": test.difference.se, "diff_low": low,
                             "diff_high": high, "t_p": test.t_p,
                             "verdict": _verdict(low, high), "note": note,
                             "differences": tuple(float(x) for x in a.loc[seeds].to_numpy() - b.loc[seeds].to_numpy())})
    table = pd.DataFrame(rows, columns=[col for col in AUDIT_COLUMNS if col != "t_p_holm"])
    table["t_p_holm"] = holm(table["t_p"]) if len(table) else []
    table = table.sort_values(["dataset", "method", "train_count", "class"], na_position="last", ignore_index=True)
    return table[AUDIT_COLUMNS]


def recall_by_frequency(c: Collection, confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset, method and class: mean test recall over the selected runs (``recall``, ``se``,
    ``n``) beside the method's training count and frequency of the class (NaN where not logged)."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        counts = training_counts(runs)
        total = counts.sum()
        for name, column in class_recall_columns(runs).items():
            e = estimate(runs[column].tolist(), confidence)
            count = counts.get(name, math.nan)
            rows.append({"dataset": dataset, "method": method, "class": name, "recall": e.mean, "se": e.se, "n": e.n,
                         "train_count": count, "train_frequency": count / total if total else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "method", "class", "recall", "se", "n", "train_count",
                                       "train_frequency"])


def frequency_correlations(recall: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method of :func:`recall_by_frequency`: Pearson's r and Spearman's rho (with
    two-sided permutation p-values, scipy.stats) of mean test recall against training-class frequency
    over the classes; NaN with a note where there are fewer than 3 classes with both, or either is constant."""
    rows = []
    for (dataset, method), group in recall.groupby(["dataset", "method"]):
        known = group.dropna(subset=["recall", "train_frequency"])
        row = {"dataset": dataset, "method": method, "classes": len(known), "pearson_r": math.nan,
               "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan,
               "note": _correlation_note(known, len(group))}
        if not row["note"]:
            x, y = known["train_frequency"].to_numpy(float), known["recall"].to_numpy(float)
            pearson = _permutation_pearson(x, y)
            spearman = _permutation_pearson(stats.rankdata(x), stats.rankdata(y))  # Spearman: Pearson of ranks
            row.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                       spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
        rows.append(row)
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def _permutation_pearson(x: np.ndarray, y: np.ndarray) -> Any:
    """Pearson's r with a permutation p-value over the pairings of the classes: exact up to 7 classes
    (7! pairings), from :data:`PERMUTATIONS` random pairings beyond (few classes are too few for
    the t-approximation: it gives p = 0 for a perfect rank order of 4 classes, whose exact p is 1/12)."""
    method = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(0))
    return stats.pearsonr(x, y, method=method)


def _correlation_note(known: pd.DataFrame, classes: int) -> str:
    if known["train_frequency"].isna().all() or not len(known):
        return "training-class counts not recorded (runs older than train_count/<class>)"
    if len(known) < 3:
        return f"{len(known)} classes: a correlation needs at least 3"
    if _constant(known["train_frequency"]):
        return "every class equally frequent: no correlation"
    if _constant(known["recall"]):
        return "the same recall on every class: no correlation"
    return "" if len(known) == classes else f"{classes - len(known)} classes without a training count left out"


def _constant(values: pd.Series) -> bool:
    return bool(np.ptp(values.to_numpy(float)) <= 1e-12)


def audit_sentences(audit: pd.DataFrame, correlations: pd.DataFrame, dataset: str, baseline: str,
                    alpha: float = 0.05) -> list[str]:
    """The audit of ``dataset`` in words: per method, the classes it fixes and breaks (with the
    difference and its interval), how many marks survive Holm correction, and the correlations."""
    table = audit[audit["dataset"] == dataset]
    if table.empty:
        return []
    lines = []
    for method, rows in table.groupby("method", sort=False):
        marked = {verdict: rows[rows["verdict"] == verdict] for verdict in (FIXES, BREAKS)}
        parts = [f"{verdict} " + ", ".join(_marked_class(r) for _, r in found.iterrows())
                 for verdict, found in marked.items() if not found.empty]
        lines.append(f"Per-class audit: {method} " + ("; ".join(parts) if parts else "fixes and breaks no class")
                     + f" (test recall vs {baseline}, paired by seed, 95% CI excluding 0).")
    marks = table[table["verdict"] != ""]
    if not marks.empty:
        kept = int((marks["t_p_holm"] < alpha).sum())
        lines.append(f"Of these {len(marks)} marked class(es), {kept} remain significant at α={alpha:g} after Holm "
                     f"correction over all {int(audit['t_p'].notna().sum())} per-class tests of the report.")
    for _, r in correlations[correlations["dataset"] == dataset].iterrows():
        if math.isfinite(r["spearman_rho"]):
            lines.append(f"{r['method']}: test recall vs training-class frequency over {r['classes']} classes, "
                         f"Pearson r={r['pearson_r']:+.2f}, Spearman ρ={r['spearman_rho']:+.2f} "
                         f"(p={r['spearman_p']:.2g}).")
    return lines


def _marked_class(row: pd.Series) -> str:
    return f"{row['class']} ({row['diff']:+.2f} [{row['diff_low']:+.2f}, {row['diff_high']:+.2f}])"
