"""Running ``focustune sweep`` as a measured subprocess: wall time, stdout timeline, memory, per-trial cost.

Used by ``sweep_efficiency.py`` and ``scaling.py``. Each sweep runs in its own temporary folder with
its own SQLite MLflow store and Tune storage, on a private local Ray (``RAY_ADDRESS`` removed).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common

SYSTEM_TITLES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def private_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.REPO_ROOT / "platform"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return "?"


def private_and_rss(pid: int | str = "self") -> dict[str, int]:
    """RSS and its private part (USS: pages no other process maps), from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * 1024
    return {"rss": fields.get("Rss", 0), "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


class MemoryMonitor(threading.Thread):
    """Samples the RSS of a process tree (from /proc): the root (driver), Ray trial workers (also their
    private memory, USS: RSS counts the shared libraries and object-store pages every worker maps)."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.stop_event = threading.Event()
        self.driver_peak = 0
        self.worker_peak: dict[int, tuple[int, str]] = {}  # pid -> (peak RSS, title at peak)
        self.worker_uss_peak: dict[int, int] = {}  # pid -> peak private memory (USS)
        self.total_peak = 0
        self.max_workers_at_once = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            total, workers = 0, 0
            for pid in process_tree(self.pid):
                rss = rss_bytes(pid)
                if rss is None:
                    continue
                total += rss
                if pid == self.pid:
                    self.driver_peak = max(self.driver_peak, rss)
                    continue
                name = title(pid)
                if name.startswith("ray::") and name not in SYSTEM_TITLES:
                    workers += 1
                    if rss > self.worker_peak.get(pid, (0, ""))[0]:
                        self.worker_peak[pid] = (rss, name)
                    try:
                        uss = private_and_rss(pid)["uss"]
                    except OSError:
                        continue
                    self.worker_uss_peak[pid] = max(self.worker_uss_peak.get(pid, 0), uss)
            self.total_peak = max(self.total_peak, total)
            self.max_workers_at_once = max(self.max_workers_at_once, workers)
            self.stop_event.wait(self.interval_s)

    def result(self) -> dict[str, Any]:
        peaks = [rss for rss, _ in self.worker_peak.values()]
        return {"driver_peak_rss_mb": self.driver_peak / 2**20,
                "worker_peak_rss_mb": common.summary([p / 2**20 for p in peaks]) if peaks else None,
                "worker_peak_uss_mb": (common.summary([p / 2**20 for p in self.worker_uss_peak.values()])
                                       if self.worker_uss_peak else None),
                "worker_processes": len(peaks), "worker_titles": sorted({t for _, t in self.worker_peak.values()}),
                "max_trial_workers_at_once": self.max_workers_at_once,
                "process_tree_peak_rss_mb": self.total_peak / 2**20}


def run_logged(command: list[str], cwd: Path, monitor_memory: bool = True) -> dict[str, Any]:
    """Run ``command``; its wall time, stdout lines with their arrival times, memory peaks."""
    tick = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=private_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    monitor = MemoryMonitor(process.pid) if monitor_memory else None
    if monitor:
        monitor.start()
    lines = [(time.perf_counter() - tick, line.rstrip("\n")) for line in process.stdout]
    code = process.wait()
    wall = time.perf_counter() - tick
    if monitor:
        monitor.stop_event.set()
        monitor.join()
    if code != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise RuntimeError(f"{' '.join(command)} exited with {code}:\n{tail}")
    return {"wall_s": wall, "lines": lines, "memory": monitor.result() if monitor else None}


def first_line_time(lines: list[tuple[float, str]], prefix: str) -> float | None:
    return next((t for t, line in lines if line.startswith(prefix)), None)


def trial_costs(tracking_uri: str, storage: Path) -> list[dict[str, Any]]:
    """Per search trial: MLflow run wall (driver side, created at trial start, closed at its end),
    training time (sum of its ``epoch_seconds``) and Tune's own ``time_total_s``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="tags.`focustune.kind` = 'trial'", max_results=10_000)
    tune_totals = {}
    for result_file in storage.rglob("result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if rows:
            tune_totals[str(rows[-1].get("trial_id"))] = rows[-1].get("time_total_s")
    costs = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "epoch_seconds")
        trial_id = run.data.tags.get("focustune.trial_id")
        wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None
        train = sum(m.value for m in history)
        costs.append({"trial_id": trial_id, "status": run.info.status, "epochs": len(history),
                      "run_wall_s": wall, "train_s": train, "tune_time_total_s": tune_totals.get(trial_id),
                      "overhead_s": None if wall is None else wall - train})
    return costs


# A comparison launcher: the same CLI with worker reuse switched off, so every trial starts a fresh
# worker process (imports torch, scikit-learn, focustune): what the sweep did before it reused workers.
FRESH_WORKERS_LAUNCHER = """
import sys
import focustune.sweeps.runner as runner
runner.REUSE_WORKERS = False
from focustune.cli import main
sys.exit(main(sys.argv[1:]))
"""
VARIANTS = {"default": ["-m", "focustune.cli"], "fresh_workers": ["-c", FRESH_WORKERS_LAUNCHER]}


def sweep_command(dataset: str, data_dir: str, trials: int, epochs: int, concurrency: int,
                  cpus_per_trial: float, gpus_per_trial: float, workdir: Path, variant: str = "default") -> list[str]:
    return [sys.executable, *VARIANTS[variant], "sweep", "--dataset", dataset, "--data-dir", data_dir,
            "--methods", "erm", "--trials", str(trials), "--epochs", str(epochs), "--seeds", "0",
            "--max-concurrent", str(concurrency), "--cpus-per-trial", str(cpus_per_trial),
            "--gpus-per-trial", str(gpus_per_trial), "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--storage", str(workdir / "runs"), "--experiment", "bench"]


def run_sweep(dataset: str, data_dir: str, trials: int, epochs: int, concurrency: int,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, variant: str = "default") -> dict[str, Any]:
    """One ``focustune sweep`` in a fresh temporary folder; wall, phases of its timeline, trial costs."""
    with tempfile.TemporaryDirectory(prefix="focustune_bench_sweep_") as folder:
        workdir = Path(folder)
        logged = run_logged(sweep_command(dataset, data_dir, trials, epochs, concurrency, cpus_per_trial,
                                          gpus_per_trial, workdir, variant), workdir)
        costs = trial_costs(f"sqlite:///{workdir / 'mlflow.db'}", workdir / "runs")
    lines = logged["lines"]
    started = first_line_time(lines, "sweep of")  # printed after imports and the dataset load
    # after ray.init, ray.put, MLflow parents
    searching = next((t for t, line in lines if "studies at once" in line), None)
    last_trial = max((t for t, line in lines if line.startswith(f"[{dataset}/erm] search")), default=None)
    overheads = [c["overhead_s"] for c in costs if c["overhead_s"] is not None]
    search_s = (last_trial or 0) - (searching or 0)
    # A trial slot is busy from the end of the previous trial to the end of this one: the MLflow run
    # (opened when Tune starts the trial) misses the worker process start that comes before it.
    slot_s = search_s * min(concurrency, trials) / trials
    mean_train = statistics.fmean(c["train_s"] for c in costs) if costs else 0.0
    return {
        "variant": variant, "trials": trials, "epochs": epochs, "concurrency": concurrency,
        "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, "wall_s": logged["wall_s"],
        "memory": logged["memory"],
        "timeline_s": {"imports_and_data": started, "ray_init_put_and_mlflow_parent": (searching or 0) - (started or 0),
                       "search": search_s,
                       "after_last_trial": logged["wall_s"] - (last_trial or logged["wall_s"])},
        "trial_costs": costs,
        "trial_overhead_s": common.summary(overheads) if overheads else None,
        "trial_train_s": common.summary([c["train_s"] for c in costs]) if costs else None,
        "slot_s_per_trial": slot_s, "slot_overhead_s_per_trial": slot_s - mean_train,
        # inside the trial function: validation, checkpoints, reports, first-epoch imports
        "in_trial_overhead_s": common.summary([c["tune_time_total_s"] - c["train_s"] for c in costs
                                               if c["tune_time_total_s"] is not None]) if costs else None,
        "finished_trials": sum(c["status"] == "FINISHED" for c in costs),
        "stdout_tail": [line for _, line in lines[-8:]],
    }


def fixed_costs() -> dict[str, float]:
    """Seconds of a sweep's fixed costs, measured alone in a fresh process: importing Ray, starting
    and stopping a private local Ray the way the sweep does, and creating a fresh SQLite MLflow store."""
    code = ("import time, json; t = time.perf_counter(); "
            "from focustune.sweeps.cluster import init_ray; import ray; imported = time.perf_counter(); "
            "init_ray(None); started = time.perf_counter(); ray.shutdown(); stopped = time.perf_counter(); "
            "from mlflow import MlflowClient; m0 = time.perf_counter(); "
            "MlflowClient(tracking_uri='sqlite:///mlflow.db').create_experiment('probe'); m1 = time.perf_counter(); "
            "print(json.dumps({'ray_import_s': imported - t, 'ray_init_s': started - imported, "
            "'ray_shutdown_s': stopped - started, 'mlflow_import_s': m0 - stopped, 'mlflow_sqlite_store_s': m1 - m0}))")
    with tempfile.TemporaryDirectory(prefix="focustune_bench_ray_") as folder:
        logged = run_logged([sys.executable, "-c", code], Path(folder), monitor_memory=False)
    out = json.loads(logged["lines"][-1][1])
    out["process_wall_s"] = logged["wall_s"]
    return out
