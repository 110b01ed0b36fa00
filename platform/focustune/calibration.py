"""Temperature scaling (Guo et al., 2017): one temperature ``T`` divides a model's logits before the
softmax, fitted on the validation split by minimising the negative log-likelihood; the decisions
(argmax) do not change, the probabilities do. :func:`calibration_record` fits it on validation and
measures the test split before and after; :func:`reliability_png` draws that record.

The fit is torch's L-BFGS (strong-Wolfe line search, float64) on ``log T``, as in Guo et al.'s own
code: the NLL is convex in ``1/T`` (a log-sum-exp of linear functions), so its one minimum is the
one found; the result is then clipped to [1/20, 20], so a validation split the model separates
perfectly (where the NLL falls without end as ``T -> 0``) gives a bounded temperature."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch

from focustune.metric_table import CALIBRATION_BINS, CALIBRATION_METRICS
from focustune.metrics import COMPUTATIONS, Predictions, reliability_bins

#: The temperatures searched.
TEMPERATURE_RANGE = (1 / 20, 20.0)


def scaled_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)`` (float64)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return float(torch.nn.functional.cross_entropy(z, torch.as_tensor(np.asarray(labels), dtype=torch.long)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising :func:`scaled_nll` of ``logits`` [N, K] against ``labels`` (pass the
    validation split's; 1.0 for an empty split)."""
    if not len(labels):
        return 1.0
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    low, high = TEMPERATURE_RANGE
    return float(min(max(math.exp(float(log_t.detach())), low), high))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def split_calibration(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """The calibration metrics of ``softmax(logits / temperature)`` and its reliability bins."""
    predictions = Predictions(labels, softmax(logits, temperature))
    return {**{name: COMPUTATIONS[name](predictions) for name in CALIBRATION_METRICS},
            **reliability_bins(predictions.labels, predictions.probs)}


def calibration_record(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                       test_labels: np.ndarray) -> dict[str, Any]:
    """``calibration.json``: the temperature fitted on the validation logits only, and the test split's
    calibration metrics and reliability bins before (T = 1) and after scaling."""
    temperature = fit_temperature(val_logits, val_labels)
    return {"bins": CALIBRATION_BINS, "temperature": temperature,
            "before": split_calibration(test_logits, test_labels, 1.0),
            "after": split_calibration(test_logits, test_labels, temperature)}


def reliability_png(record: dict[str, Any], title: str = "") -> bytes:
    """The reliability diagram of a :func:`calibration_record` (test split) before and after temperature
    scaling, as PNG bytes: accuracy against mean confidence per bin, the diagonal being perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    edges = np.linspace(0, 1, record["bins"] + 1)
    for axis, (stage, label) in zip(axes, (("before", "before: T = 1"),
                                           ("after", f"after: T = {record['temperature']:.3f}"))):
        part = record[stage]
        accuracy = np.nan_to_num(np.asarray(part["accuracy"], dtype=np.float64))
        axis.bar(edges[:-1], accuracy, width=np.diff(edges), align="edge", edgecolor="black", alpha=0.7,
                 label="accuracy")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        confidence = np.asarray(part["confidence"], dtype=np.float64)
        shown = np.asarray(part["count"]) > 0
        axis.plot(confidence[shown], accuracy[shown], "o", color="darkred", markersize=4, label="mean confidence")
        axis.set(title=f"{label}\nECE {part['ece']:.4f}, NLL {part['nll']:.4f}, Brier {part['brier']:.4f}",
                 xlabel=f"confidence (top-label, {record['bins']} bins)", xlim=(0, 1), ylim=(0, 1))
    axes[0].set_ylabel("accuracy (test)")
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
