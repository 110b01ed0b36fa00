"""ray_cluster.yaml: accepted by Ray's own launcher checks, token auth on, pinned installs, GPU workers.

`ray up` prepares a config in ``_bootstrap_config``: ``prepare_config`` (defaults, merged setup
commands, per-type worker limits), then AWS resource autodetection, then ``validate_config`` (the
JSON schema plus cross-field checks), then the provider's ``bootstrap_config``. Autodetection and
bootstrap call EC2/IAM, so these tests run the two offline steps; the file declares every node
type's resources, so skipping autodetection hides nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO

CLUSTER_FILE = REPO / "ray_cluster.yaml"
AUTH_ON = "RAY_AUTH_MODE=token"


def load_cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_FILE.read_text())


def gpu_worker_types(config: dict[str, Any]) -> list[str]:
    return [name for name, node in config["available_node_types"].items()
            if name != config["head_node_type"] and node["resources"].get("GPU", 0) >= 1]


@pytest.fixture(scope="module")
def prepare() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ray's offline preparation and validation, as `ray up` runs them; returns the prepared config."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    pytest.importorskip("jsonschema")

    def run(config: dict[str, Any]) -> dict[str, Any]:
        prepared = util.prepare_config(copy.deepcopy(config))
        util.validate_config(prepared)
        return prepared

    return run


def test_ray_accepts_the_cluster_file(prepare):
    prepared = prepare(load_cluster())
    assert prepared["provider"]["type"] == "aws"
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def _set(path: tuple, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _gpu_worker(field: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        config["available_node_types"][gpu_worker_types(config)[0]][field] = value(config)
    return mutate


BROKEN = {
    "unknown top-level key": (_set(("gpus_per_trial",), 0.25), "'gpus_per_trial' was unexpected"),
    "min workers above the global max": (_gpu_worker("min_workers", lambda c: c["max_workers"] + 1),
                                         "smaller than the sum of `min_workers`"),
    "fractional GPU as a node resource": (_gpu_worker("resources", lambda c: {"CPU": 4, "GPU": 0.25}),
                                          "0.25 is not of type 'integer'"),
    "head type not declared": (_set(("head_node_type",), "no_such_type"),
                               "must be one of `available_node_types`"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_ray_rejects_a_broken_copy(prepare, case):
    mutate, message = BROKEN[case]
    config = load_cluster()
    mutate(config)
    with pytest.raises(Exception, match=re.escape(message)):
        prepare(config)


def test_every_ray_start_runs_with_token_auth():
    config = load_cluster()
    starts = {key: [c for c in config[key] if "ray start" in c]
              for key in ("head_start_ray_commands", "worker_start_ray_commands")}
    assert any("--head" in c for c in starts["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP" in c for c in starts["worker_start_ray_commands"])
    for key, commands in starts.items():
        for command in commands:
            before_start = command[:command.index("ray start")]
            assert AUTH_ON in before_start, f"{key}: {command!r} starts Ray without token auth"
    # drivers started from a login shell on a node (ray exec / submit / attach) use token mode too
    assert any(f"export {AUTH_ON}" in c and ".bashrc" in c for c in config["setup_commands"])
    text = CLUSTER_FILE.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert "RAY_AUTH_TOKEN=" not in text  # the token travels as a file, never inlined in the config


def test_token_file_is_shipped_to_rays_default_token_path():
    token_setup = pytest.importorskip("ray._private.authentication.authentication_token_setup")
    default = "~/" + token_setup._get_default_token_path().relative_to(Path.home()).as_posix()
    assert load_cluster()["file_mounts"].get(default) == default


def _ci_pin(package: str) -> str:
    readme = (REPO / "README.md").read_text().splitlines()
    command = readme[readme.index("<!-- ci:test-command -->") + 2]
    return re.search(rf"(?<![\w-]){package}==(\S+)", command).group(1)


def _position(commands: list[str], pattern: str) -> int:
    hits = [i for i, command in enumerate(commands) if re.search(pattern, command)]
    assert hits, f"no setup command matches {pattern!r}"
    return hits[0]


def test_every_node_installs_the_ci_torch_pins_then_the_synced_checkout(prepare):
    config = load_cluster()
    checkout = [remote for remote, local in config["file_mounts"].items() if (REPO / local).resolve() == REPO]
    assert len(checkout) == 1, "the repository root is synced to exactly one remote path"
    prepared = prepare(config)
    for name, node in prepared["available_node_types"].items():
        is_head = name == prepared["head_node_type"]
        commands = prepared["head_setup_commands"] if is_head else node.get(
            "worker_setup_commands", prepared["worker_setup_commands"])
        torch = _position(commands, rf"pip install .*(?<![\w-])torch=={re.escape(_ci_pin('torch'))}(\s|$)")
        vision = _position(commands, rf"pip install .*torchvision=={re.escape(_ci_pin('torchvision'))}(\s|$)")
        project = _position(commands, rf"pip install -e {re.escape(checkout[0])}(\s|$)")
        assert max(torch, vision) < project, f"{name}: the project is installed before the pinned torch"


def test_nodes_run_the_ray_version_of_this_client():
    ray = pytest.importorskip("ray")
    pins = re.findall(r"(?<![\w-])ray\[([\w,]+)\]==([\w.]+)", " ".join(load_cluster()["setup_commands"]))
    assert len(pins) == 1 and pins[0][1] == ray.__version__
    assert {"default", "tune"} <= set(pins[0][0].split(","))  # autoscaler + dashboard on the head, Tune


def test_trials_go_to_autoscaled_workers_with_gpu_type():
    config = load_cluster()
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    assert head.get("CPU") == 0 and not head.get("GPU"), "no trial may be scheduled on the head"
    gpu_types = gpu_worker_types(config)
    assert gpu_types
    for name in gpu_types:
        node = config["available_node_types"][name]
        assert node.get("min_workers", 0) == 0 and node["max_workers"] >= 1, f"{name} must scale from zero"
