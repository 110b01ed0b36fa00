"""The command line as a user runs it: listings, a run with --output-json, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from focustune.cli import main
from focustune.methods import method_names


def test_datasets_lists_embedded_and_medmnist(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits-lt", "pneumoniamnist", "breastmnist", "dermamnist"):
        assert name in out
    assert "chestmnist" not in out  # multi-label: not supported


def test_methods_lists_every_method_with_hyperparameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in method_names():
        assert f"{name}:" in out
    assert "gamma (float) = 2.0" in out and "lr (float) = 0.001" in out


def test_train_writes_the_documented_json(tmp_path, capsys):
    path = tmp_path / "run.json"
    code = main(["train", "--method", "focal", "--epochs", "2", "--seed", "1", "--set", "lr=2e-3",
                 "--set", "gamma=1.0", "--output-json", str(path), "--quiet"])
    assert code == 0
    run = json.loads(path.read_text())
    assert set(run) == {"method", "dataset", "seed", "epochs", "seconds", "params", "data", "best_epoch",
                        "best_phase", "val", "test", "history", "stages"}
    assert run["stages"] == {}  # a single-phase method
    assert (run["method"], run["dataset"], run["seed"], run["epochs"]) == ("focal", "digits-lt", 1, 2)
    assert run["params"]["lr"] == 2e-3 and run["params"]["gamma"] == 1.0
    metric_keys = {"acc", "balanced_acc", "macro_f1", "auc", "per_class_recall"}
    assert set(run["val"]) == set(run["test"]) == metric_keys
    assert len(run["test"]["per_class_recall"]) == 10
    assert [h["epoch"] for h in run["history"]] == [1, 2]
    assert set(run["history"][0]) == {"epoch", "phase", "train_loss", "val"}
    best = run["history"][run["best_epoch"] - 1]
    assert run["best_phase"] == best["phase"] == "train"
    counts = run["data"]["train_class_counts"]
    assert len(counts) == 10 and counts == sorted(counts, reverse=True)  # digits-lt is long-tailed
    assert run["data"]["probe_class_counts"] is None
    assert "test" in capsys.readouterr().out


def test_train_resumes_from_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["train", "--epochs", "2", "--checkpoint-dir", str(ckpt), "--quiet"]) == 0
    assert main(["train", "--epochs", "3", "--checkpoint-dir", str(ckpt), "--resume",
                 "--output-json", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "resumed from" in err and "epoch   3/3" in err and "epoch   1/3" not in err


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--epochs", "0"], "epochs=0 is out of range"),
    (["--set", "lr=-1"], "lr=-1.0 is out of range"),
    (["--set", "nonsense=1"], "unknown hyperparameter"),
    (["--set", "lr"], "key=value"),
    (["--resume"], "--resume needs --checkpoint-dir"),
    (["--output-json", "/nonexistent/dir/run.json"], "does not exist"),
])
def test_bad_input_gives_one_message_and_nonzero_exit(args, message, capsys, tmp_path):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("error:") == 1


def test_bad_npz_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((2, 4, 4), np.uint8))
    out = tmp_path / "run.json"
    assert main(["train", "--dataset", str(bad), "--output-json", str(out)]) == 2
    assert "lacks" in capsys.readouterr().err and not out.exists()


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "focustune.cli", "methods"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert "erm:" in out.stdout


def test_output_into_a_closed_pipe_ends_quietly():
    """`focustune methods | head -1`: the reader leaves early; no traceback, exit 0."""
    cli = subprocess.Popen([sys.executable, "-m", "focustune.cli", "methods"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cli.stdout.readline()
    cli.stdout.close()
    stderr = cli.stderr.read().decode()
    assert cli.wait(timeout=60) == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.real_data
@pytest.mark.slow
def test_train_on_real_breastmnist(shared_medmnist, tmp_path):
    path = tmp_path / "breast.json"
    assert main(["train", "--dataset", "breastmnist", "--data-dir", str(shared_medmnist), "--epochs", "8",
                 "--set", "batch_size=32", "--output-json", str(path), "--quiet"]) == 0
    run = json.loads(path.read_text())
    assert len(run["history"]) == 8
    assert run["test"]["auc"] > 0.6  # the small CNN learns something in 8 short epochs


def test_train_json_of_a_phased_method_has_both_stages(tmp_path):
    path = tmp_path / "run.json"
    assert main(["train", "--method", "imet", "--epochs", "2", "--set", "iterations=2", "--output-json", str(path),
                 "--quiet"]) == 0
    stages = json.loads(path.read_text())["stages"]
    assert stages["before_mechanism"]["best_epoch"] == 1 and stages["before_mechanism"]["best_phase"] == "iteration_0"
    assert stages["after_mechanism"]["best_epoch"] == 2 and set(stages["after_mechanism"]["test"]) >= {"acc", "auc"}
