"""The classification metrics of an evaluation, one row each, and every list of them derived from
the rows: the tracked names in report order, the record's metrics, the selection and operating-point
choices, the calibration metrics, the labels. Plain data, so importing it loads neither numpy nor
torch (the analysis package reads it); the computations are keyed by row name:
``focustune.metrics.COMPUTATIONS`` and, for a metric an operating point (per-class logit offsets)
can be fitted for, ``focustune.operating_points.DECISION_SCORES``."""

from __future__ import annotations

from dataclasses import dataclass

#: The metric that breaks a selection metric's ties unless its row names another.
TIE_BREAKER = "auc"
#: Expected calibration error: the confidences (top-label probabilities) fall into this many equal-width
#: bins of [0, 1]; the error is the count-weighted mean |accuracy - mean confidence| over the bins.
CALIBRATION_BINS = 15
#: The suffix of a calibration metric's test value after temperature scaling: ``test_ece_calibrated``.
CALIBRATED_SUFFIX = "_calibrated"


@dataclass(frozen=True)
class Metric:
    """One metric: a scalar, or (``class_prefix`` set) one value per class."""

    #: Its key in an evaluation's metrics; a scalar's tracked name after ``val_``/``test_``/``best_val_``.
    name: str
    #: In words, for reports and figures.
    label: str
    higher_is_better: bool = True
    #: It can be a run's ``selection_metric``, the validation metric that picks the best epoch.
    selectable: bool = False
    #: An operating point (per-class logit offsets; a binary task's threshold) can be fitted to optimise it,
    #: or to meet a constraint on it: it depends on the decisions only.
    thresholdable: bool = False
    #: The metric that breaks its ties when it selects.
    tie_breaker: str = TIE_BREAKER
    #: Its name in the trainer's per-epoch line (None: not printed there).
    short_name: str | None = None
    #: Part of a ``train --output-json`` record's ``val``/``test`` (and what reproductions read).
    recorded: bool = False
    #: Per-class metrics: class ``i``'s value is tracked as ``<class_prefix><i>``, and by the class's name as
    #: ``<split>_<class_metric>/<class name>`` (``tracking_schema.class_metric_name``); ``class_metric``
    #: also names it in an operating point's constraints (``recall[melanoma]>=0.9``).
    class_prefix: str | None = None
    class_metric: str | None = None
    #: A metric of the probabilities that temperature scaling changes: also tracked at test after it,
    #: as ``test_<name>_calibrated``.
    calibrated: bool = False
    #: The range its values lie in (None: unbounded, e.g. a log-loss); reports print no interval outside it.
    bounds: tuple[float, float] | None = (0.0, 1.0)

    @property
    def per_class(self) -> bool:
        return self.class_prefix is not None

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: ``sign * value`` is a score to maximise."""
        return 1 if self.higher_is_better else -1


#: Every metric of an evaluation, scalars in report order.
METRICS: tuple[Metric, ...] = (
    Metric("acc", "accuracy", selectable=True, thresholdable=True, short_name="acc", recorded=True),
    Metric("balanced_acc", "balanced accuracy", selectable=True, thresholdable=True, short_name="bal_acc",
           recorded=True),
    Metric("macro_f1", "macro-F1", selectable=True, thresholdable=True, short_name="f1", recorded=True),
    Metric("auc", "AUC", selectable=True, tie_breaker="balanced_acc", short_name="auc", recorded=True),
    Metric("worst_class_recall", "worst-class recall", selectable=True, thresholdable=True),
    Metric("ece", f"expected calibration error (top-label, {CALIBRATION_BINS} equal-width bins)",
           higher_is_better=False, calibrated=True),
    Metric("brier", "Brier score (sum over classes)", higher_is_better=False, selectable=True, calibrated=True,
           bounds=(0.0, 2.0)),
    Metric("nll", "negative log-likelihood", higher_is_better=False, selectable=True, calibrated=True, bounds=None),
    Metric("per_class_recall", "recall", recorded=True, class_prefix="recall_class_", class_metric="recall"),
    Metric("per_class_precision", "precision", class_prefix="precision_class_", class_metric="precision"),
)
_BY_NAME = {m.name: m for m in METRICS}


def _default_first(default: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return (default, *(n for n in names if n != default))


#: The scalar metrics of every evaluation, in report order (an evaluation also has the per-class
#: metrics and ``confusion_matrix``).
METRIC_NAMES = tuple(m.name for m in METRICS if not m.per_class)
#: The tracked names of the per-class metrics, as patterns: ``recall_class_<i>``.
CLASS_METRIC_PATTERNS = tuple(f"{m.class_prefix}<i>" for m in METRICS if m.per_class)
#: The metrics of a ``train --output-json`` record's ``val``/``test``.
RECORD_METRICS = tuple(m.name for m in METRICS if m.recorded)
#: The validation metric that picks a run's best epoch (and ranks trials) unless one is configured.
DEFAULT_SELECTION_METRIC = "balanced_acc"
#: The ``selection_metric`` choices, the default first.
SELECTION_METRICS = _default_first(DEFAULT_SELECTION_METRIC, tuple(m.name for m in METRICS if m.selectable))
#: What an operating point optimises when the run's selection metric is not thresholdable (AUC, NLL).
DEFAULT_THRESHOLD_METRIC = DEFAULT_SELECTION_METRIC
#: The metrics an operating point can be fitted for, the default first.
THRESHOLD_METRICS = _default_first(DEFAULT_THRESHOLD_METRIC, tuple(m.name for m in METRICS if m.thresholdable))
#: The metrics temperature scaling changes (tracked at test before and after it).
CALIBRATION_METRICS = tuple(m.name for m in METRICS if m.calibrated)
#: The per-class metrics by the name an operating point's constraint uses: ``recall`` -> its row.
CLASS_METRICS = {m.class_metric: m for m in METRICS if m.class_metric}


def metric_row(name: str) -> Metric:
    """The row of metric ``name`` (ValueError for a name the table lacks)."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown metric {name!r}; the metrics are {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def metric_label(name: str) -> str:
    """``name`` in words: a scalar's label, ``<label> of class <i>`` for a per-class tracked name,
    else the name with spaces."""
    row = _BY_NAME.get(name)
    if row and not row.per_class:
        return row.label
    for row in METRICS:
        if row.class_prefix and name.startswith(row.class_prefix):
            return f"{row.label} of class {name[len(row.class_prefix):]}"
    return name.replace("_", " ")
