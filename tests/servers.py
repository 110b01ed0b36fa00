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


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, command line) of every live (non-zombie) process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return table


def family(root: int) -> set[int]:
    """``root``'s process group plus every descendant of ``root`` (Ray workers may start new groups)."""
    table = _processes()
    members = {pid for pid, (_, pgid, _) in table.items() if pgid == root}
    members |= {root} if root in table else set()
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in members} - members
        members |= children
        grew = bool(children)
    return members


def command_line(pid: int) -> str:
    return _processes().get(pid, (0, 0, ""))[2]


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, what ``proc`` started (its group and descendants); wait until none is left."""
    members = family(proc.pid)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        members |= family(proc.pid)
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if wait_until(lambda: not (members & set(_processes())), wait):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    left = members & set(_processes())
    assert not left, f"processes {sorted(left)} started by {proc.pid} survived"


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
