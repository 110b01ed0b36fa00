"""A private one-node Slurm cluster for tests: munged, slurmctld and slurmd on 127.0.0.1, with their
key, socket, configuration, state, spool and logs in one temporary folder.

Nothing uses the machine's own Slurm or MUNGE configuration: clients reach this cluster through
``SLURM_CONF`` (which ``env`` holds). The daemons run as root in the foreground, each in its own
session, and are stopped by the process groups started here, after any job still queued or running
has been cancelled. Slurm has no option to listen on one address only, so its two ports (free ones,
chosen here) are open on every interface of the machine while the test runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port, pids_with, start, stop_group, wait_until

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
_install_tried = False


@dataclass(frozen=True)
class SlurmCluster:
    folder: Path  # the cluster's own folder (short, under /tmp: socket paths must stay under 107 bytes)
    env: dict[str, str]  # what a client needs: SLURM_CONF
    cpus: int

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """A client command (sbatch, squeue, ...) against this cluster."""
        return subprocess.run(list(args), env={**os.environ, **self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)


def ensure_slurm() -> None:
    """Debian's slurm-wlm and munge, installed once (as root with apt-get) when absent; else a skip."""
    global _install_tried
    if all(shutil.which(tool) for tool in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get") or _install_tried:
        pytest.skip("Slurm and MUNGE are not installed (Debian: apt-get install slurm-wlm munge)")
    _install_tried = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            pytest.skip(f"could not install Slurm: {' '.join(cmd)} failed")
    if not all(shutil.which(tool) for tool in DAEMONS):
        pytest.skip("Slurm installed, but its commands are not on PATH")


@contextmanager
def slurm_cluster():
    """A running one-node cluster (node ``localhost`` at 127.0.0.1, partition ``debug``) whose CPUs
    are this machine's; yields a :class:`SlurmCluster`. Skips where Slurm cannot run (not root, no
    Slurm and no way to install it)."""
    if os.geteuid() != 0:
        pytest.skip("the private Slurm cluster runs its daemons as root")
    ensure_slurm()
    folder = Path(tempfile.mkdtemp(prefix="ft-slurm-", dir="/tmp"))
    cluster = SlurmCluster(folder, {"SLURM_CONF": str(folder / "slurm.conf")}, os.cpu_count() or 1)
    try:
        with ExitStack() as daemons:
            daemons.enter_context(_munged(folder))
            _write_conf(cluster)
            for name, cmd in (("slurmctld", ["slurmctld", "-D", "-i"]),
                              ("slurmd", ["slurmd", "-D", "-N", "localhost"])):
                proc = start(cmd, folder / "log" / f"{name}.out", env=cluster.env)
                daemons.callback(stop_group, proc)
            daemons.callback(_cancel_jobs, cluster)  # runs first: jobs end before their daemons
            idle = lambda: cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"  # noqa: E731
            assert wait_until(idle, 60, interval=1), _logs(folder)
            yield cluster
    finally:
        for pid in pids_with(str(folder)):  # anything a job left behind that names our folder
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _munged(folder: Path):
    """munged with its own key; its socket folder must be reachable by all, its key folder by root only."""
    keys, run = folder / "munge", folder / "run"
    for path, mode in ((folder, 0o755), (keys, 0o700), (run, 0o755), (folder / "log", 0o755)):
        path.mkdir(exist_ok=True)
        path.chmod(mode)
    subprocess.run(["mungekey", "--create", f"--keyfile={keys / 'munge.key'}"], check=True, capture_output=True)
    socket = run / "munge.socket"
    proc = start(["munged", "--foreground", f"--socket={socket}", f"--key-file={keys / 'munge.key'}",
                  f"--pid-file={run / 'munged.pid'}", f"--log-file={folder / 'log' / 'munged.log'}",
                  f"--seed-file={keys / 'munged.seed'}"], folder / "log" / "munged.out")
    try:
        def works() -> bool:
            return subprocess.run(["munge", "-n", "-S", str(socket)], capture_output=True).returncode == 0

        assert wait_until(works, 30), (folder / "log" / "munged.out").read_text()[-2000:]
        yield socket
    finally:
        stop_group(proc)


def _write_conf(cluster: SlurmCluster) -> None:
    folder = cluster.folder
    for name in ("state", "spool"):
        (folder / name).mkdir()
    lines = [
        "ClusterName=focustune-test", "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={folder / 'run' / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill",
        "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "ReturnToService=2", "MailProg=/bin/true",
        "SlurmdParameters=config_overrides",  # the node counts as configured, whatever its topology
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cluster.cpus} RealMemory=1000 State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    ]
    (folder / "slurm.conf").write_text("\n".join(lines) + "\n")


def _cancel_jobs(cluster: SlurmCluster) -> None:
    """Cancel every job of this private cluster (all started by this test) and wait until none is left."""
    jobs = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
    if jobs:
        cluster.run("scancel", "--full", *jobs)
        wait_until(lambda: not cluster.run("squeue", "-h", "-o", "%i").stdout.split(), 90, interval=1)


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text()[-1500:] for p in sorted((folder / "log").glob("*.out")))
