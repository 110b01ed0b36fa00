"""Search spaces: declarative YAML ranges, a shared base that each method's file extends, validated
against the declared hyperparameters.

The shared base (``search_spaces/_shared.yaml``, no method's file) ranges the hyperparameters every
method shares (``config.TrainConfig``'s) once, optionally varied per dataset::

    space:
      lr:         {type: loguniform, low: 1.0e-4, high: 1.0e-2}
      batch_size: {type: choice, values: [64, 128, 256]}
    datasets:                                # optional per-dataset variations of the shared ranges
      breastmnist:
        lr: {type: loguniform, low: 1.0e-4, high: 3.0e-3}

A method's file (``search_spaces/<method>.yaml``) extends the base: it declares its own keys, and a
shared key only to override it (saying why in a comment). A user's ``--space METHOD=FILE`` or plan
``spaces:`` file is a method's file with the same rules: it extends the base too, and drops the shared
keys it should not search::

    method: low
    space:                                   # key -> distribution; optional when it has none of its own
      lam:          {type: loguniform, low: 1.0e-3, high: 10.0}
      base_loss:    {type: choice, values: [ce, focal]}
      gamma:        {type: uniform, low: 0.5, high: 5.0, when: {base_loss: focal}}
      epochs_per_x: {type: int, low: 1, high: 10, log: false}
      lr:           {type: loguniform, low: 1.0e-3, high: 1.0e-1}   # overrides the shared lr: SGD's scale
    drop: [weight_decay]                     # optional: shared keys not searched (they keep their default)
    datasets:                                # optional per-dataset overrides of entries
      breastmnist:
        lam: {type: loguniform, low: 1.0e-2, high: 10.0}

A key's range is the first of: the method file's entry for the dataset, its ``space`` entry, the
base's entry for the dataset, the base's ``space`` entry (so an override replaces the shared key on
every dataset). The method file's keys come first, in its order, then the base's. ``drop`` naming a
key the base does not declare, or one the file also ranges, is refused.

Types: ``uniform``, ``loguniform``, ``int`` (``log`` optional), ``choice`` (``values``).
``when`` makes a key conditional on the sampled value of another key (else it keeps its default).
Keys must be hyperparameters of the method or shared ones (the base: shared ones only); ranges must
lie inside the declared valid range. This module has no Ray or Optuna import: the tuning layer
converts a validated space.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import importlib.resources
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focustune import params
from focustune.config import MethodClass, TrainConfig
from focustune.errors import ConfigError
from focustune.yaml_files import read_yaml

TYPES = ("uniform", "loguniform", "int", "choice")
SHARED_FILE = "_shared.yaml"  # the shared base: the underscore sets it apart from the method files beside it
SHARED_FILE_KEYS = ("space", "datasets")
METHOD_FILE_KEYS = ("method", "space", "drop", "datasets")


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

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this key is searched given the other keys' values (its ``when`` condition holds)."""
        return all(values.get(key) == value for key, value in self.when.items())

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


def shared_path() -> Path:
    """The shared base every method's space extends."""
    return default_space_dir() / SHARED_FILE


@dataclass(frozen=True)
class _Ranges:
    """One file's validated ranges: its ``space`` and their per-dataset variations."""

    space: dict[str, Dimension]
    datasets: dict[str, dict[str, Dimension]]

    def keys(self) -> set[str]:
        return set(self.space).union(*self.datasets.values())

    def for_dataset(self, dataset: str | None) -> dict[str, Dimension]:
        return {**self.space, **(self.datasets.get(dataset, {}) if dataset is not None else {})}


def _declared(*classes: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    out = {}
    for cls in classes:
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
        raise ConfigError(f"{where}: {dim.name} is not a hyperparameter this file may range "
                          f"(known: {', '.join(sorted(declared))})")
    f, kind = declared[dim.name]
    _check_type_fits(dim, kind, where)
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


def _check_type_fits(dim: Dimension, kind: Any, where: str) -> None:
    """A range must draw values of its hyperparameter's type: an integer one is ``int`` (or ``choice``),
    a bool or text one ``choice`` (else every trial drawing, say, 2.37 for an integer would fail)."""
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if typing.get_args(kind) else kind
    if base is int and dim.type in ("uniform", "loguniform"):
        raise ConfigError(f"{where}: {dim.name} is an integer hyperparameter, so its type must be int "
                          f"(with log: true for a log scale) or choice, not {dim.type}")
    if base in (bool, str) and dim.type != "choice":
        raise ConfigError(f"{where}: {dim.name} is a {base.__name__} hyperparameter, so its type must be choice, "
                          f"not {dim.type}")


def _document(data: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """``data``, checked to be a mapping of only ``keys`` whose ``space`` and ``datasets`` are mappings."""
    expected = f"expected a mapping of {', '.join(keys)}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {expected}")
    if extra := sorted(map(str, set(data) - set(keys))):
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(extra)}; {expected}")
    if not isinstance(data.get("space") or {}, dict):
        raise ConfigError(f"{where}: 'space' must map keys to distributions")
    datasets = data.get("datasets") or {}
    if not isinstance(datasets, dict) or not all(isinstance(v or {}, dict) for v in datasets.values()):
        raise ConfigError(f"{where}: 'datasets' must map dataset names to entries")
    return data


def _dimensions(entries: dict[Any, Any], declared: dict, where: str) -> dict[str, Dimension]:
    dims = {}
    for name, entry in entries.items():
        dim = _parse_dimension(str(name), entry, where)
        _check_against_declared(dim, declared, where)
        dims[dim.name] = dim
    return dims


def _ranges(data: dict[str, Any], declared: dict, where: str) -> _Ranges:
    """Every range of a checked document, each dataset's too (not just the one a study uses)."""
    datasets = data.get("datasets") or {}
    return _Ranges(_dimensions(data.get("space") or {}, declared, where),
                   {str(name): _dimensions(entries or {}, declared, f"{where} [{name}]")
                    for name, entries in datasets.items()})


def _load_shared() -> _Ranges:
    path = shared_path()
    data = _document(read_yaml(path, "shared search space file"), SHARED_FILE_KEYS, str(path))
    return _ranges(data, _declared(TrainConfig), str(path))


def _dropped(drop: Any, shared: _Ranges, own: _Ranges, where: str) -> set[str]:
    """The shared keys a method file's ``drop`` list takes out of its space."""
    if drop is None:
        return set()
    if not isinstance(drop, list) or not all(isinstance(key, str) for key in drop):
        raise ConfigError(f"{where}: 'drop' must be a list of shared keys")
    if unknown := sorted(set(drop) - shared.keys()):
        raise ConfigError(f"{where}: drop names {', '.join(unknown)}, which the shared base does not range "
                          f"(it ranges {', '.join(sorted(shared.keys()))})")
    if both := sorted(set(drop) & own.keys()):
        raise ConfigError(f"{where}: {', '.join(both)} both dropped and ranged; keep one")
    return set(drop)


def parse_space(data: Any, method_cls: MethodClass, dataset: str | None = None, where: str = "space") -> SearchSpace:
    """Validate a loaded method file for ``method_cls``: the shared base extended by it, with both
    files' entries for ``dataset``."""
    data = _document(data, METHOD_FILE_KEYS, where)
    if data.get("method", method_cls.name) != method_cls.name:
        raise ConfigError(f"{where}: file is for method {data['method']!r}, not {method_cls.name!r}")
    own = _ranges(data, _declared(TrainConfig, method_cls.Params), where)
    shared = _load_shared()
    dropped = _dropped(data.get("drop"), shared, own, where)
    dims = own.for_dataset(dataset)
    inherited = {name: dim for name, dim in shared.for_dataset(dataset).items()
                 if name not in dims and name not in dropped}
    return SearchSpace(method_cls.name, {**dims, **inherited}, where)


def load_space(method_cls: MethodClass, path: str | Path | None = None, dataset: str | None = None) -> SearchSpace:
    """Load and validate ``path`` (default: the method's file in ``search_spaces/``) over the shared base."""
    path = Path(path) if path else space_path(method_cls.name)
    data = read_yaml(path, "search space file")
    if data == {}:
        raise ConfigError(f"{path}: the search space file is empty ({{}}); give its method and ranges, or drop "
                          "--space to use the method's own file")
    return parse_space(data, method_cls, dataset, where=str(path))
