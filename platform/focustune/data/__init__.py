"""Datasets as tensors, from registered sources (``focustune.data.sources``), with imbalance profiles."""

from __future__ import annotations

import os
from pathlib import Path

from focustune.data.dataset import SPLITS, ImageDataset, Split, check_seed
from focustune.data.imbalance import Imbalance, apply_imbalance, make_long_tailed
from focustune.data.sources import SOURCES, DatasetSource, DataRequest
from focustune.data.sources.embedded import EMBEDDED_DEFAULT
from focustune.errors import DataError

__all__ = ["SPLITS", "EMBEDDED_DEFAULT", "ImageDataset", "Imbalance", "Split", "load_dataset", "list_datasets",
           "make_long_tailed"]


def list_datasets() -> list[dict]:
    """Every named dataset of every registered source (name, task, classes, split sizes, source)."""
    return [row for source in SOURCES.values() for row in source.catalogue()]


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, *, size: int | None = None,
                 imbalance: Imbalance | str | None = None, download: bool = True, seed: int = 0) -> ImageDataset:
    """Resolve ``spec`` (a name from :func:`list_datasets`, an ``.npz`` path or an image folder).

    ``seed`` is the data seed: it draws the splits a source makes and the images an ``imbalance``
    profile keeps. The profile applies to the training split only. The result is validated and
    lives on the CPU.
    """
    check_seed(seed, "--data-seed")
    request = DataRequest(Path(data_dir) if data_dir else None, size, download, seed)
    dataset = _source_for(spec).load(spec, request)
    if imbalance is not None:
        profile = Imbalance.parse(imbalance) if isinstance(imbalance, str) else imbalance
        dataset.train = apply_imbalance(dataset.train, dataset.num_classes, profile, seed)
        dataset.imbalance = str(profile)
        dataset.notes.append(f"training split subsampled with imbalance profile {profile} (data seed {seed})")
    return dataset.validate()


def _source_for(spec: str) -> DatasetSource:
    """The source serving ``spec``: named datasets first, then paths."""
    for source in SOURCES.values():
        if spec.lower() in source.names():
            return source
    path = Path(spec).expanduser()
    for source in SOURCES.values():
        if source.accepts_path(path):
            return source
    if os.sep in spec:
        raise DataError(f"dataset path {spec!r} does not exist")
    named = [n for source in SOURCES.values() for n in source.names()]
    raise DataError(f"unknown dataset {spec!r}: use a name listed by `focustune datasets` ({', '.join(named)}), "
                    "a .npz file or an image folder")
