"""Classification metrics from scikit-learn, computed once per evaluation on collected scores."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1, AUC, per-class recall and confusion matrix.

    ``probs`` is [N, K] class probabilities. Binary AUC uses the positive-class score; multi-class
    AUC is the macro mean of one-vs-rest AUCs. AUC is NaN when a class is missing from ``labels``.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    classes = list(range(k))
    preds = probs.argmax(axis=1)
    recall = skm.recall_score(labels, preds, labels=classes, average=None, zero_division=0)
    present = np.bincount(labels, minlength=k) > 0
    with warnings.catch_warnings():  # sklearn warns about classes absent from y_true
        warnings.simplefilter("ignore")
        balanced = float(skm.balanced_accuracy_score(labels, preds))
    return {
        "acc": float(skm.accuracy_score(labels, preds)),
        "balanced_acc": balanced,
        "macro_f1": float(skm.f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "auc": _auc(labels, probs, present),
        "worst_class_recall": float(recall[present].min()) if present.any() else math.nan,
        "per_class_recall": [float(r) for r in recall],
        "confusion_matrix": skm.confusion_matrix(labels, preds, labels=classes).tolist(),
    }


def _auc(labels: np.ndarray, probs: np.ndarray, present: np.ndarray) -> float:
    if not present.all():
        return math.nan
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(labels, probs[:, 1]))
    return float(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                                   labels=list(range(probs.shape[1]))))
