"""The ``focustune`` command line: list datasets and methods, train one run."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focustune.errors import ConfigError, FocusTuneError

JSON_METRICS = ("acc", "balanced_acc", "macro_f1", "auc", "per_class_recall")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


# ---------------------------------------------------------------- commands

def cmd_datasets(args: argparse.Namespace) -> int:
    from focustune.data import list_datasets
    from focustune.data.imbalance import PROFILE_SYNTAX

    print(_table(list_datasets(), ["name", "task", "classes", "train", "val", "test", "source"]))
    print("\nAlso accepted as --dataset: a MedMNIST-layout .npz file, or a folder with one sub-folder "
          "of images per class (optionally under train/ val/ test/).")
    print(f"Imbalance profiles (--imbalance, training split only): {PROFILE_SYNTAX}; "
          "--imbalance-ratio R = exp:R.")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from focustune import params
    from focustune.config import TrainConfig
    from focustune.methods import get_method, method_names

    for name in method_names():
        cls = get_method(name)
        print(f"{name}: {cls.summary}")
        rows = params.describe(cls.Params)
        for row in rows:
            print(f"    {row['name']} ({row['type']}) = {row['default']!r}  {row['range']}  {row['help']}")
        if not rows:
            print("    (no hyperparameters of its own)")
        if cls.defaults:
            print("    shared defaults: " + ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()))
    print("\nshared (every method):")
    for row in params.describe(TrainConfig):
        print(f"    {row['name']} ({row['type']}) = {row['default']!r}  {row['range']}  {row['help']}")
    return 0


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run_json(result: Any) -> dict[str, Any]:
    """The documented ``--output-json`` shape."""
    pick = lambda m: {k: m[k] for k in JSON_METRICS}  # noqa: E731
    return _clean({
        "method": result.method, "dataset": result.dataset, "seed": result.seed, "epochs": result.epochs,
        "seconds": result.seconds, "params": result.params, "data": result.data, "best_epoch": result.best_epoch,
        "best_phase": result.best_phase, "val": pick(result.val), "test": pick(result.test),
        "history": [{"epoch": h["epoch"], "phase": h["phase"], "train_loss": h["train_loss"], "val": pick(h["val"]),
                     **({"method": h["method"]} if h.get("method") else {})} for h in result.history],
        "stages": {stage: {**best, "val": pick(best["val"]), "test": pick(best["test"])}
                   for stage, best in result.stages.items()},
    })


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _apply_config_file(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the options the command line left unset from ``--config FILE``, then from the defaults;
    return the file's hyperparameters (``--set`` and ``--epochs`` win over them)."""
    from focustune.data import EMBEDDED_DEFAULT
    from focustune.run_config import read_run_config

    file_params: dict[str, Any] = {}
    if args.config:
        config = read_run_config(args.config)
        if args.method is not None and args.method != config.method:
            raise ConfigError(f"--config {args.config} configures method {config.method}, not {args.method}; "
                              "drop --method or use another file")
        for key in ("method", "dataset", "data_dir", "size", "data_seed", "seed"):
            if getattr(args, key) is None:
                setattr(args, key, getattr(config, key))
        if args.imbalance is None and args.imbalance_ratio is None:  # the two options go together
            args.imbalance, args.imbalance_ratio = config.imbalance, config.imbalance_ratio
        file_params = dict(config.params)
    for key, value in {"method": "erm", "dataset": EMBEDDED_DEFAULT, "data_seed": 0, "seed": 0}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return file_params


def _check_model_logging(args: argparse.Namespace) -> str | None:
    """The tracking URI when ``--log-model``/``--register`` ask for an MLflow run (checked), else None."""
    if not (args.log_model or args.register):
        return None
    from focustune.sweeps.model_package import check_model_name
    from focustune.sweeps.runner import check_tracking_uri

    tracking = args.tracking_uri or _default_tracking_uri()
    check_tracking_uri(tracking)
    if args.register is not None:
        check_model_name(args.register)
    return tracking


def cmd_train(args: argparse.Namespace) -> int:
    from focustune import params
    from focustune.config import resolve
    from focustune.data import load_dataset
    from focustune.data.imbalance import imbalance_profile
    from focustune.methods import get_method
    from focustune.training import Trainer

    file_params = _apply_config_file(args)
    assigned: dict[str, Any] = params.parse_assignments(args.set or [])
    if args.epochs is not None and "epochs" in assigned:
        raise ConfigError("give the epoch count once: --epochs or --set epochs=..., not both")
    overrides = {**file_params, **assigned, **({"epochs": args.epochs} if args.epochs is not None else {})}
    method_cls = get_method(args.method)
    config, method_params = resolve(method_cls, overrides)
    output = Path(args.output_json) if args.output_json else None
    if output is not None and not output.parent.is_dir():
        raise ConfigError(f"--output-json: folder {output.parent} does not exist")
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir")
    tracking = _check_model_logging(args)
    imbalance = imbalance_profile(args.imbalance, args.imbalance_ratio)
    dataset = load_dataset(args.dataset, args.data_dir, size=args.size, imbalance=imbalance, seed=args.data_seed)

    log = (lambda m: None) if args.quiet else _stderr
    trainer = Trainer(method_cls(method_params), config, dataset, seed=args.seed, device=args.device,
                      checkpoint_dir=args.checkpoint_dir, log=log)
    summary = dataset.summary()
    log(f"{method_cls.name} on {dataset.name} (data seed {args.data_seed}"
        f"{f', imbalance {dataset.imbalance}' if dataset.imbalance else ''}): {summary['sizes']} train class "
        f"counts {summary['train_class_counts']}, {config.model}, device {trainer.device} ({trainer.precision})")
    if args.resume and trainer.load_checkpoint(args.checkpoint_dir):
        log(f"resumed from {args.checkpoint_dir} at epoch {trainer.epoch}")
    result = trainer.fit()
    _print_summary(result, config.selection_metric)
    if output is not None:
        _write_json(output, run_json(result))
        print(f"wrote {output}")
    if tracking is not None:
        from focustune.sweeps.model_package import log_train_run

        log_train_run(tracking, args.experiment, trainer, _run_config(args, result.params), args.register, print)
    return 0


def _run_config(args: argparse.Namespace, resolved: dict[str, Any]) -> Any:
    """This ``train`` run as a configuration file's content."""
    from focustune.data.options import DATA_KEYS, DataOptions
    from focustune.run_config import RunConfig

    data = DataOptions(**{key: getattr(args, key) for key in DATA_KEYS}).referenced()
    return RunConfig(**vars(data), method=args.method, params=resolved, seed=args.seed, source={"command": "train"})


def cmd_predict(args: argparse.Namespace) -> int:
    import tempfile

    from focustune.inference import InputBatches, load_bundle, write_predictions

    output = Path(args.output)
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist")
    if not Path(args.input).exists():
        raise ConfigError(f"--input {args.input}: no such file or folder")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="focustune-predict-") as download:
        predictor = load_bundle(_model_folder(args.model, args.tracking_uri, download), device=args.device)
        batches = InputBatches(Path(args.input), predictor.card.channels, predictor.card.image_size, args.batch_size)
        counts = write_predictions(predictor, batches, output, args.batch_size)
    if batches.skipped:
        shown = ", ".join(batches.skipped[:10]) + (" ..." if len(batches.skipped) > 10 else "")
        _stderr(f"skipped {len(batches.skipped)} unreadable file(s): {shown}")
    print(f"model {args.model}: {predictor.card.describe()}; device {predictor.device}")
    source = f" (array {batches.array} of {args.input})" if batches.array else ""
    print(f"predicted {sum(counts.values())} image(s){source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {output}")
    return 0


def _model_folder(model: str, tracking_uri: str | None, download: str) -> Path:
    """The bundle of ``--model``: a local folder (a bundle or an MLflow model) or an MLflow model URI."""
    from focustune.inference import bundle_folder

    if Path(model).expanduser().exists():
        return bundle_folder(Path(model).expanduser())
    if ":" not in model:
        raise ConfigError(f"--model {model}: no such file or folder, and not an MLflow model URI "
                          "(models:/NAME@champion, models:/NAME/VERSION, runs:/RUN_ID/model)")
    from focustune.sweeps.model_package import download_model

    return bundle_folder(download_model(model, tracking_uri or _default_tracking_uri(), download))


def _print_summary(result: Any, metric: str) -> None:
    print(f"\n{result.method} on {result.dataset}, seed {result.seed}: best epoch {result.best_epoch}/"
          f"{result.epochs} ({result.best_phase}) by val {metric}, {result.seconds:.1f} s")
    rows = [{"split": split, **{k: f"{m[k]:.4f}" for k in ("acc", "balanced_acc", "macro_f1", "auc",
                                                            "worst_class_recall")}}
            for split, m in (("val", result.val), ("test", result.test))]
    print(_table(rows, ["split", "acc", "balanced_acc", "macro_f1", "auc", "worst_class_recall"]))
    print("test per-class recall: " + ", ".join(f"{r:.3f}" for r in result.test["per_class_recall"]))


def _run_sweep(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    from focustune.sweeps import runner
    from focustune.sweeps.plan import sweep_spec

    spec = sweep_spec(args, defaults)
    runner.validate(spec)  # everything checked before Ray starts or anything is written
    datasets = runner.load_datasets(spec)
    spaces = runner.study_spaces(spec, list(datasets))
    runner.check_study_names(spec, list(spaces))
    warm_starts = {}
    if spec.warm_start:
        from focustune.sweeps.tracking import warm_start_configs

        warm_starts = warm_start_configs(spec.tracking, spec.warm_start, spaces)
    print(f"sweep of {', '.join(spec.methods)} on {', '.join(datasets)}: {spec.trials} trial(s) x {spec.epochs} "
          f"epoch(s) per study, {spec.seeds} seed re-run(s); storage {spec.storage_path}; "
          f"MLflow {spec.tracking} (experiment {spec.experiment})", flush=True)
    sweep = runner.Sweep(spec, spaces)
    summary = sweep.run(datasets, warm_starts)
    print()
    print(_table(_summary_rows(summary, spec.seeds), ["dataset", "method", "trials", "best_val", "test_bal_acc",
                                                     "test_auc", "test_acc", "seeds"]))
    for key, study in summary.items():
        if study.get("best_config"):
            tuned = {k: v for k, v in study["best_config"].items() if k not in spec.fixed and k != "epochs"}
            print(f"{key} best configuration (by validation): " + ", ".join(f"{k}={v}" for k, v in tuned.items()))
        else:
            print(f"{key}: no search trial finished its full budget ({study.get('failed', 0)} failed, "
                  f"{study.get('stopped_early', 0)} stopped early); no re-runs")
    if not spec.seeds:
        print("test columns: the best search trial's test metrics (no seed re-runs; use --seeds K for a comparison)")
    print(_utilisation_line(sweep.state.data.get("utilisation", {})))
    from focustune.tracking_schema import ui_hint

    print(f"\nCompare the runs in MLflow: {ui_hint(spec.tracking)}")
    return 0


def _utilisation_line(usage: dict[str, Any]) -> str:
    """Busy over available trial-slot time, overall and per node."""
    if usage.get("overall") is None:
        return "utilisation: no trial ran in this session"
    nodes = ", ".join(f"{node[:8]} {share:.0%}" for node, share in usage["nodes"].items() if share is not None)
    return (f"utilisation: {usage['overall']:.1%} of {usage['slots']} trial slot(s) over {usage['span_s']:.0f} s "
            f"(per node: {nodes})")


def _summary_rows(summary: dict[str, dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    import statistics

    def mean_sd(values: list[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {sd:.4f}" if len(values) > 1 else f"{values[0]:.4f}"

    from focustune.tracking_schema import split_study_key

    rows = []
    for key, study in summary.items():
        dataset, method = split_study_key(key)
        reruns = [r for r in study.get("reruns", []) if r.get("ok")]
        if not seeds and study.get("best_trial_test"):
            reruns = [{**study["best_trial_test"], "ok": True}]  # no re-runs: the best search trial itself
        pick = lambda key: [float(r[key]) for r in reruns if r.get(key) is not None]  # noqa: E731
        rows.append({"dataset": dataset, "method": method,
                     "trials": f"{study.get('finished', '?')}/{study.get('total', '?')}",
                     "best_val": "-" if study.get("best_objective") is None else f"{study['best_objective']:.4f}",
                     "test_bal_acc": mean_sd(pick("test_balanced_acc")), "test_auc": mean_sd(pick("test_auc")),
                     "test_acc": mean_sd(pick("test_acc")),
                     "seeds": f"{len(reruns)}/{seeds}" if seeds else "-"})
    return rows


SWEEP_DEFAULTS = {"datasets": None, "trials": 20, "epochs": 30, "seeds": 1, "scheduler": "none",
                  "experiment": "focustune", "data_seed": 0, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0}


def cmd_sweep(args: argparse.Namespace) -> int:
    from focustune.data import EMBEDDED_DEFAULT

    return _run_sweep(args, {**SWEEP_DEFAULTS, "datasets": [EMBEDDED_DEFAULT]})


def cmd_tune(args: argparse.Namespace) -> int:
    from focustune.data import EMBEDDED_DEFAULT

    args.methods, args.space = args.method, [f"{args.method}={args.space}"] if args.space else None
    return _run_sweep(args, {**SWEEP_DEFAULTS, "datasets": [EMBEDDED_DEFAULT], "trials": 40, "seeds": 0,
                             "config_out": "best_config.yaml"})


def cmd_ui(args: argparse.Namespace) -> int:
    from focustune.sweeps.ui import serve

    return serve(args.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}", args.host, args.port)


# ---------------------------------------------------------------- parser

def _add_data_options(cmd: argparse.ArgumentParser) -> None:
    """Where the data comes from and how it is shaped. They stay unset (None) unless given, so that a
    plan or configuration file, or the defaults, can fill them."""
    from focustune.data import EMBEDDED_DEFAULT

    cmd.add_argument("--dataset", help=f"dataset name, MedMNIST-layout .npz, or image folder "
                                       f"(default {EMBEDDED_DEFAULT})")
    cmd.add_argument("--data-dir", help="folder holding MedMNIST .npz files or torchvision's layout "
                                        "(downloaded there if missing)")
    cmd.add_argument("--size", type=int, help="MedMNIST image size (28, 64, 128, 224) or the size image "
                                              "folders are resized to (default 28)")
    cmd.add_argument("--imbalance", metavar="PROFILE", help="subsample the training split: exp:R, linear:R, "
                                                            "log:R, step (LOW), classes=I,J:F")
    cmd.add_argument("--imbalance-ratio", type=float, metavar="R", help="shorthand for --imbalance exp:R")
    cmd.add_argument("--data-seed", type=int,
                     help="seed of the data: splits made while loading and the imbalance subsample "
                          "(the same for train and sweep; default 0)")


def _add_sweep_options(cmd: argparse.ArgumentParser) -> None:
    """Options of ``sweep`` and ``tune``; left unset (None) they come from ``--plan`` or the defaults."""
    _add_data_options(cmd)
    cmd.add_argument("--datasets", help="several datasets, comma-separated: one study per dataset and method")
    cmd.add_argument("--plan", help="YAML file with the sweep's datasets (each with its own options), methods, "
                                    "budget and spaces; options given here win over it")
    cmd.add_argument("--trials", type=int, help="search trials per study (dataset x method)")
    cmd.add_argument("--epochs", type=int, help="epochs of every trial (default 30, the same for every method)")
    cmd.add_argument("--seeds", type=int, help="re-runs of each study's best configuration")
    cmd.add_argument("--scheduler", choices=("none", "asha"), help="asha = early stopping per study")
    cmd.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    cmd.add_argument("--experiment", help="MLflow experiment (and storage folder) name (default focustune)")
    cmd.add_argument("--address", help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto; "
                                       "default $RAY_ADDRESS, else a private local Ray)")
    cmd.add_argument("--storage", help="folder or URI for Tune's experiment state (default ./focustune_runs; "
                                       "on a multi-node cluster use shared storage)")
    cmd.add_argument("--optuna-storage", help="SQLAlchemy URL of the Optuna studies (default: optuna.db beside "
                                              "the sweep state)")
    cmd.add_argument("--warm-start", metavar="EXPERIMENT",
                     help="first try, in each study, the best configurations its method reached in that "
                          "earlier sweep's experiment (any dataset)")
    cmd.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default 1)")
    cmd.add_argument("--gpus-per-trial", type=float, help="fractional GPUs per trial, e.g. 0.25")
    cmd.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    cmd.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    cmd.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="fix a hyperparameter for every trial (repeatable)")
    cmd.add_argument("--register", metavar="NAME", help="register each study's selected model in MLflow's model "
                                                         "registry (several studies: NAME-DATASET-METHOD); the "
                                                         "alias champion moves only to a better model")
    cmd.add_argument("--config-out", metavar="PATH", help="also write the chosen configuration there (tune's "
                                                          "default: best_config.yaml; several studies: "
                                                          "PATH's stem + __DATASET__METHOD)")
    cmd.add_argument("--system-metrics", action="store_const", const=True,
                     help="each trial logs its CPU (and GPU) use and memory per epoch as system/ metrics")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focustune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("datasets", help="list embedded and MedMNIST datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("methods", help="list methods and their hyperparameters").set_defaults(func=cmd_methods)

    train = sub.add_parser("train", help="train one run (no Ray needed)")
    train.add_argument("--config", metavar="FILE", help="a configuration file written by tune/sweep (method, "
                                                        "dataset options, hyperparameters); options given here win")
    train.add_argument("--method", help="registered method (see `focustune methods`; default erm)")
    _add_data_options(train)
    train.add_argument("--epochs", type=int, help="training epochs (same as --set epochs=N)")
    train.add_argument("--seed", type=int, help="run seed (default 0)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a hyperparameter (repeatable)")
    train.add_argument("--output-json", help="write the run's result to this file")
    train.add_argument("--checkpoint-dir", help="save a checkpoint there after every epoch")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's checkpoint")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    train.add_argument("--log-model", action="store_true", help="log the run and its model to MLflow")
    train.add_argument("--register", metavar="NAME", help="register the model (implies --log-model); the alias "
                                                         "champion moves only to a better model")
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    train.add_argument("--experiment", default="focustune", help="MLflow experiment (default focustune)")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="classify new images with a tuned or trained model")
    predict.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, "
                                                        "runs:/RUN_ID/model, or a downloaded model folder")
    predict.add_argument("--input", required=True, help="a folder of images (searched recursively), an .npz "
                                                        "(array `images`, else `test_images`) or one image")
    predict.add_argument("--output", required=True, help="CSV file: input, class, prob_<class> per class")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    predict.add_argument("--batch-size", type=int, default=1024, help="images per forward pass (default 1024)")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    predict.set_defaults(func=cmd_predict)

    sweep = sub.add_parser("sweep", help="compare methods: Optuna search per method under Ray Tune, "
                                         "seed re-runs of the best, everything tracked in MLflow")
    sweep.add_argument("--methods", help="comma-separated methods, e.g. erm,focal,low")
    sweep.add_argument("--space", action="append", metavar="METHOD=FILE", help="a method's own search space file")
    _add_sweep_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    tune = sub.add_parser("tune", help="tune one method on a dataset (e.g. your own)")
    tune.add_argument("--method", required=True)
    tune.add_argument("--space", help="search space file (default: search_spaces/<method>.yaml)")
    _add_sweep_options(tune)
    tune.set_defaults(func=cmd_tune)

    compare = sub.add_parser("compare", help="compare methods from a sweep's MLflow runs: leaderboard, "
                                             "paired significance tests, curves, report")
    from focustune_analysis import cli as compare_cli

    compare_cli.add_arguments(compare)
    compare.set_defaults(func=compare_cli.run)

    ui = sub.add_parser("ui", help="open a sweep's MLflow store in MLflow's UI (runs, datasets, figures)")
    ui.add_argument("--tracking-uri", help="the sweep's MLflow store (default: sqlite:///./mlflow.db)")
    ui.add_argument("--port", type=int, help="port (default 5000, or a free one when 5000 is taken)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except FocusTuneError as exc:
        _stderr(f"focustune: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _stderr("focustune: interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`focustune methods | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
