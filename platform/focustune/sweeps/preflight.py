"""Everything a sweep checks before Ray starts or anything is written: the request's own values, the
services it names, its datasets (loaded once, as ``train`` loads them), its search spaces and
Optuna study names. A problem is one ``ConfigError`` naming it."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from focustune.errors import ConfigError
from focustune.methods import get_method, mechanism_epoch
from focustune.spaces import SearchSpace, load_space
from focustune.sweeps.spec import SweepSpec
from focustune.sweeps.state import SweepState
from focustune.sweeps.trial_config import NOT_HYPERPARAMETERS, STUDY_KEY, ResolvedTrial, resolve_trial
from focustune.tracking_schema import study_key

# ---------------------------------------------------------------- services


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
    """Refuse an MLflow server that does not answer, or a tracking URI of an unknown kind."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not _reachable(parsed.hostname or "", port):
            raise ConfigError(f"--tracking-uri {uri}: no MLflow server answers there")
    elif parsed.scheme not in ("sqlite", "file", "") and not uri.startswith(("postgresql", "mysql", "databricks")):
        raise ConfigError(f"--tracking-uri {uri}: unsupported scheme {parsed.scheme!r}")


# ---------------------------------------------------------------- the request's own values

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
    if reserved := sorted(set(spec.fixed) & set(NOT_HYPERPARAMETERS)):
        raise ConfigError(f"--set {', '.join(reserved)}: not a hyperparameter (a sweep sets each trial's seed, "
                          "study and kind itself; seed re-runs: --seeds)")


def _check_outputs(spec: SweepSpec) -> None:
    """The registered-model name and the folder of ``--config-out``."""
    if spec.register is not None:
        from focustune.sweeps.model_package import check_model_name

        check_model_name(spec.register)
    if spec.config_out and not Path(spec.config_out).expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--config-out {spec.config_out}: folder {Path(spec.config_out).parent} does not exist")


def validate(spec: SweepSpec) -> None:
    """Check the request's own values and the services it names. Raises ConfigError."""
    _check_names(spec)
    _check_numbers(spec)
    for name in spec.methods:
        method_trial(name, spec.fixed_values)  # the fixed values suit every method
    check_tracking_uri(spec.tracking)
    check_address(spec.address or os.environ.get("RAY_ADDRESS"))
    _check_outputs(spec)
    exists = SweepState.exists(spec)
    if exists and not spec.resume:
        raise ConfigError(f"a sweep already exists at {spec.storage_path}; pass --resume to continue it, "
                          "or choose another --experiment or --storage")
    if spec.resume and not exists:
        raise ConfigError(f"--resume: no sweep to resume at {spec.storage_path}")


# ---------------------------------------------------------------- methods, datasets, studies

def method_trial(method: str, fixed: Mapping[str, Any]) -> ResolvedTrial:
    """``method`` under its defaults and ``fixed`` (the values every trial of a sweep shares): where
    each trial of its studies starts from, before the search chooses anything."""
    return resolve_trial({**fixed, STUDY_KEY: study_key("", method)})


def study_grace(method: str, fixed: Mapping[str, Any]) -> int:
    """The epoch from which ``method``'s mechanism has acted under its defaults and the fixed values."""
    trial = method_trial(method, fixed)
    return mechanism_epoch(trial.build_method().phases(trial.train_config))


def load_datasets(spec: SweepSpec) -> dict[str, Any]:
    """Every dataset of the sweep, by the label its studies use, loaded exactly as ``train`` loads it
    (same data seed, same imbalance subsample); a repeated label, or a dataset one of the methods
    cannot train on, is refused."""
    trials = [method_trial(method, spec.fixed_values) for method in spec.methods]
    datasets: dict[str, Any] = {}
    for d in spec.datasets:
        loaded = d.load()
        label = d.name or loaded.name
        if label in datasets:
            raise ConfigError(f"datasets {d.dataset!r} and another one are both called {label!r}; "
                              "in a plan, give each its own `name:`")
        for trial in trials:  # e.g. mdgan refuses image sizes its GAN cannot generate
            trial.build_method().check_data(trial.train_config, loaded)
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
