"""The Ray side of a sweep: joining (or starting) Ray quietly, and how many trials fit at once."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from focustune.credentials import SECRET_ENV_VARS
from focustune.environment import restored_environment

# Tune's own console tables and checkpoint-frequency warnings: the sweep prints its own progress.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
              # snapshot Tune's experiment state at least every 5 s, so a killed driver loses little
              "TUNE_GLOBAL_CHECKPOINT_S": "5"}


#: Ray's switch between a single-machine Ray and one that other nodes may join (meant for Windows and
#: macOS), read into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` when ray is imported: off,
#: ``ray.init`` keeps the node address 127.0.0.1 and every server it starts binds loopback; on (Linux's
#: default), it swaps 127.0.0.1 for the machine's address (``services.resolve_ip_for_localhost``) and
#: the servers bind every interface, guarded by token auth only.
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def init_ray(address: str | None) -> None:
    """Join ``address`` (or $RAY_ADDRESS); else start a private local Ray, never a stale cluster, whose
    servers listen on 127.0.0.1 only, whether or not this process imported ray before."""
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    with _single_machine(target == "local"):
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True, "logging_level": "warning"}
        if target == "local":  # a private single-node Ray
            kwargs.update(include_dashboard=False, _node_ip_address=LOOPBACK)
        ray.init(address=target, **kwargs)
    keep_secrets_out_of_runtime_env()


def keep_secrets_out_of_runtime_env() -> None:
    """Tune copies the driver's AWS keys into every trial actor's runtime environment
    (``tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``), and Ray's runtime-env agent writes each
    environment it creates to its log, readable by every user of the machine. Not ours: a private
    Ray's workers inherit the driver's environment (through the raylet it starts), and a cluster's
    nodes use the credentials of their own environment or role."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(SECRET_ENV_VARS)


@contextmanager
def _single_machine(local: bool) -> Iterator[None]:
    """For a private local Ray: single-machine mode while ray starts its servers, then as before. The
    environment variable reaches the servers and their workers (they inherit it); Ray's constant,
    read from it at import, is set too, since a module imported earlier (Tune, the runner) may have
    imported ray before this. Afterwards nothing this process starts (``ray start`` of a worker node,
    say) sees either."""
    with restored_environment(SINGLE_MACHINE):
        if local:
            os.environ[SINGLE_MACHINE] = "0"
        from ray._private import ray_constants

        before = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = before and not local
        try:
            yield
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = before


def trial_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None,
                pack: int = 1) -> dict[str, int]:
    """Trial slots per alive node (by its node id) for the trial resources, ``pack`` trials to each
    (``--pack``: they train in one process), and the overall cap."""
    import ray

    slots: dict[str, int] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        count = math.floor(res.get("CPU", 0) / cpus_per_trial + 1e-9)
        if gpus_per_trial > 0:
            count = min(count, math.floor(res.get("GPU", 0) / gpus_per_trial + 1e-9))
        slots[node["NodeID"]] = count * pack
    if max_concurrent:
        slots["total"] = max_concurrent
    return slots


def node_summary() -> str:
    """The alive nodes' CPUs and GPUs, e.g. ``2 alive node(s): 4 CPU / 0 GPU, 0 CPU / 0 GPU``."""
    import ray

    alive = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    sizes = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in alive)
    return f"{len(alive)} alive node(s)" + (f": {sizes}" if alive else "")


def slot_count(slots: dict[str, int]) -> int:
    """Trial slots over all nodes (before any ``total`` cap)."""
    return sum(count for node, count in slots.items() if node != "total")


def pend_one_trial_per_slot(slots: dict[str, int]) -> None:
    """Let Tune keep one pending trial per slot, so a free slot starts the next trial at once (Tune's
    default for a custom searcher is a single pending trial, which starts trials one by one)."""
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slot_count(slots))))


def awaited_resources(cpus_per_trial: float, gpus_per_trial: float) -> str | None:
    """When no alive node can fit one trial, what the trials wait for (Ray 2.60 tells a driver no
    reliable sign of an autoscaler, so the sweep says what it awaits instead of waiting silently)."""
    if slot_count(trial_slots(cpus_per_trial, gpus_per_trial, None)) > 0:
        return None
    wanted = f"{cpus_per_trial:g} CPU(s)" + (f" and {gpus_per_trial:g} GPU(s)" if gpus_per_trial else "")
    return (f"waiting for a node with {wanted} for one trial (--wait-for-nodes): no alive node of the cluster "
            "has them yet; the cluster's autoscaler may add one, else stop the sweep (Ctrl-C) and lower "
            "--cpus-per-trial or --gpus-per-trial")
