"""The reproduction suite (benchmarks/reproduce): summaries and verdicts from run records, the
protocols' command lines, resumable runs and grids, the per-epoch test monitor, and the ``--quick``
mode of the scripts on the real data."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "reproduce"))
import run as reproduce
from monitor import TEST_MONITOR, train_monitored
from protocols import CLAIMS

from focustune import params
from focustune.cli import build_parser
from focustune.config import resolve
from focustune.methods import get_method
from focustune_analysis.reproduction import TEST_CURVE, summarise_claim
from focustune_analysis.reproduction_verdicts import (
    FAMILIES,
    IMET_OVERSAMPLE,
    LOW_BATCH_MEAN,
    LOW_PER_SAMPLE,
    MDGAN_REAL,
    combine,
    grade_comparison,
    readme_block,
)
from focustune_analysis.stats import minimal_detectable_effect, paired_test, seeds_to_resolve

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
    records = [record(setting, arm, arm.split()[0], seed, [0.5, 0.9], acc + 0.01 * seed)
               for seed in (1, 2, 3) for arm, acc in ((LOW_PER_SAMPLE, 0.99), ("erm", 0.95), ("focal", 0.96),
                                                      ("weighted_ce", 0.96))]
    summary = summarise_claim(claim, records, tmp_path, HOST, planned=len(claim.runs(False)))
    assert f"Verdict (interim: 12 of {len(claim.runs(False))} runs" in (tmp_path / "summary.md").read_text()
    arms = summary["settings"][setting]["arms"]
    assert arms[LOW_PER_SAMPLE]["test"]["error"]["mean"] == pytest.approx(1 - 0.99 - 0.02)
    low = next(r for r in summary["settings"][setting]["versus_baseline"]["acc"] if r["arm"] == LOW_PER_SAMPLE)
    assert low["n"] == 3 and low["diff"] == pytest.approx(0.04)
    # the same difference on every seed: no t-test, but the exact sign-flip test (p = 2/2^3), never NaN; at n=3
    # no sign pattern is significant, so its interval is every value: the data cannot tell
    assert all(t["test"].startswith("exact sign-flip") and t["t_p"] == pytest.approx(0.25)
               for t in summary["claim_tests"])
    assert summary["verdict"] == "inconclusive"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["verdict"] == summary["verdict"] and (tmp_path / "summary.md").is_file()
    assert (tmp_path / "curves.png").stat().st_size > 0


def monitored(run: dict, test_accs: list[float]) -> dict:
    """``run`` with its per-epoch test accuracy, as the reproduction harness records it (``test_monitor``)."""
    epochs = [{"epoch": e + 1, "acc": a, "balanced_acc": a} for e, a in enumerate(test_accs)]
    return {**run, TEST_MONITOR: {"note": "never used for selection", "epochs": epochs}}


#: learn2mix's claim with a fixed target accuracy (the paper's value, were it known).
TARGET = 0.9


def learn2mix_claim(**changes):
    return dataclasses.replace(CLAIMS["learn2mix-mnist"], **{"target_acc": TARGET, **changes})


def learn2mix_records(claim, test_curves: dict[str, list[list[float]]]) -> list[dict]:
    """Runs whose validation curve never reaches the target and whose test curves are ``test_curves``."""
    low = [TARGET - 0.2] * 6
    return [monitored(record(claim.settings[0].label, arm, arm.split()[0], seed, low, 0.97), curve)
            for arm, per_seed in test_curves.items() for seed, curve in zip((1, 2, 3, 4, 5), per_seed)]


def reaching_at(epochs: list[int], target: float, length: int = 6) -> list[list[float]]:
    """Per seed a test curve that first reaches ``target`` at that epoch (0: never)."""
    return [[target + 0.01 if e and k + 1 >= e else target - 0.05 for k in range(length)] for e in epochs]


@pytest.mark.parametrize("learn2mix_epochs, expected", [
    ([2, 2, 3, 2, 3], "partly"),  # significantly ahead of every baseline, but by less than the paper's 6/4/5 epochs
    ([3, 5, 3, 5, 3], "not reproduced"),  # ahead, yet the intervals exclude the claimed 6, 4 and 5 epochs
    ([6, 6, 6, 6, 0], "not reproduced"),  # behind all three
])
def test_learn2mix_is_judged_on_epochs_to_the_target_test_accuracy_not_validation(tmp_path, learn2mix_epochs,
                                                                                  expected):
    claim = learn2mix_claim()
    t = TARGET
    curves = {"learn2mix": reaching_at(learn2mix_epochs, t), "erm": reaching_at([5, 5, 6, 5, 5], t),
              "focal (class-weighted)": reaching_at([4, 5, 4, 5, 4], t), "smote": reaching_at([5, 6, 5, 0, 5], t)}
    summary = summarise_claim(claim, learn2mix_records(claim, curves), tmp_path, HOST)
    reach = summary["settings"][claim.settings[0].label]["epochs_to_target"]
    assert reach["smote"]["per_seed"][4] is None and reach["smote"]["reached"] == 4 and reach["smote"]["censored"] == 1
    # censored as in the paired tests: the seed that never reached it counts one epoch past its last (7)
    assert reach["smote"]["mean"] == pytest.approx((5 + 6 + 5 + 7 + 5) / 5)
    assert reach["erm"]["mean"] == pytest.approx(5.2) and reach["erm"]["curve"].startswith("test")
    tests = summary["claim_tests"]
    assert [(r["versus"], r["metric"], r["effect"]) for r in tests] == [
        ("erm", "epochs_to_target", 6), ("focal (class-weighted)", "epochs_to_target", 4),
        ("smote", "epochs_to_target", 5)]  # Table 1: 14 vs 20, 18, 19 epochs
    assert all("t_p_holm" not in r for r in tests)  # a conjunction: each part at alpha, no Holm
    erm = tests[0]  # epochs: their interval is not clipped to [-1, 1] as an accuracy's difference is
    assert erm["diff_low"] < -1 or erm["diff_high"] > 1 or not math.isfinite(erm["diff_low"])
    assert summary["verdict"] == expected, summary["verdict_line"]
    assert "test (test_monitor" in (tmp_path / "summary.md").read_text()


def test_epochs_to_target_intervals_stay_within_the_epochs_a_run_can_take(tmp_path):
    claim, length = learn2mix_claim(), 6
    curves = {"learn2mix": reaching_at([1, 1, 1, 6, 0], TARGET, length), "erm": reaching_at([5, 5, 6, 5, 5], TARGET),
              "focal (class-weighted)": reaching_at([4, 5, 4, 5, 4], TARGET),
              "smote": reaching_at([5, 6, 5, 5, 5], TARGET)}
    summary = summarise_claim(claim, learn2mix_records(claim, curves), tmp_path, HOST)
    reach = summary["settings"][claim.settings[0].label]["epochs_to_target"]["learn2mix"]
    # 1, 1, 1, 6 and 7 (censored): the t-interval reaches below epoch 1, which no run can take
    assert reach["mean"] == pytest.approx(3.2) and reach["mean"] - reach["half_width"] < 1
    assert reach["low"] == 1 and reach["clipped"]
    erm = next(r for r in summary["claim_tests"] if r["versus"] == "erm")
    # differences -4, -4, -5, 1, 2: the t-interval reaches below -6, the most one run can lead another by
    assert erm["diff"] == pytest.approx(-2) and erm["diff"] - erm["diff_half_width"] < -length
    assert erm["diff_low"] == -length and erm["diff_high"] == pytest.approx(erm["diff"] + erm["diff_half_width"])


def test_learn2mix_target_defaults_to_the_baselines_accuracy_at_the_papers_epoch(tmp_path):
    claim = learn2mix_claim(target_acc=None, target_epoch=3)
    assert CLAIMS["learn2mix-mnist"].target_acc is None and CLAIMS["learn2mix-mnist"].target_epoch == 20
    rising = lambda top: [[top - 0.3 + 0.1 * k + 0.01 * s for k in range(6)] for s in range(5)]  # noqa: E731
    curves = {"learn2mix": rising(0.95), "erm": rising(0.9), "focal (class-weighted)": rising(0.9),
              "smote": rising(0.85)}
    summary = summarise_claim(claim, learn2mix_records(claim, curves), tmp_path, HOST)
    reach = summary["settings"][claim.settings[0].label]["epochs_to_target"]
    assert reach["erm"]["target"] == pytest.approx(0.8 + 0.02)  # erm's mean test accuracy after epoch 3
    assert reach["learn2mix"]["mean"] < reach["erm"]["mean"] < reach["smote"]["mean"]  # higher curves: earlier
    assert reach["smote"]["per_seed"][1] == 4  # 0.55 + 0.1 k first reaches 0.82 after epoch 4
    setting = summary["settings"][claim.settings[0].label]
    assert setting["curve"] == TEST_CURVE  # the figure shows the curve the claim is about...
    assert setting["curves"]["erm"][2]["mean"] == pytest.approx(reach["erm"]["target"])  # ...the test accuracy


def test_summary_and_readme_show_the_claims_figure(tmp_path):
    claim = CLAIMS["imet-pneumonia"]
    records = _accuracy_records(claim, {"imet (errors on val)": [0.88, 0.89, 0.87], "erm": PLAIN})
    summary = summarise_claim(claim, records, tmp_path, HOST)
    assert "![validation accuracy per epoch, mean ± SE over seeds](curves.png)" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "](results/imet-pneumonia/curves.png)" in readme_block([summary])


def test_epochs_to_target_read_validation_where_no_test_accuracy_was_recorded(tmp_path):
    claim = learn2mix_claim()
    t = TARGET
    curves = {"learn2mix": [t - 0.05, t + 0.01, t + 0.02], "erm": [t - 0.1, t - 0.05, t + 0.01]}
    records = [record(claim.settings[0].label, arm, arm, seed, accs, 0.97) for seed in (1, 2, 3)
               for arm, accs in curves.items()]
    summary = summarise_claim(claim, records, tmp_path, HOST)
    reach = summary["settings"][claim.settings[0].label]["epochs_to_target"]
    assert reach["learn2mix"]["mean"] == 2 and reach["erm"]["mean"] == 3 and reach["erm"]["curve"] == "validation"


def stage(recall: float, acc: float) -> dict:
    """A phased run's best epoch of one stage (``stages``), with its test accuracy and class recalls."""
    return {"best_epoch": 1, "best_phase": "x", "val": {}, "test": {
        "acc": acc, "balanced_acc": acc, "macro_f1": acc, "auc": acc, "per_class_recall": [recall, 0.9]}}


@pytest.mark.parametrize("after_acc, erm_acc, expected", [
    (0.85, 0.80, "reproduced"),  # the class's recall AND the overall accuracy above both controls'
    (0.78, 0.85, "not reproduced"),  # the class gains, the whole dataset loses: "an overall better performance" fails
])
def test_mdgan_summary_compares_the_augmented_class_before_after_and_with_erm(tmp_path, after_acc, erm_acc, expected):
    claim = CLAIMS["mdgan-medmnist"]
    setting = claim.settings[1].label
    records = []
    for seed in (1, 2, 3):
        stages = {"before_mechanism": stage(0.40 + 0.01 * seed, 0.8),
                  "after_mechanism": stage(0.60 + 0.02 * seed, after_acc + 0.01 * seed)}
        real = {"before_mechanism": stage(0.40 + 0.01 * seed, 0.8),
                "after_mechanism": stage(0.50 + 0.01 * seed * seed, 0.78 + 0.002 * seed)}
        records.append(record(setting, "mdgan (worst class on val)", "mdgan", seed, [0.7, 0.8], after_acc + 0.01 * seed,
                              stages=stages, classes=[0]))
        records.append(record(setting, MDGAN_REAL, "mdgan", seed, [0.7, 0.8], 0.8, stages=real, classes=[0]))
        records.append(record(setting, "erm (SpinalNet, SAM)", "erm", seed, [0.7, 0.8], erm_acc + 0.001 * seed,
                              recalls=(0.5, 0.9)))
    summary = summarise_claim(claim, records, tmp_path, HOST)
    row = summary["settings"][setting]["augmented"]["mdgan (worst class on val)"]
    assert row["before"]["mean"] == pytest.approx(0.42) and row["after"]["mean"] == pytest.approx(0.64)
    assert row["after_minus_baseline"]["diff"] == pytest.approx(0.14)
    # against the real-image control over the same (fine-tune) window, and erm over the whole run
    assert [(t["versus"], t["metric"], t["stage"], t["versus_stage"]) for t in summary["claim_tests"]] == [
        (MDGAN_REAL, "augmented_recall", "after_mechanism", "after_mechanism"),
        (MDGAN_REAL, "acc", "after_mechanism", "after_mechanism"), ("erm (SpinalNet, SAM)", "acc", None, None)]
    assert summary["verdict"] == expected, summary["verdict_line"]


def test_protocol_command_lines_merge_quick_options():
    claim = CLAIMS["mdgan-medmnist"]
    argv = claim.argv(claim.settings[0], claim.arms[0], 2, "DIR", quick=True)
    keys = [argv[i + 1].partition("=")[0] for i, a in enumerate(argv) if a == "--set"]
    assert len(keys) == len(set(keys))  # every key once (train refuses a repeated --set key)
    assert "finetune_epochs=1" in argv and "finetune_epochs=2" not in argv and argv[argv.index("--seed") + 1] == "2"


def test_a_setting_may_run_more_epochs_than_its_claim():
    claim = CLAIMS["mdgan-medmnist"]

    def epochs(setting, quick):
        argv = claim.argv(setting, claim.arms[0], 1, "D", quick)
        return int(argv[argv.index("--epochs") + 1])

    assert {s.dataset: epochs(s, False) for s in claim.settings} == {"pneumoniamnist": 12, "breastmnist": 60}
    assert {epochs(s, True) for s in claim.settings} == {claim.quick_epochs}


def resolved(argv):
    """(method, TrainConfig, method params) of a protocol's command line, as ``focustune train`` parses it."""
    args = build_parser().parse_args(argv)
    config, method_params = resolve(get_method(args.method), params.parse_assignments(args.set))
    return args, config, method_params


def test_low_protocol_is_the_papers_with_the_grid_in_both_units_and_a_profile_per_run():
    claim = CLAIMS["low-mnist"]
    assert len(claim.seeds) == 5 and claim.epochs == 100
    units = {}
    for setting, arm, seed in claim.runs(quick=False):
        for point in arm.points(quick=False) or (None,):
            args, config, method_params = resolved(claim.argv(setting, arm, seed, "D", False, point))
            assert args.imbalance == "step" and args.data_seed == seed  # redrawn per run, shared by the arms
            assert (config.model, config.optimizer, config.nesterov, config.momentum) == ("lenet5", "sgd", True, 0.9)
            assert (config.lr, config.weight_decay, config.batch_size, args.epochs) == (1e-3, 1e-4, 256, 100)
            if args.method == "low":
                units.setdefault(method_params.lam_unit, set()).add(method_params.lam)
    assert units == {"authors_code": {1, 0.5, 0.1, 0.01}, "ours": {1, 0.5, 0.1, 0.01}}  # lamb=1 (7f5a679) included
    assert {a.method for a in claim.arms} == {"low", "erm", "focal", "weighted_ce"}
    per_sample = next(a for a in claim.arms if a.label == LOW_PER_SAMPLE)
    assert "lam_unit=ours" in per_sample.options  # the verdict's arm: the paper's equations, the April 2020 code
    assert {c.arm for c in FAMILIES["low-mnist"]} == {LOW_PER_SAMPLE}
    assert {c.versus for c in FAMILIES["low-mnist"]} == {"erm", "focal", "weighted_ce"}


def test_learn2mix_protocol_is_the_papers_against_weighted_focal_and_smote_with_a_test_monitor():
    claim = CLAIMS["learn2mix-mnist"]
    assert len(claim.seeds) == 5 and claim.test_monitor
    methods: dict[str, dict] = {}
    for setting, arm, seed in claim.runs(quick=False):
        args, config, method_params = resolved(claim.argv(setting, arm, seed, "D", False))
        assert args.dataset == "mnist" and args.imbalance == (None if setting.label == "MNIST" else "step")
        assert (config.model, config.optimizer, config.lr, config.batch_size) == ("lenet5", "adam", 1e-5, 1000)
        methods.setdefault(setting.label, {})[args.method] = method_params
    paper, extra = methods["MNIST"], methods[claim.settings[1].label]
    assert set(paper) == {"learn2mix", "erm", "focal", "smote"}
    assert set(extra) == {"learn2mix", "erm", "oversample", "weighted_ce"}  # the labelled step-imbalanced extra
    assert paper["learn2mix"].mixing_rate == 0.1 and paper["focal"].alpha == 1


def fake_training(calls, interrupt_at=None):
    """A stand-in for ``focustune train``: a record whose validation score peaks at lam=0.1."""
    def execute(argv, output):
        calls.append(argv)
        sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
        seed, method = int(argv[argv.index("--seed") + 1]), argv[argv.index("--method") + 1]
        acc = 0.9 + 0.01 * seed - abs(float(sets.get("lam", 0.1)) - 0.1) * 0.05 - 0.02 * (method != "low")
        output.write_text(json.dumps(record("-", "-", method, seed, [acc - 0.1, acc], acc)))
        return 130 if len(calls) == interrupt_at else 0  # 130: interrupted after writing
    return execute


def test_runs_resume_in_parts_and_a_grid_arm_keeps_its_best_point_on_validation(tmp_path):
    (tmp_path / "tv" / "MNIST").mkdir(parents=True)
    claim, calls = CLAIMS["low-mnist"], []
    args = lambda *more: reproduce.parse_args(["low-mnist", "--out", str(tmp_path), "--torchvision-dir",  # noqa: E731
                                               str(tmp_path / "tv"), *more])
    runs = tmp_path / "low-mnist" / "runs"
    assert reproduce.run_claim(claim, args("--max-runs", "7"), tmp_path, fake_training(calls)) == 0
    assert len(calls) == 7 and not (tmp_path / "low-mnist" / "summary.json").exists()  # a part: no summary yet
    first = json.loads((runs / "s0_a0_seed1.json").read_text())
    assert first["protocol"]["selected"] == "lam=0.1" and len(first["protocol"]["grid"]) == 4
    assert first["protocol"]["arm"] == LOW_BATCH_MEAN and "lam=0.1" in first["protocol"]["argv"]
    assert first["val"]["balanced_acc"] == max(g["val_score"] for g in first["protocol"]["grid"])
    # seed by seed: the second arm's grid of seed 1 before any run of seed 2
    assert not (runs / "s0_a1_seed1.json").exists() and len(list((runs / "grid").glob("s0_a1_seed1_g*.json"))) == 3
    assert not list(runs.rglob("*seed2*"))

    assert reproduce.run_claim(claim, args(), tmp_path, fake_training(calls, interrupt_at=9)) == 130
    assert len(calls) == 9 and (runs / "s0_a1_seed1.json").exists()
    assert not (runs / "s0_a2_seed1.json").exists()  # the interrupted run (erm, seed 1) left no file
    assert reproduce.run_claim(claim, args(), tmp_path, fake_training(calls)) == 0
    total = len(claim.seeds) * sum(len(a.points(False)) or 1 for a in claim.arms)
    assert len(calls) == total + 1  # every run once, the interrupted one twice
    summary = json.loads((tmp_path / "low-mnist" / "summary.json").read_text())
    assert summary["runs"] == len(claim.runs(False)) and set(summary["settings"][claim.settings[0].label]["arms"]) == {
        a.label for a in claim.arms}
    assert reproduce.run_claim(claim, args(), tmp_path, fake_training(calls)) == 0 and len(calls) == total + 1

    older = json.loads((runs / "s0_a2_seed1.json").read_text())  # a run file of another protocol (20 epochs)
    older["protocol"]["argv"][older["protocol"]["argv"].index("--epochs") + 1] = "20"
    (runs / "s0_a2_seed1.json").write_text(json.dumps(older))
    assert reproduce.run_claim(claim, args(), tmp_path, fake_training(calls)) == 2 and len(calls) == total + 1


def test_shards_side_by_side_share_the_runs_without_overlap_and_the_last_one_summarises(tmp_path):
    claim, calls = CLAIMS["imet-pneumonia"], {0: [], 1: []}
    args = lambda *more: reproduce.parse_args(["imet-pneumonia", "--out", str(tmp_path), *more])  # noqa: E731
    assert reproduce.run_claim(claim, args("--shard", "0/2", "--max-runs", "3"), tmp_path, fake_training(calls[0])) == 0
    assert reproduce.run_claim(claim, args("--shard", "1/2"), tmp_path, fake_training(calls[1])) == 0
    assert not (tmp_path / claim.name / "summary.json").exists()  # shard 0 is not done
    assert reproduce.run_claim(claim, args("--shard", "0/2"), tmp_path, fake_training(calls[0])) == 0
    runs = [(c[c.index("--method") + 1], c[c.index("--seed") + 1], " ".join(c)) for c in calls[0] + calls[1]]
    assert len(runs) == len(set(runs)) == len(claim.runs(False))  # every run once, by one shard or the other
    assert len(calls[0]) == len(calls[1]) == len(claim.runs(False)) // 2
    assert json.loads((tmp_path / claim.name / "summary.json").read_text())["runs"] == len(claim.runs(False))
    for bad in ("2/2", "1", "a/2", "-1/2"):
        with pytest.raises(SystemExit):
            args("--shard", bad)
    # the searches are not shared: a tuned shard before they are done refuses, and runs no search
    assert reproduce.run_tuned(claim, args("--tuned", "--shard", "0/2"), tmp_path / "other") == 2
    assert not list((tmp_path / "other").rglob("chosen.yaml"))


def test_test_monitor_records_test_accuracy_per_epoch_and_changes_nothing_else(tmp_path):
    argv = ["train", "--method", "learn2mix", "--dataset", "digits-lt", "--epochs", "2", "--seed", "1",
            "--set", "batch_size=64", "--set", "amp=false", "--quiet"]
    assert reproduce.train_cli(argv, tmp_path / "plain.json") == 0
    assert train_monitored(argv, tmp_path / "monitored.json") == 0
    plain, monitored = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "monitored"))
    for key in ("history", "val", "test", "best_epoch", "params", "data"):
        assert monitored[key] == plain[key], key
    curve = monitored[TEST_MONITOR]
    assert "never used for selection" in curve["note"] and [e["epoch"] for e in curve["epochs"]] == [1, 2]
    assert curve["epochs"][plain["best_epoch"] - 1]["acc"] == pytest.approx(plain["test"]["acc"])
    assert TEST_MONITOR not in plain


@pytest.mark.slow
def test_quick_mode_runs_a_claim_end_to_end(shared_medmnist, tmp_path):
    script = REPO / "benchmarks" / "reproduce" / "run.py"
    done = subprocess.run([sys.executable, str(script), "imet-pneumonia", "--quick", "--out", str(tmp_path),
                           "--medmnist-dir", str(shared_medmnist)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "imet-pneumonia" / "summary.json").read_text())
    claim = CLAIMS["imet-pneumonia"]
    assert summary["quick"] and summary["runs"] == len(claim.arms) * len(claim.quick_seeds)
    assert summary["verdict"] in ("reproduced", "partly", "inconclusive", "not reproduced")
    arms = summary["settings"]["PneumoniaMNIST"]["arms"]
    assert arms["imet (errors on val)"]["stages"]["after_mechanism"]["test"]["acc"]["n"] == 2
    assert summary["settings"]["PneumoniaMNIST"]["probe_vs_val"]


# ---------------------------------------------------------------- verdict rules on constructed summaries

def _accuracy_records(claim, accuracies: dict[str, list[float]], recalls=(0.5, 0.5)) -> list[dict]:
    setting = claim.settings[0].label
    return [record(setting, arm, arm.split()[0], seed, [0.5, 0.9], acc, recalls=recalls)
            for arm, accs in accuracies.items() for seed, acc in zip((1, 2, 3), accs)]


@pytest.mark.parametrize("focal, expected", [
    ([0.920, 0.925, 0.915], "reproduced"),  # low beats all three, significantly
    ([0.9505, 0.9525, 0.9495], "not reproduced"),  # focal as good: the interval excludes the 1-point margin
    ([0.945, 0.930, 0.952], "inconclusive")])  # ahead of focal, but the interval holds both 0 and the margin
def test_low_is_reproduced_only_when_it_beats_plain_training_focal_and_weighted_ce(tmp_path, focal, expected):
    claim = CLAIMS["low-mnist"]
    accs = {LOW_PER_SAMPLE: [0.950, 0.953, 0.949], "erm": [0.900, 0.910, 0.895], "focal": focal,
            "weighted_ce": [0.910, 0.905, 0.915]}
    summary = summarise_claim(claim, _accuracy_records(claim, accs), tmp_path, HOST)
    tests = summary["claim_tests"]
    assert [(t["arm"], t["versus"], t["metric"]) for t in tests] == [
        (LOW_PER_SAMPLE, v, "error") for v in ("erm", "focal", "weighted_ce")]
    assert summary["verdict"] == expected, summary["verdict_line"]


def test_mdgan_is_judged_against_the_equal_budget_control_not_only_before_and_after(tmp_path):
    claim = CLAIMS["mdgan-medmnist"]
    setting = claim.settings[0].label
    records = []
    for seed, control in zip((1, 2, 3), (0.64, 0.65, 0.66)):
        stages = {"before_mechanism": stage(0.40 + 0.01 * seed, 0.8), "after_mechanism": stage(0.60 + 0.02 * seed, 0.8)}
        records.append(record(setting, "mdgan (worst class on val)", "mdgan", seed, [0.7, 0.8], 0.8,
                              stages=stages, classes=[0]))
        records.append(record(setting, "erm (SpinalNet, SAM)", "erm", seed, [0.7, 0.8], 0.8, recalls=(control, 0.9)))
    summary = summarise_claim(claim, records, tmp_path, HOST)
    gain = summary["settings"][setting]["augmented"]["mdgan (worst class on val)"]["after_minus_before"]
    assert gain["diff"] == pytest.approx(0.22) and gain["t_p"] < 0.05  # fine-tuning raised the class's recall...
    extra = summary["extra_tests"][0]  # against erm, both at their selected epochs: beside the claim
    assert (extra["metric"], extra["versus"], extra["diff"]) == ("augmented_recall", "erm (SpinalNet, SAM)",
                                                                 pytest.approx(-0.15))
    assert extra["grade"] == "not reproduced"  # ...but below the same budget without the GAN, significantly
    assert f"no paired runs yet (inconclusive until run): mdgan (worst class on val) vs {MDGAN_REAL}" in \
        summary["verdict_line"] and summary["verdict"] == "inconclusive"


PLAIN = [0.870, 0.860, 0.870]


@pytest.mark.parametrize("imet, erm, expected", [
    ([0.880, 0.900, 0.860], PLAIN, "inconclusive"),  # right direction, interval far wider than the 1.6-point claim
    ([0.874, 0.858, 0.873], PLAIN, "not reproduced"),  # right direction, but the interval excludes the 1.6 points
    ([0.880, 0.882, 0.879], [0.860, 0.861, 0.862], "partly"),  # a significant gain, but 90.2% is above our interval
    ([0.900, 0.905, 0.898], [0.880, 0.884, 0.879], "reproduced"),  # a significant gain, 90.2% inside our interval
    ([0.860, 0.850, 0.865], PLAIN, "not reproduced"),  # below erm
])
def test_imet_verdicts(tmp_path, imet, erm, expected):
    claim = CLAIMS["imet-pneumonia"]
    records = _accuracy_records(claim, {"imet (errors on val)": imet, "erm": erm, IMET_OVERSAMPLE: erm})
    summary = summarise_claim(claim, records, tmp_path, HOST)
    assert [t["versus"] for t in summary["claim_tests"]] == ["erm", IMET_OVERSAMPLE]  # balancing alone decides too
    assert summary["verdict"] == expected, summary["verdict_line"]


def test_grades_of_one_comparison():
    row = {"diff": 0.01, "diff_low": -0.04, "diff_high": 0.06, "t_p": 0.3, "effect": 0.016}
    assert grade_comparison(row) == "inconclusive"  # holds both 0 and the effect
    assert grade_comparison({**row, "effect": None}) == "inconclusive"  # no size stated: nothing to exclude
    assert grade_comparison({**row, "diff_low": 0.001, "diff_high": 0.019, "t_p": 0.04}) == "reproduced"
    assert grade_comparison({**row, "diff_low": 0.001, "diff_high": 0.012, "t_p": 0.04}) == "partly"  # smaller
    assert grade_comparison({**row, "diff": 0.01, "lower_is_better": True}) == "inconclusive"
    assert grade_comparison({**row, "diff": 0.003, "diff_low": -0.006, "diff_high": 0.012}) == "not reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "partly"]) == combine(["inconclusive", "partly"]) == "partly"
    assert combine(["reproduced", "not reproduced"]) == combine(["partly", "not reproduced"]) == "not reproduced"


# ---------------------------------------------------------------- rules that fail on the earlier ones

def test_a_conjunction_is_graded_by_intersection_union_without_holm():
    """Three parts each significant at alpha (p ~ 0.022, learn2mix's case): the claim is reproduced; Holm over
    the three (0.067) made it "partly" before, though an intersection-union test is already at level alpha."""
    rows = [{"diff": -7.4, "diff_low": -13.1, "diff_high": -1.7, "t_p": 0.022, "lower_is_better": True,
             "effect": effect} for effect in (6, 4, 5)]
    assert combine([grade_comparison(r) for r in rows]) == "reproduced"


def test_not_reproduced_only_when_the_interval_excludes_the_claimed_effect():
    """A mean a hair the wrong way (LOW's batch-mean arm: +0.0001) with an interval that holds the effect is
    inconclusive, not "not reproduced"; a right-way mean whose interval excludes the effect is not reproduced."""
    wrong_way = {"diff": 0.0001, "diff_low": -0.02, "diff_high": 0.02, "t_p": 0.9, "lower_is_better": True,
                 "effect": 0.01}
    assert grade_comparison(wrong_way) == "inconclusive"
    right_way_too_small = {"diff": 0.001, "diff_low": -0.002, "diff_high": 0.004, "t_p": 0.3, "effect": 0.016}
    assert grade_comparison(right_way_too_small) == "not reproduced"


def test_zero_variance_differences_get_an_exact_test_never_nan():
    six = paired_test([0.9] * 6, [0.8] * 6)
    assert six.exact and six.t_p == pytest.approx(2 / 2 ** 6)  # the exact sign-flip p
    assert six.difference.low == pytest.approx(0.1) == six.difference.high  # significant: the value itself
    five = paired_test([0.9] * 5, [0.8] * 5)
    assert five.t_p == pytest.approx(2 / 2 ** 5) and math.isinf(five.difference.low)  # no sign pattern significant
    assert paired_test([0.5] * 4, [0.5] * 4).t_p == 1.0


def test_detectable_effect_and_seeds_to_resolve_follow_the_spread():
    assert minimal_detectable_effect(0.01, 5) == pytest.approx(0.0168, abs=5e-4)  # noncentral t, 80% power
    assert minimal_detectable_effect(0.01, 20) < minimal_detectable_effect(0.01, 5)
    assert seeds_to_resolve(0.01, 0.016) == 9 and seeds_to_resolve(0.0, 0.016) == 6  # exact test: 2/2^6 < 0.05
    assert math.isinf(minimal_detectable_effect(0.0, 5)) and minimal_detectable_effect(0.0, 6) == 0
    assert seeds_to_resolve(0.01, None) is None


def test_every_deciding_comparison_states_its_papers_effect():
    effects = {name: [c.effect for c in family] for name, family in FAMILIES.items()}
    assert effects["learn2mix-mnist"] == [6, 4, 5] and effects["imet-pneumonia"] == [0.016, 0.016]
    assert 0.004 in effects["mdgan-medmnist"] and effects["low-mnist"] == [0.01] * 3
    assert all(c.effect_source for family in FAMILIES.values() for c in family)


def test_intervals_of_bounded_metrics_stay_inside_their_range(tmp_path):
    claim = CLAIMS["imet-pneumonia"]
    setting = claim.settings[0].label
    records = [record(setting, arm, arm.split()[0], seed, [0.5, 0.9], acc, recalls=(0.5, recall))
               for arm, accs, recalls in (("imet (errors on val)", (0.99, 0.95, 0.99), (0.9, 1.0, 1.0)),
                                          ("erm", (0.55, 0.95, 0.60), (0.1, 0.9, 0.2)))
               for seed, acc, recall in zip((1, 2, 3), accs, recalls)]
    summary = summarise_claim(claim, records, tmp_path, HOST)
    arms = summary["settings"][setting]["arms"]
    recall = arms["imet (errors on val)"]["test"]["per_class_recall"][1]
    assert recall["high"] == 1.0 and recall["clipped"] and recall["mean"] + recall["half_width"] > 1  # t alone: > 1
    assert all(0.0 <= e[k] <= 1.0 for arm in arms.values()
               for e in arm["test"]["per_class_recall"] + [arm["test"]["acc"]] for k in ("low", "high"))
    assert all(-1.0 <= row[k] <= 1.0 for row in summary["claim_tests"] for k in ("diff_low", "diff_high"))
    assert "clipped" in summary["interval"] and summary["interval"] in (tmp_path / "summary.md").read_text()


def test_low_summary_shows_the_chosen_lambda_and_how_far_low_moved_the_weights(tmp_path):
    claim = CLAIMS["low-mnist"]
    setting = claim.settings[0].label
    records = []
    for seed in (1, 2, 3):
        for arm, spread in (("low", 1e-5), ("low (our units)", 0.2), ("erm", None)):
            run = record(setting, arm, arm.split()[0], seed, [0.5, 0.9], 0.95)
            if spread is not None:
                for epoch, h in enumerate(run["history"]):
                    h["method"] = {"weight_std": spread * (epoch + 1)}
                run["protocol"]["selected"] = f"lam={seed / 10}"
            records.append(run)
    summary = summarise_claim(claim, records, tmp_path, HOST)
    arms = summary["settings"][setting]["arms"]
    assert arms["low"]["weight_std"]["mean"] == pytest.approx(1.5e-5)  # mean over epochs, then over seeds
    assert arms["low"]["grid_choice"] == ["lam=0.1", "lam=0.2", "lam=0.3"]
    assert "weight_std" not in arms["erm"] and "grid_choice" not in arms["erm"]
    text = (tmp_path / "summary.md").read_text()
    assert "| low | lam=0.1, lam=0.2, lam=0.3 | 0.000015" in text and "| paper | ours | why they differ |" in text


def test_tuned_verdict_searches_every_arm_with_the_same_budget_and_runs_the_chosen_values(tmp_path):
    """Each arm's search is the ordinary ``focustune sweep`` (same trials, ASHA, searched keys left free, the rest
    of the protocol fixed); its chosen values become the arm's options for the claim's seeds; a finished search
    is not run again."""
    from focustune.run_config import RunConfig
    from tuned import tune_claim

    claim, sweeps = CLAIMS["imet-pneumonia"], []

    def fake_sweep(argv):
        sweeps.append(argv)
        assert build_parser().parse_args(argv).command == "sweep"  # a plain `focustune sweep` command line
        method, out = argv[argv.index("--methods") + 1], argv[argv.index("--config-out") + 1]
        RunConfig(method=method, dataset="pneumoniamnist", params={"lr": 0.003, "batch_size": 64, "model": "x"},
                  source={"val_score": 0.9}).write(out)
        return 0

    tuned, code = tune_claim(claim, "D", tmp_path, trials=7, execute=fake_sweep)
    assert code == 0 and len(sweeps) == len(claim.arms)
    for argv in sweeps:
        sets = {argv[i + 1].partition("=")[0] for i, a in enumerate(argv) if a == "--set"}
        assert argv[argv.index("--trials") + 1] == "7" and argv[argv.index("--scheduler") + 1] == "asha"
        assert "model" in sets and not sets & {"lr", "batch_size", "weight_decay"}  # searched keys stay free
    run_argv = tuned.argv(claim.settings[0], tuned.arms[0], 3, "D", False)
    assert "lr=0.003" in run_argv and "model=imet_cnn" in run_argv and "model=x" not in run_argv
    assert {r["trials"] for r in tuned.extra["tuning"]} == {7} and tuned.extra["tuning"][0]["chosen"] == {
        "lr": 0.003, "batch_size": 64}
    assert tune_claim(claim, "D", tmp_path, trials=7, execute=fake_sweep)[1] == 0 and len(sweeps) == len(claim.arms)


def test_a_mechanism_control_runs_with_the_methods_tuned_values_and_has_no_search_of_its_own(tmp_path):
    """mdgan's real-image twin isolates the GAN in the tuned verdict too: it runs with mdgan's chosen values."""
    from focustune.run_config import RunConfig
    from focustune_analysis.reproduction_verdicts import MDGAN_ARM, _tuning_lines
    from tuned import tune_claim

    claim, searched = CLAIMS["mdgan-medmnist"], []

    def fake_sweep(argv):
        out = argv[argv.index("--config-out") + 1]
        searched.append(out)
        RunConfig(method=argv[argv.index("--methods") + 1], dataset="pneumoniamnist",
                  params={"lr": 0.02 + 0.001 * len(searched), "head": "linear", "finetune_epochs": 3},
                  source={}).write(out)
        return 0

    tuned, code = tune_claim(claim, "D", tmp_path, trials=2, execute=fake_sweep)
    pairs = [(s, a) for s in claim.settings for a in claim.arms if not a.settings or s.label in a.settings]
    assert code == 0 and len(searched) == len(pairs) - len(claim.settings)  # the twin's searches are not run
    for setting in claim.settings:
        rows = {r["arm"]: r for r in tuned.extra["tuning"] if r["setting"] == setting.label}
        assert rows[MDGAN_REAL]["trials"] == 0 and rows[MDGAN_REAL]["as"] == MDGAN_ARM
        assert (rows[MDGAN_REAL]["chosen"], rows[MDGAN_REAL]["sweep"]) == (rows[MDGAN_ARM]["chosen"],
                                                                       rows[MDGAN_ARM]["sweep"])
        method, twin = (next(a for a in tuned.arms if a.label == label) for label in (MDGAN_ARM, MDGAN_REAL))
        twin_argv, method_argv = (tuned.argv(setting, arm, 1, "D", False) for arm in (twin, method))
        assert "augment_with=real" in twin_argv and "augment_with=real" not in method_argv
        assert [w for w in twin_argv if w.startswith(("lr=", "head=", "finetune_epochs="))] == [
            w for w in method_argv if w.startswith(("lr=", "head=", "finetune_epochs="))]
    lines = "\n".join(_tuning_lines(tuned.extra["tuning"]))
    assert f"none: runs with `{MDGAN_ARM}`'s chosen values" in lines


def test_an_erm_control_trained_with_sam_searches_sams_learning_rates_as_mdgan_does(tmp_path):
    from focustune.methods import get_method
    from focustune.spaces import load_space
    from focustune_analysis.reproduction_verdicts import MDGAN_ARM, MDGAN_CONTROL, MDGAN_SELU_CONTROL
    from tuned import search_space, sweep_argv

    claim = CLAIMS["mdgan-medmnist"]
    arms = {arm.label: arm for arm in claim.arms}
    mdgan_lr = search_space(arms[MDGAN_ARM]).dimensions["lr"]
    shared_lr = load_space(get_method("erm")).dimensions["lr"]
    for label in (MDGAN_CONTROL, MDGAN_SELU_CONTROL):
        arm = arms[label]
        assert "optimizer=sam" in arm.options
        lr = search_space(arm).dimensions["lr"]
        assert (lr.low, lr.high) == (mdgan_lr.low, mdgan_lr.high) != (shared_lr.low, shared_lr.high)
        argv = sweep_argv(claim, claim.settings[0], arm, tmp_path, "D", 4)
        parsed = build_parser().parse_args(argv)
        assert parsed.command == "sweep" and argv[argv.index("--space") + 1].startswith("erm=")
    for arm in claim.arms:  # every other arm trained with SAM is mdgan, whose own space ranges SGD's rates
        if "optimizer=sam" in " ".join(arm.options) and arm.method != "mdgan":
            assert arm.space, arm.label


@pytest.mark.parametrize("name", CLAIMS)
def test_the_keys_that_define_an_arm_are_its_options_and_fixed_in_its_search(name):
    """An arm named for a setting of a searched key (LOW's unit, mdgan's SELU head, the class-weighted focal)
    defines it: its search keeps the protocol's value instead of ranging over it."""
    from tuned import fixed_sets, searched_keys, tuned_keys

    claim = CLAIMS[name]
    for arm in claim.arms:
        options = dict(item.partition("=")[::2] for item in arm.options[1::2])
        for key in arm.defines:
            assert key in options and key in searched_keys(arm) and key not in tuned_keys(arm), arm.label
            assert f"{key}={options[key]}" in fixed_sets(claim, arm)
        if "weighted" in arm.label and arm.method == "focal":
            assert arm.defines == ("alpha",)


def test_tuned_search_keeps_the_key_that_defines_an_arm_fixed(tmp_path):
    """LOW's space ranges over ``lam_unit``; the per-sample and batch-mean arms each search with their own unit,
    and a conditional key whose condition fails is not reported as chosen."""
    from focustune.run_config import RunConfig
    from tuned import tune_claim

    claim, units = CLAIMS["low-mnist"], {}

    def fake_sweep(argv):
        sets = dict(argv[i + 1].partition("=")[::2] for i, a in enumerate(argv) if a == "--set")
        units[argv[argv.index("--config-out") + 1]] = sets.get("lam_unit")
        RunConfig(method=argv[argv.index("--methods") + 1], dataset="mnist",
                  params={"lr": 0.01, "lam": 0.5, "lam_unit": sets.get("lam_unit", "ours"), "base_loss": "ce",
                          "gamma": 2.0},
                  source={}).write(argv[argv.index("--config-out") + 1])
        return 0

    tuned, code = tune_claim(claim, "D", tmp_path, trials=3, execute=fake_sweep)
    assert code == 0 and sorted(u for u in units.values() if u) == ["authors_code", "ours"]
    per_sample = next(r for r in tuned.extra["tuning"] if r["arm"] == LOW_PER_SAMPLE)
    # gamma acts only with base_loss=focal: it is not reported as chosen, and the runs keep its value
    assert "lam_unit" not in per_sample["searched"] and "gamma" in per_sample["searched"]
    assert per_sample["chosen"] == {"lam": 0.5, "lr": 0.01, "base_loss": "ce"}
    arm = next(a for a in tuned.arms if a.label == LOW_PER_SAMPLE)
    argv = tuned.argv(claim.settings[0], arm, 1, "D", False)
    assert "lam_unit=ours" in argv and "gamma=2.0" in argv
