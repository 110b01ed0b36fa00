"""Shared fixtures: tiny generated datasets (no files, no network) and the real-data location."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from focustune.data import ImageDataset, Split

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"


def without_timings(history: list[dict]) -> list[dict]:
    """Epoch records minus their wall-clock fields (a method's own included, such as mdgan's
    ``gan_seconds`` and ``gan_time_share``), for comparing two runs of the same computation."""
    return [_untimed(record) for record in history]


def _untimed(record: dict) -> dict:
    return {k: _untimed(v) if isinstance(v, dict) else v for k, v in record.items()
            if k not in ("seconds", "samples_per_s") and not k.endswith(("_seconds", "_time_share"))}


def make_split(counts: list[int], size: int = 12, channels: int = 1, seed: int = 0) -> Split:
    """Learnable synthetic images: class c lights up a band at row position c, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    images = torch.randint(0, 60, (len(labels), channels, size, size), generator=gen).float()
    k = len(counts)
    band = max(size // k, 1)
    for c in range(k):
        rows = slice(c * band, (c + 1) * band)
        images[labels == c, :, rows, :] += 150
    perm = torch.randperm(len(labels), generator=gen)
    return Split(images.clamp(0, 255).to(torch.uint8)[perm], labels[perm])


def make_dataset(train_counts: list[int] = (40, 12, 6), eval_per_class: int = 10, size: int = 12,
                 channels: int = 1, seed: int = 0, name: str = "tiny") -> ImageDataset:
    k = len(train_counts)
    return ImageDataset(
        name=name, class_names=[f"c{i}" for i in range(k)],
        train=make_split(list(train_counts), size, channels, seed),
        val=make_split([eval_per_class] * k, size, channels, seed + 1),
        test=make_split([eval_per_class] * k, size, channels, seed + 2),
        task="binary-class" if k == 2 else "multi-class", source="generated",
    ).validate()


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    """Three imbalanced classes (40/12/6), 12x12 grey images, 10 per class in val and test."""
    return make_dataset()


@pytest.fixture
def tiny_rgb_dataset() -> ImageDataset:
    return make_dataset((30, 8), size=16, channels=3, name="tiny-rgb")


@pytest.fixture
def shared_medmnist() -> Path:
    """The real MedMNIST files; the test is skipped when ../shared is absent."""
    if not SHARED_MEDMNIST.is_dir():
        pytest.skip(f"{SHARED_MEDMNIST} not present")
    return SHARED_MEDMNIST
