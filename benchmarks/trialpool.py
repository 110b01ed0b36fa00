"""Trials packed on one device as separate processes, without Ray (the GPU machine has none).

Each worker process is what a Tune trial worker is with ``--gpus-per-trial 1/C``: one process that
serves trial after trial (``Trainer.fit``, no checkpoints), with its GPU memory bounded to its share
(``torch.cuda.set_per_process_memory_fraction``) and ``cores / C`` torch threads. Workers import,
load PneumoniaMNIST and warm up (one tiny fit) before a common start signal, so the measured wall
time covers trials only; the start-up is reported separately.

    python benchmarks/trialpool.py --worker '<json plan>'     # (internal) one worker process
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
READY, GO = "READY", "GO"
#: The sweep's search spaces draw batch_size from these; trial i uses BATCH_SIZES[i % 3].
BATCH_SIZES = (64, 128, 256)


def trial_specs(methods: list[str], trials: int, epochs: int) -> list[dict[str, Any]]:
    """``trials`` trial settings per method (seed = trial index, batch size cycling like the spaces)."""
    return [{"method": m, "seed": i, "overrides": {"epochs": epochs, "batch_size": BATCH_SIZES[i % 3]}}
            for m in methods for i in range(trials)]


def run_pool(specs: list[dict[str, Any]], concurrency: int, data_dir: str, device: str,
             train_limit: int | None = None) -> dict[str, Any]:
    """Run ``specs`` on ``concurrency`` worker processes (trial j on worker j mod C); time them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    plans = [{"specs": specs[w::concurrency], "data_dir": data_dir, "device": device, "train_limit": train_limit,
              "memory_fraction": 1.0 / concurrency, "threads": max(1, cores // concurrency)}
             for w in range(concurrency)]
    started = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, str(HERE / "trialpool.py"), "--worker", json.dumps(plan)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for plan in plans]
    for worker in workers:  # every worker ready (imports, data, CUDA context, warm-up) before the clock starts
        _read_until(worker, READY)
    startup = time.perf_counter() - started
    tick = time.perf_counter()
    for worker in workers:
        worker.stdin.write(GO + "\n")
        worker.stdin.flush()
    reports = [json.loads(_read_until(worker, "{")) for worker in workers]
    wall = time.perf_counter() - tick
    if any(worker.wait() != 0 for worker in workers):
        raise RuntimeError("a worker failed")
    trials = [t for r in reports for t in r["trials"]]
    return {"concurrency": concurrency, "trials": len(trials), "wall_s": wall, "startup_s": startup,
            "trials_per_hour": len(trials) / wall * 3600, "per_trial": trials,
            "peak_memory_mb": [r["peak_memory_mb"] for r in reports]}


def _read_until(process: subprocess.Popen, start: str) -> str:
    """The first line of ``process``'s output that starts with ``start`` (other lines pass to stderr)."""
    for line in process.stdout:
        if line.startswith(start):
            return line.strip()
        print(line, end="", file=sys.stderr)
    raise RuntimeError(f"a worker ended (exit {process.wait()}) before saying {start!r}")


def worker(plan: dict[str, Any]) -> None:
    """One worker: set up, say READY, wait for GO, run its trials, print a JSON report."""
    sys.path.insert(0, str(HERE))
    import common  # puts the checkout's platform/ on the path
    import torch

    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.training import Trainer

    torch.set_num_threads(plan["threads"])
    if plan["device"].startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(plan["memory_fraction"])
    dataset = common.load_pneumonia(plan["data_dir"], plan["train_limit"])

    def fit(spec: dict[str, Any]) -> dict[str, Any]:
        cls = get_method(spec["method"])
        config, params = resolve(cls, spec["overrides"])
        tick = time.perf_counter()
        result = Trainer(cls(params), config, dataset, seed=spec["seed"], device=plan["device"]).fit()
        diagnostics = result.history[-1].get("method") or {}
        return {"method": spec["method"], "seed": spec["seed"], "batch_size": config.batch_size,
                "epochs": config.epochs, "seconds": time.perf_counter() - tick,
                "gan_seconds": diagnostics.get("gan_seconds", 0.0),  # mdgan: per run, not per epoch
                "test_balanced_acc": result.test["balanced_acc"]}

    for name in sorted({s["method"] for s in plan["specs"]}):  # warm-up: CUDA context, cuDNN, lazy imports
        fit({"method": name, "seed": 0, "overrides": {"epochs": 2, "gan_steps": 2}
             if name == "mdgan" else {"epochs": 1}})
    print(READY, flush=True)
    if sys.stdin.readline().strip() != GO:
        raise SystemExit(1)
    trials = [fit(spec) for spec in plan["specs"]]
    peak = torch.cuda.max_memory_allocated() / 2**20 if plan["device"].startswith("cuda") else None
    print(json.dumps({"trials": trials, "peak_memory_mb": peak}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        print(__doc__)
