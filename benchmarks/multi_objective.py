"""Several objectives against one, at equal trials: ``focustune tune`` on a real MedMNIST set with
``--objectives balanced_acc,worst_class_recall`` (multi-objective TPE; and with per-study MOASHA)
against the default single-objective search for balanced accuracy.

Each arm is one ``tune`` command (its own folder, SQLite MLflow store and private local Ray) with the
same method, trial budget, epochs, data and search seed. Read back from MLflow, per arm:

- the hypervolume of its Pareto front of (validation balanced accuracy, validation worst-class
  recall), reference point (0, 0), by Optuna's ``compute_hypervolume`` (``optuna._hypervolume``, the
  helper Optuna's own hypervolume plot uses; it minimises, so the values are negated); and the
  hypervolume of the same front points' TEST values (the front is chosen on validation);
- the worst-class recall reached at the same balanced accuracy: the single-objective arm's best
  validation balanced accuracy ``b`` is the reference, and each arm's best validation worst-class
  recall among its full-budget trials with validation balanced accuracy >= ``b - tolerance``
  (and that trial's test values);
- the epochs trained (early stopping saves some) and the wall time.

One search seed per arm: the numbers show what the platform does on this set, not a significance test.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import sweeptools

sys.path.insert(0, str(common.REPO_ROOT / "analysis"))

OBJECTIVES = ("balanced_acc", "worst_class_recall")
ARMS = {"single (balanced_acc)": [],
        "multi (TPE)": ["--objectives", ",".join(OBJECTIVES)],
        "multi + MOASHA": ["--objectives", ",".join(OBJECTIVES), "--scheduler", "asha"]}


def tune_command(args: Any, experiment: str, uri: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "focustune.cli", "tune", "--method", args.method, "--dataset", args.dataset,
            "--data-dir", args.data_dir, "--trials", str(args.trials), "--epochs", str(args.epochs), "--seeds", "0",
            "--max-concurrent", str(args.concurrency), "--cpus-per-trial", "1", "--tracking-uri", uri,
            "--experiment", experiment, *extra]


def trial_points(uri: str, experiment: str) -> tuple[list[dict[str, float]], float]:
    """Every full-budget search trial's validation and test values of the objectives; epochs trained."""
    from focustune_analysis import collect_runs

    runs = collect_runs(experiment, uri).runs
    trials = runs[runs["kind"] == "trial"]
    full = trials[(trials["status"] == "FINISHED") & ~trials["stopped_early"]]
    points = [{**{f"val_{m}": float(r[f"best_val_{m}"]) for m in OBJECTIVES},
               **{f"test_{m}": float(r[f"test_{m}"]) for m in OBJECTIVES}} for _, r in full.iterrows()]
    return points, float(trials["epochs_done"].fillna(0).sum())


def hypervolume(vectors: list[tuple[float, float]]) -> float:
    """Hypervolume (maximised objectives in [0, 1], reference point (0, 0)) of the vectors' front."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    if not vectors:
        return 0.0
    return float(compute_hypervolume(-np.asarray(vectors, dtype=float), np.zeros(2)))


def front(points: list[dict[str, float]]) -> list[dict[str, float]]:
    from focustune.objectives import Point, pareto_front

    found = [Point(str(i), {m: p[f"val_{m}"] for m in OBJECTIVES}) for i, p in enumerate(points)]
    return [points[int(p.key)] for p in pareto_front(found, OBJECTIVES)]


def at_balanced_accuracy(points: list[dict[str, float]], reference: float, tolerance: float) -> dict[str, float] | None:
    """The trial with the best validation worst-class recall among those within ``tolerance`` of
    ``reference`` validation balanced accuracy (or above it)."""
    near = [p for p in points if p["val_balanced_acc"] >= reference - tolerance]
    return max(near, key=lambda p: (p["val_worst_class_recall"], p["val_balanced_acc"]), default=None)


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--method", default="erm")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="'the same balanced accuracy': within this of the single-objective arm's best")
    args = parser.parse_args()
    common.require_data(args.data_dir, args.dataset)
    if args.quick:
        args.trials, args.epochs = 3, 2
    load = common.header(f"Several objectives vs one: {args.method} on {args.dataset}, {args.trials} trials x "
                         f"{args.epochs} epochs per arm, {args.concurrency} at once")
    arms: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="focustune-mo-") as folder:
        for name, extra in ARMS.items():
            cwd = Path(folder) / f"arm{len(arms)}"
            cwd.mkdir()
            uri = f"sqlite:///{cwd / 'mlflow.db'}"
            tick = time.perf_counter()
            sweeptools.run_logged(tune_command(args, "mo", uri, extra), cwd, monitor_memory=False)
            points, epochs = trial_points(uri, "mo")
            arms[name] = {"wall_s": time.perf_counter() - tick, "epochs_trained": epochs, "points": points}
            print(f"{name}: {len(points)} full-budget trials, {epochs:.0f} epochs, {arms[name]['wall_s']:.0f} s",
                  flush=True)
    reference = max((p["val_balanced_acc"] for p in arms["single (balanced_acc)"]["points"]), default=0.0)
    rows = []
    for name, arm in arms.items():
        on_front = front(arm["points"])
        arm["hypervolume_val"] = hypervolume([(p["val_balanced_acc"], p["val_worst_class_recall"]) for p in on_front])
        arm["hypervolume_test"] = hypervolume([(p["test_balanced_acc"], p["test_worst_class_recall"])
                                               for p in on_front])
        arm["front_size"] = len(on_front)
        arm["at_reference"] = at_balanced_accuracy(arm["points"], reference, args.tolerance)
        near = arm["at_reference"] or {}
        rows.append({"arm": name, "trials (full)": f"{args.trials} ({len(arm['points'])})",
                     "epochs": f"{arm['epochs_trained']:.0f}", "front": str(len(on_front)),
                     "HV val": f"{arm['hypervolume_val']:.4f}", "HV test (val front)": f"{arm['hypervolume_test']:.4f}",
                     "worst recall @ bal_acc (val)": _pair(near, "val"), "same point on test": _pair(near, "test"),
                     "wall s": f"{arm['wall_s']:.0f}"})
    print(f"\nreference: the single-objective arm's best validation balanced accuracy {reference:.4f} "
          f"(tolerance {args.tolerance}); cells 'worst-class recall (balanced accuracy)'\n")
    print(common.table(rows, list(rows[0])))
    common.write_result("multi_objective", args, {
        "settings": {k: getattr(args, k)
                     for k in ("dataset", "method", "trials", "epochs", "concurrency", "tolerance")},
        "reference_balanced_acc": reference, "arms": arms, "table": rows}, load_before=load)
    return 0


def _pair(point: dict[str, float], split: str) -> str:
    if not point:
        return "none"
    return f"{point[f'{split}_worst_class_recall']:.4f} ({point[f'{split}_balanced_acc']:.4f})"


if __name__ == "__main__":
    raise SystemExit(main())
