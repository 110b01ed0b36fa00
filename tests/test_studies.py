"""The sweep's scheduling layer without running Ray: the study queue, the multi-study searcher (real
Optuna studies in a SQLite file), per-study ASHA, utilisation and plan files."""

from __future__ import annotations

import argparse
import io
import pickle
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from focustune.errors import ConfigError
from focustune.methods import get_method
from focustune.spaces import load_space
from focustune.sweeps.plan import read_plan, sweep_spec
from focustune.sweeps.progress import SweepProgress
from focustune.sweeps.preflight import study_grace
from focustune.sweeps.schedulers import PerStudyASHA
from focustune.sweeps.search import DefineByRun, MultiStudySearch, study_queue
from focustune.sweeps.studies import RERUN, SEARCH, Interval, utilisation
from focustune.records import (BUSY_SINCE, BUSY_UNTIL, EPOCH, FULL_BUDGET, KIND_KEY, MECHANISM_EPOCH, NODE_ID,
                               OBJECTIVE, SEED_KEY, STUDY_KEY)

A, B = "alpha/erm", "beta/erm"


def searcher(tmp_path, keys=(A, B), trials=3, seeds=2, warm_starts=None) -> MultiStudySearch:
    space = DefineByRun(load_space(get_method("erm")), {"epochs": 2, SEED_KEY: 0})
    return MultiStudySearch({k: space for k in keys}, study_queue(list(keys), trials, seeds),
                            f"sqlite:///{tmp_path / 'optuna.db'}", sampler_seed=0, warm_starts=warm_starts)


def full_result(score: float) -> dict:
    return {OBJECTIVE: score, "best_val_balanced_acc": score, "test_balanced_acc": score / 2, FULL_BUDGET: True}


def run_all(search: MultiStudySearch, score=lambda config: 0.5) -> list[dict]:
    """Suggest and complete trials one at a time until the searcher says FINISHED."""
    started, n = [], 0
    while (config := search.suggest(f"t{n}")) not in (None, search.FINISHED):
        started.append(config)
        search.on_trial_complete(f"t{n}", full_result(score(config)))
        n += 1
    assert config == search.FINISHED
    return started


def test_a_free_slot_goes_to_the_study_with_the_fewest_started_trials(tmp_path):
    search = searcher(tmp_path, keys=("a/erm", "b/erm", "c/erm"))
    first = [search.suggest(f"t{i}")[STUDY_KEY] for i in range(6)]
    assert first == ["a/erm", "b/erm", "c/erm"] * 2  # the studies' trials interleave


def test_reruns_of_a_finished_study_start_while_another_study_still_searches(tmp_path):
    search = searcher(tmp_path, trials=2, seeds=2)
    a1, b1, a2 = search.suggest("a1"), search.suggest("b1"), search.suggest("a2")
    assert [c[STUDY_KEY] for c in (a1, b1, a2)] == [A, B, A]
    search.on_trial_complete("a1", full_result(0.4))
    search.on_trial_complete("a2", full_result(0.9))  # alpha's search has ended; beta's has not
    rerun = search.suggest("r1")
    assert rerun[STUDY_KEY] == A and rerun[KIND_KEY] == RERUN and rerun[SEED_KEY] == 1
    assert rerun["lr"] == a2["lr"]  # the best trial's configuration, by validation
    assert search.suggest("r2")[SEED_KEY] == 2  # a study's re-runs come first: its result is then complete
    b2 = search.suggest("b2")
    assert b2[STUDY_KEY] == B and b2[KIND_KEY] == SEARCH  # beta goes on searching meanwhile


def test_one_study_at_a_time_is_the_former_order(tmp_path):
    search = searcher(tmp_path, trials=2, seeds=1)
    search.queue.one_at_a_time = True
    a1, a2 = search.suggest("a1"), search.suggest("a2")
    assert search.suggest("x") is None  # alpha's search runs; beta waits for alpha to end
    search.on_trial_complete("a1", full_result(0.5))
    search.on_trial_complete("a2", full_result(0.6))
    assert search.suggest("r")[KIND_KEY] == RERUN and search.suggest("x") is None
    search.on_trial_complete("r", full_result(0.6))
    assert search.suggest("b1")[STUDY_KEY] == B and a1[STUDY_KEY] == a2[STUDY_KEY] == A


def test_every_study_ends_with_its_reruns_then_the_searcher_is_finished(tmp_path):
    search = searcher(tmp_path, trials=3, seeds=2)
    started = run_all(search)
    for key in (A, B):
        kinds = [c[KIND_KEY] for c in started if c[STUDY_KEY] == key]
        assert kinds == [SEARCH] * 3 + [RERUN] * 2
    assert search.queue.finished


def test_each_optuna_study_sees_only_its_own_trials_and_is_told_the_truth(tmp_path):
    search = searcher(tmp_path, trials=3, seeds=0)
    for i in range(6):
        search.suggest(f"t{i}")  # alpha gets t0, t2, t4; beta t1, t3, t5
    search.on_trial_complete("t0", full_result(0.7))
    search.on_trial_complete("t2", {OBJECTIVE: 0.6})  # stopped early: no full budget
    search.on_trial_complete("t4", {OBJECTIVE: 0.0, "diverged": True})
    for i in (1, 3, 5):
        search.on_trial_complete(f"t{i}", None, error=True)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    alpha = optuna.load_study(study_name=A, storage=storage)
    beta = optuna.load_study(study_name=B, storage=storage)
    assert [t.state for t in alpha.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert alpha.trials[0].value == pytest.approx(0.7)
    assert [t.state for t in beta.trials] == [TrialState.FAIL] * 3
    assert search.queue.finished and search.queue.studies[B].best is None  # beta: no re-runs to start


def test_warm_start_configurations_are_the_first_trials_of_their_study(tmp_path):
    warm = {A: [{"lr": 0.00123, "weight_decay": 1e-5}]}
    search = searcher(tmp_path, trials=2, seeds=0, warm_starts=warm)
    first_a = search.suggest("t0")
    assert first_a[STUDY_KEY] == A and first_a["lr"] == pytest.approx(0.00123)
    assert first_a["weight_decay"] == pytest.approx(1e-5)
    assert search.suggest("t1")["lr"] != pytest.approx(0.00123)  # beta was not warm-started


def test_a_restored_searcher_fails_optuna_trials_its_snapshot_never_saw(tmp_path):
    search = searcher(tmp_path, trials=3, seeds=0)
    search.suggest("t0")
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))
    search.suggest("t1")
    search.suggest("t2")  # asked after the snapshot: the driver dies before saving again
    restored = pickle.loads(pickle.dumps(searcher(tmp_path, trials=3, seeds=0)))
    restored.restore(str(snapshot))
    restored.on_trial_complete("t0", full_result(0.5))  # the restored trial still ends normally
    alpha = optuna.load_study(study_name=A, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in alpha.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]  # t2 (alpha's second) was lost
    assert restored.queue.studies[A].started == 1  # the lost trial is offered again


def test_a_trial_told_after_the_last_snapshot_may_end_again_after_a_restore(tmp_path):
    search = searcher(tmp_path, trials=2, seeds=0)
    search.suggest("t0")
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))
    search.on_trial_complete("t0", full_result(0.5))  # told to Optuna; then the driver dies
    restored = searcher(tmp_path, trials=2, seeds=0)
    restored.restore(str(snapshot))
    restored.on_trial_complete("t0", full_result(0.6))  # Tune re-ran it from its checkpoint
    (trial,) = optuna.load_study(study_name=A, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.5)  # the first tell stands
    assert len(restored.queue.studies[A].ended) == 1


def tune_trial(trial_id: str, config: dict, status: str = "RUNNING", result: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config, status=status, last_result=result or {})


def test_trials_live_after_tunes_last_step_mark_the_run_interrupted():
    """Tune's clean-up marks the trials an interrupt cut short TERMINATED, as finished ones: the ledger's
    count of live trials after the last step is what tells them apart."""
    from focustune.sweeps.search import TrialLedger
    from focustune.sweeps.summaries import unfinished

    def trials(*statuses):
        return [SimpleNamespace(is_finished=lambda s=s: s in ("TERMINATED", "ERROR")) for s in statuses]

    TrialLedger.begin()
    assert TrialLedger.live_at_last_step == 0  # a restored run with nothing left takes no step
    TrialLedger().on_step_end(1, trials("TERMINATED", "RUNNING", "PENDING", "ERROR"))
    assert TrialLedger.live_at_last_step == 2
    started = {A: {"total": 2, "best_config": {"lr": 0.1}, "reruns": []}}  # every search trial started
    assert unfinished(TrialLedger.live_at_last_step, started, trials=2, seeds=0) == ["2 trial(s) still running"]
    TrialLedger().on_step_end(2, trials("TERMINATED", "TERMINATED", "ERROR"))
    assert unfinished(TrialLedger.live_at_last_step, started, trials=2, seeds=0) == []


def test_a_restored_searcher_agrees_with_the_trials_tune_restored(tmp_path):
    """Tune uploads its trial list and the searcher's state as separate files, so a driver killed
    meanwhile leaves them out of step; the first step after the restore reconciles them."""
    from focustune.sweeps.search import TrialLedger

    search = searcher(tmp_path, keys=(A,), trials=3, seeds=1)
    search.max_concurrent = 1
    t0 = search.suggest("t0")
    assert search.suggest("t1") is None  # at most --max-concurrent live trials: the searcher keeps to it
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))  # the searcher's snapshot: t0 live ...
    search.on_trial_complete("t0", full_result(0.5))
    t1 = search.suggest("t1")  # ... while Tune's newer trial list has t0 ended and t1 running
    restored = searcher(tmp_path, keys=(A,), trials=3, seeds=1)
    restored.max_concurrent = 1
    restored.restore(str(snapshot))
    assert restored.suggest("x") is None  # without the reconcile: t0 seems live, nothing starts
    TrialLedger().on_step_begin(0, [tune_trial("t0", t0, "TERMINATED", full_result(0.5)), tune_trial("t1", t1)])
    study = restored.queue.studies[A]
    assert study.started == 2 and len(study.ended) == 1 and set(restored.live) == {"t1"}
    assert restored.live["t1"].number == 1  # t1's Optuna trial, found by its parameters
    restored.on_trial_complete("t1", full_result(0.7))
    t2 = restored.suggest("t2")
    assert t2[KIND_KEY] == SEARCH  # the third search trial, not a fourth
    # and the other way: a snapshot newer than Tune's list (t2 unknown to Tune) gives t2's slot back
    again = searcher(tmp_path, keys=(A,), trials=3, seeds=1)
    again.max_concurrent = 1
    restored.save(str(snapshot))
    again.restore(str(snapshot))
    TrialLedger().on_step_begin(0, [tune_trial("t0", t0, "TERMINATED"), tune_trial("t1", t1, "TERMINATED")])
    assert again.queue.studies[A].started == 2 and not again.live
    assert again.suggest("t3")[KIND_KEY] == SEARCH
    states = [t.state for t in optuna.load_study(study_name=A, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials]
    assert states[:3] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]  # t2's trial: lost
    assert TrialState.RUNNING not in states[:3]


# ---------------------------------------------------------------- per-study ASHA

def trial(trial_id: str, study: str, kind: str = SEARCH) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={STUDY_KEY: study, KIND_KEY: kind})


def report(scheduler: PerStudyASHA, t: SimpleNamespace, epoch: int, score: float, mechanism: int = 1) -> str:
    return scheduler.on_trial_result(None, t, {EPOCH: epoch, OBJECTIVE: score, MECHANISM_EPOCH: mechanism})


def test_trials_of_different_studies_never_meet_in_the_same_rung():
    scheduler = PerStudyASHA({A: 1, B: 1}, max_t=8, reduction_factor=2)
    strong = [trial(f"a{i}", A) for i in range(4)]
    weak = [trial(f"b{i}", B) for i in range(4)]
    for t in strong + weak:
        scheduler.on_trial_add(None, t)
    for t in strong:
        assert report(scheduler, t, 1, 0.9) == TrialScheduler.CONTINUE
    # beta's scores are far below alpha's; in one shared rung they would be cut
    decisions = [report(scheduler, t, 1, 0.1 + 0.01 * i) for i, t in enumerate(weak)]
    assert decisions[0] == TrialScheduler.CONTINUE and TrialScheduler.STOP not in decisions[:2]
    shared = PerStudyASHA({"x": 1}, max_t=8, reduction_factor=2)
    mixed = [trial(f"m{i}", "x") for i in range(5)]
    for t in mixed:
        shared.on_trial_add(None, t)
    for t in mixed[:4]:
        report(shared, t, 1, 0.9)
    assert report(shared, mixed[4], 1, 0.1) == TrialScheduler.STOP  # the control: one rung does cut it


def test_no_trial_is_stopped_before_its_method_has_acted():
    scheduler = PerStudyASHA({A: 3}, max_t=8, reduction_factor=2)
    good = [trial(f"g{i}", A) for i in range(3)]
    late = trial("late", A)
    for t in good + [late]:
        scheduler.on_trial_add(None, t)
    for t in good:
        for epoch in (1, 2, 3):
            report(scheduler, t, epoch, 0.9, mechanism=3)
    for epoch in (1, 2):  # before its mechanism epoch even a hopeless score continues
        assert report(scheduler, late, epoch, 0.0, mechanism=3) == TrialScheduler.CONTINUE
    assert report(scheduler, late, 3, 0.0, mechanism=3) == TrialScheduler.STOP


def test_seed_reruns_are_never_stopped():
    scheduler = PerStudyASHA({A: 1}, max_t=4, reduction_factor=2)
    runs = [trial(f"r{i}", A, RERUN) for i in range(4)]
    for t in runs:
        scheduler.on_trial_add(None, t)
    assert {report(scheduler, t, 1, s) for t, s in zip(runs, (0.9, 0.8, 0.1, 0.0))} == {TrialScheduler.CONTINUE}


@pytest.mark.parametrize("method, fixed, grace", [
    ("erm", {"epochs": 20}, 1),
    ("low", {"epochs": 20}, 1),
    ("imet", {"epochs": 20, "iterations": 4}, 6),  # iteration 0 (equal-class) has 5 epochs
    ("mdgan", {"epochs": 20, "finetune_epochs": 5}, 16),  # 15 pretraining epochs
])
def test_study_grace_is_the_epoch_from_which_the_method_has_acted(method, fixed, grace):
    assert study_grace(method, fixed) == grace


# ---------------------------------------------------------------- utilisation

def test_utilisation_is_busy_over_available_slot_time_per_node_and_overall():
    intervals = [Interval("n1", 0, 10), Interval("n1", 0, 5), Interval("n2", 5, 10)]
    usage = utilisation(intervals, {"n1": 2, "n2": 1})
    assert usage["span_s"] == 10 and usage["busy_s"] == 20
    assert usage["overall"] == pytest.approx(20 / 30)
    assert usage["nodes"] == {"n1": pytest.approx(15 / 20), "n2": pytest.approx(5 / 10)}
    capped = utilisation(intervals, {"n1": 2, "n2": 1, "total": 2})  # --max-concurrent 2
    assert capped["overall"] == pytest.approx(20 / 20)


def test_utilisation_of_a_resumed_sweep_counts_every_attempts_nodes_over_its_own_span():
    from focustune.cli.sweep import utilisation_line
    from focustune.sweeps.studies import Attempt

    # first driver: node a (2 slots) busy 0-10 and 0-5, killed; a gap; the resumed driver's Ray has
    # node b (1 slot), busy 100-120; an interval of the first driver running past the restart is cut
    intervals = [Interval("a", 0, 10), Interval("a", 0, 5), Interval("a", 8, 12), Interval("b", 100, 120)]
    attempts = [Attempt(-1.0, {"a": 2}), Attempt(11.0, {"b": 1, "total": 1})]
    usage = utilisation(intervals, {"b": 1}, attempts)
    busy = 10 + 5 + 3 + 20  # the third interval counts until the restart only
    assert usage["busy_s"] == pytest.approx(busy) and usage["span_s"] == pytest.approx(11 + 20)
    assert usage["overall"] == pytest.approx(busy / (2 * 11 + 1 * 20))  # the gap 11-100 counts in no attempt
    assert usage["nodes"] == {"a": pytest.approx(18 / 22), "b": pytest.approx(20 / 20)}
    assert usage["attempts"] == 2 and usage["slots"] == 2
    # what used to be printed: the current driver's node only, over the whole time (20 / 120)
    assert utilisation(intervals, {"b": 1})["nodes"] == {"b": pytest.approx(20 / 120)}
    line = utilisation_line(usage)
    assert "of 2 driver runs" in line and "a 82%" in line and "b 100%" in line
    # an attempt in which no trial ran adds nothing; no attempt recorded: the single-attempt formula
    assert utilisation(intervals, {}, [*attempts, Attempt(200.0, {"c": 4})])["overall"] == usage["overall"]
    assert utilisation(intervals[:2], {"a": 2}, [])["overall"] == utilisation(intervals[:2], {"a": 2})["overall"]


# ---------------------------------------------------------------- plan files

def sweep_args(**given) -> argparse.Namespace:
    names = ["dataset", "datasets", "plan", "methods", "trials", "epochs", "seeds", "scheduler", "experiment",
             "tracking_uri", "address", "storage", "optuna_storage", "warm_start", "cpus_per_trial",
             "gpus_per_trial", "max_concurrent", "data_dir", "size", "imbalance_ratio", "space", "set", "objectives",
             "select"]
    return argparse.Namespace(**{n: None for n in names}, resume=False) if not given else \
        argparse.Namespace(**{**{n: None for n in names}, "resume": False, **given})


DEFAULTS = {"datasets": ["digits-lt"], "trials": 20, "epochs": 30, "seeds": 1, "scheduler": "none",
            "experiment": "focustune", "size": 28, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0}


def test_a_plan_gives_datasets_their_own_options_and_the_command_line_wins(tmp_path):
    plan = tmp_path / "bench.yaml"
    plan.write_text("methods: [erm, focal]\ntrials: 5\nepochs: 4\ndata_dir: /data\n"
                    "datasets:\n  - pneumoniamnist\n  - {dataset: breastmnist, size: 64, imbalance_ratio: 5}\n"
                    "set: {batch_size: 32}\nspaces: {erm: my_erm.yaml}\n")
    spec = sweep_spec(sweep_args(plan=str(plan), trials=7), DEFAULTS)
    assert spec.methods == ["erm", "focal"] and spec.trials == 7 and spec.epochs == 4 and spec.seeds == 1
    assert [(d.dataset, d.data_dir, d.size, d.imbalance_ratio) for d in spec.datasets] == [
        ("pneumoniamnist", "/data", 28, None), ("breastmnist", "/data", 64, 5)]
    assert spec.fixed == {"batch_size": 32} and spec.space_files == {"erm": "my_erm.yaml"}


def test_datasets_option_and_the_one_dataset_case():
    spec = sweep_spec(sweep_args(datasets="digits-lt,breastmnist", methods="erm"), DEFAULTS)
    assert [d.dataset for d in spec.datasets] == ["digits-lt", "breastmnist"]
    assert [d.dataset for d in sweep_spec(sweep_args(dataset="breastmnist"), DEFAULTS).datasets] == ["breastmnist"]
    assert [d.dataset for d in sweep_spec(sweep_args(), DEFAULTS).datasets] == ["digits-lt"]
    with pytest.raises(ConfigError, match="not both"):
        sweep_spec(sweep_args(dataset="a", datasets="b"), DEFAULTS)


@pytest.mark.parametrize("text, message", [
    ("methods: [erm]\ntrails: 3\n", "unknown key(s) trails"),
    ("methods: [erm\n", "not valid YAML"),
    ("- erm\n", "expected a mapping"),
    ("datasets:\n  - {dataset: breastmnist, colour: true}\n", "unknown key(s) colour"),
    ("trials: many\n", "expected a number"),
])
def test_bad_plans_are_refused_with_one_message(tmp_path, text, message):
    from focustune.sweeps.preflight import validate

    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(sweep_spec(sweep_args(plan=str(plan), methods="erm"), DEFAULTS))
    assert read_plan  # the module's reader is what the CLI uses


# ---------------------------------------------------------------- live view

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive_progress(stream: io.StringIO) -> SweepProgress:
    progress = SweepProgress({A: (2, 1), B: (2, 1)}, {"node": 2}, stream)
    t = SimpleNamespace(trial_id="t1", config={STUDY_KEY: A, KIND_KEY: SEARCH}, last_result=None)
    progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], t, {OBJECTIVE: 0.7, BUSY_SINCE: 100.0, BUSY_UNTIL: 110.0, NODE_ID: "node"})
    t.last_result = {FULL_BUDGET: True, BUSY_SINCE: 100.0, BUSY_UNTIL: 112.0, NODE_ID: "node"}
    progress.on_trial_complete(0, [], t)
    return progress


def test_progress_is_plain_lines_when_output_is_not_a_terminal():
    stream = io.StringIO()
    progress = drive_progress(stream)
    lines = stream.getvalue().splitlines()
    assert lines == ["[alpha/erm] search 1/2 (stopped 0, failed 0), seeds 0/1, running 0, best 0.7000; "
                     "utilisation 50% of 2 slot(s), elapsed 0m12s, left ~0m30s"]  # 5 trials x 12 s / 2 slots
    assert progress.usage()["overall"] == pytest.approx(0.5)  # one of two slots busy for the span


def test_the_live_view_of_a_resumed_sweep_counts_each_driver_runs_own_node(monkeypatch):
    from focustune.sweeps import progress as live
    from focustune.sweeps.studies import Attempt

    monkeypatch.setattr(live, "_ATTEMPTS", [])
    restored = drive_progress(io.StringIO())  # the first driver's node "node", busy 100-112 (of 2 slots)
    restored.slots = {"node": 2}  # the restored callback keeps the first driver's slots
    live.use_attempts([Attempt(99.0, {"node": 2}), Attempt(200.0, {"new": 1})])
    restored._record_busy("t2", {BUSY_SINCE: 300.0, BUSY_UNTIL: 312.0, NODE_ID: "new"})
    usage = restored.usage()
    assert usage["nodes"] == {"node": pytest.approx(0.5), "new": pytest.approx(1.0)}
    assert usage["overall"] == pytest.approx(24 / (2 * 12 + 1 * 12)) and usage["span_s"] == pytest.approx(24)


def test_progress_redraws_one_table_in_place_on_a_terminal():
    stream = Terminal()
    drive_progress(stream)
    text = stream.getvalue()
    frames = text.split("\x1b[3F\x1b[J")  # cursor up over the last table (2 studies + footer), erase
    assert len(frames) >= 2 and "\x1b" not in frames[0]
    last = frames[-1].splitlines()
    assert [line.split()[0] for line in last[:2]] == [A, B] and last[2].startswith("utilisation 50%")
    assert "search 1/2" in last[0] and "search 0/2" in last[1]


def test_a_dataset_travels_to_the_trials_whole():
    """Every field of the dataset reaches a trial (the object store's copy), notes and profile included,
    and its splits arrive as numpy arrays that a worker reads without copying."""
    import dataclasses

    import numpy as np
    import torch

    from conftest import make_dataset
    from focustune.sweeps.trainable import dataset_from_arrays, dataset_to_arrays

    dataset = dataclasses.replace(make_dataset(), notes=["a note"], imbalance="step")
    stored = dataset_to_arrays(dataset)
    assert all(isinstance(array, np.ndarray) for split in ("train", "val", "test") for array in stored[split])
    back = dataset_from_arrays(stored)
    for f in dataclasses.fields(dataset):
        mine, theirs = getattr(dataset, f.name), getattr(back, f.name)
        if f.name in ("train", "val", "test"):
            assert torch.equal(mine.images, theirs.images) and torch.equal(mine.labels, theirs.labels)
        else:
            assert mine == theirs, f.name
    assert back.train.images.data_ptr() == stored["train"][0].ctypes.data  # the stored memory, not a copy


def test_a_study_record_reads_back_what_sweep_json_holds(tmp_path):
    """``sweep.json`` as the sweep writes it: every study's record survives a save and an open, typed,
    and the file keeps the keys that earlier sweeps wrote (so their ``--resume`` reads them)."""
    import json

    from focustune.records import DeliveredModel, RerunRow, SelectedRun, StudyRecord
    from focustune.sweeps.spec import DatasetSpec, SweepSpec
    from focustune.sweeps.state import SweepState

    spec = SweepSpec(datasets=[DatasetSpec(dataset="tiny")], methods=["erm"], storage=str(tmp_path), experiment="x")
    state = SweepState.open(spec)
    record = state.study("tiny/erm")
    record.parent_run_id, record.finished, record.total, record.best_config = "p1", 2, 3, {"lr": 0.01}
    record.reruns = [RerunRow(1, True, {"test_acc": 0.75}), RerunRow(2, False)]
    record.selected = SelectedRun(kind="seed_rerun", seed=1, config={"lr": 0.01}, trial_id="t7", best_epoch=4,
                                  checkpoint="s3://b/ckpt", val={"acc": 0.8})
    record.model = DeliveredModel(config_files=["a.yaml"], uri="models:/m-1", registered={"version": "1"})
    state.save()
    assert SweepState.open(spec).study("tiny/erm") == record
    raw = json.loads((tmp_path / "x" / SweepState.FILE).read_text())["studies"]["tiny/erm"]
    assert raw["reruns"][0] == {"seed": 1, "ok": True, "test_acc": 0.75}
    assert raw["selected"]["trial_id"] == "t7" and raw["model"]["uri"] == "models:/m-1"
    assert StudyRecord.from_json({"parent_run_id": "p0"}) == StudyRecord(parent_run_id="p0")  # a study just begun
