"""The private local Ray a sweep starts on one machine: its servers listen on 127.0.0.1 only."""

from __future__ import annotations

import os

import pytest


def test_single_machine_mode_holds_only_while_the_private_ray_starts(monkeypatch):
    """While ``init_ray`` starts a private Ray: the variable its servers inherit is off, and so is Ray's
    constant (read at import, which may have come first); afterwards both are as before, so a
    ``ray start`` this process runs later is not made single-machine."""
    from ray._private import ray_constants

    from focustune.sweeps.cluster import SINGLE_MACHINE, _single_machine

    monkeypatch.delenv(SINGLE_MACHINE, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with _single_machine(True):
        assert os.environ[SINGLE_MACHINE] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert SINGLE_MACHINE not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before
    with _single_machine(False):  # joining a cluster: nothing changes
        assert SINGLE_MACHINE not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before


@pytest.mark.slow
def test_a_sweep_through_the_command_line_listens_on_loopback_only(tmp_path):
    """``focustune sweep`` as a user runs it: the runner and Tune import ray before the private Ray starts,
    and still every socket its processes listen on is on 127.0.0.1 (Ray used to swap 127.0.0.1 for the
    machine's address when the loopback switch came after that import)."""
    from servers import family, listening_addresses, start, stop_group, sweep_command, tiny_npz, wait_until

    data = tiny_npz(tmp_path / "tiny.npz")
    proc = start(sweep_command("--dataset", str(data), "--methods", "erm", "--trials", "2", "--epochs", "2",
                               "--experiment", "loopback"), tmp_path / "sweep.log", cwd=tmp_path,
                 env={"HOME": str(tmp_path)})
    seen: set[str] = set()

    def listening() -> bool:
        seen.update(listening_addresses(family(proc.pid)))
        return proc.poll() is not None

    try:
        wait_until(listening, 400, interval=0.2)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert seen and seen <= {"127.0.0.1", "::1"}, seen
