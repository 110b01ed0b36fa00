"""What a sweep hands over per study: the chosen configuration as a file ``train --config`` accepts,
and the selected model, logged on the study's run (and registered with ``--register``).

The selected model is the best-epoch weights of the study's best seed re-run by validation score,
or of its best search trial when there are no re-runs; they come from that trial's last Tune
checkpoint (the trainer's checkpoint holds the best epoch's weights). What was handed over is
recorded in ``sweep.json``, so ``--resume`` finishes an interrupted hand-over and never repeats one;
a driver killed after logging (or registering) a model but before ``sweep.json`` recorded it finds
that model and its version again (:func:`~focustune.tracking.model_package.log_run_model` is
idempotent per run), so nothing is logged or registered twice.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from focustune.run_config import RunConfig
from focustune.sweeps.spec import DatasetSpec, SweepSpec
from focustune.sweeps.state import SweepState, filesystem
from focustune.records import SEED_KEY, STUDY_KEY, TRIAL_ID, DeliveredModel, ParetoRecord, SelectedRun
from focustune.sweeps.trial_config import resolve_trial
from focustune.tracking_schema import CONFIG_ARTIFACT, split_study_key
from focustune.training import CHECKPOINT_FILE

CONFIGS_FOLDER = "configs"  # under the sweep's storage path: one <dataset>__<method>.yaml per study


def best_weights(location: str) -> dict[str, Any]:
    """The best epoch's weights in the trainer checkpoint at ``location``."""
    import torch

    files, path = filesystem(f"{location}/{CHECKPOINT_FILE}")
    with files.open_input_stream(path) as stream:
        state = torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=True)
    return state["best"]["state"]


def study_run_config(spec: SweepSpec, data: DatasetSpec, key: str, selected: SelectedRun, parent: str,
                     pareto: ParetoRecord | None = None) -> RunConfig:
    """The selected run's configuration and seed, with the dataset's options (and, with a selection
    rule, what it selected from: ``pareto``)."""
    trial = resolve_trial({**selected.config, STUDY_KEY: key, SEED_KEY: selected.seed})
    metric = trial.train_config.selection_metric
    return RunConfig(
        **vars(data.referenced()), method=trial.method, params=trial.params, seed=trial.seed,
        source={"study": key, "experiment": spec.experiment, "study_run_id": parent, "selected": selected.kind,
                "seed": selected.seed, f"val_{metric}": selected.val.get(metric), **selection_source(pareto)})


def selection_source(pareto: ParetoRecord | None) -> dict[str, Any]:
    """With a selection rule, what the model records of it: the objectives, the rule and the chosen
    point of the front (its trial id and validation values)."""
    if pareto is None:
        return {}
    point = pareto.chosen_point
    return {"objectives": pareto.objectives, "selection_rule": pareto.selection_rule,
            "chosen_point": None if point is None else {TRIAL_ID: point.trial_id, "val": point.values}}


def _file_label(key: str) -> str:
    dataset, method = split_study_key(key)
    return re.sub(r"[^\w.-]+", "-", f"{dataset}__{method}")


def config_locations(spec: SweepSpec, key: str, several: bool) -> list[str]:
    """Where a study's configuration is written: ``<storage>/<experiment>/configs/<dataset>__<method>.yaml``
    and, for ``tune``, ``--config-out`` (with several studies, ``<stem>__<dataset>__<method>.yaml``)."""
    places = [f"{spec.storage_path}/{CONFIGS_FOLDER}/{_file_label(key)}.yaml"]
    if spec.config_out:
        out = Path(spec.config_out)
        places.append(str(out.with_name(f"{out.stem}__{_file_label(key)}{out.suffix}") if several else out))
    return places


def write_config(config: RunConfig, location: str) -> None:
    if "://" in location:
        files, path = filesystem(location)
        with files.open_output_stream(path) as stream:
            stream.write(config.to_yaml().encode())
        return
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    config.write(location)


def registered_name(name: str | None, key: str, several: bool) -> str | None:
    """``--register NAME`` of a one-study sweep is NAME; with several studies, NAME-<dataset>-<method>."""
    if not name or not several:
        return name
    dataset, method = split_study_key(key)
    return re.sub(r"[/:]+", "-", f"{name}-{dataset}-{method}")


def deliver_models(spec: SweepSpec, state: SweepState, parents: dict[str, str], datasets: dict[str, Any],
                   say: Callable[[str], None]) -> None:
    """Per study with a selected run and nothing handed over yet: write and log its configuration, log
    its model on the study run, register it when asked; record it all in the sweep state."""
    from focustune.tracking.model_package import log_run_model, print_lines
    from focustune.tracking.operations import mlflow_client

    data_specs = dict(zip(datasets, spec.datasets))  # labels are in the order of spec.datasets
    several = len(parents) > 1
    for key, parent in parents.items():
        study = state.study(key)
        if study.model or not study.selected or not study.best_config:
            continue
        selected = study.selected
        config = study_run_config(spec, data_specs[split_study_key(key)[0]], key, selected, parent, study.pareto)
        places = config_locations(spec, key, several)
        for place in places:
            write_config(config, place)
        mlflow_client(spec.tracking).log_text(parent, config.to_yaml(), CONFIG_ARTIFACT)
        say(f"{key}: configuration written to {' and '.join(places)}")
        if not selected.checkpoint:
            say(f"{key}: the selected run left no checkpoint; no model logged")
            study.model = DeliveredModel(config_files=places)
        else:
            result = log_run_model(spec.tracking, parent, best_weights(selected.checkpoint), asdict(config),
                                   datasets[split_study_key(key)[0]],
                                   {name: value for name, value in selected.val.items() if value is not None},
                                   registered_name(spec.register, key, several))
            print_lines(say, result, key)
            card = result["card"]
            study.model = DeliveredModel(config_files=places, uri=result["uri"], registered=result["registered"],
                                         threshold=card.threshold, temperature=card.temperature,
                                         offsets=card.offsets, operating_point=card.operating_point)
        state.save()
