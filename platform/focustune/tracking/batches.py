"""Logging to an MLflow run in batches within MLflow's limits: the one batched writer."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

#: MLflow's per-request limit on metrics (and on params and tags) of one ``log_batch``.
BATCH_LIMIT = 100


def param_text(value: Any) -> str:
    """A param's stored text (MLflow params are strings; None is stored as ``none``)."""
    return "none" if value is None else str(value)


def log_batched(client: Any, run_id: str, metrics: Mapping[str, float] | None = None,
                params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None, *,
                step: int = 0, timestamp_ms: int | None = None,
                history: Iterable[tuple[str, float, int]] = ()) -> None:
    """Log ``metrics`` (at ``step``), ``history`` (``(name, value, step)`` rows: metrics over steps,
    e.g. per epoch), ``params`` and ``tags`` to ``run_id`` with as few ``log_batch`` calls as MLflow's
    limits allow, each synchronous (an error surfaces here)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    metric_list += [Metric(k, float(v), now, at) for k, v, at in history]
    param_list = [Param(k, param_text(v)) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_list), len(param_list), len(tag_list), 1), BATCH_LIMIT):
        client.log_batch(run_id, metrics=metric_list[i:i + BATCH_LIMIT], params=param_list[i:i + BATCH_LIMIT],
                         tags=tag_list[i:i + BATCH_LIMIT], synchronous=True)
