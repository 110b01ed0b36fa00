"""Test metrics after every epoch, for claims about the epochs to a *test* accuracy (learn2mix).

A run of such a claim is the protocol's ``focustune train`` command line, run through the Python API
so that the trainer's per-epoch callback can evaluate the test split after each epoch. The callback
runs after the epoch's validation and selection and changes nothing the run computes (the history,
``val``, the selected epoch and its ``test`` are those of the plain command); its values are kept in
the run's record under ``test_monitor`` only, labelled, and no selection ever reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: The record's key of the per-epoch test metrics, and the label stored with them.
TEST_MONITOR = "test_monitor"
NOTE = ("test metrics after every epoch, recorded by benchmarks/reproduce for the epochs to a test "
        "accuracy; never used for selection (the selected epoch comes from val)")
#: The options of ``focustune train`` a monitored run understands (what the protocols emit).
MONITORED_OPTIONS = {"command", "method", "dataset", "data_dir", "size", "imbalance", "imbalance_ratio", "data_seed",
                     "epochs", "seed", "set", "device", "quiet", "func", "experiment"}


class EpochTestMonitor:
    """Trainer callback: the test split's accuracy and balanced accuracy after every epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        metrics = trainer.evaluate(trainer.data.test)
        self.epochs.append({"epoch": record["epoch"], "acc": metrics["acc"], "balanced_acc": metrics["balanced_acc"]})


def monitored_record(argv: list[str]) -> dict[str, Any]:
    """The ``--output-json`` record of ``focustune train ARGV``, plus its per-epoch test metrics."""
    from focustune import params
    from focustune.cli import build_parser
    from focustune.cli.train import run_json
    from focustune.config import resolve
    from focustune.data.options import DATA_KEYS, DataOptions
    from focustune.methods import get_method
    from focustune.training import Trainer

    args = build_parser().parse_args(argv)
    given = {key for key, value in vars(args).items() if value not in (None, False)}
    assert args.command == "train" and given <= MONITORED_OPTIONS, f"not a monitored run: {sorted(given)}"
    overrides = {**params.parse_assignments(args.set or []), **({"epochs": args.epochs} if args.epochs else {})}
    method_cls = get_method(args.method or "erm")
    config, method_params = resolve(method_cls, overrides)
    data = DataOptions(**{key: getattr(args, key) for key in DATA_KEYS if getattr(args, key) is not None}).load()
    monitor = EpochTestMonitor()
    trainer = Trainer(method_cls(method_params), config, data, seed=args.seed or 0, device=args.device,
                      callback=monitor)
    record = run_json(trainer.fit())
    return {**record, TEST_MONITOR: {"note": NOTE, "epochs": monitor.epochs}}


def train_monitored(argv: list[str], output: Path) -> int:
    """Run ``focustune train ARGV`` with the test monitor and write its record to ``output``; the exit
    status ``focustune train`` would give (a user error: its message and code)."""
    from focustune.errors import FocusTuneError
    from focustune.files import write_atomic

    try:
        record = monitored_record(argv)
    except FocusTuneError as exc:
        print(f"focustune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_atomic(output, json.dumps(record))
    return 0
