"""Registered training methods. Importing this package imports (and so registers) every module in it."""

import importlib
import pkgutil

from focustune.methods.base import EpochStats, Method, NoParams, Phase, RunContext, mechanism_epoch
from focustune.methods.registry import get_method, method_names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EpochStats", "Method", "NoParams", "Phase", "RunContext", "get_method", "mechanism_epoch",
           "method_names", "register"]
