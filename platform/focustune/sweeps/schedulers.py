"""Early stopping per study, only after the method's mechanism has acted.

One Tune run holds every study of a sweep, so a single ASHA would rank trials of different datasets
and methods in the same rungs. :class:`PerStudyASHA` keeps one ASHA per study, with the study's
grace period at least the epoch from which its method has acted (IMET's first error-driven
iteration, mdgan's fine-tuning; the first epoch for the others), and never judges a trial on a
result from before its own mechanism epoch. Seed re-runs are never stopped.

With several objectives, :class:`PerStudyMOASHA` keeps the same per-study rungs, grace periods and
phase rule, but a rung compares points instead of one score (:class:`ParetoRungs`: the idea of
MOASHA, Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving").
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from focustune.sweeps.studies import SEARCH
from focustune.metric_table import metric_row
from focustune.objectives import nondominated_ranks, oriented
from focustune.records import EPOCH, KIND_KEY, MECHANISM_EPOCH, OBJECTIVE, STUDY_KEY


class PerStudyASHA(FIFOScheduler):
    """An asynchronous successive-halving scheduler per study (``graces``: study -> grace period)."""

    def __init__(self, graces: dict[str, int], max_t: int, reduction_factor: float = 4):
        super().__init__()
        self.graces, self.max_t, self.reduction_factor = dict(graces), max_t, reduction_factor
        self.ashas: dict[str, Any] = {}
        self.added: set[str] = set()

    def grace(self, study: str) -> int:
        return min(max(1, self.graces[study]), self.max_t)

    def asha(self, study: str) -> Any:
        if study not in self.ashas:
            grace = self.grace(study)
            self.ashas[study] = ASHAScheduler(time_attr=EPOCH, metric=OBJECTIVE, mode="max", max_t=self.max_t,
                                              grace_period=grace, reduction_factor=self.reduction_factor)
        return self.ashas[study]

    @staticmethod
    def _searched(trial: Any) -> str | None:
        """The study of a search trial (None for a seed re-run)."""
        return trial.config.get(STUDY_KEY) if trial.config.get(KIND_KEY) == SEARCH else None

    def _add(self, controller: Any, trial: Any, study: str) -> None:
        if trial.trial_id not in self.added:  # also trials restored after a driver restart
            self.asha(study).on_trial_add(controller, trial)
            self.added.add(trial.trial_id)

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        if study := self._searched(trial):
            self._add(controller, trial, study)

    def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
        study = self._searched(trial)
        if study is None or result.get(EPOCH, 0) < result.get(MECHANISM_EPOCH, 1):
            return TrialScheduler.CONTINUE
        self._add(controller, trial, study)
        return self.asha(study).on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller: Any, trial: Any, result: dict) -> None:
        study = self._searched(trial)
        if study is None or trial.trial_id not in self.added:
            return
        self.added.discard(trial.trial_id)
        if result.get(EPOCH, 0) < result.get(MECHANISM_EPOCH, 1):  # ended before the method acted
            self.asha(study).on_trial_remove(controller, trial)
        else:
            self.asha(study).on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        study = self._searched(trial)
        if study is not None and trial.trial_id in self.added:
            self.added.discard(trial.trial_id)
            self.asha(study).on_trial_remove(controller, trial)

    def debug_string(self) -> str:
        return "Per-study ASHA: " + "; ".join(f"{k} (grace {self.graces[k]})" for k in self.ashas)


class ParetoRungs:
    """One study's rungs, judged by non-dominated rank (asynchronous: a trial is judged once per rung,
    when it reaches it, against the points recorded there before it).

    Rungs sit at epochs ``grace * reduction_factor**k`` below ``max_t``, as in Tune's ASHA. A trial's
    point at a rung is its objectives' validation values at its best epoch so far, by its selection
    metric (the first objective, ties to its row's tie-breaker): the epoch the trainer would hand
    over, as the final point Optuna is told is the best epoch's. At a rung holding ``n`` points (the
    new one included) the new point continues when

    - no recorded point dominates it (it is on the rung's front: stopping it could remove a point of
      the final front that the rung cannot rule out yet), or
    - it is among the first ``ceil(n / reduction_factor)`` points ordered by non-dominated rank,
      ties within a rank broken by the objectives in their order (the first objective first), then
      by arrival (a point already recorded stays ahead of the new one on exact ties);

    otherwise it stops. The first point at a rung always continues. Unlike MOASHA's promotion of
    exactly the top ``1/reduction_factor``, a front larger than that quota is kept whole.
    """

    def __init__(self, objectives: tuple[str, ...], grace: int, max_t: int, reduction_factor: float):
        self.objectives, self.reduction_factor = tuple(objectives), reduction_factor
        self.milestones: list[float] = []
        milestone = float(grace)
        while milestone < max_t:
            self.milestones.append(milestone)
            milestone *= reduction_factor
        self.recorded: dict[float, dict[str, tuple[float, ...]]] = {m: {} for m in self.milestones}
        self.best: dict[str, tuple[tuple[float, float], dict[str, float]]] = {}  # trial -> (score, values)

    def observe(self, trial_id: str, result: dict) -> None:
        """Keep the trial's objective values of its best epoch so far (every result, from epoch 1)."""
        selection = metric_row(self.objectives[0])
        score = tuple(-math.inf if math.isnan(v := float(result.get(f"val_{m.name}", math.nan))) else m.sign * v
                      for m in (selection, metric_row(selection.tie_breaker)))
        if trial_id not in self.best or score > self.best[trial_id][0]:
            values = {m: float(result.get(f"val_{m}", math.nan)) for m in self.objectives}
            self.best[trial_id] = ((score[0], score[1]), values)

    def point(self, trial_id: str) -> tuple[float, ...]:
        return oriented(self.best[trial_id][1], self.objectives) if trial_id in self.best else \
            tuple(-math.inf for _ in self.objectives)

    def decide(self, trial_id: str, epoch: int) -> str:
        """CONTINUE or STOP for a trial whose result at ``epoch`` was just observed."""
        reached = [m for m in self.milestones if m <= epoch]
        if not reached or trial_id in self.recorded[reached[-1]]:
            return TrialScheduler.CONTINUE  # below the first rung, or judged at its highest rung already
        rung = self.recorded[reached[-1]]
        rung[trial_id] = self.point(trial_id)  # recorded last: behind earlier arrivals on exact ties
        return TrialScheduler.CONTINUE if self.promoted(list(rung.values()), len(rung) - 1) else TrialScheduler.STOP

    def promoted(self, points: list[tuple[float, ...]], index: int) -> bool:
        """Whether ``points[index]`` continues among the rung's ``points`` (the rule in the class docstring)."""
        ranks = nondominated_ranks(points)
        if ranks[index] == 0:
            return True
        order = sorted(range(len(points)), key=lambda i: (ranks[i], tuple(-x for x in points[i]), i))
        return order.index(index) < math.ceil(len(points) / self.reduction_factor)

    def forget(self, trial_id: str) -> None:
        self.best.pop(trial_id, None)  # its recorded points stay: later arrivals are judged against them

    # Tune's scheduler events, as PerStudyASHA forwards them to a per-study scheduler
    def on_trial_add(self, controller: Any, trial: Any) -> None:
        pass

    def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
        return self.decide(trial.trial_id, int(result.get(EPOCH, 0)))

    def on_trial_complete(self, controller: Any, trial: Any, result: dict) -> None:
        self.forget(trial.trial_id)

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        self.forget(trial.trial_id)


class PerStudyMOASHA(PerStudyASHA):
    """:class:`PerStudyASHA` for several objectives: one :class:`ParetoRungs` per study, with the same
    grace periods, mechanism-epoch rule and untouched seed re-runs."""

    def __init__(self, graces: dict[str, int], max_t: int, objectives: tuple[str, ...], reduction_factor: float = 4):
        super().__init__(graces, max_t, reduction_factor)
        self.objectives = tuple(objectives)

    def asha(self, study: str) -> ParetoRungs:
        if study not in self.ashas:
            self.ashas[study] = ParetoRungs(self.objectives, self.grace(study), self.max_t, self.reduction_factor)
        return self.ashas[study]

    def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
        if study := self._searched(trial):  # before the mechanism epoch too: its best epoch may be one of those
            self.asha(study).observe(trial.trial_id, result)
        return super().on_trial_result(controller, trial, result)

    def debug_string(self) -> str:
        return f"Per-study MOASHA ({', '.join(self.objectives)}): " + "; ".join(
            f"{k} (grace {self.graces[k]})" for k in self.ashas)
