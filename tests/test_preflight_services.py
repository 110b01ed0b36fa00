"""Bad infrastructure is refused before any work: one message naming what to fix, exit 2, nothing
written, Ray not started. The services are real and on 127.0.0.1: an S3-compatible store (moto's
server), a plain web server that is not MLflow, and ports nothing listens on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from focustune.cli import main
from servers import (free_port, ray_cluster, s3_client, s3_endpoint, start, stop_group, sweep_command, tiny_npz,
                     wait_until)

SWEEP = ["--methods", "erm", "--trials", "1", "--epochs", "1", "--experiment", "bad"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_endpoint(tmp_path_factory.mktemp("moto")) as served:
        yield served


@pytest.fixture(scope="module")
def web_server(tmp_path_factory) -> str:
    """``python -m http.server``: a web server that answers, but not as MLflow."""
    folder, port = tmp_path_factory.mktemp("web"), free_port()
    proc = start([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], folder / "web.log",
                 cwd=folder)
    try:
        import urllib.request

        def answers() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_until(answers, 30), (folder / "web.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def refused(args: list[str], message: str, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
    return err


def nothing_written(folder: Path) -> None:
    assert sorted(p.name for p in folder.rglob("*")) == []  # no focustune_runs/, sweep.json, optuna.db, mlflow.db


def test_missing_bucket_is_refused_and_nothing_is_created(s3, data, work, capsys, monkeypatch):
    _endpoint, bucket, env = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", "s3://no-such-bucket/runs"],
            "bucket 'no-such-bucket' does not exist", capsys)
    nothing_written(work)
    client = s3_client(env)
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [bucket]
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_unreachable_object_store_is_refused(s3, data, work, capsys, monkeypatch):
    _, bucket, env = s3
    for key, value in {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(key, value)
    refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", f"s3://{bucket}/runs"],
            "the object store does not answer", capsys)
    nothing_written(work)


@pytest.fixture(scope="module")
def guarded_s3(tmp_path_factory):
    """An S3 endpoint that checks credentials, as a real store does (it knows none of the test's)."""
    with s3_endpoint(tmp_path_factory.mktemp("moto-auth"), check_credentials=True) as served:
        yield served


@pytest.mark.parametrize("credentials, message", [
    (False, "no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    (True, "access denied: check the credentials"),
])
def test_missing_or_refused_credentials_are_refused(guarded_s3, data, work, capsys, monkeypatch, credentials,
                                                    message):
    _, bucket, env = guarded_s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if not credentials:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
    refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", f"s3://{bucket}/runs"], message, capsys)
    nothing_written(work)


def test_storage_under_a_file_is_refused(data, work, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", str(tmp_path / "a-file" / "runs")],
            "a-file is a file, not a folder", capsys)
    nothing_written(work)


def test_storage_where_nothing_can_be_written_is_refused(data, work, capsys):
    refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", "/proc/focustune-runs"],
            "--storage /proc/focustune-runs: cannot write in /proc", capsys)
    nothing_written(work)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_storage_folder_is_refused(data, work, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(["sweep", "--dataset", str(data), *SWEEP, "--storage", str(locked / "runs")],
                "cannot write in", capsys)
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []
    nothing_written(work)


def test_unreachable_optuna_database_is_refused_quickly(data, work, capsys):
    import time

    port = free_port()
    began = time.monotonic()
    refused(["sweep", "--dataset", str(data), *SWEEP, "--optuna-storage", f"postgresql+psycopg://u:p@127.0.0.1:{port}/x"],
            f"--optuna-storage: no database server answers at 127.0.0.1:{port}", capsys)
    assert time.monotonic() - began < 30
    nothing_written(work)


def test_malformed_optuna_url_is_refused(data, work, capsys):
    refused(["sweep", "--dataset", str(data), *SWEEP, "--optuna-storage", "not a url"],
            "not a database URL", capsys)
    nothing_written(work)


def test_web_server_that_is_not_mlflow_is_refused_by_sweep_train_and_predict(web_server, data, work, capsys):
    message = f"--tracking-uri {web_server}: a server answers but is not an MLflow tracking server"
    refused(["sweep", "--dataset", str(data), *SWEEP, "--tracking-uri", web_server], message, capsys)
    refused(["train", "--dataset", str(data), "--epochs", "1", "--log-model", "--tracking-uri", web_server],
            message, capsys)
    refused(["predict", "--model", "models:/tiny@champion", "--tracking-uri", web_server, "--input", str(data),
             "--output", "out.csv"], message, capsys)
    refused(["compare", "--experiment", "bench", "--tracking-uri", web_server, "--out", "report"], message, capsys)
    nothing_written(work)


def test_trial_resources_this_machine_lacks_are_refused_on_a_local_ray(data, work, capsys):
    import torch

    gpus = torch.cuda.device_count()
    refused(["sweep", "--dataset", str(data), *SWEEP, "--gpus-per-trial", str(gpus + 1)],
            f"--gpus-per-trial {gpus + 1}: this machine has {gpus} GPU(s)", capsys)
    cpus = os.cpu_count()
    refused(["sweep", "--dataset", str(data), *SWEEP, "--cpus-per-trial", str(cpus + 1)],
            f"--cpus-per-trial {cpus + 1}: this machine has", capsys)
    nothing_written(work)


@pytest.mark.slow
def test_a_cluster_without_a_fitting_node_refuses_the_sweep_unless_told_to_wait(tmp_path, data):
    """Joined to a real two-node, GPU-less Ray (token auth on), a sweep asking 2 GPUs per trial is refused
    before anything is written; with --wait-for-nodes (an autoscaler will add a node) it says what it
    waits for instead."""
    work = tmp_path / "work"
    work.mkdir()
    args = [str(data), *SWEEP, "--gpus-per-trial", "2", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    with ray_cluster(tmp_path) as (address, auth):
        env = {**os.environ, **auth}
        refused = subprocess.run(sweep_command("--dataset", *args, "--address", address), cwd=work, env=env,
                                 capture_output=True, text=True, timeout=180)
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert "no node of the cluster" in refused.stderr and "alive node(s): 1 CPU / 0 GPU" in refused.stderr
        assert "--wait-for-nodes" in refused.stderr and "Traceback" not in refused.stderr
        assert not list(work.iterdir())  # no sweep state, no MLflow store
        log = tmp_path / "waiting.log"
        waiting = start(sweep_command("--dataset", *args, "--address", address, "--wait-for-nodes"), log,
                        env=auth, cwd=work)
        try:
            assert wait_until(lambda: "waiting for a node with 1 CPU(s) and 2 GPU(s)" in log.read_text(), 180), \
                log.read_text()[-3000:]
        finally:
            stop_group(waiting)
