"""The one training loop every method runs under.

Data lives on the training device as uint8 tensors; a batch is indexed from them, normalised
and (optionally) augmented in one batched operation. A dataset whose images exceed the device's
data limit stays in host memory and its batches are streamed (:mod:`focustune.data.streaming`).
Per-batch work never synchronises with the host: losses are accumulated on the device and read
once per epoch. The loop composes its parts: :mod:`.device` (precision, determinism, seeding),
:mod:`.optimisers`, :mod:`.evaluation` (best-epoch selection) and :mod:`.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch

from focustune.config import TrainConfig, flat_params
from focustune.data import ImageDataset, Split
from focustune.data.streaming import DeviceBatches
from focustune.errors import TrainingDiverged
from focustune.methods.base import EpochStats, Method, Phase, RunContext, mechanism_epoch
from focustune.metric_table import METRICS, metric_row
from focustune.models import Classifier, build_model, seeded_init
from focustune.operating_points import parse_rule
from focustune.shared_store import SharedStore
from focustune.training import checkpoints
from focustune.training.device import (amp_dtype, autocast, deterministic_algorithms, device_data_limit,
                                       precision_name, reserve_deterministic_workspace, seed_everything,
                                       select_device)
from focustune.training.evaluation import (BestEpochs, EpochEvaluation, RunResult, Weights, finite, predict_logits,
                                           split_metrics)
from focustune.training.optimisers import Optimisation
from focustune.transforms import augment_batch, normalise

EpochCallback = Callable[["Trainer", dict[str, Any]], None]
#: An epoch one optimisation step at a time (:meth:`Trainer.epoch_steps`): it yields each training
#: batch (x, y), takes back the step's detached per-sample losses and returns the epoch's record.
EpochSteps = Generator[tuple[torch.Tensor, torch.Tensor], torch.Tensor, dict[str, Any]]
StepFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def drive(steps: EpochSteps, step: StepFunction) -> dict[str, Any]:
    """Run ``steps`` to its end, taking each of its batches with ``step``; return the epoch's record."""
    try:
        batch = next(steps)
        while True:
            batch = steps.send(step(*batch))
    except StopIteration as end:
        return end.value


def check_operating_point(config: TrainConfig, dataset: ImageDataset) -> None:
    """Refuse (ConfigError), before any training, an operating point naming a class ``dataset`` lacks."""
    parse_rule(config.operating_point, config.selection_metric).check_classes([str(c) for c in dataset.class_names])


def phase_at(phases: list[Phase], epoch: int) -> tuple[int, Phase, int]:
    """(index, phase, first epoch of the phase) for (0-based) ``epoch``."""
    start = 0
    for i, phase in enumerate(phases):
        if epoch < start + phase.epochs:
            return i, phase, start
        start += phase.epochs
    return len(phases) - 1, phases[-1], start - phases[-1].epochs


def progress_line(record: dict[str, Any], total_epochs: int) -> str:
    """The log line of an epoch's ``record``."""
    val = " ".join(f"{m.short_name} {record['val'][m.name]:.4f}" for m in METRICS if m.short_name)
    mark = " *" if record["best"] else ""
    return (f"epoch {record['epoch']:>3}/{total_epochs} [{record['phase']}] "
            f"loss {record['train_loss']:.4f}  val {val}  {record['samples_per_s']:,.0f} samples/s{mark}")


class Trainer:
    """Train ``method`` on ``dataset`` with ``config``; select the best epoch on validation.

    ``data_limit``: bytes of images kept on the device (default :func:`device_data_limit`); a
    dataset above it stays in host memory and its batches are streamed to the device. ``gan_store``:
    where a method that trains GANs (mdgan) keeps them and finds them again.
    """

    def __init__(self, method: Method, config: TrainConfig, dataset: ImageDataset, *, seed: int = 0,
                 device: str | torch.device | None = None, callback: EpochCallback | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                 data_limit: int | None = None, gan_store: SharedStore | None = None):
        method.check_data(config, dataset)
        check_operating_point(config, dataset)
        self.method, self.config, self.seed, self.dataset = method, config, seed, dataset
        self.device = select_device(str(device) if device else None)
        if config.deterministic:  # before the first cuBLAS call of the process, where possible
            reserve_deterministic_workspace()
        self.callback, self.log = callback, log or (lambda message: None)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._place_data(dataset, data_limit)
        self.amp_dtype = amp_dtype(config.amp, self.device, config.optimizer)
        seed_everything(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.model = self._new_model(phase_index=0)
        self.phases = method.phases(config)
        self.optimisation = Optimisation(config, self.phases, self.device, self.amp_dtype == torch.float16)
        self.best = BestEpochs(metric_row(config.selection_metric), self.mechanism_epoch)
        self.epoch = 0  # next epoch to run
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0  # seconds of training and validation, across resumes
        self._result: RunResult | None = None
        self._logits: tuple[torch.Tensor, torch.Tensor] | None = None  # (val, test) of the last weights evaluated
        self._compiled: tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None = None
        self._compiled_sizes: set[int] = set()  # batch sizes the compiled forward has seen
        self._compile_seconds = 0.0  # this epoch's steps that compiled (config.compile)
        self.run = RunContext(config=config, num_classes=dataset.num_classes, device=self.device,
                              generator=self.generator, seed=seed, train=self.data.train, val=self.data.val,
                              probe=self.probe, model=self.model, predict=self.predict_probs, log=self.log,
                              gan_store=gan_store)
        method.setup(self.run)

    # ------------------------------------------------------------------ building blocks
    def _place_data(self, dataset: ImageDataset, data_limit: int | None) -> None:
        """The run's splits on the device (images in host memory when above the data limit). A method
        that measures itself on a probe split gets ``probe_fraction`` of each training class held out
        for it (drawn with the run seed)."""
        train, probe = dataset.train, None
        if self.method.uses_probe():
            train, probe = dataset.train.stratified_holdout(self.config.probe_fraction, dataset.num_classes,
                                                            self.seed)
        limit = data_limit if data_limit is not None else device_data_limit(self.device)
        self.streamed = limit is not None and dataset.image_bytes > limit
        self.batch_source = DeviceBatches(self.device, self.streamed)
        self.data = dataclasses.replace(dataset, train=train).to(self.device, images=not self.streamed)
        self.probe = probe.to(self.device) if probe is not None else None
        if self.streamed and limit is not None:
            self.log(f"dataset images ({dataset.image_bytes / 2**30:.2f} GiB) exceed the device data limit "
                     f"({limit / 2**30:.2f} GiB): kept in host memory, batches streamed")

    def data_record(self) -> dict[str, Any]:
        """What the run trains on (see :attr:`RunResult.data`)."""
        k = self.dataset.num_classes
        return {"imbalance": self.dataset.imbalance, "train_class_counts": self.data.train.class_counts(k).tolist(),
                "probe_class_counts": None if self.probe is None else self.probe.class_counts(k).tolist()}

    @property
    def precision(self) -> str:
        """The compute precision of forward passes: 'bfloat16', 'float16' or 'float32'."""
        return precision_name(self.amp_dtype)

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.amp_dtype)

    def _new_model(self, phase_index: int) -> Classifier:
        """A freshly initialised model, seeded by (run seed, phase) so resets are reproducible."""
        with seeded_init(self.seed * 1009 + phase_index):
            model = build_model(self.config.model, self.dataset.channels, self.dataset.num_classes,
                                self.dataset.image_size, head=self.config.head)
        # channels-last: 1.3-1.5x faster convolutions and pooling on CPU (benchmarks/profile_trainer.py)
        # (torch's overloads of Module.to leave out (device, memory_format=), which it accepts)
        return model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.optimisation.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.optimisation.scaler

    @property
    def best_score(self) -> tuple[float, float]:
        """(selection metric, tie-breaker) of the best epoch so far."""
        return self.best.score

    @property
    def best_state(self) -> Weights | None:
        """The best epoch's weights."""
        return self.best.state

    # ------------------------------------------------------------------ data and evaluation
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """float32 logits of the current model for uint8 ``images`` (device tensor)."""
        return predict_logits(self.model, self.batch_source.chunks(images, self.config.eval_batch_size),
                              self._autocast)

    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the current model for uint8 ``images`` (device tensor)."""
        return torch.softmax(self.predict_logits(images), dim=1)

    def evaluate(self, split: Split) -> dict[str, Any]:
        """Metrics of the current model on ``split``."""
        return split_metrics(split, self._checked_probs(split))

    def _checked_probs(self, split: Split) -> torch.Tensor:
        return finite(self.predict_probs(split.images), self.epoch)

    def _checked_logits(self, split: Split) -> torch.Tensor:
        return finite(self.predict_logits(split.images), self.epoch)

    # ------------------------------------------------------------------ training
    def _training_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model's forward pass for training: itself, or with ``compile`` its ``torch.compile``d
        form (compiled again when a phase builds a new model; evaluation stays eager)."""
        if not self.config.compile:
            return self.model
        if self._compiled is None or self._compiled[0] is not self.model:
            self._compiled, self._compiled_sizes = (self.model, torch.compile(self.model)), set()
        return self._compiled[1]

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            logits = self._training_forward()(x)
        losses = self.method.sample_losses(logits.float(), y)
        return self.method.batch_loss(logits.float(), y, losses), losses

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step, then the method's ``end_step``; returns the unweighted per-sample
        losses of the step's first forward pass (detached)."""
        compiling = self.config.compile and (self._compiled is None or self._compiled[0] is not self.model
                                             or x.shape[0] not in self._compiled_sizes)
        started = time.perf_counter()
        self.optimisation.zero_grad()
        loss, losses = self._forward_loss(x, y)
        self.optimisation.step(self.model, loss, lambda: self._forward_loss(x, y)[0])
        losses = losses.detach()
        if compiling:  # a step that compiles (a new model or batch size): its time, read once
            losses.sum().item()
            self._compile_seconds += time.perf_counter() - started
            self._compiled_sizes.add(x.shape[0])
        self.method.end_step(y, losses)
        return losses

    def _train_epoch(self, epoch: int, phase: Phase) -> Generator[
            tuple[torch.Tensor, torch.Tensor], torch.Tensor, tuple[EpochStats, int]]:
        self.model.train()
        data = self.method.training_data(self.run)
        k = self.dataset.num_classes
        loss_sum = torch.zeros(k, device=self.device)
        count = torch.zeros(k, device=self.device)
        seen = 0
        for index, images in self.batch_source(data.images, self.method.epoch_batches(epoch, data, self.run)):
            x = augment_batch(normalise(images), self.config.augment, self.generator)
            y = data.labels[index]
            losses = yield x, y  # trained by _step, or by a pack's stacked step (training/packing.py)
            loss_sum.index_add_(0, y, losses.float())
            count.index_add_(0, y, torch.ones_like(losses, dtype=torch.float32))
            seen += int(index.shape[0])
        self.optimisation.end_epoch()
        return EpochStats(epoch, phase.name, loss_sum, count), seen

    @property
    def mechanism_epoch(self) -> int:
        """The first epoch after which the method's mechanism has acted (see :func:`mechanism_epoch`)."""
        return mechanism_epoch(self.phases)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def _begin_epoch(self, epoch: int) -> tuple[int, Phase]:
        """Start (0-based) ``epoch``: at a phase's start, a reset model if it asks, a ready optimiser,
        the method's ``start_phase``; a loaded optimiser state is restored."""
        index, phase, start = phase_at(self.phases, epoch)
        if epoch == start and phase.reset_model and index > 0:
            self.model = self.run.model = self._new_model(index)
            self.run.val_probs = None
        self.optimisation.prepare(self.model, index, phase_start=epoch == start)
        if epoch == start:
            self.method.start_phase(phase, index, self.run)
        self.optimisation.restore_saved()
        return index, phase

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
            return drive(self.epoch_steps(), self._step)

    def epoch_steps(self) -> EpochSteps:
        """:meth:`run_epoch` (without its determinism setting) one optimisation step at a time, for a
        driver that trains the batches itself: it must step like :meth:`_step` (the method's
        ``end_step`` included) and send back the detached per-sample losses."""
        clock, epoch = time.perf_counter, self.epoch
        started = clock()
        _, phase = self._begin_epoch(epoch)
        training_started = clock()
        self.run.val_probs = None  # the model is about to change
        stats, seen = yield from self._train_epoch(epoch, phase)
        train_loss = float(stats.class_loss_sum.sum() / stats.class_count.sum().clamp_min(1))
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1}; "
                                   "the run is stopped (last good checkpoint kept)")
        validation_started = clock()
        self.run.val_probs = self._checked_probs(self.data.val)  # shared with the method's end_epoch
        method_started = clock()
        diagnostics = self.method.end_epoch(stats, self.run)
        method_seconds = clock() - method_started
        val = split_metrics(self.data.val, self.run.val_probs)
        self.elapsed += clock() - started
        phase_seconds, val_seconds = training_started - started, method_started - validation_started
        seconds = validation_started - training_started + method_seconds
        record = self._record(epoch, phase, train_loss, val, seen, seconds, diagnostics)
        self.epoch = epoch + 1
        if self.config.patience > 0 and epoch - self.best.epoch >= self.config.patience:
            self.epoch = self._phase_end(epoch)  # early stopping ends the phase
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir)
        self.log(progress_line(record, self.total_epochs))
        if self.callback is not None:
            self.callback(self, record)
        return {**record, "phase_seconds": phase_seconds, "val_seconds": val_seconds}

    def _phase_end(self, epoch: int) -> int:
        """The first epoch after the phase of ``epoch``."""
        _, phase, start = phase_at(self.phases, epoch)
        return start + phase.epochs

    def _record(self, epoch: int, phase: Phase, train_loss: float, val: dict[str, Any], seen: int,
                seconds: float, diagnostics: dict[str, Any]) -> dict[str, Any]:
        is_best = self.best.update(epoch, val, self._weights)
        record = {"epoch": epoch + 1, "phase": phase.name, "train_loss": train_loss, "val": val,
                  "samples_per_s": seen / max(seconds, 1e-9), "seconds": seconds,
                  "lr": self.optimisation.lr, "best": is_best}
        if self.config.compile:  # the steps that compiled, inside ``seconds``
            record["compile_seconds"], self._compile_seconds = self._compile_seconds, 0.0
        if diagnostics:
            record["method"] = diagnostics
        self.history.append(record)
        return record

    def _weights(self) -> Weights:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @property
    def finished(self) -> bool:
        """True once every epoch has run (or early stopping ended the last phase)."""
        return self.epoch >= self.total_epochs

    # ------------------------------------------------------------------ the result
    def result(self) -> RunResult:
        """Load the best epoch's weights and evaluate them on val and test (once; cached).

        Only call when training is over (:attr:`finished`): it replaces the model's weights.
        """
        if self._result is None:
            with deterministic_algorithms(self.config.deterministic):
                self._result = self._final_result()
        return self._result

    def _final_result(self) -> RunResult:
        from focustune.calibration import calibration_record

        best, stages = self.best.evaluated(self._evaluate_weights)
        assert self._logits is not None  # the best's, evaluated last
        (val_logits, test_logits), labels = self._logits, (self.data.val.labels, self.data.test.labels)
        calibration = calibration_record(val_logits.cpu().numpy(), labels[0].cpu().numpy(),
                                         test_logits.cpu().numpy(), labels[1].cpu().numpy())
        return RunResult(
            method=self.method.name, dataset=self.dataset.name, seed=self.seed,
            epochs=self.total_epochs, seconds=self.elapsed,
            params=flat_params(self.config, self.method.params), val=best.val, test=best.test,
            history=self.history, best_epoch=best.best_epoch, best_phase=best.best_phase,
            data=self.data_record(), stages=stages, calibration=calibration)

    def _evaluate_weights(self, state: Weights | None, epoch: int) -> EpochEvaluation:
        """Load ``state`` (the weights after 0-based ``epoch``) and evaluate them on val and test; their
        logits are kept (``_logits``) for the temperature scaling of the best, which is evaluated last."""
        if state is not None:
            self.model.load_state_dict(state)
            self.run.val_probs = None
        self._logits = (self._checked_logits(self.data.val), self._checked_logits(self.data.test))
        val, test = (split_metrics(split, torch.softmax(logits, dim=1))
                     for split, logits in zip((self.data.val, self.data.test), self._logits))
        return EpochEvaluation(best_epoch=epoch + 1, best_phase=self._phase_of(epoch + 1), val=val, test=test)

    def _phase_of(self, epoch: int) -> str:
        """The recorded phase of (1-based) ``epoch``; "" when no epoch ran."""
        return next((h["phase"] for h in self.history if h["epoch"] == epoch), "")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full training state: model, optimiser, schedule, method, RNG, epoch, best so far."""
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimisation.state_dict(),
                "method": self.method.state_dict(), "rng": checkpoints.rng_state(self.generator, self.device),
                **self.best.state_dict(), "history": self.history, "elapsed": self.elapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, written on this device type or another (CPU <-> CUDA)."""
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimisation.load_state_dict(state["optimizer"])  # rebuilt at the next epoch, on the device
        self.method.load_state_dict(checkpoints.to_device(state["method"], self.device))
        restart_seed = self.seed * 1_000_003 + self.epoch  # a generator saved on another device type restarts
        checkpoints.restore_rng(state["rng"], self.generator, self.device, restart_seed)
        self.best.load_state_dict(state, self.device)
        self.history = list(state["history"])
        self.elapsed = float(state.get("elapsed", 0.0))

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write the state atomically to ``directory/checkpoint.pt``."""
        return checkpoints.save_checkpoint(directory, self.state_dict())

    def load_checkpoint(self, directory: str | os.PathLike) -> bool:
        """Restore from ``directory/checkpoint.pt`` if present; returns whether it was."""
        state = checkpoints.load_checkpoint(directory)
        if state is not None:
            self.load_state_dict(state)
        return state is not None
