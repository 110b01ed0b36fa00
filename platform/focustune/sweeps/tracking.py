"""Kept for ``focustune.cli`` until it imports from the modules the tracking was split into:
:mod:`~focustune.sweeps.mlflow_queue` (operations, sender thread), :mod:`~focustune.sweeps.mlflow_callback`
(the Tune callback), :mod:`~focustune.sweeps.study_runs` (parent runs) and
:mod:`~focustune.sweeps.warm_start`. Delete it once ``cli`` imports ``warm_start_configs`` from there."""

from focustune.sweeps.warm_start import warm_start_configs

__all__ = ["warm_start_configs"]
