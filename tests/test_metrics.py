"""Metrics against hand-computed cases, and the table of metrics every list of them comes from."""

import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from focustune.metric_table import (DEFAULT_SELECTION_METRIC, DEFAULT_THRESHOLD_METRIC, METRIC_NAMES, METRICS,
                                    RECORD_METRICS, SELECTION_METRICS, THRESHOLD_METRICS, Metric, metric_label,
                                    metric_row)
from focustune.metrics import COMPUTATIONS, classification_metrics
from focustune.operating_points import DECISION_SCORES, calibrate_threshold, confusion
from focustune.training.evaluation import BestEpochs, selection_score
from focustune.training.loop import progress_line


def test_binary_hand_case():
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    m = classification_metrics(labels, probs)
    # predictions 0, 0, 1, 1, 0: class 0 recall 2/3, class 1 recall 1/2
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["per_class_recall"] == pytest.approx([2 / 3, 1 / 2])
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["worst_class_recall"] == pytest.approx(1 / 2)
    # positive-class scores: negatives 0.1, 0.4, 0.7; positives 0.8, 0.45 -> 5 of 6 pairs ordered
    assert m["auc"] == pytest.approx(5 / 6)
    f1_0 = 2 * (2 / 3) * (2 / 3) / (4 / 3)  # precision 2/3, recall 2/3
    f1_1 = 2 * 0.5 * 0.5 / 1.0              # precision 1/2, recall 1/2
    assert m["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]


def test_multiclass_perfect_and_missing_class():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3
    m = classification_metrics(labels, probs)
    assert m["acc"] == m["balanced_acc"] == m["macro_f1"] == m["auc"] == 1.0
    missing = classification_metrics(np.array([0, 0, 1]), np.eye(3)[[0, 0, 1]])
    assert math.isnan(missing["auc"])
    assert missing["per_class_recall"][2] == 0.0
    assert missing["balanced_acc"] == 1.0  # absent classes do not count


# ---------------------------------------------------------------- the table of metrics

SCALARS = [m for m in METRICS if not m.per_class]
#: A lower-is-better metric for the direction tests, not a row of the table: the error rate.
ERROR_RATE = Metric("error_rate", "error rate", higher_is_better=False, selectable=True, thresholdable=True)


def _binary_case() -> tuple[np.ndarray, np.ndarray]:
    """Labels and two-class probabilities (none exactly 0.5) where argmax makes mistakes of both kinds."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    positive = np.array([0.1, 0.3, 0.55, 0.7, 0.2, 0.6, 0.9])
    return labels, np.stack([1 - positive, positive], axis=1)


def test_every_row_has_its_computation_and_every_computation_its_row():
    assert list(COMPUTATIONS) == [m.name for m in METRICS]
    labels, probs = _binary_case()
    assert list(classification_metrics(labels, probs)) == [m.name for m in METRICS] + ["confusion_matrix"]


def test_every_thresholdable_row_has_its_confusion_formula():
    assert set(DECISION_SCORES) == {m.name for m in METRICS if m.thresholdable} == set(THRESHOLD_METRICS)


@pytest.mark.parametrize("name", THRESHOLD_METRICS)
@pytest.mark.parametrize("case", ["binary", "missing class"])
def test_a_confusion_formula_is_its_metric_of_the_argmax(name, case):
    labels, probs = _binary_case() if case == "binary" else (np.array([0, 0, 1, 1, 1]), np.eye(3)[[0, 2, 1, 2, 0]])
    matrix = confusion(labels, probs.argmax(axis=1), probs.shape[1])
    assert DECISION_SCORES[name](matrix) == pytest.approx(classification_metrics(labels, probs)[name])


@pytest.mark.parametrize("metric", SCALARS, ids=lambda m: m.name)
def test_every_metric_scores_right_predictions_better_than_wrong_ones(metric):
    labels = np.array([0, 0, 1, 1, 2])
    right, wrong = np.eye(3)[labels] * 0.7 + 0.1, np.eye(3)[(labels + 1) % 3] * 0.7 + 0.1
    scores = [metric.sign * classification_metrics(labels, probs)[metric.name] for probs in (right, wrong)]
    assert scores[0] > scores[1]


@pytest.mark.parametrize("metric", [m for m in METRICS if m.per_class], ids=lambda m: m.name)
def test_a_per_class_metric_has_one_value_per_class_and_neither_selects_nor_thresholds(metric):
    labels, probs = np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]]
    assert len(classification_metrics(labels, probs)[metric.name]) == 3
    assert not (metric.selectable or metric.thresholdable or metric.short_name)
    assert metric_label(f"{metric.class_prefix}2") == f"{metric.label} of class 2"


def test_names_are_unique_and_each_tie_breaker_is_another_scalar():
    assert len({m.name for m in METRICS}) == len(METRICS)
    assert all(metric_row(m.tie_breaker) in SCALARS and m.tie_breaker != m.name for m in METRICS if m.selectable)


@pytest.mark.parametrize("choices, default, flag", [(SELECTION_METRICS, DEFAULT_SELECTION_METRIC, "selectable"),
                                                    (THRESHOLD_METRICS, DEFAULT_THRESHOLD_METRIC, "thresholdable")])
def test_choices_are_the_flagged_rows_default_first_then_in_table_order(choices, default, flag):
    flagged = [m.name for m in METRICS if getattr(m, flag)]
    assert choices[0] == default and sorted(choices) == sorted(flagged)
    assert list(choices[1:]) == [n for n in flagged if n != default]


def test_the_tracked_names_are_the_scalar_rows_in_report_order():
    assert METRIC_NAMES == tuple(m.name for m in SCALARS)
    assert set(RECORD_METRICS) <= {m.name for m in METRICS}
    assert [metric_label(m.name) for m in SCALARS] == [m.label for m in SCALARS]
    assert metric_label("not_a_metric") == "not a metric"
    with pytest.raises(ValueError, match="unknown metric 'not_a_metric'"):
        metric_row("not_a_metric")


def test_the_table_and_the_tracking_schema_import_without_numpy_torch_or_sklearn():
    code = ("import sys, focustune.metric_table, focustune.tracking_schema; "
            "print(sorted(m for m in ('numpy', 'torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("metric", [m for m in SCALARS if m.short_name], ids=lambda m: m.name)
def test_the_epoch_line_shows_every_metric_with_a_short_name(metric):
    val = {m.name: (i + 1) / 16 for i, m in enumerate(SCALARS)}
    record = {"epoch": 1, "phase": "train", "train_loss": 0.5, "samples_per_s": 10.0, "best": False, "val": val}
    assert f" {metric.short_name} {val[metric.name]:.4f}" in progress_line(record, 1)


def test_selection_follows_the_metrics_direction():
    low, high = {"error_rate": 0.1, "auc": 0.5}, {"error_rate": 0.3, "auc": 0.9}
    assert selection_score(low, ERROR_RATE) > selection_score(high, ERROR_RATE)
    assert selection_score({"error_rate": math.nan, "auc": 1.0}, ERROR_RATE) < selection_score(high, ERROR_RATE)
    best = BestEpochs(ERROR_RATE, mechanism_epoch=0)
    for epoch, val in enumerate((high, low, high)):
        best.update(epoch, val, dict)
    assert best.epoch == 1


def test_ties_go_to_the_tie_breaker():
    auc = metric_row("auc")
    tied = [{"auc": 0.8, "balanced_acc": b} for b in (0.6, 0.7)]
    assert selection_score(tied[1], auc) > selection_score(tied[0], auc)


def test_a_binary_threshold_reaches_the_best_accuracy_of_any_threshold():
    labels, probs = _binary_case()
    threshold, accuracy = calibrate_threshold(probs[:, 1], labels, "acc")
    every = [np.mean((probs[:, 1] >= t) == labels) for t in np.r_[0.0, np.sort(probs[:, 1]), 1.01]]
    assert accuracy == pytest.approx(max(every)) == pytest.approx(np.mean((probs[:, 1] >= threshold) == labels))
