"""Typed records that cross a seam, defined once: a trial's config keys and its report (written by the
trainable; read by the searcher, the scheduler, the live view, the summaries and the trial's MLflow
run), and the names of the report's entries that other layers read (the runs' tags, the analysis'
columns, ``train --output-json``). Plain Python: importing this loads neither Ray nor torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: A trial config's keys that are not hyperparameters: its seed, its study (``DATASET/METHOD``) and
#: its kind (a search trial or a seed re-run).
SEED_KEY, STUDY_KEY, KIND_KEY = "seed", "study", "kind"

#: Names of report entries read outside the trainable (each is a :class:`TrialReport` field).
EPOCH, NODE_ID, PRECISION = "epoch", "node_id", "precision"
MECHANISM_EPOCH, BEST_EPOCH, BEST_PHASE = "mechanism_epoch", "best_epoch", "best_phase"
FULL_BUDGET, DIVERGED, FAILED_REASON = "full_budget", "diverged", "failed_reason"
BUSY_SINCE, BUSY_UNTIL = "busy_since", "busy_until"
TOTAL_EPOCHS, START_EPOCH, TRAIN_SECONDS = "total_epochs", "start_epoch", "train_seconds"
#: A trial's reported best validation score so far (its selection metric, times its row's ``sign`` in
#: ``metric_table`` so that higher is better): what Optuna and ASHA see, and a per-epoch metric of its run.
OBJECTIVE = "objective"
#: Ray Tune's id of a trial, in its results (and the ``focustune.trial_id`` tag of the trial's run).
TRIAL_ID = "trial_id"
#: The report entries a trial's MLflow run keeps as tags (``focustune.<name>``), not as metrics.
TAGGED = (NODE_ID, PRECISION, MECHANISM_EPOCH, BEST_PHASE)
#: The progress counters a trial's run logs as metrics at every epoch, beside the scalars.
COUNTERS = (EPOCH, TOTAL_EPOCHS, OBJECTIVE, START_EPOCH)

#: What Ray Tune adds to every reported result; none of it is the trial's own measurement.
TUNE_RESULT_KEYS = frozenset({
    TRIAL_ID, "date", "hostname", "node_ip", "pid", "config", "experiment_tag", "checkpoint_dir_name",
    "should_checkpoint", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
    "iterations_since_restore", "training_iteration", "done"})


@dataclass(frozen=True)
class TrialReport:
    """One report of a trial (after an epoch, or its last one), as Tune carries it: :meth:`to_result`
    flattens it into Tune's result dict, :meth:`from_result` reads one back.

    ``scalars`` holds the flat measurements (``train_loss``, ``lr``, ``val_<metric>``, and on the
    last report ``best_val_<metric>``, ``test_<metric>`` and the stages' metrics, ``system/*``).
    ``busy_since``/``busy_until``: wall-clock times (s since the epoch) when this attempt started and
    of this report (its busy slot time). ``full_budget``: the last report of a trial that trained all
    its epochs. ``diverged``: the configuration's loss became NaN/inf (``failed_reason`` says how).
    """

    epoch: int
    total_epochs: int
    objective: float
    busy_since: float
    busy_until: float
    node_id: str = ""
    precision: str = ""
    phase: str = ""
    start_epoch: int = 0
    mechanism_epoch: int = 1
    scalars: Mapping[str, float] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] | None = None
    full_budget: bool = False
    best_epoch: int | None = None
    best_phase: str | None = None
    train_seconds: float | None = None
    test_confusion_matrix: list[list[int]] | None = None
    artifacts: Mapping[str, str] | None = None
    #: Tags the method gives its run (``Method.tags``: mdgan's GAN addresses and quality check).
    method_tags: Mapping[str, str] | None = None
    diverged: bool = False
    failed_reason: str = ""

    def to_result(self) -> dict[str, Any]:
        """Tune's flat result: every field that is set, then the scalars."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scalars"}
        out = {k: v for k, v in out.items() if v is not None and v != {}}
        return {**out, **self.scalars}

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> TrialReport:
        """The report in Tune's ``result`` (Tune's own keys left out)."""
        own = {f.name for f in fields(cls)} - {"scalars"}
        scalars = {k: float(v) for k, v in result.items()
                   if k not in own and k not in TUNE_RESULT_KEYS and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        values = {EPOCH: 0, TOTAL_EPOCHS: 0, OBJECTIVE: 0.0, BUSY_SINCE: math.nan, BUSY_UNTIL: math.nan,
                  **{k: result[k] for k in own if k in result}}
        return cls(scalars=scalars, **values)

    def tags(self) -> dict[str, str]:
        """The :data:`TAGGED` entries as text (empty when not reported)."""
        return {name: "" if getattr(self, name) is None else str(getattr(self, name)) for name in TAGGED}

    def logged_scalars(self) -> dict[str, float]:
        """What a trial's run logs as metrics from this report: the progress counters, the objective
        and every finite scalar."""
        counters = {name: getattr(self, name) for name in COUNTERS}
        return {k: float(v) for k, v in {**counters, **self.scalars}.items() if math.isfinite(float(v))}
