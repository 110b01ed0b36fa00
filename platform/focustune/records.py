"""Typed records that cross a seam, defined once: a trial's config keys and its report (written by the
trainable; read by the searcher, the scheduler, the live view, the summaries and the trial's MLflow
run), the names of the report's entries that other layers read (the runs' tags, the analysis'
columns, ``train --output-json``), and a study's record in ``sweep.json`` (:class:`StudyRecord`,
written by the sweep, read by its MLflow runs, the workbench and the CLI). Plain Python: importing
this loads neither Ray nor torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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
#: A packed trial's pack (``--pack``): the tag naming the process it trained in, and the per-epoch
#: metric of how many trials trained in that pack's epoch.
PACK, PACK_SIZE = "pack", "pack_size"
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
    #: The pack this trial trained in (``--pack`` > 1), else None.
    pack: str | None = None

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
        """The :data:`TAGGED` entries as text (empty when not reported), and the :data:`PACK` of a packed trial."""
        tags = {name: "" if getattr(self, name) is None else str(getattr(self, name)) for name in TAGGED}
        return {**tags, PACK: self.pack} if self.pack else tags

    def logged_scalars(self) -> dict[str, float]:
        """What a trial's run logs as metrics from this report: the progress counters, the objective
        and every finite scalar."""
        counters = {name: getattr(self, name) for name in COUNTERS}
        return {k: float(v) for k, v in {**counters, **self.scalars}.items() if math.isfinite(float(v))}


@dataclass
class RerunRow:
    """A seed re-run's line of a study's record: its seed, whether it completed (its full budget, no
    divergence) and its final scores (``test_<metric>``, ``best_val_<metric>``)."""

    seed: int | None
    ok: bool
    scores: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "ok": self.ok, **self.scores}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RerunRow:
        return cls(data.get("seed"), bool(data.get("ok")), {k: v for k, v in data.items() if k not in ("seed", "ok")})


@dataclass
class SelectedRun:
    """The run whose model a study hands over (its best seed re-run by validation, else its best search
    trial): its kind, seed, hyperparameters, Tune trial id, best epoch, checkpoint folder (a path or a
    storage URI) and best-epoch validation metrics."""

    kind: str
    seed: int
    config: dict[str, Any]
    trial_id: str | None = None
    best_epoch: int | None = None
    checkpoint: str | None = None
    val: dict[str, float | None] = field(default_factory=dict)


@dataclass
class DeliveredModel:
    """What a study handed over: its configuration files and, when its selected run left a checkpoint,
    the logged model's URI, its registered version (None without ``--register``), and what its predictions
    apply: the temperature, the per-class logit offsets and the operating-point rule they were fitted for
    (both on validation), with a binary task's threshold (their two-class case)."""

    config_files: list[str]
    uri: str | None = None
    registered: dict[str, Any] | None = None
    threshold: float | None = None
    temperature: float | None = None
    offsets: list[float] | None = None
    operating_point: str = ""


@dataclass
class FrontPoint:
    """A full-budget search trial of a study selected among several objectives: its trial id, its
    objectives' best-epoch validation ``values`` and their ``test`` values, its hyperparameters, and
    whether it is on the Pareto front."""

    trial_id: str
    values: dict[str, float | None]
    test: dict[str, float | None]
    config: dict[str, Any]
    on_front: bool


@dataclass
class ParetoRecord:
    """How a study searched for several objectives (or selected by ``--select``) chose its trial: the
    ``objectives`` in order, the ``selection_rule`` as text, every point, the trial ids on the
    ``front``, the ``chosen`` one, and why none was when no point meets the rule (``selection_refused``)."""

    objectives: list[str]
    selection_rule: str
    points: list[FrontPoint]
    front: list[str]
    chosen: str | None = None
    selection_refused: str | None = None

    @property
    def chosen_point(self) -> FrontPoint | None:
        return next((p for p in self.points if p.trial_id == self.chosen), None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParetoRecord:
        return cls(**{**data, "points": [FrontPoint(**p) for p in data.get("points") or []]})


@dataclass
class StudyRecord:
    """A study's record in ``sweep.json``: written by the sweep (its parent run first, its summary after
    the Tune run, its hand-over last), read by the study's MLflow run, the workbench and the CLI.
    Trial counts: ``finished`` their full budget of ``total`` search trials, ``failed``, ``stopped_early``.
    ``best_config``: the best full-budget search trial's hyperparameters (by validation, never test),
    with its ``best_objective`` and its test scores (``best_trial_test``); with several objectives or
    ``--select``, the front it was chosen from (``pareto``)."""

    parent_run_id: str | None = None
    finished: int = 0
    total: int = 0
    failed: int = 0
    stopped_early: int = 0
    best_config: dict[str, Any] | None = None
    best_objective: float | None = None
    best_trial_test: dict[str, float] = field(default_factory=dict)
    reruns: list[RerunRow] = field(default_factory=list)
    selected: SelectedRun | None = None
    model: DeliveredModel | None = None
    pareto: ParetoRecord | None = None

    @property
    def completed_reruns(self) -> list[RerunRow]:
        return [row for row in self.reruns if row.ok]

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["reruns"] = [row.to_json() for row in self.reruns]
        for name in ("selected", "model", "pareto"):
            out[name] = None if out[name] is None else asdict(out[name])
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyRecord:
        """The record in ``data`` (as :meth:`to_json` writes it; absent keys take their defaults)."""
        own = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in own}
        values["reruns"] = [RerunRow.from_json(row) for row in data.get("reruns") or []]
        if data.get("selected"):
            values["selected"] = SelectedRun(**data["selected"])
        if data.get("model"):
            values["model"] = DeliveredModel(**data["model"])
        if data.get("pareto"):
            values["pareto"] = ParetoRecord.from_json(data["pareto"])
        return cls(**values)
