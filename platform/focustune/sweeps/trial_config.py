"""A trial's configuration and what it reports: the keys, defined once, and :func:`resolve_trial`,
the one function that turns a trial's config into validated hyperparameters.

A trial's config (Tune's ``config`` dict) holds hyperparameters plus three keys that are not
(:mod:`focustune.records`): its seed, its study (``DATASET/METHOD``) and its kind. Plain
Python (no Ray, no torch), so the study queue and the tracking side can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from focustune.records import KIND_KEY, SEED_KEY, STUDY_KEY
from focustune.tracking_schema import split_study_key

if TYPE_CHECKING:
    from focustune.config import TrainConfig

NOT_HYPERPARAMETERS = (SEED_KEY, STUDY_KEY, KIND_KEY)
#: Every search trial trains with this seed; seed re-runs use 1..K (the same for every method).
SEARCH_SEED = 0



def hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a trial's config (without its seed, study and kind)."""
    return {k: v for k, v in config.items() if k not in NOT_HYPERPARAMETERS}


@dataclass(frozen=True)
class ResolvedTrial:
    """A trial's config, resolved: its study, seed and kind, and its validated hyperparameters."""

    dataset: str
    method: str
    seed: int
    kind: str | None
    train_config: TrainConfig
    method_params: Any

    @property
    def params(self) -> dict[str, Any]:
        """Every resolved hyperparameter, shared first, then the method's."""
        from focustune.config import flat_params

        return flat_params(self.train_config, self.method_params)

    @property
    def tracked_params(self) -> dict[str, Any]:
        """What a trial's MLflow run records as params: method, dataset, seed and every hyperparameter."""
        return {"method": self.method, "dataset": self.dataset, "seed": self.seed, **self.params}

    def build_method(self) -> Any:
        """The method's strategy object for these hyperparameters."""
        from focustune.methods import get_method

        return get_method(self.method)(self.method_params)


def resolve_trial(config: Mapping[str, Any]) -> ResolvedTrial:
    """Resolve a trial's config (with its study key) once: method defaults, then the config's values,
    validated; a ``ConfigError`` names what is wrong."""
    from focustune.config import resolve
    from focustune.methods import get_method

    dataset, method = split_study_key(str(config[STUDY_KEY]))
    train_config, method_params = resolve(get_method(method), hyperparameters(config))
    return ResolvedTrial(dataset=dataset, method=method, seed=int(config.get(SEED_KEY, SEARCH_SEED)),
                         kind=config.get(KIND_KEY), train_config=train_config, method_params=method_params)


def tracked_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's MLflow params: its method, dataset, seed and every resolved hyperparameter."""
    return resolve_trial(config).tracked_params
