"""A trained model as files (a *bundle*: weights and a model card), and predictions from it.

A bundle holds what predicting needs besides the weights: class names, channels, image size and
normalisation, the method and its configuration, and for a binary task a decision threshold
calibrated on validation. New images are converted the way training converted them (grey or RGB,
bilinear resizing to the model's size, the same normalisation) and run in large batches, on CUDA
when present. No MLflow here: :mod:`focustune.tracking.model_package` wraps a bundle as an MLflow model.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from focustune.errors import DataError
from focustune.files import write_atomic
from focustune.metric_table import (DEFAULT_SELECTION_METRIC, DEFAULT_THRESHOLD_METRIC, THRESHOLD_METRICS, Metric,
                                    metric_row)
from focustune.transforms import NORMALISATION, normalise

WEIGHTS_FILE, CARD_FILE = "weights.pt", "model.json"
PREDICT_BATCH = 1024


@dataclass
class ModelCard:
    """What a bundle's ``model.json`` holds besides the weights."""

    config: dict[str, Any]  # a RunConfig as a mapping: method, seed, dataset options, params
    class_names: list[str]
    channels: int
    image_size: int
    task: str
    selection_metric: str
    val: dict[str, float]  # best-epoch validation metrics (argmax decisions), what selected the model
    #: uint8 pixels -> (x / scale - mean) / std: the trainer's normalisation when the model was saved.
    normalisation: dict[str, float] = field(default_factory=lambda: dict(NORMALISATION))
    #: Binary tasks: predict class 1 when its probability is at least this (None: argmax).
    threshold: float | None = None
    threshold_metric: str | None = None  # the validation metric the threshold optimises
    threshold_val_score: float | None = None

    def describe(self) -> str:
        text = (f"{self.config['method']} on {self.config['dataset']}: {len(self.class_names)} classes, "
                f"{self.channels} channel(s), {self.image_size} px")
        if self.threshold is not None:
            aim = "maximising" if metric_row(str(self.threshold_metric)).higher_is_better else "minimising"
            text += (f"; decision threshold {self.threshold:.4f} on P({self.class_names[1]}), {aim} "
                     f"validation {self.threshold_metric}")
        return text


# ---------------------------------------------------------------- thresholds

def threshold_metric_for(selection_metric: str) -> str:
    """The run's selection metric when a threshold can change it, else balanced accuracy."""
    return selection_metric if selection_metric in THRESHOLD_METRICS else DEFAULT_THRESHOLD_METRIC


@dataclass(frozen=True)
class BinaryCounts:
    """A binary task's confusion counts at each candidate threshold (class 1 predicted at or above it)."""

    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @property
    def fn(self) -> np.ndarray:
        return self.positives - self.tp

    @property
    def tn(self) -> np.ndarray:
        return self.negatives - self.fp

    @property
    def recall1(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)

    @property
    def recall0(self) -> np.ndarray:
        return self.tn / max(self.negatives, 1)


def _f1(hit: np.ndarray, miss_a: np.ndarray, miss_b: np.ndarray) -> np.ndarray:
    """One class's F1 from its hits and the two kinds of misses (0 where it has none of the three)."""
    return np.divide(2 * hit, 2 * hit + miss_a + miss_b, out=np.zeros(len(hit)), where=2 * hit + miss_a + miss_b > 0)


#: Each thresholdable metric of the table at every candidate threshold, by its name.
BINARY_SCORES: dict[str, Callable[[BinaryCounts], np.ndarray]] = {
    "acc": lambda c: (c.tp + c.tn) / max(c.positives + c.negatives, 1),
    "balanced_acc": lambda c: (c.recall0 + c.recall1) / 2,
    "macro_f1": lambda c: (_f1(c.tp, c.fp, c.fn) + _f1(c.tn, c.fn, c.fp)) / 2,
    "worst_class_recall": lambda c: np.minimum(c.recall0, c.recall1),
}


def threshold_scores(positive_probs: np.ndarray, labels: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, scores): ``metric`` on the binary ``labels`` when class 1 is predicted for a
    probability >= threshold; candidates are 0.5 and the midpoints between distinct probabilities."""
    p = np.asarray(positive_probs, dtype=np.float64)
    labels = np.asarray(labels)
    distinct = np.unique(p)
    thresholds = np.unique(np.concatenate([(distinct[:-1] + distinct[1:]) / 2, [0.5]]))
    pos, neg = np.sort(p[labels == 1]), np.sort(p[labels != 1])
    counts = BinaryCounts(tp=len(pos) - np.searchsorted(pos, thresholds, side="left"),
                          fp=len(neg) - np.searchsorted(neg, thresholds, side="left"),
                          positives=len(pos), negatives=len(neg))
    return thresholds, BINARY_SCORES[metric](counts)


def best_threshold(thresholds: np.ndarray, scores: np.ndarray, metric: Metric) -> tuple[float, float]:
    """(threshold, score) of the best of ``scores`` in ``metric``'s direction; among equal scores the
    threshold nearest 0.5 (so argmax stays unless another threshold does better)."""
    oriented = metric.sign * scores
    best = np.flatnonzero(oriented >= oriented.max() - 1e-12)
    chosen = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(thresholds[chosen]), float(scores[chosen])


def calibrate_threshold(positive_probs: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, float]:
    """(threshold, validation score): the threshold optimising ``metric`` (:func:`best_threshold`)."""
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"no threshold calibration for {metric!r}; use one of {THRESHOLD_METRICS}")
    return best_threshold(*threshold_scores(positive_probs, labels, metric), metric_row(metric))


# ---------------------------------------------------------------- converting inputs

def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 -> [..., 1]: ITU-R 601-2 luma with PIL's integer rounding (as ``convert('L')``)."""
    rgb = images.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """[N, H, W, C] uint8 -> [N, size, size, C], bilinear per image (as image folders are resized)."""
    from PIL import Image

    def one(image: np.ndarray) -> np.ndarray:
        resized = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).resize(
            (size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8).reshape(size, size, image.shape[-1])

    return np.stack([one(image) for image in images]) if len(images) else images[:, :size, :size]


def to_model_input(images: np.ndarray, channels: int, size: int, what: str = "input") -> torch.Tensor:
    """uint8 ``[N, H, W]`` or ``[N, H, W, 1|3]`` -> uint8 tensor ``[N, channels, size, size]``: grey and
    RGB are converted into each other and sizes resized; anything else is refused (DataError)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{what}: images must be a uint8 array (pixel values 0..255), got {kind}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{what}: images of shape {tuple(images.shape)} cannot be converted to the model's "
                        f"{channels}-channel {size} px input; expected uint8 [N, H, W] (grey) or [N, H, W, 3] "
                        "(RGB), channels last")
    if images.shape[-1] != channels:
        images = rgb_to_grey(images) if channels == 1 else np.repeat(images, 3, axis=-1)
    if images.shape[1:3] != (size, size):
        images = resize_images(images, size)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------- the predictor

class Predictor:
    """A loaded bundle: class probabilities and decisions for uint8 images."""

    def __init__(self, model: torch.nn.Module, card: ModelCard, device: str | torch.device | None = None):
        self.card = card
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # the ignore: torch's overloads of Module.to leave out (device, memory_format=), which it accepts
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """[N, K] class probabilities of uint8 ``[N, C, H, W]`` images in the model's layout."""
        out = []
        for chunk in images.split(batch_size):
            x = normalise(chunk.to(self.device, non_blocking=True), self.card.normalisation)
            out.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.card.class_names)), dtype=np.float32)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class indices: class 1 at or above the binary threshold, else the most probable class."""
        if self.card.threshold is not None:
            return (probs[:, 1] >= self.card.threshold).astype(np.int64)
        return probs.argmax(axis=1)

    def predict_array(self, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, probabilities) of uint8 ``[N, H, W]`` / ``[N, H, W, C]`` images (converted)."""
        probs = self.probabilities(to_model_input(images, self.card.channels, self.card.image_size), batch_size)
        return self.decide(probs), probs


def build_classifier(card: ModelCard) -> torch.nn.Module:
    from focustune.models import build_model

    params = card.config["params"]
    return build_model(params["model"], card.channels, len(card.class_names), card.image_size, head=params["head"])


def save_bundle(folder: str | os.PathLike, state: dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write ``weights.pt`` (CPU tensors) and ``model.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in state.items()}, folder / WEIGHTS_FILE)
    (folder / CARD_FILE).write_text(json.dumps(asdict(card), indent=2))
    return folder


def load_bundle(folder: str | os.PathLike, device: str | torch.device | None = None) -> Predictor:
    """The predictor saved in ``folder`` (DataError when it holds no bundle)."""
    folder = Path(folder)
    if not (folder / CARD_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise DataError(f"{folder} holds no focustune model ({CARD_FILE} and {WEIGHTS_FILE})")
    card = ModelCard(**json.loads((folder / CARD_FILE).read_text()))
    model = build_classifier(card)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return Predictor(model, card, device)


def make_bundle(folder: str | os.PathLike, state: dict[str, torch.Tensor], config: dict[str, Any], dataset: Any,
                val: dict[str, Any]) -> ModelCard:
    """Save the weights ``state`` of a model trained with ``config`` (a RunConfig mapping) on ``dataset``;
    ``val`` are its best-epoch validation metrics. A binary task's threshold is calibrated on the
    validation split for the run's selection metric (balanced accuracy when that is AUC)."""
    selection = str(config["params"].get("selection_metric", DEFAULT_SELECTION_METRIC))
    card = ModelCard(config=config, class_names=[str(c) for c in dataset.class_names], channels=dataset.channels,
                     image_size=dataset.image_size, task=dataset.task, selection_metric=selection,
                     val={k: float(v) for k, v in val.items() if isinstance(v, (int, float))})
    if dataset.num_classes == 2:
        model = build_classifier(card)
        model.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
        probs = Predictor(model, card).probabilities(dataset.val.images.cpu())
        card.threshold_metric = threshold_metric_for(selection)
        card.threshold, card.threshold_val_score = calibrate_threshold(
            probs[:, 1], dataset.val.labels.cpu().numpy(), card.threshold_metric)
    save_bundle(folder, state, card)
    return card


# ---------------------------------------------------------------- reading new images

def _npz_images(path: Path) -> tuple[str, np.ndarray]:
    """(name, array) of the images of an ``.npz``: its ``images`` array, else ``test_images`` (MedMNIST
    layout), else its only array."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files
            key = next((k for k in ("images", "test_images") if k in names), names[0] if len(names) == 1 else None)
            if key is None:
                raise DataError(f"{path}: which array holds the images? Name it `images` (found {', '.join(names)})")
            return key, archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated, empty, corrupt
        raise DataError(f"cannot read {path} as an .npz archive ({type(exc).__name__}: {exc})") from None


@dataclass
class InputBatches:
    """New images from a folder (recursively), an ``.npz`` or one image file, in chunks converted to a
    model's layout. ``skipped`` names the image files that could not be read, ``array`` the .npz array
    read (both filled while iterating)."""

    path: Path
    channels: int
    size: int
    chunk: int = PREDICT_BATCH
    skipped: list[str] = field(default_factory=list)
    array: str | None = None

    def __post_init__(self) -> None:
        if not self.path.exists():
            raise DataError(f"--input {self.path}: no such file or folder")
        if not (self.path.is_dir() or self.path.suffix.lower() == ".npz" or self._is_image(self.path)):
            raise DataError(f"--input {self.path}: expected a folder of images, an .npz file or an image file")

    @staticmethod
    def _is_image(path: Path) -> bool:
        from focustune.data.sources.image_folder import IMAGE_SUFFIXES

        return path.suffix.lower() in IMAGE_SUFFIXES

    def __iter__(self) -> Iterator[tuple[list[Any], torch.Tensor]]:
        """(ids, uint8 [n, C, H, W]) chunks; ids are file paths, or indices into the .npz array."""
        if self.path.suffix.lower() == ".npz" and self.path.is_file():
            self.array, images = _npz_images(self.path)
            for start in range(0, len(images), self.chunk):
                part = images[start:start + self.chunk]
                yield list(range(start, start + len(part))), to_model_input(part, self.channels, self.size,
                                                                            str(self.path))
            return
        files = (sorted(p for p in self.path.rglob("*") if p.is_file() and self._is_image(p))
                 if self.path.is_dir() else [self.path])
        for start in range(0, len(files), self.chunk):
            yield from self._read_files(files[start:start + self.chunk])

    def _read_files(self, files: list[Path]) -> Iterator[tuple[list[Any], torch.Tensor]]:
        from focustune.data.sources.image_folder import read_image

        mode = "L" if self.channels == 1 else "RGB"
        ids, arrays = [], []
        for file in files:
            array = read_image(file, self.size, mode)
            if array is None:
                self.skipped.append(str(file))
                continue
            ids.append(str(file))
            arrays.append(array)
        if arrays:
            yield ids, to_model_input(np.stack(arrays), self.channels, self.size, str(self.path))


def bundle_folder(path: str | os.PathLike) -> Path:
    """The bundle inside ``path``: a bundle folder itself, or a downloaded MLflow model folder."""
    path = Path(path)
    for candidate in (path, *sorted((path / "artifacts").glob("*"))):
        if (candidate / CARD_FILE).is_file():
            return candidate
    raise DataError(f"{path} holds no focustune model (no {CARD_FILE} there, nor in artifacts/*/)")


def write_predictions(predictor: Predictor, batches: InputBatches, output: str | os.PathLike,
                      batch_size: int = PREDICT_BATCH) -> dict[str, int]:
    """One CSV row per readable image (``input``, ``class``, ``prob_<class>`` ...), written atomically;
    returns how many images each class received. No readable image is a DataError (nothing written)."""
    import csv

    output = Path(output)
    names = predictor.card.class_names
    counts = dict.fromkeys(names, 0)

    def write_rows(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["input", "class", *(f"prob_{name}" for name in names)])
            for ids, images in batches:
                probs = predictor.probabilities(images, batch_size)
                for ident, index, row in zip(ids, predictor.decide(probs), probs):
                    writer.writerow([ident, names[index], *(f"{p:.6f}" for p in row)])
                    counts[names[index]] += 1
        if not sum(counts.values()):
            raise DataError(f"--input {batches.path}: no readable image")

    write_atomic(output, write_rows)
    return counts
