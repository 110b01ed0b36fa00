"""Name -> method class registry; every registered method is tested by the suite."""

from __future__ import annotations

from typing import TypeVar

from focustune.registry import Registry

M = TypeVar("M", bound=type)

METHODS: Registry[type] = Registry("method")


def register(cls: M) -> M:
    """Class decorator: make a :class:`~focustune.methods.base.Method` available by its ``name``."""
    return METHODS.add(cls.name, cls)


def get_method(name: str) -> type:
    """The method class registered as ``name``."""
    return METHODS.get(name)


def method_names() -> list[str]:
    return list(METHODS.names())
