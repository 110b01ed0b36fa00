"""A user's MedMNIST-layout ``.npz`` file (read without pickle)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from focustune.data.dataset import SPLITS, ImageDataset
from focustune.data.sources.base import DatasetSource, DataRequest, register_source, split_from_numpy
from focustune.errors import DataError


def load_npz(path: str | os.PathLike, name: str | None = None,
             class_names: list[str] | None = None) -> ImageDataset:
    """Load a MedMNIST-layout ``.npz`` ({train,val,test}_{images,labels}) without pickle."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive: {exc}") from exc
    with archive:
        keys = set(archive.files)
        needed = {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")}
        if missing := sorted(needed - keys):
            raise DataError(f"{path} lacks {', '.join(missing)} (MedMNIST layout needs "
                            f"{{train,val,test}}_images and {{train,val,test}}_labels)")
        splits = {}
        for s in SPLITS:
            images, labels = archive[f"{s}_images"], archive[f"{s}_labels"]
            if images.dtype != np.uint8:
                raise DataError(f"{path}: {s}_images must be uint8 (0..255), got {images.dtype}")
            if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
                raise DataError(f"{path}: {s}_images must be [N, H, W] or [N, H, W, 1|3], got {images.shape}")
            if not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"{path}: {s}_labels must be integers, got {labels.dtype}")
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise DataError(f"{path}: {s}_labels has {labels.shape[1]} columns; only single-label "
                                "classification is supported")
            if len(images) != labels.reshape(-1).shape[0]:
                raise DataError(f"{path}: {s} has {len(images)} images but {labels.reshape(-1).shape[0]} labels")
            splits[s] = split_from_numpy(images, labels)
        if class_names is None and "class_names" in keys:
            class_names = [str(c) for c in archive["class_names"].tolist()]
    if class_names is None:
        top = max(int(splits[s].labels.max()) for s in SPLITS if len(splits[s]))
        class_names = [str(i) for i in range(top + 1)]
    dataset = ImageDataset(name=name or path.stem, class_names=class_names, source=str(path),
                           task="binary-class" if len(class_names) == 2 else "multi-class", **splits)
    return dataset.validate()


@register_source
class NpzFile(DatasetSource):
    name = "npz"

    def accepts_path(self, path: Path) -> bool:
        return path.suffix == ".npz"

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"dataset path {spec!r} does not exist")
        return load_npz(path)
