"""Images as models see them: the one normalisation (uint8 pixels <-> [-1, 1]) and batched augmentation.

Shared by the trainer, FastGAN (which generates in the same range) and inference (a model bundle
records the normalisation it was trained with).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F

#: uint8 pixels -> (x / scale - mean) / std: [-1, 1] (mean 0.5, std 0.5, as the MedMNIST benchmark).
NORMALISATION: Mapping[str, float] = MappingProxyType({"scale": 255.0, "mean": 0.5, "std": 0.5})


def normalise(images: torch.Tensor, normalisation: Mapping[str, float] = NORMALISATION) -> torch.Tensor:
    """uint8 ``images`` -> float ``(x / scale - mean) / std``; [-1, 1] with :data:`NORMALISATION`."""
    scale, mean, std = normalisation["scale"], normalisation["mean"], normalisation["std"]
    return images.float().div_(scale * std).sub_(mean / std)


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalise`: float -> uint8 [0, 255] (rounded, clamped)."""
    scale, mean, std = NORMALISATION["scale"], NORMALISATION["mean"], NORMALISATION["std"]
    return ((x.float() + mean / std) * (scale * std)).round().clamp(0, 255).to(torch.uint8)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Batched random horizontal flip, and for ``flip_shift`` a random shift of up to 1/8 of the size."""
    if kind == "none":
        return x
    n = x.shape[0]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if kind == "flip_shift":
        shift = (torch.rand(n, 2, device=x.device, generator=generator) - 0.5) * 0.25 * 2
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x
