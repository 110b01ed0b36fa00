"""Search spaces: declarative YAML ranges per method, validated against the declared hyperparameters.

File format (``search_spaces/<method>.yaml``)::

    method: low
    space:                                   # key -> distribution
      lam:          {type: loguniform, low: 1.0e-3, high: 10.0}
      base_loss:    {type: choice, values: [ce, focal]}
      gamma:        {type: uniform, low: 0.5, high: 5.0, when: {base_loss: focal}}
      batch_size:   {type: choice, values: [64, 128, 256]}
      epochs_per_x: {type: int, low: 1, high: 10, log: false}
    datasets:                                # optional per-dataset overrides of entries
      breastmnist:
        lr: {type: loguniform, low: 1.0e-4, high: 3.0e-3}

Types: ``uniform``, ``loguniform``, ``int`` (``log`` optional), ``choice`` (``values``).
``when`` makes a key conditional on the sampled value of another key (else it keeps its default).
Keys must be hyperparameters of the method or shared ones; ranges must lie inside the declared
valid range. This module has no Ray or Optuna import: the tuning layer converts a validated space.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from focustune import params
from focustune.config import MethodClass, TrainConfig
from focustune.errors import ConfigError
from focustune.yaml_files import read_yaml

TYPES = ("uniform", "loguniform", "int", "choice")


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] | None = None
    log: bool = False
    when: dict[str, Any] = field(default_factory=dict)

    def value_of(self, text: str) -> Any:
        """A logged value (text, as MLflow keeps params) as this dimension's value; None if outside it."""
        if self.type == "choice":
            return next((v for v in self.values or () if str(v) == text), None)
        try:
            value = int(float(text)) if self.type == "int" else float(text)
        except ValueError:
            return None
        inside = self.low is not None and self.high is not None and self.low <= value <= self.high
        return value if inside else None


@dataclass(frozen=True)
class SearchSpace:
    method: str
    dimensions: dict[str, Dimension]
    source: str = ""


def default_space_dir() -> Path:
    """The method search spaces: ``focustune/search_spaces`` links to the top-level ``search_spaces/``
    in a checkout, and holds its copy in an installed wheel."""
    return Path(str(importlib.resources.files("focustune") / "search_spaces"))


def space_path(method: str) -> Path:
    return default_space_dir() / f"{method}.yaml"


def _declared(method_cls: MethodClass) -> dict[str, tuple[dataclasses.Field, Any]]:
    out = {}
    for cls in (TrainConfig, method_cls.Params):
        types = params.field_types(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (f, types[f.name])
    return out


def _parse_dimension(name: str, entry: Any, where: str) -> Dimension:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {name} must be a mapping with a 'type'")
    kind = entry.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: {name} has type {kind!r}; expected one of {', '.join(TYPES)}")
    allowed = {"type", "when"} | ({"values"} if kind == "choice" else {"low", "high", "log"})
    if extra := sorted(set(entry) - allowed):
        raise ConfigError(f"{where}: {name} has unknown field(s) {', '.join(extra)}")
    when = entry.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: {name}.when must map a key to a value")
    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {name} needs a non-empty 'values' list")
        return Dimension(name, kind, values=tuple(values), when=dict(when))
    try:
        low, high = float(entry["low"]), float(entry["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {name} needs numeric 'low' and 'high'") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{where}: {name} has an empty range [{low:g}, {high:g}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: {name} is loguniform, so 'low' must be > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}: {name} is int, so its bounds must be integers")
    return Dimension(name, kind, low, high, log=bool(entry.get("log", kind == "loguniform")), when=dict(when))


def _check_against_declared(dim: Dimension, declared: dict, where: str) -> None:
    if dim.name not in declared:
        raise ConfigError(f"{where}: {dim.name} is not a hyperparameter of this method or a shared one "
                          f"(known: {', '.join(sorted(declared))})")
    f, kind = declared[dim.name]
    spec = params.spec_of(f)
    candidates = list(dim.values) if dim.values is not None else [b for b in (dim.low, dim.high) if b is not None]
    for value in candidates:
        coerced = params._coerce(dim.name, int(value) if dim.type == "int" else value, kind)
        try:
            params.check(dim.name, coerced, spec)
        except ConfigError as exc:
            raise ConfigError(f"{where}: range of {exc}") from None
    for key in dim.when:
        if key not in declared:
            raise ConfigError(f"{where}: {dim.name}.when names unknown key {key}")


def parse_space(data: Any, method_cls: MethodClass, dataset: str | None = None, where: str = "space") -> SearchSpace:
    """Validate a loaded YAML document for ``method_cls`` (applying ``dataset``'s overrides)."""
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict):
        raise ConfigError(f"{where}: expected a mapping with a 'space' mapping")
    if extra := sorted(set(data) - {"method", "space", "datasets"}):
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(extra)}")
    if data.get("method", method_cls.name) != method_cls.name:
        raise ConfigError(f"{where}: file is for method {data['method']!r}, not {method_cls.name!r}")
    entries = dict(data["space"])
    overrides = data.get("datasets") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: 'datasets' must map dataset names to entries")
    if dataset is not None and dataset in overrides:
        entries.update(overrides[dataset] or {})
    declared = _declared(method_cls)
    dims = {}
    for name, entry in entries.items():
        dim = _parse_dimension(str(name), entry, where)
        _check_against_declared(dim, declared, where)
        dims[dim.name] = dim
    for name, sub in overrides.items():  # every override must be valid too, not just the chosen one
        for key, entry in (sub or {}).items():
            _check_against_declared(_parse_dimension(str(key), entry, f"{where} [{name}]"), declared, where)
    return SearchSpace(method_cls.name, dims, where)


def load_space(method_cls: MethodClass, path: str | Path | None = None, dataset: str | None = None) -> SearchSpace:
    """Load and validate ``path`` (default: the method's file in ``search_spaces/``)."""
    path = Path(path) if path else space_path(method_cls.name)
    return parse_space(read_yaml(path, "search space file"), method_cls, dataset, where=str(path))
