"""LOW: Learning Optimal sample Weights (Santiago, Garcia-Gasulla, Gonzalez, Lozano; Pattern Recognition 2021).

In every batch of M samples, the weights solve (paper eq. 8-9)

    max_w  w.g - lam * ||w - 1||^2   subject to  w >= 0,  sum(w) = M,

where g_j is the squared norm of the loss gradient with respect to sample j's logits: samples whose
loss the network would reduce most get more weight. The problem is the Euclidean projection of
v = 1 + g / (2 lam) onto the scaled simplex {w >= 0, sum w = M}, solved exactly by a sort-based
projection that is batched and stays on the device. It is computed as the weights' deviations
from 1, so that nearly uniform weights (large lam) keep their spread instead of rounding it away.

The unit of lam (``lam_unit``):
- ``ours`` (default, the paper's equations): g is taken per sample, from sample j's own loss.
- ``authors_code``: the authors' public code (LOW.py) differentiates the *batch-mean* loss, so its g
  is ours divided by M^2; its lam is ours divided by M^2 too. lam 0.1 there is lam 0.1 * M^2 here
  (about 6,550 at M = 256), where the weights stay within ~2e-4 of 1. The paper's grid
  {1, 0.5, 0.1, 0.01} was presumably run in these units.
g is taken with respect to the logits, for whichever base loss the method wraps; the weights are
constants for the backward pass. ``weight_std`` in the epoch diagnostics says how far LOW moved
the weights from uniform at all; the diagnostics count each optimiser step once, with the weights
of its last forward pass (under SAM the second, whose gradient the step applies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from focustune.losses import class_balanced_weights, focal_loss
from focustune.methods.base import EpochStats, Method, RunContext, accumulator_dtype
from focustune.methods.registry import register
from focustune.params import hp

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BASE_LOSSES = ("ce", "weighted_ce", "focal")
LAM_UNITS = ("ours", "authors_code")


def simplex_deviations(u: torch.Tensor, total: float) -> torch.Tensor:
    """w - c for the Euclidean projection w of c + ``u`` onto {w >= 0, sum(w) = total}, c = total / M.

    Sort-based (Held, Wolfe & Crowder 1974; Duchi et al. 2008): w = max(c + u - theta, 0), where
    theta is fixed by the largest prefix of the descending-sorted row that stays positive. Written
    in deviations from the uniform point c, so a tiny spread of ``u`` is not lost to rounding
    against c. Works on the last dimension of any batch shape, without host synchronisation.
    """
    m = u.shape[-1]
    centre = total / m
    descending = u.sort(dim=-1, descending=True).values
    partial = descending.cumsum(dim=-1)
    ranks = torch.arange(1, m + 1, device=u.device, dtype=u.dtype)
    support = (descending - partial / ranks + total / ranks > 0).sum(dim=-1, keepdim=True)  # >= 1: total > 0
    size = support.to(u.dtype)
    threshold = (partial.gather(-1, support - 1) - (total - size * centre)) / size
    return (u - threshold).clamp_min(-centre)


def project_to_scaled_simplex(v: torch.Tensor, total: float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto {w >= 0, sum(w) = total} (``total`` > 0)."""
    centre = total / v.shape[-1]
    return centre + simplex_deviations(v - centre, total)


def low_deviations(g: torch.Tensor, lam: float) -> torch.Tensor:
    """w - 1 for the LOW weights w of gradient magnitudes ``g`` (last dimension = the batch of M samples).

    ``lam`` is in units of g: it trades the gain w.g against the squared deviation from uniform
    weights. Without clipping, w_j - 1 = (g_j - mean(g)) / (2 lam), so with cross-entropy
    (g in [0, 2]) lam = 1 moves a sample's weight by about g/2; small lam zeroes easy samples
    (deviation -1), large lam gives uniform weights. The weights sum to M and are never negative.
    """
    return simplex_deviations(g / (2.0 * lam), float(g.shape[-1]))


def cross_entropy_gradient_norms(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """||softmax(z_j) - onehot(y_j)||^2 per sample: the squared cross-entropy logit gradient, in [0, 2]."""
    probs = torch.softmax(logits.detach().float(), dim=1)
    residual = probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return residual.pow(2).sum(dim=1)


def logit_gradient_norms(logits: torch.Tensor, targets: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """Squared norm of d criterion_j / d z_j per sample, by one autograd call on detached logits.

    Sample j's loss depends only on row j of the logits, so the gradient of the summed loss holds
    every sample's own gradient in its row.
    """
    z = logits.detach().float().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(criterion(z, targets).sum(), z)
    return grad.pow(2).sum(dim=1)


@dataclass
class LOWParams:
    lam: float = hp(1.0, low=1e-6, high=1e6, log=True,
                    help="lambda, in the unit lam_unit says: weight_j ~ 1 + (g_j - mean g)/(2 lambda); "
                         "small = focus on hard samples, large = uniform weights")
    lam_unit: str = hp("ours", choices=LAM_UNITS,
                       help="unit of lam. ours: g = squared logit gradient of sample j's own loss, in [0, 2] "
                            "for ce (the paper's eq. 8-9); authors_code: the authors' public code, whose g is "
                            "of the batch-mean loss (ours / M^2): lam there = lam * M^2 in ours for the actual "
                            "batch size M (the paper's grid 1, 0.5, 0.1, 0.01 was presumably run in these)")
    base_loss: str = hp("ce", choices=BASE_LOSSES,
                        help="loss LOW weights: ce, weighted_ce (inverse class frequency) or focal")
    gamma: float = hp(2.0, low=0.0, high=10.0, help="focusing parameter of base_loss=focal")


@register
class LOW(Method):
    name = "low"
    summary = "LOW (Santiago et al. 2021): per-batch optimal sample weights from logit-gradient norms"
    Params = LOWParams
    #: w - 1 of the latest forward pass (set by batch_loss), added to the statistics by end_step
    step_deviations: torch.Tensor

    def setup(self, run: RunContext) -> None:
        self.class_weights = (class_balanced_weights(run.class_counts)
                              if self.params.base_loss == "weighted_ce" else None)
        k = run.num_classes
        #: sum of (w - 1), sum of (w - 1)^2, zero weights: deviations, so a spread of 1e-5 stays exact
        self.deviation_moments = torch.zeros(3, device=run.device, dtype=accumulator_dtype(run.device))
        self.class_weight_sum = torch.zeros(k, device=run.device)
        self.class_count = torch.zeros(k, device=run.device)

    def sample_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The base loss per sample (class weights included for weighted_ce)."""
        if self.params.base_loss == "focal":
            return focal_loss(logits, targets, self.params.gamma)
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        return losses if self.class_weights is None else losses * self.class_weights[targets]

    def gradient_norms(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """g: squared logit-gradient norm of the base loss per sample (closed form for ce)."""
        if self.params.base_loss == "ce":
            return cross_entropy_gradient_norms(logits, targets)
        return logit_gradient_norms(logits, targets, self.sample_losses)

    def lam_per_sample(self, batch_size: int) -> float:
        """lam in units of the per-sample g (``authors_code``: times M^2 of this batch)."""
        return self.params.lam * (batch_size ** 2 if self.params.lam_unit == "authors_code" else 1)

    def batch_loss(self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The mean of the losses weighted by 1 + :func:`low_deviations` of this pass's g."""
        lam = self.lam_per_sample(int(targets.shape[0]))
        self.step_deviations = low_deviations(self.gradient_norms(logits, targets), lam).detach()
        return ((1.0 + self.step_deviations) * losses).mean()

    def end_step(self, targets: torch.Tensor, losses: torch.Tensor) -> None:
        """Add the step's weights (its last pass's) to the epoch's device-side statistics."""
        deviations = self.step_deviations
        weights = 1.0 + deviations
        d = deviations.to(self.deviation_moments.dtype)
        self.deviation_moments += torch.stack([d.sum(), d.pow(2).sum(), (weights == 0).sum().to(d.dtype)])
        self.class_weight_sum.index_add_(0, targets, weights)
        self.class_count.index_add_(0, targets, torch.ones_like(weights))

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        """Weight statistics of the epoch (read once), then reset the accumulators."""
        n = self.class_count.sum().to(self.deviation_moments.dtype).clamp_min(1)
        mean_deviation = self.deviation_moments[0] / n
        std = (self.deviation_moments[1] / n - mean_deviation.pow(2)).clamp_min(0).sqrt()
        summary = torch.stack([1.0 + mean_deviation, std, self.deviation_moments[2] / n]).tolist()
        class_means = (self.class_weight_sum / self.class_count.clamp_min(1)).tolist()
        seen = (self.class_count > 0).tolist()
        for tensor in (self.deviation_moments, self.class_weight_sum, self.class_count):
            tensor.zero_()
        return {"weight_mean": summary[0], "weight_std": summary[1], "zero_weight_share": summary[2],
                "class_weight_mean": [m if s else None for m, s in zip(class_means, seen)]}
