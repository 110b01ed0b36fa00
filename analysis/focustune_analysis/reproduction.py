"""Summaries of the reproduction suite (``benchmarks/reproduce``): runs of ``focustune train
--output-json``, grouped by setting and arm, paired by seed.

Per setting: test metrics of every arm (mean ± SE, t-based 95% interval), paired tests of every arm
against the claim's baseline arm (Holm-corrected), mean validation-accuracy curves and epochs to a
target accuracy, and, for phased methods, which stage the selected epoch came from and the test
metrics of the best epoch before and after the mechanism acted (``stages``). Per claim: the paired
comparisons that decide its verdict (``claim_tests``: :data:`reproduction_verdicts.FAMILIES`), each
tested at alpha on its own: a claim is their conjunction, an intersection-union test, whose level is
alpha without any correction (Holm stays where a table answers several questions at once, e.g. every
arm against the baseline). Each comparison carries the effect its paper states (or a margin stated in
the protocol), the minimal effect detectable at its n (80% power) and the seeds that would resolve
the stated effect.

Epochs to a target accuracy read the *test* accuracy after every epoch where the runs recorded it
(``test_monitor``: recorded beside the run by the reproduction harness, never used for selection),
else the validation curve; each table says which (``curve``). A run that never reaches the target
counts, everywhere (the table's mean and the paired tests), as one epoch past its last (censored: it
understates how much later it would have been, so a test of "fewer epochs" stays conservative); the
table says how many seeds were censored. Beside it, the area under the accuracy curve (the mean
accuracy over the epochs) needs no target.

Intervals (:data:`INTERVAL`): the 95% Student-t interval over seeds (n - 1 degrees of freedom),
clipped to the range of the quantity: [0, 1] for accuracies, recalls, AUC and errors, [-1, 1] for
their paired differences, 1 to one past the last epoch for epochs to a target (the true value lies in
that range, so clipping loses no coverage); a
clipped estimate says so (``clipped``), and ``half_width`` keeps the unclipped half-width.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from focustune.records import BEST_PHASE
from focustune.tracking_schema import METRIC_NAMES, RECORD_METRICS
from focustune_analysis.stats import (
    Estimate,
    estimate,
    holm,
    minimal_detectable_effect,
    paired_test,
    seeds_to_resolve,
    small_sample_note,
)

#: The scalar test metrics of a ``focustune train --output-json`` record.
SCALAR_RECORD_METRICS = tuple(m for m in RECORD_METRICS if m in METRIC_NAMES)
#: The metrics each arm is tested on against the baseline arm (paired by seed).
TESTED_METRICS = ("acc", "balanced_acc")
INTERVAL = ("95% Student-t interval over seeds, clipped to the quantity's range ([0, 1] for accuracies, recalls "
            "and errors; [-1, 1] for their paired differences; 1 to one past the last epoch for epochs to a target, "
            "and that width either way for their differences)")
UNIT, DIFFERENCE = (0.0, 1.0), (-1.0, 1.0)


def _interval(e: Estimate, bounds: tuple[float, float] | None) -> dict[str, Any]:
    """``low``/``high`` of ``e`` clipped to ``bounds`` (None: unbounded), with the unclipped half-width."""
    low, high = e.low, e.high
    if bounds is not None and not math.isnan(low):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    clipped = not math.isnan(e.low) and (low, high) != (e.low, e.high)
    return {"low": low, "high": high, "half_width": (e.high - e.low) / 2, "clipped": clipped}


def _est(values: Sequence[float], bounds: tuple[float, float] | None = UNIT) -> dict[str, Any]:
    e: Estimate = estimate(list(values))
    return {"n": e.n, "mean": e.mean, "se": e.se, **_interval(e, bounds)}


def group_runs(records: list[dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """setting -> arm -> seed -> run record (``protocol`` holds the setting and arm labels)."""
    groups: dict[str, dict[str, dict[int, dict]]] = {}
    for record in records:
        setting, arm = record["protocol"]["setting"], record["protocol"]["arm"]
        groups.setdefault(setting, {}).setdefault(arm, {})[int(record["seed"])] = record
    return groups


def arm_table(runs: dict[int, dict]) -> dict[str, Any]:
    """Test metrics of one arm over its seeds, its test error, and its selected epochs."""
    ordered = [runs[s] for s in sorted(runs)]
    table: dict[str, Any] = {"seeds": sorted(runs),
                             "test": {m: _est([r["test"][m] for r in ordered]) for m in SCALAR_RECORD_METRICS}}
    table["test"]["error"] = _est([1 - r["test"]["acc"] for r in ordered])
    table["test"]["per_class_recall"] = [_est(v) for v in zip(*(r["test"]["per_class_recall"] for r in ordered))]
    table["best_epoch"] = [r["best_epoch"] for r in ordered]
    table[BEST_PHASE] = [r[BEST_PHASE] for r in ordered]
    table["seconds"] = _est([r["seconds"] for r in ordered], bounds=None)
    if all("selected" in r.get("protocol", {}) for r in ordered):
        table["grid_choice"] = [r["protocol"]["selected"] for r in ordered]
    if all(spread := [weight_spread(r) for r in ordered]):
        table["weight_std"] = _est(spread, bounds=(0.0, math.inf))  # a spread is never negative
    if all(r.get("stages") for r in ordered):
        table["stages"] = stage_table(ordered)
    return table


def weight_spread(record: dict) -> float | None:
    """Mean over epochs of the per-epoch spread of the sample weights (LOW's ``weight_std``; None: none)."""
    found = [h["method"]["weight_std"] for h in record["history"] if "weight_std" in (h.get("method") or {})]
    return float(np.mean(found)) if found else None


def stage_table(runs: list[dict]) -> dict[str, Any]:
    """Phased runs: how many selected an epoch before the mechanism acted, and both stages' test metrics."""
    out: dict[str, Any] = {"selected_before_mechanism": sum(
        r["best_epoch"] == r["stages"]["before_mechanism"]["best_epoch"]
        for r in runs if "before_mechanism" in r["stages"])}
    for stage in ("before_mechanism", "after_mechanism"):
        found = [r["stages"][stage] for r in runs if stage in r["stages"]]
        out[stage] = {"best_epoch": [s["best_epoch"] for s in found],
                      "test": {m: _est([s["test"][m] for s in found]) for m in SCALAR_RECORD_METRICS},
                      "per_class_recall": [_est(v) for v in zip(*(s["test"]["per_class_recall"] for s in found))]}
    return out


def paired(arms: dict[str, dict[int, dict]], baseline: str, value: Any) -> list[dict[str, Any]]:
    """Every arm against ``baseline`` on ``value(run)``, paired by seed; Holm-corrected t-test p-values."""
    rows = []
    for arm, runs in arms.items():
        if arm == baseline or baseline not in arms:
            continue
        seeds = sorted(set(runs) & set(arms[baseline]))
        test = paired_test([value(runs[s]) for s in seeds], [value(arms[baseline][s]) for s in seeds])
        rows.append({"arm": arm, "versus": baseline, **_test_row(test), "note": small_sample_note(test.n)})
    for row, adjusted in zip(rows, holm([r["t_p"] for r in rows])):
        row["t_p_holm"] = float(adjusted)
    return rows


#: The record key of the per-epoch test metrics (``benchmarks/reproduce/monitor.py``) and the curve names.
TEST_MONITOR, TEST_CURVE, VAL_CURVE = "test_monitor", "test (test_monitor, never used for selection)", "validation"


def accuracy_curve(record: dict, curve: str, metric: str = "acc") -> list[tuple[int, float]]:
    """(epoch, ``metric``) after every epoch of one run, on the test split (``TEST_CURVE``) or validation."""
    if curve == TEST_CURVE:
        return [(e["epoch"], e[metric]) for e in record[TEST_MONITOR]["epochs"]]
    return [(h["epoch"], h["val"][metric]) for h in record["history"]]


def reach_curve(arms: dict[str, dict[int, dict]]) -> str:
    """The curve epochs to a target are read from: the test monitor when every run recorded it."""
    monitored = all(TEST_MONITOR in r for runs in arms.values() for r in runs.values())
    return TEST_CURVE if monitored else VAL_CURVE


def first_epoch_at(record: dict, target: float, curve: str) -> int | None:
    """The first epoch whose accuracy on ``curve`` reaches ``target`` (None: never)."""
    return next((epoch for epoch, value in accuracy_curve(record, curve) if value >= target), None)


def epoch_range(runs: Iterable[dict], curve: str) -> tuple[float, float]:
    """Where epochs to a target lie: from 1 to one past the longest run's last epoch (a censored run)."""
    return 1.0, float(max(len(accuracy_curve(r, curve)) for r in runs) + 1)


def epochs_or_censored(record: dict, target: float, curve: str) -> int:
    """Epochs to ``target``; a run that never reached it counts one epoch past its last (censored)."""
    reached = first_epoch_at(record, target, curve)
    return reached if reached is not None else len(accuracy_curve(record, curve)) + 1


def baseline_target(arms: dict[str, dict[int, dict]], claim: Any) -> float | None:
    """Where a claim sets no target accuracy but ``target_epoch``: the baseline arm's mean accuracy after that
    epoch, on :func:`reach_curve` (None: no such epoch or arm)."""
    epoch, runs, curve = getattr(claim, "target_epoch", None), arms.get(claim.baseline, {}), reach_curve(arms)
    values = [dict(accuracy_curve(r, curve)).get(epoch) for r in runs.values()] if epoch else []
    return float(np.mean(values)) if values and None not in values else None


def curves(runs: dict[int, dict], curve: str = VAL_CURVE, metric: str = "acc") -> list[dict[str, float]]:
    """Mean ``metric`` per epoch on ``curve`` (validation, or the test monitor) over seeds, with its SE."""
    series = [[value for _, value in accuracy_curve(runs[s], curve, metric)] for s in sorted(runs)]
    length = min(len(s) for s in series)
    return [{"epoch": e + 1, **_est([s[e] for s in series])} for e in range(length)]


def epochs_to(runs: dict[int, dict], target: float, curve: str = VAL_CURVE) -> dict[str, Any]:
    """First epoch whose accuracy on ``curve`` reaches ``target``, per seed (None: never reached); the
    estimate counts a seed that never reached it as :func:`epochs_or_censored` does, as the paired tests do."""
    per_seed = {s: first_epoch_at(runs[s], target, curve) for s in sorted(runs)}
    reached = [e for e in per_seed.values() if e is not None]
    return {"target": target, "curve": curve, "per_seed": per_seed, "reached": len(reached),
            "censored": len(per_seed) - len(reached),
            **_est([epochs_or_censored(runs[s], target, curve) for s in sorted(runs)],
                   bounds=epoch_range(runs.values(), curve))}


def curve_area(record: dict, curve: str) -> float:
    """The area under the accuracy curve per epoch (the mean accuracy over the run's epochs): how fast
    and how far a run learns, with no target to choose."""
    return float(np.mean([value for _, value in accuracy_curve(record, curve)]))


def probe_effect(arms: dict[str, dict[int, dict]]) -> list[dict[str, Any]]:
    """Arms differing only in where errors are measured (``... val)`` vs ``... probe)``): probe - val."""
    rows = []
    for arm in arms:
        if arm.endswith("on probe)"):
            twin = arm.replace("on probe)", "on val)")
            if twin in arms:
                rows += [{**row, "metric": m} for m in TESTED_METRICS
                         for row in paired({arm: arms[arm], twin: arms[twin]}, twin, lambda r, m=m: r["test"][m])]
    return rows


def augmented_class(record: dict) -> int | None:
    """The class mdgan augmented with GAN images (its first chosen class), from its epoch diagnostics."""
    chosen = [h["method"]["classes"] for h in record["history"] if (h.get("method") or {}).get("classes")]
    return int(chosen[-1][0]) if chosen else None


def gan_quality(record: dict, key: str) -> float | None:
    """mdgan's quality check of its first augmented class (``generated_as_class`` or ``real_as_class``:
    the share of GAN / real images the pretrained classifier labels as the class), from its diagnostics."""
    found = [h["method"][key][0] for h in record["history"] if (h.get("method") or {}).get(key)]
    return float(found[-1]) if found else None


def augmented_classes(arms: dict[str, dict[int, dict]], baseline: str) -> dict[str, Any]:
    """mdgan arms: test recall of the augmented class at the best epoch before fine-tuning, after it,
    and in the baseline arm's run of the same seed; paired tests of after - before and after - baseline."""
    out = {}
    for arm, runs in arms.items():
        seeds = [s for s in sorted(runs) if augmented_class(runs[s]) is not None and runs[s].get("stages")]
        if not seeds:
            continue
        cls = {s: augmented_class(runs[s]) for s in seeds}
        # (B023: the lambda reads this iteration's cls, and is called in it)
        recall = lambda r, s, stage: r["stages"][stage]["test"]["per_class_recall"][cls[s]]  # noqa: E731, B023
        before = [recall(runs[s], s, "before_mechanism") for s in seeds]
        after = [recall(runs[s], s, "after_mechanism") for s in seeds]
        base = [arms[baseline][s]["test"]["per_class_recall"][cls[s]] for s in seeds if s in arms.get(baseline, {})]
        row: dict[str, Any] = {"classes": cls, "before": _est(before), "after": _est(after),
                               "after_minus_before": _test_row(paired_test(after, before)),
                               **{key: _est([gan_quality(runs[s], key) for s in seeds])
                                  for key in ("generated_as_class", "real_as_class")}}
        if len(base) == len(seeds):
            row.update(baseline=_est(base), after_minus_baseline=_test_row(paired_test(after, base)))
        out[arm] = row
    return out


def _test_row(test: Any, bounds: tuple[float, float] | None = DIFFERENCE) -> dict[str, Any]:
    """A paired test's difference, its interval (clipped to ``bounds``; None: unbounded), p-values,
    which test gave ``t_p`` and the minimal effect detectable at its n (80% power, the observed spread)."""
    d = test.difference
    bounds = _interval(d, bounds)
    sd = d.se * math.sqrt(d.n) if d.n >= 2 else math.nan
    return {"n": test.n, "diff": d.mean, "diff_se": d.se, "diff_sd": sd, "diff_low": bounds["low"],
            "diff_high": bounds["high"], "diff_half_width": bounds["half_width"], "t_p": test.t_p,
            "wilcoxon_p": test.wilcoxon_p, "test": test.test, "mde": minimal_detectable_effect(sd, d.n)}


def claim_value(metric: str, record: dict, cls: int | None, stage: str | None = None,
                reach: tuple[float, str] | None = None) -> float:
    """A run's test ``metric``: ``acc``, ``error`` (1 - acc), ``augmented_recall`` (recall of class ``cls``),
    ``epochs_to_target`` (``reach``: the target and the curve; censored as :func:`epochs_or_censored`) or
    ``curve_area`` (on ``reach``'s curve); at the best epoch of ``stage`` (e.g. ``after_mechanism``) when
    given, else at the selected epoch."""
    if metric == "epochs_to_target":
        assert reach is not None
        return float(epochs_or_censored(record, *reach))
    if metric == "curve_area":
        assert reach is not None
        return curve_area(record, reach[1])
    test = record["stages"][stage]["test"] if stage else record["test"]
    if metric == "augmented_recall":
        return test["per_class_recall"][cls]
    return 1 - test["acc"] if metric == "error" else test[metric]


def difference_bounds(metric: str, runs: list[dict], curve: str) -> tuple[float, float]:
    """The range of a paired difference of ``metric``: [-1, 1] for accuracies and recalls, and for epochs
    to a target plus or minus the width of :func:`epoch_range`."""
    if metric != "epochs_to_target":
        return DIFFERENCE
    low, high = epoch_range(runs, curve)
    return low - high, high - low


def claim_tests(family: Sequence[Any], groups: dict[str, dict[str, dict[int, dict]]],
                targets: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Each comparison of ``family`` (``reproduction_verdicts.Comparison``) in every setting holding both arms
    (or its own ``setting``), paired by seed, each on its own (no correction: the claim is their conjunction).
    ``augmented_recall`` is the recall of the class the arm's run of that seed augmented, in both runs (seeds
    without one are left out); ``epochs_to_target`` uses the setting's target (``targets``) on :func:`reach_curve`.
    Each row carries the comparison's stated effect and the seeds that would resolve it."""
    rows = []
    for setting, arms in groups.items():
        target, curve = (targets or {}).get(setting), reach_curve(arms)
        reach = (target if target is not None else math.nan, curve)
        for c in family:
            if c.metric == "epochs_to_target" and target is None:
                continue
            if c.arm not in arms or c.versus not in arms or c.setting not in (None, setting):
                continue
            mine, theirs = arms[c.arm], arms[c.versus]
            classes = {s: augmented_class(mine[s]) for s in mine}
            seeds = [s for s in sorted(set(mine) & set(theirs))
                     if (c.metric != "augmented_recall" or classes[s] is not None)
                     and (c.stage is None or c.stage in (mine[s].get("stages") or {}))]
            test = paired_test([claim_value(c.metric, mine[s], classes[s], c.stage, reach) for s in seeds],
                               [claim_value(c.metric, theirs[s], classes[s], c.versus_stage, reach) for s in seeds])
            row = {"setting": setting, "arm": c.arm, "versus": c.versus, "metric": c.metric, "stage": c.stage,
                   "versus_stage": c.versus_stage, "lower_is_better": c.lower_is_better, "effect": c.effect,
                   "effect_source": c.effect_source,
                   **_test_row(test, difference_bounds(c.metric, [*mine.values(), *theirs.values()], curve))}
            rows.append({**row, "seeds_to_resolve": seeds_to_resolve(row["diff_sd"], c.effect)})
    return rows


def summarise_setting(arms: dict[str, dict[int, dict]], baseline: str, target: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"arms": {arm: arm_table(runs) for arm, runs in arms.items()},
                           "versus_baseline": {m: paired(arms, baseline, lambda r, m=m: r["test"][m])
                                               for m in TESTED_METRICS},
                           "curve": (curve := reach_curve(arms)),
                           "curves": {arm: curves(runs, curve) for arm, runs in arms.items()},
                           "probe_vs_val": probe_effect(arms), "augmented": augmented_classes(arms, baseline)}
    if target is not None:
        out["epochs_to_target"] = {arm: epochs_to(runs, target, curve) for arm, runs in arms.items()}
    if curve == TEST_CURVE:
        out["curve_area"] = {arm: _est([curve_area(r, curve) for r in runs.values()]) for arm, runs in arms.items()}
    return out


def summarise_claim(claim: Any, records: list[dict], out: Path, host: dict[str, Any], quick: bool = False,
                    planned: int | None = None) -> dict:
    """Summarise a claim's runs into ``summary.json``, ``summary.md`` and ``curves.png`` in ``out``;
    ``planned``: the protocol's run count, when only part of it has run (an interim summary says so)."""
    from focustune_analysis import reproduction_verdicts

    groups = group_runs(records)
    targets = {s.label: s.target_acc or claim.target_acc or baseline_target(groups.get(s.label, {}), claim)
               for s in claim.settings}
    settings = {label: summarise_setting(arms, claim.baseline, targets.get(label)) for label, arms in groups.items()}
    tests = claim_tests(reproduction_verdicts.FAMILIES.get(claim.name, ()), groups, targets)
    extra_tests = claim_tests(reproduction_verdicts.EXTRAS.get(claim.name, ()), groups, targets)
    for row in (*tests, *extra_tests):
        row["grade"] = reproduction_verdicts.grade_comparison(row)
    verdict, line = reproduction_verdicts.verdict(claim, settings, tests)
    summary = {"claim": claim.name, "paper": claim.paper, "statement": claim.claim,
               "fidelity": [asdict(row) for row in claim.fidelity],
               "quick": quick, "host": host, "runs": len(records), "planned": planned or len(records),
               "interval": INTERVAL, "claim_tests": tests, "extra_tests": extra_tests,
               "selection_metrics": sorted({r["params"].get("selection_metric", "balanced_acc") for r in records}),
               "wall_s": round(sum(r["protocol"].get("wall_s", 0.0) for r in records)), "commands": sorted(
                   {"focustune " + " ".join(r["protocol"]["argv"]) for r in records}),
               "settings": settings, "verdict": verdict, "verdict_line": line, **claim.extra}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=1))
    (out / "summary.md").write_text(reproduction_verdicts.markdown(summary))
    _curves_figure(settings, out / reproduction_verdicts.FIGURE, claim.name)
    return summary


def _finite(value: Any) -> Any:
    """NaN/inf -> None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _curves_figure(settings: dict[str, Any], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(settings), 4))
    for i, (label, setting) in enumerate(settings.items()):
        ax = fig.add_subplot(1, len(settings), i + 1)
        for arm, points in setting["curves"].items():
            epochs = [p["epoch"] for p in points]
            mean = np.array([p["mean"] for p in points])
            se = np.nan_to_num(np.array([p["se"] for p in points], dtype=float))
            ax.plot(epochs, mean, marker="o", label=arm)
            ax.fill_between(epochs, mean - se, mean + se, alpha=0.2)
        reach = next(iter((setting.get("epochs_to_target") or {}).values()), None)
        if reach:
            ax.axhline(reach["target"], color="grey", linestyle="--", label=f"target {reach['target']:.0%}")
        curve = setting["curve"].split(" (")[0]
        ax.set(title=f"{title}: {label}", xlabel="epoch", ylabel=f"{curve} accuracy (mean ± SE)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
