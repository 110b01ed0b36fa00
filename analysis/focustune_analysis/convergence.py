"""How fast each method learns: mean validation curves and epochs-to-target over its selected runs."""

from __future__ import annotations

import math

import pandas as pd

from focustune_analysis.collect import Collection
from focustune_analysis.stats import estimate


def mean_curves(c: Collection, series: str = "val_balanced_acc", confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset, method and epoch: mean of ``series`` over the selected runs, with SE and interval."""
    history = c.history[c.history["metric"] == series]
    rows = []
    for (dataset, method, epoch), group in history.groupby(["dataset", "method", "epoch"]):
        e = estimate(group["value"].tolist(), confidence)
        rows.append({"dataset": dataset, "method": method, "epoch": int(epoch), "mean": e.mean, "se": e.se,
                     "low": e.low, "high": e.high, "n": e.n})
    return pd.DataFrame(rows, columns=["dataset", "method", "epoch", "mean", "se", "low", "high", "n"])


def epochs_to_target(c: Collection, series: str = "val_balanced_acc", fraction: float = 0.95) -> pd.DataFrame:
    """Per selected run: the first epoch at which ``series`` reaches ``fraction`` of the run's own
    best value of it (``best``; ``target`` = fraction x best)."""
    history = c.history[c.history["metric"] == series]
    rows = []
    for (dataset, method, run_id), group in history.groupby(["dataset", "method", "run_id"]):
        group = group.sort_values("epoch")
        best = float(group["value"].max())
        if not math.isfinite(best):
            continue
        target = fraction * best
        reached = group.loc[group["value"] >= target, "epoch"]
        rows.append({"dataset": dataset, "method": method, "run_id": run_id, "seed": group["seed"].iloc[0],
                     "best": best, "target": target, "epoch": int(reached.iloc[0]),
                     "epochs": int(group["epoch"].max())})
    return pd.DataFrame(rows, columns=["dataset", "method", "run_id", "seed", "best", "target", "epoch", "epochs"])


def epochs_to_target_summary(per_run: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset and method: mean epochs-to-target over its runs (with SE), and the range."""
    rows = []
    for (dataset, method), group in per_run.groupby(["dataset", "method"]):
        e = estimate(group["epoch"].astype(float).tolist(), confidence)
        rows.append({"dataset": dataset, "method": method, "mean": e.mean, "se": e.se, "min": int(group["epoch"].min()),
                     "max": int(group["epoch"].max()), "n": e.n, "epochs": int(group["epochs"].max())})
    return pd.DataFrame(rows, columns=["dataset", "method", "mean", "se", "min", "max", "n", "epochs"])
