"""Warm start: a new sweep's studies first try the best configurations an earlier sweep reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from focustune.errors import ConfigError
from focustune.tracking.operations import mlflow_client
from focustune.tracking_schema import BEST_PARAM_PREFIX, KIND_STUDY, TAG, split_study_key


def _best_configurations(client: Any, experiment_id: str) -> dict[str, list[dict[str, str]]]:
    """Per method, the ``best.*`` params (as logged, text) of every study run of the experiment."""
    studies = client.search_runs([experiment_id], filter_string=f"tags.`{TAG}kind` = '{KIND_STUDY}'")
    best_of: dict[str, list[dict[str, str]]] = {}
    for run in studies:
        best = {k.removeprefix(BEST_PARAM_PREFIX): v for k, v in run.data.params.items()
                if k.startswith(BEST_PARAM_PREFIX)}
        if best:
            best_of.setdefault(run.data.tags.get(TAG + "method", ""), []).append(best)
    return best_of


def warm_start_configs(tracking_uri: str, experiment: str, spaces: dict[str, Any]) -> dict[str, list[dict]]:
    """Per study key, the best configurations its method reached in ``experiment`` (any dataset),
    restricted to the values the study's search space can take. Refuses a missing experiment."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise ConfigError(f"--warm-start {experiment}: no MLflow store at {tracking_uri}")
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--warm-start {experiment}: no such experiment in {tracking_uri}")
    best_of = _best_configurations(client, found.experiment_id)
    configs: dict[str, list[dict]] = {}
    for key, space in spaces.items():
        for best in best_of.get(split_study_key(key)[1], []):
            values = {name: dim.value_of(best[name]) for name, dim in space.dimensions.items() if name in best}
            config = {name: v for name, v in values.items() if v is not None}
            if config and config not in configs.setdefault(key, []):
                configs[key].append(config)
    return configs
