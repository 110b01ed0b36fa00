"""Baselines: plain cross-entropy, class-balanced cross-entropy, focal loss, balanced oversampling."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from focustune.data import Split
from focustune.losses import class_balanced_weights, focal_loss
from focustune.methods.base import Method, RunContext
from focustune.methods.registry import register
from focustune.params import hp


@register
class ERM(Method):
    name = "erm"
    summary = "empirical risk minimisation: plain cross-entropy on shuffled batches"


@dataclass
class WeightedCEParams:
    beta: float = hp(0.0, low=0.0, high=0.99999, help="0 = inverse class frequency; "
                                                       ">0 = effective-number weights (Cui et al.)")


@register
class WeightedCE(Method):
    name = "weighted_ce"
    summary = "cross-entropy with class-balanced weights (inverse frequency or effective number)"
    Params = WeightedCEParams

    def setup(self, run: RunContext) -> None:
        self.class_weights = class_balanced_weights(run.class_counts, self.params.beta)

    def batch_loss(self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return (self.class_weights[targets] * losses).mean()


@dataclass
class FocalParams:
    gamma: float = hp(2.0, low=0.0, high=10.0, help="focusing parameter (0 = cross-entropy)")
    alpha: float | None = hp(None, low=0.0, high=1.0,
                             help="class weighting: weight = alpha * inverse class frequency + (1 - alpha), "
                                  "normalised to a mean sample weight of 1; none = off; 1 = inverse class "
                                  "frequency, the class-weighted focal loss of learn2mix's App. C.2")


@register
class Focal(Method):
    """Focal loss; ``alpha`` blends in inverse-class-frequency weights (``alpha=1``: learn2mix's
    class-weighted focal baseline, App. C.2, whose weights differ from ours only by a constant factor)."""

    name = "focal"
    summary = "focal loss (Lin et al. 2017), optionally class-weighted through alpha (1 = inverse frequency)"
    Params = FocalParams

    def setup(self, run: RunContext) -> None:
        alpha = self.params.alpha
        self.class_weights = None if alpha is None else (
            alpha * class_balanced_weights(run.class_counts) + (1.0 - alpha))

    def sample_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.params.gamma, self.class_weights)


@dataclass
class OversampleParams:
    power: float = hp(1.0, low=0.0, high=1.0, help="sampling probability ~ n_class^-power "
                                                   "(1 = class-balanced, 0 = uniform)")


@register
class Oversample(Method):
    name = "oversample"
    summary = "class-balanced sampling with replacement (an epoch still has N samples)"
    Params = OversampleParams

    def epoch_batches(self, epoch: int, data: Split, run: RunContext) -> Iterable[torch.Tensor]:
        counts = torch.bincount(data.labels, minlength=run.num_classes).float()
        per_class = counts.clamp_min(1).pow(-self.params.power)
        probs = per_class[data.labels]
        index = torch.multinomial(probs, len(data), replacement=True, generator=run.generator)
        return list(index.split(run.config.batch_size))
