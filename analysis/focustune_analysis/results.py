"""Test results of each method's selected configuration: leaderboard, paired significance tests,
ranking across datasets, per-class recall, confusion matrices and the runs' status counts."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from focustune.errors import ConfigError
from focustune.metric_table import metric_row
from focustune.tracking_schema import CONFUSION_ARTIFACT, METRIC_NAMES
from focustune_analysis.collect import SELECTED_RERUN, Collection, final_metric_names
from focustune_analysis.references import references_for
from focustune_analysis.search import searched_params
from focustune_analysis.stats import (
    Ranking,
    estimate,
    friedman_nemenyi,
    holm,
    paired_test,
    small_sample_note,
    within,
)

STATUSES = ("FINISHED", "KILLED", "FAILED", "RUNNING")


def check_usable(c: Collection, metric: str) -> str:
    """The metric name to use (a ``test_`` prefix is accepted); ConfigError when the experiment
    has no finished run or no run logged that test metric."""
    finished = int((c.runs["status"] == "FINISHED").sum()) if not c.runs.empty else 0
    if finished == 0:
        counts = c.runs["status"].value_counts().to_dict() if not c.runs.empty else {}
        found = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trial or seed re-run at all"
        raise ConfigError(f"experiment {c.experiment!r} has no finished runs yet ({found}); "
                          "wait for the sweep or check it for errors")
    metric = metric.removeprefix("test_")
    available = final_metric_names(c.runs)
    if metric not in available:
        raise ConfigError(f"--metric {metric}: no run in {c.experiment!r} logged test_{metric}; available: "
                          f"{', '.join(available) or '(none)'}")
    return metric


def selected_config(c: Collection, dataset: str, method: str) -> dict:
    """The selected configuration's searched hyperparameters (all of them when none was searched)."""
    study = c.studies[(c.studies["dataset"] == dataset) & (c.studies["method"] == method)]
    best = dict(study.iloc[-1]["best"]) if not study.empty else {}
    if not best:
        chosen = c.selected(dataset)
        chosen = chosen[chosen["method"] == method]
        if chosen.empty:
            return {}
        best = {k[3:]: v for k, v in chosen.iloc[0].items() if k.startswith("hp.") and v is not None}
    keys = searched_params(c.runs, dataset, method)
    return {k: best.get(k) for k in keys} if keys else best


def format_config(config: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def leaderboard(c: Collection, metrics: Sequence[str] = METRIC_NAMES, primary: str = "balanced_acc",
                confidence: float = 0.95, references: bool = True) -> pd.DataFrame:
    """Per dataset and method: test metrics of the selected configuration over its seed re-runs
    (``<m>`` mean, ``<m>_se``, ``<m>_low``/``<m>_high`` t-interval), or of its best search trial
    (n=1) when it has no re-runs; published reference rows follow (``source`` says which)."""
    rows = []
    for dataset in c.datasets:
        chosen = c.selected(dataset)
        block = []
        for method, runs in chosen.groupby("method"):
            row = {"dataset": dataset, "method": method, "source": runs["selected_as"].iloc[0], "n": len(runs),
                   "seeds": ",".join(str(s) for s in sorted(runs["seed"].dropna())),
                   "config": format_config(selected_config(c, dataset, method))}
            for metric in metrics:
                e = within(estimate(runs.get(f"test_{metric}", pd.Series(dtype=float)).tolist(), confidence),
                           _bounds(metric))
                row.update({metric: e.mean, f"{metric}_se": e.se, f"{metric}_low": e.low, f"{metric}_high": e.high})
            block.append(row)
        block.sort(key=lambda r: -r[primary] if math.isfinite(r[primary]) else math.inf)
        rows.extend(block)
        if references:
            rows.extend({"dataset": dataset, "method": ref.model, "source": "published", "n": math.nan, "seeds": "",
                         "config": ref.source, **{m: ref.metrics.get(m, math.nan) for m in metrics}}
                        for ref in references_for(dataset))
    columns = ["dataset", "method", "source", "n", "seeds", "config"]
    columns += [f"{m}{suffix}" for m in metrics for suffix in ("", "_se", "_low", "_high")]
    return pd.DataFrame(rows, columns=columns)


def _bounds(metric: str) -> tuple[float, float] | None:
    """The range of ``metric``'s values (metric_table), None for a name the table does not know."""
    try:
        return metric_row(metric).bounds
    except ValueError:
        return None


def _paired_scores(c: Collection, dataset: str, method: str, metric: str) -> pd.Series:
    runs = c.selected(dataset)
    runs = runs[(runs["method"] == method) & (runs["selected_as"] == SELECTED_RERUN)]
    column = f"test_{metric}"
    if column not in runs:
        return pd.Series(dtype=float)
    return runs.set_index("seed")[column].dropna().astype(float)


def _comparison_row(c: Collection, dataset: str, method: str, other: str, metric: str, confidence: float,
                    alpha: float) -> dict:
    a, b = _paired_scores(c, dataset, method, metric), _paired_scores(c, dataset, other, metric)
    seeds = sorted(set(a.index) & set(b.index))
    test = paired_test(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy(), confidence)
    bounds = _bounds(metric)
    d = within(test.difference, bounds and (bounds[0] - bounds[1], bounds[1] - bounds[0]))
    missing = [m for m, s in ((method, a), (other, b)) if s.empty]
    note = (f"no seed re-runs of {', '.join(missing)}: no paired test" if missing
            else small_sample_note(test.n, alpha))
    if test.exact:
        note = "; ".join(filter(None, [note, "identical difference on every seed: exact sign-flip test"]))
    return {"dataset": dataset, "method": method, "versus": other, "metric": metric, "n": test.n,
            "seeds": ",".join(map(str, seeds)), "diff": d.mean, "diff_se": d.se, "diff_low": d.low,
            "diff_high": d.high, "t_p": test.t_p, "wilcoxon_p": test.wilcoxon_p, "note": note,
            "differences": tuple(float(x) for x in a.loc[seeds].to_numpy() - b.loc[seeds].to_numpy())}


def _finish(rows: list[dict], alpha: float) -> pd.DataFrame:
    columns = ["dataset", "method", "versus", "metric", "n", "seeds", "diff", "diff_se", "diff_low", "diff_high",
               "t_p", "wilcoxon_p", "t_p_holm", "wilcoxon_p_holm", "significant", "note", "differences"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("t_p_holm", "wilcoxon_p_holm",
                                                                         "significant")])
    table["t_p_holm"] = holm(table["t_p"]) if len(table) else []
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"]) if len(table) else []
    table["significant"] = table["t_p_holm"] < alpha
    return table[columns]


def compare_to_baseline(c: Collection, metric: str = "balanced_acc", baseline: str = "erm",
                        confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """Every method against ``baseline`` on each dataset, paired by seed: ``diff`` = method minus
    baseline (mean over seeds, with its t-interval), paired t-test and Wilcoxon p-values, and both
    Holm-adjusted across all rows of the table. ``significant``: Holm-adjusted t-test p < alpha."""
    rows = [_comparison_row(c, dataset, method, baseline, metric, confidence, alpha)
            for dataset in c.datasets if baseline in c.methods(dataset)
            for method in c.methods(dataset) if method != baseline]
    return _finish(rows, alpha)


def pairwise_comparisons(c: Collection, metric: str = "balanced_acc", confidence: float = 0.95,
                         alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of methods on each dataset, the better mean first (``diff`` >= 0), Holm-adjusted
    across all pairs of all datasets."""
    rows = []
    for dataset in c.datasets:
        means = {m: _paired_scores(c, dataset, m, metric).mean() for m in c.methods(dataset)}
        order = sorted(means, key=lambda m: -means[m] if math.isfinite(means[m]) else math.inf)
        rows += [_comparison_row(c, dataset, a, b, metric, confidence, alpha)
                 for a, b in itertools.combinations(order, 2)]
    return _finish(rows, alpha)


def dataset_scores(c: Collection, metric: str = "balanced_acc") -> pd.DataFrame:
    """Mean test ``metric`` of each method's selected runs: one row per dataset, one column per method."""
    chosen = c.selected()
    column = f"test_{metric}"
    if chosen.empty or column not in chosen:
        return pd.DataFrame()
    return chosen.pivot_table(index="dataset", columns="method", values=column, aggfunc="mean")


def rank_across_datasets(c: Collection, metric: str = "balanced_acc", alpha: float = 0.05) -> Ranking | None:
    """Friedman + Nemenyi over datasets for the methods run on every dataset (None with < 2 datasets)."""
    scores = dataset_scores(c, metric)
    if len(scores) < 2:
        return None
    return friedman_nemenyi(scores, alpha)


def datasets_with_results(c: Collection) -> list[str]:
    """Datasets on which some method has a selected (finished) run."""
    return sorted(c.selected()["dataset"].dropna().unique())


def cross_dataset_table(c: Collection, metric: str = "balanced_acc", confidence: float = 0.95) -> pd.DataFrame:
    """Methods against datasets, as DomainBed prints them: per method (row) and dataset, the test
    ``metric`` of the selected runs as ``<dataset>`` mean, ``<dataset>_se`` and ``<dataset>_n``;
    ``avg``, the mean of the per-dataset means (NaN when a method misses a dataset); ``avg_rank``,
    the rank within each dataset (1 = best, ties share the average rank) averaged over datasets, for
    the methods run on every dataset (those of :func:`rank_across_datasets`). Sorted by ``avg_rank``.
    ConfigError with results on fewer than 2 datasets."""
    metric = check_usable(c, metric)
    ranking = rank_across_datasets(c, metric)
    if ranking is None:
        found = datasets_with_results(c)
        raise ConfigError(f"a table across datasets needs results on at least 2 datasets; {c.experiment!r} has "
                          f"{len(found)}: {', '.join(found) or '(none)'}")
    board = leaderboard(c, [metric], primary=metric, confidence=confidence, references=False)
    datasets = list(board["dataset"].unique())
    table = pd.DataFrame(index=pd.Index(sorted(board["method"].unique()), name="method"))
    for dataset in datasets:
        rows = board[board["dataset"] == dataset].set_index("method")
        table[dataset], table[f"{dataset}_se"] = rows[metric], rows[f"{metric}_se"]
        table[f"{dataset}_n"] = rows["n"].reindex(table.index).fillna(0).astype(int)
    table["avg"] = table[datasets].mean(axis=1, skipna=False)
    table["avg_rank"] = ranking.average_rank
    return table.sort_values(["avg_rank", "avg"], ascending=[True, False], na_position="last").reset_index()


def per_class_recall(c: Collection, split: str = "test", confidence: float = 0.95) -> pd.DataFrame:
    """Recall of every class (``<split>_recall_class_<i>``) per method over its selected runs."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        prefix = f"{split}_recall_class_"
        columns = sorted((col for col in runs.columns if col.startswith(prefix) and runs[col].notna().any()),
                         key=lambda col: int(col[len(prefix):]))
        for col in columns:
            e = estimate(runs[col].tolist(), confidence)
            rows.append({"dataset": dataset, "method": method, "class": int(col[len(prefix):]), "mean": e.mean,
                         "se": e.se, "low": e.low, "high": e.high, "n": e.n})
    return pd.DataFrame(rows, columns=["dataset", "method", "class", "mean", "se", "low", "high", "n"])


def confusion_matrices(c: Collection, dataset: str, split: str = "test") -> dict[str, tuple[np.ndarray, int]]:
    """Per method: the confusion matrix (rows = true class) summed over its selected runs, and how
    many runs it sums (runs without a confusion-matrix artifact are skipped)."""
    out: dict[str, tuple[np.ndarray, int]] = {}
    for method, runs in c.selected(dataset).groupby("method"):
        found = json_artifacts(c, list(runs["run_id"]), CONFUSION_ARTIFACT)
        matrices = [np.asarray(payload[split], dtype=np.int64) for payload in found.values()]
        if matrices:
            out[method] = (np.sum(matrices, axis=0), len(matrices))
    return out


def json_artifacts(c: Collection, run_ids: Sequence[str], name: str) -> dict[str, Any]:
    """Run id -> the parsed JSON artifact ``name`` of each run that has one (an older run, or one
    whose upload failed, is left out)."""
    client = c.client()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        for run_id in run_ids:
            if name not in {f.path for f in client.list_artifacts(run_id)}:
                continue
            path = client.download_artifacts(run_id, name, f"{folder}/{run_id}")
            out[run_id] = json.loads(Path(path).read_text())
    return out


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bar per artifact (restored afterwards)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def status_counts(c: Collection) -> pd.DataFrame:
    """Runs per dataset, method and kind by status (KILLED = stopped early by ASHA)."""
    runs = c.runs
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "method", "kind", *STATUSES])
    table = runs.pivot_table(index=["dataset", "method", "kind"], columns="status", values="run_id",
                             aggfunc="count", fill_value=0)
    for status in STATUSES:
        if status not in table:
            table[status] = 0
    return table[list(STATUSES) + sorted(set(table.columns) - set(STATUSES))].reset_index().rename_axis(None, axis=1)

