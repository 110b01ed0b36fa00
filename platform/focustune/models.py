"""Classifiers: a feature backbone plus a head, built for a dataset's channels, classes and size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from focustune.errors import ConfigError


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


def pool_by_matrices(x: torch.Tensor, output_size: int | tuple[int | None, int | None]) -> torch.Tensor:
    """Adaptive average pooling of [N, C, H, W] as two matrix products (deterministic backward on CUDA)."""
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


def with_deterministic_pools(module: nn.Module) -> nn.Module:
    """Replace every ``nn.AdaptiveAvgPool2d`` inside ``module`` (e.g. torchvision's) by :class:`AdaptiveAvgPool2d`."""
    for name, child in module.named_children():
        if type(child) is nn.AdaptiveAvgPool2d:
            setattr(module, name, AdaptiveAvgPool2d(child.output_size))
        else:
            with_deterministic_pools(child)
    return module


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


def small_cnn(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """The ~30k-parameter CNN of IMET: two conv blocks, dropout, one dense layer."""
    net = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(256, 32), nn.ReLU(inplace=True),
    )
    return net, 32


def lenet5(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """LeNet-5 (ReLU, max-pooling), adaptive to the input size."""
    net = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
    )
    return net, 84


def _torchvision_resnet(name: str) -> Callable[[int, int], tuple[nn.Module, int]]:
    def build(channels: int, image_size: int) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        small = image_size < 64
        # The MedMNIST benchmark's 28-px ResNet: 3x3 stride-1 stem, no max-pool.
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3 if small else 7, stride=1 if small else 2,
                              padding=1 if small else 3, bias=False)
        if small:
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim

    return build


def _torchvision_compact(name: str) -> Callable[[int, int], tuple[nn.Module, int]]:
    """EfficientNet / MobileNet backbones for larger images, first conv adapted to the channels."""

    def build(channels: int, image_size: int) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(channels, stem.out_channels, stem.kernel_size, stem.stride,
                                       stem.padding, bias=False)
        last = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)]
        dim = last[0].in_features
        net.classifier = nn.Identity()
        return net, dim

    return build


BACKBONES: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {
    "small_cnn": small_cnn,
    "lenet5": lenet5,
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
    "efficientnet_b0": _torchvision_compact("efficientnet_b0"),
    "mobilenet_v3_small": _torchvision_compact("mobilenet_v3_small"),
}


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


HEADS: dict[str, Callable[[int, int], nn.Module]] = {
    "linear": lambda feature_dim, num_classes: nn.Linear(feature_dim, num_classes),
    "spinal": SpinalHead,
}


def register_head(name: str, factory: Callable[[int, int], nn.Module]) -> None:
    """Make a classification head available as the ``head`` hyperparameter's value ``name``."""
    HEADS[name] = factory


def build_model(name: str, channels: int, num_classes: int, image_size: int,
                head: str = "linear") -> Classifier:
    """Build backbone ``name`` with a ``head`` for ``num_classes`` classes."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(BACKBONES)}")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    backbone, dim = BACKBONES[name](channels, image_size)
    return with_deterministic_pools(Classifier(backbone, dim, HEADS[head](dim, num_classes)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
