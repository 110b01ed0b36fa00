"""mdgan study time with and without GAN reuse: the trials of one study (one seed, different
classifier hyperparameters) trained one after another on BreastMNIST, first each training its own
class GANs (no store, as before the shared store), then with one GAN store shared by the trials (the
first trains and keeps each GAN, the others load it). Reported: wall time per trial and for the
study, the GAN training seconds, and how many GANs were trained vs reused.

    python benchmarks/gan_reuse.py                         # 6 trials, 4 epochs, 300 GAN steps
    python benchmarks/gan_reuse.py --gan-steps 1000        # the mdgan default GAN budget
    python benchmarks/gan_reuse.py --quick                 # smoke run
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import common

LEARNING_RATES = (1e-3, 3e-4, 2e-3, 5e-4, 1.5e-3, 7e-4)  # six trials' classifier settings; the GANs depend on none


def study(dataset: Any, trials: int, epochs: int, gan_steps: int, store_dir: str | None, device: str) -> list[dict]:
    """Train ``trials`` mdgan runs (seed 0, one learning rate each); per trial its seconds and GANs."""
    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.shared_store import SharedStore
    from focustune.training import Trainer

    method_cls = get_method("mdgan")
    store = SharedStore(store_dir) if store_dir else None
    rows = []
    for lr in LEARNING_RATES[:trials]:
        config, params = resolve(method_cls, {"epochs": epochs, "lr": lr, "gan_steps": gan_steps, "amp": False,
                                              "finetune_epochs": 1})
        method = method_cls(params)
        tick = time.perf_counter()
        Trainer(method, config, dataset, seed=0, device=device, gan_store=store).fit()
        rows.append({"lr": lr, "seconds": time.perf_counter() - tick,
                     "gan_seconds": sum(g["train_seconds"] for g in method.gans),
                     "trained": sum(not g["reused"] for g in method.gans),
                     "reused": sum(g["reused"] for g in method.gans)})
        print(f"  {'reuse' if store else 'no reuse'} lr={lr:g}: {rows[-1]['seconds']:.1f} s "
              f"(GANs trained {rows[-1]['trained']}, reused {rows[-1]['reused']})", flush=True)
    return rows


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (the last one fine-tunes)")
    parser.add_argument("--gan-steps", type=int, default=300, help="training steps of each class GAN")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.gan_steps = 2, 2, 5
    common.require_data(args.data_dir, "breastmnist")
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("mdgan study time with and without GAN reuse (BreastMNIST)", device)
    from focustune.data import load_dataset

    dataset = load_dataset("breastmnist", args.data_dir, download=False)
    arms = {"no reuse": study(dataset, args.trials, args.epochs, args.gan_steps, None, device)}
    with tempfile.TemporaryDirectory() as folder:
        arms["reuse (one GAN store)"] = study(dataset, args.trials, args.epochs, args.gan_steps, folder, device)
    totals = {name: sum(r["seconds"] for r in rows) for name, rows in arms.items()}
    print()
    columns = ["arm", "study s", "GAN training s", "GANs trained / reused"]
    print(common.table([{"arm": name, "study s": f"{totals[name]:.1f}",
                         "GAN training s": f"{sum(r['gan_seconds'] for r in rows):.1f}",
                         "GANs trained / reused": f"{sum(r['trained'] for r in rows)} / "
                                                  f"{sum(r['reused'] for r in rows)}"}
                        for name, rows in arms.items()], columns))
    ratio = totals["no reuse"] / totals["reuse (one GAN store)"]
    print(f"\nstudy of {args.trials} trials: {ratio:.2f}x faster with reuse")
    common.write_result("gan_reuse", args, {
        "settings": {"trials": args.trials, "epochs": args.epochs, "gan_steps": args.gan_steps, "precision": "float32",
                     "dataset": "breastmnist", "seed": 0, "learning_rates": list(LEARNING_RATES[:args.trials])},
        "arms": arms, "study_seconds": totals, "speedup": ratio}, device, load)


if __name__ == "__main__":
    main()
