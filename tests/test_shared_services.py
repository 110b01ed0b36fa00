"""Sweeps against the shared services of a multi-node setup, all real and on 127.0.0.1: PostgreSQL
(an MLflow server's backend store and the Optuna studies) and an S3-compatible object store (moto's
server) holding the sweep state and Tune's checkpoints. Each service is started here and stopped by
the process it started (tests/servers.py); each skips where its server cannot run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from focustune.records import StudyRecord
from focustune.tracking_schema import BEST_OBJECTIVE
from servers import mlflow_server, postgres_server, s3_client, s3_endpoint, start, stop_group, sweep_command, tiny_npz

pytestmark = pytest.mark.slow

TINY_SWEEP = ["--methods", "erm,focal", "--trials", "2", "--epochs", "1", "--set", "batch_size=16",
              "--cpus-per-trial", "1"]


def run(cmd: list[str], folder: Path, log: str, env: dict | None = None, timeout: float = 300) -> tuple[int, str]:
    """``cmd`` in its own session in ``folder``; (exit code, output); whatever it left is stopped."""
    proc = start(cmd, folder / log, env=env, cwd=folder)
    try:
        proc.wait(timeout=timeout)
    finally:
        stop_group(proc)
    return proc.returncode, (folder / log).read_text()


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} at {uri}"
    return list(client.search_runs([found.experiment_id], max_results=1000))


def of_kind(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get("focustune.kind") == kind]


def rows(url: str, query: str) -> list[tuple]:
    """``query``'s rows, read straight from PostgreSQL (not through MLflow or Optuna)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        return connection.execute(query).fetchall()


def test_sweep_on_postgres_mlflow_server_and_optuna_storage(tmp_path):
    import optuna

    tiny = tiny_npz(tmp_path / "tiny.npz")
    with postgres_server(("mlflow", "optuna")) as urls:
        with mlflow_server(tmp_path, backend_store_uri=urls["mlflow"]) as (uri, _, _):
            code, out = run(sweep_command("--dataset", str(tiny), *TINY_SWEEP, "--seeds", "0",
                                          "--tracking-uri", uri, "--optuna-storage", urls["optuna"],
                                          "--experiment", "on-postgres"), tmp_path, "sweep.log")
            assert code == 0, out[-3000:]
            runs = mlflow_runs(uri, "on-postgres")
        studies = {r.data.tags["focustune.study"]: r for r in of_kind(runs, "study")}
        assert sorted(studies) == ["tiny/erm", "tiny/focal"]
        trials = of_kind(runs, "trial")
        assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
        # the server kept them in PostgreSQL: the same runs, read from its tables
        stored = rows(urls["mlflow"], "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e "
                                      "ON r.experiment_id = e.experiment_id WHERE e.name = 'on-postgres'")
        assert sorted(stored) == sorted((r.info.run_id, r.info.status) for r in runs)
        for key, study_run in studies.items():
            study = optuna.load_study(study_name=key, storage=urls["optuna"])
            complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            assert len(complete) == 2
            assert study_run.data.metrics[BEST_OBJECTIVE] == pytest.approx(study.best_value)
        assert sorted(name for (name,) in rows(urls["optuna"], "SELECT study_name FROM studies")) == sorted(studies)
        assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_sweep_state_and_checkpoints_in_s3_then_compare(tmp_path):
    tiny = tiny_npz(tmp_path / "tiny.npz")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with s3_endpoint(tmp_path) as (_, bucket, env):
        code, out = run(sweep_command("--dataset", str(tiny), *TINY_SWEEP, "--seeds", "1",
                                      "--storage", f"s3://{bucket}/runs", "--tracking-uri", store,
                                      "--experiment", "on-s3"), tmp_path, "sweep.log", env=env)
        assert code == 0, out[-3000:]
        s3 = s3_client(env)
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
                for o in page.get("Contents", [])]
        state = json.loads(s3.get_object(Bucket=bucket, Key="runs/on-s3/sweep.json")["Body"].read())
    studies = {key: StudyRecord.from_json(study) for key, study in state["studies"].items()}
    assert state["done"] and {k: v.finished for k, v in studies.items()} == {"tiny/erm": 2, "tiny/focal": 2}
    # each study's selected model was packaged from its best trial's checkpoint in the bucket
    assert all(study.model.uri.startswith("models:/") for study in studies.values())
    tune_run = [k for k in keys if k.startswith("runs/on-s3/benchmark/")]
    assert any(k.rsplit("/", 1)[1].startswith("experiment_state") for k in tune_run), keys
    assert any("/checkpoint_" in k for k in tune_run), keys  # each trial's checkpoints, from its worker
    assert not (tmp_path / "focustune_runs").exists()  # nothing of the sweep state on the local disk
    runs = mlflow_runs(store, "on-s3")
    assert len(of_kind(runs, "trial")) == 4 and len(of_kind(runs, "seed_rerun")) == 2

    code, out = run([sys.executable, "-m", "focustune.cli", "compare", "--experiment", "on-s3",
                     "--tracking-uri", store, "--out", str(tmp_path / "report")], tmp_path, "compare.log")
    assert code == 0, out[-3000:]
    table = (tmp_path / "report" / "leaderboard.csv").read_text()
    assert "erm" in table and "focal" in table


def test_postgres_server_stops_with_its_test(tmp_path):
    """The fixture's server is gone (its port closed) once the block ends, also after a failure."""
    psycopg = pytest.importorskip("psycopg")
    with pytest.raises(RuntimeError), postgres_server(("probe",)) as urls:
        dsn = urls["probe"].replace("postgresql+psycopg://", "postgresql://")
        psycopg.connect(dsn).close()
        raise RuntimeError("a failing test")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3).close()
