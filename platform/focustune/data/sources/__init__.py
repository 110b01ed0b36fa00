"""Registered dataset sources. Importing this package imports (and so registers) every module in it."""

import importlib
import pkgutil

from focustune.data.sources.base import SOURCES, DatasetSource, DataRequest, register_source

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SOURCES", "DatasetSource", "DataRequest", "register_source"]
