"""Classifiers: a registered backbone plus a registered head, built for a dataset's shape.

A backbone factory takes ``(channels, image_size)`` and returns ``(module, feature_dim)``; a head
factory takes ``(feature_dim, num_classes)`` and returns a module. Register them with
:func:`register_model` / :func:`register_head` (one file in this package each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from focustune.registry import Registry

BackboneFactory = Callable[[int, int], tuple[nn.Module, int]]
HeadFactory = Callable[[int, int], nn.Module]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

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
    return with_deterministic_pools(Classifier(backbone, dim, head_factory(dim, num_classes)))


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build modules (on the CPU) under this: the CPU generator starts from ``seed`` and is restored
    afterwards. The CUDA generators are neither reseeded nor touched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def averaging_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """[size_out, size_in]: row i averages the inputs of adaptive-pooling window i."""
    out, inputs = torch.arange(size_out, device=like.device), torch.arange(size_in, device=like.device)
    starts, ends = (out * size_in) // size_out, ((out + 1) * size_in + size_out - 1) // size_out
    window = (inputs[None] >= starts[:, None]) & (inputs[None] < ends[:, None])
    return (window / window.sum(dim=1, keepdim=True)).to(like.dtype)


def pool_by_matrices(x: torch.Tensor, output_size: int | tuple[int | None, int | None] | None) -> torch.Tensor:
    """Adaptive average pooling of [N, C, H, W] as two matrix products (deterministic backward on CUDA); a
    size of None keeps the input's, as in ``nn.AdaptiveAvgPool2d``."""
    out_h, out_w = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    h, w = x.shape[-2:]
    return averaging_matrix(h, out_h or h, x) @ x @ averaging_matrix(w, out_w or w, x).T


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that also trains under deterministic algorithms on CUDA.

    PyTorch has no deterministic CUDA backward for adaptive average pooling (it raises when
    ``torch.use_deterministic_algorithms(True)``); there the pooling runs as matrix products.
    Elsewhere the native kernel runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.requires_grad and torch.are_deterministic_algorithms_enabled():
            return pool_by_matrices(x, self.output_size)
        return super().forward(x)


def with_deterministic_pools(module: ModuleT) -> ModuleT:
    """Replace every ``nn.AdaptiveAvgPool2d`` inside ``module`` (e.g. torchvision's) by :class:`AdaptiveAvgPool2d`."""
    for name, child in module.named_children():
        if type(child) is nn.AdaptiveAvgPool2d:
            setattr(module, name, AdaptiveAvgPool2d(child.output_size))
        else:
            with_deterministic_pools(child)
    return module


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
