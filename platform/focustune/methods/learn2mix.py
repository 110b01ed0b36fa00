"""Learn2Mix (arXiv 2412.16482): batches whose class proportions adapt to the class-wise losses.

The mixing proportions alpha start at the training class proportions. Every batch holds
round(alpha_i * B) samples of class i. The normalised class losses L~ = L / sum(L) pull alpha
towards themselves: alpha <- alpha + gamma * (L~ - alpha), so classes the network finds hard get a
larger share. When alpha moves (``update_every``):

- ``epoch`` (default; the paper's Algorithm 1/2, eq. 10): once per epoch, L being the epoch average
  of each class's training losses (``EpochStats.class_loss_mean``), not the losses of its last batch;
  the epoch's batches are drawn cyclically from per-class permutations (a class that needs more
  samples than it has walks through one new permutation after another, so every sample is used
  before any repeats).
- ``batch`` (the authors' public code): after every batch, from that batch's class-wise mean losses;
  each batch is then composed from the updated alpha. All of it stays on the device (the epoch's
  batches are a generator: the trainer asks for the next one after training on the one before, see
  ``Method.epoch_batches``; no host synchronisation per batch); each class's samples are walked cyclically
  through one permutation
  per epoch, as in the authors' code. It needs the training images on the device (not streamed
  from host memory). Alpha moves in ``end_step``, once per optimiser step, from the losses of its
  first forward pass (SAM's second pass of a batch does not move it again).

Our reading, where the paper and its public code leave details open:
- A class whose share would round to zero samples would get loss 0 and never be sampled again; so
  every batch keeps ``min_per_class`` samples of each class, and a class without a sample in an
  epoch (a batch) keeps its previous L~ (the others share the rest in proportion to their losses).
- An epoch has ceil(N / B) batches of exactly B samples (at least N samples, as erm's epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from focustune.data import Split
from focustune.errors import ConfigError
from focustune.methods.base import EpochStats, Method, RunContext, accumulator_dtype
from focustune.methods.registry import register
from focustune.params import hp

UPDATE_EVERY = ("epoch", "batch")


def check_min_per_class(min_per_class: int, available: torch.Tensor, batch_size: int) -> None:
    """ConfigError when ``min_per_class`` samples of every available class do not fit a batch."""
    needed = min_per_class * int(available.sum())
    if needed > batch_size:
        raise ConfigError(f"learn2mix: min_per_class={min_per_class} for {int(available.sum())} classes "
                          f"needs batch_size >= {needed}, got {batch_size}")


def batch_class_counts(alpha: torch.Tensor, batch_size: int, min_per_class: int,
                       available: torch.Tensor) -> torch.Tensor:
    """Samples per class in a batch: close to alpha_i * B, at least ``min_per_class``, summing to B.

    Checks that the minimum fits (ConfigError), then :func:`class_counts`."""
    check_min_per_class(min_per_class, available, batch_size)
    return class_counts(alpha, batch_size, min_per_class, available)


def class_counts(alpha: torch.Tensor, batch_size: int, min_per_class: int, available: torch.Tensor) -> torch.Tensor:
    """:func:`batch_class_counts` without its check, on ``alpha``'s device, without host synchronisation.

    Classes not ``available`` get 0 (alpha is renormalised over the others). Classes that would
    fall below the minimum are held at it and the rest is shared in proportion to alpha (water
    filling: K rounds, each holding at least one more class until none changes); the real-valued
    targets are rounded by largest remainder (ties to the lower class) so they sum exactly to B.
    """
    alpha = torch.where(available, alpha, 0.0)
    total = alpha.sum()
    uniform = available.to(alpha.dtype) / available.sum().clamp_min(1)
    alpha = torch.where(total > 0, alpha / total.clamp_min(1e-300), uniform)
    held = torch.zeros_like(available)
    for _ in range(len(alpha) + 1):
        free = torch.where(held, 0.0, alpha).sum()
        scale = (batch_size - min_per_class * held.sum()) / free.clamp_min(1e-300)
        held = available & (held | (alpha * scale < min_per_class))
    free = torch.where(held, 0.0, alpha).sum()
    scale = (batch_size - min_per_class * held.sum()) / free.clamp_min(1e-300)
    target = torch.where(held, float(min_per_class), alpha * scale)
    counts = target.floor()
    shortfall = batch_size - counts.sum()
    remainder = torch.where(available, target - counts, -1.0)
    rank = remainder.argsort(descending=True, stable=True).argsort()
    return (counts + (rank < shortfall).to(counts.dtype)).round().long()


def cyclic_draws(n: int, total: int, generator: torch.Generator) -> torch.Tensor:
    """``total`` positions in ``range(n)``: consecutive fresh permutations, cut at ``total``."""
    laps = math.ceil(total / n)
    keys = torch.rand(laps, n, generator=generator, device=generator.device)
    return keys.argsort(dim=1, stable=True).flatten()[:total]


def updated_loss_share(previous: torch.Tensor, class_loss: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """L~ = L / sum(L) over the classes ``seen``; unseen classes keep their previous share.

    The seen classes split the mass the unseen ones do not hold; if they all had zero loss,
    the previous estimate is kept. No host synchronisation (usable after every batch).
    """
    kept = torch.where(seen, 0.0, previous)
    loss = torch.where(seen, class_loss.to(previous.dtype), 0.0)
    total = loss.sum()
    share = kept + (1.0 - kept.sum()) * loss / total.clamp_min(1e-300)
    return torch.where(total > 0, share, previous)


def moved_alpha(alpha: torch.Tensor, loss_share: torch.Tensor, rate: float) -> torch.Tensor:
    """alpha <- alpha + rate * (L~ - alpha), kept on the simplex."""
    moved = (alpha + rate * (loss_share - alpha)).clamp_min(0)
    return moved / moved.sum()


def grouped_by_class(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``labels`` sorted by class, in a fresh random order within each class (on the device)."""
    shuffled = torch.rand(len(labels), generator=generator, device=generator.device).argsort()
    return shuffled[labels[shuffled].argsort(stable=True)]


def composed_batch(counts: torch.Tensor, members: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor,
                   position: torch.Tensor, batch_size: int) -> torch.Tensor:
    """One batch's indices: ``counts[c]`` samples of each class c (summing to ``batch_size``), the
    ones after ``position[c]`` in its stretch ``members[starts[c]:starts[c] + sizes[c]]``, wrapping
    around. Device operations only."""
    classes = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts,
                                      output_size=batch_size)
    first_slot = counts.cumsum(0) - counts
    rank = torch.arange(batch_size, device=counts.device) - first_slot[classes]
    return members[starts[classes] + (position[classes] + rank) % sizes[classes].clamp_min(1)]


@dataclass
class Learn2MixParams:
    mixing_rate: float = hp(0.1, low=0.0, high=1.0,
                            help="gamma: alpha <- alpha + gamma * (normalised class loss - alpha), "
                                 "at every update (update_every)")
    min_per_class: int = hp(1, low=0, high=4096,
                            help="samples of every class in each batch, whatever alpha says "
                                 "(0 lets a class with a tiny share drop out of batches)")
    update_every: str = hp("epoch", choices=UPDATE_EVERY,
                           help="when alpha moves: epoch = once per epoch from the epoch's class-wise mean "
                                "losses (the paper's Algorithm 1); batch = after every batch from its class-wise "
                                "losses, the next batch composed from the new alpha (the authors' public code)")


@register
class Learn2Mix(Method):
    name = "learn2mix"
    summary = "Learn2Mix: batch class proportions move towards the normalised class-wise losses"
    Params = Learn2MixParams
    #: the targets of the batch whose losses last moved alpha (a SAM step's second pass does not again)
    last_targets: torch.Tensor | None

    def setup(self, run: RunContext) -> None:
        counts = run.class_counts
        self.per_batch = self.params.update_every == "batch"
        check_min_per_class(self.params.min_per_class, counts > 0, run.config.batch_size)
        if self.per_batch and run.train.images.device.type != run.device.type:
            raise ConfigError("learn2mix update_every=batch composes every batch on the device from the previous "
                              "one's losses: it needs the training images on the device, but they are streamed "
                              "from host memory (dataset above the device data limit); use update_every=epoch")
        #: where alpha lives: on the device when it moves after every batch, else on the host
        self.place = (run.device, accumulator_dtype(run.device)) if self.per_batch else ("cpu", torch.float64)
        self.available = (counts > 0).to(self.place[0])
        self.alpha = counts.to(*self.place) / counts.sum().to(*self.place)
        self.loss_share = self.alpha.clone()
        self.counts = class_counts(self.alpha, run.config.batch_size, self.params.min_per_class, self.available)
        self.num_classes, self.batch_size = run.num_classes, run.config.batch_size

    def epoch_batches(self, epoch: int, data: Split, run: RunContext) -> Iterable[torch.Tensor]:
        """ceil(N/B) batches of B indices, class i filling ``counts[i]`` slots of each (update_every=batch:
        each batch's counts from the alpha after the batch before)."""
        if self.per_batch:
            return self._device_batches(data, run)
        batch_size = run.config.batch_size
        sizes = torch.bincount(data.labels, minlength=run.num_classes).cpu()
        self.counts = batch_class_counts(self.alpha, batch_size, self.params.min_per_class, sizes > 0)
        num_batches = math.ceil(len(data) / batch_size)
        by_class = data.labels.argsort(stable=True)
        starts = (sizes.cumsum(0) - sizes).tolist()
        columns = []
        for start, size, count in zip(starts, sizes.tolist(), self.counts.tolist()):
            if count == 0:
                continue
            members = by_class[start:start + size]
            draws = cyclic_draws(size, num_batches * count, run.generator)
            columns.append(members[draws].view(num_batches, count))
        return list(torch.cat(columns, dim=1).unbind(0))

    def _device_batches(self, data: Split, run: RunContext) -> Iterator[torch.Tensor]:
        """The epoch's ceil(N/B) index tensors, each composed on the device when the trainer asks for it,
        from the alpha that :meth:`end_step` of the batch before moved."""
        sizes = torch.bincount(data.labels, minlength=run.num_classes)
        members, starts = grouped_by_class(data.labels, run.generator), sizes.cumsum(0) - sizes
        position = torch.zeros_like(sizes)
        self.count_sum, self.composed = torch.zeros_like(sizes), 0
        for _ in range(math.ceil(len(data) / self.batch_size)):
            counts = class_counts(self.alpha, self.batch_size, self.params.min_per_class, self.available)
            batch = composed_batch(counts, members, starts, sizes, position, self.batch_size)
            position = (position + counts) % sizes.clamp_min(1)
            self.count_sum += counts
            self.composed += 1
            yield batch

    def end_step(self, targets: torch.Tensor, losses: torch.Tensor) -> None:
        """update_every=batch: alpha moves from this step's class-wise mean losses; it composes the next batch."""
        if self.per_batch:
            self._move_alpha(targets, losses)

    def _move_alpha(self, targets: torch.Tensor, losses: torch.Tensor) -> None:
        """alpha <- alpha + gamma * (L~ - alpha), L~ from this batch's class-wise mean losses (device only)."""
        dtype = self.alpha.dtype
        loss_sum = torch.zeros(self.num_classes, device=losses.device, dtype=dtype)
        loss_sum.index_add_(0, targets, losses.to(dtype))
        count = torch.zeros_like(loss_sum).index_add_(0, targets, torch.ones_like(losses, dtype=dtype))
        self.loss_share = updated_loss_share(self.loss_share, loss_sum / count.clamp_min(1), count > 0)
        self.alpha = moved_alpha(self.alpha, self.loss_share, self.params.mixing_rate)

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        """Epoch mode: move alpha from the epoch's class-wise mean losses; both: the diagnostics
        (batch mode: ``batch_counts`` is the epoch's mean samples per class and batch)."""
        if self.per_batch:
            counts = (self.count_sum.double() / max(self.composed, 1)).tolist()
        else:
            seen = stats.class_count.cpu() > 0
            self.loss_share = updated_loss_share(self.loss_share, stats.class_loss_mean.cpu(), seen)
            self.alpha = moved_alpha(self.alpha, self.loss_share, self.params.mixing_rate)
            counts = self.counts.tolist()
        return {"alpha": self.alpha.tolist(), "batch_counts": counts, "loss_share": self.loss_share.tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.detach().cpu().clone(), "loss_share": self.loss_share.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = state["alpha"].to(*self.place)
        self.loss_share = state["loss_share"].to(*self.place)
