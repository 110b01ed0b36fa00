"""A sweep from its command-line options and an optional plan file (YAML).

A plan holds what the options hold (``methods``, ``trials``, ``epochs``, ...) plus ``datasets``: a
list whose entries are a dataset (name, ``.npz`` or folder) or a mapping with that dataset's own
options (``dataset``, ``name``, ``data_dir``, ``size``, ``imbalance_ratio``). An option given on the
command line wins over the plan; relative paths are read from the current folder.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from focustune.data.options import SHAPING_KEYS
from focustune.errors import ConfigError
from focustune.sweeps.spec import DatasetSpec, SweepSpec
from focustune.yaml_files import read_yaml

#: Plan keys and the command-line options (argparse destinations) they stand for.
OPTION_KEYS = {"methods": "methods", "trials": "trials", "epochs": "epochs", "seeds": "seeds",
               "scheduler": "scheduler", "experiment": "experiment", "tracking_uri": "tracking_uri",
               "address": "address", "storage": "storage", "optuna_storage": "optuna_storage",
               "warm_start": "warm_start", "cpus_per_trial": "cpus_per_trial", "gpus_per_trial": "gpus_per_trial",
               "max_concurrent": "max_concurrent", "pack": "pack", "wait_for_nodes": "wait_for_nodes",
               **{key: key for key in SHAPING_KEYS},  # the data options
               "spaces": "space", "set": "set", "register": "register", "config_out": "config_out",
               "system_metrics": "system_metrics", "objectives": "objectives", "select": "select"}
PLAN_KEYS = {"datasets", *OPTION_KEYS}
DATASET_KEYS = {f.name for f in fields(DatasetSpec)}


def read_plan(path: str) -> dict[str, Any]:
    """The plan file as a mapping; unreadable, broken or unknown content is refused."""
    plan = read_yaml(path, "--plan")
    if not isinstance(plan, dict):
        raise ConfigError(f"--plan {path}: expected a mapping of options (datasets, methods, trials, ...)")
    if unknown := sorted(set(plan) - PLAN_KEYS):
        raise ConfigError(f"--plan {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(sorted(PLAN_KEYS))}")
    return plan


def _listed(value: Any, what: str) -> list:
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if isinstance(value, list):
        return value
    raise ConfigError(f"{what}: expected a list or a comma-separated string, got {value!r}")


def _dataset(entry: Any, defaults: dict[str, Any]) -> DatasetSpec:
    if isinstance(entry, str):
        entry = {"dataset": entry}
    if not isinstance(entry, dict) or "dataset" not in entry:
        raise ConfigError(f"plan datasets: each entry is a dataset or a mapping with `dataset:`, got {entry!r}")
    if unknown := sorted(set(entry) - DATASET_KEYS):
        raise ConfigError(f"plan dataset {entry['dataset']!r}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(DATASET_KEYS))}")
    return DatasetSpec(**{**defaults, **entry})


def _option(args: argparse.Namespace, plan: dict[str, Any], key: str, default: Any) -> Any:
    """The command line's value if given, else the plan's, else ``default``."""
    value = getattr(args, OPTION_KEYS[key], None)
    if value is not None:
        return value
    return plan.get(key, default)


def sweep_spec(args: argparse.Namespace, defaults: dict[str, Any]) -> SweepSpec:
    """The sweep asked for by ``args`` (and ``args.plan``); ``defaults`` are the command's own."""
    from focustune import params

    plan = read_plan(args.plan) if getattr(args, "plan", None) else {}
    if getattr(args, "dataset", None) and getattr(args, "datasets", None):
        raise ConfigError("give --dataset (one dataset) or --datasets (several), not both")
    named = [args.dataset] if getattr(args, "dataset", None) else getattr(args, "datasets", None)
    entries = _listed(named, "--datasets") if named else _listed(plan.get("datasets", defaults["datasets"]),
                                                                 "plan datasets")
    per_dataset = {k: _option(args, plan, k, defaults.get(k)) for k in SHAPING_KEYS}
    per_dataset = {k: v for k, v in per_dataset.items() if v is not None}
    spaces = _option(args, plan, "spaces", {})
    fixed = _option(args, plan, "set", {})
    option = lambda key: _option(args, plan, key, defaults.get(key))  # noqa: E731
    spec = SweepSpec(
        datasets=[_dataset(e, per_dataset) for e in entries],
        methods=[str(m) for m in _listed(option("methods") or [], "--methods")],
        trials=option("trials"), epochs=option("epochs"), seeds=option("seeds"), scheduler=option("scheduler"),
        tracking_uri=option("tracking_uri"), experiment=option("experiment"), address=option("address"),
        storage=option("storage"), optuna_storage=option("optuna_storage"), warm_start=option("warm_start"),
        cpus_per_trial=option("cpus_per_trial"), gpus_per_trial=option("gpus_per_trial"),
        max_concurrent=option("max_concurrent"), pack=option("pack"), wait_for_nodes=bool(option("wait_for_nodes")),
        resume=bool(args.resume), register=option("register"),
        config_out=option("config_out"), system_metrics=bool(option("system_metrics")),
        space_files=dict(spaces) if isinstance(spaces, dict) else dict(map(space_assignment, spaces)),
        fixed=dict(fixed) if isinstance(fixed, dict) else params.parse_assignments(fixed),
        objectives=[str(m) for m in _listed(option("objectives") or [], "--objectives")],
        select=None if option("select") is None else str(option("select")))
    spec.apply_objectives()
    return spec


def space_assignment(item: str) -> tuple[str, str]:
    """``METHOD=FILE`` of ``--space``."""
    method, sep, path = item.partition("=")
    if not sep or not method or not path:
        raise ConfigError(f"--space expects METHOD=FILE, got {item!r}")
    return method.strip(), path.strip()
