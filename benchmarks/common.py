"""Shared pieces of the benchmark scripts: hardware description, data location, statistics, output.

The scripts are run directly (``python benchmarks/NAME.py``); Python puts this folder on the path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "medmnist"

sys.path.insert(0, str(REPO_ROOT / "platform"))  # a checkout works without the editable install


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run (seconds), numbers not meaningful")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="folder with the MedMNIST .npz files (default ../shared/data/medmnist)")
    parser.add_argument("--output", help="JSON result path (default benchmarks/results/<name>.json; "
                                         "--quick: <tmp>/focustune_bench_quick/<name>.json)")
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """``--train-limit`` and ``--threads``, shared by the benchmarks that train on PneumoniaMNIST."""
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_pneumonia(data_dir: str, train_limit: int | None) -> Any:
    """PneumoniaMNIST from ``data_dir``, its training split cut to ``train_limit`` samples when given."""
    import torch

    from focustune.data import load_dataset

    dataset = load_dataset("pneumoniamnist", data_dir, download=False)
    if train_limit:
        dataset.train = dataset.train.subset(torch.arange(min(train_limit, len(dataset.train))))
    return dataset


def require_data(data_dir: str, *flags: str) -> Path:
    """The data folder, or exit(0) with a clear message when a needed file is missing."""
    root = Path(data_dir).expanduser()
    missing = [f for f in flags if not (root / f"{f}.npz").is_file()]
    if missing:
        print(f"SKIPPED: {', '.join(f + '.npz' for f in missing)} not found in {root}; "
              f"pass --data-dir pointing at the MedMNIST files", file=sys.stderr)
        raise SystemExit(0)
    return root


def pick_device(preference: str | None) -> str:
    import torch

    return preference or ("cuda" if torch.cuda.is_available() else "cpu")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on (versions of the libraries that matter included)."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "platform": platform.platform(), "device": device or "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in ("ray", "optuna", "mlflow", "numpy", "cvxopt", "qpsolvers", "torchvision", "medmnist"):
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):  # not installed or no version attribute
            pass
    return info


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max, and the inter-quartile range when there are enough values)."""
    values = sorted(values)
    out = {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values)}
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out.update(q1=q[0], q3=q[2])
    return out


def spread(stats: dict[str, float], digits: int = 2, unit: str = "") -> str:
    """``median [min–max]`` for a table cell."""
    return (f"{stats['median']:.{digits}f}{unit} [{stats['min']:.{digits}f}–{stats['max']:.{digits}f}]")


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table (it prints readably and pastes into the README unchanged)."""
    rows = list(rows)
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(row) for row in cells)])


def write_result(name: str, args: argparse.Namespace, payload: dict[str, Any], device: str | None = None,
                 load_before: list[float] | None = None) -> Path:
    """Write ``payload`` with the date, command, hardware and machine load to the results folder."""
    # smoke runs (--quick) stay out of the results folder
    folder = Path(tempfile.gettempdir()) / "focustune_bench_quick" if args.quick else RESULTS_DIR
    path = Path(args.output) if args.output else folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]), "quick": bool(args.quick),
        "hardware": hardware(device), "load_average_before": load_before, "load_average_after": load_average(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nwritten {path}")
    return path


def header(title: str, device: str | None = None) -> list[float]:
    """Print what runs where; return the load average at the start."""
    hw = hardware(device)
    load = load_average()
    print(f"{title}\n{hw['cpu']}, {hw['cores_usable']} usable core(s), torch {hw['torch']} with "
          f"{hw['torch_threads']} thread(s), device {hw['device']}"
          f"{' (' + hw['gpu'] + ')' if hw['gpu'] and str(device).startswith('cuda') else ''}; "
          f"load average {load}")
    return load
