"""Reproduce one published claim with the platform: ``python benchmarks/reproduce/run.py CLAIM [--quick]``.

Runs the claim's recorded protocol (``protocols.py``): every (setting, arm, seed) is one ``focustune
train`` run, executed in this process through the CLI's own entry point (through the Python API with
the per-epoch test monitor, ``monitor.py``, for claims that record it); an arm with a grid runs each
point (``runs/grid/``) and keeps the best on validation. A run's JSON is written, atomically, only
when it is done, and a run whose JSON exists is not run again: an interrupted suite resumes, and
``--max-runs N`` runs a long protocol in parts. Once every run is there, the runs are summarised by
``focustune_analysis.reproduction`` (mean ± SE, t-based 95% interval, paired tests, curves) into
``summary.json``, ``summary.md`` and figures next to the run files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "platform"), str(REPO / "analysis"), str(HERE)]

from focustune.files import write_atomic  # noqa: E402
from monitor import train_monitored  # noqa: E402
from protocols import CLAIMS, Arm, Claim, Setting  # noqa: E402
from tuned import TRIALS, run_sweep, tune_claim  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DEFAULT_RESULTS = HERE / "results"
#: The tuned, equal-budget runs' folder inside a results folder.
TUNED = "tuned"
#: The machine of the runs written before run files recorded their CPU (the README's hardware section).
EARLIER_CPU = "AMD EPYC (with AVX512-BF16), 2 cores (not in the run file)"
#: ``all`` runs the cheapest claims first.
SUITE_ORDER = ("imet-pneumonia", "learn2mix-mnist", "low-mnist", "mdgan-medmnist")
#: The part of README.md that run.py writes (everything between these lines).
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claim", choices=[*CLAIMS, "all"], help="the claim to reproduce (all: every claim in turn)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1-2 epochs; numbers not meaningful")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/reproduce/results, "
                                                 "--quick: a temporary folder)")
    parser.add_argument("--medmnist-dir", type=Path, default=SHARED / "medmnist", help="MedMNIST .npz folder")
    parser.add_argument("--torchvision-dir", type=Path, default=Path(tempfile.gettempdir()) / "focustune_torchvision",
                        help="writable torchvision data folder; MNIST is copied there from ../shared when missing")
    parser.add_argument("--summarise-only", action="store_true", help="summarise the existing run files only")
    parser.add_argument("--tuned", action="store_true", help="the tuned, equal-budget verdict: every arm's "
                        "hyperparameters searched by focustune sweep (the same trials per arm), then the claim's "
                        "seeds with the chosen values (results/tuned/<claim>)")
    parser.add_argument("--trials", type=int, default=TRIALS, help=f"--tuned: search trials per arm (default {TRIALS})")
    parser.add_argument("--max-runs", type=int, metavar="N", help="train at most N runs (grid points count one "
                                                                  "each), then stop: a long protocol in parts")
    parser.add_argument("--shard", type=shard, metavar="K/N", help="train only the runs at places K, K+N, ... of "
                        "the protocol (K from 0): N processes side by side, each its own K, share the runs; the "
                        "last to finish writes the summary (--tuned: once every search is done)")
    args = parser.parse_args(argv)
    if args.max_runs is not None and args.max_runs < 1:
        parser.error("--max-runs must be at least 1")
    return args


def shard(text: str) -> tuple[int, int]:
    """``K/N`` as (K, N), with 0 <= K < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N (e.g. 0/2 and 1/2)")
    return int(index), int(count)


def data_dir(claim: Claim, args: argparse.Namespace) -> str:
    """The data folder of the claim's runs (MNIST copied to a writable place: torchvision unpacks it)."""
    if claim.data == "medmnist":
        return str(args.medmnist_dir)
    target = args.torchvision_dir / "MNIST"
    source = SHARED / "torchvision" / "MNIST"
    if not target.is_dir() and source.is_dir():
        shutil.copytree(source, target)
    return str(args.torchvision_dir)


def run_file(folder: Path, setting_index: int, arm_index: int, seed: int) -> Path:
    return folder / f"s{setting_index}_a{arm_index}_seed{seed}.json"


def train_cli(argv: list[str], output: Path) -> int:
    """``focustune train ARGV --output-json OUTPUT`` in this process; its exit status."""
    from focustune.cli import main as focustune_main

    return focustune_main([*argv, "--output-json", str(output)])


def comparable(argv: list[str]) -> tuple[str, ...]:
    """A recorded command line without the values that depend on the machine (data and output paths)."""
    drop = {i + 1 for i, word in enumerate(argv) if word in ("--data-dir", "--output-json")}
    return tuple(word for i, word in enumerate(argv) if i not in drop and word != "--output-json")


def validation_score(record: dict) -> float:
    """The run's selection metric on validation at its selected epoch (-inf when undefined)."""
    value = record["val"].get(record["params"].get("selection_metric", "balanced_acc"))
    return float("-inf") if value is None else float(value)


class ClaimRuns:
    """The runs of one claim in ``out/<claim>/runs``: one JSON file per (setting, arm, seed), written when done."""

    def __init__(self, claim: Claim, args: argparse.Namespace, out: Path, execute: Callable | None = None):
        self.claim, self.quick, self.budget, self.shard = claim, args.quick, args.max_runs, args.shard
        self.folder = out / claim.name / "runs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.directory = data_dir(claim, args)
        self.execute = execute or (train_monitored if claim.test_monitor else train_cli)
        self.trained = 0

    def path(self, setting: Setting, arm: Arm, seed: int) -> Path:
        return run_file(self.folder, self.claim.settings.index(setting), self.claim.arms.index(arm), seed)

    def stale(self) -> list[Path]:
        """Run files (grid points included) that another protocol wrote: their command differs from this one's."""
        found = []
        for setting, arm, seed in self.claim.runs(self.quick):
            path = self.path(setting, arm, seed)
            expected = {comparable(self.claim.argv(setting, arm, seed, self.directory, self.quick, point))
                        for point in arm.points(self.quick) or (None,)}
            for written in [path, *sorted((self.folder / "grid").glob(f"{path.stem}_g*.json"))]:
                recorded = json.loads(written.read_text())["protocol"]["argv"] if written.is_file() else None
                if recorded is not None and comparable(recorded) not in expected:
                    found.append(written)
        return found

    def missing(self, shard: tuple[int, int] | None = None) -> list[tuple[Setting, Arm, int]]:
        """The runs not done yet, seed by seed (every setting and arm of a seed before the next seed), so a
        protocol run in parts has paired runs of all arms to compare at every stop; with ``shard`` (K, N) those
        at places K, K+N, ... of that order (fixed places, so side-by-side shards never share a run)."""
        runs = sorted(self.claim.runs(self.quick), key=lambda run: run[2])
        if shard is not None:
            runs = runs[shard[0]::shard[1]]
        return [run for run in runs if not self.path(*run).is_file()]

    def run_missing(self) -> int:
        """Train the missing runs of this shard (at most ``--max-runs``); the exit status of the first failure,
        else 0."""
        for setting, arm, seed in self.missing(self.shard):
            if arm.points(self.quick):
                code = self._run_grid(setting, arm, seed)
            else:
                code = self._train(self.claim.argv(setting, arm, seed, self.directory, self.quick),
                                   self.path(setting, arm, seed), {"setting": setting.label, "arm": arm.label})
            if code != 0 or self.exhausted:
                return code
        return 0

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.trained >= self.budget

    def _train(self, argv: list[str], path: Path, protocol: dict) -> int:
        """One training run; its record, with ``protocol``, lands in ``path`` only when it is complete."""
        print(f"[{self.claim.name}] {protocol['setting']} / {protocol['arm']}: focustune {' '.join(argv)}", flush=True)
        began, partial = time.monotonic(), path.with_name(path.name + ".part")
        code = self.execute(argv, partial)
        self.trained += 1
        if code != 0:
            return code
        record = json.loads(partial.read_text())
        record["protocol"] = {**protocol, "argv": argv, "wall_s": round(time.monotonic() - began, 1),
                              "cpu": cpu_name()}
        write_atomic(path, json.dumps(record))
        partial.unlink()
        return 0

    def _run_grid(self, setting: Setting, arm: Arm, seed: int) -> int:
        """Every grid point of ``arm`` (each its own file under ``grid/``), then the best on validation
        as the arm's run, with every point's validation score in its ``protocol.grid``."""
        final = self.path(setting, arm, seed)
        points = arm.points(self.quick)
        paths = [self.folder / "grid" / f"{final.stem}_g{k}.json" for k in range(len(points))]
        paths[0].parent.mkdir(exist_ok=True)
        for point, path in zip(points, paths):
            if path.is_file():
                continue
            if self.exhausted:
                return 0
            argv = self.claim.argv(setting, arm, seed, self.directory, self.quick, point)
            code = self._train(argv, path, {"setting": setting.label, "arm": arm.label, "grid_point": point})
            if code != 0:
                return code
        records = [json.loads(path.read_text()) for path in paths]
        scores = [validation_score(r) for r in records]
        best = scores.index(max(scores))
        grid = [{"point": p, "val_score": v, "file": f"grid/{path.name}", "wall_s": r["protocol"]["wall_s"]}
                for p, v, path, r in zip(points, scores, paths, records)]
        chosen = records[best]
        chosen["protocol"] = {**chosen["protocol"], "selected": points[best], "grid": grid,
                              "wall_s": round(sum(g["wall_s"] for g in grid), 1)}
        write_atomic(final, json.dumps(chosen))
        return 0


def run_claim(claim: Claim, args: argparse.Namespace, out: Path, execute: Callable | None = None) -> int:
    """Run the claim's missing runs, then summarise them once all are there; the exit status of the
    first failure, else 0."""
    runs = ClaimRuns(claim, args, out, execute)
    if stale := runs.stale():
        print(f"[{claim.name}] {len(stale)} run files in {runs.folder} come from another protocol (e.g. "
              f"{stale[0].name}): delete them, or use another --out", file=sys.stderr)
        return 2
    if not args.summarise_only:
        code = runs.run_missing()
        if code != 0:
            return code
        left = len(runs.missing())
        if left:
            total = len(claim.runs(args.quick))
            print(f"[{claim.name}] {total - left} of {total} runs done; run again to go on (the summary "
                  "follows the last run; --summarise-only gives an interim one)", flush=True)
            return 0
    summarise(claim, runs.folder, out / claim.name, args.quick)
    if out in (DEFAULT_RESULTS, DEFAULT_RESULTS / TUNED):
        write_readme_results(DEFAULT_RESULTS)
    return 0


def run_tuned(claim: Claim, args: argparse.Namespace, out: Path) -> int:
    """The tuned, equal-budget verdict: every arm's search (resumed; finished ones kept), then the claim's runs
    with the chosen values in ``out/tuned``, graded by the same rules."""
    tuned, code = tune_claim(claim, data_dir(claim, args), out / TUNED, args.trials,
                             execute=None if args.summarise_only or args.shard else run_sweep)
    if tuned is None:
        if args.shard and not args.summarise_only:
            print(f"[{claim.name} tuned] --shard shares the runs, not the searches: run the searches first "
                  "(the same command without --shard)", file=sys.stderr)
            return 2
        return code
    return run_claim(tuned, args, out / TUNED)


def summarise(claim: Claim, runs: Path, out: Path, quick: bool) -> None:
    from focustune_analysis.reproduction import summarise_claim

    records = [labelled(claim, p) for p in sorted(runs.glob("*.json"))]
    if not records:
        print(f"[{claim.name}] no finished run in {runs} yet: nothing to summarise", flush=True)
        return
    cpus = sorted({r["protocol"].get("cpu", EARLIER_CPU) for r in records})
    host = {"cpu": "; ".join(cpus), "python": platform.python_version(),
            "precision": sorted({"float32" if r["params"].get("amp") is False else "amp (bf16 where native)"
                                 for r in records})}
    summary = summarise_claim(claim, records, out, host=host, quick=quick, planned=len(claim.runs(quick)))
    print(f"[{claim.name}] {summary['verdict_line']}\n[{claim.name}] wrote {out / 'summary.json'}, "
          f"{out / 'summary.md'}", flush=True)


def labelled(claim: Claim, path: Path) -> dict:
    """A run file's record with its setting and arm labelled as the protocol names them now (by the file's
    indices: ``s<i>_a<j>_seed<k>``), so a renamed arm keeps its runs (their command lines are checked by ``stale``)."""
    record = json.loads(path.read_text())
    setting, arm = (int(part[1:]) for part in path.stem.split("_")[:2])
    record["protocol"] = {**record["protocol"], "setting": claim.settings[setting].label, "arm": claim.arms[arm].label}
    return record


def write_readme_results(results: Path) -> None:
    """Replace the generated block of ``README.md`` with every claim's summary found in ``results``."""
    from focustune_analysis.reproduction_verdicts import readme_block

    summaries = [json.loads(p.read_text()) for name in SUITE_ORDER for p in (results / name / "summary.json",
                 results / TUNED / name / "summary.json") if p.is_file()]
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + readme_block(summaries) + text[end:])


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and its core count."""
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.is_file() else []
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="focustune_reproduce_")) if args.quick else DEFAULT_RESULTS)
    for name in (SUITE_ORDER if args.claim == "all" else [args.claim]):
        code = run_tuned(CLAIMS[name], args, out) if args.tuned else run_claim(CLAIMS[name], args, out)
        if code != 0:
            print(f"[{name}] a run failed (exit {code}); its files so far are in {out / name}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
