"""Where and how a run computes: the device, its compute precision, its data limit, determinism, seeding."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

#: Share of the GPU memory this process may use (its per-process fraction, e.g. a fractional
#: ``--gpus-per-trial``, of what is free at the start) that a dataset's images may take there;
#: above it the images stay in host memory and batches are streamed.
DEVICE_DATA_SHARE = 0.5
#: cuBLAS setting that deterministic algorithms need on CUDA (set when not set already).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def select_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else CUDA when available, else CPU."""
    if preference:
        return torch.device(preference)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 would be slower."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older torch: no capability report, stay in float32
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def amp_dtype(amp: bool, device: torch.device, optimizer: str) -> torch.dtype | None:
    """The autocast dtype of forward passes (None: float32): bfloat16 where the device computes it
    natively, else float16 on CUDA (not under SAM, whose two-pass step has no gradient scaling)."""
    if not amp:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None if optimizer == "sam" else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """'bfloat16', 'float16' or 'float32' for an :func:`amp_dtype`."""
    return str(dtype or torch.float32).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (disabled when ``dtype`` is None)."""
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def device_data_limit(device: torch.device) -> int | None:
    """Bytes of images a run keeps on ``device`` (None: no limit, as on the CPU); see DEVICE_DATA_SHARE."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    fraction = torch.cuda.get_per_process_memory_fraction(device) if hasattr(
        torch.cuda, "get_per_process_memory_fraction") else 1.0
    return int(DEVICE_DATA_SHARE * min(free, total * fraction))


def reserve_deterministic_workspace() -> None:
    """Ask cuBLAS for the workspace deterministic algorithms need (effective before its first call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With ``enabled``, deterministic algorithms (and cuDNN without benchmarking) inside the block;
    the process's previous settings are restored after it."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    reserve_deterministic_workspace()
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = benchmark


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (CPU and CUDA) and NumPy's."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
