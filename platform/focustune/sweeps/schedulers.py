"""Early stopping per study, only after the method's mechanism has acted.

One Tune run holds every study of a sweep, so a single ASHA would rank trials of different datasets
and methods in the same rungs. :class:`PerStudyASHA` keeps one ASHA per study, with the study's
grace period at least the epoch from which its method has acted (IMET's first error-driven
iteration, mdgan's fine-tuning; the first epoch for the others), and never judges a trial on a
result from before its own mechanism epoch. Seed re-runs are never stopped.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from focustune.sweeps.studies import SEARCH
from focustune.records import EPOCH, KIND_KEY, MECHANISM_EPOCH, OBJECTIVE, STUDY_KEY


class PerStudyASHA(FIFOScheduler):
    """An asynchronous successive-halving scheduler per study (``graces``: study -> grace period)."""

    def __init__(self, graces: dict[str, int], max_t: int, reduction_factor: float = 4):
        super().__init__()
        self.graces, self.max_t, self.reduction_factor = dict(graces), max_t, reduction_factor
        self.ashas: dict[str, ASHAScheduler] = {}
        self.added: set[str] = set()

    def asha(self, study: str) -> ASHAScheduler:
        if study not in self.ashas:
            grace = min(max(1, self.graces[study]), self.max_t)
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
