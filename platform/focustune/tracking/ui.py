"""``focustune ui``: MLflow's UI on a sweep's tracking store, so a newcomer needs no backend URI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from focustune.errors import ConfigError
from focustune.network import reachable

DEFAULT_PORT = 5000
TRAINING_VIEW = "machine_learning"  # the UI's `workflowType` of its model-training view


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
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not reachable(parsed.hostname or "", port):
            raise ConfigError(f"--tracking-uri {uri}: unreachable (nothing answers at {parsed.hostname}:{port})")
        raise ConfigError(f"--tracking-uri {uri} is a server; an MLflow server serves the UI itself: open it in "
                          "a browser")
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        if not path.is_file():
            raise ConfigError(f"no MLflow database at {path}; run a sweep first, or pass --tracking-uri")


def ui_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def experiment_links(uri: str, address: str) -> list[str]:
    """``NAME: URL`` of every active experiment with runs in the store, each opening its runs table in the
    model-training view (MLflow 3.17's UI chooses that view from the URL or from a switch it remembers
    per browser, not from the experiment's ``mlflow.experimentKind`` tag)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = [e for e in client.search_experiments(order_by=["name"])
             if client.search_runs([e.experiment_id], max_results=1)]  # not MLflow's empty "Default"
    return [f"{e.name}: {address}/#/experiments/{e.experiment_id}/runs?workflowType={TRAINING_VIEW}" for e in found]


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def serve(uri: str, host: str, port: int | None, out: TextIO = sys.stdout) -> int:
    """Run MLflow's UI on ``uri``, print its address and each experiment's link once it answers; run
    until it stops (Ctrl-C); returns its exit status."""
    check_store(uri)
    port = choose_port(host, port)
    address = f"http://{host}:{port}"
    # its own process group: MLflow's UI runs its web server as a child, and both stop together
    proc = subprocess.Popen(ui_command(uri, host, port), start_new_session=True)
    print(f"MLflow UI on {uri}: starting at {address} (Ctrl-C stops it)", file=out, flush=True)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        while proc.poll() is None and not _answers(address):
            time.sleep(0.5)
        if proc.poll() is None:
            links = experiment_links(uri, address)
            print(f"MLflow UI ready at {address}; experiments (runs table, model-training view):",
                  *(f"  {link}" for link in links), sep="\n", file=out, flush=True)
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that serve's ``finally`` stops the UI's processes


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the UI's process group (the UI and its web server), SIGKILL after 15 s."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
