"""Cost of each registered method's own work: its training time per sample relative to ``erm``.

Every registered method trains the same model (small CNN) on PneumoniaMNIST with its default
hyperparameters through the shared trainer, all runs side by side: each round runs one epoch of
every method (order rotated each round), so a method and ``erm`` are compared on epochs measured
seconds apart. An epoch is driven and timed as ``Trainer.fit`` does it: the phase start
(``_begin_epoch``: IMET's sample draw, MDGAN's GAN training) is outside the epoch's ``seconds``;
the epoch's ``seconds`` cover ``_train_epoch``, the method's ``end_epoch`` (IMET's error-rate
measurement on validation, for example) and the loss read-back; validation runs after it, timed
apart. Time per trained sample: ``imet`` trains sample_size x N samples per epoch, ``learn2mix``
ceil(N/B) x B, ``mdgan`` N plus its generated images in fine-tuning. Round 1 is a warm-up and
dropped; each later round gives one ratio per method (its time per sample / erm's in the same
round); the table shows the median ratio and its range, and the share of the epochs' seconds spent
in the method's ``end_epoch`` (timed directly, so it is not blurred by the machine's noise).

``mdgan`` is reported as the share of its run's wall time (phase starts + epochs + validation)
spent training GANs (``gan_seconds`` from its diagnostics). It uses SAM and the spinal head by
default (two forward/backward passes per step), so its per-sample time is compared with
``erm+sam`` (erm with mdgan's shared defaults), not with plain erm.

    python benchmarks/method_overhead.py --threads 1       # every method, 8 rounds
    python benchmarks/method_overhead.py --methods erm,low --rounds 10
    python benchmarks/method_overhead.py --set mdgan.gan_steps=100 --quick
"""

from __future__ import annotations

import time
from typing import Any

import common

TARGETS = {"low": 1.10, "learn2mix": 1.05, "imet": 1.05}
SAM_REFERENCE = "erm+sam"  # erm with mdgan's shared defaults: the fair reference for mdgan's epochs


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.KEY=VALUE`` -> {method: {key: value}} (values parsed as the CLI parses them)."""
    from focustune import params

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, _, value = item.partition("=")
        method, _, key = target.partition(".")
        out.setdefault(method, {}).update(params.parse_assignments([f"{key}={value}"]))
    return out


class MethodRun:
    """One method's trainer, driven an epoch at a time and timed as ``Trainer.fit`` times it."""

    def __init__(self, name: str, overrides: dict[str, Any], dataset: Any, epochs: int, device: str):
        from focustune.config import resolve
        from focustune.methods import get_method
        from focustune.training import Trainer

        method_cls = get_method(name.split("+")[0])
        extra = dict(get_method("mdgan").defaults) if name == SAM_REFERENCE else {}
        config, params = resolve(method_cls, {**extra, "epochs": epochs, "model": "small_cnn", **overrides})
        self.trainer = Trainer(method_cls(params), config, dataset, seed=0, device=device)
        self.epochs: list[dict[str, Any]] = []
        self.diagnostics: dict[str, Any] = {}

    def epoch(self) -> dict[str, Any]:
        """One ``Trainer.run_epoch``; the method's ``end_epoch`` is timed by a wrapper."""
        trainer, method = self.trainer, self.trainer.method
        timed = {"end_epoch_s": 0.0}

        def end_epoch(stats: Any, run: Any) -> dict[str, Any]:
            tick = time.perf_counter()
            out = type(method).end_epoch(method, stats, run)
            timed["end_epoch_s"] = time.perf_counter() - tick
            return out

        method.end_epoch = end_epoch
        record = trainer.run_epoch()
        del method.end_epoch
        if record.get("method"):
            self.diagnostics = record["method"]
        out = {"phase": record["phase"], "phase_start_s": record["phase_seconds"], "seconds": record["seconds"],
               "end_epoch_s": timed["end_epoch_s"], "validation_s": record["val_seconds"],
               "samples": round(record["samples_per_s"] * record["seconds"])}
        self.epochs.append(out)
        return out

    @property
    def wall_s(self) -> float:
        return sum(e["phase_start_s"] + e["seconds"] + e["validation_s"] for e in self.epochs)


def per_sample(record: dict[str, Any]) -> float:
    return record["seconds"] / max(record["samples"], 1)


def main() -> None:
    from focustune.methods import method_names

    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--methods", help="comma-separated (default: every registered method)")
    parser.add_argument("--rounds", type=int, default=8, help="epochs of every method (round 1 is dropped)")
    common.add_training_options(parser)
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method's hyperparameter, e.g. mdgan.gan_steps=100 (repeatable)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.train_limit = 3, args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("method overhead: per-sample training time relative to erm", device)
    names = args.methods.split(",") if args.methods else method_names()
    if "erm" not in names:
        names.insert(0, "erm")
    if "mdgan" in names and SAM_REFERENCE not in names:
        names.append(SAM_REFERENCE)
    overrides = parse_sets(args.set)
    dataset = common.load_pneumonia(args.data_dir, args.train_limit)

    runs = {n: MethodRun(n, overrides.get(n.split("+")[0], {}), dataset, args.rounds, device) for n in names}
    for index in range(args.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].epoch()
        print(f"  round {index + 1}/{args.rounds}: " + ", ".join(
            f"{n} {per_sample(runs[n].epochs[-1]) * 1e6:.0f}" for n in names) + " µs/sample", flush=True)

    rows, results = [], {}
    for name in names:
        pairs = list(zip(runs[name].epochs, runs["erm"].epochs))[1:]
        if name == "mdgan":  # fine-tune epochs only: they hold the generated images
            pairs = [(m, e) for m, e in pairs if m["phase"] == "finetune"] or pairs
        ratios = [per_sample(m) / per_sample(e) for m, e in pairs]
        result: dict[str, Any] = {
            "per_sample_ratio": common.summary(ratios),
            "epoch_ratio": common.summary([m["seconds"] / e["seconds"] for m, e in pairs]),
            "us_per_sample": common.summary([per_sample(m) * 1e6 for m, _ in pairs]),
            "end_epoch_share": sum(m["end_epoch_s"] for m, _ in pairs) / sum(m["seconds"] for m, _ in pairs),
            "epochs": runs[name].epochs, "wall_s": runs[name].wall_s}
        gan_seconds = runs[name].diagnostics.get("gan_seconds")
        if gan_seconds is not None:
            result.update(gan_seconds=gan_seconds, gan_share_of_wall=gan_seconds / runs[name].wall_s)
        target = TARGETS.get(name)
        if target is not None:
            result["target"], result["target_reached"] = target, result["per_sample_ratio"]["median"] <= target
        results[name] = result
        rows.append({"method": name, "µs/sample": common.spread(result["us_per_sample"], 1),
                     "per-sample ratio to erm": common.spread(result["per_sample_ratio"], 3),
                     "epoch-time ratio": common.spread(result["epoch_ratio"], 3),
                     "end_epoch share": f"{result['end_epoch_share']:.1%}",
                     "target": f"<= {target:.2f}" if target else "",
                     "reached": ("yes" if result["target_reached"] else "NO") if target else "",
                     "GAN share of run wall": f"{result['gan_share_of_wall']:.1%} ({gan_seconds:.1f} s)"
                     if gan_seconds is not None else ""})
    print()
    print(common.table(rows, list(rows[0])))
    if "mdgan" in results and SAM_REFERENCE in results:
        pairs = [(m, e) for m, e in zip(runs["mdgan"].epochs, runs[SAM_REFERENCE].epochs) if m["phase"] == "finetune"]
        ratio = common.summary([per_sample(m) / per_sample(e) for m, e in pairs])
        results["mdgan"]["per_sample_ratio_to_erm_sam"] = ratio
        print(f"\nmdgan fine-tune epochs per sample vs {SAM_REFERENCE} (SAM, spinal head): {common.spread(ratio, 3)}")
    common.write_result("method_overhead", args, {
        "settings": {"rounds": args.rounds, "model": "small_cnn", "dataset": "pneumoniamnist", "threads": args.threads,
                     "train_limit": args.train_limit, "overrides": overrides, "warmup_rounds_dropped": 1},
        "methods": results}, device, load)


if __name__ == "__main__":
    main()
