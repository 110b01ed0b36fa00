"""Commands against a real MLflow server (started here, in its own folder) from another, empty working
folder: tracking and registry both on the server, and no store created where the commands run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from servers import mlflow_server, start, stop_group, tiny_npz

pytestmark = pytest.mark.slow


def focustune(folder: Path, log: str, *args: str, timeout: float = 300) -> tuple[int, str]:
    """``focustune ARGS`` run in ``folder``; (exit code, output)."""
    proc = start([sys.executable, "-m", "focustune.cli", *args], folder / log, cwd=folder)
    try:
        proc.wait(timeout=timeout)
    finally:
        stop_group(proc)
    return proc.returncode, (folder / log).read_text()


def no_local_store(folder: Path) -> None:
    assert not (folder / "mlflow.db").exists() and not (folder / "mlruns").exists(), sorted(
        p.name for p in folder.iterdir())


def test_train_register_predict_compare_on_a_server(tmp_path):
    from mlflow import MlflowClient

    server_folder, work = tmp_path / "server", tmp_path / "work"
    server_folder.mkdir()
    work.mkdir()
    data = tiny_npz(tmp_path / "tiny.npz")
    with mlflow_server(server_folder) as (uri, _, _):
        code, out = focustune(work, "train.log", "train", "--dataset", str(data), "--epochs", "1", "--quiet",
                              "--set", "batch_size=16", "--log-model", "--register", "remote-tiny",
                              "--experiment", "remote", "--tracking-uri", uri)
        assert code == 0, out[-3000:]
        assert f"MLflow {uri}" in out or f", {uri})" in out, out[-2000:]
        no_local_store(work)
        version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("remote-tiny",
                                                                                               "champion")
        assert version.version == "1"

        code, out = focustune(work, "predict.log", "predict", "--model", "models:/remote-tiny@champion",
                              "--tracking-uri", uri, "--input", str(data), "--output", "out.csv", "--device", "cpu")
        assert code == 0, out[-3000:]
        assert f"from MLflow {uri}" in out, out[-2000:]
        lines = (work / "out.csv").read_text().splitlines()
        assert len(lines) == 1 + 3 * 8  # header + the test split's images (8 per class)
        no_local_store(work)

        code, out = focustune(work, "predict-missing.log", "predict", "--model", "models:/not-there@champion",
                              "--tracking-uri", uri, "--input", str(data), "--output", "missing.csv")
        assert code == 2 and f"not found in {uri}" in out, out[-2000:]
        assert not (work / "missing.csv").exists()
        no_local_store(work)

        code, out = focustune(work, "compare.log", "compare", "--experiment", "remote", "--tracking-uri", uri,
                              "--out", "report")
        assert f"MLflow {uri}" in out, out[-2000:]
        no_local_store(work)

        # tune: trials logged and the selected model registered on the server too
        code, out = focustune(work, "tune.log", "tune", "--method", "erm", "--dataset", str(data), "--trials", "1",
                              "--epochs", "1", "--seeds", "0", "--set", "batch_size=16", "--cpus-per-trial", "1",
                              "--register", "remote-tune", "--experiment", "remote-tune", "--tracking-uri", uri,
                              timeout=400)
        assert code == 0, out[-3000:]
        assert f"MLflow {uri}" in out, out[-2000:]
        assert MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
            "remote-tune", "champion").version == "1"
        no_local_store(work)
