"""``focustune compare``: the comparison report of a sweep's MLflow experiment.

The focustune CLI owns the sub-command; it calls :func:`add_arguments` to build it and :func:`run`
to execute it (a ``ConfigError`` becomes a one-line error and exit status 2).
"""

from __future__ import annotations

import argparse

from focustune.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="MLflow experiment of the sweep (its --experiment)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db, "
                                               "the sweep's default)")
    parser.add_argument("--metric", default="balanced_acc",
                        help="test metric to compare: acc, balanced_acc, macro_f1, auc, worst_class_recall, "
                             "recall_class_<i> (default balanced_acc)")
    parser.add_argument("--baseline", default="erm", help="method every other method is tested against")
    parser.add_argument("--out", default="report", help="folder for report.md, report.html, figures/ and CSVs")
    parser.add_argument("--target-fraction", type=float, default=0.95,
                        help="epochs-to-target: fraction of a run's best validation score (default 0.95)")
    parser.add_argument("--selection", default="best", choices=("best", "after-mechanism"),
                        help="each run's epoch: best = the best validation epoch of the whole run (default); "
                             "after-mechanism = for phased methods (IMET, mdgan) the best validation epoch after "
                             "the method's mechanism first acted")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm-corrected)")
    parser.add_argument("--no-mlflow", action="store_true",
                        help="do not log the report into the experiment as a summary run")


def run(args: argparse.Namespace) -> int:
    from focustune_analysis.collect import HISTORY_METRICS, collect_runs
    from focustune.sweeps.summary_run import log_summary_run
    from focustune_analysis.report import build_report

    metric = args.metric.removeprefix("test_")
    history = tuple(dict.fromkeys((*HISTORY_METRICS, f"val_{metric}")))
    collection = collect_runs(args.experiment, args.tracking_uri, history_metrics=history)
    report = build_report(collection, args.out, metric=metric, baseline=args.baseline,
                          fraction=args.target_fraction, alpha=args.alpha, selection=args.selection)
    print(report.terminal)
    if not args.no_mlflow:
        try:
            run_id = log_summary_run(collection, report)
        except Exception as exc:  # the store's own errors (connection, permissions, ...) vary by backend
            raise ConfigError(f"the report is in {report.out}, but logging it to MLflow failed: {exc}") from exc
        from focustune.tracking_schema import ui_hint

        print(f"MLflow: summary run {run_id} in experiment {collection.experiment!r} "
              f"({ui_hint(collection.tracking_uri)})")
    return 0
