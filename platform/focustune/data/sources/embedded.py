"""The embedded default: scikit-learn's bundled digits, long-tailed (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from focustune.data.dataset import ImageDataset, Split
from focustune.data.imbalance import make_long_tailed
from focustune.data.sources.base import DatasetSource, DataRequest, register_source, stratified_split

EMBEDDED_DEFAULT = "digits-lt"
DIGITS_IMBALANCE_RATIO = 10.0


def load_digits_long_tailed(seed: int = 0, ratio: float = DIGITS_IMBALANCE_RATIO) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits, upscaled to 28x28, split 60/20/20, training set long-tailed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, val, test = (torch.from_numpy(i) for i in stratified_split(digits.target, (0.6, 0.2, 0.2), seed))
    train_split = make_long_tailed(Split(images[train], labels[train]), 10, ratio, seed)
    return ImageDataset(
        name=EMBEDDED_DEFAULT, class_names=[str(d) for d in range(10)], task="multi-class",
        train=train_split, val=Split(images[val], labels[val]), test=Split(images[test], labels[test]),
        source="scikit-learn digits (bundled, offline)",
        notes=[f"training split long-tailed with imbalance ratio {ratio:g}; val/test balanced"],
    )


@register_source
class EmbeddedDigits(DatasetSource):
    name = "embedded"

    def names(self) -> tuple[str, ...]:
        return (EMBEDDED_DEFAULT,)

    def catalogue(self) -> list[dict[str, Any]]:
        data = load_digits_long_tailed()
        return [{"name": EMBEDDED_DEFAULT, "source": "embedded (scikit-learn digits, long-tailed, offline)",
                 "task": "multi-class", "classes": 10, "train": len(data.train), "val": len(data.val),
                 "test": len(data.test)}]

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        return load_digits_long_tailed(request.seed)
