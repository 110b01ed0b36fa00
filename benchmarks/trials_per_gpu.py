"""Trials per hour of one device with 1, 2, 4, ... concurrent small-CNN trials (separate processes).

Each concurrency level runs ``--trials-per-worker`` erm trials (small CNN, PneumoniaMNIST,
``--epochs`` epochs, batch size cycling 64/128/256 as the search spaces do) on every one of C
worker processes (``benchmarks/trialpool.py``: GPU memory bounded to 1/C, cores/C threads, as
``--gpus-per-trial 1/C`` gives a Tune trial). Wall time runs from a common start signal after every
worker has started and warmed up. Goal on a GPU: 8 concurrent >= 4x the trials/hour of 1.

    python benchmarks/trials_per_gpu.py                        # 1,2,4,8,16 workers, 4 trials each, 5 epochs
    python benchmarks/trials_per_gpu.py --concurrency 1,8 --trials-per-worker 2
    python benchmarks/trials_per_gpu.py --quick
"""

from __future__ import annotations

import common
import trialpool

GOAL_CONCURRENCY, GOAL_RATIO = 8, 4.0


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated worker counts")
    parser.add_argument("--trials-per-worker", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.trials_per_worker, args.epochs = "1,2", 1, 1
        args.train_limit = args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    device = common.pick_device(args.device)
    load = common.header("trials per hour of one device, concurrent trial processes", device)

    rows = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        specs = trialpool.trial_specs(["erm"], args.trials_per_worker * concurrency, args.epochs)
        measured = trialpool.run_pool(specs, concurrency, args.data_dir, device, args.train_limit)
        rows.append(measured)
        print(f"  {concurrency} worker(s): {measured['trials']} trials in {measured['wall_s']:.1f} s "
              f"-> {measured['trials_per_hour']:,.0f} trials/h (start-up {measured['startup_s']:.1f} s)", flush=True)
    single = next((r for r in rows if r["concurrency"] == 1), None)
    for r in rows:
        r["ratio_to_1"] = r["trials_per_hour"] / single["trials_per_hour"] if single else None
        seconds = [t["seconds"] for t in r["per_trial"]]
        r["trial_seconds"] = common.summary(seconds)
    print()
    print(common.table([{"concurrent trials": r["concurrency"], "trials": r["trials"], "wall s": f"{r['wall_s']:.1f}",
                         "trials/hour": f"{r['trials_per_hour']:,.0f}",
                         "vs 1": f"{r['ratio_to_1']:.2f}x" if r["ratio_to_1"] else "",
                         "trial s": common.spread(r["trial_seconds"], 2),
                         "peak GPU MB per worker": max(r["peak_memory_mb"]) if r["peak_memory_mb"][0] else ""}
                        for r in rows],
                       ["concurrent trials", "trials", "wall s", "trials/hour", "vs 1", "trial s",
                        "peak GPU MB per worker"]))
    goal = next((r for r in rows if r["concurrency"] == GOAL_CONCURRENCY), None)
    if goal and single:
        print(f"\ngoal: {GOAL_CONCURRENCY} concurrent >= {GOAL_RATIO:g}x the trials/hour of 1: "
              f"{goal['ratio_to_1']:.2f}x -> {'reached' if goal['ratio_to_1'] >= GOAL_RATIO else 'MISSED'}")
    common.write_result("trials_per_gpu", args, {
        "settings": {"method": "erm", "model": "small_cnn", "dataset": "pneumoniamnist", "epochs": args.epochs,
                     "trials_per_worker": args.trials_per_worker, "train_limit": args.train_limit,
                     "batch_sizes": trialpool.BATCH_SIZES},
        "rows": rows}, device, load)


if __name__ == "__main__":
    main()
