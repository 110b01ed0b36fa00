"""Classifiers: a registered backbone plus a registered head, built for a dataset's shape.

A backbone factory takes ``(channels, image_size)`` and returns ``(module, feature_dim)``; a head
factory takes ``(feature_dim, num_classes)`` and returns a module. Register them with
:func:`register_model` / :func:`register_head` (one file in this package each).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from focustune.registry import Registry

BackboneFactory = Callable[[int, int], tuple[nn.Module, int]]
HeadFactory = Callable[[int, int], nn.Module]

MODELS: Registry[BackboneFactory] = Registry("model")
HEADS: Registry[HeadFactory] = Registry("head")


def register_model(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone factory the ``model`` hyperparameter's value ``name``."""
    return MODELS.register(name)


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
    """Decorator: make a head factory the ``head`` hyperparameter's value ``name``."""
    return HEADS.register(name)


class Classifier(nn.Module):
    """``head(backbone(x))``; ``features`` exposes the backbone output for methods that need it."""

    def __init__(self, backbone: nn.Module, feature_dim: int, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(name: str, channels: int, num_classes: int, image_size: int,
                head: str = "linear") -> Classifier:
    """Build backbone ``name`` with a ``head`` for ``num_classes`` classes (unknown names: ConfigError)."""
    backbone_factory, head_factory = MODELS.get(name), HEADS.get(head)
    backbone, dim = backbone_factory(channels, image_size)
    return Classifier(backbone, dim, head_factory(dim, num_classes))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
