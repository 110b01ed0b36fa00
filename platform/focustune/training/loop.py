"""The one training loop every method runs under.

Data lives on the training device as uint8 tensors; a batch is indexed from them, normalised
and (optionally) augmented in one batched operation. A dataset whose images exceed the device's
data limit stays in host memory and its batches are streamed (:mod:`focustune.data.streaming`).
Per-batch work never synchronises with the host: losses are accumulated on the device and read
once per epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from focustune.config import TrainConfig, flat_params
from focustune.data import ImageDataset, Split
from focustune.data.streaming import HostBatches
from focustune.errors import TrainingDiverged
from focustune.methods.base import EpochStats, Method, Phase, RunContext, mechanism_epoch
from focustune.metrics import classification_metrics
from focustune.models import Classifier, build_model, seeded_init
from focustune.tracking_schema import STAGES

CHECKPOINT_FILE = "checkpoint.pt"
EpochCallback = Callable[["Trainer", dict[str, Any]], None]
#: Share of the GPU memory this process may use (its per-process fraction, e.g. a fractional
#: ``--gpus-per-trial``, of what is free at the start) that a dataset's images may take there;
#: above it the images stay in host memory and batches are streamed.
DEVICE_DATA_SHARE = 0.5
#: cuBLAS setting that deterministic algorithms need on CUDA (set when not set already).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def select_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else CUDA when available, else CPU."""
    if preference:
        return torch.device(preference)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 would be slower."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older torch: no capability report, stay in float32
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def device_data_limit(device: torch.device) -> int | None:
    """Bytes of images a run keeps on ``device`` (None: no limit, as on the CPU); see DEVICE_DATA_SHARE."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    fraction = torch.cuda.get_per_process_memory_fraction(device) if hasattr(
        torch.cuda, "get_per_process_memory_fraction") else 1.0
    return int(DEVICE_DATA_SHARE * min(free, total * fraction))


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With ``enabled``, deterministic algorithms (and cuDNN without benchmarking) inside the block;
    the process's previous settings are restored after it."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = benchmark


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float in [-1, 1] (mean 0.5, std 0.5, as the MedMNIST benchmark)."""
    return images.float().div_(127.5).sub_(1.0)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Batched random horizontal flip, and for ``flip_shift`` a random shift of up to 1/8 of the size."""
    if kind == "none":
        return x
    n = x.shape[0]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if kind == "flip_shift":
        shift = (torch.rand(n, 2, device=x.device, generator=generator) - 0.5) * 0.25 * 2
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x


@dataclass
class RunResult:
    """The outcome of a run, in the shape ``focustune train --output-json`` writes."""

    method: str
    dataset: str
    seed: int
    epochs: int
    seconds: float
    params: dict[str, Any]
    val: dict[str, Any]
    test: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    #: The phase of the best (selected) epoch, e.g. ``finetune`` for mdgan.
    best_phase: str = ""
    #: What the run trained on: ``imbalance`` profile, ``train_class_counts`` (training split, after the
    #: profile), ``probe_class_counts`` (held out of those as the probe split; None without one).
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    #: Phased methods only (a phase before the mechanism acts): per stage (``before_mechanism``,
    #: ``after_mechanism``) the best epoch within that stage, its phase and its val and test metrics.
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset, "seed": self.seed, "epochs": self.epochs,
                "seconds": self.seconds, "params": self.params, "val": self.val, "test": self.test,
                "history": self.history, "best_epoch": self.best_epoch, "best_phase": self.best_phase,
                "data": self.data, "status": self.status, "stages": self.stages}


#: The two stages of a phased method's run: epochs before its mechanism first acted, and after.
BEFORE_MECHANISM, AFTER_MECHANISM = STAGES


class Trainer:
    """Train ``method`` on ``dataset`` with ``config``; select the best epoch on validation.

    ``data_limit``: bytes of images kept on the device (default :func:`device_data_limit`); a
    dataset above it stays in host memory and its batches are streamed to the device.
    """

    def __init__(self, method: Method, config: TrainConfig, dataset: ImageDataset, *, seed: int = 0,
                 device: str | torch.device | None = None, callback: EpochCallback | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                 data_limit: int | None = None):
        method.check_data(config, dataset)
        self.method, self.config, self.seed = method, config, seed
        self.device = select_device(str(device) if device else None)
        if config.deterministic:  # before the first cuBLAS call of the process, where possible
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
        self.callback = callback
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.log = log or (lambda message: None)
        self.dataset = dataset
        train, probe = self._probe_holdout(dataset)
        limit = data_limit if data_limit is not None else device_data_limit(self.device)
        self.streamed = limit is not None and dataset.image_bytes > limit
        self.data = dataclasses.replace(dataset, train=train).to(self.device, images=not self.streamed)
        self.probe = probe.to(self.device) if probe is not None else None
        if self.streamed:
            self.log(f"dataset images ({dataset.image_bytes / 2**30:.2f} GiB) exceed the device data limit "
                     f"({limit / 2**30:.2f} GiB): kept in host memory, batches streamed")
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        seed_everything(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.model = self._new_model(phase_index=0)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.phases = method.phases(config)
        self.epoch = 0  # next epoch to run
        self.history: list[dict[str, Any]] = []
        self.best_score: tuple[float, float] = (-math.inf, -math.inf)
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        #: Phased methods: stage -> (score, epoch, weights) of the best epoch within that stage.
        self.stage_best: dict[str, tuple[tuple[float, float], int, dict[str, torch.Tensor]]] = {}
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._result: RunResult | None = None
        self.elapsed = 0.0  # seconds of training and validation, across resumes
        self.run = RunContext(config=config, num_classes=dataset.num_classes, device=self.device,
                              generator=self.generator, seed=seed, train=self.data.train, val=self.data.val,
                              probe=self.probe, model=self.model, predict=self.predict_probs, log=self.log)
        method.setup(self.run)

    # ------------------------------------------------------------------ building blocks
    def _probe_holdout(self, dataset: ImageDataset) -> tuple[Split, Split | None]:
        """(training split, probe split): the probe is ``probe_fraction`` of each training class, held out
        (drawn with the run seed) when the method measures itself on it; else None."""
        if not self.method.uses_probe():
            return dataset.train, None
        return dataset.train.stratified_holdout(self.config.probe_fraction, dataset.num_classes, self.seed)

    def data_record(self) -> dict[str, Any]:
        """What the run trains on (see :attr:`RunResult.data`)."""
        k = self.dataset.num_classes
        return {"imbalance": self.dataset.imbalance, "train_class_counts": self.data.train.class_counts(k).tolist(),
                "probe_class_counts": None if self.probe is None else self.probe.class_counts(k).tolist()}

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp:
            return None
        if self.device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if self.device.type != "cuda":
            return None
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None if self.config.optimizer == "sam" else torch.float16

    @property
    def precision(self) -> str:
        """The compute precision of forward passes: 'bfloat16', 'float16' or 'float32'."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")

    def _new_model(self, phase_index: int) -> Classifier:
        """A freshly initialised model, seeded by (run seed, phase) so resets are reproducible."""
        with seeded_init(self.seed * 1009 + phase_index):
            model = build_model(self.config.model, self.dataset.channels, self.dataset.num_classes,
                                self.dataset.image_size, head=self.config.head)
        # channels-last: 1.3-1.5x faster convolutions and pooling on CPU (benchmarks/profile_trainer.py)
        return model.to(self.device, memory_format=torch.channels_last)

    def _optimizer_span(self, index: int) -> int:
        """Epochs from phase ``index`` until a later phase builds a new optimiser (the schedule's horizon)."""
        span = self.phases[index].epochs
        for phase in self.phases[index + 1:]:
            if phase.new_optimizer or phase.reset_model:
                break
            span += phase.epochs
        return span

    def _optimizer_owner(self, index: int) -> int:
        """The phase whose start built the optimiser in use during phase ``index``."""
        while index > 0 and not (self.phases[index].new_optimizer or self.phases[index].reset_model):
            index -= 1
        return index

    def _build_optimizer(self, phase: Phase, index: int) -> None:
        cfg = self.config
        lr = cfg.lr * phase.lr_scale
        params = self.model.parameters()
        # fused CUDA kernels: faster, and GradScaler (fp16) steps them without a host read per batch
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, **fused)
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, **fused)
        elif cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                             weight_decay=cfg.weight_decay, **fused)
        else:
            from pytorch_optimizer import SAM

            self.optimizer = SAM(params, torch.optim.SGD, rho=cfg.sam_rho, lr=lr, momentum=cfg.momentum,
                                 nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.scheduler = self._build_scheduler(self._optimizer_span(index))

    def _build_scheduler(self, epochs: int) -> Any:
        if self.config.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(epochs, 1))
        if self.config.scheduler == "multistep":
            milestones = sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))})
            return torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=milestones, gamma=0.1)
        return None

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the current model for uint8 ``images`` (device tensor)."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for chunk in self._chunks(images, self.config.eval_batch_size):
            with self._autocast():
                out.append(torch.softmax(self.model(normalise(chunk)).float(), dim=1))
        self.model.train(was_training)
        return torch.cat(out)

    def _from_host(self, images: torch.Tensor) -> bool:
        """Whether batches of ``images`` are streamed: the images of a dataset kept in host memory."""
        return self.streamed and images.device.type == "cpu"

    def _chunks(self, images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        """``images`` in consecutive chunks of ``size``, on the device."""
        if self._from_host(images):
            return HostBatches(images, self.device)(torch.arange(len(images)).split(size))
        return iter(images.split(size))

    def _images(self, images: torch.Tensor, indices: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """``images[i]`` on the device for each index tensor: indexed there, or streamed from host memory."""
        if self._from_host(images):
            return HostBatches(images, self.device)(indices)
        return (images[index] for index in indices)

    def evaluate(self, split: Split) -> dict[str, Any]:
        """Metrics of the current model on ``split``."""
        return self._metrics(split, self._checked_probs(split))

    def _checked_probs(self, split: Split) -> torch.Tensor:
        probs = self.predict_probs(split.images)
        if not bool(torch.isfinite(probs).all()):
            raise TrainingDiverged(f"the model's outputs became NaN/inf after epoch {self.epoch + 1}; "
                                   "the run is stopped (last good checkpoint kept)")
        return probs

    @staticmethod
    def _metrics(split: Split, probs: torch.Tensor) -> dict[str, Any]:
        return classification_metrics(split.labels.cpu().numpy(), probs.cpu().numpy())

    # ------------------------------------------------------------------ training
    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            logits = self.model(x)
        losses = self.method.sample_losses(logits.float(), y)
        return self.method.batch_loss(logits.float(), y, losses), losses

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the unweighted per-sample losses (detached)."""
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        loss, losses = self._forward_loss(x, y)
        if self.config.optimizer == "sam":
            from pytorch_optimizer.optimizer.sam import disable_running_stats, enable_running_stats

            loss.backward()
            opt.first_step(zero_grad=True)
            disable_running_stats(self.model)  # BatchNorm statistics from the first pass only
            self._forward_loss(x, y)[0].backward()
            enable_running_stats(self.model)
            opt.second_step(zero_grad=True)
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        return losses.detach()

    def _train_epoch(self, epoch: int, phase: Phase) -> tuple[EpochStats, int]:
        self.model.train()
        data = self.method.training_data(self.run)
        k = self.dataset.num_classes
        loss_sum = torch.zeros(k, device=self.device)
        count = torch.zeros(k, device=self.device)
        seen = 0
        batches = list(self.method.epoch_batches(epoch, data, self.run))
        for index, images in zip(batches, self._images(data.images, batches)):
            x = augment_batch(normalise(images), self.config.augment, self.generator)
            y = data.labels[index]
            losses = self._step(x, y)
            loss_sum.index_add_(0, y, losses.float())
            count.index_add_(0, y, torch.ones_like(losses, dtype=torch.float32))
            seen += int(index.shape[0])
        if self.scheduler is not None:
            self.scheduler.step()
        return EpochStats(epoch, phase.name, loss_sum, count), seen

    def _phase_at(self, epoch: int) -> tuple[int, Phase, int]:
        """(index, phase, first epoch of the phase) for ``epoch``."""
        start = 0
        for i, phase in enumerate(self.phases):
            if epoch < start + phase.epochs:
                return i, phase, start
            start += phase.epochs
        return len(self.phases) - 1, self.phases[-1], start - self.phases[-1].epochs

    @property
    def mechanism_epoch(self) -> int:
        """The first epoch after which the method's mechanism has acted (see :func:`mechanism_epoch`)."""
        return mechanism_epoch(self.phases)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def _begin_epoch(self, epoch: int) -> tuple[int, Phase]:
        index, phase, start = self._phase_at(epoch)
        if epoch == start:
            if phase.reset_model and index > 0:
                self.model = self.run.model = self._new_model(index)
                self.run.val_probs = None
            if self.optimizer is None or phase.new_optimizer or phase.reset_model:
                self._build_optimizer(phase, index)
                if index > 0 and (phase.new_optimizer or phase.reset_model):
                    self._pending_optimizer_state = None  # a resumed run starts this phase afresh
            self.method.start_phase(phase, index, self.run)
        elif self.optimizer is None:  # resumed inside a phase
            owner = self._optimizer_owner(index)
            self._build_optimizer(self.phases[owner], owner)
        if self._pending_optimizer_state is not None:
            state = self._pending_optimizer_state
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self._pending_optimizer_state = None
        return index, phase

    def _patience_exhausted(self, epoch: int) -> bool:
        return self.config.patience > 0 and epoch - self.best_epoch >= self.config.patience

    def fit(self) -> RunResult:
        """Run (or resume) training; return best-epoch validation and test metrics."""
        if self.epoch == 0:  # the global RNG (dropout) starts from the seed, whatever ran since construction
            seed_everything(self.seed)
        while not self.finished:
            self.run_epoch()
        return self.result()

    def run_epoch(self) -> dict[str, Any]:
        """Train the next epoch, validate, checkpoint, call the callback; return the epoch's record.

        The record (as in the history) has ``seconds``: training and the method's ``end_epoch``; the
        returned copy adds ``phase_seconds`` (the phase's start, e.g. mdgan's GAN training) and
        ``val_seconds`` (the validation pass)."""
        with deterministic_algorithms(self.config.deterministic):
            return self._run_epoch()

    def _run_epoch(self) -> dict[str, Any]:
        clock, epoch = time.perf_counter, self.epoch
        started = clock()
        _, phase = self._begin_epoch(epoch)
        training_started = clock()
        self.run.val_probs = None  # the model is about to change
        stats, seen = self._train_epoch(epoch, phase)
        train_loss = float(stats.class_loss_sum.sum() / stats.class_count.sum().clamp_min(1))
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1}; "
                                   "the run is stopped (last good checkpoint kept)")
        validation_started = clock()
        self.run.val_probs = self._checked_probs(self.data.val)  # shared with the method's end_epoch
        method_started = clock()
        diagnostics = self.method.end_epoch(stats, self.run)
        method_seconds = clock() - method_started
        val = self._metrics(self.data.val, self.run.val_probs)
        self.elapsed += clock() - started
        phase_seconds, val_seconds = training_started - started, method_started - validation_started
        seconds = validation_started - training_started + method_seconds
        record = self._record(epoch, phase, train_loss, val, seen, seconds, diagnostics)
        self.epoch = epoch + 1
        if self._patience_exhausted(epoch):
            self._skip_to_next_phase()
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir)
        self.log(self._progress_line(record))
        if self.callback is not None:
            self.callback(self, record)
        return {**record, "phase_seconds": phase_seconds, "val_seconds": val_seconds}

    def _skip_to_next_phase(self) -> None:
        _, phase, start = self._phase_at(self.epoch - 1)
        self.epoch = start + phase.epochs

    def _record(self, epoch: int, phase: Phase, train_loss: float, val: dict[str, Any], seen: int,
                seconds: float, diagnostics: dict[str, Any]) -> dict[str, Any]:
        score = self._selection_score(val)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = self._weights()
        self._record_stage_best(epoch, score)
        record = {"epoch": epoch + 1, "phase": phase.name, "train_loss": train_loss, "val": val,
                  "samples_per_s": seen / max(seconds, 1e-9), "seconds": seconds,
                  "lr": self.optimizer.param_groups[0]["lr"], "best": epoch == self.best_epoch}
        if diagnostics:
            record["method"] = diagnostics
        self.history.append(record)
        return record

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _record_stage_best(self, epoch: int, score: tuple[float, float]) -> None:
        """For a phased method, keep the best epoch before and the best after its mechanism acted
        (sharing the overall best's weights when they are the same epoch)."""
        if self.mechanism_epoch <= 1:
            return
        stage = AFTER_MECHANISM if epoch + 1 >= self.mechanism_epoch else BEFORE_MECHANISM
        if stage not in self.stage_best or score > self.stage_best[stage][0]:
            state = self.best_state if epoch == self.best_epoch else self._weights()
            self.stage_best[stage] = (score, epoch, state)

    def _selection_score(self, val: dict[str, Any]) -> tuple[float, float]:
        """(selection metric, tie-breaker): ties, common with few validation samples, go to AUC
        (or to balanced accuracy when AUC is the selection metric); NaN ranks lowest."""
        primary = self.config.selection_metric
        secondary = "balanced_acc" if primary == "auc" else "auc"
        as_score = lambda v: -math.inf if math.isnan(v) else v  # noqa: E731
        return as_score(val[primary]), as_score(val[secondary])

    def _progress_line(self, record: dict[str, Any]) -> str:
        val = record["val"]
        mark = " *" if record["best"] else ""
        return (f"epoch {record['epoch']:>3}/{self.total_epochs} [{record['phase']}] "
                f"loss {record['train_loss']:.4f}  val acc {val['acc']:.4f} bal_acc {val['balanced_acc']:.4f} "
                f"f1 {val['macro_f1']:.4f} auc {val['auc']:.4f}  {record['samples_per_s']:,.0f} samples/s{mark}")

    @property
    def finished(self) -> bool:
        """True once every epoch has run (or early stopping ended the last phase)."""
        return self.epoch >= self.total_epochs

    def result(self) -> RunResult:
        """Load the best epoch's weights and evaluate them on val and test (once; cached).

        Only call when training is over (:attr:`finished`): it replaces the model's weights.
        """
        if self._result is None:
            with deterministic_algorithms(self.config.deterministic):
                self._result = self._final_result()
        return self._result

    def _final_result(self) -> RunResult:
        other_stages = {stage: self._evaluate_weights(state, epoch)
                        for stage, (_, epoch, state) in self.stage_best.items() if epoch != self.best_epoch}
        best = self._evaluate_weights(self.best_state, self.best_epoch)
        stages = {stage: other_stages.get(stage, best) for stage in sorted(self.stage_best)}
        return RunResult(
            method=self.method.name, dataset=self.dataset.name, seed=self.seed,
            epochs=self.total_epochs, seconds=self.elapsed,
            params=flat_params(self.config, self.method.params), val=best["val"], test=best["test"],
            history=self.history, best_epoch=best["best_epoch"], best_phase=best["best_phase"],
            data=self.data_record(), stages=stages)

    def _evaluate_weights(self, state: dict[str, torch.Tensor] | None, epoch: int) -> dict[str, Any]:
        """Load ``state`` (the weights after 0-based ``epoch``) and evaluate them on val and test."""
        if state is not None:
            self.model.load_state_dict(state)
            self.run.val_probs = None
        return {"best_epoch": epoch + 1, "best_phase": self._phase_of(epoch + 1),
                "val": self.evaluate(self.data.val), "test": self.evaluate(self.data.test)}

    def _phase_of(self, epoch: int) -> str:
        """The recorded phase of (1-based) ``epoch``; "" when no epoch ran."""
        return next((h["phase"] for h in self.history if h["epoch"] == epoch), "")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full training state: model, optimiser, schedule, method, RNG, epoch, best so far."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": {"optimizer": self.optimizer.state_dict() if self.optimizer else None,
                          "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                          "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None},
            "method": self.method.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                    "generator_device": self.generator.device.type,
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "best": {"score": self.best_score, "epoch": self.best_epoch, "state": self.best_state},
            "stage_best": {stage: {"score": score, "epoch": epoch, "state": state}
                           for stage, (score, epoch, state) in self.stage_best.items()},
            "history": self.history,
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, written on this device type or another (CPU <-> CUDA)."""
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer = None  # rebuilt at the next epoch; it moves its loaded state to the parameters' device
        self._pending_optimizer_state = state["optimizer"] if state["optimizer"]["optimizer"] else None
        self.method.load_state_dict(_to_device(state["method"], self.device))
        self._restore_rng(state["rng"])
        best = state["best"]
        self.best_score, self.best_epoch = tuple(best["score"]), best["epoch"]
        self.best_state = _to_device(best["state"], self.device)
        self.stage_best = {stage: (tuple(b["score"]), b["epoch"], _to_device(b["state"], self.device))
                           for stage, b in state.get("stage_best", {}).items()}
        self.history = list(state["history"])
        self.elapsed = float(state.get("elapsed", 0.0))

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        """Random streams as saved. RNG states are CPU byte tensors whatever the device; a generator
        state saved on another device type does not fit this one's generator, which then restarts
        from (seed, epoch): the continuation is reproducible, though not the stream the other
        device would have drawn."""
        torch.set_rng_state(rng["torch"].cpu())
        restart_seed = self.seed * 1_000_003 + self.epoch
        if rng.get("generator_device", "cpu") == self.generator.device.type:
            self.generator.set_state(rng["generator"].cpu())
        else:
            self.generator.manual_seed(restart_seed)
        if self.device.type == "cuda":
            if isinstance(rng.get("cuda"), torch.Tensor):
                torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
            else:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(restart_seed)

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write the state atomically to ``directory/checkpoint.pt``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CHECKPOINT_FILE
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, directory: str | os.PathLike) -> bool:
        """Restore from ``directory/checkpoint.pt`` if present; returns whether it was."""
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            return False
        # onto the CPU: RNG states must stay CPU tensors; load_state_dict places the rest on the device
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return True


def _to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside (nested dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def train(method: Method, config: TrainConfig, dataset: ImageDataset, **kwargs: Any) -> RunResult:
    """Convenience wrapper: ``Trainer(...).fit()``."""
    return Trainer(method, config, dataset, **kwargs).fit()
