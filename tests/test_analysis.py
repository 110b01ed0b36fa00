"""focustune_analysis on a small fixture of runs logged into a real MLflow sqlite store (no Ray).

The fixture follows the sweep's MLflow schema (focustune.tracking.trial_runs, study_runs): per (dataset, method)
a study run, search trials (seed 0) and seed re-runs (seeds 1..K) nested under it, with params,
per-epoch metrics (step = epoch), final metrics and a confusion-matrix artifact.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from focustune.cli import compare as compare_command
from focustune.errors import ConfigError
from focustune.records import KIND_KEY, SEED_KEY, STUDY_KEY, TrialReport
from focustune.tracking.summary_run import log_summary_run
from focustune.tracking.trial_runs import TrialRuns
from focustune.tracking_schema import study_key
from focustune_analysis import (build_report, collect_runs, compare_to_baseline, cross_dataset_table, epochs_to_target,
                                friedman_nemenyi, holm, leaderboard, mean_curves,
                                pairwise_comparisons, param_importance, rank_across_datasets, search_progress,
                                small_sample_note, wilcoxon_floor)
from focustune_analysis import plots

OFFSETS = {"balanced_acc": 0.0, "acc": 0.01, "macro_f1": -0.01, "auc": 0.03, "worst_class_recall": -0.2}
T_975 = {2: 4.302653, 4: 2.776445, 5: 2.570582}  # Student t quantiles (textbook tables)
CURVE = (0.5, 0.8, 0.9, 0.88)  # validation curve shape: 95% of its best (0.855) first reached at epoch 3


class Logger:
    """Writes runs as the sweep does (trials and re-runs through its own writer); start times are
    explicit so trial order is known."""

    def __init__(self, client, experiment_id: str, sweep_id: str = "sweep1"):
        self.client, self.experiment_id, self.sweep_id = client, experiment_id, sweep_id
        self.uri = client.tracking_uri
        self.clock = 1_700_000_000_000

    @classmethod
    def in_new_store(cls, root, experiment: str) -> Logger:
        """A Logger writing to a new experiment of a new sqlite store under folder ``root``."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        return cls(client, client.create_experiment(experiment, artifact_location=(root / "a").as_uri()))

    def _tick(self) -> int:
        self.clock += 1000
        return self.clock

    def _tags(self, dataset: str, method: str, kind: str) -> dict[str, str]:
        return {"focustune.kind": kind, "focustune.dataset": dataset, "focustune.method": method,
                "focustune.sweep_id": self.sweep_id, "focustune.study": f"{dataset}/{method}",
                "focustune.epochs": str(len(CURVE)), "focustune.scheduler": "asha"}

    def study(self, dataset: str, method: str, best: dict) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, start_time=self._tick(),
                                     tags=self._tags(dataset, method, "study"), run_name=f"{dataset}-{method}")
        params = {"method": method, "dataset": dataset, "trials": 6, "epochs": len(CURVE), "seeds": 6,
                  "scheduler": "asha", **{f"best.{k}": v for k, v in best.items()}}
        self.client.log_batch(run.info.run_id, params=[Param(k, "none" if v is None else str(v))
                                                       for k, v in params.items()])
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def run(self, parent: str, dataset: str, method: str, kind: str, seed: int, hp: dict, status: str = "FINISHED",
            test: float | None = None, val: float | None = None, epochs: int = len(CURVE),
            finals: dict | None = None, mechanism_epoch: int = 1, best_phase: str = "train",
            artifacts: dict | None = None) -> str:
        """One trial or re-run, written by the sweep's own writer (:class:`TrialRuns`) from the reports a
        trial makes; ``test``/``val`` set every test_/best_val_ metric (plus OFFSETS); ``finals`` adds or
        replaces final metrics (``best_epoch``, ``after_mechanism_*``, ...); ``artifacts`` are the files a
        finished trial reports (name -> JSON text or a dict)."""
        trial_id = f"t{self._tick()}"
        params = {"method": method, "dataset": dataset, "seed": seed, "epochs": len(CURVE), "batch_size": 64,
                  "optimizer": "adam", "selection_metric": "balanced_acc", **hp}
        writer = TrialRuns(self.uri, self.experiment_id, {study_key(dataset, method): parent},
                           {"sweep_id": self.sweep_id, "epochs": str(len(CURVE)), "scheduler": "asha"},
                           params_for=lambda config: params)
        writer._client = ClockedClient(self.client, self._tick)  # explicit start times: the trial order is known
        writer.trial_started(trial_id, {STUDY_KEY: study_key(dataset, method), KIND_KEY: kind, SEED_KEY: seed})
        level = val if val is not None else (test if test is not None else 0.5)
        report = None
        for epoch in range(1, epochs + 1):
            value, best = level * CURVE[epoch - 1] / max(CURVE), level * max(CURVE[:epoch]) / max(CURVE)
            report = TrialReport(epoch=epoch, total_epochs=len(CURVE), objective=best,
                                 busy_since=0.0, busy_until=0.0, node_id="node", mechanism_epoch=mechanism_epoch,
                                 scalars={"train_loss": 1.0 / epoch, **{f"val_{m}": value for m in OFFSETS}})
            if epoch < epochs or status != "FINISHED":  # a finished trial's last result is its final report
                writer.epoch_reported(trial_id, report.to_result())
        if status == "FINISHED":
            scalars = {**{f"best_val_{m}": level + offset for m, offset in OFFSETS.items()},
                       **({f"test_{m}": test + offset for m, offset in OFFSETS.items()} if test is not None else {}),
                       **({"test_recall_class_0": test + 0.1, "test_recall_class_1": test - 0.1} if test is not None
                          else {})}
            finals = {"best_epoch": 3, **(finals or {})}
            best_epoch = int(finals.pop("best_epoch"))
            report = replace(report, full_budget=True, best_epoch=best_epoch, best_phase=best_phase,
                             scalars={**report.scalars, **scalars, **finals},
                             test_confusion_matrix=[[8, 2], [1, 9]] if kind == "seed_rerun" else None,
                             artifacts=artifacts)
            writer.epoch_reported(trial_id, report.to_result())  # as Tune does: a result, then the trial's end
        elif status == "FAILED":
            report = replace(report, diverged=True, failed_reason="training diverged (NaN loss)")
        if status != "RUNNING":
            writer.trial_completed(trial_id, report.to_result())
        assert writer.stop(wait_s=10) and not writer.failed
        return writer.runs[trial_id]


class ClockedClient:
    """An MLflow client whose new runs start at the times ``tick`` gives (all else is the client's)."""

    def __init__(self, client, tick):
        self._client, self._tick = client, tick

    def create_run(self, *args, **kwargs):
        return self._client.create_run(*args, start_time=self._tick(), **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


ERM = [0.70, 0.74, 0.68, 0.72, 0.75, 0.69]  # test balanced accuracy of erm's seeds 1..6
LOW_GAIN = [0.10, 0.11, 0.09, 0.105, 0.095, 0.10]  # low = erm + this, seed by seed
FOCAL_NOISE = [0.01, -0.01, 0.005, -0.006, 0.002]  # focal ~ erm (seeds 1..5; seed 6 failed)
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2]
# Experiment "across": test balanced accuracy of seeds 1, 2 per dataset and method. On d1, b and c tie
# (same values); d runs on d1 and d2 only.
ACROSS = {"d1": {"a": [0.80, 0.82], "b": [0.70, 0.72], "c": [0.72, 0.70], "d": [0.90, 0.90]},
          "d2": {"a": [0.60, 0.64], "b": [0.66, 0.70], "c": [0.50, 0.52], "d": [0.40, 0.44]},
          "d3": {"a": [0.90, 0.91], "b": [0.85, 0.86], "c": [0.88, 0.80]}}


def _log_main(logger: Logger) -> None:
    """Dataset tiny: erm, low (clearly better), focal (equal), mdgan (no re-runs); tiny2: erm, low, focal."""
    rng = np.random.default_rng(0)
    for dataset, seeds in (("tiny", 6), ("tiny2", 3)):
        shift = 0.0 if dataset == "tiny" else -0.1
        tests = {"erm": [v + shift for v in ERM],
                 "low": [v + shift + g for v, g in zip(ERM, LOW_GAIN)],
                 "focal": [v + shift + n for v, n in zip(ERM, FOCAL_NOISE)]}
        for method, own in (("erm", {}), ("low", {"lam": 0.5}), ("focal", {"gamma": 2.0, "alpha": None})):
            parent = logger.study(dataset, method, {"lr": 1e-3, "weight_decay": 1e-5, **own})
            for i, lr in enumerate(LRS if dataset == "tiny" else LRS[:2]):  # score driven by lr, not weight decay
                trial_own = {k: (v * (i + 1) if isinstance(v, float) else v) for k, v in own.items()}
                logger.run(parent, dataset, method, "trial", 0, {"lr": lr, "weight_decay": float(rng.uniform(0, 1e-3)),
                                                                 **trial_own}, val=0.5 + 0.05 * i, test=0.6)
            order = list(range(1, seeds + 1))[::-1] if method == "low" else range(1, seeds + 1)  # pairing by seed
            for seed in order:
                status = "FAILED" if (method == "focal" and seed == 6) else "FINISHED"
                logger.run(parent, dataset, method, "seed_rerun", seed, {"lr": 1e-3, "weight_decay": 1e-5, **own},
                           status=status, test=tests[method][seed - 1] if status == "FINISHED" else None)
    parent = logger.study("tiny", "mdgan", {"lr": 1e-3, "gan_classes": 2})
    logger.run(parent, "tiny", "mdgan", "trial", 0, {"lr": 1e-3, "gan_classes": 1}, val=0.80, test=0.60)
    logger.run(parent, "tiny", "mdgan", "trial", 0, {"lr": 2e-3, "gan_classes": 2}, val=0.70, test=0.90)
    logger.run(parent, "tiny", "mdgan", "trial", 0, {"lr": 3e-3, "gan_classes": 3}, status="KILLED", val=0.95,
               epochs=2)
    logger.run(parent, "tiny", "mdgan", "trial", 0, {"lr": 4e-3, "gan_classes": 3}, status="FAILED", val=0.1, epochs=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    artifacts = (root / "artifacts").as_uri()
    experiments = {name: client.create_experiment(name, artifact_location=f"{artifacts}/{name}")
                   for name in ("cmp", "small", "solo", "pending", "across")}
    _log_main(Logger(client, experiments["cmp"]))
    old = Logger(client, experiments["cmp"], sweep_id="old")  # an earlier sweep of tiny2/erm, superseded
    old.clock -= 10_000_000
    old.run(old.study("tiny2", "erm", {"lr": 1e-3}), "tiny2", "erm", "seed_rerun", 1, {"lr": 1e-3}, test=0.1)
    small = Logger(client, experiments["small"])
    for method, gain in (("erm", 0.0), ("low", 0.05)):
        parent = small.study("tiny", method, {"lr": 1e-3})
        small.run(parent, "tiny", method, "trial", 0, {"lr": 1e-3}, val=0.7)
        for seed in (1, 2, 3):
            small.run(parent, "tiny", method, "seed_rerun", seed, {"lr": 1e-3}, test=ERM[seed - 1] + gain)
    solo = Logger(client, experiments["solo"])
    solo.run(solo.study("tiny", "erm", {"lr": 1e-3}), "tiny", "erm", "seed_rerun", 1, {"lr": 1e-3}, test=0.7)
    across = Logger(client, experiments["across"])
    for dataset, methods in ACROSS.items():
        for method, tests in methods.items():
            parent = across.study(dataset, method, {"lr": 1e-3})
            for seed, test in enumerate(tests, start=1):
                across.run(parent, dataset, method, "seed_rerun", seed, {"lr": 1e-3}, test=test)
    pending = Logger(client, experiments["pending"])
    parent = pending.study("tiny", "erm", {"lr": 1e-3})
    pending.run(parent, "tiny", "erm", "trial", 0, {"lr": 1e-3}, status="RUNNING", epochs=1)
    pending.run(parent, "tiny", "erm", "trial", 0, {"lr": 2e-3}, status="FAILED", epochs=1)
    return uri


@pytest.fixture(scope="module")
def cmp(store):
    return collect_runs("cmp", store)


@pytest.fixture(scope="module")
def report(cmp, tmp_path_factory):
    return build_report(cmp, tmp_path_factory.mktemp("report") / "out")


# ---------------------------------------------------------------- collection

def test_tidy_table_has_one_row_per_trial_and_rerun_with_typed_hyperparameters(cmp):
    runs = cmp.runs
    tiny = runs[runs["dataset"] == "tiny"]
    assert sorted(cmp.datasets) == ["tiny", "tiny2"]
    assert len(tiny[tiny["kind"] == "trial"]) == 3 * 6 + 4 and len(tiny[tiny["kind"] == "seed_rerun"]) == 3 * 6
    assert set(runs["kind"]) == {"trial", "seed_rerun"}  # study runs live in cmp.studies
    assert len(cmp.studies) == 7 and cmp.studies.set_index(["dataset", "method"]).loc[("tiny", "low"), "best"] == \
        {"lr": 1e-3, "weight_decay": 1e-5, "lam": 0.5}
    focal = tiny[(tiny["method"] == "focal") & (tiny["kind"] == "seed_rerun")].set_index("seed")
    assert focal.loc[6, "status"] == "FAILED" and "diverged" in focal.loc[6, "failed_reason"]
    assert focal.loc[2, "test_balanced_acc"] == pytest.approx(ERM[1] + FOCAL_NOISE[1])
    assert focal.loc[2, "hp.batch_size"] == 64 and focal.loc[2, "hp.lr"] == 1e-3 and pd.isna(focal.loc[2, "hp.alpha"])
    killed = tiny[(tiny["method"] == "mdgan") & (tiny["status"] == "KILLED")].iloc[0]
    assert killed["stopped_early"] and killed["epochs_done"] == 2 and math.isnan(killed["test_balanced_acc"])
    assert len(tiny[tiny["method"] == "mdgan"]) == 4


def test_only_the_latest_sweep_of_a_study_is_kept(cmp):
    tiny2_erm = cmp.runs[(cmp.runs["dataset"] == "tiny2") & (cmp.runs["method"] == "erm")]
    assert set(tiny2_erm["sweep_id"]) == {"sweep1"} and len(tiny2_erm) == 2 + 3
    assert any("superseded" in note for note in cmp.notes)


def test_selection_uses_reruns_else_the_best_validation_trial_never_test(cmp):
    chosen = cmp.selected("tiny")
    assert sorted(chosen.loc[chosen["method"] == "erm", "seed"]) == [1, 2, 3, 4, 5, 6]
    assert sorted(chosen.loc[chosen["method"] == "focal", "seed"]) == [1, 2, 3, 4, 5]  # seed 6 failed
    mdgan = chosen[chosen["method"] == "mdgan"]
    # best validation (0.80) wins over the better test (0.90) and over the stopped-early trial's 0.95
    assert len(mdgan) == 1 and mdgan.iloc[0]["hp.gan_classes"] == 1 and mdgan.iloc[0]["selected_as"] == \
        "best search trial"


def test_history_is_long_per_epoch_and_curves_average_over_seeds(cmp):
    history = cmp.history
    run_id = cmp.selected("tiny").query("method == 'erm' and seed == 1")["run_id"].iloc[0]
    curve = history[(history["run_id"] == run_id) & (history["metric"] == "val_balanced_acc")]
    assert list(curve["epoch"]) == [1, 2, 3, 4]
    assert list(curve["value"]) == pytest.approx([ERM[0] * v / max(CURVE) for v in CURVE])
    curves = mean_curves(cmp, "val_balanced_acc").set_index(["dataset", "method", "epoch"])
    assert curves.loc[("tiny", "erm", 2), "mean"] == pytest.approx(statistics.fmean(ERM) * CURVE[1] / max(CURVE))
    assert curves.loc[("tiny", "erm", 2), "n"] == 6
    reached = epochs_to_target(cmp, "val_balanced_acc", 0.95)
    assert set(reached["epoch"]) == {3}  # 0.88/0.9 and 0.9/0.9 pass 95%, 0.8/0.9 does not
    assert set(epochs_to_target(cmp, "val_balanced_acc", 0.85)["epoch"]) == {2}


# ---------------------------------------------------------------- leaderboard and tests

def test_leaderboard_matches_hand_computed_mean_se_and_t_interval(cmp):
    board = leaderboard(cmp).set_index(["dataset", "method"])
    erm = board.loc[("tiny", "erm")]
    mean, se = statistics.fmean(ERM), statistics.stdev(ERM) / math.sqrt(6)
    assert erm["n"] == 6 and erm["source"] == "seed re-runs"
    assert erm["balanced_acc"] == pytest.approx(mean) and erm["balanced_acc_se"] == pytest.approx(se)
    assert erm["balanced_acc_low"] == pytest.approx(mean - T_975[5] * se, abs=1e-6)
    assert erm["auc"] == pytest.approx(mean + 0.03)  # the fixture offsets auc by 0.03
    focal = board.loc[("tiny", "focal")]
    assert focal["n"] == 5 and focal["balanced_acc_high"] == pytest.approx(
        statistics.fmean(focal_values := [e + n for e, n in zip(ERM, FOCAL_NOISE)])
        + T_975[4] * statistics.stdev(focal_values) / math.sqrt(5), abs=1e-6)
    mdgan = board.loc[("tiny", "mdgan")]
    assert mdgan["n"] == 1 and mdgan["source"] == "best search trial" and math.isnan(mdgan["balanced_acc_se"])
    assert "lam=" in board.loc[("tiny", "low"), "config"] and "lr=" in board.loc[("tiny", "low"), "config"]
    ours = leaderboard(cmp).query("dataset == 'tiny'")
    assert ours["method"].iloc[0] == "low"  # sorted by the primary metric


def test_published_reference_rows_appear_for_known_datasets(cmp):
    import dataclasses

    from focustune_analysis.collect import Collection

    renamed = dataclasses.replace(cmp, runs=cmp.runs.replace({"dataset": {"tiny": "pneumoniamnist"}}))
    assert isinstance(renamed, Collection)
    board = leaderboard(renamed)
    refs = board[(board["dataset"] == "pneumoniamnist") & (board["source"] == "published")].set_index("method")
    assert refs.loc["ResNet-18 (28)", "auc"] == 0.944 and refs.loc["ResNet-18 (28)", "acc"] == 0.854
    assert refs.loc["IMET (~30k-param CNN)", "acc"] == 0.902 and "MedMNIST v2" in refs.loc["AutoKeras", "config"]
    assert board[(board["dataset"] == "tiny2") & (board["source"] == "published")].empty


def test_clearly_better_method_is_significant_with_the_right_sign_and_equal_one_is_not(cmp):
    table = compare_to_baseline(cmp, "balanced_acc", "erm").set_index(["dataset", "method"])
    low = table.loc[("tiny", "low")]
    assert low["n"] == 6 and low["diff"] == pytest.approx(statistics.fmean(LOW_GAIN))
    assert low["diff_low"] > 0 and low["t_p"] < 0.001 and low["significant"]
    assert low["wilcoxon_p"] == pytest.approx(wilcoxon_floor(6))  # all six differences positive
    focal = table.loc[("tiny", "focal")]
    assert focal["n"] == 5 and focal["seeds"] == "1,2,3,4,5"  # seed 6 failed: paired seeds only
    assert focal["diff"] == pytest.approx(statistics.fmean(FOCAL_NOISE)) and not focal["significant"]
    assert focal["diff_low"] < 0 < focal["diff_high"] and focal["t_p"] > 0.5
    assert "no seed re-runs of mdgan" in table.loc[("tiny", "mdgan"), "note"]
    assert (table["t_p_holm"].dropna() >= table["t_p"].dropna()).all()
    reversed_pairs = pairwise_comparisons(cmp).set_index(["dataset", "method", "versus"])
    assert reversed_pairs.loc[("tiny", "low", "erm"), "diff"] > 0  # better mean first
    assert ("tiny", "erm", "low") not in reversed_pairs.index


def test_holm_wilcoxon_floor_and_small_sample_statement():
    assert list(holm([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.02, math.nan])[1]) and holm([0.02, math.nan])[0] == pytest.approx(0.02)
    assert wilcoxon_floor(5) == pytest.approx(0.0625) and wilcoxon_floor(6) == pytest.approx(0.03125)
    assert "Wilcoxon cannot reach p<0.05" in small_sample_note(3) and "n=3" in small_sample_note(3)
    assert "cannot reach" not in small_sample_note(6) and small_sample_note(12) == ""


def test_ranking_across_datasets_uses_methods_present_everywhere(cmp):
    ranking = rank_across_datasets(cmp)
    assert list(ranking.scores.columns) == ["erm", "focal", "low"]  # mdgan only ran on tiny
    assert ranking.average_rank.index[0] == "low" and ranking.average_rank["low"] == 1.0
    assert 0 < ranking.friedman_p <= 1 and ranking.critical_difference > 0
    assert "N=2 datasets" in ranking.note


def test_table_across_datasets_is_mean_and_se_per_dataset_with_average_and_average_rank(store):
    table = cross_dataset_table(collect_runs("across", store, history_of="none")).set_index("method")
    for dataset, methods in ACROSS.items():
        for method, tests in methods.items():
            row = table.loc[method]
            assert row[dataset] == pytest.approx(statistics.fmean(tests))
            assert row[f"{dataset}_se"] == pytest.approx(statistics.stdev(tests) / math.sqrt(2))
            assert row[f"{dataset}_n"] == 2
    assert table.loc["a", "avg"] == pytest.approx(statistics.fmean(statistics.fmean(ACROSS[d]["a"]) for d in ACROSS))
    # ranks among a, b, c (d misses d3): d1 a 1, b and c tied 2.5; d2 b 1, a 2, c 3; d3 a 1, b 2, c 3
    assert table.loc[["a", "b", "c"], "avg_rank"].tolist() == pytest.approx([(1 + 2 + 1) / 3, (2.5 + 1 + 2) / 3,
                                                                            (2.5 + 3 + 3) / 3])
    assert list(table.index) == ["a", "b", "c", "d"]  # by average rank; d has none
    missing = table.loc["d"]
    assert math.isnan(missing["d3"]) and missing["d3_n"] == 0 and math.isnan(missing["avg"])
    assert math.isnan(missing["avg_rank"]) and missing["d1"] == pytest.approx(0.90)


def test_table_across_datasets_needs_two_datasets_and_a_logged_metric(store):
    small = collect_runs("small", store, history_of="none")
    with pytest.raises(ConfigError, match="needs results on at least 2 datasets; 'small' has 1: tiny"):
        cross_dataset_table(small)
    with pytest.raises(ConfigError, match="no run in 'across' logged test_precision"):
        cross_dataset_table(collect_runs("across", store, history_of="none"), "precision")


def test_critical_difference_groups_join_methods_within_the_cd():
    datasets = [f"d{i}" for i in range(12)]  # m1 > m2 > m3 > m4 everywhere: average ranks 1, 2, 3, 4
    ranking = friedman_nemenyi(pd.DataFrame({"m1": 0.9, "m2": 0.8, "m3": 0.7, "m4": 0.6}, index=datasets))
    assert 1 < ranking.critical_difference < 2  # neighbours join, methods two ranks apart do not
    assert ranking.groups == [["m1", "m2"], ["m2", "m3"], ["m3", "m4"]]
    wide = friedman_nemenyi(pd.DataFrame({"m1": [0.9, 0.8], "m2": [0.8, 0.9], "m3": [0.7, 0.7]}, index=["x", "y"]))
    assert wide.critical_difference > 2 and wide.groups == [["m1", "m2", "m3"]]
    figure = plots.ranking_figure(ranking, plots.Palette(list(ranking.average_rank.index)))
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {"m1 (1.00)", "m4 (4.00)", f"CD = {ranking.critical_difference:.2f}"} <= texts
    bars = [line for line in figure.axes[0].lines if line.get_linewidth() == 4]
    assert sorted(np.mean(line.get_xdata()) for line in bars) == pytest.approx([1.5, 2.5, 3.5])  # one per group


def test_search_progress_counts_only_finished_trials_as_best(cmp):
    progress = search_progress(cmp).query("dataset == 'tiny' and method == 'mdgan'")
    assert list(progress["trial"]) == [1, 2, 3, 4]
    assert list(progress["status"]) == ["FINISHED", "FINISHED", "KILLED", "FAILED"]
    killed = progress.set_index("status").loc["KILLED", "objective"]
    assert killed > 0.80 and list(progress["best_so_far"]) == pytest.approx([0.80] * 4)  # killed one never best
    erm = search_progress(cmp).query("dataset == 'tiny' and method == 'erm'")
    assert erm["best_so_far"].is_monotonic_increasing


def test_importance_ranks_the_hyperparameter_that_drives_the_score(cmp):
    table = param_importance(cmp).query("dataset == 'tiny' and method == 'erm'").set_index("param")
    assert set(table.index) == {"lr", "weight_decay"} and table.loc["lr", "importance"] > \
        table.loc["weight_decay", "importance"]
    tiny2 = param_importance(cmp).query("dataset == 'tiny2' and method == 'erm'")
    assert tiny2["param"].isna().all() and "only 2 finished" in tiny2["note"].iloc[0]


# ---------------------------------------------------------------- report, files, MLflow

EXPECTED_SECTIONS = ["Leaderboard", "Significance", "Convergence", "Per-class results", "Per-class audit against erm",
                     "Calibration", "Hyperparameter search", "Runs"]


def test_report_structure_and_files(report):
    assert report.headings == ["At a glance", "Conclusions", "Dataset: tiny", *EXPECTED_SECTIONS,
                               "Dataset: tiny2", *EXPECTED_SECTIONS, "Across datasets",
                               "How these numbers were computed"]
    text = report.markdown.read_text()
    assert text.startswith("# Method comparison: cmp") and "## Conclusions" in text and "### Significance" in text
    figures = {p.name for p in (report.out / "figures").glob("*.png")}
    for name in ("tiny_leaderboard.png", "tiny_vs_erm.png", "tiny_convergence.png", "tiny_per_class_recall.png",
                 "tiny_confusion.png", "tiny_search_progress.png", "tiny_importance.png", "tiny_slices.png",
                 "tiny2_leaderboard.png", "ranking.png"):
        assert name in figures and f"(figures/{name})" in text
    assert report.html.read_text().count("data:image/png;base64,") == len(figures)
    for name in ("runs", "history", "leaderboard", "comparisons", "across_datasets", "per_class_audit",
                 "recall_by_frequency", "calibration"):
        assert (report.out / f"{name}.csv").is_file()
    assert len(pd.read_csv(report.out / "runs.csv")) == len(report.tables["runs"])
    assert set(pd.read_csv(report.out / "comparisons.csv")["family"]) == {"vs erm", "pairwise"}


def test_table_across_datasets_is_written_as_csv_markdown_and_latex(cmp, report):
    expected = cross_dataset_table(cmp)
    written = pd.read_csv(report.out / "across_datasets.csv")
    assert list(written.columns) == list(expected.columns) and list(written["method"]) == ["low", "focal", "erm",
                                                                                            "mdgan"]
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    low = expected.iloc[0]
    cell = f"{low['tiny']:.3f} ± {low['tiny_se']:.3f}"
    markdown = (report.out / "across_datasets.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "tiny", "tiny2", "Avg", "Avg rank"]
    assert f"| low | **{cell}** |" in markdown and "| mdgan | 0.600 | - | - | - |" in markdown
    assert f"| low | **{cell}** |" in report.markdown.read_text() and f"<b>{cell}</b>" in report.html.read_text()
    latex = (report.out / "across_datasets.tex").read_text().splitlines()
    body = latex[latex.index(r"\midrule") + 1:latex.index(r"\bottomrule")]
    assert latex[latex.index(r"\toprule") - 1] == r"\begin{tabular}{lcccc}"
    assert body[0] == " & ".join(["low", *(rf"\textbf{{{low[d]:.3f} $\pm$ {low[f'{d}_se']:.3f}}}" for d in
                                            ("tiny", "tiny2")), rf"\textbf{{{low['avg']:.3f}}}", r"\textbf{1.00}"]) \
        + r" \\"
    assert all(line.count("&") == 4 for line in body) and body[-1].startswith("mdgan & 0.600 & - & - & -")
    assert {"across_datasets.csv", "across_datasets.md", "across_datasets.tex"} <= {p.name for p in report.files}
    assert "Across datasets (test balanced_acc, mean ± SE):" in report.terminal


def test_report_conclusions_say_it_in_words(report):
    words = "\n".join(report.conclusions)
    assert "low beats erm by +0.100 balanced accuracy (95% CI of the difference +0." in words
    assert "**significant** at α=0.05 after Holm correction" in words
    assert "focal trails erm" in words or "focal beats erm" in words
    assert "mdgan: no finished seed re-runs; its row is its best search trial" in words
    assert "1 stopped early" in words and "1 failed" in words
    assert "Across 2 datasets" in words and "superseded" in words
    assert "low" in report.terminal.splitlines()[3]  # the terminal table lists the best method first


def test_summary_run_is_logged_replaced_and_leaves_other_runs_alone(cmp, report):
    from mlflow.entities import ViewType

    client = cmp.client()
    before = {r.info.run_id for r in client.search_runs([cmp.experiment_id])}
    first = log_summary_run(cmp, report)
    run = client.get_run(first)
    assert run.data.tags["focustune.kind"] == "summary" and "low beats erm" in run.data.tags["mlflow.note.content"]
    assert run.data.metrics["tiny.low.test_balanced_acc"] == pytest.approx(
        statistics.fmean(e + g for e, g in zip(ERM, LOW_GAIN)))
    top = {a.path for a in client.list_artifacts(first)}
    assert {"report.md", "report.html", "runs.csv", "figures", "across_datasets.tex", "across_datasets.csv"} <= top
    assert "figures/tiny_leaderboard.png" in {a.path for a in client.list_artifacts(first, "figures")}
    assert {"path": "leaderboard_table.json", "type": "table"} in json.loads(run.data.tags["mlflow.loggedArtifacts"])
    table = json.loads(Path(client.download_artifacts(first, "leaderboard_table.json")).read_text())  # an MLflow table
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["method"] for r in rows[:3]] == ["low", "focal", "erm"] and rows[0]["dataset"] == "tiny"
    assert rows[0]["test balanced accuracy"].startswith("0.8")  # mean ± SE [95% CI], as in the report
    second = log_summary_run(cmp, report)
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    after = {r.info.run_id for r in client.search_runs([cmp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)}
    assert after == before | {second}
    again = collect_runs("cmp", cmp.tracking_uri, history_of="none")
    assert len(again.runs) == len(cmp.runs)  # summary runs are not analysed


# ---------------------------------------------------------------- command line and bad input

def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    compare_command.add_options(parser)
    return compare_command.run(parser.parse_args(list(argv)))


def test_cli_small_sample_report_with_mlflow_summary(store, tmp_path, capsys):
    assert _cli("--experiment", "small", "--tracking-uri", store, "--out", str(tmp_path / "rep")) == 0
    out = capsys.readouterr().out
    assert "low beats erm by +0.050 balanced accuracy" in out
    assert "n=3 seeds: Wilcoxon cannot reach p<0.05" in out and "summary run" in out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert "Results on 1 dataset (tiny): no comparison across datasets" in out
    assert not list((tmp_path / "rep").glob("across_datasets.*"))
    assert "## Across datasets" not in (tmp_path / "rep" / "report.md").read_text()


def test_one_method_is_reported_with_a_statement(store, tmp_path, capsys):
    assert _cli("--experiment", "solo", "--tracking-uri", store, "--out", str(tmp_path), "--no-mlflow") == 0
    assert "a comparison needs at least two methods" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (("--experiment", "nope"), "no experiment 'nope'"),
    (("--experiment", "pending"), "has no finished runs yet"),
    (("--experiment", "small", "--metric", "precision"), "available: acc, auc, balanced_acc, macro_f1"),
    (("--experiment", "small", "--target-fraction", "1.5"), "--target-fraction must be in (0, 1]"),
    (("--experiment", "small", "--metric", "nll"), "--metric nll: lower is better"),
])
def test_bad_input_is_a_clear_config_error(store, tmp_path, argv, message):
    with pytest.raises(ConfigError) as error:
        _cli(*argv, "--tracking-uri", store, "--out", str(tmp_path), "--no-mlflow")
    assert message in str(error.value)
    if argv[1] == "nope":
        assert "cmp" in str(error.value)  # the experiments that do exist are listed


def test_missing_database_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no MLflow database"):
        collect_runs("cmp", f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


# ---------------------------------------------------------------- phased methods

# imet (mechanism from epoch 3) per seed: (best epoch, its phase, test balanced acc, after-mechanism test or None =
# not logged); seeds 1 and 3 selected an epoch of iteration 0. mdgan's seed 1 logged no after-mechanism metrics.
PHASED = {"imet": {1: (2, "iteration_0", 0.80, 0.60), 2: (4, "iteration_1", 0.75, None),
                   3: (1, "iteration_0", 0.82, 0.62)},
          "mdgan": {1: (2, "pretrain", 0.90, None), 2: (3, "finetune", 0.70, 0.70), 3: (4, "finetune", 0.72, 0.72)}}


@pytest.fixture(scope="module")
def phased(tmp_path_factory):
    logger = Logger.in_new_store(tmp_path_factory.mktemp("phased"), "phased")
    uri = logger.uri
    parent = logger.study("tiny", "erm", {"lr": 1e-3})
    for seed in (1, 2, 3):
        logger.run(parent, "tiny", "erm", "seed_rerun", seed, {"lr": 1e-3}, test=ERM[seed - 1],
                   mechanism_epoch=1, best_phase="train")
    for method, seeds in PHASED.items():
        parent = logger.study("tiny", method, {"lr": 1e-3})
        for seed, (epoch, phase, test, after) in seeds.items():
            finals = {"best_epoch": epoch}
            if after is not None:
                finals.update({"after_mechanism_best_epoch": max(epoch, 3), "after_mechanism_test_balanced_acc": after,
                               "after_mechanism_best_val_balanced_acc": 0.5})
            logger.run(parent, "tiny", method, "seed_rerun", seed, {"lr": 1e-3}, test=test, finals=finals,
                       mechanism_epoch=3, best_phase=phase)
    return uri, collect_runs("phased", uri)


def test_phase_counts_say_how_many_seeds_selected_an_epoch_before_the_mechanism(phased):
    from focustune_analysis import phase_counts

    table = phase_counts(phased[1], "balanced_acc").set_index("method")
    assert set(table.index) == {"imet", "mdgan"}  # erm has no phase before a mechanism
    imet, mdgan = table.loc["imet"], table.loc["mdgan"]
    assert (imet["n"], imet["before_mechanism"], imet["phases"], imet["mechanism_epoch"]) == (3, 2, "iteration_0: 2", 3)
    assert imet["best_mean"] == pytest.approx((0.80 + 0.75 + 0.82) / 3)
    assert imet["after_mean"] == pytest.approx((0.60 + 0.75 + 0.62) / 3) and imet["n_after"] == 3
    assert (mdgan["before_mechanism"], mdgan["phases"], mdgan["n_after"]) == (1, "pretrain: 1", 2)


def test_after_mechanism_selection_replaces_pre_mechanism_epochs_only(phased):
    from focustune_analysis import select_epochs

    c = phased[1]
    assert select_epochs(c, "best") is c
    view = select_epochs(c, "after-mechanism")
    board = leaderboard(view, references=False).set_index("method")
    assert board.loc["imet", "balanced_acc"] == pytest.approx((0.60 + 0.75 + 0.62) / 3)
    assert board.loc["erm", "balanced_acc"] == pytest.approx(statistics.mean(ERM[:3]))
    assert board.loc["mdgan", "n"] == 2 and board.loc["mdgan", "balanced_acc"] == pytest.approx(0.71)
    assert any("1 phased run(s)" in note for note in view.notes)
    imet = view.runs[view.runs["method"] == "imet"].set_index("seed")
    assert list(imet["best_epoch"]) == [3, 4, 3]
    diff = compare_to_baseline(view, "balanced_acc", "erm").set_index("method").loc["imet", "diff"]
    assert diff == pytest.approx((0.60 + 0.75 + 0.62) / 3 - statistics.mean(ERM[:3]))
    with pytest.raises(ConfigError, match="--selection"):
        select_epochs(c, "latest")


@pytest.mark.parametrize("selection", ["best", "after-mechanism"])
def test_report_labels_its_selection_and_shows_both_views(phased, tmp_path, selection):
    report = build_report(phased[1], tmp_path, selection=selection)
    assert report.selection == selection and f"--selection {selection}" in report.terminal.splitlines()[-1]
    text = report.markdown.read_text()
    assert f"`--selection {selection}`" in text and "Phased methods: which epochs were selected" in text
    assert any("imet (mechanism from epoch 3): 2 of 3 seeds selected an epoch from before" in line
               for line in report.conclusions)
    phases = pd.read_csv(tmp_path / "phases.csv").set_index("method")
    assert phases.loc["imet", "before_mechanism"] == 2
    imet = report.tables["leaderboard"].set_index("method").loc["imet", "balanced_acc"]
    expected = (0.80 + 0.75 + 0.82) / 3 if selection == "best" else (0.60 + 0.75 + 0.62) / 3
    assert imet == pytest.approx(expected)


def test_compare_cli_takes_the_selection_and_refuses_others(phased, tmp_path, capsys):
    from focustune.cli import main

    uri = phased[0]
    assert main(["compare", "--experiment", "phased", "--tracking-uri", uri, "--out", str(tmp_path),
                 "--selection", "after-mechanism", "--no-mlflow"]) == 0
    assert "Epoch selection" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--experiment", "phased", "--tracking-uri", uri, "--selection", "latest"])
    assert exc.value.code == 2


def test_compare_prints_no_interval_outside_a_bounded_metrics_range():
    """Two seeds of balanced accuracy 0.2 and 0.9: the t-interval [-4.1, 5.2] says nothing about a quantity in
    [0, 1]; the report says the n is too small for an interval instead of printing it."""
    from focustune_analysis.report_text import mean_se
    from focustune_analysis.stats import NO_INTERVAL, estimate, within

    wide = estimate([0.2, 0.9])
    assert wide.low < 0 and within(wide, (0.0, 1.0)).low != within(wide, (0.0, 1.0)).low  # dropped (NaN)
    kept = within(estimate([0.80, 0.82, 0.81]), (0.0, 1.0))
    assert 0 < kept.low < kept.high < 1
    e = within(wide, (0.0, 1.0))
    row = pd.Series({"balanced_acc": e.mean, "balanced_acc_se": e.se, "balanced_acc_low": e.low,
                     "balanced_acc_high": e.high})
    assert mean_se(row, "balanced_acc") == f"0.550 ± 0.350 ({NO_INTERVAL})"


# ---------------------------------------------------------------- per-class audit and calibration

AUDIT_COUNTS = {"common": 700, "mid": 200, "uncommon": 80, "rare": 20}  # training images per class (1000)
ERM_RECALL = {"common": 0.95, "mid": 0.80, "uncommon": 0.55, "rare": 0.10}  # erm's test recall, every seed
NOISE = [0.01, -0.012, 0.008, -0.005]  # a method's seed-to-seed noise (seeds 1..4), rotated per class
AUDIT_SHIFT = {"low": {"rare": 0.55}, "focal": {"common": -0.15}}  # low fixes rare, focal breaks common
AUDIT_SEEDS = {"erm": 4, "low": 4, "focal": 4, "oversample": 1}
T_975[3] = 3.182446


def audit_recall(method: str, name: str, seed: int) -> float:
    if method == "erm":
        return ERM_RECALL[name]
    k = list(AUDIT_COUNTS).index(name)
    return ERM_RECALL[name] + AUDIT_SHIFT.get(method, {}).get(name, 0.0) + NOISE[(seed - 1 + k) % 4]


def calibration_record(seed: int) -> dict:
    """A calibration.json as the trainer writes it (3 bins; seed 1 has an empty first bin before scaling)."""
    before = {"ece": 0.2, "brier": 0.3, "nll": 0.9, "confidence": [0.2, 0.6, 0.95],
              "accuracy": [None if seed == 1 else 0.1, 0.4, 0.7 + 0.05 * seed],
              "count": [0 if seed == 1 else 10, 30, 60 - 10 * seed]}
    after = {"ece": 0.05, "brier": 0.25, "nll": 0.6, "confidence": [0.3, 0.55, 0.8], "accuracy": [0.3, 0.55, 0.8],
             "count": [20, 30, 50]}
    return {"bins": 3, "temperature": 1.5 + 0.1 * seed, "before": before, "after": after}


def _audit_finals(method: str, seed: int) -> dict:
    """A run's per-class and calibration final metrics, named as the trainable names them."""
    from focustune.tracking_schema import calibration_metrics, tracked_metrics, train_count_metrics

    names = list(AUDIT_COUNTS)
    finals = {**tracked_metrics("test", {"per_class_recall": [audit_recall(method, n, seed) for n in names]}, names),
              **train_count_metrics(list(AUDIT_COUNTS.values()), names)}
    if method in ("erm", "low"):  # focal and oversample: runs from before calibration was recorded
        record = calibration_record(seed)
        noise = NOISE[seed - 1]
        before = {"ece": 0.2 + noise, "brier": 0.3 + noise, "nll": 0.9 + noise}
        record["after"].update({"ece": 0.05 + noise / 2, "brier": 0.25 + noise / 2, "nll": 0.6 + noise / 2})
        finals.update({**tracked_metrics("test", before, names), **calibration_metrics(record)})
    return finals


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    from focustune.tracking_schema import CALIBRATION_ARTIFACT

    logger = Logger.in_new_store(tmp_path_factory.mktemp("audited"), "audited")
    uri = logger.uri
    for method, seeds in AUDIT_SEEDS.items():
        parent = logger.study("skin", method, {"lr": 1e-3})
        for seed in range(1, seeds + 1):
            artifacts = {CALIBRATION_ARTIFACT: json.dumps(calibration_record(seed))} if method in ("erm", "low") \
                else None
            logger.run(parent, "skin", method, "seed_rerun", seed, {"lr": 1e-3}, test=0.7,
                       finals=_audit_finals(method, seed), artifacts=artifacts)
    return collect_runs("audited", uri)


@pytest.fixture(scope="module")
def audited_report(audited, tmp_path_factory):
    return build_report(audited, tmp_path_factory.mktemp("audit_report"))


def test_the_audit_marks_the_class_a_method_fixes_and_the_one_another_breaks(audited):
    from focustune_analysis.audit import per_class_audit

    table = per_class_audit(audited, "erm")
    low = table[table["method"] == "low"].set_index("class")
    assert list(low.index) == ["rare", "uncommon", "mid", "common"]  # rarest first
    assert low.loc["rare", "train_count"] == 20 and low.loc["rare", "train_frequency"] == pytest.approx(0.02)
    diffs = [audit_recall("low", "rare", s) - ERM_RECALL["rare"] for s in (1, 2, 3, 4)]
    half = T_975[3] * statistics.stdev(diffs) / 2
    rare = low.loc["rare"]
    assert rare["n"] == 4 and rare["diff"] == pytest.approx(statistics.fmean(diffs))
    assert (rare["diff_low"], rare["diff_high"]) == pytest.approx((statistics.fmean(diffs) - half,
                                                                   statistics.fmean(diffs) + half), abs=1e-6)
    assert rare["verdict"] == "fixes" and rare["baseline_recall"] == pytest.approx(0.10)
    assert set(low.loc[["uncommon", "mid", "common"], "verdict"]) == {""}  # noise only: the intervals hold 0
    assert (low.loc[["uncommon", "mid", "common"], "diff_low"] < 0).all()
    focal = table[table["method"] == "focal"].set_index("class")
    assert focal.loc["common", "verdict"] == "breaks" and focal.loc["common", "diff_high"] < 0
    assert set(focal.loc[["rare", "uncommon", "mid"], "verdict"]) == {""}
    single = table[table["method"] == "oversample"]
    assert len(single) == 4 and set(single["verdict"]) == {""} and single["diff_low"].isna().all()
    assert set(single["note"]) == {"n too small for an interval (n=1)"}
    assert table["t_p_holm"].dropna().ge(table["t_p"].dropna()).all()
    assert "erm" not in set(table["method"])


def test_an_audit_interval_follows_compares_interval_rule():
    from focustune_analysis.audit import bounded_interval, difference_range
    from focustune_analysis.stats import NO_INTERVAL, paired_test

    recall = difference_range("per_class_recall")
    assert recall == (-1.0, 1.0)
    near_one = paired_test([0.95, 0.75, 1.0], [0.05, 0.05, 0.05])  # t-interval [0.52, 1.18] leaves [-1, 1]
    assert near_one.difference.high > 1 and bounded_interval(near_one, recall)[2] == f"{NO_INTERVAL} (n=3)"
    assert bounded_interval(paired_test([0.7], [0.1]), recall)[2] == f"{NO_INTERVAL} (n=1)"
    low, high, note = bounded_interval(paired_test([0.3, 0.4, 0.35], [0.1, 0.1, 0.1]), recall)
    assert 0 < low < 0.25 < high < 0.5 and note == ""
    same = paired_test([1.0] * 6, [0.5] * 6)  # no spread: the exact sign-flip test (p = 2/2^6) gives [0.5, 0.5]
    assert bounded_interval(same, recall) == (0.5, 0.5, "the same difference on every seed: exact sign-flip test")
    assert math.isnan(bounded_interval(paired_test([1.0] * 3, [0.5] * 3), recall)[0])  # 2/2^3 > 0.05: none
    assert difference_range("nll") is None and difference_range("brier") == (-2.0, 2.0)


def test_recall_is_correlated_with_training_class_frequency_per_method(audited):
    from focustune_analysis.audit import frequency_correlations, recall_by_frequency

    recall = recall_by_frequency(audited)
    table = frequency_correlations(recall).set_index("method")
    frequencies = [n / 1000 for n in AUDIT_COUNTS.values()]
    erm = table.loc["erm"]
    assert erm["classes"] == 4 and erm["spearman_rho"] == pytest.approx(1.0)
    assert erm["spearman_p"] == pytest.approx(2 / 24)  # exact: 2 of the 4! pairings are as extreme
    assert erm["pearson_r"] == pytest.approx(np.corrcoef(frequencies, list(ERM_RECALL.values()))[0, 1])
    low_means = [statistics.fmean(audit_recall("low", n, s) for s in (1, 2, 3, 4)) for n in AUDIT_COUNTS]
    assert table.loc["low", "pearson_r"] == pytest.approx(np.corrcoef(frequencies, low_means)[0, 1])
    assert table.loc["low", "spearman_rho"] == pytest.approx(0.8)  # its rare class overtakes the uncommon one
    row = recall[(recall["method"] == "low") & (recall["class"] == "rare")].iloc[0]
    assert row["recall"] == pytest.approx(low_means[-1]) and row["n"] == 4


def test_calibration_before_and_after_temperature_scaling_and_pooled_reliability(audited):
    from focustune_analysis.reliability import calibration_table, reliability_bins

    table = calibration_table(audited).set_index(["method", "metric"])
    assert set(table.index.get_level_values("method")) == {"erm", "low"}  # focal and oversample recorded none
    ece = table.loc[("erm", "ece")]
    assert ece["n"] == 4 and ece["before"] == pytest.approx(0.2 + statistics.fmean(NOISE))
    assert ece["after"] == pytest.approx(0.05 + statistics.fmean(NOISE) / 2)
    assert ece["change"] == pytest.approx(-0.15 - statistics.fmean(NOISE) / 2) and ece["change_high"] < 0
    assert ece["temperature"] == pytest.approx(1.5 + 0.25)
    assert table.loc[("low", "nll"), "after"] == pytest.approx(0.6 + statistics.fmean(NOISE) / 2)
    bins = reliability_bins(audited).set_index(["method", "stage", "bin"])
    records = [calibration_record(s)["before"] for s in (1, 2, 3, 4)]
    top = bins.loc[("erm", "before", 2)]
    assert top["count"] == sum(r["count"][2] for r in records) and top["runs"] == 4
    assert top["accuracy"] == pytest.approx(sum(r["accuracy"][2] * r["count"][2] for r in records) / top["count"])
    assert bins.loc[("erm", "before", 0), "accuracy"] == pytest.approx(0.1)  # seed 1's empty bin adds nothing
    assert bins.loc[("low", "after", 1), "confidence"] == pytest.approx(0.55)
    assert "focal" not in set(bins.index.get_level_values("method"))


def test_the_report_shows_the_audit_and_calibration_and_the_summary_run_logs_them(audited, audited_report):
    from focustune.tracking_schema import AUDIT_TABLE

    report = audited_report
    text = report.markdown.read_text()
    assert "### Per-class audit against erm" in text and "### Calibration" in text
    rare_row = next(line for line in text.splitlines() if line.startswith("| low | rare |"))
    assert "**fixes**" in rare_row and "20 (2.0%)" in rare_row
    assert "**breaks**" in next(line for line in text.splitlines() if line.startswith("| focal | common |"))
    assert "n too small for an interval (n=1)" in text and "focal: calibration not recorded" in text
    figures = {p.name for p in (report.out / "figures").glob("*.png")}
    assert {"skin_recall_vs_frequency.png", "skin_reliability.png"} <= figures
    assert "(figures/skin_recall_vs_frequency.png)" in text and "(figures/skin_reliability.png)" in text
    words = "\n".join(report.conclusions)
    assert "Per-class audit: low fixes rare (+0.55 [" in words and "Per-class audit: focal breaks common" in words
    assert "oversample fixes and breaks no class" in words and "Spearman ρ=+1.00" in words
    assert "Calibration: test ECE before → after temperature scaling" in words and "erm 0.200 → 0.050" in words
    written = pd.read_csv(report.out / "per_class_audit.csv")
    assert len(written) == 3 * 4 and set(written["verdict"].dropna()) == {"fixes", "breaks"}
    client = audited.client()
    run = client.get_run(log_summary_run(audited, report))
    metrics = run.data.metrics
    assert metrics["audit_recall_diff/skin/low/rare"] == pytest.approx(0.55 + statistics.fmean(NOISE))
    assert metrics["audit_recall_frequency_spearman/skin/erm"] == pytest.approx(1.0)
    assert metrics["calibration/skin/erm/test_ece_calibrated"] == pytest.approx(0.05 + statistics.fmean(NOISE) / 2)
    table = json.loads(Path(client.download_artifacts(run.info.run_id, AUDIT_TABLE)).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {(r["method"], r["class"]) for r in rows if r["verdict"]} == {("low", "rare"), ("focal", "common")}


def test_older_runs_get_the_audit_by_class_index_and_say_what_they_did_not_record(report):
    audit = report.tables["per_class_audit"]
    low = audit[(audit["dataset"] == "tiny") & (audit["method"] == "low")].set_index("class")
    assert list(low.index) == ["class 0", "class 1"] and set(low["verdict"]) == {"fixes"}  # +LOW_GAIN on each seed
    assert low["train_count"].isna().all()
    text = report.markdown.read_text()
    assert "Calibration not recorded: these runs have no test calibration metrics" in text
    assert "Training-class counts not recorded by these runs" in text
    assert not list((report.out / "figures").glob("*_reliability.png"))
