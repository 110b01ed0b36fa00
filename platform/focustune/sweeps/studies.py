"""Which trial runs next, across every (dataset, method) study of a sweep, and how busy the slots were.

Plain Python (no Ray, no Optuna, no torch), so the policy can be driven by Tune and by a simulation alike.
All studies advance together: a free slot goes first to a study whose search has finished and whose
seed re-runs are still to start, else to the study with the fewest started search trials.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from focustune.objectives import NoPointMeets, Point, SelectionRule, pareto_front
from focustune.records import OBJECTIVE
from focustune.tracking_schema import DEFAULT_SELECTION_METRIC
from focustune.tracking_schema import KIND_RERUN as RERUN
from focustune.tracking_schema import KIND_TRIAL as SEARCH


def selection_score(metrics: dict[str, Any], config: dict[str, Any]) -> tuple[float, float]:
    """How a full-budget trial ranks: its best-epoch validation score of the selection metric (never
    test), ties broken by the objective."""
    metric = "best_val_" + str(config.get("selection_metric", DEFAULT_SELECTION_METRIC))
    return float(metrics.get(metric, metrics[OBJECTIVE])), float(metrics[OBJECTIVE])


@dataclass
class Outcome:
    """How a search trial ended: ``score`` (selection metric, then objective) only for full-budget runs."""

    config: dict[str, Any]
    score: tuple[float, float] | None = None
    test: dict[str, float] = field(default_factory=dict)
    trial_id: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # several objectives: best-epoch validation values


def objective_values(metrics: dict[str, Any], objectives: tuple[str, ...]) -> dict[str, float]:
    """A full-budget trial's point: each objective's validation value at its best epoch."""
    return {m: float(metrics[f"best_val_{m}"]) for m in objectives if f"best_val_{m}" in metrics}


@dataclass
class Study:
    """One (dataset, method) study: its search budget, its seed re-runs and what has happened so far."""

    key: str
    trials: int
    seeds: list[int]
    started: int = 0
    ended: list[Outcome] = field(default_factory=list)
    reruns_started: int = 0
    reruns: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> final metrics (ok or not)
    #: Several objectives (or a ``--select`` rule): the rule picks ``best`` from the front of the
    #: completed trials; None: the best by validation score, as with one objective.
    objectives: tuple[str, ...] = ()
    rule: SelectionRule | None = None

    @property
    def search_done(self) -> bool:
        return len(self.ended) >= self.trials

    @property
    def completed(self) -> list[Outcome]:
        return [o for o in self.ended if o.score is not None]

    @property
    def best(self) -> Outcome | None:
        """The full-budget trial with the best validation score (never test); with a selection rule,
        the front's point it selects (None when no point meets it)."""
        if self.rule is None:
            return max(self.completed, key=lambda o: o.score or (-math.inf, -math.inf), default=None)
        by_id = {str(o.trial_id): o for o in self.completed}
        points = [Point(trial_id, o.values) for trial_id, o in sorted(by_id.items())]  # the summaries' order
        try:
            chosen = self.rule.choose(pareto_front(points, self.objectives), self.objectives, self.key)
        except NoPointMeets:
            return None
        return by_id[chosen.key]

    @property
    def reruns_to_start(self) -> int:
        if not self.search_done or self.best is None:
            return 0
        return len(self.seeds) - self.reruns_started

    @property
    def done(self) -> bool:
        if not self.search_done:
            return False
        return self.best is None or len(self.reruns) >= len(self.seeds)


@dataclass(frozen=True)
class Assignment:
    study: str
    kind: str  # SEARCH or RERUN
    seed: int | None = None


class StudyQueue:
    """The scheduling policy over all studies (state is plain data: it pickles with Tune's searcher).

    ``one_at_a_time`` is the order sweeps used before all studies ran together (a study's search,
    then its re-runs, then the next study): the baseline the benchmarks compare against.
    """

    def __init__(self, studies: list[Study], one_at_a_time: bool = False):
        self.studies = {s.key: s for s in studies}
        self.one_at_a_time = one_at_a_time

    def next(self) -> Assignment | None:
        """The next trial to start, or None when every remaining trial waits for a running one."""
        candidates = list(self.studies.values())
        if self.one_at_a_time:
            candidates = [s for s in candidates if not s.done][:1]
        for study in candidates:
            if study.reruns_to_start > 0:
                seed = study.seeds[study.reruns_started]
                study.reruns_started += 1
                return Assignment(study.key, RERUN, seed)
        open_studies = [s for s in candidates if s.started < s.trials]
        if not open_studies:
            return None
        study = min(open_studies, key=lambda s: s.started)  # first in order among equals
        study.started += 1
        return Assignment(study.key, SEARCH)

    def search_ended(self, key: str, outcome: Outcome) -> None:
        self.studies[key].ended.append(outcome)

    def adopt(self, key: str, kind: str, seed: int | None = None) -> None:
        """Count as started a trial started outside :meth:`next` (one a restored Tune runs, which the
        queue's older snapshot did not know)."""
        study = self.studies[key]
        if kind != RERUN:
            study.started += 1
        elif seed in study.seeds[study.reruns_started:]:
            study.seeds.remove(seed)
            study.seeds.insert(study.reruns_started, seed)
            study.reruns_started += 1

    def unstart(self, key: str, kind: str, seed: int | None = None, trial_id: str | None = None) -> None:
        """Take back a started (or ended) trial no Tune trial runs any more (the queue's snapshot is
        newer than Tune's): :meth:`next` hands its search slot, or its seed, out again."""
        study = self.studies[key]
        if kind != RERUN:
            study.ended = [o for o in study.ended if trial_id is None or o.trial_id != trial_id]
            study.started = max(study.started - 1, 0)
        elif seed in study.seeds[:study.reruns_started]:
            study.reruns.pop(seed, None)
            study.seeds.remove(seed)
            study.reruns_started -= 1
            study.seeds.insert(study.reruns_started, seed)

    def rerun_ended(self, key: str, seed: int, metrics: dict[str, Any]) -> None:
        self.studies[key].reruns[seed] = metrics

    @property
    def finished(self) -> bool:
        return all(s.done for s in self.studies.values())


# ---------------------------------------------------------------- utilisation

@dataclass(frozen=True)
class Interval:
    """A trial's busy time on a node (wall-clock seconds)."""

    node: str
    start: float
    end: float


@dataclass(frozen=True)
class Attempt:
    """One driver's run of a sweep (the first one, or a ``--resume``): when it started (wall clock) and
    its trial slots per node (``"total"``: its overall cap, e.g. ``--max-concurrent``)."""

    start: float
    slots: dict[str, int]


def utilisation(intervals: list[Interval], slots: dict[str, int],
                attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """Busy slot-seconds over available slot-seconds, overall and per node.

    Without ``attempts``: available = ``slots`` (trial slots per node, ``"total"`` capping the overall
    count) times the span from the first trial start to the last end.

    With ``attempts`` (every driver run of a resumed sweep), the available slot-seconds are summed
    over the attempts: each attempt's own slots (its nodes; a resumed driver's Ray may have other
    nodes) times its own span, from the first start to the last end of the trial intervals that
    started during it (between its start and the next attempt's start; an interval is cut at the
    next attempt's start). A node counts in the attempts it belonged to; the time between a killed
    driver's last trial and the next attempt counts in none.

    Returns ``{"overall": u, "nodes": {node: u}, "span_s": ..., "busy_s": ..., "slots": ...,
    "attempts": n}`` (``span_s``: the attempts' spans summed; ``slots``: the most any attempt had).
    """
    if not attempts:
        attempts = [Attempt(-float("inf"), slots)]
    attempts = sorted(attempts, key=lambda a: a.start)
    busy: dict[str, float] = defaultdict(float)
    available: dict[str, float] = defaultdict(float)
    overall_available = span_total = 0.0
    most_slots = 0
    for index, attempt in enumerate(attempts):
        until = attempts[index + 1].start if index + 1 < len(attempts) else float("inf")
        own = [Interval(i.node, i.start, min(i.end, until)) for i in intervals if attempt.start <= i.start < until]
        node_slots = {n: c for n, c in attempt.slots.items() if n != "total"}
        total_slots = min(sum(node_slots.values()), attempt.slots.get("total", float("inf")))
        most_slots = max(most_slots, int(total_slots))
        if not own:
            continue
        span = max(i.end for i in own) - min(i.start for i in own)
        span_total += span
        overall_available += total_slots * span
        for i in own:
            busy[i.node] += i.end - i.start
        for node, count in node_slots.items():
            available[node] += count * span
    if not busy:
        return {"overall": None, "nodes": {}, "span_s": 0.0, "busy_s": 0.0, "slots": most_slots,
                "attempts": len(attempts)}
    ratio = lambda b, a: b / a if a > 0 else None  # noqa: E731
    return {"overall": ratio(sum(busy.values()), overall_available),
            "nodes": {n: ratio(busy.get(n, 0.0), available[n]) for n in available},
            "span_s": span_total, "busy_s": sum(busy.values()), "slots": most_slots, "attempts": len(attempts)}
