"""LOW: Learning Optimal sample Weights (Santiago, Garcia-Gasulla, Gonzalez, Lozano; Pattern Recognition 2021).

In every batch of M samples, the weights solve

    max_w  w.g - lam * ||w - 1||^2   subject to  w >= 0,  sum(w) = M,

where g_j is the squared norm of the loss gradient with respect to sample j's logits: samples whose
loss the network would reduce most get more weight. The problem is the Euclidean projection of
v = 1 + g / (2 lam) onto the scaled simplex {w >= 0, sum w = M}, solved exactly by a sort-based
projection that is batched and stays on the device.

Our reading of the paper: g is taken per sample (the public code differentiates the *batch mean*
loss, which shrinks g by 1/M^2 and leaves the weights nearly uniform), with respect to the logits,
for whichever base loss the method wraps; the weights are constants for the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from focustune.losses import class_balanced_weights, focal_loss
from focustune.methods.base import EpochStats, Method, RunContext
from focustune.methods.registry import register
from focustune.params import hp

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BASE_LOSSES = ("ce", "weighted_ce", "focal")


def project_to_scaled_simplex(v: torch.Tensor, total: float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto {w >= 0, sum(w) = total} (``total`` > 0).

    Sort-based (Held, Wolfe & Crowder 1974; Duchi et al. 2008): the solution is max(v - theta, 0),
    where theta is fixed by the largest prefix of the descending-sorted row that stays positive.
    Works on the last dimension of any batch shape, without host synchronisation.
    """
    descending = v.sort(dim=-1, descending=True).values
    excess = descending.cumsum(dim=-1) - total
    ranks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    support = (descending - excess / ranks > 0).sum(dim=-1, keepdim=True)  # >= 1 since total > 0
    threshold = excess.gather(-1, support - 1) / support
    return (v - threshold).clamp_min(0)


def low_weights(g: torch.Tensor, lam: float) -> torch.Tensor:
    """LOW sample weights for gradient magnitudes ``g`` (last dimension = the batch of M samples).

    ``lam`` is in units of g: it trades the gain w.g against the squared deviation from uniform
    weights. Without clipping, w_j = 1 + (g_j - mean(g)) / (2 lam), so with cross-entropy
    (g in [0, 2]) lam = 1 moves a sample's weight by about g/2; small lam zeroes easy samples,
    large lam gives uniform weights. The weights sum to M and are never negative.
    """
    return project_to_scaled_simplex(1.0 + g / (2.0 * lam), float(g.shape[-1]))


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
                    help="lambda, in units of g (squared logit-gradient norm, in [0, 2] for cross-entropy): "
                         "weight_j ~ 1 + (g_j - mean g)/(2 lambda); small = focus on hard samples, "
                         "large = uniform weights")
    base_loss: str = hp("ce", choices=BASE_LOSSES,
                        help="loss LOW weights: ce, weighted_ce (inverse class frequency) or focal")
    gamma: float = hp(2.0, low=0.0, high=10.0, help="focusing parameter of base_loss=focal")


@register
class LOW(Method):
    name = "low"
    summary = "LOW (Santiago et al. 2021): per-batch optimal sample weights from logit-gradient norms"
    Params = LOWParams

    def setup(self, run: RunContext) -> None:
        self.class_weights = (class_balanced_weights(run.class_counts)
                              if self.params.base_loss == "weighted_ce" else None)
        k = run.num_classes
        self.weight_moments = torch.zeros(3, device=run.device)  # sum w, sum w^2, zero weights
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

    def batch_loss(self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        weights = low_weights(self.gradient_norms(logits, targets), self.params.lam).detach()
        self._accumulate(weights, targets)
        return (weights * losses).mean()

    def _accumulate(self, weights: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch's weights to the epoch's device-side statistics (SAM's second pass counts too)."""
        moments = torch.stack([weights.sum(), weights.pow(2).sum(), (weights == 0).sum().float()])
        self.weight_moments += moments
        self.class_weight_sum.index_add_(0, targets, weights)
        self.class_count.index_add_(0, targets, torch.ones_like(weights))

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        """Weight statistics of the epoch (read once), then reset the accumulators."""
        n = self.class_count.sum().clamp_min(1)
        mean = self.weight_moments[0] / n
        std = (self.weight_moments[1] / n - mean.pow(2)).clamp_min(0).sqrt()
        summary = torch.stack([mean, std, self.weight_moments[2] / n]).tolist()
        class_means = (self.class_weight_sum / self.class_count.clamp_min(1)).tolist()
        seen = (self.class_count > 0).tolist()
        for tensor in (self.weight_moments, self.class_weight_sum, self.class_count):
            tensor.zero_()
        return {"weight_mean": summary[0], "weight_std": summary[1], "zero_weight_share": summary[2],
                "class_weight_mean": [m if s else None for m, s in zip(class_means, seen)]}
