"""Read a sweep's MLflow experiment into pandas: one row per run, and a long per-epoch table.

The schema is the one the sweep layer writes (names in ``focustune.tracking_schema``): ``focustune.*``
tags (kind, method, dataset, sweep_id, ...), every resolved hyperparameter as a param, final metrics (``test_*``,
``best_val_*``) and per-epoch metrics with step = epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from focustune.errors import ConfigError
from focustune.records import (BEST_EPOCH, BEST_PHASE, FAILED_REASON, MECHANISM_EPOCH, OBJECTIVE, TRAIN_SECONDS,
                               TRIAL_ID)
from focustune.tracking_schema import (BEST_OBJECTIVE, BEST_PARAM_PREFIX, DEFAULT_SELECTION_METRIC, FINAL_PREFIXES,
                                       FINISHED_TRIALS, KIND_RERUN, KIND_STUDY, KIND_TRIAL, METRIC_NAMES, PARENT_TAG,
                                       STOPPED_EARLY, STUDY_SELECTION_PARAMS, TAG, TEMPERATURE, default_tracking_uri)

HP_PREFIX = "hp."
# Params that identify a run rather than configure it.
ID_PARAMS = ("method", "dataset", "seed")
FINAL_KEYS = (BEST_EPOCH, TRAIN_SECONDS, OBJECTIVE, TEMPERATURE)
HISTORY_METRICS = ("train_loss", OBJECTIVE, "lr", *(f"val_{m}" for m in METRIC_NAMES))
SELECTED_RERUN, SELECTED_TRIAL = "seed re-runs", "best search trial"


@dataclass
class Collection:
    """Everything read from one experiment.

    ``runs``: one row per search trial or seed re-run (hyperparameters as ``hp.<name>`` columns,
    final metrics under their MLflow names, ``selected`` marks the runs that stand for a method's
    chosen configuration). ``studies``: one row per (dataset, method) study run, with the selected
    configuration in ``best``. ``history``: long per-epoch table (run_id, dataset, method, kind,
    seed, metric, epoch, value) of the selected runs.
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    studies: pd.DataFrame
    history: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return sorted(self.runs["dataset"].dropna().unique())

    def methods(self, dataset: str) -> list[str]:
        return sorted(self.runs.loc[self.runs["dataset"] == dataset, "method"].dropna().unique())

    def selected(self, dataset: str | None = None) -> pd.DataFrame:
        """The runs that represent each method's selected configuration."""
        runs = self.runs[self.runs["selected"]]
        return runs if dataset is None else runs[runs["dataset"] == dataset]

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)




def open_experiment(experiment: str, tracking_uri: str | None = None) -> tuple[Any, str, str]:
    """(client, experiment id, tracking URI); ConfigError for a missing store or experiment."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):].split("?")[0])
        if not path.is_file():
            raise ConfigError(f"no MLflow database at {path}; run the sweep first or pass --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as exc:  # connection refused, bad URI, ...: MLflow raises many kinds
        raise ConfigError(f"cannot read MLflow at {uri}: {exc}") from exc
    if found is None or found.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no experiment {experiment!r} at {uri}; experiments there: "
                          f"{', '.join(names) or '(none)'}")
    return client, found.experiment_id, uri


def collect_runs(experiment: str, tracking_uri: str | None = None, *,
                 history_metrics: Sequence[str] = HISTORY_METRICS, history_of: str = "selected",
                 workers: int = 8) -> Collection:
    """Read the experiment's runs into a :class:`Collection`.

    ``history_of`` picks whose per-epoch histories are read: ``selected`` (seed re-runs, or the
    best search trial of methods without any), ``all`` runs, or ``none``. Histories are read with
    one request per (run, metric), ``workers`` at a time.
    """
    if history_of not in ("selected", "all", "none"):
        raise ConfigError(f"history_of must be selected, all or none, got {history_of!r}")
    client, experiment_id, uri = open_experiment(experiment, tracking_uri)
    raw = list(_search_all(client, experiment_id))
    studies = _studies_table([r for r in raw if _tag(r, "kind") == KIND_STUDY])
    runs = _runs_table([r for r in raw if _tag(r, "kind") in (KIND_TRIAL, KIND_RERUN)])
    notes: list[str] = []
    runs, studies = _latest_sweep_only(runs, studies, notes)
    runs = mark_selected(runs)
    history_ids: list[str] = {"selected": list(runs.loc[runs["selected"], "run_id"]),
                              "all": list(runs["run_id"]), "none": []}[history_of]
    history = read_history(client, runs, history_ids, history_metrics, workers)
    return Collection(experiment, experiment_id, uri, runs, studies, history, notes)


def _search_all(client: Any, experiment_id: str) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _tag(run: Any, name: str) -> str | None:
    return run.data.tags.get(TAG + name)


def parse_value(text: str | None) -> Any:
    """An MLflow param string -> None, bool, int, float or the string itself."""
    if text is None or text == "none":
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _timestamp(ms: int | None) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def _runs_table(raw: list[Any]) -> pd.DataFrame:
    rows = []
    for run in raw:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        seed = parse_value(params.get("seed"))
        row: dict[str, Any] = {
            "run_id": run.info.run_id, "run_name": run.info.run_name, "kind": _tag(run, "kind"),
            "dataset": _tag(run, "dataset") or params.get("dataset"),
            "method": _tag(run, "method") or params.get("method"),
            "seed": seed if isinstance(seed, int) else None, "status": run.info.status,
            STOPPED_EARLY: _tag(run, STOPPED_EARLY) == "true", FAILED_REASON: _tag(run, FAILED_REASON),
            TRIAL_ID: _tag(run, TRIAL_ID), "sweep_id": _tag(run, "sweep_id"),
            "parent_run_id": tags.get(PARENT_TAG), "start_time": _timestamp(run.info.start_time),
            "end_time": _timestamp(run.info.end_time), "epochs_done": metrics.get("epoch"),
            MECHANISM_EPOCH: parse_value(_tag(run, MECHANISM_EPOCH) or None), BEST_PHASE: _tag(run, BEST_PHASE),
        }
        row.update({f"{HP_PREFIX}{k}": parse_value(v) for k, v in sorted(params.items()) if k not in ID_PARAMS})
        row.update({k: v for k, v in sorted(metrics.items())
                    if k.startswith(FINAL_PREFIXES) or k in FINAL_KEYS})
        rows.append(row)
    columns = ["run_id", "run_name", "kind", "dataset", "method", "seed", "status", STOPPED_EARLY,
               FAILED_REASON, TRIAL_ID, "sweep_id", "parent_run_id", "start_time", "end_time", "epochs_done",
               MECHANISM_EPOCH, BEST_PHASE]
    table = pd.DataFrame(rows, columns=None if rows else columns)
    table["seed"] = table["seed"].astype("Int64")
    for key in FINAL_KEYS:
        if key not in table:
            table[key] = math.nan
    return table.sort_values(["dataset", "method", "kind", "start_time"], ignore_index=True)


def _studies_table(raw: list[Any]) -> pd.DataFrame:
    rows = []
    for run in raw:
        params, metrics = run.data.params, run.data.metrics
        rows.append({
            "run_id": run.info.run_id, "dataset": _tag(run, "dataset"), "method": _tag(run, "method"),
            "sweep_id": _tag(run, "sweep_id"), "status": run.info.status,
            "start_time": _timestamp(run.info.start_time),
            "trials": parse_value(params.get("trials")), "epochs": parse_value(params.get("epochs")),
            "seeds": parse_value(params.get("seeds")), "scheduler": params.get("scheduler"),
            "best_objective": metrics.get(BEST_OBJECTIVE), "finished_trials": metrics.get(FINISHED_TRIALS),
            "best": {k.removeprefix(BEST_PARAM_PREFIX): parse_value(v) for k, v in params.items()
                     if k.startswith(BEST_PARAM_PREFIX) and k.removeprefix(BEST_PARAM_PREFIX) not in ID_PARAMS},
            **{name: params.get(name) for name in STUDY_SELECTION_PARAMS},  # several objectives (else None)
        })
    columns = ["run_id", "dataset", "method", "sweep_id", "status", "start_time", "trials", "epochs", "seeds",
               "scheduler", "best_objective", "finished_trials", "best", *STUDY_SELECTION_PARAMS]
    return pd.DataFrame(rows, columns=columns).sort_values(["dataset", "method"], ignore_index=True)


def _latest_sweep_only(runs: pd.DataFrame, studies: pd.DataFrame,
                       notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where a (dataset, method) study was swept more than once, keep the latest sweep's runs."""
    if studies.empty:
        return runs, studies
    latest = studies.sort_values("start_time").groupby(["dataset", "method"]).tail(1)
    keep = set(zip(latest["dataset"], latest["method"], latest["sweep_id"]))
    swept = set(zip(latest["dataset"], latest["method"]))

    def kept(frame: pd.DataFrame) -> pd.Series:
        return pd.Series([(d, m) not in swept or (d, m, s) in keep
                          for d, m, s in zip(frame["dataset"], frame["method"], frame["sweep_id"])],
                         index=frame.index, dtype=bool)

    dropped_runs = int((~kept(runs)).sum()) if not runs.empty else 0
    if dropped_runs or len(latest) < len(studies):
        notes.append(f"{len(studies) - len(latest)} earlier study run(s) and {dropped_runs} of their runs were "
                     "superseded by a later sweep of the same dataset and method and are left out.")
    return (runs[kept(runs)].reset_index(drop=True) if not runs.empty else runs,
            latest.sort_values(["dataset", "method"], ignore_index=True))


def mark_selected(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``selected_as``/``selected``: the finished seed re-runs of each method's selected
    configuration or, for a method without any, its best finished search trial by best-epoch
    validation score (the sweep's own rule; never test)."""
    runs = runs.copy()
    runs["selected_as"] = ""
    finished = runs["status"] == "FINISHED"
    for _, group in runs.groupby(["dataset", "method"], sort=False):
        reruns = group[(group["kind"] == KIND_RERUN) & finished.loc[group.index]]
        if not reruns.empty:
            latest = reruns.sort_values("start_time").drop_duplicates("seed", keep="last")
            runs.loc[latest.index, "selected_as"] = SELECTED_RERUN
            continue
        trials = group[(group["kind"] == KIND_TRIAL) & finished.loc[group.index]]
        scores = trials.apply(_validation_score, axis=1) if not trials.empty else pd.Series(dtype=float)
        scores = scores.dropna()
        if not scores.empty:
            runs.loc[scores.idxmax(), "selected_as"] = SELECTED_TRIAL
    runs["selected"] = runs["selected_as"] != ""
    return runs


def _validation_score(run: pd.Series) -> float:
    metric = run.get(f"{HP_PREFIX}selection_metric") or DEFAULT_SELECTION_METRIC  # the trainer's default
    value = run.get(f"best_val_{metric}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = run.get(OBJECTIVE)
    return float(value) if value is not None else math.nan


def read_history(client: Any, runs: pd.DataFrame, run_ids: Sequence[str], metrics: Sequence[str],
                 workers: int = 8) -> pd.DataFrame:
    """Long table of per-epoch values (step = epoch) of ``metrics`` for ``run_ids``."""
    columns = ["run_id", "dataset", "method", "kind", "seed", "metric", "epoch", "value"]
    jobs = [(run_id, metric) for run_id in run_ids for metric in metrics]
    if not jobs:
        return pd.DataFrame(columns=columns)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        histories = list(pool.map(lambda job: client.get_metric_history(*job), jobs))
    rows = [(run_id, metric, m.step, m.value) for (run_id, metric), found in zip(jobs, histories) for m in found]
    long = pd.DataFrame(rows, columns=["run_id", "metric", "epoch", "value"])
    long = long.sort_values("epoch").drop_duplicates(["run_id", "metric", "epoch"], keep="last")
    info = runs.set_index("run_id")[["dataset", "method", "kind", "seed"]]
    long = long.join(info, on="run_id")
    return long[columns].sort_values(["dataset", "method", "run_id", "metric", "epoch"], ignore_index=True)


def final_metric_names(runs: pd.DataFrame) -> list[str]:
    """Metric names (without the ``test_`` prefix) that some run logged a test value for."""
    return sorted(c[len("test_"):] for c in runs.columns if c.startswith("test_") and runs[c].notna().any())
