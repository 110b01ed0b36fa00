"""The in-memory dataset: uint8 image tensors and int64 labels per split, plus metadata."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import torch

from focustune.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
#: The smallest image side a dataset may have (the default model's two poolings need 4 px).
MIN_IMAGE_SIZE = 4
#: The largest seed (run or data): NumPy's and scikit-learn's seeds are 32-bit.
MAX_SEED = 2**32 - 1


def check_seed(value: int, option: str) -> None:
    """Refuse a seed outside 0..MAX_SEED (``option`` names it in the message)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{option} {value}: a seed must be a whole number in 0..{MAX_SEED}")


@dataclass
class Split:
    """One split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device | str, images: bool = True) -> Split:
        """On ``device``; with ``images=False`` only the labels move (the images stay where they are)."""
        return Split(self.images.to(device) if images else self.images, self.labels.to(device))

    @property
    def image_bytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def class_counts(self, num_classes: int) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=num_classes)

    def stratified_holdout(self, fraction: float, num_classes: int, seed: int) -> tuple[Split, Split]:
        """(rest, held out): ``fraction`` of each class's images, drawn with ``seed``; a class with
        two or more images gives at least one and keeps at least one."""
        gen = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        rest, held = [], []
        for cls in range(num_classes):
            members = torch.nonzero(labels == cls).flatten()
            members = members[torch.randperm(len(members), generator=gen)]
            n = len(members)
            take = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
            held.append(members[:take])
            rest.append(members[take:])
        order = lambda parts: torch.sort(torch.cat(parts)).values.to(self.labels.device)  # noqa: E731
        return self.subset(order(rest)), self.subset(order(held))


@dataclass
class ImageDataset:
    """A small image-classification dataset held as tensors."""

    name: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    task: str = "multi-class"
    source: str = ""
    notes: list[str] = field(default_factory=list)
    #: The imbalance profile applied to the training split (e.g. ``step``), None when none was.
    imbalance: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def to(self, device: torch.device | str, images: bool = True) -> ImageDataset:
        """On ``device``; with ``images=False`` only the labels move (see :meth:`Split.to`)."""
        return dataclasses.replace(self, train=self.train.to(device, images), val=self.val.to(device, images),
                                   test=self.test.to(device, images))

    @property
    def image_bytes(self) -> int:
        """Bytes of all splits' images."""
        return sum(self.split(s).image_bytes for s in SPLITS)

    def summary(self) -> dict:
        """Plain-Python description (sizes, class counts) for listings and run records."""
        return {
            "name": self.name, "task": self.task, "classes": self.num_classes,
            "class_names": list(self.class_names), "channels": self.channels,
            "image_size": self.image_size, "source": self.source,
            "sizes": {s: len(self.split(s)) for s in SPLITS},
            "train_class_counts": self.train.class_counts(self.num_classes).tolist(),
            "imbalance": self.imbalance,
        }

    def validate(self) -> ImageDataset:
        """Refuse a dataset the trainer cannot use; return self so calls can chain."""
        if self.num_classes < 2:
            raise DataError(f"dataset {self.name!r} has {self.num_classes} class; at least 2 are needed")
        for name in SPLITS:
            part = self.split(name)
            if part.images.dtype != torch.uint8:
                raise DataError(f"{self.name}/{name}: images must be uint8, got {part.images.dtype}")
            if part.images.ndim != 4:
                raise DataError(f"{self.name}/{name}: images must be [N, C, H, W], got {tuple(part.images.shape)}")
            if part.images.shape[0] != part.labels.shape[0]:
                raise DataError(f"{self.name}/{name}: {part.images.shape[0]} images but "
                                f"{part.labels.shape[0]} labels")
            if len(part) == 0:
                raise DataError(f"{self.name}/{name}: the split is empty")
            low, high = int(part.labels.min()), int(part.labels.max())
            if low < 0 or high >= self.num_classes:
                raise DataError(f"{self.name}/{name}: labels must lie in 0..{self.num_classes - 1}, "
                                f"found {low}..{high}")
        shapes = {tuple(self.split(s).images.shape[1:]) for s in SPLITS}
        if len(shapes) != 1:
            raise DataError(f"{self.name}: splits have different image shapes {sorted(shapes)}")
        height, width = self.train.images.shape[-2:]
        if height != width or width < MIN_IMAGE_SIZE:
            raise DataError(f"{self.name}: images are {height} x {width} px; they must be square and at least "
                            f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}")
        present = int((self.train.class_counts(self.num_classes) > 0).sum())
        if present < 2:
            raise DataError(f"{self.name}: the training split holds only one class")
        in_val = torch.unique(self.val.labels).tolist()
        if len(in_val) < 2:
            warnings.warn(f"{self.name}: the validation split holds only class {self.class_names[in_val[0]]!r}, "
                          "so its AUC is undefined (nan) and cannot select the best epoch", UserWarning,
                          stacklevel=2)
        return self
