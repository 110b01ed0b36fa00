"""A benchmark sweep at cluster scale, simulated: the real scheduling code, simulated trials.

The sweep's own searcher (:class:`MultiStudySearch`, real Optuna TPE studies in a SQLite file) and
early stopping (:class:`PerStudyASHA`) decide which trial starts in a free slot and which trial
stops; only training is simulated: each trial's epochs take lognormal random times (scaled per
dataset and method), a few trials fail, scores follow a noisy learning curve. Both orders run on
the same simulated trials: all studies at once (today) and one study at a time (before).

    python benchmarks/sweep_simulation.py            # 64 slots, 6 datasets x 8 methods x 20 trials x 3 seeds
    python benchmarks/sweep_simulation.py --quick
"""

from __future__ import annotations

import heapq
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import common

from focustune.methods import get_method, method_names
from focustune.spaces import load_space
from focustune.sweeps.preflight import study_grace
from focustune.sweeps.schedulers import PerStudyASHA
from focustune.sweeps.search import DefineByRun, MultiStudySearch, study_queue
from focustune.sweeps.studies import Interval, utilisation
from focustune.records import FULL_BUDGET, MECHANISM_EPOCH, OBJECTIVE, SEED_KEY, STUDY_KEY
from focustune.tracking_schema import split_study_key, study_key
from ray.tune.schedulers import TrialScheduler

#: Relative epoch cost per method (mdgan: SAM's two passes plus its GAN training spread over epochs).
METHOD_COST = {"mdgan": 2.5, "low": 1.05, "learn2mix": 1.05, "imet": 1.0}


@dataclass
class Trial:
    """A simulated trial: its per-epoch seconds, quality, the epoch it fails at (if it does)."""

    trial_id: str
    config: dict[str, Any]
    epoch_s: float
    quality: float
    fails_at: int | None
    epoch: int = 0
    started: float = 0.0


def make_trial(trial_id: str, config: dict, args: Any, rng: random.Random, dataset_cost: dict[str, float]) -> Trial:
    dataset, method = split_study_key(config[STUDY_KEY])
    base = args.epoch_s * dataset_cost[dataset] * METHOD_COST.get(method, 1.0)
    fails = rng.random() < args.failure_rate
    return Trial(trial_id, config, base * rng.lognormvariate(0, args.sigma), rng.uniform(0.5, 0.95),
                 rng.randint(1, args.epochs) if fails else None)


def score(trial: Trial, rng: random.Random) -> float:
    """A noisy learning curve rising to the trial's quality."""
    return trial.quality * (1 - math.exp(-trial.epoch / 4)) + rng.gauss(0, 0.01)


def simulate(args: Any, one_at_a_time: bool, storage: str) -> dict[str, Any]:
    """Run the whole sweep in simulated time; returns wall time, utilisation and trial counts."""
    rng = random.Random(args.seed)
    datasets = [f"dataset{i}" for i in range(1, args.datasets + 1)]
    dataset_cost = {d: rng.uniform(0.5, 2.0) for d in datasets}
    methods = method_names()[: args.methods]
    keys = [study_key(d, m) for d in datasets for m in methods]
    spaces = {k: DefineByRun(load_space(get_method(split_study_key(k)[1])), {"epochs": args.epochs, SEED_KEY: 0})
              for k in keys}
    search = MultiStudySearch(spaces, study_queue(keys, args.trials, args.seeds, one_at_a_time), storage, 0)
    scheduler = PerStudyASHA({k: study_grace(split_study_key(k)[1], {"epochs": args.epochs}) for k in keys},
                             max_t=args.epochs)
    mechanism = {m: study_grace(m, {"epochs": args.epochs}) for m in methods}
    now, free, events, intervals, counts, serial = 0.0, args.slots, [], [], {"done": 0, "stopped": 0, "failed": 0}, 0
    finished = False
    while True:
        while free and not finished:  # Tune asks the searcher whenever a slot is free
            trial_id = f"t{serial}"
            config = search.suggest(trial_id)
            if config == MultiStudySearch.FINISHED:
                finished = True
            if not isinstance(config, dict):
                break
            serial += 1
            trial = make_trial(trial_id, config, args, rng, dataset_cost)
            trial.started = now + args.start_s
            free -= 1
            scheduler.on_trial_add(None, SimpleNamespace(trial_id=trial_id, config=config))
            heapq.heappush(events, (trial.started + trial.epoch_s, serial, trial))
        if not events:
            break
        now, _, trial = heapq.heappop(events)
        trial.epoch += 1
        handle = SimpleNamespace(trial_id=trial.trial_id, config=trial.config)
        method = split_study_key(trial.config[STUDY_KEY])[1]
        result = {"epoch": trial.epoch, OBJECTIVE: score(trial, rng), MECHANISM_EPOCH: mechanism[method],
                  "best_val_balanced_acc": trial.quality}
        outcome = None
        if trial.fails_at == trial.epoch:
            outcome, error = "failed", True
        elif trial.epoch == args.epochs:
            outcome, error = "done", False
            result[FULL_BUDGET] = True
        elif scheduler.on_trial_result(None, handle, result) == TrialScheduler.STOP:
            outcome, error = "stopped", False
        if outcome is None:
            heapq.heappush(events, (now + trial.epoch_s, serial + len(events), trial))
            continue
        scheduler.on_trial_complete(None, handle, result)
        search.on_trial_complete(trial.trial_id, result, error=error)
        counts[outcome] += 1
        intervals.append(Interval("node", trial.started, now))
        free += 1
    usage = utilisation(intervals, {"node": args.slots})
    return {"order": "one study at a time" if one_at_a_time else "all studies at once", "wall_s": usage["span_s"],
            "utilisation": usage["overall"], "trials": len(intervals), **counts}


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--datasets", type=int, default=6)
    parser.add_argument("--methods", type=int, default=8, help="the first N registered methods")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epoch-s", type=float, default=10.0, help="median seconds of an epoch (scaled per dataset)")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal spread of a trial's epoch time")
    parser.add_argument("--failure-rate", type=float, default=0.03)
    parser.add_argument("--start-s", type=float, default=0.2, help="seconds to start a trial in a free slot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.methods, args.trials, args.seeds, args.slots = 2, 3, 4, 2, 8
    common.header("Benchmark sweep, simulated: all studies at once vs one study at a time")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for one_at_a_time in (False, True):
            started = time.perf_counter()
            row = simulate(args, one_at_a_time, f"sqlite:///{Path(folder) / f'optuna{int(one_at_a_time)}.db'}")
            row["scheduling_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
    together, sequential = rows
    for row in rows:
        row["wall"] = f"{row['wall_s'] / 3600:.2f} h"
        row["util"] = f"{row['utilisation']:.1%}"
    print(common.table(rows, ["order", "wall", "util", "trials", "done", "stopped", "failed", "scheduling_s"]))
    ratio = sequential["wall_s"] / together["wall_s"]
    print(f"\n{args.slots} slots, {args.datasets} datasets x {args.methods} methods x {args.trials} trials x "
          f"{args.seeds} seeds, {args.epochs} epochs: all at once is **{ratio:.2f}x** shorter "
          f"(target >= 2x); utilisation {together['utilisation']:.1%} vs {sequential['utilisation']:.1%}")
    common.write_result("sweep_simulation", args, {"rows": rows, "speedup": ratio})


if __name__ == "__main__":
    main()
