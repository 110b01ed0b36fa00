"""Verdicts of the reproduction suite's claims, and each claim's ``summary.md``.

A verdict is mechanical, from the summarised runs: ``reproduced`` when the claimed effect is there
and significant (Holm-corrected paired t-test p < 0.05; for IMET, our mean accuracy at most
``IMET_TOLERANCE`` below the published one, which lies inside our 95% interval or below our mean),
``partly`` when only its direction is (IMET: the published accuracy inside our interval, or our mean
within the tolerance), ``not reproduced`` otherwise.
"""

from __future__ import annotations

import math
from typing import Any

ALPHA = 0.05
#: IMET: our mean test accuracy may fall this far below the published one and still count.
IMET_TOLERANCE = 0.01
REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"


def _grade(effects: list[tuple[bool, bool]]) -> str:
    """(in the claimed direction, significantly) per comparison -> a verdict."""
    if effects and all(d and s for d, s in effects):
        return REPRODUCED
    return PARTLY if any(d for d, _ in effects) else NOT_REPRODUCED


def _p(value: Any) -> bool:
    return value is not None and isinstance(value, float) and math.isfinite(value) and value < ALPHA


def _fmt(e: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    mean, se, low, high = (e.get(k) for k in ("mean", "se", "low", "high"))
    if mean is None or not math.isfinite(mean):
        return "-"
    if se is None or not math.isfinite(se):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def verdict(claim: Any, settings: dict[str, Any]) -> tuple[str, str]:
    """(verdict, one line saying why) for the claim named ``claim.name``."""
    return {"low-mnist": _low, "learn2mix-mnist": _learn2mix, "imet-pneumonia": _imet,
            "mdgan-medmnist": _mdgan}[claim.name](claim, settings)


def _low(claim: Any, settings: dict[str, Any]) -> tuple[str, str]:
    setting = next(iter(settings.values()))
    errors = {arm: t["test"]["error"] for arm, t in setting["arms"].items()}
    rows = {r["arm"]: r for r in setting["versus_baseline"]["acc"]}
    low_vs = [(errors["low"]["mean"] < errors[other]["mean"],
               _p(rows["low"]["t_p_holm"]) if other == claim.baseline else False) for other in ("erm", "focal")]
    text = ", ".join(f"{arm} {100 * e['mean']:.2f}%" for arm, e in errors.items())
    return _grade(low_vs), f"test error {text} (mean over seeds)"


def _learn2mix(claim: Any, settings: dict[str, Any]) -> tuple[str, str]:
    effects, parts = [], []
    for label, setting in settings.items():
        reach = setting["epochs_to_target"]
        mine = reach["learn2mix"]
        faster = all(_earlier(mine, reach[o]) for o in reach if o != "learn2mix")
        effects.append((faster, False))  # epochs are too coarse for a significance test here
        parts.append(f"{label} ({mine['target']:.0%}): " + ", ".join(f"{arm} {_reach_text(r)}" for arm, r in reach.items()))
    grade = _grade(effects)
    return (PARTLY if grade == REPRODUCED else grade), "epochs to the target validation accuracy: " + "; ".join(parts)


def _earlier(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` reaches the target on more seeds, or on as many and earlier on average."""
    if a["reached"] != b["reached"]:
        return a["reached"] > b["reached"]
    return a["reached"] > 0 and a["mean"] < b["mean"]


def _reach_text(r: dict[str, Any]) -> str:
    n = len(r["per_seed"])
    if not r["reached"]:
        return f"never (0/{n})"
    return f"{r['mean']:.1f} ({r['reached']}/{n} seeds)"


def _imet(claim: Any, settings: dict[str, Any]) -> tuple[str, str]:
    setting = next(iter(settings.values()))
    paper = claim.extra["paper_acc"]
    imet = setting["arms"]["imet (errors on val)"]["test"]["acc"]
    low, high = imet["low"], imet["high"]
    inside = low is not None and math.isfinite(low) and low <= paper <= high
    close = imet["mean"] >= paper - IMET_TOLERANCE
    grade = REPRODUCED if close and (inside or imet["mean"] >= paper) else PARTLY if inside or close else NOT_REPRODUCED
    return grade, f"IMET test accuracy {_fmt(imet)} against the paper's {paper:.3f}"


def _mdgan(claim: Any, settings: dict[str, Any]) -> tuple[str, str]:
    effects, parts = [], []
    for label, setting in settings.items():
        row = setting["augmented"].get("mdgan (worst class on val)")
        if not row:
            continue
        gain = row["after_minus_before"]
        effects.append((gain["diff"] is not None and gain["diff"] > 0, _p(gain["t_p"])))
        versus = row.get("after_minus_baseline", {})
        parts.append(f"{label}: augmented-class test recall {_fmt(row['before'])} before, {_fmt(row['after'])} after "
                     f"fine-tuning, erm {_fmt(row.get('baseline', {}))} (after - erm {versus.get('diff', math.nan):+.3f})")
    return _grade(effects), "; ".join(parts)


# ---------------------------------------------------------------- summary.md and the README block

def readme_block(summaries: list[dict[str, Any]]) -> str:
    """Every claim's summary, one section each (headings demoted), with the command that regenerates it."""
    parts = []
    for summary in summaries:
        text = markdown(summary).replace("\n## ", "\n#### ").replace("# ", "### ", 1)
        parts.append(text + f"\nRegenerate: `python benchmarks/reproduce/run.py {summary['claim']}` "
                            f"(runs whose JSON exists are not re-run; delete `results/{summary['claim']}/runs` "
                            "to start afresh).\n")
    return "\n".join(parts)



def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary['claim']}: {summary['paper']}", "", f"Claim: {summary['statement']}.", "",
             f"Protocol differences: {summary['shortened']}.", "",
             f"**Verdict: {summary['verdict']}**: {summary['verdict_line']}.", "",
             f"Runs: {summary['runs']}, {summary.get('wall_s', 0) / 60:.1f} minutes of wall time in all "
             f"({', '.join(summary['host']['precision'])} on {summary['host']['cpu']}, shared){' (QUICK: not meaningful)' if summary['quick'] else ''}.", ""]
    for label, setting in summary["settings"].items():
        lines += [f"## {label}", "", "| arm | n | test acc | test balanced acc | test error (%) | selected epochs |",
                  "|---|---|---|---|---|---|"]
        for arm, t in setting["arms"].items():
            lines.append(f"| {arm} | {t['test']['acc']['n']} | {_fmt(t['test']['acc'])} | "
                         f"{_fmt(t['test']['balanced_acc'])} | {_fmt(t['test']['error'], 100, 2)} | "
                         f"{', '.join(f'{e} ({p})' for e, p in zip(t['best_epoch'], t['best_phase']))} |")
        lines += ["", "Paired by seed against the baseline (test accuracy; Holm-corrected t-test):", "",
                  "| arm | versus | n | difference [95% CI] | t p | Holm p | Wilcoxon p |", "|---|---|---|---|---|---|---|"]
        lines += [_diff_row(r) for r in setting["versus_baseline"]["acc"]]
        lines.append("")
        lines += _stage_lines(setting) + _reach_lines(setting) + _augmented_lines(setting) + _probe_lines(setting)
    return "\n".join(lines) + "\n"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _diff_row(r: dict[str, Any]) -> str:
    ci = f" [{_num(r['diff_low'])}, {_num(r['diff_high'])}]" if r.get("diff_low") is not None else ""
    return (f"| {r['arm']} | {r['versus']} | {r['n']} | {_num(r['diff'])}{ci} | {_num(r['t_p'])} | "
            f"{_num(r.get('t_p_holm'))} | {_num(r['wilcoxon_p'])} |")


def _stage_lines(setting: dict[str, Any]) -> list[str]:
    rows = [(arm, t["stages"]) for arm, t in setting["arms"].items() if "stages" in t]
    if not rows:
        return []
    lines = ["Phased arms: seeds whose best validation epoch came before the mechanism acted, and the test accuracy "
             "of the best epoch of each stage:", "", "| arm | selected before mechanism | before: test acc | "
             "after: test acc |", "|---|---|---|---|"]
    lines += [f"| {arm} | {s['selected_before_mechanism']} | {_fmt(s['before_mechanism']['test']['acc'])} | "
              f"{_fmt(s['after_mechanism']['test']['acc'])} |" for arm, s in rows]
    return lines + [""]


def _reach_lines(setting: dict[str, Any]) -> list[str]:
    reach = setting.get("epochs_to_target")
    if not reach:
        return []
    target = next(iter(reach.values()))["target"]
    lines = [f"Epochs to {target:.0%} validation accuracy (mean ± SE over the seeds that reached it):", "",
             "| arm | reached | epochs | per seed |", "|---|---|---|---|"]
    lines += [f"| {arm} | {r['reached']}/{len(r['per_seed'])} | {_fmt(r, 1, 1)} | "
              f"{', '.join(str(v) if v is not None else '-' for v in r['per_seed'].values())} |" for arm, r in reach.items()]
    return lines + [""]


def _augmented_lines(setting: dict[str, Any]) -> list[str]:
    if not setting.get("augmented"):
        return []
    lines = ["Test recall of the augmented class (best epoch before fine-tuning, best epoch after it, and the "
             "baseline of the same seed):", "", "| arm | classes | before | after | after - before [95% CI], t p | "
             "baseline | after - baseline [95% CI], t p |", "|---|---|---|---|---|---|---|"]
    for arm, row in setting["augmented"].items():
        gain, versus = row["after_minus_before"], row.get("after_minus_baseline")
        lines.append(f"| {arm} | {', '.join(map(str, row['classes'].values()))} | {_fmt(row['before'])} | "
                     f"{_fmt(row['after'])} | {_test_text(gain)} | {_fmt(row.get('baseline', {}))} | "
                     f"{_test_text(versus) if versus else '-'} |")
    return lines + [""]


def _test_text(t: dict[str, Any]) -> str:
    return f"{_num(t['diff'])} [{_num(t['diff_low'])}, {_num(t['diff_high'])}], p={_num(t['t_p'])}"


def _probe_lines(setting: dict[str, Any]) -> list[str]:
    rows = setting.get("probe_vs_val")
    if not rows:
        return []
    lines = ["Probe split instead of validation (probe - val, paired by seed):", "",
             "| arm | versus | metric | n | difference [95% CI] | t p |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['versus']} | {r['metric']} | {r['n']} | {_num(r['diff'])} "
              f"[{_num(r['diff_low'])}, {_num(r['diff_high'])}] | {_num(r['t_p'])} |" for r in rows]
    return lines + [""]
