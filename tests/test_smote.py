"""SMOTE: synthetic minority images between class neighbours, once at setup; tiny classes; epochs."""

import numpy as np
import pytest
import torch
from imblearn.over_sampling import SMOTE

from conftest import make_dataset
from focustune.config import resolve
from focustune.methods import get_method
from focustune.methods.smote import neighbour_counts
from focustune.training import Trainer


def build(dataset, seed=0, **overrides):
    cls = get_method("smote")
    config, params = resolve(cls, {"batch_size": 16, "lr": 3e-3, **overrides})
    method = cls(params)
    return method, Trainer(method, config, dataset, device="cpu", seed=seed)


def synthetic_part(method, trainer):
    n = len(trainer.run.train)
    data = method.training_data(trainer.run)
    return data.images[n:], data.labels[n:]


def test_every_class_grows_to_the_largest_and_the_originals_stay_first():
    method, trainer = build(make_dataset((40, 12, 6)))
    data, train = method.training_data(trainer.run), trainer.run.train
    assert data.class_counts(3).tolist() == [40, 40, 40]
    assert torch.equal(data.images[:len(train)], train.images) and torch.equal(data.labels[:len(train)], train.labels)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert data.images.device == train.images.device and data.images.shape[1:] == train.images.shape[1:]
    assert method.synthetic_counts == [0, 28, 34]


def segment_distance(x, a, b):
    """Distance of x from the segment a-b (float vectors)."""
    direction = b - a
    t = np.clip(np.dot(x - a, direction) / max(np.dot(direction, direction), 1e-12), 0, 1)
    return np.linalg.norm(x - (a + t * direction))


@pytest.mark.parametrize("k", [1, 3])
def test_synthetic_images_lie_between_an_image_and_one_of_its_k_nearest_neighbours(k):
    method, trainer = build(make_dataset((40, 12, 6)), k_neighbors=k)
    train = trainer.run.train
    images, labels = synthetic_part(method, trainer)
    rounding = 0.5 * np.sqrt(images[0].numel())  # every pixel rounded to uint8 by at most 0.5
    for c in (1, 2):
        members = train.images[train.labels == c].reshape(-1, images[0].numel()).double().numpy()
        distances = np.linalg.norm(members[:, None] - members[None], axis=2)
        neighbours = np.argsort(distances, axis=1)[:, 1:k + 1]  # each image's k nearest, itself excluded
        pairs = [(i, j) for i in range(len(members)) for j in neighbours[i]]
        for x in images[labels == c].reshape(-1, images[0].numel()).double().numpy():
            assert min(segment_distance(x, members[i], members[j]) for i, j in pairs) <= rounding + 1e-9


def test_tiny_classes_clamp_k_and_a_single_image_is_repeated():
    assert neighbour_counts([40, 3, 1, 0], 5) == {1: 2, 2: 0}
    dataset = make_dataset((40, 3, 1))
    flat = dataset.train.images.reshape(44, -1).float().numpy()
    with pytest.raises(ValueError):  # what the clamp avoids: SMOTE needs k + 1 images in a class
        SMOTE(k_neighbors=5).fit_resample(flat, dataset.train.labels.numpy())
    method, trainer = build(dataset, k_neighbors=5)
    images, labels = synthetic_part(method, trainer)
    assert method.class_k == [None, 2, 0] and method.synthetic_counts == [0, 37, 39]
    single = trainer.run.train.images[trainer.run.train.labels == 2]
    assert torch.equal(images[labels == 2], single.expand(39, *single.shape[1:]))
    assert trainer.fit().history[0]["method"]["synthetic_per_class"] == [0, 37, 39]


def test_synthetic_images_depend_on_the_run_seed_only():
    dataset = make_dataset((40, 12, 6))
    first, second, other = (synthetic_part(*build(dataset, seed=s))[0] for s in (1, 1, 2))
    assert torch.equal(first, second) and not torch.equal(first, other)


@pytest.mark.parametrize("epoch_samples, samples", [("resampled", 120), ("original", 58)])
def test_an_epoch_covers_the_resampled_set_or_as_many_samples_as_the_original(epoch_samples, samples):
    method, trainer = build(make_dataset((40, 12, 6)), epoch_samples=epoch_samples)
    data = method.training_data(trainer.run)
    batches = method.epoch_batches(0, data, trainer.run)
    drawn = torch.cat(list(batches))
    assert len(drawn) == samples and len(set(drawn.tolist())) == samples and drawn.max() < len(data)
    assert max(len(b) for b in batches) == 16
