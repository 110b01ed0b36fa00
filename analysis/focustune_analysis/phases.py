"""Honest comparisons of phased methods (IMET, mdgan, any method with a phase before its mechanism
acts): how many seeds selected an epoch from before the mechanism acted, and the view that selects
only among the epochs after it.

A phased run is one whose ``focustune.mechanism_epoch`` tag is above 1. Its best validation epoch
may fall before the mechanism acted (IMET's equal-class iteration 0, mdgan's pretraining): its test
score is then that of a plain model, not of the method. The sweep logs, for such runs, the best epoch
of each stage as ``after_mechanism_best_epoch``, ``after_mechanism_best_val_*`` and
``after_mechanism_test_*`` (``focustune.tracking_schema.STAGES``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pandas as pd

from focustune.errors import ConfigError
from focustune.records import BEST_PHASE, MECHANISM_EPOCH
from focustune_analysis.collect import Collection, mark_selected
from focustune_analysis.stats import estimate

BEST, AFTER_MECHANISM = "best", "after-mechanism"
SELECTIONS = (BEST, AFTER_MECHANISM)
AFTER_PREFIX = "after_mechanism_"
#: What each selection means, for the report.
SELECTION_LABELS = {
    BEST: "the best validation epoch of the whole run (`--selection best`)",
    AFTER_MECHANISM: "the best validation epoch after the method's mechanism first acted, for phased methods, and "
                     "of the whole run for the others (`--selection after-mechanism`)",
}


def check_selection(selection: str) -> str:
    if selection not in SELECTIONS:
        raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    return selection


def is_phased(runs: pd.DataFrame) -> pd.Series:
    """Runs of a method with a phase before its mechanism acts (mechanism epoch above 1)."""
    return runs[MECHANISM_EPOCH].fillna(1).astype(float) > 1


def selected_before_mechanism(runs: pd.DataFrame) -> pd.Series:
    """Phased runs whose selected (best validation) epoch precedes the mechanism's first epoch."""
    return is_phased(runs) & (runs["best_epoch"].astype(float) < runs[MECHANISM_EPOCH].astype(float))


def select_epochs(c: Collection, selection: str) -> Collection:
    """The collection as seen under ``selection``: with ``after-mechanism`` a phased run's final
    metrics (``test_*``, ``best_val_*``, ``best_epoch``) are those of its best epoch after the
    mechanism acted; a run that selected such an epoch anyway keeps its own; a run from before this
    was logged whose best epoch preceded the mechanism has none (NaN, and a note says how many)."""
    check_selection(selection)
    if selection == BEST or c.runs.empty:
        return c
    runs = c.runs.copy()
    before = selected_before_mechanism(runs)
    finals = [col for col in runs.columns if col.startswith(("test_", "best_val_"))] + ["best_epoch"]
    for column in finals:
        after = runs.get(AFTER_PREFIX + column, pd.Series(math.nan, index=runs.index))
        runs.loc[before, column] = after[before]
    missing = before & runs["best_epoch"].isna()
    notes = list(c.notes)
    if missing.any():
        notes.append(f"{int(missing.sum())} phased run(s) selected an epoch before the mechanism acted and logged no "
                     "after-mechanism metrics (a sweep older than this report): they are left out of this view.")
    runs = mark_selected(runs)
    runs.loc[missing, ["selected_as", "selected"]] = ["", False]
    return dataclasses.replace(c, runs=runs, notes=notes)


def phase_counts(c: Collection, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset and phased method, over its selected runs (seed re-runs): how many selected an
    epoch from before the mechanism acted, in which phases, and the test ``metric`` in both views
    (mean ± SE and t-interval: ``best_*`` and ``after_*``)."""
    columns = ["dataset", "method", MECHANISM_EPOCH, "n", "before_mechanism", "phases", "n_after",
               *(f"{view}_{part}" for view in ("best", "after") for part in ("mean", "se", "low", "high"))]
    chosen = c.runs[c.runs["selected"]] if not c.runs.empty else c.runs
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    after_runs = select_epochs(c, AFTER_MECHANISM).runs.set_index("run_id")
    rows = []
    for (dataset, method), runs in chosen[is_phased(chosen)].groupby(["dataset", "method"]):
        before = selected_before_mechanism(runs)
        after_values = after_runs.loc[runs["run_id"], f"test_{metric}"]
        best_e = estimate(runs[f"test_{metric}"].tolist(), confidence)
        after_e = estimate(after_values.tolist(), confidence)
        phases = Counter(runs.loc[before, BEST_PHASE].fillna("?"))
        rows.append({"dataset": dataset, "method": method, MECHANISM_EPOCH: int(runs[MECHANISM_EPOCH].max()),
                     "n": len(runs), "before_mechanism": int(before.sum()),
                     "phases": ", ".join(f"{p}: {k}" for p, k in sorted(phases.items())),
                     "n_after": after_e.n,
                     **{f"best_{k}": getattr(best_e, k) for k in ("mean", "se", "low", "high")},
                     **{f"after_{k}": getattr(after_e, k) for k in ("mean", "se", "low", "high")}})
    return pd.DataFrame(rows, columns=columns)


def phase_sentence(row: pd.Series, metric_label: str) -> str:
    """One phased method's counts and both views, in words."""
    text = (f"{row['method']} (mechanism from epoch {row[MECHANISM_EPOCH]}): {row['before_mechanism']} of "
            f"{row['n']} seeds selected an epoch from before its mechanism acted")
    text += f" ({row['phases']})" if row["before_mechanism"] else ""
    return text + (f"; test {metric_label} {_mean_se(row, 'best')} with the best epoch of the whole run, "
                   f"{_mean_se(row, 'after')} with the best epoch after the mechanism (n={row['n_after']}).")


def _mean_se(row: pd.Series, view: str) -> str:
    mean, se = row[f"{view}_mean"], row[f"{view}_se"]
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3f} ± {se:.3f}" if math.isfinite(se) else f"{mean:.3f}"
