"""What the MLflow UI shows of a sweep (no Ray): the experiment's view and description, dataset
inputs, study-run descriptions and figures, system metrics, and `focustune ui`'s checks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import time

import pytest
import torch

from conftest import make_dataset
from focustune.cli import main
from focustune.errors import ConfigError
from focustune.tracking import ui
from focustune.sweeps.plan import sweep_spec
from focustune.sweeps.spec import DatasetSpec, SweepSpec
from focustune.sweeps.state import SweepState
from focustune.records import KIND_KEY, SEED_KEY, STUDY_KEY
from focustune.sweeps.trainable import ResourceUse
from focustune.records import RerunRow, StudyRecord
from focustune.tracking.workbench import dataset_record, study_description
from focustune.tracking_schema import (ui_hint, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING, KIND_RERUN, NOTE_TAG,
                                       TRIAL_CPU_CORES, TRIAL_CPU_PERCENT, TRIAL_MEMORY_MB, source_tags)


def test_dataset_record_identifies_the_data_and_profiles_its_splits(tiny_dataset, tmp_path):
    record = dataset_record("tiny", tiny_dataset)
    assert record["name"] == "tiny" and len(record["digest"]) == 8
    assert dataset_record("tiny", make_dataset())["digest"] == record["digest"]  # same data, same digest
    labels = tiny_dataset.train.labels.clone()
    labels[0] = (labels[0] + 1) % 3
    changed = dataclasses.replace(tiny_dataset, train=dataclasses.replace(tiny_dataset.train, labels=labels))
    assert dataset_record("tiny", changed)["digest"] != record["digest"]
    profile = json.loads(record["profile"])
    assert profile["sizes"] == {"train": 58, "val": 30, "test": 30}
    assert profile["class_counts"]["train"] == [40, 12, 6] and profile["class_counts"]["test"] == [10, 10, 10]
    assert record["source_type"] == "external"  # generated in memory: no file to point at
    (tmp_path / "data.npz").write_bytes(b"")
    on_disk = dataset_record("mine", dataclasses.replace(tiny_dataset, source=str(tmp_path / "data.npz")))
    assert on_disk["source_type"] == "local" and str(tmp_path / "data.npz") in on_disk["source"]


STUDY = StudyRecord(finished=3, total=4, stopped_early=1, failed=0, best_objective=0.81234,
                    best_config={"lr": 0.0012345678, "batch_size": 16, "epochs": 5, "gamma": 2.0},
                    reruns=[RerunRow(1, True, {"test_balanced_acc": 0.7, "test_auc": 0.9}),
                            RerunRow(2, True, {"test_balanced_acc": 0.8, "test_auc": 0.9}), RerunRow(3, False)])


def test_study_description_gives_counts_best_configuration_and_mean_se_of_the_reruns():
    text = study_description("tiny/focal", STUDY, {"batch_size": 16}, "balanced_acc")
    assert "**focal** on **tiny**: 3 of 4 search trials finished their budget, 1 stopped early, 0 failed." in text
    assert "by validation balanced_acc, 0.8123; never test): `lr=0.001235`, `gamma=2`." in text
    assert "batch_size" not in text and "epochs=" not in text  # fixed for every trial: not a finding
    assert "(n=2 of 3), test mean ± SE: balanced_acc 0.750 ± 0.050; auc 0.900 ± 0.000." in text


def test_study_description_of_a_study_without_a_finished_trial():
    text = study_description("tiny/erm", StudyRecord(finished=0, total=2, failed=2), {}, "auc")
    assert "0 of 2 search trials" in text and "2 failed" in text and "no best configuration" in text


def _finished_study(tmp_path, dataset) -> tuple[SweepSpec, str, str]:
    """A study with one seed re-run, logged through the sweep's own tracking classes (Ray not started)."""
    from focustune.tracking.operations import EndRun, LogEpoch, StartRun
    from focustune.tracking.study_runs import StudyTracking

    spec = SweepSpec(datasets=[DatasetSpec(dataset="tiny")], methods=["erm"], epochs=2, experiment="wb",
                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=str(tmp_path / "runs"))
    state = SweepState(str(tmp_path / "sweep.json"), {"sweep_id": "s1", "studies": {}})
    tracking = StudyTracking(spec, state)
    tracking.use_datasets({"tiny": dataset})
    parent = tracking.parent_run("tiny/erm", dataset.summary())
    callback = tracking.trial_runs({"tiny/erm": parent}, params_for=lambda config: {"lr": 0.001, "seed": 1})
    for op in (StartRun("t1", {STUDY_KEY: "tiny/erm", KIND_KEY: KIND_RERUN, SEED_KEY: 1}),
               *(LogEpoch("t1", {"val_balanced_acc": 0.5 + 0.1 * e, "train_loss": 1.0 / e, "objective": 0.6}, e)
                 for e in (1, 2)),
               EndRun("t1", "FINISHED", {"stopped_early": "false"},
                      {"test_balanced_acc": 0.7, "test_recall_class_0": 0.9, "test_recall_class_1": 0.5,
                       "best_val_balanced_acc": 0.7}, {})):
        callback._apply(op)
    state.studies["tiny/erm"] = dataclasses.replace(
        state.study("tiny/erm"), finished=1, total=1, best_objective=0.7, best_config={"lr": 0.001},
        reruns=[RerunRow(1, True, {"test_balanced_acc": 0.7})])
    tracking.close_parent(parent, state.study("tiny/erm"), {})
    tracking.log_study_views({"tiny/erm": parent})
    return spec, parent, callback.runs["t1"]


def test_the_experiment_and_a_study_run_carry_what_the_ui_shows(tmp_path, tiny_dataset, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # the store's default artifact folder, ./mlruns
    spec, parent, child = _finished_study(tmp_path, tiny_dataset)
    client = MlflowClient(tracking_uri=spec.tracking)
    experiment = client.get_experiment_by_name("wb")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND_TRAINING
    assert "focustune sweep of erm on tiny" in experiment.tags[NOTE_TAG]
    digest = dataset_record("tiny", tiny_dataset)["digest"]
    for run_id in (parent, child):
        run = client.get_run(run_id)
        (used,) = run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == ("tiny", digest)
        assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "training"}
        assert all(run.data.tags[k] == v for k, v in source_tags("sweep").items())
    note = client.get_run(parent).data.tags[NOTE_TAG]
    assert "1 of 1 search trials" in note and "`lr=0.001`" in note and "balanced_acc 0.700" in note
    assert {a.path for a in client.list_artifacts(parent)} == {"figures", "study.json"}
    assert {a.path for a in client.list_artifacts(parent, "figures")} == {
        "figures/validation_curves.png", "figures/per_class_recall.png"}  # no search trials: no search figure


def test_resource_use_reports_the_trials_cpu_time_per_wall_second():
    use = ResourceUse(cpus=2, cuda=False)
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() < wall + 0.3:  # one busy thread (the machine may be busy too)
        torch.ones(64, 64).sum()
    sample = use.sample()
    expected = (time.process_time() - cpu) / (time.monotonic() - wall)
    assert sample[TRIAL_CPU_CORES] == pytest.approx(expected, rel=0.2) and sample[TRIAL_CPU_CORES] > 0.05
    assert sample[TRIAL_CPU_PERCENT] == pytest.approx(50 * sample[TRIAL_CPU_CORES])
    assert sample[TRIAL_MEMORY_MB] > 10


def test_system_metrics_come_from_the_command_line_or_the_plan(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("methods: [erm]\nsystem_metrics: true\n")
    names = ["dataset", "datasets", "methods", "trials", "set", "space"]
    args = lambda **given: argparse.Namespace(**{**{n: None for n in names}, "resume": False, **given})  # noqa: E731
    defaults = {"datasets": ["digits-lt"], "trials": 2}
    assert sweep_spec(args(plan=str(plan)), defaults).system_metrics is True
    assert sweep_spec(args(plan=None, methods="erm"), defaults).system_metrics is False
    assert sweep_spec(args(plan=None, methods="erm", system_metrics=True), defaults).system_metrics is True


def test_ui_refuses_a_missing_store_a_server_and_a_taken_port(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2 and "no MLflow database at" in capsys.readouterr().err
    (tmp_path / "mlflow.db").write_bytes(b"")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2  # a server answers there
        assert "serves the UI itself" in capsys.readouterr().err
        assert main(["ui", "--port", str(port)]) == 2 and "already in use" in capsys.readouterr().err
        with pytest.raises(ConfigError, match=r"1\.\.65535"):
            ui.choose_port("127.0.0.1", 0)


def test_ui_hint_names_the_store_unless_it_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui_hint(f"sqlite:///{tmp_path / 'mlflow.db'}") == "focustune ui"
    assert ui_hint("sqlite:////data/m.db") == "focustune ui --tracking-uri sqlite:////data/m.db"
    assert ui_hint("http://h:5000") == "open http://h:5000 in a browser"
