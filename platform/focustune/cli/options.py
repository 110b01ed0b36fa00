"""The options several commands share, each declared once.

Options that a plan, a configuration file or a command's defaults may fill stay unset (None) unless
given on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from focustune.data.options import DATA_KEYS, DataOptions
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


def add_experiment(cmd: argparse.ArgumentParser, help: str, **settings: Any) -> None:
    """``--experiment``: the MLflow experiment; ``settings`` are its default or ``required``."""
    cmd.add_argument("--experiment", help=help, **settings)


def add_set(cmd: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): hyperparameters, parsed by ``params.parse_assignments``."""
    cmd.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)


def add_sweep_options(cmd: argparse.ArgumentParser) -> None:
    """Options of ``sweep`` and ``tune``; left unset (None) they come from ``--plan`` or the defaults."""
    add_data_options(cmd)
    _add_all(cmd, _SWEEP_OPTIONS)
    add_tracking_uri(cmd)
    add_experiment(cmd, f"MLflow experiment (and storage folder) name (default {DEFAULT_EXPERIMENT})")
    _add_all(cmd, _CLUSTER_OPTIONS)
    add_set(cmd, "fix a hyperparameter for every trial (repeatable)")
    _add_all(cmd, _SWEEP_OUTPUT_OPTIONS)


def _add_all(cmd: argparse.ArgumentParser, options: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    for flag, settings in options:
        cmd.add_argument(flag, **settings)
