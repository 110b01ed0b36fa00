"""Calibration metrics against hand-computed cases, temperature scaling, per-class metric names, and
operating points (per-class logit offsets) against constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from focustune.calibration import calibration_record, fit_temperature, reliability_png, scaled_nll, softmax
from focustune.errors import ConfigError
from focustune.metric_table import CALIBRATION_BINS, CALIBRATION_METRICS, metric_row
from focustune.metrics import classification_metrics, reliability_bins
from focustune.operating_points import (calibrate_threshold, decide, fit_operating_point, log_probabilities,
                                        offsets_of_threshold, parse_rule, threshold_of)
from focustune.tracking_schema import calibration_metrics, class_metric_name, tracked_class_names, tracked_metrics

# ---------------------------------------------------------------- the metrics


def test_calibration_metrics_by_hand():
    labels = np.array([0, 1, 2, 1])
    probs = np.array([[.7, .2, .1], [.1, .8, .1], [.3, .3, .4], [.5, .4, .1]])
    m = classification_metrics(labels, probs)
    # one sample per bin: |1 - .7|, |1 - .8|, |1 - .4|, |0 - .5| (the last is wrong), averaged
    assert m["ece"] == pytest.approx((.3 + .2 + .6 + .5) / 4)
    squared = [(.3 ** 2 + .2 ** 2 + .1 ** 2), (.1 ** 2 + .2 ** 2 + .1 ** 2), (.3 ** 2 + .3 ** 2 + .6 ** 2),
               (.5 ** 2 + .6 ** 2 + .1 ** 2)]
    assert m["brier"] == pytest.approx(np.mean(squared))
    assert m["nll"] == pytest.approx(-np.mean(np.log([.7, .8, .4, .4])))
    assert m["per_class_precision"] == pytest.approx([.5, 1.0, 1.0])  # sample 3 (class 1) taken for class 0


def test_reliability_bins_are_fifteen_equal_width_top_label_bins():
    assert CALIBRATION_BINS == 15 and "15 equal-width bins" in metric_row("ece").label
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[1 / 15, 14 / 15], [0.5, 0.5], [0.49, 0.51], [0.0, 1.0]])  # confidences 14/15, .5, .51, 1
    bins = reliability_bins(labels, probs)
    assert bins["count"] == [0] * 7 + [2] + [0] * 5 + [1, 1]  # (7/15, 8/15] holds .5 and .51
    assert bins["confidence"][7] == pytest.approx(0.505) and bins["accuracy"][7] == 1.0  # a tie goes to class 0
    assert bins["accuracy"][13:] == [0.0, 1.0] and bins["confidence"][0] is None


# ---------------------------------------------------------------- temperature scaling

def overconfident(seed: int, n: int = 4000, k: int = 4, scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (so z is calibrated), and the logits of a model ``scale`` times too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    labels = np.array([rng.choice(k, p=p) for p in softmax(z)])
    return z * scale, labels


def test_temperature_lowers_the_held_out_nll_of_an_overconfident_model():
    val_logits, val_labels = overconfident(seed=0)
    test_logits, test_labels = overconfident(seed=1)
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature == pytest.approx(4.0, rel=0.1)  # it finds the factor the logits were scaled by
    assert scaled_nll(test_logits, test_labels, temperature) < 0.8 * scaled_nll(test_logits, test_labels, 1.0)
    record = calibration_record(val_logits, val_labels, test_logits, test_labels)
    assert record["temperature"] == temperature and record["bins"] == CALIBRATION_BINS
    for name in CALIBRATION_METRICS:
        assert record["after"][name] < record["before"][name], name
    assert record["before"]["count"] == record["after"]["count"] or sum(record["after"]["count"]) == 4000


def test_the_temperature_is_fitted_on_validation_only():
    val_logits, val_labels = overconfident(seed=0)
    test_logits, test_labels = overconfident(seed=1)
    record = calibration_record(val_logits, val_labels, test_logits, test_labels)
    other = calibration_record(val_logits, val_labels, test_logits / 8, test_labels[::-1].copy())
    assert other["temperature"] == record["temperature"]
    assert other["before"] != record["before"]


def test_a_calibrated_model_keeps_its_temperature_near_one_and_its_decisions():
    logits, labels = overconfident(seed=2, scale=1.0)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(1.0, abs=0.1)
    assert (softmax(logits, temperature).argmax(1) == logits.argmax(1)).all()


def test_the_reliability_diagram_is_a_png():
    logits, labels = overconfident(seed=3, n=300)
    png = reliability_png(calibration_record(logits, labels, logits, labels), "a title")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_metrics_are_named_after_the_table():
    record = {"temperature": 2.0, "after": {"ece": 0.1, "brier": 0.2, "nll": 0.3}}
    assert calibration_metrics(record) == {"temperature": 2.0, "test_ece_calibrated": 0.1,
                                           "test_brier_calibrated": 0.2, "test_nll_calibrated": 0.3}
    assert calibration_metrics({}) == {}


# ---------------------------------------------------------------- per-class metric names

def test_class_names_become_valid_mlflow_metric_names():
    from mlflow.utils.validation import _validate_metric_name

    names = tracked_class_names(["pneumonia", "a/b", "a_b", "..", "", "Größe: x", " spaced out ", "x" * 300])
    assert names[:7] == ["pneumonia", "a_b", "a_b_2", "class_3", "class_4", "Größe_ x", "spaced out"]
    assert len(names[7]) == 120 and len(set(names)) == len(names)
    for name in names:
        _validate_metric_name(class_metric_name("best_val", "precision", name))  # raises when MLflow refuses it
    assert class_metric_name("test", "recall", "pneumonia") == "test_recall/pneumonia"


def test_tracked_metrics_name_every_class_by_index_and_by_name():
    metrics = classification_metrics(np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]])
    tracked = tracked_metrics("test", metrics, ["normal", "pneumonia"])
    assert tracked["test_recall/pneumonia"] == tracked["test_recall_class_1"] == 0.5
    assert tracked["test_precision/normal"] == 0.5 and tracked["test_precision/pneumonia"] == 1.0
    assert tracked["test_balanced_acc"] == 0.75 and "test_nll" in tracked
    assert "test_confusion_matrix" not in tracked


# ---------------------------------------------------------------- operating points

def skewed(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Log probabilities of a four-class model biased against its last class (``melanoma``)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 4)) * 1.5
    z[np.arange(n), labels] += 1.5
    z[:, 3] -= 2.5
    return log_probabilities(softmax(z)), labels


NAMES = ["nevus", "keratosis", "carcinoma", "melanoma"]


def _score(name: str, labels: np.ndarray, decisions: np.ndarray) -> float:
    return classification_metrics(labels, np.eye(4)[decisions])[name]


def test_offsets_raise_the_validation_metric_and_change_predictions_as_fitted():
    log_probs, labels = skewed(seed=0)
    point = fit_operating_point(log_probs, labels, parse_rule("balanced_acc"), NAMES)
    fitted = decide(log_probs, point.offsets)
    assert point.offsets[0] == 0.0 and (fitted != log_probs.argmax(1)).any()
    assert point.values["balanced_acc"] == pytest.approx(_score("balanced_acc", labels, fitted))
    assert point.values["balanced_acc"] > _score("balanced_acc", labels, log_probs.argmax(1)) + 0.02
    held_out, held_labels = skewed(seed=1)  # the offsets carry over to data they never saw
    assert _score("balanced_acc", held_labels, decide(held_out, point.offsets)) > \
        _score("balanced_acc", held_labels, held_out.argmax(1))


def test_a_constraint_is_met_and_the_metric_maximised_among_the_offsets_that_meet_it():
    log_probs, labels = skewed(seed=0)
    free = fit_operating_point(log_probs, labels, parse_rule("balanced_acc"), NAMES)
    point = fit_operating_point(log_probs, labels, parse_rule("balanced_acc | recall[melanoma]>=0.9"), NAMES)
    recall = classification_metrics(labels, np.eye(4)[decide(log_probs, point.offsets)])["per_class_recall"]
    assert recall[3] >= 0.9 > classification_metrics(labels, np.eye(4)[decide(log_probs, free.offsets)])[
        "per_class_recall"][3]
    assert point.values["recall[melanoma]"] == pytest.approx(recall[3])
    assert point.values["balanced_acc"] <= free.values["balanced_acc"]
    # at least as good as the best offset of melanoma alone that meets the bound (a fine grid of them)
    alone = [classification_metrics(labels, np.eye(4)[decide(log_probs, [0, 0, 0, b])]) for b in np.arange(0, 8, 0.01)]
    best_alone = max(m["balanced_acc"] for m in alone if m["per_class_recall"][3] >= 0.9)
    assert point.values["balanced_acc"] >= best_alone


def test_a_constraint_no_offsets_meet_is_refused_with_what_they_reach():
    log_probs, labels = skewed(seed=0)
    with pytest.raises(ConfigError, match=r"no per-class offsets that meet it .* recall\[melanoma\] 0\.\d+, "
                                          r"recall\[nevus\] 0\.\d+\); relax the constraint"):
        fit_operating_point(log_probs, labels, parse_rule("acc | recall[melanoma]>=0.99, recall[nevus]>=0.99"),
                            NAMES)


def _old_threshold(positive: np.ndarray, labels: np.ndarray) -> float:
    """The decision threshold focustune fitted before operating points: the best balanced accuracy over 0.5
    and the midpoints between distinct probabilities, ties to the one nearest 0.5."""
    distinct = np.unique(positive)
    candidates = np.unique(np.r_[(distinct[:-1] + distinct[1:]) / 2, 0.5])
    scores = np.array([np.mean([np.mean((positive[labels == c] >= t) == c) for c in (0, 1)]) for t in candidates])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


@pytest.mark.parametrize("seed", range(5))
def test_the_two_class_case_decides_as_the_old_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(80) < 0.25).astype(int)
    positive = np.clip(rng.normal(0.25 + 0.2 * labels, 0.12), 0.01, 0.99)
    threshold = _old_threshold(positive, labels)
    fitted, score = calibrate_threshold(positive, labels, "balanced_acc")
    assert ((positive >= fitted) == (positive >= threshold)).all()
    probs = np.stack([1 - positive, positive], axis=1)
    offsets_decisions = decide(log_probabilities(probs), offsets_of_threshold(fitted))
    assert (offsets_decisions == (positive >= threshold)).all()
    assert score == pytest.approx(classification_metrics(labels, np.eye(2)[offsets_decisions])["balanced_acc"])


def test_a_threshold_and_its_offsets_are_the_same_decision():
    assert threshold_of(offsets_of_threshold(0.3)) == pytest.approx(0.3)
    assert threshold_of([0.0, 0.0]) == 0.5
    probs = np.array([[0.75, 0.25], [0.69, 0.31], [0.2, 0.8]])
    assert decide(log_probabilities(probs), offsets_of_threshold(0.3)).tolist() == [0, 1, 1]


@pytest.mark.parametrize("text, message", [
    ("auc", "cannot be optimised by offsets"),
    ("balanced_acc |", "no constraint after '|'"),
    ("balanced_acc | recall[a]>0.9", "cannot read constraint"),
    ("balanced_acc | auc>=0.9", "not a metric of the decisions"),
    ("balanced_acc | acc[a]>=0.9", "a class constraint takes recall or precision"),
    ("balanced_acc | recall[a]>=high", "is not a number"),
    ("balanced_acc | recall[a]>=nan", "not finite"),
])
def test_bad_rules_are_refused(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("|", r"\|")):
        parse_rule(text)


def test_rules_read_back_and_default_to_the_selection_metric():
    rule = parse_rule(" macro_f1 | recall[a, b]>=0.9 , precision[c]<=0.5,worst_class_recall>=0.2")
    assert str(rule) == "macro_f1 | recall[a, b]>=0.9, precision[c]<=0.5, worst_class_recall>=0.2"
    assert parse_rule(str(rule)) == rule
    assert parse_rule("", "acc").metric == "acc" and parse_rule("", "auc").metric == "balanced_acc"
    with pytest.raises(ConfigError, match="no class 'd'; the classes are a, b"):
        parse_rule("acc | recall[d]>=0.5").check_classes(["a", "b"])
    assert math.isclose(parse_rule("acc | recall[a]>=1e-1").constraints[0].bound, 0.1)
