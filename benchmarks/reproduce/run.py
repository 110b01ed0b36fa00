"""Reproduce one published claim with the platform: ``python benchmarks/reproduce/run.py CLAIM [--quick]``.

Runs the claim's recorded protocol (``protocols.py``): every (setting, arm, seed) is one ``focustune
train ... --output-json`` run, executed in this process through the CLI's own entry point. A run
whose JSON exists is not run again, so an interrupted suite resumes. The runs are then summarised
by ``focustune_analysis.reproduction`` (mean ± SE, t-based 95% interval, paired tests, curves) into
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "platform"), str(REPO / "analysis"), str(HERE)]

from protocols import CLAIMS, Claim  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DEFAULT_RESULTS = HERE / "results"
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
    return parser.parse_args(argv)


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


def run_claim(claim: Claim, args: argparse.Namespace, out: Path) -> int:
    """Run the claim's missing runs, then summarise all of them; the exit status of the first failure, else 0."""
    from focustune.cli import main as focustune_main

    folder = out / claim.name / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    directory = data_dir(claim, args)
    for setting, arm, seed in ([] if args.summarise_only else claim.runs(args.quick)):
        path = run_file(folder, claim.settings.index(setting), claim.arms.index(arm), seed)
        if path.is_file():
            continue
        argv = [*claim.argv(setting, arm, seed, directory, args.quick), "--output-json", str(path)]
        print(f"[{claim.name}] {setting.label} / {arm.label} / seed {seed}: focustune {' '.join(argv)}", flush=True)
        began = time.monotonic()
        code = focustune_main(argv)
        if code != 0:
            return code
        record = json.loads(path.read_text())
        record["protocol"] = {"setting": setting.label, "arm": arm.label, "argv": argv,
                              "wall_s": round(time.monotonic() - began, 1)}
        path.write_text(json.dumps(record))
    summarise(claim, folder, out / claim.name, args.quick)
    if out == DEFAULT_RESULTS:
        write_readme_results(out)
    return 0


def summarise(claim: Claim, runs: Path, out: Path, quick: bool) -> None:
    from focustune_analysis.reproduction import summarise_claim

    records = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    host = {"cpu": cpu_name(), "python": platform.python_version(),
            "precision": sorted({"float32" if r["params"].get("amp") is False else "amp (bf16 where native)"
                                 for r in records})}
    summary = summarise_claim(claim, records, out, host=host, quick=quick)
    print(f"[{claim.name}] {summary['verdict_line']}\n[{claim.name}] wrote {out / 'summary.json'}, "
          f"{out / 'summary.md'}", flush=True)


def write_readme_results(results: Path) -> None:
    """Replace the generated block of ``README.md`` with every claim's summary found in ``results``."""
    from focustune_analysis.reproduction_verdicts import readme_block

    summaries = [json.loads(p.read_text()) for name in SUITE_ORDER if (p := results / name / "summary.json").is_file()]
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
        code = run_claim(CLAIMS[name], args, out)
        if code != 0:
            print(f"[{name}] a run failed (exit {code}); its files so far are in {out / name}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
