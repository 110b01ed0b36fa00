"""The one-sigmoid-unit output of binary Keras models (IMET's CNN), generalised to k classes."""

from __future__ import annotations

import torch
from torch import nn

from focustune.errors import ConfigError
from focustune.models.base import register_head


class ReferenceLogitHead(nn.Module):
    """``num_classes - 1`` output units; class 0's logit is fixed at 0.

    For two classes this is one sigmoid unit: softmax over (0, z) is (1 - sigmoid(z), sigmoid(z)),
    so the trainer's cross-entropy on these logits is binary cross-entropy on sigmoid(z), as a
    Keras ``Dense(1, activation="sigmoid")`` output trains. For more classes it is the
    reference-class parametrisation of the softmax (one weight vector fewer than ``linear``).
    """

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"the sigmoid head needs at least 2 classes, got {num_classes}")
        self.units = nn.Linear(feature_dim, num_classes - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.units(features)
        return torch.cat([z.new_zeros(z.shape[0], 1), z], dim=1)


@register_head("sigmoid")
def sigmoid_head(feature_dim: int, num_classes: int) -> nn.Module:
    return ReferenceLogitHead(feature_dim, num_classes)
