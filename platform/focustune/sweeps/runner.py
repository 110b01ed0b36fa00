"""A comparison sweep: per method, an Optuna search under Ray Tune, then seed re-runs of the best.

Every method gets the same trial budget, epochs, scheduler and seeds; selection uses validation
only. State that lets ``--resume`` continue after the driver dies lives in ``sweep.json`` next to
Tune's own experiment folders under the storage path.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from focustune.config import flat_params, resolve
from focustune.errors import ConfigError
from focustune.methods import get_method
from focustune.spaces import SearchSpace, load_space
from focustune.sweeps.trainable import FULL_BUDGET, OBJECTIVE, SEED_KEY

# Tune's own console tables and checkpoint-frequency warnings: the sweep prints its own progress.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
              # snapshot Tune's experiment state at least every 5 s, so a killed driver loses little
              "TUNE_GLOBAL_CHECKPOINT_S": "5"}
# A trial worker process is kept for the next trial of the same resources: a fresh one costs
# ~4 s here (torch, scikit-learn, focustune imports), more than a small trial's training.
# run_trial builds its trainer, seeds and thread count on every call, so nothing leaks between trials.
REUSE_WORKERS = True
SEARCH_SEED = 0  # every search trial trains with this seed; re-runs use 1..K (the same for every method)


@dataclass
class SweepSpec:
    """Everything a sweep is asked to do (validated by :func:`validate` before Ray starts)."""

    dataset: str
    methods: list[str]
    trials: int = 20
    epochs: int = 30
    seeds: int = 1
    data_dir: str | None = None
    size: int = 28
    imbalance_ratio: float | None = None
    scheduler: str = "none"  # none | asha
    tracking_uri: str | None = None
    experiment: str = "focustune"
    address: str | None = None
    storage: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    resume: bool = False
    space_files: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # hyperparameters set for every trial
    search_seed: int = 0
    max_failures: int = 2

    @property
    def storage_root(self) -> str:
        """Where Tune keeps experiments: a local folder or a URI (s3://, gs://, ...) all nodes reach."""
        if self.storage and "://" in self.storage:
            return self.storage.rstrip("/")
        return str(Path(self.storage or Path.cwd() / "focustune_runs").expanduser().resolve())

    @property
    def storage_path(self) -> str:
        return f"{self.storage_root}/{self.experiment}"

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


# ---------------------------------------------------------------- validation (before Ray starts)

def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_address(address: str | None) -> None:
    """Refuse an unreachable ``host:port`` cluster address (``auto``/``local``/``ray://`` pass through)."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ConfigError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    if not _reachable(parsed.hostname, parsed.port):
        raise ConfigError(f"--address {address}: no Ray cluster answers there (connection refused or timed out)")


def check_tracking_uri(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not _reachable(parsed.hostname or "", port):
            raise ConfigError(f"--tracking-uri {uri}: no MLflow server answers there")
    elif parsed.scheme not in ("sqlite", "file", "") and not uri.startswith(("postgresql", "mysql", "databricks")):
        raise ConfigError(f"--tracking-uri {uri}: unsupported scheme {parsed.scheme!r}")


def validate(spec: SweepSpec) -> dict[str, SearchSpace]:
    """Check the whole request; returns each method's search space. Raises ConfigError."""
    if not spec.methods:
        raise ConfigError("--methods: name at least one method")
    if len(set(spec.methods)) != len(spec.methods):
        raise ConfigError("--methods: a method is named twice")
    for name, value, low in (("--trials", spec.trials, 1), ("--epochs", spec.epochs, 1), ("--seeds", spec.seeds, 0)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if spec.scheduler not in ("none", "asha"):
        raise ConfigError(f"--scheduler must be none or asha, got {spec.scheduler!r}")
    if spec.cpus_per_trial <= 0 or spec.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if unknown := sorted(set(spec.space_files) - set(spec.methods)):
        raise ConfigError(f"--space given for {', '.join(unknown)}, which the sweep does not run")
    spaces = {}
    for name in spec.methods:
        cls = get_method(name)
        spaces[name] = load_space(cls, spec.space_files.get(name), dataset=spec.dataset)
        resolve(cls, {**spec.fixed, "epochs": spec.epochs})  # fixed values are valid for every method
    check_tracking_uri(spec.tracking)
    check_address(spec.address or os.environ.get("RAY_ADDRESS"))
    exists = SweepState.exists(spec)
    if exists and not spec.resume:
        raise ConfigError(f"a sweep already exists at {spec.storage_path}; pass --resume to continue it, "
                          "or choose another --experiment or --storage")
    if spec.resume and not exists:
        raise ConfigError(f"--resume: no sweep to resume at {spec.storage_path}")
    return spaces


# ---------------------------------------------------------------- sweep state

def _filesystem(location: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a local folder or a storage URI."""
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)
    return fs.LocalFileSystem(), location


class SweepState:
    """``sweep.json`` under the storage path: the sweep id, the spec, per study its parent run and
    finished phases. Local folders and storage URIs (s3://, gs://) alike, through pyarrow."""

    FILE = "sweep.json"

    def __init__(self, location: str, data: dict[str, Any]):
        self.location, self.data = location, data

    @classmethod
    def exists(cls, spec: SweepSpec) -> bool:
        from pyarrow import fs

        filesystem, path = _filesystem(f"{spec.storage_path}/{cls.FILE}")
        return filesystem.get_file_info(path).type != fs.FileType.NotFound

    @classmethod
    def open(cls, spec: SweepSpec) -> SweepState:
        location = f"{spec.storage_path}/{cls.FILE}"
        if cls.exists(spec):
            filesystem, path = _filesystem(location)
            with filesystem.open_input_stream(path) as stream:
                return cls(location, json.loads(stream.read().decode()))
        state = cls(location, {"sweep_id": uuid.uuid4().hex[:12], "spec": asdict(spec), "studies": {}})
        state.save()
        return state

    def study(self, method: str) -> dict[str, Any]:
        return self.data["studies"].setdefault(method, {})

    def save(self) -> None:
        payload = json.dumps(self.data, indent=2, default=str).encode()
        filesystem, path = _filesystem(self.location)
        if "://" in self.location:  # object stores replace whole objects atomically
            with filesystem.open_output_stream(path) as stream:
                stream.write(payload)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)


# ---------------------------------------------------------------- Ray / Tune plumbing

def init_ray(address: str | None) -> None:
    """Join ``address`` (or $RAY_ADDRESS); else start a private local Ray, never a stale cluster."""
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True, "logging_level": "warning"}
    if target == "local":  # a private single-node Ray, reachable on loopback only
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    ray.init(address=target, **kwargs)


def resolved_params(method: str, dataset: str, config: dict[str, Any]) -> dict[str, Any]:
    """Every resolved hyperparameter of a trial's config, plus method, dataset and seed (MLflow params)."""
    cls = get_method(method)
    train_config, params = resolve(cls, {k: v for k, v in config.items() if k != SEED_KEY})
    return {"method": method, "dataset": dataset, "seed": config.get(SEED_KEY, SEARCH_SEED),
            **flat_params(train_config, params)}


def _trainable(spec: SweepSpec, method: str, dataset_ref: Any) -> Any:
    from ray import tune

    from focustune.sweeps.trainable import run_trial

    device = "cuda" if spec.gpus_per_trial > 0 else "cpu"
    fn = tune.with_parameters(run_trial, method=method, dataset_ref=dataset_ref, cpus=spec.cpus_per_trial,
                              device=device)
    return tune.with_resources(fn, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def _run_config(spec: SweepSpec, name: str, callbacks: list) -> Any:
    from ray import tune

    return tune.RunConfig(name=name, storage_path=spec.storage_path, callbacks=callbacks, verbose=0,
                          failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _fit(spec: SweepSpec, name: str, trainable: Any, make_tuner: Any) -> Any:
    """Restore the Tune experiment ``name`` when it exists (resume), else create it; run it."""
    from ray import tune

    path = f"{spec.storage_path}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = make_tuner()
    return tuner.fit()


def _completed(results: Any) -> list[Any]:
    return [r for r in results if r.error is None and r.metrics and r.metrics.get(FULL_BUDGET)]


# ---------------------------------------------------------------- the sweep

class Sweep:
    """Run ``spec``: for each method a search study, then seed re-runs of its best configuration."""

    def __init__(self, spec: SweepSpec, spaces: dict[str, SearchSpace], out: Any = sys.stdout):
        self.spec, self.spaces, self.out = spec, spaces, out
        self.state = SweepState.open(spec)
        self.summary: dict[str, dict[str, Any]] = {}

    def _print(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def run(self, dataset: Any) -> dict[str, dict[str, Any]]:
        import ray

        from focustune.sweeps.trainable import dataset_to_arrays
        from focustune.sweeps.tracking import StudyTracking

        init_ray(self.spec.address)
        dataset_ref = ray.put(dataset_to_arrays(dataset))  # once per sweep, shared by every trial
        tracking = StudyTracking(self.spec, self.state, dataset.name)
        for method in self.spec.methods:
            self.summary[method] = self._study(method, dataset_ref, tracking)
        return self.summary

    def _study(self, method: str, dataset_ref: Any, tracking: Any) -> dict[str, Any]:
        from ray import tune

        from focustune.sweeps.progress import ProgressLine
        from focustune.sweeps.search import optuna_search

        spec, study = self.spec, self.state.study(method)
        parent = tracking.parent_run(method)
        trainable = _trainable(spec, method, dataset_ref)
        fixed = {**spec.fixed, "epochs": spec.epochs, SEED_KEY: SEARCH_SEED}
        params_for = functools.partial(resolved_params, method, tracking.dataset)
        if not study.get("search_done"):
            self._print(f"[{method}] search: {spec.trials} trial(s) x {spec.epochs} epoch(s)")

            def make_search() -> Any:
                scheduler = None
                if spec.scheduler == "asha":
                    from ray.tune.schedulers import ASHAScheduler

                    scheduler = ASHAScheduler(max_t=spec.epochs, grace_period=max(1, spec.epochs // 4))
                search = optuna_search(self.spaces[method], fixed, OBJECTIVE, spec.search_seed,
                                       f"{tracking.dataset}/{method}")
                callbacks = [tracking.callback(method, parent, "trial", params_for),
                             ProgressLine(method, spec.trials, self.out)]
                return tune.Tuner(trainable, tune_config=tune.TuneConfig(
                    metric=OBJECTIVE, mode="max", search_alg=search, scheduler=scheduler,
                    num_samples=spec.trials, max_concurrent_trials=spec.max_concurrent,
                    reuse_actors=REUSE_WORKERS),
                    run_config=_run_config(spec, f"{method}-search", callbacks))

            results = _fit(spec, f"{method}-search", trainable, make_search)
            tracking.close_orphans(parent, "trial", {str(r.metrics.get("trial_id")) for r in results if r.metrics})
            best = self._best(results)
            study.update(search_done=True, finished=best["finished"], total=best["total"],
                         best_config=best.get("config"), best_objective=best.get("objective"),
                         best_trial_test=best.get("test", {}))
            self.state.save()
            if best.get("config") is not None:
                tracking.log_best(parent, best, params_for)
        best_config = study["best_config"]
        if best_config is None:
            self._print(f"[{method}] no search trial finished its full budget (all failed or stopped "
                        f"early); no re-runs. Details: {spec.storage_path}/{method}-search")
            tracking.close_parent(parent, study, status="FAILED")
            return study
        seeds = list(range(1, spec.seeds + 1))
        if seeds and not study.get("reruns_done"):
            self._print(f"[{method}] re-running the best configuration with seeds {seeds}")

            def make_reruns() -> Any:
                space = {**best_config, SEED_KEY: tune.grid_search(seeds)}
                callbacks = [tracking.callback(method, parent, "seed_rerun", params_for),
                             ProgressLine(f"{method} seeds", len(seeds), self.out)]
                return tune.Tuner(trainable, param_space=space,
                                  tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent,
                                                              reuse_actors=REUSE_WORKERS),
                                  run_config=_run_config(spec, f"{method}-seeds", callbacks))

            results = _fit(spec, f"{method}-seeds", trainable, make_reruns)
            tracking.close_orphans(parent, "seed_rerun", {str(r.metrics.get("trial_id")) for r in results if r.metrics})
            study["reruns"] = [self._rerun_row(r) for r in results]
            study["reruns_done"] = True
            self.state.save()
        tracking.close_parent(parent, study)
        return study

    @staticmethod
    def _best(results: Any) -> dict[str, Any]:
        """The best completed trial by best-epoch validation score (never test); ties by objective."""
        done, total = _completed(results), len(list(results))
        if not done:
            return {"finished": 0, "total": total}
        metric = "best_val_" + done[0].config.get("selection_metric", "balanced_acc")
        best = max(done, key=lambda r: (r.metrics.get(metric, r.metrics[OBJECTIVE]), r.metrics[OBJECTIVE]))
        config = {k: v for k, v in best.config.items() if k != SEED_KEY}
        test = {k: v for k, v in best.metrics.items() if k.startswith("test_") and isinstance(v, (int, float))}
        return {"config": config, "objective": best.metrics[OBJECTIVE], "finished": len(done), "total": total,
                "test": test}

    @staticmethod
    def _rerun_row(result: Any) -> dict[str, Any]:
        m = result.metrics or {}
        return {"seed": result.config.get(SEED_KEY), "ok": result.error is None and bool(m.get(FULL_BUDGET)),
                **{k: m.get(k) for k in m if k.startswith(("test_", "best_val_")) and not k.endswith("matrix")}}
