"""The Pareto front of a study searched for several objectives: its table, its figure, and its
section of ``compare``'s report.

A study's points are its full-budget search trials, each at its objectives' best-epoch validation
values; the front is :func:`focustune.objectives.pareto_front` of them (the same definition the
sweep selects with). The figure of two objectives is a scatter of every point with the front as a
staircase and the selected point starred; with more, one such panel per pair of objectives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from focustune.metric_table import metric_label, metric_row
from focustune.objectives import Point, oriented, pareto_front
from focustune.records import TRIAL_ID
from focustune.tracking_schema import CHOSEN_TRIAL_PARAM, KIND_TRIAL, OBJECTIVES_PARAM, SELECTION_RULE_PARAM

#: The columns of a front table besides the objectives' own.
FRONT_COLUMNS = ("dataset", "method", TRIAL_ID, "on_front", "chosen")


def points_frame(points: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                 chosen: str | None = None) -> pd.DataFrame:
    """A study's points (``{trial_id, values, ...}`` as the study record holds them) as one row each:
    the trial id, each objective's validation value, whether it is on the front, whether chosen;
    front first, by the first objective."""
    found = [Point(str(p[TRIAL_ID]), dict(p["values"])) for p in points]
    front = {p.key for p in pareto_front(found, objectives)}
    rows = [{TRIAL_ID: p.key, **{m: p.values.get(m) for m in objectives}, "on_front": p.key in front,
             "chosen": p.key == chosen} for p in found]
    frame = pd.DataFrame(rows, columns=[TRIAL_ID, *objectives, "on_front", "chosen"])
    if frame.empty:
        return frame
    order = [(not r["on_front"], tuple(-x for x in oriented(r, objectives))) for _, r in frame.iterrows()]
    return frame.iloc[sorted(range(len(frame)), key=order.__getitem__)].reset_index(drop=True)


def front_markdown(frame: pd.DataFrame, objectives: Sequence[str], rule: str | None = None,
                   refused: str | None = None) -> str:
    """The front table as Markdown (front points only), with the rule and what it chose."""
    named = ", ".join(f"{metric_label(m)} ({_arrow(m)})" for m in objectives)
    lines = [f"Objectives (validation, best epoch): {named}"]
    if rule:
        lines.append(f"Selection rule: `{rule}`" + (f" (refused: {refused})" if refused else ""))
    lines += ["", "| trial | " + " | ".join(objectives) + " | chosen |", "|---" * (len(objectives) + 2) + "|"]
    for _, row in frame[frame["on_front"]].iterrows():
        cells = [f"{row[m]:.4f}" if pd.notna(row[m]) else "-" for m in objectives]
        lines.append(f"| {row[TRIAL_ID]} | " + " | ".join(cells) + f" | {'yes' if row['chosen'] else ''} |")
    return "\n".join(lines) + "\n"


def _arrow(metric: str) -> str:
    return "higher is better" if metric_row(metric).sign > 0 else "lower is better"


def front_figure(frame: pd.DataFrame, objectives: Sequence[str], title: str) -> Figure | None:
    """Every point, the front (staircase) and the chosen point (star), per pair of objectives; None
    with fewer than two objectives or no point."""
    pairs = list(combinations(objectives, 2))
    if not pairs or frame.empty:
        return None
    fig = Figure(figsize=(4.6 * min(len(pairs), 3), 4.0 * ((len(pairs) + 2) // 3)), layout="constrained")
    axes = fig.subplots((len(pairs) + 2) // 3, min(len(pairs), 3), squeeze=False).ravel()
    for ax, (x, y) in zip(axes, pairs):
        _pair_panel(ax, frame, x, y)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def _pair_panel(ax: Any, frame: pd.DataFrame, x: str, y: str) -> None:
    off = frame[~frame["on_front"]]
    ax.scatter(off[x], off[y], color="#999999", s=22, label="dominated")
    pair = pareto_front([Point(str(i), {x: r[x], y: r[y]}) for i, r in frame.iterrows()], (x, y))
    on = frame.loc[[int(p.key) for p in pair]].sort_values(x, ascending=metric_row(x).sign > 0)
    ax.step(on[x], on[y], where="pre", color="#1f77b4", linewidth=1.2)
    ax.scatter(on[x], on[y], color="#1f77b4", s=30, label="front of this pair", zorder=3)
    chosen = frame[frame["chosen"]]
    if not chosen.empty:
        ax.scatter(chosen[x], chosen[y], marker="*", s=220, color="#d62728", label="selected", zorder=4)
    ax.set_xlabel(f"validation {metric_label(x)}")
    ax.set_ylabel(f"validation {metric_label(y)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


# ---------------------------------------------------------------- compare's report

def collection_fronts(c: Any) -> dict[tuple[str, str], tuple[list[str], pd.DataFrame, str | None]]:
    """Per (dataset, method) study searched for several objectives: its objectives, its points (from
    the experiment's search-trial runs) and its selection rule."""
    studies = c.studies
    out: dict[tuple[str, str], tuple[list[str], pd.DataFrame, str | None]] = {}
    if OBJECTIVES_PARAM not in studies:
        return out
    for _, study in studies.iterrows():
        objectives = [m for m in str(study.get(OBJECTIVES_PARAM) or "").split(",") if m]
        if len(objectives) < 2:
            continue
        runs = c.runs[(c.runs["dataset"] == study["dataset"]) & (c.runs["method"] == study["method"])
                      & (c.runs["kind"] == KIND_TRIAL) & (c.runs["status"] == "FINISHED") & ~c.runs["stopped_early"]]
        columns = [f"best_val_{m}" for m in objectives]
        if runs.empty or not set(columns) <= set(runs.columns):
            continue
        points = [{TRIAL_ID: r[TRIAL_ID], "values": {m: r[f"best_val_{m}"] for m in objectives}}
                  for _, r in runs.dropna(subset=columns).iterrows()]
        chosen = study.get(CHOSEN_TRIAL_PARAM)
        frame = points_frame(points, objectives, chosen if isinstance(chosen, str) else None)
        frame.insert(0, "method", study["method"])
        frame.insert(0, "dataset", study["dataset"])
        out[study["dataset"], study["method"]] = (objectives, frame, study.get(SELECTION_RULE_PARAM))
    return out


def add_front_section(doc: Any, c: Any, folder: Path) -> list[Path]:
    """A "Pareto fronts" section in the report ``doc`` (a :class:`~focustune_analysis.document.Document`)
    for every study searched for several objectives: its figure (written under ``folder``) and its
    front table; returns the files written (none when no study had several objectives)."""
    fronts = collection_fronts(c)
    if not fronts:
        return []
    written: list[Path] = []
    doc.heading("Pareto fronts")
    doc.paragraph("Studies searched for several objectives: every full-budget search trial at its best epoch's "
                  "validation values; the front is the trials no other trial beats on every objective, and the "
                  "starred point is the one the study's selection rule handed over.")
    for (dataset, method), (objectives, frame, rule) in fronts.items():
        doc.heading(f"{dataset}: {method}", 3)
        fig = front_figure(frame, objectives, f"{dataset} / {method}: Pareto front")
        if fig is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"pareto_{dataset}_{method}.png".replace("/", "-")
            fig.savefig(path, dpi=110)
            written.append(path)
            doc.figure(path, f"{dataset} / {method}: validation {' vs '.join(map(metric_label, objectives))}")
        if rule:
            doc.paragraph(f"Selection rule: `{rule}`.")
        front = frame[frame["on_front"]]
        doc.table([TRIAL_ID, *objectives, "chosen"],
                  [[r[TRIAL_ID], *(f"{r[m]:.4f}" for m in objectives), "yes" if r["chosen"] else ""]
                   for _, r in front.iterrows()])
    return written
