"""Everything a sweep checks before Ray starts or anything is written: the request's own values, the
services it names, its datasets (loaded once, as ``train`` loads them), its search spaces and
Optuna study names. A problem is one ``ConfigError`` naming it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from focustune.errors import ConfigError
from focustune.network import reachable
from focustune.methods import get_method, mechanism_epoch
from focustune.spaces import SearchSpace, load_space
from focustune.sweeps.spec import SweepSpec
from focustune.sweeps.state import SweepState
from focustune.records import STUDY_KEY
from focustune.sweeps.trial_config import NOT_HYPERPARAMETERS, ResolvedTrial, resolve_trial
from focustune.tracking.store_checks import check_database as check_store_database
from focustune.tracking.store_checks import check_tracking_uri
from focustune.tracking_schema import check_experiment_name, study_key
from focustune.training.loop import check_operating_point

# ---------------------------------------------------------------- services


def check_address(address: str | None) -> None:
    """Refuse an unreachable ``host:port`` cluster address, or one where something answers that does not
    speak Ray's protocol (gRPC over HTTP/2; ``auto``/``local`` pass through)."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ConfigError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    if not reachable(parsed.hostname, parsed.port):
        raise ConfigError(f"--address {address}: no Ray cluster answers there (connection refused or timed out)")
    if os.environ.get("RAY_USE_TLS", "0") in ("0", "") and not speaks_grpc(parsed.hostname, parsed.port):
        raise ConfigError(f"--address {address}: something answers there, but not a Ray cluster (no gRPC answer "
                          f"within {GRPC_PROBE_TIMEOUT_S:g} s); check the host and port (the head's GCS port, "
                          "6379 by default, or ray://HOST:10001)")


#: Seconds a cluster address has to answer an HTTP/2 greeting (Ray's GCS and client server are gRPC).
GRPC_PROBE_TIMEOUT_S = 5.0
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS


def speaks_grpc(host: str, port: int, timeout: float = GRPC_PROBE_TIMEOUT_S) -> bool:
    """Whether ``host:port`` answers an HTTP/2 client greeting with a SETTINGS frame, as every gRPC
    server does at once (a web server answers HTTP/1 or closes, a silent port sends nothing)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:
                chunk = connection.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return header[3] == 4  # frame type SETTINGS


def check_database(url: str) -> None:
    """Refuse an Optuna storage URL that does not parse, an SQLite file that cannot be opened or created,
    or a database server that does not answer or refuses the connection (a short attempt, so a wrong
    host or password fails in seconds, not at the first trial)."""
    check_store_database(url, "--optuna-storage")


def check_storage(root: str) -> None:
    """Refuse a sweep storage that cannot be written: an object store's missing bucket, unreachable
    endpoint or refused credentials; a local folder that is read-only or lies under a file."""
    if "://" not in root:
        _check_folder(Path(root))
        return
    from pyarrow import fs

    try:
        files, path = fs.FileSystem.from_uri(root)
        if isinstance(files, fs.LocalFileSystem):
            _check_folder(Path(path))
            return
        bucket = path.split("/")[0]
        found = files.get_file_info(bucket).type != fs.FileType.NotFound
    except (OSError, ValueError) as exc:  # pyarrow: OSError from the store, ArrowInvalid (a ValueError) for the URI
        problem = _storage_problem(str(exc))
        if root.startswith("s3://") and _refused(str(exc)) and not _visible_aws_credentials():
            problem = NO_CREDENTIALS
        raise ConfigError(f"--storage {root}: {problem}") from None
    if not found:
        raise ConfigError(f"--storage {root}: bucket {bucket!r} does not exist; create it or name an existing one")


#: pyarrow's (AWS SDK's) error texts, and what each asks the user to fix.
_STORAGE_PROBLEMS = (
    ("Could not resolve host", "the object store's host name does not resolve (check AWS_ENDPOINT_URL or the URI)"),
    ("NETWORK_CONNECTION", "the object store does not answer (check AWS_ENDPOINT_URL or the URI's "
                           "endpoint_override, and that the store is up)"),
    ("ACCESS_DENIED", "access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                      "a profile, or the machine's role) and their rights on the bucket"),
    ("InvalidAccessKeyId", "the store does not know this access key (check AWS_ACCESS_KEY_ID)"),
    ("SignatureDoesNotMatch", "the secret key does not match the access key (check AWS_SECRET_ACCESS_KEY)"),
    ("credentials", "no usable credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"),
)


NO_CREDENTIALS = ("the object store refused the request, and no credentials were found: set AWS_ACCESS_KEY_ID "
                  "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or ~/.aws/credentials); on a cloud machine, check "
                  "that its role grants access to the bucket")
#: Where the AWS SDK's default chain finds credentials a process can see (an instance role it cannot).
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def _refused(error: str) -> bool:
    """The store answered with a refusal (or, as some S3-compatible servers do to unsigned requests, a 500)."""
    return any(text in error for text in ("ACCESS_DENIED", "HTTP status 403", "HTTP status 500"))


def _visible_aws_credentials() -> bool:
    """Credentials in the environment or in the shared AWS files (not an instance role: none can see it)."""
    if any(os.environ.get(name) for name in _CREDENTIAL_VARIABLES):
        return True
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    return any(Path(name).expanduser().is_file() for name in files)


def _storage_problem(error: str) -> str:
    for text, problem in _STORAGE_PROBLEMS:
        if text.lower() in error.lower():
            return problem
    return f"cannot reach it ({error})"


def _check_folder(folder: Path) -> None:
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--storage {folder}: {existing} is a file, not a folder; choose another storage folder")
    try:
        with tempfile.TemporaryFile(dir=existing):  # a file without a name, gone when closed
            pass
    except OSError as exc:
        raise ConfigError(f"--storage {folder}: cannot write in {existing} ({exc.strerror}); "
                          "choose a writable folder") from None


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """On a private local Ray, refuse trial resources this machine lacks (Tune would wait forever)."""
    import torch

    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    if gpus_per_trial > gpus:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g}: this machine has {gpus} GPU(s), so no trial could "
                          "ever start; lower it, or join a cluster that has them with --address")
    if cpus_per_trial > cpus:
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial:g}: this machine has {cpus} CPU(s), so no trial could "
                          "ever start; lower it, or join a cluster with --address")


# ---------------------------------------------------------------- the request's own values

#: Upper bounds of a study's search trials and seed re-runs (beyond them a sweep would never end).
MAX_TRIALS = 100_000
MAX_SEEDS = 1_000


def _check_numbers(spec: SweepSpec) -> None:
    counts = ("trials", "epochs", "seeds", "max_concurrent", "pack")
    for name in (*counts, "cpus_per_trial", "gpus_per_trial"):
        value = getattr(spec, name)
        wanted = (int,) if name in counts else (int, float)
        if not (isinstance(value, wanted) and not isinstance(value, bool)) and value is not None:
            raise ConfigError(f"{name}: expected a number, got {value!r}")
    for name, value, low in (("--trials", spec.trials, 1), ("--epochs", spec.epochs, 1), ("--seeds", spec.seeds, 0)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    for name, value, high in (("--trials", spec.trials, MAX_TRIALS), ("--seeds", spec.seeds, MAX_SEEDS)):
        if value > high:
            raise ConfigError(f"{name} {value}: at most {high} per study")
    if spec.scheduler not in ("none", "asha"):
        raise ConfigError(f"--scheduler must be none or asha, got {spec.scheduler!r}")
    if spec.cpus_per_trial <= 0 or spec.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {spec.max_concurrent}")
    _check_pack(spec)


def _check_pack(spec: SweepSpec) -> None:
    """``--pack``: a count from 1 to MAX_PACK."""
    from focustune.sweeps.packs import MAX_PACK

    if spec.pack is None or not 1 <= spec.pack <= MAX_PACK:
        raise ConfigError(f"--pack must be from 1 to {MAX_PACK} (trials per process), got {spec.pack}")


def _check_names(spec: SweepSpec) -> None:
    check_experiment_name(spec.experiment, folder=True)
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
        from focustune.tracking.model_package import check_model_name

        check_model_name(spec.register)
    if spec.config_out and not Path(spec.config_out).expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--config-out {spec.config_out}: folder {Path(spec.config_out).parent} does not exist")
    if spec.config_out and Path(spec.config_out).expanduser().is_dir():
        raise ConfigError(f"--config-out {spec.config_out} is a folder; name a file")


def validate(spec: SweepSpec) -> None:
    """Check the request's own values and the services it names. Raises ConfigError."""
    _check_names(spec)
    _check_numbers(spec)
    for name in spec.methods:
        trial = method_trial(name, spec.fixed_values)  # the fixed values suit every method
        if spec.pack > 1 and trial.train_config.compile:
            from focustune.training.packing import COMPILE_REFUSED

            raise ConfigError(f"--pack {spec.pack} with compile=true: {COMPILE_REFUSED}")
    check_tracking_uri(spec.tracking)
    address = spec.address or os.environ.get("RAY_ADDRESS")
    check_address(address)
    if not address or address == "local":
        check_local_resources(spec.cpus_per_trial, spec.gpus_per_trial)
    check_storage(spec.storage_root)
    if spec.optuna_storage:
        check_database(spec.optuna_storage)
    _check_outputs(spec)
    exists = SweepState.exists(spec)
    if exists and not spec.resume:
        raise ConfigError(f"a sweep already exists at {spec.storage_path}; pass --resume to continue it, "
                          "or choose another --experiment or --storage")
    if spec.resume and not exists:
        raise ConfigError(f"--resume: no sweep to resume at {spec.storage_path}")
    if spec.resume:
        check_same_pack(spec)
    if address and address != "local":
        check_cluster_fits(spec, address)


def check_same_pack(spec: SweepSpec) -> None:
    """A resumed sweep keeps its ``--pack``: its restored trials keep the resources they started with
    (none for packed trials, one trial's for unpacked ones)."""
    before = SweepState.open(spec).data.get("spec", {}).get("pack", 1)
    if before != spec.pack:
        raise ConfigError(f"--resume with --pack {spec.pack}: this sweep ran with --pack {before}; resume it "
                          f"with --pack {before}")


def check_cluster_fits(spec: SweepSpec, address: str) -> None:
    """Joined to the cluster at ``address``: refuse trial resources no alive node can give, unless
    ``--wait-for-nodes`` says the cluster's autoscaler will add such a node (Ray 2.60 gives a driver no
    reliable sign of an autoscaler, so the user says so)."""
    from focustune.sweeps.cluster import init_ray, node_summary, slot_count, trial_slots

    init_ray(address)
    if spec.wait_for_nodes or slot_count(trial_slots(spec.cpus_per_trial, spec.gpus_per_trial, None)) > 0:
        return
    raise ConfigError(f"--cpus-per-trial {spec.cpus_per_trial:g} --gpus-per-trial {spec.gpus_per_trial:g}: no "
                      f"node of the cluster at {address} can run one trial ({node_summary()}); lower them, or "
                      "pass --wait-for-nodes when the cluster's autoscaler will add such a node")


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
            check_operating_point(trial.train_config, loaded)  # its classes are the dataset's
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


def check_config_out(spec: SweepSpec, keys: list[str], overwrite: bool) -> None:
    """Refuse to overwrite an existing ``--config-out`` file (one per study when there are several)
    unless ``overwrite``; on ``--resume``, a study whose hand-over is done writes nothing and passes."""
    from focustune.sweeps.delivery import config_locations

    if not spec.config_out or overwrite:
        return
    done: set[str] = set()
    if spec.resume and SweepState.exists(spec):
        studies = SweepState.open(spec).studies
        done = {key for key in keys if key in studies and studies[key].model is not None}
    several = len(keys) > 1
    taken = [place for key in keys if key not in done
             for place in config_locations(spec, key, several)[1:] if Path(place).expanduser().exists()]
    if taken:
        raise ConfigError(f"--config-out: {', '.join(taken)} already exist(s); pass --overwrite to replace, "
                          "or choose another --config-out")
