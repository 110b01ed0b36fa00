"""The options several commands share, each declared once.

Options that a plan, a configuration file or a command's defaults may fill stay unset (None) unless
given on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from focustune.data.options import DATA_KEYS, DataOptions
from focustune.errors import ConfigError
from focustune.tracking_schema import TRACKING_URI_HELP

#: The MLflow experiment (and sweep storage folder) of a command given no ``--experiment``.
DEFAULT_EXPERIMENT = "focustune"

#: ``argparse`` settings of each data option (``DataOptions``' fields); the flag is the field's name
#: with dashes (``data_seed`` -> ``--data-seed``).
_DATA_OPTIONS: dict[str, dict[str, Any]] = {
    "dataset": {"help": f"dataset name, MedMNIST-layout .npz, or image folder (default {DataOptions().dataset})"},
    "data_dir": {"help": "folder holding MedMNIST .npz files or torchvision's layout (downloaded there if missing)"},
    "size": {"type": int, "help": "MedMNIST image size (28, 64, 128, 224) or the size image folders are resized "
                                  "to (default 28)"},
    "imbalance": {"metavar": "PROFILE", "help": "subsample the training split: exp:R, linear:R, log:R, step (LOW), "
                                                "classes=I,J:F"},
    "imbalance_ratio": {"type": float, "metavar": "R", "help": "shorthand for --imbalance exp:R"},
    "data_seed": {"type": int, "help": "seed of the data: splits made while loading and the imbalance subsample "
                                       f"(the same for train and sweep; default {DataOptions().data_seed})"},
}

#: Options of ``sweep`` and ``tune`` after the data options, in help order (``--set`` and ``--experiment``
#: are declared by their own functions).
_SWEEP_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--datasets", {"help": "several datasets, comma-separated: one study per dataset and method"}),
    ("--plan", {"help": "YAML file with the sweep's datasets (each with its own options), methods, budget and "
                        "spaces; options given here win over it"}),
    ("--trials", {"type": int, "help": "search trials per study (dataset x method)"}),
    ("--epochs", {"type": int, "help": "epochs of every trial (default 30, the same for every method)"}),
    ("--seeds", {"type": int, "help": "re-runs of each study's best configuration"}),
    ("--scheduler", {"choices": ("none", "asha"), "help": "asha = early stopping per study (with several "
                                                           "objectives: by non-dominated rank)"}),
    ("--objectives", {"metavar": "M1,M2", "help": "several objectives, comma-separated metrics (each in its own "
                                                  "direction), e.g. balanced_acc,worst_class_recall: a Pareto front "
                                                  "per study (default: the selection metric alone)"}),
    ("--select", {"metavar": "RULE", "help": "which point of the front is handed over, e.g. \"balanced_acc | "
                                             "worst_class_recall>=0.6\": the best by the first metric among points "
                                             "meeting every constraint (default: the first objective)"}),
)
_CLUSTER_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--address", {"help": "Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto; default $RAY_ADDRESS, "
                           "else a private local Ray)"}),
    ("--storage", {"help": "folder or URI for Tune's experiment state (default ./focustune_runs; on a multi-node "
                           "cluster use shared storage)"}),
    ("--optuna-storage", {"help": "SQLAlchemy URL of the Optuna studies (default: optuna.db beside the sweep "
                                  "state)"}),
    ("--warm-start", {"metavar": "EXPERIMENT", "help": "first try, in each study, the best configurations its "
                                                       "method reached in that earlier sweep's experiment (any "
                                                       "dataset)"}),
    ("--cpus-per-trial", {"type": float, "help": "CPUs per trial (default 1)"}),
    ("--gpus-per-trial", {"type": float, "help": "fractional GPUs per trial, e.g. 0.25"}),
    ("--max-concurrent", {"type": int, "help": "at most this many trials at once"}),
    ("--pack", {"type": int, "metavar": "K", "help": "train K trials of a study (same model, head, batch size) at "
                                                    "once in one process as one stacked model, in the resources "
                                                    "of one trial; each stays its own trial (default 1)"}),
    ("--wait-for-nodes", {"action": "store_const", "const": True,
                          "help": "on a cluster (--address) whose autoscaler adds nodes: when no node fits one "
                                  "trial yet, wait for one instead of refusing the sweep"}),
    ("--resume", {"action": "store_true", "help": "continue an interrupted sweep"}),
)
_SWEEP_OUTPUT_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--register", {"metavar": "NAME", "help": "register each study's selected model in MLflow's model registry "
                                               "(several studies: NAME-DATASET-METHOD); the alias champion moves "
                                               "only to a better model"}),
    ("--config-out", {"metavar": "PATH", "help": "also write the chosen configuration there (tune's default: "
                                                 "best_config.yaml; several studies: PATH's stem + "
                                                 "__DATASET__METHOD)"}),
    ("--system-metrics", {"action": "store_const", "const": True,
                          "help": "each trial logs its CPU (and GPU) use and memory per epoch as system/ metrics"}),
)


def add_data_options(cmd: argparse.ArgumentParser) -> None:
    """Where the data comes from and how it is shaped (``DataOptions``)."""
    for key in DATA_KEYS:
        cmd.add_argument("--" + key.replace("_", "-"), **_DATA_OPTIONS[key])


def add_tracking_uri(cmd: argparse.ArgumentParser) -> None:
    """``--tracking-uri``: the MLflow store (unset: the command's default store)."""
    cmd.add_argument("--tracking-uri", help=TRACKING_URI_HELP)


def add_device(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def check_device(name: str | None) -> None:
    """Refuse a ``--device`` torch does not know, or a CUDA device this machine lacks."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s); use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: only cpu and cuda devices are supported")


def add_overwrite(cmd: argparse.ArgumentParser, what: str) -> None:
    cmd.add_argument("--overwrite", action="store_true", help=f"replace {what} when it exists (else refused)")


def check_output_file(path: Path, option: str, overwrite: bool, protected: tuple[Path, ...] = ()) -> None:
    """Refuse an output ``path`` whose folder is missing, that is a folder, that is one of the
    ``protected`` inputs, or that exists (unless ``overwrite``)."""
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; name a file")
    resolved = path.resolve()
    if any(resolved == source.resolve() for source in protected):
        raise ConfigError(f"{option} {path} is also the input: it would be destroyed; name another file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path} already exists; pass --overwrite to replace it, or name another file")


def add_experiment(cmd: argparse.ArgumentParser, help: str, **settings: Any) -> None:
    """``--experiment``: the MLflow experiment; ``settings`` are its default or ``required``."""
    cmd.add_argument("--experiment", help=help, **settings)


def add_set(cmd: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): hyperparameters, parsed by ``params.parse_assignments``."""
    cmd.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)


def add_operating_point(cmd: argparse.ArgumentParser) -> None:
    """``--operating-point RULE``: the hyperparameter ``operating_point`` (read and checked with the others)."""
    cmd.add_argument("--operating-point", metavar="RULE",
                     help="what the model's per-class logit offsets (a binary task's threshold) optimise on "
                          "validation: METRIC (e.g. balanced_acc) or 'METRIC | recall[CLASS]>=0.9, ...' "
                          "(same as --set operating_point=RULE; default: the selection metric)")


def operating_point_assignment(args: argparse.Namespace) -> dict[str, str]:
    """``--operating-point``'s value as a hyperparameter assignment (empty when not given)."""
    return {} if args.operating_point is None else {"operating_point": args.operating_point}


def add_sweep_options(cmd: argparse.ArgumentParser) -> None:
    """Options of ``sweep`` and ``tune``; left unset (None) they come from ``--plan`` or the defaults."""
    add_data_options(cmd)
    _add_all(cmd, _SWEEP_OPTIONS)
    add_tracking_uri(cmd)
    add_experiment(cmd, f"MLflow experiment (and storage folder) name (default {DEFAULT_EXPERIMENT})")
    _add_all(cmd, _CLUSTER_OPTIONS)
    add_set(cmd, "fix a hyperparameter for every trial (repeatable)")
    add_operating_point(cmd)
    _add_all(cmd, _SWEEP_OUTPUT_OPTIONS)
    add_overwrite(cmd, "an existing --config-out file")


def _add_all(cmd: argparse.ArgumentParser, options: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    for flag, settings in options:
        cmd.add_argument(flag, **settings)


def untrusted_file_problem(exc: Exception) -> str:
    """What was wrong with a weights or checkpoint file that focustune did not write, in a few words."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects besides tensors, which focustune never loads: they could run code"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
