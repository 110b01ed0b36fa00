"""The optimiser (Adam, AdamW, SGD or SAM), its learning-rate schedule and the optimisation step.

A phase that resets the model or asks for a new optimiser builds one; its schedule spans the
epochs until the next phase that builds one. Only the trainer steps the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from focustune.config import TrainConfig
from focustune.methods.base import Phase


def builds_optimizer(phase: Phase) -> bool:
    """Whether ``phase`` starts with a new optimiser (and schedule)."""
    return phase.new_optimizer or phase.reset_model


def optimizer_span(phases: list[Phase], index: int) -> int:
    """Epochs from phase ``index`` until a later phase builds a new optimiser (the schedule's horizon)."""
    span = phases[index].epochs
    for phase in phases[index + 1:]:
        if builds_optimizer(phase):
            break
        span += phase.epochs
    return span


def optimizer_owner(phases: list[Phase], index: int) -> int:
    """The phase whose start built the optimiser in use during phase ``index``."""
    while index > 0 and not builds_optimizer(phases[index]):
        index -= 1
    return index


def build_optimizer(config: TrainConfig, params: Iterable[torch.nn.Parameter], lr: float,
                    device: torch.device) -> torch.optim.Optimizer:
    """``config.optimizer`` over ``params`` at learning rate ``lr``; fused kernels on CUDA."""
    # fused CUDA kernels: faster, and GradScaler (fp16) steps them without a host read per batch
    fused = True if device.type == "cuda" else None  # None: torch's default (not False, which turns foreach off)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, fused=fused)
    from pytorch_optimizer import SAM

    return SAM(params, torch.optim.SGD, rho=config.sam_rho, lr=lr, momentum=config.momentum,
               nesterov=config.nesterov, weight_decay=config.weight_decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, epochs: int) -> Any:
    """``config.scheduler`` over ``epochs`` epochs (None for a constant learning rate)."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if config.scheduler == "multistep":
        milestones = sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return None


def sam_step(optimizer: Any, model: torch.nn.Module, loss: torch.Tensor,
             loss_again: Callable[[], torch.Tensor]) -> None:
    """SAM's two passes: ascend to the perturbed weights with ``loss``'s gradient, then step with the
    gradient of ``loss_again()`` there (BatchNorm statistics from the first pass only)."""
    from pytorch_optimizer.optimizer.sam import disable_running_stats, enable_running_stats

    loss.backward()
    optimizer.first_step(zero_grad=True)
    disable_running_stats(model)
    loss_again().backward()
    enable_running_stats(model)
    optimizer.second_step(zero_grad=True)


class Optimisation:
    """A run's optimiser, schedule and float16 gradient scaler across its phases, and their state.

    A loaded state waits until the optimiser is rebuilt (at the next epoch, on the parameters'
    device), unless that epoch starts a phase that builds a new one."""

    def __init__(self, config: TrainConfig, phases: list[Phase], device: torch.device, scale_gradients: bool):
        self.config, self.phases, self.device = config, phases, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=scale_gradients)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self._saved: dict[str, Any] | None = None

    @property
    def lr(self) -> float:
        return self._built().param_groups[0]["lr"]

    def _built(self) -> torch.optim.Optimizer:
        """The optimiser in use (:meth:`prepare` builds it before each epoch)."""
        if self.optimizer is None:
            raise RuntimeError("no optimiser yet: prepare() builds one before training")
        return self.optimizer

    def build(self, model: torch.nn.Module, index: int) -> None:
        """A new optimiser for phase ``index``, its schedule spanning the phases it serves."""
        lr = self.config.lr * self.phases[index].lr_scale
        self.optimizer = build_optimizer(self.config, model.parameters(), lr, self.device)
        self.scheduler = build_scheduler(self.config, self.optimizer, optimizer_span(self.phases, index))

    def prepare(self, model: torch.nn.Module, index: int, phase_start: bool) -> None:
        """Have the optimiser of phase ``index`` ready: a new one where the phase (or the run) starts
        with one; resumed inside a phase, the one its owning phase built."""
        phase = self.phases[index]
        if phase_start and (self.optimizer is None or builds_optimizer(phase)):
            self.build(model, index)
            if index > 0 and builds_optimizer(phase):
                self._saved = None  # a resumed run starts this phase afresh
        elif self.optimizer is None:
            self.build(model, optimizer_owner(self.phases, index))

    def restore_saved(self) -> None:
        """Load the state given to :meth:`load_state_dict` into the (rebuilt) optimiser, once."""
        if self._saved is None:
            return
        state, self._saved = self._saved, None
        self._built().load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def zero_grad(self) -> None:
        self._built().zero_grad(set_to_none=True)

    def step(self, model: torch.nn.Module, loss: torch.Tensor, loss_again: Callable[[], torch.Tensor]) -> None:
        """Minimise ``loss`` (gradients not computed yet); SAM also needs ``loss_again`` (a fresh forward)."""
        if self.config.optimizer == "sam":
            sam_step(self.optimizer, model, loss, loss_again)
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self._built())
        self.scaler.update()

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep ``state`` for the optimiser rebuilt at the next epoch (see :meth:`restore_saved`)."""
        self.optimizer = self.scheduler = None
        self._saved = state if state["optimizer"] else None
