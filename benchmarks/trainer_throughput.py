"""Training throughput of the shared trainer (method erm) against the usual MedMNIST loop.

The usual loop is written the way the MedMNIST tutorials write it: ``medmnist.PneumoniaMNIST`` with
``ToTensor + Normalize(0.5, 0.5)``, a ``DataLoader(batch_size=128, shuffle=True)`` with 0 or 2
workers, the batch moved to the device inside the loop and ``loss.item()`` read for logging after
every batch. Both sides train the same model (``focustune.models.build_model``) with Adam 1e-3,
batch 128, on PneumoniaMNIST's training split, with the same torch threads.

Timing is training only. The trainer's epoch is one ``Trainer.run_epoch`` (what ``fit`` runs),
timed as it times itself: the phase start, training, the method's ``end_epoch`` and the
once-per-epoch loss read-back; its validation pass is excluded. Every contender runs an epoch at a
time so that they can be interleaved: each round runs one epoch of every contender, in an order that rotates each round.
The first round is a warm-up and is dropped; a speed-up is the median over rounds of (contender's
time per sample / the trainer's), so the trainer is faster when it is above 1.

The trainer runs twice: with its defaults (``amp=true``: bfloat16 autocast on a GPU and on CPUs
with native bf16, else float32) and with ``amp=false`` (float32 everywhere, like the usual loop).
With ``--compile`` a third runs with ``amp=false compile=true`` (``torch.compile`` of the training
forward pass); its warm-up round holds the compilation, reported as ``compile_seconds``.
The data pipeline of each side is also timed alone (no model), which bounds the speed-up a data
pipeline can give when the model's compute is the same.

    python benchmarks/trainer_throughput.py                  # small_cnn, 6 rounds
    python benchmarks/trainer_throughput.py --threads 1
    python benchmarks/trainer_throughput.py --models small_cnn,resnet18 --train-limit 1024
    python benchmarks/trainer_throughput.py --compile        # also float32 with torch.compile
    python benchmarks/trainer_throughput.py --quick          # smoke run
"""

from __future__ import annotations

import time
from typing import Any

import common

USUAL_WORKERS = (0, 2)  # DataLoader num_workers of the usual loop
REFERENCE = "focustune"  # the trainer with its defaults
COMPILED = "focustune amp=false compile=true"


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
        for inputs, _targets in self.loader:
            inputs.to(self.device)
            seen += inputs.shape[0]
        return seen / (time.perf_counter() - tick)


class TrainerEpochs:
    """The trainer, run an epoch at a time, timed as ``Trainer.fit`` times an epoch (no validation)."""

    def __init__(self, model_name: str, dataset: Any, device: str, amp: bool, rounds: int, compile: bool = False):
        from focustune.config import resolve
        from focustune.methods import get_method
        from focustune.training import Trainer

        method_cls = get_method("erm")
        config, params = resolve(method_cls, {"epochs": rounds, "batch_size": 128, "lr": 1e-3, "optimizer": "adam",
                                              "model": model_name, "amp": amp, "compile": compile})
        self.trainer = Trainer(method_cls(params), config, dataset, seed=0, device=device)
        self.compile_seconds = 0.0

    def epoch(self) -> tuple[float, int]:
        record = self.trainer.run_epoch()
        self.compile_seconds += record.get("compile_seconds", 0.0)
        seconds = record["phase_seconds"] + record["seconds"]
        return seconds, round(record["samples_per_s"] * record["seconds"])

    def data_only(self) -> float:
        """Samples per second of the trainer's batch path alone (index the uint8 tensor, normalise)."""
        from focustune.methods.base import shuffled_batches
        from focustune.training import normalise

        data, tick = self.trainer.data.train, time.perf_counter()
        for index in shuffled_batches(len(data), 128, self.trainer.generator):
            normalise(data.images[index])
            data.labels[index]
        if self.trainer.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return len(data) / (time.perf_counter() - tick)


def measure(model_name: str, rounds: int, data_dir: str, device: str, limit: int | None,
            compile: bool = False) -> dict[str, Any]:
    """Interleaved epochs of every contender; per-round (seconds, samples), data-only rates and the
    compiled trainer's compilation seconds."""
    dataset = common.load_pneumonia(data_dir, limit)
    contenders: dict[str, Any] = {}
    for amp in (True, False):
        trainer = TrainerEpochs(model_name, dataset, device, amp, rounds)
        contenders[REFERENCE if amp else f"focustune amp=false ({trainer.trainer.precision})"] = trainer
    if compile:
        trainer = TrainerEpochs(model_name, dataset, device, False, rounds, compile=True)
        contenders[f"{COMPILED} ({trainer.trainer.precision})"] = trainer
    print(f"  focustune defaults compute in {contenders[REFERENCE].trainer.precision} on {device}")
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
    compiled = {name: c.compile_seconds for name, c in contenders.items() if name.startswith(COMPILED)}
    return {"times": times, "data_only_samples_per_s": data_rates, "compile_seconds": compiled}


def summarise(model_name: str, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per contender: samples/s and the platform trainer's speed-up, warm-up round dropped."""
    times = {n: v[1:] if len(v) > 1 else v for n, v in measured["times"].items()}
    reference = REFERENCE
    float32 = next(n for n in times if n.startswith(f"{REFERENCE} amp=false") and not n.startswith(COMPILED))

    def speedup(values: list, over: str) -> dict[str, float]:
        return common.summary([(s / n) / (o_s / o_n) for (s, n), (o_s, o_n) in zip(values, times[over])])

    compiled = next((n for n in times if n.startswith(COMPILED)), None)
    rows = []
    for name, values in times.items():
        rows.append({"model": model_name, "contender": name, "reference": reference,
                     "trainer_speedup": speedup(values, reference), "float32_trainer_speedup": speedup(values, float32),
                     "compiled_trainer_speedup": speedup(values, compiled) if compiled else None,
                     "samples_per_s": common.summary([seen / seconds for seconds, seen in values]),
                     "epoch_seconds": common.summary([s for s, _ in values]),
                     "data_only_samples_per_s": measured["data_only_samples_per_s"][name],
                     "compile_seconds": measured["compile_seconds"].get(name), "raw": values})
    return rows


def main() -> None:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small_cnn", help="comma-separated backbones (e.g. small_cnn,resnet18)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved epochs per contender (first = warm-up)")
    parser.add_argument("--compile", action="store_true", help="also the float32 trainer with torch.compile")
    common.add_training_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.train_limit = 2, args.train_limit or 512
    common.require_data(args.data_dir, "pneumoniamnist")
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    load = common.header("trainer throughput: focustune Trainer (erm) vs the usual MedMNIST loop", device)

    rows: list[dict[str, Any]] = []
    for model_name in args.models.split(","):
        rows += summarise(model_name, measure(model_name, args.rounds, args.data_dir, device, args.train_limit,
                                              args.compile))
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
    target = 20.0 if device.startswith("cuda") else 2.0
    usual = [r for r in rows if r["contender"].startswith("usual")]
    worst = min(r["trainer_speedup"]["median"] for r in usual)
    print(f"\ntarget: >= {target:g}x against every usual loop on {device}; worst median speed-up {worst:.2f}x "
          f"-> {'reached' if worst >= target else 'MISSED'}")
    for r in rows:
        if r["compile_seconds"] is not None:
            print(f"{r['model']}, {r['contender']}: compilation {r['compile_seconds']:.1f} s (in its warm-up round)")
    for r in usual:
        exact = next(x for x in rows if x["model"] == r["model"] and x["contender"].startswith(f"{REFERENCE} amp=")
                     and not x["contender"].startswith(COMPILED))
        per_sample_data = 1 / r["data_only_samples_per_s"] - 1 / exact["data_only_samples_per_s"]
        bound = 1 + per_sample_data * exact["samples_per_s"]["median"]  # (compute + usual data) / trainer time
        print(f"{r['model']}, {r['contender']}: the float32 trainer is {r['float32_trainer_speedup']['median']:.2f}x "
              f"faster; the loop's data path costs {per_sample_data * 1e6:.0f} µs/sample more than the trainer's, "
              f"which alone (equal compute) allows about {bound:.2f}x")
        if r["compiled_trainer_speedup"]:
            print(f"{r['model']}, {r['contender']}: the compiled float32 trainer is "
                  f"{common.spread(r['compiled_trainer_speedup'], 2)}x faster")
    common.write_result("trainer_throughput", args, {
        "settings": {"rounds": args.rounds, "compile": args.compile, "threads": args.threads,
                     "warmup_rounds_dropped": 1,
                     "train_limit": args.train_limit, "batch_size": 128, "optimizer": "adam", "lr": 1e-3,
                     "dataset": "pneumoniamnist",
                     "timing": "training only: the trainer's epoch as fit() times it; the usual loop's epoch wall"},
        "rows": rows, "target_speedup": target, "worst_median_speedup": worst, "target_reached": worst >= target,
    }, device, load)


if __name__ == "__main__":
    main()
