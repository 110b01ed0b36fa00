"""Trials per hour of one process training K trials as one stacked model (training/packing.py).

K erm trials (small CNN, PneumoniaMNIST, ``--epochs`` epochs, each its own seed and learning rate)
run as one pack, for every K of ``--packs``; K = 1 also runs as a plain solo ``Trainer.fit``, the
one-trial-per-process baseline. Whole trials are timed (training, validation every epoch, the
final test evaluation). Rounds repeat with the order of the contenders flipped; medians reported.

    python benchmarks/packed_trials.py                       # K = 1, 4, 8; bf16 where the CPU has it
    python benchmarks/packed_trials.py --amp false           # float32
    python benchmarks/packed_trials.py --quick
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


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    common.add_training_options(parser)
    parser.add_argument("--packs", default="1,4,8", help="comma-separated pack sizes K")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--amp", choices=("true", "false"), default="true",
                        help="true: the trainer's default (bf16 autocast where the CPU has it); false: float32")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.packs, args.epochs, args.rounds, args.train_limit = "1,2", 1, 1, args.train_limit or 256
    common.require_data(args.data_dir, "pneumoniamnist")
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
