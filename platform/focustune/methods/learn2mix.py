"""Learn2Mix (arXiv 2412.16482): batches whose class proportions adapt to the class-wise losses.

The mixing proportions alpha start at the training class proportions. Every batch holds
round(alpha_i * B) samples of class i, drawn cyclically from per-class permutations. Once per epoch
the normalised class losses L~ = L / sum(L) pull alpha towards themselves:
alpha <- alpha + gamma * (L~ - alpha), so classes the network finds hard get a larger share.

Our reading, where the paper and its public code leave details open:
- L is the epoch average of each class's training losses (``EpochStats.class_loss_mean``), which is
  much less noisy than the public code's losses of the epoch's last batch.
- A class whose share would round to zero samples would get loss 0 and never be sampled again; so
  every batch keeps ``min_per_class`` samples of each class, and a class without a sample in an
  epoch keeps its previous L~ (the others share the rest in proportion to their losses).
- An epoch has ceil(N / B) batches of exactly B samples (at least N samples, as erm's epoch).
- Each epoch draws fresh per-class permutations; a class that needs more samples than it has walks
  through one new permutation after another, so every sample is used before any repeats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from focustune.data import Split
from focustune.errors import ConfigError
from focustune.methods.base import EpochStats, Method, RunContext
from focustune.methods.registry import register
from focustune.params import hp


def batch_class_counts(alpha: torch.Tensor, batch_size: int, min_per_class: int,
                       available: torch.Tensor) -> torch.Tensor:
    """Samples per class in a batch: close to alpha_i * B, at least ``min_per_class``, summing to B.

    Classes not ``available`` get 0 (alpha is renormalised over the others). Classes that would
    fall below the minimum are held at it and the rest is shared in proportion to alpha (water
    filling); the real-valued targets are rounded by largest remainder so they sum exactly to B.
    """
    alpha = torch.where(available, alpha.double(), 0.0)
    alpha = alpha / alpha.sum() if alpha.sum() > 0 else available.double() / available.sum()
    if min_per_class * int(available.sum()) > batch_size:
        raise ConfigError(f"learn2mix: min_per_class={min_per_class} for {int(available.sum())} classes "
                          f"needs batch_size >= {min_per_class * int(available.sum())}, got {batch_size}")
    held = torch.zeros_like(available)
    while True:
        scale = (batch_size - min_per_class * int(held.sum())) / float(alpha[~held].sum())
        now_held = available & (held | (alpha * scale < min_per_class))
        if torch.equal(now_held, held):
            break
        held = now_held
    target = torch.where(held, float(min_per_class), alpha * scale)
    counts = target.floor()
    shortfall = batch_size - int(counts.sum().round())
    remainder = torch.where(available, target - counts, -1.0)
    counts[remainder.topk(shortfall).indices] += 1
    return counts.long()


def cyclic_draws(n: int, total: int, generator: torch.Generator) -> torch.Tensor:
    """``total`` positions in ``range(n)``: consecutive fresh permutations, cut at ``total``."""
    laps = math.ceil(total / n)
    keys = torch.rand(laps, n, generator=generator, device=generator.device)
    return keys.argsort(dim=1, stable=True).flatten()[:total]


def updated_loss_share(previous: torch.Tensor, class_loss: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """L~ = L / sum(L) over the classes ``seen`` this epoch; unseen classes keep their previous share.

    The seen classes split the mass the unseen ones do not hold; if they all had zero loss,
    the previous estimate is kept.
    """
    kept = torch.where(seen, 0.0, previous)
    loss = torch.where(seen, class_loss.double(), 0.0)
    if loss.sum() <= 0:
        return previous.clone()
    return kept + (1.0 - kept.sum()) * loss / loss.sum()


@dataclass
class Learn2MixParams:
    mixing_rate: float = hp(0.1, low=0.0, high=1.0,
                            help="gamma: once per epoch alpha <- alpha + gamma * (normalised class loss - alpha)")
    min_per_class: int = hp(1, low=0, high=4096,
                            help="samples of every class in each batch, whatever alpha says "
                                 "(0 lets a class with a tiny share drop out of batches)")


@register
class Learn2Mix(Method):
    name = "learn2mix"
    summary = "Learn2Mix: batch class proportions move towards the normalised class-wise losses each epoch"
    Params = Learn2MixParams

    def setup(self, run: RunContext) -> None:
        counts = run.class_counts.double().cpu()
        self.alpha = counts / counts.sum()
        self.loss_share = self.alpha.clone()
        self.counts = batch_class_counts(self.alpha, run.config.batch_size, self.params.min_per_class,
                                         counts > 0)

    def epoch_batches(self, epoch: int, data: Split, run: RunContext) -> Iterable[torch.Tensor]:
        """ceil(N/B) batches of B indices, class i filling ``counts[i]`` slots of each."""
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

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        seen = stats.class_count.cpu() > 0
        self.loss_share = updated_loss_share(self.loss_share, stats.class_loss_mean.cpu(), seen)
        alpha = self.alpha + self.params.mixing_rate * (self.loss_share - self.alpha)
        self.alpha = alpha.clamp_min(0) / alpha.clamp_min(0).sum()
        return {"alpha": self.alpha.tolist(), "batch_counts": self.counts.tolist(),
                "loss_share": self.loss_share.tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.clone(), "loss_share": self.loss_share.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = state["alpha"].double().cpu()
        self.loss_share = state["loss_share"].double().cpu()
