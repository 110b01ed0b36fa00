"""The strategy interface through which a training method plugs into the shared trainer.

A method decides how an epoch's batches are drawn, which per-sample loss is used and how
per-sample losses are weighted into the batch loss, and what happens between epochs and phases.
It never touches the optimiser: the trainer owns the loop, the optimiser and the schedule.
All per-batch work stays on the training device (no host synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from focustune.config import TrainConfig
    from focustune.data import ImageDataset, Split
    from focustune.models import Classifier
    from focustune.shared_store import SharedStore


@dataclass
class NoParams:
    """A method without hyperparameters of its own."""


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs; at its start the trainer can re-initialise the model or optimiser."""

    name: str
    epochs: int
    reset_model: bool = False
    new_optimizer: bool = False
    lr_scale: float = 1.0
    #: False for a phase before the method's own mechanism acts (IMET's equal-class iteration,
    #: mdgan's pretraining): scores of its epochs say nothing about the method's hyperparameters.
    mechanism: bool = True


def mechanism_epoch(phases: list[Phase]) -> int:
    """The first epoch (1-based) after which the method's mechanism has acted: the first epoch of
    its first mechanism phase. Early stopping never judges a trial before it."""
    before = 0
    for phase in phases:
        if phase.mechanism:
            return before + 1
        before += phase.epochs
    return max(before, 1)


@dataclass
class RunContext:
    """What a method may see of the run. Tensors live on ``device``."""

    config: TrainConfig
    num_classes: int
    device: torch.device
    generator: torch.Generator
    seed: int
    train: Split
    val: Split
    model: Classifier
    predict: Callable[[torch.Tensor], torch.Tensor]
    log: Callable[[str], None] = print
    #: The probe split (held out of the training split) when the method asked for one, else None.
    probe: Split | None = None
    #: The current model's validation probabilities: set by the trainer after an epoch's training
    #: (it evaluates validation anyway), cleared when training goes on.
    val_probs: torch.Tensor | None = None
    #: Where trained GANs are kept and found again (mdgan), or None: each run trains its own.
    gan_store: SharedStore | None = None

    @property
    def class_counts(self) -> torch.Tensor:
        return self.train.class_counts(self.num_classes)

    def val_predictions(self) -> torch.Tensor:
        """Validation probabilities of the current model, predicted only when not known yet."""
        if self.val_probs is None:
            self.val_probs = self.predict(self.val.images)
        return self.val_probs


@dataclass
class EpochStats:
    """What the trainer measured over one epoch's training batches (device tensors)."""

    epoch: int
    phase: str
    class_loss_sum: torch.Tensor
    class_count: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def class_loss_mean(self) -> torch.Tensor:
        return self.class_loss_sum / self.class_count.clamp_min(1)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for statistics accumulated on ``device`` over an epoch; float32 where float64 is missing (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded permutation of ``range(n)`` cut into batches (the last may be smaller)."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    return list(order.split(batch_size))


class Method:
    """Base strategy: plain cross-entropy on shuffled batches (what ``erm`` uses unchanged)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    #: Preferred values of shared hyperparameters (the user's ``--set`` still wins).
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Any | None = None):
        self.params = params if params is not None else self.Params()

    # ---- lifecycle -------------------------------------------------------
    def check_data(self, config: TrainConfig, dataset: ImageDataset) -> None:
        """Refuse (ConfigError) a dataset this configuration cannot train on, before any training."""

    def uses_probe(self) -> bool:
        """Whether the trainer should hold a probe split out of the training split (``run.probe``)."""
        return False

    def setup(self, run: RunContext) -> None:
        """Called once before training, with the data already on the device."""

    def phases(self, config: TrainConfig) -> list[Phase]:
        """The run's phases; one phase of ``config.epochs`` epochs by default."""
        return [Phase("train", config.epochs)]

    def start_phase(self, phase: Phase, index: int, run: RunContext) -> None:
        """Called when a phase begins (not again when a run resumes inside it)."""

    def training_data(self, run: RunContext) -> Split:
        """The split an epoch draws from (a method may add generated samples)."""
        return run.train

    # ---- per epoch / per batch --------------------------------------------
    def epoch_batches(self, epoch: int, data: Split, run: RunContext) -> Iterable[torch.Tensor]:
        """Index tensors into ``data``, one per batch. With the data on the device the trainer takes the
        next one only after the batch before has been trained on (its :meth:`end_step` called), so a
        generator may compose each batch from what the previous one taught; streamed data (kept in host
        memory) draws every batch of the epoch first, to gather them ahead."""
        return shuffled_batches(len(data), run.config.batch_size, run.generator)

    def sample_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (the criterion); cross-entropy by default."""
        return F.cross_entropy(logits.float(), targets, reduction="none")

    def batch_loss(self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Combine per-sample losses into the loss to minimise; the plain mean by default. Called once
        per forward pass: twice per optimiser step under SAM (see :meth:`end_step`)."""
        return losses.mean()

    def end_step(self, targets: torch.Tensor, losses: torch.Tensor) -> None:
        """Called once per optimiser step, after it, with the batch's targets and the per-sample losses
        of the step's first forward pass (detached); state that moves once per step moves here."""

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        """Called after each epoch's training; returns diagnostics to log (plain Python values).

        ``run.val_predictions()`` gives the validation probabilities the trainer already computed."""
        return {}

    def images(self) -> dict[str, torch.Tensor]:
        """Images to record with the run, uint8 [C, H, W] by artifact path (``*.png``); none by default."""
        return {}

    def tags(self) -> dict[str, str]:
        """Text to record with the run as tags (names from :mod:`focustune.tracking_schema`); none by default."""
        return {}

    # ---- checkpoints -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state for checkpoints: tensors, numbers, strings, lists and dicts only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
