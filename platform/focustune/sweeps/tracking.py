"""MLflow tracking of a sweep: one nested run per trial, logged in batches, resilient to outages.

Every tracking call is queued as a plain-data operation and sent in order. When the tracking
server is unreachable, operations stay queued (training goes on) and are retried; the queue and
the trial-to-run map are part of the callback's state, so Tune's experiment checkpoint carries
them across a driver restart. A trial's run is also found again by its ``focustune.trial_id``
tag, so a restored trial never gets a second run.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import time
from typing import Any

from ray import tune

from focustune.sweeps.trainable import FULL_BUDGET

log = logging.getLogger(__name__)

# Fail fast instead of MLflow's default minutes of HTTP retries: this callback retries itself.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

TAG = "focustune."
PARENT_TAG = "mlflow.parentRunId"
FINAL_PREFIXES = ("best_val_", "test_")
SKIP_KEYS = {"phase", "diagnostics", "artifacts", "test_confusion_matrix", "done", "full_budget", "node_id",
             "precision", "trial_id", "date", "hostname", "node_ip", "pid", "config", "experiment_tag", "checkpoint_dir_name",
             "should_checkpoint", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
             "iterations_since_restore", "training_iteration", "failed_reason", "diverged"}


def mlflow_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


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


class MlflowTracking(tune.Callback):
    """Tune callback that mirrors each trial into one MLflow run nested under the study's run."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, tags: dict[str, str],
                 params_for: Any, retry_interval_s: float = 5.0, final_flush_s: float = 120.0):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.tags = dict(tags)
        self.params_for = params_for  # config -> dict of every resolved hyperparameter
        self.retry_interval_s = retry_interval_s
        self.final_flush_s = final_flush_s
        self.runs: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}
        self.diagnostics: dict[str, list] = {}
        self.queue: list[tuple] = []
        self._client: Any = None
        self._down_since: float | None = None
        self._last_try = 0.0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}  # pickled with the Tune experiment

    # ---------------------------------------------------------------- Tune events
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._enqueue(("start", trial.trial_id, dict(trial.config)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = int(result.get("epoch", 0))
        if epoch <= self.logged_epoch.get(trial.trial_id, 0):
            return  # an epoch re-run after a restore was logged already
        self.logged_epoch[trial.trial_id] = epoch
        metrics = {k: v for k, v in scalar_metrics(result).items() if not k.startswith(FINAL_PREFIXES)}
        if result.get("diagnostics"):
            self.diagnostics.setdefault(trial.trial_id, []).append({"epoch": epoch, **result["diagnostics"]})
        self._enqueue(("epoch", trial.trial_id, metrics, epoch))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        if result.get("diverged"):
            self._enqueue(("end", trial.trial_id, "FAILED", {"failed_reason": result.get("failed_reason", "")},
                           {}, self._artifacts(trial.trial_id, result)))
            return
        stopped = not result.get(FULL_BUDGET)
        final = {k: v for k, v in scalar_metrics(result).items() if k.startswith(FINAL_PREFIXES)}
        final.update({k: float(result[k]) for k in ("best_epoch", "train_seconds") if k in result})
        tags = {"stopped_early": str(stopped).lower(), "node_id": str(result.get("node_id", "")),
                "precision": str(result.get("precision", ""))}
        self._enqueue(("end", trial.trial_id, "KILLED" if stopped else "FINISHED", tags, final,
                       self._artifacts(trial.trial_id, result)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = str(getattr(trial, "error_file", "") or "trial raised an error")
        self._enqueue(("end", trial.trial_id, "FAILED", {"failed_reason": reason[:500]}, {},
                       self._artifacts(trial.trial_id, dict(trial.last_result or {}))))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush(wait_s=self.final_flush_s)

    # ---------------------------------------------------------------- state for restores
    def get_state(self) -> dict | None:
        return {"runs": dict(self.runs), "logged_epoch": dict(self.logged_epoch), "queue": list(self.queue),
                "diagnostics": dict(self.diagnostics)}

    def set_state(self, state: dict) -> None:
        self.runs = dict(state.get("runs", {}))
        self.logged_epoch = dict(state.get("logged_epoch", {}))
        self.queue = list(state.get("queue", [])) + self.queue
        self.diagnostics = dict(state.get("diagnostics", {}))

    # ---------------------------------------------------------------- sending
    def _artifacts(self, trial_id: str, result: dict) -> dict[str, Any]:
        files: dict[str, Any] = {}
        if self.diagnostics.get(trial_id):
            files["diagnostics.json"] = self.diagnostics[trial_id]
        if "test_confusion_matrix" in result:
            files["confusion_matrix.json"] = {"test": result["test_confusion_matrix"]}
        for name, data in (result.get("artifacts") or {}).items():
            files[name] = data
        return files

    def _enqueue(self, op: tuple) -> None:
        self.queue.append(op)
        self.flush()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    def flush(self, wait_s: float = 0.0) -> bool:
        """Send queued operations in order; True when the queue is empty. Retries for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._down_since is None or time.monotonic() - self._last_try >= self.retry_interval_s or wait_s:
                self._send_queued()
            if not self.queue or time.monotonic() >= deadline:
                break
            time.sleep(min(self.retry_interval_s, max(deadline - time.monotonic(), 0)))
        if self.queue and wait_s:
            log.warning("MLflow at %s unreachable: %d logging operation(s) could not be sent",
                        self.tracking_uri, len(self.queue))
        return not self.queue

    def _send_queued(self) -> None:
        self._last_try = time.monotonic()
        while self.queue:
            try:
                self._apply(self.queue[0])
            except Exception as exc:  # network errors of any kind: keep the operation queued
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("MLflow at %s is unreachable (%s); training continues and logging is "
                                "buffered (%d operation(s))", self.tracking_uri, type(exc).__name__, len(self.queue))
                return
            self.queue.pop(0)
        if self._down_since is not None:
            log.warning("MLflow at %s is reachable again; buffered logging sent", self.tracking_uri)
            self._down_since = None

    def _apply(self, op: tuple) -> None:
        kind, trial_id = op[0], op[1]
        if kind == "start":
            self._start_run(trial_id, op[2])
        elif kind == "epoch":
            self._log(self.runs[trial_id], op[2], step=op[3])
        elif kind == "end":
            _, _, status, tags, final, files = op
            run_id = self.runs[trial_id]
            step = self.logged_epoch.get(trial_id, 0)
            self._log(run_id, final, step=step, tags={TAG + k: v for k, v in tags.items()})
            for name, payload in files.items():
                self._log_artifact(run_id, name, payload)
            self.client.set_terminated(run_id, status=status)

    def _start_run(self, trial_id: str, config: dict) -> None:
        run_id = self.runs.get(trial_id) or self._find_run(trial_id)
        if run_id is not None:
            self.runs[trial_id] = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        tags = {PARENT_TAG: self.parent_run_id, TAG + "trial_id": trial_id, TAG + "stopped_early": "false",
                **{TAG + k: v for k, v in self.tags.items()}}
        run = self.client.create_run(self.experiment_id, tags=tags,
                                     run_name=f"{self.tags.get('method', 'trial')}-{trial_id}")
        self.runs[trial_id] = run.info.run_id
        params = {k: ("none" if v is None else v) for k, v in self.params_for(config).items()}
        self._log(run.info.run_id, {}, params=params)

    def _find_run(self, trial_id: str) -> str | None:
        query = (f"tags.`{TAG}trial_id` = '{trial_id}' and tags.`{TAG}sweep_id` = '{self.tags['sweep_id']}'"
                 f" and tags.`{TAG}kind` = '{self.tags['kind']}'")
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return found[0].info.run_id if found else None

    def _log(self, run_id: str, metrics: dict[str, float], step: int = 0, params: dict | None = None,
             tags: dict | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        params_list = [Param(k, str(v)) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(items), len(params_list), len(tag_list)), 100):  # MLflow batch limits
            self.client.log_batch(run_id, metrics=items[i:i + 100], params=params_list[i:i + 100],
                                  tags=tag_list[i:i + 100], synchronous=True)

    def _log_artifact(self, run_id: str, name: str, payload: Any) -> None:
        if name.endswith(".png"):
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(payload)))
            self.client.log_image(run_id, image, artifact_file=f"gan/{name}")
        else:
            self.client.log_dict(run_id, payload, name)


class StudyTracking:
    """The sweep's MLflow side: the experiment, one parent run per (dataset, method) study."""

    def __init__(self, spec: Any, state: Any, dataset: str):
        self.spec, self.state, self.dataset = spec, state, dataset
        self.client = mlflow_client(spec.tracking)
        experiment = self.client.get_experiment_by_name(spec.experiment)
        self.experiment_id = (experiment.experiment_id if experiment is not None
                              else self.client.create_experiment(spec.experiment))

    def _tags(self, method: str, kind: str) -> dict[str, str]:
        return {"sweep_id": self.state.data["sweep_id"], "study": f"{self.dataset}/{method}", "kind": kind,
                "dataset": self.dataset, "method": method, "epochs": str(self.spec.epochs),
                "scheduler": self.spec.scheduler}

    def parent_run(self, method: str) -> str:
        """The study's parent run, created once and remembered in the sweep state."""
        study = self.state.study(method)
        if "parent_run_id" not in study:
            tags = {TAG + k: v for k, v in self._tags(method, "study").items()}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{self.dataset}-{method}")
            study["parent_run_id"] = run.info.run_id
            self.state.save()
            self.client.log_batch(run.info.run_id, params=_params({
                "method": method, "dataset": self.dataset, "trials": self.spec.trials, "epochs": self.spec.epochs,
                "seeds": self.spec.seeds, "scheduler": self.spec.scheduler}), synchronous=True)
        return study["parent_run_id"]

    def callback(self, method: str, parent: str, kind: str, params_for: Any) -> MlflowTracking:
        return MlflowTracking(self.spec.tracking, self.experiment_id, parent, self._tags(method, kind), params_for)

    def log_best(self, parent: str, best: dict[str, Any], params_for: Any) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(parent, metrics=[Metric("best_objective", float(best["objective"]), now, 0),
                                               Metric("finished_trials", float(best["finished"]), now, 0)],
                              params=_params({f"best.{k}": v for k, v in params_for(best["config"]).items()}),
                              synchronous=True)

    def close_orphans(self, parent: str, kind: str, known_trials: set[str]) -> int:
        """Close runs left RUNNING by trials that a killed driver's last Tune snapshot never recorded
        (Tune re-ran that work as new trials); returns how many were closed."""
        query = (f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TAG}kind` = '{kind}' "
                 f"and attributes.status = 'RUNNING'")
        orphans = [r for r in self.client.search_runs([self.experiment_id], filter_string=query)
                   if r.data.tags.get(TAG + "trial_id") not in known_trials]
        for run in orphans:
            self.client.set_tag(run.info.run_id, TAG + "lost_on_restart", "true")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def close_parent(self, parent: str, study: dict[str, Any], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        rows = [r for r in study.get("reruns", []) if r.get("ok")]
        now = int(time.time() * 1000)
        metrics = []
        for key in sorted({k for r in rows for k in r if k.startswith("test_")}):
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            if values:
                metrics.append(Metric(f"seeds_mean_{key}", sum(values) / len(values), now, 0))
        if metrics:
            self.client.log_batch(parent, metrics=metrics, synchronous=True)
        self.client.set_terminated(parent, status=status)


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, "none" if v is None else str(v)) for k, v in values.items()]
