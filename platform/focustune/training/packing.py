"""Packed trials: K trainers of one study trained in one process as one stacked model.

Each member is a whole :class:`~focustune.training.loop.Trainer`: its own model, optimiser (its own
learning rate, weight decay, schedule), method object, data order, seed, checkpoints, records and
best-epoch selection. Only the optimisation step is shared. In each step every active member draws
its next batch (its trainer's own :meth:`~Trainer.epoch_steps`); the members' live parameters are
stacked (``torch.stack``, so gradients flow back to each member's own leaves) and one ``vmap`` of
``functional_call`` runs the forward pass of all of them over a [K, B, ...] batch; each member's
method turns its slice of the logits into its loss; the sum of the losses backpropagates once
and each member's optimiser steps (SAM's second pass is stacked too). Validation, the method's
epoch hooks and checkpoints run per member, exactly as in a solo run.

Exactness. A member trains as its solo run with the same seed does, up to float rounding of the
stacked kernels (a grouped convolution instead of K convolutions):

* random streams: each member keeps its own copy of the process-global generators (torch's CPU and
  CUDA streams, NumPy's), swapped in whenever its code runs, so dropout masks and anything else a
  method draws globally come from the stream its solo run would draw them from;
* dropout: inside ``vmap`` each member's mask is drawn beforehand from its own stream, as
  ``nn.Dropout`` draws it on the CPU (``bernoulli_`` on a tensor like its input, divided by 1 - p);
  on CUDA, where dropout's fused kernel draws differently, the masks have the same law but are not
  the solo run's bits;
* BatchNorm: the members' running statistics are stacked as batched buffers, updated inside
  ``vmap`` and copied back to each member.

Members need not be at the same epoch, phase or batch size: a step stacks the members whose batches
have one shape (and trains the others in their own stacks); a member whose epoch has no more batches
finishes it (validation, checkpoint, callback) while the others go on. Members join at any time
(:meth:`Pack.add`, e.g. a trial started while others train) and leave when they finish, are dropped
(:meth:`Pack.drop`, e.g. stopped by a scheduler) or diverge (their loss became NaN/inf: the member
is dropped with its :class:`~focustune.errors.TrainingDiverged`); the others go on as before.
Every method packs: phased ones (imet, mdgan) too, each member at its own phase; mdgan's GAN
training runs in its phase start, per member, so its packs gain little.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from focustune.errors import ConfigError, TrainingDiverged
from focustune.training.device import autocast, deterministic_algorithms, seed_everything
from focustune.training.evaluation import RunResult
from focustune.training.loop import EpochSteps, Trainer

#: Why compiled trials do not pack.
COMPILE_REFUSED = ("a pack trains its own stacked forward pass, which compile=true does not reach; "
                   "run compiled trials unpacked (--pack 1)")
#: Modules drawing random numbers that a pack cannot give each member its own stream for.
UNPACKABLE_RANDOM_MODULES = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
Batch = tuple[torch.Tensor, torch.Tensor]
#: shape, strides and dtype of a dropout layer's input
Layout = tuple[torch.Size, tuple[int, ...], torch.dtype]


@dataclass
class RandomStreams:
    """The process-global random streams of one member: torch's CPU (and CUDA) stream and NumPy's."""

    device: torch.device
    cpu: torch.Tensor
    cuda: torch.Tensor | None
    numpy: Any

    @classmethod
    def current(cls, device: torch.device) -> RandomStreams:
        return cls(device, torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                   np.random.get_state())

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> RandomStreams:
        """The streams as :func:`seed_everything` leaves them (what a solo run's ``fit`` starts from)."""
        with swapped(None, device):
            seed_everything(seed)
            return cls.current(device)

    def install(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        np.random.set_state(self.numpy)


@contextmanager
def swapped(streams: RandomStreams | None, device: torch.device) -> Iterator[None]:
    """Inside: the global random streams are ``streams`` (the current ones when None); afterwards
    ``streams`` holds where they got to and the process's own streams are back."""
    own = RandomStreams.current(device)
    if streams is not None:
        streams.install()
    try:
        yield
    finally:
        if streams is not None:
            now = RandomStreams.current(device)
            streams.cpu, streams.cuda, streams.numpy = now.cpu, now.cuda, now.numpy
        own.install()


class MemberDropout(nn.Module):
    """``nn.Dropout`` inside the stacked forward: multiplies by a mask given per member (buffer
    ``mask``, batched like the parameters). With ``probe`` set it records its input's layout instead."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.empty(0), persistent=False)
        self.probe: list[Layout] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.probe is not None:
            self.probe.append((x.shape, x.stride(), x.dtype))
            return x
        return x * self.mask if self.training and self.p > 0 else x

    def draw(self, like: Layout, device: torch.device) -> torch.Tensor:
        """A mask as ``nn.Dropout`` draws it on the CPU, from the global stream (none drawn for p = 1)."""
        shape, stride, dtype = like
        noise = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        if self.p >= 1:
            return noise.zero_()
        return noise.bernoulli_(1 - self.p).div_(1 - self.p)


def stacked_template(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for the stacked forward: its ``nn.Dropout`` layers take masks per member."""
    template = copy.deepcopy(model)
    for parent in list(template.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, MemberDropout(child.p))
    return template.train()


def check_packable(trainers: Sequence[Trainer]) -> None:
    """Refuse (ConfigError) trainers that cannot train as one stacked model."""
    if not trainers:
        raise ConfigError("a pack needs at least one trial")
    first = trainers[0]
    if any(trainer.config.compile for trainer in trainers):
        raise ConfigError(COMPILE_REFUSED)
    shape = _architecture(first.model)
    for trainer in trainers:
        same = {"device": trainer.device == first.device, "precision": trainer.amp_dtype == first.amp_dtype,
                "deterministic": trainer.config.deterministic == first.config.deterministic,
                "model": _architecture(trainer.model) == shape}
        differing = [name for name, equal in same.items() if not equal]
        if differing:
            raise ConfigError(f"trials packed together must share model, data shape, device and precision; "
                              f"these differ: {', '.join(differing)} (model {trainer.config.model}/"
                              f"{trainer.config.head} vs {first.config.model}/{first.config.head})")
    for module in first.model.modules():
        if isinstance(module, UNPACKABLE_RANDOM_MODULES) or type(module).__name__ == "StochasticDepth":
            raise ConfigError(f"model {first.config.model} has a {type(module).__name__} layer, whose random "
                              "draws a pack cannot keep per trial; run it unpacked (--pack 1)")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
            raise ConfigError(f"model {first.config.model} has BatchNorm with a cumulative average "
                              "(momentum=None), which a pack cannot stack; run it unpacked (--pack 1)")


def _architecture(model: nn.Module) -> tuple[list[str], list[tuple[str, tuple[int, ...]]]]:
    """The layer types and the named tensors' shapes of ``model``: equal for models one template can run."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [type(m).__name__ for m in model.modules()], [(name, tuple(t.shape)) for name, t in tensors]


@dataclass
class Member:
    """One trial of a pack: its trainer, its global random streams, its epoch in progress."""

    trainer: Trainer
    streams: RandomStreams
    steps: EpochSteps | None = None
    batch: Batch | None = None
    record: dict[str, Any] | None = None
    dropped: bool = False
    #: why the member stopped training on its own (its loss diverged); it is dropped
    failure: TrainingDiverged | None = None

    @contextmanager
    def own_streams(self) -> Iterator[None]:
        with swapped(self.streams, self.trainer.device):
            yield

    def advance(self, losses: torch.Tensor | None) -> None:
        """Run the member's epoch up to its next batch (or its end: ``record`` set)."""
        assert self.steps is not None
        with self.own_streams():
            try:
                self.batch = next(self.steps) if losses is None else self.steps.send(losses)
            except StopIteration as end:
                self.steps, self.batch, self.record = None, None, end.value
            except TrainingDiverged as diverged:  # this configuration's failure, not its pack-mates'
                self.steps, self.batch, self.failure, self.dropped = None, None, diverged, True


class Pack:
    """``trainers`` (see :func:`check_packable`) trained in lockstep as one stacked model; more join
    with :meth:`add`. ``members`` maps each member's index (0, 1, ... in the order they joined) to it.

    Each trainer starts as a solo run's ``fit`` does (its global streams seeded by its seed); one
    restored with :meth:`load_checkpoint` resumes as a solo run resumed from that checkpoint."""

    def __init__(self, trainers: Sequence[Trainer]):
        check_packable(trainers)
        self.device = trainers[0].device
        self.members: dict[int, Member] = {}
        self.template = stacked_template(trainers[0].model)
        self.dropouts = {name: m for name, m in self.template.named_modules()  # p = 0 draws nothing
                         if isinstance(m, MemberDropout) and m.p > 0}
        self._layouts: dict[tuple[Any, ...], list[Layout]] = {}
        self._joined = 0
        for trainer in trainers:
            self.add(trainer)

    # ------------------------------------------------------------------ membership
    def add(self, trainer: Trainer) -> int:
        """``trainer`` joins the pack (from its first epoch, or from a checkpoint loaded next); its index."""
        check_packable([next(iter(self.members.values())).trainer, trainer] if self.members else [trainer])
        index, self._joined = self._joined, self._joined + 1
        self.members[index] = Member(trainer, RandomStreams.seeded(trainer.seed, trainer.device))
        return index

    def load_checkpoint(self, index: int, directory: Any) -> bool:
        """Restore member ``index`` from its checkpoint folder (its global streams included)."""
        member = self.members[index]
        with member.own_streams():
            return member.trainer.load_checkpoint(directory)

    def save_checkpoint(self, index: int, directory: Any) -> None:
        """Write member ``index``'s checkpoint to its folder (its global streams, not the process's)."""
        member = self.members[index]
        with member.own_streams():
            member.trainer.save_checkpoint(directory)

    def drop(self, index: int) -> None:
        """Member ``index`` leaves the pack (stopped early); the others go on unchanged."""
        self.members[index].dropped = True

    def remove(self, index: int) -> Member:
        """Member ``index`` out of the pack altogether (its trainer released with it)."""
        return self.members.pop(index)

    @property
    def active(self) -> list[int]:
        """Indices of the members still training."""
        return [i for i, m in self.members.items() if not m.dropped and not m.trainer.finished]

    # ------------------------------------------------------------------ training
    def run_epoch(self, only: Collection[int] | None = None) -> dict[int, dict[str, Any]]:
        """The next epoch of every active member (of those in ``only``); their epoch records by index."""
        indices = [i for i in self.active if only is None or i in only]
        members = [self.members[i] for i in indices]
        with deterministic_algorithms(members[0].trainer.config.deterministic if members else False):
            for member in members:
                member.steps, member.record = member.trainer.epoch_steps(), None
                member.advance(None)
            while waiting := [m for m in members if m.batch is not None]:
                for group in _same_shape(waiting):
                    self._step(group)
        return {i: member.record for i, member in zip(indices, members) if member.record is not None}

    def fit(self, stop: Callable[[int, dict[str, Any]], bool] | None = None) -> list[RunResult]:
        """Train until every member has finished or been stopped; ``stop(index, record)`` after each
        member's epoch drops it when true. Returns each member's result (its best epoch so far).
        A member that diverged raises its ``TrainingDiverged`` once the others have trained."""
        while self.active:
            for index, record in self.run_epoch().items():
                if stop is not None and stop(index, record):
                    self.drop(index)
        failures = [m.failure for m in self.members.values() if m.failure is not None]
        if failures:
            raise failures[0]
        return self.results()

    def results(self) -> list[RunResult]:
        """Each member's :meth:`Trainer.result` (its best epoch evaluated on val and test)."""
        results = []
        for member in self.members.values():
            with member.own_streams():
                results.append(member.trainer.result())
        return results

    # ------------------------------------------------------------------ the stacked step
    def _step(self, members: list[Member]) -> None:
        """One optimisation step of ``members`` (batches of one shape), as each one's ``_step`` would take it."""
        batches = [m.batch for m in members]
        assert all(b is not None for b in batches)
        x = torch.stack([b[0] for b in batches if b is not None])
        targets = [b[1] for b in batches if b is not None]
        for member in members:
            member.trainer.optimisation.zero_grad()
        losses, batch_losses = self._forward_losses(members, x, targets)
        sam = [i for i, m in enumerate(members) if m.trainer.config.optimizer == "sam"]
        scaled = [m.trainer.optimisation.scaler.scale(loss) if i not in sam else loss
                  for i, (m, loss) in enumerate(zip(members, batch_losses))]
        torch.stack(scaled).sum().backward()
        for i, member in enumerate(members):
            optimisation = member.trainer.optimisation
            if i in sam:
                optimisation.optimizer.first_step(zero_grad=True)  # type: ignore[union-attr]
            else:
                optimisation.scaler.step(optimisation.optimizer)  # type: ignore[arg-type]
                optimisation.scaler.update()
        if sam:
            self._sam_second_pass([members[i] for i in sam], x[sam], [targets[i] for i in sam])
        for member, y, member_losses in zip(members, targets, losses):
            with member.own_streams():
                member.trainer.method.end_step(y, member_losses)
            member.advance(member_losses)

    def _sam_second_pass(self, members: list[Member], x: torch.Tensor, targets: list[torch.Tensor]) -> None:
        """SAM's second pass at the perturbed weights (BatchNorm statistics from the first pass only)."""
        from pytorch_optimizer.optimizer.sam import disable_running_stats, enable_running_stats

        disable_running_stats(self.template)
        _, batch_losses = self._forward_losses(members, x, targets)
        torch.stack(batch_losses).sum().backward()
        enable_running_stats(self.template)
        for member in members:
            member.trainer.optimisation.optimizer.second_step(zero_grad=True)  # type: ignore[union-attr]

    def _forward_losses(self, members: list[Member], x: torch.Tensor,
                        targets: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The stacked forward pass; each member's detached per-sample losses and its batch loss."""
        models = [m.trainer.model for m in members]
        params = {name: torch.stack([dict(model.named_parameters())[name] for model in models])
                  for name, _ in models[0].named_parameters()}
        buffers = {name: torch.stack([dict(model.named_buffers())[name] for model in models])
                   for name, _ in models[0].named_buffers()}
        buffers.update(self._masks(members, x))
        with autocast(self.device, members[0].trainer.amp_dtype):
            logits = vmap(self._forward, randomness="error")(params, buffers, x)
        for name, _ in models[0].named_buffers():  # BatchNorm's running statistics, back to their members
            for i, model in enumerate(models):
                model.get_buffer(name).copy_(buffers[name][i])
        losses, batch_losses = [], []
        for member, member_logits, y in zip(members, logits.float().unbind(0), targets):
            method = member.trainer.method
            with member.own_streams():
                sample_losses = method.sample_losses(member_logits, y)
                batch_losses.append(method.batch_loss(member_logits, y, sample_losses))
            losses.append(sample_losses.detach())
        return losses, batch_losses

    def _forward(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _masks(self, members: list[Member], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each member's dropout masks for this forward pass, drawn from its own streams, stacked."""
        if not self.dropouts:
            return {}
        layouts = self._dropout_layouts(members[0], x[0])
        drawn: list[list[torch.Tensor]] = []
        for member in members:
            with member.own_streams():
                drawn.append([module.draw(layout, self.device)
                              for module, layout in zip(self.dropouts.values(), layouts)])
        return {f"{name}.mask": torch.stack([masks[j] for masks in drawn])
                for j, name in enumerate(self.dropouts)}

    def _dropout_layouts(self, member: Member, x: torch.Tensor) -> list[Layout]:
        """The shape, strides and dtype of each dropout layer's input for a batch like ``x`` (measured
        once per batch shape by a forward pass of ``member``'s model without gradients)."""
        key = (tuple(x.shape), x.dtype, member.trainer.amp_dtype)
        if key not in self._layouts:
            probe: list[Layout] = []
            for module in self.dropouts.values():
                module.probe = probe
            try:
                model = member.trainer.model  # its buffers copied: BatchNorm's statistics stay as they are
                state = {**dict(model.named_parameters()), **{k: v.clone() for k, v in model.named_buffers()}}
                with torch.no_grad(), autocast(self.device, member.trainer.amp_dtype):
                    functional_call(self.template, state, (x,))
            finally:
                for module in self.dropouts.values():
                    module.probe = None
            self._layouts[key] = probe
        return self._layouts[key]


def _same_shape(members: list[Member]) -> list[list[Member]]:
    """``members`` grouped by the shape of their next batch."""
    groups: dict[tuple[int, ...], list[Member]] = {}
    for member in members:
        assert member.batch is not None
        groups.setdefault(tuple(member.batch[0].shape), []).append(member)
    return list(groups.values())


def train_packed(trainers: Sequence[Trainer],
                 stop: Callable[[int, dict[str, Any]], bool] | None = None) -> list[RunResult]:
    """Train ``trainers`` as one pack (:class:`Pack`); each one's result, as its solo ``fit`` gives it."""
    return Pack(trainers).fit(stop)
