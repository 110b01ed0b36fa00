"""``focustune ui``: MLflow's UI on a sweep's tracking store, so a newcomer needs no backend URI."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from focustune.errors import ConfigError

DEFAULT_PORT = 5000


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, port: int | None) -> int:
    """``port`` when free (refused when taken); without one, 5000 if free, else any free port."""
    if port is not None:
        if not 0 < port < 65536:
            raise ConfigError(f"--port must be in 1..65535, got {port}")
        if not _port_free(host, port):
            raise ConfigError(f"--port {port}: already in use on {host}; choose another port")
        return port
    if _port_free(host, DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_store(uri: str) -> None:
    """Refuse a store the UI cannot show: a missing sqlite file, or a tracking server (it serves its own UI)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        raise ConfigError(f"--tracking-uri {uri} is an MLflow server, which serves the UI itself: open it in a browser")
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        if not path.is_file():
            raise ConfigError(f"no MLflow database at {path}; run a sweep first, or pass --tracking-uri")


def ui_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def ui_hint(uri: str) -> str:
    """How to see ``uri`` in MLflow's UI: ``focustune ui`` (with its URI unless it is the default
    store), or the server's own address."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri} in a browser"
    default = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return "focustune ui" if uri == default else f"focustune ui --tracking-uri {uri}"


def serve(uri: str, host: str, port: int | None) -> int:
    """Run MLflow's UI on ``uri`` until it stops (Ctrl-C); returns its exit status."""
    check_store(uri)
    port = choose_port(host, port)
    proc = subprocess.Popen(ui_command(uri, host, port))
    print(f"MLflow UI on {uri}: http://{host}:{port} (starting; Ctrl-C stops it)", flush=True)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
