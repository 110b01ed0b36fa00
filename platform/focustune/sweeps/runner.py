"""A benchmark sweep: datasets x methods, one Optuna study per pair, all studies advancing at once.

One Tune run holds every study. Its searcher (:class:`~focustune.sweeps.search.MultiStudySearch`)
gives each free slot to the study with the fewest started trials and starts a study's seed re-runs
as soon as its own search has ended; early stopping is per study and waits until the method has
acted (:class:`~focustune.sweeps.schedulers.PerStudyASHA`). Every study gets the same trial budget,
epochs, scheduler and seeds; selection uses validation only. ``sweep.json`` under the storage path
and Tune's experiment folder let ``--resume`` continue after the driver dies.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from focustune.config import flat_params, resolve
from focustune.data.options import DataOptions
from focustune.errors import ConfigError
from focustune.methods import get_method, mechanism_epoch
from focustune.spaces import SearchSpace, load_space
from focustune.sweeps.studies import RERUN, SEARCH, Interval, selection_score, utilisation
from focustune.sweeps.trial_config import (BUSY_SINCE, BUSY_UNTIL, FULL_BUDGET, KIND_KEY, NOT_HYPERPARAMETERS,
                                           OBJECTIVE, SEARCH_SEED, SEED_KEY, STUDY_KEY)
from focustune.tracking_schema import split_study_key, study_key

# Tune's own console tables and checkpoint-frequency warnings: the sweep prints its own progress.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
              # snapshot Tune's experiment state at least every 5 s, so a killed driver loses little
              "TUNE_GLOBAL_CHECKPOINT_S": "5"}
# A trial worker process is kept for the next trial of the same resources: a fresh one costs
# ~4 s here (torch, scikit-learn, focustune imports), more than a small trial's training.
# run_trial builds its trainer, seeds and thread count on every call, so nothing leaks between trials.
REUSE_WORKERS = True
TUNE_RUN = "benchmark"  # the one Tune experiment of a sweep, under its storage path


@dataclass(kw_only=True)
class DatasetSpec(DataOptions):
    """One dataset of a sweep: its data options and ``name``, the label of its studies (default: the
    loaded dataset's own name)."""

    name: str | None = None


@dataclass
class SweepSpec:
    """Everything a sweep is asked to do (validated by :func:`validate` before Ray starts)."""

    datasets: list[DatasetSpec]
    methods: list[str]
    trials: int = 20
    epochs: int = 30
    seeds: int = 1
    scheduler: str = "none"  # none | asha
    tracking_uri: str | None = None
    experiment: str = "focustune"
    address: str | None = None
    storage: str | None = None
    optuna_storage: str | None = None
    warm_start: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    resume: bool = False
    space_files: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # hyperparameters set for every trial
    search_seed: int = 0
    max_failures: int = 2
    one_study_at_a_time: bool = False  # the former order, for benchmarks (Python API only)
    register: str | None = None  # registered-model name of the selected models (see sweeps.delivery)
    config_out: str | None = None  # also write the chosen configuration there (tune: best_config.yaml)
    system_metrics: bool = False  # each trial reports its CPU/GPU use per epoch (trainable.ResourceUse)

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

    @property
    def optuna_url(self) -> str:
        """Optuna's RDB storage: ``--optuna-storage``, else ``optuna.db`` beside the sweep state (or in
        the working folder when the sweep state lives in an object store)."""
        if self.optuna_storage:
            return self.optuna_storage
        folder = Path.cwd() if "://" in self.storage_root else Path(self.storage_path)
        return f"sqlite:///{folder / 'optuna.db'}"


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


def _check_numbers(spec: SweepSpec) -> None:
    for name in ("trials", "epochs", "seeds", "max_concurrent", "cpus_per_trial", "gpus_per_trial"):
        value = getattr(spec, name)
        wanted = (int,) if name in ("trials", "epochs", "seeds", "max_concurrent") else (int, float)
        if not (isinstance(value, wanted) and not isinstance(value, bool)) and value is not None:
            raise ConfigError(f"{name}: expected a number, got {value!r}")
    for name, value, low in (("--trials", spec.trials, 1), ("--epochs", spec.epochs, 1), ("--seeds", spec.seeds, 0)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if spec.scheduler not in ("none", "asha"):
        raise ConfigError(f"--scheduler must be none or asha, got {spec.scheduler!r}")
    if spec.cpus_per_trial <= 0 or spec.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {spec.max_concurrent}")


def _check_names(spec: SweepSpec) -> None:
    if not spec.datasets:
        raise ConfigError("--datasets: name at least one dataset")
    labels = [d.name or d.dataset for d in spec.datasets]
    if repeated := sorted({x for x in labels if labels.count(x) > 1}):
        raise ConfigError(f"dataset {', '.join(repeated)} is named twice (in a plan, give each its own `name:`)")
    if not spec.methods:
        raise ConfigError("--methods: name at least one method")
    if len(set(spec.methods)) != len(spec.methods):
        raise ConfigError("--methods: a method is named twice")
    if unknown := sorted(set(spec.space_files) - set(spec.methods)):
        raise ConfigError(f"--space given for {', '.join(unknown)}, which the sweep does not run")


def validate(spec: SweepSpec) -> None:
    """Check the request's own values and the services it names. Raises ConfigError."""
    _check_names(spec)
    _check_numbers(spec)
    for name in spec.methods:
        resolve(get_method(name), {**spec.fixed, "epochs": spec.epochs})  # fixed values suit every method
    check_tracking_uri(spec.tracking)
    check_address(spec.address or os.environ.get("RAY_ADDRESS"))
    _check_outputs(spec)
    exists = SweepState.exists(spec)
    if exists and not spec.resume:
        raise ConfigError(f"a sweep already exists at {spec.storage_path}; pass --resume to continue it, "
                          "or choose another --experiment or --storage")
    if spec.resume and not exists:
        raise ConfigError(f"--resume: no sweep to resume at {spec.storage_path}")


def _check_outputs(spec: SweepSpec) -> None:
    """The registered-model name and the folder of ``--config-out``."""
    if spec.register is not None:
        from focustune.sweeps.model_package import check_model_name

        check_model_name(spec.register)
    if spec.config_out and not Path(spec.config_out).expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--config-out {spec.config_out}: folder {Path(spec.config_out).parent} does not exist")


def load_datasets(spec: SweepSpec) -> dict[str, Any]:
    """Every dataset of the sweep, by the label its studies use, loaded exactly as ``train`` loads it
    (same data seed, same imbalance subsample); a repeated label, or a dataset one of the methods
    cannot train on, is refused."""
    datasets: dict[str, Any] = {}
    for d in spec.datasets:
        loaded = d.load()
        label = d.name or loaded.name
        if label in datasets:
            raise ConfigError(f"datasets {d.dataset!r} and another one are both called {label!r}; "
                              "in a plan, give each its own `name:`")
        for method in spec.methods:  # e.g. mdgan refuses image sizes its GAN cannot generate
            cls = get_method(method)
            config, params = resolve(cls, {**spec.fixed, "epochs": spec.epochs})
            cls(params).check_data(config, loaded)
        datasets[label] = loaded
    return datasets


def study_spaces(spec: SweepSpec, datasets: list[str]) -> dict[str, SearchSpace]:
    """Each study's search space (the method's file, with that dataset's overrides)."""
    return {study_key(dataset, method): load_space(get_method(method), spec.space_files.get(method), dataset=dataset)
            for dataset in datasets for method in spec.methods}


def check_study_names(spec: SweepSpec, keys: list[str]) -> None:
    """A new sweep refuses an Optuna storage that already holds one of its studies."""
    url = spec.optuna_url
    if spec.resume or (url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()):
        return
    import optuna

    try:
        existing = {s.study_name for s in optuna.get_all_study_summaries(url)}
    except Exception as exc:  # SQLAlchemy's errors differ by database backend
        raise ConfigError(f"--optuna-storage {url}: cannot open it ({type(exc).__name__}: {exc})") from exc
    if taken := sorted(existing & set(keys)):
        raise ConfigError(f"--optuna-storage {url} already holds {', '.join(taken)}; use another storage or --resume")


# ---------------------------------------------------------------- sweep state

def _filesystem(location: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a local folder or a storage URI."""
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)
    return fs.LocalFileSystem(), location


class SweepState:
    """``sweep.json`` under the storage path: the sweep id, the spec, per study its parent run and
    results, and the utilisation. Local folders and storage URIs (s3://, gs://) alike, through pyarrow."""

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

    def study(self, key: str) -> dict[str, Any]:
        return self.data["studies"].setdefault(key, {})

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


def trial_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> dict[str, int]:
    """Trial slots per alive node (by its node id) for the trial resources, and the overall cap."""
    import ray

    slots: dict[str, int] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        count = math.floor(res.get("CPU", 0) / cpus_per_trial + 1e-9)
        if gpus_per_trial > 0:
            count = min(count, math.floor(res.get("GPU", 0) / gpus_per_trial + 1e-9))
        slots[node["NodeID"]] = count
    if max_concurrent:
        slots["total"] = max_concurrent
    return slots


def slot_count(slots: dict[str, int]) -> int:
    """Trial slots over all nodes (before any ``total`` cap)."""
    return sum(count for node, count in slots.items() if node != "total")


def resolved_params(config: dict[str, Any]) -> dict[str, Any]:
    """Every resolved hyperparameter of a trial's config, plus method, dataset and seed (MLflow params)."""
    dataset, method = split_study_key(config[STUDY_KEY])
    train_config, params = resolve(get_method(method), {k: v for k, v in config.items()
                                                        if k not in NOT_HYPERPARAMETERS})
    return {"method": method, "dataset": dataset, "seed": config.get(SEED_KEY, SEARCH_SEED),
            **flat_params(train_config, params)}


def study_grace(method: str, fixed: dict[str, Any]) -> int:
    """The epoch from which ``method``'s mechanism has acted under its defaults and the fixed values."""
    cls = get_method(method)
    config, params = resolve(cls, fixed)
    return mechanism_epoch(cls(params).phases(config))


def _hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_HYPERPARAMETERS}


def _completed_metrics(result: Any) -> dict[str, Any] | None:
    m = result.metrics or {}
    return m if result.error is None and m.get(FULL_BUDGET) and not m.get("diverged") else None


def busy_intervals(results: Any) -> list[Interval]:
    """Each trial attempt's busy interval (first start to last report), from every report it made."""
    intervals = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or BUSY_SINCE not in frame:
            continue
        frame = frame.dropna(subset=[BUSY_SINCE, BUSY_UNTIL])
        for since, group in frame.groupby(BUSY_SINCE):
            intervals.append(Interval(str(group["node_id"].iloc[-1]), float(since), float(group[BUSY_UNTIL].max())))
    return intervals


# ---------------------------------------------------------------- the sweep

class Sweep:
    """Run ``spec`` over loaded datasets (by study label): every (dataset, method) study at once."""

    def __init__(self, spec: SweepSpec, spaces: dict[str, SearchSpace], out: Any = sys.stdout):
        self.spec, self.spaces, self.out = spec, spaces, out
        self.state = SweepState.open(spec)

    def _print(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def keys(self, datasets: dict[str, Any]) -> list[str]:
        return [study_key(name, method) for name in datasets for method in self.spec.methods]

    def run(self, datasets: dict[str, Any], warm_starts: dict[str, list[dict]] | None = None) -> dict[str, dict]:
        """Run (or resume) the sweep; returns per study key its summary (best config, re-runs)."""
        import ray

        from focustune.sweeps.tracking import StudyTracking
        from focustune.sweeps.trainable import dataset_to_arrays

        init_ray(self.spec.address)
        refs = {name: ray.put(dataset_to_arrays(d)) for name, d in datasets.items()}  # once per sweep
        tracking = StudyTracking(self.spec, self.state)
        tracking.use_datasets(datasets)
        keys = self.keys(datasets)
        parents = {key: tracking.parent_run(key, datasets[split_study_key(key)[0]].summary()) for key in keys}
        if not self.state.data.get("done"):
            slots = trial_slots(self.spec.cpus_per_trial, self.spec.gpus_per_trial, self.spec.max_concurrent)
            results = self._fit(keys, refs, tracking, parents, slots, warm_starts or {})
            tracking.close_orphans({str(r.metrics.get("trial_id")) for r in results if r.metrics})
            self._summarise(keys, results, slots)
            for key in keys:
                study = self.state.study(key)
                if study.get("best_config") is not None:
                    tracking.log_best(parents[key], study, {**study["best_config"], STUDY_KEY: key}, resolved_params)
            self.state.data["done"] = True
            self.state.save()
        self._deliver(parents, datasets)
        usage = self.state.data.get("utilisation", {})
        for key in keys:
            study = self.state.study(key)
            status = "FINISHED" if study.get("best_config") else "FAILED"
            tracking.close_parent(parents[key], study, usage, status=status)
        tracking.log_study_views(parents)
        return {key: self.state.study(key) for key in keys}

    def _deliver(self, parents: dict[str, str], datasets: dict[str, Any]) -> None:
        """Per study: the chosen configuration file and the selected model (:mod:`focustune.sweeps.delivery`)."""
        from focustune.sweeps.delivery import deliver_models

        deliver_models(self.spec, self.state, parents, datasets, self._print)

    def _fit(self, keys: list[str], refs: dict[str, Any], tracking: Any, parents: dict[str, str],
             slots: dict[str, int], warm_starts: dict[str, list[dict]]) -> Any:
        from ray import tune

        from focustune.sweeps.progress import SweepProgress
        from focustune.sweeps.search import DefineByRun, MultiStudySearch, study_queue
        from focustune.sweeps.trainable import run_trial

        spec = self.spec
        # one pending trial per slot: a free slot starts the next trial at once (Tune's default for a
        # custom searcher is a single pending trial, which starts trials one by one)
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slot_count(slots))))
        device = "cuda" if spec.gpus_per_trial > 0 else "cpu"
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, dataset_refs=refs, cpus=spec.cpus_per_trial, device=device,
                                 system_metrics=spec.system_metrics),
            {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
        path = f"{spec.storage_path}/{TUNE_RUN}"
        if tune.Tuner.can_restore(path):
            self._print(f"resuming {len(keys)} studies from {path}")
            return tune.Tuner.restore(path, trainable=trainable, resume_errored=True).fit()
        fixed = {**spec.fixed, "epochs": spec.epochs, SEED_KEY: SEARCH_SEED}
        search = MultiStudySearch(
            {key: DefineByRun(self.spaces[key], fixed) for key in keys},
            study_queue(keys, spec.trials, spec.seeds, spec.one_study_at_a_time), spec.optuna_url, spec.search_seed,
            warm_starts=warm_starts)
        scheduler = None
        if spec.scheduler == "asha":
            from focustune.sweeps.schedulers import PerStudyASHA

            graces = {key: study_grace(split_study_key(key)[1], {**spec.fixed, "epochs": spec.epochs}) for key in keys}
            scheduler = PerStudyASHA(graces, max_t=spec.epochs)
        budgets = {key: (spec.trials, spec.seeds) for key in keys}
        callbacks = [tracking.callback(parents, resolved_params), SweepProgress(budgets, slots, self.out)]
        self._print(f"{len(keys)} studies at once: {spec.trials} search trial(s) x {spec.epochs} epoch(s) each, "
                    f"then {spec.seeds} seed re-run(s); {slot_count(slots)} trial "
                    f"slot(s); Optuna studies in {spec.optuna_url}")
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            metric=OBJECTIVE, mode="max", search_alg=search, scheduler=scheduler, num_samples=-1,
            max_concurrent_trials=spec.max_concurrent, reuse_actors=REUSE_WORKERS),
            run_config=tune.RunConfig(name=TUNE_RUN, storage_path=spec.storage_path, callbacks=callbacks, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        return tuner.fit()

    def _summarise(self, keys: list[str], results: Any, slots: dict[str, int]) -> None:
        """Per study: trial counts, the best full-budget trial (validation), the re-runs; utilisation."""
        by_study: dict[str, list[Any]] = {key: [] for key in keys}
        for result in results:
            if result.config and result.config.get(STUDY_KEY) in by_study:
                by_study[result.config[STUDY_KEY]].append(result)
        for key, group in by_study.items():
            self.state.study(key).update(self._study_summary(group))
        usage = utilisation(busy_intervals(results), slots)
        self.state.data["utilisation"] = usage
        self.state.save()

    def _study_summary(self, results: list[Any]) -> dict[str, Any]:
        searched = [r for r in results if r.config.get(KIND_KEY) == SEARCH]
        done = [(r, m) for r in searched if (m := _completed_metrics(r)) is not None]
        failed = [r for r in searched if r.error is not None or (r.metrics or {}).get("diverged")]
        summary: dict[str, Any] = {"finished": len(done), "total": len(searched), "best_config": None,
                                   "failed": len(failed), "stopped_early": len(searched) - len(done) - len(failed)}
        if done:
            # equal scores: the configuration the search re-ran with seeds (it may pick another among equals)
            rerun = next((_hyperparameters(r.config) for r in results if r.config.get(KIND_KEY) == RERUN), None)
            best, m = max(done, key=lambda rm: (selection_score(rm[1], rm[0].config),
                                                _hyperparameters(rm[0].config) == rerun))
            summary.update(best_config=_hyperparameters(best.config),
                           best_objective=m[OBJECTIVE],
                           best_trial_test={k: v for k, v in m.items() if k.startswith("test_")
                                            and isinstance(v, (int, float))})
        summary["reruns"] = sorted((self._rerun_row(r) for r in results if r.config.get(KIND_KEY) == RERUN),
                                   key=lambda row: row["seed"])
        summary["selected"] = self._selected(results, done)
        return summary

    @staticmethod
    def _selected(results: list[Any], searched: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any] | None:
        """The run whose model the study hands over: its best seed re-run, else its best search trial."""
        from focustune.sweeps.delivery import selected_model

        reruns = [(r, m) for r in results if r.config.get(KIND_KEY) == RERUN and (m := _completed_metrics(r)) is not None]
        return selected_model(reruns or searched)

    @staticmethod
    def _rerun_row(result: Any) -> dict[str, Any]:
        m = result.metrics or {}
        return {"seed": result.config.get(SEED_KEY), "ok": _completed_metrics(result) is not None,
                **{k: m.get(k) for k in m if k.startswith(("test_", "best_val_")) and not k.endswith("matrix")}}
