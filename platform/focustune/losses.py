"""Per-sample losses and class weights shared by the baselines and the methods built on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Per-class weights, normalised so the training set's mean sample weight is 1.

    ``beta = 0`` gives inverse class frequency; ``0 < beta < 1`` gives the effective-number
    weights (1 - beta) / (1 - beta^n_c) of Cui et al. (CVPR 2019). Absent classes get weight 0.
    """
    counts = counts.float()
    if beta > 0:
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, device=counts.device), counts))
    else:
        raw = 1.0 / counts
    raw = torch.where(counts > 0, raw, torch.zeros_like(raw))
    return raw * counts.sum() / (raw * counts).sum()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample focal loss -(1 - p_t)^gamma log p_t (Lin et al. 2017), optionally class-weighted."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()).clamp_min(0) ** gamma) * log_p
    return loss if class_weights is None else loss * class_weights[targets]
