"""MLflow tracking of a sweep: one nested run per trial, logged in batches, resilient to outages.

Every tracking call is queued as a plain-data operation and sent in order by a sender thread, so
Tune's event loop never waits for MLflow (with many slots it would delay every trial start). When the tracking
server is unreachable (a transport error: connection refused, timeout, a busy store), operations
stay queued (training goes on) and are retried; any other error fails that one operation loudly
(logged, kept aside in ``failed``) and the queue goes on. The queue and the trial-to-run map are
part of the callback's state, so Tune's experiment checkpoint carries them across a driver restart.
A trial's run is also found again by its ``focustune.trial_id`` tag, so a restored trial never gets
a second run. Run, tag and metric names come from :mod:`focustune.tracking_schema`.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

from focustune.sweeps import workbench
from focustune.sweeps.trial_config import BUSY_SINCE, BUSY_UNTIL, FULL_BUDGET, KIND_KEY, SEED_KEY, STUDY_KEY
from focustune.tracking_schema import (BEST_OBJECTIVE, BEST_PARAM_PREFIX, FINAL_PREFIXES, FINISHED_TRIALS,
                                       KIND_RERUN, KIND_STUDY, PARENT_TAG, SEEDS_MEAN_PREFIX, TAG, UTILISATION,
                                       source_tags, split_study_key)

log = logging.getLogger(__name__)

# Fail fast instead of MLflow's default minutes of HTTP retries: this callback retries itself.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

SKIP_KEYS = {BUSY_SINCE, BUSY_UNTIL, "mechanism_epoch", "phase", "best_phase", "diagnostics", "artifacts",
             "test_confusion_matrix", "done", "full_budget", "node_id", "precision", "trial_id", "date", "hostname", "node_ip", "pid", "config",
             "experiment_tag", "checkpoint_dir_name",
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


def is_transport_error(exc: BaseException) -> bool:
    """True for an outage worth waiting out (server unreachable, timeout, busy store); False for an
    error that retrying cannot fix (a bad request, a bug). MLflow wraps the cause: the chain is read."""
    import requests
    from sqlalchemy.exc import OperationalError

    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError,
                 OperationalError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, transient) or getattr(seen, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class MlflowTracking(tune.Callback):
    """Tune callback that mirrors each trial into one MLflow run nested under its study's run.

    ``parents``: study key -> parent run id; ``tags``: tags every run gets (sweep id, epochs, ...);
    each run also gets its study, kind, dataset and method from its config.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parents: dict[str, str], tags: dict[str, str],
                 params_for: Any, retry_interval_s: float = 5.0, final_flush_s: float = 120.0,
                 inputs: dict[str, dict[str, str]] | None = None):
        self.tracking_uri = tracking_uri
        self.inputs = dict(inputs or {})  # dataset label -> its dataset input (workbench.dataset_record)
        self.experiment_id = experiment_id
        self.parents = dict(parents)
        self.tags = dict(tags)
        self.params_for = params_for  # config -> dict of every resolved hyperparameter
        self.retry_interval_s = retry_interval_s
        self.final_flush_s = final_flush_s
        self.runs: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}
        self.diagnostics: dict[str, list] = {}
        self.queue: list[tuple] = []
        self.failed: list[tuple] = []  # operations that failed for a reason other than an outage
        self._down_since: float | None = None
        self._last_try = 0.0
        self._start_runtime()

    def _start_runtime(self) -> None:
        """What does not pickle: the client, the locks and the sender thread (started on first use)."""
        self._client: Any = None
        self._queue_lock = threading.Lock()  # guards the queue list
        self._send_lock = threading.Lock()  # held while one operation is applied and dequeued
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None
        self._stopping = False

    def __getstate__(self) -> dict:  # pickled with the Tune experiment
        runtime = ("_client", "_queue_lock", "_send_lock", "_wake", "_sender", "_stopping")
        return {k: v for k, v in self.__dict__.items() if k not in runtime}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_runtime()

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
                **{key: str(result.get(key, "")) for key in ("precision", "mechanism_epoch", "best_phase")}}
        self._enqueue(("end", trial.trial_id, "KILLED" if stopped else "FINISHED", tags, final,
                       self._artifacts(trial.trial_id, result)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = str(getattr(trial, "error_file", "") or "trial raised an error")
        self._enqueue(("end", trial.trial_id, "FAILED", {"failed_reason": reason[:500]}, {},
                       self._artifacts(trial.trial_id, dict(trial.last_result or {}))))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._stopping = True
        self._wake.set()
        self.flush(wait_s=self.final_flush_s)

    # ---------------------------------------------------------------- state for restores
    def get_state(self) -> dict | None:
        # Send what is queued first: an operation kept in the snapshot but sent after it would be sent
        # again after a restore. Only operations an outage holds back stay queued in the snapshot.
        if self._down_since is None:
            self._send_queued()
        with self._send_lock, self._queue_lock:  # not in the middle of an operation: none is sent twice
            return {"runs": dict(self.runs), "logged_epoch": dict(self.logged_epoch), "queue": list(self.queue),
                    "diagnostics": dict(self.diagnostics), "failed": list(self.failed)}

    def set_state(self, state: dict) -> None:
        with self._send_lock, self._queue_lock:
            self.runs = dict(state.get("runs", {}))
            self.logged_epoch = dict(state.get("logged_epoch", {}))
            self.queue = list(state.get("queue", [])) + self.queue
            self.diagnostics = dict(state.get("diagnostics", {}))
            self.failed = list(state.get("failed", []))

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
        with self._queue_lock:
            self.queue.append(op)
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="mlflow-sender", daemon=True)
            self._sender.start()
        self._wake.set()

    def _send_loop(self) -> None:
        """The sender thread: sends what is queued when woken; while MLflow is down, retries now and then."""
        while not self._stopping:
            self._wake.wait(self.retry_interval_s)
            self._wake.clear()
            if self._down_since is None or time.monotonic() - self._last_try >= self.retry_interval_s:
                self._send_queued()

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
        """Apply queued operations one at a time, in order, until the queue is empty or MLflow is down."""
        self._last_try = time.monotonic()
        while True:
            with self._send_lock:
                with self._queue_lock:
                    if not self.queue:
                        break
                    op = self.queue[0]
                try:
                    self._apply(op)
                except Exception as exc:  # sorted below: an outage waits, anything else fails this operation
                    if is_transport_error(exc):
                        self._went_down(exc)
                        return
                    self._set_aside(op, exc)
                with self._queue_lock:
                    self.queue.pop(0)
        if self._down_since is not None:
            log.warning("MLflow at %s is reachable again; buffered logging sent", self.tracking_uri)
            self._down_since = None

    def _went_down(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("MLflow at %s is unreachable (%s); training continues and logging is buffered "
                        "(%d operation(s))", self.tracking_uri, type(exc).__name__, len(self.queue))

    def _set_aside(self, op: tuple, exc: Exception) -> None:
        """A failed operation is logged with its error and kept (it is not retried, nor blocks others)."""
        self.failed.append((op[0], op[1], f"{type(exc).__name__}: {exc}"[:500]))
        log.error("MLflow logging failed (not an outage, not retried): %s of trial %s: %s: %s",
                  op[0], op[1], type(exc).__name__, exc)

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
        study = config[STUDY_KEY]
        dataset, method = split_study_key(study)
        tags = {PARENT_TAG: self.parents[study], TAG + "trial_id": trial_id, TAG + "stopped_early": "false",
                **source_tags("sweep"),
                **{TAG + k: v for k, v in {**self.tags, "study": study, "kind": config[KIND_KEY],
                                           "dataset": dataset, "method": method}.items()}}
        label = f"seed{config[SEED_KEY]}" if config[KIND_KEY] == KIND_RERUN else trial_id
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{dataset}-{method}-{label}")
        self.runs[trial_id] = run.info.run_id
        params = {k: ("none" if v is None else v) for k, v in self.params_for(config).items()}
        self._log(run.info.run_id, {}, params=params)
        self._log_input(run.info.run_id, dataset)

    def _log_input(self, run_id: str, dataset: str) -> None:
        if dataset in self.inputs:
            self.client.log_inputs(run_id, datasets=[workbench.dataset_input(self.inputs[dataset])])

    def _find_run(self, trial_id: str) -> str | None:
        query = f"tags.`{TAG}trial_id` = '{trial_id}' and tags.`{TAG}sweep_id` = '{self.tags['sweep_id']}'"
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

    def __init__(self, spec: Any, state: Any):
        self.spec, self.state = spec, state
        self.client = mlflow_client(spec.tracking)
        experiment = self.client.get_experiment_by_name(spec.experiment)
        self.experiment_id = (experiment.experiment_id if experiment is not None
                              else self.client.create_experiment(spec.experiment))
        self.inputs: dict[str, dict[str, str]] = {}
        workbench.mark_training_experiment(self.client, self.experiment_id)

    def use_datasets(self, datasets: dict[str, Any]) -> None:
        """Describe the sweep's datasets (by study label) as MLflow dataset inputs of its runs, and
        the experiment by its datasets and methods."""
        self.inputs = {label: workbench.dataset_record(label, d) for label, d in datasets.items()}
        workbench.describe_experiment(self.client, self.experiment_id, list(datasets), self.spec.methods)

    @property
    def sweep_tags(self) -> dict[str, str]:
        """Tags of every run of this sweep (a run adds its study, kind, dataset and method)."""
        return {"sweep_id": self.state.data["sweep_id"], "epochs": str(self.spec.epochs),
                "scheduler": self.spec.scheduler}

    def parent_run(self, key: str, data: dict[str, Any]) -> str:
        """The study's parent run, created once and remembered in the sweep state; ``data`` is the
        dataset's summary (sizes, training class counts, imbalance profile), logged as ``data.*``."""
        study = self.state.study(key)
        if "parent_run_id" not in study:
            dataset, method = split_study_key(key)
            tags = {TAG + k: v for k, v in {**self.sweep_tags, "study": key, "kind": KIND_STUDY, "dataset": dataset,
                                            "method": method}.items()}
            run = self.client.create_run(self.experiment_id, tags={**tags, **source_tags("sweep")},
                                         run_name=f"{dataset}-{method}")
            study["parent_run_id"] = run.info.run_id
            self.state.save()
            self.client.log_batch(run.info.run_id, params=_params({
                "method": method, "dataset": dataset, "trials": self.spec.trials, "epochs": self.spec.epochs,
                "seeds": self.spec.seeds, "scheduler": self.spec.scheduler,
                **{f"data.{k}": data.get(k) for k in ("sizes", "train_class_counts", "imbalance", "source")}}),
                synchronous=True)
            if dataset in self.inputs:
                self.client.log_inputs(run.info.run_id, datasets=[workbench.dataset_input(self.inputs[dataset])])
        return study["parent_run_id"]

    def callback(self, parents: dict[str, str], params_for: Any) -> MlflowTracking:
        return MlflowTracking(self.spec.tracking, self.experiment_id, parents, self.sweep_tags, params_for,
                              inputs=self.inputs)

    def log_best(self, parent: str, study: dict[str, Any], config: dict[str, Any], params_for: Any) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(parent, metrics=[Metric(BEST_OBJECTIVE, float(study["best_objective"]), now, 0),
                                               Metric(FINISHED_TRIALS, float(study["finished"]), now, 0)],
                              params=_params({f"{BEST_PARAM_PREFIX}{k}": v
                                              for k, v in params_for(config).items()}),
                              synchronous=True)

    def close_orphans(self, known_trials: set[str]) -> int:
        """Close runs of this sweep left RUNNING by trials that a killed driver's last Tune snapshot
        never recorded (Tune re-ran that work as new trials); returns how many were closed."""
        query = (f"tags.`{TAG}sweep_id` = '{self.state.data['sweep_id']}' and attributes.status = 'RUNNING' "
                 f"and tags.`{TAG}kind` != '{KIND_STUDY}'")
        orphans = [r for r in self.client.search_runs([self.experiment_id], filter_string=query)
                   if r.data.tags.get(TAG + "trial_id") not in known_trials]
        for run in orphans:
            self.client.set_tag(run.info.run_id, TAG + "lost_on_restart", "true")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def close_parent(self, parent: str, study: dict[str, Any], usage: dict[str, Any], status: str = "FINISHED") -> None:
        """Seed re-runs' mean test metrics and the sweep's utilisation on the study run; then end it."""
        from mlflow.entities import Metric

        rows = [r for r in study.get("reruns", []) if r.get("ok")]
        now = int(time.time() * 1000)
        metrics = []
        for key in sorted({k for r in rows for k in r if k.startswith("test_")}):
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            if values:
                metrics.append(Metric(f"{SEEDS_MEAN_PREFIX}{key}", sum(values) / len(values), now, 0))
        if usage.get("overall") is not None:
            metrics.append(Metric(UTILISATION, float(usage["overall"]), now, 0))
        if metrics:
            self.client.log_batch(parent, metrics=metrics, synchronous=True)
        self.client.set_terminated(parent, status=status)

    def log_study_views(self, parents: dict[str, str]) -> None:
        """Each study run's description, summary and figures (:mod:`focustune.sweeps.workbench`); an
        unreachable MLflow only costs them (a warning: ``--resume`` adds them later)."""
        try:
            workbench.log_study_views(self.client, self.spec.experiment, self.spec.tracking, parents,
                            {key: self.state.study(key) for key in parents}, self.spec.fixed)
        except Exception as exc:  # sorted below: only an outage is expected here
            if not is_transport_error(exc):
                raise
            log.warning("MLflow at %s unreachable: the study runs' descriptions and figures were not logged "
                        "(run the same command with --resume to add them): %s", self.spec.tracking, exc)


def warm_start_configs(tracking_uri: str, experiment: str, spaces: dict[str, Any]) -> dict[str, list[dict]]:
    """Per study key, the best configurations its method reached in ``experiment`` (any dataset),
    restricted to the values the study's search space can take. Refuses a missing experiment."""
    from focustune.errors import ConfigError

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise ConfigError(f"--warm-start {experiment}: no MLflow store at {tracking_uri}")
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--warm-start {experiment}: no such experiment in {tracking_uri}")
    studies = client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG}kind` = '{KIND_STUDY}'")
    best_of: dict[str, list[dict[str, str]]] = {}
    for run in studies:
        best = {k.removeprefix(BEST_PARAM_PREFIX): v for k, v in run.data.params.items()
                if k.startswith(BEST_PARAM_PREFIX)}
        if best:
            best_of.setdefault(run.data.tags.get(TAG + "method", ""), []).append(best)
    configs: dict[str, list[dict]] = {}
    for key, space in spaces.items():
        for best in best_of.get(split_study_key(key)[1], []):
            values = {name: dim.value_of(best[name]) for name, dim in space.dimensions.items() if name in best}
            config = {name: v for name, v in values.items() if v is not None}
            if config and config not in configs.setdefault(key, []):
                configs[key].append(config)
    return configs


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, "none" if v is None else str(v)) for k, v in values.items()]
