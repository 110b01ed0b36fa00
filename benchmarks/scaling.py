"""How a sweep's wall time grows with its work: trials N in (4, 8, 16) x concurrency in (1, 2).

Each point is one ``focustune sweep --methods erm --trials N --epochs E --seeds 0 --max-concurrent C
--cpus-per-trial 1`` in a fresh process and temporary folder (own SQLite MLflow store and Tune
storage, private local Ray), timed from start to exit. The points run in a mixed order (not
sorted by N, so drifting machine load does not masquerade as a trend). Per concurrency, a least
squares line wall = fixed + per_trial x N separates the fixed cost (imports, Ray start, MLflow
store, shutdown) from the cost of one more trial; per-trial training time (sum of its
``epoch_seconds``) is shown next to it.

    python benchmarks/scaling.py                         # N 4,8,16 x C 1,2, 3 epochs, breastmnist
    python benchmarks/scaling.py --trials 4,8,16,32 --repeats 2 --fresh-workers
    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import statistics
from typing import Any

import common
import sweeptools


def fit_line(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares y = fixed + slope x; with R^2."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else 0.0
    fixed = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - fixed - slope * x) ** 2 for x, y in points)
    return {"fixed_s": fixed, "per_trial_s": slope, "r2": 1 - residual / total if total else 1.0}


def mixed_order(trials: list[int], concurrencies: list[int]) -> list[tuple[int, int]]:
    """Every (N, C) pair once, ordered so neighbours differ in N (a deterministic shuffle)."""
    pairs = [(n, c) for c in concurrencies for n in trials]
    step = next(s for s in (5, 7, 3, 1) if len(pairs) % s or s == 1)  # coprime with the count
    return [pairs[(i * step) % len(pairs)] for i in range(len(pairs))]


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--trials", default="4,8,16")
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--fresh-workers", action="store_true",
                        help="also run every point with a fresh worker process per trial (worker reuse off)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.concurrency, args.epochs, args.repeats = "1,2", "1,2", 1, 1
    common.require_data(args.data_dir, args.dataset)
    device = common.pick_device(args.device)
    load = common.header("sweep scaling: wall time against trials and concurrency", device)
    trials = [int(x) for x in args.trials.split(",")]
    concurrencies = [int(x) for x in args.concurrency.split(",")]
    variants = ["default"] + (["fresh_workers"] if args.fresh_workers else [])

    points: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for n, c in mixed_order(trials, concurrencies):
            for variant in (variants if repeat % 2 == 0 else variants[::-1]):
                gpus = 1.0 / c if device.startswith("cuda") else 0.0
                run = sweeptools.run_sweep(args.dataset, args.data_dir, n, args.epochs, c, gpus_per_trial=gpus,
                                           variant=variant)
                points.append(run)
                print(f"  N={n:<3} C={c} {variant:<13} wall {run['wall_s']:6.1f} s, trial train median "
                      f"{run['trial_train_s']['median']:.2f} s, overhead median "
                      f"{run['trial_overhead_s']['median']:.2f} s", flush=True)

    rows, fits = [], {}
    for variant in variants:
        for c in concurrencies:
            mine = [p for p in points if p["concurrency"] == c and p["variant"] == variant]
            fit = fit_line([(p["trials"], p["wall_s"]) for p in mine])
            train = statistics.median(t["train_s"] for p in mine for t in p["trial_costs"])
            overhead = statistics.median(t["overhead_s"] for p in mine for t in p["trial_costs"])
            fits[f"{variant}/C={c}"] = {**fit, "median_trial_train_s": train, "median_trial_overhead_s": overhead}
            walls = {n: statistics.median(p["wall_s"] for p in mine if p["trials"] == n) for n in trials}
            rows.append({"variant": variant, "concurrency": c,
                         **{f"wall N={n} s": f"{w:.1f}" for n, w in walls.items()},
                         "fixed s": f"{fit['fixed_s']:.1f}", "per trial s": f"{fit['per_trial_s']:.2f}",
                         "R²": f"{fit['r2']:.3f}", "trial train s (median)": f"{train:.2f}",
                         "trial overhead s (median)": f"{overhead:.2f}"})
    print()
    print(common.table(rows, list(rows[0])))
    for variant in variants:
        if all(f"{variant}/C={c}" in fits for c in (1, 2)):
            one, two = fits[f"{variant}/C=1"], fits[f"{variant}/C=2"]
            print(f"{variant}: a second concurrent trial changes the per-trial cost by "
                  f"{two['per_trial_s'] / one['per_trial_s']:.2f}x (ideal on 2 cores: 0.50x)")
    common.write_result("scaling", args, {
        "settings": {"dataset": args.dataset, "trials": trials, "concurrency": concurrencies, "epochs": args.epochs,
                     "repeats": args.repeats, "cpus_per_trial": 1, "variants": variants},
        "fits": fits, "points": points}, device, load)


if __name__ == "__main__":
    main()
