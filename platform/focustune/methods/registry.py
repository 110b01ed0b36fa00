"""Name -> method class registry; every registered method is tested by the suite."""

from __future__ import annotations

from typing import TypeVar

from focustune.errors import ConfigError

M = TypeVar("M", bound=type)

_METHODS: dict[str, type] = {}


def register(cls: M) -> M:
    """Class decorator: make a :class:`~focustune.methods.base.Method` available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    """The method class registered as ``name``."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def method_names() -> list[str]:
    return sorted(_METHODS)
