"""Whether a TCP service answers: the one connection probe of pre-flight checks and downloads."""

from __future__ import annotations

import socket


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when something accepts a TCP connection at ``host:port`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
