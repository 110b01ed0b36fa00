"""Declared hyperparameters: one dataclass field per parameter, with type, default and valid range.

A field is declared with :func:`hp`; :func:`build` turns a mapping of overrides (values may be
strings, as typed on a command line) into a validated dataclass instance, refusing unknown keys,
wrong types and out-of-range values with one clear :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from focustune.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a hyperparameter accepts: bounds (inclusive) or a set of choices.

    ``choices`` may be a function returning them (a registry's names), read when checked."""

    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] | None = None
    log: bool = False
    help: str = ""

    @property
    def allowed(self) -> tuple[Any, ...] | None:
        """The accepted values, or None when any value within the bounds is."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def describe(self) -> str:
        if self.allowed is not None:
            return "one of " + ", ".join(map(str, self.allowed))
        if self.low is not None or self.high is not None:
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            return f"in [{low}, {high}]"
        return "any"


def hp(default: Any, *, low: float | None = None, high: float | None = None,
       choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None, log: bool = False,
       help: str = "") -> Any:
    """Declare a hyperparameter field with its default and valid range (``choices``: values or a
    function returning them)."""
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    spec = Spec(low, high, choices, log, help)
    return dataclasses.field(default=default, metadata={"spec": spec})


def spec_of(field: dataclasses.Field) -> Spec:
    return field.metadata.get("spec", Spec())


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert ``value`` to ``kind`` (bool, int, float, str, or Optional of these)."""
    optional = typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", ()))
    if optional:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        kind = args[0]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None
    return value


def check(name: str, value: Any, spec: Spec) -> None:
    """Raise ConfigError when ``value`` is outside ``spec``."""
    if value is None:
        return
    if spec.allowed is not None and value not in spec.allowed:
        raise ConfigError(f"{name}={value!r} is not allowed: {spec.describe()}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} must be finite")
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            raise ConfigError(f"{name}={value!r} is out of range: {spec.describe()}")


def validate(obj: Any) -> None:
    """Check every declared field of a dataclass instance against its spec."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        coerced = _coerce(f.name, value, types[f.name])
        if coerced != value or type(coerced) is not type(value):
            object.__setattr__(obj, f.name, coerced)
        check(f.name, coerced, spec_of(f))


def build(cls: type[T], overrides: Mapping[str, Any] | None = None, *, what: str = "") -> T:
    """Instantiate ``cls`` from its defaults plus ``overrides``, validating every value."""
    overrides = dict(overrides or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        where = f" for {what}" if what else ""
        raise ConfigError(f"unknown hyperparameter{'s' if len(unknown) > 1 else ''}{where}: "
                          f"{', '.join(unknown)} (known: {', '.join(names) or 'none'})")
    types = field_types(cls)
    values = {k: _coerce(k, v, types[k]) for k, v in overrides.items()}
    obj = cls(**values)
    validate(obj)
    return obj


def describe(cls: type) -> list[dict[str, Any]]:
    """Rows (name, type, default, range, help) for listing a dataclass's hyperparameters."""
    types = field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        kind = types[f.name]
        rows.append({"name": f.name, "type": getattr(kind, "__name__", str(kind)).replace("typing.", ""),
                     "default": f.default, "range": spec.describe(), "help": spec.help})
    return rows


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` strings (from ``--set``) into a dict, refusing malformed items."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key in out:
            raise ConfigError(f"--set gives {key} twice")
        out[key] = value.strip()
    return out
