"""A run's whole configuration as a YAML file: what ``tune``/``sweep`` write for a chosen setup and
``train --config`` reads back (method, seed, dataset options, every resolved hyperparameter)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from focustune.data.options import DataOptions
from focustune.errors import ConfigError
from focustune.files import write_atomic
from focustune.yaml_files import read_yaml

HEADER = "# focustune run configuration; re-train it with: focustune train --config THIS_FILE [--set KEY=VALUE]\n"


@dataclass(kw_only=True)
class RunConfig(DataOptions):
    """One training run: the method, its seed, the data options (:class:`DataOptions`), ``params``
    holding every resolved hyperparameter (shared and the method's), and ``source``, what chose it
    (informational: study, trial kind, validation score)."""

    method: str
    params: dict[str, Any]
    seed: int = 0
    source: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> str:
        return HEADER + yaml.safe_dump(asdict(self), sort_keys=False)

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path``."""
        return write_atomic(path, self.to_yaml())

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> RunConfig:
        """Validate a parsed mapping's shape (not its values: ``train`` resolves those)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with method, dataset and params")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(map(str, data)) - known):
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if missing := [k for k in ("method", "dataset", "params") if data.get(k) in (None, "")]:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        if not isinstance(data["params"], dict) or not isinstance(data.get("source", {}), dict):
            raise ConfigError(f"{where}: params (and source) must be mappings of names to values")
        for key in ("seed", "data_seed"):
            if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
                raise ConfigError(f"{where}: {key} must be an integer, got {data[key]!r}")
        return cls(**data)


def read_run_config(path: str | os.PathLike) -> RunConfig:
    """The configuration in ``path``; a missing, unreadable or malformed file is a ConfigError."""
    return RunConfig.from_mapping(read_yaml(path, "--config"), f"--config {path}")

