"""The dataset-source interface and its registry.

A source either serves named datasets (``names``; listed by ``focustune datasets``) or accepts
paths (``accepts_path``: a ``.npz`` file, an image folder). Adding one is a file in this package
whose class is decorated with :func:`register_source`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from focustune.data.dataset import ImageDataset, Split
from focustune.network import reachable
from focustune.registry import Registry

DEFAULT_DATA_DIR = Path(os.environ.get("FOCUSTUNE_DATA_DIR", Path.home() / ".medmnist"))


@dataclass(frozen=True)
class DataRequest:
    """How to load: ``data_dir`` (None: the source's default), image ``size`` (None: the source's
    default), whether downloading is allowed, and the data ``seed`` for splits made while loading."""

    data_dir: Path | None = None
    size: int | None = None
    download: bool = True
    seed: int = 0

    def folder(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else DEFAULT_DATA_DIR


class DatasetSource:
    """Where datasets come from (see the module docstring)."""

    name: ClassVar[str] = ""

    def names(self) -> tuple[str, ...]:
        """The dataset names this source serves (lower case); none for path sources."""
        return ()

    def accepts_path(self, path: Path) -> bool:
        return False

    def catalogue(self) -> list[dict[str, Any]]:
        """One row per named dataset: name, task, classes, train, val, test, source."""
        return []

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        raise NotImplementedError


SOURCES: Registry[DatasetSource] = Registry("dataset source")


def register_source(cls: type[DatasetSource]) -> type[DatasetSource]:
    """Class decorator: register an instance of a :class:`DatasetSource` under its ``name``."""
    SOURCES.add(cls.name, cls())
    return cls


def split_from_numpy(images: np.ndarray, labels: np.ndarray) -> Split:
    """[N, H, W] or [N, H, W, C] uint8 + [N] or [N, 1] labels -> Split with [N, C, H, W].

    Memory-mapped images become a (strided) view of the mapping, never a copy."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    if isinstance(images, np.memmap):  # a (strided) view of the mapping, never a copy
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            tensor = torch.from_numpy(images)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(images))
    return Split(tensor, torch.from_numpy(labels.reshape(-1).astype(np.int64)))


def network_reachable(host: str, port: int = 443) -> bool:
    """Whether a download host answers (HTTPS by default)."""
    return reachable(host, port, timeout=5.0)


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/val/test index split."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train_f, val_f, test_f = fractions
    train, rest = train_test_split(index, train_size=train_f, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, train_size=val_f / (val_f + test_f), stratify=labels[rest],
                                 random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)
