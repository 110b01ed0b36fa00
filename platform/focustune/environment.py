"""Environment variables changed for a block only (subprocesses inherit the environment, so a change
that outlives its purpose reaches everything this process starts later)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def restored_environment(*names: str) -> Iterator[None]:
    """Inside the block the variables ``names`` may be set or changed; afterwards each is as it was
    before (unset when it was unset)."""
    previous = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
