"""Plain-text tables for the terminal: the one table formatter of the command line and the reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def text_table(columns: Sequence[str], rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> str:
    """Left-aligned columns under a header and a rule; a row is a sequence of cells or a mapping by
    column name (missing cells are empty)."""
    cells = [[str(row.get(c, "")) for c in columns] if isinstance(row, Mapping) else [str(v) for v in row]
             for row in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])
