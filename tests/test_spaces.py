"""Search-space files: one per registered method over one shared base, valid, and shipped with the package."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from focustune import spaces
from focustune.errors import ConfigError
from focustune.methods import get_method, method_names
from focustune.spaces import SHARED_FILE, default_space_dir, load_space, parse_space, shared_path, space_path
from focustune.yaml_files import read_yaml

LR = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
LR_SMALL = {"type": "loguniform", "low": 2e-4, "high": 3e-3}
LR_OWN = {"type": "loguniform", "low": 3e-4, "high": 1e-1}
LR_OWN_SMALL = {"type": "loguniform", "low": 4e-4, "high": 3e-2}
WD = {"type": "loguniform", "low": 1e-6, "high": 1e-3}
GAMMA = {"type": "uniform", "low": 1.0, "high": 2.0}


def _own_keys(method: str) -> set[str]:
    """The keys a shipped method file ranges in its ``space``."""
    return set(read_yaml(space_path(method), "search space file").get("space") or {})


def _shared_only(method: str) -> dict:
    """The space a method gets from a file that declares nothing: the shared base's."""
    return parse_space({}, get_method(method)).dimensions


@pytest.fixture
def shared_base(tmp_path, monkeypatch):
    """A writer of the shared base in a scratch search-space folder, which the loader then reads."""
    monkeypatch.setattr(spaces, "default_space_dir", lambda: tmp_path)

    def write(document) -> Path:
        (tmp_path / SHARED_FILE).write_text(yaml.safe_dump(document))
        return tmp_path / SHARED_FILE
    return write


@pytest.mark.parametrize("name", method_names())
def test_every_method_has_a_valid_space(name):
    space = load_space(get_method(name))
    assert space.method == name and space.dimensions
    assert (REPO / "search_spaces" / f"{name}.yaml").is_file()


def test_the_folder_holds_a_file_per_method_and_the_shared_base_which_is_no_method():
    files = {p.name for p in default_space_dir().glob("*.yaml")}
    assert files == {f"{m}.yaml" for m in method_names()} | {SHARED_FILE}
    assert Path(SHARED_FILE).stem not in method_names()


@pytest.mark.parametrize("name", method_names())
def test_the_shared_ranges_reach_every_method_that_does_not_override_them(name):
    shared = _shared_only(name)
    assert set(shared) == set(read_yaml(shared_path(), "shared search space file")["space"])
    space, kept = load_space(get_method(name)).dimensions, set(shared) - _own_keys(name)
    assert {k: space[k] for k in kept} == {k: shared[k] for k in kept}


@pytest.mark.parametrize("name", method_names())
def test_a_method_file_ranges_a_shared_key_only_to_change_it_and_says_why(name):
    """A shared range is declared once, in the base: a method file repeating it unchanged fails here."""
    lines = space_path(name).read_text().splitlines()
    shared, space = _shared_only(name), load_space(get_method(name)).dimensions
    for key in _own_keys(name) & set(shared):
        assert space[key] != shared[key], f"{name}.yaml repeats the shared range of {key}"
        at = next(i for i, line in enumerate(lines) if re.match(rf"\s+{key}\s*:", line))
        assert "#" in lines[at] or lines[at - 1].lstrip().startswith("#"), f"{name}.yaml: no reason for {key}"


def test_an_override_wins_and_the_other_shared_ranges_follow_the_methods_own(shared_base):
    shared_base({"space": {"lr": LR, "weight_decay": WD}})
    dims = parse_space({"space": {"gamma": GAMMA, "lr": LR_OWN}}, get_method("focal")).dimensions
    assert list(dims) == ["gamma", "lr", "weight_decay"]
    assert (dims["lr"].low, dims["weight_decay"].low) == (LR_OWN["low"], WD["low"])


@pytest.mark.parametrize("method_file, low_on_breastmnist", [
    ({}, LR_SMALL["low"]),                                                   # the base's entry for the dataset
    ({"space": {"lr": LR_OWN}}, LR_OWN["low"]),                              # the method's, on every dataset
    ({"datasets": {"breastmnist": {"lr": LR_OWN_SMALL}}}, LR_OWN_SMALL["low"]),  # the method's for the dataset
], ids=["base-for-dataset", "method-override", "method-for-dataset"])
def test_the_most_specific_range_wins_on_a_dataset(shared_base, method_file, low_on_breastmnist):
    shared_base({"space": {"lr": LR}, "datasets": {"breastmnist": {"lr": LR_SMALL}}})
    assert parse_space(method_file, get_method("erm"), "breastmnist").dimensions["lr"].low == low_on_breastmnist
    expected_elsewhere = method_file.get("space", {"lr": LR})["lr"]["low"]
    assert parse_space(method_file, get_method("erm"), "pneumoniamnist").dimensions["lr"].low == expected_elsewhere


def test_a_dropped_shared_key_is_searched_on_no_dataset(shared_base):
    shared_base({"space": {"lr": LR, "weight_decay": WD}, "datasets": {"breastmnist": {"lr": LR_SMALL}}})
    for dataset in (None, "breastmnist"):
        assert list(parse_space({"drop": ["lr"]}, get_method("erm"), dataset).dimensions) == ["weight_decay"]


@pytest.mark.parametrize("method_file, message", [
    ({"drop": "lr"}, "'drop' must be a list of shared keys"),
    ({"drop": ["gamma"]}, "drop names gamma, which the shared base does not range"),
    ({"drop": ["lr"], "space": {"lr": LR}}, "lr both dropped and ranged"),
    ({"drop": ["lr"], "datasets": {"breastmnist": {"lr": LR}}}, "lr both dropped and ranged"),
])
def test_an_ambiguous_drop_is_refused(shared_base, method_file, message):
    shared_base({"space": {"lr": LR}})
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space(method_file, get_method("focal"))


def test_a_user_file_extends_the_shared_base_like_a_shipped_one(tmp_path):
    user_file = tmp_path / "my_focal.yaml"
    user_file.write_text(yaml.safe_dump({"method": "focal", "space": {"gamma": GAMMA}}))
    dims, shared = load_space(get_method("focal"), user_file).dimensions, _shared_only("focal")
    assert list(dims) == ["gamma", *shared]
    assert dims["gamma"].low == GAMMA["low"] and {k: dims[k] for k in shared} == shared


@pytest.mark.parametrize("base, message", [
    (["lr"], "expected a mapping of space, datasets"),
    ({"method": "erm", "space": {"lr": LR}}, "unknown top-level key(s) method"),
    ({"space": {"gamma": GAMMA}}, "gamma is not a hyperparameter this file may range"),
    ({"space": {"lr": {**LR, "high": 100.0}}}, "out of range"),
    ({"space": {"lr": LR}, "datasets": {"breastmnist": {"lr": {**LR, "low": 0.0}}}}, "'low' must be > 0"),
    ({"space": {"lr": LR}, "datasets": ["breastmnist"]}, "'datasets' must map dataset names"),
])
def test_a_malformed_shared_base_is_one_error_naming_it(shared_base, base, message):
    path = shared_base(base)
    (path.parent / "erm.yaml").write_text("method: erm\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        load_space(get_method("erm"))
    assert str(refused.value).startswith(str(path))


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
    assert f"focustune/search_spaces/{SHARED_FILE}" in names
    assert "focustune_analysis/__init__.py" in names
