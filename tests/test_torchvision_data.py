"""torchvision sources (generated idx files; real MNIST when present), imbalance profiles, data seed."""

import json
import shutil
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO
from focustune.cli import main
from focustune.data import Imbalance, load_dataset
from focustune.data.imbalance import apply_imbalance
from focustune.data.sources import base
from focustune.data.sources.torchvision_sets import SETS, VAL_FRACTION
from focustune.errors import ConfigError, DataError

SHARED_MNIST = REPO.parent / "shared" / "data" / "torchvision" / "MNIST"
IDX_SETS = [name for name, s in SETS.items() if s.family == "idx"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 5


def _write_idx(path, array: np.ndarray) -> None:
    """An uncompressed idx file (big-endian magic: uint8 type, number of dimensions, sizes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_set(root, class_name: str = "MNIST", size: int = 28) -> None:
    """Tiny MNIST-format files in torchvision's layout: ROOT/<class_name>/raw/."""
    raw = root / class_name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 256, (len(labels), size, size))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


@pytest.fixture
def idx_root(tmp_path):
    write_idx_set(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", IDX_SETS)
def test_idx_files_load_with_a_stratified_seeded_validation_split(name, tmp_path):
    write_idx_set(tmp_path, SETS[name].class_name)
    data = load_dataset(name, tmp_path, download=False)
    held = round(VAL_FRACTION * TRAIN_PER_CLASS)
    assert data.val.class_counts(10).tolist() == [held] * 10
    assert data.train.class_counts(10).tolist() == [TRAIN_PER_CLASS - held] * 10
    assert len(data.test) == 10 * TEST_PER_CLASS and data.image_size == 28 and data.channels == 1
    again, other = load_dataset(name, tmp_path, download=False), load_dataset(name, tmp_path, seed=1, download=False)
    assert torch.equal(again.val.images, data.val.images)
    assert not torch.equal(other.val.images, data.val.images)
    assert torch.equal(other.test.images, data.test.images)  # the official test split, whatever the seed


@pytest.mark.parametrize("name", list(SETS))
def test_missing_files_offline_say_which_folder_and_files(name, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "network_reachable", lambda *a, **k: False)
    with pytest.raises(DataError) as err:
        load_dataset(name, tmp_path)
    message = str(err.value)
    spec = SETS[name]
    assert str(spec.folder(tmp_path)) in message and "unreachable" in message
    assert all(f in message for f in spec.files())
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_downloads_disabled_and_wrong_size_are_refused(idx_root, tmp_path):
    with pytest.raises(DataError, match="downloads are disabled"):
        load_dataset("cifar10", tmp_path / "empty", download=False)
    with pytest.raises(DataError, match="comes at 28 px"):
        load_dataset("mnist", idx_root, size=64)


# ---------------------------------------------------------------- imbalance profiles

@pytest.mark.parametrize("text, expected", [
    ("exp:10", [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]),
    ("linear:10", [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]),
    ("log:10", [100, 73, 57, 46, 37, 30, 24, 19, 14, 10]),
    ("classes=3,5:0.1", [100, 100, 100, 10, 100, 10, 100, 100, 100, 100]),
])
def test_ratio_and_class_profiles(text, expected):
    assert Imbalance.parse(text).target_counts([100] * 10) == expected


def test_step_profile_halves_by_a_seeded_permutation_of_exponents():
    counts = Imbalance.parse("step").target_counts([6000] * 10, seed=0)
    exponents = sorted(round(np.log2(6000 / n)) for n in counts)
    assert exponents == list(range(10))  # each k in 0..9 once: 6000, 3000, ..., 12
    assert sorted(counts) == sorted(round(6000 / 2 ** k) for k in range(10))
    assert Imbalance.parse("step").target_counts([6000] * 10, seed=0) == counts
    assert Imbalance.parse("step").target_counts([6000] * 10, seed=1) != counts


def test_a_share_shrinks_every_class_of_a_profile():
    step = Imbalance.parse("step").target_counts([6000] * 10, seed=0)
    quarter = Imbalance.parse("step@0.25")
    assert quarter.target_counts([6000] * 10, seed=0) == [max(1, round(n / 4)) for n in step]
    assert str(quarter) == "step@0.25" and str(Imbalance.parse("exp:10@0.5")) == "exp:10@0.5"
    assert Imbalance.parse("classes=0,1:0.1@0.5").target_counts([100, 100, 7]) == [5, 5, 4]


@pytest.mark.parametrize("text", ["exp", "exp:0.5", "linear:x", "step:3", "classes=1:0", "classes=:0.5",
                                  "classes=1,1:0.5", "cubic:3", "step@0", "step@1.5", "step@x", "@0.5"])
def test_malformed_profiles_are_refused(text):
    with pytest.raises(ConfigError, match="imbalance"):
        Imbalance.parse(text)


def test_profiles_apply_to_the_training_split_only(idx_root):
    plain = load_dataset("mnist", idx_root, download=False)
    data = load_dataset("mnist", idx_root, imbalance="classes=2:0.25", download=False)
    expected = plain.train.class_counts(10).tolist()
    expected[2] = round(0.25 * expected[2])
    assert data.train.class_counts(10).tolist() == expected and data.imbalance == "classes=2:0.25"
    assert torch.equal(data.val.images, plain.val.images) and torch.equal(data.test.images, plain.test.images)
    with pytest.raises(DataError, match="no class 12"):
        load_dataset("mnist", idx_root, imbalance="classes=12:0.5", download=False)


def test_subsample_is_drawn_with_the_data_seed(idx_root):
    data = load_dataset("mnist", idx_root, download=False)
    profile = Imbalance.parse("linear:5")
    first, again = (apply_imbalance(data.train, 10, profile, seed=3) for _ in range(2))
    other = apply_imbalance(data.train, 10, profile, seed=4)
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.class_counts(10).tolist() == other.class_counts(10).tolist()


# ---------------------------------------------------------------- command line

def test_train_records_the_class_counts_and_uses_the_data_seed_not_the_run_seed(idx_root, tmp_path):
    def counts(*extra):
        out = tmp_path / "run.json"
        assert main(["train", "--dataset", "mnist", "--data-dir", str(idx_root), "--imbalance", "step",
                     "--epochs", "1", "--quiet", "--output-json", str(out), "--overwrite", *extra]) == 0
        return json.loads(out.read_text())["data"]

    by_seed = [counts("--seed", "1"), counts("--seed", "2")]
    assert by_seed[0] == by_seed[1]  # the run seed does not change the data
    assert by_seed[0]["imbalance"] == "step"
    held = TRAIN_PER_CLASS - round(VAL_FRACTION * TRAIN_PER_CLASS)
    assert by_seed[0]["train_class_counts"] == Imbalance.parse("step").target_counts([held] * 10, seed=0)
    assert counts("--data-seed", "5")["train_class_counts"] != by_seed[0]["train_class_counts"]


@pytest.mark.parametrize("args, message", [
    (["--imbalance", "steep"], "--imbalance 'steep': expected"),
    (["--imbalance", "step", "--imbalance-ratio", "4"], "not both"),
    (["--imbalance-ratio", "0.5"], "must be >= 1"),
])
def test_bad_imbalance_options_exit_2_before_loading(args, message, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"), *args,
                 "--output-json", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_sweep_gets_the_same_data_as_train(idx_root, tmp_path, monkeypatch):
    """The sweep driver loads with --imbalance/--data-seed exactly as `train` does (Ray is not started)."""
    import focustune.sweeps.runner as runner
    from focustune.records import StudyRecord

    seen = {}

    class CapturingSweep:
        state = SimpleNamespace(data={})

        def __init__(self, spec, spaces):
            pass

        def run(self, datasets, warm_starts=None):
            seen["train"] = datasets["mnist"].train
            return {"mnist/erm": StudyRecord()}

    monkeypatch.setattr(runner, "Sweep", CapturingSweep)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--methods", "erm", "--dataset", "mnist", "--data-dir", str(idx_root),
                 "--imbalance", "step", "--data-seed", "3", "--trials", "1", "--epochs", "1"]) == 0
    expected = load_dataset("mnist", idx_root, imbalance="step", seed=3, download=False).train
    assert torch.equal(seen["train"].images, expected.images) and torch.equal(seen["train"].labels, expected.labels)


def test_sweep_refuses_image_sizes_mdgan_cannot_generate_before_ray(tmp_path, monkeypatch, capsys):
    import focustune.sweeps.runner as runner

    big = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, (6, 224, 224), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.arange(6) % 2 for s in ("train", "val", "test")})
    np.savez(big, **arrays)
    monkeypatch.setattr(runner, "Sweep", lambda *a: pytest.fail("the sweep must not start"))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--methods", "erm,mdgan", "--dataset", str(big), "--trials", "1", "--epochs", "2"]) == 2
    assert "at most 128 px" in capsys.readouterr().err


# ---------------------------------------------------------------- real MNIST

@pytest.fixture
def real_mnist(tmp_path):
    """A writable copy of ../shared's MNIST (torchvision unpacks the .gz files next to them)."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"{SHARED_MNIST} not present")
    shutil.copytree(SHARED_MNIST, tmp_path / "MNIST")
    for path in (tmp_path / "MNIST").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tmp_path


@pytest.mark.real_data
def test_real_mnist_offline_with_the_papers_step_profile(real_mnist, monkeypatch):
    monkeypatch.setattr(base, "network_reachable", lambda *a, **k: pytest.fail("no network needed"))
    plain = load_dataset("mnist", real_mnist)
    assert len(plain.train) + len(plain.val) == 60_000 and len(plain.test) == 10_000
    assert plain.val.class_counts(10).sum() == pytest.approx(6_000, abs=10)
    data = load_dataset("mnist", real_mnist, imbalance="step")
    counts = data.train.class_counts(10).tolist()
    full = plain.train.class_counts(10).tolist()
    assert sorted(round(np.log2(n / c)) for n, c in zip(full, counts)) == list(range(10))
    assert len(data.val) == len(plain.val) and len(data.test) == 10_000
