"""Metrics against hand-computed cases."""

import math

import numpy as np
import pytest

from focustune.metrics import classification_metrics


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
