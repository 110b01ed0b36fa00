"""A one-line-per-event live view of a study: trials running/done and the best score so far."""

from __future__ import annotations

import sys
from typing import Any

from ray import tune

from focustune.sweeps.trainable import OBJECTIVE


class ProgressLine(tune.Callback):
    """Prints ``[study] done 3/20, running 2, failed 0, best 0.8123`` whenever a trial ends."""

    def __init__(self, label: str, total: int, out: Any = None):
        self.label, self.total, self.out = label, total, out
        self.best: float | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "out": None}  # streams do not pickle with the experiment

    def _line(self, trials: list, ending: Any, failed: bool = False) -> str:
        """Counts with ``ending`` (whose status Tune updates only after the callbacks) as ended."""
        others = [t.status for t in trials if t is not ending]
        done = others.count("TERMINATED") + (not failed)
        running = others.count("RUNNING")
        errors = others.count("ERROR") + failed
        return (f"[{self.label}] done {done}/{self.total}, running {running}, failed {errors}, "
                f"best {self.best if self.best is not None else '-'}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        score = result.get(OBJECTIVE)
        if score is not None and (self.best is None or score > self.best):
            self.best = round(float(score), 4)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = (trial.last_result or {}).get("failed_reason")
        line = self._line(trials, trial, failed=bool(reason))
        print(line + (f" (trial {trial.trial_id}: {reason})" if reason else ""), file=self.out or sys.stdout,
              flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(self._line(trials, trial, failed=True) + f" (trial {trial.trial_id} failed)",
              file=self.out or sys.stdout, flush=True)
