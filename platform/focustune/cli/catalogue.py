"""``focustune datasets`` and ``focustune methods``: what can be trained, and with which settings."""

from __future__ import annotations

import argparse
from typing import Any

from focustune.text_table import text_table


def datasets(args: argparse.Namespace) -> int:
    from focustune.data import list_datasets
    from focustune.data.imbalance import PROFILE_SYNTAX

    print(text_table(["name", "task", "classes", "train", "val", "test", "source"], list_datasets()))
    print("\nAlso accepted as --dataset: a MedMNIST-layout .npz file, or a folder with one sub-folder "
          "of images per class (optionally under train/ val/ test/).")
    print(f"Imbalance profiles (--imbalance, training split only): {PROFILE_SYNTAX}; "
          "--imbalance-ratio R = exp:R.")
    return 0


def methods(args: argparse.Namespace) -> int:
    from focustune import params
    from focustune.config import TrainConfig
    from focustune.methods import get_method, method_names

    for name in method_names():
        cls = get_method(name)
        print(f"{name}: {cls.summary}")
        rows = params.describe(cls.Params)
        _print_hyperparameters(rows)
        if not rows:
            print("    (no hyperparameters of its own)")
        if cls.defaults:
            print("    shared defaults: " + ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()))
    print("\nshared (every method):")
    _print_hyperparameters(params.describe(TrainConfig))
    return 0


def _print_hyperparameters(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"    {row['name']} ({row['type']}) = {row['default']!r}  {row['range']}  {row['help']}")
