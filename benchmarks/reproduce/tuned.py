"""The "tuned, equal budget" verdict of a claim: every arm (the method and each baseline) gets its
learning rate and its own hyperparameters chosen by focustune's own search, the same number of
trials per arm, then the chosen configuration runs on the claim's seeds and is graded by the same
rules as the as-published runs.

The search is the ordinary ``focustune sweep`` (Optuna, ASHA early stopping, selection on validation
by the runs' selection metric), one sweep per (setting, arm), run as its own process: the method's
search space (``search_spaces/<method>.yaml`` over the shared ranges) is searched, the protocol's
other options (model, optimiser, epochs, ...) stay fixed, and a grid the as-published arm tried
(LOW's lambda) is left to the search. A key that defines an arm (``Arm.defines``: LOW's
``lam_unit``, the SELU head of mdgan's ``spinal_selu`` arm, the class weights of learn2mix's
class-weighted focal baseline) stays fixed where the space ranges over it. A setting that draws its
data per run is tuned on data seed 0, a draw none of the claim's seeds uses. Each sweep keeps its
state (``--resume``) and writes its chosen configuration (``chosen.yaml``); a finished sweep is not
run again. The chosen values then become the arm's options and the claim's runs go through the same
resumable runner (``results/tuned/<claim>/runs``), so the tuned protocol runs in parts as the
as-published one does.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols import Arm, Claim, Setting, merged_sets

if TYPE_CHECKING:
    from focustune.spaces import SearchSpace

#: Search trials per arm (the same for every arm of a claim), unless ``--trials`` says otherwise.
TRIALS = 16
#: Data seed of the tuning sweeps of a setting that draws its data per run (the claim's seeds start at 1).
TUNING_DATA_SEED = 0
CHOSEN = "chosen.yaml"
#: The arms' own search space files (``Arm.space``).
SPACES = Path(__file__).resolve().parent / "spaces"


def space_file(arm: Arm) -> Path | None:
    """The arm's own search space file, or None for its method's (``search_spaces/<method>.yaml``)."""
    return SPACES / arm.space if arm.space else None


def search_space(arm: Arm) -> SearchSpace:
    """The arm's search space (its own file or its method's, over the shared ranges)."""
    from focustune.methods import get_method
    from focustune.spaces import load_space

    return load_space(get_method(arm.method), space_file(arm))


def searched_keys(arm: Arm) -> set[str]:
    """The hyperparameters the arm's search space searches."""
    return set(search_space(arm).dimensions)


def tuned_keys(arm: Arm) -> set[str]:
    """The hyperparameters the arm's search ranges over: its search space less the keys that define the arm."""
    return searched_keys(arm) - set(arm.defines)


def fixed_sets(claim: Claim, arm: Arm) -> list[str]:
    """The protocol's ``--set`` options of ``arm`` that its search does not range over."""
    searched = tuned_keys(arm)
    sets = merged_sets([*claim.common, *arm.options])
    pairs = [(sets[i], sets[i + 1]) for i in range(0, len(sets), 2)]
    return [word for flag, item in pairs if item.partition("=")[0] not in searched for word in (flag, item)]


def sweep_argv(claim: Claim, setting: Setting, arm: Arm, folder: Path, data_dir: str, trials: int) -> list[str]:
    """The ``focustune sweep`` command line of one arm's search (resumed when its state exists)."""
    data_seed = ("--data-seed", str(TUNING_DATA_SEED)) if setting.data_seed_per_run else ()
    resume = ("--resume",) if any((folder / "state").rglob("sweep.json")) else ()
    return ["sweep", "--methods", arm.method, "--dataset", setting.dataset, "--data-dir", data_dir,
            *setting.options, *data_seed, "--trials", str(trials), "--epochs", str(setting.epochs or claim.epochs),
            "--seeds", "0", "--scheduler", "asha", "--storage", str(folder / "state"), "--experiment", "tuning",
            "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--config-out", str(folder / CHOSEN),
            *(("--space", f"{arm.method}={space_file(arm)}") if arm.space else ()), *fixed_sets(claim, arm), *resume]


def run_sweep(argv: list[str]) -> int:
    """``focustune ARGV`` in its own process (each sweep starts and stops its own local Ray)."""
    code = "import sys; from focustune.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path[:3], os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, check=False).returncode


def chosen(folder: Path, arm: Arm) -> dict[str, Any]:
    """The searched hyperparameters of the arm's chosen configuration (``values``, the runs' options), those
    that act (``acting``: less a conditional key whose condition fails, e.g. LOW's gamma unless
    ``base_loss=focal``, which keeps its default), and where they came from."""
    from focustune.run_config import read_run_config

    config = read_run_config(folder / CHOSEN)
    searched = tuned_keys(arm)
    values = {k: v for k, v in config.params.items() if k in searched}
    dimensions = search_space(arm).dimensions
    acting = {k: v for k, v in values.items() if dimensions[k].applies(config.params)}
    return {"values": values, "acting": acting, "source": config.source}


def tune_claim(claim: Claim, data_dir: str, out: Path, trials: int,
               execute: Callable[[list[str]], int] | None = run_sweep) -> tuple[Claim | None, int]:
    """Run (or resume) every arm's search; the claim with each arm's chosen values as its options (and
    the search budgets in ``extra["tuning"]``), or None with the exit status of the first failed sweep
    (``execute`` None: run no search, and None, 0 while one is not done). An arm ``tuned_as`` another
    runs with that arm's chosen values (in the same setting) and has no search of its own."""
    per_arm: dict[str, dict[str, tuple[str, ...]]] = {}
    tuning = []
    for i, setting in enumerate(claim.settings):
        picks: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # label -> (chosen, its tuning record)
        for j in sorted(range(len(claim.arms)), key=lambda j: bool(claim.arms[j].tuned_as)):  # sources first
            arm = claim.arms[j]
            if arm.settings and setting.label not in arm.settings:
                continue
            if arm.tuned_as:
                source, record = picks[arm.tuned_as]
                keys = tuned_keys(arm)
                picked = {"values": {k: v for k, v in source["values"].items() if k in keys},
                          "acting": {k: v for k, v in source["acting"].items() if k in keys}}
                row = _row(claim, setting, arm, 0, [], picked["acting"],
                           **{"as": arm.tuned_as, "sweep": record["sweep"]})
            else:
                folder = out / claim.name / "sweeps" / f"s{i}_a{j}"
                code = _search(claim, setting, arm, folder, data_dir, trials, execute)
                if code is not None:
                    return None, code
                picked = chosen(folder, arm)
                row = _row(claim, setting, arm, trials, sorted(tuned_keys(arm)), picked["acting"],
                           source=picked["source"], sweep=str(folder.relative_to(out)))
            values = tuple(word for key, value in picked["values"].items() for word in ("--set", f"{key}={value}"))
            per_arm.setdefault(arm.label, {})[setting.label] = (*fixed_sets(claim, arm), *values)
            picks[arm.label] = (picked, row)
            tuning.append(row)
    arms = tuple(dataclasses.replace(arm, options=(), quick_options=(), grid=(), quick_grid=None,
                                     per_setting=tuple(per_arm.get(arm.label, {}).items()))
                 for arm in claim.arms)
    return dataclasses.replace(claim, arms=arms, common=(), extra={**claim.extra, "tuning": tuning}), 0


def _row(claim: Claim, setting: Setting, arm: Arm, trials: int, searched: list[str], acting: dict[str, Any],
         **where: Any) -> dict[str, Any]:
    """One arm's tuning record: its budget, searched keys, the chosen values that act, and where they came from."""
    return {"setting": setting.label, "arm": arm.label, "method": arm.method, "trials": trials,
            "epochs": setting.epochs or claim.epochs, "searcher": "optuna (TPE)", "scheduler": "asha",
            "searched": searched, "chosen": acting, **where}


def _search(claim: Claim, setting: Setting, arm: Arm, folder: Path, data_dir: str, trials: int,
            execute: Callable[[list[str]], int] | None) -> int | None:
    """Run the arm's search unless its ``chosen.yaml`` exists: None when it is there, else the exit status
    to stop with (0 when ``execute`` is None and the search is not done)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / CHOSEN).is_file():
        return None
    if execute is None:
        print(f"[{claim.name} tuned] the search of {setting.label} / {arm.label} is not done yet: "
              "no tuned summary", flush=True)
        return 0
    argv = sweep_argv(claim, setting, arm, folder, data_dir, trials)
    print(f"[{claim.name} tuned] {setting.label} / {arm.label}: focustune {' '.join(argv)}", flush=True)
    code = execute(argv)
    return None if code == 0 and (folder / CHOSEN).is_file() else (code or 1)
