"""Faults on the services of a multi-node setup, all real and on 127.0.0.1: one sweep whose driver is
killed with SIGKILL three times (at random moments, the last one during the model hand-over) and
resumed each time, whose MLflow server restarts once, and whose S3 endpoint (moto's server, behind a
TCP proxy the test can cut) is unreachable for a few seconds. Every server is started here and
stopped by the process it started (tests/servers.py).

The kill moments come from a seeded ``random.Random``; the seed is printed (set ``FOCUSTUNE_FAULT_SEED``
to replay one). Each kill waits for new finished trials in MLflow first, so every driver run makes
progress and the sweep ends.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from servers import (free_port, mlflow_server, s3_client, s3_endpoint, start, stop_group, sweep_command, tcp_proxy,
                     tiny_npz, wait_until)

from focustune.records import StudyRecord

pytestmark = pytest.mark.slow

TRIALS, SEEDS = 3, 2
EXPERIMENT, MODEL = "faults", "faulty"


def finished_runs(uri: str) -> list:
    """The sweep's FINISHED trial and seed re-run runs (none while the server is away)."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            return []
        return [r for r in client.search_runs([found.experiment_id], max_results=1000)
                if r.info.status == "FINISHED" and r.data.tags.get("focustune.kind") in ("trial", "seed_rerun")]
    except Exception:  # noqa: BLE001 - the server restarting: nothing seen yet
        return []


def test_killed_driver_restarted_mlflow_and_unreachable_s3_lose_and_duplicate_nothing(tmp_path):
    import optuna
    from mlflow import MlflowClient

    seed = int(os.environ.get("FOCUSTUNE_FAULT_SEED", random.SystemRandom().randrange(10**6)))
    print(f"fault seed {seed} (FOCUSTUNE_FAULT_SEED={seed} replays these moments)")
    rng = random.Random(seed)
    tiny = tiny_npz(tmp_path / "tiny.npz")
    optuna_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with s3_endpoint(tmp_path) as (endpoint, bucket, env), \
            tcp_proxy(int(endpoint.rsplit(":", 1)[1])) as proxy, \
            mlflow_server(tmp_path, free_port()) as (uri, mlflow_up, mlflow_down):
        env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}  # the sweep reaches S3 through the proxy
        args = ["--dataset", str(tiny), "--methods", "erm", "--trials", str(TRIALS), "--seeds", str(SEEDS),
                "--epochs", "2", "--set", "batch_size=16", "--cpus-per-trial", "1", "--max-concurrent", "1",
                "--storage", f"s3://{bucket}/sweeps", "--optuna-storage", optuna_url, "--tracking-uri", uri,
                "--experiment", EXPERIMENT, "--register", MODEL]
        events: list[str] = []

        def driver_run(number: int, resume: bool, fault) -> tuple[int | None, str]:
            """Driver ``number``: start it, let ``fault(log)`` act (it may kill it), wait for its end."""
            log = tmp_path / f"sweep-{number}.log"
            driver = start(sweep_command(*args, *(["--resume"] if resume else [])), log, env=env, cwd=tmp_path)
            try:
                fault(driver, log)
                driver.wait(timeout=400)
            finally:
                stop_group(driver)  # the driver and the Ray processes it started
            return driver.returncode, log.read_text()

        def progressed(count: int, log: Path, driver) -> None:
            assert wait_until(lambda: len(finished_runs(uri)) >= count or driver.poll() is not None, 300), \
                log.read_text()[-3000:]

        def kill(driver, at: str) -> None:
            delay = rng.uniform(0.0, 3.0)
            time.sleep(delay)
            if driver.poll() is None:
                os.kill(driver.pid, signal.SIGKILL)
                driver.wait(timeout=30)
                events.append(f"killed {at} + {delay:.1f} s")
            else:
                events.append(f"{at}: the driver had ended before its kill")

        def first(driver, log):  # killed once a trial has finished
            progressed(1, log, driver)
            kill(driver, "after 1 finished run")

        def second(driver, log):  # S3 goes away for a few seconds, MLflow restarts, then killed
            before = len(finished_runs(uri))
            progressed(before + 1, log, driver)
            proxy.pause()  # while trials run: their checkpoints and Tune's snapshots go to S3
            outage = rng.uniform(3.0, 6.0)
            time.sleep(outage)
            proxy.resume()
            events.append(f"S3 unreachable for {outage:.1f} s, then back")
            mlflow_down()
            time.sleep(rng.uniform(1.0, 3.0))
            mlflow_up()
            events.append("MLflow server restarted")
            progressed(before + 2, log, driver)
            kill(driver, f"after {before + 2} finished runs")

        def third(driver, log):  # killed during the hand-over of the model
            assert wait_until(lambda: "configuration written to" in log.read_text() or driver.poll() is not None,
                              400), log.read_text()[-3000:]
            kill(driver, "during delivery")

        for number, fault in enumerate((first, second, third), start=1):
            code, out = driver_run(number, number > 1, fault)
            assert code in (-signal.SIGKILL, 0), out[-3000:]
        code, out = driver_run(4, True, lambda driver, log: None)
        print("\n".join(events))
        assert code == 0, out[-3000:]
        state = json.loads(s3_client(env).get_object(Bucket=bucket, Key=f"sweeps/{EXPERIMENT}/sweep.json")["Body"]
                           .read())

        # MLflow: exactly one FINISHED run per search trial and per seed re-run; nothing left RUNNING
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        runs = client.search_runs([experiment], max_results=1000)
        children = [r for r in runs if r.data.tags.get("focustune.kind") in ("trial", "seed_rerun")]
        finished = [r for r in children if r.info.status == "FINISHED"]
        kinds = sorted(r.data.tags["focustune.kind"] for r in finished)
        assert kinds == ["seed_rerun"] * SEEDS + ["trial"] * TRIALS, [(r.info.run_name, r.info.status) for r in runs]
        assert sorted(r.data.params["seed"] for r in finished if r.data.tags["focustune.kind"] == "seed_rerun") == \
            [str(s) for s in range(1, SEEDS + 1)]
        assert len({r.data.tags["focustune.trial_id"] for r in finished}) == len(finished)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        # a run of work a killed driver's last snapshot never recorded (re-done as a new trial) is closed
        assert all(r.data.tags.get("focustune.lost_on_restart") == "true" for r in children if r not in finished)
        (study_run,) = [r for r in runs if r.data.tags.get("focustune.kind") == "study"]
        assert study_run.info.status == "FINISHED"

        # Optuna: no trial left RUNNING; every search trial COMPLETE (one more only where a searcher
        # snapshot newer than Tune's had told a trial Tune's snapshot lost, whose work was done again)
        study = optuna.load_study(study_name="tiny/erm", storage=optuna_url)
        states = [t.state for t in study.trials]
        assert optuna.trial.TrialState.RUNNING not in states
        assert TRIALS <= states.count(optuna.trial.TrialState.COMPLETE) <= TRIALS + 3

        # one model logged on the study run, registered once, as the champion
        models = client.search_logged_models([experiment], filter_string=f"source_run_id = '{study_run.info.run_id}'")
        assert len(models) == 1, [(m.model_id, m.status) for m in models]
        assert StudyRecord.from_json(state["studies"]["tiny/erm"]).model.uri == f"models:/{models[0].model_id}"
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert [str(v.version) for v in versions] == ["1"] and versions[0].source == f"models:/{models[0].model_id}"
        assert str(client.get_registered_model(MODEL).aliases["champion"]) == "1"

        # the utilisation counts every driver run's own node (each driver started its own Ray): every
        # driver run that finished a run is an attempt (a fast search may end within the first one)
        usage = state["utilisation"]
        nodes = {r.data.tags["focustune.node_id"] for r in finished}
        assert usage["attempts"] >= len(nodes) and nodes <= set(usage["nodes"]), usage
        assert 0 < usage["overall"] <= 1 and all(0 < u <= 1 for u in usage["nodes"].values() if u is not None)
        printed = [line for line in out.splitlines() if line.startswith("utilisation:")]
        assert printed and f"{usage['overall']:.1%}" in printed[-1]
        assert ("driver runs" in printed[-1]) == (usage["attempts"] > 1)  # over several attempts, it says so

        # item 1: focustune predict with the model registered from the checkpoints in the bucket
        done = start([sys.executable, "-m", "focustune.cli", "predict", "--model", f"models:/{MODEL}@champion",
                      "--tracking-uri", uri, "--input", str(tiny), "--output", str(tmp_path / "p.csv")],
                     tmp_path / "predict.log", cwd=tmp_path)
        try:
            done.wait(timeout=180)
        finally:
            stop_group(done)
        assert done.returncode == 0, (tmp_path / "predict.log").read_text()[-3000:]
        lines = (tmp_path / "p.csv").read_text().splitlines()
        assert lines[0].startswith("input,class,prob_") and len(lines) == 1 + 3 * 8  # tiny's test split
