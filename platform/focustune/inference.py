"""A trained model as files (a *bundle*: weights and a model card), and predictions from it.

A bundle holds what predicting needs besides the weights: class names, channels, image size and
normalisation, the method and its configuration, and what turns its logits into probabilities and
decisions, both fitted on the validation split: a temperature (:mod:`focustune.calibration`) and
per-class offsets for an operating point (:mod:`focustune.operating_points`; for a binary task, a
decision threshold). New images are converted the way training converted them (grey or RGB,
bilinear resizing to the model's size, the same normalisation) and run in large batches, on CUDA
when present. No MLflow here: :mod:`focustune.tracking.model_package` wraps a bundle as an MLflow model.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from focustune.errors import DataError
from focustune.files import write_atomic
from focustune.metric_table import DEFAULT_SELECTION_METRIC, metric_row
from focustune.operating_points import (OperatingRule, decide, log_probabilities, offsets_of_threshold, parse_rule,
                                        threshold_of)
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
    #: The logits are divided by it before the softmax (temperature scaling, fitted on validation).
    temperature: float = 1.0
    #: Per-class offsets added to the log probabilities before the argmax (None: the argmax itself), fitted
    #: on validation for ``operating_point``; a binary task's threshold is their two-class case.
    offsets: list[float] | None = None
    operating_point: str = ""  # the rule they were fitted for: ``balanced_acc | recall[melanoma]>=0.9``
    operating_val: dict[str, float] = field(default_factory=dict)  # its metric and constrained values on val

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """A card from ``model.json``; one written before operating points (a binary ``threshold``, no
        temperature) decides exactly as it did."""
        data = dict(data)
        threshold, metric = data.pop("threshold", None), data.pop("threshold_metric", None)
        score = data.pop("threshold_val_score", None)
        if threshold is not None:
            data.update(offsets=offsets_of_threshold(threshold), operating_point=str(metric),
                        operating_val={str(metric): score})
        return cls(**data)

    @property
    def rule(self) -> OperatingRule:
        return parse_rule(self.operating_point, self.selection_metric)

    @property
    def threshold(self) -> float | None:
        """Binary tasks: class 1 is predicted when its (calibrated) probability is at least this."""
        return threshold_of(self.offsets) if self.offsets is not None and len(self.class_names) == 2 else None

    @property
    def threshold_metric(self) -> str | None:
        """Binary tasks: the validation metric the threshold optimises."""
        return self.rule.metric if self.threshold is not None else None

    @property
    def threshold_val_score(self) -> float | None:
        return self.operating_val.get(self.rule.metric) if self.threshold is not None else None

    def describe(self) -> str:
        text = (f"{self.config['method']} on {self.config['dataset']}: {len(self.class_names)} classes, "
                f"{self.channels} channel(s), {self.image_size} px; temperature {self.temperature:.4f}")
        if self.offsets is None:
            return text
        rule = self.rule
        aim = "maximising" if metric_row(rule.metric).higher_is_better else "minimising"
        reached = ", ".join(f"{name} {value:.4f}" for name, value in self.operating_val.items())
        where = (f"decision threshold {self.threshold:.4f} on P({self.class_names[1]})" if self.threshold is not None
                 else "per-class logit offsets " + ", ".join(f"{n} {o:+.3f}" for n, o in zip(self.class_names,
                                                                                            self.offsets)))
        return (f"{text}; {where}, {aim} validation {rule.metric}"
                f"{' under ' + ', '.join(map(str, rule.constraints)) if rule.constraints else ''} ({reached})")


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
    def logits(self, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
        """[N, K] float32 logits (on the CPU) of uint8 ``[N, C, H, W]`` images in the model's layout."""
        out = []
        for chunk in images.split(batch_size):
            x = normalise(chunk.to(self.device, non_blocking=True), self.card.normalisation)
            out.append(self.model(x).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, len(self.card.class_names)))

    def calibrated(self, logits: torch.Tensor) -> np.ndarray:
        """[N, K] class probabilities: the softmax of ``logits`` divided by the card's temperature."""
        return torch.softmax(logits / self.card.temperature, dim=1).numpy()

    def probabilities(self, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """[N, K] calibrated class probabilities of uint8 ``[N, C, H, W]`` images in the model's layout."""
        return self.calibrated(self.logits(images, batch_size))

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class indices at the card's operating point: the argmax of the log probabilities plus its offsets
        (for a binary task: class 1 at or above the threshold)."""
        return decide(log_probabilities(probs), self.card.offsets)

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
    card = ModelCard.from_json(json.loads((folder / CARD_FILE).read_text()))
    model = build_classifier(card)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return Predictor(model, card, device)


def make_bundle(folder: str | os.PathLike, state: dict[str, torch.Tensor], config: dict[str, Any], dataset: Any,
                val: dict[str, Any]) -> ModelCard:
    """Save the weights ``state`` of a model trained with ``config`` (a RunConfig mapping) on ``dataset``;
    ``val`` are its best-epoch validation metrics. On the validation split only, as the bundle itself
    computes them: the temperature (minimising NLL), then the per-class offsets of the configuration's
    ``operating_point`` on the calibrated probabilities (default: the selection metric, balanced accuracy
    when offsets cannot change it). An operating point the offsets cannot meet is a ConfigError, and
    nothing is saved."""
    from focustune.calibration import fit_temperature
    from focustune.operating_points import fit_operating_point

    params = config["params"]
    selection = str(params.get("selection_metric", DEFAULT_SELECTION_METRIC))
    card = ModelCard(config=config, class_names=[str(c) for c in dataset.class_names], channels=dataset.channels,
                     image_size=dataset.image_size, task=dataset.task, selection_metric=selection,
                     val={k: float(v) for k, v in val.items() if isinstance(v, (int, float))})
    model = build_classifier(card)
    model.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
    predictor = Predictor(model, card)
    logits, labels = predictor.logits(dataset.val.images.cpu()), dataset.val.labels.cpu().numpy()
    card.temperature = fit_temperature(logits.numpy(), labels)
    rule = parse_rule(str(params.get("operating_point", "")), selection)
    point = fit_operating_point(log_probabilities(predictor.calibrated(logits)), labels, rule, card.class_names)
    card.offsets, card.operating_point, card.operating_val = point.offsets, str(rule), point.values
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
