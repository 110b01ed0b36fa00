"""Real servers for tests, on loopback only, stopped by the process groups the tests started.

Nothing here uses `ray stop`, `pkill` or `killall`: every process is started in its own session
and stopped by its process-group id, so no other Ray or Python process on the machine is touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from conftest import make_dataset

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def group_alive(pgid: int) -> bool:
    """True while any process of process group ``pgid`` exists (zombies excluded)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, the process group that ``proc`` leads; wait until none is left."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if wait_until(lambda: not group_alive(pgid), wait):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    assert not group_alive(pgid), f"processes of group {pgid} survived"


def start(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)


@contextmanager
def mlflow_server(folder: Path, port: int | None = None):
    """``mlflow server`` on 127.0.0.1 with a sqlite store; yields (uri, restart function)."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    state = {"proc": None}

    def up():
        state["proc"] = start(cmd, folder / "mlflow.log")
        assert wait_until(lambda: _healthy(uri), 90), (folder / "mlflow.log").read_text()[-2000:]

    def down():
        if state["proc"] is not None:
            stop_group(state["proc"])
            state["proc"] = None

    up()
    try:
        yield uri, up, down
    finally:
        down()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def ray_cluster(folder: Path, cpus_per_node: int = 1):
    """A two-node Ray cluster (head + worker) on 127.0.0.1 with token authentication on."""
    port = free_port()
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node), "--num-gpus", "0",
              "--disable-usage-stats"]
    temp = tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    head = start([str(BIN / "ray"), "start", "--head", "--port", str(port), "--include-dashboard", "false",
                  "--temp-dir", temp, *common], folder / "head.log", env)
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        assert wait_until(lambda: _port_open(port), 60), (folder / "head.log").read_text()[-2000:]
        procs.append(start([str(BIN / "ray"), "start", "--address", address, *common], folder / "worker.log", env))
        yield address, env
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tiny_npz(path: Path, counts=(30, 10, 6)) -> Path:
    """A learnable three-class MedMNIST-layout file for sweeps."""
    data = make_dataset(counts, eval_per_class=8)
    arrays = {}
    for split in ("train", "val", "test"):
        part = data.split(split)
        arrays[f"{split}_images"] = part.images[:, 0].numpy()
        arrays[f"{split}_labels"] = part.labels.numpy().astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "focustune.cli", "sweep", *args]
