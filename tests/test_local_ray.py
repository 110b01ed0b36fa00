"""The private local Ray a sweep starts on one machine: its servers listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import json, os, sys
from focustune.sweeps.cluster import SINGLE_MACHINE, init_ray
init_ray(None)
import psutil, ray
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
me = psutil.Process()
family = {me.pid, *(p.pid for p in me.children(recursive=True))}
listening = sorted({c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in family})
print(json.dumps({"listening": listening, "left": os.environ.get(SINGLE_MACHINE)}))
ray.shutdown()
"""


@pytest.mark.slow
def test_private_local_ray_listens_on_loopback_only_and_leaves_the_environment_alone(tmp_path):
    env = {"PYTHONPATH": str(REPO / "platform"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["listening"] and set(seen["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, seen
    assert seen["left"] is None  # a `ray start` this process runs later is not made single-machine


@pytest.mark.slow
def test_a_sweep_through_the_command_line_listens_on_loopback_only(tmp_path):
    """The CLI path imports ray (and Tune) before it starts Ray: every listening socket of the sweep's
    processes (driver, GCS, raylet, runtime-env agent, workers) is still on 127.0.0.1."""
    from servers import (command_line, family, listening_addresses, start, stop_group, sweep_command, tiny_npz,
                         wait_until)

    tiny = tiny_npz(tmp_path / "tiny.npz")
    args = ["--dataset", str(tiny), "--methods", "erm", "--trials", "2", "--seeds", "0", "--epochs", "2",
            "--set", "batch_size=16", "--cpus-per-trial", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    log = tmp_path / "sweep.log"
    driver = start(sweep_command(*args), log, cwd=tmp_path)
    try:
        training = lambda: any(command_line(p).startswith("ray::ImplicitFunc") for p in family(driver.pid))  # noqa: E731
        assert wait_until(lambda: training() or driver.poll() is not None, 300), log.read_text()[-3000:]
        listening = listening_addresses(family(driver.pid))
    finally:
        stop_group(driver)
    names = {name for _, name in listening}
    assert {"gcs_server", "raylet"} <= names and any("RuntimeEnv" in n for n in names), listening
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, sorted(listening)
