"""The live view of a sweep: every study's trials, the best score so far, utilisation, time left.

On a terminal one table is redrawn in place (at most once a second); otherwise a plain line per
ended trial. The callback also collects each trial's busy interval per node, from which the sweep's
utilisation is computed (its state travels with Tune's experiment checkpoint, so a resumed sweep
counts the earlier intervals too).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from ray import tune

from focustune.sweeps.studies import RERUN, Attempt, Interval, utilisation
from focustune.records import (BUSY_SINCE, BUSY_UNTIL, DIVERGED, FAILED_REASON, FULL_BUDGET, KIND_KEY, NODE_ID,
                               OBJECTIVE, STUDY_KEY)

REDRAW_S = 1.0

#: Every driver run of this sweep so far (set by the runner before Tune starts): the live view of a
#: resumed sweep counts each run's own nodes and span, as its final utilisation does.
_ATTEMPTS: list[Attempt] = []


def use_attempts(attempts: list[Attempt]) -> None:
    _ATTEMPTS[:] = attempts


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"


class SweepProgress(tune.Callback):
    """Counts per study (``budgets``: study -> (search trials, seed re-runs)) and busy intervals."""

    def __init__(self, budgets: dict[str, tuple[int, int]], slots: dict[str, int], out: Any = None):
        self.budgets, self.slots, self.out = dict(budgets), dict(slots), out
        self.ended: dict[str, Counter] = {key: Counter() for key in budgets}  # done / failed / stopped / rerun
        self.best: dict[str, float] = {}
        self.running: dict[str, str] = {}  # trial id -> study
        self.busy: dict[tuple[str, float], Interval] = {}  # (trial id, attempt start) -> interval
        self._drawn_lines = 0
        self._last_draw = 0.0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "out": None}  # streams do not pickle with the experiment

    @property
    def stream(self) -> Any:
        return self.out or sys.stdout

    # ---------------------------------------------------------------- Tune events
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = trial.config[STUDY_KEY]
        self._show()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._record_busy(trial.trial_id, result)
        if trial.config.get(KIND_KEY) != RERUN and result.get(OBJECTIVE) is not None:
            key = trial.config[STUDY_KEY]
            self.best[key] = max(self.best.get(key, float("-inf")), float(result[OBJECTIVE]))
        if time.monotonic() - self._last_draw >= REDRAW_S:
            self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        outcome = "failed" if result.get(DIVERGED) else "done" if result.get(FULL_BUDGET) else "stopped"
        self._end(trial, outcome, result.get(FAILED_REASON))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "failed", "the trial raised an error")

    def get_state(self) -> dict | None:
        return {"ended": self.ended, "best": self.best, "busy": self.busy}

    def set_state(self, state: dict) -> None:
        self.ended.update(state["ended"])
        self.best.update(state["best"])
        self.busy.update(state["busy"])

    # ---------------------------------------------------------------- bookkeeping
    def _record_busy(self, trial_id: str, result: dict) -> None:
        if BUSY_SINCE in result and BUSY_UNTIL in result:
            key = (trial_id, float(result[BUSY_SINCE]))
            self.busy[key] = Interval(str(result.get(NODE_ID, "?")), float(result[BUSY_SINCE]),
                                      float(result[BUSY_UNTIL]))

    def _end(self, trial: Any, outcome: str, reason: str | None) -> None:
        self._record_busy(trial.trial_id, dict(trial.last_result or {}))
        key = trial.config[STUDY_KEY]
        self.running.pop(trial.trial_id, None)
        self.ended[key]["rerun" if trial.config.get(KIND_KEY) == RERUN else outcome] += 1
        if reason and not self._interactive:
            print(f"[{key}] trial {trial.trial_id} failed: {reason}", file=self.stream, flush=True)
        self._show(changed=key)

    def usage(self) -> dict[str, Any]:
        return utilisation(list(self.busy.values()), self.slots, list(_ATTEMPTS) or None)

    def remaining_s(self) -> float | None:
        """Estimated time left: trials still to run x mean busy seconds per trial / slots."""
        usage = self.usage()
        ended = sum(sum(c.values()) for c in self.ended.values())
        if not ended or not usage["slots"]:
            return None
        left = sum(t + s for t, s in self.budgets.values()) - ended
        return max(left, 0) * (usage["busy_s"] / ended) / usage["slots"]

    # ---------------------------------------------------------------- drawing
    @property
    def _interactive(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def study_line(self, key: str) -> str:
        """``search 3/20 (stopped 1, failed 0), seeds 0/3, running 2, best 0.8123`` for a study."""
        trials, seeds = self.budgets[key]
        c = self.ended[key]
        running = sum(1 for k in self.running.values() if k == key)
        best = f"{self.best[key]:.4f}" if key in self.best else "-"
        return (f"search {c['done'] + c['stopped'] + c['failed']}/{trials} (stopped {c['stopped']}, "
                f"failed {c['failed']}), seeds {c['rerun']}/{seeds}, running {running}, best {best}")

    def footer(self) -> str:
        usage, left = self.usage(), self.remaining_s()
        share = "-" if usage["overall"] is None else f"{usage['overall']:.0%}"
        elapsed = _duration(usage["span_s"])
        return (f"utilisation {share} of {usage['slots']} slot(s), elapsed {elapsed}, "
                f"left ~{'-' if left is None else _duration(left)}")

    def _show(self, changed: str | None = None) -> None:
        self._last_draw = time.monotonic()
        if self._interactive:
            width = max(map(len, self.budgets))
            lines = [f"{k:<{width}}  {self.study_line(k)}" for k in self.budgets] + [self.footer()]
            erase = f"\x1b[{self._drawn_lines}F\x1b[J" if self._drawn_lines else ""
            print(erase + "\n".join(lines), file=self.stream, flush=True)
            self._drawn_lines = len(lines)
        elif changed is not None:
            print(f"[{changed}] {self.study_line(changed)}; {self.footer()}", file=self.stream, flush=True)
