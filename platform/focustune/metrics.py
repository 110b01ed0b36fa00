"""Classification metrics from scikit-learn, computed once per evaluation on collected scores: one
computation per row of :data:`focustune.metric_table.METRICS`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
from sklearn import metrics as skm

from focustune.metric_table import METRICS


class Predictions:
    """An evaluation's labels and [N, K] class probabilities, with what several metrics share
    (argmax decisions, per-class recall, the classes present), each computed once."""

    def __init__(self, labels: np.ndarray, probs: np.ndarray):
        self.labels = np.asarray(labels)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.classes = list(range(self.probs.shape[1]))

    @cached_property
    def decisions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @cached_property
    def recall(self) -> np.ndarray:
        return skm.recall_score(self.labels, self.decisions, labels=self.classes, average=None, zero_division=0)

    @cached_property
    def present(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes)) > 0


def _balanced_accuracy(p: Predictions) -> float:
    with warnings.catch_warnings():  # sklearn warns about classes absent from y_true
        warnings.simplefilter("ignore")
        return float(skm.balanced_accuracy_score(p.labels, p.decisions))


def _auc(p: Predictions) -> float:
    """Binary: of the positive-class score; multi-class: macro mean of one-vs-rest AUCs; NaN when a
    class is missing from the labels."""
    if not p.present.all():
        return math.nan
    if len(p.classes) == 2:
        return float(skm.roc_auc_score(p.labels, p.probs[:, 1]))
    return float(skm.roc_auc_score(p.labels, p.probs, multi_class="ovr", average="macro", labels=p.classes))


#: How each metric of the table is computed, by its name.
COMPUTATIONS: dict[str, Callable[[Predictions], Any]] = {
    "acc": lambda p: float(skm.accuracy_score(p.labels, p.decisions)),
    "balanced_acc": _balanced_accuracy,
    "macro_f1": lambda p: float(skm.f1_score(p.labels, p.decisions, labels=p.classes, average="macro",
                                             zero_division=0)),
    "auc": _auc,
    "worst_class_recall": lambda p: float(p.recall[p.present].min()) if p.present.any() else math.nan,
    "per_class_recall": lambda p: [float(r) for r in p.recall],
}


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Every metric of the table (by name, in table order) and the confusion matrix of the argmax
    decisions, for ``probs`` [N, K] class probabilities against ``labels``."""
    predictions = Predictions(labels, probs)
    out = {m.name: COMPUTATIONS[m.name](predictions) for m in METRICS}
    out["confusion_matrix"] = skm.confusion_matrix(predictions.labels, predictions.decisions,
                                                   labels=predictions.classes).tolist()
    return out
