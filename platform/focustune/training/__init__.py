"""The one training loop every method runs under, and its parts: ``loop`` (the Trainer), ``device``
(device, precision, determinism, seeding), ``optimisers``, ``evaluation`` (probabilities, metrics,
best-epoch selection, the run's result) and ``checkpoints``."""

from focustune.training.checkpoints import CHECKPOINT_FILE
from focustune.training.device import (cpu_has_native_bf16, deterministic_algorithms, device_data_limit,
                                       seed_everything, select_device)
from focustune.training.evaluation import RunResult
from focustune.training.loop import EpochCallback, Trainer
from focustune.transforms import augment_batch, normalise

__all__ = ["CHECKPOINT_FILE", "EpochCallback", "RunResult", "Trainer", "augment_batch", "cpu_has_native_bf16",
           "deterministic_algorithms", "device_data_limit", "normalise", "seed_everything", "select_device"]
