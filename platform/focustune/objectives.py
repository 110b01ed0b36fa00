"""Several objectives: which recorded metrics a study optimises (each in the direction of its row of
``metric_table``), the non-dominated ranking of points, the Pareto front, and the ``--select`` rule
that picks one point of the front. Plain Python (no numpy, torch, Ray or Optuna): the command line,
the tuning layer, tracking and the analysis all use it.

The rule's grammar is ``PRIMARY [| CONSTRAINT[, CONSTRAINT ...]]`` with a constraint
``METRIC>=NUMBER`` (or ``<=`` for a metric where lower is better), e.g.
``"balanced_acc | worst_class_recall>=0.6"``: among the front's points that meet every constraint,
the best by PRIMARY; ties go to the other objectives in their order, then to the earlier trial. With
no ``--select`` the rule is the first objective alone. Every metric of a rule must be an objective,
and a constraint bounds its metric on the side where it improves: a point no other point dominates
then always holds the rule's best, so choosing from the front loses nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from focustune.errors import ConfigError
from focustune.metric_table import DEFAULT_SELECTION_METRIC, SELECTION_METRICS, metric_row

#: The objectives of a study given no ``--objectives``: today's one selection metric.
DEFAULT_OBJECTIVES = (DEFAULT_SELECTION_METRIC,)


class NoPointMeets(ConfigError):
    """No point of a study's front meets its ``--select`` rule's constraints."""


def parse_objectives(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--objectives a,b`` (or a plan's list) as metric names; empty: :data:`DEFAULT_OBJECTIVES`.
    Each must be a selectable metric of ``metric_table`` and named once (ConfigError otherwise)."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n).strip() for n in value or []]
    names = [n for n in names if n]
    if not names:
        return DEFAULT_OBJECTIVES
    for name in names:
        if name not in SELECTION_METRICS:
            raise ConfigError(f"--objectives: unknown metric {name!r}; choose among {', '.join(SELECTION_METRICS)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"--objectives: a metric is named twice in {','.join(names)}")
    return tuple(names)


def directions(objectives: Sequence[str]) -> list[str]:
    """Optuna's direction of each objective, from its row's ``sign``."""
    return ["maximize" if metric_row(m).sign > 0 else "minimize" for m in objectives]


def oriented(values: Mapping[str, float], objectives: Sequence[str]) -> tuple[float, ...]:
    """The objectives' values times their rows' signs (higher is better); a missing or NaN value
    ranks lowest."""
    out = []
    for name in objectives:
        value = values.get(name)
        out.append(-math.inf if value is None or math.isnan(float(value)) else metric_row(name).sign * float(value))
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Oriented vector ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def nondominated_ranks(vectors: Sequence[Sequence[float]]) -> list[int]:
    """Each oriented vector's non-dominated rank: 0 for the front, 1 for the front of the rest, ..."""
    ranks = [-1] * len(vectors)
    left = set(range(len(vectors)))
    rank = 0
    while left:
        front = {i for i in left if not any(dominates(vectors[j], vectors[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


@dataclass(frozen=True)
class Point:
    """One full-budget search trial in objective space: its Tune trial id, its objectives' (best-epoch
    validation) values, and anything else to carry along (configuration, test scores)."""

    key: str
    values: Mapping[str, float]
    extra: Mapping[str, Any] = field(default_factory=dict)


def pareto_front(points: Sequence[Point], objectives: Sequence[str]) -> list[Point]:
    """The points no other point dominates, in their given order."""
    ranks = nondominated_ranks([oriented(p.values, objectives) for p in points])
    return [p for p, rank in zip(points, ranks) if rank == 0]


@dataclass(frozen=True)
class Constraint:
    metric: str
    at_least: bool  # >= (else <=)
    bound: float

    def met(self, values: Mapping[str, float]) -> bool:
        value = values.get(self.metric)
        if value is None or math.isnan(float(value)):
            return False
        return float(value) >= self.bound if self.at_least else float(value) <= self.bound

    def __str__(self) -> str:
        return f"{self.metric}{'>=' if self.at_least else '<='}{self.bound:g}"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(>=|<=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class SelectionRule:
    """Which point of a front a study hands over (grammar: the module's docstring)."""

    primary: str
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, text: str | None, objectives: Sequence[str]) -> SelectionRule:
        """The rule in ``text`` (None or empty: the first objective alone); ConfigError when it names a
        metric that is not an objective, a constraint is malformed or bounds the side where it worsens."""
        if not text or not text.strip():
            return cls(objectives[0])
        head, _, tail = text.partition("|")
        primary = head.strip()
        where = f"--select {text!r}"
        if primary not in objectives:
            raise ConfigError(f"{where}: {primary!r} is not an objective (objectives: {', '.join(objectives)}; "
                              "add it to --objectives)")
        if "|" in text and not tail.strip():
            raise ConfigError(f"{where}: nothing after '|'; give constraints such as worst_class_recall>=0.6")
        constraints = []
        for part in tail.split(",") if tail.strip() else []:
            match = _CONSTRAINT.match(part)
            if not match:
                raise ConfigError(f"{where}: cannot read constraint {part.strip()!r}; write METRIC>=NUMBER or "
                                  "METRIC<=NUMBER, e.g. worst_class_recall>=0.6")
            metric, op, bound = match.groups()
            if metric not in objectives:
                raise ConfigError(f"{where}: {metric!r} is not an objective (objectives: {', '.join(objectives)}; "
                                  "add it to --objectives)")
            at_least = op == ">="
            if at_least != (metric_row(metric).sign > 0):
                side = ">=" if metric_row(metric).sign > 0 else "<="
                raise ConfigError(f"{where}: {metric} is better {'higher' if side == '>=' else 'lower'}; "
                                  f"bound it with {side}")
            constraints.append(Constraint(metric, at_least, float(bound)))
        return cls(primary, tuple(constraints))

    def __str__(self) -> str:
        return self.primary + (" | " + ", ".join(map(str, self.constraints)) if self.constraints else "")

    def choose(self, front: Sequence[Point], objectives: Sequence[str], study: str = "the study") -> Point:
        """The point of ``front`` this rule selects; :class:`NoPointMeets` (saying how close the front
        came) when none meets every constraint, or the front is empty."""
        meeting = [p for p in front if all(c.met(p.values) for c in self.constraints)]
        if not meeting:
            if not front:
                raise NoPointMeets(f"{study}: no search trial finished its budget; no point to select")
            reached = "; ".join(f"{c} (best on the front: {self._best_reached(front, c):.4g})"
                                for c in self.constraints)
            raise NoPointMeets(f"--select '{self}': no point of the front of {study} ({len(front)} point(s)) meets "
                               f"{reached}; no model is selected (loosen the constraint or search longer)")
        order = (self.primary, *(m for m in objectives if m != self.primary))
        position = {p.key: i for i, p in enumerate(front)}
        return max(meeting, key=lambda p: (oriented(p.values, order), -position[p.key]))

    @staticmethod
    def _best_reached(front: Sequence[Point], constraint: Constraint) -> float:
        values = [float(v) for p in front if (v := p.values.get(constraint.metric)) is not None]
        return (max if constraint.at_least else min)(values, default=math.nan)
