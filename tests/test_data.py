"""Data sources: embedded default, MedMNIST files, a user's .npz and image folders, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from focustune.data import load_dataset, make_long_tailed
from focustune.data.imbalance import long_tailed_counts
from focustune.data.sources import base
from focustune.data.sources.image_folder import load_image_folder
from focustune.data.sources.npz_file import load_npz
from focustune.errors import ConfigError, DataError


def _npz(path, n=(20, 6, 6), classes=3, size=8, rgb=False, **replace):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_embedded_default_is_long_tailed_and_offline():
    data = load_dataset("digits-lt")
    counts = data.train.class_counts(10).tolist()
    assert data.num_classes == 10 and data.image_size == 28 and data.channels == 1
    assert counts == sorted(counts, reverse=True)
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.15)
    val_counts = data.val.class_counts(10)
    assert val_counts.max() - val_counts.min() <= 1  # val stays balanced
    again = load_dataset("digits-lt")
    assert torch.equal(again.train.images, data.train.images)


def test_long_tailed_profile():
    assert long_tailed_counts([100, 100, 100], 10) == [100, 31, 10]
    data = load_dataset("digits-lt")
    lt = make_long_tailed(data.val, 10, 4.0, seed=1)
    counts = lt.class_counts(10).tolist()
    assert counts[0] / counts[-1] == pytest.approx(4, rel=0.2)
    with pytest.raises(ConfigError, match=">= 1"):
        long_tailed_counts([5, 5], 0.5)


def test_npz_round_trip(tmp_path):
    data = load_npz(_npz(tmp_path / "mine.npz"))
    assert data.name == "mine" and data.num_classes == 3 and data.channels == 1
    assert data.train.images.shape == (20, 1, 8, 8) and data.train.labels.dtype == torch.int64
    rgb = load_dataset(str(_npz(tmp_path / "rgb.npz", rgb=True)), imbalance="exp:2")
    assert rgb.channels == 3
    assert len(rgb.train) < 20 and len(rgb.val) == 6  # only train is made long-tailed


@pytest.mark.parametrize("replace, message", [
    ({"val_labels": None}, "lacks val_labels"),
    ({"train_images": np.zeros((20, 8, 8), dtype=np.float32)}, "must be uint8"),
    ({"train_labels": np.zeros((19, 1), dtype=np.uint8)}, "20 images but 19 labels"),
    ({"test_labels": np.full((6, 1), 7, dtype=np.int64), "class_names": np.array(["a", "b", "c"])},
     "labels must lie in 0..2"),
    ({"test_labels": np.full((6, 1), -1, dtype=np.int64)}, "labels must lie in"),
    ({"train_labels": np.zeros((20, 1), dtype=np.uint8), "val_labels": np.zeros((6, 1), dtype=np.uint8),
      "test_labels": np.zeros((6, 1), dtype=np.uint8)}, "at least 2 are needed"),
    ({"train_labels": np.zeros((20, 3), dtype=np.uint8)}, "single-label"),
])
def test_bad_npz_is_refused(tmp_path, replace, message):
    with pytest.raises(DataError, match=message):
        load_npz(_npz(tmp_path / "bad.npz", **replace))


def test_npz_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, train_images=np.array([object()], dtype=object))
    with pytest.raises(DataError, match=r"cannot read|lacks"):
        load_npz(path)


def _write_images(folder, count, colour=None, size=10):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mode, value = ("RGB", (i * 20, 0, 0)) if colour else ("L", i * 20)
        Image.new(mode, (size, size), value).save(folder / f"{i}.png")


def test_image_folder_with_stratified_split(tmp_path):
    _write_images(tmp_path / "cats", 20)
    _write_images(tmp_path / "dogs", 10)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = load_image_folder(tmp_path, size=16)
    assert data.class_names == ["cats", "dogs"] and data.channels == 1 and data.image_size == 16
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 30
    assert data.val.class_counts(2).min() >= 1


def test_image_folder_with_split_folders_and_rgb(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        _write_images(tmp_path / split / "a", n, colour=True)
        _write_images(tmp_path / split / "b", n, colour=True)
    data = load_dataset(str(tmp_path), size=12)
    assert data.channels == 3 and len(data.train) == 12 and len(data.test) == 4


def test_image_folder_refuses_unknown_class_in_val(tmp_path):
    for split in ("train", "val", "test"):
        _write_images(tmp_path / split / "a", 3)
        _write_images(tmp_path / split / "b", 3)
    _write_images(tmp_path / "val" / "zebra", 3)
    with pytest.raises(DataError, match="zebra"):
        load_image_folder(tmp_path)


def test_image_folder_with_one_class_is_refused(tmp_path):
    _write_images(tmp_path / "only", 9)
    with pytest.raises(DataError, match="at least 2"):
        load_image_folder(tmp_path)


def test_unknown_and_missing_datasets(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))


def test_missing_medmnist_file_without_network_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "network_reachable", lambda *a, **k: False)
    with pytest.raises(DataError) as err:
        load_dataset("dermamnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "dermamnist.npz" in message and "zenodo" in message
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_multilabel_flag_is_refused():
    with pytest.raises(DataError, match=r"unknown dataset 'chestmnist'|not a supported"):
        load_dataset("chestmnist")


@pytest.mark.real_data
@pytest.mark.parametrize("flag", ["pneumoniamnist", "breastmnist"])
def test_real_medmnist_files_match_published_sizes(flag, shared_medmnist):
    from medmnist import INFO

    data = load_dataset(flag, shared_medmnist, download=False)
    sizes = {s: len(data.split(s)) for s in ("train", "val", "test")}
    assert sizes == INFO[flag]["n_samples"]
    assert data.num_classes == len(INFO[flag]["label"]) and data.task == INFO[flag]["task"]
    assert data.train.images.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize("rgb", [False, True])
def test_a_large_npz_is_memory_mapped_and_trains_streamed_like_in_memory(rgb, tmp_path):
    """Above the threshold (lowered here to keep the file small) images are mapped from a one-off
    extraction, not read into memory; a run streaming their batches matches one on in-memory data."""
    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.training import Trainer

    path = tmp_path / "large.npz"
    rng = np.random.default_rng(1)
    arrays = {}
    for split, count in zip(("train", "val", "test"), (60, 20, 20)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 12, 12, 3) if rgb else (count, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1)
    np.savez_compressed(path, **arrays)
    in_memory = load_npz(path)
    mapped = load_npz(path, memory_map_above=1000, cache_dir=tmp_path / "cache")
    assert any("memory-mapped" in note for note in mapped.notes)
    assert len(list((tmp_path / "cache").rglob("*_images.npy"))) == 3
    if rgb:
        assert not mapped.train.images.is_contiguous()  # [N, C, H, W] as a view of the mapping, not a copy
    for split in ("train", "val", "test"):
        assert torch.equal(mapped.split(split).images, in_memory.split(split).images)
    config, params = resolve(get_method("erm"), {"epochs": 2, "batch_size": 16})
    streamed = Trainer(get_method("erm")(params), config, mapped, data_limit=1000)
    assert streamed.streamed
    results = [streamed.fit(), Trainer(get_method("erm")(params), config, in_memory).fit()]
    assert [h["train_loss"] for h in results[0].history] == [h["train_loss"] for h in results[1].history]
    assert results[0].test == results[1].test


def test_step_profile_is_redrawn_with_every_data_seed_and_shared_within_one(tmp_path):
    """LOW's paper redraws the class permutation of the step profile in every run: a run passes its own
    --data-seed; the arms (methods) of one run pass the same one and get the same training set."""
    labels = (np.arange(640) % 10).reshape(-1, 1).astype(np.uint8)
    path = _npz(tmp_path / "ten.npz", n=(640, 20, 20), classes=10, train_labels=labels)
    halving = sorted(max(1, int(64 / 2 ** k + 0.5)) for k in range(10))
    draws = {}
    for seed in (1, 2, 3):
        data = load_dataset(str(path), imbalance="step", seed=seed)
        draws[seed] = data.train.class_counts(10).tolist()
        assert sorted(draws[seed]) == halving
        again = load_dataset(str(path), imbalance="step", seed=seed)
        assert torch.equal(again.train.images, data.train.images) and torch.equal(again.train.labels, data.train.labels)
    assert len({tuple(counts) for counts in draws.values()}) == 3
