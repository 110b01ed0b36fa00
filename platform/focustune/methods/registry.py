"""Name -> method class registry; every registered method is tested by the suite."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from focustune.registry import Registry

if TYPE_CHECKING:
    from focustune.methods.base import Method

M = TypeVar("M", bound="type[Method]")

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: M) -> M:
    """Class decorator: make a :class:`~focustune.methods.base.Method` available by its ``name``."""
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    return METHODS.get(name)


def method_names() -> list[str]:
    return list(METHODS.names())
