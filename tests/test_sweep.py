"""Sweeps against real components: an MLflow tracking server and Ray, all on 127.0.0.1.

Each sweep runs as its own `focustune sweep` process (its own session), as a user runs it; servers
are started here and stopped by their process groups, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from focustune.records import StudyRecord
from focustune.training import cpu_has_native_bf16
from focustune.tracking_schema import CONFUSION_ARTIFACT
from servers import (command_line, family, free_port, mlflow_server, ray_cluster, start, stop_group, sweep_command,
                     tiny_npz, wait_until)

pytestmark = pytest.mark.slow

COMMON = ["--epochs", "3", "--set", "batch_size=16", "--cpus-per-trial", "1"]


def run_sweep(folder: Path, *args: str, env: dict | None = None, timeout: float = 420) -> subprocess.CompletedProcess:
    log = folder / "sweep.log"
    proc = start(sweep_command(*args), log, env=env, cwd=folder)
    try:
        proc.wait(timeout=timeout)
    finally:
        stop_group(proc)  # the driver and whatever Ray processes it left
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), "")


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str) -> list:
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else list(c.search_runs([exp.experiment_id], max_results=1000))


def by_kind(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get("focustune.kind") == kind]


@pytest.fixture
def tiny(tmp_path) -> Path:
    return tiny_npz(tmp_path / "tiny.npz")


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path) as handles:
        yield handles


def test_sweep_structure_in_mlflow(tmp_path, tiny, server):
    uri, _, _ = server
    done = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm,focal", "--trials", "2", "--seeds", "2",
                     "--tracking-uri", uri, "--experiment", "structure", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "erm" in done.stdout and "focal" in done.stdout and f"open {uri} in a browser" in done.stdout
    runs = runs_of(uri, "structure")
    studies = by_kind(runs, "study")
    assert sorted(r.data.tags["focustune.method"] for r in studies) == ["erm", "focal"]
    for study in studies:
        method = study.data.tags["focustune.method"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
        trials, reruns = by_kind(children, "trial"), by_kind(children, "seed_rerun")
        assert len(trials) == 2 and len(reruns) == 2
        assert sorted(r.data.params["seed"] for r in reruns) == ["1", "2"]
        assert study.info.status == "FINISHED" and "best.lr" in study.data.params
        for run in trials + reruns:
            assert run.info.status == "FINISHED"
            assert run.data.params["method"] == method and run.data.params["dataset"] == "tiny"
            assert {"lr", "batch_size", "epochs", "model"} <= set(run.data.params)
            assert run.data.params["epochs"] == "3" and run.data.params["batch_size"] == "16"
            assert {"test_balanced_acc", "best_val_balanced_acc", "test_auc"} <= set(run.data.metrics)
            assert run.data.tags["focustune.stopped_early"] == "false"
            assert run.data.tags["focustune.precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
            assert run.data.tags["focustune.sweep_id"] == study.data.tags["focustune.sweep_id"]
            history = client(uri).get_metric_history(run.info.run_id, "val_balanced_acc")
            assert sorted(m.step for m in history) == [1, 2, 3]
            assert CONFUSION_ARTIFACT in [a.path for a in client(uri).list_artifacts(run.info.run_id)]
        if method == "focal":
            assert "gamma" in trials[0].data.params
    # the best configuration is re-run: its searched values equal the best trial's
    erm = next(s for s in studies if s.data.tags["focustune.method"] == "erm")
    rerun = by_kind([r for r in runs if r.data.tags.get("mlflow.parentRunId") == erm.info.run_id], "seed_rerun")[0]
    assert rerun.data.params["lr"] == erm.data.params["best.lr"]


def test_interrupted_then_killed_packed_driver_resumes_without_rerunning_finished_trials(tmp_path, tiny):
    """Packed trials (--pack 2: each study's two trials in one process): Ctrl-C (SIGINT, which Tune catches
    and ends its run quietly on), then a resumed driver killed, then resumed to the end."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = tiny_npz(tmp_path / "tiny2.npz", counts=(20, 12, 8))
    args = ["--datasets", f"{tiny},{other}", "--methods", "erm", "--trials", "2", "--seeds", "0",
            "--max-concurrent", "2", "--tracking-uri", uri, "--experiment", "killed", *COMMON]
    packed = [*args, "--pack", "2"]
    state_file = tmp_path / "focustune_runs" / "killed" / "sweep.json"
    log = tmp_path / "interrupted.log"
    driver = start(sweep_command(*packed), log, cwd=tmp_path)
    try:
        ended = lambda: len(re.findall(r"\] search [12]/2", log.read_text()))  # noqa: E731
        assert wait_until(lambda: ended() >= 1, 300), log.read_text()[-3000:]
        os.kill(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130
    finally:
        stop_group(driver)
    assert "the sweep was interrupted" in log.read_text() and "--resume" in log.read_text()
    assert not json.loads(state_file.read_text()).get("done")  # not taken for a finished sweep

    log = tmp_path / "sweep.log"
    driver = start(sweep_command(*packed, "--resume"), log, cwd=tmp_path)
    try:
        ended = lambda: len(re.findall(r"\] search [12]/2", log.read_text()))  # noqa: E731
        assert wait_until(lambda: ended() >= 1, 300), log.read_text()[-3000:]
        # Tune snapshots its experiment every few seconds; kill once two finished trials are in it. The newest
        # snapshot is this driver's file, by the time in its name: uploads rewrite the older drivers' files too
        tune_run = tmp_path / "focustune_runs" / "killed" / "benchmark"
        newest = lambda: max(tune_run.glob("experiment_state-*.json"), key=lambda f: f.name)  # noqa: E731
        assert wait_until(lambda: newest().read_text().count("TERMINATED") >= 2, 300)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_group(driver)
    finished_before = {r.data.tags["focustune.trial_id"] for r in runs_of(uri, "killed")
                       if r.info.status == "FINISHED"}
    assert len(finished_before) >= 2

    again = run_sweep(tmp_path, *packed)  # without --resume: refused, nothing lost
    assert again.returncode == 2 and "--resume" in again.stdout
    unpacked = run_sweep(tmp_path, *args, "--resume")  # its trials hold no CPUs of their own: refused
    assert unpacked.returncode == 2 and "this sweep ran with --pack 2" in unpacked.stdout
    resumed = run_sweep(tmp_path, *packed, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    every = by_kind(runs_of(uri, "killed"), "trial")
    trials = [r for r in every if r.info.status == "FINISHED"]
    ids = [r.data.tags["focustune.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == 4  # exactly one finished run per trial, over both studies
    assert finished_before <= set(ids)
    # a trial the killed driver's last snapshot never recorded is re-done as a new trial; its run is closed
    assert all(r.info.status == "KILLED" and r.data.tags.get("focustune.lost_on_restart") == "true"
               for r in every if r not in trials)
    for run in trials:
        if run.data.tags["focustune.trial_id"] in finished_before:  # not re-run: one value per epoch
            history = client(uri).get_metric_history(run.info.run_id, "train_loss")
            assert sorted(m.step for m in history) == [1, 2, 3]
    first = [r for r in trials if r.data.tags["focustune.trial_id"] in finished_before]
    assert all(r.data.tags["focustune.pack"].startswith(("pack-0.", "pack-1.")) for r in first)  # earlier drivers
    assert {r.data.tags["focustune.pack"] for r in trials} >= {r.data.tags["focustune.pack"] for r in first}
    state = json.loads(state_file.read_text())
    studies = [StudyRecord.from_json(state["studies"][k]) for k in ("tiny/erm", "tiny2/erm")]
    assert state["done"] and [study.finished for study in studies] == [2, 2]
    # each study's model comes from the restored trials' checkpoints
    assert all(study.model.uri.startswith("models:/") for study in studies)


def test_benchmark_sweep_runs_studies_together_then_compare_reads_it(tmp_path, tiny, capsys, monkeypatch):
    """Two datasets x two methods in one command; then `focustune compare` on its experiment."""
    import optuna

    from focustune.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = tiny_npz(tmp_path / "tiny2.npz", counts=(20, 12, 8))
    done = run_sweep(tmp_path, "--datasets", f"{tiny},{other}", "--methods", "erm,focal", "--trials", "2",
                     "--seeds", "2", "--max-concurrent", "2", "--tracking-uri", uri, "--experiment", "bench", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "utilisation:" in done.stdout
    runs = runs_of(uri, "bench")
    studies = {r.data.tags["focustune.study"]: r for r in by_kind(runs, "study")}
    assert sorted(studies) == ["tiny/erm", "tiny/focal", "tiny2/erm", "tiny2/focal"]
    children = [r for r in runs if r.data.tags["focustune.kind"] in ("trial", "seed_rerun")]
    assert len(children) == 4 * (2 + 2)
    for run in children:  # every child says which study it belongs to, for grouping in the UI
        parent = next(s for s in studies.values() if s.info.run_id == run.data.tags["mlflow.parentRunId"])
        for tag in ("dataset", "method", "study", "sweep_id"):
            assert run.data.tags[f"focustune.{tag}"] == parent.data.tags[f"focustune.{tag}"]
        assert run.data.params["dataset"] == parent.data.tags["focustune.dataset"]
    order = sorted(children, key=lambda r: r.info.start_time)
    first = [r.data.tags["focustune.study"] for r in order[:4]]
    assert len(set(first)) == 4  # the studies' trials interleave
    last_search = max(r.info.start_time for r in order if r.data.tags["focustune.kind"] == "trial")
    first_rerun = min(r.info.start_time for r in order if r.data.tags["focustune.kind"] == "seed_rerun")
    assert first_rerun < last_search  # a finished study's re-runs start while another study searches
    state = json.loads((tmp_path / "focustune_runs" / "bench" / "sweep.json").read_text())
    assert 0 < state["utilisation"]["overall"] <= 1 and state["utilisation"]["slots"] == 2
    assert all(0 < s.data.metrics["utilisation"] <= 1 for s in studies.values())
    optuna_db = f"sqlite:///{tmp_path / 'focustune_runs' / 'bench' / 'optuna.db'}"
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(optuna_db)) == sorted(studies)

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--experiment", "bench", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 0
    assert "tiny2" in capsys.readouterr().out
    table = (tmp_path / "report" / "across_datasets.csv").read_text()
    assert "tiny2" in table and "erm" in table and "focal" in table
    audit = pd.read_csv(tmp_path / "report" / "per_class_audit.csv")  # the trials' own train_count/<class>
    assert set(audit["method"]) == {"focal"} and audit["n"].eq(2).all()
    assert sorted(audit.loc[audit["dataset"].str.contains("tiny2"), "train_count"]) == [8, 12, 20]
    calibration = pd.read_csv(tmp_path / "report" / "calibration.csv")  # their calibration metrics
    assert set(calibration["method"]) == {"erm", "focal"} and calibration["temperature"].gt(0).all()
    assert list((tmp_path / "report" / "figures").glob("*_reliability.png"))  # from their calibration.json


def test_warm_start_tries_an_earlier_sweeps_best_configurations_first(tmp_path, tiny):
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0",
                      "--tracking-uri", uri, "--experiment", "earlier", *COMMON)
    assert first.returncode == 0, first.stdout[-3000:]
    (earlier,) = by_kind(runs_of(uri, "earlier"), "study")
    other = tiny_npz(tmp_path / "tiny2.npz", counts=(20, 12, 8))
    done = run_sweep(tmp_path, "--dataset", str(other), "--methods", "erm", "--trials", "2", "--seeds", "0",
                     "--tracking-uri", uri, "--experiment", "later", "--warm-start", "earlier",
                     "--max-concurrent", "1", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:]
    study = optuna.load_study(study_name="tiny2/erm",
                              storage=f"sqlite:///{tmp_path / 'focustune_runs' / 'later' / 'optuna.db'}")
    assert study.trials[0].params["lr"] == pytest.approx(float(earlier.data.params["best.lr"]))


def test_diverging_trials_fail_with_reason_and_the_sweep_goes_on(tmp_path, tiny):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "explode.yaml"
    space.write_text("method: erm\nspace:\n  lr: {type: choice, values: [10.0]}\ndrop: [weight_decay, batch_size]\n")
    done = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm,oversample", "--trials", "1",
                     "--seeds", "1", "--space", f"erm={space}", "--set", "optimizer=sgd", "--set", "momentum=0.99",
                     "--tracking-uri", uri,
                     "--experiment", "nan", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:]
    runs = runs_of(uri, "nan")
    erm = [r for r in by_kind(runs, "trial") if r.data.tags["focustune.method"] == "erm"]
    assert len(erm) == 1 and erm[0].info.status == "FAILED"
    assert "nan" in erm[0].data.tags["focustune.failed_reason"].lower()
    assert "no search trial finished" in done.stdout
    others = [r for r in runs if r.data.tags.get("focustune.method") == "oversample"]
    assert {r.info.status for r in others} == {"FINISHED"} and len(by_kind(others, "seed_rerun")) == 1
    (tmp_path / "sweep.log").unlink()
    every = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm", "--trials", "1", "--seeds", "0",
                      "--space", f"erm={space}", "--set", "optimizer=sgd", "--set", "momentum=0.99",
                      "--tracking-uri", uri, "--experiment", "all-nan", *COMMON)
    assert every.returncode == 1, every.stdout[-3000:]  # a sweep whose every trial failed is no success
    assert "every search trial of every study failed (1)" in every.stdout


def test_mlflow_outage_is_buffered_and_every_metric_arrives(tmp_path, tiny):
    port = free_port()
    with mlflow_server(tmp_path, port) as (uri, up, down):
        args = ["--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0", "--max-concurrent", "1",
                "--tracking-uri", uri, "--experiment", "outage", "--epochs", "6", "--set", "batch_size=16"]
        log = tmp_path / "sweep.log"
        driver = start(sweep_command(*args), log, cwd=tmp_path)
        try:
            assert wait_until(lambda: len(runs_of(uri, "outage")) >= 2, 300), log.read_text()[-3000:]
            down()  # the tracking server goes away mid-sweep ...
            assert wait_until(lambda: "unreachable" in log.read_text(), 120), log.read_text()[-3000:]
            up()  # ... and comes back
            driver.wait(timeout=400)
        finally:
            stop_group(driver)
        assert driver.returncode == 0, log.read_text()[-3000:]
        trials = by_kind(runs_of(uri, "outage"), "trial")
        assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
        for run in trials:
            steps = sorted(m.step for m in client(uri).get_metric_history(run.info.run_id, "val_acc"))
            assert steps == [1, 2, 3, 4, 5, 6]
            assert "test_acc" in run.data.metrics


def test_two_node_cluster_with_token_auth_runs_trials_on_both_nodes(tmp_path, tiny):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with ray_cluster(tmp_path) as (address, auth):
        # One CPU per node: the two trials can only run side by side on different nodes. Each trial
        # lasts longer than a worker start, so the second does not simply wait for (and reuse) the
        # first one's worker.
        done = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0",
                         "--address", address, "--tracking-uri", uri, "--experiment", "cluster",
                         "--epochs", "20", "--set", "batch_size=8", "--set", "model=resnet18", env=auth)
        assert done.returncode == 0, done.stdout[-3000:]
        no_token = run_sweep(tmp_path, "--dataset", str(tiny), "--methods", "erm", "--trials", "1",
                             "--address", address, "--experiment", "cluster-no-token", *COMMON,
                             env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong"}, timeout=120)
        assert no_token.returncode != 0
    nodes = {r.data.tags["focustune.node_id"] for r in by_kind(runs_of(uri, "cluster"), "trial")}
    assert len(nodes) == 2
    usage = json.loads((tmp_path / "focustune_runs" / "cluster" / "sweep.json").read_text())["utilisation"]
    assert set(usage["nodes"]) == nodes and all(0 < u <= 1 for u in usage["nodes"].values())


def _trial_workers(driver: int) -> list[int]:
    """Ray worker processes started by our own driver that are running a trial."""
    return [pid for pid in family(driver) if command_line(pid).startswith("ray::ImplicitFunc")]


def test_trial_whose_worker_dies_resumes_from_its_checkpoint(tmp_path, tiny):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--dataset", str(tiny), "--methods", "erm", "--trials", "1", "--seeds", "0", "--tracking-uri", uri,
            "--experiment", "worker", "--epochs", "30", "--set", "batch_size=8", "--set", "model=resnet18"]
    log = tmp_path / "sweep.log"
    driver = start(sweep_command(*args), log, cwd=tmp_path)
    try:
        def progressed() -> bool:
            runs = by_kind(runs_of(uri, "worker"), "trial")
            return bool(runs) and len(client(uri).get_metric_history(runs[0].info.run_id, "train_loss")) >= 3

        assert wait_until(progressed, 300), log.read_text()[-3000:]
        workers = _trial_workers(driver.pid)
        assert workers, "no trial worker found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=400)
    finally:
        stop_group(driver)
    assert driver.returncode == 0, log.read_text()[-3000:]
    (run,) = by_kind(runs_of(uri, "worker"), "trial")
    assert run.info.status == "FINISHED"
    starts = [m.value for m in client(uri).get_metric_history(run.info.run_id, "start_epoch")]
    assert max(starts) >= 3  # the second attempt started from a checkpoint, not from epoch 0
    steps = sorted(m.step for m in client(uri).get_metric_history(run.info.run_id, "train_loss"))
    assert steps == list(range(1, 31))  # every epoch logged exactly once


@pytest.mark.parametrize("args, message", [
    (["--methods", "erm,magic"], "unknown method 'magic'"),
    (["--methods", "erm", "--trials", "0"], "--trials must be at least 1"),
    (["--methods", "erm", "--address", "127.0.0.1:1"], "no Ray cluster answers"),
    (["--methods", "erm", "--space", "erm=SPACE_EMPTY"], "empty range"),
    (["--methods", "erm", "--space", "erm=SPACE_BROKEN"], "not valid YAML"),
    (["--methods", "erm", "--set", "lr=-3"], "out of range"),
    (["--methods", "erm", "--tracking-uri", "http://127.0.0.1:1"], "no MLflow server answers"),
    (["--methods", "erm", "--datasets", "digits-lt,nosuch"], "unknown dataset 'nosuch'"),
    (["--methods", "erm", "--datasets", "digits-lt,digits-lt"], "named twice"),
    (["--methods", "erm", "--dataset", "digits-lt", "--datasets", "digits-lt"], "not both"),
    (["--methods", "erm", "--plan", "PLAN_UNKNOWN"], "unknown key(s) trails"),
    (["--methods", "erm", "--plan", "PLAN_BROKEN"], "not valid YAML"),
    (["--methods", "erm", "--warm-start", "nope"], "--warm-start nope"),
    (["--methods", "erm", "--pack", "0"], "--pack must be from 1 to 64"),
    (["--methods", "erm", "--pack", "2", "--set", "compile=true"], "--pack 2 with compile=true"),
])
def test_bad_input_is_refused_before_ray_starts(tmp_path, args, message, capsys, monkeypatch):
    from focustune.cli import main

    (tmp_path / "empty.yaml").write_text("method: erm\nspace:\n  lr: {type: loguniform, low: 0.1, high: 0.1}\n")
    (tmp_path / "broken.yaml").write_text("method: erm\nspace: [unclosed\n")
    (tmp_path / "plan_unknown.yaml").write_text("datasets: [digits-lt]\ntrails: 3\n")
    (tmp_path / "plan_broken.yaml").write_text("datasets: [digits-lt\n")
    files = {"SPACE_EMPTY": "empty.yaml", "SPACE_BROKEN": "broken.yaml", "PLAN_UNKNOWN": "plan_unknown.yaml",
             "PLAN_BROKEN": "plan_broken.yaml"}
    for placeholder, name in files.items():
        args = [a.replace(placeholder, str(tmp_path / name)) for a in args]
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *args, "--experiment", "bad"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "focustune_runs").exists()


def test_asha_stopped_packed_trials_are_pruned_in_optuna_and_their_pack_mates_train_on(tmp_path):
    """Packed trials (three per pack) under ASHA: each is its own Optuna trial and MLflow run."""
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_sweep(tmp_path, "--methods", "erm", "--trials", "6", "--epochs", "4", "--seeds", "0",
                     "--scheduler", "asha", "--max-concurrent", "3", "--pack", "3", "--set", "batch_size=8",
                     "--tracking-uri", uri, "--experiment", "asha")
    assert done.returncode == 0, done.stdout[-3000:]
    trials = by_kind(runs_of(uri, "asha"), "trial")
    stopped = [r for r in trials if r.data.tags["focustune.stopped_early"] == "true"]
    full = [r for r in trials if r.data.tags["focustune.stopped_early"] == "false"]
    assert len(trials) == 6 and stopped and full
    assert all(r.info.status == "KILLED" and "test_acc" not in r.data.metrics for r in stopped)
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in full)
    storage = f"sqlite:///{tmp_path / 'focustune_runs' / 'asha' / 'optuna.db'}"
    study = optuna.load_study(study_name="digits-lt/erm", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") == len(stopped) and states.count("COMPLETE") == len(full)
    # a member stopped by ASHA left its pack; a pack-mate trained all its epochs
    assert {r.data.tags["focustune.pack"] for r in stopped} & {r.data.tags["focustune.pack"] for r in full}
    sizes = [m.value for m in client(uri).get_metric_history(full[0].info.run_id, "pack_size")]
    assert len(sizes) == 4 and 1 <= min(sizes) <= max(sizes) <= 3


def test_tune_with_two_objectives_selects_from_the_front_by_the_rule_and_logs_the_front(tmp_path, tiny):
    import sys

    import yaml

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "focustune.cli", "tune", "--method", "erm", "--dataset", str(tiny),
               "--objectives", "balanced_acc,worst_class_recall", "--select", "balanced_acc | worst_class_recall>=0.3",
               "--trials", "4", "--epochs", "3", "--set", "batch_size=8", "--set", "lr=0.01", "--scheduler", "asha",
               "--max-concurrent", "2", "--tracking-uri", uri, "--experiment", "pareto", "--register", "pareto-erm"]
    proc = start(command, tmp_path / "tune.log", cwd=tmp_path)
    try:
        proc.wait(timeout=420)
    finally:
        stop_group(proc)
    out = (tmp_path / "tune.log").read_text()
    assert proc.returncode == 0, out[-3000:]
    record = json.loads((tmp_path / "focustune_runs" / "pareto" / "sweep.json").read_text())["studies"]["tiny/erm"]
    study = record["pareto"]
    points = {p["trial_id"]: p["values"] for p in study["points"]}
    front = [points[t] for t in study["front"]]
    assert front and study["chosen"] in study["front"]
    chosen = points[study["chosen"]]
    assert chosen["worst_class_recall"] >= 0.3
    assert chosen["balanced_acc"] == max(v["balanced_acc"] for v in front if v["worst_class_recall"] >= 0.3)
    parent = by_kind(runs_of(uri, "pareto"), "study")[0]
    assert parent.data.params["chosen_trial"] == study["chosen"]
    assert parent.data.params["selection_rule"] == "balanced_acc | worst_class_recall>=0.3"
    logged = {a.path for a in client(uri).list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/points.json", "pareto/front.md", "pareto/front.png"} <= logged
    source = yaml.safe_load((tmp_path / "best_config.yaml").read_text())["source"]  # recorded with the model
    assert source["selection_rule"] == "balanced_acc | worst_class_recall>=0.3"
    assert source["chosen_point"]["trial_id"] == study["chosen"] and record["model"]["registered"]["version"] == "1"
    from focustune_analysis import build_report, collect_runs

    report = build_report(collect_runs("pareto", uri), tmp_path / "report")  # compare's report shows the front
    assert "Pareto fronts" in report.headings and any("pareto_tiny_erm" in f.name for f in report.files)
