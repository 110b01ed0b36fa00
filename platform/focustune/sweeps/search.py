"""Turn a validated :class:`~focustune.spaces.SearchSpace` into Optuna suggestions for Ray Tune."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from focustune.spaces import Dimension, SearchSpace
from focustune.sweeps.trainable import FULL_BUDGET


def _suggest(trial: Any, dim: Dimension) -> Any:
    if dim.type == "choice":
        return trial.suggest_categorical(dim.name, list(dim.values))
    if dim.type == "int":
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.type == "loguniform" or dim.log)


def _ordered(space: SearchSpace) -> list[Dimension]:
    """Dimensions with every `when` condition's key suggested before the key it guards."""
    done: list[Dimension] = []
    pending = list(space.dimensions.values())
    while pending:
        ready = [d for d in pending if all(k in {x.name for x in done} or k not in space.dimensions
                                           for k in d.when)]
        if not ready:
            names = ", ".join(d.name for d in pending)
            raise ValueError(f"search space {space.source}: circular 'when' conditions among {names}")
        done += ready
        pending = [d for d in pending if d not in ready]
    return done


class DefineByRun:
    """An Optuna define-by-run function (picklable, so Tune can checkpoint the searcher).

    Conditional keys are only suggested when their condition holds; ``fixed`` values (e.g. the
    sweep's epoch budget and seed) are returned as constants with every suggestion.
    """

    def __init__(self, space: SearchSpace, fixed: dict[str, Any] | None = None):
        self.fixed = dict(fixed or {})
        self.order = [d for d in _ordered(space) if d.name not in self.fixed]

    def __call__(self, trial: Any) -> dict:
        chosen: dict[str, Any] = {}
        for dim in self.order:
            if all(chosen.get(key, self.fixed.get(key)) == value for key, value in dim.when.items()):
                chosen[dim.name] = _suggest(trial, dim)
        return {**chosen, **self.fixed}


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study the truth: a trial stopped early by the scheduler is PRUNED
    (its score is from a partial budget), a diverged trial is FAILED; only full runs are COMPLETE."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get("diverged"):
            return super().on_trial_complete(trial_id, None, error=True)
        if result and not result.get(FULL_BUDGET):
            return super().on_trial_complete(trial_id, None, error=False)
        return super().on_trial_complete(trial_id, result, error)


def optuna_search(space: SearchSpace, fixed: dict[str, Any], metric: str, seed: int,
                  study_name: str) -> HonestOptunaSearch:
    """Seeded TPE over ``space`` through Ray Tune's Optuna integration."""
    import optuna

    return HonestOptunaSearch(space=DefineByRun(space, fixed), metric=metric, mode="max",
                              sampler=optuna.samplers.TPESampler(seed=seed), study_name=study_name)
