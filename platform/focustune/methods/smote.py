"""SMOTE (Chawla et al., JAIR 2002) as a training method: learn2mix's resampling baseline (its App. C.3).

Once, at setup, imbalanced-learn's SMOTE runs on the flattened training images: every class is
brought up to the largest class's count (imbalanced-learn's ``auto`` strategy) by images
interpolated between one of the class's images and one of its k nearest neighbours in the same
class. Then training is ordinary cross-entropy on the original plus the synthetic images.

- Tiny classes: a class of n images has only n - 1 neighbours, so class c uses
  k_c = min(k_neighbors, n_c - 1) (classes sharing a k_c are resampled in one call); a class of a
  single image has no neighbour to interpolate with, and that image is repeated instead.
- The synthetic images are rounded to uint8, like every image here (interpolation commutes with the
  normalisation the authors' code applied first), and kept where the training images are (the
  device, or host memory when the dataset is streamed), as tensors.
- An epoch (``epoch_samples``): ``resampled`` (default) is one pass over the resampled set;
  ``original`` has as many samples as the original training split, drawn without replacement from
  the resampled set, so every method sees the same number of batches per epoch (the authors' code).
- SMOTE is seeded with the run seed, so a resumed run rebuilds the same synthetic images. It holds
  the flattened training images in host memory as float32 while it runs (4 bytes per pixel).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from focustune.data import Split
from focustune.methods.base import EpochStats, Method, RunContext, shuffled_batches
from focustune.methods.registry import register
from focustune.params import hp

EPOCH_SAMPLES = ("resampled", "original")


def neighbour_counts(counts: list[int], k_neighbors: int) -> dict[int, int]:
    """k_c = min(k_neighbors, n_c - 1) for every class c that SMOTE grows (0 < n_c < the largest count)."""
    largest = max(counts)
    return {c: min(k_neighbors, n - 1) for c, n in enumerate(counts) if 0 < n < largest}


def smote_samples(flat: np.ndarray, labels: np.ndarray, k_neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (images, labels) that bring every class of ``flat`` [N, D] up to the largest class's count."""
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(labels).tolist()
    largest = max(counts)
    ks = neighbour_counts(counts, k_neighbors)
    images, classes = [np.empty((0, flat.shape[1]), flat.dtype)], [np.empty(0, labels.dtype)]
    for k in sorted(set(ks.values())):
        group = {c: largest for c, kc in ks.items() if kc == k}
        if k == 0:  # a single image: nothing to interpolate with
            for c in group:
                images.append(np.repeat(flat[labels == c], largest - 1, axis=0))
                classes.append(np.full(largest - 1, c, labels.dtype))
            continue
        sampler = SMOTE(sampling_strategy=group, k_neighbors=k, random_state=seed)
        resampled, resampled_labels = sampler.fit_resample(flat, labels)
        images.append(resampled[len(flat):])  # the originals come first, unchanged
        classes.append(resampled_labels[len(labels):])
    return np.concatenate(images), np.concatenate(classes)


def synthetic_split(train: Split, k_neighbors: int, seed: int) -> Split:
    """SMOTE's synthetic images of ``train`` as a uint8 split in host memory."""
    flat = train.images.reshape(len(train), -1).cpu().numpy().astype(np.float32)
    images, labels = smote_samples(flat, train.labels.cpu().numpy(), k_neighbors, seed)
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(-1, *train.images.shape[1:])
    return Split(torch.from_numpy(pixels), torch.from_numpy(labels.astype(np.int64)))


@dataclass
class SMOTEParams:
    k_neighbors: int = hp(5, low=1, high=100,
                          help="neighbours SMOTE interpolates towards (imbalanced-learn's default 5); a class "
                               "of n images uses min(k_neighbors, n - 1), one of a single image repeats it")
    epoch_samples: str = hp("resampled", choices=EPOCH_SAMPLES,
                            help="an epoch: resampled = one pass over the resampled set; original = as many "
                                 "samples as the original training split (the authors' code: as many batches "
                                 "as the other methods)")


@register
class Smote(Method):
    name = "smote"
    summary = "SMOTE: synthetic minority images interpolated between class neighbours, once; then cross-entropy"
    Params = SMOTEParams

    def setup(self, run: RunContext) -> None:
        synthetic = synthetic_split(run.train, self.params.k_neighbors, run.seed)
        where = run.train.images.device  # the device, or host memory when the dataset is streamed
        self.resampled = Split(torch.cat([run.train.images, synthetic.images.to(where)]),
                               torch.cat([run.train.labels, synthetic.labels.to(run.device)]))
        counts = run.class_counts.tolist()
        self.synthetic_counts = torch.bincount(synthetic.labels, minlength=run.num_classes).tolist()
        ks = neighbour_counts(counts, self.params.k_neighbors)
        self.class_k = [ks.get(c) for c in range(run.num_classes)]

    def training_data(self, run: RunContext) -> Split:
        return self.resampled

    def epoch_batches(self, epoch: int, data: Split, run: RunContext) -> Iterable[torch.Tensor]:
        if self.params.epoch_samples == "resampled":
            return shuffled_batches(len(data), run.config.batch_size, run.generator)
        order = torch.randperm(len(data), generator=run.generator, device=run.generator.device)
        return list(order[:len(run.train)].split(run.config.batch_size))

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        """What SMOTE added (per class) and the neighbours each class used (None: not resampled)."""
        return {"synthetic_per_class": self.synthetic_counts, "k_per_class": self.class_k}
