"""Where the command line's progress and warnings go: standard error, so that standard output holds
only a command's results."""

from __future__ import annotations

import sys


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
