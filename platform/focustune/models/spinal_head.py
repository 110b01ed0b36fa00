"""Progressive SpinalNet classification head (mdgan's head)."""

from __future__ import annotations

import torch
from torch import nn

from focustune.errors import ConfigError
from focustune.models.base import register_head


@register_head("spinal")
class SpinalHead(nn.Module):
    """Progressive SpinalNet classification head (Kabir et al. 2020; Chopra 2021).

    The features are split into two halves; a chain of ``layers`` small layers (linear + ReLU)
    alternately sees the first or second half plus the previous layer's output, and the output
    layer sees all the chain's outputs concatenated.
    """

    def __init__(self, feature_dim: int, num_classes: int, layers: int = 4, width: int | None = None):
        super().__init__()
        if feature_dim < 2:
            raise ConfigError(f"the spinal head needs at least 2 features, got {feature_dim}")
        self.split = (feature_dim + 1) // 2
        halves = (self.split, feature_dim - self.split)
        width = width or max(16, feature_dim // 4)
        self.chain = nn.ModuleList(
            nn.Sequential(nn.Linear(halves[i % 2] + (width if i else 0), width), nn.ReLU(inplace=True))
            for i in range(layers))
        self.output = nn.Linear(layers * width, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        halves = (features[:, :self.split], features[:, self.split:])
        outputs: list[torch.Tensor] = []
        for i, layer in enumerate(self.chain):
            part = halves[i % 2]
            outputs.append(layer(part if not outputs else torch.cat([part, outputs[-1]], dim=1)))
        return self.output(torch.cat(outputs, dim=1))

