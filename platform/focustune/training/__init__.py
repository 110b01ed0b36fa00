"""The one training loop every method runs under, and its parts (see ``docs/architecture.md``)."""

from focustune.training.loop import (CHECKPOINT_FILE, EpochCallback, RunResult, Trainer, augment_batch,
                                     cpu_has_native_bf16, deterministic_algorithms, device_data_limit, normalise,
                                     seed_everything, select_device)

__all__ = ["CHECKPOINT_FILE", "EpochCallback", "RunResult", "Trainer", "augment_batch", "cpu_has_native_bf16",
           "deterministic_algorithms", "device_data_limit", "normalise", "seed_everything", "select_device"]
