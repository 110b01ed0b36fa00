"""Compare methods from a focustune sweep's MLflow runs: which is better, by how much, and is the
difference real.

Typical notebook use::

    from focustune_analysis import collect_runs, leaderboard, compare_to_baseline
    runs = collect_runs("pneumonia-compare", "sqlite:///mlflow.db")
    leaderboard(runs)                      # test metrics over seed re-runs, mean ± SE and 95% CI
    compare_to_baseline(runs, "balanced_acc", baseline="erm")   # paired by seed, Holm-corrected
    cross_dataset_table(runs, "balanced_acc")  # methods x datasets, mean ± SE, Avg, Avg rank
"""

import importlib
from typing import Any

# name -> module; loaded on first use so that `focustune --help` does not import pandas/MLflow/SciPy.
_EXPORTS = {
    "audit": ["frequency_correlations", "per_class_audit", "recall_by_frequency"],
    "collect": ["Collection", "collect_runs", "read_history"],
    "convergence": ["epochs_to_target", "epochs_to_target_summary", "mean_curves"],
    "phases": ["phase_counts", "select_epochs"],
    "references": ["REFERENCES", "Reference", "references_for"],
    "reliability": ["calibration_table", "reliability_bins"],
    "report": ["Report", "build_report"],
    "results": ["compare_to_baseline", "confusion_matrices", "cross_dataset_table", "dataset_scores", "leaderboard",
                "pairwise_comparisons", "per_class_recall", "rank_across_datasets", "status_counts"],
    "search": ["param_importance", "search_progress", "searched_params", "slices"],
    "stats": ["estimate", "friedman_nemenyi", "holm", "paired_test", "small_sample_note", "wilcoxon_floor"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)  # noqa: PLE0605 - sorted() returns a list


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'focustune_analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"focustune_analysis.{_MODULE_OF[name]}"), name)
