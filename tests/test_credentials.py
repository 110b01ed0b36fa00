"""Secrets stay secret: URIs' passwords masked wherever shown or stored, secret keys out of every file
Ray writes; and ``--resume`` loads no pickle it finds under the storage."""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from focustune.credentials import masked, masked_text, remember, revealed


@pytest.mark.parametrize("uri, shown", [
    ("postgresql+psycopg://ann:s3cr%40t@db.example:5432/mlflow", "postgresql+psycopg://ann:***@db.example:5432/mlflow"),
    ("mysql://:pw@host/db", "mysql://:***@host/db"),
    ("postgresql://host/db?user=ann&password=pw&sslmode=require",
     "postgresql://host/db?user=ann&password=***&sslmode=require"),
    ("https://user@mlflow.example", "https://user@mlflow.example"),  # no password: unchanged
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
    ("/local/folder", "/local/folder"),
])
def test_masked_hides_the_password_and_keeps_the_rest(uri, shown):
    assert masked(uri) == shown
    remember(uri)
    assert revealed(masked(uri)) == uri


def test_masked_text_masks_every_uri_of_a_message():
    text = "--optuna-storage postgresql://a:pw1@h/d: cannot open it (OperationalError: mysql://b:pw2@x)"
    assert "pw1" not in masked_text(text) and "pw2" not in masked_text(text)
    assert "postgresql://a:***@h/d" in masked_text(text)


def test_pickled_searcher_and_tracking_queue_hold_no_password():
    from focustune.sweeps.search import MultiStudySearch, study_queue
    from focustune.tracking.trial_runs import TrialRuns

    url = f"postgresql+psycopg://ft:{secrets.token_hex(8)}@127.0.0.1:1/optuna"
    search = MultiStudySearch({}, study_queue(["a/erm"], 1, 0), url, 0)
    runs = TrialRuns(url, "0", {}, {}, params_for=dict)
    for obj, attribute in ((search, "storage"), (runs, "tracking_uri")):
        blob = pickle.dumps(obj)
        assert url.split(":")[2].split("@")[0].encode() not in blob
        assert getattr(pickle.loads(blob), attribute) == url  # this process was given it: revealed again


class Planted:
    """A pickle that, when loaded, writes a marker file (as a shell command would run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_pickle_planted_as_the_searcher_state_is_refused_not_run(tmp_path):
    from focustune.errors import ResumeRefused
    from focustune.sweeps.search import MultiStudySearch, study_queue

    marker = tmp_path / "marker"
    planted = tmp_path / "searcher-state-2026.pkl"
    planted.write_bytes(pickle.dumps(Planted(marker)))
    search = MultiStudySearch({}, study_queue(["a/erm"], 1, 0), "sqlite://", 0)
    with pytest.raises(ResumeRefused, match="not a searcher state"):
        search.restore(str(planted))
    assert not marker.exists()
    search.save(str(tmp_path / "state.pkl"))  # what it writes is data, and reads back
    assert (tmp_path / "state.pkl").read_bytes().startswith(b"{")
    search.restore(str(tmp_path / "state.pkl"))


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return found


@pytest.mark.slow
def test_no_password_or_secret_key_on_stdout_in_sweep_json_mlflow_or_ray_files(tmp_path):
    from mlflow import MlflowClient

    from servers import postgres_server, s3_client, s3_endpoint, start, stop_group, sweep_command, tiny_npz

    tiny = tiny_npz(tmp_path / "tiny.npz")
    secret_key = "AWS" + secrets.token_hex(12)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp"))  # Ray's socket paths stay short
    try:
        with postgres_server(("mlflow", "optuna")) as urls, s3_endpoint(tmp_path) as (_, bucket, env):
            password = urls["mlflow"].split(":")[2].split("@")[0]
            env = {**env, "AWS_SECRET_ACCESS_KEY": secret_key, "RAY_TMPDIR": str(ray_tmp)}
            log = tmp_path / "sweep.log"
            proc = start(sweep_command("--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0",
                                       "--epochs", "1", "--set", "batch_size=16", "--cpus-per-trial", "1",
                                       "--tracking-uri", urls["mlflow"], "--optuna-storage", urls["optuna"],
                                       "--storage", f"s3://{bucket}/runs", "--experiment", "secret"),
                         log, env=env, cwd=tmp_path)
            try:
                proc.wait(timeout=400)
            finally:
                stop_group(proc)
            out = log.read_text()
            assert proc.returncode == 0, out[-3000:]
            needles = [password.encode(), secret_key.encode()]
            assert password not in out and secret_key not in out
            assert "focustune:***@127.0.0.1" in out  # the URI is shown, masked
            s3 = s3_client({**env, "AWS_SECRET_ACCESS_KEY": "any"})
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                    for o in page.get("Contents", [])]
            assert "runs/secret/sweep.json" in keys and any(k.endswith("tuner.pkl") for k in keys), keys
            stored = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
            assert not [k for k, body in stored.items() if any(n in body for n in needles)]
            client = MlflowClient(tracking_uri=urls["mlflow"])
            experiment = client.get_experiment_by_name("secret").experiment_id
            runs = client.search_runs([experiment], max_results=100)
            assert runs
            for run in runs:
                values = " ".join([*run.data.params.values(), *run.data.tags.values()])
                assert password not in values
        assert list(ray_tmp.rglob("runtime_env_agent*.log"))  # the files the check reads exist
        assert not _files_holding(ray_tmp, needles)
        assert not _files_holding(tmp_path, needles)  # the sweep's log, moto's
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_resume_runs_no_pickle_planted_under_the_storage_and_resumes_what_it_wrote(tmp_path):
    import signal

    from servers import start, stop_group, sweep_command, tiny_npz, wait_until

    tiny = tiny_npz(tmp_path / "tiny.npz")
    args = ["--dataset", str(tiny), "--methods", "erm", "--trials", "4", "--seeds", "0", "--epochs", "4",
            "--set", "batch_size=16", "--cpus-per-trial", "1", "--max-concurrent", "1",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "planted"]
    env = {"FOCUSTUNE_RESUME_KEY": str(tmp_path / "key" / "resume.key")}
    tune_run = tmp_path / "focustune_runs" / "planted" / "benchmark"

    def sweep(*extra: str, fault=None) -> tuple[int | None, str]:
        log = tmp_path / f"sweep-{len(list(tmp_path.glob('sweep-*.log')))}.log"
        driver = start(sweep_command(*args, *extra), log, env=env, cwd=tmp_path)
        try:
            if fault:
                fault(driver, log)
            driver.wait(timeout=400)
        finally:
            stop_group(driver)
        return driver.returncode, log.read_text()

    def kill_after_one_trial(driver, log):  # once Tune's snapshot names a finished trial
        def snapshot() -> bool:
            states = list(tune_run.glob("experiment_state*.json"))
            return bool(states) and "TERMINATED" in states[0].read_text() and any(tune_run.glob("searcher-state*"))

        assert wait_until(lambda: snapshot() or driver.poll() is not None, 300, interval=0.1), log.read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)

    code, out = sweep(fault=kill_after_one_trial)
    assert code == -signal.SIGKILL, out[-3000:]
    kept = tmp_path / "kept"
    shutil.copytree(tune_run, kept)
    marker = tmp_path / "marker"
    pickles = [p for p in tune_run.glob("*")
               if p.is_file() and (p.suffix == ".pkl" or p.name.startswith("experiment_state"))]
    assert {"tuner.pkl"} <= {p.name for p in pickles} and any(p.name.startswith("searcher-state") for p in pickles)
    for path in pickles:
        path.write_bytes(pickle.dumps(Planted(marker)))
    code, out = sweep("--resume")
    assert code == 2 and "not written by a focustune driver" in out, out[-3000:]
    assert not marker.exists()  # nothing planted ran

    shutil.rmtree(tune_run)
    shutil.copytree(kept, tune_run)  # what the killed driver wrote: resumed
    code, out = sweep("--resume")
    assert code == 0 and "resuming 1 studies" in out, out[-3000:]
    assert (tmp_path / "key" / "resume.key").stat().st_mode & 0o777 == 0o600  # the key stayed out of the storage


def test_a_checkpoint_tune_deletes_stays_until_a_snapshot_taken_after_the_deletion_is_stored(tmp_path, monkeypatch):
    """The kill window of Tune 2.60, made deterministic: Tune deletes a trial's checkpoint (through its
    storage filesystem, as its checkpoint manager does) while the stored snapshot still names it. A
    driver killed now must find it on resume; it goes once a later snapshot is stored."""
    from pyarrow import fs

    from focustune.sweeps.tune_storage import DELETES, storage

    monkeypatch.setenv("FOCUSTUNE_RESUME_KEY", str(tmp_path / "key"))
    files, root = storage(str(tmp_path / "store"))
    trial = f"{root}/benchmark/trial_1"
    for n in range(3):
        files.create_dir(f"{trial}/checkpoint_00000{n}")
    snapshot = f"{root}/benchmark/experiment_state-2026.json"

    def upload_snapshot() -> None:  # as Tune's syncer uploads its staging folder
        with files.open_output_stream(snapshot) as stream:
            stream.write(b"{}")

    def exists(n: int) -> bool:
        return files.get_file_info(f"{trial}/checkpoint_00000{n}").type != fs.FileType.NotFound

    upload_snapshot()
    files.delete_dir(f"{trial}/checkpoint_000000")  # Tune: a newer checkpoint arrived, the oldest goes
    assert exists(0)  # killed here: the stored snapshot may still name it, and it is there
    upload_snapshot()  # began after the deletion, but may carry a state taken before it
    assert exists(0)
    upload_snapshot()  # taken after the deletion: it no longer names the folder
    assert not exists(0) and exists(1) and exists(2)
    files.delete_dir(f"{trial}/checkpoint_000001")
    DELETES.flush()  # the run ended: its final snapshot is stored
    assert not exists(1) and exists(2) and not DELETES.pending()


@pytest.mark.slow
def test_a_five_second_s3_outage_during_checkpoint_writes_fails_no_trial_attempt(tmp_path):
    import time

    from servers import s3_client, s3_endpoint, start, stop_group, sweep_command, tcp_proxy, tiny_npz, wait_until

    tiny = tiny_npz(tmp_path / "tiny.npz")
    with s3_endpoint(tmp_path) as (endpoint, bucket, env), tcp_proxy(int(endpoint.rsplit(":", 1)[1])) as proxy:
        env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        log = tmp_path / "sweep.log"
        driver = start(sweep_command("--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0",
                                     "--epochs", "12", "--set", "batch_size=8", "--cpus-per-trial", "1",
                                     "--max-concurrent", "1", "--storage", f"s3://{bucket}/runs",
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     "--experiment", "outage"), log, env=env, cwd=tmp_path)
        try:
            s3 = s3_client(env)

            def checkpoints() -> int:
                found = s3.list_objects_v2(Bucket=bucket, Prefix="runs/outage/benchmark/").get("Contents", [])
                return sum("/checkpoint_" in o["Key"] for o in found)

            assert wait_until(lambda: checkpoints() > 0 or driver.poll() is not None, 300), log.read_text()[-3000:]
            proxy.pause()  # while the trial writes its next checkpoints
            time.sleep(5)
            proxy.resume()
            driver.wait(timeout=400)
        finally:
            stop_group(driver)
        out = log.read_text()
        assert driver.returncode == 0, out[-3000:]
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
                for o in page.get("Contents", [])]
    assert not [k for k in keys if k.rsplit("/", 1)[-1] in ("error.txt", "error.pkl")], keys  # no attempt failed
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    trials = [r for r in runs if r.data.tags.get("focustune.kind") == "trial"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    for run in trials:  # each trial trained in one attempt, from epoch 0
        assert {m.value for m in client.get_metric_history(run.info.run_id, "start_epoch")} == {0}
