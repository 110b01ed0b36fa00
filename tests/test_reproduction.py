"""The reproduction suite (benchmarks/reproduce): summaries and verdicts from run records, and the
``--quick`` mode of the scripts on the real data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "reproduce"))
from protocols import CLAIMS  # noqa: E402

from focustune_analysis.reproduction import summarise_claim  # noqa: E402

HOST = {"cpu": "test", "python": "3", "precision": ["float32"]}


def record(setting: str, arm: str, method: str, seed: int, accs: list[float], test_acc: float,
           recalls: list[float] = (0.5, 0.5), stages: dict | None = None, classes: list[int] | None = None) -> dict:
    """A run record in the shape ``focustune train --output-json`` (plus run.py's ``protocol``) writes."""
    metrics = lambda acc, rec=recalls: {"acc": acc, "balanced_acc": acc - 0.01, "macro_f1": acc, "auc": acc,  # noqa: E731
                                        "per_class_recall": list(rec)}
    best = max(range(len(accs)), key=lambda i: accs[i])
    history = [{"epoch": e + 1, "phase": "train", "train_loss": 1.0, "val": metrics(a),
                **({"method": {"classes": classes}} if classes else {})} for e, a in enumerate(accs)]
    return {"method": method, "dataset": "d", "seed": seed, "epochs": len(accs), "seconds": 1.0, "params": {},
            "data": {}, "best_epoch": best + 1, "best_phase": "train", "val": metrics(accs[best]),
            "test": metrics(test_acc), "history": history, "stages": stages or {},
            "protocol": {"setting": setting, "arm": arm, "argv": ["train", "--method", method]}}


def test_low_summary_pairs_by_seed_and_grades_the_claim(tmp_path):
    claim = CLAIMS["low-mnist"]
    setting = claim.settings[0].label
    records = [record(setting, arm, arm, seed, [0.5, 0.9], acc + 0.01 * seed)
               for seed in (1, 2, 3) for arm, acc in (("low", 0.99), ("erm", 0.95), ("focal", 0.96))]
    summary = summarise_claim(claim, records, tmp_path, HOST)
    arms = summary["settings"][setting]["arms"]
    assert arms["low"]["test"]["error"]["mean"] == pytest.approx(1 - 0.99 - 0.02)
    low = next(r for r in summary["settings"][setting]["versus_baseline"]["acc"] if r["arm"] == "low")
    assert low["n"] == 3 and low["diff"] == pytest.approx(0.04)
    assert summary["verdict"] == "partly"  # lower error than both, but focal is not the tested baseline
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["verdict"] == summary["verdict"] and (tmp_path / "summary.md").is_file()
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_epochs_to_target_come_from_the_validation_curves(tmp_path):
    claim = CLAIMS["learn2mix-mnist"]
    t = claim.target_acc
    curves = {"learn2mix": [t - 0.05, t + 0.01, t + 0.02], "erm": [t - 0.1, t - 0.05, t + 0.01],
              "focal": [t - 0.1, t - 0.05, t - 0.01], "oversample": [t - 0.1, t - 0.05, t + 0.01]}
    records = [record(s.label, arm, arm, seed, accs, 0.97) for s in claim.settings for seed in (1, 2, 3)
               for arm, accs in curves.items()]
    summary = summarise_claim(claim, records, tmp_path, HOST)
    reach = summary["settings"][claim.settings[0].label]["epochs_to_target"]
    assert reach["learn2mix"]["mean"] == 2 and reach["erm"]["mean"] == 3 and reach["focal"]["reached"] == 0
    assert summary["verdict"] == "partly" and "never (0/3)" in summary["verdict_line"]


def test_mdgan_summary_compares_the_augmented_class_before_after_and_with_erm(tmp_path):
    claim = CLAIMS["mdgan-medmnist"]
    setting = claim.settings[1].label
    records = []
    for seed in (1, 2, 3):
        stage = lambda recall: {"best_epoch": 1, "best_phase": "x", "val": {}, "test": {  # noqa: E731
            "acc": 0.8, "balanced_acc": 0.8, "macro_f1": 0.8, "auc": 0.8, "per_class_recall": [recall, 0.9]}}
        stages = {"before_mechanism": stage(0.40 + 0.01 * seed), "after_mechanism": stage(0.60 + 0.02 * seed)}
        records.append(record(setting, "mdgan (worst class on val)", "mdgan", seed, [0.7, 0.8], 0.8,
                              stages=stages, classes=[0]))
        records.append(record(setting, "erm (SpinalNet, SAM)", "erm", seed, [0.7, 0.8], 0.8, recalls=(0.5, 0.9)))
    summary = summarise_claim(claim, records, tmp_path, HOST)
    row = summary["settings"][setting]["augmented"]["mdgan (worst class on val)"]
    assert row["before"]["mean"] == pytest.approx(0.42) and row["after"]["mean"] == pytest.approx(0.64)
    assert row["after_minus_baseline"]["diff"] == pytest.approx(0.14)
    assert summary["verdict"] == "reproduced"


def test_protocol_command_lines_merge_quick_options():
    claim = CLAIMS["mdgan-medmnist"]
    argv = claim.argv(claim.settings[0], claim.arms[0], 2, "DIR", quick=True)
    keys = [argv[i + 1].partition("=")[0] for i, a in enumerate(argv) if a == "--set"]
    assert len(keys) == len(set(keys))  # every key once (train refuses a repeated --set key)
    assert "finetune_epochs=1" in argv and "finetune_epochs=2" not in argv and argv[argv.index("--seed") + 1] == "2"


@pytest.mark.slow
def test_quick_mode_runs_a_claim_end_to_end(shared_medmnist, tmp_path):
    script = REPO / "benchmarks" / "reproduce" / "run.py"
    done = subprocess.run([sys.executable, str(script), "imet-pneumonia", "--quick", "--out", str(tmp_path),
                           "--medmnist-dir", str(shared_medmnist)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "imet-pneumonia" / "summary.json").read_text())
    assert summary["quick"] and summary["runs"] == 3 * 2 and summary["verdict"] in ("reproduced", "partly",
                                                                                     "not reproduced")
    arms = summary["settings"]["PneumoniaMNIST"]["arms"]
    assert arms["imet (errors on val)"]["stages"]["after_mechanism"]["test"]["acc"]["n"] == 2
    assert summary["settings"]["PneumoniaMNIST"]["probe_vs_val"]
