"""Verdicts of the reproduction suite's claims, and each claim's ``summary.md``.

A verdict is mechanical, from the summarised runs. Each claim names the paired comparisons that
decide it (:data:`FAMILIES`: an arm against another on a test metric, in every setting); their
t-test p-values are Holm-corrected together, as one family (``claim_tests``). A comparison is

* ``reproduced`` when its difference is in the claimed direction and significant (Holm p < 0.05);
* ``not reproduced`` when its mean difference is not in the claimed direction;
* ``inconclusive`` when the direction holds, it is not significant, and the claim states an effect
  size that the 95% interval of the difference cannot resolve: its half-width exceeds the claimed
  effect (or is undefined), so the data cannot tell the claimed effect from none;
* ``partly`` when the direction holds without significance otherwise (the interval is narrow
  enough to resolve the claimed effect, or the claim states no size).

A claim is the conjunction of its comparisons ("lower error than plain training *and* than focal
loss"): it is reproduced when every comparison is, not reproduced when any comparison goes against
the claimed direction, inconclusive when every comparison is reproduced or inconclusive (at least
one inconclusive), and partly otherwise (every comparison holds its direction, some without
significance). IMET's claim also states an accuracy level: when the paper's accuracy lies above
our 95% interval, a reproduced gain counts as partly. learn2mix's claim is about epochs to a test
accuracy: its comparisons are paired tests of the epochs per seed (a run that never reaches the
target is censored one epoch past its last), read from the test accuracy recorded after every epoch.
"""

from __future__ import annotations

import math
from focustune.records import BEST_PHASE
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05
#: Each claim's figure (``summary.md``'s neighbour): accuracy per epoch of every arm and setting.
FIGURE = "curves.png"
REPRODUCED, PARTLY, INCONCLUSIVE, NOT_REPRODUCED = "reproduced", "partly", "inconclusive", "not reproduced"
IMET_ARM, MDGAN_ARM, MDGAN_CONTROL = "imet (errors on val)", "mdgan (worst class on val)", "erm (SpinalNet, SAM)"
LEARN2MIX_ARM, LEARN2MIX_BASELINES = "learn2mix", ("erm", "focal (class-weighted)", "smote")


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``versus`` (paired by seed) on a test ``metric`` (``acc``, ``error`` or
    ``augmented_recall``: the recall of the class mdgan augmented). ``stage``: the arm's value is
    that of its best epoch after its mechanism acted (``after_mechanism``) rather than its selected one."""

    arm: str
    versus: str
    metric: str
    lower_is_better: bool = False
    stage: str | None = None


#: The comparisons deciding each claim, Holm-corrected as one family. LOW: lower test error than
#: plain training AND than focal loss, for LOW as the paper ran it (arm ``low``: its lambda grid in the
#: units of the authors' code; the arm in our units is in the tables, not in the verdict). learn2mix:
#: fewer epochs to the target test accuracy than classical training, class-weighted focal loss AND
#: SMOTE. IMET: higher test accuracy than erm on the same CNN and budget. mdgan ("balanced performance
#: among the classes and an overall better performance"): the augmented class's test recall AND the
#: overall test accuracy after the mistake-driven fine-tuning (its best fine-tune epoch), each against
#: the equal-budget control (erm with the same head, SAM, learning rate and epochs; not just before vs
#: after fine-tuning, which would credit the GAN with what more epochs give).
FAMILIES: dict[str, tuple[Comparison, ...]] = {
    "low-mnist": (Comparison("low", "erm", "error", lower_is_better=True),
                  Comparison("low", "focal", "error", lower_is_better=True)),
    "learn2mix-mnist": tuple(Comparison(LEARN2MIX_ARM, other, "epochs_to_target", lower_is_better=True)
                             for other in LEARN2MIX_BASELINES),
    "imet-pneumonia": (Comparison(IMET_ARM, "erm", "acc"),),
    "mdgan-medmnist": (Comparison(MDGAN_ARM, MDGAN_CONTROL, "augmented_recall", stage="after_mechanism"),
                       Comparison(MDGAN_ARM, MDGAN_CONTROL, "acc", stage="after_mechanism")),
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def grade_comparison(row: dict[str, Any], claimed_effect: float | None = None) -> str:
    """The grade of one ``claim_tests`` row (``claimed_effect``: the paper's effect size, if it states one)."""
    gain = row["diff"] * (-1 if row.get("lower_is_better") else 1) if _finite(row["diff"]) else math.nan
    if not gain > 0:
        return NOT_REPRODUCED
    if _finite(row.get("t_p_holm")) and row["t_p_holm"] < ALPHA:
        return REPRODUCED
    half = row.get("diff_half_width")
    if claimed_effect is not None and not (_finite(half) and half <= claimed_effect):
        return INCONCLUSIVE
    return PARTLY


def combine(grades: list[str]) -> str:
    """One verdict from the comparisons' grades: the claim holds only as far as each of its parts."""
    if grades and all(g == REPRODUCED for g in grades):
        return REPRODUCED
    if not grades or NOT_REPRODUCED in grades:
        return NOT_REPRODUCED
    if all(g in (REPRODUCED, INCONCLUSIVE) for g in grades):
        return INCONCLUSIVE
    return PARTLY


def _fmt(e: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    mean, se, low, high = (e.get(k) for k in ("mean", "se", "low", "high"))
    if mean is None or not math.isfinite(mean) or e.get("n") == 0:
        return "-"
    if se is None or not math.isfinite(se):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def verdict(claim: Any, settings: dict[str, Any], tests: list[dict[str, Any]]) -> tuple[str, str]:
    """(verdict, one line saying why) for the claim named ``claim.name``; ``tests``: its ``claim_tests`` rows."""
    grade, line = _family(tests, claim.extra.get("claimed_effect"))
    if claim.name == "imet-pneumonia":
        return _imet(claim, settings, grade, line)
    if claim.name == "learn2mix-mnist":
        return grade, f"{line}; {_reach_line(settings)}"
    return grade, line


def _family(tests: list[dict[str, Any]], claimed_effect: float | None) -> tuple[str, str]:
    grades = [grade_comparison(row, claimed_effect) for row in tests]
    if not tests:
        return NOT_REPRODUCED, "no paired runs of the compared arms"
    size = (f"; claimed effect {claimed_effect:.3f}" if claimed_effect is not None
            else "; the claim states no effect size")
    parts = [f"{r['setting']}: {r['arm']}{_stage(r)} - {r['versus']} {_metric_label(r['metric'])} {_num(r['diff'])} "
             f"[{_num(r['diff_low'])}, {_num(r['diff_high'])}], Holm p={_num(r['t_p_holm'])} ({g})"
             for r, g in zip(tests, grades)]
    return combine(grades), "; ".join(parts) + size


#: How a claim's compared quantity reads in a verdict line.
METRIC_LABELS = {"acc": "test accuracy", "error": "test error",
                 "augmented_recall": "test recall of the augmented class",
                 "epochs_to_target": "epochs to the target test accuracy"}


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"test {metric}")


def _imet(claim: Any, settings: dict[str, Any], grade: str, line: str) -> tuple[str, str]:
    paper = claim.extra["paper_acc"]
    imet = next(iter(settings.values()))["arms"][IMET_ARM]["test"]["acc"]
    above = _finite(imet["high"]) and imet["high"] < paper
    if grade == REPRODUCED and above:
        grade = PARTLY
    level = "above our interval" if above else "inside or below our interval" if _finite(imet["high"]) else "untested"
    return grade, f"{line}; IMET test accuracy {_fmt(imet)} against the paper's {paper:.3f} ({level})"


def _reach_line(settings: dict[str, Any]) -> str:
    parts = []
    for label, setting in settings.items():
        reach = setting.get("epochs_to_target") or {}
        if reach:
            first = next(iter(reach.values()))
            parts.append(f"{label}, epochs to {first['target']:.0%} on the {first['curve']} curve: "
                         + ", ".join(f"{arm} {_reach_text(r)}" for arm, r in reach.items()))
    return "; ".join(parts) or "no epochs-to-target table"


def _reach_text(r: dict[str, Any]) -> str:
    n = len(r["per_seed"])
    if not r["reached"]:
        return f"never (0/{n})"
    return f"{r['mean']:.1f} ({r['reached']}/{n} seeds)"


# ---------------------------------------------------------------- summary.md and the README block

def readme_block(summaries: list[dict[str, Any]]) -> str:
    """Every claim's summary, one section each (headings demoted), with the command that regenerates it."""
    parts = []
    for summary in summaries:
        text = (markdown(summary).replace("\n## ", "\n#### ").replace("# ", "### ", 1)
                .replace(f"]({FIGURE})", f"](results/{summary['claim']}/{FIGURE})"))
        parts.append(text + f"\nRegenerate: `python benchmarks/reproduce/run.py {summary['claim']}` "
                            f"(runs whose JSON exists are not re-run; delete `results/{summary['claim']}/runs` "
                            "to start afresh).\n")
    return "\n".join(parts)


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary['claim']}: {summary['paper']}", "", f"Claim: {summary['statement']}.", "",
             *_fidelity_lines(summary.get("fidelity", [])),
             f"**Verdict{_interim(summary)}: {summary['verdict']}**: {summary['verdict_line']}.", "",
             *_claim_test_lines(summary.get("claim_tests", [])),
             f"Intervals: {summary.get('interval', 'Student-t 95% intervals over seeds')}.", "",
             f"Runs: {summary['runs']}, {summary.get('wall_s', 0) / 60:.1f} minutes of wall time in all "
             f"({', '.join(summary['host']['precision'])} on {summary['host']['cpu']}, shared)"
             f"{' (QUICK: not meaningful)' if summary['quick'] else ''}.", "",
             f"![{_figure_caption(summary)}]({FIGURE})", ""]
    for label, setting in summary["settings"].items():
        lines += [f"## {label}", "", "| arm | n | test acc | test balanced acc | test error (%) | selected epochs |",
                  "|---|---|---|---|---|---|"]
        for arm, t in setting["arms"].items():
            lines.append(f"| {arm} | {t['test']['acc']['n']} | {_fmt(t['test']['acc'])} | "
                         f"{_fmt(t['test']['balanced_acc'])} | {_fmt(t['test']['error'], 100, 2)} | "
                         f"{', '.join(f'{e} ({p})' for e, p in zip(t['best_epoch'], t[BEST_PHASE]))} |")
        lines += ["", "Paired by seed against the baseline (test accuracy; Holm-corrected t-test):", "",
                  "| arm | versus | n | difference [95% CI] | t p | Holm p | Wilcoxon p |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_diff_row(r) for r in setting["versus_baseline"]["acc"]]
        lines.append("")
        lines += (_grid_lines(setting) + _stage_lines(setting) + _reach_lines(setting) + _augmented_lines(setting)
                  + _probe_lines(setting))
    return "\n".join(lines) + "\n"


def _figure_caption(summary: dict[str, Any]) -> str:
    """What the figure plots (summaries written before "curve" was recorded plotted validation)."""
    curves = sorted({setting.get("curve", "validation").split(" (")[0] for setting in summary["settings"].values()})
    return f"{' and '.join(curves)} accuracy per epoch, mean ± SE over seeds"


def _interim(summary: dict[str, Any]) -> str:
    """`` (interim: N of M runs)`` while part of the protocol has run."""
    done, planned = summary["runs"], summary.get("planned", summary["runs"])
    return f" (interim: {done} of {planned} runs; the protocol goes on)" if done < planned else ""


def _fidelity_lines(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    lines = ["Fidelity (the paper's protocol, ours, and why they differ):", "",
             "| | paper | ours | why they differ |", "|---|---|---|---|"]
    lines += [f"| {r['aspect']} | {r['paper']} | {r['ours']} | {r['why'] or 'same'} |" for r in rows]
    return lines + [""]


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _diff_row(r: dict[str, Any]) -> str:
    ci = f" [{_num(r['diff_low'])}, {_num(r['diff_high'])}]" if r.get("diff_low") is not None else ""
    return (f"| {r['arm']} | {r['versus']} | {r['n']} | {_num(r['diff'])}{ci} | {_num(r['t_p'])} | "
            f"{_num(r.get('t_p_holm'))} | {_num(r['wilcoxon_p'])} |")


def _claim_test_lines(tests: list[dict[str, Any]]) -> list[str]:
    if not tests:
        return []
    lines = ["The comparisons that decide the verdict (paired by seed; one Holm family):", "",
             "| setting | arm | versus | test metric | n | difference [95% CI] | t p | Holm p |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['arm']}{_stage(r)} | {r['versus']} | {r['metric']}"
              f"{' (lower is better)' if r['lower_is_better'] else ''} | {r['n']} | {_num(r['diff'])} "
              f"[{_num(r['diff_low'])}, {_num(r['diff_high'])}] | {_num(r['t_p'])} | {_num(r['t_p_holm'])} |"
              for r in tests]
    return lines + [""]


def _stage(row: dict[str, Any]) -> str:
    return " (best epoch after its mechanism)" if row.get("stage") == "after_mechanism" else ""


def _grid_lines(setting: dict[str, Any]) -> list[str]:
    rows = [(arm, t) for arm, t in setting["arms"].items() if "grid_choice" in t or "weight_std" in t]
    if not rows:
        return []
    lines = ["Grid points chosen on validation (per seed) and the sample weights' spread (mean over epochs of "
             "the per-epoch std of the weights; 0 means no reweighting):", "",
             "| arm | chosen per seed | weight std |", "|---|---|---|"]
    lines += [f"| {arm} | {', '.join(t.get('grid_choice', [])) or '-'} | {_fmt(t.get('weight_std', {}), 1, 6)} |"
              for arm, t in rows]
    return lines + [""]


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
    first = next(iter(reach.values()))
    lines = [f"Epochs to {first['target']:.0%} accuracy on the {first['curve']} curve (mean ± SE over the seeds "
             "that reached it):", "",
             "| arm | reached | epochs | per seed |", "|---|---|---|---|"]
    lines += [f"| {arm} | {r['reached']}/{len(r['per_seed'])} | {_fmt(r, 1, 1)} | "
              f"{', '.join(str(v) if v is not None else '-' for v in r['per_seed'].values())} |"
              for arm, r in reach.items()]
    return lines + [""]


def _augmented_lines(setting: dict[str, Any]) -> list[str]:
    if not setting.get("augmented"):
        return []
    lines = ["Test recall of the augmented class (best epoch before fine-tuning, best epoch after it, and the "
             "baseline of the same seed):", "", "| arm | classes | before | after | after - before [95% CI], t p | "
             "baseline | after - baseline [95% CI], t p | GAN images labelled as the class | real images labelled so |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, row in setting["augmented"].items():
        gain, versus = row["after_minus_before"], row.get("after_minus_baseline")
        lines.append(f"| {arm} | {', '.join(map(str, row['classes'].values()))} | {_fmt(row['before'])} | "
                     f"{_fmt(row['after'])} | {_test_text(gain)} | {_fmt(row.get('baseline', {}))} | "
                     f"{_test_text(versus) if versus else '-'} | {_fmt(row.get('generated_as_class', {}))} | "
                     f"{_fmt(row.get('real_as_class', {}))} |")
    return lines + ["", "(The last two columns are mdgan's quality check: the share of each GAN's images, and of the "
                        "class's real training images, that the pretrained classifier labels as the class.)", ""]


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
