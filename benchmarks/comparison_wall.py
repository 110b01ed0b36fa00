"""Wall time of a whole comparison on one device: 6 methods x 20 trials x 20 epochs on PneumoniaMNIST.

The trials (method defaults, seeds 0..T-1, batch size cycling 64/128/256 as the search spaces do)
run on C concurrent worker processes (``benchmarks/trialpool.py``, as ``--gpus-per-trial 1/C``),
trial j on worker j mod C, and the wall time from the common start is measured. It leaves out
what a real sweep adds (Ray, Optuna, MLflow: about 17 s fixed and 0.2 s per trial on the CPU
machine, benchmarks/README.md) and the seed re-runs. With fewer trials or epochs (``--quick``,
``--trials``, ``--epochs``) it prints an estimate for the full size: the measured wall scaled
linearly in trials and, for the per-epoch part of each trial (all but mdgan's GAN training), in epochs.
Goal on an H100-class GPU: <= 2 minutes.

    python benchmarks/comparison_wall.py                       # 6 x 20 x 20 on 8 workers
    python benchmarks/comparison_wall.py --concurrency 16 --trials 10 --epochs 5
    python benchmarks/comparison_wall.py --quick
"""

from __future__ import annotations

import common
import trialpool

METHODS = "erm,focal,low,learn2mix,imet,mdgan"
FULL_TRIALS, FULL_EPOCHS, GOAL_SECONDS = 20, 20, 120.0


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--trials", type=int, default=FULL_TRIALS, help="trials per method")
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS)
    parser.add_argument("--concurrency", type=int, default=8, help="worker processes on the device")
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.concurrency = 2, 2, 2
        args.train_limit = args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    device = common.pick_device(args.device)
    load = common.header("whole comparison on one device: methods x trials x epochs, packed", device)
    methods = args.methods.split(",")
    specs = trialpool.trial_specs(methods, args.trials, args.epochs)
    measured = trialpool.run_pool(specs, args.concurrency, args.data_dir, device, args.train_limit)
    trials = measured["per_trial"]
    full_size = sum(t["gan_seconds"] + (t["seconds"] - t["gan_seconds"]) * FULL_EPOCHS / args.epochs for t in trials)
    scale = (FULL_TRIALS / args.trials) * full_size / sum(t["seconds"] for t in trials)
    estimate = measured["wall_s"] * scale
    rows = []
    for method in methods:
        trials = [t for t in measured["per_trial"] if t["method"] == method]
        seconds = [t["seconds"] for t in trials]
        rows.append({"method": method, "trials": len(seconds), "trial s": common.spread(common.summary(seconds), 2),
                     "test bal. acc (mean)": f"{sum(t['test_balanced_acc'] for t in trials) / len(seconds):.3f}"})
    print()
    print(common.table(rows, ["method", "trials", "trial s", "test bal. acc (mean)"]))
    print(f"\n{len(specs)} trials ({len(methods)} methods x {args.trials} x {args.epochs} epochs) on "
          f"{args.concurrency} workers: {measured['wall_s']:.1f} s wall "
          f"(start-up {measured['startup_s']:.1f} s, not counted)")
    if scale != 1:
        print(f"estimate for {len(methods)} x {FULL_TRIALS} x {FULL_EPOCHS} (scaled from this run): {estimate:.0f} s")
    print(f"goal: <= {GOAL_SECONDS:.0f} s -> {'reached' if estimate <= GOAL_SECONDS else 'MISSED'}"
          f"{' (estimate)' if scale != 1 else ''}")
    common.write_result("comparison_wall", args, {
        "settings": {"methods": methods, "trials": args.trials, "epochs": args.epochs,
                     "concurrency": args.concurrency, "train_limit": args.train_limit, "dataset": "pneumoniamnist"},
        "measured": measured, "scale_to_full": scale, "estimated_full_wall_s": estimate,
        "goal_s": GOAL_SECONDS}, device, load)


if __name__ == "__main__":
    main()
