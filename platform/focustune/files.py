"""Writing files so that a reader never sees half of one: the one atomic writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``content`` to ``path`` through a temporary file beside it, then rename it into place.

    ``content`` is text, bytes, or a function that writes the temporary path it is given (for
    writers that take a path, such as ``torch.save``, or that stream). The folder must exist. If
    writing fails, the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share it
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
