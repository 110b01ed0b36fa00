"""How each method's hyperparameter search went: best-so-far by trial, importance of the searched
hyperparameters, and the score against each of them.

The search score is a trial's ``objective``: its best validation value of the selection metric,
what Optuna and ASHA saw. Searched hyperparameters are read off the trials themselves (those that
take more than one value), so a custom ``--space`` file is handled like the default ones.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from focustune.config import SHARED_KEYS
from focustune.records import OBJECTIVE
from focustune.tracking_schema import KIND_TRIAL
from focustune_analysis.collect import HP_PREFIX, Collection


def _trials(runs: pd.DataFrame, dataset: str, method: str) -> pd.DataFrame:
    mask = (runs["dataset"] == dataset) & (runs["method"] == method) & (runs["kind"] == KIND_TRIAL)
    return runs[mask].sort_values("start_time")


def searched_params(runs: pd.DataFrame, dataset: str, method: str) -> list[str]:
    """Hyperparameters that vary across the method's search trials (names without ``hp.``)."""
    trials = _trials(runs, dataset, method)
    names = []
    for column in (c for c in trials.columns if c.startswith(HP_PREFIX)):
        if trials[column].map(repr).nunique() > 1:
            names.append(column[len(HP_PREFIX):])
    return names


def own_params(runs: pd.DataFrame, dataset: str, method: str) -> list[str]:
    """The searched hyperparameters that belong to the method (not the shared training settings)."""
    return [p for p in searched_params(runs, dataset, method) if p not in SHARED_KEYS]


def search_progress(c: Collection) -> pd.DataFrame:
    """Each search trial in start order: its objective and the best objective of finished
    (full-budget) trials so far; stopped-early and failed trials never count as best."""
    frames = []
    for dataset in c.datasets:
        for method in c.methods(dataset):
            trials = _trials(c.runs, dataset, method)
            if trials.empty:
                continue
            finished = trials[OBJECTIVE].where(trials["status"] == "FINISHED")
            frames.append(pd.DataFrame({
                "dataset": dataset, "method": method, "trial": range(1, len(trials) + 1),
                "run_id": trials["run_id"].to_numpy(), "status": trials["status"].to_numpy(),
                "objective": trials[OBJECTIVE].to_numpy() if OBJECTIVE in trials else math.nan,
                "best_so_far": finished.cummax().ffill().to_numpy()}))
    columns = ["dataset", "method", "trial", "run_id", "status", "objective", "best_so_far"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _named(value: Any) -> Any:
    """A hyperparameter value with "none" (None, or NaN in a numeric column) spelled out."""
    return "none" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _distribution(values: pd.Series) -> tuple[Any, pd.Series]:
    """An Optuna distribution spanning the observed values, and the values in its terms."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numeric = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
    if numeric:
        low, high = float(values.min()), float(values.max())
        if values.map(lambda v: isinstance(v, int)).all():
            return IntDistribution(int(low), int(high)), values.astype(int)
        log = low > 0 and high / low >= 20
        return FloatDistribution(low, high, log=log), values.astype(float)
    labels = values.map(str)
    return CategoricalDistribution(sorted(labels.unique())), labels


def param_importance(c: Collection, min_trials: int = 5, seed: int = 0) -> pd.DataFrame:
    """Importance of each searched hyperparameter for the search objective, per method: Optuna's
    fANOVA evaluator on an Optuna study rebuilt from the method's finished trials (each trial added
    with its hyperparameters, distributions spanning the observed values, and its objective).
    Methods with fewer than ``min_trials`` finished trials are listed with a note instead."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    rows = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for dataset in c.datasets:
            for method in c.methods(dataset):
                trials = _trials(c.runs, dataset, method)
                trials = trials[(trials["status"] == "FINISHED") & trials[OBJECTIVE].notna()]
                params = searched_params(c.runs, dataset, method)
                if not params:
                    continue
                if len(trials) < min_trials or trials[OBJECTIVE].nunique() < 2:
                    rows.append({"dataset": dataset, "method": method, "param": None, "importance": math.nan,
                                 "trials": len(trials),
                                 "note": f"only {len(trials)} finished trial(s); needs {min_trials} with "
                                         "differing scores"})
                    continue
                study = optuna.create_study(direction="maximize")
                columns = {p: _distribution(trials[HP_PREFIX + p].map(_named)) for p in params}
                for i, value in enumerate(trials[OBJECTIVE]):
                    study.add_trial(optuna.trial.create_trial(
                        value=float(value), params={p: columns[p][1].iloc[i] for p in params},
                        distributions={p: columns[p][0] for p in params}))
                importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
                rows += [{"dataset": dataset, "method": method, "param": p, "importance": v, "trials": len(trials),
                          "note": ""} for p, v in importances.items()]
    finally:
        optuna.logging.set_verbosity(verbosity)
    return pd.DataFrame(rows, columns=["dataset", "method", "param", "importance", "trials", "note"])


def slices(c: Collection) -> pd.DataFrame:
    """Long table of (trial objective, value of one of the method's own searched hyperparameters)."""
    rows = []
    for dataset in c.datasets:
        for method in c.methods(dataset):
            trials = _trials(c.runs, dataset, method)
            for param in own_params(c.runs, dataset, method):
                rows += [{"dataset": dataset, "method": method, "param": param, "value": _named(value),
                          "objective": objective, "status": status}
                         for value, objective, status in zip(trials[HP_PREFIX + param], trials[OBJECTIVE],
                                                             trials["status"])
                         if objective is not None and math.isfinite(objective)]
    return pd.DataFrame(rows, columns=["dataset", "method", "param", "value", "objective", "status"])
