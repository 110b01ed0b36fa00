"""A user's folder of images, one sub-folder per class (under train/ val/ test/ or split here)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from focustune.data.dataset import SPLITS, ImageDataset
from focustune.data.sources.base import (DatasetSource, DataRequest, register_source, split_from_numpy,
                                         stratified_split)
from focustune.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DEFAULT_FOLDER_SIZE = 28


def open_image(path: Path) -> Any:
    """``path`` opened by PIL (not decoded yet); an image above PIL's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, warning level included) is a DataError, never decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused, a possible decompression bomb ({exc})") from None


def read_image(path: Path, size: int, mode: str | None) -> np.ndarray | None:
    """``path`` decoded in PIL ``mode`` ('L' or 'RGB'; None: grey stays grey, else RGB), resized to
    ``size`` x ``size`` (bilinear); None when the file cannot be read as an image, a DataError when it
    is above PIL's decompression-bomb limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_image(path) as img:
            img = img.convert(mode or ("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"))
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _read_class_folders(root: Path, size: int, mode: str | None,
                        class_names: list[str] | None) -> tuple[list[str], np.ndarray, np.ndarray, list[Path]]:
    """Read ``root/<class>/*`` into arrays; returns class names, images, labels, skipped files."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = class_names or found
    if unknown := sorted(set(found) - set(class_names)):
        raise DataError(f"{root}: class folders {unknown} are not in the training classes {class_names}")
    images, labels, skipped = [], [], []
    for index, cls in enumerate(class_names):
        folder = root / cls
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        for file in files:
            array = read_image(file, size, mode)
            if array is None:
                skipped.append(file)
                continue
            images.append(array)
            labels.append(index)
    if not images:
        raise DataError(f"{root}: no readable images in class sub-folders")
    return class_names, np.stack(images), np.asarray(labels, dtype=np.int64), skipped


def _detect_mode(root: Path) -> str:
    """'L' when every image sampled is grey, else 'RGB' (all images are then converted alike)."""
    for file in sorted(root.rglob("*"))[:2000]:
        if file.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with open_image(file) as img:
                    if img.mode not in ("1", "L", "I", "I;16", "F", "LA"):
                        return "RGB"
            except OSError:
                continue
    return "L"


def load_image_folder(root: str | os.PathLike, size: int = DEFAULT_FOLDER_SIZE, seed: int = 0,
                      fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> ImageDataset:
    """A folder with one sub-folder of images per class, under train/val/test or split here.

    Unreadable image files are skipped with a warning that names them; a class left with no
    image is refused. Without train/val/test sub-folders, a seeded stratified split is made.
    """
    root = Path(root)
    mode = _detect_mode(root)
    has_splits = all((root / s).is_dir() for s in SPLITS)
    skipped: list[Path] = []
    if has_splits:
        names, images, labels, bad = _read_class_folders(root / "train", size, mode, None)
        skipped += bad
        splits = {"train": split_from_numpy(images, labels)}
        for s in ("val", "test"):
            _, images, labels, bad = _read_class_folders(root / s, size, mode, names)
            skipped += bad
            splits[s] = split_from_numpy(images, labels)
    else:
        names, images, labels, skipped = _read_class_folders(root, size, mode, None)
        counts = np.bincount(labels, minlength=len(names))
        if counts.min() < 3:
            raise DataError(f"{root}: class {names[int(counts.argmin())]!r} has {counts.min()} readable "
                            "image(s); at least 3 per class are needed to split train/val/test")
        parts = stratified_split(labels, fractions, seed)
        splits = {s: split_from_numpy(images[i], labels[i]) for s, i in zip(SPLITS, parts)}
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s): {shown}", stacklevel=2)
    dataset = ImageDataset(name=root.name, class_names=names, source=str(root),
                           task="binary-class" if len(names) == 2 else "multi-class",
                           train=splits["train"], val=splits["val"], test=splits["test"])
    if skipped:
        dataset.notes.append(f"skipped {len(skipped)} unreadable image file(s)")
    return dataset.validate()


@register_source
class ImageFolder(DatasetSource):
    name = "folder"

    def accepts_path(self, path: Path) -> bool:
        return path.is_dir()

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        return load_image_folder(Path(spec).expanduser(), size=request.size or DEFAULT_FOLDER_SIZE,
                                 seed=request.seed)
