"""Where datasets come from: the embedded default, MedMNIST, a user's ``.npz`` or image folder."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from focustune.data.dataset import SPLITS, ImageDataset, Split
from focustune.errors import DataError

log = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "digits-lt"
DIGITS_IMBALANCE_RATIO = 10.0
MEDMNIST_SIZES = (28, 64, 128, 224)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DEFAULT_DATA_DIR = Path(os.environ.get("FOCUSTUNE_DATA_DIR", Path.home() / ".medmnist"))
#: An .npz whose images hold more bytes than this is memory-mapped instead of read into memory
#: (224-px MedMNIST sets reach 16 GB): its image arrays are extracted once to CACHE_DIR.
MEMORY_MAP_ABOVE = 2 * 2**30
CACHE_DIR = Path(os.environ.get("FOCUSTUNE_CACHE_DIR", Path.home() / ".cache" / "focustune"))


# ---------------------------------------------------------------- helpers

def _from_numpy(images: np.ndarray, labels: np.ndarray) -> Split:
    """[N, H, W] or [N, H, W, C] uint8 + [N] or [N, 1] labels -> Split with [N, C, H, W].

    Memory-mapped images become a (strided) view of the mapping, never a copy."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    if isinstance(images, np.memmap):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            tensor = torch.from_numpy(images)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(images))
    return Split(tensor, torch.from_numpy(labels.reshape(-1).astype(np.int64)))


def _memory_mapped_member(path: Path, member: str, cache_dir: Path) -> np.ndarray:
    """The array ``member`` (an .npy inside the .npz ``path``), extracted once to ``cache_dir`` and
    memory-mapped read-only. The cache is keyed by the archive's path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / f"{path.stem}-{key}" / member
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(path) as archive, archive.open(member) as source, open(partial, "wb") as copy:
            shutil.copyfileobj(source, copy, 16 * 2**20)
        os.replace(partial, target)
    try:
        return np.load(target, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # e.g. an object array, which cannot be mapped (and would need pickle)
        raise DataError(f"{path}: {member} cannot be memory-mapped: {exc}") from exc


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


def long_tailed_counts(counts: list[int], ratio: float) -> list[int]:
    """Exponential profile: class i keeps n_max * ratio^(-i/(K-1)) samples (capped by what it has)."""
    if ratio < 1:
        raise DataError(f"imbalance ratio must be >= 1, got {ratio}")
    n_max, k = max(counts), len(counts)
    return [min(c, max(1, int(n_max * ratio ** (-i / max(k - 1, 1))))) for i, c in enumerate(counts)]


def make_long_tailed(split: Split, num_classes: int, ratio: float, seed: int = 0) -> Split:
    """Subsample a (training) split so class i keeps an exponentially decaying share."""
    counts = split.class_counts(num_classes).tolist()
    keep = long_tailed_counts(counts, ratio)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for cls, n in enumerate(keep):
        members = torch.nonzero(split.labels == cls).flatten()
        parts.append(members[torch.randperm(len(members), generator=gen)[:n]])
    return split.subset(torch.sort(torch.cat(parts)).values)


# ---------------------------------------------------------------- embedded default

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


# ---------------------------------------------------------------- MedMNIST

def medmnist_info() -> dict[str, dict]:
    """MedMNIST 2D flags usable here (single-label), from the medmnist package's metadata."""
    from medmnist import INFO

    return {flag: info for flag, info in INFO.items()
            if not flag.endswith("3d") and info["task"] in ("binary-class", "multi-class", "ordinal-regression")}


def medmnist_file(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _network_reachable(host: str = "zenodo.org", port: int = 443, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download_medmnist(flag: str, size: int, root: Path) -> None:
    import medmnist

    info = medmnist.INFO[flag]
    url = info["url" if size == 28 else f"url_{size}"]
    if not _network_reachable():
        raise DataError(
            f"{medmnist_file(flag, size)} is not in {root} and the network is unreachable.\n"
            f"Download it on a connected machine from {url}\n"
            f"and put it in a folder passed as --data-dir (or run once with network access).")
    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, info["python_class"])
    try:
        cls(split="train", root=str(root), size=size, download=True)
    except Exception as exc:  # network or checksum failure inside medmnist/torchvision
        raise DataError(f"downloading {flag} (size {size}) into {root} failed: {exc}") from exc


def load_medmnist(flag: str, data_dir: str | os.PathLike | None = None, size: int = 28,
                  download: bool = True) -> ImageDataset:
    """Load a 2D MedMNIST flag from ``data_dir`` (files named as medmnist names them), else download."""
    infos = medmnist_info()
    if flag not in infos:
        raise DataError(f"{flag!r} is not a supported MedMNIST flag (2D, single-label): {', '.join(infos)}")
    if size not in MEDMNIST_SIZES:
        raise DataError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {size}")
    root = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    path = root / medmnist_file(flag, size)
    if not path.is_file():
        if not download:
            raise DataError(f"{path} not found (downloads disabled); pass --data-dir with the file")
        _download_medmnist(flag, size, root)
    info = infos[flag]
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    dataset = load_npz(path, name=flag if size == 28 else f"{flag}_{size}", class_names=names)
    dataset.task = info["task"]
    dataset.source = f"MedMNIST {flag} ({size} px) from {path}"
    return dataset


# ---------------------------------------------------------------- a user's own data

def load_npz(path: str | os.PathLike, name: str | None = None, class_names: list[str] | None = None, *,
             memory_map_above: int = MEMORY_MAP_ABOVE, cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load a MedMNIST-layout ``.npz`` ({train,val,test}_{images,labels}) without pickle.

    Images larger than ``memory_map_above`` bytes in total are memory-mapped from a one-off
    extraction under ``cache_dir`` (default ``$FOCUSTUNE_CACHE_DIR`` or ``~/.cache/focustune``).
    """
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
        image_bytes = sum(archive.zip.getinfo(f"{s}_images.npy").file_size for s in SPLITS)
        mapped = image_bytes > memory_map_above
        splits = {}
        for s in SPLITS:
            images = (_memory_mapped_member(path, f"{s}_images.npy", Path(cache_dir or CACHE_DIR)) if mapped
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
            splits[s] = _from_numpy(images, labels)
        if class_names is None and "class_names" in keys:
            class_names = [str(c) for c in archive["class_names"].tolist()]
    if class_names is None:
        top = max(int(splits[s].labels.max()) for s in SPLITS if len(splits[s]))
        class_names = [str(i) for i in range(top + 1)]
    dataset = ImageDataset(name=name or path.stem, class_names=class_names, source=str(path),
                           task="binary-class" if len(class_names) == 2 else "multi-class", **splits)
    if mapped:
        dataset.notes.append(f"images ({image_bytes / 2**30:.2f} GiB) memory-mapped from an extraction "
                             f"under {cache_dir or CACHE_DIR}")
    return dataset.validate()


def _read_image(path: Path, size: int, mode: str | None) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
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
            array = _read_image(file, size, mode)
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
    from PIL import Image

    for file in sorted(root.rglob("*"))[:2000]:
        if file.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(file) as img:
                    if img.mode not in ("1", "L", "I", "I;16", "F", "LA"):
                        return "RGB"
            except OSError:
                continue
    return "L"


def load_image_folder(root: str | os.PathLike, size: int = 28, seed: int = 0,
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
        splits = {"train": _from_numpy(images, labels)}
        for s in ("val", "test"):
            _, images, labels, bad = _read_class_folders(root / s, size, mode, names)
            skipped += bad
            splits[s] = _from_numpy(images, labels)
    else:
        names, images, labels, skipped = _read_class_folders(root, size, mode, None)
        counts = np.bincount(labels, minlength=len(names))
        if counts.min() < 3:
            raise DataError(f"{root}: class {names[int(counts.argmin())]!r} has {counts.min()} readable "
                            "image(s); at least 3 per class are needed to split train/val/test")
        parts = stratified_split(labels, fractions, seed)
        splits = {s: _from_numpy(images[i], labels[i]) for s, i in zip(SPLITS, parts)}
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s): {shown}", stacklevel=2)
    dataset = ImageDataset(name=root.name, class_names=names, source=str(root),
                           task="binary-class" if len(names) == 2 else "multi-class", **splits)
    if skipped:
        dataset.notes.append(f"skipped {len(skipped)} unreadable image file(s)")
    return dataset.validate()
