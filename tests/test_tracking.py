"""The MLflow callback's error handling: only transport errors are an outage to wait out."""

from __future__ import annotations

import logging

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from sqlalchemy.exc import OperationalError

from focustune.tracking.trial_runs import TrialRuns
from focustune.tracking.operations import EndRun, LogEpoch, is_transport_error


def wrapped(cause: Exception, explicit: bool) -> MlflowException:
    """An MLflow error around ``cause``, chained the two ways MLflow's client does it."""
    try:
        try:
            raise cause
        except Exception as exc:
            if explicit:
                raise MlflowException(f"API request failed: {exc}") from exc
            raise MlflowException(f"API request failed with exception {exc}")  # noqa: B904 (implicit chain)
    except MlflowException as outer:
        return outer


@pytest.mark.parametrize("error, outage", [
    (wrapped(requests.exceptions.ConnectionError("refused"), explicit=False), True),
    (wrapped(requests.exceptions.Timeout("slow"), explicit=True), True),
    (wrapped(OperationalError("INSERT", {}, Exception("database is locked")), explicit=True), True),
    (MlflowException("temporarily unavailable", error_code=TEMPORARILY_UNAVAILABLE), True),
    (MlflowException("Invalid value for param", error_code=INVALID_PARAMETER_VALUE), False),
    (KeyError("t7"), False),
    (ValueError("bad metric"), False),
])
def test_transport_errors_are_told_apart_from_the_rest(error, outage):
    assert is_transport_error(error) is outage


def epoch(trial_id: str) -> LogEpoch:
    return LogEpoch(trial_id, {"train_loss": 1.0}, 1)


def end(trial_id: str) -> EndRun:
    return EndRun(trial_id, "FINISHED", {}, {}, {})


def callback(apply) -> TrialRuns:
    tracking = TrialRuns("sqlite:///unused.db", "0", {}, {"sweep_id": "s"}, params_for=dict)
    tracking._apply = apply
    return tracking


def test_an_error_that_is_not_an_outage_fails_only_its_own_operation(caplog):
    sent = []

    def apply(op):
        if op.kind == "end":
            raise MlflowException("Invalid value for param", error_code=INVALID_PARAMETER_VALUE)
        sent.append(op)

    tracking = callback(apply)
    tracking.queue = [epoch("t1"), end("t2"), epoch("t3")]
    with caplog.at_level(logging.ERROR):
        assert tracking.flush()  # the queue drains: nothing waits behind the failed operation
    assert sent == [epoch("t1"), epoch("t3")]
    assert [f[:2] for f in tracking.failed] == [("end", "t2")] and "Invalid value" in tracking.failed[0][2]
    assert "not an outage" in caplog.text and tracking._down_since is None
    assert tracking.get_state()["failed"] == tracking.failed  # kept across a driver restart


def test_an_outage_keeps_every_operation_queued_in_order(caplog):
    down = {"now": True}
    sent = []

    def apply(op):
        if down["now"]:
            raise wrapped(requests.exceptions.ConnectionError("refused"), explicit=False)
        sent.append(op)

    tracking = callback(apply)
    tracking.retry_interval_s = 0.0
    tracking.queue = [epoch("t1"), epoch("t2")]
    with caplog.at_level(logging.WARNING):
        assert not tracking.flush()
    assert tracking.queue == [epoch("t1"), epoch("t2")] and not tracking.failed
    assert "unreachable" in caplog.text
    down["now"] = False
    assert tracking.flush() and sent == [epoch("t1"), epoch("t2")]


def test_a_snapshot_sends_what_is_queued_so_a_restore_sends_nothing_twice():
    sent = []
    tracking = callback(sent.append)
    tracking.queue = [epoch("t1"), end("t1")]
    assert tracking.get_state()["queue"] == [] and sent == [epoch("t1"), end("t1")]

    def refused(op):
        raise wrapped(requests.exceptions.ConnectionError("refused"), explicit=False)

    down = callback(refused)
    down.queue = [epoch("t2")]
    down.flush()  # MLflow goes down
    assert down.get_state()["queue"] == [epoch("t2")]  # held back by the outage: kept for the restore


def test_queued_operations_and_the_callback_pickle_with_the_experiment_and_restore_in_order():
    import pickle

    def refused(op):
        raise wrapped(requests.exceptions.ConnectionError("refused"), explicit=False)

    down = callback(refused)
    down.queue = [epoch("t1"), end("t1")]
    down.flush()  # held back by the outage
    down.runs["t1"] = "run-1"
    state = pickle.loads(pickle.dumps(down.get_state()))
    fresh = TrialRuns("sqlite:///unused.db", "0", {}, {"sweep_id": "s"}, params_for=dict)
    restored = pickle.loads(pickle.dumps(fresh))  # the callback itself travels in Tune's experiment state
    restored.queue = [epoch("t2")]  # queued after the restore, before the snapshot is put back
    restored.set_state(state)
    assert restored.queue == [epoch("t1"), end("t1"), epoch("t2")] and restored.runs == {"t1": "run-1"}


def test_a_methods_images_reach_mlflow_as_image_artifacts_at_their_paths(tmp_path, tiny_dataset):
    """mdgan's GAN sample grids: ``Method.images`` -> the trial's result -> PNG artifacts of its run."""
    from PIL import Image

    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.records import TrialReport
    from focustune.sweeps.trainable import with_final
    from focustune.training import Trainer

    mdgan = get_method("mdgan")
    config, params = resolve(mdgan, {"epochs": 2, "finetune_epochs": 1, "gan_steps": 2, "amp": False})
    trainer = Trainer(mdgan(params), config, tiny_dataset, seed=0)
    trainer.fit()
    grids = trainer.method.images()
    assert grids and all(path.startswith("gan/samples_class_") and path.endswith(".png") for path in grids)

    client, run_id, tracking = _one_trial_run(tmp_path, "images")
    last = TrialReport(epoch=trainer.epoch, total_epochs=trainer.total_epochs, objective=0.0, busy_since=0.0,
                       busy_until=0.0)
    tracking._apply(EndRun("t1", "FINISHED", {}, {}, dict(with_final(last, trainer).artifacts or {})))
    for path, grid in grids.items():
        image = Image.open(client.download_artifacts(run_id, path, str(tmp_path / "down")))
        assert image.size == (grid.shape[2], grid.shape[1])


def _one_trial_run(tmp_path, experiment_name: str):
    """A client of a fresh sqlite store, a run in a new experiment, and the sweep's writer knowing
    that run as trial ``t1``'s."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(experiment_name, artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    tracking = TrialRuns(uri, experiment, {}, {"sweep_id": "s"}, params_for=dict)
    tracking.runs["t1"] = run_id
    return client, run_id, tracking


def test_a_trials_run_gets_per_class_metrics_by_name_and_its_calibration(tmp_path, tiny_dataset):
    """The trainable's reports, through Tune's flat result, into the trial's run: ``val_recall/<class>`` per
    epoch; ``test_recall/<class>``, the calibrated test metrics, ``calibration.json`` and the reliability
    diagram at the end."""
    import json
    from pathlib import Path


    from focustune.config import resolve
    from focustune.methods import get_method
    from focustune.records import TrialReport
    from focustune.sweeps.trainable import epoch_report, with_final
    from focustune.training import Trainer

    reports: list[TrialReport] = []
    erm = get_method("erm")
    config, params = resolve(erm, {"epochs": 2, "batch_size": 16})
    trainer = Trainer(erm(params), config, tiny_dataset, seed=0, callback=lambda t, record: reports.append(
        epoch_report(t, record, busy_since=0.0, busy_until=0.0)))
    result = trainer.fit()
    reports[-1] = with_final(reports[-1], trainer)

    client, run_id, tracking = _one_trial_run(tmp_path, "classes")
    for report in reports:
        tracking.epoch_reported("t1", report.to_result())
    tracking.trial_completed("t1", reports[-1].to_result())
    assert tracking.flush(wait_s=30)

    metrics = client.get_run(run_id).data.metrics
    assert [m.step for m in client.get_metric_history(run_id, "val_recall/c2")] == [1, 2]
    assert metrics["test_recall/c1"] == result.test["per_class_recall"][1]
    assert metrics["test_precision/c0"] == result.test["per_class_precision"][0]
    assert metrics["test_nll_calibrated"] == result.calibration["after"]["nll"]
    assert metrics["temperature"] == result.calibration["temperature"]
    assert [metrics[f"train_count/c{i}"] for i in range(3)] == result.data["train_class_counts"] == [40, 12, 6]
    assert {"val_ece", "best_val_brier", "test_ece", "test_ece_calibrated", "test_brier_calibrated"} <= set(metrics)
    stored = json.loads(Path(client.download_artifacts(run_id, "calibration.json", str(tmp_path))).read_text())
    assert stored == json.loads(json.dumps(result.calibration))
    from PIL import Image

    assert Image.open(client.download_artifacts(run_id, "reliability_diagram.png", str(tmp_path))).format == "PNG"
