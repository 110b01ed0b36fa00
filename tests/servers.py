"""Real servers for tests, on loopback only, stopped by the process groups the tests started.

Nothing here uses `ray stop`, `pkill` or `killall`: every process is started in its own session
and stopped by its process-group id, so no other Ray or Python process on the machine is touched.
"""

from __future__ import annotations

import os
import pwd
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


def listening_addresses(pids: set[int]) -> set[tuple[str, str]]:
    """(address, process name: its first 15 characters) of every TCP socket in LISTEN state that one of
    ``pids`` holds, read from /proc (``/proc/net/tcp`` and ``tcp6``, and each process's open file descriptors)."""
    import ipaddress

    owners: dict[str, str] = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = name
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in owners:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
            address = ipaddress.ip_address(words)
            found.add((str(getattr(address, "ipv4_mapped", None) or address), owners[fields[9]]))  # ::ffff:a.b.c.d
    return found


def command_line(pid: int) -> str:
    return _processes().get(pid, (0, 0, ""))[2]


def pids_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a folder only this test uses, say)."""
    return sorted(pid for pid, (_, _, cmdline) in _processes().items() if text in cmdline and pid != os.getpid())


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
        if wait_until(lambda: not (members & set(_processes())), wait):  # noqa: B023 - called before the loop moves on
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    left = members & set(_processes())
    assert not left, f"processes {sorted(left)} started by {proc.pid} survived"


def start(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None,
          user: str | None = None) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})}, cwd=cwd, user=user)


@contextmanager
def mlflow_server(folder: Path, port: int | None = None, backend_store_uri: str | None = None):
    """``mlflow server`` on 127.0.0.1, its store sqlite in ``folder`` unless ``backend_store_uri`` names
    another; yields (uri, start function, stop function)."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
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


def _postgres_bin() -> Path:
    """``FOCUSTUNE_POSTGRES_BIN``, else the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    if "FOCUSTUNE_POSTGRES_BIN" in os.environ:
        return Path(os.environ["FOCUSTUNE_POSTGRES_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


POSTGRES_BIN = _postgres_bin()


@contextmanager
def postgres_server(databases: tuple[str, ...] = ("focustune",)):
    """PostgreSQL on a free port of 127.0.0.1 only (its socket in a private folder), with a password
    user and ``databases`` created; yields {database: SQLAlchemy URL (postgresql+psycopg)}.

    Runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses root). Skips the test
    where the PostgreSQL binaries or the psycopg driver are absent."""
    import pytest

    if not (POSTGRES_BIN / "postgres").is_file():
        pytest.skip(f"PostgreSQL binaries not found in {POSTGRES_BIN} (set FOCUSTUNE_POSTGRES_BIN)")
    psycopg = pytest.importorskip("psycopg")
    user = "postgres" if os.geteuid() == 0 else None
    if user and user not in {entry.pw_name for entry in pwd.getpwall()}:
        pytest.skip("running as root, but there is no 'postgres' user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="ft-pg-", dir="/tmp"))  # a socket path must stay under 107 bytes
    password, port = secrets.token_hex(12), free_port()
    try:
        _initdb(folder, password, user)
        proc = start([str(POSTGRES_BIN / "postgres"), "-D", str(folder / "data"), "-p", str(port),
                      "-c", "listen_addresses=127.0.0.1", "-k", str(folder), "-c", "fsync=off",
                      "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                     folder / "postgres.log", user=user)
        try:
            dsn = f"host=127.0.0.1 port={port} user=focustune password={password} dbname=postgres"
            assert wait_until(lambda: _accepts(psycopg, dsn), 60), (folder / "postgres.log").read_text()[-2000:]
            with psycopg.connect(dsn, autocommit=True) as connection:
                for name in databases:
                    connection.execute(f'CREATE DATABASE "{name}"')
            yield {name: f"postgresql+psycopg://focustune:{password}@127.0.0.1:{port}/{name}" for name in databases}
        finally:
            _stop_postgres(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _initdb(folder: Path, password: str, user: str | None) -> None:
    (folder / "password").write_text(password + "\n")
    if user:
        for path in (folder, folder / "password"):
            shutil.chown(path, user, user)
    done = subprocess.run([str(POSTGRES_BIN / "initdb"), "-D", str(folder / "data"), "-U", "focustune",
                           "--pwfile", str(folder / "password"), "--auth", "scram-sha-256", "-E", "UTF8",
                           "--no-sync"], capture_output=True, text=True, user=user, cwd=folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _accepts(psycopg, dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def _stop_postgres(proc: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown (clients disconnected, then a clean stop); then its group."""
    try:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    stop_group(proc)


@contextmanager
def s3_endpoint(folder: Path, bucket: str = "focustune", check_credentials: bool = False):
    """An S3-compatible endpoint (moto's server, in memory) on a free port of 127.0.0.1 with ``bucket``
    created; yields (endpoint URL, bucket, environment for clients: endpoint, dummy credentials,
    region, no shared AWS config files). ``check_credentials``: after the bucket's creation the server
    checks every request's credentials, as a real store does (moto's INITIAL_NO_AUTH_ACTION_COUNT), so
    the dummy ones are refused. Skips where moto or boto3 is absent."""
    import pytest

    pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "focustune-test",
           "AWS_SECRET_ACCESS_KEY": "focustune-test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups
           "AWS_CONFIG_FILE": str(folder / "no-aws-config"),  # nothing from the user's ~/.aws
           "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials")}
    proc = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], folder / "moto.log",
                 env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"} if check_credentials else None)
    try:
        assert wait_until(lambda: _port_open(port), 60), (folder / "moto.log").read_text()[-2000:]
        s3_client(env).create_bucket(Bucket=bucket)
        yield endpoint, bucket, env
    finally:
        stop_group(proc)


def s3_client(env: dict):
    """A boto3 S3 client for the environment ``s3_endpoint`` yields."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


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


class TcpProxy:
    """A TCP forwarder on a free port of 127.0.0.1 to ``target_port``, which can be made unreachable:
    :meth:`pause` stops listening (clients get "connection refused") and cuts every open connection;
    :meth:`resume` listens on the same port again. The service behind it keeps its state."""

    def __init__(self, target_port: int):
        import threading

        self.port, self.target = free_port(), target_port
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def resume(self) -> None:
        import threading

        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def pause(self) -> None:
        listener, self._listener = self._listener, None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if listener is not None:
            listener.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (src, dst):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            with self._lock:
                self._open -= {src, dst}


@contextmanager
def tcp_proxy(target_port: int):
    """A :class:`TcpProxy` to ``target_port`` on 127.0.0.1, listening; closed when the block ends."""
    proxy = TcpProxy(target_port)
    proxy.resume()
    try:
        yield proxy
    finally:
        proxy.pause()
