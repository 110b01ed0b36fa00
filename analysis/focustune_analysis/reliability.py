"""Calibration of each method's selected runs: test ECE, Brier score and NLL before and after
temperature scaling (from the runs' ``test_<metric>`` and ``test_<metric>_calibrated`` metrics) and
the reliability diagram (from their ``calibration.json`` artifacts: per bin, mean confidence and
accuracy on the test split). Runs older than calibration have neither; the tables are then empty."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from focustune.tracking_schema import CALIBRATION_ARTIFACT
from focustune_analysis.audit import bounded_interval
from focustune_analysis.collect import Collection
from focustune_analysis.results import json_artifacts
from focustune_analysis.stats import estimate

#: The calibration metrics (rows of ``metric_table``) and the range of a change in each (after minus
#: before temperature scaling): ECE lies in [0, 1], the multi-class Brier score in [0, 2], NLL in [0, inf).
CALIBRATION_METRICS = {"ece": (-1.0, 1.0), "brier": (-2.0, 2.0), "nll": (-math.inf, math.inf)}
CALIBRATED_SUFFIX = "_calibrated"
STAGES = ("before", "after")
CALIBRATION_COLUMNS = ["dataset", "method", "metric", "n", "before", "before_se", "after", "after_se", "change",
                       "change_low", "change_high", "note"]
BIN_COLUMNS = ["dataset", "method", "stage", "bin", "confidence", "accuracy", "count", "runs", "temperature"]


def calibration_table(c: Collection, confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset, method and calibration metric with any value: the test value before and after
    temperature scaling (mean and SE over the selected runs) and the change, after minus before,
    paired by run, with its t-interval cut at the change's range (NaN and a note where the runs give
    none)."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        for metric, bounds in CALIBRATION_METRICS.items():
            before = runs.get(f"test_{metric}", pd.Series(math.nan, index=runs.index)).astype(float)
            after = runs.get(f"test_{metric}{CALIBRATED_SUFFIX}", pd.Series(math.nan, index=runs.index)).astype(float)
            if before.isna().all() and after.isna().all():
                continue
            b, a = estimate(before.tolist(), confidence), estimate(after.tolist(), confidence)
            both = before.notna() & after.notna()
            change = estimate((after[both] - before[both]).tolist(), confidence)
            low, high, note = bounded_interval(change, bounds)
            rows.append({"dataset": dataset, "method": method, "metric": metric, "n": int(both.sum()),
                         "before": b.mean, "before_se": b.se, "after": a.mean, "after_se": a.se,
                         "change": change.mean, "change_low": low, "change_high": high,
                         "note": note.replace("difference", "change")})
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


def reliability_bins(c: Collection) -> pd.DataFrame:
    """Per dataset, method, stage (``before``/``after`` temperature scaling) and bin: confidence and
    accuracy pooled over the selected runs' ``calibration.json`` (each run's bin weighted by its
    count, so an empty bin adds nothing), the pooled count, how many runs had the artifact and
    their mean temperature."""
    rows = []
    for (dataset, method), runs in c.selected().groupby(["dataset", "method"]):
        found = list(json_artifacts(c, list(runs["run_id"]), CALIBRATION_ARTIFACT).values())
        if not found:
            continue
        temperature = float(np.mean([float(payload["temperature"]) for payload in found]))
        for stage in STAGES:
            counts = np.array([payload[stage]["count"] for payload in found], dtype=float)
            total = counts.sum(axis=0)
            pooled = {key: _weighted(np.array([_numbers(p[stage][key]) for p in found]), counts, total)
                      for key in ("confidence", "accuracy")}
            rows += [{"dataset": dataset, "method": method, "stage": stage, "bin": i,
                      "confidence": pooled["confidence"][i], "accuracy": pooled["accuracy"][i], "count": int(total[i]),
                      "runs": len(found), "temperature": temperature} for i in range(len(total))]
    return pd.DataFrame(rows, columns=BIN_COLUMNS)


def _numbers(values: list) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _weighted(values: np.ndarray, counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per bin, the count-weighted mean of ``values`` over runs (NaN for a bin empty in every run)."""
    weighted = np.where(counts > 0, np.nan_to_num(values) * counts, 0.0).sum(axis=0)
    return np.divide(weighted, total, out=np.full(total.shape, math.nan), where=total > 0)


def calibration_sentences(table: pd.DataFrame, bins: pd.DataFrame, dataset: str) -> list[str]:
    """Calibration on ``dataset`` in words: each method's test ECE before and after temperature
    scaling, with the temperature where the artifacts give it; or that it was not recorded."""
    rows = table[(table["dataset"] == dataset) & (table["metric"] == "ece")]
    if rows.empty:
        return []
    temperatures = bins[bins["dataset"] == dataset].groupby("method")["temperature"].first()
    parts = []
    for _, r in rows.iterrows():
        text = f"{r['method']} {_value(r['before'])} → {_value(r['after'])}"
        if r["method"] in temperatures:
            text += f" (T={temperatures[r['method']]:.2f})"
        parts.append(text)
    return ["Calibration: test ECE before → after temperature scaling (fitted on validation): " + "; ".join(parts)
            + "."]


def _value(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "-"
