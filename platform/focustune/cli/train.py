"""``focustune train``: one run, without Ray; its summary, ``--output-json`` and, on request, its
MLflow run and registered model."""

from __future__ import annotations

import argparse
import json
import math
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from focustune.cli import options
from focustune.cli.console import stderr
from focustune.data.options import DATA_KEYS, DataOptions
from focustune.errors import ConfigError
from focustune.files import write_atomic
from focustune.text_table import text_table
from focustune.tracking_schema import (CALIBRATION_METRICS, METRIC_NAMES, RECORD_METRICS, check_experiment_name,
                                       default_tracking_uri)

#: The metrics of each evaluation in ``--output-json``: the scalar metrics, with the per-class recalls
#: in place of their minimum (``worst_class_recall``).
#: What a run takes when neither the command line nor ``--config`` sets it.
RUN_DEFAULTS = {"method": "erm", **vars(DataOptions()), "seed": 0}
#: The imbalance options go together: ``--config`` fills both or neither.
IMBALANCE_KEYS = ("imbalance", "imbalance_ratio")


def add_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--config", metavar="FILE", help="a configuration file written by tune/sweep (method, "
                                                      "dataset options, hyperparameters); options given here win")
    cmd.add_argument("--method", help="registered method (see `focustune methods`; default erm)")
    options.add_data_options(cmd)
    cmd.add_argument("--epochs", type=int, help="training epochs (same as --set epochs=N)")
    cmd.add_argument("--seed", type=int, help="run seed (default 0)")
    options.add_set(cmd, "set a hyperparameter (repeatable)")
    options.add_operating_point(cmd)
    cmd.add_argument("--output-json", help="write the run's result to this file")
    cmd.add_argument("--checkpoint-dir", help="save a checkpoint there after every epoch")
    cmd.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's checkpoint")
    cmd.add_argument("--gan-store", metavar="PATH", help="mdgan: keep each class's GAN in this folder or storage URI "
                                                        "and reuse the one already there (a sweep's is "
                                                        "<storage>/gans)")
    options.add_device(cmd)
    cmd.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    cmd.add_argument("--log-model", action="store_true", help="log the run and its model to MLflow")
    cmd.add_argument("--register", metavar="NAME", help="register the model (implies --log-model); the alias "
                                                       "champion moves only to a better model")
    options.add_tracking_uri(cmd)
    options.add_experiment(cmd, f"MLflow experiment (default {options.DEFAULT_EXPERIMENT})",
                           default=options.DEFAULT_EXPERIMENT)
    options.add_overwrite(cmd, "an existing --output-json file")


def run(args: argparse.Namespace) -> int:
    from focustune.config import resolve
    from focustune.data.dataset import check_seed
    from focustune.methods import get_method
    from focustune.shared_store import SharedStore
    from focustune.training import Trainer

    overrides = _overrides(args)
    method_cls = get_method(args.method)
    config, method_params = resolve(method_cls, overrides)
    output = Path(args.output_json) if args.output_json else None
    if output is not None:
        options.check_output_file(output, "--output-json", args.overwrite)
    check_seed(args.seed, "--seed")
    options.check_device(args.device)
    _check_checkpoint_dir(args)
    log_model = _model_logger(args)
    dataset = _data_options(args).load()

    log = (lambda m: None) if args.quiet else stderr
    gan_store = SharedStore(args.gan_store, log=log) if args.gan_store else None
    trainer = Trainer(method_cls(method_params), config, dataset, seed=args.seed, device=args.device,
                      checkpoint_dir=args.checkpoint_dir, log=log, gan_store=gan_store)
    if args.resume:
        _resume(trainer, args.checkpoint_dir)
    summary = dataset.summary()
    log(f"{method_cls.name} on {dataset.name} (data seed {args.data_seed}"
        f"{f', imbalance {dataset.imbalance}' if dataset.imbalance else ''}): {summary['sizes']} train class "
        f"counts {summary['train_class_counts']}, {config.model}, device {trainer.device} ({trainer.precision})")
    if args.resume:
        log(f"resumed from {args.checkpoint_dir} at epoch {trainer.epoch}")
    result = trainer.fit()
    _print_summary(result, config.selection_metric)
    if output is not None:
        write_atomic(output, json.dumps(run_json(result), indent=2))
        print(f"wrote {output}")
    if log_model is not None:
        log_model(trainer, result.params)
    return 0


def _check_checkpoint_dir(args: argparse.Namespace) -> None:
    """``--checkpoint-dir`` must be a folder (or not exist yet); ``--resume`` needs its checkpoint."""
    from focustune.training import CHECKPOINT_FILE

    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ConfigError(f"--checkpoint-dir {folder} is a file; name a folder")
    if args.resume and folder is None:
        raise ConfigError("--resume needs --checkpoint-dir")
    if args.resume and not (folder / CHECKPOINT_FILE).is_file():  # type: ignore[operator]
        raise ConfigError(f"--resume: no checkpoint in {folder} ({CHECKPOINT_FILE}); drop --resume to start anew")


#: What restoring a checkpoint that focustune did not write raises: not torch's format or corrupt
#: (RuntimeError, EOFError), objects ``weights_only`` refuses (UnpicklingError), other content or
#: shapes (KeyError, TypeError, ValueError; RuntimeError from ``load_state_dict``).
CHECKPOINT_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError, ValueError)


def _resume(trainer: Any, folder: str) -> None:
    from focustune.cli.options import untrusted_file_problem

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch, about a foreign pickle
            trainer.load_checkpoint(folder)
    except CHECKPOINT_READ_ERRORS as exc:
        raise ConfigError(f"--resume: {folder} holds no checkpoint of this run that focustune can restore "
                          f"({untrusted_file_problem(exc)})") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run's hyperparameters: ``--config``'s, then ``--set``'s, then ``--epochs`` and ``--operating-point``."""
    from focustune import params

    file_params = _apply_config_file(args)
    assigned: dict[str, Any] = params.parse_assignments(args.set or [])
    if args.epochs is not None and "epochs" in assigned:
        raise ConfigError("give the epoch count once: --epochs or --set epochs=..., not both")
    point = options.operating_point_assignment(args)
    if point and "operating_point" in assigned:
        raise ConfigError("give the operating point once: --operating-point or --set operating_point=..., not both")
    return {**file_params, **assigned, **({"epochs": args.epochs} if args.epochs is not None else {}), **point}


def _apply_config_file(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the options the command line left unset from ``--config FILE``, then from the defaults;
    return the file's hyperparameters (``--set`` and ``--epochs`` win over them)."""
    from focustune.run_config import read_run_config

    file_params: dict[str, Any] = {}
    if args.config:
        config = read_run_config(args.config)
        if args.method is not None and args.method != config.method:
            raise ConfigError(f"--config {args.config} configures method {config.method}, not {args.method}; "
                              "drop --method or use another file")
        for key in ("method", *(k for k in DATA_KEYS if k not in IMBALANCE_KEYS), "seed"):
            if getattr(args, key) is None:
                setattr(args, key, getattr(config, key))
        if all(getattr(args, key) is None for key in IMBALANCE_KEYS):
            for key in IMBALANCE_KEYS:
                setattr(args, key, getattr(config, key))
        file_params = dict(config.params)
    for key, value in RUN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return file_params


def _data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(**{key: getattr(args, key) for key in DATA_KEYS})


def _model_logger(args: argparse.Namespace) -> Callable[[Any, dict[str, Any]], Any] | None:
    """When ``--log-model``/``--register`` ask for an MLflow run: check the store and the model name now,
    before training, and return what logs the trained run (trainer, resolved hyperparameters); else None."""
    if not (args.log_model or args.register):
        return None
    from focustune.tracking.model_package import check_model_name, log_train_run
    from focustune.tracking.store_checks import check_tracking_uri

    tracking = args.tracking_uri or default_tracking_uri()
    check_experiment_name(args.experiment, folder=False)
    check_tracking_uri(tracking)
    if args.register is not None:
        check_model_name(args.register)
    return lambda trainer, resolved: log_train_run(tracking, args.experiment, trainer, _run_config(args, resolved),
                                                   args.register, print)


def _run_config(args: argparse.Namespace, resolved: dict[str, Any]) -> Any:
    """This ``train`` run as a configuration file's content."""
    from focustune.run_config import RunConfig

    data = _data_options(args).referenced()
    return RunConfig(**vars(data), method=args.method, params=resolved, seed=args.seed, source={"command": "train"})


def _print_summary(result: Any, metric: str) -> None:
    print(f"\n{result.method} on {result.dataset}, seed {result.seed}: best epoch {result.best_epoch}/"
          f"{result.epochs} ({result.best_phase}) by val {metric}, {result.seconds:.1f} s")
    rows = [{"split": split, **{k: f"{m[k]:.4f}" for k in METRIC_NAMES}}
            for split, m in (("val", result.val), ("test", result.test))]
    print(text_table(["split", *METRIC_NAMES], rows))
    print("test per-class recall: " + ", ".join(f"{r:.3f}" for r in result.test["per_class_recall"]))
    if result.calibration:
        before, after = result.calibration["before"], result.calibration["after"]
        print(f"test calibration, temperature {result.calibration['temperature']:.3f} fitted on val: "
              + ", ".join(f"{name} {before[name]:.4f} -> {after[name]:.4f}" for name in CALIBRATION_METRICS))


def run_json(result: Any) -> dict[str, Any]:
    """The documented ``--output-json`` shape of a ``RunResult``."""
    from dataclasses import asdict

    from focustune.records import BEST_EPOCH, BEST_PHASE

    pick = lambda m: {k: m[k] for k in RECORD_METRICS}  # noqa: E731
    return _clean({
        "method": result.method, "dataset": result.dataset, "seed": result.seed, "epochs": result.epochs,
        "seconds": result.seconds, "params": result.params, "data": result.data, BEST_EPOCH: result.best_epoch,
        BEST_PHASE: result.best_phase, "val": pick(result.val), "test": pick(result.test),
        "history": [{"epoch": h["epoch"], "phase": h["phase"], "train_loss": h["train_loss"], "val": pick(h["val"]),
                     **({"method": h["method"]} if h.get("method") else {})} for h in result.history],
        "stages": {stage: {**asdict(best), "val": pick(best.val), "test": pick(best.test)}
                   for stage, best in result.stages.items()},
    })


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
