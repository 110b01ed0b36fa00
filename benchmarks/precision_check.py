"""Does mixed precision change results? The trainer with ``amp=true`` against ``amp=false``.

With ``amp=true`` (the default) the trainer runs forward passes under bfloat16 autocast on a GPU
and on CPUs with native bf16; ``amp=false`` is float32 everywhere. This runs the same methods,
datasets and seeds both ways (a pair per seed, run back to back) and compares test balanced
accuracy and AUC: per (dataset, method) means, and the paired differences over all pairs with a
paired t-test (scipy), next to the seed-to-seed spread of float32 alone. Speed is reported too,
but ``trainer_throughput.py`` is the benchmark for it.

    python benchmarks/precision_check.py                       # pneumoniamnist 10 + breastmnist 20 epochs
    python benchmarks/precision_check.py --methods erm --seeds 0,1 --quick
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import common

DATASETS = {"pneumoniamnist": 10, "breastmnist": 20}  # dataset -> epochs


def run_pair(dataset: Any, method: str, epochs: int, seed: int, device: str) -> dict[str, dict[str, Any]]:
    """The same run with amp on and off."""
    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.training import Trainer

    out = {}
    for amp in (True, False):
        cls = get_method(method)
        config, params = resolve(cls, {"epochs": epochs, "amp": amp})
        trainer = Trainer(cls(params), config, dataset, seed=seed, device=device)
        tick = time.perf_counter()
        result = trainer.fit()
        out["amp" if amp else "float32"] = {
            "precision": trainer.precision, "seconds": time.perf_counter() - tick,
            "test_balanced_acc": result.test["balanced_acc"], "test_auc": result.test["auc"]}
    return out


def paired(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    from scipy.stats import ttest_rel

    amp, exact = [r["amp"][key] for r in rows], [r["float32"][key] for r in rows]
    diffs = [a - b for a, b in zip(amp, exact)]
    test = ttest_rel(amp, exact) if len(rows) > 1 else None
    return {"mean_diff": statistics.fmean(diffs), "sd_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "p_value": float(test.pvalue) if test is not None else float("nan"), "n": len(diffs)}


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="erm,low,focal")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    datasets = dict(DATASETS)
    if args.quick:
        datasets = {"breastmnist": 2}
    common.require_data(args.data_dir, *datasets)
    from focustune.data import load_dataset

    device = common.pick_device(args.device)
    load = common.header("precision check: amp=true (bf16 autocast where supported) vs amp=false", device)
    rows = []
    for name, epochs in datasets.items():
        dataset = load_dataset(name, args.data_dir, download=False)
        for method in args.methods.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                pair = run_pair(dataset, method, epochs, seed, device)
                rows.append({"dataset": name, "method": method, "seed": seed, "epochs": epochs, **pair})
                print(f"  {name} {method} seed {seed}: " + ", ".join(
                    f"{k} ({v['precision']}) bal {v['test_balanced_acc']:.4f} auc {v['test_auc']:.4f} "
                    f"{v['seconds']:.1f} s" for k, v in pair.items()), flush=True)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    mean = lambda rs, side, key: statistics.fmean(r[side][key] for r in rs)  # noqa: E731
    sd = lambda rs, key: statistics.stdev(r["float32"][key] for r in rs) if len(rs) > 1 else 0.0  # noqa: E731
    print()
    print(common.table([
        {"dataset": d, "method": m, "bal. acc amp": f"{mean(rs, 'amp', 'test_balanced_acc'):.4f}",
         "bal. acc float32": f"{mean(rs, 'float32', 'test_balanced_acc'):.4f}",
         "float32 seed sd": f"{sd(rs, 'test_balanced_acc'):.4f}",
         "AUC amp": f"{mean(rs, 'amp', 'test_auc'):.4f}", "AUC float32": f"{mean(rs, 'float32', 'test_auc'):.4f}",
         "s amp / float32": f"{mean(rs, 'amp', 'seconds'):.1f} / {mean(rs, 'float32', 'seconds'):.1f}"}
        for (d, m), rs in groups.items()],
        ["dataset", "method", "bal. acc amp", "bal. acc float32", "float32 seed sd", "AUC amp", "AUC float32",
         "s amp / float32"]))
    summaries = {key: paired(rows, key) for key in ("test_balanced_acc", "test_auc")}
    for key, s in summaries.items():
        print(f"{key}: amp - float32 = {s['mean_diff']:+.4f} (sd {s['sd_diff']:.4f}, n={s['n']}), "
              f"paired t-test p = {s['p_value']:.2f}")
    common.write_result("precision_check", args, {
        "settings": {"datasets": datasets, "methods": args.methods, "seeds": args.seeds, "model": "small_cnn"},
        "rows": rows, "paired": summaries}, device, load)


if __name__ == "__main__":
    main()
