"""Several objectives without running Ray: ``--objectives``/``--select`` at the edge, the selection
rule on constructed fronts, per-study MOASHA's promotion by non-dominated rank on constructed rung
results, and the multi-objective searcher (real Optuna studies in a SQLite file)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from focustune.errors import ConfigError
from focustune.methods import get_method
from focustune.objectives import NoPointMeets, Point, SelectionRule, pareto_front
from focustune.records import (EPOCH, FULL_BUDGET, KIND_KEY, MECHANISM_EPOCH, OBJECTIVE, SEED_KEY, STUDY_KEY, TRIAL_ID,
                               StudyRecord)
from focustune.spaces import load_space
from focustune.sweeps.plan import sweep_spec
from focustune.sweeps.schedulers import PerStudyMOASHA
from focustune.sweeps.search import DefineByRun, MultiStudySearch, study_queue
from focustune.sweeps.studies import RERUN, SEARCH
from focustune.sweeps.summaries import study_summary
from test_studies import DEFAULTS, sweep_args

BAL, WORST = "balanced_acc", "worst_class_recall"
TWO = (BAL, WORST)
STUDY = "alpha/erm"


# ---------------------------------------------------------------- --objectives and --select at the edge

@pytest.mark.parametrize("objectives, select, fixed, expected", [
    (None, None, None, ((BAL,), None)),  # today's path: no rule at all
    ("balanced_acc,worst_class_recall", None, None, (TWO, "balanced_acc")),  # default rule: the first objective
    ("worst_class_recall, balanced_acc", "balanced_acc", None, ((WORST, BAL), "balanced_acc")),
    ("balanced_acc,worst_class_recall", "balanced_acc | worst_class_recall>=0.6", None,
     (TWO, "balanced_acc | worst_class_recall>=0.6")),
    ("balanced_acc,worst_class_recall,auc", "auc|worst_class_recall >= .5, balanced_acc>=0.7", None,
     ((BAL, WORST, "auc"), "auc | worst_class_recall>=0.5, balanced_acc>=0.7")),
    ("balanced_acc,recall_of_magic", None, None, "unknown metric 'recall_of_magic'"),
    ("balanced_acc,balanced_acc", None, None, "named twice"),
    ("balanced_acc,worst_class_recall", "auc | worst_class_recall>=0.6", None, "'auc' is not an objective"),
    (None, "balanced_acc | worst_class_recall>=0.6", None, "'worst_class_recall' is not an objective"),
    ("balanced_acc,worst_class_recall", "balanced_acc | worst_class_recall=0.6", None, "cannot read constraint"),
    ("balanced_acc,worst_class_recall", "balanced_acc | worst_class_recall<=0.6", None, "bound it with >="),
    ("balanced_acc,worst_class_recall", "balanced_acc |", None, "nothing after '|'"),
    ("balanced_acc,worst_class_recall", None, "selection_metric=auc", "contradicts --objectives"),
])
def test_objectives_and_select_are_parsed_or_refused_at_the_edge(tmp_path, monkeypatch, capsys, objectives, select,
                                                                 fixed, expected):
    args = sweep_args(methods="erm", objectives=objectives, select=select, set=[fixed] if fixed else None)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected.replace("|", r"\|")):
            sweep_spec(args, DEFAULTS)
        from focustune.cli import main

        monkeypatch.chdir(tmp_path)
        command = ["tune", "--method", "erm", *(["--objectives", objectives] if objectives else []),
                   *(["--select", select] if select else []), *(["--set", fixed] if fixed else [])]
        assert main(command) == 2  # one line, exit 2, nothing written
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert list(tmp_path.iterdir()) == []
        return
    spec = sweep_spec(args, DEFAULTS)
    assert (spec.objective_names, None if spec.selection_rule is None else str(spec.selection_rule)) == expected
    if objectives:  # the first objective picks every trial's best epoch
        assert spec.fixed_values["selection_metric"] == expected[0][0]
    else:
        assert "selection_metric" not in spec.fixed_values


def points(*values: tuple[float, float]) -> list[Point]:
    return [Point(f"t{i}", {BAL: b, WORST: w}) for i, (b, w) in enumerate(values)]


def test_the_rule_maximises_the_first_among_front_points_that_meet_every_constraint():
    found = points((0.90, 0.40), (0.80, 0.65), (0.70, 0.80), (0.75, 0.60), (0.80, 0.65))
    front = pareto_front(found, TWO)
    assert [p.key for p in front] == ["t0", "t1", "t2", "t4"]  # t3 is dominated by t1
    assert SelectionRule.parse("balanced_acc | worst_class_recall>=0.6", TWO).choose(front, TWO).key == "t1"
    assert SelectionRule.parse(None, TWO).choose(front, TWO).key == "t0"  # default: the first objective
    assert SelectionRule.parse("worst_class_recall", TWO).choose(front, TWO).key == "t2"
    with pytest.raises(NoPointMeets, match=r"worst_class_recall>=0.9 \(best on the front: 0.8\)"):
        SelectionRule.parse("balanced_acc | worst_class_recall>=0.9", TWO).choose(front, TWO, STUDY)


# ---------------------------------------------------------------- MOASHA: promotion by non-dominated rank

def trial(trial_id: str, kind: str = SEARCH) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={STUDY_KEY: STUDY, KIND_KEY: kind})


def report(scheduler: PerStudyMOASHA, t: SimpleNamespace, epoch: int, bal: float, worst: float,
           mechanism: int = 1) -> str:
    result = {EPOCH: epoch, MECHANISM_EPOCH: mechanism, OBJECTIVE: bal, f"val_{BAL}": bal, f"val_{WORST}": worst,
              "val_auc": 0.5}
    return scheduler.on_trial_result(None, t, result)


def moasha(grace: int = 1, max_t: int = 2, reduction_factor: float = 4 / 3) -> PerStudyMOASHA:
    return PerStudyMOASHA({STUDY: grace}, max_t=max_t, objectives=TWO, reduction_factor=reduction_factor)


def test_a_rung_promotes_by_non_dominated_rank_with_ties_broken_by_the_first_objective():
    # one rung at epoch 1; with reduction factor 4/3 a rung of n points promotes ceil(3n/4), front always
    scheduler = moasha()
    a, b, c, d, e, f = (trial(x) for x in "abcdef")
    assert report(scheduler, a, 1, 0.80, 0.50) == TrialScheduler.CONTINUE  # first at the rung
    assert report(scheduler, b, 1, 0.60, 0.70) == TrialScheduler.CONTINUE  # on the front (a does not dominate it)
    assert report(scheduler, c, 1, 0.70, 0.45) == TrialScheduler.CONTINUE  # dominated by a, in the quota: 3 of 3
    # d is dominated by b; c and d share rank 1 and the quota of 4 is 3: the tie goes to the first
    # objective, so c (0.70) stays ahead and d (0.55), better on the second, stops
    assert report(scheduler, d, 1, 0.55, 0.65) == TrialScheduler.STOP
    assert report(scheduler, e, 1, 0.85, 0.30) == TrialScheduler.CONTINUE  # a new front point always continues
    assert report(scheduler, f, 1, 0.50, 0.40) == TrialScheduler.STOP  # dominated by all: rank 2
    assert report(scheduler, a, 2, 0.80, 0.50) == TrialScheduler.CONTINUE  # past the last rung: no more judging


def test_moasha_judges_the_best_epoch_only_after_the_mechanism_acted_and_never_stops_reruns():
    scheduler = moasha(grace=2, max_t=8, reduction_factor=2)
    strong, late = trial("strong"), trial("late")
    for epoch in (1, 2):
        report(scheduler, strong, epoch, 0.9, 0.9, mechanism=2)
    assert report(scheduler, late, 1, 0.95, 0.95, mechanism=2) == TrialScheduler.CONTINUE  # its best epoch so far
    # epoch 2 is worse, but the rung judges the best epoch so far (epoch 1), which dominates strong's
    assert report(scheduler, late, 2, 0.10, 0.10, mechanism=2) == TrialScheduler.CONTINUE
    hopeless = trial("hopeless")
    assert report(scheduler, hopeless, 1, 0.0, 0.0, mechanism=2) == TrialScheduler.CONTINUE  # before its mechanism
    assert report(scheduler, hopeless, 2, 0.0, 0.0, mechanism=2) == TrialScheduler.STOP
    reruns = [trial(f"r{i}", RERUN) for i in range(3)]
    assert {report(scheduler, r, 2, 0.0, 0.0) for r in reruns} == {TrialScheduler.CONTINUE}
    assert pickle.loads(pickle.dumps(scheduler)).asha(STUDY).recorded == scheduler.asha(STUDY).recorded


# ---------------------------------------------------------------- the multi-objective searcher

def full_result(bal: float, worst: float) -> dict:
    return {OBJECTIVE: bal, f"best_val_{BAL}": bal, f"best_val_{WORST}": worst, f"test_{BAL}": bal - 0.05,
            f"test_{WORST}": worst - 0.05, FULL_BUDGET: True}


def test_multi_objective_studies_are_told_every_value_warm_start_and_rerun_the_rules_point(tmp_path):
    rule = SelectionRule.parse("balanced_acc | worst_class_recall>=0.6", TWO)
    space = DefineByRun(load_space(get_method("erm")), {"epochs": 2, SEED_KEY: 0})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = MultiStudySearch({STUDY: space}, study_queue([STUDY], 3, 1, objectives=TWO, rule=rule), storage,
                              sampler_seed=0, warm_starts={STUDY: [{"lr": 0.00123}]}, objectives=TWO)
    configs = [search.suggest(f"t{i}") for i in range(3)]
    assert configs[0]["lr"] == pytest.approx(0.00123)  # the warm start comes first, as with one objective
    search = pickle.loads(pickle.dumps(search))  # as Tune checkpoints it; the studies reload from storage
    for i, values in enumerate([(0.9, 0.4), (0.8, 0.7), (0.7, 0.75)]):
        search.on_trial_complete(f"t{i}", full_result(*values))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert [t.values for t in study.trials] == [[0.9, 0.4], [0.8, 0.7], [0.7, 0.75]]
    rerun = search.suggest("r1")
    assert rerun[KIND_KEY] == RERUN and rerun["lr"] == configs[1]["lr"]  # t1: the best meeting the constraint


def test_the_study_record_holds_the_front_and_the_chosen_point_or_why_none():
    def result(trial_id: str, bal: float, worst: float, lr: float) -> SimpleNamespace:
        return SimpleNamespace(config={KIND_KEY: SEARCH, STUDY_KEY: STUDY, "lr": lr, SEED_KEY: 0}, error=None,
                               metrics={**full_result(bal, worst), TRIAL_ID: trial_id}, checkpoint=None)

    results = [result("t0", 0.9, 0.4, 0.1), result("t1", 0.8, 0.7, 0.2), result("t2", 0.7, 0.6, 0.3)]
    summary = study_summary(results, TWO, SelectionRule.parse("balanced_acc | worst_class_recall>=0.6", TWO), STUDY)
    pareto = summary["pareto"]
    assert pareto.front == ["t0", "t1"] and pareto.chosen == "t1" and pareto.selection_refused is None
    assert summary["best_config"]["lr"] == 0.2 and summary["selected"].config["lr"] == 0.2
    assert [p.on_front for p in pareto.points] == [True, True, False]
    assert StudyRecord.from_json(StudyRecord(**summary).to_json()).pareto == pareto  # as sweep.json holds it
    refused = study_summary(results, TWO, SelectionRule.parse("balanced_acc | worst_class_recall>=0.95", TWO), STUDY)
    assert refused["pareto"].chosen is None and refused["best_config"] is None and refused["selected"] is None
    message = "no point of the front of alpha/erm (2 point(s)) meets worst_class_recall>=0.95"
    assert message in refused["pareto"].selection_refused
