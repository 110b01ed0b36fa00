"""deploy/slurm/focustune-sweep.sbatch on a real (private, one-node) Slurm cluster: the job starts its
own Ray cluster with token authentication, runs the sweep through it and stops Ray when it ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from servers import pids_with, start, stop_group, tiny_npz, wait_until
from slurm_cluster import slurm_cluster

pytestmark = pytest.mark.slow

SCRIPT = REPO / "deploy" / "slurm" / "focustune-sweep.sbatch"
VENV = Path(sys.executable).parent.parent


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return list(client.search_runs([client.get_experiment_by_name(experiment).experiment_id]))


@pytest.fixture(scope="module")
def cluster():
    with slurm_cluster() as running:
        yield running


def sbatch(cluster, folder: Path, *args: str):
    """``sbatch --wait`` of the script from ``folder``, in the background, with no option that asks for
    resources or names files: the script's own defaults must fit the one-node cluster."""
    env = {"FOCUSTUNE_VENV": str(VENV), "FOCUSTUNE_RAY_TEMP": str(cluster.folder / "ray"), **cluster.env}
    return start(["sbatch", "--wait", str(SCRIPT), *args], folder / "sbatch.log", env=env, cwd=folder)


def submit(cluster, folder: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    """The job run to its end: (sbatch's exit code, which is the job's, and the job's output)."""
    job = sbatch(cluster, folder, *args)
    try:
        job.wait(timeout=timeout)
    finally:
        stop_group(job)  # the client only; the cluster fixture cancels a job still running
    return job.returncode, output(folder)


def output(folder: Path) -> str:
    """The job's output (the script's default file, ``focustune-sweep-JOBID.out`` where it was submitted)."""
    found = sorted(folder.glob("focustune-sweep-*.out"))
    return found[0].read_text() if found else (folder / "sbatch.log").read_text()


def connects(address: str, auth: dict[str, str]) -> bool:
    """Whether a Ray driver with ``auth`` (token mode on) gets onto the cluster at ``address``."""
    code = "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); assert ray.nodes()"
    try:
        done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, timeout=90,
                              env={**os.environ, "RAY_AUTH_MODE": "token", **auth})
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def test_sbatch_script_runs_a_sweep_on_its_own_ray_cluster_and_stops_it(tmp_path, cluster):
    tiny = tiny_npz(tmp_path / "tiny.npz")
    job = sbatch(cluster, tmp_path, "--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--epochs", "2",
                 "--seeds", "0", "--set", "batch_size=16", "--experiment", "slurm")
    try:
        assert wait_until(lambda: "Ray node(s) up" in output(tmp_path), 300), output(tmp_path)[-3000:]
        address = re.search(r"Ray head (\S+):(\d+)", output(tmp_path))
        (job_dir,) = tmp_path.glob("focustune-slurm-*")
        token = job_dir / "ray_auth_token"
        # while the sweep runs: the job's token lets a driver in, another token does not
        assert connects(f"{address.group(1)}:{address.group(2)}", {"RAY_AUTH_TOKEN_PATH": str(token)})
        assert not connects(f"{address.group(1)}:{address.group(2)}", {"RAY_AUTH_TOKEN": "0" * 64})
        job.wait(timeout=600)
    finally:
        stop_group(job)
    log = output(tmp_path)
    left = pids_with(str(cluster.folder / "ray"))  # Ray processes of the job still alive once it has ended
    assert job.returncode == 0, log[-4000:]
    assert not left, f"Ray processes {left} outlived the job"

    assert address.group(1) == "127.0.0.1"  # the node's NodeAddr in slurm.conf
    assert re.fullmatch(r"[0-9a-f]{64}\n", token.read_text()) and token.stat().st_mode & 0o777 == 0o600
    assert "Ray runtime started" in (job_dir / "ray-localhost.log").read_text()
    spec = json.loads((tmp_path / "focustune_runs" / "slurm" / "sweep.json").read_text())["spec"]
    assert spec["address"] == f"{address.group(1)}:{address.group(2)}"
    assert spec["cpus_per_trial"] == 1 and spec["gpus_per_trial"] == 0  # one trial per CPU of the node
    assert f"nodes localhost, {cluster.cpus} CPU(s)" in log  # by default: one node, all its CPUs
    runs = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "slurm")
    trials = [r for r in runs if r.data.tags.get("focustune.kind") == "trial"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}


def test_sbatch_script_refuses_an_address_of_its_own(tmp_path, cluster):
    code, log = submit(cluster, tmp_path, "--dataset", "digits-lt", "--address", "10.0.0.1:6379", timeout=120)
    assert code == 2 and "--address is set by this script" in log
    assert not list(tmp_path.glob("focustune-slurm-*"))  # refused before anything was started or written


def test_a_failing_sweep_still_stops_ray(tmp_path, cluster):
    code, log = submit(cluster, tmp_path, "--dataset", "digits-lt", "--methods", "magic", timeout=300)
    assert code == 2 and "unknown method 'magic'" in log
    assert "1 of 1 Ray node(s) up" in log  # Ray was running when the sweep failed
    assert not pids_with(str(cluster.folder / "ray"))
