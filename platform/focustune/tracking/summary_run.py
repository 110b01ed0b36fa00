"""The comparison report of ``focustune compare`` logged into the sweep's experiment as a
``summary`` run: its conclusions as the run's description, each method's test score as a metric,
the per-class audit and calibration as metrics, the report's files as artifacts and the leaderboard
and the per-class audit as MLflow tables."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from focustune.tracking.batches import log_batched
from focustune.tracking_schema import (AUDIT_TABLE, CALIBRATED_SUFFIX, KIND_SUMMARY, LEADERBOARD_TABLE, METRIC_NAMES,
                                       NOTE_TAG, TAG, source_tags)
from focustune_analysis.collect import Collection
from focustune_analysis.report import Report, slug
from focustune_analysis.report_compose import leaderboard_rows


def leaderboard_table(board: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The leaderboard as text cells (mean ± SE [95% CI] of ``metric``, mean ± SE of the others), one
    row per dataset and method: what the summary run shows as an MLflow table."""
    metrics = [metric, *(m for m in METRIC_NAMES if m != metric and m in board)]
    columns, rows = leaderboard_rows(board, metrics)
    return pd.DataFrame([[dataset, *row] for dataset, row in zip(board["dataset"], rows)],
                        columns=["dataset", *columns])


def _key(*parts: str) -> str:
    """An MLflow metric name of ``parts`` joined by '/' (each part as a file-name part, no '.' or '..')."""
    return "/".join(slug(part).strip(".") or "_" for part in parts)


def audit_metrics(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """The per-class audit and the calibration as named metrics (MLflow refuses arrays):
    ``audit_recall_diff/<dataset>/<method>/<class>`` (mean paired difference of test recall to the
    baseline), ``audit_recall_frequency_spearman/<dataset>/<method>`` and
    ``calibration/<dataset>/<method>/test_<metric>`` (and ``..._calibrated``, after temperature scaling)."""
    out = {_key("audit_recall_diff", r["dataset"], r["method"], r["class"]): float(r["diff"])
           for _, r in tables["per_class_audit"].iterrows()}
    out.update({_key("audit_recall_frequency_spearman", r["dataset"], r["method"]): float(r["spearman_rho"])
                for _, r in tables["frequency_correlations"].iterrows()})
    for _, r in tables["calibration"].iterrows():
        name = f"test_{r['metric']}"
        out[_key("calibration", r["dataset"], r["method"], name)] = float(r["before"])
        out[_key("calibration", r["dataset"], r["method"], name + CALIBRATED_SUFFIX)] = float(r["after"])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def log_summary_run(c: Collection, report: Report) -> str:
    """Log the report as a new ``summary`` run of the experiment; earlier summary runs are deleted
    (MLflow's soft delete: restorable), the sweep's own runs are not touched. Returns the run id."""
    client = c.client()
    earlier = client.search_runs([c.experiment_id], filter_string=f"tags.`{TAG}kind` = '{KIND_SUMMARY}'")
    note = "\n".join(f"- {line}" for line in report.conclusions)
    run = client.create_run(c.experiment_id, run_name=f"compare-{report.metric}", tags={
        f"{TAG}kind": KIND_SUMMARY, f"{TAG}metric": report.metric, f"{TAG}baseline": report.baseline,
        NOTE_TAG: note, **source_tags("compare")})
    run_id = run.info.run_id
    board = report.tables["leaderboard"]
    ours = board[board["source"] != "published"]
    scores = {f"{slug(r['dataset'])}.{slug(r['method'])}.test_{report.metric}": float(r[report.metric])
              for _, r in ours.iterrows() if math.isfinite(r[report.metric])}
    scores.update(audit_metrics(report.tables))
    log_batched(client, run_id, metrics=scores,
                params={"metric": report.metric, "baseline": report.baseline, "datasets": ",".join(c.datasets)[:500]},
                timestamp_ms=int(datetime.now(timezone.utc).timestamp() * 1000))
    for path in report.files:
        folder = path.parent.relative_to(report.out).as_posix()
        client.log_artifact(run_id, str(path), artifact_path=None if folder == "." else folder)
    client.log_table(run_id, leaderboard_table(board, report.metric), LEADERBOARD_TABLE)
    audit = report.tables["per_class_audit"]
    if not audit.empty:
        client.log_table(run_id, audit.drop(columns="differences"), AUDIT_TABLE)
    client.set_terminated(run_id, "FINISHED")
    for old in earlier:
        client.delete_run(old.info.run_id)
    return run_id
