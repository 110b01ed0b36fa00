"""SpinalNet classification heads (mdgan's): ours (``spinal``) and the paper's Progressive SpinalNet with
SELU (``spinal_selu``)."""

from __future__ import annotations

import torch
from torch import nn

from focustune.errors import ConfigError
from focustune.models.base import register_head


@register_head("spinal")
class SpinalHead(nn.Module):
    """Our SpinalNet classification head (after Kabir et al. 2020), the default of mdgan.

    The features are split into two halves; a chain of ``layers`` small layers (linear + ReLU)
    alternately sees the first or second half plus the previous layer's output, and the output
    layer sees all the chain's outputs concatenated. The mdgan paper uses Progressive SpinalNet with
    SELU instead (:class:`ProgressiveSpinalHead`, ``head=spinal_selu``).
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



@register_head("spinal_selu")
class ProgressiveSpinalHead(nn.Module):
    """Progressive SpinalNet (Chopra 2021) with SELU activations: the mdgan paper's head.

    Every layer of the chain (linear + SELU) sees all the features plus the outputs of all the
    layers before it; the output layer sees the features and every layer's output. As in
    Progressive SpinalNet, the features on these skip paths pass a dropout of ``dropout`` (the
    first layer sees them as they are). ``width`` defaults to the rule of :class:`SpinalHead`.
    """

    def __init__(self, feature_dim: int, num_classes: int, layers: int = 4, width: int | None = None,
                 dropout: float = 0.2):
        super().__init__()
        width = width or max(16, feature_dim // 4)
        self.dropout = nn.Dropout(dropout)
        self.chain = nn.ModuleList(nn.Sequential(nn.Linear(feature_dim + i * width, width), nn.SELU())
                                   for i in range(layers))
        self.output = nn.Linear(feature_dim + layers * width, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        seen = self.dropout(features)
        for i, layer in enumerate(self.chain):
            out = layer(features if i == 0 else seen)
            seen = torch.cat([seen, out], dim=1)
        return self.output(seen)
