"""MedMNIST 2D single-label flags: files from ``--data-dir`` (named as medmnist names them), else downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from focustune.data.dataset import ImageDataset
from focustune.data.sources import base
from focustune.data.sources.base import DatasetSource, DataRequest, register_source
from focustune.data.sources.npz_file import load_npz
from focustune.errors import DataError

MEDMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_HOST = "zenodo.org"


def medmnist_info() -> dict[str, dict]:
    """MedMNIST 2D flags usable here (single-label), from the medmnist package's metadata."""
    from medmnist import INFO

    return {flag: info for flag, info in INFO.items()
            if not flag.endswith("3d") and info["task"] in ("binary-class", "multi-class", "ordinal-regression")}


def medmnist_file(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _download_medmnist(flag: str, size: int, root: Path) -> None:
    import medmnist

    info = medmnist.INFO[flag]
    url = info["url" if size == 28 else f"url_{size}"]
    if not base.network_reachable(MEDMNIST_HOST):
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
    root = Path(data_dir).expanduser() if data_dir else base.DEFAULT_DATA_DIR
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


@register_source
class MedMNIST(DatasetSource):
    name = "medmnist"

    def names(self) -> tuple[str, ...]:
        return tuple(medmnist_info())

    def catalogue(self) -> list[dict[str, Any]]:
        rows = []
        for flag, info in medmnist_info().items():
            n = info["n_samples"]
            rows.append({"name": flag, "source": f"MedMNIST (sizes {'/'.join(map(str, MEDMNIST_SIZES))})",
                         "task": info["task"], "classes": len(info["label"]),
                         "train": n["train"], "val": n["val"], "test": n["test"]})
        return rows

    def load(self, spec: str, request: DataRequest) -> ImageDataset:
        return load_medmnist(spec.lower(), request.data_dir, size=request.size or 28, download=request.download)
