"""Reading the YAML files users write (search spaces, sweep plans, run configurations)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from focustune.errors import ConfigError


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """The parsed content of ``path``; a missing, undecodable or malformed file is one ConfigError
    naming ``what`` it was (e.g. ``--plan``) and the path."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    try:
        return yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: not valid YAML: {exc}") from None
