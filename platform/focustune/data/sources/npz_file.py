"""A user's MedMNIST-layout ``.npz`` file (read without pickle)."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from focustune.data.dataset import SPLITS, ImageDataset, Split
from focustune.data.sources.base import DatasetSource, DataRequest, register_source, split_from_numpy
from focustune.errors import DataError
from focustune.files import write_atomic


#: An .npz whose images hold more bytes than this is memory-mapped instead of read into memory
#: (224-px MedMNIST sets reach 16 GB): its image arrays are extracted once to CACHE_DIR.
MEMORY_MAP_ABOVE = 2 * 2**30
CACHE_DIR = Path(os.environ.get("FOCUSTUNE_CACHE_DIR", Path.home() / ".cache" / "focustune"))


def _memory_mapped_member(path: Path, member: str, cache_dir: Path) -> np.ndarray:
    """The array ``member`` (an .npy inside the .npz ``path``), extracted once to ``cache_dir`` and
    memory-mapped read-only. The cache is keyed by the archive's path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / f"{path.stem}-{key}" / member
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)

        def extract(partial: Path) -> None:
            with zipfile.ZipFile(path) as archive, archive.open(member) as source, open(partial, "wb") as copy:
                shutil.copyfileobj(source, copy, 16 * 2**20)

        write_atomic(target, extract)
    try:
        return np.load(target, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # e.g. an object array, which cannot be mapped (and would need pickle)
        raise DataError(f"{path}: {member} cannot be memory-mapped: {exc}") from exc


#: What reading a damaged or hostile .npz raises: a truncated or empty file (BadZipFile, EOFError), a
#: corrupt member (zlib.error, a CRC mismatch), an object array (ValueError: it would need pickle).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_npz(path: str | os.PathLike, name: str | None = None, class_names: list[str] | None = None, *,
             memory_map_above: int = MEMORY_MAP_ABOVE, cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load a MedMNIST-layout ``.npz`` ({train,val,test}_{images,labels}) without pickle.

    The classes are ``class_names`` if given, else the file's ``class_names`` array, else the labels of
    the training split, which must then be exactly 0..K-1; a label outside the classes is refused.
    Images larger than ``memory_map_above`` bytes in total are memory-mapped from a one-off
    extraction under ``cache_dir`` (default ``$FOCUSTUNE_CACHE_DIR`` or ``~/.cache/focustune``).
    """
    path = Path(path)
    try:
        splits, class_names, mapped, image_bytes = _read_npz(path, class_names, memory_map_above,
                                                             Path(cache_dir or CACHE_DIR))
    except NPZ_READ_ERRORS as exc:
        raise DataError(f"cannot read {path} as an .npz archive ({type(exc).__name__}: {exc})") from None
    if class_names is None:
        class_names = _classes_of_labels(path, splits["train"].labels)
    dataset = ImageDataset(name=name or path.stem, class_names=class_names, source=str(path),
                           task="binary-class" if len(class_names) == 2 else "multi-class",
                           train=splits["train"], val=splits["val"], test=splits["test"])
    if mapped:
        dataset.notes.append(f"images ({image_bytes / 2**30:.2f} GiB) memory-mapped from an extraction "
                             f"under {cache_dir or CACHE_DIR}")
    return dataset.validate()


def _read_npz(path: Path, class_names: list[str] | None, memory_map_above: int,
              cache_dir: Path) -> tuple[dict[str, Split], list[str] | None, bool, int]:
    """The splits, the declared class names (None when the file declares none), whether the images
    are memory-mapped, and their bytes."""
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        needed = {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")}
        if missing := sorted(needed - keys):
            raise DataError(f"{path} lacks {', '.join(missing)} (MedMNIST layout needs "
                            f"{{train,val,test}}_images and {{train,val,test}}_labels)")
        image_bytes = sum(archive.zip.getinfo(f"{s}_images.npy").file_size for s in SPLITS)
        mapped = image_bytes > memory_map_above
        splits = {}
        for s in SPLITS:
            images = (_memory_mapped_member(path, f"{s}_images.npy", cache_dir) if mapped
                      else archive[f"{s}_images"])
            labels = archive[f"{s}_labels"]
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
    return splits, class_names, mapped, image_bytes


def _classes_of_labels(path: Path, labels: torch.Tensor) -> list[str]:
    """Class names "0".."K-1" for a file that declares none: its training labels must be exactly 0..K-1
    (a stray label, e.g. a 7 in two-class data, would otherwise make a class of its own)."""
    if not len(labels):
        raise DataError(f"{path}: the train split is empty")
    present = torch.unique(labels)
    if int(present.min()) < 0 or int(present.max()) != len(present) - 1:
        shown = ", ".join(str(int(v)) for v in present[:10]) + (" ..." if len(present) > 10 else "")
        raise DataError(f"{path}: the training labels ({shown}) are not 0..K-1, and the file declares no "
                        "`class_names`; fix the labels, or add a `class_names` array naming every class")
    return [str(i) for i in range(len(present))]


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
