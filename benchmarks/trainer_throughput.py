"""Training throughput of the shared trainer (method erm) against the usual MedMNIST loop.

The usual loop is written the way the MedMNIST tutorials write it: ``medmnist.PneumoniaMNIST`` with
``ToTensor + Normalize(0.5, 0.5)``, a ``DataLoader(batch_size=128, shuffle=True)`` with 0 or 2
workers, the batch moved to the device inside the loop and ``loss.item()`` read for logging after
every batch. Both sides train the same model (``focustune.models.build_model``) with Adam 1e-3,
batch 128, on PneumoniaMNIST's training split, with the same torch threads.

Timing is training only. The trainer's epoch is what ``Trainer.fit`` times as an epoch's
``seconds`` (``_begin_epoch``, ``_train_epoch``, the method's ``end_epoch`` and the once-per-epoch
loss read-back; validation excluded), driven epoch by epoch so that every contender can be
interleaved: each round runs one epoch of every contender, in an order that rotates each round.
The first round is a warm-up and is dropped; a speed-up is the median over rounds of (contender's
time per sample / the trainer's), so the trainer is faster when it is above 1.

``--what-if`` adds two trainer variants that are not the platform's behaviour (subclasses here):
the model in channels-last memory format, and that plus bfloat16 autocast on the CPU (what the
trainer's ``amp`` does on CUDA). The data pipeline of each side is also timed alone (no model),
which bounds the speed-up a data pipeline can give when the model's compute is the same.

    python benchmarks/trainer_throughput.py                  # small_cnn, 6 rounds
    python benchmarks/trainer_throughput.py --what-if --threads 1
    python benchmarks/trainer_throughput.py --models small_cnn,resnet18 --train-limit 1024
    python benchmarks/trainer_throughput.py --quick          # smoke run
"""

from __future__ import annotations

import time
from typing import Any

import common

USUAL_WORKERS = (0, 2)  # DataLoader num_workers of the usual loop


def usual_loader(data_dir: str, num_workers: int, limit: int | None) -> Any:
    """The tutorial's dataset and loader."""
    import medmnist
    import torch
    import torchvision.transforms as transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])
    dataset = medmnist.PneumoniaMNIST(split="train", transform=transform, root=data_dir, download=False)
    if limit:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True, num_workers=num_workers)


class UsualLoop:
    """One tutorial-style training loop (its own model and optimiser), run an epoch at a time."""

    def __init__(self, model_name: str, loader: Any, device: str):
        import torch

        from focustune.models import build_model

        torch.manual_seed(0)
        self.device = device
        self.model = build_model(model_name, 1, 2, 28).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.loader = loader

    def epoch(self) -> tuple[float, int]:
        """(seconds, samples) of one training epoch."""
        import torch

        tick = time.perf_counter()
        self.model.train()
        running_loss, seen = 0.0, 0
        for inputs, targets in self.loader:
            self.optimizer.zero_grad()
            outputs = self.model(inputs.to(self.device))
            targets = targets.squeeze(1).long().to(self.device)
            loss = self.criterion(outputs, targets)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
            seen += inputs.shape[0]
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - tick, seen

    def data_only(self) -> float:
        """Samples per second of the loader alone (decoding, ToTensor, Normalize, collation)."""
        tick, seen = time.perf_counter(), 0
        for inputs, targets in self.loader:
            inputs.to(self.device)
            seen += inputs.shape[0]
        return seen / (time.perf_counter() - tick)


def trainer_classes() -> dict[str, type]:
    """The platform's Trainer and the what-if variants (not platform behaviour)."""
    import torch

    from focustune.trainer import Trainer

    class ChannelsLastTrainer(Trainer):
        def _new_model(self, phase_index: int) -> Any:
            return super()._new_model(phase_index).to(memory_format=torch.channels_last)

    class ChannelsLastBf16Trainer(ChannelsLastTrainer):
        def _amp_dtype(self) -> Any:
            if self.device.type == "cpu" and self.config.amp:
                return torch.bfloat16
            return super()._amp_dtype()

        def _autocast(self) -> Any:
            if self.device.type == "cpu" and self.amp_dtype is not None:
                return torch.autocast("cpu", dtype=self.amp_dtype)
            return super()._autocast()

    return {"focustune": Trainer, "what-if channels_last": ChannelsLastTrainer,
            "what-if channels_last+bf16": ChannelsLastBf16Trainer}


class TrainerEpochs:
    """The trainer, run an epoch at a time, timed as ``Trainer.fit`` times an epoch (no validation)."""

    def __init__(self, trainer_cls: type, model_name: str, dataset: Any, device: str, amp: bool, rounds: int):
        from focustune.config import resolve
        from focustune.methods import get_method

        method_cls = get_method("erm")
        config, params = resolve(method_cls, {"epochs": rounds, "batch_size": 128, "lr": 1e-3, "optimizer": "adam",
                                              "model": model_name, "amp": amp})
        self.trainer = trainer_cls(method_cls(params), config, dataset, seed=0, device=device)
        self.next_epoch = 0

    def epoch(self) -> tuple[float, int]:
        trainer, epoch = self.trainer, self.next_epoch
        tick = time.perf_counter()
        _, phase = trainer._begin_epoch(epoch)
        stats, seen = trainer._train_epoch(epoch, phase)
        trainer.method.end_epoch(stats, trainer.run)
        float(stats.class_loss_sum.sum() / stats.class_count.sum().clamp_min(1))
        self.next_epoch += 1
        return time.perf_counter() - tick, seen

    def data_only(self) -> float:
        """Samples per second of the trainer's batch path alone (index the uint8 tensor, normalise)."""
        from focustune.methods.base import shuffled_batches
        from focustune.trainer import normalise

        data, tick = self.trainer.data.train, time.perf_counter()
        for index in shuffled_batches(len(data), 128, self.trainer.generator):
            normalise(data.images[index])
            data.labels[index]
        if self.trainer.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return len(data) / (time.perf_counter() - tick)


def measure(model_name: str, rounds: int, data_dir: str, device: str, limit: int | None, what_if: bool
            ) -> dict[str, Any]:
    """Interleaved epochs of every contender; per-round (seconds, samples), and data-only rates."""
    import torch

    from focustune.data import load_dataset

    dataset = load_dataset("pneumoniamnist", data_dir, download=False)
    if limit:
        dataset.train = dataset.train.subset(torch.arange(min(limit, len(dataset.train))))
    contenders: dict[str, Any] = {}
    amp_settings = (True, False) if device.startswith("cuda") else (False,)
    for name, cls in trainer_classes().items():
        if name != "focustune" and not what_if:
            continue
        for amp in amp_settings if name == "focustune" else (True,):
            label = f"{name} (amp)" if device.startswith("cuda") and amp and name == "focustune" else name
            contenders[label] = TrainerEpochs(cls, model_name, dataset, device, amp, rounds)
    for workers in USUAL_WORKERS:
        contenders[f"usual, {workers} workers"] = UsualLoop(model_name, usual_loader(data_dir, workers, limit), device)
    names = list(contenders)
    times: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(contenders[name].epoch())
        print(f"  [{model_name}] round {round_index + 1}/{rounds}: " + ", ".join(
            f"{n} {times[n][-1][1] / times[n][-1][0]:,.0f}/s" for n in names), flush=True)
    data_rates = {name: c.data_only() for name, c in contenders.items()}
    return {"times": times, "data_only_samples_per_s": data_rates}


def summarise(model_name: str, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per contender: samples/s and the platform trainer's speed-up, warm-up round dropped."""
    times = {n: v[1:] if len(v) > 1 else v for n, v in measured["times"].items()}
    reference = next(n for n in times if n.startswith("focustune"))
    ours = times[reference]
    rows = []
    for name, values in times.items():
        speedup = common.summary([(s / n) / (o_s / o_n) for (s, n), (o_s, o_n) in zip(values, ours)])
        rows.append({"model": model_name, "contender": name, "reference": reference,
                     "samples_per_s": common.summary([seen / seconds for seconds, seen in values]),
                     "epoch_seconds": common.summary([s for s, _ in values]), "trainer_speedup": speedup,
                     "data_only_samples_per_s": measured["data_only_samples_per_s"][name], "raw": values})
    return rows


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small_cnn", help="comma-separated backbones (e.g. small_cnn,resnet18)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved epochs per contender (first = warm-up)")
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    parser.add_argument("--threads", type=int, help="torch threads for every contender (default: torch's default)")
    parser.add_argument("--what-if", action="store_true", help="add the channels_last (+bf16 on CPU) trainer variants")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.train_limit = 2, args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("trainer throughput: focustune Trainer (erm) vs the usual MedMNIST loop", device)

    rows: list[dict[str, Any]] = []
    for model_name in args.models.split(","):
        rows += summarise(model_name, measure(model_name, args.rounds, args.data_dir, device, args.train_limit,
                                              args.what_if))
    print()
    print(common.table(
        [{"model": r["model"], "contender": r["contender"],
          "samples/s (median [min-max])": common.spread(r["samples_per_s"], 0),
          "epoch s": common.spread(r["epoch_seconds"], 2),
          "speed-up of focustune": "1 (reference)" if r["contender"] == r["reference"]
          else common.spread(r["trainer_speedup"], 2) + "x",
          "data path alone, samples/s": f"{r['data_only_samples_per_s']:,.0f}"} for r in rows],
        ["model", "contender", "samples/s (median [min-max])", "epoch s", "speed-up of focustune",
         "data path alone, samples/s"]))
    print("(speed-up of focustune < 1 on a what-if row: that variant is faster than the platform's trainer)")
    target = 20.0 if device.startswith("cuda") else 2.0
    usual = [r for r in rows if r["contender"].startswith("usual")]
    worst = min(r["trainer_speedup"]["median"] for r in usual)
    print(f"\ntarget: >= {target:g}x against every usual loop on {device}; worst median speed-up {worst:.2f}x "
          f"-> {'reached' if worst >= target else 'MISSED'}")
    for r in usual:
        ours = next(x for x in rows if x["model"] == r["model"] and x["contender"] == r["reference"])
        per_sample_data = 1 / r["data_only_samples_per_s"] - 1 / ours["data_only_samples_per_s"]
        bound = 1 + per_sample_data * ours["samples_per_s"]["median"]  # (compute + usual data) / trainer time
        print(f"{r['model']}, {r['contender']}: its data path costs {per_sample_data * 1e6:.0f} µs/sample more than "
              f"the trainer's; with equal compute that alone allows a speed-up of about {bound:.2f}x")
    common.write_result("trainer_throughput", args, {
        "settings": {"rounds": args.rounds, "threads": args.threads, "warmup_rounds_dropped": 1,
                     "train_limit": args.train_limit, "batch_size": 128, "optimizer": "adam", "lr": 1e-3,
                     "dataset": "pneumoniamnist", "what_if": args.what_if,
                     "timing": "training only: the trainer's epoch as fit() times it; the usual loop's epoch wall"},
        "rows": rows, "target_speedup": target, "worst_median_speedup": worst, "target_reached": worst >= target,
    }, device, load)


if __name__ == "__main__":
    main()
