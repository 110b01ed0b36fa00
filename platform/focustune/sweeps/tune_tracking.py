"""Tune's trial events handed to the trial runs in MLflow (:class:`focustune.tracking.trial_runs.TrialRuns`):
the one place where Tune meets tracking. The runs' state travels in Tune's experiment checkpoint."""

from __future__ import annotations

from typing import Any

from ray import tune

from focustune.tracking.trial_runs import TrialRuns


class TrackingCallback(tune.Callback):
    """Tune callback: each trial's start, epochs, end or error, and the experiment's end, to ``runs``."""

    def __init__(self, runs: TrialRuns):
        self.runs = runs

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.runs.trial_started(trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.runs.epoch_reported(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.runs.trial_completed(trial.trial_id, dict(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = str(getattr(trial, "error_file", "") or "trial raised an error")
        self.runs.trial_errored(trial.trial_id, reason, dict(trial.last_result or {}))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.runs.finish()

    def get_state(self) -> dict | None:
        return self.runs.get_state()

    def set_state(self, state: dict) -> None:
        self.runs.set_state(state)
