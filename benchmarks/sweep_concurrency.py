"""A real benchmark sweep on this machine: all studies at once vs one study at a time.

2 datasets (BreastMNIST, the embedded digits-lt) x 3 methods (erm, focal, low), each study a small
search and seed re-runs, on a private local Ray with ``--slots`` concurrent 1-CPU trials. The two
orders alternate over ``--repeats`` rounds, each sweep in a fresh process (its own Ray); the figures
are the sweep's own utilisation record (busy over available slot time between the first trial start
and the last trial end) and the process wall time.

    python benchmarks/sweep_concurrency.py
    python benchmarks/sweep_concurrency.py --quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ORDERS = {"together": False, "one_at_a_time": True}


def worker(order: str, folder: str, settings: dict) -> None:
    """Run one sweep in this process; print its utilisation record as JSON on the last line."""
    import io

    from focustune.sweeps import preflight
    from focustune.sweeps.runner import Sweep
    from focustune.sweeps.spec import DatasetSpec, SweepSpec

    spec = SweepSpec(
        datasets=[DatasetSpec(dataset="breastmnist", data_dir=settings["data_dir"]), DatasetSpec(dataset="digits-lt")],
        methods=settings["methods"], trials=settings["trials"], epochs=settings["epochs"], seeds=settings["seeds"],
        experiment=order, storage=f"{folder}/runs", tracking_uri=f"sqlite:///{folder}/mlflow.db",
        max_concurrent=settings["slots"], fixed={"batch_size": 32}, one_study_at_a_time=ORDERS[order],
        address=settings.get("address"))
    preflight.validate(spec)
    datasets = preflight.load_datasets(spec)
    sweep = Sweep(spec, preflight.study_spaces(spec, list(datasets)), out=io.StringIO())
    sweep.run(datasets)
    print(json.dumps(sweep.state.data["utilisation"]))


def measure(order: str, settings: dict, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--worker", order, folder, json.dumps(settings)],
                              capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{order} sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    return {"order": order, "process_s": wall, "trials_span_s": usage["span_s"], "utilisation": usage["overall"],
            "slots": usage["slots"], "nodes": usage["nodes"]}


def on_two_nodes(settings: dict) -> dict:
    """All studies at once on a local two-node Ray cluster (1 CPU each, token auth, 127.0.0.1)."""
    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    from servers import ray_cluster

    with tempfile.TemporaryDirectory() as folder, ray_cluster(Path(folder)) as (address, env):
        return measure("together", {**settings, "address": address}, env)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
        return
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2, help="concurrent 1-CPU trials (default: 2 cores)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--two-nodes", action="store_true",
                        help="also run all studies at once on a local two-node Ray cluster (1 CPU per node)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.seeds, args.repeats = 2, 2, 1, 1
    common.require_data(args.data_dir, "breastmnist")
    settings = {"data_dir": args.data_dir, "methods": ["erm", "focal", "low"], "trials": args.trials,
                "epochs": args.epochs, "seeds": args.seeds, "slots": args.slots}
    load = common.header("Benchmark sweep (2 datasets x 3 methods): all studies at once vs one at a time")
    rows = []
    for repeat in range(args.repeats):
        orders = list(ORDERS) if repeat % 2 == 0 else list(reversed(ORDERS))
        for order in orders:
            rows.append({"repeat": repeat, **measure(order, settings)})
            print(f"  {rows[-1]}", flush=True)
    summary = []
    for order in ORDERS:
        mine = [r for r in rows if r["order"] == order]
        summary.append({"order": order,
                        "trials span (s)": common.spread(common.summary([r["trials_span_s"] for r in mine]), 1),
                        "process wall (s)": common.spread(common.summary([r["process_s"] for r in mine]), 1),
                        "utilisation": common.spread(common.summary([100 * r["utilisation"] for r in mine]), 1, "%")})
    print(common.table(summary, ["order", "trials span (s)", "process wall (s)", "utilisation"]))
    ratios = [b["trials_span_s"] / a["trials_span_s"]
              for a, b in zip(*([r for r in rows if r["order"] == o] for o in ORDERS))]
    print(f"\none at a time / all at once, trials span: {common.spread(common.summary(ratios), 2, 'x')} "
          f"({args.slots} slots, {args.trials} trials x {args.epochs} epochs, {args.seeds} seeds per study)")
    cluster = None
    if args.two_nodes:
        cluster = on_two_nodes(settings)
        nodes = ", ".join(f"{u:.1%}" for u in cluster["nodes"].values())
        print(f"two-node cluster, all at once: utilisation {cluster['utilisation']:.1%} (per node {nodes}), "
              f"trials span {cluster['trials_span_s']:.1f} s (goal >= 90%)")
    common.write_result("sweep_concurrency", args, {"rows": rows, "span_ratio": ratios, "settings": settings,
                                                    "two_nodes": cluster}, load_before=load)


if __name__ == "__main__":
    main()
