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

from focustune.metric_table import CALIBRATION_BINS, METRICS


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
    def normalised(self) -> np.ndarray:
        """The probabilities, each row divided by its sum: float32 softmax rows sum to 1 within ~1e-7 only,
        which scikit-learn's probabilistic scores refuse with a warning."""
        return self.probs / self.probs.sum(axis=1, keepdims=True)

    @cached_property
    def precision(self) -> np.ndarray:
        """Per class; 0 for a class never predicted."""
        return skm.precision_score(self.labels, self.decisions, labels=self.classes, average=None, zero_division=0)

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


def _bins(labels: np.ndarray, probs: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, summed confidence, correct decisions) per top-label confidence bin."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return (np.bincount(index, minlength=bins), np.bincount(index, confidence, minlength=bins),
            np.bincount(index, correct, minlength=bins))


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, list[Any]]:
    """Top-label reliability: the samples' confidences (largest probability) in ``bins`` equal-width bins of
    [0, 1] (bin ``b`` holds (b/bins, (b+1)/bins], the first also 0); per bin the mean ``confidence``, the
    ``accuracy`` of the argmax decisions (both None for an empty bin) and the ``count``."""
    count, confidence, correct = _bins(np.asarray(labels), np.asarray(probs, dtype=np.float64), bins)
    mean = lambda total: [float(t / n) if n else None for t, n in zip(total, count)]  # noqa: E731
    return {"confidence": mean(confidence), "accuracy": mean(correct), "count": count.tolist()}


def _ece(p: Predictions) -> float:
    """Expected calibration error of the top-label confidence over :data:`CALIBRATION_BINS` equal-width bins:
    sum over bins of (count / N) * |accuracy - mean confidence| (Guo et al., 2017)."""
    if not len(p.labels):
        return math.nan
    _, confidence, correct = _bins(p.labels, p.probs, CALIBRATION_BINS)
    return float(np.abs(correct - confidence).sum() / len(p.labels))


#: How each metric of the table is computed, by its name.
COMPUTATIONS: dict[str, Callable[[Predictions], Any]] = {
    "acc": lambda p: float(skm.accuracy_score(p.labels, p.decisions)),
    "balanced_acc": _balanced_accuracy,
    "macro_f1": lambda p: float(skm.f1_score(p.labels, p.decisions, labels=p.classes, average="macro",
                                             zero_division=0)),
    "auc": _auc,
    "worst_class_recall": lambda p: float(p.recall[p.present].min()) if p.present.any() else math.nan,
    "ece": _ece,
    # the multi-class Brier score: mean over samples of the sum over classes of (p_k - [y = k])^2
    "brier": lambda p: float(skm.brier_score_loss(p.labels, p.normalised, labels=p.classes, scale_by_half=False)),
    # probabilities clipped at float64's eps, as scikit-learn's log_loss does (a zero costs ~36 nats, not inf)
    "nll": lambda p: float(skm.log_loss(p.labels, p.normalised, labels=p.classes)),
    "per_class_recall": lambda p: [float(r) for r in p.recall],
    "per_class_precision": lambda p: [float(r) for r in p.precision],
}


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Every metric of the table (by name, in table order) and the confusion matrix of the argmax
    decisions, for ``probs`` [N, K] class probabilities against ``labels``."""
    predictions = Predictions(labels, probs)
    out = {m.name: COMPUTATIONS[m.name](predictions) for m in METRICS}
    out["confusion_matrix"] = skm.confusion_matrix(predictions.labels, predictions.decisions,
                                                   labels=predictions.classes).tolist()
    return out
