"""``focustune compare``: the comparison report of a sweep's MLflow experiment (``focustune_analysis``),
printed, written to ``--out`` and logged into the experiment as a summary run."""

from __future__ import annotations

import argparse

from focustune.cli import options
from focustune.errors import ConfigError
from focustune.metric_table import CLASS_METRIC_PATTERNS, DEFAULT_SELECTION_METRIC, METRICS
from focustune.tracking_schema import METRIC_NAMES, default_tracking_uri, ui_hint


#: Metrics where lower is better: the comparison's ranks, leaders and paired tests read higher as better.
LOWER_IS_BETTER = tuple(m.name for m in METRICS if m.sign < 0)


def add_options(cmd: argparse.ArgumentParser) -> None:
    options.add_experiment(cmd, "MLflow experiment of the sweep (its --experiment)", required=True)
    options.add_tracking_uri(cmd)
    cmd.add_argument("--metric", default=DEFAULT_SELECTION_METRIC,
                     help=f"test metric to compare: {', '.join((*METRIC_NAMES, *CLASS_METRIC_PATTERNS))} "
                          f"(default {DEFAULT_SELECTION_METRIC})")
    cmd.add_argument("--baseline", default="erm", help="method every other method is tested against")
    cmd.add_argument("--out", default="report", help="folder for report.md, report.html, figures/ and CSVs")
    cmd.add_argument("--target-fraction", type=float, default=0.95,
                     help="epochs-to-target: fraction of a run's best validation score (default 0.95)")
    cmd.add_argument("--selection", default="best", choices=("best", "after-mechanism"),
                     help="each run's epoch: best = the best validation epoch of the whole run (default); "
                          "after-mechanism = for phased methods (IMET, mdgan) the best validation epoch after "
                          "the method's mechanism first acted")
    cmd.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm-corrected)")
    cmd.add_argument("--no-mlflow", action="store_true",
                     help="do not log the report into the experiment as a summary run")


def run(args: argparse.Namespace) -> int:
    from focustune_analysis.collect import HISTORY_METRICS, collect_runs
    from focustune.tracking.store_checks import check_tracking_uri
    from focustune.tracking.summary_run import log_summary_run
    from focustune_analysis.report import build_report

    metric = args.metric.removeprefix("test_")
    if metric in LOWER_IS_BETTER:
        raise ConfigError(f"--metric {metric}: lower is better, and the comparison ranks and tests methods on a "
                          "score where higher is better; the report's calibration section shows "
                          f"{', '.join(LOWER_IS_BETTER)}")
    history = tuple(dict.fromkeys((*HISTORY_METRICS, f"val_{metric}")))
    store = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(store)
    print(f"reading experiment {args.experiment!r} from MLflow {store}", flush=True)
    collection = collect_runs(args.experiment, args.tracking_uri, history_metrics=history)
    report = build_report(collection, args.out, metric=metric, baseline=args.baseline,
                          fraction=args.target_fraction, alpha=args.alpha, selection=args.selection)
    print(report.terminal)
    if args.no_mlflow:
        return 0
    try:
        run_id = log_summary_run(collection, report)
    except Exception as exc:  # the store's own errors (connection, permissions, ...) vary by backend
        raise ConfigError(f"the report is in {report.out}, but logging it to MLflow failed: {exc}") from exc
    print(f"MLflow: summary run {run_id} in experiment {collection.experiment!r} ({ui_hint(collection.tracking_uri)})")
    return 0
