"""Trials per hour of one process training K trials as one stacked model (training/packing.py).

K erm trials (small CNN, PneumoniaMNIST, ``--epochs`` epochs, each its own seed and learning rate)
run as one pack, for every K of ``--packs``; K = 1 also runs as a plain solo ``Trainer.fit``, the
one-trial-per-process baseline. Whole trials are timed (training, validation every epoch, the
final test evaluation). Rounds repeat with the order of the contenders flipped; medians reported.

    python benchmarks/packed_trials.py                       # K = 1, 4, 8; bf16 where the CPU has it
    python benchmarks/packed_trials.py --amp false           # float32
    python benchmarks/packed_trials.py --quick
    python benchmarks/packed_trials.py --sweep --amp false   # through `focustune sweep --pack K`

``--sweep`` times the real command instead: ``focustune sweep --pack K`` (one study of ``--trials``
erm trials, every trial its own Tune trial, Optuna trial and MLflow run; K members per trial slot of
``--cpus-per-trial 1``), reporting trials per hour over the search (first trial start to last trial
end, as the sweep's own utilisation span) and over the whole command (Ray start, MLflow, delivery).
"""

from __future__ import annotations

import time
from typing import Any

import common

LEARNING_RATES = (1e-3, 3e-3, 2e-3, 5e-4, 1.5e-3, 4e-3, 7e-4, 2.5e-3)


def trainers(dataset: Any, k: int, epochs: int, batch_size: int, amp: bool, device: str) -> list[Any]:
    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.training import Trainer

    cls = get_method("erm")
    out = []
    for i in range(k):
        config, params = resolve(cls, {"epochs": epochs, "batch_size": batch_size, "amp": amp,
                                       "lr": LEARNING_RATES[i % len(LEARNING_RATES)]})
        out.append(Trainer(cls(params), config, dataset, seed=i, device=device))
    return out


def timed(contender: str, dataset: Any, args: Any, device: str) -> dict[str, Any]:
    from focustune.training.packing import train_packed

    k = 1 if contender == "solo" else int(contender)
    members = trainers(dataset, k, args.epochs, args.batch_size, args.amp == "true", device)
    started = time.perf_counter()
    results = [members[0].fit()] if contender == "solo" else train_packed(members)
    wall = time.perf_counter() - started
    return {"contender": contender, "k": k, "wall_s": wall, "trials_per_hour": 3600 * k / wall,
            "precision": members[0].precision, "test_auc": [r.test["auc"] for r in results]}


def timed_sweep(k: int, args: Any) -> dict[str, Any]:
    """One ``focustune sweep --pack k`` in a fresh folder: wall, search span, trials per hour, memory."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    import sweeptools

    with tempfile.TemporaryDirectory(prefix="focustune_bench_pack_") as folder:
        workdir = Path(folder)
        command = [sys.executable, "-m", "focustune.cli", "sweep", "--dataset", "pneumoniamnist", "--data-dir",
                   args.data_dir, "--methods", "erm", "--trials", str(args.trials), "--epochs", str(args.epochs),
                   "--seeds", "0", "--pack", str(k), "--cpus-per-trial", "1", "--set", f"amp={args.amp}",
                   "--set", f"batch_size={args.batch_size}", "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}",
                   "--storage", str(workdir / "runs"), "--experiment", "bench"]
        logged = sweeptools.run_logged(command, workdir)
        state = json.loads((workdir / "runs" / "bench" / "sweep.json").read_text())
    span = state["utilisation"]["span_s"]
    return {"contender": f"sweep K={k}", "k": k, "wall_s": logged["wall_s"], "search_s": span,
            "trials_per_hour": 3600 * args.trials / span, "trials_per_hour_wall": 3600 * args.trials / logged["wall_s"],
            "utilisation": state["utilisation"]["overall"], "memory": logged["memory"],
            "precision": "float32" if args.amp == "false" else "default"}


def sweep_main(args: Any, load: list[float]) -> None:
    """``--sweep``: K = each of ``--packs`` through the real command, rounds in flipped order."""
    runs = []
    packs = [int(k) for k in args.packs.split(",")]
    for round_index in range(args.rounds):
        for k in packs if round_index % 2 == 0 else packs[::-1]:
            run = {**timed_sweep(k, args), "round": round_index}
            runs.append(run)
            print(f"  round {round_index} K={k}: search {run['search_s']:.1f} s, command {run['wall_s']:.1f} s -> "
                  f"{run['trials_per_hour']:,.0f} trials/h over the search", flush=True)
    rows = [{"k": k, "search_s": common.summary([r["search_s"] for r in runs if r["k"] == k]),
             "wall_s": common.summary([r["wall_s"] for r in runs if r["k"] == k]),
             "trials_per_hour": common.summary([r["trials_per_hour"] for r in runs if r["k"] == k])} for k in packs]
    base = rows[0]["trials_per_hour"]["median"]
    print()
    print(common.table([{"K": r["k"], "search s": common.spread(r["search_s"], 1),
                         "command s": common.spread(r["wall_s"], 1),
                         "trials/hour (search)": common.spread(r["trials_per_hour"], 0),
                         f"vs K={packs[0]}": f"{r['trials_per_hour']['median'] / base:.2f}x"} for r in rows],
                       ["K", "search s", "command s", "trials/hour (search)", f"vs K={packs[0]}"]))
    common.write_result("packed_sweeps" + ("_float32" if args.amp == "false" else ""), args, {
        "settings": {"method": "erm", "model": "small_cnn", "dataset": "pneumoniamnist", "trials": args.trials,
                     "epochs": args.epochs, "batch_size": args.batch_size, "amp": args.amp, "rounds": args.rounds,
                     "cpus_per_trial": 1},
        "rows": rows, "runs": runs}, None, load)


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    common.add_training_options(parser)
    parser.add_argument("--packs", default="1,4,8", help="comma-separated pack sizes K")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--amp", choices=("true", "false"), default="true",
                        help="true: the trainer's default (bf16 autocast where the CPU has it); false: float32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="time `focustune sweep --pack K` instead of the engine")
    parser.add_argument("--trials", type=int, default=16, help="--sweep: trials of the one study")
    args = parser.parse_args()
    if args.quick:
        args.packs, args.epochs, args.rounds, args.train_limit = "1,2", 1, 1, args.train_limit or 256
        args.trials = 4
    common.require_data(args.data_dir, "pneumoniamnist")
    if args.sweep:
        sweep_main(args, common.header("trials per hour: focustune sweep --pack K", "cpu"))
        return
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("trials per hour: K trials packed as one stacked model", device)
    dataset = common.load_pneumonia(args.data_dir, args.train_limit)

    contenders = ["solo", *args.packs.split(",")]
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for contender in contenders if round_index % 2 == 0 else contenders[::-1]:
            run = timed(contender, dataset, args, device)
            runs.append({**run, "round": round_index})
            print(f"  round {round_index} {contender:>4}: {run['wall_s']:.1f} s -> "
                  f"{run['trials_per_hour']:,.0f} trials/h ({run['precision']})", flush=True)
    rows = []
    for contender in contenders:
        mine = [r for r in runs if r["contender"] == contender]
        rows.append({"contender": contender, "k": mine[0]["k"], "precision": mine[0]["precision"],
                     "trials_per_hour": common.summary([r["trials_per_hour"] for r in mine]),
                     "wall_s": common.summary([r["wall_s"] for r in mine])})
    solo = rows[0]["trials_per_hour"]["median"]
    print()
    print(common.table([{"K": "1 (solo fit)" if r["contender"] == "solo" else r["k"],
                         "precision": r["precision"], "wall s": common.spread(r["wall_s"], 1),
                         "trials/hour": common.spread(r["trials_per_hour"], 0),
                         "vs solo": f"{r['trials_per_hour']['median'] / solo:.2f}x"} for r in rows],
                       ["K", "precision", "wall s", "trials/hour", "vs solo"]))
    common.write_result("packed_trials" + ("_float32" if args.amp == "false" else ""), args, {
        "settings": {"method": "erm", "model": "small_cnn", "dataset": "pneumoniamnist", "epochs": args.epochs,
                     "batch_size": args.batch_size, "train_limit": args.train_limit, "amp": args.amp,
                     "rounds": args.rounds},
        "rows": rows, "runs": runs}, device, load)


if __name__ == "__main__":
    main()
