"""What a comparison report is made of, as data: leaderboards, paired tests, the ranking and table
across datasets, phased methods' views, curves, per-class results and search behaviour, computed
once from a collection (:func:`compute_tables`); :mod:`focustune_analysis.report_compose` puts
them in words and :mod:`focustune_analysis.report` writes them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from focustune.errors import ConfigError
from focustune.tracking_schema import METRIC_NAMES
from focustune_analysis.audit import frequency_correlations, per_class_audit, recall_by_frequency
from focustune_analysis.collect import Collection
from focustune_analysis.convergence import epochs_to_target, epochs_to_target_summary, mean_curves
from focustune_analysis.phases import BEST, phase_counts, select_epochs
from focustune_analysis.results import (check_usable, compare_to_baseline, confusion_matrices, cross_dataset_table,
                                        leaderboard, pairwise_comparisons, per_class_recall, rank_across_datasets,
                                        status_counts)
from focustune_analysis.reliability import calibration_table, reliability_bins
from focustune_analysis.search import param_importance, search_progress, slices
from focustune_analysis.stats import Ranking

ACROSS = "across_datasets"  # name of the table across datasets (and stem of its files)


@dataclass
class ReportTables:
    """Everything a report shows, computed from ``c``: the collection as seen under ``selection``
    (``phases`` alone is computed from the runs as logged, for both views)."""

    c: Collection
    metric: str
    baseline: str
    fraction: float
    alpha: float
    selection: str
    metrics: list[str]  # the metric first, then the other metric names
    series: str  # the per-epoch validation curve of the metric
    board: pd.DataFrame
    vs_base: pd.DataFrame
    pairs: pd.DataFrame
    ranking: Ranking | None  # None with results on fewer than 2 datasets
    across: pd.DataFrame | None  # likewise
    phases: pd.DataFrame
    curves: pd.DataFrame
    loss: pd.DataFrame
    to_target: pd.DataFrame
    to_target_summary: pd.DataFrame
    recall: pd.DataFrame
    confusion: dict[str, dict[str, tuple[np.ndarray, int]]]  # dataset -> method -> (summed matrix, runs)
    audit: pd.DataFrame  # per-class recall against the baseline, paired by seed
    class_recall: pd.DataFrame  # per-class recall beside training-class frequency
    correlations: pd.DataFrame  # recall against training-class frequency, per method
    calibration: pd.DataFrame  # ECE, Brier, NLL before and after temperature scaling
    reliability: pd.DataFrame  # reliability bins pooled over seeds
    progress: pd.DataFrame
    importance: pd.DataFrame
    slices: pd.DataFrame
    status: pd.DataFrame

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables written as CSV files, by file stem."""
        tables = {"runs": self.c.runs, "history": self.c.history, "leaderboard": self.board,
                  "comparisons": pd.concat([self.vs_base.assign(family=f"vs {self.baseline}"),
                                            self.pairs.assign(family="pairwise")], ignore_index=True),
                  "per_class_audit": self.audit, "recall_by_frequency": self.class_recall,
                  "calibration": self.calibration}
        if self.across is not None:
            tables[ACROSS] = self.across
        if not self.phases.empty:
            tables["phases"] = self.phases
        return tables

    def all_tables(self) -> dict[str, pd.DataFrame]:
        """The CSV tables and the others behind the report, by name."""
        return {**self.csv_tables(), "vs_baseline": self.vs_base, "pairwise": self.pairs,
                "epochs_to_target": self.to_target, "per_class_recall": self.recall,
                "search_progress": self.progress, "importance": self.importance, "status": self.status,
                "frequency_correlations": self.correlations, "reliability": self.reliability}


def check_report_options(fraction: float, alpha: float) -> None:
    if not 0 < fraction <= 1:
        raise ConfigError(f"--target-fraction must be in (0, 1], got {fraction}")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")


def compute_tables(c: Collection, metric: str = "balanced_acc", baseline: str = "erm", fraction: float = 0.95,
                   alpha: float = 0.05, confidence: float = 0.95, selection: str = BEST) -> ReportTables:
    """Every table of the report; ConfigError for options out of range or a metric no run logged.
    ``selection`` (see :mod:`focustune_analysis.phases`) picks each run's epoch."""
    check_report_options(fraction, alpha)
    metric = check_usable(c, metric)
    phases = phase_counts(c, metric, confidence)  # both views, from the runs as logged
    c = select_epochs(c, selection)
    metrics = [metric, *(m for m in METRIC_NAMES if m != metric)]
    series = f"val_{metric}"
    ranking = rank_across_datasets(c, metric, alpha)
    to_target = epochs_to_target(c, series, fraction)
    class_recall = recall_by_frequency(c, confidence)
    return ReportTables(
        c=c, metric=metric, baseline=baseline, fraction=fraction, alpha=alpha, selection=selection,
        metrics=metrics, series=series,
        board=leaderboard(c, metrics, primary=metric, confidence=confidence),
        vs_base=compare_to_baseline(c, metric, baseline, confidence, alpha),
        pairs=pairwise_comparisons(c, metric, confidence, alpha),
        ranking=ranking, across=cross_dataset_table(c, metric, confidence) if ranking is not None else None,
        phases=phases, curves=mean_curves(c, series, confidence), loss=mean_curves(c, "train_loss", confidence),
        to_target=to_target, to_target_summary=epochs_to_target_summary(to_target, confidence),
        recall=per_class_recall(c, confidence=confidence),
        confusion={dataset: confusion_matrices(c, dataset) for dataset in c.datasets},
        audit=per_class_audit(c, baseline, confidence), class_recall=class_recall,
        correlations=frequency_correlations(class_recall), calibration=calibration_table(c, confidence),
        reliability=reliability_bins(c),
        progress=search_progress(c), importance=param_importance(c), slices=slices(c), status=status_counts(c))
