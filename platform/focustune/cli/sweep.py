"""``focustune sweep`` (several methods) and ``focustune tune`` (one method): Optuna searches under
Ray Tune, seed re-runs of the best configurations, and their summary."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from focustune.cli import options
from focustune.cli.console import stderr
from focustune.credentials import masked
from focustune.data.options import DataOptions
from focustune.errors import ConfigError
from focustune.records import StudyRecord
from focustune.text_table import text_table
from focustune.tracking_schema import split_study_key, ui_hint

#: What ``sweep`` takes when neither the command line nor ``--plan`` sets it; ``tune`` changes a few.
SWEEP_DEFAULTS = {"datasets": [DataOptions().dataset], "trials": 20, "epochs": 30, "seeds": 1, "scheduler": "none",
                  "experiment": options.DEFAULT_EXPERIMENT, "data_seed": DataOptions().data_seed,
                  "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "pack": 1}
TUNE_DEFAULTS = {**SWEEP_DEFAULTS, "trials": 40, "seeds": 0, "config_out": "best_config.yaml"}
#: The summary table's columns: the test columns are seed re-runs' metrics (mean ± sd), by their MLflow names.
TEST_COLUMNS = {"test_bal_acc": "test_balanced_acc", "test_auc": "test_auc", "test_acc": "test_acc"}
SUMMARY_COLUMNS = ["dataset", "method", "trials", "best_val", *TEST_COLUMNS, "seeds"]


def add_sweep_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--methods", help="comma-separated methods, e.g. erm,focal,low")
    cmd.add_argument("--space", action="append", metavar="METHOD=FILE",
                     help="a method's own search space file (it extends search_spaces/_shared.yaml)")
    options.add_sweep_options(cmd)


def add_tune_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--method", required=True)
    cmd.add_argument("--space", help="search space file, extending search_spaces/_shared.yaml "
                     "(default: search_spaces/<method>.yaml)")
    options.add_sweep_options(cmd)


def run_sweep(args: argparse.Namespace) -> int:
    return _run(args, SWEEP_DEFAULTS)


def run_tune(args: argparse.Namespace) -> int:
    args.methods, args.space = args.method, [f"{args.method}={args.space}"] if args.space else None
    return _run(args, TUNE_DEFAULTS)


def _run(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    from focustune.sweeps import preflight, runner
    from focustune.sweeps.plan import sweep_spec

    spec = sweep_spec(args, defaults)
    if point := options.operating_point_assignment(args):
        if "operating_point" in spec.fixed:
            raise ConfigError("give the operating point once: --operating-point or --set operating_point=..., "
                              "not both")
        spec.fixed.update(point)
    preflight.validate(spec)  # everything checked before Ray starts or anything is written
    datasets = preflight.load_datasets(spec)
    spaces = preflight.study_spaces(spec, list(datasets))
    preflight.check_study_names(spec, list(spaces))
    preflight.check_config_out(spec, list(spaces), args.overwrite)
    warm_starts = {}
    if spec.warm_start:
        from focustune.tracking.warm_start import warm_start_configs

        warm_starts = warm_start_configs(spec.tracking, spec.warm_start, spaces)
    print(f"sweep of {', '.join(spec.methods)} on {', '.join(datasets)}: {spec.trials} trial(s) x {spec.epochs} "
          f"epoch(s) per study, {spec.seeds} seed re-run(s); storage {masked(spec.storage_path)}; "
          f"MLflow {masked(spec.tracking)} (experiment {spec.experiment})", flush=True)
    sweep = runner.Sweep(spec, spaces)
    summary = sweep.run(datasets, warm_starts)
    _print_summary(summary, spec)
    print(utilisation_line(sweep.state.data.get("utilisation", {})))
    print(f"\nCompare the runs in MLflow: {ui_hint(masked(spec.tracking))}")
    if every_trial_failed(summary):
        failed = sum(study.failed for study in summary.values())
        stderr(f"focustune: error: every search trial of every study failed ({failed}); see each trial's "
               "failed_reason in MLflow")
        return 1
    return 1 if any(study.pareto and study.pareto.selection_refused for study in summary.values()) else 0


def every_trial_failed(summary: dict[str, StudyRecord]) -> bool:
    """Whether the sweep ran search trials and every one of them failed."""
    studies = list(summary.values())
    return bool(studies) and all(s.total and s.failed == s.total for s in studies)


def _print_summary(summary: dict[str, StudyRecord], spec: Any) -> None:
    """The table of studies, then each study's selected configuration."""
    print()
    print(text_table(SUMMARY_COLUMNS, summary_rows(summary, spec.seeds)))
    for key, study in summary.items():
        pareto = study.pareto
        if pareto and pareto.selection_refused:  # the front exists (in MLflow), but no point meets --select
            print(f"{key}: {pareto.selection_refused}")
        elif study.best_config:
            tuned = {k: v for k, v in study.best_config.items() if k not in spec.fixed and k != "epochs"}
            rule = f", --select '{pareto.selection_rule}'" if pareto else ""
            print(f"{key} best configuration (by validation{rule}): " + ", ".join(f"{k}={v}" for k, v in tuned.items()))
            if pareto:
                print(f"{key} Pareto front: {len(pareto.front)} of {len(pareto.points)} point(s) "
                      f"({', '.join(pareto.objectives)}; table and figure on the study's MLflow run)")
        else:
            print(f"{key}: no search trial finished its full budget ({study.failed} failed, "
                  f"{study.stopped_early} stopped early); no re-runs")
    if not spec.seeds:
        print("test columns: the best search trial's test metrics (no seed re-runs; use --seeds K for a comparison)")


def utilisation_line(usage: dict[str, Any]) -> str:
    """Busy over available trial-slot time, overall and per node (over every driver run of a resumed
    sweep: :func:`focustune.sweeps.studies.utilisation`)."""
    if usage.get("overall") is None:
        return "utilisation: no trial ran in this session"
    nodes = ", ".join(f"{node[:8]} {share:.0%}" for node, share in usage["nodes"].items() if share is not None)
    runs = usage.get("attempts", 1)
    over = f"{usage['span_s']:.0f} s" + (f" of {runs} driver runs (resumed)" if runs > 1 else "")
    return f"utilisation: {usage['overall']:.1%} of {usage['slots']} trial slot(s) over {over} (per node: {nodes})"


def summary_rows(summary: dict[str, StudyRecord], seeds: int) -> list[dict[str, Any]]:
    """One row per study: finished trials, best validation score, and the test metrics of its seed
    re-runs (without re-runs, of its best search trial)."""
    rows = []
    for key, study in summary.items():
        dataset, method = split_study_key(key)
        reruns: list[dict[str, Any]] = [r.scores for r in study.completed_reruns]
        if not seeds and study.best_trial_test:
            reruns = [dict(study.best_trial_test)]  # no re-runs: the best search trial itself
        # (B023: the lambda reads this iteration's reruns, and is called in it)
        values = lambda name: [float(v) for r in reruns if (v := r.get(name)) is not None]  # noqa: E731, B023
        rows.append({"dataset": dataset, "method": method, "trials": f"{study.finished}/{study.total}",
                     "best_val": "-" if study.best_objective is None else f"{study.best_objective:.4f}",
                     **{column: _mean_sd(values(name)) for column, name in TEST_COLUMNS.items()},
                     "seeds": f"{len(reruns)}/{seeds}" if seeds else "-"})
    return rows


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"
