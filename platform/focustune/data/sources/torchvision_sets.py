"""torchvision's image-classification sets: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, SVHN.

Files are read from ``--data-dir`` in torchvision's own layout (``DIR/MNIST/raw/...``,
``DIR/cifar-10-batches-py/``, ``DIR/train_32x32.mat``), downloaded there on a connected machine.
The official test split is the test split; the validation split is carved from the official
training split: VAL_FRACTION of each class, drawn with the data seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from focustune.data.dataset import ImageDataset
from focustune.data.sources import base
from focustune.data.sources.base import DatasetSource, DataRequest, register_source, split_from_numpy
from focustune.errors import DataError

VAL_FRACTION = 0.1


@dataclass(frozen=True)
class TorchvisionSet:
    """One torchvision dataset; ``family`` says how torchvision stores it (idx, cifar, svhn)."""

    name: str
    class_name: str
    family: str
    classes: int
    train_size: int
    test_size: int
    image_size: int

    def dataset_class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.class_name)

    def open(self, root: Path, train: bool, download: bool) -> Any:
        cls = self.dataset_class()
        if self.family == "svhn":
            return cls(str(root), split="train" if train else "test", download=download)
        return cls(str(root), train=train, download=download)

    def arrays(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [N, H, W] or [N, H, W, C] and integer labels."""
        if self.family == "idx":
            return data.data.numpy(), data.targets.numpy()
        if self.family == "cifar":
            return data.data, np.asarray(data.targets)
        return data.data.transpose(0, 2, 3, 1), data.labels

    def folder(self, root: Path) -> Path:
        """Where torchvision looks for the files."""
        return root / self.class_name / "raw" if self.family == "idx" else root

    def files(self) -> list[str]:
        """The files to put in :meth:`folder` (archives as downloaded)."""
        cls = self.dataset_class()
        if self.family == "idx":
            return [name for name, _ in cls.resources]
        if self.family == "cifar":
            return [cls.filename]
        return [cls.split_list[s][1] for s in ("train", "test")]

    def archives_present(self, root: Path) -> bool:
        """Whether torchvision can unpack what is there without the network (SVHN has no archive)."""
        return self.family != "svhn" and all((self.folder(root) / f).is_file() for f in self.files())

    def host(self) -> str:
        cls = self.dataset_class()
        url = {"idx": lambda: cls.mirrors[0], "cifar": lambda: cls.url,
               "svhn": lambda: cls.split_list["train"][0]}[self.family]()
        return urlparse(url).hostname or ""


SETS = {s.name: s for s in (
    TorchvisionSet("mnist", "MNIST", "idx", 10, 60_000, 10_000, 28),
    TorchvisionSet("fashionmnist", "FashionMNIST", "idx", 10, 60_000, 10_000, 28),
    TorchvisionSet("kmnist", "KMNIST", "idx", 10, 60_000, 10_000, 28),
    TorchvisionSet("cifar10", "CIFAR10", "cifar", 10, 50_000, 10_000, 32),
    TorchvisionSet("cifar100", "CIFAR100", "cifar", 100, 50_000, 10_000, 32),
    TorchvisionSet("svhn", "SVHN", "svhn", 10, 73_257, 26_032, 32),
)}


def _missing(spec: TorchvisionSet, root: Path, why: str) -> DataError:
    return DataError(f"{spec.name}: no readable files in {spec.folder(root)} and {why}.\n"
                     f"Put {', '.join(spec.files())} there (torchvision's layout under --data-dir {root}), "
                     f"e.g. copied from a connected machine where `focustune train --dataset {spec.name} "
                     f"--data-dir DIR` downloaded them.")


def _open(spec: TorchvisionSet, root: Path, train: bool, download: bool) -> Any:
    """The torchvision dataset object: read from ``root``, else downloaded there when allowed and possible."""
    try:
        return spec.open(root, train, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        pass
    if not download:
        raise _missing(spec, root, "downloads are disabled")
    if not spec.archives_present(root) and not base.network_reachable(spec.host()):
        raise _missing(spec, root, f"the network ({spec.host()}) is unreachable")
    try:
        return spec.open(root, train, download=True)
    except (RuntimeError, OSError) as exc:  # network or checksum failure inside torchvision
        raise DataError(f"downloading {spec.name} into {root} failed: {exc}") from exc


def load_torchvision(name: str, request: DataRequest) -> ImageDataset:
    """Official training split minus a stratified, seeded VAL_FRACTION validation split; official test split."""
    spec = SETS[name]
    if request.size not in (None, spec.image_size):
        raise DataError(f"{name} comes at {spec.image_size} px; --size applies to MedMNIST and image folders")
    root = request.folder()
    train_data, test_data = (_open(spec, root, train, request.download) for train in (True, False))
    class_names = [str(c) for c in getattr(train_data, "classes", range(spec.classes))]
    official = split_from_numpy(*spec.arrays(train_data))
    train, val = official.stratified_holdout(VAL_FRACTION, len(class_names), request.seed)
    dataset = ImageDataset(name=name, class_names=class_names, train=train, val=val,
                           test=split_from_numpy(*spec.arrays(test_data)), task="multi-class",
                           source=f"torchvision {spec.class_name} from {spec.folder(root)}")
    dataset.notes.append(f"validation: {VAL_FRACTION:.0%} of each class of the official training split "
                         f"(data seed {request.seed})")
    return dataset


@register_source
class Torchvision(DatasetSource):
    name = "torchvision"

    def names(self) -> tuple[str, ...]:
        return tuple(SETS)

    def catalogue(self) -> list[dict[str, Any]]:
        held = lambda n: round(n * VAL_FRACTION)  # noqa: E731  (per class in fact: +-1 per class)
        return [{"name": s.name, "task": "multi-class", "classes": s.classes,
                 "train": f"~{s.train_size - held(s.train_size)}", "val": f"~{held(s.train_size)}",
                 "test": s.test_size,
                 "source": f"torchvision {s.class_name} ({s.image_size} px; val = {VAL_FRACTION:.0%} of train)"}
                for s in SETS.values()]

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        return load_torchvision(spec.lower(), request)
