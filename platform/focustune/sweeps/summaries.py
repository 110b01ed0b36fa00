"""What a finished Tune run says per study: trial counts, the best full-budget search trial (by
validation, never test), the seed re-runs, the selected run whose model the study hands over, and
each trial attempt's busy interval (for the utilisation). Reads Tune results; writes nothing."""

from __future__ import annotations

from typing import Any

from focustune.objectives import NoPointMeets, Point, SelectionRule, pareto_front
from focustune.sweeps.state import checkpoint_location
from focustune.sweeps.studies import RERUN, SEARCH, Interval, objective_values, selection_score
from focustune.records import (BEST_EPOCH, BUSY_SINCE, BUSY_UNTIL, DIVERGED, FULL_BUDGET, KIND_KEY, NODE_ID, OBJECTIVE,
                               SEED_KEY, STUDY_KEY, TRIAL_ID, FrontPoint, ParetoRecord, RerunRow,
                               SelectedRun)
from focustune.sweeps.trial_config import hyperparameters
from focustune.tracking_schema import METRIC_NAMES

Done = tuple[Any, dict[str, Any]]  # a completed trial: its Tune result and its final metrics


def completed_metrics(result: Any) -> dict[str, Any] | None:
    """A trial's final metrics when it trained its full budget without diverging, else None."""
    m = result.metrics or {}
    return m if result.error is None and m.get(FULL_BUDGET) and not m.get(DIVERGED) else None


def busy_intervals(results: Any) -> list[Interval]:
    """Each trial attempt's busy interval (first start to last report), from every report it made."""
    intervals = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or BUSY_SINCE not in frame:
            continue
        frame = frame.dropna(subset=[BUSY_SINCE, BUSY_UNTIL])
        for since, group in frame.groupby(BUSY_SINCE):
            intervals.append(Interval(str(group[NODE_ID].iloc[-1]), float(since), float(group[BUSY_UNTIL].max())))
    return intervals


def study_summaries(keys: list[str], results: Any, objectives: tuple[str, ...] = (),
                    rule: SelectionRule | None = None) -> dict[str, dict[str, Any]]:
    """Per study key, the :func:`study_summary` of its trials' results."""
    by_study: dict[str, list[Any]] = {key: [] for key in keys}
    for result in results:
        if result.config and result.config.get(STUDY_KEY) in by_study:
            by_study[result.config[STUDY_KEY]].append(result)
    return {key: study_summary(group, objectives, rule, key) for key, group in by_study.items()}


def unfinished(live: int, summaries: dict[str, dict[str, Any]], trials: int, seeds: int) -> list[str]:
    """What a Tune run that returned left undone, empty when nothing: ``live`` trials that its end cut
    short (:class:`~focustune.sweeps.search.TrialLedger`), a study short of its search trials, or of
    the seed re-runs of its best configuration."""
    left = []
    if live:
        left.append(f"{live} trial(s) still running")
    for key, summary in summaries.items():
        if summary["total"] < trials:
            left.append(f"{key}: {summary['total']} of {trials} search trials started")
        elif summary["best_config"] is not None and len(summary["reruns"]) < seeds:
            left.append(f"{key}: {len(summary['reruns'])} of {seeds} seed re-runs")
    return left


def study_summary(results: list[Any], objectives: tuple[str, ...] = (), rule: SelectionRule | None = None,
                  key: str = "the study") -> dict[str, Any]:
    """Trial counts, the best full-budget search trial (its configuration, objective and test scores),
    the seed re-runs and the selected run of one study's results: the summary fields of its
    :class:`~focustune.records.StudyRecord`, by name. With a selection ``rule`` (several
    ``objectives``, or ``--select``), the best trial is the front's point the rule selects, and the
    summary holds the front (:func:`front_record`)."""
    searched = [r for r in results if r.config.get(KIND_KEY) == SEARCH]
    done = [(r, m) for r in searched if (m := completed_metrics(r)) is not None]
    failed = [r for r in searched if r.error is not None or (r.metrics or {}).get(DIVERGED)]
    summary: dict[str, Any] = {"finished": len(done), "total": len(searched), "best_config": None,
                               "failed": len(failed), "stopped_early": len(searched) - len(done) - len(failed)}
    chosen: list[Done] = done
    if rule is not None:
        summary["pareto"], chosen = front_record(done, objectives, rule, key)
    if chosen:
        summary.update(_best(results, chosen))
    summary["reruns"] = sorted((rerun_row(r) for r in results if r.config.get(KIND_KEY) == RERUN),
                               key=lambda row: row.seed)
    summary["selected"] = _selected(results, chosen)
    return summary


def front_record(done: list[Done], objectives: tuple[str, ...], rule: SelectionRule,
                 key: str) -> tuple[ParetoRecord, list[Done]]:
    """The study's front among ``objectives`` (every full-budget search trial a point, at its
    objectives' best-epoch validation values), the point ``rule`` selects, and that completed trial
    (none when no point of the front meets the rule)."""
    by_id = {str(m.get(TRIAL_ID)): (r, m) for r, m in done}
    points = [Point(trial_id, objective_values(m, objectives)) for trial_id, (_, m) in sorted(by_id.items())]
    front = pareto_front(points, objectives)
    on_front = {p.key for p in front}
    record = ParetoRecord(
        objectives=list(objectives), selection_rule=str(rule), front=[p.key for p in front],
        points=[FrontPoint(p.key, dict(p.values), {m: by_id[p.key][1].get(f"test_{m}") for m in objectives},
                           hyperparameters(by_id[p.key][0].config), p.key in on_front) for p in points])
    try:
        chosen = rule.choose(front, objectives, key)
    except NoPointMeets as refused:
        record.selection_refused = str(refused)
        return record, []
    record.chosen = chosen.key
    return record, [by_id[chosen.key]]


def _best(results: list[Any], done: list[Done]) -> dict[str, Any]:
    # equal scores: the configuration the search re-ran with seeds (it may pick another among equals)
    rerun = next((hyperparameters(r.config) for r in results if r.config.get(KIND_KEY) == RERUN), None)
    best, m = max(done, key=lambda rm: (selection_score(rm[1], rm[0].config), hyperparameters(rm[0].config) == rerun))
    return {"best_config": hyperparameters(best.config), "best_objective": m[OBJECTIVE],
            "best_trial_test": {k: v for k, v in m.items() if k.startswith("test_") and isinstance(v, (int, float))}}


def _selected(results: list[Any], searched: list[Done]) -> SelectedRun | None:
    """The run whose model the study hands over: its best seed re-run, else its best search trial."""
    reruns = [(r, m) for r in results if r.config.get(KIND_KEY) == RERUN and (m := completed_metrics(r)) is not None]
    return selected_model(reruns or searched)


def selected_model(done: list[Done]) -> SelectedRun | None:
    """Among (Tune result, final metrics) of a study's completed runs, the one with the best validation
    score: its kind, seed, checkpoint location and best-epoch validation metrics."""
    if not done:
        return None
    result, metrics = max(done, key=lambda rm: selection_score(rm[1], rm[0].config))
    return SelectedRun(kind=result.config.get(KIND_KEY), seed=int(result.config.get(SEED_KEY, 0)),
                       config=hyperparameters(result.config),
                       trial_id=metrics.get(TRIAL_ID), best_epoch=metrics.get(BEST_EPOCH),
                       checkpoint=checkpoint_location(result.checkpoint) if result.checkpoint else None,
                       val={m: metrics.get(f"best_val_{m}") for m in METRIC_NAMES})


def rerun_row(result: Any) -> RerunRow:
    """A seed re-run's line of the summary: its seed, whether it completed, its final scores."""
    m = result.metrics or {}
    return RerunRow(result.config.get(SEED_KEY), completed_metrics(result) is not None,
                    {k: m.get(k) for k in m if k.startswith(("test_", "best_val_")) and not k.endswith("matrix")})
