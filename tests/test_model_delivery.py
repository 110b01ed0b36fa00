"""From tuning to a model: configuration files for `train --config`, model bundles with a calibrated
binary threshold, MLflow models with the champion rule, and `focustune predict`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, make_dataset
from focustune.records import StudyRecord
from focustune.cli import main
from focustune.config import flat_params, resolve
from focustune.errors import DataError
from focustune.inference import CARD_FILE, NORMALISATION, load_bundle, make_bundle, rgb_to_grey, to_model_input
from focustune.methods import get_method
from focustune.operating_points import calibrate_threshold
from focustune.run_config import RunConfig, read_run_config
from focustune.training import Trainer, normalise
from servers import tiny_npz


def binary_npz(path: Path, channels: int = 1) -> Path:
    """A learnable two-class MedMNIST-layout file (imbalanced 40/10), 12 px, grey or RGB."""
    data = make_dataset((40, 10), eval_per_class=10, channels=channels)
    arrays = {}
    for split in ("train", "val", "test"):
        part = data.split(split)
        images = part.images.numpy().transpose(0, 2, 3, 1)
        arrays[f"{split}_images"] = images[..., 0] if channels == 1 else images
        arrays[f"{split}_labels"] = part.labels.numpy()[:, None]
    np.savez(path, class_names=np.array(["benign", "malignant"]), **arrays)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- configuration files

def test_configuration_file_round_trips_into_train(tmp_path, capsys):
    data = tiny_npz(tmp_path / "tiny.npz")
    config, params = resolve(get_method("focal"), {"gamma": 1.0, "lr": 2e-3, "epochs": 2, "batch_size": 16})
    RunConfig(method="focal", dataset=str(data), params=flat_params(config, params), seed=3, data_seed=1).write(
        tmp_path / "best.yaml")
    assert main(["train", "--config", str(tmp_path / "best.yaml"), "--output-json", str(tmp_path / "a.json"),
                 "--quiet"]) == 0
    run = __import__("json").loads((tmp_path / "a.json").read_text())
    assert (run["method"], run["dataset"], run["seed"], run["epochs"]) == ("focal", "tiny", 3, 2)
    assert run["params"] == flat_params(config, params)

    # explicit options win over the file: --set, --epochs, --seed
    assert main(["train", "--config", str(tmp_path / "best.yaml"), "--set", "lr=5e-3", "--epochs", "1",
                 "--seed", "0", "--output-json", str(tmp_path / "b.json"), "--quiet"]) == 0
    run = __import__("json").loads((tmp_path / "b.json").read_text())
    assert (run["params"]["lr"], run["params"]["gamma"], run["epochs"], run["seed"]) == (5e-3, 1.0, 1, 0)
    capsys.readouterr()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("method: [erm\n", "not valid YAML"),
    ("- erm\n", "expected a mapping"),
    ("method: erm\ndataset: digits-lt\nparams: {}\ncolour: red\n", "unknown key(s) colour"),
    ("method: erm\nparams: {}\n", "missing dataset"),
    ("method: erm\ndataset: digits-lt\nparams: {lr: -1}\n", "lr=-1"),
    ("method: erm\ndataset: digits-lt\nparams: {gamma: 2}\n", "unknown hyperparameter"),
    ("method: erm\ndataset: digits-lt\nparams: {}\nseed: one\n", "seed must be an integer"),
    ("method: focal\ndataset: digits-lt\nparams: {}\n", "configures method focal, not erm"),
])
def test_bad_configuration_files_are_refused(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    code = main(["train", "--config", str(path), "--method", "erm", "--output-json", str(tmp_path / "run.json")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run.json").exists()


def test_configuration_file_keeps_every_dataset_option(tmp_path):
    config = RunConfig(method="erm", dataset="breastmnist", params={"lr": 0.001}, data_dir="/data", size=64,
                       imbalance="exp:5", data_seed=2, seed=1, source={"study": "breastmnist/erm"})
    assert read_run_config(config.write(tmp_path / "c.yaml")) == config
    assert (tmp_path / "c.yaml").read_text().startswith("# focustune run configuration")


# ---------------------------------------------------------------- bundles, thresholds, conversion

def test_threshold_maximises_validation_balanced_accuracy():
    labels = np.array([0] * 8 + [1] * 2)
    probs = np.array([0.05, 0.1, 0.1, 0.12, 0.02, 0.08, 0.11, 0.3, 0.35, 0.4])  # positives never reach 0.5
    threshold, score = calibrate_threshold(probs, labels, "balanced_acc")
    assert 0.3 < threshold < 0.35 and score == 1.0
    assert calibrate_threshold(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1]), "balanced_acc")[0] == 0.5


def test_binary_bundle_calibrates_its_threshold_and_predicts_with_it(tmp_path):
    data = make_dataset((40, 6), eval_per_class=10)
    config, params = resolve(get_method("erm"), {"epochs": 2, "batch_size": 16})
    trainer = Trainer(get_method("erm")(params), config, data, seed=0)
    result = trainer.fit()
    run_config = {"method": "erm", "dataset": "tiny", "params": flat_params(config, params)}
    card = make_bundle(tmp_path / "b", trainer.best_state, run_config, data, result.val)
    assert card.threshold is not None and card.threshold_metric == "balanced_acc"
    expected = (1, 12, ["c0", "c1"], NORMALISATION)
    assert (card.channels, card.image_size, card.class_names, card.normalisation) == expected
    predictor = load_bundle(tmp_path / "b")
    probs = predictor.probabilities(data.val.images)
    trainer_probs = torch.softmax(trainer.predict_logits(data.val.images) / card.temperature, dim=1)
    np.testing.assert_allclose(probs, trainer_probs.numpy(), atol=2e-2)  # trainer: maybe bf16
    decided = predictor.decide(probs)
    assert (decided == (probs[:, 1] >= card.threshold)).all()
    recall = [(decided[data.val.labels.numpy() == c] == c).mean() for c in (0, 1)]
    assert np.mean(recall) == pytest.approx(card.threshold_val_score)
    assert card.threshold_val_score >= result.val["balanced_acc"]


def test_multi_class_bundle_has_no_threshold(tmp_path, tiny_dataset):
    config, params = resolve(get_method("erm"), {"epochs": 1})
    run_config = {"method": "erm", "dataset": "tiny", "params": flat_params(config, params)}
    model_state = Trainer(get_method("erm")(params), config, tiny_dataset).model.state_dict()
    card = make_bundle(tmp_path, model_state, run_config, tiny_dataset, {"balanced_acc": 0.5})
    assert card.threshold is None and (tmp_path / CARD_FILE).is_file()


def _trained(data, overrides: dict | None = None) -> tuple[dict, dict, Trainer]:
    config, params = resolve(get_method("erm"), {"epochs": 3, "batch_size": 16, **(overrides or {})})
    trainer = Trainer(get_method("erm")(params), config, data, seed=0)
    trainer.fit()
    return trainer.best_state, {"method": "erm", "dataset": "tiny", "params": flat_params(config, params)}, trainer


def test_a_bundle_fits_temperature_and_offsets_on_validation_and_predicts_with_both(tmp_path):
    import dataclasses

    data = make_dataset((40, 12, 6), eval_per_class=10)
    state, run_config, _ = _trained(data, {"operating_point": "balanced_acc | recall[c2]>=0.9"})
    card = make_bundle(tmp_path / "a", state, run_config, data, {"balanced_acc": 0.5})
    # the test split never enters the fit: another test split, the same card
    other_test = make_dataset((40, 12, 6), eval_per_class=7, seed=5).test
    same = make_bundle(tmp_path / "b", state, run_config, dataclasses.replace(data, test=other_test), {})
    assert (same.temperature, same.offsets, same.operating_val) == (card.temperature, card.offsets, card.operating_val)
    # ... while another validation split changes it
    moved = make_bundle(tmp_path / "c", state, run_config, dataclasses.replace(data, val=other_test), {})
    assert (moved.temperature, moved.offsets) != (card.temperature, card.offsets)

    predictor = load_bundle(tmp_path / "a")
    assert predictor.card == card and card.operating_point == "balanced_acc | recall[c2]>=0.9"
    logits = predictor.logits(data.val.images)
    probs = predictor.probabilities(data.val.images)
    np.testing.assert_allclose(probs, torch.softmax(logits / card.temperature, dim=1).numpy(), rtol=1e-6)
    decided = predictor.decide(probs)
    assert (decided == (np.log(probs) + np.array(card.offsets)).argmax(axis=1)).all()
    labels = data.val.labels.numpy()
    recall = (decided[labels == 2] == 2).mean()
    assert recall == pytest.approx(card.operating_val["recall[c2]"]) and recall >= 0.9
    assert (probs.argmax(axis=1)[labels == 2] == 2).mean() < 0.9  # the argmax alone misses it: the offsets act
    assert "per-class logit offsets" in card.describe() and "recall[c2]>=0.9" in card.describe()


def test_predict_applies_the_stored_temperature_and_offsets(tmp_path, capsys):
    import json

    data = make_dataset((40, 12, 6), eval_per_class=10)
    state, run_config, _ = _trained(data)
    make_bundle(tmp_path / "model", state, run_config, data, {})
    card_file = tmp_path / "model" / CARD_FILE
    card = json.loads(card_file.read_text())
    np.savez(tmp_path / "new.npz", images=data.test.images[:, 0].numpy())

    def predicted(temperature: float, offsets: list[float] | None) -> tuple[np.ndarray, list[str]]:
        card_file.write_text(json.dumps({**card, "temperature": temperature, "offsets": offsets}))
        assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "new.npz"),
                     "--output", str(tmp_path / "p.csv"), "--overwrite"]) == 0
        rows = read_csv(tmp_path / "p.csv")
        return np.array([[float(r[f"prob_c{i}"]) for i in range(3)] for r in rows]), [r["class"] for r in rows]

    plain, plain_classes = predicted(1.0, None)
    hot, hot_classes = predicted(3.0, None)
    expected = torch.softmax(torch.log(torch.tensor(plain, dtype=torch.float64)) / 3.0, dim=1).numpy()
    np.testing.assert_allclose(hot, expected, atol=2e-5)  # the CSV's 6 decimals
    assert np.abs(hot - plain).max() > 0.05 and hot_classes == plain_classes  # argmax unchanged
    shifted, shifted_classes = predicted(3.0, [0.0, 0.0, 50.0])
    assert shifted_classes == ["c2"] * len(plain) and np.array_equal(shifted, hot)  # offsets move decisions only
    capsys.readouterr()


def test_a_model_saved_with_a_binary_threshold_decides_as_before(tmp_path):
    import json

    data = make_dataset((40, 6), eval_per_class=10)
    state, run_config, _ = _trained(data)
    make_bundle(tmp_path, state, run_config, data, {})
    card = json.loads((tmp_path / CARD_FILE).read_text())
    for key in ("temperature", "offsets", "operating_point", "operating_val"):
        card.pop(key)
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "threshold": 0.3, "threshold_metric": "balanced_acc",
                                                  "threshold_val_score": 0.8}))
    predictor = load_bundle(tmp_path)
    probs = predictor.probabilities(data.val.images)
    assert predictor.card.temperature == 1.0 and predictor.card.threshold == pytest.approx(0.3)
    assert (predictor.decide(probs) == (probs[:, 1] >= 0.3)).all()
    assert predictor.card.threshold_val_score == 0.8 and "decision threshold 0.3000" in predictor.card.describe()


def test_normalisation_matches_the_trainer():
    images = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    mine = (images.float() / NORMALISATION["scale"] - NORMALISATION["mean"]) / NORMALISATION["std"]
    torch.testing.assert_close(mine, normalise(images))


def test_images_are_converted_as_training_converts_them():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    pil_grey = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    np.testing.assert_array_equal(rgb_to_grey(rgb)[..., 0], pil_grey)
    resized = to_model_input(rgb, channels=1, size=12)
    expected = np.stack([np.asarray(Image.fromarray(g).resize((12, 12), Image.Resampling.BILINEAR)) for g in pil_grey])
    np.testing.assert_array_equal(resized[:, 0].numpy(), expected)
    as_rgb = to_model_input(rgb[:, :7, :, 0], channels=3, size=7)  # grey -> RGB: the channel repeated
    assert as_rgb.shape == (3, 3, 7, 7) and (as_rgb[:, 0] == as_rgb[:, 2]).all()
    for bad, message in ((rgb.astype(np.float32), "uint8"), (np.zeros((2, 9, 9, 4), np.uint8), "(2, 9, 9, 4)"),
                         (np.zeros((2, 3, 9, 9), np.uint8), "channels last")):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            to_model_input(bad, channels=1, size=9)


def test_several_studies_get_their_own_names_and_files(tmp_path):
    from focustune.sweeps.delivery import config_locations, registered_name
    from focustune.sweeps.spec import DatasetSpec, SweepSpec

    spec = SweepSpec(datasets=[DatasetSpec(dataset="a"), DatasetSpec(dataset="b")], methods=["erm"],
                     storage=str(tmp_path), experiment="x", config_out="out/best.yaml")
    assert registered_name("m", "data/set/erm", several=True) == "m-data-set-erm"
    assert registered_name("m", "a/erm", several=False) == "m"
    assert config_locations(spec, "a/erm", several=True) == [f"{tmp_path}/x/configs/a__erm.yaml",
                                                              "out/best__a__erm.yaml"]
    assert config_locations(spec, "a/erm", several=False)[1] == "out/best.yaml"


# ---------------------------------------------------------------- MLflow models, the registry, predict

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder: its ./mlflow.db is the default tracking store."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_logs_a_model_that_predicts_npz_files_and_image_folders(workdir, capsys):
    data = binary_npz(workdir / "mine.npz")
    assert main(["train", "--dataset", str(data), "--epochs", "2", "--set", "batch_size=16", "--quiet",
                 "--register", "mine"]) == 0
    out = capsys.readouterr().out
    assert "registered mine version 1" in out and "champion -> version 1" in out and "decision threshold" in out
    _check_calibration_and_class_metrics(workdir, ["benign", "malignant"])

    assert main(["predict", "--model", "models:/mine@champion", "--input", str(data), "--output", "p.csv"]) == 0
    rows = read_csv(workdir / "p.csv")
    assert len(rows) == 20 and list(rows[0]) == ["input", "class", "prob_benign", "prob_malignant"]
    assert [r["input"] for r in rows] == [str(i) for i in range(20)]  # test_images, by index
    assert {r["class"] for r in rows} <= {"benign", "malignant"}
    assert all(abs(float(r["prob_benign"]) + float(r["prob_malignant"]) - 1) < 1e-4 for r in rows)

    folder = workdir / "new_images" / "sub"
    folder.mkdir(parents=True)
    test_images = np.load(data)["test_images"]
    Image.fromarray(test_images[0]).save(folder / "grey.png")
    Image.fromarray(np.repeat(test_images[1][..., None], 3, axis=2)).resize((30, 30)).save(folder / "colour.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    assert main(["predict", "--model", "models:/mine/1", "--input", str(workdir / "new_images"),
                 "--output", "folder.csv"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable file(s)" in captured.err and "broken.png" in captured.err
    rows = read_csv(workdir / "folder.csv")
    assert [Path(r["input"]).name for r in rows] == ["colour.jpg", "grey.png"]
    npz_rows = read_csv(workdir / "p.csv")
    assert rows[1]["prob_benign"] == npz_rows[0]["prob_benign"]  # the same image from a PNG or the .npz


def _check_calibration_and_class_metrics(workdir: Path, classes: list[str]) -> None:
    """The store's one train run has per-class metrics by class name (per epoch on val), the calibrated
    test metrics and temperature, ``calibration.json`` and the reliability diagram."""
    import json

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("focustune").experiment_id])
    metrics = run.data.metrics
    for name in classes:
        assert {f"test_recall/{name}", f"test_precision/{name}", f"best_val_recall/{name}"} <= set(metrics)
    assert len(client.get_metric_history(run.info.run_id, f"val_precision/{classes[1]}")) == 2  # both epochs
    assert {"val_ece", "val_brier", "val_nll", "test_ece", "test_ece_calibrated", "test_brier_calibrated",
            "test_nll_calibrated", "temperature"} <= set(metrics)
    calibration = json.loads(Path(client.download_artifacts(run.info.run_id, "calibration.json",
                                                            str(workdir))).read_text())
    assert calibration["bins"] == 15 and calibration["temperature"] == pytest.approx(metrics["temperature"])
    assert calibration["before"]["nll"] == pytest.approx(metrics["test_nll"])
    assert calibration["after"]["nll"] == pytest.approx(metrics["test_nll_calibrated"])
    for part in ("before", "after"):
        assert {"ece", "brier", "nll", "confidence", "accuracy", "count"} == set(calibration[part])
        assert len(calibration[part]["count"]) == 15 and sum(calibration[part]["count"]) == 20
    image = Image.open(client.download_artifacts(run.info.run_id, "reliability_diagram.png", str(workdir)))
    assert image.format == "PNG"


def test_model_loads_with_plain_mlflow_without_ray_or_optuna(workdir, capsys):
    data = binary_npz(workdir / "rgb.npz", channels=3)
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--quiet", "--register", "rgb"]) == 0
    code = ("import sys, numpy as np, mlflow\n"
            f"mlflow.set_tracking_uri('sqlite:///{workdir / 'mlflow.db'}')\n"
            "model = mlflow.pyfunc.load_model('models:/rgb@champion')\n"
            "images = np.random.default_rng(0).integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)\n"
            "out = model.predict(images)\n"
            "print(out.to_json(orient='records'))\n"
            "print(list(out.columns), len(out))\n"
            "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=workdir,
                          env={**__import__("os").environ, "PYTHONPATH": f"{REPO / 'platform'}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["['class', 'prob_benign', 'prob_malignant'] 5", "[]"]
    # the pyfunc model applies the temperature and the operating point, as `focustune predict` does
    import json

    from focustune.inference import bundle_folder
    from focustune.tracking.model_package import download_model

    predictor = load_bundle(bundle_folder(download_model("models:/rgb@champion", f"sqlite:///{workdir / 'mlflow.db'}",
                                                         workdir / "download")))
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    classes, probs = predictor.predict_array(images)
    served = json.loads(done.stdout.splitlines()[-3])
    assert predictor.card.temperature != 1.0 and predictor.card.offsets is not None
    assert [row["class"] for row in served] == [predictor.card.class_names[c] for c in classes]
    np.testing.assert_allclose([[row["prob_benign"], row["prob_malignant"]] for row in served], probs, rtol=1e-5)


def test_champion_alias_moves_only_to_a_better_model(workdir):
    from focustune.tracking.model_package import log_run_model

    data = make_dataset((20, 10), eval_per_class=5)
    config, params = resolve(get_method("erm"), {"epochs": 1})
    run_config = {"method": "erm", "dataset": "tiny", "params": flat_params(config, params)}
    state = Trainer(get_method("erm")(params), config, data).model.state_dict()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("alias")
    moves = []
    for score in (0.6, 0.5, 0.6, 0.7):
        with mlflow.start_run() as run:
            logged = log_run_model(uri, run.info.run_id, state, run_config, data, {"balanced_acc": score}, "alias")
        moves.append((logged["registered"]["version"], logged["registered"]["champion"], logged["registered"]["moved"]))
    assert moves == [("1", "1", True), ("2", "1", False), ("3", "1", False), ("4", "4", True)]
    with mlflow.start_run() as worse:
        assert "stays" in log_run_model(uri, worse.info.run_id, state, run_config, data, {"balanced_acc": 0.1},
                                        "alias")["registered"]["message"]


def test_a_hand_over_interrupted_before_sweep_json_is_saved_logs_and_registers_nothing_twice(workdir):
    """A driver that dies after logging and registering a study's model but before saving ``sweep.json``:
    ``--resume`` delivers again and reuses that model and its version (it used to log and register
    a second one)."""
    from mlflow import MlflowClient

    from focustune.sweeps.delivery import deliver_models
    from focustune.sweeps.spec import DatasetSpec, SweepSpec
    from focustune.records import SelectedRun
    from focustune.sweeps.state import SweepState
    from focustune.training import CHECKPOINT_FILE

    data = make_dataset((20, 10), eval_per_class=5)
    config, params = resolve(get_method("erm"), {"epochs": 1})
    weights = Trainer(get_method("erm")(params), config, data).model.state_dict()
    (workdir / "ckpt").mkdir()
    torch.save({"best": {"state": weights}}, workdir / "ckpt" / CHECKPOINT_FILE)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    spec = SweepSpec(datasets=[DatasetSpec(dataset="tiny")], methods=["erm"], tracking_uri=uri,
                     storage=str(workdir / "runs"), experiment="crash", register="crashed")
    client = MlflowClient(tracking_uri=uri)
    parent = client.create_run(client.create_experiment("crash")).info.run_id
    state = SweepState.open(spec)
    study = state.study("tiny/erm")
    study.best_config = {"epochs": 1}
    study.selected = SelectedRun(kind="trial", seed=0, config={"epochs": 1}, checkpoint=str(workdir / "ckpt"),
                                 val={"balanced_acc": 0.5})
    state.save()

    def killed(*_):
        raise KeyboardInterrupt("the driver dies before sweep.json is saved")

    state.save = killed
    with pytest.raises(KeyboardInterrupt):
        deliver_models(spec, state, {"tiny/erm": parent}, {"tiny": data}, lambda line: None)
    resumed = SweepState.open(spec)  # what --resume reads: no model recorded
    assert resumed.study("tiny/erm").model is None
    said = []
    deliver_models(spec, resumed, {"tiny/erm": parent}, {"tiny": data}, said.append)
    assert SweepState.open(spec).study("tiny/erm").model.registered["version"] == "1"
    experiment = client.get_run(parent).info.experiment_id
    models = client.search_logged_models([experiment], filter_string=f"source_run_id = '{parent}'")
    assert len(models) == 1 and resumed.study("tiny/erm").model.uri == f"models:/{models[0].model_id}"
    assert [str(v.version) for v in client.search_model_versions("name = 'crashed'")] == ["1"]
    assert str(client.get_registered_model("crashed").aliases["champion"]) == "1"
    assert any("crashed version 1" in line for line in said)


def test_bad_predict_inputs_are_refused(workdir, capsys, monkeypatch):
    from focustune.tracking.model_package import STORE_VARIABLES

    for name in STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    data = binary_npz(workdir / "mine.npz")
    bad = workdir / "rgba.npz"
    np.savez(bad, images=np.zeros((2, 12, 12, 4), np.uint8))
    cases = [(["--model", "models:/nothing@champion", "--input", str(data)], "no MLflow store"),
             (["--model", "nowhere/model", "--input", str(data)], "no such file or folder"),
             (["--model", str(workdir), "--input", str(data)], "holds no focustune model"),
             (["--model", "x", "--input", str(workdir / "missing.npz")], "no such file or folder")]
    for args, message in cases:
        assert main(["predict", *args, "--output", "out.csv"]) == 2
        assert message in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()  # a missing store is not created

    assert main(["train", "--dataset", str(data), "--epochs", "1", "--quiet", "--register", "mine"]) == 0
    capsys.readouterr()
    for args, message in ((["--model", "models:/other@champion", "--input", str(data)], "not found"),
                          (["--model", "models:/mine@champion", "--input", str(bad)], "cannot be converted"),
                          (["--model", "models:/mine@champion", "--input", str(workdir / "mlflow.db")],
                           "expected a folder of images")):
        assert main(["predict", *args, "--output", "out.csv"]) == 2
        assert message in capsys.readouterr().err
    assert not (workdir / "out.csv").exists()
    # MLflow's setters write these for subprocesses to inherit: a command must not leave them behind
    assert [name for name in STORE_VARIABLES if name in os.environ] == []


@pytest.mark.parametrize("args, message", [
    (["--register", "a/b"], "without '/' or ':'"),
    (["--register", " "], "must be non-empty"),
    (["--config-out", "no/such/best.yaml"], "does not exist"),
    (["--operating-point", "auc"], "cannot be optimised by offsets"),
    (["--operating-point", "acc | recall[7]>0.9"], "cannot read constraint"),
    (["--operating-point", "acc | recall[seven]>=0.9"], "no class 'seven'"),
    (["--operating-point", "acc", "--set", "operating_point=macro_f1"], "give the operating point once"),
])
def test_bad_tune_outputs_are_refused_before_anything_starts(workdir, capsys, args, message):
    assert main(["tune", "--method", "erm", "--trials", "1", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists() and not (workdir / "focustune_runs").exists()


def test_train_register_refuses_a_bad_name_before_training(workdir, capsys):
    assert main(["train", "--epochs", "1", "--register", "x:y", "--output-json", "run.json"]) == 2
    assert "without '/' or ':'" in capsys.readouterr().err and not (workdir / "run.json").exists()


@pytest.mark.parametrize("rule, message", [("acc | recall[seven]>=0.9", "no class 'seven'; the classes are 0, 1"),
                                           ("acc | precision[1]=0.9", "cannot read constraint")])
def test_train_refuses_a_bad_operating_point_before_training(workdir, capsys, rule, message):
    assert main(["train", "--epochs", "1", "--operating-point", rule, "--output-json", "run.json"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (workdir / "run.json").exists()


def test_an_operating_point_no_offsets_meet_is_refused_and_no_model_is_logged(workdir, capsys):
    data = binary_npz(workdir / "mine.npz")
    rule = "balanced_acc | recall[benign]>=1, recall[malignant]>=1"  # a barely trained model cannot separate them
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--set", "lr=1e-6", "--quiet",
                 "--operating-point", rule, "--register", "never"]) == 2
    err = capsys.readouterr().err
    assert "no per-class offsets that meet it on the validation split" in err and "relax the constraint" in err
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("focustune")
    assert experiment is None or not client.search_runs([experiment.experiment_id])
    assert not client.search_registered_models()


# ---------------------------------------------------------------- end to end: tune -> model -> predict

@pytest.mark.slow
def test_tune_hands_over_a_configuration_and_a_registered_model(tmp_path):
    """`tune --seeds 2 --register` on a user's .npz, then `train --config`, `predict`, and a `--resume`
    after the end that hands nothing over twice."""
    import json

    from mlflow import MlflowClient

    from servers import start, stop_group

    data = binary_npz(tmp_path / "mine.npz")
    tune = [sys.executable, "-m", "focustune.cli", "tune", "--method", "focal", "--dataset", str(data), "--trials",
            "2", "--epochs", "2", "--seeds", "2", "--set", "batch_size=16", "--register", "mine",
            "--operating-point", "balanced_acc | recall[malignant]>=0.5"]

    def run(command: list[str], log: str) -> str:
        proc = start(command, tmp_path / log, cwd=tmp_path)
        try:
            assert proc.wait(timeout=600) == 0, (tmp_path / log).read_text()[-3000:]
        finally:
            stop_group(proc)
        return (tmp_path / log).read_text()

    out = run(tune, "tune.log")
    assert "registered mine version 1" in out and "champion -> version 1" in out
    state = json.loads((tmp_path / "focustune_runs" / "focustune" / "sweep.json").read_text())
    study = StudyRecord.from_json(state["studies"]["mine/focal"])
    selected = study.selected
    assert selected.kind == "seed_rerun" and selected.seed in (1, 2)
    best_rerun = max(study.reruns, key=lambda r: r.scores["best_val_balanced_acc"])
    assert selected.val["balanced_acc"] == best_rerun.scores["best_val_balanced_acc"]
    delivered = study.model  # what the handed-over model applies, recorded with it
    assert delivered.operating_point == "balanced_acc | recall[malignant]>=0.5" and len(delivered.offsets) == 2
    assert delivered.temperature > 0 and delivered.threshold is not None

    config = read_run_config(tmp_path / "best_config.yaml")
    assert config == read_run_config(tmp_path / "focustune_runs" / "focustune" / "configs" / "mine__focal.yaml")
    assert (config.method, config.dataset, config.seed) == ("focal", str(data), selected.seed)
    assert config.params == flat_params(*resolve(get_method("focal"), selected.config))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(study.parent_run_id)
    assert "run_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    version = client.get_model_version_by_alias("mine", "champion")
    assert version.run_id == parent.info.run_id
    assert float(version.tags["focustune.val_balanced_acc"]) == selected.val["balanced_acc"]

    run([sys.executable, "-m", "focustune.cli", "train", "--config", "best_config.yaml", "--quiet",
         "--output-json", "again.json"], "train.log")
    assert json.loads((tmp_path / "again.json").read_text())["params"] == config.params
    run([sys.executable, "-m", "focustune.cli", "predict", "--model", "models:/mine@champion", "--input", str(data),
         "--output", "predictions.csv"], "predict.log")
    assert len(read_csv(tmp_path / "predictions.csv")) == 20
    from focustune.inference import bundle_folder
    from focustune.tracking.model_package import download_model

    card = load_bundle(bundle_folder(download_model("models:/mine@champion", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                    tmp_path / "download"))).card
    assert card.operating_point == "balanced_acc | recall[malignant]>=0.5"
    assert card.operating_val["recall[malignant]"] >= 0.5
    assert config.params["operating_point"] == card.operating_point  # train --config fits the same rule

    run([*tune, "--resume"], "resume.log")
    assert len(client.search_model_versions("name = 'mine'")) == 1
