"""The ``focustune`` command line: the table of commands, the parser built from it, and ``main``
(errors of the user's input become one message and an exit status).

One module per command family holds each command's options and handler; the options several
commands share are declared once in ``focustune.cli.options``. Start-up imports no Ray, Optuna or
MLflow: the handlers import the tuning layer when they run."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from focustune.cli import catalogue, compare, predict, sweep, train, ui
from focustune.credentials import masked_text
from focustune.cli.console import stderr
from focustune.errors import FocusTuneError

DESCRIPTION = "Train, tune and compare training methods on small imbalanced image datasets."


@dataclass(frozen=True)
class Command:
    """A sub-command: its one-line help, what declares its options, and what runs it (exit status)."""

    name: str
    help: str
    add_options: Callable[[argparse.ArgumentParser], None] | None
    handler: Callable[[argparse.Namespace], int]


COMMANDS = (
    Command("datasets", "list embedded and MedMNIST datasets", None, catalogue.datasets),
    Command("methods", "list methods and their hyperparameters", None, catalogue.methods),
    Command("train", "train one run (no Ray needed)", train.add_options, train.run),
    Command("predict", "classify new images with a tuned or trained model", predict.add_options, predict.run),
    Command("sweep", "compare methods: Optuna search per method under Ray Tune, seed re-runs of the best, "
                     "everything tracked in MLflow", sweep.add_sweep_options, sweep.run_sweep),
    Command("tune", "tune one method on a dataset (e.g. your own)", sweep.add_tune_options, sweep.run_tune),
    Command("compare", "compare methods from a sweep's MLflow runs: leaderboard, paired significance tests, "
                       "curves, report", compare.add_options, compare.run),
    Command("ui", "open a sweep's MLflow store in MLflow's UI (runs, datasets, figures)", ui.add_options, ui.run),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focustune", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        cmd = sub.add_parser(command.name, help=command.help)
        if command.add_options is not None:
            command.add_options(cmd)
        cmd.set_defaults(func=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except FocusTuneError as exc:
        stderr(f"focustune: error: {masked_text(str(exc))}")  # no password of a URI shown
        return exc.exit_code
    except KeyboardInterrupt:
        stderr("focustune: interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`focustune methods | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning as one line, ``focustune: warning: ...`` (focustune's own) or with its category (others')."""
    where = "" if category is UserWarning and "focustune" in filename else f" ({category.__name__})"
    stderr(f"focustune: warning: {message}{where}")
