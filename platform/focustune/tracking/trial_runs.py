"""Each trial of a sweep mirrored into one MLflow run nested under its study's run.

The tuning layer hands over Tune's events (``sweeps/tune_tracking.py``); each becomes a queued
operation (:mod:`focustune.tracking.operations`), so Tune's event loop never waits for MLflow (with
many slots it would delay every trial start). The queue and the trial-to-run map are part of the
state Tune's experiment checkpoint carries across a driver restart. A trial's run is also found
again by its ``focustune.trial_id`` tag, so a restored trial never gets a second run. Run, tag and
metric names come from :mod:`focustune.tracking_schema` and :mod:`focustune.records`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any, ClassVar

from focustune.tracking import workbench
from focustune.tracking.batches import log_batched
from focustune.tracking.operations import EndRun, LogEpoch, Operation, OperationQueue, StartRun, mlflow_client
from focustune.records import (BEST_EPOCH, EPOCH, FAILED_REASON, KIND_KEY, SEED_KEY, STUDY_KEY, TRAIN_SECONDS,
                               TRIAL_ID, TrialReport)
from focustune.tracking_schema import (CONFUSION_ARTIFACT, FINAL_PREFIXES, KIND_RERUN, PARENT_TAG, STOPPED_EARLY, TAG,
                                      source_tags, split_study_key)

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


def scalar_metrics(report: TrialReport) -> dict[str, float]:
    """What a trial's run logs as metrics from one report: its scalars and its method's diagnostics."""
    out = report.logged_scalars()
    if report.diagnostics:
        out.update(flatten_diagnostics(dict(report.diagnostics)))
    return out


class TrialRuns(OperationQueue):
    """Each trial as one MLflow run nested under its study's run.

    ``parents``: study key -> parent run id; ``tags``: tags every run gets (sweep id, epochs, ...);
    each run also gets its study, kind, dataset and method from its config; ``params_for``: a
    trial's config -> its params (every resolved hyperparameter).
    """

    RUNTIME: ClassVar[tuple[str, ...]] = (*OperationQueue.RUNTIME, "_client")

    def __init__(self, tracking_uri: str, experiment_id: str, parents: dict[str, str], tags: dict[str, str],
                 params_for: Callable[[dict[str, Any]], dict[str, Any]],
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

    # ---------------------------------------------------------------- a trial's events
    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        self._enqueue(StartRun(trial_id, dict(config)))

    def epoch_reported(self, trial_id: str, result: dict[str, Any]) -> None:
        report = TrialReport.from_result(result)
        if report.epoch <= self.logged_epoch.get(trial_id, 0):
            return  # an epoch re-run after a restore was logged already
        self.logged_epoch[trial_id] = report.epoch
        metrics = {k: v for k, v in scalar_metrics(report).items() if not k.startswith(FINAL_PREFIXES)}
        if report.diagnostics:
            self.diagnostics.setdefault(trial_id, []).append({EPOCH: report.epoch, **report.diagnostics})
        self._enqueue(LogEpoch(trial_id, metrics, report.epoch))

    def trial_completed(self, trial_id: str, last_result: dict[str, Any]) -> None:
        report = TrialReport.from_result(last_result)
        files = self._artifacts(trial_id, report)
        if report.diverged:
            self._enqueue(EndRun(trial_id, "FAILED", {FAILED_REASON: report.failed_reason}, {}, files))
            return
        stopped = not report.full_budget
        final = {k: v for k, v in scalar_metrics(report).items() if k.startswith(FINAL_PREFIXES)}
        final.update({k: float(v) for k, v in ((BEST_EPOCH, report.best_epoch), (TRAIN_SECONDS, report.train_seconds))
                      if v is not None})
        tags = {STOPPED_EARLY: str(stopped).lower(), **report.tags(), **(report.method_tags or {})}
        self._enqueue(EndRun(trial_id, "KILLED" if stopped else "FINISHED", tags, final, files))

    def trial_errored(self, trial_id: str, reason: str, last_result: dict[str, Any]) -> None:
        self._enqueue(EndRun(trial_id, "FAILED", {FAILED_REASON: reason[:500]}, {},
                             self._artifacts(trial_id, TrialReport.from_result(last_result))))

    def finish(self) -> None:
        """Send what is queued (waiting up to ``final_flush_s`` for an unreachable server), then stop."""
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
    def _artifacts(self, trial_id: str, report: TrialReport) -> dict[str, Any]:
        files: dict[str, Any] = {}
        if self.diagnostics.get(trial_id):
            files["diagnostics.json"] = self.diagnostics[trial_id]
        if report.test_confusion_matrix is not None:
            files[CONFUSION_ARTIFACT] = {"test": report.test_confusion_matrix}
        files.update(report.artifacts or {})
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
        tags = {PARENT_TAG: self.parents[study], TAG + TRIAL_ID: trial_id, TAG + STOPPED_EARLY: "false",
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
        query = f"tags.`{TAG}{TRIAL_ID}` = '{trial_id}' and tags.`{TAG}sweep_id` = '{self.tags['sweep_id']}'"
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
        elif isinstance(payload, str):  # a file's text as it is (calibration.json)
            self.client.log_text(run_id, payload, name)
        else:
            self.client.log_dict(run_id, payload, name)
