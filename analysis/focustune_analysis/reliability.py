"""Calibration of each method's selected runs: test ECE, Brier score and NLL before and after
temperature scaling (from the runs' ``test_<metric>`` and ``test_<metric>_calibrated`` metrics) and
the reliability diagram (from their ``calibration.json`` artifacts: per bin, mean confidence and
accuracy on the test split). Runs older than calibration have neither; the tables are then empty."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from focustune.metric_table import CALIBRATED_SUFFIX, CALIBRATION_METRICS
from focustune.tracking_schema import CALIBRATION_ARTIFACT, TEMPERATURE
from focustune_analysis.audit import bounded_interval, difference_range
from focustune_analysis.collect import Collection
from focustune_analysis.results import json_artifacts
from focustune_analysis.stats import estimate, paired_test

STAGES = ("before", "after")
CALIBRATION_COLUMNS = ["dataset", "method", "metric", "n", "before", "before_se", "after", "after_se", "change",
                       "change_low", "change_high", "note", "temperature", "temperature_se"]
BIN_COLUMNS = ["dataset", "method", "stage", "bin", "confidence", "accuracy", "count", "runs"]


def calibration_table(c: Collection, confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset, method and calibration metric with any value: the test value before and after
    temperature scaling (mean and SE over the selected runs), the mean temperature, and the change, after minus before,
    paired by run, with its interval as compare prints one (NaN and a note where the runs give none:
    :func:`~focustune_analysis.audit.bounded_interval`)."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        temperature = estimate(runs.get(TEMPERATURE, pd.Series(dtype=float)).tolist(), confidence)
        for metric in CALIBRATION_METRICS:
            before = runs.get(f"test_{metric}", pd.Series(math.nan, index=runs.index)).astype(float)
            after = runs.get(f"test_{metric}{CALIBRATED_SUFFIX}", pd.Series(math.nan, index=runs.index)).astype(float)
            if before.isna().all() and after.isna().all():
                continue
            b, a = estimate(before.tolist(), confidence), estimate(after.tolist(), confidence)
            both = before.notna() & after.notna()
            change = paired_test(after[both].to_numpy(), before[both].to_numpy(), confidence)
            low, high, note = bounded_interval(change, difference_range(metric))
            rows.append({"dataset": dataset, "method": method, "metric": metric, "n": int(both.sum()),
                         "before": b.mean, "before_se": b.se, "after": a.mean, "after_se": a.se,
                         "change": change.difference.mean, "change_low": low, "change_high": high,
                         "note": note.replace("seed", "run"), "temperature": temperature.mean,
                         "temperature_se": temperature.se})
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


def reliability_bins(c: Collection) -> pd.DataFrame:
    """Per dataset, method, stage (``before``/``after`` temperature scaling) and bin: confidence and
    accuracy pooled over the selected runs' ``calibration.json`` (each run's bin weighted by its
    count, so an empty bin adds nothing), the pooled count and how many runs had the artifact."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        found = list(json_artifacts(c, list(runs["run_id"]), CALIBRATION_ARTIFACT).values())
        if not found:
            continue
        for stage in STAGES:
            counts = np.array([payload[stage]["count"] for payload in found], dtype=float)
            total = counts.sum(axis=0)
            pooled = {key: _weighted(np.array([_numbers(p[stage][key]) for p in found]), counts, total)
                      for key in ("confidence", "accuracy")}
            rows += [{"dataset": dataset, "method": method, "stage": stage, "bin": i,
                      "confidence": pooled["confidence"][i], "accuracy": pooled["accuracy"][i], "count": int(total[i]),
                      "runs": len(found)} for i in range(len(total))]
    return pd.DataFrame(rows, columns=BIN_COLUMNS)


def _numbers(values: list) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _weighted(values: np.ndarray, counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per bin, the count-weighted mean of ``values`` over runs (NaN for a bin empty in every run)."""
    weighted = np.where(counts > 0, np.nan_to_num(values) * counts, 0.0).sum(axis=0)
    return np.divide(weighted, total, out=np.full(total.shape, math.nan), where=total > 0)


def calibration_sentences(table: pd.DataFrame, dataset: str) -> list[str]:
    """Calibration on ``dataset`` in words: each method's test ECE before and after temperature
    scaling and its mean temperature (nothing when no run recorded calibration)."""
    rows = table[(table["dataset"] == dataset) & (table["metric"] == "ece")]
    if rows.empty:
        return []
    parts = [f"{r['method']} {_value(r['before'])} → {_value(r['after'])}"
             + (f" (T={r['temperature']:.2f})" if math.isfinite(r["temperature"]) else "") for _, r in rows.iterrows()]
    return ["Calibration: test ECE before → after temperature scaling (fitted on validation): " + "; ".join(parts)
            + "."]


def _value(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "-"
