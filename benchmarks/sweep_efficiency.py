"""A sweep's cost: ``focustune sweep`` (Ray Tune, 2 concurrent trials) against a plain Optuna loop.

Contenders, each a fresh process timed from start to exit (imports and data loading included):

* ``sweep``: ``focustune sweep --methods erm --trials N --epochs E --seeds 0 --max-concurrent 2
  --cpus-per-trial 1`` on a private local Ray, in a temporary folder with its own SQLite MLflow
  store and Tune storage (every trial tracked in MLflow and checkpointed every epoch);
* ``plain``: ``optuna.create_study`` with a seeded TPE sampler over the same search space
  (``search_spaces/erm.yaml``), each trial ``focustune.training.Trainer(...).fit()`` in one
  process with 2 torch threads, returning the best validation score (no tracking, no checkpoints);
* ``plain_1thread``: the same loop with 1 torch thread (on a shared 2-core machine, two OpenMP
  threads stall whenever another process holds a core, which makes the 2-thread loop erratic);
* ``sweep_fresh_workers`` (with ``--fresh-workers``): the sweep with worker reuse off (a fresh
  worker process per trial, Tune's default), to measure what reusing workers saves.

Contenders alternate, ``--repeats`` times (order flipped each repeat); the wall ratio is the median
of per-repeat ratios. Per trial of a sweep: wall from its MLflow run (created when Tune starts the
trial, closed when it completes, by the driver), training time = the sum of its ``epoch_seconds``;
overhead = wall - training (it includes validation, checkpoints, reports and the first epoch's
imports of torch._dynamo, which the first optimiser pulls in). The MLflow run opens only once Tune
has started the trial's worker process, so a worker's start (a fresh Python process importing
torch, scikit-learn and focustune: once per slot with reuse, once per trial without) shows up as a
gap between trials: the slot overhead = (search phase wall x concurrency / N) - mean training time
counts it.
Ray's start and MLflow store creation are a fixed cost per sweep, measured alone in a fresh process.

Memory: peak RSS of the driver and of each trial worker process (sampled from /proc every 0.5 s);
and a zero-copy check: the dataset put in Ray's object store (as the sweep does), read by two
workers through ``focustune.sweeps.trainable.dataset_from_arrays``: the trainer's tensors point into
the object store's shared memory, and the workers' private memory (USS) does not grow with the
dataset's size, while a deliberate copy does.

    python benchmarks/sweep_efficiency.py                       # 12 trials x 3 epochs, breastmnist, 2 repeats
    python benchmarks/sweep_efficiency.py --fresh-workers       # plus the sweep without worker reuse
    python benchmarks/sweep_efficiency.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import sweeptools

TARGET_WALL_RATIO = 0.65
TARGET_OVERHEAD_S = 1.0


# ---------------------------------------------------------------- the plain Optuna loop (a subprocess)

def plain_worker(args: Any) -> None:
    """Run the plain sequential Optuna study and write its timings to ``args.result_file``."""
    started = time.perf_counter()
    import optuna
    import torch

    from focustune.config import resolve
    from focustune.data import load_dataset
    from focustune.methods import get_method
    from focustune.sweeps.search import DefineByRun
    from focustune.spaces import load_space
    from focustune.training import Trainer

    imported = time.perf_counter()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, args.data_dir, download=False)
    method_cls = get_method("erm")
    space = load_space(method_cls, dataset=dataset.name)
    suggest = DefineByRun(space, {"epochs": args.epochs})  # the sweep's own space -> Optuna mapping
    loaded = time.perf_counter()
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        tick = time.perf_counter()
        config, params = resolve(method_cls, suggest(trial))
        trainer = Trainer(method_cls(params), config, dataset, seed=0, device=args.device)
        trainer.fit()
        trials.append({"wall_s": time.perf_counter() - tick, "train_s": sum(r["seconds"] for r in trainer.history)})
        return trainer.best_score[0]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=args.trials)
    Path(args.result_file).write_text(json.dumps({
        "import_s": imported - started, "data_s": loaded - imported, "trials": trials,
        "best_value": study.best_value, "loop_s": time.perf_counter() - loaded}))


def run_plain(trials: int, epochs: int, dataset: str, data_dir: str, threads: int, device: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="focustune_bench_plain_") as folder:
        result_file = Path(folder) / "plain.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--plain-worker", "--trials", str(trials),
                   "--epochs", str(epochs), "--dataset", dataset, "--data-dir", data_dir,
                   "--threads", str(threads), "--result-file", str(result_file), "--device", device]
        logged = sweeptools.run_logged(command, Path(folder))
        out = json.loads(result_file.read_text())
    overheads = [t["wall_s"] - t["train_s"] for t in out["trials"]]
    return {"wall_s": logged["wall_s"], "memory_peak_rss_mb": logged["memory"]["driver_peak_rss_mb"],
            "trial_overhead_s": common.summary(overheads), "trial_train_s": common.summary(
                [t["train_s"] for t in out["trials"]]), **out}


# ---------------------------------------------------------------- zero-copy check

def zero_copy_check(dataset_name: str, data_dir: str, target_mb: float) -> dict[str, Any]:
    """Put a (tiled) dataset in Ray's object store as the sweep does; two workers read it."""
    import ray

    from focustune.data import Split, load_dataset
    from focustune.sweeps.cluster import init_ray
    from focustune.sweeps.trainable import dataset_to_arrays

    dataset = load_dataset(dataset_name, data_dir, download=False)
    size = lambda d: sum(d.split(s).images.numel() + d.split(s).labels.numel() * 8  # noqa: E731
                         for s in ("train", "val", "test"))
    copies = max(1, int(target_mb * 2**20 // size(dataset)))
    dataset.train = Split(dataset.train.images.repeat(copies, 1, 1, 1), dataset.train.labels.repeat(copies))
    init_ray(None)
    try:
        ref = ray.put(dataset_to_arrays(dataset))

        @ray.remote(num_cpus=1)
        def probe(refs: list, copy: bool) -> dict[str, Any]:
            def private_and_rss() -> dict[str, int]:
                fields = {}
                for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
                    key, _, rest = line.partition(":")
                    if rest.split() and rest.split()[0].isdigit():
                        fields[key] = int(rest.split()[0]) * 1024
                return {"rss": fields["Rss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}

            from focustune.config import resolve
            from focustune.methods import get_method
            from focustune.sweeps.trainable import dataset_from_arrays
            from focustune.training import Trainer

            before = private_and_rss()
            data = dataset_from_arrays(ray.get(refs[0]))
            cls = get_method("erm")
            config, params = resolve(cls, {"epochs": 1})
            trainer = Trainer(cls(params), config, data, seed=0, device="cpu")
            images = trainer.data.train.images
            if copy:
                images = images.clone()
            checksum = int(images.sum())  # touch every page
            after = private_and_rss()
            maps = Path("/proc/self/maps").read_text().splitlines()
            pointer = images.data_ptr()
            region = next((line for line in maps if int(line.split()[0].split("-")[0], 16) <= pointer
                           < int(line.split()[0].split("-")[1], 16)), "")
            return {"copy": copy, "uss_growth_mb": (after["uss"] - before["uss"]) / 2**20,
                    "rss_growth_mb": (after["rss"] - before["rss"]) / 2**20,
                    "trainer_uses_stored_memory": images.data_ptr() == data.train.images.data_ptr(),
                    "mapping": " ".join(region.split()[5:]) or "(anonymous)", "checksum": checksum}

        results = ray.get([probe.remote([ref], False), probe.remote([ref], False), probe.remote([ref], True)])
    finally:
        ray.shutdown()
    return {"dataset_mb": size(dataset) / 2**20, "tiled_copies": copies, "workers": results}


# ---------------------------------------------------------------- the benchmark

def describe(run: dict[str, Any]) -> dict[str, Any]:
    """Table cells of one contender's run."""
    if "trial_costs" not in run:  # a plain loop: one process, its trials back to back
        return {"wall s": f"{run['wall_s']:.1f}", "trial overhead s": common.spread(run["trial_overhead_s"], 2),
                "slot overhead s": f"{run['trial_overhead_s']['median']:.2f}",
                "trial train s": common.spread(run["trial_train_s"], 2),
                "driver peak RSS MB": f"{run['memory_peak_rss_mb']:.0f}"}
    memory = run["memory"] or {}
    rss, uss = memory.get("worker_peak_rss_mb"), memory.get("worker_peak_uss_mb")
    return {"wall s": f"{run['wall_s']:.1f}", "trial overhead s": common.spread(run["trial_overhead_s"], 2),
            "slot overhead s": f"{run['slot_overhead_s_per_trial']:.2f}",
            "trial train s": common.spread(run["trial_train_s"], 2),
            "driver peak RSS MB": f"{memory.get('driver_peak_rss_mb', 0):.0f}",
            "worker peak RSS MB": common.spread(rss, 0) if rss else "-",
            "worker peak USS MB": common.spread(uss, 0) if uss else "-",
            "worker processes": memory.get("worker_processes", "-")}


def ratios_to(runs: dict[str, list[dict[str, Any]]], reference: str) -> dict[str, dict[str, float]]:
    """Per contender, the summary of its per-repeat wall ratios to ``reference``."""
    return {name: common.summary([r["wall_s"] / p["wall_s"] for r, p in zip(values, runs[reference])])
            for name, values in runs.items()}


def print_runs(runs: dict[str, list[dict[str, Any]]]) -> None:
    references = [r for r in ("plain", "plain_1thread") if r in runs]
    rows = []
    for name, values in runs.items():
        for i, run in enumerate(values):
            row = {"contender": name, "repeat": i + 1, **describe(run)}
            for reference in references:
                row[f"wall / {reference}"] = f"{run['wall_s'] / runs[reference][i]['wall_s']:.2f}"
            rows.append(row)
    print(common.table(rows, ["contender", "repeat", "wall s", *(f"wall / {r}" for r in references),
                              "trial overhead s", "slot overhead s", "trial train s", "driver peak RSS MB",
                              "worker peak RSS MB", "worker peak USS MB", "worker processes"]))


def print_zero_copy(zero_copy: dict[str, Any]) -> None:
    print(f"\nzero-copy check: dataset tiled to {zero_copy['dataset_mb']:.0f} MB, read by 3 workers")
    print(common.table([{"worker": i + 1, "deliberate copy": w["copy"], "USS growth MB": f"{w['uss_growth_mb']:.1f}",
                         "RSS growth MB": f"{w['rss_growth_mb']:.1f}",
                         "trainer tensor = stored memory": w["trainer_uses_stored_memory"],
                         "mapping of the tensor": w["mapping"] if not w["copy"] else "(copy)"}
                        for i, w in enumerate(zero_copy["workers"])],
                       ["worker", "deliberate copy", "USS growth MB", "RSS growth MB",
                        "trainer tensor = stored memory", "mapping of the tensor"]))


def overheads(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-trial overhead of a sweep contender: from its MLflow runs, per slot, inside the trial."""
    return {"mlflow_run": common.summary([c["overhead_s"] for r in runs for c in r["trial_costs"]
                                          if c["overhead_s"] is not None]),
            "slot": statistics.median(r["slot_overhead_s_per_trial"] for r in runs),
            "inside_trial": statistics.median(r["in_trial_overhead_s"]["median"] for r in runs)}


def run_contenders(args: Any, device: str) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, float]]]:
    """Every contender once per repeat, order flipped each repeat; and the fixed costs once per repeat."""
    gpus_per_trial = 1.0 / args.concurrency if device.startswith("cuda") else 0.0
    contenders = (["plain"] + (["plain_1thread"] if args.threads != 1 else []) + ["sweep"]
                  + (["sweep_fresh_workers"] if args.fresh_workers else []))
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    fixed = []
    for repeat in range(args.repeats):
        for name in contenders if repeat % 2 == 0 else contenders[::-1]:
            if name.startswith("plain"):
                threads = 1 if name == "plain_1thread" else args.threads
                run = run_plain(args.trials, args.epochs, args.dataset, args.data_dir, threads, device)
            else:
                variant = "fresh_workers" if name.endswith("fresh_workers") else "default"
                run = sweeptools.run_sweep(args.dataset, args.data_dir, args.trials, args.epochs, args.concurrency,
                                           gpus_per_trial=gpus_per_trial, variant=variant)
            runs[name].append(run)
            print(f"  repeat {repeat + 1}/{args.repeats} {name:<20} wall {run['wall_s']:6.1f} s, trial overhead "
                  f"median {run['trial_overhead_s']['median']:.2f} s", flush=True)
        fixed.append(sweeptools.fixed_costs())
    return runs, fixed


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the plain loop")
    parser.add_argument("--fresh-workers", action="store_true",
                        help="also run the sweep with a fresh worker process per trial (worker reuse off)")
    parser.add_argument("--zero-copy-mb", type=float, default=100.0,
                        help="size the dataset is tiled to for the zero-copy check (0 = skip)")
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        return plain_worker(args)
    if args.quick:
        args.trials, args.epochs, args.repeats, args.zero_copy_mb = 2, 1, 1, min(args.zero_copy_mb, 20.0)
    common.require_data(args.data_dir, args.dataset)
    device = common.pick_device(args.device)
    load = common.header("sweep efficiency: focustune sweep (Ray Tune) vs a plain sequential Optuna loop", device)

    runs, fixed = run_contenders(args, device)
    print()
    print_runs(runs)
    fixed_summary = {k: common.summary([f[k] for f in fixed]) for k in fixed[0]}
    timeline = {k: common.summary([r["timeline_s"][k] for r in runs["sweep"]]) for k in runs["sweep"][0]["timeline_s"]}
    costs = {name: overheads(values) for name, values in runs.items() if name.startswith("sweep")}
    print("\nsweep timeline (median s): " + ", ".join(f"{k} {v['median']:.1f}" for k, v in timeline.items()))
    print("fixed costs measured alone (median s): "
          + ", ".join(f"{k} {v['median']:.2f}" for k, v in fixed_summary.items()))
    for name, cost in costs.items():
        print(f"{name}: overhead per trial, median: {cost['mlflow_run']['median']:.2f} s (MLflow run wall - training),"
              f" {cost['inside_trial']:.2f} s of it inside the trial function, {cost['slot']:.2f} s per trial slot")
    zero_copy = zero_copy_check(args.dataset, args.data_dir, args.zero_copy_mb) if args.zero_copy_mb > 0 else None
    if zero_copy:
        print_zero_copy(zero_copy)

    ratios = {reference: ratios_to(runs, reference) for reference in ("plain", "plain_1thread") if reference in runs}
    for reference, values in ratios.items():
        print(f"\nwall against {reference}: " + ", ".join(
            f"{name} {v['median']:.2f}x" for name, v in values.items() if name.startswith("sweep")))
    sweep_ratio = ratios["plain"]["sweep"]["median"]
    overhead = max(costs["sweep"]["mlflow_run"]["median"], costs["sweep"]["slot"])
    print(f"targets: sweep wall <= {TARGET_WALL_RATIO}x plain: {sweep_ratio:.2f}x -> "
          f"{'reached' if sweep_ratio <= TARGET_WALL_RATIO else 'MISSED'}; Tune overhead per trial <= "
          f"{TARGET_OVERHEAD_S:g} s (by MLflow run and by slot): {overhead:.2f} s -> "
          f"{'reached' if overhead <= TARGET_OVERHEAD_S else 'MISSED'}")
    common.write_result("sweep_efficiency", args, {
        "settings": {"dataset": args.dataset, "trials": args.trials, "epochs": args.epochs, "repeats": args.repeats,
                     "concurrency": args.concurrency, "cpus_per_trial": 1, "plain_threads": args.threads},
        "wall_ratios": ratios, "trial_overheads_s": costs, "sweep_timeline_s": timeline,
        "fixed_costs_s": fixed_summary, "zero_copy": zero_copy, "runs": runs,
        "targets": {"wall_ratio": TARGET_WALL_RATIO, "wall_ratio_reached": sweep_ratio <= TARGET_WALL_RATIO,
                    "overhead_s": TARGET_OVERHEAD_S, "overhead_reached": overhead <= TARGET_OVERHEAD_S},
    }, device, load)


if __name__ == "__main__":
    main()
