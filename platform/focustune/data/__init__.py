"""Datasets as tensors: the embedded default, MedMNIST flags, and a user's ``.npz`` or image folder."""

from __future__ import annotations

import os
from pathlib import Path

from focustune.data.dataset import SPLITS, ImageDataset, Split
from focustune.data.sources import (EMBEDDED_DEFAULT, MEDMNIST_SIZES, load_digits_long_tailed,
                                    load_image_folder, load_medmnist, load_npz, make_long_tailed,
                                    medmnist_info)
from focustune.errors import DataError

__all__ = ["SPLITS", "EMBEDDED_DEFAULT", "ImageDataset", "Split", "load_dataset", "list_datasets",
           "make_long_tailed"]


def list_datasets() -> list[dict]:
    """Known named datasets: the embedded default and every supported MedMNIST flag."""
    rows = [{"name": EMBEDDED_DEFAULT, "source": "embedded (scikit-learn digits, long-tailed, offline)",
             "task": "multi-class", "classes": 10, **_digits_sizes()}]
    for flag, info in medmnist_info().items():
        n = info["n_samples"]
        rows.append({"name": flag, "source": f"MedMNIST (sizes {'/'.join(map(str, MEDMNIST_SIZES))})",
                     "task": info["task"], "classes": len(info["label"]),
                     "train": n["train"], "val": n["val"], "test": n["test"]})
    return rows


def _digits_sizes() -> dict:
    data = load_digits_long_tailed()
    return {"train": len(data.train), "val": len(data.val), "test": len(data.test)}


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, *, size: int = 28,
                 imbalance_ratio: float | None = None, download: bool = True,
                 seed: int = 0) -> ImageDataset:
    """Resolve ``spec`` (a name from :func:`list_datasets`, an ``.npz`` path or an image folder).

    ``imbalance_ratio`` makes the training split long-tailed (exponential profile); val and test
    are left untouched. The result is validated and lives on the CPU.
    """
    flags = medmnist_info()
    path = Path(spec).expanduser()
    if spec == EMBEDDED_DEFAULT:
        dataset = load_digits_long_tailed()
    elif spec.lower() in flags:
        dataset = load_medmnist(spec.lower(), data_dir, size=size, download=download)
    elif path.is_file() and path.suffix == ".npz":
        dataset = load_npz(path)
    elif path.is_dir():
        dataset = load_image_folder(path, size=size, seed=seed)
    elif path.suffix == ".npz" or os.sep in spec:
        raise DataError(f"dataset path {spec!r} does not exist")
    else:
        raise DataError(f"unknown dataset {spec!r}: use {EMBEDDED_DEFAULT}, a MedMNIST flag "
                        f"({', '.join(flags)}), a .npz file or an image folder")
    if imbalance_ratio is not None and imbalance_ratio != 1:
        dataset.train = make_long_tailed(dataset.train, dataset.num_classes, imbalance_ratio, seed)
        dataset.notes.append(f"training split made long-tailed, imbalance ratio {imbalance_ratio:g}")
    return dataset.validate()
