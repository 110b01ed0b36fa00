"""Registered backbones and heads. Importing this package imports (and so registers) every module in it."""

import importlib
import pkgutil

from focustune.models.base import (HEADS, MODELS, AdaptiveAvgPool2d, Classifier, build_model, count_parameters,
                                   pool_by_matrices, register_head, register_model, seeded_init)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from focustune.models.spinal_head import SpinalHead  # noqa: E402  (after registration, for imports)

__all__ = ["HEADS", "MODELS", "AdaptiveAvgPool2d", "Classifier", "SpinalHead", "build_model", "count_parameters",
           "pool_by_matrices", "register_head", "register_model", "seeded_init"]
