"""Search-space files: one per registered method, valid, and shipped with the package."""

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO
from focustune.errors import ConfigError
from focustune.methods import get_method, method_names
from focustune.spaces import default_space_dir, load_space, parse_space


@pytest.mark.parametrize("name", method_names())
def test_every_method_has_a_valid_space(name):
    space = load_space(get_method(name))
    assert space.method == name and space.dimensions
    assert (REPO / "search_spaces" / f"{name}.yaml").is_file()


def test_default_dir_is_the_top_level_folder_in_a_checkout():
    assert default_space_dir().resolve() == (REPO / "search_spaces").resolve()


@pytest.mark.parametrize("space, message", [
    ({"lr": {"type": "loguniform", "low": 1e-4, "high": 100.0}}, "out of range"),
    ({"learning_rate": {"type": "uniform", "low": 0.1, "high": 0.2}}, "not a hyperparameter"),
    ({"lr": {"type": "uniform", "low": 0.2, "high": 0.1}}, "empty range"),
    ({"lr": {"type": "normal", "low": 0.1, "high": 0.2}}, "type 'normal'"),
    ({"optimizer": {"type": "choice", "values": ["adam", "lion"]}}, "not allowed"),
    ({"gamma": {"type": "uniform", "low": 1, "high": 2, "when": {"nothing": 1}}}, "unknown key"),
])
def test_bad_spaces_are_refused(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space({"method": "focal", "space": space}, get_method("focal"))


def test_dataset_overrides_apply_only_to_their_dataset():
    data = {"method": "erm", "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
            "datasets": {"breastmnist": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-3}}}}
    assert parse_space(data, get_method("erm"), "breastmnist").dimensions["lr"].low == 1e-3
    assert parse_space(data, get_method("erm"), "pneumoniamnist").dimensions["lr"].low == 1e-4


@pytest.mark.slow
def test_wheel_ships_every_search_space(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("focustune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for method in method_names():
        assert f"focustune/search_spaces/{method}.yaml" in names
    assert "focustune_analysis/__init__.py" in names
