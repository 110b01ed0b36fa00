"""Checkpoint files and the random streams they carry, across device types (CPU <-> CUDA)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from focustune.files import write_atomic

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``directory/checkpoint.pt`` (the folder is created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_atomic(directory / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp))


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state in ``directory/checkpoint.pt``, on the CPU; None when there is none.

    Onto the CPU: RNG states must stay CPU tensors; the trainer places the rest on its device."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside (nested dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The random streams of a run: torch's global CPU stream, the run's ``generator``, and CUDA's."""
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(),
            "generator_device": generator.device.type,
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(rng: dict[str, Any], generator: torch.Generator, device: torch.device, restart_seed: int) -> None:
    """Random streams as :func:`rng_state` saved them. RNG states are CPU byte tensors whatever the
    device; a generator state saved on another device type does not fit this one's generator, which
    then restarts from ``restart_seed``: the continuation is reproducible, though not the stream the
    other device would have drawn."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("generator_device", "cpu") == generator.device.type:
        generator.set_state(rng["generator"].cpu())
    else:
        generator.manual_seed(restart_seed)
    if device.type == "cuda":
        if isinstance(rng.get("cuda"), torch.Tensor):
            torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
        else:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(restart_seed)
