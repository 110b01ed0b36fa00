"""The Tune callback that mirrors each trial of a sweep into one MLflow run nested under its study's run.

Tune's events become queued operations (:mod:`focustune.sweeps.mlflow_queue`), so Tune's event loop
never waits for MLflow (with many slots it would delay every trial start). The queue and the
trial-to-run map are part of the callback's state, so Tune's experiment checkpoint carries them
across a driver restart. A trial's run is also found again by its ``focustune.trial_id`` tag, so a
restored trial never gets a second run. Run, tag and metric names come from
:mod:`focustune.tracking_schema`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any, ClassVar

from ray import tune

from focustune.sweeps import workbench
from focustune.sweeps.mlflow_batches import log_batched
from focustune.sweeps.mlflow_queue import EndRun, LogEpoch, Operation, OperationQueue, StartRun, mlflow_client
from focustune.sweeps.trial_config import (BUSY_SINCE, BUSY_UNTIL, FULL_BUDGET, KIND_KEY, SEED_KEY, STUDY_KEY,
                                           resolve_trial)
from focustune.tracking_schema import (CONFUSION_ARTIFACT, FINAL_PREFIXES, KIND_RERUN, PARENT_TAG, TAG, source_tags,
                                      split_study_key)

SKIP_KEYS = {BUSY_SINCE, BUSY_UNTIL, "mechanism_epoch", "phase", "best_phase", "diagnostics", "artifacts",
             "test_confusion_matrix", "done", "full_budget", "node_id", "precision", "trial_id", "date", "hostname",
             "node_ip", "pid", "config", "experiment_tag", "checkpoint_dir_name",
             "should_checkpoint", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
             "iterations_since_restore", "training_iteration", "failed_reason", "diverged"}


def flatten_diagnostics(diagnostics: dict[str, Any], prefix: str = "diag.") -> dict[str, float]:
    """Method diagnostics -> scalar metrics (lists become one metric per index)."""
    out: dict[str, float] = {}
    for key, value in diagnostics.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            out.update({f"{name}_{i}": float(v) for i, v in enumerate(value)})
        elif isinstance(value, dict):
            out.update(flatten_diagnostics(value, f"{name}."))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a Tune result worth logging as metrics."""
    out = {k: float(v) for k, v in result.items()
           if k not in SKIP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
           and math.isfinite(float(v))}
    if isinstance(result.get("diagnostics"), dict):
        out.update(flatten_diagnostics(result["diagnostics"]))
    return out


def tracked_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's MLflow params: its method, dataset, seed and every resolved hyperparameter."""
    return resolve_trial(config).tracked_params


class MlflowTracking(OperationQueue, tune.Callback):
    """Tune callback that mirrors each trial into one MLflow run nested under its study's run.

    ``parents``: study key -> parent run id; ``tags``: tags every run gets (sweep id, epochs, ...);
    each run also gets its study, kind, dataset and method from its config; ``params_for``: a
    trial's config -> its params (:func:`tracked_params`).
    """

    RUNTIME: ClassVar[tuple[str, ...]] = (*OperationQueue.RUNTIME, "_client")

    def __init__(self, tracking_uri: str, experiment_id: str, parents: dict[str, str], tags: dict[str, str],
                 params_for: Callable[[dict[str, Any]], dict[str, Any]] = tracked_params,
                 retry_interval_s: float = 5.0, final_flush_s: float = 120.0,
                 inputs: dict[str, dict[str, str]] | None = None):
        super().__init__(tracking_uri, retry_interval_s)
        self.inputs = dict(inputs or {})  # dataset label -> its dataset input (workbench.dataset_record)
        self.experiment_id = experiment_id
        self.parents = dict(parents)
        self.tags = dict(tags)
        self.params_for = params_for
        self.final_flush_s = final_flush_s
        self.runs: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}
        self.diagnostics: dict[str, list] = {}

    def _start_runtime(self) -> None:
        super()._start_runtime()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    # ---------------------------------------------------------------- Tune events
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._enqueue(StartRun(trial.trial_id, dict(trial.config)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = int(result.get("epoch", 0))
        if epoch <= self.logged_epoch.get(trial.trial_id, 0):
            return  # an epoch re-run after a restore was logged already
        self.logged_epoch[trial.trial_id] = epoch
        metrics = {k: v for k, v in scalar_metrics(result).items() if not k.startswith(FINAL_PREFIXES)}
        if result.get("diagnostics"):
            self.diagnostics.setdefault(trial.trial_id, []).append({"epoch": epoch, **result["diagnostics"]})
        self._enqueue(LogEpoch(trial.trial_id, metrics, epoch))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        files = self._artifacts(trial.trial_id, result)
        if result.get("diverged"):
            reason = {"failed_reason": result.get("failed_reason", "")}
            self._enqueue(EndRun(trial.trial_id, "FAILED", reason, {}, files))
            return
        stopped = not result.get(FULL_BUDGET)
        final = {k: v for k, v in scalar_metrics(result).items() if k.startswith(FINAL_PREFIXES)}
        final.update({k: float(result[k]) for k in ("best_epoch", "train_seconds") if k in result})
        tags = {"stopped_early": str(stopped).lower(), "node_id": str(result.get("node_id", "")),
                **{key: str(result.get(key, "")) for key in ("precision", "mechanism_epoch", "best_phase")}}
        self._enqueue(EndRun(trial.trial_id, "KILLED" if stopped else "FINISHED", tags, final, files))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = str(getattr(trial, "error_file", "") or "trial raised an error")
        self._enqueue(EndRun(trial.trial_id, "FAILED", {"failed_reason": reason[:500]}, {},
                             self._artifacts(trial.trial_id, dict(trial.last_result or {}))))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.stop(wait_s=self.final_flush_s)

    # ---------------------------------------------------------------- state for restores
    def get_state(self) -> dict | None:
        with self.snapshot() as queued:
            return {"runs": dict(self.runs), "logged_epoch": dict(self.logged_epoch),
                    "diagnostics": dict(self.diagnostics), **queued}

    def set_state(self, state: dict) -> None:
        with self.restoring(state):
            self.runs = dict(state.get("runs", {}))
            self.logged_epoch = dict(state.get("logged_epoch", {}))
            self.diagnostics = dict(state.get("diagnostics", {}))

    # ---------------------------------------------------------------- sending
    def _artifacts(self, trial_id: str, result: dict) -> dict[str, Any]:
        files: dict[str, Any] = {}
        if self.diagnostics.get(trial_id):
            files["diagnostics.json"] = self.diagnostics[trial_id]
        if "test_confusion_matrix" in result:
            files[CONFUSION_ARTIFACT] = {"test": result["test_confusion_matrix"]}
        for name, data in (result.get("artifacts") or {}).items():
            files[name] = data
        return files

    def _apply(self, op: Operation) -> None:
        if isinstance(op, StartRun):
            self._start_run(op.trial_id, op.config)
        elif isinstance(op, LogEpoch):
            log_batched(self.client, self.runs[op.trial_id], op.metrics, step=op.epoch)
        else:
            self._end_run(op)

    def _start_run(self, trial_id: str, config: dict) -> None:
        run_id = self.runs.get(trial_id) or self._find_run(trial_id)
        if run_id is not None:
            self.runs[trial_id] = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        study = config[STUDY_KEY]
        dataset, method = split_study_key(study)
        tags = {PARENT_TAG: self.parents[study], TAG + "trial_id": trial_id, TAG + "stopped_early": "false",
                **source_tags("sweep"),
                **{TAG + k: v for k, v in {**self.tags, "study": study, "kind": config[KIND_KEY],
                                           "dataset": dataset, "method": method}.items()}}
        label = f"seed{config[SEED_KEY]}" if config[KIND_KEY] == KIND_RERUN else trial_id
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{dataset}-{method}-{label}")
        self.runs[trial_id] = run.info.run_id
        log_batched(self.client, run.info.run_id, params=self.params_for(config))
        if dataset in self.inputs:
            self.client.log_inputs(run.info.run_id, datasets=[workbench.dataset_input(self.inputs[dataset])])

    def _find_run(self, trial_id: str) -> str | None:
        query = f"tags.`{TAG}trial_id` = '{trial_id}' and tags.`{TAG}sweep_id` = '{self.tags['sweep_id']}'"
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return found[0].info.run_id if found else None

    def _end_run(self, op: EndRun) -> None:
        run_id = self.runs[op.trial_id]
        log_batched(self.client, run_id, op.final, tags={TAG + k: v for k, v in op.tags.items()},
                    step=self.logged_epoch.get(op.trial_id, 0))
        for name, payload in op.files.items():
            self._log_artifact(run_id, name, payload)
        self.client.set_terminated(run_id, status=op.status)

    def _log_artifact(self, run_id: str, name: str, payload: Any) -> None:
        if name.endswith(".png"):
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(payload)))
            self.client.log_image(run_id, image, artifact_file=name)
        else:
            self.client.log_dict(run_id, payload, name)
