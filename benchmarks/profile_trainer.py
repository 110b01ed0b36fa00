"""Where the shared trainer's time goes in an epoch, for ``erm`` and ``low``.

Two views of a training epoch on PneumoniaMNIST (small CNN, batch 128, Adam):

1. Manual timers: the trainer's own objects (its model, optimiser, grad scaler, method, data and
   generator, after ``_begin_epoch``) driven through the same steps as ``Trainer._train_epoch``,
   with a timer around each step: drawing the epoch's batch indices, indexing + normalising the
   uint8 batch, augmentation, forward, the method's work (per-sample loss and weighting: LOW's
   gradient norms and projection), backward, optimiser step, the method's ``end_step`` (LOW's weight
   statistics), and the per-class loss bookkeeping.
   On a GPU every timer synchronises first (which serialises the GPU, so the split is an
   attribution, not the trainer's own overlap). The instrumented epoch's total is compared with
   an untimed ``Trainer._train_epoch`` run interleaved with it, to show the split is representative.
2. ``torch.profiler``: the operators with the largest self time over one untimed epoch.

This script drives private trainer methods (``_begin_epoch``, ``_train_epoch``) on purpose: it
profiles the loop, not an API.

    python benchmarks/profile_trainer.py                 # erm and low, 3 rounds
    python benchmarks/profile_trainer.py --methods low --set lam=0.1 --rounds 5
    python benchmarks/profile_trainer.py --quick
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import common

STEPS = ("batch indices", "index + normalise", "augment", "forward", "method (loss + weights)", "zero_grad",
         "backward", "optimiser step", "method (end of step)", "bookkeeping")


class Timers:
    def __init__(self, sync: bool):
        import torch

        self.sync = torch.cuda.synchronize if sync else (lambda: None)
        self.totals: dict[str, float] = defaultdict(float)
        self.last = 0.0

    def start(self) -> None:
        self.sync()
        self.last = time.perf_counter()

    def mark(self, step: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.totals[step] += now - self.last
        self.last = now


def instrumented_epoch(trainer: Any, epoch: int, sync: bool) -> dict[str, float]:
    """One epoch through the trainer's steps with a timer around each (SAM is not instrumented)."""
    import torch

    from focustune.training import augment_batch, normalise

    if trainer.config.optimizer == "sam":
        raise SystemExit("profile_trainer: SAM's two-pass step is not instrumented; use another optimizer")
    timers = Timers(sync)
    trainer.model.train()
    method, run, config = trainer.method, trainer.run, trainer.config
    data = method.training_data(run)
    k = trainer.dataset.num_classes
    loss_sum = torch.zeros(k, device=trainer.device)
    count = torch.zeros(k, device=trainer.device)
    timers.start()
    batches = method.epoch_batches(epoch, data, run)
    timers.mark("batch indices")
    for index in batches:
        x = normalise(data.images[index])
        y = data.labels[index]
        timers.mark("index + normalise")
        x = augment_batch(x, config.augment, trainer.generator)
        timers.mark("augment")
        with trainer._autocast():
            logits = trainer.model(x)
        timers.mark("forward")
        losses = method.sample_losses(logits.float(), y)
        loss = method.batch_loss(logits.float(), y, losses)
        timers.mark("method (loss + weights)")
        trainer.optimizer.zero_grad(set_to_none=True)
        timers.mark("zero_grad")
        trainer.scaler.scale(loss).backward()
        timers.mark("backward")
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        timers.mark("optimiser step")
        losses = losses.detach()
        method.end_step(y, losses)
        timers.mark("method (end of step)")
        loss_sum.index_add_(0, y, losses.float())
        count.index_add_(0, y, torch.ones_like(losses, dtype=torch.float32))
        timers.mark("bookkeeping")
    float(loss_sum.sum() / count.sum().clamp_min(1))  # the trainer's once-per-epoch read-back
    timers.mark("bookkeeping")
    return dict(timers.totals)


def real_epoch(trainer: Any, epoch: int, sync: bool) -> float:
    """Seconds of the trainer's own ``_train_epoch`` (plus its once-per-epoch read-back)."""
    tick = time.perf_counter()
    _, phase = trainer._begin_epoch(epoch)
    stats, _ = trainer._train_epoch(epoch, phase)
    float(stats.class_loss_sum.sum())
    return time.perf_counter() - tick


def operator_profile(trainer: Any, epoch: int, device: str, top: int) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        real_epoch(trainer, epoch, device.startswith("cuda"))
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:top]
    total = sum(getattr(e, key, 0) for e in prof.key_averages())
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key, 0) / 1e3,
             "share": getattr(e, key, 0) / total if total else 0.0} for e in events]


class MethodProfile:
    """One method's trainer; alternates untimed and instrumented epochs."""

    def __init__(self, name: str, overrides: dict[str, Any], dataset: Any, rounds: int, device: str):
        from focustune.config import resolve
        from focustune.methods import get_method
        from focustune.training import Trainer

        cls = get_method(name)
        config, params = resolve(cls, {"epochs": 2 * rounds + 2, "model": "small_cnn", "batch_size": 128,
                                       **overrides})
        self.name, self.overrides, self.device = name, overrides, device
        self.trainer = Trainer(cls(params), config, dataset, seed=0, device=device)
        self.sync = device.startswith("cuda")
        self.epoch = 0
        self.steps: dict[str, list[float]] = defaultdict(list)
        self.reals: list[float] = []
        self.instrumented: list[float] = []

    def warm_up(self) -> None:
        real_epoch(self.trainer, self.epoch, self.sync)
        self.epoch += 1

    def round(self) -> None:
        self.reals.append(real_epoch(self.trainer, self.epoch, self.sync))
        self.trainer._begin_epoch(self.epoch + 1)
        tick = time.perf_counter()
        totals = instrumented_epoch(self.trainer, self.epoch + 1, self.sync)
        self.instrumented.append(time.perf_counter() - tick)
        for step in STEPS:
            self.steps[step].append(totals.get(step, 0.0))
        self.epoch += 2

    def result(self, top: int) -> dict[str, Any]:
        ops = operator_profile(self.trainer, self.epoch, self.device, top)
        medians = {s: statistics.median(v) for s, v in self.steps.items()}
        total = sum(medians.values())
        return {"method": self.name, "overrides": self.overrides, "samples": len(self.trainer.data.train),
                "real_epoch_s": common.summary(self.reals), "instrumented_epoch_s": common.summary(self.instrumented),
                "steps_s": {s: common.summary(v) for s, v in self.steps.items()},
                "steps_share": {s: medians[s] / total for s in STEPS}, "top_ops": ops}


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="erm,low")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of (untimed, instrumented) epochs")
    common.add_training_options(parser)
    parser.add_argument("--top", type=int, default=12, help="operators shown from torch.profiler")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="hyperparameter for every profiled method (e.g. augment=flip)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.train_limit = 1, args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    from focustune import params

    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("trainer profile: where an epoch's time goes", device)
    dataset = common.load_pneumonia(args.data_dir, args.train_limit)
    overrides = params.parse_assignments(args.set)
    methods = [MethodProfile(name, overrides, dataset, args.rounds, device) for name in args.methods.split(",")]
    for method in methods:
        method.warm_up()
    for index in range(args.rounds):  # the methods' epochs interleaved, order rotated each round
        for method in methods[index % len(methods):] + methods[:index % len(methods)]:
            method.round()
        print(f"  round {index + 1}/{args.rounds}: " + ", ".join(
            f"{m.name} {m.reals[-1]:.2f} s untimed / {m.instrumented[-1]:.2f} s instrumented" for m in methods),
            flush=True)
    profiles = [method.result(args.top) for method in methods]

    rows = []
    for step in STEPS:
        row = {"step": step}
        for p in profiles:
            s = p["steps_s"][step]
            row[f"{p['method']} ms/epoch"] = f"{s['median'] * 1e3:.1f}"
            row[f"{p['method']} share"] = f"{p['steps_share'][step]:.1%}"
        rows.append(row)
    for label, key in (("total (instrumented)", "instrumented_epoch_s"), ("untimed _train_epoch", "real_epoch_s")):
        rows.append({"step": label, **{f"{p['method']} ms/epoch": f"{p[key]['median'] * 1e3:.0f}" for p in profiles}})
    print()
    print(common.table(rows, list(rows[0])))
    for p in profiles:
        unit = "GPU" if device.startswith("cuda") else "CPU"
        print(f"\n{p['method']}: top operators by self {unit} time (one epoch)")
        print(common.table([{"op": o["op"], "calls": o["calls"], "self ms": f"{o['self_ms']:.1f}",
                             "share": f"{o['share']:.1%}"} for o in p["top_ops"]], ["op", "calls", "self ms", "share"]))
    common.write_result("profile_trainer", args, {
        "settings": {"rounds": args.rounds, "train_limit": args.train_limit, "model": "small_cnn", "batch_size": 128,
                     "dataset": "pneumoniamnist", "overrides": overrides},
        "profiles": profiles}, device, load)


if __name__ == "__main__":
    main()
