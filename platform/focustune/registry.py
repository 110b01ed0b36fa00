"""Name -> item registries (methods, models, heads, dataset sources): adding one is one file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from focustune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one ``kind`` by name; an unknown name is refused with the registered ones listed."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; a name taken by another item is a programming error."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} name {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._items))

    def values(self) -> list[T]:
        """Registered items, in the order of their sorted names."""
        return [self._items[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
